//! The librdkafka consumer's context: what happens on a rebalance, commits,
//! and the lag read from librdkafka's statistics (the fetch high watermark).
//!
//! Rebalance callbacks run inside `poll` on the source thread, so the state
//! they share with the read loop sits behind a mutex the loop never holds
//! while polling.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientContext;
use tokio::sync::mpsc;

use super::checkpoint::Checkpoint;
use super::config::BrokerGate;
use super::offsets::{Offsets, Tp};
use crate::source::{Ack, PartitionLag, SourceEvent, SourceStats};

pub type KafkaConsumer = BaseConsumer<Context>;

pub struct Shared {
    pub offsets: Offsets,
    pub acks: std::sync::mpsc::Receiver<Ack>,
    pub events: mpsc::Sender<SourceEvent>,
    pub assigned: BTreeSet<Tp>,
    /// Partitions are paused while the pipeline has no room.
    pub paused: bool,
    /// The pipeline is gone: no more acknowledgements will come.
    pub acks_closed: bool,
    /// High watermarks from the last statistics.
    high: HashMap<Tp, i64>,
    /// A broker learned outside the gate: the run ends with this.
    pub outside: Option<String>,
    /// Since when every broker is unreachable (see [`Context::brokers_down`]).
    down_since: Option<Instant>,
    /// The local copy of the commits, for brokers that drop their metadata.
    pub checkpoint: Option<Checkpoint>,
}

pub struct Context {
    shared: Mutex<Shared>,
    pub stats: Arc<SourceStats>,
    /// How long a revoke waits for the partition's in-flight records to be written.
    drain_timeout: Duration,
    gate: Option<BrokerGate>,
}

impl Context {
    pub fn new(
        offsets: Offsets,
        acks: std::sync::mpsc::Receiver<Ack>,
        events: mpsc::Sender<SourceEvent>,
        stats: Arc<SourceStats>,
        drain_timeout: Duration,
        gate: Option<BrokerGate>,
        checkpoint: Option<Checkpoint>,
    ) -> Self {
        Self {
            shared: Mutex::new(Shared {
                offsets,
                acks,
                events,
                assigned: BTreeSet::new(),
                paused: false,
                acks_closed: false,
                high: HashMap::new(),
                outside: None,
                down_since: None,
                checkpoint,
            }),
            stats,
            drain_timeout,
            gate,
        }
    }

    pub fn shared(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().expect("kafka source state")
    }

    /// Takes the acknowledgements that arrived, without waiting.
    pub fn take_acks(&self) {
        let mut s = self.shared();
        loop {
            match s.acks.try_recv() {
                Ok(ack) => s.offsets.acknowledge(ack),
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    s.acks_closed = true;
                    break;
                }
            }
        }
    }

    /// Commits what was written of the partitions `keep` accepts (all
    /// assigned ones by default), each offset with its destination's
    /// position as the commit's metadata. Asynchronous unless `mode` says
    /// otherwise (a revoke, the last commit): the result comes back through
    /// [`commit_callback`](ConsumerContext::commit_callback), and a commit
    /// that failed is tried again at the next one.
    pub fn commit(&self, consumer: &KafkaConsumer, keep: Option<&[Tp]>, mode: CommitMode) {
        let mut s = self.shared();
        self.commit_locked(consumer, &mut s, keep, mode);
    }

    fn commit_locked(&self, consumer: &KafkaConsumer, s: &mut Shared, keep: Option<&[Tp]>, mode: CommitMode) {
        let due = s.offsets.uncommitted(|tp| match keep {
            Some(list) => list.contains(tp),
            None => s.assigned.contains(tp),
        });
        if due.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        let mut recorded = Vec::with_capacity(due.len());
        for (tp, (offset, position)) in &due {
            let (topic, partition) = tp;
            if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset)) {
                tracing::warn!("kafka: cannot list {topic}/{partition} for commit: {e}");
                continue;
            }
            if let (Some(destination_id), Some(mut elem)) =
                (s.offsets.destination_of(tp), tpl.find_partition(topic, *partition))
            {
                let metadata = super::position::metadata(destination_id, position.as_deref());
                elem.set_metadata(&metadata);
                recorded.push((&**topic, *partition, *offset, metadata));
            }
        }
        // The copy first: a commit that lands has its copy, whatever
        // happens after.
        if let Some(checkpoint) = &mut s.checkpoint {
            checkpoint.record(recorded);
        }
        let sent = match mode {
            CommitMode::Async => commit_async(consumer, &tpl),
            CommitMode::Sync => consumer.commit(&tpl, mode),
        };
        match sent {
            Ok(()) => {
                s.offsets.mark_committed(&due);
                self.stats.commits.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(partitions = due.len(), "kafka: committed");
                for (tp, _) in &due {
                    publish_lag(&self.stats, s, tp);
                }
            }
            Err(e) => tracing::warn!("kafka: commit failed, retried at the next one: {e}"),
        }
    }

    /// A revoke: wait (bounded) until what was read of these partitions is
    /// written, then commit it. A lost assignment commits nothing: another
    /// member may own the partitions already.
    fn revoke(&self, consumer: &KafkaConsumer, tpl: &TopicPartitionList) {
        let partitions: Vec<Tp> = tpl
            .elements()
            .iter()
            .map(|e| (Arc::from(e.topic()), e.partition()))
            .collect();
        let mut s = self.shared();
        if consumer.assignment_lost() {
            tracing::warn!(
                partitions = partitions.len(),
                "kafka: assignment lost; its uncommitted records will be read again by the new owner"
            );
        } else {
            if !s.acks_closed && s.offsets.last_uncovered_page(&partitions).is_some() {
                self.drain(&mut s, &partitions);
            }
            self.commit_locked(consumer, &mut s, Some(&partitions), CommitMode::Sync);
        }
        for tp in &partitions {
            s.assigned.remove(tp);
        }
        tracing::info!(partitions = partitions.len(), "kafka: partitions revoked");
    }

    /// Asks the pipeline to write what it holds and waits until every page
    /// with records of `partitions` is covered or the drain timeout passes.
    fn drain(&self, s: &mut Shared, partitions: &[Tp]) {
        let deadline = Instant::now() + self.drain_timeout;
        let mut asked = false;
        while s.offsets.last_uncovered_page(partitions).is_some() {
            let now = Instant::now();
            if now >= deadline {
                tracing::warn!(
                    "kafka: revoked partitions not fully written within {:?}; the rest will be read again",
                    self.drain_timeout
                );
                return;
            }
            if !asked {
                match s.events.try_send(SourceEvent::Drain) {
                    Ok(()) => asked = true,
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                    Err(mpsc::error::TrySendError::Full(_)) => {}
                }
            }
            let wait = if asked {
                deadline - now
            } else {
                Duration::from_millis(10)
            };
            match s.acks.recv_timeout(wait) {
                Ok(ack) => s.offsets.acknowledge(ack),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    s.acks_closed = true;
                    return;
                }
            }
        }
    }

    /// librdkafka lost its connection to every broker. Nothing is lost
    /// meanwhile: the run holds what it read, commits fail and are tried
    /// again, and librdkafka reconnects by itself (backoff up to
    /// `reconnect.backoff.max.ms`, 10 s by default); so the run waits, says
    /// so once, and shows it in `kafka_broker_down` until a broker is back.
    fn brokers_down(&self, reason: &str) {
        let mut s = self.shared();
        if s.down_since.is_some() {
            return;
        }
        s.down_since = Some(Instant::now());
        self.stats.broker_down.store(true, Ordering::Relaxed);
        self.stats.broker_outages.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            "kafka: every broker is unreachable ({reason}); the run waits for one to come back \
             (what was read and not committed is kept, then committed or read again)"
        );
    }

    /// A broker is up again (from the statistics): the outage is over.
    fn broker_up(&self, s: &mut Shared) {
        if let Some(since) = s.down_since.take() {
            self.stats.broker_down.store(false, Ordering::Relaxed);
            tracing::info!(
                "kafka: a broker answers again after {:.1} s; reading on",
                since.elapsed().as_secs_f64()
            );
        }
    }

    fn assign(&self, consumer: &KafkaConsumer, tpl: &TopicPartitionList) {
        self.stats.rebalances.fetch_add(1, Ordering::Relaxed);
        let mut s = self.shared();
        for e in tpl.elements() {
            s.assigned.insert((Arc::from(e.topic()), e.partition()));
        }
        if s.paused {
            if let Err(e) = consumer.pause(tpl) {
                tracing::warn!("kafka: cannot pause newly assigned partitions: {e}");
            }
        }
        tracing::info!(partitions = tpl.count(), "kafka: partitions assigned");
    }
}

/// An asynchronous commit whose result comes back to
/// [`commit_callback`](ConsumerContext::commit_callback). rdkafka's
/// `commit(.., Async)` gives librdkafka no reply queue, and a consumer on
/// the event API configures no `offset_commit_cb`: librdkafka 2.12 then only
/// logs a failed commit (COMMITFAIL, `rd_kafka_cgrp_propagate_commit_result`)
/// and the offsets stayed marked committed, never sent again. With the
/// consumer queue as reply queue the result is an OFFSET_COMMIT event that
/// `poll` hands to the callback.
fn commit_async(consumer: &KafkaConsumer, tpl: &TopicPartitionList) -> KafkaResult<()> {
    use rdkafka::bindings as rd;
    let client = consumer.client().native_ptr();
    // SAFETY: `client` lives as long as `consumer`; the queue handle is a
    // new reference (the commit's reply keeps its own) released here, and
    // librdkafka copies `tpl`.
    let err = unsafe {
        let queue = rd::rd_kafka_queue_get_consumer(client);
        if queue.is_null() {
            // No group: a null queue would make librdkafka wait for the result.
            return Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::UnknownGroup));
        }
        let err = rd::rd_kafka_commit_queue(client, tpl.ptr(), queue, None, std::ptr::null_mut());
        rd::rd_kafka_queue_destroy(queue);
        err
    };
    if err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        Ok(())
    } else {
        Err(KafkaError::ConsumerCommit(err.into()))
    }
}

/// Lag of one partition from its last known high watermark and commit.
fn publish_lag(stats: &SourceStats, s: &Shared, tp: &Tp) {
    let Some(&high) = s.high.get(tp) else { return };
    let committed = s.offsets.committed(tp).unwrap_or(-1);
    stats.set_lag(
        format!("{}/{}", tp.0, tp.1),
        PartitionLag {
            high_watermark: high,
            committed,
            lag: (high - committed.max(0)).max(0),
        },
    );
}

impl ClientContext for Context {
    /// librdkafka's global errors. The end of a partition (a full refresh
    /// relies on it) is an expected event, and the rest are transient
    /// (librdkafka retries them; a fatal one surfaces from `poll`), so none
    /// is logged at ERROR as rdkafka's default does.
    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        if code == Some(RDKafkaErrorCode::PartitionEOF) {
            tracing::trace!("kafka: {reason}");
        } else if code == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.brokers_down(reason);
        } else {
            tracing::warn!("librdkafka: {error}: {reason}");
        }
    }

    fn stats(&self, statistics: Statistics) {
        let mut s = self.shared();
        if s.down_since.is_some() && statistics.brokers.values().any(|b| b.state == "UP") {
            self.broker_up(&mut s);
        }
        if let Some(gate) = &self.gate {
            if let Some(outside) = super::advertised::learned_outside(gate, &statistics) {
                s.outside.get_or_insert(outside);
            }
        }
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                let tp: Tp = (Arc::from(topic.as_str()), *partition);
                if *partition < 0 || p.hi_offset < 0 || !s.assigned.contains(&tp) {
                    continue;
                }
                s.high.insert(tp.clone(), p.hi_offset);
                publish_lag(&self.stats, &s, &tp);
            }
        }
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &KafkaConsumer, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => self.revoke(consumer, tpl),
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => tracing::warn!("kafka: rebalance error: {e}"),
        }
    }

    fn post_rebalance(&self, consumer: &KafkaConsumer, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            self.assign(consumer, tpl);
        }
    }

    /// An asynchronous commit that failed is tried again: its partitions
    /// are marked uncommitted (the next commit sends them).
    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(e) = result {
            tracing::warn!("kafka: commit failed, retried at the next one: {e}");
            let mut s = self.shared();
            for elem in offsets.elements() {
                s.offsets.forget_commit(&(Arc::from(elem.topic()), elem.partition()));
            }
        }
    }
}
