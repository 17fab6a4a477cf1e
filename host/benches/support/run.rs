//! Runs the release binary on `bench.yaml` in a directory, as a user would,
//! and returns its `--result-json`. BENCH_LOG (default `warn`) sets its log
//! level: `debug` shows flushes and the time in the transform stage.

use std::path::Path;
use std::process::Command;

pub fn run_pipeline(dir: &Path) -> serde_json::Value {
    let level = std::env::var("BENCH_LOG").unwrap_or_else(|_| "warn".into());
    let status = Command::new(env!("CARGO_BIN_EXE_bizon-host"))
        .args([
            "run",
            "bench.yaml",
            "--no-progress",
            "--log-level",
            &level,
            "--result-json",
            "result.json",
        ])
        .current_dir(dir)
        .status()
        .expect("running bizon-host");
    assert!(status.success(), "bizon-host failed");
    serde_json::from_slice(&std::fs::read(dir.join("result.json")).expect("the result file")).expect("result JSON")
}
