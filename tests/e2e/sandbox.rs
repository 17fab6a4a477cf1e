//! The sandbox against hostile plugins, through the binary: one test per
//! class of attack (memory, time, signals, files, text, cache, size, rows,
//! disk), each asserting containment the way an operator would see it (exit
//! status, wall time, the result file, files outside the grant, the log).
//!
//! The guests are tests/plugins/hostile (Rust, one mode per attack) and
//! components written by hand from tests/plugins/wat/destination.wat for
//! shapes Rust cannot produce (many core instances, loops in describe or in
//! a start function).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use crate::support::{bizon_host, result, run_command, signal, text, wait_until, wasm, wat_plugin};

/// `bizon-host ARGS` in `dir`.
fn host_in(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = bizon_host();
    cmd.current_dir(dir).args(args);
    cmd
}

/// `bizon-host run` in `dir` with `plugin` and these flags, on `yaml`.
fn plugin_run(dir: &Path, yaml: &str, plugin: &Path, flags: &[&str]) -> Command {
    let mut cmd = run_command(dir, yaml);
    cmd.arg("--plugin").arg(plugin).args(flags);
    cmd
}

/// `records` dummy records in one batch to `plugin` with these flags.
fn run_plugin(dir: &Path, plugin: &Path, records: u64, flags: &[&str]) -> (Output, Duration) {
    let yaml = format!(
        "name: hostile\nsource:\n  name: dummy\n  total_records: {records}\ndestination:\n  name: logger\n  config:\n    destination_id: t\n    retry: {{max_attempts: 2, initial_backoff_ms: 1, max_backoff_ms: 1}}\n"
    );
    let started = Instant::now();
    let output = plugin_run(dir, &yaml, plugin, flags).output().unwrap();
    (output, started.elapsed())
}

fn hostile(dir: &Path, mode: &str, records: u64, flags: &[&str]) -> (Output, Duration) {
    let config = format!(r#"{{"mode": "{mode}"}}"#);
    let mut all = vec!["--plugin-config", &config];
    all.extend_from_slice(flags);
    run_plugin(dir, &wasm("hostile"), records, &all)
}

// ---- memory -------------------------------------------------------------

/// Sixteen core instances, each with its own 62.5 MiB memory that a start
/// function touches page by page: 1 GiB of resident memory for a plugin
/// allowed 256 MiB, unless the cap covers all of an instance's memories.
#[test]
fn the_memory_cap_covers_every_memory_of_an_instance() {
    let dir = tempfile::tempdir().unwrap();
    let module = r#"(core module $hog
        (memory 1000)
        (func $touch (local $p i32)
          (loop $next
            (i32.store8 (local.get $p) (i32.const 1))
            (local.set $p (i32.add (local.get $p) (i32.const 65536)))
            (br_if $next (i32.lt_u (local.get $p) (i32.const 65536000)))))
        (start $touch))"#;
    let instances: String = (0..16)
        .map(|n| format!("(core instance $hog{n} (instantiate $hog))\n"))
        .collect();
    let plugin = wat_plugin(dir.path(), "many-memories", &format!("{module}\n{instances}"), "");
    let (output, _) = run_plugin(dir.path(), &plugin, 10, &["--memory-mb", "256"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        text(&output).contains("exceeded its memory limit of 256 MiB (in instantiate)"),
        "{}",
        text(&output)
    );
    let report = result(dir.path());
    assert_eq!(report["status"], "failed");
    let peak = report["peak_rss_bytes"].as_u64().unwrap();
    assert!(peak < 512 << 20, "peak RSS {} MiB", peak >> 20);
}

#[test]
fn the_host_wide_budget_bounds_all_instances_together() {
    let dir = tempfile::tempdir().unwrap();
    let run = |budget: &str, memory: &str| {
        plugin_run(
            dir.path(),
            "name: budget\nsource:\n  name: dummy\n  total_records: 1000\n  page_size: 10\n  destination_ids: [a, b, c, d, e, f]\ndestination:\n  name: logger\n  config:\n    buffer_size: 0\n    max_concurrent_threads: 6\n",
            &wasm("bench_sum"),
            &["--memory-mb", memory, "--call-timeout-ms", "1000", "--plugin-memory-budget-mb", budget],
        )
        .output()
        .unwrap()
    };
    // Six instances of 200 MiB do not fit in 1000 MiB: the sixth waits for
    // room (none is freed: each keeps its destination_id) and fails clearly.
    let output = run("1000", "200");
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("no room in the plugin memory budget for another instance of 200 MiB: 1000 of 1000 MiB"),
        "{}",
        text(&output)
    );
    // Six of 100 MiB do.
    let output = run("1000", "100");
    assert!(output.status.success(), "{}", text(&output));
}

// ---- time and signals ---------------------------------------------------

/// A plugin asleep in a blocking WASI call, in each function the host
/// calls, is cut off at its deadline, and the error names the limit.
#[test]
fn every_call_ends_within_its_deadline_even_when_blocked_in_a_host_call() {
    for (mode, function, expected_exit) in [
        ("sleep-open", "open", 2),
        ("sleep-check", "check-connection", 1),
        ("sleep-write", "write-records", 1),
        ("sleep-finalize", "finalize", 1),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (output, took) = hostile(dir.path(), mode, 10, &["--call-timeout-ms", "1500"]);
        assert_eq!(output.status.code(), Some(expected_exit), "{mode}: {}", text(&output));
        assert!(
            text(&output).contains(&format!("exceeded its call timeout of 1500 ms (in {function})")),
            "{mode}: {}",
            text(&output)
        );
        // Two attempts at most (retry: max_attempts 2) plus start-up.
        assert!(took < Duration::from_secs(8), "{mode} took {took:?}");
    }
}

#[test]
fn check_and_inspect_are_bounded_too() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("check.yaml"),
        format!(
            "name: c\nsource: {{name: dummy}}\ndestination:\n  name: wasm\n  config:\n    plugin: {}\n    plugin_config: {{mode: sleep-check}}\n    limits: {{call_timeout_ms: 1000}}\n",
            wasm("hostile").display()
        ),
    )
    .unwrap();
    let started = Instant::now();
    let output = host_in(dir.path(), &["check", "check.yaml"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        text(&output).contains("call timeout of 1000 ms (in check-connection)"),
        "{}",
        text(&output)
    );
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());

    // `plugin inspect` calls describe only, under a short deadline of its own.
    let looping = wat_plugin(dir.path(), "describe-loop", "", "(loop $spin (br $spin))");
    let started = Instant::now();
    let output = host_in(dir.path(), &["plugin", "inspect"])
        .arg(&looping)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains("(in describe)"), "{}", text(&output));
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());

    // A start function that never returns is bounded like any call.
    let start = r#"(core module $spin (func $forever (loop $l (br $l))) (start $forever))
        (core instance $spinning (instantiate $spin))"#;
    let spinning = wat_plugin(dir.path(), "start-loop", start, "");
    let (output, took) = run_plugin(dir.path(), &spinning, 1, &["--call-timeout-ms", "1000"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        text(&output).contains("call timeout of 1000 ms (in instantiate)"),
        "{}",
        text(&output)
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
}

/// A run whose writes sleep past their 2 s call timeout, retried a
/// thousand times (its log in `dir/log`), once the first write has timed
/// out and is tried again: the run is surely inside a write by then.
fn sleeping_run(dir: &Path) -> Child {
    let log = dir.join("log");
    let child = plugin_run(
        dir,
        "name: s\nsource:\n  name: dummy\n  total_records: 10\ndestination:\n  name: logger\n  config:\n    retry: {max_attempts: 1000, initial_backoff_ms: 1, max_backoff_ms: 1}\n",
        &wasm("hostile"),
        &["--plugin-config", r#"{"mode": "sleep-write"}"#, "--call-timeout-ms", "2000"],
    )
    .stderr(std::fs::File::create(&log).unwrap())
    .spawn()
    .unwrap();
    wait_until("the first write to time out and be retried", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("write failed, retrying")
    });
    child
}

/// A write that keeps timing out would be retried a thousand times; SIGTERM
/// stops the retries, the process exits 130 within the call timeout plus a
/// little, and the result says what was not written.
#[test]
fn sigterm_stops_retries_and_exits_130_within_the_call_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = sleeping_run(dir.path());
    let signalled = Instant::now();
    signal(child.id(), libc::SIGTERM);
    let status = child.wait().unwrap();
    let took = signalled.elapsed();
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    assert_eq!(status.code(), Some(130), "{log}");
    assert!(took < Duration::from_millis(2000 + 3000), "{took:?}");
    let report = result(dir.path());
    assert_eq!(report["status"], "interrupted");
    assert_eq!(report["records_unwritten"], 10);
}

#[test]
fn a_second_signal_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = sleeping_run(dir.path());
    signal(child.id(), libc::SIGINT);
    std::thread::sleep(Duration::from_millis(200));
    let signalled = Instant::now();
    signal(child.id(), libc::SIGINT);
    let status = child.wait().unwrap();
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    assert_eq!(status.code(), Some(130), "{log}");
    assert!(
        signalled.elapsed() < Duration::from_millis(1000),
        "{:?}",
        signalled.elapsed()
    );
}

// ---- files ----------------------------------------------------------------

#[test]
fn a_plugin_cannot_plant_symlinks_in_its_grant() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(dir.path().join("victim.txt"), "precious").unwrap();
    let (output, _) = hostile(dir.path(), "symlink", 1, &["--allow-dir", "out:/out:rw"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let message = text(&output);
    assert!(
        message.contains("/out/users_temp.json: ") && !message.contains("created"),
        "{message}"
    );
    assert!(message.contains("denied: creating the symlink"), "{message}");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0, "nothing planted");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("victim.txt")).unwrap(),
        "precious"
    );
}

#[test]
fn a_writable_grant_has_a_byte_quota() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let (output, took) = hostile(
        dir.path(),
        "fill-disk",
        1,
        &["--allow-dir", "out:/out:rw", "--dir-quota-mb", "10"],
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("fill-disk: 10 MiB written, then:"),
        "{}",
        text(&output)
    );
    assert!(text(&output).contains("quota"), "{}", text(&output));
    let size = std::fs::metadata(out.join("fill.bin")).unwrap().len();
    assert!(size <= 10 << 20, "{size} bytes written");
    assert!(took < Duration::from_secs(20), "{took:?}");

    // A sparse file is charged for its length, not its blocks.
    let (output, _) = hostile(dir.path(), "sparse", 1, &["--allow-dir", "out:/out:rw"]);
    assert!(text(&output).contains("sparse: refused"), "{}", text(&output));
    assert!(std::fs::metadata(out.join("sparse.bin")).unwrap().len() < 1 << 30);
}

// ---- text -------------------------------------------------------------------

/// A plugin's newlines and escape sequences are shown escaped: no forged
/// host line, no byte that drives the terminal.
#[test]
fn plugin_text_cannot_forge_log_lines_or_drive_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let (output, _) = hostile(dir.path(), "forge-log", 1, &[]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains('\u{1b}'), "an escape reached the terminal: {stderr:?}");
    assert!(!stderr.contains('\r'), "{stderr:?}");
    for line in stderr.lines() {
        let untagged = !line.contains("plugin=") && !line.starts_with("error:") && !line.contains("of 1 records");
        assert!(
            !(untagged && line.contains("done records_written=1000000")),
            "forged line: {line}"
        );
        assert!(!line.trim_start().starts_with("INFO forged"), "forged line: {line}");
    }
    assert!(
        stderr.contains("ok\\nINFO done records_written=1000000\\e[2K"),
        "{stderr}"
    );
    assert!(
        stderr.contains("failed\\nINFO done records_written=1000000\\e[2J"),
        "{stderr}"
    );
}

#[test]
fn a_long_panic_keeps_its_head() {
    let dir = tempfile::tempdir().unwrap();
    let (output, _) = hostile(dir.path(), "long-panic", 1, &[]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("panicked: panicked at"),
        "{}",
        &text(&output)[..2000.min(text(&output).len())]
    );
    assert!(
        text(&output).contains("hostile: long panic yyy"),
        "{}",
        text(&output).len()
    );
}

// ---- cache and size -------------------------------------------------------

/// One plugin's cache entry copied over another's is refused (its MAC binds
/// it to the wasm it was compiled from): the honest plugin runs, not the
/// other one's code.
#[test]
fn a_swapped_cache_entry_is_refused_and_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let compile = |name: &str| {
        let output = host_in(dir.path(), &["plugin", "compile"])
            .env("BIZON_HOST_CACHE_DIR", &cache)
            .arg(wasm(name))
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", text(&output));
        PathBuf::from(String::from_utf8_lossy(&output.stdout).lines().next().unwrap())
    };
    let honest = compile("bizon_csv");
    let other = compile("bench_sum");
    std::fs::copy(&other, &honest).unwrap();

    std::fs::create_dir(dir.path().join("out")).unwrap();
    let output = plugin_run(
        dir.path(),
        "name: csv\nsource:\n  name: dummy\n  total_records: 5\ndestination:\n  name: logger\n  config:\n    destination_id: t\n",
        &wasm("bizon_csv"),
        &["--allow-dir", "out:/out:rw"],
    )
    .env("BIZON_HOST_CACHE_DIR", &cache)
    .output()
    .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("fails its integrity check"), "{}", text(&output));
    assert!(
        !text(&output).contains("sum="),
        "bench_sum's code ran: {}",
        text(&output)
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out/t.csv"))
            .unwrap()
            .lines()
            .count(),
        6
    );
}

#[test]
fn a_component_over_the_size_limit_is_refused_with_its_size_and_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (output, took) = hostile(dir.path(), "ok", 1, &["--max-component-mb", "1"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let message = text(&output);
    assert!(
        message.contains("hostile.wasm is ") && message.contains("MiB, over the 1 MiB limit"),
        "{message}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(result(dir.path())["status"], "failed");
}

// ---- rows -------------------------------------------------------------------

#[test]
fn rejected_rows_are_counted_exactly_and_listed() {
    let dir = tempfile::tempdir().unwrap();
    let (output, _) = hostile(dir.path(), "reject-first", 10, &[]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let report = result(dir.path());
    assert_eq!(report["records_written"], 9, "{report}");
    assert_eq!(report["records_unwritten"], 1, "{report}");
    assert_eq!(report["records_rejected"], 1, "{report}");
    assert_eq!(report["rejected"][0]["destination_id"], "t");
    assert_eq!(report["rejected"][0]["source_record_id"], "0");
    assert_eq!(report["rejected"][0]["reason"], "row 0 is refused");

    let (_, _) = hostile(dir.path(), "reject-duplicates", 10, &[]);
    let report = result(dir.path());
    assert_eq!(
        (report["records_written"].as_u64(), report["records_rejected"].as_u64()),
        (Some(9), Some(1))
    );

    let (output, _) = hostile(dir.path(), "reject-none", 10, &[]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("`rejected` with no rows"), "{}", text(&output));
    assert!(text(&output).contains("protocol error"), "{}", text(&output));
}

#[test]
fn a_config_error_still_writes_the_result_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.yaml"), "name: x\nsource: {name: nope}\n").unwrap();
    let output = host_in(dir.path(), &["run", "bad.yaml", "--result-json", "result.json"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let report = result(dir.path());
    assert_eq!(report["status"], "failed");
    assert!(report["error"].as_str().unwrap().contains("bad.yaml"), "{report}");
}
