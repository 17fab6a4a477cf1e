//! Where records come from.
//!
//! A source runs on its own thread and hands over pages through a bounded
//! channel: generating or parsing records is CPU work that then overlaps with
//! buffering and writing, and a full channel is the backpressure that slows a
//! source down when the destinations cannot keep up.

mod dummy;
mod jsonl;

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::config::SourceConfig;
use crate::record::SourceRecord;

pub use dummy::DummySource;
pub use jsonl::JsonlSource;

/// Records read together, with the time they were read.
#[derive(Debug)]
pub struct Page {
    /// Position of the page in the run, from 0; what the source is acknowledged by.
    pub sequence: u64,
    pub extracted_at_us: i64,
    pub records: Vec<SourceRecord>,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{path}:{line}: {message}")]
    BadLine { path: String, line: u64, message: String },
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

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

pub fn build(config: &SourceConfig) -> Result<Box<dyn Source>, SourceError> {
    Ok(match config {
        SourceConfig::Dummy(c) => Box::new(DummySource::new(c)),
        SourceConfig::Jsonl(c) => Box::new(JsonlSource::open(c)?),
    })
}

/// What the source thread reports besides pages.
#[derive(Debug)]
pub enum SourceEvent {
    Page(Page),
    Failed(SourceError),
    /// Exhausted; `skipped` records were dropped on purpose (`skip_invalid`).
    Done {
        skipped: u64,
    },
}

/// A running source: pages arrive on `events`; acknowledgements go back on
/// `acks`; dropping `stop` (or sending on it) asks the thread to stop after
/// the page it is reading.
pub struct SourceHandle {
    pub events: mpsc::Receiver<SourceEvent>,
    pub acks: std::sync::mpsc::Sender<u64>,
    pub stop: Arc<std::sync::atomic::AtomicBool>,
}

/// Starts `source` on its own thread. `depth` pages may wait in the channel.
pub fn spawn(mut source: Box<dyn Source>, depth: usize) -> SourceHandle {
    use std::sync::atomic::{AtomicBool, Ordering};
    let (tx, events) = mpsc::channel(depth.max(1));
    let (acks, ack_rx) = std::sync::mpsc::channel::<u64>();
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    std::thread::Builder::new()
        .name("bizon-source".into())
        .spawn(move || {
            let mut sequence = 0;
            loop {
                while let Ok(done) = ack_rx.try_recv() {
                    source.acknowledge(done);
                }
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
                let extracted_at_us = crate::record::now_us();
                let event = match source.next_page() {
                    Ok(Some(records)) => SourceEvent::Page(Page {
                        sequence,
                        extracted_at_us,
                        records,
                    }),
                    Ok(None) => SourceEvent::Done {
                        skipped: source.skipped(),
                    },
                    Err(e) => SourceEvent::Failed(e),
                };
                let last = !matches!(event, SourceEvent::Page(_));
                if tx.blocking_send(event).is_err() || last {
                    break;
                }
                sequence += 1;
            }
            // Acknowledgements that arrive after the last page still count.
            while let Ok(done) = ack_rx.recv() {
                source.acknowledge(done);
            }
        })
        .expect("spawning the source thread");
    SourceHandle { events, acks, stop }
}
