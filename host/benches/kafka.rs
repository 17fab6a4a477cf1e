//! Kafka to the `file` destination, 1,000,000 Bizon-like JSON messages:
//!
//! - host side only: the kafka source's decoding into Bizon's records, the
//!   buffers, Bizon's NDJSON encoding and the file writes, fed from messages
//!   held in memory (no broker);
//! - end to end: the binary reading a tansu topic (scripts/install-kafka.sh)
//!   with `sync_mode: full_refresh` into `file`.
//!
//! Each is run without a transform, then with the Rust `kafka-flatten`
//! transform component (plugins/kafka-flatten, built by
//! scripts/build-plugins.sh), the transform Kafka pipelines need before
//! `unnest`, and the ratio of the two times is printed.
//!
//!     cargo bench -p bizon-host --bench kafka
//!
//! BENCH_RECORDS (default 1,000,000) and BENCH_PARTITIONS (default 4) change the work;
//! BENCH_LOG=debug shows the end-to-end runs' logs (support/run.rs).

#[allow(dead_code)]
#[path = "../../tests/e2e/support/common.rs"]
mod common;
#[allow(dead_code)]
#[path = "../../tests/e2e/support/kafka.rs"]
mod kafka;
#[path = "support/run.rs"]
mod run;

use std::sync::Arc;
use std::time::Instant;

use bizon_host::pipeline::{Assembled, Bounds, Environment};
use bizon_host::record::SourceRecord;
use bizon_host::source::kafka::message::{Decoded, Decoder};
use bizon_host::source::{Source, SourceError};
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage, Timestamp};

const TOPIC: &str = "bench";

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
    let records: u64 = env_or("BENCH_RECORDS", 1_000_000);
    let partitions: i32 = env_or("BENCH_PARTITIONS", 4);
    let flatten = flatten_component();
    let alone = host_side(records, partitions, None);
    if let Some(flatten) = &flatten {
        let flattened = host_side(records, partitions, Some(flatten));
        println!("  kafka-flatten: {:.2}x the time, host side", flattened / alone);
    }
    let mut variants = vec![None];
    variants.extend(flatten.as_deref().map(Some));
    if let Some(seconds) = end_to_end(records, partitions, &variants) {
        if let [alone, flattened] = seconds[..] {
            println!("  kafka-flatten: {:.2}x the time, end to end", flattened / alone);
        }
    }
}

/// The kafka-flatten component, when scripts/build-plugins.sh has built it.
fn flatten_component() -> Option<std::path::PathBuf> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/wasm/wasm32-wasip2/release/bizon_kafka_flatten.wasm");
    if path.exists() {
        Some(path)
    } else {
        println!(
            "(no {}: run scripts/build-plugins.sh for the transform figures)",
            path.display()
        );
        None
    }
}

/// The `transforms:` section running `flatten`, if any.
fn transforms(flatten: Option<&std::path::Path>) -> String {
    flatten.map_or_else(String::new, |path| {
        format!("transforms:\n  - label: flatten\n    wasm: {}\n", path.display())
    })
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

fn host_side(records: u64, partitions: i32, flatten: Option<&std::path::Path>) -> f64 {
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
        "name: bench\nsource:\n  name: dummy\n  stream: bench\ndestination:\n  name: file\n  config:\n    path: {}\n    destination_id: bench\n{}",
        dir.path().display(),
        transforms(flatten)
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
        let source = bizon_host::transform::wrap(
            &pipeline.transforms,
            Box::new(Box::new(source) as Box<dyn Source>),
            false,
            pipeline.destination.options().default_destination_id().into(),
            &env.transforms,
            env.transform_workers,
        )
        .await
        .unwrap();
        let run = Assembled {
            destination,
            dead_letters: None,
            source,
        };
        bizon_host::pipeline::run(&pipeline, run, std::future::pending(), tx, Bounds::none()).await
    });
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(report.records_written, records);
    println!(
        "kafka host side (decode, {}buffer, encode, write) -> file, {records} messages: {seconds:.3} s, {:.0} messages/s",
        if flatten.is_some() { "kafka-flatten, " } else { "" },
        records as f64 / seconds
    );
    seconds
}

/// Produces the topic once, then reads it whole once per variant (each in a
/// group of its own); the run's own seconds for each.
fn end_to_end(records: u64, partitions: i32, variants: &[Option<&std::path::Path>]) -> Option<Vec<f64>> {
    let b = kafka::broker();
    let topic = kafka::unique("bench");
    b.create_topic(&topic, partitions);
    let started = Instant::now();
    // Batches as a real producer does.
    let producer = b.producer_with(&[
        ("linger.ms", "20"),
        ("batch.num.messages", "10000"),
        ("queue.buffering.max.messages", "1000000"),
    ]);
    let last = records - partitions as u64;
    for i in 0..last {
        let (k, v) = (key(i), value(i));
        producer.send(
            &topic,
            (i % partitions as u64) as i32,
            Some(k.as_bytes()),
            Some(v.as_bytes()),
            &[("source", Some(b"bench"))],
        );
    }
    producer.flush();
    // The last message of each partition in a batch of its own: tansu's
    // ListOffsets answers the last batch's base + 1 (REFERENCE section 5).
    for i in last..records {
        let (k, v) = (key(i), value(i));
        producer.send(
            &topic,
            (i % partitions as u64) as i32,
            Some(k.as_bytes()),
            Some(v.as_bytes()),
            &[("source", Some(b"bench"))],
        );
        producer.flush();
    }
    println!(
        "produced {records} messages in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut seconds = Vec::new();
    for flatten in variants {
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!(
            "name: bench\nsource:\n  name: kafka\n  stream: topic\n  sync_mode: full_refresh\n  bootstrap_servers: {}\n  group_id: {}\n  message_encoding: utf-8\n  batch_size: 1000\n  topics:\n    - name: {topic}\n      destination_id: bench\ndestination:\n  name: file\n  config:\n    path: {}\n{}",
            b.servers,
            kafka::unique("g"),
            dir.path().display(),
            transforms(*flatten)
        );
        std::fs::write(dir.path().join("bench.yaml"), yaml).unwrap();
        let result = run::run_pipeline(dir.path());
        assert_eq!(result["records_written"], records, "{result}");
        let run_seconds = result["duration_s"].as_f64().unwrap();
        println!(
            "kafka end to end (tansu, full refresh, {partitions} partitions{}) -> file, {records} messages: {run_seconds:.3} s, {:.0} messages/s, peak RSS {:.1} MB",
            if flatten.is_some() { ", kafka-flatten" } else { "" },
            records as f64 / run_seconds,
            result["peak_rss_bytes"].as_f64().unwrap_or(0.0) / (1024.0 * 1024.0)
        );
        seconds.push(run_seconds);
    }
    Some(seconds)
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}
