//! Python destinations built with the bizon-plugin SDK (sdk/python), run by
//! the binary on pipeline files: plugins/python-jsonl, the test plugins
//! tests/plugins/python-faults and python-mydest (Bizon's documented
//! example, ported), and `bizon-plugin build` itself. The components are
//! built by scripts/build-sdk-plugins.sh (called by build-plugins.sh).

#[path = "support/guests.rs"]
mod guests;

use guests::{root, text};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn python_wasm(name: &str) -> PathBuf {
    // Builds every guest, the Python ones included, once per test binary.
    guests::wasm("bench_sum");
    root().join("target/wasm/python").join(format!("{name}.wasm"))
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

fn result(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("result.json")).unwrap()).unwrap()
}

/// A pipeline from `total` dummy records to a Python plugin with `out/`
/// granted at /out; `extra` is more of the destination's config.
fn pipeline(plugin: &str, total: u64, ids: &str, plugin_config: &str, extra: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("out")).unwrap();
    let yaml = format!(
        "name: py\nsource:\n  name: dummy\n  total_records: {total}\n  page_size: 100\n  destination_ids: [{ids}]\n\
         destination:\n  name: wasm\n  config:\n    plugin: {}\n    plugin_config: {plugin_config}\n    \
         allow:\n      dirs: [{{host: out, guest: /out, writable: true}}]\n{extra}",
        python_wasm(plugin).display()
    );
    (dir, yaml)
}

fn lines(path: PathBuf) -> Vec<serde_json::Value> {
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn every_record_reaches_a_python_destination_once_per_destination_id() {
    let (dir, yaml) = pipeline("python_jsonl", 3000, "a, b, c", "{dir: /out}", "");
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
        assert_eq!(
            five["name"],
            format!("bizon-{}", 15 + k),
            "{id}: the record as the source sent it"
        );
    }
}

#[test]
fn unnested_typed_columns_reach_python_as_typed_values() {
    let schema = "[{name: id, type: INTEGER, mode: REQUIRED}, {name: name, type: STRING}, \
                  {name: active, type: BOOLEAN}, {name: score, type: FLOAT}, {name: tags, type: STRING, mode: REPEATED}]";
    let schemas: String = ["a", "b", "c"]
        .iter()
        .map(|id| format!("      - {{destination_id: {id}, record_schema: {schema}}}\n"))
        .collect();
    let (dir, yaml) = pipeline(
        "python_jsonl",
        900,
        "a, b, c",
        "{dir: /out}",
        &format!("    unnest: true\n    record_schemas:\n{schemas}"),
    );
    let output = run(dir.path(), &yaml);
    assert!(output.status.success(), "{}", text(&output));
    let records = lines(dir.path().join("out/b.jsonl"));
    assert_eq!(records.len(), 300);
    for r in &records {
        let i = r["id"].as_u64().unwrap();
        let expected = serde_json::json!({
            "id": i, "name": format!("bizon-{i}"), "active": i % 2 == 0, "score": i as f64 * 0.5, "tags": ["a", "b"],
        });
        assert_eq!(r, &expected);
    }
}

#[test]
fn a_raised_retryable_is_retried_and_nothing_is_lost_or_doubled() {
    let (dir, yaml) = pipeline(
        "python_faults",
        1000,
        "t",
        "{dir: /out, fail: retry_once}",
        "    buffer_size: 0\n    retry: {max_attempts: 3, initial_backoff_ms: 1, max_backoff_ms: 5}\n",
    );
    let output = run(dir.path(), &yaml);
    let log = text(&output);
    assert!(output.status.success(), "{log}");
    // buffer_size 0: one batch per page of 100 records, each failed once.
    assert_eq!(log.matches("write failed, retrying").count(), 10, "{log}");
    assert!(log.contains("busy on batch 0, try again"), "{log}");
    assert_eq!(log.matches("second attempt at batch").count(), 10, "{log}");
    let mut ids: Vec<u64> = lines(dir.path().join("out/out.jsonl"))
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..1000).collect::<Vec<_>>());
}

#[test]
fn rejected_rows_are_reported_by_row_and_the_others_written() {
    let (dir, yaml) = pipeline(
        "python_faults",
        100,
        "t",
        "{dir: /out, fail: reject}",
        "    buffer_size: 0\n",
    );
    let output = run(dir.path(), &yaml);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let result = result(dir.path());
    assert_eq!(result["records_rejected"], 10);
    let mut rejected: Vec<(String, String)> = result["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["source_record_id"].as_str().unwrap().to_string(),
                r["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    rejected.sort_by_key(|(id, _)| id.parse::<u64>().unwrap());
    let expected: Vec<(String, String)> = (0..10)
        .map(|k| (format!("{}", 10 * k + 7), format!("id {} ends in 7", 10 * k + 7)))
        .collect();
    assert_eq!(rejected, expected);
    let written = lines(dir.path().join("out/out.jsonl"));
    assert_eq!(written.len(), 90);
    assert!(written.iter().all(|r| r["id"].as_u64().unwrap() % 10 != 7));
}

#[test]
fn an_uncaught_exception_stops_the_run_with_the_python_traceback() {
    let (dir, yaml) = pipeline("python_faults", 100, "t", "{dir: /out, fail: crash}", "");
    let output = run(dir.path(), &yaml);
    let log = text(&output);
    assert_eq!(output.status.code(), Some(1), "{log}");
    for expected in [
        "python_faults.wasm: write_records: Traceback (most recent call last):",
        "app.py\", line ",
        "in parse_amount",
        "KeyError: 'amount'",
        "(after 1 attempt(s))",
    ] {
        assert!(log.contains(expected), "expected `{expected}` in: {log}");
    }
    assert!(
        !log.contains("bizon_plugin/destination.py"),
        "the SDK's own frame is left out: {log}"
    );
    assert!(!dir.path().join("out/out.jsonl").exists());
}

#[test]
fn bizon_documented_destination_ported_runs_unchanged_in_body() {
    let (dir, yaml) = pipeline("python_mydest", 2500, "a, b, c", "{}", "    buffer_size: 0\n");
    let output = run(dir.path(), &yaml);
    let log = text(&output);
    assert!(output.status.success(), "{log}");
    // Its logger.info goes to the host's log, tagged with the plugin.
    let wrote: u64 = log
        .lines()
        .filter(|l| l.contains("python_mydest.wasm"))
        .filter_map(|l| l.split("Wrote ").nth(1))
        .map(|rest| rest.split(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(wrote, 2500, "{log}");
}

/// `bizon-plugin build` outside the repository: finds the one Destination,
/// runs componentize-py, then `bizon-host plugin test` on the result.
#[test]
fn bizon_plugin_build_makes_a_component_that_passes_plugin_test() {
    python_wasm("python_jsonl"); // the SDK is installed into .venv by the guest build
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("out")).unwrap();
    std::fs::write(
        dir.path().join("shout.py"),
        "import os\nfrom bizon_plugin import Destination\n\n\
         class Shout(Destination):\n    def open(self, config):\n        self.dir = config['dir']\n\n    \
         def write_records(self, batch):\n        with open(os.path.join(self.dir, 'loud.txt'), 'a') as f:\n            \
         f.writelines(s.upper() + '\\n' for s in batch.column('source_data'))\n",
    )
    .unwrap();
    let build = |extra: &[&str]| {
        Command::new(root().join(".venv/bin/bizon-plugin"))
            .current_dir(dir.path())
            .env("BIZON_HOST_CACHE_DIR", root().join("target/wasm-cache-tests"))
            .args([
                "build",
                "shout.py",
                "-o",
                "shout.wasm",
                "--bizon-host",
                env!("CARGO_BIN_EXE_bizon-host"),
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    let output = build(&["--plugin-config", r#"{"dir": "/out"}"#, "--allow-dir", "out:/out:rw"]);
    let log = text(&output);
    assert!(output.status.success(), "{log}");
    assert!(
        log.contains("PASS  write: unicode: 3 row(s)") && log.contains("PASS  finalize"),
        "{log}"
    );
    let loud = std::fs::read_to_string(dir.path().join("out/loud.txt")).unwrap();
    assert!(loud.contains(r#"{"EMOJI":"🚀🎉👩‍👩‍👧"}"#), "{loud}");

    // Without the grant the check fails, and build says so by its status.
    let output = build(&["--plugin-config", r#"{"dir": "/out"}"#]);
    assert!(!output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("FAIL"), "{}", text(&output));
}

// Shared with egress.rs, which uses the parts this file does not.
#[allow(dead_code)]
#[path = "support/http_server.rs"]
mod http_server;

/// plugins/python-webhook over `requests`: a 503 is retried, every
/// record arrives once, the idempotency key is the same on the retry; and
/// without `allow.hosts` the host refuses the request and the run says so.
#[test]
fn a_python_webhook_posts_every_batch_through_the_host_and_a_503_is_retried() {
    use http_server::{HttpServer, Reply};
    let server = HttpServer::start(|n, _| {
        if n == 0 {
            Reply::status(503, "busy")
        } else {
            Reply::ok("ok")
        }
    });
    let url = format!("{}/in", server.url());
    let (dir, yaml) = pipeline(
        "python_webhook",
        1000,
        "t",
        &format!("{{url: \"{url}\"}}"),
        &format!(
            "    buffer_size: 0\n    retry: {{max_attempts: 3, initial_backoff_ms: 1, max_backoff_ms: 5}}\n    \
             allow:\n      hosts: [\"{}\"]\n",
            server.url()
        ),
    );
    // The granted dir of pipeline() is not needed here; its allow: is replaced.
    let yaml = yaml.replace(
        "    allow:\n      dirs: [{host: out, guest: /out, writable: true}]\n",
        "",
    );
    let output = run(dir.path(), &yaml);
    assert!(output.status.success(), "{}", text(&output));
    let seen = server.seen();
    assert_eq!(seen.len(), 11, "10 batches, the first one twice");
    assert_eq!(seen[0].header("idempotency-key"), seen[1].header("idempotency-key"));
    assert_eq!(seen[1].header("content-type"), Some("application/json"));
    assert_eq!((seen[1].method.as_str(), seen[1].path.as_str()), ("POST", "/in"));
    let mut ids: Vec<u64> = seen[1..]
        .iter()
        .flat_map(|s| serde_json::from_slice::<Vec<serde_json::Value>>(&s.body).unwrap())
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..1000).collect::<Vec<_>>());

    let denied = yaml.replace(&format!("    allow:\n      hosts: [\"{}\"]\n", server.url()), "");
    let output = run(dir.path(), &denied);
    let log = text(&output);
    assert_eq!(output.status.code(), Some(1), "{log}");
    assert!(
        log.contains("requests.exceptions.ConnectionError") && log.contains("egress denied"),
        "{log}"
    );
    assert_eq!(server.seen().len(), 11, "nothing more reached the server");
}
