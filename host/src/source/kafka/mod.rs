//! The `kafka` source: Bizon's config and records, with the delivery Bizon
//! lacks. It subscribes once (stream) or assigns every partition (full
//! refresh, incremental), runs on the source thread, and hands pages to the
//! pipeline; a partition's offset is committed only after every record of
//! it up to there was written or dead-lettered (see `offsets`). When the
//! pipeline has no room it pauses the partitions and keeps polling, so the
//! group never drops it for being slow; on a revoke it waits (bounded) for
//! the partition's records to be written and commits them; at the end it
//! commits, then closes the consumer so the group rebalances at once.

pub mod advertised;
pub mod avro;
pub mod config;
mod consumer;
pub mod message;
mod metadata_request;
mod offsets;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::mpsc::error::TrySendError;

use self::config::{KafkaSourceConfig, MessageEncoding};
use self::consumer::{Context, KafkaConsumer};
use self::message::{Decoded, Decoder};
use self::offsets::Tp;
use super::{Page, SourceError, SourceEvent, SourceLink, SourceTask};
use crate::config::SyncMode;
use crate::record::now_us;

/// How long one poll waits, which bounds how late a stop or an
/// acknowledgement is seen.
const POLL: Duration = Duration::from_millis(100);
/// How long a full pipeline is waited for before the partitions are paused.
const PATIENCE: Duration = Duration::from_millis(500);
/// Default of the revoke drain bound, below librdkafka's rebalance timeout.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

pub struct KafkaSource {
    config: KafkaSourceConfig,
    settings: BTreeMap<String, String>,
    decoder: Decoder,
    /// Undecodable messages go to the page's letters rather than stopping the run.
    dead_letter: bool,
}

impl KafkaSource {
    pub fn new(config: &KafkaSourceConfig, dead_letter: bool) -> Result<Self, SourceError> {
        let mut settings = config.client_settings().map_err(SourceError::Kafka)?;
        if config.sync_mode != SyncMode::Stream {
            // A partition read to its end says so, which ends a full refresh
            // even when the last offsets are transaction markers.
            settings.insert("enable.partition.eof".into(), "true".into());
        }
        if config.advertised_within.is_some() {
            // The brokers it learns are read from these.
            settings.insert("statistics.interval.ms".into(), advertised::STATISTICS_EVERY_MS.into());
        } else {
            settings
                .entry("statistics.interval.ms".into())
                .or_insert_with(|| "5000".into());
        }
        let avro = match config.message_encoding {
            MessageEncoding::Utf8 => None,
            MessageEncoding::Avro => {
                let auth = config
                    .authentication
                    .as_ref()
                    .filter(|a| !a.schema_registry_url.is_empty());
                let Some(auth) = auth else {
                    return Err(SourceError::Kafka(
                        "message_encoding: avro (Bizon's default) needs authentication.schema_registry_url; \
                         set `message_encoding: utf-8` for JSON messages"
                            .into(),
                    ));
                };
                Some(std::cell::RefCell::new(
                    avro::AvroDecoder::new(
                        &auth.schema_registry_url,
                        &auth.schema_registry_username,
                        &auth.schema_registry_password,
                    )
                    .map_err(SourceError::Kafka)?,
                ))
            }
        };
        let topics = config
            .topic_map()
            .into_iter()
            .map(|t| (t.name, Arc::from(t.destination_id.as_str())))
            .collect();
        Ok(Self {
            decoder: Decoder {
                avro,
                topics,
                skip_empty_value: config.skip_message_empty_value,
                skip_invalid_keys: config.skip_message_invalid_keys,
                skip_on_decode_error: config.skip_message_on_decode_error,
            },
            config: config.clone(),
            settings,
            dead_letter,
        })
    }

    fn connect(&self, context: Context) -> Result<(KafkaConsumer, Option<Ends>), SourceError> {
        let timeout = Duration::from_secs(self.config.consumer_timeout.max(1));
        if let Some(gate) = &self.config.advertised_within {
            // A group consumer looks up its coordinator, at an advertised
            // address, as soon as it exists.
            advertised::check_before_connecting(&self.settings, gate, timeout).map_err(SourceError::Kafka)?;
        }
        let mut client = ClientConfig::new();
        for (k, v) in &self.settings {
            client.set(k, v);
        }
        let consumer: KafkaConsumer = client
            .create_with_context(context)
            .map_err(|e| SourceError::Kafka(format!("cannot create the consumer: {e}")))?;
        let fail = |message: String| SourceError::Kafka(message);
        let metadata = consumer.fetch_metadata(None, timeout).map_err(|e| {
            fail(format!(
                "cannot reach the brokers {}: {e}",
                self.config.bootstrap_servers
            ))
        })?;
        if let Some(gate) = &self.config.advertised_within {
            // Again: a broker may answer differently the second time.
            advertised::within(gate, &metadata).map_err(SourceError::Kafka)?;
        }
        let mut partitions: Vec<Tp> = Vec::new();
        for topic in self.decoder.topics.keys() {
            match metadata.topics().iter().find(|t| t.name() == topic) {
                Some(t) if !t.partitions().is_empty() => {
                    partitions.extend(t.partitions().iter().map(|p| (Arc::from(topic.as_str()), p.id())))
                }
                _ => {
                    return Err(fail(format!(
                        "topic `{topic}` not found on {}",
                        self.config.bootstrap_servers
                    )))
                }
            }
        }
        if self.config.sync_mode == SyncMode::Stream {
            let names: Vec<&str> = self.decoder.topics.keys().map(String::as_str).collect();
            consumer
                .subscribe(&names)
                .map_err(|e| fail(format!("cannot subscribe: {e}")))?;
            return Ok((consumer, None));
        }
        // Full refresh and incremental: every partition, from the low
        // watermark (or the group's commit) to the high watermark now.
        let committed = if self.config.sync_mode == SyncMode::Incremental {
            let mut tpl = TopicPartitionList::new();
            for (t, p) in &partitions {
                tpl.add_partition(t, *p);
            }
            Some(
                consumer
                    .committed_offsets(tpl, timeout)
                    .map_err(|e| fail(format!("cannot read the group's committed offsets: {e}")))?,
            )
        } else {
            None
        };
        let mut ends = HashMap::new();
        let mut assignment = TopicPartitionList::new();
        for (topic, partition) in &partitions {
            let (low, high) = consumer
                .fetch_watermarks(topic, *partition, timeout)
                .map_err(|e| fail(format!("cannot read the watermarks of {topic}/{partition}: {e}")))?;
            let start = committed
                .as_ref()
                .and_then(|c| c.find_partition(topic, *partition))
                .and_then(|e| e.offset().to_raw())
                .filter(|o| *o >= 0)
                .unwrap_or(low)
                .max(low);
            if start >= high {
                continue;
            }
            ends.insert((topic.clone(), *partition), high);
            assignment
                .add_partition_offset(topic, *partition, Offset::Offset(start))
                .map_err(|e| fail(e.to_string()))?;
        }
        consumer
            .assign(&assignment)
            .map_err(|e| fail(format!("cannot assign the partitions: {e}")))?;
        consumer.context().shared().assigned = ends.keys().cloned().collect();
        Ok((consumer, Some(Ends(ends))))
    }
}

/// Partitions of a full refresh or incremental run not read to their end
/// yet, with the high watermark seen at start.
struct Ends(HashMap<Tp, i64>);

impl SourceTask for KafkaSource {
    fn run(self: Box<Self>, link: SourceLink) {
        let SourceLink {
            events,
            acks,
            stop,
            stats,
            published,
        } = link;
        let gate = self.config.advertised_within.clone();
        let context = Context::new(acks, events.clone(), stats.clone(), DRAIN_TIMEOUT, gate);
        let (consumer, ends) = match self.connect(context) {
            Ok(c) => c,
            Err(e) => {
                let _ = events.blocking_send(SourceEvent::Failed(e));
                return;
            }
        };
        // Outside stream mode destinations stage (a temp file or table) and
        // publish at the end: offsets are committed then, once published.
        let staged = self.config.sync_mode != SyncMode::Stream;
        let commit_every = match staged {
            true => Duration::MAX,
            false => self
                .settings
                .get("auto.commit.interval.ms")
                .and_then(|v| v.parse().ok())
                .map_or(Duration::from_secs(5), Duration::from_millis),
        };
        let mut reader = Reader {
            source: &self,
            consumer: &consumer,
            events,
            stop: &stop,
            ends,
            stash: VecDeque::new(),
            sequence: 0,
            skipped: 0,
            last_commit: Instant::now(),
            commit_every,
            staged,
            published: &published,
        };
        let end = match reader.read() {
            Ok(true) => Some(SourceEvent::Done {
                skipped: reader.skipped,
            }),
            Ok(false) => None,
            Err(e) => Some(SourceEvent::Failed(e)),
        };
        if let Some(event) = end {
            reader.deliver(event);
        }
        reader.wind_down();
        // Leaves the group now (librdkafka's close), rather than after the
        // session timeout: the others take the partitions at once.
        drop(consumer);
        tracing::info!("kafka: consumer closed");
    }

    fn closes(&self) -> bool {
        true
    }
}

struct Reader<'a> {
    source: &'a KafkaSource,
    consumer: &'a KafkaConsumer,
    events: tokio::sync::mpsc::Sender<SourceEvent>,
    stop: &'a std::sync::atomic::AtomicBool,
    ends: Option<Ends>,
    /// Messages polled while the partitions were being paused.
    stash: VecDeque<OwnedMessage>,
    sequence: u64,
    skipped: u64,
    last_commit: Instant,
    commit_every: Duration,
    staged: bool,
    published: &'a std::sync::atomic::AtomicBool,
}

impl Reader<'_> {
    fn context(&self) -> &Context {
        self.consumer.context()
    }

    /// Reads pages until stopped (`Ok(false)`) or, outside stream mode,
    /// until every partition reached its end (`Ok(true)`).
    fn read(&mut self) -> Result<bool, SourceError> {
        loop {
            self.housekeeping();
            if self.stop.load(Ordering::Relaxed) {
                return Ok(false);
            }
            if let Some(outside) = self.context().shared().outside.take() {
                return Err(SourceError::Kafka(outside));
            }
            if self.ends.as_ref().is_some_and(|e| e.0.is_empty()) {
                return Ok(true);
            }
            let Some(page) = self.next_page()? else { continue };
            if !self.deliver(SourceEvent::Page(page)) {
                return Ok(false);
            }
        }
    }

    /// Takes acknowledgements and commits every `commit_every`.
    fn housekeeping(&mut self) {
        self.context().take_acks();
        if self.last_commit.elapsed() >= self.commit_every {
            self.context().commit(self.consumer, None);
            self.last_commit = Instant::now();
        }
    }

    /// One page of up to `batch_size` messages: waits up to one poll for
    /// the first, then takes what is already fetched.
    fn next_page(&mut self) -> Result<Option<Page>, SourceError> {
        let batch = self.source.config.batch_size;
        let read_at = now_us();
        let mut records = Vec::new();
        let mut next: HashMap<Tp, i64> = HashMap::new();
        let mut letters = Vec::new();
        let mut seen = 0u64;
        let mut wait = POLL;
        while seen < batch as u64 {
            let message = match self.stash.pop_front() {
                Some(m) => m,
                None => match self.consumer.poll(wait) {
                    None => break,
                    Some(Ok(m)) => m.detach(),
                    Some(Err(KafkaError::PartitionEOF(partition))) => {
                        self.partition_eof(partition);
                        continue;
                    }
                    Some(Err(e)) => {
                        tracing::warn!("kafka: {e}");
                        continue;
                    }
                },
            };
            wait = Duration::ZERO;
            let tp: Tp = (Arc::from(message.topic()), message.partition());
            if let Some(ends) = &mut self.ends {
                match ends.0.get(&tp) {
                    // Past the high watermark seen at start: not this run's.
                    None => continue,
                    Some(&high) if message.offset() >= high => {
                        ends.0.remove(&tp);
                        continue;
                    }
                    Some(&high) => {
                        if message.offset() + 1 >= high {
                            ends.0.remove(&tp);
                        }
                    }
                }
            }
            seen += 1;
            next.insert(tp, message.offset() + 1);
            match self.source.decoder.decode(&message, read_at) {
                Decoded::Record(r) => records.push(r),
                Decoded::Skipped(why) => {
                    tracing::debug!(why, "kafka: skipped a message");
                    self.skipped += 1;
                }
                Decoded::Failed(error) => {
                    return Err(SourceError::Kafka(format!(
                        "topic {} partition {} offset {}: {error}",
                        message.topic(),
                        message.partition(),
                        message.offset()
                    )))
                }
                Decoded::Bad(error) => match self.source.dead_letter {
                    true => letters.push(message::letter(&message, error)),
                    false => {
                        return Err(SourceError::Kafka(format!(
                            "topic {} partition {} offset {}: {error} (set skip_message_on_decode_error \
                             or a dead_letter to go on)",
                            message.topic(),
                            message.partition(),
                            message.offset()
                        )))
                    }
                },
            }
        }
        if seen == 0 {
            return Ok(None);
        }
        let sequence = self.sequence;
        self.sequence += 1;
        self.context()
            .shared()
            .offsets
            .page(sequence, next.into_iter().collect());
        Ok(Some(Page {
            sequence,
            extracted_at_us: read_at,
            records,
            letters,
        }))
    }

    /// End of a partition in a full refresh: done if its position reached
    /// the watermark seen at start. (librdkafka names only the partition
    /// number, so every topic's partition of that number is looked at.)
    fn partition_eof(&mut self, partition: i32) {
        let Some(ends) = &mut self.ends else { return };
        let Ok(positions) = self.consumer.position() else {
            return;
        };
        ends.0.retain(|(topic, p), high| {
            if *p != partition {
                return true;
            }
            let position = positions
                .find_partition(topic, *p)
                .and_then(|e| e.offset().to_raw())
                .unwrap_or(-1);
            position < *high
        });
    }

    /// Hands `event` to the pipeline. While the pipeline has no room the
    /// partitions are paused and polling goes on (rebalances, heartbeats,
    /// acknowledgements); `false` once the pipeline is gone or stopping.
    fn deliver(&mut self, mut event: SourceEvent) -> bool {
        let mut paused = false;
        let full_since = Instant::now();
        let mut nap = Duration::from_micros(50);
        let delivered = loop {
            match self.events.try_send(event) {
                Ok(()) => break true,
                Err(TrySendError::Closed(_)) => break false,
                Err(TrySendError::Full(back)) => event = back,
            }
            if self.stop.load(Ordering::Relaxed) {
                break false;
            }
            // A pipeline busy with the page before (a transform, an encode)
            // makes room within milliseconds. Pausing then would cost far
            // more: librdkafka drops what it prefetched for paused
            // partitions and fetches it again after the resume, a broker
            // round trip (measured: a transform pipeline from tansu ran
            // 2.9x slower than without, mostly idle, before this wait).
            if !paused && full_since.elapsed() < PATIENCE {
                self.housekeeping();
                std::thread::sleep(nap);
                nap = (nap * 2).min(Duration::from_millis(5));
                continue;
            }
            if !paused {
                self.pause(true);
                paused = true;
            }
            self.housekeeping();
            match self.consumer.poll(POLL) {
                Some(Ok(m)) => self.stash.push_back(m.detach()),
                Some(Err(KafkaError::PartitionEOF(p))) => self.partition_eof(p),
                Some(Err(e)) => tracing::warn!("kafka: {e}"),
                None => {}
            }
        };
        if paused {
            self.pause(false);
        }
        delivered
    }

    fn pause(&self, pause: bool) {
        let mut s = self.context().shared();
        s.paused = pause;
        let mut tpl = TopicPartitionList::new();
        for (t, p) in &s.assigned {
            tpl.add_partition(t, *p);
        }
        drop(s);
        let result = if pause {
            self.consumer.pause(&tpl)
        } else {
            self.consumer.resume(&tpl)
        };
        if let Err(e) = result {
            tracing::warn!(
                "kafka: cannot {} partitions: {e}",
                if pause { "pause" } else { "resume" }
            );
        }
    }

    /// After the last page: keeps the membership alive (paused) while the
    /// pipeline writes what it holds, takes its acknowledgements until it
    /// is done, and commits them.
    fn wind_down(&mut self) {
        self.pause(true);
        loop {
            {
                let mut s = self.context().shared();
                match s.acks.recv_timeout(POLL) {
                    Ok(seq) => s.offsets.acknowledge(seq),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                        s.acks_closed = true;
                        break;
                    }
                }
            }
            // Serves rebalances and heartbeats; messages are not read any more.
            let _ = self.consumer.poll(Duration::ZERO);
            if self.last_commit.elapsed() >= self.commit_every {
                self.context().commit(self.consumer, None);
                self.last_commit = Instant::now();
            }
        }
        self.context().take_acks();
        if self.staged && !self.published.load(Ordering::Relaxed) {
            tracing::warn!("kafka: the destination did not publish; nothing committed");
            return;
        }
        self.context().commit(self.consumer, None);
    }
}
