//! The drive loop: pages from the source into the buffers, flushes by
//! size, age, memory or the source's end, finishing writes as they come
//! back, and the final flush and finalize.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant as StdInstant;

use tokio::time::Instant;

use super::SOURCE_STATS_EVERY;
use super::{Outcome, PipelineError, Run, RunReport, RunStatus, SourceEvent, SourceHandle};
use crate::buffer::FlushReason;
use crate::destination::retry;
use crate::record::now_us;

impl Run {
    pub(super) fn memory(&self) -> usize {
        self.buffers.bytes() + self.queued_bytes + self.in_flight_bytes
    }

    pub(super) async fn drive(&mut self, handle: &mut SourceHandle) -> Outcome {
        // A service that is briefly away is waited for as a write would be.
        let checked = retry::run(
            &self.options.retry,
            || self.destination.check_connection(),
            |attempt, error, wait| tracing::warn!(attempt, "check_connection failed, retrying in {wait:?}: {error}"),
            self.stopping.clone(),
        )
        .await;
        if let Err(e) = checked {
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
        // Finalize may have moved the destination (a staged file published
        // onto its target): the final commit records where it stands now.
        let written: Vec<_> = self.acked_destinations.keys().cloned().collect();
        for id in written {
            self.acknowledge_destination(&id, handle);
        }
        match *self.stopping.borrow() {
            true => Outcome::Interrupted(None),
            false => outcome,
        }
    }

    pub(super) async fn read_until_end(&mut self, handle: &mut SourceHandle) -> Outcome {
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
            let mut resume = None;
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
                    Some(SourceEvent::Page(mut page)) => {
                        self.pages_read = page.sequence + 1;
                        self.stats.records_read += page.records.len() as u64;
                        if let Err(e) = self.dead_letter_page(page.records.len(), std::mem::take(&mut page.letters)) {
                            return Outcome::Failed(e);
                        }
                        let due = self.buffers.append(page.sequence, page.extracted_at_us, &page.records, Instant::now());
                        self.buffers.note_spans(&page.spans);
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
                    // Awaited after the select: its output borrows the stop signal.
                    Some(SourceEvent::Resume(positions)) => resume = Some(positions),
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
            if let Some(positions) = resume {
                if let Err(e) = self.destination.resume(&positions).await {
                    return Outcome::Failed(PipelineError::Resume {
                        destination: self.destination_name,
                        message: e.to_string(),
                    });
                }
            }
        }
    }

    /// Turns a buffer into a batch and queues it behind its destination_id's
    /// earlier batches.
    pub(super) fn flush(&mut self, id: &Arc<str>, reason: FlushReason) -> Result<(), PipelineError> {
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
        self.pending_pages
            .entry(id.clone())
            .or_default()
            .push_back(flushed.first_page);
        self.queued_bytes += flushed.bytes;
        self.queued.entry(id.clone()).or_default().push_back(flushed);
        self.start_writes()
    }

    pub(super) fn publish(&mut self) {
        self.stats.records_replayed = self.destination.replayed();
        if let Some(s) = &self.source_stats {
            self.stats.source = Some(s.snapshot()).filter(|s| !s.is_empty());
        }
        self.progress.send_replace(self.stats.clone());
    }

    pub(super) fn report(mut self, outcome: Outcome, started: StdInstant) -> RunReport {
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
