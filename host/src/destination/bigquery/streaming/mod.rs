//! `bigquery_streaming`: the legacy `tabledata.insertAll` API, one JSON POST
//! per request.
//!
//! Bizon drops the per-row `insertErrors` that come back with HTTP 200, so
//! those rows are lost. Here a row BigQuery could not write for a passing
//! reason (`backendError`, `internalError`, or `stopped`: held back because
//! another row of its request was invalid) makes the write retryable, and
//! the retry (the pipeline's one retry loop, with its backoff, `Retry-After`
//! and stop signal) sends only the rows still pending, with the same
//! insertIds; a row BigQuery refuses is reported by its index in the batch
//! with BigQuery's reason and column.
//!
//! [`encode`] cuts a batch into requests; this file sends them.

mod encode;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use reqwest::Method;
use serde_json::Value;

pub use encode::{encode, encode_each, Encoded, InsertIds, Request, REQUEST_BUDGET};

use super::auth;
use super::config::{BigQueryStreamingConfig, MAX_ROWS_PER_REQUEST};
use super::replays::Replays;
use super::rest::Rest;
use super::schema::{SourceDataType, TableRef};
use super::tables::{Tables, DEFAULT_ENDPOINT};
use super::target::Target;
use crate::destination::{Batch, Destination, DestinationError, RejectedRow};

/// Row error reasons that say nothing about the row itself.
const RETRYABLE_REASONS: [&str; 3] = ["backendError", "internalError", "stopped"];

pub struct Streaming {
    target: Target,
    rest: Rest,
    endpoint: String,
    max_rows: usize,
    in_flight: usize,
    /// Requests sent again (HTTP errors and retryable row errors), for the logs.
    resent: AtomicU64,
    insert_ids: InsertIds,
    /// Rows a crashed run wrote after its last commit, recognised when read again.
    replays: Replays,
    /// Batches a write left unfinished (some rows still to send), by
    /// destination_id and sequence: the retry of the same batch sends only
    /// the rest.
    unfinished: Mutex<HashMap<(Arc<str>, u64), Unfinished>>,
}

/// What a batch's earlier attempts did.
#[derive(Default)]
struct Unfinished {
    /// Rows written or refused for good, by index in the batch.
    settled: Vec<bool>,
    refused: Vec<RejectedRow>,
}

/// What one request did.
struct Sent {
    /// Rows written, and rows refused for good.
    settled: Vec<usize>,
    refused: Vec<RejectedRow>,
    /// Why some rows are not settled yet (they are the others), and how
    /// long the server asked to wait.
    pending: Option<(String, Option<Duration>)>,
}

pub async fn build(c: &BigQueryStreamingConfig) -> Result<Streaming, DestinationError> {
    if c.bq_max_rows_per_request == 0 || c.bq_max_rows_per_request > MAX_ROWS_PER_REQUEST {
        return Err(DestinationError::Fatal(format!(
            "bq_max_rows_per_request must be between 1 and {MAX_ROWS_PER_REQUEST}"
        )));
    }
    let credentials = auth::credentials(c.authentication.as_ref(), c.endpoint.is_some())?;
    // Bizon's streaming destinations create a missing dataset in check_connection.
    let tables = Tables::new(c.endpoint.as_deref(), credentials.clone(), &c.dataset_location, true).await?;
    let target = Target::new(
        c.options.clone(),
        c.project_id.clone(),
        c.dataset_id.clone(),
        c.time_partitioning.clone(),
        SourceDataType::Json,
        tables,
        c.table_prefix.clone(),
    )?;
    Ok(Streaming {
        target,
        rest: Rest::new(credentials)?,
        endpoint: c
            .endpoint
            .as_deref()
            .unwrap_or(DEFAULT_ENDPOINT)
            .trim_end_matches('/')
            .to_string(),
        max_rows: c.bq_max_rows_per_request,
        in_flight: c.options.max_concurrent_threads.max(1),
        resent: AtomicU64::new(0),
        unfinished: Mutex::default(),
        replays: Replays::default(),
        insert_ids: match c.options.source_identity {
            true => InsertIds::SourceIdentity,
            false => InsertIds::BizonId,
        },
    })
}

/// `insertErrors[k]` as text: each error's reason, column and message.
fn describe_row_error(table: &TableRef, entry: &Value) -> String {
    let parts: Vec<String> = entry["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let mut s = e["reason"].as_str().unwrap_or("unknown").to_string();
            if let Some(location) = e["location"].as_str().filter(|l| !l.is_empty()) {
                s.push_str(&format!(" at `{location}`"));
            }
            if let Some(message) = e["message"].as_str().filter(|m| !m.is_empty()) {
                s.push_str(&format!(": {message}"));
            }
            s
        })
        .collect();
    format!("{table}: {}", parts.join("; "))
}

fn row_error_is_retryable(entry: &Value) -> bool {
    let errors = entry["errors"].as_array();
    errors.is_some_and(|e| {
        !e.is_empty()
            && e.iter()
                .all(|e| RETRYABLE_REASONS.contains(&e["reason"].as_str().unwrap_or_default()))
    })
}

impl Streaming {
    /// One attempt at one request: the rows of it not settled before.
    async fn send(
        &self,
        table: &TableRef,
        url: &str,
        request: Request,
        settled: Arc<[bool]>,
    ) -> Result<Sent, DestinationError> {
        let pending: Vec<usize> = (0..request.rows.len()).filter(|&p| !settled[request.rows[p]]).collect();
        let mut sent = Sent {
            settled: Vec::with_capacity(pending.len()),
            refused: Vec::new(),
            pending: None,
        };
        if pending.is_empty() {
            return Ok(sent);
        }
        let answer = match self
            .rest
            .call(Method::POST, url, Some(request.body(&pending)), None)
            .await
        {
            Ok(answer) => answer,
            Err(e) if e.is_transient() => {
                sent.pending = Some((e.to_string(), e.retry_after()));
                return Ok(sent);
            }
            Err(e) => return Err(e.into_destination(&format!("insertAll into {table}"))),
        };
        let mut again = vec![false; pending.len()];
        let mut passing = 0;
        for entry in answer["insertErrors"].as_array().into_iter().flatten() {
            let Some(k) = entry["index"]
                .as_u64()
                .map(|i| i as usize)
                .filter(|&k| k < pending.len())
            else {
                return Err(DestinationError::Fatal(format!(
                    "insertAll into {table}: an insertErrors entry without a valid index: {entry}"
                )));
            };
            let row = request.rows[pending[k]];
            if row_error_is_retryable(entry) {
                again[k] = true;
                passing += 1;
            } else {
                sent.refused.push(RejectedRow {
                    row: row as u64,
                    reason: describe_row_error(table, entry),
                });
            }
        }
        sent.settled = pending
            .iter()
            .zip(&again)
            .filter(|(_, again)| !**again)
            .map(|(&p, _)| request.rows[p])
            .collect();
        if passing > 0 {
            sent.pending = Some((format!("{passing} row(s) not written for a passing reason"), None));
        }
        Ok(sent)
    }
}

#[async_trait]
impl Destination for Streaming {
    async fn check_connection(&self) -> Result<(), DestinationError> {
        self.target.check_connection().await
    }

    async fn write(&self, batch: &Batch) -> Result<u64, DestinationError> {
        if batch.records.num_rows() == 0 {
            return Ok(0);
        }
        let (table, _) = self.target.ensure(&batch.destination_id).await?;
        let table_of = |id: Arc<str>| async move { self.target.resolve(&id).await.map(|(table, _)| table) };
        self.replays.load(&self.target.tables, table_of).await?;
        let kept = self.replays.filter(batch)?;
        let sent = match Replays::to_send(&kept, batch) {
            Some(rows) => self.insert(&table, rows).await.map(drop),
            None => Ok(()),
        };
        self.replays.settle(batch, &table, kept, sent)
    }

    fn position(&self, destination_id: &str) -> Option<String> {
        self.replays.position(destination_id)
    }

    async fn resume(&self, positions: &crate::source::Positions) -> Result<(), DestinationError> {
        self.replays.resume(positions).await;
        Ok(())
    }

    fn replayed(&self) -> u64 {
        self.replays.replayed()
    }

    async fn finalize(&self) -> Result<(), DestinationError> {
        let resent = self.resent.load(Ordering::Relaxed);
        if resent > 0 {
            tracing::info!(resent, "insertAll requests sent again during the run");
        }
        Ok(())
    }
}

impl Streaming {
    /// One batch (less what a crashed run wrote already) into `table`.
    async fn insert(&self, table: &TableRef, batch: &Batch) -> Result<u64, DestinationError> {
        let total = batch.records.num_rows();
        let unnest = self.target.options.unnest;
        let url = format!(
            "{}/bigquery/v2/projects/{}/datasets/{}/tables/{}/insertAll",
            self.endpoint, table.project, table.dataset, table.table
        );
        // Requests are encoded on a blocking thread and sent as they come, at
        // most `in_flight` sending and as many waiting: memory holds those,
        // not the whole batch as JSON.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Request>(self.in_flight);
        let (max_rows, records, ids) = (self.max_rows, batch.clone(), self.insert_ids);
        let producer = tokio::task::spawn_blocking(move || {
            encode_each(&records, unnest, ids, max_rows, REQUEST_BUDGET, |r| {
                tx.blocking_send(r).is_ok()
            })
        });
        let key = (batch.destination_id.clone(), batch.sequence);
        let mut state = self
            .unfinished
            .lock()
            .expect("unfinished batches")
            .remove(&key)
            .unwrap_or_default();
        state.settled.resize(total, false);
        // What earlier attempts settled; this attempt's requests hold disjoint rows.
        let before: Arc<[bool]> = state.settled.clone().into();
        let mut running = FuturesUnordered::new();
        let mut pending: Option<(String, Option<Duration>)> = None;
        let mut settle = |state: &mut Unfinished, sent: Sent| {
            for row in sent.settled {
                state.settled[row] = true;
            }
            for r in &sent.refused {
                state.settled[r.row as usize] = true;
            }
            state.refused.extend(sent.refused);
            if sent.pending.is_some() {
                pending = sent.pending;
            }
        };
        let mut open = true;
        let sent: Result<(), DestinationError> = async {
            loop {
                if open && running.len() < self.in_flight {
                    tokio::select! {
                        next = rx.recv() => match next {
                            Some(request) => running.push(self.send(table, &url, request, before.clone())),
                            None => open = false,
                        },
                        Some(done) = running.next(), if !running.is_empty() => settle(&mut state, done?),
                    }
                } else if let Some(done) = running.next().await {
                    settle(&mut state, done?);
                } else {
                    return Ok(());
                }
            }
        }
        .await;
        // A failed send stops the encoder: its next hand-over finds no receiver.
        drop(rx);
        let too_large = producer
            .await
            .map_err(|e| DestinationError::Fatal(format!("encoding rows: {e}")))??;
        sent?;
        for r in too_large {
            state.settled[r.row as usize] = true;
            state.refused.push(RejectedRow {
                reason: format!("{table}: {}", r.reason),
                ..r
            });
        }
        if let Some((why, after)) = pending {
            // The retry of this batch sends only the rows still pending.
            let left = state.settled.iter().filter(|s| !**s).count();
            self.unfinished.lock().expect("unfinished batches").insert(key, state);
            self.resent.fetch_add(1, Ordering::Relaxed);
            let message = format!("insertAll into {table}: {why}; {left} row(s) of the batch to send again");
            return Err(match after {
                Some(after) => DestinationError::RetryAfter { message, after },
                None => DestinationError::Retryable(message),
            });
        }
        if state.refused.is_empty() {
            return Ok(total as u64);
        }
        let mut refused = state.refused;
        refused.sort_by_key(|r| r.row);
        Err(DestinationError::Rejected(refused))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_passing_row_errors_are_sent_again() {
        let stopped = serde_json::json!({"index": 0, "errors": [{"reason": "stopped"}]});
        let invalid =
            serde_json::json!({"index": 1, "errors": [{"reason": "invalid", "location": "n", "message": "bad"}]});
        let mixed = serde_json::json!({"index": 2, "errors": [{"reason": "backendError"}, {"reason": "invalid"}]});
        assert!(row_error_is_retryable(&stopped));
        assert!(!row_error_is_retryable(&invalid));
        assert!(!row_error_is_retryable(&mixed));
        let table = TableRef::resolve("t", "p", "d").unwrap();
        assert_eq!(describe_row_error(&table, &invalid), "p.d.t: invalid at `n`: bad");
    }
}
