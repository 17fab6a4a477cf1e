//! JavaScript destinations built with the @bizon/plugin SDK (sdk/js), run by
//! the binary on pipeline files: plugins/js-summary, plugins/js-jsonl (the
//! SDK's file helpers) and the test plugins tests/plugins/js-faults and
//! js-arrow (Arrow input through apache-arrow). The components are built by
//! scripts/build-sdk-plugins.sh (called by build-plugins.sh).

#[path = "support/guests.rs"]
mod guests;

use guests::{root, text};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn js_wasm(name: &str) -> PathBuf {
    // Builds every guest, the JavaScript ones included, once per test binary.
    guests::wasm("bench_sum");
    root().join("target/wasm/js").join(format!("{name}.wasm"))
}

fn run(dir: &Path, yaml: &str) -> Output {
    std::fs::write(dir.join("pipeline.yaml"), yaml).unwrap();
    Command::new(env!("CARGO_BIN_EXE_bizon-host"))
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env("BIZON_HOST_CACHE_DIR", root().join("target/wasm-cache-tests"))
        .args(["run", "pipeline.yaml", "--result-json", "result.json", "--no-progress"])
        .output()
        .unwrap()
}

fn pipeline(plugin: &str, total: u64, ids: &str, plugin_config: &str, extra: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "name: js\nsource:\n  name: dummy\n  total_records: {total}\n  page_size: 100\n  destination_ids: [{ids}]\n\
         destination:\n  name: wasm\n  config:\n    plugin: {}\n    plugin_config: {plugin_config}\n{extra}",
        js_wasm(plugin).display()
    );
    (dir, yaml)
}

fn result(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("result.json")).unwrap()).unwrap()
}

#[test]
fn every_record_reaches_a_js_destination_per_destination_id() {
    let (dir, yaml) = pipeline("js_summary", 3000, "a, b, c", "{required: [id], sum: id}", "");
    let output = run(dir.path(), &yaml);
    let log = text(&output);
    assert!(output.status.success(), "{log}");
    assert_eq!(result(dir.path())["records_written"], 3000);
    for (k, id) in ["a", "b", "c"].iter().enumerate() {
        let sum: u64 = (0..3000u64).filter(|i| i % 3 == k as u64).sum();
        assert!(
            log.contains(&format!("{id}: 1000 records, id sum {sum}")),
            "{id}: expected 1000 records summing to {sum} in: {log}"
        );
    }
}

#[test]
fn a_thrown_retryable_is_retried_and_every_record_counted_once() {
    let (dir, yaml) = pipeline(
        "js_faults",
        1000,
        "t",
        "{fail: retry_once}",
        "    buffer_size: 0\n    retry: {max_attempts: 3, initial_backoff_ms: 1, max_backoff_ms: 5}\n",
    );
    let output = run(dir.path(), &yaml);
    let log = text(&output);
    assert!(output.status.success(), "{log}");
    assert_eq!(log.matches("write failed, retrying").count(), 10, "{log}");
    assert!(log.contains("busy on batch 0, try again"), "{log}");
    let sum: u64 = (0..1000).sum();
    assert!(log.contains(&format!("took 1000 records, id sum {sum}")), "{log}");
}

#[test]
fn rejected_rows_are_reported_by_row() {
    let (dir, yaml) = pipeline("js_faults", 100, "t", "{fail: reject}", "    buffer_size: 0\n");
    let output = run(dir.path(), &yaml);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let result = result(dir.path());
    assert_eq!(result["records_rejected"], 10);
    assert_eq!(result["records_written"], 90);
    let mut rejected: Vec<(u64, String)> = result["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["source_record_id"].as_str().unwrap().parse().unwrap(),
                r["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    rejected.sort();
    let expected: Vec<(u64, String)> = (0..10)
        .map(|k| (10 * k + 7, format!("id {} ends in 7", 10 * k + 7)))
        .collect();
    assert_eq!(rejected, expected);
}

#[test]
fn a_thrown_error_stops_the_run_with_the_js_stack_not_a_variant_tag_trap() {
    let (dir, yaml) = pipeline("js_faults", 100, "t", "{fail: crash}", "");
    let output = run(dir.path(), &yaml);
    let log = text(&output);
    assert_eq!(output.status.code(), Some(1), "{log}");
    for expected in [
        "js_faults.wasm: writeRecords: TypeError:",
        "parseAmount@",
        "(after 1 attempt(s))",
    ] {
        assert!(log.contains(expected), "expected `{expected}` in: {log}");
    }
    assert!(!log.contains("invalid variant tag"), "{log}");
}

/// `out/` granted writable at /out and `in/` read-only at /in.
const GRANTS: &str = "    allow:\n      dirs: [{host: out, guest: /out, writable: true}, {host: in, guest: /in}]\n";

fn granted(dir: &Path) {
    std::fs::create_dir(dir.join("out")).unwrap();
    std::fs::create_dir(dir.join("in")).unwrap();
}

fn lines(path: PathBuf) -> Vec<serde_json::Value> {
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn every_record_lands_in_a_file_in_the_granted_directory() {
    let (dir, yaml) = pipeline("js_jsonl", 3000, "a, b, c", "{dir: /out/records}", GRANTS);
    granted(dir.path());
    let output = run(dir.path(), &yaml);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(result(dir.path())["records_written"], 3000);
    for (k, id) in ["a", "b", "c"].iter().enumerate() {
        let records = lines(dir.path().join(format!("out/records/{id}.jsonl")));
        let mut ids: Vec<u64> = records.iter().map(|r| r["id"].as_u64().unwrap()).collect();
        ids.sort_unstable();
        let expected: Vec<u64> = (0..3000).filter(|i| i % 3 == k as u64).collect();
        assert_eq!(ids, expected, "{id}: every record once");
        let five = records.iter().find(|r| r["id"] == 3 * 5 + k as u64).unwrap();
        assert_eq!(five["name"], format!("bizon-{}", 15 + k), "{id}: the record as sent");
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("out/records"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| !name.ends_with(".jsonl"))
        .collect();
    assert!(leftovers.is_empty(), "the connection check cleans up: {leftovers:?}");
}

#[test]
fn a_write_outside_the_grants_is_denied_naming_the_path_and_the_grants() {
    let (dir, yaml) = pipeline("js_jsonl", 100, "t", "{dir: /etc}", GRANTS);
    granted(dir.path());
    let output = run(dir.path(), &yaml);
    let log = text(&output);
    assert_eq!(output.status.code(), Some(1), "{log}");
    assert!(
        log.contains(
            "/etc/.bizon-check: not inside a directory granted to this plugin (granted: /out (writable), /in (read-only))"
        ),
        "{log}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("out")).unwrap().count(),
        0,
        "nothing written"
    );
}

#[test]
fn a_write_under_a_read_only_grant_is_denied() {
    let (dir, yaml) = pipeline("js_jsonl", 100, "t", "{dir: /in/sub}", GRANTS);
    granted(dir.path());
    let output = run(dir.path(), &yaml);
    let log = text(&output);
    assert_eq!(output.status.code(), Some(1), "{log}");
    assert!(
        log.contains("/in/sub/.bizon-check: /in is granted read-only; set writable: true on it in allow.dirs (:rw with --allow-dir)"),
        "{log}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("in")).unwrap().count(),
        0,
        "nothing written"
    );
}

#[test]
fn arrow_batches_reach_a_js_destination_column_by_column() {
    let (dir, yaml) = pipeline("js_arrow", 3000, "a, b, c", "{}", GRANTS);
    granted(dir.path());
    let output = run(dir.path(), &yaml);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(result(dir.path())["records_written"], 3000);
    for (k, id) in ["a", "b", "c"].iter().enumerate() {
        let records = lines(dir.path().join(format!("out/{id}.jsonl")));
        let mut ids: Vec<u64> = records.iter().map(|r| r["id"].as_u64().unwrap()).collect();
        ids.sort_unstable();
        let expected: Vec<u64> = (0..3000).filter(|i| i % 3 == k as u64).collect();
        assert_eq!(ids, expected, "{id}: every record once");
        let five = records.iter().find(|r| r["id"] == 3 * 5 + k as u64).unwrap();
        assert_eq!(five["name"], format!("bizon-{}", 15 + k), "{id}: source_data as sent");
    }
}

#[test]
fn unnested_typed_columns_reach_js_through_arrow_as_typed_values() {
    let schema = "[{name: id, type: INTEGER, mode: REQUIRED}, {name: name, type: STRING}, \
                  {name: active, type: BOOLEAN}, {name: score, type: FLOAT}, {name: tags, type: STRING, mode: REPEATED}]";
    let schemas: String = ["a", "b"]
        .iter()
        .map(|id| format!("      - {{destination_id: {id}, record_schema: {schema}}}\n"))
        .collect();
    let (dir, yaml) = pipeline(
        "js_arrow",
        600,
        "a, b",
        "{}",
        &format!("    unnest: true\n    record_schemas:\n{schemas}{GRANTS}"),
    );
    granted(dir.path());
    let output = run(dir.path(), &yaml);
    assert!(output.status.success(), "{}", text(&output));
    let records = lines(dir.path().join("out/b.jsonl"));
    assert_eq!(records.len(), 300);
    for r in &records {
        let i = r["id"].as_u64().unwrap();
        // JSON.stringify writes 1.0 as 1: the float compared as a number.
        assert_eq!(r["score"].as_f64(), Some(i as f64 * 0.5), "{r}");
        let mut rest = r.clone();
        rest.as_object_mut().unwrap().remove("score");
        let expected = serde_json::json!({
            "id": i, "name": format!("bizon-{i}"), "active": i % 2 == 0, "tags": ["a", "b"],
        });
        assert_eq!(rest, expected);
    }
}
