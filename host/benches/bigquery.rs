//! The BigQuery destinations: (a) what the host spends per row before any
//! server sees it, encoding a Bizon batch into insertAll JSON requests,
//! Storage Write Arrow requests and a Parquet file; (b) rows/s through the
//! binary into the emulators (bqemulator + gcp-storage-emulator) for each of
//! the three destinations.
//!
//!     cargo bench -p bizon-host --no-default-features --features bigquery --bench bigquery
//!
//! BENCH_ROWS (default 1,000,000) sizes (a); BENCH_RECORDS (default 200,000)
//! sizes (b), which needs the emulators (scripts/install-emulators.sh). Each figure is the median of BENCH_RUNS
//! (default 3) runs; BENCH_ONLY=bigquery,bigquery_streaming picks destinations.

// The tests' support, of which the bench uses a part.
#[allow(dead_code)]
#[path = "../../tests/e2e/support/common.rs"]
mod common;
#[allow(dead_code)]
#[path = "../../tests/e2e/support/emulators.rs"]
mod emulators;

use std::sync::Arc;
use std::time::Instant;

use bizon_host::destination::bigquery::schema::table_batch;
use bizon_host::destination::bigquery::{load, streaming, streaming_v2};
use bizon_host::destination::Batch;
use bizon_host::record::{BizonIdGenerator, RecordBuilder, SourceRecord};
use emulators::{emulators, BUCKET, PROJECT};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The dummy source's records: ~110 bytes of JSON each.
fn bizon_batch(rows: u64) -> Batch {
    let dest: Arc<str> = "bench".into();
    let mut builder = RecordBuilder::new(dest.clone());
    let mut ids = BizonIdGenerator::new();
    for i in 0..rows {
        let record = SourceRecord {
            id: i.to_string(),
            timestamp_us: 1_700_000_000_000_000 + i as i64,
            data: format!(
                r#"{{"id":{i},"name":"bizon-{i}","age":{},"active":{},"score":{}.5,"tags":["a","b"]}}"#,
                i % 97,
                i % 2 == 0,
                i / 2
            ),
            destination_id: None,
        };
        builder.append(&mut ids, 1_700_000_000_000_000, &record);
    }
    Batch {
        destination_id: dest,
        sequence: 0,
        records: builder.finish(1_700_000_000_123_456).expect("a batch"),
        source: Vec::new(),
    }
}

/// Median seconds of `runs` calls, and the size `f` reports.
fn time(runs: usize, mut f: impl FnMut() -> usize) -> (f64, usize) {
    let mut secs = Vec::new();
    let mut size = 0;
    for _ in 0..runs {
        let start = Instant::now();
        size = f();
        secs.push(start.elapsed().as_secs_f64());
    }
    secs.sort_by(f64::total_cmp);
    (secs[secs.len() / 2], size)
}

fn encoding(rows: u64, runs: usize) {
    let batch = bizon_batch(rows);
    let shaped = table_batch(&batch.records, false).expect("raw layout");
    println!("(a) encoding one {rows}-row Bizon batch, median of {runs} (no server):");
    println!("{:<44} {:>10} {:>10} {:>12}", "", "ns/row", "Mrows/s", "output MB");
    let report = |name: &str, (secs, bytes): (f64, usize)| {
        println!(
            "{name:<44} {:>10.0} {:>10.2} {:>12.1}",
            secs * 1e9 / rows as f64,
            rows as f64 / secs / 1e6,
            bytes as f64 / 1e6
        );
    };
    report(
        "insertAll JSON requests (5000 rows, 9 MB)",
        time(runs, || {
            let encoded = streaming::encode(
                &batch,
                false,
                streaming::InsertIds::BizonId,
                5000,
                streaming::REQUEST_BUDGET,
            )
            .expect("encoding");
            // The request bodies as they go on the wire.
            encoded
                .requests
                .iter()
                .map(|r| encoded.body(r, &(0..r.rows.len()).collect::<Vec<_>>()).len())
                .sum()
        }),
    );
    report(
        "Storage Write Arrow requests (5000 rows)",
        time(runs, || {
            streaming_v2::chunks(&shaped, 5000, streaming_v2::REQUEST_BUDGET)
                .expect("chunks")
                .iter()
                .map(|c| c.bytes.len())
                .sum()
        }),
    );
    report(
        "Parquet file (snappy)",
        time(runs, || load::parquet_bytes(&shaped).expect("parquet").len()),
    );
}

fn end_to_end(records: u64, runs: usize) {
    let e = emulators();
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    println!("(b) dummy -> bizon-host -> emulators, {records} records, median of {runs}:");
    println!("{:<24} {:>12} {:>10}", "destination", "records/s", "seconds");
    let destinations = [
        ("bigquery_streaming", format!("endpoint: {}\n", e.rest)),
        (
            "bigquery_streaming_v2",
            format!("endpoint: {}\nstorage_write_endpoint: {}\n", e.rest, e.grpc),
        ),
        (
            "bigquery",
            format!(
                "endpoint: {}\ngcs_endpoint: http://127.0.0.1:80\ngcs_buffer_bucket: {BUCKET}\ncreate_dataset: true\n",
                e.rest
            ),
        ),
    ];
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    for (name, extra) in destinations {
        if !only.is_empty() && !only.split(',').any(|o| o == name) {
            continue;
        }
        let mut secs = Vec::new();
        for run in 0..runs {
            let dataset = format!("bench_{name}_{run}_{}", std::process::id());
            let config: String = format!("project_id: {PROJECT}\ndataset_id: {dataset}\n{extra}")
                .lines()
                .map(|l| format!("    {l}\n"))
                .collect();
            let yaml = format!(
                "name: bench\nsource:\n  name: dummy\n  stream: bench\n  total_records: {records}\n  page_size: 1000\n  destination_ids: [events]\ndestination:\n  name: {name}\n  config:\n{config}"
            );
            let dir = tempfile::tempdir().expect("a temp dir");
            std::fs::write(dir.path().join("bench.yaml"), yaml).expect("the pipeline");
            let status = std::process::Command::new(env!("CARGO_BIN_EXE_bizon-host"))
                .args(["run", "bench.yaml", "--no-progress", "--log-level", "warn"])
                .args(["--result-json", "result.json"])
                .current_dir(dir.path())
                .status()
                .expect("running bizon-host");
            assert!(status.success(), "{name}: bizon-host failed");
            let result: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.path().join("result.json")).expect("the result"))
                    .expect("result JSON");
            assert_eq!(result["records_written"], records, "{name}: {result}");
            // What the table holds, not what the host says it sent.
            let count = rt.block_on(async {
                let body: serde_json::Value = reqwest::Client::new()
                    .post(format!("{}/bigquery/v2/projects/{PROJECT}/queries", e.rest))
                    .json(&serde_json::json!({"query": format!("SELECT COUNT(*) FROM {dataset}.events"), "useLegacySql": false}))
                    .send()
                    .await
                    .expect("a query")
                    .json()
                    .await
                    .expect("its answer");
                body["rows"][0]["f"][0]["v"].as_str().unwrap_or("?").to_string()
            });
            assert_eq!(count, records.to_string(), "{name}: rows in the table");
            secs.push(result["duration_s"].as_f64().expect("duration_s"));
        }
        secs.sort_by(f64::total_cmp);
        let median = secs[secs.len() / 2];
        println!("{name:<24} {:>12.0} {:>10.2}", records as f64 / median, median);
    }
}

fn main() {
    let runs: usize = env_or("BENCH_RUNS", 3);
    encoding(env_or("BENCH_ROWS", 1_000_000), runs);
    end_to_end(env_or("BENCH_RECORDS", 200_000), runs);
}
