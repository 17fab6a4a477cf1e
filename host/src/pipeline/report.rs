//! What a run did, for the progress display and `--result-json`.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use arrow_array::{Array, RecordBatch, StringArray};
use serde::Serialize;

use crate::destination::RejectedRow;

/// Rejected rows listed one by one in a report; the count goes on past it.
pub const MAX_LISTED_REJECTIONS: usize = 1000;

/// A row a destination refused, as the report names it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RejectedRecord {
    pub destination_id: String,
    pub source_record_id: String,
    pub reason: String,
}

/// The rows of `batch` that `rows` names, each once (the first reason wins),
/// by source_record_id.
pub fn rejected_records(destination_id: &str, batch: &RecordBatch, rows: Vec<RejectedRow>) -> Vec<RejectedRecord> {
    let ids = batch
        .column_by_name(crate::record::SOURCE_RECORD_ID)
        .and_then(|c| c.as_any().downcast_ref::<StringArray>());
    let mut seen = HashSet::new();
    rows.into_iter()
        .filter(|r| seen.insert(r.row))
        .map(|r| RejectedRecord {
            destination_id: destination_id.to_string(),
            source_record_id: ids
                .filter(|ids| (r.row as usize) < ids.len())
                .map_or_else(|| format!("row {}", r.row), |ids| ids.value(r.row as usize).to_string()),
            reason: r.reason,
        })
        .collect()
}

/// The source_data of the rows `rows` names, in the order and with the
/// de-duplication of [`rejected_records`].
pub fn rejected_source_data(batch: &RecordBatch, rows: &[RejectedRow]) -> Vec<Option<String>> {
    let data = batch
        .column_by_name(crate::record::SOURCE_DATA)
        .and_then(|c| c.as_any().downcast_ref::<StringArray>());
    let mut seen = HashSet::new();
    rows.iter()
        .filter(|r| seen.insert(r.row))
        .map(|r| {
            data.filter(|d| (r.row as usize) < d.len())
                .map(|d| d.value(r.row as usize).to_string())
        })
        .collect()
}

/// Counts published while the run goes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    pub records_read: u64,
    pub records_written: u64,
    /// Lines the source dropped on purpose (`skip_invalid`).
    pub records_skipped: u64,
    /// Records a crashed run wrote after its last commit, recognised at
    /// this run's start (cut from a file, already in a stream): read again
    /// and written once.
    pub records_replayed: u64,
    pub by_destination_id: BTreeMap<String, u64>,
    /// Most bytes held at once in buffers, queued and in-flight batches.
    pub peak_buffered_bytes: usize,
    /// Rows a destination refused (not written).
    pub records_rejected: u64,
    /// The first [`MAX_LISTED_REJECTIONS`] of them.
    pub rejected: Vec<RejectedRecord>,
    /// What the source reports (Kafka: commits, rebalances, dead letters, lag).
    pub source: Option<crate::source::SourceReport>,
}

impl Progress {
    pub fn note_rejected(&mut self, rejected: Vec<RejectedRecord>) {
        self.records_rejected += rejected.len() as u64;
        let room = MAX_LISTED_REJECTIONS.saturating_sub(self.rejected.len());
        self.rejected.extend(rejected.into_iter().take(room));
    }
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
    /// Records a crashed run wrote after its last commit, recognised and not
    /// written twice (exactly-once; docs/kafka.md).
    pub records_replayed: u64,
    /// Rows a destination refused; they are part of `records_unwritten`.
    pub records_rejected: u64,
    /// The refused rows (the first 1000): destination_id, source_record_id, reason.
    pub rejected: Vec<RejectedRecord>,
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
            records_replayed: stats.records_replayed,
            records_rejected: stats.records_rejected,
            rejected: stats.rejected.clone(),
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
