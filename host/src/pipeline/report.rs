//! What a run did, for the progress display and `--result-json`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// Counts published while the run goes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    pub records_read: u64,
    pub records_written: u64,
    /// Lines the source dropped on purpose (`skip_invalid`).
    pub records_skipped: u64,
    pub by_destination_id: BTreeMap<String, u64>,
    /// Most bytes held at once in buffers, queued and in-flight batches.
    pub peak_buffered_bytes: usize,
    /// What the source reports (Kafka: commits, rebalances, dead letters, lag).
    pub source: Option<crate::source::SourceReport>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Success,
    /// Stopped by a signal after flushing and finalizing what was read.
    Interrupted,
    Failed,
}

/// `--result-json`: `{status, records_read, records_written, by_destination_id, duration_s}` and more.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub status: RunStatus,
    pub records_read: u64,
    pub records_written: u64,
    /// Read but not written: the rows a failed or interrupted run did not deliver.
    pub records_unwritten: u64,
    pub records_skipped: u64,
    pub by_destination_id: BTreeMap<String, u64>,
    pub duration_s: f64,
    pub peak_buffered_bytes: usize,
    /// The process's peak resident memory, when the platform says.
    pub peak_rss_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the source reports (Kafka: commits, rebalances, dead letters, lag).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<crate::source::SourceReport>,
}

impl RunReport {
    pub fn new(status: RunStatus, error: Option<String>, stats: &Progress, duration: Duration) -> Self {
        Self {
            status,
            records_read: stats.records_read,
            records_written: stats.records_written,
            records_unwritten: stats.records_read - stats.records_written,
            records_skipped: stats.records_skipped,
            by_destination_id: stats.by_destination_id.clone(),
            duration_s: duration.as_secs_f64(),
            peak_buffered_bytes: stats.peak_buffered_bytes,
            peak_rss_bytes: peak_rss_bytes(),
            error,
            source: stats.source.clone(),
        }
    }
}

/// VmHWM from /proc: the high-water mark of resident memory.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
