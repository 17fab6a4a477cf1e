//! The three BigQuery destinations against real BigQuery, for whoever has
//! access. Set `BIZON_TEST_BQ_PROJECT` (a project where the caller may create
//! datasets) and application default credentials (`gcloud auth
//! application-default login`); `BIZON_TEST_GCS_BUCKET` adds the batch
//! destination. Without them the test says it was skipped and passes.
//!
//!     BIZON_TEST_BQ_PROJECT=my-project cargo test --release -p bizon-host --test bigquery_real -- --nocapture
//!
//! Each run works in a fresh dataset `bizon_host_test_<random>` and deletes it.

use serde_json::Value;

const API: &str = "https://bigquery.googleapis.com/bigquery/v2";

async fn token() -> String {
    google_cloud_auth::credentials::Builder::default()
        .with_scopes(["https://www.googleapis.com/auth/bigquery"])
        .build_access_token_credentials()
        .expect("application default credentials")
        .access_token()
        .await
        .expect("an access token")
        .token
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
    body["rows"][0]["f"]
        .as_array()
        .unwrap_or_else(|| panic!("{sql}: {body}"))
        .iter()
        .map(|c| c["v"].as_str().unwrap_or("").to_string())
        .collect()
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

fn run_binary(yaml: &str) -> (bool, String, Value) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipeline.yaml"), yaml).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_bizon-host"))
        .args(["run", "pipeline.yaml", "--no-progress", "--result-json", "result.json"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let result = std::fs::read(dir.path().join("result.json"))
        .map(|b| serde_json::from_slice(&b).unwrap())
        .unwrap_or(Value::Null);
    (output.status.success(), stderr, result)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_destination_writes_each_record_once_into_each_table_of_real_bigquery() {
    let Ok(project) = std::env::var("BIZON_TEST_BQ_PROJECT") else {
        eprintln!("skipped: set BIZON_TEST_BQ_PROJECT (and application default credentials) to run against BigQuery");
        return;
    };
    let dataset = Dataset {
        project: project.clone(),
        name: format!("bizon_host_test_{:016x}", fastrand::u64(..)),
    };
    let mut destinations = vec![
        ("bigquery_streaming_v2", String::new()),
        ("bigquery_streaming", String::new()),
    ];
    match std::env::var("BIZON_TEST_GCS_BUCKET") {
        Ok(bucket) => destinations.push((
            "bigquery",
            format!("    create_dataset: true\n    gcs_buffer_bucket: {bucket}\n"),
        )),
        Err(_) => eprintln!("bigquery (batch) skipped: set BIZON_TEST_GCS_BUCKET"),
    }
    let total = 3000;
    for (destination, extra) in destinations {
        let short = destination.replace("bigquery", "bq");
        let yaml = format!(
            "name: real\nsource:\n  name: dummy\n  total_records: {total}\n  page_size: 500\n  destination_ids: [{short}_a, {short}_b]\ndestination:\n  name: {destination}\n  config:\n    project_id: {project}\n    dataset_id: {}\n    buffer_size: 1\n{extra}",
            dataset.name
        );
        let (ok, stderr, result) = tokio::task::spawn_blocking(move || run_binary(&yaml)).await.unwrap();
        assert!(ok, "{destination}: {stderr}\n{result}");
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
