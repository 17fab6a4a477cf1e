//! Exactly-once through crashes: a producer keeps writing while a
//! stream-mode run is SIGKILLed at random moments and restarted, each time
//! only after it made progress (a run that reads nothing fails the test,
//! so a stalled group cannot pass for exactly-once); then a last run drains
//! the topic. Every message must be in the output once.
//!
//! `BIZON_CHAOS_KILLS` sets the kills (CI's short form: 6 into files, 3 per
//! Storage Write mode, 3 into ClickHouse); `bench/chaos.sh` runs 20 and
//! prints the counts.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{interrupt, log_of, positions, rows, start, FAST_GROUP};
use crate::support::clickhouse::ClickHouse;
use crate::support::emulators::{self, hold_blocking};
use crate::support::kafka::{broker, unique, Broker};
use crate::support::{free_port, metrics, poll, signal, wasm};

const PARTITIONS: i32 = 3;

/// What a chaos run counted.
#[derive(Debug)]
pub struct Counts {
    pub produced: usize,
    pub published: usize,
    pub duplicates: usize,
    pub lost: usize,
    pub replayed: u64,
}

/// Produces `per_round` JSON messages every 100 ms until `stop`, from id
/// `first` on; the count so far in `sent`.
fn keep_producing(
    b: &Broker,
    topic: &str,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
) -> std::thread::JoinHandle<()> {
    let (servers, topic) = (b.servers.clone(), topic.to_string());
    std::thread::spawn(move || {
        let b = Broker { servers };
        let mut next = 0;
        while !stop.load(Ordering::Relaxed) {
            super::produce_json(&b, &topic, PARTITIONS, 100, next);
            next += 100;
            sent.store(next, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(100));
        }
    })
}

/// Where a chaos run writes, and how its messages are read back as
/// (partition, offset) per row written.
pub trait Sink {
    /// The pipeline's `destination:` section.
    fn destination(&self) -> String;
    fn landed(&self, topic: &str) -> Vec<(i64, i64)>;
}

/// The `file` destination in a directory.
pub struct Files(pub std::path::PathBuf);

impl Sink for Files {
    fn destination(&self) -> String {
        format!(
            "destination:\n  name: file\n  config:\n    path: {}\n    buffer_size: 0\n",
            self.0.display()
        )
    }

    fn landed(&self, topic: &str) -> Vec<(i64, i64)> {
        positions(&rows(&self.0))
            .into_iter()
            .filter(|(t, _, _)| t == topic)
            .map(|(_, p, o)| (p, o))
            .collect()
    }
}

/// `bigquery_streaming_v2` into bqemulator (`write_mode` as given).
pub struct StorageWrite {
    pub dataset: String,
    pub write_mode: &'static str,
}

impl Sink for StorageWrite {
    fn destination(&self) -> String {
        let e = emulators::emulators();
        format!(
            "destination:\n  name: bigquery_streaming_v2\n  config:\n    project_id: {}\n    dataset_id: {}\n    endpoint: {}\n    storage_write_endpoint: {}\n    write_mode: {}\n    destination_id: events\n    buffer_size: 0\n",
            emulators::PROJECT,
            self.dataset,
            e.rest,
            e.grpc,
            self.write_mode
        )
    }

    fn landed(&self, _topic: &str) -> Vec<(i64, i64)> {
        let e = emulators::emulators();
        let sql = format!(
            "SELECT TO_JSON_STRING(_source_data) FROM `{}.{}.events`",
            emulators::PROJECT,
            self.dataset
        );
        let url = format!("{}/bigquery/v2/projects/{}/queries", e.rest, emulators::PROJECT);
        let answer: Value = reqwest::blocking::Client::new()
            .post(&url)
            .json(&serde_json::json!({"query": sql, "useLegacySql": false, "maxResults": 1_000_000}))
            .send()
            .and_then(|r| r.json())
            .unwrap_or(Value::Null);
        answer["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["f"][0]["v"].as_str())
            .filter_map(|text| {
                let data: Value = serde_json::from_str(text).ok()?;
                let data: Value = match data {
                    Value::String(inner) => serde_json::from_str(&inner).ok()?,
                    other => other,
                };
                Some((data["partition"].as_i64()?, data["offset"].as_i64()?))
            })
            .collect()
    }
}

/// plugins/clickhouse with `exactly_once: true` into a real
/// clickhouse-server: rows keyed on their source position
/// (ReplacingMergeTree), read back with FINAL.
pub struct ClickHouseSink<'a>(pub &'a ClickHouse);

impl ClickHouseSink<'_> {
    fn count(&self, sql: &str) -> usize {
        self.0.query(sql).trim().parse().unwrap()
    }
}

impl Sink for ClickHouseSink<'_> {
    fn destination(&self) -> String {
        let url = self.0.url();
        format!(
            "destination:\n  name: wasm\n  config:\n    plugin: {}\n    plugin_config: {{url: \"{url}\", exactly_once: true}}\n    allow:\n      hosts: [\"{url}\"]\n    destination_id: events\n    buffer_size: 0\n",
            wasm("bizon_clickhouse").display()
        )
    }

    fn landed(&self, _topic: &str) -> Vec<(i64, i64)> {
        if self.0.query("EXISTS TABLE events").trim() != "1" {
            return Vec::new();
        }
        self.0
            .query("SELECT source_record_id FROM events FINAL FORMAT TSV")
            .lines()
            .filter_map(|id| {
                let (p, o) = id.strip_prefix("partition_")?.split_once("_offset_")?;
                Some((p.parse().ok()?, o.parse().ok()?))
            })
            .collect()
    }
}

/// A stream-mode run of `topic` for `group` into `sink`, its pipeline file,
/// log and result beside `base`, its metrics at `metrics_addr`.
fn start_run(
    b: &Broker,
    group: &str,
    topic: &str,
    sink: &dyn Sink,
    base: &Path,
    metrics_addr: &str,
    args: &[&str],
) -> Child {
    let yaml = base.with_extension("yaml");
    let text = format!(
        "name: chaos\nsource:\n  name: kafka\n  stream: topic\n  sync_mode: stream\n  bootstrap_servers: {}\n  group_id: {group}\n  message_encoding: utf-8\n  batch_size: 50\n  topics:\n    - name: {topic}\n      destination_id: events\n  consumer_config:\n{FAST_GROUP}{}",
        b.servers,
        sink.destination()
    );
    std::fs::write(&yaml, text).unwrap();
    let mut args = args.to_vec();
    args.extend(["--metrics-addr", metrics_addr]);
    start(&yaml, &base.with_extension("log"), &args)
}

/// Records the run at `addr` wrote (or recognised as written before), from
/// its metrics. Progress is read there and not from the sink while a run
/// goes: bqemulator deadlocks on a query that comes while an AppendRows
/// stream is open (see `emulators::hold`).
fn written_by_run(addr: &str) -> u64 {
    metrics(addr)
        .lines()
        .filter(|l| l.starts_with("bizon_records_written_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The chaos run itself.
pub fn kafka_to(sink: &dyn Sink, kills: usize) -> Counts {
    let b = broker();
    let topic = unique("chaos");
    b.create_topic(&topic, PARTITIONS);
    let dir = tempfile::tempdir().unwrap();
    let (group, out) = (unique("g"), dir.path().join("out"));
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let producer = keep_producing(b, &topic, stop.clone(), sent.clone());
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64 ^ std::process::id() as u64;
    let mut random = |range: std::ops::Range<u64>| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        range.start + seed % (range.end - range.start)
    };
    for kill in 0..kills {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut child = start_run(b, &group, &topic, sink, &out, &addr, &[]);
        let started = Instant::now();
        // Progress first: a run that cannot get its partitions fails here.
        poll(
            || format!("run {kill} wrote nothing: {}", log_of(&out)),
            || (written_by_run(&addr) > 0).then_some(()),
        );
        std::thread::sleep(Duration::from_millis(random(200..1500)));
        signal(child.id(), libc::SIGKILL);
        child.wait().unwrap();
        eprintln!(
            "chaos: kill {}/{kills} after {:.1} s, {} rows",
            kill + 1,
            started.elapsed().as_secs_f64(),
            sink.landed(&topic).len()
        );
    }
    stop.store(true, Ordering::Relaxed);
    producer.join().unwrap();
    let produced = sent.load(Ordering::Relaxed);
    // The drain: a run until every offset is committed (so written), then
    // stopped by SIGTERM.
    let result = out.with_extension("result.json");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = start_run(
        b,
        &group,
        &topic,
        sink,
        &out,
        &addr,
        &["--result-json", result.to_str().unwrap()],
    );
    let highs = b.high_watermarks(&topic, PARTITIONS);
    let total: i64 = highs.iter().sum();
    assert_eq!(total as usize, produced, "the broker holds what was produced");
    poll(
        || {
            format!(
                "the drain to commit {highs:?} (committed {:?}): {}",
                b.committed(&group, &topic, PARTITIONS),
                log_of(&out)
            )
        },
        || (b.committed(&group, &topic, PARTITIONS) == highs).then_some(()),
    );
    interrupt(&mut child, &out);
    let found = sink.landed(&topic);
    let mut seen = BTreeSet::new();
    let duplicates = found.iter().filter(|p| !seen.insert(**p)).count();
    let lost = (0..PARTITIONS)
        .flat_map(|p| (0..highs[p as usize]).map(move |o| (p as i64, o)))
        .filter(|p| !seen.contains(p))
        .count();
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&result).unwrap()).unwrap();
    let counts = Counts {
        produced,
        published: found.len(),
        duplicates,
        lost,
        replayed: report["records_replayed"].as_u64().unwrap_or(0),
    };
    eprintln!(
        "chaos: Kafka -> {}, {kills} kills: produced {}, published {}, duplicates {}, lost {}, replays \
         recognised by the last run {}",
        sink.destination().lines().nth(1).unwrap_or_default().trim(),
        counts.produced,
        counts.published,
        counts.duplicates,
        counts.lost,
        counts.replayed
    );
    counts
}

/// `BIZON_CHAOS_KILLS`, else `short` (the form CI runs: each kill costs the
/// group's session timeout, 6 s here, before the next run gets partitions).
fn kills(short: usize) -> usize {
    std::env::var("BIZON_CHAOS_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(short)
}

fn assert_exactly_once(counts: &Counts) {
    assert_eq!((counts.lost, counts.duplicates), (0, 0), "{counts:?}");
    assert_eq!(counts.published, counts.produced, "{counts:?}");
}

#[test]
fn sigkills_at_random_moments_leave_every_message_in_the_file_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    assert_exactly_once(&kafka_to(&Files(dir.path().join("files")), kills(6)));
}

#[test]
fn sigkills_at_random_moments_leave_every_message_in_bigquery_exactly_once() {
    let _held = hold_blocking();
    for write_mode in ["exactly_once", "default"] {
        let sink = StorageWrite {
            dataset: format!("chaos_{write_mode}_{}", std::process::id()),
            write_mode,
        };
        assert_exactly_once(&kafka_to(&sink, kills(3)));
    }
}

#[test]
fn sigkills_at_random_moments_leave_every_message_in_clickhouse_exactly_once() {
    let server = ClickHouse::start();
    let sink = ClickHouseSink(&server);
    let counts = kafka_to(&sink, kills(3));
    // Every row any run inserted, replays included (the server is this
    // test's alone): background merges collapse replays soon, so the
    // table's raw count would not show them.
    let inserted = sink.count("SELECT value FROM system.events WHERE event = 'InsertedRows'");
    let merged = sink.count("SELECT count() FROM events FINAL");
    let distinct = sink.count("SELECT uniqExact(source_record_id) FROM events FINAL");
    eprintln!(
        "chaos: ClickHouse got {inserted} rows inserted, {merged} once merged (FINAL): {} written again by \
         replays and collapsed on their source position",
        inserted - merged
    );
    assert_exactly_once(&counts);
    assert_eq!((merged, distinct), (counts.produced, counts.produced), "{counts:?}");
    assert!(inserted >= merged, "{inserted} rows inserted, {merged} in the table");
}
