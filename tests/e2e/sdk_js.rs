//! JavaScript destinations built with the @bizon/plugin SDK (sdk/js), run by
//! the binary on pipeline files: plugins/js-summary, plugins/js-jsonl (the
//! SDK's file helpers) and the test plugins tests/plugins/js-faults and
//! js-arrow (Arrow input through apache-arrow). The components are built by
//! scripts/build-sdk-plugins.sh (called by build-plugins.sh).

use std::path::Path;
use std::process::Output;

use crate::support::sdk::{
    assert_each_batch_retried_once, assert_every_record_once_per_id, assert_ids_ending_in_7_rejected, typed,
    typed_columns, BATCH_PER_PAGE_RETRIED,
};
use crate::support::{js_wasm, lines, result, run_in, text};

/// `out/` granted writable at /out and `in/` read-only at /in.
const GRANTS: &str = "    allow:\n      dirs: [{host: out, guest: /out, writable: true}, {host: in, guest: /in}]\n";

/// Runs `total` dummy records into the JavaScript plugin `plugin` in a
/// fresh directory with `out/` and `in/`; `extra` is more of the
/// destination's config. The directory and what the run printed.
fn run(plugin: &str, total: u64, ids: &str, plugin_config: &str, extra: &str) -> (tempfile::TempDir, Output) {
    let (dir, yaml) = crate::support::sdk::pipeline(&js_wasm(plugin), total, ids, plugin_config, extra);
    std::fs::create_dir(dir.path().join("in")).unwrap();
    let output = run_in(dir.path(), &yaml);
    (dir, output)
}

/// The run failed (exit status 1) and nothing was written under `dir/sub`.
fn refused(dir: &Path, output: &Output, sub: &str) -> String {
    let log = text(output);
    assert_eq!(output.status.code(), Some(1), "{log}");
    assert_eq!(std::fs::read_dir(dir.join(sub)).unwrap().count(), 0, "nothing written");
    log
}

#[test]
fn every_record_reaches_a_js_destination_per_destination_id() {
    let (dir, output) = run("js_summary", 3000, "a, b, c", "{required: [id], sum: id}", "");
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
    let (_dir, output) = run("js_faults", 1000, "t", "{fail: retry_once}", BATCH_PER_PAGE_RETRIED);
    let log = text(&output);
    assert!(output.status.success(), "{log}");
    assert_each_batch_retried_once(&log);
    let sum: u64 = (0..1000).sum();
    assert!(log.contains(&format!("took 1000 records, id sum {sum}")), "{log}");
}

#[test]
fn rejected_rows_are_reported_by_row() {
    let (dir, output) = run("js_faults", 100, "t", "{fail: reject}", "    buffer_size: 0\n");
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let result = result(dir.path());
    assert_ids_ending_in_7_rejected(&result);
    assert_eq!(result["records_written"], 90);
}

#[test]
fn a_thrown_error_stops_the_run_with_the_js_stack_not_a_variant_tag_trap() {
    let (_dir, output) = run("js_faults", 100, "t", "{fail: crash}", "");
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

#[test]
fn every_record_lands_in_a_file_in_the_granted_directory() {
    let (dir, output) = run("js_jsonl", 3000, "a, b, c", "{dir: /out/records}", GRANTS);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(result(dir.path())["records_written"], 3000);
    assert_every_record_once_per_id(&dir.path().join("out/records"), 3000);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("out/records"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| !name.ends_with(".jsonl"))
        .collect();
    assert!(leftovers.is_empty(), "the connection check cleans up: {leftovers:?}");
}

#[test]
fn a_write_outside_the_grants_is_denied_naming_the_path_and_the_grants() {
    let (dir, output) = run("js_jsonl", 100, "t", "{dir: /etc}", GRANTS);
    let log = refused(dir.path(), &output, "out");
    assert!(
        log.contains(
            "/etc/.bizon-check: not inside a directory granted to this plugin (granted: /out (writable), /in (read-only))"
        ),
        "{log}"
    );
}

#[test]
fn a_write_under_a_read_only_grant_is_denied() {
    let (dir, output) = run("js_jsonl", 100, "t", "{dir: /in/sub}", GRANTS);
    let log = refused(dir.path(), &output, "in");
    assert!(
        log.contains("/in/sub/.bizon-check: /in is granted read-only; set writable: true on it in allow.dirs (:rw with --allow-dir)"),
        "{log}"
    );
}

#[test]
fn arrow_batches_reach_a_js_destination_column_by_column() {
    let (dir, output) = run("js_arrow", 3000, "a, b, c", "{}", GRANTS);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(result(dir.path())["records_written"], 3000);
    assert_every_record_once_per_id(&dir.path().join("out"), 3000);
}

#[test]
fn unnested_typed_columns_reach_js_through_arrow_as_typed_values() {
    let (dir, output) = run(
        "js_arrow",
        600,
        "a, b",
        "{}",
        &format!("{}{GRANTS}", typed_columns(&["a", "b"])),
    );
    assert!(output.status.success(), "{}", text(&output));
    let records = lines(&dir.path().join("out/b.jsonl"));
    assert_eq!(records.len(), 300);
    for r in &records {
        let mut expected = typed(r["id"].as_u64().unwrap());
        // JSON.stringify writes 1.0 as 1: the float compared as a number.
        assert_eq!(r["score"].as_f64(), expected["score"].as_f64(), "{r}");
        let mut rest = r.clone();
        rest.as_object_mut().unwrap().remove("score");
        expected.as_object_mut().unwrap().remove("score");
        assert_eq!(rest, expected);
    }
}
