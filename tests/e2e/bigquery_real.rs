//! The three BigQuery destinations against real BigQuery, for whoever has
//! access. `#[ignore]`d: they need a Google Cloud project and credentials,
//! which CI does not have. Run them with
//!
//!     BIZON_TEST_BQ_PROJECT=my-project BIZON_TEST_GCS_BUCKET=my-bucket \
//!         cargo test --release --test e2e bigquery_real:: -- --ignored --nocapture
//!
//! - `BIZON_TEST_BQ_PROJECT`: a project where the caller may create datasets;
//! - application default credentials (`gcloud auth application-default login`,
//!   or `GOOGLE_APPLICATION_CREDENTIALS` naming a service account key);
//! - `BIZON_TEST_GCS_BUCKET` (the batch destination only): a bucket for its
//!   load files.
//!
//! A test run without what it needs fails saying what to set. Each run works
//! in a fresh dataset `bizon_host_test_<random>` and deletes it. (docs/bigquery.md,
//! "Against real BigQuery", says the same.)

use serde_json::Value;

use super::bigquery::first_row;

const API: &str = "https://bigquery.googleapis.com/bigquery/v2";

/// The variable `name`; fails the test, saying what it is for, when unset.
fn required(name: &str, what: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "set {name} ({what}) and application default credentials to run this test; see tests/e2e/bigquery_real.rs"
        )
    })
}

fn project() -> String {
    required(
        "BIZON_TEST_BQ_PROJECT",
        "a Google Cloud project where the caller may create datasets",
    )
}

async fn token() -> String {
    let credentials = google_cloud_auth::credentials::Builder::default()
        .with_scopes(["https://www.googleapis.com/auth/bigquery"])
        .build_access_token_credentials()
        .unwrap_or_else(|e| {
            panic!(
                "no application default credentials ({e}): run `gcloud auth application-default login` \
                 or set GOOGLE_APPLICATION_CREDENTIALS"
            )
        });
    credentials.access_token().await.expect("an access token").token
}

/// The first row of a query's answer, as strings.
async fn query(project: &str, sql: &str) -> Vec<String> {
    let body: Value = reqwest::Client::new()
        .post(format!("{API}/projects/{project}/queries"))
        .bearer_auth(token().await)
        .json(&serde_json::json!({"query": sql, "useLegacySql": false, "timeoutMs": 60000}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    first_row(sql, &body)
}

/// Deletes the test dataset however the test ends.
struct Dataset {
    project: String,
    name: String,
}

impl Drop for Dataset {
    fn drop(&mut self) {
        let url = format!(
            "{API}/projects/{}/datasets/{}?deleteContents=true",
            self.project, self.name
        );
        std::thread::scope(|s| {
            s.spawn(|| {
                let runtime = tokio::runtime::Runtime::new().unwrap();
                runtime.block_on(async {
                    let _ = reqwest::Client::new()
                        .delete(&url)
                        .bearer_auth(token().await)
                        .send()
                        .await;
                });
            });
        });
    }
}

/// Runs each of `destinations` (its name, more of its config) on 3000 dummy
/// records over two destination_ids into a fresh dataset: each record lands
/// once, in its table.
async fn writes_each_record_once(destinations: &[(&str, String)]) {
    let project = project();
    let dataset = Dataset {
        project: project.clone(),
        name: format!("bizon_host_test_{:016x}", fastrand::u64(..)),
    };
    let total = 3000;
    for (destination, extra) in destinations {
        let short = destination.replace("bigquery", "bq");
        let yaml = format!(
            "name: real\nsource:\n  name: dummy\n  total_records: {total}\n  page_size: 500\n  destination_ids: [{short}_a, {short}_b]\ndestination:\n  name: {destination}\n  config:\n    project_id: {project}\n    dataset_id: {}\n    buffer_size: 1\n{extra}",
            dataset.name
        );
        let run = tokio::task::spawn_blocking(move || crate::support::run(&yaml))
            .await
            .unwrap();
        run.assert_ok();
        let result = run.result();
        assert_eq!(result["records_written"], total, "{destination}: {result}");
        for (table, rest) in [(format!("{short}_a"), 0), (format!("{short}_b"), 1)] {
            let sql = format!(
                "SELECT COUNT(*), COUNT(DISTINCT _source_record_id), \
                 COUNTIF(MOD(CAST(_source_record_id AS INT64), 2) != {rest}) FROM `{project}.{}.{table}`",
                dataset.name
            );
            let half = (total / 2).to_string();
            assert_eq!(
                query(&project, &sql).await,
                vec![half.clone(), half, "0".into()],
                "{destination} {table}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs BIZON_TEST_BQ_PROJECT and Google credentials (see the top of this file)"]
async fn the_streaming_destinations_write_each_record_once_into_each_table_of_real_bigquery() {
    writes_each_record_once(&[
        ("bigquery_streaming_v2", String::new()),
        ("bigquery_streaming", String::new()),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs BIZON_TEST_BQ_PROJECT, BIZON_TEST_GCS_BUCKET and Google credentials (see the top of this file)"]
async fn the_batch_destination_loads_each_record_once_into_each_table_of_real_bigquery() {
    let bucket = required("BIZON_TEST_GCS_BUCKET", "a Cloud Storage bucket for the load files");
    let extra = format!("    create_dataset: true\n    gcs_buffer_bucket: {bucket}\n");
    writes_each_record_once(&[("bigquery", extra)]).await;
}
