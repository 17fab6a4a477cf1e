//! Where records come from.
//!
//! A source runs on its own thread and hands over pages through a bounded
//! channel: generating or parsing records is CPU work that then overlaps with
//! buffering and writing, and a full channel is the backpressure that slows a
//! source down when the destinations cannot keep up.

pub mod bridge;
pub mod config;
mod dummy;
mod jsonl;
#[cfg(feature = "kafka")]
pub mod kafka;
mod stats;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::record::{Letter, SourceRecord};

pub use config::SourceConfig;
pub use dummy::{DummySource, DummySourceConfig};
pub use jsonl::{JsonlSource, JsonlSourceConfig};
pub use stats::{PartitionLag, SourceReport, SourceStats};

/// Records read together, with the time they were read.
#[derive(Debug)]
pub struct Page {
    /// Position of the page in the run, from 0; what the source is acknowledged by.
    pub sequence: u64,
    pub extracted_at_us: i64,
    pub records: Vec<SourceRecord>,
    /// What the page held that could not become a record (an undecodable
    /// message, a record a transform refused), when the pipeline has a
    /// `dead_letter`: the pipeline writes them there before the page can
    /// be acknowledged.
    pub letters: Vec<Letter>,
    /// For a source with positions (Kafka): the messages the page took, per
    /// partition, so that each batch can tell a plugin where its rows come
    /// from (the destination batch's `source`). Empty otherwise.
    pub spans: Vec<Span>,
}

/// The messages of one source partition that a page or a batch took: a
/// Kafka topic's partition, its first and last offset (records, skips and
/// dead letters alike), and the destination_id the topic goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub destination_id: Arc<str>,
    pub topic: Arc<str>,
    pub partition: i32,
    pub first: i64,
    pub last: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{path}:{line}: {message}")]
    BadLine { path: String, line: u64, message: String },
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("kafka: {0}")]
    Kafka(String),
    #[error("{0}")]
    Bridge(#[from] bridge::BridgeError),
    /// A transform failed on a page (the transform stage wraps the source).
    #[error("transform: {0}")]
    Transform(Box<dyn std::error::Error + Send + Sync>),
}

/// What the pipeline tells the source was written.
#[derive(Debug, Clone, PartialEq)]
pub enum Ack {
    /// Every record of the pages up to and including this one was written
    /// (or dead-lettered).
    Pages(u64),
    /// Every record of `destination_id` in the pages up to and including
    /// `through` was written, and the destination then stood at `position`
    /// (a file's length, a stream's offset). A source that commits records
    /// `position` in the same commit as the offsets that produced it, so
    /// that a restart can tell a replay from new data (exactly-once).
    Destination {
        destination_id: Arc<str>,
        through: u64,
        position: Option<String>,
    },
}

/// The positions a source recorded with its last commit, by destination_id
/// (several when several writers, each with its own file or stream, shared
/// the source): handed to the destination before it writes anything. A
/// destination_id whose records were committed without a position (a
/// broker that drops commit metadata, an older version) has an empty list;
/// one never committed has none.
pub type Positions = std::collections::HashMap<Arc<str>, Vec<String>>;

pub trait Source: Send {
    /// The next page, or `None` once the source is exhausted.
    fn next_page(&mut self) -> Result<Option<Vec<SourceRecord>>, SourceError>;

    /// Every record of the pages up to and including `sequence` was written.
    /// Sources with a position to commit (a Kafka offset) commit it here.
    fn acknowledge(&mut self, _sequence: u64) {}

    /// Records seen but not handed over (skipped invalid lines).
    fn skipped(&self) -> u64 {
        0
    }
}

/// What runs on the source thread. Page sources (dummy, jsonl) get the
/// plain read-send-acknowledge loop through `Box<dyn Source>`; a source
/// with its own protocol to keep alive while the pipeline is busy (Kafka's
/// polling, rebalances and commits) runs its own loop.
pub trait SourceTask: Send + 'static {
    fn run(self: Box<Self>, link: SourceLink);

    /// Whether the run must wait for the source thread to end (a last
    /// commit, leaving a group) before it exits. Page sources need not: one
    /// may be blocked reading standard input.
    fn closes(&self) -> bool {
        false
    }
}

impl SourceTask for Box<dyn Source> {
    fn run(self: Box<Self>, link: SourceLink) {
        let mut source = *self;
        let mut sequence = 0;
        loop {
            while let Ok(ack) = link.acks.try_recv() {
                if let Ack::Pages(done) = ack {
                    source.acknowledge(done);
                }
            }
            if link.stopping() {
                break;
            }
            let extracted_at_us = crate::record::now_us();
            let event = match source.next_page() {
                Ok(Some(records)) => SourceEvent::Page(Page {
                    sequence,
                    extracted_at_us,
                    records,
                    letters: Vec::new(),
                    spans: Vec::new(),
                }),
                Ok(None) => SourceEvent::Done {
                    skipped: source.skipped(),
                },
                Err(e) => SourceEvent::Failed(e),
            };
            let last = !matches!(event, SourceEvent::Page(_));
            if link.events.blocking_send(event).is_err() || last {
                break;
            }
            sequence += 1;
        }
        // Acknowledgements that arrive after the last page still count.
        while let Ok(ack) = link.acks.recv() {
            if let Ack::Pages(done) = ack {
                source.acknowledge(done);
            }
        }
    }
}

impl SourceTask for Box<dyn SourceTask> {
    fn run(self: Box<Self>, link: SourceLink) {
        (*self).run(link)
    }

    fn closes(&self) -> bool {
        (**self).closes()
    }
}

/// The source a pipeline file names. With `dead_letter`, what a source
/// cannot decode travels in its page's `letters` instead of stopping the run.
pub fn build(config: &SourceConfig, dead_letter: bool) -> Result<Box<dyn SourceTask>, SourceError> {
    let _ = dead_letter;
    Ok(match config {
        SourceConfig::Dummy(c) => Box::new(Box::new(DummySource::new(c)) as Box<dyn Source>),
        SourceConfig::Jsonl(c) => Box::new(Box::new(JsonlSource::open(c)?) as Box<dyn Source>),
        #[cfg(feature = "kafka")]
        SourceConfig::Kafka(c) => Box::new(kafka::KafkaSource::new(c, dead_letter)?),
        SourceConfig::Bridge(c) => Box::new(bridge::BridgeSource::new(c)?),
    })
}

/// `bizon-host check`'s look at the source: a bridged one is made as a run
/// makes it and asked check_connection(); the others are checked when they run.
pub async fn check(config: &SourceConfig) -> Result<(), SourceError> {
    match config {
        SourceConfig::Bridge(c) => {
            let source = bridge::BridgeSource::new(c)?;
            tokio::task::spawn_blocking(move || source.check())
                .await
                .expect("the check thread does not panic")?;
            Ok(())
        }
        _ => Ok(()),
    }
}

/// What the source thread reports besides pages.
#[derive(Debug)]
pub enum SourceEvent {
    Page(Page),
    Failed(SourceError),
    /// Write everything buffered now: the source is waiting for the
    /// acknowledgement of what it handed over (a Kafka partition revoked).
    Drain,
    /// Before any page: what was recorded with the last commit, for the
    /// destination to resume from (a file cut back to its committed length).
    Resume(Positions),
    /// Exhausted; `skipped` records were dropped on purpose (`skip_invalid`).
    Done {
        skipped: u64,
    },
}

/// The source thread's ends of the channels.
pub struct SourceLink {
    pub events: mpsc::Sender<SourceEvent>,
    /// What was written, as the pipeline learns it.
    pub acks: std::sync::mpsc::Receiver<Ack>,
    pub stop: Arc<AtomicBool>,
    pub stats: Arc<SourceStats>,
    /// Set at the end when the destination finalized (published what it
    /// staged): only then may a source commit what a staging destination
    /// (a temp file or table) was given.
    pub published: Arc<AtomicBool>,
}

impl SourceLink {
    /// The pipeline asked the source to stop reading.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// A running source: pages arrive on `events`; acknowledgements go back on
/// `acks`; setting `stop` asks the thread to stop after the page it is
/// reading. [`SourceHandle::finish`] hands over the last acknowledgements
/// and waits for the source to commit them and close.
pub struct SourceHandle {
    pub events: mpsc::Receiver<SourceEvent>,
    pub acks: std::sync::mpsc::Sender<Ack>,
    pub stop: Arc<AtomicBool>,
    pub stats: Arc<SourceStats>,
    published: Arc<AtomicBool>,
    /// Resolves when the source thread ended, for sources that [close](SourceTask::closes).
    closed: Option<tokio::sync::oneshot::Receiver<()>>,
}

/// How long a source may take to commit and close once the run is over.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);

impl SourceHandle {
    /// Closes the acknowledgement channel and waits (bounded) for the source
    /// thread to end, so that its last commit happens before the process exits.
    pub async fn finish(self, published: bool) {
        let SourceHandle {
            events,
            acks,
            closed,
            stop,
            published: flag,
            ..
        } = self;
        flag.store(published, Ordering::Relaxed);
        stop.store(true, Ordering::Relaxed);
        // A source blocked handing over a page sees the channel closed.
        drop(events);
        drop(acks);
        let Some(closed) = closed else { return };
        if tokio::time::timeout(CLOSE_TIMEOUT, closed).await.is_err() {
            tracing::warn!("the source did not close within {CLOSE_TIMEOUT:?}; exiting anyway");
        }
    }
}

/// Starts `source` on its own thread. `depth` pages may wait in the channel.
pub fn spawn(source: Box<dyn SourceTask>, depth: usize) -> SourceHandle {
    let (tx, events) = mpsc::channel(depth.max(1));
    let (acks, ack_rx) = std::sync::mpsc::channel::<Ack>();
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(SourceStats::default());
    let published = Arc::new(AtomicBool::new(false));
    let link = SourceLink {
        events: tx,
        acks: ack_rx,
        stop: stop.clone(),
        stats: stats.clone(),
        published: published.clone(),
    };
    let (done, closed) = tokio::sync::oneshot::channel();
    let closed = source.closes().then_some(closed);
    // The source logs in its caller's span: under `serve`, a pipeline's
    // log (what a tenant reads) holds its source's warnings too.
    let span = tracing::Span::current();
    std::thread::Builder::new()
        .name("bizon-source".into())
        .spawn(move || {
            let _in = span.enter();
            source.run(link);
            let _ = done.send(());
        })
        .expect("spawning the source thread");
    SourceHandle {
        events,
        acks,
        stop,
        stats,
        published,
        closed,
    }
}
