//! Wires a source to a destination through the buffers.
//!
//! One task owns the buffers and decides what to flush; writes run as
//! separate tasks, at most `max_concurrent_threads` at once across
//! destination_ids and one at a time, in order, within a destination_id.
//! Memory is bounded: the bytes in buffers, queued and in-flight batches stay
//! under a budget, and a full budget stops reading from the source until
//! writes complete. A page is acknowledged to the source only once every one
//! of its records was written.

mod report;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant as StdInstant;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;

pub use report::{Progress, RejectedRecord, RunReport, RunStatus};

use crate::buffer::{BufferPolicy, Buffers, FlushReason, Flushed};
use crate::config::{DestinationOptions, Pipeline};
use crate::dead_letter::{DeadLetterError, DeadLetters, Letter};
use crate::destination::retry::{RetryError, RetryPolicy};
use crate::destination::{Batch, DestinationError, SharedDestination};
use crate::quota::read_ahead::{self, ReadAheadPool};
use crate::record::now_us;
use crate::record::unnest::Unnester;
use crate::source::{self, SourceEvent, SourceHandle, SourceTask};

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
        #[cfg(feature = "wasm")]
        source::SourceError::Transform(e) => format!("transform: {e}"),
        e => format!("source: {e}"),
    }
}

/// Where records go when neither the source nor the config names a
/// destination_id: `<source>_<stream>`, the base of Bizon's table names.
pub fn default_destination_id(pipeline: &Pipeline) -> String {
    if let Some(id) = &pipeline.destination.options().destination_id {
        return id.clone();
    }
    match pipeline.source.name_and_stream() {
        (name, Some(stream)) => format!("{name}_{stream}"),
        (name, None) => name.to_string(),
    }
}

/// Runs `source` into `destination` with `pipeline`'s options until the
/// source ends, a write fails for good, or `shutdown` resolves. Progress is
/// published on `progress`.
pub async fn run(
    pipeline: &Pipeline,
    source: Box<dyn SourceTask>,
    destination: SharedDestination,
    shutdown: impl Future<Output = ()>,
    progress: watch::Sender<Progress>,
) -> RunReport {
    run_with_dead_letters(pipeline, source, destination, None, shutdown, progress).await
}

/// [`run`], with rows the destination rejects going to `dead_letters`
/// (the same sink the source sends undecodable messages to) instead of
/// stopping the run.
pub async fn run_with_dead_letters(
    pipeline: &Pipeline,
    source: Box<dyn SourceTask>,
    destination: SharedDestination,
    dead_letters: Option<Arc<DeadLetters>>,
    shutdown: impl Future<Output = ()>,
    progress: watch::Sender<Progress>,
) -> RunReport {
    let bounds = Bounds {
        abandon: std::future::pending(),
        read_ahead: None,
    };
    run_bounded(pipeline, source, destination, dead_letters, shutdown, progress, bounds).await
}

/// What bounds a run beside others in one process (`serve`).
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

/// [`run_with_dead_letters`] within `bounds`.
pub async fn run_bounded(
    pipeline: &Pipeline,
    source: Box<dyn SourceTask>,
    destination: SharedDestination,
    dead_letters: Option<Arc<DeadLetters>>,
    shutdown: impl Future<Output = ()>,
    progress: watch::Sender<Progress>,
    bounds: Bounds<impl Future<Output = ()>>,
) -> RunReport {
    let started = StdInstant::now();
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
    /// First page of each batch queued or being written (a multiset).
    pending_pages: BTreeMap<u64, usize>,
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

struct WriteDone {
    destination_id: Arc<str>,
    first_page: u64,
    rows: u64,
    bytes: usize,
    result: Result<Written, PipelineError>,
}

/// What a write did: rows written, and the ones the destination refused
/// (with their source_data, for the dead letter).
struct Written {
    rows: u64,
    rejected: Vec<RejectedRecord>,
    rejected_data: Vec<Option<String>>,
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
        let default_id: Arc<str> = default_destination_id(pipeline).into();
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
            pending_pages: BTreeMap::new(),
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

    fn memory(&self) -> usize {
        self.buffers.bytes() + self.queued_bytes + self.in_flight_bytes
    }

    async fn drive(&mut self, handle: &mut SourceHandle) -> Outcome {
        if let Err(e) = self.destination.check_connection().await {
            return Outcome::Failed(PipelineError::Connection {
                destination: self.destination_name,
                message: e.to_string(),
            });
        }
        let outcome = self.read_until_end(handle).await;
        let handle = &*handle;
        // Stop the source thread; it reads at most one more page.
        handle.stop.store(true, Ordering::Relaxed);
        // After a signal a failure still exits as interrupted: the operator
        // asked for the stop, and the report says what was not written.
        let stopping = self.stopping.clone();
        let failed = |e| match *stopping.borrow() {
            true => Outcome::Interrupted(Some(e)),
            false => Outcome::Failed(e),
        };
        if let Outcome::Failed(e) = outcome {
            // Let writes under way finish so that what they wrote is counted.
            self.drain_in_flight(handle).await;
            return Outcome::Failed(e);
        }
        for id in self.buffers.non_empty() {
            if let Err(e) = self.flush(&id, FlushReason::End) {
                return failed(e);
            }
        }
        while !self.writes.is_empty() {
            if let Err(e) = self.complete_one(handle).await {
                self.drain_in_flight(handle).await;
                return failed(e);
            }
        }
        if let Err(e) = self.destination.finalize().await {
            return failed(PipelineError::Finalize {
                destination: self.destination_name,
                message: e.to_string(),
            });
        }
        match *self.stopping.borrow() {
            true => Outcome::Interrupted(None),
            false => outcome,
        }
    }

    async fn read_until_end(&mut self, handle: &mut SourceHandle) -> Outcome {
        let mut stopping = self.stopping.clone();
        // What the source reports (Kafka lag, commits) changes while no
        // record moves: publish it now and then.
        let mut refresh = tokio::time::interval(SOURCE_STATS_EVERY);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self.buffers.next_deadline();
            let memory = self.memory();
            let pooled = match &mut self.read_ahead {
                Some(charge) => {
                    charge.set(memory);
                    charge.allows_reading()
                }
                None => true,
            };
            let room = memory < self.budget && pooled;
            if !room && self.writes.is_empty() {
                // Over budget with nothing being written: write the largest buffer.
                if let Some(id) = self.buffers.largest() {
                    if let Err(e) = self.flush(&id, FlushReason::Memory) {
                        return Outcome::Failed(e);
                    }
                    continue;
                }
            }
            tokio::select! {
                biased;
                _ = stopping.wait_for(|stop| *stop) => return Outcome::Interrupted(None),
                Some(done) = self.writes.join_next(), if !self.writes.is_empty() => {
                    let done = done.expect("write tasks do not panic");
                    if let Err(e) = self.finish_write(done, handle) {
                        return Outcome::Failed(e);
                    }
                }
                _ = refresh.tick() => self.publish(),
                _ = sleep_until(deadline), if deadline.is_some() => {
                    for id in self.buffers.due(Instant::now()) {
                        if let Err(e) = self.flush(&id, FlushReason::Age) {
                            return Outcome::Failed(e);
                        }
                    }
                }
                event = handle.events.recv(), if room => match event {
                    Some(SourceEvent::Page(page)) => {
                        self.pages_read = page.sequence + 1;
                        self.stats.records_read += page.records.len() as u64;
                        let due = self.buffers.append(page.sequence, page.extracted_at_us, &page.records, Instant::now());
                        drop(page);
                        self.stats.peak_buffered_bytes = self.stats.peak_buffered_bytes.max(self.memory());
                        for (id, reason) in due {
                            if let Err(e) = self.flush(&id, reason) {
                                return Outcome::Failed(e);
                            }
                        }
                        self.acknowledge(handle);
                        self.publish();
                    }
                    Some(SourceEvent::Drain) => {
                        for id in self.buffers.non_empty() {
                            if let Err(e) = self.flush(&id, FlushReason::Drain) {
                                return Outcome::Failed(e);
                            }
                        }
                    }
                    Some(SourceEvent::Done { skipped }) => {
                        self.stats.records_skipped = skipped;
                        return Outcome::Completed;
                    }
                    Some(SourceEvent::Failed(e)) => return Outcome::Failed(e.into()),
                    None => return Outcome::Completed,
                },
            }
        }
    }

    /// Turns a buffer into a batch and queues it behind its destination_id's
    /// earlier batches.
    fn flush(&mut self, id: &Arc<str>, reason: FlushReason) -> Result<(), PipelineError> {
        let flushed = self
            .buffers
            .take(id, reason, now_us())
            .map_err(|e| PipelineError::Write {
                destination_id: id.to_string(),
                message: format!("cannot build the batch: {e}"),
            })?;
        let Some(flushed) = flushed else { return Ok(()) };
        tracing::debug!(
            destination_id = &**id,
            rows = flushed.records.num_rows(),
            ?reason,
            "flush"
        );
        *self.pending_pages.entry(flushed.first_page).or_default() += 1;
        self.queued_bytes += flushed.bytes;
        self.queued.entry(id.clone()).or_default().push_back(flushed);
        self.start_writes()
    }

    /// Starts queued batches while threads are free, oldest destination_id first.
    fn start_writes(&mut self) -> Result<(), PipelineError> {
        let ready: Vec<Arc<str>> = self
            .queued
            .iter()
            .filter(|(id, q)| !q.is_empty() && !self.busy.contains(*id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ready {
            if self.writes.len() >= self.options.max_concurrent_threads {
                break;
            }
            let flushed = self
                .queued
                .get_mut(&id)
                .and_then(VecDeque::pop_front)
                .expect("queue is not empty");
            let unnester = self.unnester(&id)?;
            let sequence = self.next_sequence.entry(id.clone()).or_default();
            let batch = Batch {
                destination_id: id.clone(),
                sequence: *sequence,
                records: flushed.records,
            };
            *sequence += 1;
            self.queued_bytes -= flushed.bytes;
            self.in_flight_bytes += flushed.bytes;
            self.busy.insert(id.clone());
            let destination = self.destination.clone();
            let retry = self.options.retry.clone();
            let stopping = self.stopping.clone();
            let (first_page, bytes) = (flushed.first_page, flushed.bytes);
            // In the run's span: a server tells its pipelines' lines apart by it.
            self.writes.spawn(
                async move {
                    let rows = batch.records.num_rows() as u64;
                    let result = write(destination, unnester, batch, retry, stopping).await;
                    WriteDone {
                        destination_id: id,
                        first_page,
                        rows,
                        bytes,
                        result,
                    }
                }
                .in_current_span(),
            );
        }
        Ok(())
    }

    fn unnester(&mut self, id: &Arc<str>) -> Result<Option<Arc<Unnester>>, PipelineError> {
        if !self.options.unnest {
            return Ok(None);
        }
        if let Some(u) = self.unnesters.get(id) {
            return Ok(u.clone());
        }
        let schema = self.options.record_schema(id).ok_or_else(|| PipelineError::Write {
            destination_id: id.to_string(),
            message: "`unnest: true` but record_schemas has no entry for this destination_id".into(),
        })?;
        let unnester = Some(Arc::new(Unnester::new(schema)));
        self.unnesters.insert(id.clone(), unnester.clone());
        Ok(unnester)
    }

    async fn complete_one(&mut self, handle: &SourceHandle) -> Result<(), PipelineError> {
        let done = self
            .writes
            .join_next()
            .await
            .expect("a write is in flight")
            .expect("write tasks do not panic");
        self.finish_write(done, handle)
    }

    fn finish_write(&mut self, done: WriteDone, handle: &SourceHandle) -> Result<(), PipelineError> {
        self.busy.remove(&done.destination_id);
        self.in_flight_bytes -= done.bytes;
        if let Some(n) = self.pending_pages.get_mut(&done.first_page) {
            *n -= 1;
            if *n == 0 {
                self.pending_pages.remove(&done.first_page);
            }
        }
        let written = done.result?;
        debug_assert_eq!(written.rows + written.rejected.len() as u64, done.rows);
        self.stats.records_written += written.rows;
        *self
            .stats
            .by_destination_id
            .entry(done.destination_id.to_string())
            .or_default() += written.rows;
        if !written.rejected.is_empty() && self.dead_letters.is_some() {
            self.dead_letter(written.rejected, written.rejected_data)?;
        } else if let Some(first) = written.rejected.first().cloned() {
            // The other rows are written and counted; the refused ones stop
            // the run, named in the error and listed in the report.
            let count = written.rejected.len();
            self.stats.note_rejected(written.rejected);
            self.publish();
            return Err(PipelineError::Rejected {
                destination_id: done.destination_id.to_string(),
                count,
                first: Box::new(first),
            });
        }
        self.acknowledge(handle);
        self.publish();
        self.start_writes()
    }

    /// Sends rejected rows to the dead letter; once it has them they count as
    /// delivered (their pages may be acknowledged). Past its bound, the run stops.
    fn dead_letter(&mut self, rejected: Vec<RejectedRecord>, data: Vec<Option<String>>) -> Result<(), PipelineError> {
        let dead_letters = self.dead_letters.clone().expect("a dead letter sink");
        let letters: Vec<Letter> = rejected
            .iter()
            .zip(data)
            .map(|(r, source_data)| Letter::Rejected {
                destination_id: r.destination_id.clone(),
                source_record_id: r.source_record_id.clone(),
                reason: r.reason.clone(),
                source_data,
            })
            .collect();
        if let Some(stats) = &self.source_stats {
            stats.dead_letters.fetch_add(letters.len() as u64, Ordering::Relaxed);
        }
        self.stats.note_rejected(rejected);
        dead_letters.send(&letters)?;
        Ok(())
    }

    /// Writes that already started are waited for (and counted) when a run fails.
    async fn drain_in_flight(&mut self, handle: &SourceHandle) {
        self.queued.clear();
        while let Some(done) = self.writes.join_next().await {
            let done = done.expect("write tasks do not panic");
            if let Err(e) = self.finish_write(done, handle) {
                tracing::error!("{e}");
            }
        }
    }

    /// Acknowledges every page older than the oldest one with unwritten rows.
    fn acknowledge(&mut self, handle: &SourceHandle) {
        let oldest_unwritten = [self.buffers.oldest_page(), self.pending_pages.keys().next().copied()]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(self.pages_read);
        if let Some(done) = oldest_unwritten.checked_sub(1) {
            if self.acknowledged.is_none_or(|a| a < done) {
                self.acknowledged = Some(done);
                // The source thread may be gone already; nothing is left to commit then.
                let _ = handle.acks.send(done);
            }
        }
    }

    fn publish(&mut self) {
        if let Some(s) = &self.source_stats {
            self.stats.source = Some(s.snapshot()).filter(|s| !s.is_empty());
        }
        self.progress.send_replace(self.stats.clone());
    }

    fn report(mut self, outcome: Outcome, started: StdInstant) -> RunReport {
        let (status, error) = match outcome {
            Outcome::Completed => (RunStatus::Success, None),
            Outcome::Interrupted(e) => (RunStatus::Interrupted, e.map(|e| e.to_string())),
            Outcome::Failed(e) => (RunStatus::Failed, Some(e.to_string())),
        };
        self.publish();
        RunReport::new(status, error, &self.stats, started.elapsed())
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// One batch to its destination: decode for `unnest`, then write with
/// retries (none once `stopping` turns true). Rows the destination refused
/// are named by their source_record_id.
async fn write(
    destination: SharedDestination,
    unnester: Option<Arc<Unnester>>,
    mut batch: Batch,
    retry: RetryPolicy,
    stopping: watch::Receiver<bool>,
) -> Result<Written, PipelineError> {
    let original = batch.records.clone();
    if let Some(unnester) = unnester {
        let records = batch.records.clone();
        batch.records = tokio::task::spawn_blocking(move || unnester.unnest(&records))
            .await
            .expect("unnest does not panic")?;
    }
    let id = batch.destination_id.clone();
    let result = retry
        .run(
            || destination.write(&batch),
            |attempt, error, wait| {
                tracing::warn!(
                    destination_id = &*id,
                    attempt,
                    "write failed, retrying in {wait:?}: {error}"
                );
            },
            stopping,
        )
        .await;
    match result {
        Ok(rows) => Ok(Written {
            rows,
            rejected: Vec::new(),
            rejected_data: Vec::new(),
        }),
        Err(RetryError {
            error: DestinationError::Rejected(rows),
            ..
        }) => {
            let rejected_data = report::rejected_source_data(&original, &rows);
            let rejected = report::rejected_records(&id, &original, rows);
            Ok(Written {
                rows: original.num_rows() as u64 - rejected.len() as u64,
                rejected,
                rejected_data,
            })
        }
        Err(e) => Err(PipelineError::Write {
            destination_id: id.to_string(),
            message: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests;
