//! Bizon parity of the BigQuery destinations (issue 9), against the
//! emulators through the binary: sync_mode, table_prefix,
//! enforce_partitioning, schema evolution, insertAll's Retry-After.

use std::time::Instant;

use serde_json::{json, Value};

use super::{assert_success, batch_config, dataset, dummy_pipeline, indent, query, run_binary, streaming_config};
use crate::support::emulators::{hold, Emulators, PROJECT};
use crate::support::fault::{self, Reply};

/// `dummy_pipeline` with `source.sync_mode`.
fn pipeline_in_mode(mode: &str, total: u64, destination: &str, config: &str) -> String {
    dummy_pipeline(total, 50, &["t"], destination, config)
        .replace("  stream: s\n", &format!("  stream: s\n  sync_mode: {mode}\n"))
}

fn v2_yaml(e: &Emulators, ds: &str, extra: &str) -> String {
    format!(
        "project_id: {PROJECT}\ndataset_id: {ds}\nendpoint: {}\nstorage_write_endpoint: {}\n{extra}",
        e.rest, e.grpc
    )
}

async fn status_of(e: &Emulators, ds: &str, table: &str) -> u16 {
    let url = format!("{}/bigquery/v2/projects/{PROJECT}/datasets/{ds}/tables/{table}", e.rest);
    reqwest::get(&url).await.unwrap().status().as_u16()
}

async fn rest(e: &Emulators, method: reqwest::Method, path: &str, body: Value) {
    let url = format!("{}/bigquery/v2/projects/{PROJECT}/{path}", e.rest);
    let r = reqwest::Client::new()
        .request(method, &url)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{url}: {}", r.text().await.unwrap());
}

async fn create_table(e: &Emulators, ds: &str, table: &str, fields: Value, extra: Value) {
    rest(
        e,
        reqwest::Method::POST,
        "datasets",
        json!({"datasetReference": {"projectId": PROJECT, "datasetId": ds}}),
    )
    .await;
    let mut body = json!({"tableReference": {"projectId": PROJECT, "datasetId": ds, "tableId": table},
        "schema": {"fields": fields}});
    if let Value::Object(extra) = extra {
        body.as_object_mut().unwrap().extend(extra);
    }
    rest(e, reqwest::Method::POST, &format!("datasets/{ds}/tables"), body).await;
}

async fn count(e: &Emulators, table: &str) -> String {
    query(e, &format!("SELECT COUNT(*) FROM {table}")).await[0].clone()
}

/// The three destinations; the first two stage and publish by sync_mode.
const DESTINATIONS: [&str; 3] = ["bigquery", "bigquery_streaming_v2", "bigquery_streaming"];

/// The config of `destination` writing into dataset `ds`, with what it needs.
fn config(e: &Emulators, destination: &str, ds: &str) -> String {
    match destination {
        "bigquery" => batch_config(e, ds, "buffer_size: 0\n"),
        "bigquery_streaming_v2" => v2_yaml(e, ds, "buffer_size: 0\n"),
        _ => streaming_config(&e.rest, ds, "buffer_size: 0\n"),
    }
}

#[tokio::test]
async fn full_refresh_replaces_and_incremental_appends_in_the_staging_destinations() {
    let (e, _held) = hold().await;
    for destination in &DESTINATIONS[..2] {
        let ds = dataset(&format!("modes_{destination}"));
        let config = &config(e, destination, &ds);
        let run = |mode: &'static str, total: u64| {
            let yaml = pipeline_in_mode(mode, total, destination, config);
            async move {
                let (status, stderr, result) = run_binary(yaml).await;
                assert_success(status, &stderr, &result, total);
            }
        };
        run("full_refresh", 300).await;
        run("full_refresh", 120).await;
        assert_eq!(
            count(e, &format!("{ds}.t")).await,
            "120",
            "{destination}: a second full refresh replaces"
        );
        run("incremental", 70).await;
        run("incremental", 30).await;
        assert_eq!(
            count(e, &format!("{ds}.t")).await,
            "220",
            "{destination}: incremental appends"
        );
        for staging in ["t_temp", "t_incremental"] {
            assert_eq!(
                status_of(e, &ds, staging).await,
                404,
                "{destination}: {staging} left behind"
            );
        }
        run("stream", 10).await;
        assert_eq!(
            count(e, &format!("{ds}.t")).await,
            "230",
            "{destination}: stream writes the table"
        );
    }
}

#[tokio::test]
async fn table_prefix_applies_to_generated_names_unless_a_legacy_table_exists() {
    let (e, _held) = hold().await;
    for destination in DESTINATIONS {
        let ds = dataset(&format!("prefix_{destination}"));
        let config = &config(e, destination, &ds);
        // No destination_id anywhere: Bizon's generated name `<source>_<stream>`.
        let generated = |extra: &str| {
            format!(
                "name: p\nsource:\n  name: dummy\n  stream: orders\n  total_records: 5\ndestination:\n  name: {destination}\n  config:\n{}",
                indent(&format!("{config}{extra}"))
            )
        };
        let (status, stderr, result) = run_binary(generated("")).await;
        assert_success(status, &stderr, &result, 5);
        assert_eq!(
            count(e, &format!("{ds}._bizon_dummy_orders")).await,
            "5",
            "{destination}"
        );
        assert_eq!(status_of(e, &ds, "dummy_orders").await, 404, "{destination}");

        let (status, stderr, result) = run_binary(generated("table_prefix: ''\n")).await;
        assert_success(status, &stderr, &result, 5);
        assert_eq!(
            count(e, &format!("{ds}.dummy_orders")).await,
            "5",
            "{destination}: '' disables it"
        );

        // dummy_orders now exists: a legacy table is reused even with the prefix on.
        let (status, stderr, result) = run_binary(generated("table_prefix: px_\n")).await;
        assert_success(status, &stderr, &result, 5);
        assert_eq!(status_of(e, &ds, "px_dummy_orders").await, 404, "{destination}");

        // An explicit destination_id is never prefixed.
        let (status, stderr, result) = run_binary(dummy_pipeline(5, 5, &["mine"], destination, config)).await;
        assert_success(status, &stderr, &result, 5);
        assert_eq!(count(e, &format!("{ds}.mine")).await, "5", "{destination}");
    }
}

const EVOLVING: &str = "
unnest: true
time_partitioning: null
destination_id: t
record_schemas:
  - destination_id: t
    record_schema:
      - {name: id, type: INTEGER, mode: NULLABLE}
      - {name: name, type: STRING, mode: NULLABLE}
";

#[tokio::test]
async fn an_existing_table_gains_columns_is_relaxed_or_is_refused_naming_the_change() {
    let (e, _held) = hold().await;
    for destination in DESTINATIONS {
        let ds = dataset(&format!("evolve_{destination}"));
        let config = config(e, destination, &ds);
        // An older table: `id` REQUIRED, no `name`. (No column of its own: a
        // full refresh through a copy job replaces the schema, and bqemulator
        // copies by position.)
        create_table(
            e,
            &ds,
            "t",
            json!([{"name": "id", "type": "INTEGER", "mode": "REQUIRED"}]),
            Value::Null,
        )
        .await;
        let yaml = dummy_pipeline(40, 40, &["t"], destination, &format!("{config}{EVOLVING}"));
        let (status, stderr, result) = run_binary(yaml).await;
        assert_success(status, &stderr, &result, 40);
        let fields = super::table(e, &ds, "t").await["schema"]["fields"].clone();
        let modes: Vec<(String, String)> = fields
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["name"].as_str().unwrap().into(),
                    f["mode"].as_str().unwrap_or("NULLABLE").into(),
                )
            })
            .collect();
        assert_eq!(
            modes,
            [("id", "NULLABLE"), ("name", "NULLABLE")].map(|(a, b)| (a.to_string(), b.to_string())),
            "{destination}"
        );
        let named = query(e, &format!("SELECT COUNT(*), COUNTIF(name = 'bizon-7') FROM {ds}.t")).await;
        assert_eq!(named, ["40", "1"], "{destination}");

        // A type BigQuery cannot change: refused before any row, naming all of it.
        let bad = dataset(&format!("evolve_bad_{destination}"));
        let config = self::config(e, destination, &bad);
        create_table(e, &bad, "t", json!([{"name": "id", "type": "STRING"}]), Value::Null).await;
        let yaml = dummy_pipeline(5, 5, &["t"], destination, &format!("{config}{EVOLVING}"));
        let (status, stderr, result) = run_binary(yaml).await;
        assert!(!status.success(), "{destination}: {result}");
        let error = result["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(&format!(
                "column `id` of table {PROJECT}.{bad}.t is STRING in the table but INTEGER"
            )),
            "{destination}: {error}\n{stderr}"
        );
    }
}

#[tokio::test]
async fn enforce_partitioning_rebuilds_a_table_on_a_full_refresh_only_when_asked() {
    let (e, _held) = hold().await;
    for destination in &DESTINATIONS[..2] {
        for enforce in [false, true] {
            let ds = dataset(&format!("enforce_{destination}_{enforce}"));
            let config = config(e, destination, &ds);
            // A legacy, unpartitioned table with Bizon's raw columns.
            let data = if *destination == "bigquery" { "STRING" } else { "JSON" };
            let fields = json!([
                {"name": "_source_record_id", "type": "STRING"}, {"name": "_source_timestamp", "type": "TIMESTAMP"},
                {"name": "_source_data", "type": data}, {"name": "_bizon_extracted_at", "type": "TIMESTAMP"},
                {"name": "_bizon_loaded_at", "type": "TIMESTAMP"}, {"name": "_bizon_id", "type": "STRING"}]);
            create_table(e, &ds, "t", fields, Value::Null).await;
            let yaml = pipeline_in_mode(
                "full_refresh",
                20,
                destination,
                &format!("{config}enforce_partitioning: {enforce}\n"),
            );
            let (status, stderr, result) = run_binary(yaml).await;
            assert_success(status, &stderr, &result, 20);
            let partitioning = super::table(e, &ds, "t").await["timePartitioning"].clone();
            if enforce {
                assert_eq!(partitioning["field"], "_bizon_loaded_at", "{destination}");
            } else {
                assert!(partitioning.is_null(), "{destination}: {partitioning}");
                assert!(stderr.contains("partitioning mismatch"), "{destination}: {stderr}");
            }
            assert_eq!(count(e, &format!("{ds}.t")).await, "20", "{destination}");
        }
    }
}

#[tokio::test]
async fn insert_all_waits_as_long_as_retry_after_says() {
    let (e, _held) = hold().await;
    let ds = dataset("retry_after");
    let server = fault::start(
        &e.rest,
        Box::new(|n, _| {
            if n == 0 {
                Reply::Headers(
                    429,
                    vec![("retry-after".into(), "2".into())],
                    r#"{"error":{"code":429}}"#.into(),
                )
            } else {
                Reply::Forward
            }
        }),
    );
    // The retry policy alone would wait at most 50 ms.
    let config = streaming_config(&server.url, &ds, "max_concurrent_threads: 1\n");
    let started = Instant::now();
    let (status, stderr, result) = run_binary(dummy_pipeline(10, 10, &["t"], "bigquery_streaming", &config)).await;
    assert_success(status, &stderr, &result, 10);
    let seen = server.seen();
    assert_eq!(seen.iter().map(|s| s.status).collect::<Vec<_>>(), [429, 200]);
    let gap = seen[1].at.duration_since(seen[0].at);
    assert!(
        gap.as_secs_f64() >= 2.0,
        "resent after {gap:?}, before Retry-After's 2 s"
    );
    assert!(gap.as_secs_f64() < 10.0, "resent after {gap:?}");
    assert!(started.elapsed().as_secs_f64() >= 2.0);
    assert_eq!(count(e, &format!("{ds}.t")).await, "10");
}
