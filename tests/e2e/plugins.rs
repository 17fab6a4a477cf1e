//! WebAssembly destinations end to end, in this process through the
//! library: the guest plugins of tests/plugins and plugins/ run in the
//! host's sandbox, misbehave, and the host goes on.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, Once, OnceLock};

use bizon_host::destination::wasm::WasmDestination;
use bizon_host::destination::DestinationConfig;
use bizon_host::destination::{Batch, Destination, DestinationError};
use bizon_host::pipeline;
use bizon_host::plugin::{HostPolicy, Plugin, Request};
use bizon_host::record::{BizonIdGenerator, RecordBuilder, SourceRecord};

use crate::support::guests::{first_contract, unknown_import, wrong_version};
use crate::support::{cache_dir, in_a_process_of_its_own, wasm};

/// Captures the host's log (its own events only: those of the HTTP and gRPC
/// crates other tests of this process use would pile up), so that tests
/// can count what plugins wrote to it.
fn capture_the_log() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        tracing_subscriber::fmt()
            .with_writer(|| LogCapture)
            .with_ansi(false)
            .with_env_filter(tracing_subscriber::EnvFilter::new("bizon_host=trace"))
            .init();
    });
}

fn log_lines() -> &'static Mutex<Vec<String>> {
    static LINES: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    LINES.get_or_init(Default::default)
}

struct LogCapture;

impl Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        log_lines().lock().unwrap().extend(text.lines().map(str::to_string));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logged(needle: &str) -> Vec<String> {
    log_lines()
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(needle))
        .cloned()
        .collect()
}

/// The settings of a load with the tests' compile cache.
fn cached() -> HostPolicy {
    HostPolicy {
        cache_dir: Some(cache_dir()),
        ..HostPolicy::for_run()
    }
}

/// A `wasm` destination of the guest `plugin` parsed from pipeline YAML,
/// so the tests go through the same config path as users.
async fn destination(plugin: &str, config_yaml: &str) -> Result<WasmDestination, DestinationError> {
    destination_of(&wasm(plugin), config_yaml).await
}

/// [`destination`] of the component at `path`.
async fn destination_of(path: &Path, config_yaml: &str) -> Result<WasmDestination, DestinationError> {
    let yaml = format!(
        "name: t\nsource: {{name: dummy}}\ndestination:\n  name: wasm\n  config:\n    plugin: {}\n{}",
        path.display(),
        config_yaml.lines().map(|l| format!("    {l}\n")).collect::<String>()
    );
    let pipeline = pipeline::parse(&yaml, "test.yaml", |_| None).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let DestinationConfig::Wasm(config) = pipeline.destination else {
        panic!("not a wasm destination")
    };
    capture_the_log();
    WasmDestination::new(&config, cached()).await
}

async fn hostile(mode: &str, extra: &str) -> Result<WasmDestination, DestinationError> {
    destination("hostile", &format!("plugin_config: {{mode: {mode}}}\n{extra}")).await
}

fn batch(destination_id: &str, sequence: u64, rows: usize) -> Batch {
    let mut ids = BizonIdGenerator::new();
    let mut builder = RecordBuilder::new(destination_id.into());
    for i in 0..rows {
        let record = SourceRecord {
            id: i.to_string(),
            timestamp_us: 0,
            data: format!(r#"{{"i":{i}}}"#),
            destination_id: None,
        };
        builder.append(&mut ids, 0, &record);
    }
    Batch {
        destination_id: destination_id.into(),
        sequence,
        records: builder.finish(0).unwrap(),
        source: Vec::new(),
    }
}

/// A trap fails the call with `expected` in the message, fails the same way
/// on the rebuilt instance, and a well-behaved plugin keeps working.
async fn assert_trap_contained(mode: &str, extra: &str, expected: &str) -> String {
    let dest = hostile(mode, extra).await.unwrap();
    let mut first = String::new();
    for attempt in 0..2 {
        let err = dest.write(&batch("t", 0, 3)).await.unwrap_err().to_string();
        assert!(err.contains("hostile.wasm"), "attempt {attempt}: {err}");
        assert!(
            err.contains(expected),
            "attempt {attempt}: expected `{expected}` in: {err}"
        );
        if first.is_empty() {
            first = err;
        }
    }
    let good = destination("bench_sum", "").await.unwrap();
    assert_eq!(good.write(&batch("t", 0, 5)).await.unwrap(), 5);
    good.finalize().await.unwrap();
    first
}

#[tokio::test(flavor = "multi_thread")]
async fn endless_loop_hits_the_call_timeout_and_is_retryable() {
    let err = assert_trap_contained(
        "loop",
        "limits: {call_timeout_ms: 200}",
        "exceeded its call timeout of 200 ms",
    )
    .await;
    assert!(err.contains("write-records"), "{err}");
    let dest = hostile("loop", "limits: {call_timeout_ms: 200}").await.unwrap();
    assert!(dest.write(&batch("t", 0, 1)).await.unwrap_err().is_retryable());
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_hog_hits_the_memory_limit() {
    assert_trap_contained(
        "memory",
        "limits: {memory_mb: 32}",
        "exceeded its memory limit of 32 MiB",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn panic_in_write_reports_the_panic_message() {
    let err = assert_trap_contained("panic-write", "", "panicked").await;
    assert!(err.contains("hostile: panic in write"), "{err}");
    let dest = hostile("panic-write", "").await.unwrap();
    assert!(!dest.write(&batch("t", 0, 1)).await.unwrap_err().is_retryable());
}

#[tokio::test(flavor = "multi_thread")]
async fn stack_overflow_is_contained() {
    assert_trap_contained("stack-overflow", "", "overflowed its stack").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn panic_in_open_fails_the_build_with_the_message() {
    let err = hostile("panic-open", "")
        .await
        .err()
        .expect("open panicked")
        .to_string();
    assert!(
        err.contains("hostile.wasm") && err.contains("hostile: panic in open") && err.contains("(in open)"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_huge_error_message_is_truncated() {
    let dest = hostile("big-error", "").await.unwrap();
    let err = dest.write(&batch("t", 0, 1)).await.unwrap_err().to_string();
    assert!(err.len() < 70 * 1024, "{} bytes", err.len());
    assert!(
        err.contains("truncated") && err.contains("of 104857600 bytes"),
        "{}",
        &err[err.len() - 200..]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_socket_plugin_loads_and_is_denied_at_use_without_a_grant() {
    let dest = destination("hostile_socket", "")
        .await
        .expect("a plugin that links sockets loads");
    let err = dest.write(&batch("t", 0, 1)).await.unwrap_err().to_string();
    assert!(
        err.contains("connect failed") && err.contains("1 rows not written"),
        "{err}"
    );
    let refusals = logged("egress denied: tcp://127.0.0.1:9");
    assert!(
        refusals
            .iter()
            .any(|l| l.contains("hostile_socket.wasm") && l.contains("allow.hosts is empty")),
        "{refusals:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_import_the_host_does_not_implement_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let err = destination_of(&unknown_import(dir.path()), "")
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("unknown_import.wasm") && err.contains("bizon:destination/escape"),
        "{err}"
    );
}

/// `host.batch-source` was added to `bizon:destination@0.1.0` without a
/// version bump: a component built before, which imports `host` with `log`
/// only, must link against the extended interface and write as before,
/// batches with a source (Kafka offsets) included.
#[tokio::test(flavor = "multi_thread")]
async fn a_component_of_the_first_contract_loads_and_writes_batches_with_a_source() {
    let dir = tempfile::tempdir().unwrap();
    let dest = destination_of(&first_contract(dir.path()), "")
        .await
        .unwrap_or_else(|e| panic!("an old component was refused: {e}"));
    let mut with_source = batch("t", 0, 5);
    with_source.source = vec![bizon_host::source::Span {
        destination_id: "t".into(),
        topic: "orders".into(),
        partition: 0,
        first: 10,
        last: 14,
    }];
    assert_eq!(dest.write(&with_source).await.unwrap(), 5);
    assert_eq!(dest.write(&batch("t", 1, 3)).await.unwrap(), 3);
    dest.finalize().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_contract_version_is_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let err = destination_of(&wrong_version(dir.path()), "")
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("9.0.0") && err.contains("0.1.0"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn files_are_invisible_unless_granted() {
    let dest = hostile("read-file", "").await.unwrap();
    let err = dest.write(&batch("t", 0, 1)).await.unwrap_err().to_string();
    assert!(err.contains("read failed"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("passwd"), "granted:x:1\n").unwrap();
    let grant = format!("allow: {{dirs: [{{host: {}, guest: /etc}}]}}", dir.path().display());
    let dest = hostile("read-file", &grant).await.unwrap();
    let err = dest.write(&batch("t", 0, 1)).await.unwrap_err().to_string();
    assert!(err.contains("read /etc/passwd: 12 bytes"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn environment_is_empty_unless_granted() {
    let dest = hostile("env", "").await.unwrap();
    assert!(dest
        .write(&batch("t", 0, 1))
        .await
        .unwrap_err()
        .to_string()
        .contains("env vars: 0"));

    // PATH is set in every test process (changing the environment of a
    // process whose other threads read it is not safe).
    let dest = hostile("env", "allow: {env: [PATH, BIZON_PLUGIN_TEST_UNSET]}")
        .await
        .unwrap();
    let err = dest.write(&batch("t", 0, 1)).await.unwrap_err().to_string();
    assert!(err.contains("env vars: 1"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_log_flood_is_rate_limited() {
    let dest = hostile("log-flood", "").await.unwrap();
    let started = std::time::Instant::now();
    assert_eq!(dest.write(&batch("t", 0, 1)).await.unwrap(), 1);
    dest.finalize().await.unwrap();
    let allowed = 1000.0 + 100.0 * started.elapsed().as_secs_f64() + 10.0;
    let flood = logged(" flood ").len();
    assert!(
        flood > 0 && (flood as f64) <= allowed,
        "{flood} flood lines logged, at most {allowed} allowed"
    );
    assert!(!logged("plugin log line(s) dropped").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn flaky_writes_are_retried_and_every_row_is_written_once() {
    let dest = hostile(
        "flaky",
        "retry: {max_attempts: 3, initial_backoff_ms: 1, max_backoff_ms: 5}",
    )
    .await
    .unwrap();
    let policy = bizon_host::config::RetryPolicy {
        max_attempts: 3,
        initial_backoff_ms: 1,
        max_backoff_ms: 5,
    };
    let mut written = 0;
    for sequence in 0..4 {
        let b = batch("flaky", sequence, 10);
        let mut attempts = 0;
        written += bizon_host::destination::retry::run(
            &policy,
            || dest.write(&b),
            |_, _, _| attempts += 1,
            tokio::sync::watch::channel(false).1,
        )
        .await
        .unwrap();
        assert_eq!(attempts, 1, "one retry per batch");
    }
    assert_eq!(written, 40);
}

#[tokio::test(flavor = "multi_thread")]
async fn rejected_rows_are_reported_by_index() {
    let dest = hostile("reject-odd", "").await.unwrap();
    match dest.write(&batch("t", 0, 5)).await {
        Err(DestinationError::Rejected(rows)) => {
            assert_eq!(rows.iter().map(|r| r.row).collect::<Vec<_>>(), vec![1, 3]);
            assert_eq!(rows[0].reason, "row 1 is odd");
        }
        other => panic!("expected rejected rows, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_destination_ids_each_see_all_their_rows() {
    let dest = Arc::new(destination("bench_sum", "max_concurrent_threads: 3").await.unwrap());
    let mut tasks = Vec::new();
    for id in ["a", "b", "c", "d", "e"] {
        let dest = dest.clone();
        tasks.push(tokio::spawn(async move {
            for sequence in 0..4 {
                assert_eq!(dest.write(&batch(id, sequence, 100)).await.unwrap(), 100);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    dest.finalize().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn library_load_reports_cache_hits() {
    // The shared test cache: a fresh directory would compile again, which
    // takes minutes in an unoptimized test build.
    let path = wasm("bench_sum");
    Plugin::load(&path, &Request::default(), &cached()).unwrap();
    let second = Plugin::load(&path, &Request::default(), &cached()).unwrap();
    assert_eq!(second.report().cache, bizon_host::plugin::CacheStatus::Hit);
    assert!(second
        .report()
        .imports
        .iter()
        .any(|i| i.starts_with("bizon:destination/host")));
    assert_eq!(second.describe().await.unwrap().name, "bench-sum");
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:")?.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// `serve` loads a plugin per pipeline: loads of the same component share
/// one copy of its compiled code (each load cost 6.4 MiB of bench_sum's
/// code and links before). It measures this process's memory, so it runs
/// in a process of its own, where no other test grows it meanwhile.
#[cfg(target_os = "linux")]
#[test]
fn loads_of_one_component_share_its_code() {
    if !in_a_process_of_its_own("plugins::loads_of_one_component_share_its_code") {
        return;
    }
    let path = wasm("bench_sum");
    let first = Plugin::load(&path, &Request::default(), &cached()).unwrap();
    let before = rss_kib();
    let more: Vec<_> = (0..50)
        .map(|_| Plugin::load(&path, &Request::default(), &cached()).unwrap())
        .collect();
    let grown = rss_kib().saturating_sub(before);
    // 50 copies would be 320 MiB.
    assert!(grown < 64 << 10, "50 more loads grew RSS by {} MiB", grown >> 10);
    drop((first, more));
}
