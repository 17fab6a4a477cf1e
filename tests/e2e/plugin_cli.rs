//! `bizon-host run --plugin` and `bizon-host plugin ...` through the binary,
//! with the first-party plugins built from plugins/ and tests/plugins/.

#[path = "support/guests.rs"]
mod guests;

use guests::{root, text, wasm};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

fn bizon_host(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bizon-host"));
    cmd.current_dir(dir)
        .env_remove("RUST_LOG")
        .env("BIZON_HOST_CACHE_DIR", root().join("target/wasm-cache-tests"));
    cmd
}

#[test]
fn a_pipeline_through_the_csv_plugin_writes_every_record_per_destination_id() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("out")).unwrap();
    std::fs::write(
        dir.path().join("pipeline.yaml"),
        "name: csv\nsource:\n  name: dummy\n  total_records: 3000\n  page_size: 250\n  destination_ids: [a, b, c]\ndestination:\n  name: logger\n  config:\n    buffer_size: 0\n",
    )
    .unwrap();
    let output = bizon_host(dir.path())
        .args(["run", "pipeline.yaml", "--plugin"])
        .arg(wasm("bizon_csv"))
        .args(["--allow-dir", "out:/out:rw", "--result-json", "result.json"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    for (k, id) in ["a", "b", "c"].iter().enumerate() {
        let csv = std::fs::read_to_string(dir.path().join(format!("out/{id}.csv"))).unwrap();
        let mut lines = csv.lines();
        assert!(lines.next().unwrap().starts_with("bizon_id,"), "header first");
        let ids: Vec<u64> = lines.map(|l| l.split(',').nth(3).unwrap().parse().unwrap()).collect();
        assert_eq!(ids.len(), 1000, "{id}");
        assert!(
            ids.iter().all(|i| i % 3 == k as u64),
            "{id} got another destination_id's rows"
        );
        let mut unique = ids.clone();
        unique.dedup();
        assert_eq!(unique.len(), 1000, "{id} has duplicates");
    }
}

#[test]
fn a_wasm_destination_in_a_pipeline_file_gets_only_what_it_was_granted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("out")).unwrap();
    let yaml = format!(
        "name: csv\nsource:\n  name: dummy\n  total_records: 10\ndestination:\n  name: wasm\n  config:\n    destination_id: t\n    plugin: {}\n    plugin_config: {{dir: /data}}\n    allow:\n      dirs: [{{host: out, guest: /data, writable: true}}]\n",
        wasm("bizon_csv").display()
    );
    std::fs::write(dir.path().join("pipeline.yaml"), &yaml).unwrap();
    let output = bizon_host(dir.path()).args(["run", "pipeline.yaml"]).output().unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out/t.csv"))
            .unwrap()
            .lines()
            .count(),
        11
    );

    // The same plugin without the grant cannot write, and says so before any record moves.
    std::fs::write(
        dir.path().join("nogrant.yaml"),
        yaml.replace(
            "    allow:\n      dirs: [{host: out, guest: /data, writable: true}]\n",
            "",
        ),
    )
    .unwrap();
    let output = bizon_host(dir.path()).args(["run", "nogrant.yaml"]).output().unwrap();
    assert_ne!(output.status.code(), Some(0));
    assert!(text(&output).contains("/data"), "{}", text(&output));
}

#[test]
fn ndjson_from_stdin_reaches_the_plugin_record_for_record() {
    let dir = tempfile::tempdir().unwrap();
    let records: Vec<String> = (0..5000)
        .map(|i| format!("{{\"n\":{i},\"s\":\"caf\u{e9} {i}\"}}"))
        .collect();
    let expected_sum: usize = records.iter().map(String::len).sum();
    let mut child = bizon_host(dir.path())
        .args(["run", "--plugin"])
        .arg(wasm("bench_sum"))
        .args(["--result-json", "result.json"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all((records.join("\n") + "\n").as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", text(&output));
    // bench_sum sums the bytes of source_data when it has no column to sum.
    assert!(
        text(&output).contains(&format!("sum={expected_sum} rows=5000")),
        "{}",
        text(&output)
    );
    let result: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("result.json")).unwrap()).unwrap();
    assert_eq!(result["records_written"], 5000);
}

#[test]
fn a_plugin_that_panics_stops_the_run_naming_the_plugin_and_the_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = bizon_host(dir.path())
        .args(["run", "--plugin"])
        .arg(wasm("hostile"))
        .args(["--plugin-config", r#"{"mode": "panic-write"}"#])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"{\"a\":1}\n").unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let message = text(&output);
    assert!(
        message.contains("hostile.wasm") && message.contains("panic"),
        "{message}"
    );
    assert!(message.contains("1 of 1 records read were not written"), "{message}");
}

#[test]
fn plugin_test_passes_good_plugins_and_fails_a_panicking_one() {
    let dir = tempfile::tempdir().unwrap();
    let output = bizon_host(dir.path())
        .args(["plugin", "test"])
        .arg(wasm("bizon_stats"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("PASS"), "{}", text(&output));
    assert!(!text(&output).contains("FAIL"), "{}", text(&output));

    let output = bizon_host(dir.path())
        .args(["plugin", "test"])
        .arg(wasm("hostile"))
        .args(["--plugin-config", r#"{"mode": "panic-write"}"#])
        .output()
        .unwrap();
    assert!(!output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("FAIL"), "{}", text(&output));
}

#[test]
fn plugin_inspect_shows_the_contract_and_refuses_an_unknown_import() {
    let dir = tempfile::tempdir().unwrap();
    let output = bizon_host(dir.path())
        .args(["plugin", "inspect"])
        .arg(wasm("bizon_csv"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("bizon:destination@0.1.0"), "{}", text(&output));

    let output = bizon_host(dir.path())
        .args(["plugin", "inspect"])
        .arg(wasm("unknown_import"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains("bizon:destination/escape"), "{}", text(&output));

    // Sockets are linked for every plugin: one that imports them loads.
    let output = bizon_host(dir.path())
        .args(["plugin", "inspect"])
        .arg(wasm("hostile_socket"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("wasi:sockets/tcp"), "{}", text(&output));
}

#[test]
fn a_file_that_is_not_webassembly_gets_a_one_line_error_before_any_record_moves() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.wasm"), "just text").unwrap();
    let mut child = bizon_host(dir.path())
        .args(["run", "--plugin", "notes.wasm"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"{\"a\":1}\n").unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let errors: Vec<_> = text(&output)
        .lines()
        .filter(|l| !l.contains(" INFO "))
        .map(str::to_string)
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("notes.wasm") && errors[0].contains("not a WebAssembly file"),
        "{errors:?}"
    );
}
