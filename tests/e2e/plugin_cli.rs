//! `bizon-host run --plugin` and `bizon-host plugin ...` through the binary,
//! with the first-party plugins built from plugins/ and tests/plugins/.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::guests::unknown_import;
use crate::support::{bizon_host, output_with_stdin, result, text, wasm};

/// `bizon-host ARGS` in `dir`.
fn host_in(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = bizon_host();
    cmd.current_dir(dir).args(args);
    cmd
}

/// `bizon-host plugin COMMAND` on a guest, with `extra` arguments.
fn plugin_command(command: &str, guest: &Path, extra: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = host_in(dir.path(), &["plugin", command]);
    cmd.arg(guest).args(extra).output().unwrap()
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
    let output = host_in(dir.path(), &["run", "pipeline.yaml", "--plugin"])
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
    let output = host_in(dir.path(), &["run", "pipeline.yaml"]).output().unwrap();
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
    let output = host_in(dir.path(), &["run", "nogrant.yaml"]).output().unwrap();
    assert_ne!(output.status.code(), Some(0));
    assert!(text(&output).contains("/data"), "{}", text(&output));
}

/// `bizon-host run --plugin GUEST ARGS` in `dir` on `input` from standard input.
fn run_plugin_on_stdin(dir: &Path, guest: &str, args: &[&str], input: &str) -> Output {
    let mut cmd = host_in(dir, &["run", "--plugin"]);
    cmd.arg(wasm(guest)).args(args);
    output_with_stdin(cmd, input.as_bytes().to_vec())
}

#[test]
fn ndjson_from_stdin_reaches_the_plugin_record_for_record() {
    let dir = tempfile::tempdir().unwrap();
    let records: Vec<String> = (0..5000)
        .map(|i| format!("{{\"n\":{i},\"s\":\"caf\u{e9} {i}\"}}"))
        .collect();
    let expected_sum: usize = records.iter().map(String::len).sum();
    let input = records.join("\n") + "\n";
    let output = run_plugin_on_stdin(dir.path(), "bench_sum", &["--result-json", "result.json"], &input);
    assert!(output.status.success(), "{}", text(&output));
    // bench_sum sums the bytes of source_data when it has no column to sum.
    assert!(
        text(&output).contains(&format!("sum={expected_sum} rows=5000")),
        "{}",
        text(&output)
    );
    assert_eq!(result(dir.path())["records_written"], 5000);
}

#[test]
fn a_plugin_that_panics_stops_the_run_naming_the_plugin_and_the_panic() {
    let dir = tempfile::tempdir().unwrap();
    let output = run_plugin_on_stdin(
        dir.path(),
        "hostile",
        &["--plugin-config", r#"{"mode": "panic-write"}"#],
        "{\"a\":1}\n",
    );
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
    let output = plugin_command("test", &wasm("bizon_stats"), &[]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("PASS"), "{}", text(&output));
    assert!(!text(&output).contains("FAIL"), "{}", text(&output));

    let panics = ["--plugin-config", r#"{"mode": "panic-write"}"#];
    let output = plugin_command("test", &wasm("hostile"), &panics);
    assert!(!output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("FAIL"), "{}", text(&output));
}

#[test]
fn plugin_inspect_shows_the_contract_and_refuses_an_unknown_import() {
    let dir = tempfile::tempdir().unwrap();
    // (guest, exit status, what the output names)
    for (guest, code, named) in [
        (wasm("bizon_csv"), 0, "bizon:destination@0.1.0"),
        (unknown_import(dir.path()), 2, "bizon:destination/escape"),
        // Sockets are linked for every plugin: one that imports them loads.
        (wasm("hostile_socket"), 0, "wasi:sockets/tcp"),
    ] {
        let output = plugin_command("inspect", &guest, &[]);
        let shown = guest.display();
        assert_eq!(output.status.code(), Some(code), "{shown}: {}", text(&output));
        assert!(text(&output).contains(named), "{shown}: {}", text(&output));
    }
}

#[test]
fn a_file_that_is_not_webassembly_gets_a_one_line_error_before_any_record_moves() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.wasm"), "just text").unwrap();
    let cmd = host_in(dir.path(), &["run", "--plugin", "notes.wasm"]);
    let output = output_with_stdin(cmd, b"{\"a\":1}\n".to_vec());
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
