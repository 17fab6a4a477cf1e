//! Warehouses that go away under a running pipeline. bqemulator is
//! SIGKILLed mid-run and started again (file-backed, its data kept) during
//! a `bigquery_streaming_v2` run and during a `bigquery` (load jobs) run;
//! GCS answers 500, then 429, for a while (a fault proxy in front of the
//! emulator: a real one cannot be made to); clickhouse-server is SIGKILLed
//! and started again under `plugins/clickhouse`. Each run holds its records
//! through the retries (saying so), counts nothing while the service is
//! away (the `records_written` gauge stands still), loses nothing, and
//! finishes when the service is back within the retry budget, its result
//! counting each record once; past the budget, the run stops with an error
//! naming the destination_id and the cause, counting no more than the
//! table holds.
//!
//! `BIZON_WAREHOUSE_OUTAGE_S` sets how long bqemulator stays down and GCS
//! refuses (4 s by default, what CI runs; `bench/faults.sh` runs 60).

use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::bigquery::first_row;
use crate::kafka::start;
use crate::support::clickhouse::ClickHouse;
use crate::support::emulators::{hold_blocking, OwnBigQuery, BUCKET, PROJECT};
use crate::support::fault::{self, Reply};
use crate::support::{free_port, metrics, poll, wasm};

/// A service a test kills and starts again with its data.
trait Service {
    fn kill(&mut self);
    fn restart(&mut self);
}

impl Service for OwnBigQuery {
    fn kill(&mut self) {
        OwnBigQuery::kill(self)
    }
    fn restart(&mut self) {
        OwnBigQuery::restart(self)
    }
}

impl Service for ClickHouse {
    fn kill(&mut self) {
        ClickHouse::kill(self)
    }
    fn restart(&mut self) {
        ClickHouse::restart(self)
    }
}

/// How long the service stays away.
fn outage() -> Duration {
    let seconds = std::env::var("BIZON_WAREHOUSE_OUTAGE_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    Duration::from_secs(seconds)
}

/// Retries that outlast the outage: 200 ms doubling to 2 s with full
/// jitter, 40 attempts, about 40 s of waiting on average before giving up.
fn retry_through(outage: Duration) -> String {
    let attempts = 40 + outage.as_secs() as u32;
    format!("retry: {{max_attempts: {attempts}, initial_backoff_ms: 200, max_backoff_ms: 2000}}\n")
}

/// A `dummy` run of `total` records (ids 0..total) into destination_id
/// `events` of `destination` configured by `config`, started with its
/// metrics on a port of its own.
struct Run {
    dir: tempfile::TempDir,
    child: Child,
    metrics: String,
}

impl Run {
    fn start(total: u64, page: u64, sync_mode: &str, destination: &str, config: &str) -> Run {
        let dir = tempfile::tempdir().unwrap();
        let config: String = config.lines().map(|l| format!("    {l}\n")).collect();
        let yaml = dir.path().join("pipeline.yaml");
        std::fs::write(
            &yaml,
            format!(
                "name: wh\nsource:\n  name: dummy\n  stream: s\n  sync_mode: {sync_mode}\n  total_records: {total}\n  \
                 page_size: {page}\n  destination_ids: [events]\ndestination:\n  name: {destination}\n  config:\n{config}"
            ),
        )
        .unwrap();
        let metrics = format!("127.0.0.1:{}", free_port());
        let result = dir.path().join("result.json");
        let child = start(
            &yaml,
            &dir.path().join("log"),
            &["--metrics-addr", &metrics, "--result-json", result.to_str().unwrap()],
        );
        Run { dir, child, metrics }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// Rows the run counts as written so far (0 before its first write).
    fn written(&self) -> u64 {
        let text = metrics(&self.metrics);
        text.lines()
            .find(|l| l.starts_with("bizon_records_written_total{") && l.contains("destination_id=\"events\""))
            .and_then(|l| l.rsplit_once(' ')?.1.parse().ok())
            .unwrap_or(0)
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for the end; the result JSON.
    fn finish(mut self) -> (Value, String) {
        let status = self.child.wait().unwrap();
        let log = self.log();
        let result: Value = std::fs::read(self.dir.path().join("result.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_else(|| panic!("no result.json ({status}): {log}"));
        (result, log)
    }
}

/// `SELECT COUNT(*), COUNT(DISTINCT _source_record_id)` of `table`, and the
/// ids below `total` missing from it.
fn count(rest: &str, table: &str, total: u64) -> (u64, u64, Vec<u64>) {
    let query = |sql: String| {
        let url = format!("{rest}/bigquery/v2/projects/{PROJECT}/queries");
        let body: Value = reqwest::blocking::Client::new()
            .post(&url)
            .json(&serde_json::json!({"query": sql, "useLegacySql": false}))
            .send()
            .and_then(|r| r.json())
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        body
    };
    let sql = format!("SELECT COUNT(*), COUNT(DISTINCT _source_record_id) FROM {table}");
    let row = first_row(&sql, &query(sql.clone()));
    let (rows, distinct) = (row[0].parse().unwrap(), row[1].parse().unwrap());
    let sql = format!(
        "SELECT n FROM UNNEST(GENERATE_ARRAY(0, {})) AS n WHERE CAST(n AS STRING) NOT IN \
         (SELECT _source_record_id FROM {table}) ORDER BY n LIMIT 20",
        total - 1
    );
    let missing = query(sql)["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r["f"][0]["v"].as_str().unwrap().parse().unwrap())
        .collect();
    (rows, distinct, missing)
}

/// Kills `service` once `run` has written `before` rows; the rows counted
/// once the count has settled (a write under way when the service died may
/// still finish: its answer was on the way).
fn kill_under(run: &mut Run, service: &mut impl Service, before: u64) -> (u64, Instant) {
    let log = run.dir.path().join("log");
    poll(
        || {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            format!("{before} rows written before the kill: {log}")
        },
        || (run.written() >= before || !run.running()).then_some(()),
    );
    assert!(run.running(), "the run ended before the kill: {}", run.log());
    let killed = Instant::now();
    service.kill();
    std::thread::sleep(Duration::from_secs(1));
    (run.written(), killed)
}

/// Kills `service` once `run` has written `before` rows, keeps it down for
/// the outage, checks the run held on (still running, counting no more than
/// before, saying it retries), and starts it again.
fn outage_under(run: &mut Run, service: &mut impl Service, before: u64) -> u64 {
    let (held, killed) = kill_under(run, service, before);
    std::thread::sleep(outage().saturating_sub(killed.elapsed()));
    assert!(run.running(), "the run ended during the outage: {}", run.log());
    assert_eq!(run.written(), held, "rows counted while the warehouse was down");
    assert!(
        run.log().contains("write failed, retrying"),
        "no retry said: {}",
        run.log()
    );
    service.restart();
    eprintln!(
        "down {:.1} s; {held} rows counted before it came back",
        killed.elapsed().as_secs_f64()
    );
    held
}

/// Every id of 0..total in `table` of `bq`, and the result counting each
/// once; how many rows are there twice.
fn assert_each_written(bq: &OwnBigQuery, table: &str, total: u64, result: &Value, log: &str) -> u64 {
    assert_eq!(result["status"], "success", "{result}\n{log}");
    assert_eq!(result["records_written"], total, "{result}");
    let (rows, distinct, missing) = count(&bq.rest, table, total);
    assert!(
        missing.is_empty(),
        "ids never written (the first 20): {missing:?}\n{log}\nbqemulator: {}",
        bq.log()
    );
    assert_eq!(distinct, total, "{table}");
    rows - distinct
}

/// A `bigquery_streaming_v2` config for `dataset` of `bq`, which it creates
/// (the destination writes into a dataset that exists, as Bizon's does).
fn storage_write(bq: &OwnBigQuery, dataset: &str, retry: &str) -> String {
    let url = format!("{}/bigquery/v2/projects/{PROJECT}/datasets", bq.rest);
    let body = serde_json::json!({"datasetReference": {"projectId": PROJECT, "datasetId": dataset}});
    let created = reqwest::blocking::Client::new().post(&url).json(&body).send().unwrap();
    assert!(created.status().is_success(), "{url}: {}", created.text().unwrap());
    format!(
        "project_id: {PROJECT}\ndataset_id: {dataset}\nendpoint: {}\nstorage_write_endpoint: {}\nbuffer_size: 0\n{retry}",
        bq.rest, bq.grpc
    )
}

#[test]
fn a_storage_write_run_holds_its_rows_while_bqemulator_is_down_and_writes_each_after_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut bq = OwnBigQuery::start(dir.path());
    let total = 40_000;
    let config = storage_write(&bq, "v2_outage", &retry_through(outage()));
    let mut run = Run::start(total, 500, "stream", "bigquery_streaming_v2", &config);
    let held = outage_under(&mut run, &mut bq, 2000);
    let (result, log) = run.finish();
    let twice = assert_each_written(&bq, "v2_outage.events", total, &result, &log);
    // At least once: the append under way when the emulator died landed,
    // its answer did not, and it was sent again; at most that one page.
    assert!(twice <= 500, "{twice} rows written twice");
    eprintln!(
        "storage write, bqemulator down {:?}: {total} rows, {held} before it came back, 0 lost, {twice} written twice",
        outage()
    );
}

#[test]
fn a_load_job_run_holds_its_files_while_bqemulator_is_down_and_loads_each_after_it_is_back() {
    let (e, _held) = hold_blocking();
    let mut bq = OwnBigQuery::start(&e.gcs_objects);
    let total = 20_000;
    let config = format!(
        "project_id: {PROJECT}\ndataset_id: load_outage\ncreate_dataset: true\nendpoint: {}\n\
         gcs_endpoint: http://127.0.0.1:80\ngcs_buffer_bucket: {BUCKET}\nbuffer_size: 0\n{}",
        bq.rest,
        retry_through(outage())
    );
    let mut run = Run::start(total, 500, "stream", "bigquery", &config);
    let held = outage_under(&mut run, &mut bq, 2000);
    let (result, log) = run.finish();
    let twice = assert_each_written(&bq, "load_outage.events", total, &result, &log);
    // The load job submitted as the emulator died may have landed unanswered.
    // `dummy` records have no identity to name a job by, so the retry is a
    // new job: at least once, at most that page twice (seen 0 and 500). A
    // Kafka source's loads are named by their rows and are not loaded twice.
    assert!(twice <= 500, "{twice} rows loaded twice");
    eprintln!(
        "load jobs, bqemulator down {:?}: {total} rows, {held} before it came back, 0 lost, {twice} written twice",
        outage()
    );
}

#[test]
fn bqemulator_gone_past_the_retry_budget_stops_a_storage_write_run_counting_only_what_it_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let mut bq = OwnBigQuery::start(dir.path());
    let total = 40_000;
    let retry = "retry: {max_attempts: 3, initial_backoff_ms: 100, max_backoff_ms: 200}\n";
    let config = storage_write(&bq, "v2_gone", retry);
    let mut run = Run::start(total, 500, "stream", "bigquery_streaming_v2", &config);
    kill_under(&mut run, &mut bq, 2000);
    let (result, log) = run.finish();
    assert_eq!(result["status"], "failed", "{result}\n{log}");
    let error = result["error"].as_str().unwrap_or_default();
    for part in ["events", "after 3 attempt"] {
        assert!(error.contains(part), "{part:?} not in the error {error:?}\n{log}");
    }
    // What the run counts is in the table (which may hold more: an append
    // that landed as the emulator died, unanswered).
    bq.restart();
    let counted = result["records_written"].as_u64().unwrap();
    let (_, distinct, _) = count(&bq.rest, "v2_gone.events", total);
    assert!(
        counted >= 2000 && counted <= distinct,
        "{counted} counted, {distinct} in the table"
    );
    eprintln!("bqemulator gone: {counted} counted, {distinct} in the table; {error}");
}

/// A `bigquery` run through a proxy whose GCS uploads are answered `code`
/// from the first one for `refusing` (forever when None); the run, and the
/// upload requests (status, when).
fn gcs_refusing(
    code: u16,
    refusing: Option<Duration>,
    retry: &str,
    total: u64,
    dataset: &str,
    rest: &str,
) -> (Value, String, Vec<u16>) {
    let first: std::sync::Mutex<Option<Instant>> = std::sync::Mutex::new(None);
    let proxy = fault::start_with(
        "http://127.0.0.1:80",
        Box::new(|_, _| Reply::Forward),
        Box::new(move |method, path| {
            if method != "POST" || !path.starts_with("/upload/storage/") {
                return None;
            }
            let since = *first.lock().unwrap().get_or_insert_with(Instant::now);
            match refusing {
                Some(d) if since.elapsed() >= d => None,
                _ => Some(Reply::Status(
                    code,
                    format!(r#"{{"error":{{"code":{code},"message":"refused by the test"}}}}"#),
                )),
            }
        }),
    );
    let config = format!(
        "project_id: {PROJECT}\ndataset_id: {dataset}\ncreate_dataset: true\nendpoint: {rest}\n\
         gcs_endpoint: {}\ngcs_buffer_bucket: {BUCKET}\nbuffer_size: 0\n{retry}",
        proxy.url
    );
    let run = Run::start(total, 500, "stream", "bigquery", &config);
    let (result, log) = run.finish();
    let uploads = proxy
        .others
        .lock()
        .unwrap()
        .iter()
        .filter(|(m, p, _)| m == "POST" && p.starts_with("/upload/storage/"))
        .map(|(_, _, s)| *s)
        .collect();
    (result, log, uploads)
}

#[test]
fn gcs_answering_500_then_429_for_a_while_delays_the_loads_and_loses_nothing() {
    let (e, _held) = hold_blocking();
    let bq = OwnBigQuery::start(&e.gcs_objects);
    let total = 5000;
    for (code, dataset) in [(500, "gcs_500"), (429, "gcs_429")] {
        let began = Instant::now();
        let (result, log, uploads) =
            gcs_refusing(code, Some(outage()), &retry_through(outage()), total, dataset, &bq.rest);
        let refused = uploads.iter().filter(|s| **s == code).count();
        assert!(refused >= 2, "{uploads:?}");
        // 10 files of 500 rows, each uploaded once it is let through.
        assert_eq!(uploads.iter().filter(|s| **s == 0).count(), 10, "{uploads:?}");
        assert!(log.contains("write failed, retrying"), "{log}");
        let twice = assert_each_written(&bq, &format!("{dataset}.events"), total, &result, &log);
        assert_eq!(twice, 0, "a refused upload loaded twice");
        eprintln!(
            "GCS {code} for {:?}: {refused} uploads refused, {total} rows in {:.1} s, 0 lost, 0 twice",
            outage(),
            began.elapsed().as_secs_f64()
        );
    }
}

#[test]
fn gcs_refusing_past_the_retry_budget_stops_the_run_naming_the_destination_and_the_cause() {
    let (e, _held) = hold_blocking();
    let bq = OwnBigQuery::start(&e.gcs_objects);
    let retry = "retry: {max_attempts: 3, initial_backoff_ms: 10, max_backoff_ms: 50}\n";
    let (result, log, uploads) = gcs_refusing(500, None, retry, 2000, "gcs_gone", &bq.rest);
    assert_eq!(result["status"], "failed", "{result}");
    // Nothing was loaded, and nothing is counted.
    assert_eq!(result["records_written"], 0, "{result}");
    assert_eq!(uploads, vec![500, 500, 500], "3 attempts of the first file");
    let error = result["error"].as_str().unwrap_or_default();
    for part in ["events", "500", "gs://", "after 3 attempt"] {
        assert!(error.contains(part), "{part:?} not in the error {error:?}\n{log}");
    }
    eprintln!("GCS gone: {error}");
}

/// A raw `dummy` run into `plugins/clickhouse`, table `events`.
fn clickhouse_run(server: &ClickHouse, total: u64, retry: &str) -> Run {
    let config = format!(
        "plugin: {}\nplugin_config: {{url: \"{}\"}}\nallow:\n  hosts: [\"{}\"]\nbuffer_size: 0\n{retry}",
        wasm("bizon_clickhouse").display(),
        server.url(),
        server.url()
    );
    Run::start(total, 1000, "full_refresh", "wasm", &config)
}

/// Rows in `events`, distinct source_record_ids, and those outside 0..total.
fn clickhouse_count(server: &ClickHouse, total: u64) -> (u64, u64, u64) {
    let got = server.query(&format!(
        "SELECT count(), uniqExact(source_record_id), countIf(toUInt64(source_record_id) >= {total}) \
         FROM events FORMAT TSV"
    ));
    let n: Vec<u64> = got.split_whitespace().map(|v| v.parse().unwrap()).collect();
    (n[0], n[1], n[2])
}

#[test]
fn a_clickhouse_run_holds_its_rows_while_the_server_is_down_and_writes_each_after_it_is_back() {
    let mut server = ClickHouse::start();
    let total = 300_000;
    let mut run = clickhouse_run(&server, total, &retry_through(outage()));
    let held = outage_under(&mut run, &mut server, 20_000);
    let (result, log) = run.finish();
    assert_eq!(result["status"], "success", "{result}\n{log}");
    assert_eq!(result["records_written"], total, "{result}");
    let (rows, distinct, strays) = clickhouse_count(&server, total);
    // Every id of 0..total: as many distinct ids in range as records.
    assert_eq!((distinct, strays), (total, 0), "{log}");
    // A plain MergeTree keeps a batch retried after its insert landed: at
    // most the page under way at the kill.
    assert!(rows - distinct <= 1000, "{} rows written twice", rows - distinct);
    eprintln!(
        "clickhouse down {:?}: {total} rows, {held} before it came back, 0 lost, {} written twice",
        outage(),
        rows - distinct
    );
}

#[test]
fn a_clickhouse_gone_past_the_retry_budget_stops_the_run_counting_only_what_it_wrote() {
    let mut server = ClickHouse::start();
    let total = 300_000;
    let retry = "retry: {max_attempts: 3, initial_backoff_ms: 100, max_backoff_ms: 200}\n";
    let mut run = clickhouse_run(&server, total, retry);
    kill_under(&mut run, &mut server, 20_000);
    let (result, log) = run.finish();
    assert_eq!(result["status"], "failed", "{result}\n{log}");
    let error = result["error"].as_str().unwrap_or_default();
    for part in ["events", "after 3 attempt"] {
        assert!(error.contains(part), "{part:?} not in the error {error:?}\n{log}");
    }
    // What the run counts is in the table (it may hold more: an insert that
    // landed as the server died, unanswered).
    server.restart();
    let (_, distinct, strays) = clickhouse_count(&server, total);
    let counted = result["records_written"].as_u64().unwrap();
    assert!(
        counted >= 20_000 && counted <= distinct,
        "{counted} counted, {distinct} in the table"
    );
    assert_eq!(strays, 0);
    eprintln!("clickhouse gone: {counted} counted, {distinct} in the table; {error}");
}
