//! `bigquery_streaming_v2` on the path real BigQuery takes (one long-lived
//! AppendRows connection per table, `write_stream` on its first request only),
//! through the binary against the Storage Write stand-in
//! (support/storage_write.rs); datasets and tables against bqemulator's REST.

use std::collections::BTreeMap;

use super::{dataset, indent, run_binary};
use crate::support::emulators::{hold, Emulators, PROJECT};
use crate::support::storage_write::{self, Faults, StandIn};

const TOTAL: u64 = 1200;

/// Appends per table: pages of 100 records over two destination_ids are
/// batches of 50, sent as two appends of 25.
const APPENDS: usize = 24;

/// `dummy` records 0..TOTAL over destination_ids `a` and `b`, written
/// straight into the tables (`sync_mode: stream`), each page its own batch
/// (`buffer_size: 0`), appends of at most 25 rows.
fn pipeline(endpoint: &str, standin: &StandIn, ds: &str, extra: &str) -> String {
    let config = format!(
        "project_id: {PROJECT}\ndataset_id: {ds}\nendpoint: {endpoint}\nstorage_write_endpoint: {}\nappend_connections: per_table\nbuffer_size: 0\nbq_max_rows_per_request: 25\nmax_concurrent_threads: 4\nretry: {{max_attempts: 4, initial_backoff_ms: 10, max_backoff_ms: 50}}\n{extra}",
        standin.url
    );
    format!(
        "name: bq\nsource:\n  name: dummy\n  stream: s\n  sync_mode: stream\n  total_records: {TOTAL}\n  page_size: 100\n  destination_ids: [a, b]\ndestination:\n  name: bigquery_streaming_v2\n  config:\n{}",
        indent(&config)
    )
}

/// Every dummy id of `table` (those with `id % 2 == rest`) exactly once.
fn assert_each_once(standin: &StandIn, table: &str, rest: u64) {
    let mut ids: Vec<u64> = standin.rows(table).iter().map(|i| i.parse().unwrap()).collect();
    ids.sort_unstable();
    let expected: Vec<u64> = (0..TOTAL).filter(|i| i % 2 == rest).collect();
    assert_eq!(ids, expected, "rows of {table}: each id once");
}

/// Requests by connection, in arrival order.
fn by_connection(standin: &StandIn) -> BTreeMap<usize, Vec<storage_write::Seen>> {
    let mut out: BTreeMap<usize, Vec<storage_write::Seen>> = BTreeMap::new();
    for s in standin.seen() {
        out.entry(s.connection).or_default().push(s);
    }
    out
}

/// A run of [`pipeline`] in `write_mode`, into dataset `name`, against a
/// fresh stand-in with `faults`: it succeeds, each record once in its
/// table. The stand-in, to look at what it was sent.
async fn run_ok(e: &Emulators, faults: Faults, name: &str, write_mode: &str) -> StandIn {
    let standin = storage_write::start(faults);
    let ds = dataset(name);
    let yaml = pipeline(&e.rest, &standin, &ds, &format!("write_mode: {write_mode}"));
    let (status, stderr, result) = run_binary(yaml).await;
    assert!(status.success(), "bizon-host failed: {stderr}\n{result}");
    assert_eq!(result["records_written"], TOTAL, "{result}");
    assert_each_once(&standin, &format!("{PROJECT}.{ds}.a"), 0);
    assert_each_once(&standin, &format!("{PROJECT}.{ds}.b"), 1);
    standin
}

#[tokio::test]
async fn storage_write_keeps_one_connection_per_table_with_write_stream_on_its_first_request_only() {
    let (e, _held) = hold().await;
    for mode in ["default", "exactly_once"] {
        let standin = run_ok(e, Faults::default(), &format!("sw_long_{mode}"), mode).await;
        let connections = by_connection(&standin);
        // One long-lived connection per table, not one per append.
        assert_eq!(connections.len(), 2, "{mode}: connections {connections:?}");
        for (c, requests) in &connections {
            assert_eq!(requests.len(), APPENDS, "{mode}: connection {c}");
            assert!(requests[0].carried_stream, "{mode}: first request without write_stream");
            assert!(
                requests[1..].iter().all(|r| !r.carried_stream),
                "{mode}: write_stream repeated on connection {c}"
            );
            assert!(requests.iter().all(|r| r.answer == "ok"), "{mode}: {requests:?}");
        }
        let (created, _, finalized) = standin.calls();
        match mode {
            "default" => {
                assert_eq!((created, finalized), (0, 0));
                assert!(connections
                    .values()
                    .flatten()
                    .all(|r| r.offset.is_none() && r.write_stream.ends_with("/streams/_default")));
            }
            _ => {
                // A committed stream per table, offsets contiguous from 0, finalized at the end.
                assert_eq!((created, finalized), (2, 2));
                for requests in connections.values() {
                    let offsets: Vec<i64> = requests.iter().map(|r| r.offset.unwrap()).collect();
                    let expected: Vec<i64> = (0..APPENDS as i64).map(|i| i * 25).collect();
                    assert_eq!(offsets, expected);
                }
            }
        }
    }
}

#[tokio::test]
async fn storage_write_connection_dropped_mid_append_is_resumed_without_loss_or_duplicates() {
    let (e, _held) = hold().await;
    // Default stream: every connection closed at its 4th append, unwritten;
    // the client opens a new one and sends the append again.
    let faults = Faults {
        close_after: Some((3, false)),
        lose: None,
    };
    let standin = run_ok(e, faults, "sw_drop_default", "default").await;
    let seen = standin.seen();
    assert!(seen.iter().filter(|s| s.answer == "closed").count() >= 2, "{seen:?}");
    assert!(by_connection(&standin).len() > 2);

    // Exactly once: the 4th append of every connection is written, then the
    // connection closes without an answer. The host attaches to the stream
    // again and resends the batch at the same offsets: what landed answers
    // ALREADY_EXISTS and counts as written, the rest is appended.
    let faults = Faults {
        close_after: Some((3, true)),
        lose: None,
    };
    let standin = run_ok(e, faults, "sw_drop_exactly_once", "exactly_once").await;
    let seen = standin.seen();
    assert!(seen.iter().any(|s| s.answer == "closed"), "{seen:?}");
    assert!(seen.iter().any(|s| s.answer == "ALREADY_EXISTS"), "{seen:?}");
    let (created, got, finalized) = standin.calls();
    assert_eq!(created, 2, "the same streams are resumed, not new ones");
    assert!(got >= 2, "re-attached through GetWriteStream: {got}");
    assert_eq!(finalized, 2);
    // Every connection after a drop starts with write_stream again, and only there.
    for (c, requests) in by_connection(&standin) {
        assert!(requests[0].carried_stream, "connection {c}");
        assert!(requests[1..].iter().all(|r| !r.carried_stream), "connection {c}");
    }
}

#[tokio::test]
async fn storage_write_gap_in_a_committed_stream_stops_the_run_with_out_of_range_named() {
    let (e, _held) = hold().await;
    // The 2nd append of each stream (the end of its first batch) is
    // acknowledged but lost: the next batch's offsets are past the stream's
    // end, however often it is retried. Nothing may be skipped to get past it.
    let standin = storage_write::start(Faults {
        close_after: None,
        lose: Some(1),
    });
    let ds = dataset("sw_gap");
    let (status, stderr, result) = run_binary(pipeline(&e.rest, &standin, &ds, "write_mode: exactly_once")).await;
    assert_eq!(status.code(), Some(1), "{stderr}\n{result}");
    assert!(stderr.contains("OUT_OF_RANGE"), "{stderr}");
    assert!(stderr.contains("past the end of stream"), "{stderr}");
    assert!(stderr.contains(&format!("{PROJECT}.{ds}")), "names the table: {stderr}");
    assert!(result["records_written"].as_u64().unwrap() < TOTAL, "{result}");
    let seen = standin.seen();
    assert!(seen.iter().any(|s| s.answer == "OUT_OF_RANGE"), "{seen:?}");
}
