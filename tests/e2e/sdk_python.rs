//! Python destinations built with the bizon-plugin SDK (sdk/python), run by
//! the binary on pipeline files: plugins/python-jsonl, the test plugins
//! tests/plugins/python-faults and python-mydest (Bizon's documented
//! example, ported), and `bizon-plugin build` itself. The components are
//! built by scripts/build-sdk-plugins.sh (called by build-plugins.sh).

use crate::support::http_server::{HttpServer, Reply};
use crate::support::sdk::{
    assert_each_batch_retried_once, assert_every_record_once_per_id, assert_ids_ending_in_7_rejected, typed,
    typed_columns, BATCH_PER_PAGE_RETRIED,
};
use crate::support::{cache_dir, lines, python_wasm, result, run_in, text, venv_tool, BIZON_HOST};

/// `out/` of the run's directory, granted to the plugin at /out.
const OUT: &str = "    allow:\n      dirs: [{host: out, guest: /out, writable: true}]\n";

/// A pipeline of `total` dummy records into the Python plugin `plugin`,
/// with `out/` granted at /out; `extra` is more of the destination's config.
fn pipeline(plugin: &str, total: u64, ids: &str, plugin_config: &str, extra: &str) -> (tempfile::TempDir, String) {
    let wasm = python_wasm(plugin);
    crate::support::sdk::pipeline(&wasm, total, ids, plugin_config, &format!("{OUT}{extra}"))
}

#[test]
fn every_record_reaches_a_python_destination_once_per_destination_id() {
    let (dir, yaml) = pipeline("python_jsonl", 3000, "a, b, c", "{dir: /out}", "");
    let output = run_in(dir.path(), &yaml);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(result(dir.path())["records_written"], 3000);
    assert_every_record_once_per_id(&dir.path().join("out"), 3000);
}

#[test]
fn unnested_typed_columns_reach_python_as_typed_values() {
    let (dir, yaml) = pipeline(
        "python_jsonl",
        900,
        "a, b, c",
        "{dir: /out}",
        &typed_columns(&["a", "b", "c"]),
    );
    let output = run_in(dir.path(), &yaml);
    assert!(output.status.success(), "{}", text(&output));
    let records = lines(&dir.path().join("out/b.jsonl"));
    assert_eq!(records.len(), 300);
    for r in &records {
        assert_eq!(r, &typed(r["id"].as_u64().unwrap()));
    }
}

#[test]
fn a_raised_retryable_is_retried_and_nothing_is_lost_or_doubled() {
    let (dir, yaml) = pipeline(
        "python_faults",
        1000,
        "t",
        "{dir: /out, fail: retry_once}",
        BATCH_PER_PAGE_RETRIED,
    );
    let output = run_in(dir.path(), &yaml);
    let log = text(&output);
    assert!(output.status.success(), "{log}");
    // buffer_size 0: one batch per page of 100 records, each failed once.
    assert_each_batch_retried_once(&log);
    assert_eq!(log.matches("second attempt at batch").count(), 10, "{log}");
    let mut ids: Vec<u64> = lines(&dir.path().join("out/out.jsonl"))
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
    let output = run_in(dir.path(), &yaml);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert_ids_ending_in_7_rejected(&result(dir.path()));
    let written = lines(&dir.path().join("out/out.jsonl"));
    assert_eq!(written.len(), 90);
    assert!(written.iter().all(|r| r["id"].as_u64().unwrap() % 10 != 7));
}

#[test]
fn an_uncaught_exception_stops_the_run_with_the_python_traceback() {
    let (dir, yaml) = pipeline("python_faults", 100, "t", "{dir: /out, fail: crash}", "");
    let output = run_in(dir.path(), &yaml);
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
    let output = run_in(dir.path(), &yaml);
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
        std::process::Command::new(venv_tool("bizon-plugin"))
            .current_dir(dir.path())
            .env("BIZON_HOST_CACHE_DIR", cache_dir())
            .args(["build", "shout.py", "-o", "shout.wasm", "--bizon-host", BIZON_HOST])
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

/// plugins/python-webhook over `requests`: a 503 is retried, every
/// record arrives once, the idempotency key is the same on the retry; and
/// without `allow.hosts` the host refuses the request and the run says so.
#[test]
fn a_python_webhook_posts_every_batch_through_the_host_and_a_503_is_retried() {
    let server = HttpServer::start(|n, _| {
        if n == 0 {
            Reply::status(503, "busy")
        } else {
            Reply::ok("ok")
        }
    });
    let url = format!("{}/in", server.url());
    let wasm = python_wasm("python_webhook");
    let allowed = format!("    allow:\n      hosts: [\"{}\"]\n", server.url());
    let webhook = |allow: &str| {
        crate::support::sdk::pipeline(
            &wasm,
            1000,
            "t",
            &format!("{{url: \"{url}\"}}"),
            &format!("{BATCH_PER_PAGE_RETRIED}{allow}"),
        )
    };
    let (dir, yaml) = webhook(&allowed);
    let output = run_in(dir.path(), &yaml);
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

    let (dir, denied) = webhook("");
    let output = run_in(dir.path(), &denied);
    let log = text(&output);
    assert_eq!(output.status.code(), Some(1), "{log}");
    assert!(
        log.contains("requests.exceptions.ConnectionError") && log.contains("egress denied"),
        "{log}"
    );
    assert_eq!(server.seen().len(), 11, "nothing more reached the server");
}
