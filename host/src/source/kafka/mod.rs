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
mod batch;
mod checkpoint;
pub mod config;
mod consumer;
mod json;
mod membership;
pub mod message;
mod metadata_request;
mod offsets;
mod position;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::mpsc::error::TrySendError;

use self::batch::Batches;
use self::config::{KafkaSourceConfig, MessageEncoding};
use self::consumer::{Context, KafkaConsumer};
use self::message::{Decoded, Decoder};
use self::offsets::{Offsets, Tp};
use super::{Page, Positions, SourceError, SourceEvent, SourceLink, SourceTask};
use crate::config::SyncMode;
use crate::record::now_us;

/// How long one poll waits, which bounds how late a stop or an
/// acknowledgement is seen.
const POLL: Duration = Duration::from_millis(100);
/// How long a full pipeline is waited for before the partitions are paused.
const PATIENCE: Duration = Duration::from_millis(500);
/// librdkafka's prefetch bound unless consumer_config sets one.
const PREFETCH_KB: &str = "16384";
/// How long librdkafka waits before fetching a partition again once the
/// prefetch bound above was reached, unless consumer_config sets it. Its
/// default, 1000 ms, stalled every run that reads faster than the broker
/// fills 16 MB: a full refresh of 1M messages took 6.9-7.2 s at 2.0-2.4
/// CPU-s, idle two thirds of the time, and 1.4-1.5 s with 10 ms (tansu,
/// 2026-12-07, the kafka bench's topic; docs/kafka.md, Figures).
const REFETCH_AFTER_FULL_MS: &str = "10";
/// Default of the revoke drain bound, below librdkafka's rebalance timeout.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often written offsets are committed in stream mode, at most, unless
/// `consumer_config: auto.commit.interval.ms` says otherwise: a process
/// killed a quarter second after a write has committed it, and a commit
/// (asynchronous) costs the read loop nothing.
const COMMIT_EVERY: Duration = Duration::from_millis(250);

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
        // librdkafka prefetches up to 64 MB by default, on top of the
        // pipeline's own buffers (twice buffer_size): 16 MB is still ~40,000
        // messages of 400 bytes ahead, and keeps a default run under 200 MB.
        settings
            .entry("queued.max.messages.kbytes".into())
            .or_insert_with(|| PREFETCH_KB.into());
        settings
            .entry("fetch.queue.backoff.ms".into())
            .or_insert_with(|| REFETCH_AFTER_FULL_MS.into());
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
                Some(std::cell::RefCell::new(avro::AvroDecoder::new(
                    &auth.schema_registry_url,
                    &auth.schema_registry_username,
                    &auth.schema_registry_password,
                )))
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

    /// The consumer, subscribed in stream mode; otherwise with the
    /// partitions to assign (not assigned yet) and where each ends.
    fn connect(&self, context: Context) -> Result<Connected, SourceError> {
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
        if self.config.sync_mode == SyncMode::Stream {
            let hostname = std::env::var("HOSTNAME").ok();
            let shared = context.shared();
            let slot = shared.checkpoint.as_ref().and_then(|c| c.slot());
            if let Some(id) = membership::static_id(&self.settings, &self.config.group_id, hostname.as_deref(), slot) {
                tracing::info!("kafka: static membership, group.instance.id={id}");
                client.set("group.instance.id", id);
            }
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
        // Every partition's commit, with what was recorded with it, before
        // anything is read: the destination resumes from it. (All
        // partitions, not only this consumer's: another may have held them.)
        let committed = match self.config.sync_mode {
            SyncMode::FullRefresh => None,
            SyncMode::Stream | SyncMode::Incremental => {
                let mut tpl = TopicPartitionList::new();
                for (t, p) in &partitions {
                    tpl.add_partition(t, *p);
                }
                Some(
                    consumer
                        .committed_offsets(tpl, timeout)
                        .map_err(|e| fail(format!("cannot read the group's committed offsets: {e}")))?,
                )
            }
        };
        let positions = match &committed {
            None => None,
            Some(tpl) => {
                let elements = tpl.elements();
                let shared = consumer.context().shared();
                let copy = shared.checkpoint.as_ref();
                let committed = elements.iter().map(|e| {
                    let offset = e.offset().to_raw().unwrap_or(-1);
                    // The broker's metadata, else the local copy's of the same offset.
                    let metadata = match e.metadata() {
                        "" => copy
                            .and_then(|c| c.metadata(e.topic(), e.partition(), offset))
                            .unwrap_or(""),
                        kept => kept,
                    };
                    (e.topic(), e.partition(), offset, metadata)
                });
                let topics = &self.decoder.topics;
                let gathered = position::gather(committed, |topic| topics.get(topic).cloned());
                Some(gathered.map_err(fail)?)
            }
        };
        if self.config.sync_mode == SyncMode::Stream {
            let names: Vec<&str> = self.decoder.topics.keys().map(String::as_str).collect();
            consumer
                .subscribe(&names)
                .map_err(|e| fail(format!("cannot subscribe: {e}")))?;
            return Ok((consumer, None, positions));
        }
        // Full refresh and incremental: every partition, from the low
        // watermark (or the group's commit) to the high watermark now.
        let mut ends = Ends::new(now_us() / 1000);
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
            ends.push((topic.clone(), *partition), high);
            assignment
                .add_partition_offset(topic, *partition, Offset::Offset(start))
                .map_err(|e| fail(e.to_string()))?;
        }
        Ok((consumer, Some((ends, assignment)), positions))
    }

    /// Assigns the partitions of a full refresh or incremental run, read in
    /// batches (see `batch`): their queues are forwarded before the assign
    /// starts fetching.
    fn assign<'c>(
        &self,
        consumer: &'c KafkaConsumer,
        ends: &Ends,
        assignment: &TopicPartitionList,
    ) -> Result<Batches<'c>, SourceError> {
        let partitions: Vec<Tp> = ends.parts.iter().map(|e| e.tp.clone()).collect();
        let batches = Batches::new(consumer, &partitions, self.config.batch_size).map_err(SourceError::Kafka)?;
        consumer
            .assign(assignment)
            .map_err(|e| SourceError::Kafka(format!("cannot assign the partitions: {e}")))?;
        consumer.context().shared().assigned = partitions.into_iter().collect();
        Ok(batches)
    }
}

/// The consumer; outside stream mode the partitions to assign and where
/// each ends; where the group's commits carry on from one run to the next
/// (stream, incremental), the positions recorded with them.
type Connected = (KafkaConsumer, Option<(Ends, TopicPartitionList)>, Option<Positions>);

/// The partitions of a full refresh or incremental run, each with the high
/// watermark seen at start (ListOffsets) and whether it was read to it.
struct Ends {
    parts: Vec<End>,
    /// Partitions not read to their end yet.
    open: usize,
    /// The partition of the last message: messages come in runs of one.
    last: usize,
    /// When the watermarks were asked for, ms since the epoch.
    listed_at_ms: i64,
}

struct End {
    tp: Tp,
    high: i64,
    done: bool,
    /// A message past the end looked older than the run.
    noticed: bool,
}

/// How much older than the ListOffsets request a message past the end must
/// look before the broker is said to have answered short: producers' clocks
/// are not ours.
const CLOCK_SLACK_MS: i64 = 1000;

impl Ends {
    fn new(listed_at_ms: i64) -> Self {
        Self {
            parts: Vec::new(),
            open: 0,
            last: 0,
            listed_at_ms,
        }
    }

    fn push(&mut self, tp: Tp, high: i64) {
        self.parts.push(End {
            tp,
            high,
            done: false,
            noticed: false,
        });
        self.open += 1;
    }

    fn find(&mut self, topic: &str, partition: i32) -> Option<&mut End> {
        let matches = |e: &End| e.tp.1 == partition && &*e.tp.0 == topic;
        if !self.parts.get(self.last).is_some_and(matches) {
            self.last = self.parts.iter().position(matches)?;
        }
        Some(&mut self.parts[self.last])
    }

    fn finish(&mut self, at: usize) {
        if !self.parts[at].done {
            self.parts[at].done = true;
            self.open -= 1;
        }
    }

    /// Whether the message at `offset` is this run's (below the end seen at
    /// start); the partition is done with its last one.
    ///
    /// A message past the end that is older than the ListOffsets request
    /// means the broker answered short (tansu answers the last record
    /// batch's base offset + 1): the run still stops at the end it was
    /// given, as a full refresh must stop somewhere, but says so once per
    /// partition, with the offset it stopped at.
    fn admit(&mut self, topic: &str, partition: i32, offset: i64, timestamp_ms: Option<i64>) -> bool {
        let listed_at_ms = self.listed_at_ms;
        let Some(end) = self.find(topic, partition) else {
            return false;
        };
        if offset < end.high && !end.done {
            if offset + 1 >= end.high {
                self.finish(self.last);
            }
            return true;
        }
        if !end.noticed && timestamp_ms.is_some_and(|t| t < listed_at_ms - CLOCK_SLACK_MS) {
            end.noticed = true;
            tracing::warn!(
                "kafka: {topic}/{partition}: the broker gave {} as the end of the partition, but offset {offset} \
                 was written before this run asked (its timestamp is {} ms earlier); this run stops at {} and \
                 leaves the rest for the next one. The broker answers ListOffsets short (tansu answers the last \
                 record batch's first offset + 1)",
                end.high,
                listed_at_ms - timestamp_ms.unwrap_or_default(),
                end.high
            );
        }
        self.finish(self.last);
        false
    }
}

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
        let destinations = self
            .decoder
            .topics
            .iter()
            .map(|(topic, destination_id)| (Arc::from(topic.as_str()), destination_id.clone()))
            .collect();
        let context = Context::new(
            Offsets::new(destinations),
            acks,
            events.clone(),
            stats.clone(),
            DRAIN_TIMEOUT,
            gate,
            (self.config.sync_mode != SyncMode::FullRefresh)
                .then(|| checkpoint::Checkpoint::open(&self.config.bootstrap_servers, &self.config.group_id))
                .flatten(),
        );
        let (consumer, assigned, positions) = match self.connect(context) {
            Ok(c) => c,
            Err(e) => {
                let _ = events.blocking_send(SourceEvent::Failed(e));
                return;
            }
        };
        if let Some(positions) = positions {
            if events.blocking_send(SourceEvent::Resume(positions)).is_err() {
                return;
            }
        }
        let (ends, batches) = match assigned {
            None => (None, None),
            Some((ends, assignment)) => match self.assign(&consumer, &ends, &assignment) {
                Ok(batches) => (Some(ends), Some(batches)),
                Err(e) => {
                    let _ = events.blocking_send(SourceEvent::Failed(e));
                    return;
                }
            },
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
                .map_or(COMMIT_EVERY, Duration::from_millis),
        };
        let mut reader = Reader {
            source: &self,
            consumer: &consumer,
            events,
            stop: &stop,
            ends,
            batches,
            stash: VecDeque::new(),
            topics: Vec::new(),
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
        drop(reader);
        // Leaves the group now (librdkafka's close), rather than after the
        // session timeout: the others take the partitions at once.
        drop(consumer);
        tracing::info!("kafka: consumer closed");
    }

    fn closes(&self) -> bool {
        true
    }
}

/// A page being filled.
struct PageParts {
    read_at: i64,
    records: Vec<crate::record::SourceRecord>,
    /// Next offset of each partition the page reached.
    next: Vec<(Tp, i64)>,
    /// The first offset the page took of each partition, in `next`'s order.
    first: Vec<i64>,
    letters: Vec<crate::record::Letter>,
    /// Messages of this run taken (records, skips and letters).
    seen: u64,
}

struct Reader<'a> {
    source: &'a KafkaSource,
    consumer: &'a KafkaConsumer,
    events: tokio::sync::mpsc::Sender<SourceEvent>,
    stop: &'a std::sync::atomic::AtomicBool,
    ends: Option<Ends>,
    /// Outside stream mode, where the messages are read from.
    batches: Option<Batches<'a>>,
    /// Messages polled while the partitions were being paused.
    stash: VecDeque<OwnedMessage>,
    /// Topic names as the offsets bookkeeping holds them, made once.
    topics: Vec<Arc<str>>,
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
            if self.ends.as_ref().is_some_and(|e| e.open == 0) {
                return Ok(true);
            }
            let Some(page) = self.next_page()? else { continue };
            if !self.deliver(SourceEvent::Page(page)) {
                return Ok(false);
            }
        }
    }

    /// Takes acknowledgements and commits every `commit_every`; when the
    /// messages come in batches, serves the consumer queue's events
    /// (statistics, errors), which `poll` otherwise serves with them.
    fn housekeeping(&mut self) {
        if self.batches.is_some() {
            while let Some(event) = self.consumer.poll(Duration::ZERO) {
                match event {
                    // None is forwarded there; kept in order if one were.
                    Ok(m) => self.stash.push_back(m.detach()),
                    Err(KafkaError::PartitionEOF(p)) => self.partition_eof(p),
                    Err(e) => tracing::warn!("kafka: {e}"),
                }
            }
        }
        self.context().take_acks();
        if self.last_commit.elapsed() >= self.commit_every {
            self.context().commit(self.consumer, None, CommitMode::Async);
            self.last_commit = Instant::now();
        }
    }

    /// One page of up to `batch_size` messages: waits up to one poll for
    /// the first, then takes what is already fetched. Messages are decoded
    /// where librdkafka holds them, never copied out first.
    fn next_page(&mut self) -> Result<Option<Page>, SourceError> {
        let batch = self.source.config.batch_size as u64;
        let mut page = PageParts {
            read_at: now_us(),
            records: Vec::with_capacity(batch.min(10_000) as usize),
            next: Vec::new(),
            first: Vec::new(),
            letters: Vec::new(),
            seen: 0,
        };
        let mut wait = POLL;
        while page.seen < batch {
            if let Some(m) = self.stash.pop_front() {
                self.take(&m, &mut page)?;
            } else if let Some(mut batches) = self.batches.take() {
                let read = self.take_batch(&mut batches, wait, batch - page.seen, &mut page);
                self.batches = Some(batches);
                if !read? {
                    break;
                }
            } else {
                match self.consumer.poll(wait) {
                    None => break,
                    Some(Ok(m)) => self.take(&m, &mut page)?,
                    Some(Err(KafkaError::PartitionEOF(partition))) => {
                        self.partition_eof(partition);
                        continue;
                    }
                    Some(Err(e)) => {
                        tracing::warn!("kafka: {e}");
                        continue;
                    }
                }
            }
            wait = Duration::ZERO;
        }
        if page.seen == 0 {
            return Ok(None);
        }
        let sequence = self.sequence;
        self.sequence += 1;
        let topics = &self.source.decoder.topics;
        let spans = (page.next.iter().zip(&page.first))
            .filter_map(|(((topic, partition), next), first)| {
                Some(super::Span {
                    destination_id: topics.get(&**topic)?.clone(),
                    topic: topic.clone(),
                    partition: *partition,
                    first: *first,
                    last: next - 1,
                })
            })
            .collect();
        self.context().shared().offsets.page(sequence, page.next);
        Ok(Some(Page {
            sequence,
            extracted_at_us: page.read_at,
            records: page.records,
            letters: page.letters,
            spans,
        }))
    }

    /// Takes one read of up to `most` messages into the page; false when
    /// none came within `wait`.
    fn take_batch(
        &mut self,
        batches: &mut Batches<'_>,
        wait: Duration,
        most: u64,
        page: &mut PageParts,
    ) -> Result<bool, SourceError> {
        let mut read = batches.read(wait, most as usize);
        let mut any = false;
        while let Some(message) = read.next() {
            any = true;
            match message {
                Ok(m) => self.take(&m, page)?,
                Err(KafkaError::PartitionEOF(partition)) => self.partition_eof(partition),
                Err(e) => tracing::warn!("kafka: {e}"),
            }
        }
        Ok(any)
    }

    /// Adds one message to the page: a record, a skip or a dead letter.
    fn take<M: Message>(&mut self, message: &M, page: &mut PageParts) -> Result<(), SourceError> {
        let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
        if let Some(ends) = &mut self.ends {
            if !ends.admit(topic, partition, offset, message.timestamp().to_millis()) {
                return Ok(());
            }
        }
        page.seen += 1;
        match page
            .next
            .iter_mut()
            .find(|(tp, _)| tp.1 == partition && &*tp.0 == topic)
        {
            Some((_, next)) => *next = offset + 1,
            None => {
                let topic = match self.topics.iter().find(|t| &***t == topic) {
                    Some(t) => t.clone(),
                    None => {
                        self.topics.push(Arc::from(topic));
                        self.topics[self.topics.len() - 1].clone()
                    }
                };
                page.next.push(((topic, partition), offset + 1));
                page.first.push(offset);
            }
        }
        match self.source.decoder.decode(message, page.read_at) {
            Decoded::Record(r) => page.records.push(r),
            Decoded::Skipped(why) => {
                tracing::debug!(why, "kafka: skipped a message");
                self.skipped += 1;
            }
            Decoded::Failed(error) => {
                return Err(SourceError::Kafka(format!(
                    "topic {topic} partition {partition} offset {offset}: {error}"
                )))
            }
            Decoded::Bad(error) => match self.source.dead_letter {
                true => page.letters.push(message::letter(message, error)),
                false => {
                    return Err(SourceError::Kafka(format!(
                        "topic {topic} partition {partition} offset {offset}: {error} (set \
                         skip_message_on_decode_error or a dead_letter to go on)"
                    )))
                }
            },
        }
        Ok(())
    }

    /// End of a partition in a full refresh: done if its position reached
    /// the watermark seen at start. (librdkafka names only the partition
    /// number, so every topic's partition of that number is looked at.)
    fn partition_eof(&mut self, partition: i32) {
        let Some(ends) = &mut self.ends else { return };
        let Ok(positions) = self.consumer.position() else {
            return;
        };
        for at in 0..ends.parts.len() {
            let end = &ends.parts[at];
            if end.tp.1 != partition || end.done {
                continue;
            }
            let position = positions
                .find_partition(&end.tp.0, partition)
                .and_then(|e| e.offset().to_raw())
                .unwrap_or(-1);
            if position >= end.high {
                ends.finish(at);
            }
        }
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
            // Read in batches, nothing is read while waiting (the consumer
            // queue carries events only), so the partitions are never
            // paused: librdkafka stops fetching once its prefetch bound is
            // reached and keeps what it holds.
            if !paused && (self.batches.is_some() || full_since.elapsed() < PATIENCE) {
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
                    Ok(ack) => s.offsets.acknowledge(ack),
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
                self.context().commit(self.consumer, None, CommitMode::Async);
                self.last_commit = Instant::now();
            }
        }
        self.context().take_acks();
        if self.staged && !self.published.load(Ordering::Relaxed) {
            tracing::warn!("kafka: the destination did not publish; nothing committed");
            return;
        }
        // The last one waits for the broker's answer: the process may exit next.
        self.context().commit(self.consumer, None, CommitMode::Sync);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The prefetch bound and how soon a full prefetch is topped up again
    /// (the 1 s default stalled reads five-fold), each unless the user set it.
    #[test]
    fn prefetch_defaults_give_way_to_consumer_config() {
        let settings = |extra: &str| {
            let yaml = format!("name: kafka\nbootstrap_servers: b:9092\ntopic: t\nmessage_encoding: utf-8\n{extra}");
            let config: KafkaSourceConfig = serde_saphyr::from_str(&yaml).unwrap();
            KafkaSource::new(&config, false).unwrap().settings
        };
        let ours = settings("");
        assert_eq!(ours["queued.max.messages.kbytes"], PREFETCH_KB);
        assert_eq!(ours["fetch.queue.backoff.ms"], "10");
        let theirs = settings("consumer_config:\n  fetch.queue.backoff.ms: 500\n  queued.max.messages.kbytes: 1024\n");
        assert_eq!(theirs["fetch.queue.backoff.ms"], "500");
        assert_eq!(theirs["queued.max.messages.kbytes"], "1024");
    }

    #[test]
    fn a_partition_ends_at_the_watermark_seen_at_start_and_a_short_answer_is_noticed() {
        let mut ends = Ends::new(1_000_000);
        ends.push((Arc::from("t"), 0), 3);
        ends.push((Arc::from("t"), 1), 1);
        assert!(ends.admit("t", 0, 0, Some(10)));
        assert!(ends.admit("t", 1, 0, Some(10)));
        assert_eq!(ends.open, 1, "partition 1 ended with its last offset");
        assert!(!ends.admit("u", 0, 0, Some(10)), "not a partition of this run");
        assert!(ends.admit("t", 0, 2, Some(10)));
        assert_eq!(ends.open, 0);
        // Past the end: newer than the request (produced since), then older
        // (there when the broker answered: it answered short).
        assert!(!ends.admit("t", 0, 3, Some(1_000_000)));
        assert!(!ends.parts[0].noticed);
        assert!(!ends.admit("t", 0, 4, Some(1_000_000 - CLOCK_SLACK_MS - 1)));
        assert!(ends.parts[0].noticed);
        assert!(!ends.parts[1].noticed);
    }
}
