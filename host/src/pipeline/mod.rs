//! Wires a source to a destination through the buffers.
//!
//! One task owns the buffers and decides what to flush; writes run as
//! separate tasks, at most `max_concurrent_threads` at once across
//! destination_ids and one at a time, in order, within a destination_id.
//! Memory is bounded: the bytes in buffers, queued and in-flight batches stay
//! under a budget, and a full budget stops reading from the source until
//! writes complete. A page is acknowledged to the source only once every one
//! of its records was written.

pub mod assemble;
mod drive;
mod letters;
mod report;
pub mod spec;
mod streams;
mod watermark;
mod writes;

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant as StdInstant;

use tokio::sync::watch;
use tokio::task::JoinSet;

pub use assemble::{assemble, AssembleError, Assembled, Environment};
pub use report::{Progress, RejectedRecord, RunReport, RunStatus};
pub use spec::{load, parse, Pipeline};

use crate::buffer::{BufferPolicy, Buffers, Flushed};
use crate::config::DestinationOptions;
use crate::dead_letter::{DeadLetterError, DeadLetters};
use crate::destination::SharedDestination;
use crate::quota::read_ahead::{self, ReadAheadPool};
use crate::record::unnest::Unnester;
use crate::source::{self, SourceEvent, SourceHandle};
use writes::WriteDone;

/// The least memory a run may use for records, whatever `buffer_size` says.
const MIN_MEMORY_BUDGET: usize = 64 << 20;
/// Pages that may wait between the source thread and the pipeline.
const SOURCE_QUEUE_PAGES: usize = 4;
/// How often the source's own figures are published when nothing else is.
const SOURCE_STATS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("{}", source_message(.0))]
    Source(#[from] source::SourceError),
    #[error("destination `{destination}`: check_connection failed: {message}")]
    Connection { destination: &'static str, message: String },
    #[error("destination_id `{destination_id}`: write failed: {message}")]
    Write { destination_id: String, message: String },
    #[error(
        "destination_id `{destination_id}`: {count} row(s) rejected; first: source_record_id {}: {}",
        first.source_record_id, first.reason
    )]
    Rejected {
        destination_id: String,
        count: usize,
        first: Box<RejectedRecord>,
    },
    #[error("{0}")]
    Unnest(#[from] crate::record::unnest::UnnestError),
    #[error("{0}")]
    DeadLetter(#[from] DeadLetterError),
    #[error("destination `{destination}`: cannot resume from the source's last commit: {message}")]
    Resume { destination: &'static str, message: String },
    #[error("destination `{destination}`: finalize failed: {message}")]
    Finalize { destination: &'static str, message: String },
    #[error(
        "stopped before what was read was written: the rest was left unacknowledged (a Kafka source reads it \
         again at its next run)"
    )]
    Abandoned,
}

fn source_message(error: &source::SourceError) -> String {
    match error {
        // A transform's error names the transform itself.
        source::SourceError::Transform(e) => format!("transform: {e}"),
        e => format!("source: {e}"),
    }
}

/// What bounds a run beside others in one process (`serve`);
/// [`Bounds::none`] for a run alone (`bizon-host run`).
pub struct Bounds<A> {
    /// Ends a stopped run's final writes: what was read and not yet written
    /// is then left unacknowledged (a Kafka source reads it again at the
    /// next run), and the writes under way are dropped. `serve` abandons
    /// after a grace period, so that a stop behind a slow plugin and
    /// megabytes of read records ends.
    pub abandon: A,
    /// The pool the run's records read and not yet written count against,
    /// besides its own budget.
    pub read_ahead: Option<Arc<ReadAheadPool>>,
}

impl Bounds<std::future::Pending<()>> {
    /// Nothing bounds the run but its own memory budget.
    pub fn none() -> Self {
        Self {
            abandon: std::future::pending(),
            read_ahead: None,
        }
    }
}

/// Runs an [`Assembled`] run of `pipeline` with its options until the
/// source ends, a write fails for good, or `shutdown` resolves, within
/// `bounds`. Progress is published on `progress`. Rows the destination
/// rejects go to the run's dead letters, when it has some, instead of
/// stopping the run.
pub async fn run(
    pipeline: &Pipeline,
    assembled: Assembled,
    shutdown: impl Future<Output = ()>,
    progress: watch::Sender<Progress>,
    bounds: Bounds<impl Future<Output = ()>>,
) -> RunReport {
    let started = StdInstant::now();
    let Assembled {
        destination,
        dead_letters,
        source,
    } = assembled;
    // The signal is watched for the whole run, the final flush and
    // finalize included: a stop there still ends retries at once.
    let (stop, stopping) = watch::channel(false);
    let mut run = Run::new(pipeline, destination, progress, stopping);
    run.dead_letters = dead_letters;
    run.read_ahead = bounds.read_ahead.map(read_ahead::Charge::new);
    let abandon = bounds.abandon;
    let mut handle = source::spawn(source, SOURCE_QUEUE_PAGES);
    run.source_stats = Some(handle.stats.clone());
    let outcome = {
        let drive = run.drive(&mut handle);
        tokio::pin!(drive);
        tokio::select! {
            outcome = &mut drive => outcome,
            () = shutdown => {
                tracing::warn!("stopping: flushing what was read, then finalizing (a second signal exits at once)");
                stop.send_replace(true);
                tokio::select! {
                    outcome = &mut drive => outcome,
                    () = abandon => Outcome::Interrupted(Some(PipelineError::Abandoned)),
                }
            }
        }
    };
    // The source commits what was acknowledged and closes before the report.
    let published = matches!(outcome, Outcome::Completed | Outcome::Interrupted(None));
    handle.finish(published).await;
    run.report(outcome, started)
}

struct Run {
    destination: SharedDestination,
    destination_name: &'static str,
    options: DestinationOptions,
    buffers: Buffers,
    budget: usize,
    /// Batches waiting for their destination_id's previous write to finish.
    queued: HashMap<Arc<str>, VecDeque<Flushed>>,
    queued_bytes: usize,
    busy: HashSet<Arc<str>>,
    in_flight_bytes: usize,
    /// First page of each batch queued or being written, by destination_id,
    /// oldest first (a destination_id's batches are written in order).
    pending_pages: HashMap<Arc<str>, VecDeque<u64>>,
    /// What each destination_id was last acknowledged through, and where it stood.
    acked_destinations: HashMap<Arc<str>, (u64, Option<String>)>,
    next_sequence: HashMap<Arc<str>, u64>,
    writes: JoinSet<WriteDone>,
    unnesters: HashMap<Arc<str>, Option<Arc<Unnester>>>,
    progress: watch::Sender<Progress>,
    stats: Progress,
    pages_read: u64,
    acknowledged: Option<u64>,
    /// Turns true on a shutdown signal: reading stops, and writes under way
    /// make no more retries.
    stopping: watch::Receiver<bool>,
    dead_letters: Option<Arc<DeadLetters>>,
    source_stats: Option<Arc<source::SourceStats>>,
    read_ahead: Option<read_ahead::Charge>,
}

/// How the drive loop ended.
enum Outcome {
    Completed,
    /// A signal stopped the run; what was read was flushed unless the error
    /// says otherwise.
    Interrupted(Option<PipelineError>),
    Failed(PipelineError),
}

impl Run {
    fn new(
        pipeline: &Pipeline,
        destination: SharedDestination,
        progress: watch::Sender<Progress>,
        stopping: watch::Receiver<bool>,
    ) -> Self {
        let options = pipeline.destination.options().clone();
        let capacity = options.buffer_bytes();
        let policy = BufferPolicy {
            capacity_bytes: capacity,
            timeout: (!options.buffer_flush_timeout.is_zero()).then_some(options.buffer_flush_timeout),
        };
        let default_id: Arc<str> = options.default_destination_id().into();
        Self {
            destination,
            destination_name: pipeline.destination.name(),
            buffers: Buffers::new(policy, default_id),
            budget: (capacity.saturating_mul(2)).max(MIN_MEMORY_BUDGET),
            options,
            queued: HashMap::new(),
            queued_bytes: 0,
            busy: HashSet::new(),
            in_flight_bytes: 0,
            pending_pages: HashMap::new(),
            acked_destinations: HashMap::new(),
            next_sequence: HashMap::new(),
            writes: JoinSet::new(),
            unnesters: HashMap::new(),
            progress,
            stats: Progress::default(),
            pages_read: 0,
            acknowledged: None,
            stopping,
            dead_letters: None,
            source_stats: None,
            read_ahead: None,
        }
    }
}

#[cfg(test)]
mod tests;
