//! The three BigQuery destinations against bqemulator and gcp-storage-emulator,
//! read back through the emulator's REST API.

mod parity;
mod storage_write;

use std::sync::Arc;

use arrow_array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use bizon_host::destination::bigquery::{self, BigQueryConfig, BigQueryStreamingV2Config};
use bizon_host::destination::{Batch, SharedDestination};
use bizon_host::record::{BizonIdGenerator, RecordBuilder, SourceRecord};
use serde_json::Value;

use crate::support::emulators::{hold, Emulators, BUCKET, PROJECT};
use crate::support::fault::{self, Reply};
use crate::support::{bizon_host, text};

/// A unique dataset per test: the tests share one emulator.
fn dataset(name: &str) -> String {
    format!("{name}_{}", std::process::id())
}

/// `n` Bizon records for `destination_id`, ids `from..from + n`, as batches of `per_batch`.
fn raw_batches(destination_id: &str, from: u64, n: u64, per_batch: u64) -> Vec<Batch> {
    let dest: Arc<str> = destination_id.into();
    let mut ids = BizonIdGenerator::new();
    let mut out = Vec::new();
    let mut i = from;
    while i < from + n {
        let mut builder = RecordBuilder::new(dest.clone());
        let end = (i + per_batch).min(from + n);
        for k in i..end {
            let record = SourceRecord {
                id: k.to_string(),
                timestamp_us: 1_700_000_000_000_000 + k as i64,
                data: format!(r#"{{"id":{k},"name":"bizon-{k}"}}"#),
                destination_id: None,
            };
            builder.append(&mut ids, 1_700_000_000_000_000, &record);
        }
        out.push(Batch {
            destination_id: dest.clone(),
            sequence: out.len() as u64,
            records: builder.finish(1_700_000_000_123_456).unwrap(),
            source: Vec::new(),
        });
        i = end;
    }
    out
}

async fn get_json(url: &str) -> Value {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert!(status.is_success(), "GET {url}: {status} {body}");
    body
}

async fn table(e: &Emulators, dataset: &str, table: &str) -> Value {
    get_json(&format!(
        "{}/bigquery/v2/projects/{PROJECT}/datasets/{dataset}/tables/{table}",
        e.rest
    ))
    .await
}

/// Every row of a table as column name -> value.
async fn rows(e: &Emulators, dataset: &str, table_id: &str) -> Vec<serde_json::Map<String, Value>> {
    let meta = table(e, dataset, table_id).await;
    let names: Vec<String> = meta["schema"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect();
    let mut out = Vec::new();
    // startIndex, not pageToken: bqemulator 1.4 answers 500 to its own page tokens.
    loop {
        let url = format!(
            "{}/bigquery/v2/projects/{PROJECT}/datasets/{dataset}/tables/{table_id}/data?maxResults=50000&startIndex={}",
            e.rest,
            out.len()
        );
        let page = get_json(&url).await;
        for row in page["rows"].as_array().into_iter().flatten() {
            let cells = row["f"].as_array().unwrap();
            out.push(
                names
                    .iter()
                    .cloned()
                    .zip(cells.iter().map(|c| c["v"].clone()))
                    .collect(),
            );
        }
        let total: usize = page["totalRows"].as_str().and_then(|t| t.parse().ok()).unwrap_or(0);
        if out.len() >= total || page["rows"].as_array().is_none_or(|r| r.is_empty()) {
            return out;
        }
    }
}

async fn write_all(dest: &SharedDestination, batches: &[Batch]) -> u64 {
    let mut written = 0;
    for b in batches {
        written += dest
            .write(b)
            .await
            .unwrap_or_else(|e| panic!("batch {}: {e}", b.sequence));
    }
    written
}

fn v2_config(e: &Emulators, dataset: &str, extra: &str) -> BigQueryStreamingV2Config {
    let yaml = format!(
        "project_id: {PROJECT}\ndataset_id: {dataset}\nendpoint: {}\nstorage_write_endpoint: {}\n{extra}",
        e.rest, e.grpc
    );
    let mut config: BigQueryStreamingV2Config =
        serde_saphyr::from_str(&yaml).unwrap_or_else(|err| panic!("{err}\n{yaml}"));
    // These tests drive the Storage Write paths in-process: rows straight into
    // the table. Staging and publishing per sync_mode go through the binary
    // (bigquery_parity.rs); in-process, bqemulator 1.4 can stall a publish
    // query behind another test's open AppendRows connection.
    config.options.sync_mode = bizon_host::config::SyncMode::Stream;
    config
}

/// The first row of the answer `body` to the query `sql`, as strings.
pub fn first_row(sql: &str, body: &Value) -> Vec<String> {
    body["rows"][0]["f"]
        .as_array()
        .unwrap_or_else(|| panic!("{sql}: {body}"))
        .iter()
        .map(|c| c["v"].as_str().unwrap_or("").to_string())
        .collect()
}

/// One row of a query's answer as strings.
async fn query(e: &Emulators, sql: &str) -> Vec<String> {
    let url = format!("{}/bigquery/v2/projects/{PROJECT}/queries", e.rest);
    let response = reqwest::Client::new()
        .post(&url)
        .json(&serde_json::json!({"query": sql, "useLegacySql": false}))
        .send()
        .await
        .unwrap();
    first_row(sql, &response.json().await.unwrap())
}

/// Batches of `per_batch` records 0.. (three of them) into table `events`,
/// the first and the last written twice with the same sequence, as the
/// pipeline retries a batch whose answer it did not get: each record lands once.
async fn write_three_batches_retrying_two(e: &Emulators, dest: &SharedDestination, ds: &str, per_batch: u64) {
    let batches = raw_batches("events", 0, 3 * per_batch, per_batch);
    for b in [0, 0, 1, 2, 2] {
        dest.write(&batches[b]).await.unwrap();
    }
    dest.finalize().await.unwrap();
    assert_each_once(e, &format!("{ds}.events"), "_source_record_id", 0..3 * per_batch).await;
}

/// Every id in `range` present exactly once: as many rows and distinct ids
/// as the range holds, all inside it. (A query: the emulator's tabledata
/// paging repeats and drops rows.)
async fn assert_each_once(e: &Emulators, table: &str, column: &str, range: std::ops::Range<u64>) {
    let sql = format!(
        "SELECT COUNT(*), COUNT(DISTINCT {column}), MIN(CAST({column} AS INT64)), MAX(CAST({column} AS INT64)) FROM {table}"
    );
    let n = range.end - range.start;
    let expected = vec![
        n.to_string(),
        n.to_string(),
        range.start.to_string(),
        (range.end - 1).to_string(),
    ];
    assert_eq!(
        query(e, &sql).await,
        expected,
        "count, distinct, min, max of {column} in {table}"
    );
}

#[tokio::test]
async fn streaming_v2_raw_layout_routes_destination_ids_to_tables() {
    let (e, _held) = hold().await;
    let ds = dataset("v2_raw");
    // Small requests so each batch is split into several appends.
    let config = v2_config(e, &ds, "bq_max_rows_per_request: 300\nmax_concurrent_threads: 2\n");
    let dest = bigquery::build_streaming_v2(&config).await.unwrap();
    dest.check_connection().await.unwrap();
    let a = raw_batches("orders", 0, 2500, 1000);
    let b = raw_batches(&format!("{PROJECT}.{ds}.users"), 10_000, 1200, 1000);
    assert_eq!(write_all(&dest, &a).await, 2500);
    assert_eq!(write_all(&dest, &b).await, 1200);
    dest.finalize().await.unwrap();

    assert_each_once(e, &format!("{ds}.orders"), "_source_record_id", 0..2500).await;
    assert_each_once(e, &format!("{ds}.users"), "_source_record_id", 10_000..11_200).await;
    let orders = rows(e, &ds, "orders").await;
    let first = orders.iter().find(|r| r["_source_record_id"] == "7").unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(first["_source_data"].as_str().unwrap()).unwrap()["name"],
        "bizon-7"
    );
    // Microseconds survive (Bizon's v2 sends "%Y-%m-%d %H:%M:%S" strings and loses them).
    assert_eq!(first["_source_timestamp"].as_str().unwrap(), "1700000000000007");

    let meta = table(e, &ds, "orders").await;
    let types: Vec<(String, String)> = meta["schema"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["name"].as_str().unwrap().into(), f["type"].as_str().unwrap().into()))
        .collect();
    assert!(types.contains(&("_source_data".into(), "JSON".into())), "{types:?}");
    assert_eq!(meta["timePartitioning"]["field"], "_bizon_loaded_at");
}

fn typed_batch(destination_id: &str, from: i64, n: i64) -> Batch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("score", DataType::Float64, true),
        Field::new("active", DataType::Boolean, true),
        Field::new(
            "seen_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
    ]));
    let ids: Vec<i64> = (from..from + n).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids.clone())),
        Arc::new(StringArray::from_iter_values(ids.iter().map(|i| format!("n{i}")))),
        Arc::new(Float64Array::from_iter_values(ids.iter().map(|i| *i as f64 + 0.5))),
        Arc::new(BooleanArray::from_iter(ids.iter().map(|i| Some(i % 2 == 0)))),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(ids.iter().map(|i| 1_700_000_000_000_001 + i))
                .with_timezone("UTC"),
        ),
    ];
    Batch {
        destination_id: destination_id.into(),
        sequence: 0,
        records: RecordBatch::try_new(schema, columns).unwrap(),
        source: Vec::new(),
    }
}

const RECORD_SCHEMA: &str = "
unnest: true
time_partitioning: {type: DAY, field: seen_at}
record_schemas:
  - destination_id: typed
    clustering_keys: [id]
    record_schema:
      - {name: id, type: INTEGER, mode: REQUIRED, description: the id}
      - {name: name, type: STRING, mode: NULLABLE}
      - {name: score, type: FLOAT64, mode: NULLABLE}
      - {name: active, type: BOOLEAN, mode: NULLABLE}
      - {name: seen_at, type: TIMESTAMP, mode: NULLABLE, default_value_expression: CURRENT_TIMESTAMP()}
";

async fn check_typed_table(e: &Emulators, ds: &str, n: i64) {
    assert_each_once(e, &format!("{ds}.typed"), "id", 0..n as u64).await;
    let rows = rows(e, ds, "typed").await;
    let r = rows.iter().find(|r| r["id"] == "3").unwrap();
    assert_eq!(r["name"], "n3");
    assert_eq!(r["score"].as_str().unwrap().parse::<f64>().unwrap(), 3.5);
    assert_eq!(r["active"], "false");
    assert_eq!(r["seen_at"], "1700000000000004");
    let meta = table(e, ds, "typed").await;
    let fields = meta["schema"]["fields"].as_array().unwrap();
    assert_eq!(fields.len(), 5, "the table holds only the record_schema columns");
    assert_eq!(fields[0]["mode"], "REQUIRED");
    assert_eq!(fields[0]["description"], "the id");
    assert_eq!(meta["timePartitioning"]["field"], "seen_at");
    assert_eq!(meta["clustering"]["fields"][0], "id");
}

#[tokio::test]
async fn streaming_v2_unnest_writes_typed_columns() {
    let (e, _held) = hold().await;
    let ds = dataset("v2_unnest");
    let dest = bigquery::build_streaming_v2(&v2_config(e, &ds, RECORD_SCHEMA))
        .await
        .unwrap();
    assert_eq!(dest.write(&typed_batch("typed", 0, 800)).await.unwrap(), 800);
    dest.finalize().await.unwrap();
    check_typed_table(e, &ds, 800).await;
}

#[tokio::test]
async fn streaming_v2_exactly_once_does_not_duplicate_a_retried_batch() {
    let (e, _held) = hold().await;
    let ds = dataset("v2_once");
    let dest = bigquery::build_streaming_v2(&v2_config(
        e,
        &ds,
        "write_mode: exactly_once\nbq_max_rows_per_request: 400\n",
    ))
    .await
    .unwrap();
    write_three_batches_retrying_two(e, &dest, &ds, 1000).await;
}

// ---------------------------------------------------------------------------
// bigquery_streaming and bigquery through the binary, on Bizon-style YAML.

/// `bizon-host run` on `yaml` in a fresh directory: exit status, stderr and the result JSON.
async fn run_binary(yaml: String) -> (std::process::ExitStatus, String, Value) {
    tokio::task::spawn_blocking(move || {
        let run = crate::support::run(&yaml);
        (run.output.status, run.stderr(), run.result())
    })
    .await
    .unwrap()
}

/// `bizon-host check` on `yaml`: exit status and output.
async fn check_binary(yaml: String) -> (i32, String) {
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pipeline.yaml"), &yaml).unwrap();
        let output = bizon_host()
            .args(["check", "pipeline.yaml"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        (output.status.code().unwrap_or(-1), text(&output))
    })
    .await
    .unwrap()
}

/// `dummy` records (`{"id": i, "name": "bizon-i", ...}`, ids 0..total) round-robin over `ids`.
fn dummy_pipeline(total: u64, page: u64, ids: &[&str], destination: &str, config: &str) -> String {
    format!(
        "name: bq\nsource:\n  name: dummy\n  stream: s\n  total_records: {total}\n  page_size: {page}\n  destination_ids: [{}]\ndestination:\n  name: {destination}\n  config:\n{}",
        ids.join(", "),
        indent(config)
    )
}

fn indent(config: &str) -> String {
    config
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("    {l}\n"))
        .collect()
}

fn streaming_config(endpoint: &str, dataset: &str, extra: &str) -> String {
    format!(
        "project_id: {PROJECT}\ndataset_id: {dataset}\nendpoint: {endpoint}\nretry: {{initial_backoff_ms: 10, max_backoff_ms: 50}}\n{extra}"
    )
}

fn batch_config(e: &Emulators, dataset: &str, extra: &str) -> String {
    format!(
        "project_id: {PROJECT}\ndataset_id: {dataset}\ncreate_dataset: true\nendpoint: {}\ngcs_endpoint: http://127.0.0.1:80\ngcs_buffer_bucket: {BUCKET}\n{extra}",
        e.rest
    )
}

fn assert_success(status: std::process::ExitStatus, stderr: &str, result: &Value, written: u64) {
    assert!(status.success(), "bizon-host failed: {stderr}\n{result}");
    assert_eq!(result["status"], "success", "{result}");
    assert_eq!(result["records_written"], written, "{result}");
}

/// The dummy ids with `id % of == rest`, below `total`, each present exactly
/// once in `table` (by `_source_record_id`).
async fn assert_dummy_ids(e: &Emulators, table: &str, total: u64, of: u64, rest: u64) {
    let n = (0..total).filter(|i| i % of == rest).count() as u64;
    let max = (0..total).rev().find(|i| i % of == rest).unwrap();
    let sql = format!(
        "SELECT COUNT(*), COUNT(DISTINCT _source_record_id), MIN(CAST(_source_record_id AS INT64)), \
         MAX(CAST(_source_record_id AS INT64)), COUNTIF(MOD(CAST(_source_record_id AS INT64), {of}) != {rest}) FROM {table}"
    );
    let expected = vec![
        n.to_string(),
        n.to_string(),
        rest.to_string(),
        max.to_string(),
        "0".into(),
    ];
    assert_eq!(
        query(e, &sql).await,
        expected,
        "count, distinct, min, max, strays in {table}"
    );
}

async fn column_types(e: &Emulators, ds: &str, t: &str) -> Vec<(String, String)> {
    table(e, ds, t).await["schema"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["name"].as_str().unwrap().into(), f["type"].as_str().unwrap().into()))
        .collect()
}

#[tokio::test]
async fn streaming_insert_all_writes_each_record_once_into_each_destination_table() {
    let (e, _held) = hold().await;
    let ds = dataset("ia_raw");
    let config = streaming_config(
        &e.rest,
        &ds,
        "bq_max_rows_per_request: 700\nmax_concurrent_threads: 3\n",
    );
    let (status, stderr, result) = run_binary(dummy_pipeline(
        5000,
        500,
        &["orders", "users"],
        "bigquery_streaming",
        &config,
    ))
    .await;
    assert_success(status, &stderr, &result, 5000);
    assert_eq!(result["by_destination_id"]["orders"], 2500);
    assert_dummy_ids(e, &format!("{ds}.orders"), 5000, 2, 0).await;
    assert_dummy_ids(e, &format!("{ds}.users"), 5000, 2, 1).await;
    // _source_data is a JSON column, holding the record.
    assert!(column_types(e, &ds, "orders")
        .await
        .contains(&("_source_data".into(), "JSON".into())));
    let sql = format!("SELECT JSON_VALUE(_source_data, '$.name') FROM {ds}.users WHERE _source_record_id = '7'");
    assert_eq!(query(e, &sql).await, vec!["bizon-7".to_string()]);
}

/// `n` JSON lines for the `typed` record_schema: seen_at carries microseconds.
fn typed_jsonl(n: i64) -> tempfile::NamedTempFile {
    use std::io::Write;
    let mut f = tempfile::NamedTempFile::new().unwrap();
    for i in 0..n {
        writeln!(
            f,
            r#"{{"id":{i},"name":"n{i}","score":{},"active":{},"seen_at":"2023-11-14T22:13:20.{:06}Z"}}"#,
            i as f64 + 0.5,
            i % 2 == 0,
            1 + i
        )
        .unwrap();
    }
    f
}

fn typed_pipeline(file: &std::path::Path, destination: &str, config: &str) -> String {
    format!(
        "name: typed\nsource:\n  name: jsonl\n  path: {}\n  id_field: id\n  page_size: 100\ndestination:\n  name: {destination}\n  config:\n{}{}",
        file.display(),
        indent(config),
        indent(&format!("destination_id: typed\n{RECORD_SCHEMA}"))
    )
}

#[tokio::test]
async fn streaming_insert_all_unnest_writes_typed_columns() {
    let (e, _held) = hold().await;
    let ds = dataset("ia_unnest");
    let file = typed_jsonl(450);
    let config = streaming_config(&e.rest, &ds, "bq_max_rows_per_request: 100\nbuffer_size: 0\n");
    let (status, stderr, result) = run_binary(typed_pipeline(file.path(), "bigquery_streaming", &config)).await;
    assert_success(status, &stderr, &result, 450);
    check_typed_table(e, &ds, 450).await;
}

#[tokio::test]
async fn batch_loads_each_record_once_and_never_publishes_a_crashed_runs_temp_table() {
    let (e, _held) = hold().await;
    let ds = dataset("batch_raw");
    // A crashed run left orders_temp behind with rows of its own.
    let base = format!("{}/bigquery/v2/projects/{PROJECT}", e.rest);
    let client = reqwest::Client::new();
    let post = |url: String, body: Value| {
        let client = client.clone();
        async move {
            let r = client.post(&url).json(&body).send().await.unwrap();
            assert!(r.status().is_success(), "{url}: {}", r.text().await.unwrap());
        }
    };
    post(
        format!("{base}/datasets"),
        serde_json::json!({"datasetReference": {"projectId": PROJECT, "datasetId": ds}}),
    )
    .await;
    post(
        format!("{base}/datasets/{ds}/tables"),
        serde_json::json!({"tableReference": {"projectId": PROJECT, "datasetId": ds, "tableId": "orders_temp"},
            "schema": {"fields": [{"name": "_source_record_id", "type": "STRING"}, {"name": "_source_data", "type": "STRING"}]}}),
    )
    .await;
    let crashed: Vec<Value> = (0..5)
        .map(|k| serde_json::json!({"json": {"_source_record_id": format!("crashed-{k}"), "_source_data": "{}"}}))
        .collect();
    post(
        format!("{base}/datasets/{ds}/tables/orders_temp/insertAll"),
        serde_json::json!({"rows": crashed}),
    )
    .await;

    let config = batch_config(e, &ds, "buffer_size: 0\n");
    let (status, stderr, result) =
        run_binary(dummy_pipeline(4000, 500, &["orders", "users"], "bigquery", &config)).await;
    assert_success(status, &stderr, &result, 4000);
    let strays = format!("SELECT COUNTIF(STARTS_WITH(_source_record_id, 'crashed')) FROM {ds}.orders");
    assert_eq!(
        query(e, &strays).await,
        vec!["0".to_string()],
        "a crashed run's rows were published"
    );
    assert_dummy_ids(e, &format!("{ds}.orders"), 4000, 2, 0).await;
    assert_dummy_ids(e, &format!("{ds}.users"), 4000, 2, 1).await;
    // _source_data is STRING in the batch destination (Bizon), and the temp tables are gone.
    assert!(column_types(e, &ds, "users")
        .await
        .contains(&("_source_data".into(), "STRING".into())));
    for temp in ["orders_temp", "users_temp"] {
        let url = format!("{base}/datasets/{ds}/tables/{temp}");
        assert_eq!(
            reqwest::get(&url).await.unwrap().status().as_u16(),
            404,
            "{temp} left behind"
        );
    }
    // The buffer files were removed after their loads.
    let objects = get_json(&format!("http://127.0.0.1:80/storage/v1/b/{BUCKET}/o?prefix=bizon/")).await;
    let left: Vec<&str> = objects["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["name"].as_str())
        .filter(|n| n.contains(&ds))
        .collect();
    assert!(left.is_empty(), "buffer files left: {left:?}");
}

#[tokio::test]
async fn batch_async_load_with_unnest_writes_typed_columns() {
    let (e, _held) = hold().await;
    let ds = dataset("batch_unnest");
    let file = typed_jsonl(1000);
    // 10 files, 3 per job, at most 2 jobs in flight: 4 load jobs, the last at finalize.
    let config = batch_config(
        e,
        &ds,
        "buffer_size: 0\nasync_load: true\nload_files_per_job: 3\nload_max_in_flight_jobs: 2\n",
    );
    let (status, stderr, result) = run_binary(typed_pipeline(file.path(), "bigquery", &config)).await;
    assert_success(status, &stderr, &result, 1000);
    check_typed_table(e, &ds, 1000).await;
}

fn fault_pipeline(server: &fault::FaultServer, ds: &str, total: u64) -> String {
    let config = streaming_config(
        &server.url,
        ds,
        "bq_max_rows_per_request: 50\nmax_concurrent_threads: 1\n",
    );
    dummy_pipeline(total, total, &["faults"], "bigquery_streaming", &config)
}

#[tokio::test]
async fn streaming_insert_all_retries_503_and_429_and_writes_each_row_once() {
    let (e, _held) = hold().await;
    for (code, ds) in [(503u16, dataset("ia_503")), (429, dataset("ia_429"))] {
        let server = fault::start(
            &e.rest,
            Box::new(move |n, _| {
                if n < 2 {
                    Reply::Status(code, format!(r#"{{"error":{{"code":{code},"message":"try later"}}}}"#))
                } else {
                    Reply::Forward
                }
            }),
        );
        let (status, stderr, result) = run_binary(fault_pipeline(&server, &ds, 200)).await;
        assert_success(status, &stderr, &result, 200);
        assert_dummy_ids(e, &format!("{ds}.faults"), 200, 1, 0).await;
        let seen = server.seen();
        // 4 requests of 50 rows; the first two refused, and the retry of
        // the batch sends only those two again: same rows, same insertIds.
        assert_eq!(
            seen.iter().map(|s| s.status).collect::<Vec<_>>(),
            vec![code, code, 200, 200, 200, 200]
        );
        assert_eq!(
            (&seen[4].insert_ids, &seen[5].insert_ids),
            (&seen[0].insert_ids, &seen[1].insert_ids),
            "a resent request keeps its insertIds"
        );
    }
}

#[tokio::test]
async fn streaming_insert_all_reports_invalid_rows_and_resends_stopped_ones() {
    let (e, _held) = hold().await;
    let ds = dataset("ia_rows");
    // The first request: rows 3 and 7 invalid, every other row `stopped` because of them.
    let server = fault::start(
        &e.rest,
        Box::new(|n, body| {
            if n > 0 {
                return Reply::Forward;
            }
            let rows = body["rows"].as_array().map_or(0, |r| r.len());
            let errors: Vec<Value> = (0..rows)
                .map(|i| {
                    let (reason, location) = if i == 3 || i == 7 { ("invalid", "name") } else { ("stopped", "") };
                    serde_json::json!({"index": i, "errors": [{"reason": reason, "location": location, "message": format!("{reason} row")}]})
                })
                .collect();
            Reply::Json(serde_json::json!({"kind": "bigquery#tableDataInsertAllResponse", "insertErrors": errors}))
        }),
    );
    let (status, stderr, result) = run_binary(fault_pipeline(&server, &ds, 40)).await;
    assert!(!status.success(), "invalid rows must fail the run: {result}");
    let error = result["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("2 row(s) rejected")
            && error.contains("source_record_id 3")
            && error.contains("invalid at `name`"),
        "{error}\n{stderr}"
    );
    // The 38 stopped rows were sent again, on their own, and written once.
    let seen = server.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1].insert_ids.len(), 38);
    assert!(!seen[1].insert_ids.contains(&seen[0].insert_ids[3]));
    let sql = format!(
        "SELECT COUNT(*), COUNT(DISTINCT _source_record_id), COUNTIF(_source_record_id IN ('3', '7')) FROM {ds}.faults"
    );
    assert_eq!(query(e, &sql).await, vec!["38", "38", "0"]);
}

#[tokio::test]
async fn check_exits_0_against_the_emulator_and_2_with_a_clear_message_when_wrong() {
    let (e, _held) = hold().await;
    let ds = dataset("check");
    let streaming = dummy_pipeline(1, 1, &["t"], "bigquery_streaming", &streaming_config(&e.rest, &ds, ""));
    let (code, text) = check_binary(streaming).await;
    assert_eq!(code, 0, "{text}");
    let batch = dummy_pipeline(1, 1, &["t"], "bigquery", &batch_config(e, &ds, ""));
    let (code, text) = check_binary(batch).await;
    assert_eq!(code, 0, "{text}");

    // The batch destination does not create a dataset unless told to.
    let missing = batch_config(e, "no_such_dataset", "").replace("create_dataset: true", "create_dataset: false");
    let (code, text) = check_binary(dummy_pipeline(1, 1, &["t"], "bigquery", &missing)).await;
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("no_such_dataset does not exist"), "{text}");

    let no_bucket = batch_config(e, &ds, "").replace(BUCKET, "no-such-bucket");
    let (code, text) = check_binary(dummy_pipeline(1, 1, &["t"], "bigquery", &no_bucket)).await;
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("no-such-bucket") && text.contains("does not exist"),
        "{text}"
    );

    // Nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nowhere = streaming_config(&format!("http://127.0.0.1:{port}"), &ds, "");
    let (code, text) = check_binary(dummy_pipeline(1, 1, &["t"], "bigquery_streaming", &nowhere)).await;
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("cannot connect") && text.contains(&format!("127.0.0.1:{port}")),
        "{text}"
    );
}

#[tokio::test]
async fn batch_retried_batch_whose_load_landed_is_not_loaded_twice() {
    let (e, _held) = hold().await;
    for (name, extra) in [
        ("batch_retry", ""),
        ("batch_retry_async", "async_load: true\nload_files_per_job: 1\n"),
    ] {
        let ds = dataset(name);
        let config: BigQueryConfig = serde_saphyr::from_str(&batch_config(e, &ds, extra)).unwrap();
        let dest = bigquery::build_batch(&config).await.unwrap();
        dest.check_connection().await.unwrap();
        write_three_batches_retrying_two(e, &dest, &ds, 500).await;
    }
}

#[tokio::test]
async fn batch_two_destination_ids_naming_one_table_share_its_temp_table() {
    let (e, _held) = hold().await;
    let ds = dataset("batch_shared");
    let config: BigQueryConfig = serde_saphyr::from_str(&batch_config(e, &ds, "")).unwrap();
    let dest = bigquery::build_batch(&config).await.unwrap();
    let a = raw_batches("shared", 0, 600, 300);
    let b = raw_batches(&format!("{ds}.shared"), 600, 600, 300);
    for (x, y) in a.iter().zip(&b) {
        dest.write(x).await.unwrap();
        dest.write(y).await.unwrap();
    }
    dest.finalize().await.unwrap();
    assert_each_once(e, &format!("{ds}.shared"), "_source_record_id", 0..1200).await;
}
