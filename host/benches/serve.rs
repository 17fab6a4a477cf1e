//! `bizon-host serve` benchmarks, driving the binary through its API.
//!
//! - `isolation`: tenant A's records/s and p99 write latency alone, then
//!   while tenant B runs hostile plugins (spin loop, memory bomb, blocking
//!   sleep, log flood, trap loop) and uploads a 60 MB compile bomb, then
//!   alone again, for several rounds; each round's ratios are against the
//!   mean of the runs alone around it, and the median round is the result.
//! - `density`: many tenants with an idle Kafka pipeline each and some
//!   active ones: memory per idle tenant and API latency.
//! - `api-load`: 500 requests a second of mixed tenant traffic (status,
//!   logs, lists, /metrics, pipeline and plugin PUTs) for BENCH_API_S
//!   seconds (300) while tenant A's pipeline runs again and again: the
//!   latency of each kind of request (from when it was due, so a stalled
//!   server cannot hide its queue), 5xx answers, and A's records/s against
//!   its runs alone before and after.
//!
//! `cargo bench --bench serve -- isolation` (or `density`, `api-load`; BIZON_BENCH_TENANTS
//! sets the number of idle tenants, default 1000; BENCH_B_CPU_CORES sets
//! hostile tenant B's CPU share, default 0.25, A getting the rest of the 2
//! cores; BENCH_A_RECORDS tenant A's records, default 6 M; BENCH_ROUNDS the rounds,
//! default 5). Needs the guests
//! (scripts/build-plugins.sh) and, for density, tansu (scripts/install-kafka.sh).

#[allow(dead_code)]
#[path = "../../tests/e2e/support/common.rs"]
mod common;
#[allow(dead_code)]
#[path = "../../tests/e2e/support/guests.rs"]
mod guests;
#[allow(dead_code)]
#[path = "../../tests/e2e/support/kafka.rs"]
mod kafka;
#[allow(dead_code)]
#[path = "../../tests/e2e/support/serve.rs"]
mod serve;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use serve::{Serve, ADMIN};

fn main() {
    let mut words = std::env::args().skip(1).filter(|a| !a.starts_with('-'));
    let which = words.next();
    // `isolation spin bomb`: only those attacks (default: all of them).
    let attacks: Vec<String> = words.collect();
    println!(
        "machine: {} cores, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| c
                .lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l[13..].trim().to_string()))
            .unwrap_or_default()
    );
    match which.as_deref() {
        Some("isolation") | None => isolation(&attacks),
        Some("density") => density(),
        Some("api-load") => api_load(),
        Some(other) => panic!("unknown bench {other}: isolation, density or api-load"),
    }
    if which.is_none() {
        density();
    }
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// CPU time the process has used (user + system), in seconds.
fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command's `(name)`: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |s| s.1).split_whitespace().collect();
    let ticks = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(14) + ticks(15)) / hz
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The p99 of a pipeline's write latency, from its histogram buckets (an
/// upper bound within one bucket: 25%).
fn p99_ms(serve: &Serve, tenant: &str, pipeline: &str) -> f64 {
    let Value::String(text) = serve.ok("GET", "/metrics", ADMIN, None) else {
        panic!("metrics")
    };
    let prefix = format!("bizon_serve_write_seconds_bucket{{pipeline=\"{pipeline}\",tenant=\"{tenant}\",le=\"");
    let buckets: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (le, count) = rest.split_once("\"} ")?;
            Some((le.parse().unwrap_or(f64::INFINITY), count.parse().ok()?))
        })
        .collect();
    // As Prometheus's histogram_quantile: linear within the bucket the
    // quantile falls in. The buckets grow by ~1.55x, so reading a bucket's
    // upper bound would make any shift a 1.55x change, past the 1.5x target.
    let total = buckets.last().map_or(0.0, |b| b.1);
    let rank = 0.99 * total;
    let mut below = (0.0, 0.0);
    for &(le, count) in &buckets {
        if count >= rank {
            if le.is_infinite() {
                return below.0 * 1000.0;
            }
            let share = if count > below.1 {
                (rank - below.1) / (count - below.1)
            } else {
                1.0
            };
            return (below.0 + (le - below.0) * share) * 1000.0;
        }
        below = (le, count);
    }
    f64::NAN
}

fn plugin(name: &str) -> Vec<u8> {
    std::fs::read(guests::wasm(name)).unwrap()
}

/// A's records: 6 M by default, about two seconds on this machine, long
/// enough for a p99; BENCH_A_RECORDS lengthens the window to average out
/// the machine's noise.
fn a_records() -> u64 {
    std::env::var("BENCH_A_RECORDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(6_000_000)
}

/// Runs tenant A's pipeline `name` to its end: (records/s, p99 ms).
fn run_a(serve: &Serve, token: &str, name: &str) -> (f64, f64) {
    let records = a_records();
    let yaml = format!(
        "name: a\nsource:\n  name: dummy\n  total_records: {records}\n  page_size: 1000\ndestination:\n  name: wasm\n  \
         config:\n    plugin: sum\n    buffer_size: 0\n    max_concurrent_threads: 1\n"
    );
    serve.ok("PUT", &format!("/v1/pipelines/{name}"), token, Some(yaml.into_bytes()));
    let started = Instant::now();
    let cpu = cpu_s(serve.pid());
    serve.ok("POST", &format!("/v1/pipelines/{name}/start"), token, None);
    let status = serve.wait_for(token, name, "completed", |s| s["state"] != "running");
    assert_eq!(status["records_written"], records, "{status}");
    let elapsed = started.elapsed().as_secs_f64();
    let rate = records as f64 / elapsed;
    println!(
        "  {name}: {:.2} s, serve used {:.2} cores meanwhile, load average {}",
        elapsed,
        (cpu_s(serve.pid()) - cpu) / elapsed,
        load_average()
    );
    (rate, p99_ms(serve, "acme", name))
}

/// A component holding one core module of `mib` MiB of straight-line code:
/// cheap to upload, costly to compile (and then refused: it is no plugin).
fn compile_bomb(mib: usize, seed: u8) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    fn section(id: u8, content: &[u8], out: &mut Vec<u8>) {
        out.push(id);
        leb(content.len(), out);
        out.extend_from_slice(content);
    }
    let per_function = 20_000; // `i32.const 1; i32.add` pairs
                               // The seed makes each upload new to the compile cache.
    let mut body = vec![0x00, 0x41, seed & 0x3f];
    for _ in 0..per_function {
        body.extend_from_slice(&[0x41, 0x01, 0x6a]);
    }
    body.push(0x0b);
    let functions = (mib << 20) / body.len();
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    section(1, &[0x01, 0x60, 0x00, 0x01, 0x7f], &mut module);
    let mut funcs = Vec::new();
    leb(functions, &mut funcs);
    funcs.extend(std::iter::repeat_n(0u8, functions));
    section(3, &funcs, &mut module);
    let mut code = Vec::new();
    leb(functions, &mut code);
    for _ in 0..functions {
        leb(body.len(), &mut code);
        code.extend_from_slice(&body);
    }
    section(10, &code, &mut module);
    let mut component = b"\0asm\x0d\0\x01\0".to_vec();
    section(1, &module, &mut component);
    component
}

/// B's attacks: (pipeline name, hostile mode, extra config); `bomb` is the
/// compile-bomb upload.
const ATTACKS: [(&str, &str, &str); 5] = [
    ("spin", "loop", "    limits: {call_timeout_ms: 1000}\n"),
    ("membomb", "memory", "    limits: {memory_mb: 128}\n"),
    ("sleep", "sleep-write", "    limits: {call_timeout_ms: 1000}\n"),
    ("flood", "log-flood", ""),
    ("traps", "panic-write", ""),
];

/// Rounds of A beside B, each between two runs of A alone: 5 by default
/// (BENCH_ROUNDS).
fn rounds() -> u32 {
    std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5)
        .clamp(1, 40)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// One round of tenant B's attacks: its hostile pipelines (started again as
/// soon as they fail; serve refuses starts within a failing pipeline's
/// backoff) and the compile bomb, for 3 s alone and then beside A's run
/// `beside-ROUND`; then B is stopped and its upload cut off, and the host
/// left without a compile before A runs alone again. ((records/s, p99 ms)
/// of A's run, B's starts accepted).
fn beside_hostile_b(
    serve: &Serve,
    a: &str,
    b: &str,
    modes: &[(&str, &str, &str)],
    bomb: Option<&[u8]>,
    round: u32,
) -> ((f64, f64), u32) {
    let stop = AtomicBool::new(false);
    let (measured, restarts, bombed) = std::thread::scope(|s| {
        let restarter = s.spawn(|| {
            let mut restarts = 0;
            while !stop.load(Ordering::Relaxed) {
                for (name, _, _) in modes {
                    let (code, _) = serve.call("POST", &format!("/v1/pipelines/{name}/start"), b, None);
                    restarts += u32::from(code == 200);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            restarts
        });
        let bomber = s.spawn(|| {
            let mut answers = Vec::new();
            while let Some(bomb) = bomb.filter(|_| !stop.load(Ordering::Relaxed)) {
                let started = Instant::now();
                let answer = upload_until(serve, b, bomb, &stop);
                answers.push(format!("{:.1} s: {answer}", started.elapsed().as_secs_f64()));
            }
            answers
        });
        std::thread::sleep(Duration::from_secs(3));
        let measured = run_a(serve, a, &format!("beside-{round}"));
        stop.store(true, Ordering::Relaxed);
        (measured, restarter.join().unwrap(), bomber.join().unwrap())
    });
    for (name, _, _) in modes {
        // Answered once the pipeline's write under way ends; a client
        // timeout here leaves it stopping.
        let _ = serve.send("POST", &format!("/v1/pipelines/{name}/stop"), b, None);
    }
    let waited = Instant::now();
    while children(serve.pid()) > 0 {
        assert!(
            waited.elapsed() < Duration::from_secs(150),
            "a compile outlived its upload"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    if bomb.is_some() {
        println!(
            "  round {round}: bomb uploads {bombed:?}; no compile left {:.1} s after",
            waited.elapsed().as_secs_f64()
        );
    }
    (measured, restarts)
}

/// Uploads `bomb` as tenant B's plugin `bomb` and waits for the answer
/// until `stop`, then hangs up (which ends the compile: the request's
/// future is dropped, and with it the child). The answer's status line, or
/// what cut it short.
fn upload_until(serve: &Serve, token: &str, bomb: &[u8], stop: &AtomicBool) -> String {
    use std::io::{Read, Write};
    let addr = serve.url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let head = format!(
        "PUT /v1/plugins/bomb HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        bomb.len()
    );
    if let Err(e) = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(bomb)) {
        return format!("upload cut off: {e}");
    }
    stream.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let (mut answer, mut buf) = (Vec::new(), [0u8; 4096]);
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => return format!("read: {e}"),
        }
    }
    match answer.is_empty() {
        true => "hung up, unanswered".into(),
        false => String::from_utf8_lossy(&answer)
            .lines()
            .next()
            .unwrap_or("")
            .to_string(),
    }
}

/// How many processes `pid` started that are still there.
fn children(pid: u32) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("stat")).ok())
        .filter(|stat| {
            // `pid (comm) state ppid ...`; comm may hold spaces.
            let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            after.split_whitespace().nth(1) == Some(&pid.to_string())
        })
        .count()
}

fn isolation(only: &[String]) {
    let chosen = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    if let Some(unknown) = only
        .iter()
        .find(|o| *o != "bomb" && !ATTACKS.iter().any(|a| a.0 == o.as_str()))
    {
        panic!("unknown attack {unknown}: spin, membomb, sleep, flood, traps or bomb");
    }
    let modes: Vec<_> = ATTACKS.into_iter().filter(|a| chosen(a.0)).collect();
    let bomb = chosen("bomb");
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(
        &dir.path().join("data"),
        "plugin_memory_budget_mb: 2048\ncompile_concurrency: 1\n",
    );
    // The operator's CPU shares add up to the machine's 2 cores: B, the
    // small tenant, 0.25 of a core; A the rest.
    let b_cores: f64 = std::env::var("BENCH_B_CPU_CORES")
        .ok()
        .filter(|c| !c.is_empty())
        .map_or(0.25, |c| c.parse().expect("BENCH_B_CPU_CORES: a number of cores"));
    let a = serve.tenant("acme", json!({"cpu_cores": 2.0 - b_cores, "pipelines": 100}));
    let b = serve.tenant(
        "bravo",
        json!({"plugin_mb": 64, "memory_mb": 1024, "cpu_cores": b_cores}),
    );
    for t in ["acme", "bravo"] {
        println!(
            "{t}'s limits: {}",
            serve.ok("GET", &format!("/v1/tenants/{t}"), ADMIN, None)["limits"]
        );
    }
    serve.ok("PUT", "/v1/plugins/sum", &a, Some(plugin("bench_sum")));
    serve.ok("PUT", "/v1/plugins/hostile", &b, Some(plugin("hostile")));

    for (name, mode, extra) in &modes {
        let yaml = format!(
            "name: b\nsource:\n  name: dummy\n  total_records: 1000000000\n  page_size: 100\ndestination:\n  name: wasm\n  \
             config:\n    plugin: hostile\n    buffer_size: 0\n    max_concurrent_threads: 1\n    plugin_config: {{mode: {mode}}}\n{extra}"
        );
        serve.ok("PUT", &format!("/v1/pipelines/{name}"), &b, Some(yaml.into_bytes()));
    }
    println!(
        "attacks: {:?}{}",
        modes.iter().map(|m| m.0).collect::<Vec<_>>(),
        if bomb { " + bomb" } else { "" }
    );
    // Made once: a compile cut off caches nothing, so the same bytes
    // compile again at every upload.
    let bomb_bytes = bomb.then(|| compile_bomb(60, 0));
    let peak_rss = std::sync::atomic::AtomicU64::new(0);
    let sampling = AtomicBool::new(true);
    let rounds = rounds();
    let mut alone = Vec::new();
    let mut beside = Vec::new();
    let mut restarts = 0;
    std::thread::scope(|s| {
        s.spawn(|| {
            while sampling.load(Ordering::Relaxed) {
                peak_rss.fetch_max(rss_kib(serve.pid(), "VmRSS:"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        run_a(&serve, &a, "warmup");
        alone.push(run_a(&serve, &a, "alone-0"));
        for round in 1..=rounds {
            let (measured, started) = beside_hostile_b(&serve, &a, &b, &modes, bomb_bytes.as_deref(), round);
            beside.push(measured);
            restarts += started;
            alone.push(run_a(&serve, &a, &format!("alone-{round}")));
        }
        sampling.store(false, Ordering::Relaxed);
    });
    println!("B: {restarts} hostile pipeline (re)starts accepted");
    for (name, _, _) in &modes {
        let s = serve.ok("GET", &format!("/v1/pipelines/{name}"), &b, None);
        println!(
            "  {name}: {} ({} failures in a row) {}",
            s["state"],
            s["failures_in_a_row"],
            s["last_error"]
                .as_str()
                .unwrap_or("")
                .chars()
                .take(150)
                .collect::<String>()
        );
    }
    // The machine's speed drifts by 20-30% over minutes (a plain `bizon-host
    // run` of the same work: 2.8 then 1.9 M records/s two minutes later), so
    // each run beside B is compared with the runs alone just before and
    // after it, and the rounds' ratios are summed up by their median.
    let mut throughput = Vec::new();
    let mut p99 = Vec::new();
    println!("round: A alone before / beside B / alone after (records/s, p99 write ms) -> ratios");
    for (i, &(rate, latency)) in beside.iter().enumerate() {
        let (before, after) = (alone[i], alone[i + 1]);
        let (alone_rate, alone_p99) = ((before.0 + after.0) / 2.0, (before.1 + after.1) / 2.0);
        throughput.push(100.0 * rate / alone_rate);
        p99.push(latency / alone_p99);
        println!(
            "  {}: {:.2} M, {:.2} / {:.2} M, {:.2} / {:.2} M, {:.2} -> {:.1}%, {:.2}x",
            i + 1,
            before.0 / 1e6,
            before.1,
            rate / 1e6,
            latency,
            after.0 / 1e6,
            after.1,
            throughput[i],
            p99[i]
        );
    }
    println!(
        "ratio (median of {rounds} rounds): throughput {:.1}% of alone (target >= 90%), p99 {:.2}x (target <= 1.5x)",
        median(&mut throughput),
        median(&mut p99)
    );
    let Value::String(metrics) = serve.ok("GET", "/metrics", ADMIN, None) else {
        panic!()
    };
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("bizon_serve_plugin_traps_total"))
    {
        println!("  {line}");
    }
    println!(
        "serve RSS: peak {} MiB sampled, VmHWM {} MiB (plugin budget 2048 MiB)",
        peak_rss.load(Ordering::Relaxed) >> 10,
        rss_kib(serve.pid(), "VmHWM:") >> 10
    );
}

fn density() {
    let broker = kafka::broker();
    let tenants: usize = std::env::var("BIZON_BENCH_TENANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let active = 50.min(tenants);
    let topic = kafka::unique("idle");
    broker.create_topic(&topic, 1);
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(&dir.path().join("data"), "plugin_memory_budget_mb: 65536\n");
    let sum = plugin("bench_sum");
    let base = rss_kib(serve.pid(), "VmRSS:");
    let egress = format!("tcp://{}", broker.servers);
    let started = Instant::now();
    let mut tokens = Vec::new();
    for t in 0..tenants {
        let token = serve.tenant(&format!("t{t}"), json!({"egress": [egress], "memory_mb": 64}));
        serve.ok("PUT", "/v1/plugins/sum", &token, Some(sum.clone()));
        let yaml = format!(
            "name: idle\nsource:\n  name: kafka\n  sync_mode: stream\n  bootstrap_servers: {}\n  group_id: g\n  topic: {topic}\n  \
             message_encoding: utf-8\ndestination:\n  name: wasm\n  config:\n    plugin: sum\n    max_concurrent_threads: 1\n    \
             limits: {{memory_mb: 16}}\n",
            broker.servers
        );
        serve.ok("PUT", "/v1/pipelines/idle", &token, Some(yaml.into_bytes()));
        serve.ok("POST", "/v1/pipelines/idle/start", &token, None);
        tokens.push(token);
    }
    let setup = started.elapsed();
    std::thread::sleep(Duration::from_secs(10));
    let idle = rss_kib(serve.pid(), "VmRSS:");
    println!(
        "{tenants} tenants with an idle Kafka pipeline each (set up in {:.0} s): serve RSS {} MiB -> {} MiB, {:.0} KiB per idle tenant",
        setup.as_secs_f64(),
        base >> 10,
        idle >> 10,
        (idle - base) as f64 / tenants as f64
    );
    for token in tokens.iter().take(active) {
        // Small batches: a 50 MB default batch does not fit the 32 MiB instance.
        let yaml = "name: busy\nsource:\n  name: dummy\n  total_records: 100000000\n  page_size: 500\ndestination:\n  name: wasm\n  \
                    config:\n    plugin: sum\n    buffer_size: 2\n    max_concurrent_threads: 1\n    limits: {memory_mb: 32}\n";
        serve.ok("PUT", "/v1/pipelines/busy", token, Some(yaml.as_bytes().to_vec()));
        serve.ok("POST", "/v1/pipelines/busy/start", token, None);
    }
    std::thread::sleep(Duration::from_secs(3));
    // Records the active pipelines wrote while the API was asked: a rate
    // over that window, not one diluted by their start.
    let written = || -> u64 {
        tokens
            .iter()
            .take(active)
            .map(|t| {
                let status = serve.ok("GET", "/v1/pipelines/busy", t, None);
                assert_ne!(status["state"], "failed", "an active pipeline failed: {status}");
                status["records_written"].as_u64().unwrap_or(0)
            })
            .sum()
    };
    let (before, window) = (written(), Instant::now());
    // 50 requests a second for 10 s, as an operator's tools would poll.
    let mut latencies = Vec::new();
    for i in 0..500 {
        let due = window + Duration::from_millis(20 * i as u64);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let token = &tokens[(i * 7919) % tenants];
        let t = Instant::now();
        serve.ok("GET", "/v1/pipelines/idle", token, None);
        latencies.push(t.elapsed());
    }
    let written = (written() - before) as f64 / window.elapsed().as_secs_f64();
    latencies.sort();
    let at =
        |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)].as_secs_f64() * 1000.0;
    println!(
        "with {active} active pipelines ({written:.0} records/s together): GET /v1/pipelines/NAME p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; serve RSS {} MiB; load average {}",
        at(0.5),
        at(0.99),
        at(1.0),
        rss_kib(serve.pid(), "VmRSS:") >> 10,
        load_average()
    );
}

/// The mix of `api-load`, per 100 requests: what tenants' tools and
/// consoles ask most (a pipeline's status, its logs, the lists) and, less
/// often, what changes things (a pipeline saved again, a plugin uploaded
/// again: a new version of the same bytes, so no compile).
const MIX: [(&str, u32); 7] = [
    ("GET status", 40),
    ("GET logs", 20),
    ("GET list", 15),
    ("GET plugin", 9),
    ("PUT pipeline", 10),
    ("GET /metrics", 5),
    ("PUT plugin", 1),
];

const RATE: u64 = 500;

/// `total` requests of the mix, RATE a second from `started`, each sent
/// when it is due whatever the answers before it (an open loop: a server
/// that stalls meets the queue it made, as with real clients), on one
/// thread: (kind, status or 0 when there was no answer, latency from when it
/// was due).
fn load(
    url: &str,
    tokens: &[String],
    sum: &[u8],
    idle: &str,
    started: Instant,
    total: u64,
) -> Vec<(usize, u16, Duration)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let mut answers = Vec::new();
        let mut inflight = tokio::task::JoinSet::new();
        for i in 0..total {
            let due = started + Duration::from_micros(i * 1_000_000 / RATE);
            tokio::time::sleep_until(due.into()).await;
            let token = tokens[(i as usize * 7919) % tokens.len()].as_str();
            // 37 is prime to 100: each 100 requests hold the mix exactly.
            let mut pick = (i * 37 % 100) as u32;
            let kind = MIX
                .iter()
                .position(|&(_, share)| {
                    let here = pick < share;
                    pick = pick.saturating_sub(share);
                    here
                })
                .unwrap();
            let (method, path, token, body) = match MIX[kind].0 {
                "GET status" => ("GET", "/v1/pipelines/p", token, None),
                "GET logs" => ("GET", "/v1/pipelines/p/logs", token, None),
                "GET list" => ("GET", "/v1/pipelines", token, None),
                "GET plugin" => ("GET", "/v1/plugins/sum", token, None),
                "PUT pipeline" => ("PUT", "/v1/pipelines/q", token, Some(idle.as_bytes().to_vec())),
                "GET /metrics" => ("GET", "/metrics", ADMIN, None),
                _ => ("PUT", "/v1/plugins/sum", token, Some(sum.to_vec())),
            };
            let mut request = client
                .request(method.parse().unwrap(), format!("{url}{path}"))
                .bearer_auth(token);
            if let Some(body) = body {
                request = request.body(body);
            }
            inflight.spawn(async move {
                let status = match request.send().await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        response.bytes().await.map_or(0, |_| status)
                    }
                    Err(_) => 0,
                };
                (kind, status, due.elapsed())
            });
            while let Some(answer) = inflight.try_join_next() {
                answers.push(answer.unwrap());
            }
        }
        answers.extend(inflight.join_all().await);
        answers
    })
}

fn api_load() {
    const TENANTS: usize = 10;
    let seconds: u64 = std::env::var("BENCH_API_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(&dir.path().join("data"), "plugin_memory_budget_mb: 2048\n");
    let a = serve.tenant("acme", json!({"pipelines": 1000}));
    let sum = plugin("bench_sum");
    serve.ok("PUT", "/v1/plugins/sum", &a, Some(sum.clone()));
    let idle =
        "name: p\nsource:\n  name: dummy\n  total_records: 1000\n  page_size: 100\ndestination:\n  name: wasm\n  \
                config:\n    plugin: sum\n    buffer_size: 0\n";
    let tokens: Vec<String> = (0..TENANTS)
        .map(|t| {
            let token = serve.tenant(&format!("t{t}"), json!({}));
            serve.ok("PUT", "/v1/plugins/sum", &token, Some(sum.clone()));
            serve.ok("PUT", "/v1/pipelines/p", &token, Some(idle.as_bytes().to_vec()));
            serve.ok("POST", "/v1/pipelines/p/start", &token, None);
            serve.wait_for(&token, "p", "completed", |s| s["state"] == "completed");
            token
        })
        .collect();

    let mut alone: Vec<f64> = (0..rounds())
        .map(|r| run_a(&serve, &a, &format!("alone-{r}")).0)
        .collect();
    let started = Instant::now() + Duration::from_millis(100);
    let total = RATE * seconds;
    let (answers, mut loaded) = std::thread::scope(|s| {
        let load = s.spawn(|| load(&serve.url, &tokens, &sum, idle, started, total));
        // A's pipeline, again and again while the load lasts.
        let mut loaded = Vec::new();
        while started.elapsed() < Duration::from_secs(seconds.saturating_sub(5)) {
            loaded.push(run_a(&serve, &a, &format!("loaded-{}", loaded.len())).0);
        }
        (load.join().unwrap(), loaded)
    });
    let took = started.elapsed().as_secs_f64();
    alone.extend((0..rounds()).map(|r| run_a(&serve, &a, &format!("after-{r}")).0));

    println!(
        "{} requests in {took:.0} s ({:.0}/s) for {TENANTS} tenants; latency from when each was due:",
        answers.len(),
        answers.len() as f64 / took
    );
    let report = |what: &str, mut latencies: Vec<Duration>, failed: usize| {
        latencies.sort();
        let at =
            |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)].as_secs_f64() * 1000.0;
        println!(
            "  {what:<13} {:>7} requests: p50 {:6.1} ms, p99 {:6.1} ms, max {:7.1} ms; 5xx or no answer: {failed}",
            latencies.len(),
            at(0.5),
            at(0.99),
            at(1.0)
        );
    };
    let failed = |status: u16| status == 0 || status >= 500;
    for (kind, (what, _)) in MIX.iter().enumerate() {
        let of_kind: Vec<_> = answers.iter().filter(|a| a.0 == kind).collect();
        report(
            what,
            of_kind.iter().map(|a| a.2).collect(),
            of_kind.iter().filter(|a| failed(a.1)).count(),
        );
    }
    let refused: Vec<_> = answers.iter().filter(|a| !failed(a.1) && a.1 >= 400).collect();
    if let Some(first) = refused.first() {
        println!(
            "  {} refused with 4xx (the first: {} {})",
            refused.len(),
            MIX[first.0].0,
            first.1
        );
    }
    report(
        "all",
        answers.iter().map(|a| a.2).collect(),
        answers.iter().filter(|a| failed(a.1)).count(),
    );
    let alone_rate = median(&mut alone);
    let loaded_rate = median(&mut loaded);
    println!(
        "A's records/s: alone (before and after, median of {}) {alone_rate:.0}, under the load (median of {}) {loaded_rate:.0}: {:.0}%; load average {}",
        alone.len(),
        loaded.len(),
        100.0 * loaded_rate / alone_rate,
        load_average()
    );
}
