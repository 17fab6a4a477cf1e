//! Kafka at the broker's pace: bizon-host against a bare librdkafka consumer
//! reading the same topic, alternately, in the same run.
//!
//!     cargo bench -p bizon-host --bench kafka
//!
//! 1. Host side (`host`): the kafka source's decoding into Bizon's records,
//!    the buffers, Bizon's NDJSON and the file writes, fed from messages held
//!    in memory (no broker): what the host costs without the network.
//! 2. End to end, against tansu (scripts/install-kafka.sh; or a cluster named
//!    by BIZON_TEST_KAFKA_BROKERS): one topic of BENCH_RECORDS messages
//!    (~330-byte Debezium-like JSON values, a JSON key, one header) in
//!    BENCH_PARTITIONS partitions, producer-batched, each partition ending
//!    with a one-record batch (tansu answers ListOffsets with its last
//!    batch's base offset + 1: without it a full refresh stops short). Then
//!    BENCH_ROUNDS rounds; in each, for every destination, a bare consumer
//!    reads the whole topic and then bizon-host does (`full_refresh`), so
//!    each pair sees the same machine within seconds (it drifts 20-30% in
//!    minutes). Destinations:
//!    - `file`: Bizon's NDJSON; the line count is checked;
//!    - `flatten`: `file` behind the Rust `kafka-flatten` transform
//!      (plugins/kafka-flatten, built by scripts/build-plugins.sh);
//!    - `wasm`: the `bench_sum` plugin (tests/plugins/sum, Arrow input;
//!      scripts/build-plugins.sh);
//!    - `bigquery_streaming_v2`: the Storage Write stand-in
//!      (tests/e2e/support/storage_write.rs) with bqemulator's REST for the
//!      tables (scripts/install-emulators.sh); the rows it holds are counted.
//!
//! Each process is timed from spawn to exit (wall) with its CPU time and peak
//! RSS from `wait4`, as /usr/bin/time reports them. The bare consumer is this
//! bench binary run again: librdkafka's `rd_kafka_consume_batch_queue` 10,000
//! messages at a time (what confluent-kafka's `consume(10000)` calls),
//! touching every key and value and nothing else.
//!
//! BENCH_RECORDS (1,000,000), BENCH_PARTITIONS (4), BENCH_ROUNDS (2),
//! BENCH_BATCH (the source's batch_size, 1000), BENCH_SYNC_MODE
//! (`full_refresh`; `incremental` commits every flush with the
//! destination's position: the cost of exactly-once), BENCH_ONLY (a comma list of
//! `host,file,flatten,wasm,bigquery_streaming_v2`; all that can run by
//! default), BIZON_HOST (another binary to measure, e.g. an older build),
//! BENCH_LOG=debug (the runs' logs), BENCH_TOPIC (read this topic if the
//! broker has it, else create and fill it under that name: with a broker
//! left running, BIZON_TEST_KAFKA_BROKERS=127.0.0.1:PORT, later runs and
//! `perf record` of a single bizon-host run skip the minute of producing).

#[allow(dead_code)]
#[path = "../../tests/e2e/support/common.rs"]
mod common;
#[allow(dead_code)]
#[path = "../../tests/e2e/support/emulators.rs"]
mod emulators;
#[allow(dead_code)]
#[path = "../../tests/e2e/support/kafka.rs"]
mod kafka;
#[allow(dead_code)]
#[path = "../../tests/e2e/support/storage_write.rs"]
mod storage_write;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bizon_host::pipeline::{Assembled, Bounds, Environment};
use bizon_host::record::SourceRecord;
use bizon_host::source::kafka::message::{Decoded, Decoder};
use bizon_host::source::{Source, SourceError};
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage, Timestamp};

const TOPIC: &str = "bench";
/// Set in the environment of the bench binary run as the bare consumer:
/// `servers;topic;partitions;messages`.
const BARE: &str = "BIZON_BENCH_BARE_CONSUMER";

/// A Debezium-ish change event, ~330 bytes, as the JSON topics Bizon reads carry.
fn value(i: u64) -> String {
    format!(
        "{{\"before\":null,\"after\":{{\"id\":{i},\"email\":\"user{i}@example.com\",\"name\":\"User number {i}\",\"score\":{},\"active\":{},\"tags\":[\"a\",\"b\",\"c\"]}},\"source\":{{\"name\":\"pg_main\",\"db\":\"shop\",\"table\":\"users\",\"ts_ms\":{}}},\"op\":\"c\",\"ts_ms\":{}}}",
        i as f64 * 0.5,
        i.is_multiple_of(2),
        1_714_566_600_000 + i,
        1_714_566_600_000 + i
    )
}

fn key(i: u64) -> String {
    format!("{{\"id\":{i}}}")
}

fn main() {
    if let Ok(spec) = std::env::var(BARE) {
        bare_consumer(&spec);
        return;
    }
    let records: u64 = env_or("BENCH_RECORDS", 1_000_000);
    let partitions: i32 = env_or("BENCH_PARTITIONS", 4);
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let wanted = |what: &str| only.is_empty() || only.split(',').any(|o| o == what);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let wasm = root.join("target/wasm/wasm32-wasip2/release");
    let component = |name: &str, what: &str| {
        let path = wasm.join(name);
        if wanted(what) && !path.exists() {
            println!("({what} skipped: no {}; run scripts/build-plugins.sh)", path.display());
        }
        (wanted(what) && path.exists()).then_some(path)
    };
    let flatten = component("bizon_kafka_flatten.wasm", "flatten");
    let sum = component("bench_sum.wasm", "wasm");
    if wanted("host") {
        host_side(records, partitions);
    }
    let mut destinations = Vec::new();
    if wanted("file") {
        destinations.push(Target::File);
    }
    if let Some(flatten) = flatten {
        destinations.push(Target::Flatten(flatten));
    }
    if let Some(sum) = sum {
        destinations.push(Target::Wasm(sum));
    }
    if wanted("bigquery_streaming_v2") {
        destinations.push(Target::StorageWrite {
            rest: emulators::emulators().rest.clone(),
            standin: storage_write::start(Default::default()),
        });
    }
    if !destinations.is_empty() {
        end_to_end(records, partitions, &destinations);
    }
}

/// Serves pre-built messages through the kafka source's decoder, a page of
/// 1000 at a time, as the source thread does.
struct InMemory {
    messages: std::vec::IntoIter<OwnedMessage>,
    decoder: Decoder,
}

impl Source for InMemory {
    fn next_page(&mut self) -> Result<Option<Vec<SourceRecord>>, SourceError> {
        let now = bizon_host::record::now_us();
        let page: Vec<SourceRecord> = self
            .messages
            .by_ref()
            .take(1000)
            .map(|m| match self.decoder.decode(&m, now) {
                Decoded::Record(r) => r,
                _ => panic!("bench messages decode"),
            })
            .collect();
        Ok((!page.is_empty()).then_some(page))
    }
}

fn host_side(records: u64, partitions: i32) {
    let messages: Vec<OwnedMessage> = (0..records)
        .map(|i| {
            OwnedMessage::new(
                Some(value(i).into_bytes()),
                Some(key(i).into_bytes()),
                TOPIC.into(),
                Timestamp::CreateTime(1_714_566_600_000 + i as i64),
                (i % partitions as u64) as i32,
                (i / partitions as u64) as i64,
                Some(OwnedHeaders::new().insert(Header {
                    key: "source",
                    value: Some("bench"),
                })),
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "name: bench\nsource:\n  name: dummy\n  stream: bench\ndestination:\n  name: file\n  config:\n    path: {}\n    destination_id: bench\n",
        dir.path().display(),
    );
    let pipeline = bizon_host::pipeline::parse(&yaml, "bench.yaml", |_| None).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let source = InMemory {
        messages: messages.into_iter(),
        decoder: Decoder {
            avro: None,
            topics: [(TOPIC.to_string(), Arc::from("bench"))].into(),
            skip_empty_value: true,
            skip_invalid_keys: false,
            skip_on_decode_error: false,
        },
    };
    let started = Instant::now();
    let report = rt.block_on(async {
        let env = Environment::for_run();
        let destination = bizon_host::destination::build(&pipeline.destination, &env.destination)
            .await
            .unwrap();
        let (tx, _rx) = tokio::sync::watch::channel(Default::default());
        let run = Assembled {
            destination,
            dead_letters: None,
            source: Box::new(Box::new(source) as Box<dyn Source>),
        };
        bizon_host::pipeline::run(&pipeline, run, std::future::pending(), tx, Bounds::none()).await
    });
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(report.records_written, records);
    println!(
        "host side (decode, buffer, encode, write; messages in memory) -> file, {records} messages: {seconds:.3} s, {:.0} messages/s",
        records as f64 / seconds
    );
}

enum Target {
    File,
    Flatten(PathBuf),
    Wasm(PathBuf),
    StorageWrite {
        rest: String,
        standin: storage_write::StandIn,
    },
}

impl Target {
    fn name(&self) -> &'static str {
        match self {
            Target::File => "file",
            Target::Flatten(_) => "file + kafka-flatten",
            Target::Wasm(_) => "wasm (bench_sum)",
            Target::StorageWrite { .. } => "bigquery_streaming_v2",
        }
    }

    /// The `destination:` (and `transforms:`) sections for a run in `dir`.
    fn yaml(&self, dir: &Path, dataset: &str) -> String {
        let file = format!(
            "destination:\n  name: file\n  config:\n    path: {}\n",
            dir.join("out").display()
        );
        match self {
            Target::File => file,
            Target::Flatten(wasm) => format!(
                "{file}transforms:\n  - label: flatten\n    wasm: {}\n",
                wasm.display()
            ),
            Target::Wasm(wasm) => format!(
                "destination:\n  name: wasm\n  config:\n    plugin: {}\n",
                wasm.display()
            ),
            Target::StorageWrite { rest, standin } => format!(
                "destination:\n  name: bigquery_streaming_v2\n  config:\n    project_id: {}\n    dataset_id: {dataset}\n    endpoint: {rest}\n    storage_write_endpoint: {}\n",
                emulators::PROJECT,
                standin.url
            ),
        }
    }

    /// Checks what the destination holds after a run of `records`.
    fn check(&self, dir: &Path, dataset: &str, records: u64) {
        match self {
            Target::File | Target::Flatten(_) => {
                let lines = count_lines(&dir.join("out/bench.json"));
                assert_eq!(lines, records, "{}: lines in bench.json", self.name());
            }
            Target::Wasm(_) => {}
            Target::StorageWrite { standin, .. } => {
                // A full refresh appends to the temp table, then publishes
                // it with a query on the REST side (which the stand-in lacks).
                let table = format!("{}.{dataset}.bench_temp", emulators::PROJECT);
                let rows = standin.rows(&table).len() as u64;
                assert_eq!(rows, records, "rows the stand-in holds");
            }
        }
    }
}

fn count_lines(path: &Path) -> u64 {
    use std::io::Read;
    let mut file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut buf = vec![0u8; 1 << 20];
    let mut lines = 0;
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            return lines;
        }
        lines += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
    }
}

/// One process's figures, as /usr/bin/time gives them.
#[derive(Clone, Copy)]
struct Usage {
    wall: f64,
    user: f64,
    sys: f64,
    rss_mb: f64,
}

impl Usage {
    fn cpu(&self) -> f64 {
        self.user + self.sys
    }
}

/// Runs `command` to its end; panics unless it exits 0.
#[expect(clippy::zombie_processes, reason = "wait4 reaps the child")]
fn measure(mut command: Command) -> Usage {
    let started = Instant::now();
    let child = command.spawn().expect("spawning");
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, with valid pointers; std's handle is
    // not waited on afterwards (dropping it does not reap).
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    let wall = started.elapsed().as_secs_f64();
    assert!(pid > 0, "wait4: {}", std::io::Error::last_os_error());
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{command:?} failed: status {status:#x}"
    );
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Usage {
        wall,
        user: seconds(usage.ru_utime),
        sys: seconds(usage.ru_stime),
        rss_mb: usage.ru_maxrss as f64 / 1024.0,
    }
}

/// Produces the topic once, then the rounds.
fn end_to_end(records: u64, partitions: i32, targets: &[Target]) {
    let b = kafka::broker();
    let topic = match std::env::var("BENCH_TOPIC") {
        Ok(topic) if exists(&b.servers, &topic) => {
            println!("reading {topic} as it is (BENCH_TOPIC)");
            topic
        }
        named => {
            let topic = named.unwrap_or_else(|_| kafka::unique("bench"));
            produce(b, &topic, records, partitions);
            topic
        }
    };
    rounds(b, &topic, records, partitions, targets);
}

/// Whether the broker has `topic`.
fn exists(servers: &str, topic: &str) -> bool {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", servers)
        .create()
        .expect("a client");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    metadata
        .topics()
        .iter()
        .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
}

/// The topic's messages, producer-batched, the last of each partition in a
/// batch of its own.
fn produce(b: &kafka::Broker, topic: &str, records: u64, partitions: i32) {
    b.create_topic(topic, partitions);
    let started = Instant::now();
    // Batches as a real producer does.
    let producer = b.producer_with(&[
        ("linger.ms", "20"),
        ("batch.num.messages", "10000"),
        ("queue.buffering.max.messages", "1000000"),
    ]);
    let last = records - partitions as u64;
    let send = |i: u64| {
        let (k, v) = (key(i), value(i));
        producer.send(
            topic,
            (i % partitions as u64) as i32,
            Some(k.as_bytes()),
            Some(v.as_bytes()),
            &[("source", Some(b"bench"))],
        );
    };
    (0..last).for_each(send);
    producer.flush();
    // The last message of each partition in a batch of its own (see above).
    for i in last..records {
        send(i);
        producer.flush();
    }
    println!(
        "produced {records} messages in {partitions} partitions of {topic} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// Bare consumer and bizon-host, alternately, for every target.
fn rounds(b: &kafka::Broker, topic: &str, records: u64, partitions: i32, targets: &[Target]) {
    let rounds: usize = env_or("BENCH_ROUNDS", 2);
    let batch: usize = env_or("BENCH_BATCH", 1000);
    // `incremental` commits after every flush with the destination's
    // position (the exactly-once bookkeeping); `full_refresh` once at the end.
    let sync_mode = std::env::var("BENCH_SYNC_MODE").unwrap_or_else(|_| "full_refresh".into());
    let binary = std::env::var_os("BIZON_HOST")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_bizon-host")));
    let level = std::env::var("BENCH_LOG").unwrap_or_else(|_| "warn".into());
    let mb = |r: u64, u: &Usage| r as f64 / u.wall;
    println!("{binary:?}, batch_size {batch}; each bizon-host run follows a bare consumer's run");
    println!(
        "{:<24} {:>5} {:>12} {:>12} {:>6} {:>9} {:>16} {:>8} {:>9}",
        "destination", "round", "bare msg/s", "host msg/s", "ratio", "run s", "CPU-s/M (u+s)", "RSS MB", "bare CPU"
    );
    let mut best: Vec<Option<(f64, Usage)>> = vec![None; targets.len()];
    for round in 1..=rounds {
        for (t, target) in targets.iter().enumerate() {
            let mut bare = Command::new(std::env::current_exe().expect("the bench binary"));
            bare.env(BARE, format!("{};{topic};{partitions};{records}", b.servers));
            let bare = measure(bare);
            let dir = tempfile::tempdir().unwrap();
            let dataset = format!("bench_{}_{round}_{t}", std::process::id());
            let yaml = format!(
                "name: bench\nsource:\n  name: kafka\n  stream: topic\n  sync_mode: {sync_mode}\n  bootstrap_servers: {}\n  group_id: {}\n  message_encoding: utf-8\n  batch_size: {batch}\n  topics:\n    - name: {topic}\n      destination_id: bench\n{}",
                b.servers,
                kafka::unique("g"),
                target.yaml(dir.path(), &dataset)
            );
            std::fs::write(dir.path().join("bench.yaml"), yaml).unwrap();
            let mut host = Command::new(&binary);
            host.args(["run", "bench.yaml", "--no-progress", "--log-level", &level])
                .args(["--result-json", "result.json"])
                .current_dir(dir.path());
            let usage = measure(host);
            let result: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.path().join("result.json")).expect("the result file"))
                    .expect("result JSON");
            assert_eq!(result["records_written"], records, "{result}");
            target.check(dir.path(), &dataset, records);
            let ratio = mb(records, &usage) / mb(records, &bare);
            let per_million = 1e6 / records as f64;
            println!(
                "{:<24} {round:>5} {:>12.0} {:>12.0} {:>5.2}x {:>9.3} {:>16} {:>8.0} {:>9.2}",
                target.name(),
                mb(records, &bare),
                mb(records, &usage),
                ratio,
                result["duration_s"].as_f64().unwrap_or(0.0),
                format!(
                    "{:.2} ({:.2}+{:.2})",
                    usage.cpu() * per_million,
                    usage.user * per_million,
                    usage.sys * per_million
                ),
                usage.rss_mb,
                bare.cpu(),
            );
            if best[t].is_none_or(|(r, _)| ratio > r) {
                best[t] = Some((ratio, usage));
            }
        }
    }
    for (target, best) in targets.iter().zip(best) {
        let (ratio, usage) = best.expect("one round at least");
        println!(
            "{}: best of {rounds}: {ratio:.2}x the bare consumer, {:.2} CPU-s per million, peak RSS {:.0} MB",
            target.name(),
            usage.cpu() * 1e6 / records as f64,
            usage.rss_mb
        );
    }
}

/// The bare consumer: every partition from its start, `consume_batch`
/// 10,000 at a time, until `messages` were read. Prints what it read.
fn bare_consumer(spec: &str) {
    use rdkafka::bindings as rd;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

    let [servers, topic, partitions, messages] = spec.split(';').collect::<Vec<_>>()[..] else {
        panic!("{BARE}: servers;topic;partitions;messages")
    };
    let (partitions, messages): (i32, u64) = (partitions.parse().unwrap(), messages.parse().unwrap());
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", kafka::unique("bare"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("a consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&assignment).expect("assign");
    // SAFETY: the consumer queue of a live client, destroyed below before
    // the consumer is dropped.
    let queue = unsafe { rd::rd_kafka_queue_get_consumer(consumer.client().native_ptr()) };
    assert!(!queue.is_null(), "no consumer queue");
    let mut batch = vec![std::ptr::null_mut::<rd::rd_kafka_message_t>(); 10_000];
    let (mut read, mut bytes) = (0u64, 0usize);
    let deadline = Instant::now() + Duration::from_secs(300);
    while read < messages {
        assert!(
            Instant::now() < deadline,
            "bare consumer: {read} of {messages} after 300 s"
        );
        // SAFETY: `batch` has room for its length; each message returned is
        // read, then destroyed once.
        let n = unsafe { rd::rd_kafka_consume_batch_queue(queue, 1000, batch.as_mut_ptr(), batch.len()) };
        for &m in &batch[..n.max(0) as usize] {
            unsafe {
                if (*m).err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                    read += 1;
                    let value = std::slice::from_raw_parts((*m).payload as *const u8, (*m).len);
                    let key = std::slice::from_raw_parts((*m).key as *const u8, (*m).key_len);
                    bytes += value.iter().chain(key).filter(|b| **b == b'"').count();
                }
                rd::rd_kafka_message_destroy(m);
            }
        }
    }
    // SAFETY: the queue from above, no longer used.
    unsafe { rd::rd_kafka_queue_destroy(queue) };
    println!("bare consumer: {read} messages, {bytes} quotes");
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}
