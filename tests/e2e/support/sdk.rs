//! What the tests of plugins built with the Python and JavaScript SDKs
//! (sdk_python.rs, sdk_js.rs) share: the pipeline they run, and the checks
//! of what the same plugin does in either language (tests/plugins/*-faults
//! fail on purpose the same ways).

use std::path::Path;

use serde_json::{json, Value};

use super::common::lines;

/// A fresh directory with `out/` in it, and a pipeline of `total` dummy
/// records (pages of 100, over the destination_ids `ids`) into the plugin
/// `wasm` with `plugin_config`; `extra` is more of the destination's config.
pub fn pipeline(wasm: &Path, total: u64, ids: &str, plugin_config: &str, extra: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("out")).unwrap();
    let yaml = format!(
        "name: sdk\nsource:\n  name: dummy\n  total_records: {total}\n  page_size: 100\n  destination_ids: [{ids}]\n\
         destination:\n  name: wasm\n  config:\n    plugin: {}\n    plugin_config: {plugin_config}\n{extra}",
        wasm.display()
    );
    (dir, yaml)
}

/// One batch per page, each retried at once: the config of the runs of the
/// faults plugins.
pub const BATCH_PER_PAGE_RETRIED: &str =
    "    buffer_size: 0\n    retry: {max_attempts: 3, initial_backoff_ms: 1, max_backoff_ms: 5}\n";

/// The log of a faults plugin run with `fail: retry_once` over 1000
/// records: each of the 10 batches failed once, retryably, and was retried.
pub fn assert_each_batch_retried_once(log: &str) {
    assert_eq!(log.matches("write failed, retrying").count(), 10, "{log}");
    assert!(log.contains("busy on batch 0, try again"), "{log}");
}

/// Every dummy record (of `total`, over destination_ids a, b and c) once in
/// `dir/{id}.jsonl` of its destination_id, as the source sent it.
pub fn assert_every_record_once_per_id(dir: &Path, total: u64) {
    for (k, id) in ["a", "b", "c"].iter().enumerate() {
        let records = lines(&dir.join(format!("{id}.jsonl")));
        let mut ids: Vec<u64> = records.iter().map(|r| r["id"].as_u64().unwrap()).collect();
        ids.sort_unstable();
        let expected: Vec<u64> = (0..total).filter(|i| i % 3 == k as u64).collect();
        assert_eq!(ids, expected, "{id}: every record once");
        let five = records.iter().find(|r| r["id"] == 3 * 5 + k as u64).unwrap();
        assert_eq!(
            five["name"],
            format!("bizon-{}", 15 + k),
            "{id}: the record as the source sent it"
        );
    }
}

/// `unnest: true` with typed record_schemas for `ids`.
pub fn typed_columns(ids: &[&str]) -> String {
    let schema = "[{name: id, type: INTEGER, mode: REQUIRED}, {name: name, type: STRING}, \
                  {name: active, type: BOOLEAN}, {name: score, type: FLOAT}, {name: tags, type: STRING, mode: REPEATED}]";
    let schemas: String = ids
        .iter()
        .map(|id| format!("      - {{destination_id: {id}, record_schema: {schema}}}\n"))
        .collect();
    format!("    unnest: true\n    record_schemas:\n{schemas}")
}

/// Dummy record `i` in the columns of [`typed_columns`].
pub fn typed(i: u64) -> Value {
    json!({"id": i, "name": format!("bizon-{i}"), "active": i.is_multiple_of(2), "score": i as f64 * 0.5, "tags": ["a", "b"]})
}

/// The result of a faults plugin run with `fail: reject` over 100 records:
/// the 10 whose id ends in 7 rejected, each with its reason.
pub fn assert_ids_ending_in_7_rejected(result: &Value) {
    assert_eq!(result["records_rejected"], 10, "{result}");
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
