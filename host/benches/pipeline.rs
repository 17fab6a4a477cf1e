//! `dummy` records to the `file` destination through the real binary: the
//! whole trip (generate, buffer, encode Bizon's NDJSON, fsync, publish).
//!
//!     cargo bench -p bizon-host --bench pipeline
//!
//! BENCH_RECORDS (default 1,000,000) and BENCH_RUNS (default 5) change the
//! work. Prints each run, then the median and the highest peak RSS, and a
//! last line that bench/compare.sh reads.

#[path = "support/run.rs"]
mod run;

fn main() {
    let records: u64 = env_or("BENCH_RECORDS", 1_000_000);
    let runs: usize = env_or("BENCH_RUNS", 5);
    let dir = tempfile::tempdir().expect("a temp dir");
    // Bizon's defaults: 50 MB buffers, 600 s timeout; page size as Bizon's bench source.
    let yaml = format!(
        "name: bench\nsource:\n  name: dummy\n  stream: bench\n  total_records: {records}\n  page_size: 1000\ndestination:\n  name: file\n  config:\n    destination_id: bench\n"
    );
    std::fs::write(dir.path().join("bench.yaml"), yaml).expect("writing the pipeline");

    let mut rates = Vec::new();
    let mut peak_rss = 0u64;
    for run in 1..=runs {
        let result = run::run_pipeline(dir.path());
        assert_eq!(result["records_written"], records, "not every record was written");
        let seconds = result["duration_s"].as_f64().expect("duration_s");
        let rss = result["peak_rss_bytes"].as_u64().unwrap_or(0);
        peak_rss = peak_rss.max(rss);
        rates.push(records as f64 / seconds);
        println!(
            "run {run}: {seconds:.3} s, {:.0} records/s, peak RSS {:.1} MB",
            records as f64 / seconds,
            mb(rss)
        );
    }
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    println!(
        "dummy -> file, {records} records: median {median:.0} records/s (min {:.0}, max {:.0}), peak RSS {:.1} MB",
        rates[0],
        rates[rates.len() - 1],
        mb(peak_rss)
    );
    println!(
        "bizon-host records={records} seconds={:.3} records_per_s={median:.0} peak_rss_mb={:.1}",
        records as f64 / median,
        mb(peak_rss)
    );
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}
