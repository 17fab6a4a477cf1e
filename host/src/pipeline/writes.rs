//! Write scheduling: batches of one destination_id are written one at a
//! time and in order; at most `max_concurrent_threads` writes run at once
//! across destination_ids. Each write decodes for `unnest` and retries
//! with the destination's policy ([`retry::run`]).

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::watch;
use tracing::Instrument;

use super::report;
use super::{PipelineError, RejectedRecord, Run};
use crate::config::RetryPolicy;
use crate::destination::retry::{self, RetryError};
use crate::destination::{Batch, DestinationError, SharedDestination};
use crate::record::unnest::Unnester;
use crate::source::SourceHandle;

pub(super) struct WriteDone {
    destination_id: Arc<str>,
    first_page: u64,
    rows: u64,
    bytes: usize,
    result: Result<Written, PipelineError>,
}

/// What a write did: rows written, and the ones the destination refused
/// (with their source_data, for the dead letter).
pub(super) struct Written {
    rows: u64,
    rejected: Vec<RejectedRecord>,
    rejected_data: Vec<Option<String>>,
}

impl Run {
    /// Starts queued batches while threads are free, oldest destination_id first.
    pub(super) fn start_writes(&mut self) -> Result<(), PipelineError> {
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
                source: flushed.spans,
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

    pub(super) fn unnester(&mut self, id: &Arc<str>) -> Result<Option<Arc<Unnester>>, PipelineError> {
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

    pub(super) async fn complete_one(&mut self, handle: &SourceHandle) -> Result<(), PipelineError> {
        let done = self
            .writes
            .join_next()
            .await
            .expect("a write is in flight")
            .expect("write tasks do not panic");
        self.finish_write(done, handle)
    }

    pub(super) fn finish_write(&mut self, done: WriteDone, handle: &SourceHandle) -> Result<(), PipelineError> {
        self.busy.remove(&done.destination_id);
        self.in_flight_bytes -= done.bytes;
        let oldest = self
            .pending_pages
            .get_mut(&done.destination_id)
            .and_then(VecDeque::pop_front);
        debug_assert_eq!(
            oldest,
            Some(done.first_page),
            "a destination_id's batches complete in order"
        );
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
        self.acknowledge_destination(&done.destination_id, handle);
        self.acknowledge(handle);
        self.publish();
        self.start_writes()
    }

    /// Writes that already started are waited for (and counted) when a run fails.
    pub(super) async fn drain_in_flight(&mut self, handle: &SourceHandle) {
        self.queued.clear();
        while let Some(done) = self.writes.join_next().await {
            let done = done.expect("write tasks do not panic");
            if let Err(e) = self.finish_write(done, handle) {
                tracing::error!("{e}");
            }
        }
    }
}

/// One batch to its destination: decode for `unnest`, then write with
/// retries (none once `stopping` turns true). Rows the destination refused
/// are named by their source_record_id.
async fn write(
    destination: SharedDestination,
    unnester: Option<Arc<Unnester>>,
    mut batch: Batch,
    policy: RetryPolicy,
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
    let result = retry::run(
        &policy,
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
