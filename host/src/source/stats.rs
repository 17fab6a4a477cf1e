//! What a source reports about itself while it runs (Kafka: lag, commits,
//! rebalances), read by the progress display, the result JSON and metrics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;

#[derive(Debug, Default)]
pub struct SourceStats {
    pub commits: AtomicU64,
    /// Assignments received from the group (the first join counts).
    pub rebalances: AtomicU64,
    pub dead_letters: AtomicU64,
    /// Every broker is unreachable (Kafka): the run waits for one.
    pub broker_down: AtomicBool,
    /// Times every broker became unreachable.
    pub broker_outages: AtomicU64,
    /// By `topic/partition`.
    lag: Mutex<BTreeMap<String, PartitionLag>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PartitionLag {
    /// The partition's high watermark as the last fetch saw it.
    pub high_watermark: i64,
    /// Next offset to commit (every record before it written), -1 before the first.
    pub committed: i64,
    /// Records between the commit and the high watermark.
    pub lag: i64,
}

/// A snapshot for the report.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SourceReport {
    pub commits: u64,
    pub rebalances: u64,
    pub dead_letters: u64,
    pub broker_down: bool,
    pub broker_outages: u64,
    pub lag: BTreeMap<String, PartitionLag>,
}

impl SourceReport {
    pub fn is_empty(&self) -> bool {
        *self == SourceReport::default()
    }
}

impl SourceStats {
    pub fn set_lag(&self, partition: String, lag: PartitionLag) {
        self.lag.lock().expect("source stats").insert(partition, lag);
    }

    pub fn snapshot(&self) -> SourceReport {
        SourceReport {
            commits: self.commits.load(Ordering::Relaxed),
            rebalances: self.rebalances.load(Ordering::Relaxed),
            dead_letters: self.dead_letters.load(Ordering::Relaxed),
            broker_down: self.broker_down.load(Ordering::Relaxed),
            broker_outages: self.broker_outages.load(Ordering::Relaxed),
            lag: self.lag.lock().expect("source stats").clone(),
        }
    }
}
