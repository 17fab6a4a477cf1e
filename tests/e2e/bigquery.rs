//! The three BigQuery destinations against bqemulator and gcp-storage-emulator,
//! read back through the emulator's REST API.

#[path = "support/emulators.rs"]
mod emulators;

use std::sync::Arc;

use arrow_array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use bizon_host::destination::bigquery::{self, BigQueryStreamingV2Config};
use bizon_host::destination::{Batch, SharedDestination};
use bizon_host::record::{BizonIdGenerator, RecordBuilder, SourceRecord};
use emulators::{emulators, Emulators, PROJECT};
use serde_json::Value;

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
    serde_saphyr::from_str(&yaml).unwrap_or_else(|err| panic!("{err}\n{yaml}"))
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
    let body: Value = response.json().await.unwrap();
    body["rows"][0]["f"]
        .as_array()
        .unwrap_or_else(|| panic!("{sql}: {body}"))
        .iter()
        .map(|c| c["v"].as_str().unwrap_or("").to_string())
        .collect()
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
    let Some(e) = emulators() else { return };
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
    let Some(e) = emulators() else { return };
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
    let Some(e) = emulators() else { return };
    let ds = dataset("v2_once");
    let dest = bigquery::build_streaming_v2(&v2_config(
        e,
        &ds,
        "write_mode: exactly_once\nbq_max_rows_per_request: 400\n",
    ))
    .await
    .unwrap();
    let batches = raw_batches("events", 0, 3000, 1000);
    dest.write(&batches[0]).await.unwrap();
    // The pipeline retries a batch whose answer it did not get: same sequence.
    dest.write(&batches[0]).await.unwrap();
    dest.write(&batches[1]).await.unwrap();
    dest.write(&batches[2]).await.unwrap();
    dest.write(&batches[2]).await.unwrap();
    dest.finalize().await.unwrap();
    assert_each_once(e, &format!("{ds}.events"), "_source_record_id", 0..3000).await;
}
