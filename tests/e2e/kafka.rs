//! End-to-end: the `bizon-host` binary reading Kafka (tansu from
//! scripts/install-kafka.sh, or BIZON_TEST_KAFKA_BROKERS) into the `file`
//! destination. Each test uses fresh topics and group ids, short session
//! timeouts, and asserts what reached the files and what the group committed.

mod chaos;
mod faults;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::emulators::{self, hold_blocking};
use crate::support::fault;
use crate::support::http_server::{HttpServer, Reply};
use crate::support::kafka::{broker, unique, Broker};
use crate::support::{bizon_host, free_port, metrics, poll, signal, stderr, wait_until, wasm};

/// librdkafka settings that make a group form and notice a departure in
/// seconds rather than the production minute.
pub(crate) const FAST_GROUP: &str = "    session.timeout.ms: 6000\n    heartbeat.interval.ms: 500\n    statistics.interval.ms: 500\n    topic.metadata.refresh.interval.ms: 1000\n";

/// A Bizon-style kafka pipeline to `file` in `out`, with extra source keys.
fn pipeline(b: &Broker, group: &str, topics: &[(&str, &str)], sync_mode: &str, out: &Path, extra: &str) -> String {
    let topics: String = topics
        .iter()
        .map(|(t, d)| format!("    - name: {t}\n      destination_id: {d}\n"))
        .collect();
    format!(
        "name: kafka e2e\nsource:\n  name: kafka\n  stream: topic\n  sync_mode: {sync_mode}\n  bootstrap_servers: {}\n  group_id: {group}\n  message_encoding: utf-8\n  batch_size: 50\n  topics:\n{topics}  consumer_config:\n{FAST_GROUP}{extra}destination:\n  name: file\n  config:\n    path: {}\n    buffer_size: 0\n",
        b.servers,
        out.display()
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// `bizon-host run` on the pipeline file `yaml` to its end, and its result
/// (`NAME.result.json` beside it; null when there is none).
fn run_to_end(yaml: &Path) -> (Output, Value) {
    let dir = yaml.parent().unwrap();
    let result = dir.join(format!("{}.result.json", yaml.file_stem().unwrap().to_string_lossy()));
    let output = bizon_host()
        .args(["run", "--no-progress", "--result-json"])
        .arg(&result)
        .arg(yaml)
        .output()
        .unwrap();
    let json = std::fs::read(&result)
        .map(|b| serde_json::from_slice(&b).unwrap())
        .unwrap_or(Value::Null);
    (output, json)
}

/// [`run_to_end`], which must succeed; its result.
fn run_ok(yaml: &Path) -> Value {
    let (output, result) = run_to_end(yaml);
    assert!(output.status.success(), "{}", stderr(&output));
    result
}

/// Starts `bizon-host run` on `yaml` with `args`, its log into `log`.
pub(crate) fn start(yaml: &Path, log: &Path, args: &[&str]) -> Child {
    bizon_host()
        .args([
            "run",
            "--no-progress",
            "--log-level",
            &std::env::var("BIZON_TEST_LOG").unwrap_or("info".into()),
        ])
        .args(args)
        .arg(yaml)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Starts a `stream` run of `topic` (destination_id `t`) for `group` into
/// `out`, with `extra` source keys and `args`; its pipeline file and log
/// are `out.yaml` and `out.log`.
fn start_streaming(b: &Broker, group: &str, topic: &str, out: &Path, extra: &str, args: &[&str]) -> Child {
    let yaml = out.with_extension("yaml");
    std::fs::write(&yaml, pipeline(b, group, &[(topic, "t")], "stream", out, extra)).unwrap();
    start(&yaml, &out.with_extension("log"), args)
}

/// The log of the run started by [`start_streaming`] into `out`.
pub(crate) fn log_of(out: &Path) -> String {
    std::fs::read_to_string(out.with_extension("log")).unwrap_or_default()
}

/// SIGTERM to the run into `out`: it exits 130, an interrupted run.
pub(crate) fn interrupt(child: &mut Child, out: &Path) {
    signal(child.id(), libc::SIGTERM);
    assert_eq!(child.wait().unwrap().code(), Some(130), "{}", log_of(out));
}

/// Rows of every `*.json` file under `dir` (final and temp files alike),
/// as (file name, row).
pub(crate) fn rows(dir: &Path) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                // A line is whole once fsynced; a torn last line is not written.
                if let Ok(v) = serde_json::from_str(line) {
                    out.push((name.clone(), v));
                }
            }
        }
    }
    out
}

/// (topic, partition, offset) of each row, from its source_data.
pub(crate) fn positions(rows: &[(String, Value)]) -> Vec<(String, i64, i64)> {
    rows.iter()
        .map(|(_, r)| {
            let data: Value = serde_json::from_str(r["source_data"].as_str().unwrap()).unwrap();
            (
                data["topic"].as_str().unwrap().to_string(),
                data["partition"].as_i64().unwrap(),
                data["offset"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// [`positions`] of the rows under each of `outs`, all together.
fn positions_in(outs: &[&Path]) -> Vec<(String, i64, i64)> {
    outs.iter().flat_map(|out| positions(&rows(out))).collect()
}

/// How many distinct messages the runs into `outs` wrote.
fn distinct(outs: &[&Path]) -> usize {
    positions_in(outs).into_iter().collect::<BTreeSet<_>>().len()
}

/// Every offset below the high watermarks is present; returns the duplicates.
pub(crate) fn assert_all_present(found: &[(String, i64, i64)], topic: &str, highs: &[i64]) -> usize {
    let mut seen = BTreeSet::new();
    let mut duplicates = 0;
    for (t, p, o) in found.iter().filter(|(t, _, _)| t == topic) {
        if !seen.insert((p, o)) {
            duplicates += 1;
        }
        assert!(*o < highs[*p as usize], "{t}/{p} offset {o} past the high watermark");
    }
    for (p, high) in highs.iter().enumerate() {
        for o in 0..*high {
            assert!(seen.contains(&(&(p as i64), &o)), "{topic}/{p} offset {o} missing");
        }
    }
    duplicates
}

/// Waits until the group has committed every partition's high watermark.
fn wait_for_commits(b: &Broker, group: &str, topic: &str, partitions: i32, out: &Path) -> Vec<i64> {
    let highs = b.high_watermarks(topic, partitions);
    poll(
        || {
            format!(
                "the offsets committed: {:?} of {highs:?}: {}",
                b.committed(group, topic, partitions),
                log_of(out)
            )
        },
        || (b.committed(group, topic, partitions) == highs).then_some(()),
    );
    highs
}

/// Sends `n` JSON messages (ids `from..from + n`, keyed by id) round-robin
/// over the partitions.
fn produce_json(b: &Broker, topic: &str, partitions: i32, n: usize, from: usize) {
    let p = b.producer();
    for i in from..from + n {
        let value = format!("{{\"id\":{i},\"name\":\"user-{i}\",\"tags\":[\"a\",\"b\"]}}");
        let key = format!("{{\"id\":{i}}}");
        p.send(
            topic,
            (i % partitions as usize) as i32,
            Some(key.as_bytes()),
            Some(value.as_bytes()),
            &[("source", Some(b"e2e"))],
        );
    }
    p.flush();
}

#[test]
fn full_refresh_writes_every_message_once_in_bizons_shape_and_commits_the_high_watermarks() {
    let b = broker();
    let (users, orders) = (unique("users"), unique("orders"));
    b.create_topic(&users, 3);
    b.create_topic(&orders, 2);
    produce_json(b, &users, 3, 300, 0);
    produce_json(b, &orders, 2, 101, 0);
    // A null header and a non-UTF-8 one do not stop the run (they stop Bizon's).
    let p = b.producer();
    p.send(
        &orders,
        0,
        None,
        Some(b"{\"odd\":true}"),
        &[("n", None), ("bin", Some(&[0xff]))],
    );
    p.flush();
    let dir = tempfile::tempdir().unwrap();
    let group = unique("g");
    let yaml = write(
        dir.path(),
        "p.yaml",
        &pipeline(
            b,
            &group,
            &[(&users, "users"), (&orders, "orders")],
            "full_refresh",
            &dir.path().join("out"),
            "",
        ),
    );
    let (output, result) = run_to_end(&yaml);
    assert!(output.status.success(), "{}", stderr(&output));
    // The end of each partition, which ends the run, is not an error.
    assert!(!stderr(&output).contains("ERROR"), "{}", stderr(&output));
    assert_eq!(result["records_written"], 402, "{result}");
    assert_eq!(result["by_destination_id"]["users"], 300);
    let all = rows(&dir.path().join("out"));
    assert!(
        all.iter().all(|(f, _)| f == "users.json" || f == "orders.json"),
        "files: {all:?}"
    );
    let found = positions(&all);
    let (users_high, orders_high) = (b.high_watermarks(&users, 3), b.high_watermarks(&orders, 2));
    assert_eq!(
        assert_all_present(&found, &users, &users_high),
        0,
        "duplicates on a clean run"
    );
    assert_eq!(
        assert_all_present(&found, &orders, &orders_high),
        0,
        "duplicates on a clean run"
    );
    assert_eq!(b.committed(&group, &users, 3), users_high);
    assert_eq!(b.committed(&group, &orders, 2), orders_high);

    // Bizon's record: id, time, and source_data's keys in Bizon's order.
    let (_, row) = all
        .iter()
        .find(|(f, r)| f == "users.json" && r["source_record_id"] == "partition_1_offset_0")
        .unwrap();
    let data: Value = serde_json::from_str(row["source_data"].as_str().unwrap()).unwrap();
    let raw = row["source_data"].as_str().unwrap();
    assert!(
        raw.starts_with(&format!(
            "{{\"topic\":\"{users}\",\"offset\":0,\"partition\":1,\"timestamp\":"
        )),
        "{raw}"
    );
    assert!(raw.ends_with(",\"keys\":{\"id\":1},\"headers\":{\"source\":\"e2e\"},\"value\":{\"id\":1,\"name\":\"user-1\",\"tags\":[\"a\",\"b\"]},\"schema\":{}}"), "{raw}");
    let ts_ms = data["timestamp"].as_i64().unwrap();
    assert!(ts_ms > 1_700_000_000_000);
    let (_, odd) = all
        .iter()
        .find(|(_, r)| r["source_data"].as_str().unwrap().contains("odd"))
        .unwrap();
    let odd: Value = serde_json::from_str(odd["source_data"].as_str().unwrap()).unwrap();
    assert_eq!(odd["headers"]["n"], Value::Null);
    assert_eq!(odd["headers"]["bin"], "\u{fffd}");

    // Run again: a full refresh reads everything again, from the low watermark.
    let again = dir.path().join("again");
    let yaml = write(
        dir.path(),
        "again.yaml",
        &pipeline(b, &group, &[(&users, "users")], "full_refresh", &again, ""),
    );
    let result = run_ok(&yaml);
    assert_eq!(result["records_written"], 300);
    // Incremental from the group's commits: nothing new, nothing read.
    let yaml = write(
        dir.path(),
        "incr.yaml",
        &pipeline(
            b,
            &group,
            &[(&users, "users")],
            "incremental",
            &dir.path().join("incr"),
            "",
        ),
    );
    produce_json(b, &users, 3, 6, 1000);
    let result = run_ok(&yaml);
    assert_eq!(
        result["records_written"], 6,
        "incremental reads only what came after the commit"
    );
}

#[test]
fn streams_section_routes_topics_to_table_ids_as_bizon_injects_them() {
    let b = broker();
    let (a, c) = (unique("cdc.users"), unique("cdc.orders"));
    b.create_topic(&a, 2);
    b.create_topic(&c, 1);
    produce_json(b, &a, 2, 20, 0);
    produce_json(b, &c, 1, 10, 0);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let group = unique("g");
    // No `topics`: they come from `streams`, and `unnest` gets its record_schemas there too.
    let yaml = format!(
        "name: streams\nsource:\n  name: kafka\n  stream: topic\n  sync_mode: stream\n  nb_bytes_schema_id: 4\n  timestamp_ms_name: ts_ms\n  bootstrap_servers: {}\n  group_id: {group}\n  message_encoding: utf-8\n  consumer_config:\n{FAST_GROUP}destination:\n  name: file\n  config:\n    path: {}\n    buffer_size: 0\n    unnest: true\nstreams:\n  - name: users\n    source:\n      topic: {a}\n    destination:\n      table_id: p.d.users\n      record_schema:\n        - name: value\n          type: JSON\n  - name: orders\n    source:\n      topic: {c}\n    destination:\n      table_id: p.d.orders\n      record_schema:\n        - name: offset\n          type: INTEGER\n        - name: value\n          type: JSON\n",
        b.servers,
        out.display()
    );
    let mut child = start(&write(dir.path(), "out.yaml", &yaml), &out.with_extension("log"), &[]);
    let count = |f: &str| rows(&out).iter().filter(|(n, _)| n.starts_with(f)).count();
    wait_until("30 rows", || count("p.d.users") == 20 && count("p.d.orders") == 10);
    interrupt(&mut child, &out);
    let log = log_of(&out);
    assert!(
        log.contains("nb_bytes_schema_id: Bizon 0.6.4 no longer reads this key"),
        "{log}"
    );
    let all = rows(&out);
    let orders_row = all.iter().find(|(n, _)| n.starts_with("p.d.orders")).unwrap();
    assert!(
        orders_row.1.get("offset").is_some(),
        "unnested columns: {}",
        orders_row.1
    );
    assert_eq!(b.committed(&group, &a, 2), b.high_watermarks(&a, 2));
    assert_eq!(b.committed(&group, &c, 1), b.high_watermarks(&c, 1));
}

#[test]
fn sigterm_drains_commits_and_leaves_the_group_promptly() {
    let b = broker();
    let topic = unique("t");
    b.create_topic(&topic, 4);
    produce_json(b, &topic, 4, 200, 0);
    let dir = tempfile::tempdir().unwrap();
    let group = unique("g");
    let out = dir.path().join("out");
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let mut child = start_streaming(b, &group, &topic, &out, "", &["--metrics-addr", &metrics_addr]);
    wait_until("200 rows", || rows(&out).len() >= 200);
    // More arrives while it runs.
    produce_json(b, &topic, 4, 40, 200);
    wait_until("240 rows", || rows(&out).len() >= 240);
    // The metrics endpoint shows the rows and, once committed and fetched, no lag.
    poll(
        || format!("metrics to show 240 rows at zero lag:\n{}", metrics(&metrics_addr)),
        || {
            let text = metrics(&metrics_addr);
            let lag_zero = |p: i32| {
                text.contains(&format!(
                    "bizon_kafka_lag{{partition=\"{p}\",topic=\"{topic}\",pipeline=\"kafka e2e\"}} 0"
                ))
            };
            let done = text.contains("bizon_records_written_total{destination_id=\"t\",pipeline=\"kafka e2e\"} 240")
                && (0..4).all(lag_zero)
                && text.contains(&format!(
                    "bizon_kafka_high_watermark{{partition=\"0\",topic=\"{topic}\",pipeline=\"kafka e2e\"}} 60"
                ));
            done.then_some(())
        },
    );
    let asked = Instant::now();
    interrupt(&mut child, &out);
    let took = asked.elapsed();
    let log = log_of(&out);
    assert!(took < Duration::from_secs(10), "took {took:?} to stop:\n{log}");
    assert!(log.contains("kafka: consumer closed"), "{log}");
    let highs = b.high_watermarks(&topic, 4);
    assert_eq!(assert_all_present(&positions(&rows(&out)), &topic, &highs), 0);
    assert_eq!(b.committed(&group, &topic, 4), highs);

    // The next member of the group gets the partitions at once (the first
    // left the group instead of timing out) and finds nothing to redo.
    produce_json(b, &topic, 4, 8, 1000);
    let out2 = dir.path().join("out2");
    let mut child = start_streaming(b, &group, &topic, &out2, "", &[]);
    wait_until("8 new rows", || rows(&out2).len() >= 8);
    // Time for a message read again, if any were, to be written too.
    std::thread::sleep(Duration::from_millis(500));
    interrupt(&mut child, &out2);
    let second = positions(&rows(&out2));
    assert_eq!(second.len(), 8, "only the new messages are read again: {second:?}");
}

#[test]
fn kill_9_after_the_write_before_the_commit_loses_nothing() {
    let b = broker();
    let topic = unique("t");
    b.create_topic(&topic, 3);
    produce_json(b, &topic, 3, 150, 0);
    let dir = tempfile::tempdir().unwrap();
    let group = unique("g");
    // Commits only every 10 minutes: the kill lands after the writes, before any commit.
    let slow_commit = "    auto.commit.interval.ms: 600000\n";
    let first = dir.path().join("first");
    let mut child = start_streaming(b, &group, &topic, &first, slow_commit, &[]);
    wait_until("150 rows", || rows(&first).len() >= 150);
    signal(child.id(), libc::SIGKILL);
    child.wait().unwrap();
    assert_eq!(
        b.committed(&group, &topic, 3),
        vec![-1, -1, -1],
        "nothing was committed"
    );

    let second = dir.path().join("second");
    let mut child = start_streaming(b, &group, &topic, &second, "", &[]);
    wait_until("150 rows again", || rows(&second).len() >= 150);
    interrupt(&mut child, &second);
    let highs = b.high_watermarks(&topic, 3);
    let duplicates = assert_all_present(&positions_in(&[&first, &second]), &topic, &highs);
    assert_eq!(
        duplicates, 150,
        "everything written before the kill is read again, once"
    );
    assert_eq!(b.committed(&group, &topic, 3), highs);
}

#[test]
fn a_message_dead_lettered_before_a_kill_9_is_dead_lettered_once_after_the_replay() {
    let b = broker();
    let topic = unique("t");
    b.create_topic(&topic, 2);
    produce_json(b, &topic, 2, 40, 0);
    let p = b.producer();
    p.send(&topic, 0, None, Some(b"{not json"), &[]);
    p.send(&topic, 1, None, Some(&[0xff, 0xfe]), &[]);
    p.flush();
    let dir = tempfile::tempdir().unwrap();
    let group = unique("g");
    let dl = dir.path().join("dead.jsonl");
    let letters = || -> Vec<(i64, i64)> {
        std::fs::read_to_string(&dl)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|l| (l["partition"].as_i64().unwrap(), l["offset"].as_i64().unwrap()))
            .collect()
    };
    let start_run = |name: &str, extra: &str| {
        let out = dir.path().join(name);
        let text = pipeline(b, &group, &[(&topic, "t")], "stream", &out, extra)
            + &format!("dead_letter:\n  path: {}\n", dl.display());
        (
            start(
                &write(dir.path(), &format!("{name}.yaml"), &text),
                &out.with_extension("log"),
                &[],
            ),
            out,
        )
    };
    // Commits only every 10 minutes: the kill lands after the letters were
    // written, before the commit that covers their messages.
    let (mut child, first) = start_run("first", "    auto.commit.interval.ms: 600000\n");
    wait_until("40 rows and 2 letters", || {
        rows(&first).len() >= 40 && letters().len() >= 2
    });
    signal(child.id(), libc::SIGKILL);
    child.wait().unwrap();
    assert_eq!(b.committed(&group, &topic, 2), vec![-1, -1], "nothing was committed");

    let (mut child, second) = start_run("second", "");
    wait_for_commits(b, &group, &topic, 2, &second);
    interrupt(&mut child, &second);
    assert_eq!(rows(&second).len(), 40, "the messages were read again");
    let mut at = letters();
    at.sort();
    assert_eq!(
        at,
        vec![(0, 20), (1, 20)],
        "each undecodable message is dead-lettered once"
    );
    assert!(
        log_of(&second).contains("letter(s) written before a restart, not written again"),
        "{}",
        log_of(&second)
    );
}

/// A plugin learns where each batch comes from (`host.batch-source`):
/// plugins/http sends its batch id as the Idempotency-Key, and the id is
/// the one derived from the offsets the batch holds.
#[test]
fn the_http_plugin_keys_each_batch_by_its_kafka_offset_ranges() {
    use sha2::{Digest, Sha256};

    let b = broker();
    let topic = unique("t");
    b.create_topic(&topic, 2);
    produce_json(b, &topic, 2, 300, 0);
    let server = HttpServer::start(|_, _| Reply::ok(""));
    let dir = tempfile::tempdir().unwrap();
    let text = pipeline(
        b,
        &unique("g"),
        &[(&topic, "t")],
        "full_refresh",
        &dir.path().join("out"),
        "",
    );
    let destination = format!(
        "destination:\n  name: wasm\n  config:\n    plugin: {}\n    plugin_config: {{url: \"{}\"}}\n    allow:\n      hosts: [\"{}\"]\n    buffer_size: 0\n",
        wasm("bizon_http").display(),
        server.url(),
        server.url()
    );
    let text = text[..text.find("destination:").unwrap()].to_string() + &destination;
    let result = run_ok(&write(dir.path(), "http.yaml", &text));
    assert_eq!(result["records_written"], 300, "{result}");
    let seen = server.seen();
    let mut keys = BTreeSet::new();
    let mut offsets = BTreeSet::new();
    for request in &seen {
        // The ranges of this batch, from its rows (every message is a row).
        let mut ranges = std::collections::BTreeMap::<i64, (i64, i64)>::new();
        for line in String::from_utf8_lossy(&request.body).lines() {
            let row: Value = serde_json::from_str(line).unwrap();
            let data: Value = serde_json::from_str(row["source_data"].as_str().unwrap()).unwrap();
            let (p, o) = (data["partition"].as_i64().unwrap(), data["offset"].as_i64().unwrap());
            let range = ranges.entry(p).or_insert((o, o));
            *range = (range.0.min(o), range.1.max(o));
            offsets.insert((p, o));
        }
        let mut hash = Sha256::new();
        hash.update(b"t");
        for (p, (first, last)) in &ranges {
            hash.update(format!("\0{topic}\0{p}\0{first}\0{last}"));
        }
        let id: String = hash.finalize()[..16].iter().map(|b| format!("{b:02x}")).collect();
        let key = request.header("idempotency-key").unwrap();
        assert_eq!(key, format!("{id}-0"), "ranges {ranges:?}");
        assert!(keys.insert(key.to_string()), "{key} twice");
    }
    assert_eq!(offsets.len(), 300);
    assert!(seen.len() > 1, "one batch only: {}", seen.len());
}

#[test]
fn a_second_process_joining_mid_run_shares_the_partitions_and_nothing_is_lost() {
    let b = broker();
    let topic = unique("t");
    b.create_topic(&topic, 6);
    produce_json(b, &topic, 6, 300, 0);
    let dir = tempfile::tempdir().unwrap();
    let group = unique("g");
    let (out_a, out_b) = (dir.path().join("a"), dir.path().join("b"));
    let both = [out_a.as_path(), out_b.as_path()];
    let mut a = start_streaming(b, &group, &topic, &out_a, "", &[]);
    wait_until("first rows", || !rows(&out_a).is_empty());
    let mut second = start_streaming(b, &group, &topic, &out_b, "", &[]);
    // Keep producing while the group rebalances.
    for round in 0..10 {
        produce_json(b, &topic, 6, 30, 1000 + round * 30);
        std::thread::sleep(Duration::from_millis(300));
    }
    let total = 600;
    wait_until("600 rows", || distinct(&both) >= total);
    wait_until("b to get partitions", || log_of(&out_b).contains("partitions assigned"));
    produce_json(b, &topic, 6, 60, 5000);
    wait_until("660 rows", || distinct(&both) >= total + 60);
    interrupt(&mut a, &out_a);
    interrupt(&mut second, &out_b);
    assert!(
        !positions(&rows(&out_b)).is_empty(),
        "the second process got no partition:\n{}",
        log_of(&out_b)
    );
    let all = positions_in(&both);
    let highs = b.high_watermarks(&topic, 6);
    let duplicates = assert_all_present(&all, &topic, &highs);
    eprintln!(
        "rebalance mid-run: {} rows for {} messages ({duplicates} duplicates)",
        all.len(),
        total + 60
    );
    assert_eq!(b.committed(&group, &topic, 6), highs);
}

/// Bizon's static membership (`group.instance.id = {group_id}-{HOSTNAME}`):
/// two processes of one machine share HOSTNAME and must not fence each
/// other, and a SIGKILLed one, restarted, rejoins as the same member before
/// the broker would have expired it (45 s, the default session timeout,
/// kept here: tansu 0.6 gave its partitions back after 26 s to a static
/// member, after 82 s to a dynamic one).
#[test]
fn a_restarted_static_member_takes_its_partitions_back_before_its_session_expires() {
    let b = broker();
    let topic = unique("t");
    b.create_topic(&topic, 4);
    produce_json(b, &topic, 4, 200, 0);
    let dir = tempfile::tempdir().unwrap();
    let group = unique("g");
    let start_as_pod = |out: &Path| {
        let yaml = out.with_extension("yaml");
        let text = pipeline(b, &group, &[(&topic, "t")], "stream", out, "")
            .replace("session.timeout.ms: 6000", "session.timeout.ms: 45000");
        std::fs::write(&yaml, text).unwrap();
        bizon_host()
            .env("HOSTNAME", "pod-7")
            .args(["run", "--no-progress", "--log-level", "info"])
            .arg(&yaml)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(out.with_extension("log")).unwrap())
            .spawn()
            .unwrap()
    };
    let (out_a, out_b) = (dir.path().join("a"), dir.path().join("b"));
    let both = [out_a.as_path(), out_b.as_path()];
    let mut a = start_as_pod(&out_a);
    wait_until("a's first rows", || !rows(&out_a).is_empty());
    let mut second = start_as_pod(&out_b);
    wait_until("b to get partitions", || log_of(&out_b).contains("partitions assigned"));
    let ids = [&out_a, &out_b].map(|o| {
        let log = log_of(o);
        let at = log.find("group.instance.id=").map(|i| i + "group.instance.id=".len());
        at.map(|i| log[i..].split_whitespace().next().unwrap_or_default().to_string())
    });
    assert_eq!(
        ids,
        [Some(format!("{group}-pod-7")), Some(format!("{group}-pod-7-1"))],
        "{}",
        log_of(&out_b)
    );
    signal(second.id(), libc::SIGKILL);
    second.wait().unwrap();
    produce_json(b, &topic, 4, 100, 1000);
    let restarted = Instant::now();
    let mut second = start_as_pod(&out_b);
    wait_until("the restarted b to get partitions", || {
        log_of(&out_b).contains("partitions assigned")
    });
    let waited = restarted.elapsed();
    eprintln!(
        "static member restarted: partitions after {:.1} s",
        waited.as_secs_f64()
    );
    assert!(waited < Duration::from_secs(40), "{waited:?}: {}", log_of(&out_b));
    wait_until("300 rows", || distinct(&both) >= 300);
    interrupt(&mut a, &out_a);
    interrupt(&mut second, &out_b);
    assert!(!log_of(&out_a).contains("FENCED"), "{}", log_of(&out_a));
    assert_all_present(&positions_in(&both), &topic, &b.high_watermarks(&topic, 4));
}

#[test]
fn poison_messages_go_to_the_dead_letter_file_or_topic_or_stop_the_run_naming_them() {
    let b = broker();
    let topic = unique("t");
    b.create_topic(&topic, 2);
    let p = b.producer();
    p.send(&topic, 0, None, Some(b"{\"ok\":1}"), &[]);
    p.send(&topic, 0, None, Some(b"{not json"), &[("trace", Some(b"abc"))]);
    p.send(&topic, 1, Some(b"plain-key"), Some(b"{\"ok\":2}"), &[]);
    p.send(&topic, 1, None, Some(b"{\"ok\":3}"), &[("n", None)]);
    p.send(&topic, 0, None, Some(&[0xff, 0xfe]), &[]);
    p.flush();
    let dir = tempfile::tempdir().unwrap();

    // Without a dead letter the run stops at the first, naming it.
    let yaml = write(
        dir.path(),
        "none.yaml",
        &pipeline(
            b,
            &unique("g"),
            &[(&topic, "t")],
            "full_refresh",
            &dir.path().join("none"),
            "",
        ),
    );
    let (output, _) = run_to_end(&yaml);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    // Whichever partition is fetched first holds the first bad message.
    let text = stderr(&output);
    assert!(
        text.contains(&format!("topic {topic} partition 0 offset 1: the value is not JSON"))
            || text.contains(&format!("topic {topic} partition 1 offset 0: the key is not JSON")),
        "{text}"
    );

    // To a file: the good ones are written, the bad ones are letters.
    let dl = dir.path().join("dead.jsonl");
    let group = unique("g");
    let text = pipeline(b, &group, &[(&topic, "t")], "full_refresh", &dir.path().join("out"), "")
        + &format!("dead_letter:\n  path: {}\n", dl.display());
    let result = run_ok(&write(dir.path(), "file.yaml", &text));
    assert_eq!(result["records_written"], 2);
    assert_eq!(result["source"]["dead_letters"], 3, "{result}");
    let letters: Vec<Value> = std::fs::read_to_string(&dl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut at: Vec<(i64, i64)> = letters
        .iter()
        .map(|l| (l["partition"].as_i64().unwrap(), l["offset"].as_i64().unwrap()))
        .collect();
    at.sort();
    assert_eq!(at, vec![(0, 1), (0, 2), (1, 0)]);
    let bad_json = letters.iter().find(|l| l["offset"] == 1).unwrap();
    assert_eq!(bad_json["value"], "{not json");
    assert_eq!(bad_json["headers"]["trace"], "abc");
    assert!(bad_json["error"].as_str().unwrap().starts_with("the value is not JSON"));
    let binary = letters.iter().find(|l| l["offset"] == 2).unwrap();
    assert_eq!(binary["value_base64"], "//4=");
    // Dead-lettered offsets are committed with the rest.
    assert_eq!(b.committed(&group, &topic, 2), b.high_watermarks(&topic, 2));

    // To a topic: the original bytes, with where they came from and why.
    let dead_topic = unique("dead");
    b.create_topic(&dead_topic, 1);
    let text = pipeline(
        b,
        &unique("g"),
        &[(&topic, "t")],
        "full_refresh",
        &dir.path().join("out2"),
        "",
    ) + &format!("dead_letter:\n  topic: {dead_topic}\n");
    run_ok(&write(dir.path(), "topic.yaml", &text));
    let dead = b.read_all(&dead_topic, 1, 3);
    assert_eq!(dead.len(), 3);
    let bad = dead
        .iter()
        .find(|m| m.headers.get("bizon.offset").map(String::as_str) == Some("1"))
        .unwrap();
    assert_eq!(bad.value, b"{not json");
    assert_eq!(bad.headers["bizon.topic"], topic);
    assert_eq!(bad.headers["trace"], "abc");

    // A bound stops the run once passed.
    let text = pipeline(
        b,
        &unique("g"),
        &[(&topic, "t")],
        "full_refresh",
        &dir.path().join("out3"),
        "",
    ) + &format!(
        "dead_letter:\n  path: {}\n  max_dead_letters: 1\n",
        dir.path().join("dl3.jsonl").display()
    );
    let (output, _) = run_to_end(&write(dir.path(), "bound.yaml", &text));
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("passed max_dead_letters (1)"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn unsafe_consumer_config_and_missing_topics_are_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "name: x\nsource:\n  name: kafka\n  stream: topic\n  bootstrap_servers: 127.0.0.1:1\n  message_encoding: utf-8\n  topics:\n    - name: t\n      destination_id: t\n  consumer_config:\n    enable.auto.offset.store: true\ndestination:\n  name: logger\n";
    let (output, _) = run_to_end(&write(dir.path(), "unsafe.yaml", yaml));
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(
        err.contains("unsafe.yaml:3:9: source.consumer_config.enable.auto.offset.store: `true` is refused"),
        "{err}"
    );
    let yaml = "name: x\nsource:\n  name: kafka\n  stream: topic\n  bootstrap_servers: 127.0.0.1:1\ndestination:\n  name: logger\n";
    let (output, _) = run_to_end(&write(dir.path(), "none.yaml", yaml));
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("source.topics: no topics"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn scale_out_three_processes_six_partitions_one_killed_mid_run_loses_nothing() {
    let b = broker();
    let topic = unique("t");
    b.create_topic(&topic, 6);
    let dir = tempfile::tempdir().unwrap();
    let group = unique("g");
    let outs: Vec<PathBuf> = (0..3).map(|i| dir.path().join(format!("out{i}"))).collect();
    let all: Vec<&Path> = outs.iter().map(PathBuf::as_path).collect();
    let mut children: Vec<Child> = outs
        .iter()
        .map(|out| start_streaming(b, &group, &topic, out, "", &[]))
        .collect();
    produce_json(b, &topic, 6, 300, 0);
    wait_until("the first 300 rows", || distinct(&all) >= 300);
    // One member dies without a word; the others take its partitions from
    // the last commit once its session times out.
    signal(children[1].id(), libc::SIGKILL);
    children[1].wait().unwrap();
    for round in 0..6 {
        produce_json(b, &topic, 6, 50, 1000 + round * 50);
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_until("all 600 rows", || distinct(&all) >= 600);
    for i in [0, 2] {
        interrupt(&mut children[i], &outs[i]);
    }
    let found = positions_in(&all);
    let highs = b.high_watermarks(&topic, 6);
    let duplicates = assert_all_present(&found, &topic, &highs);
    eprintln!(
        "scale-out: {} rows for 600 messages ({duplicates} duplicates)",
        found.len()
    );
    assert_eq!(b.committed(&group, &topic, 6), highs);
}

/// An Apicurio schema registry stand-in: `GET /apis/registry/v2/ids/globalIds/{id}`
/// answers the schema of that id, or 404. Returns its base URL.
fn schema_registry(schemas: Vec<(i64, String)>) -> String {
    HttpServer::start(move |_, seen| {
        let id: Option<i64> = seen
            .path
            .strip_prefix("/apis/registry/v2/ids/globalIds/")
            .and_then(|id| id.parse().ok());
        match schemas.iter().find(|(i, _)| Some(*i) == id) {
            Some((_, schema)) => Reply::ok(schema).header("content-type", "application/json"),
            None => Reply::status(404, ""),
        }
    })
    .url()
}

#[test]
fn avro_messages_decode_with_schemas_from_the_registry_and_unknown_ids_go_to_the_dead_letter() {
    use apache_avro::types::Value as Avro;
    let b = broker();
    let schema_text = r#"{"type": "record", "name": "users", "namespace": "cdc", "fields": [{"name": "id", "type": "long"}, {"name": "email", "type": ["null", "string"]}, {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}}]}"#;
    let schema = apache_avro::Schema::parse_str(schema_text).unwrap();
    let url = schema_registry(vec![(1, schema_text.to_string()), (2, schema_text.to_string())]);
    let datum = |id: i64, email: Option<&str>| {
        let record = Avro::Record(vec![
            ("id".into(), Avro::Long(id)),
            (
                "email".into(),
                match email {
                    Some(e) => Avro::Union(1, Box::new(Avro::String(e.into()))),
                    None => Avro::Union(0, Box::new(Avro::Null)),
                },
            ),
            ("at".into(), Avro::TimestampMillis(1_714_566_600_000 + id)),
        ]);
        apache_avro::to_avro_datum(&schema, record).unwrap()
    };
    let topic = unique("avro");
    b.create_topic(&topic, 1);
    let p = b.producer();
    // Confluent framing: magic byte, 4-byte schema id.
    let mut confluent = vec![0, 0, 0, 0, 1];
    confluent.extend(datum(1, Some("a@example.com")));
    p.send(&topic, 0, None, Some(&confluent), &[]);
    // Apicurio framing: magic byte, 8-byte global id.
    let mut apicurio = vec![0, 0, 0, 0, 0, 0, 0, 0, 2];
    apicurio.extend(datum(2, None));
    p.send(&topic, 0, None, Some(&apicurio), &[]);
    // A schema id the registry does not have.
    let mut unknown = vec![0, 0, 0, 0, 99];
    unknown.extend(datum(3, None));
    p.send(&topic, 0, None, Some(&unknown), &[]);
    p.flush();
    let dir = tempfile::tempdir().unwrap();
    let dl = dir.path().join("dead.jsonl");
    // Bizon's own avro config: the encoding is its default, the registry under authentication.
    let yaml = format!(
        "name: avro\nsource:\n  name: kafka\n  stream: topic\n  sync_mode: full_refresh\n  bootstrap_servers: {}\n  group_id: {}\n  topic: {topic}\n  authentication:\n    type: basic\n    schema_registry_url: {url}\n  consumer_config:\n{FAST_GROUP}destination:\n  name: file\n  config:\n    path: {}\ndead_letter:\n  path: {}\n",
        b.servers,
        unique("g"),
        dir.path().join("out").display(),
        dl.display()
    );
    let result = run_ok(&write(dir.path(), "avro.yaml", &yaml));
    assert_eq!(result["records_written"], 2, "{result}");
    let all = rows(&dir.path().join("out"));
    let data: Vec<String> = all
        .iter()
        .map(|(_, r)| r["source_data"].as_str().unwrap().to_string())
        .collect();
    let first = data.iter().find(|d| d.contains("\"offset\":0")).unwrap();
    assert!(
        first.contains(r#""value":{"id":1,"email":"a@example.com","at":"2024-05-01T12:30:00.001000+00:00"},"schema":{"type":"record","name":"Envelope","namespace":"cdc","fields":[{"#),
        "{first}"
    );
    let second = data.iter().find(|d| d.contains("\"offset\":1")).unwrap();
    assert!(second.contains(r#""value":{"id":2,"email":null,"#), "{second}");
    let letters = std::fs::read_to_string(&dl).unwrap();
    assert!(letters.contains("schema id 99 not found in the registry"), "{letters}");
}

/// What both Kafka-to-BigQuery tests read from (their topics) and write
/// through: a proxy in front of the emulator that records what reaches it.
struct ToBigQuery {
    dir: tempfile::TempDir,
    proxy: fault::FaultServer,
    dataset: String,
}

impl ToBigQuery {
    /// `topics` with `partitions` each and `count` messages in each.
    fn new(e: &emulators::Emulators, topics: &[&str], partitions: i32, count: usize, dataset: &str) -> ToBigQuery {
        let b = broker();
        for topic in topics {
            b.create_topic(topic, partitions);
            produce_json(b, topic, partitions, count, 0);
        }
        ToBigQuery {
            dir: tempfile::tempdir().unwrap(),
            // Forwards everything; answers a job id seen before with 409, as BigQuery does.
            proxy: fault::start(&e.rest, Box::new(|_, _| fault::Reply::Forward)),
            dataset: format!("{dataset}_{}", std::process::id()),
        }
    }

    /// One run in a group of its own reading `topics` in `sync_mode` into
    /// table `events` of `destination` (`extra`: more of its config); it
    /// must write `written` records.
    fn run(&self, name: &str, sync_mode: &str, topics: &[&str], destination: &str, extra: &str, written: u64) {
        let topics: String = topics
            .iter()
            .map(|t| format!("    - name: {t}\n      destination_id: events\n"))
            .collect();
        let yaml = format!(
            "name: kafka to bq\nsource:\n  name: kafka\n  stream: topic\n  sync_mode: {sync_mode}\n  bootstrap_servers: {}\n  group_id: {}\n  message_encoding: utf-8\n  topics:\n{topics}destination:\n  name: {destination}\n  config:\n    project_id: {}\n    dataset_id: {}\n    endpoint: {}\n{extra}",
            broker().servers,
            unique("g"),
            emulators::PROJECT,
            self.dataset,
            self.proxy.url
        );
        let result = run_ok(&write(self.dir.path(), name, &yaml));
        assert_eq!(result["records_written"], written, "{result}");
    }
}

#[test]
fn bigquery_streaming_insert_ids_name_the_message_so_reading_it_again_sends_the_same_ids() {
    let (e, _held) = hold_blocking();
    let (users, orders) = (unique("users"), unique("orders"));
    let bq = ToBigQuery::new(e, &[users.as_str(), orders.as_str()], 2, 20, "kafka_ids");
    // Both topics into one table: the same partition and offset in two
    // topics are two rows, and must not share an id.
    let run = |name: &str| {
        let topics = [users.as_str(), orders.as_str()];
        bq.run(
            name,
            "full_refresh",
            &topics,
            "bigquery_streaming",
            "    buffer_size: 0\n",
            40,
        )
    };
    let ids = || -> BTreeSet<String> { bq.proxy.seen().into_iter().flat_map(|s| s.insert_ids).collect() };
    run("first.yaml");
    let first = ids();
    assert_eq!(first.len(), 40, "one id per message, the two topics apart");
    // A second run reads the same messages (a restart after a crash does
    // too): BigQuery gets the same ids and drops the repeats.
    run("second.yaml");
    assert_eq!(ids(), first, "the second read sent the ids of the first");
    assert_eq!(bq.proxy.seen().iter().map(|s| s.insert_ids.len()).sum::<usize>(), 80);
}

#[test]
fn bigquery_load_job_ids_name_the_messages_so_loading_them_again_is_a_no_op() {
    let (e, _held) = hold_blocking();
    let topic = unique("t");
    let bq = ToBigQuery::new(e, &[topic.as_str()], 2, 30, "kafka_jobs");
    // Two groups read the same messages, as a run after a crash before the
    // commit does; incremental loads into the kept `_incremental` stage.
    let staging = format!(
        "    create_dataset: true\n    gcs_endpoint: http://127.0.0.1:80\n    gcs_buffer_bucket: {}\n",
        emulators::BUCKET
    );
    let run = |name: &str| bq.run(name, "incremental", &[topic.as_str()], "bigquery", &staging, 30);
    let loads = || -> Vec<(String, bool)> {
        let jobs = bq.proxy.jobs.lock().unwrap();
        jobs.iter()
            .filter(|(id, _)| id.starts_with("bizon_load_"))
            .cloned()
            .collect()
    };
    run("first.yaml");
    let first = loads();
    assert_eq!(first.len(), 1, "{first:?}");
    run("second.yaml");
    let all = loads();
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[1], (first[0].0.clone(), true), "the same job id, answered 409");
    let sql = format!("SELECT COUNT(*) FROM `{}.{}.events`", emulators::PROJECT, bq.dataset);
    let answer: Value = reqwest::blocking::Client::new()
        .post(format!(
            "{}/bigquery/v2/projects/{}/queries",
            e.rest,
            emulators::PROJECT
        ))
        .json(&serde_json::json!({"query": sql, "useLegacySql": false}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(answer["rows"][0]["f"][0]["v"], "30", "loaded once: {answer}");
}
