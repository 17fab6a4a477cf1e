//! WebAssembly destination figures: instantiation, warm-cache load, and
//! 1M Bizon-layout records through bench_sum.wasm against the same decode
//! and sum done natively.
//!
//!     bash scripts/build-plugins.sh && cargo bench -p bizon-host --bench plugin
//!
//! BENCH_RECORDS (default 1000000) and BENCH_BATCH (default 10000) change
//! the workload.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch};
use arrow_buffer::Buffer;
use arrow_ipc::reader::StreamDecoder;
use bizon_host::config::DestinationOptions;
use bizon_host::destination::wasm::{WasmConfig, WasmDestination};
use bizon_host::destination::{Batch, Destination};
use bizon_host::pipeline::{Assembled, Bounds};
use bizon_host::plugin::{ipc, Grants, HostPolicy, InputFormat, Limits, Plugin, Request};
use bizon_host::record::{BizonIdGenerator, RecordBuilder, SourceRecord};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn micros(d: Duration) -> String {
    format!("{:.1} us", d.as_secs_f64() * 1e6)
}

/// Records shaped like Bizon's dummy source: a small JSON object each.
fn batches(records: usize, batch_size: usize) -> Vec<Batch> {
    let mut ids = BizonIdGenerator::new();
    let mut out = Vec::new();
    let mut builder = RecordBuilder::new("bench".into());
    for i in 0..records {
        let record = SourceRecord {
            id: i.to_string(),
            timestamp_us: 1_700_000_000_000_000 + i as i64,
            data: format!(r#"{{"id":{i},"name":"user_{i}","email":"user_{i}@example.com","active":true}}"#),
            destination_id: None,
        };
        builder.append(&mut ids, 1_700_000_000_000_000, &record);
        if builder.rows() == batch_size || i + 1 == records {
            let sequence = out.len() as u64;
            out.push(Batch {
                destination_id: "bench".into(),
                sequence,
                records: builder.finish(0).unwrap(),
                source: Vec::new(),
            });
        }
    }
    out
}

/// What bench_sum.wasm does with a batch, natively: decode the IPC stream
/// without copying and add up the byte lengths of source_data.
fn native_sum(bytes: &[u8]) -> (u64, i128) {
    let mut buffer = Buffer::from_vec(bytes.to_vec());
    let mut decoder = StreamDecoder::new();
    let mut batch: Option<RecordBatch> = None;
    while !buffer.is_empty() {
        if let Some(b) = decoder.decode(&mut buffer).unwrap() {
            batch = Some(b);
        }
    }
    let batch = batch.unwrap();
    let data = batch.column_by_name("source_data").unwrap().as_string::<i32>();
    let sum = (0..data.len()).map(|i| data.value(i).len() as i128).sum();
    (batch.num_rows() as u64, sum)
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let sum_wasm = root.join("target/wasm/wasm32-wasip2/release/bench_sum.wasm");
    assert!(
        sum_wasm.exists(),
        "{} is missing: run `bash scripts/build-plugins.sh` first",
        sum_wasm.display()
    );
    let cache = root.join("target/wasm-cache-bench");
    std::env::set_var("BIZON_HOST_CACHE_DIR", &cache);
    let request = Request::default();
    let policy = HostPolicy {
        cache_dir: Some(cache.clone()),
        ..HostPolicy::for_run()
    };

    println!(
        "machine: {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("allocator: {:?}", bizon_host::plugin::engine::shared().allocator);

    // Cold: compile and store (or a hit when a previous run stored it).
    let started = Instant::now();
    let plugin = Plugin::load(&sum_wasm, &request, &policy).unwrap();
    println!(
        "first load ({}): {:.1} ms, of which compiling {:.1} ms",
        plugin.report().cache,
        started.elapsed().as_secs_f64() * 1e3,
        plugin.report().compile_time.as_secs_f64() * 1e3
    );

    // (b) Warm-cache load: deserialize + checks + pre-instantiate.
    let loads: Vec<_> = (0..50)
        .map(|_| {
            let t = Instant::now();
            let p = Plugin::load(&sum_wasm, &request, &policy).unwrap();
            let d = t.elapsed();
            assert_eq!(p.report().cache, bizon_host::plugin::CacheStatus::Hit);
            d
        })
        .collect();
    println!(
        "warm-cache load (read + deserialize + checks + pre-instantiate), median of 50: {}",
        micros(median(loads))
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();

    // (a) Instantiation from the pre-instantiated component.
    runtime.block_on(async {
        for _ in 0..100 {
            plugin.describe().await.unwrap();
        }
    });
    let described: Vec<_> = (0..2000)
        .map(|_| {
            runtime.block_on(async {
                let t = Instant::now();
                plugin.describe().await.unwrap();
                t.elapsed()
            })
        })
        .collect();
    println!(
        "new Store + instantiate + describe + drop, median of 2000: {}",
        micros(median(described))
    );
    let opened: Vec<_> = (0..2000)
        .map(|_| {
            runtime.block_on(async {
                let t = Instant::now();
                drop(plugin.instantiate().await.unwrap());
                t.elapsed()
            })
        })
        .collect();
    println!(
        "new Store + instantiate + describe + open + drop, median of 2000: {}",
        micros(median(opened))
    );

    // Per-call cost: the cheapest export (check-connection does nothing in
    // bench_sum), through the async call path with its deadline and timer.
    let calls = 100_000;
    let per_call = runtime.block_on(async {
        let mut instance = plugin.instantiate().await.unwrap();
        let t = Instant::now();
        for _ in 0..calls {
            instance.check_connection().await.unwrap().unwrap();
        }
        t.elapsed() / calls
    });
    println!(
        "one empty call (check-connection), mean of {calls}: {:.2} us",
        per_call.as_secs_f64() * 1e6
    );

    // Startup to the first write, in process, warm cache.
    let config = WasmConfig {
        options: DestinationOptions {
            max_concurrent_threads: 1,
            ..Default::default()
        },
        plugin: sum_wasm.clone(),
        plugin_config: None,
        limits: Limits::default(),
        allow: Grants::default(),
    };
    let one = batches(1, 1);
    let startups: Vec<_> = (0..20)
        .map(|_| {
            runtime.block_on(async {
                let t = Instant::now();
                let dest = WasmDestination::new(&config, HostPolicy::for_run()).await.unwrap();
                dest.write(&one[0]).await.unwrap();
                t.elapsed()
            })
        })
        .collect();
    println!(
        "in-process startup (warm load + instantiate + open + first 1-row write), median of 20: {}",
        micros(median(startups))
    );
    binary_startup(&sum_wasm, &cache);

    // (c) Throughput: 1M records through the plugin vs natively.
    let records = env_usize("BENCH_RECORDS", 1_000_000);
    let batch_size = env_usize("BENCH_BATCH", 10_000);
    let work = Arc::new(batches(records, batch_size));
    let bytes: usize = work.iter().map(|b| b.records.get_array_memory_size()).sum();
    println!(
        "workload: {records} records in batches of {batch_size} ({:.0} MB of Arrow)",
        bytes as f64 / 1e6
    );

    let mut plugin_rates = Vec::new();
    let mut native_rates = Vec::new();
    for _ in 0..3 {
        let dest = runtime
            .block_on(WasmDestination::new(&config, HostPolicy::for_run()))
            .unwrap();
        let t = Instant::now();
        runtime.block_on(async {
            for b in work.iter() {
                dest.write(b).await.unwrap();
            }
            dest.finalize().await.unwrap();
        });
        plugin_rates.push(records as f64 / t.elapsed().as_secs_f64());

        let t = Instant::now();
        let w = work.clone();
        let total = runtime.block_on(async move {
            let mut buffer = Vec::new();
            let mut total = 0i128;
            for b in w.iter() {
                let records = b.records.clone();
                let mut buf = std::mem::take(&mut buffer);
                let (sum, buf) = tokio::task::spawn_blocking(move || {
                    ipc::encode(InputFormat::ArrowIpc, &records, &mut buf).unwrap();
                    let (_, sum) = native_sum(&buf);
                    (sum, buf)
                })
                .await
                .unwrap();
                buffer = buf;
                total += sum;
            }
            total
        });
        assert!(total > 0);
        native_rates.push(records as f64 / t.elapsed().as_secs_f64());
    }
    let best = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    let (p, n) = (best(&plugin_rates), best(&native_rates));
    println!(
        "plugin (bench_sum.wasm, encode + copy in + decode + sum), best of 3: {:.0} records/s",
        p
    );
    println!("native (same encode + decode + sum), best of 3: {:.0} records/s", n);
    println!("native / plugin: {:.2}x", n / p);

    end_to_end(&runtime, &config, records);
}

/// The same sum as a native destination, for the end-to-end comparison.
struct NativeSum;

#[async_trait::async_trait]
impl Destination for NativeSum {
    async fn check_connection(&self) -> Result<(), bizon_host::destination::DestinationError> {
        Ok(())
    }

    async fn write(&self, batch: &Batch) -> Result<u64, bizon_host::destination::DestinationError> {
        let records = batch.records.clone();
        let rows = tokio::task::spawn_blocking(move || {
            let mut buf = Vec::new();
            ipc::encode(InputFormat::ArrowIpc, &records, &mut buf).unwrap();
            native_sum(&buf).0
        })
        .await
        .unwrap();
        Ok(rows)
    }

    async fn finalize(&self) -> Result<(), bizon_host::destination::DestinationError> {
        Ok(())
    }
}

/// `dummy` records through the whole pipeline (source thread, buffers,
/// flushes) into bench_sum.wasm and into the same work done natively.
fn end_to_end(runtime: &tokio::runtime::Runtime, config: &WasmConfig, records: usize) {
    let yaml = format!(
        "name: e2e\nsource:\n  name: dummy\n  total_records: {records}\ndestination:\n  name: logger\n  config:\n    buffer_size: 10\n"
    );
    let pipeline = bizon_host::pipeline::parse(&yaml, "bench.yaml", |_| None).unwrap();
    let source = || bizon_host::source::build(&pipeline.source, false).unwrap();
    let run = |destination: Arc<dyn Destination>| {
        let t = Instant::now();
        let (progress, _) = tokio::sync::watch::channel(Default::default());
        let run = Assembled {
            destination,
            dead_letters: None,
            source: source(),
        };
        let report = runtime.block_on(bizon_host::pipeline::run(
            &pipeline,
            run,
            std::future::pending(),
            progress,
            Bounds::none(),
        ));
        assert_eq!(report.records_written, records as u64);
        records as f64 / t.elapsed().as_secs_f64()
    };
    let mut plugin = Vec::new();
    let mut native = Vec::new();
    for _ in 0..3 {
        let wasm: Arc<dyn Destination> = Arc::new(
            runtime
                .block_on(WasmDestination::new(config, HostPolicy::for_run()))
                .unwrap(),
        );
        plugin.push(run(wasm));
        native.push(run(Arc::new(NativeSum)));
    }
    plugin.sort_by(f64::total_cmp);
    native.sort_by(f64::total_cmp);
    let (p, n) = (plugin[1], native[1]);
    println!("end to end, dummy -> pipeline -> bench_sum.wasm, median of 3: {p:.0} records/s");
    println!("end to end, dummy -> pipeline -> native sum, median of 3: {n:.0} records/s");
    println!("end to end native / plugin: {:.2}x", n / p);
}

/// `bizon-host run --plugin bench_sum.wasm` on one record from stdin, warm
/// cache: the whole process, from exec to exit.
fn binary_startup(wasm: &Path, cache: &PathBuf) {
    let bin = env!("CARGO_BIN_EXE_bizon-host");
    let run = || {
        let t = Instant::now();
        let mut child = Command::new(bin)
            .args(["run", "--plugin"])
            .arg(wasm)
            .env("BIZON_HOST_CACHE_DIR", cache)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        use std::io::Write;
        child.stdin.take()?.write_all(b"{\"id\":1}\n").ok()?;
        child.wait().ok()?.success().then(|| t.elapsed())
    };
    if run().is_none() {
        println!("binary startup: skipped (`bizon-host run --plugin` did not succeed)");
        return;
    }
    let samples: Vec<_> = (0..10).filter_map(|_| run()).collect();
    println!("`bizon-host run --plugin bench_sum.wasm` with 1 stdin record, warm cache, whole process, median of {}: {:.1} ms",
        samples.len(), median(samples).as_secs_f64() * 1e3);
}
