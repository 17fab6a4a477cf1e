//! End-to-end: two `bizon-host serve` processes, each with its own data dir
//! and port, share one PostgreSQL registry (a private cluster). What one
//! host is told, the other follows: a Kafka pipeline runs on both, its
//! partitions shared by its consumer group, and every record lands once,
//! also after one host is killed; a run failing on one host leaves it to
//! the other until it starts again; a dummy pipeline runs on one host at a
//! time and moves when its host dies; tenants stay apart on either host.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::kafka::{broker, unique};
use crate::support::postgres;
use crate::support::serve::{body as yaml, csv_rows, kafka_positions, Serve, SharedRegistry, ADMIN};
use crate::support::{bizon_host, python_runtime, wait_until, wasm};

pub(crate) fn hosts_running(status: &Value) -> Vec<String> {
    status["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["state"] == "running")
        .map(|h| h["host"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn two_hosts_share_a_registry_split_kafka_partitions_and_move_a_dummy_pipeline_when_one_dies() {
    let pg = postgres::start();
    let broker = broker();
    python_runtime();
    let dir = tempfile::tempdir().unwrap();
    let registry = SharedRegistry::new(&pg.url, dir.path());
    let (data1, data2) = (registry.data("h1"), registry.data("h2"));
    let mut h1 = registry.start("h1");
    let h2 = registry.start("h2");

    // A tenant made through host 1 uploads through host 2; host 1 fetches
    // the bytes from the registry when it first needs them.
    let egress = format!("tcp://{}", broker.servers);
    // Room for the Python transform runtime's instances besides the plugin's.
    let a = h1.tenant("acme", json!({"egress": [egress], "memory_mb": 1536, "instances": 6}));
    let b = h1.tenant("bravo", json!({}));
    h2.ok(
        "PUT",
        "/v1/plugins/csv",
        &a,
        Some(std::fs::read(wasm("bizon_csv")).unwrap()),
    );
    assert_eq!(h1.ok("GET", "/v1/plugins/csv", &a, None)["versions"][0]["version"], 1);

    let topic = unique("hosts");
    broker.create_topic(&topic, 4);
    let kafka_yaml = format!(
        "name: k\nsource:\n  name: kafka\n  sync_mode: stream\n  bootstrap_servers: {}\n  group_id: g\n  topic: {topic}\n  \
         message_encoding: utf-8\n  batch_size: 20\n  consumer_config:\n    session.timeout.ms: 6000\n    \
         heartbeat.interval.ms: 500\ntransforms:\n  - label: flag\n    python: |\n      import os\n      \
         if os.path.exists('/flags/fail'):\n          raise RuntimeError('this host is flagged')\n    allow:\n      \
         dirs: [{{host: flags}}]\ndestination:\n  name: wasm\n  config:\n    plugin: csv\n    \
         buffer_size: 0\n    buffer_flush_timeout: 0\n    plugin_config: {{dir: /out}}\n    allow:\n      dirs:\n        \
         - {{host: out, guest: /out, writable: true, max_mb: 50}}\n",
        broker.servers
    );
    h2.ok("PUT", "/v1/pipelines/k", &a, yaml(&kafka_yaml));
    h2.ok("POST", "/v1/pipelines/k/start", &a, None);
    // Host 1 starts it at its next reconcile: both run it.
    h1.wait_for(&a, "k", "both hosts running", |s| hosts_running(s) == ["h1", "h2"]);
    // Records sent while the group rebalances may be read twice (at least
    // once, as with `run` replicas): send them once each host holds 2 of the 4.
    let holds_two = |serve: &Serve| {
        serve
            .log()
            .lines()
            .any(|l| l.contains("partitions assigned") && l.contains("partitions=2"))
    };
    wait_until("the group to share the partitions", || holds_two(&h1) && holds_two(&h2));

    let produce = |from: usize, n: usize| {
        let p = broker.producer();
        for i in from..from + n {
            let value = format!("{{\"id\":{i}}}");
            p.send(&topic, (i % 4) as i32, None, Some(value.as_bytes()), &[]);
            if i % 50 == 0 {
                p.flush();
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        p.flush();
    };
    produce(0, 400);
    let group = "bizon-serve.acme.g";
    let hosts = [data1.as_path(), data2.as_path()];
    wait_until("400 rows and their commits", || {
        kafka_positions(&hosts).len() >= 400 && broker.committed(group, &topic, 4) == broker.high_watermarks(&topic, 4)
    });
    let status = h2.wait_for(&a, "k", "the counters of both hosts", |s| s["records_written"] == 400);
    assert_eq!(hosts_running(&status), ["h1", "h2"], "{status}");
    let mut positions = kafka_positions(&hosts);
    positions.sort();
    positions.dedup();
    assert_eq!(positions.len(), 400, "duplicates");
    for data in hosts {
        assert!(!kafka_positions(&[data]).is_empty(), "{} wrote none", data.display());
    }

    // Changes through host 1 reach host 2 at its next reconcile: a tenant's
    // limits, and a plugin pin, swapped in between batches.
    h1.ok(
        "PATCH",
        "/v1/tenants/acme",
        ADMIN,
        yaml(r#"{"limits": {"cpu_cores": 0.5}}"#),
    );
    wait_until("host 2 to reload the limits", || {
        h2.ok("GET", "/v1/tenants/acme", ADMIN, None)["limits"]["cpu_cores"] == 0.5
    });
    let csv = std::fs::read(wasm("bizon_csv")).unwrap();
    assert_eq!(h1.ok("PUT", "/v1/plugins/csv", &a, Some(csv))["version"], 2);
    let pinned = kafka_yaml.replace("plugin: csv\n", "plugin: csv@2\n");
    assert_ne!(pinned, kafka_yaml);
    h1.ok("PUT", "/v1/pipelines/k", &a, yaml(&pinned));
    h2.wait_for(&a, "k", "both hosts on version 2", |s| {
        let hosts = s["hosts"].as_array().unwrap();
        hosts.len() == 2 && hosts.iter().all(|h| h["plugin_version"] == 2)
    });

    // A run that fails on one host leaves the pipeline running on the
    // other, which takes its partitions; the failed host starts it again
    // after its backoff, at a reconcile.
    let flag = data1.join("tenants/acme/files/flags/fail");
    std::fs::write(&flag, "").unwrap();
    produce(400, 100);
    h1.wait_for(&a, "k", "the run on host 1 to fail", |s| {
        s["failures_in_a_row"].as_u64() >= Some(1)
            && s["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("this host is flagged"))
    });
    wait_until("host 2 to write all 500 rows", || {
        let mut positions = kafka_positions(&hosts);
        positions.sort();
        positions.dedup();
        positions.len() >= 500
    });
    let status = h2.ok("GET", "/v1/pipelines/k", &a, None);
    assert!(hosts_running(&status).contains(&"h2".to_string()), "{status}");
    std::fs::remove_file(&flag).unwrap();
    h2.wait_for(&a, "k", "host 1 running it again", |s| hosts_running(s) == ["h1", "h2"]);

    // A dummy pipeline (no offsets to share) runs on one host only. It must
    // still be running when the test looks, however slow the machine: a
    // transform paces it (93 records/s measured, under 40 kB/s of csv), so
    // its 50 MiB grant lasts over 20 minutes. (Unpaced, it filled the grant
    // and failed before a loaded machine's test looked; `sleep:` of Bizon's
    // dummy source is read but not acted on by bizon-host.)
    let dummy_yaml = "name: d\nsource:\n  name: dummy\n  stream: s\n  total_records: 1000000\n  page_size: 10\n\
                      transforms:\n  - label: pace\n    python: |\n      import time\n      time.sleep(0.02)\n\
                      destination:\n  name: wasm\n  config:\n    plugin: csv\n    buffer_size: 0\n    \
                      buffer_flush_timeout: 0\n    plugin_config: {dir: /dout}\n    allow:\n      dirs:\n        \
                      - {host: dout, guest: /dout, writable: true, max_mb: 50}\n";
    h1.ok("PUT", "/v1/pipelines/d", &a, yaml(dummy_yaml));
    h1.ok("POST", "/v1/pipelines/d/start", &a, None);
    let (status, err) = h2.call("POST", "/v1/pipelines/d/start", &a, None);
    assert_eq!(
        (status, err["error"]["code"].clone()),
        (409, json!("conflict")),
        "{err}"
    );
    assert!(
        err["error"]["message"].as_str().unwrap().contains("runs on host `h1`"),
        "{err}"
    );
    h2.wait_for(&a, "d", "host 1 reported", |s| hosts_running(s) == ["h1"]);
    wait_until("host 1 writes the dummy pipeline", || {
        !csv_rows(&data1.join("tenants/acme/files/dout")).is_empty()
    });
    // Several reconciles later, still only host 1 writes it.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(hosts_running(&h2.ok("GET", "/v1/pipelines/d", &a, None)), ["h1"]);
    assert!(csv_rows(&data2.join("tenants/acme/files/dout")).is_empty());

    // Tenant B, on host 2, finds none of A's names.
    h2.assert_not_found(
        &b,
        &[
            ("GET", "/v1/pipelines/k"),
            ("GET", "/v1/pipelines/d"),
            ("POST", "/v1/pipelines/d/stop"),
            ("POST", "/v1/pipelines/k/start"),
            ("DELETE", "/v1/pipelines/k"),
            ("GET", "/v1/plugins/csv"),
        ],
    );
    assert_eq!(h2.ok("GET", "/v1/pipelines", &b, None)["pipelines"], json!([]));

    // Host 1 dies. Host 2 takes every partition once the group drops host
    // 1, and the dummy pipeline once host 1's lease expires.
    let killed = Instant::now();
    h1.kill();
    produce(500, 200);
    wait_until("all 700 rows", || kafka_positions(&hosts).len() >= 700);
    let mut positions = kafka_positions(&hosts);
    assert_eq!(positions.len(), 700, "rows written");
    positions.sort();
    positions.dedup();
    assert_eq!(positions.len(), 700, "duplicates");
    let status = h2.wait_for(&a, "d", "host 2 took the dummy pipeline", |s| {
        hosts_running(s) == ["h2"]
    });
    assert_eq!(status["state"], "running");
    wait_until("host 2 writes the dummy pipeline", || {
        !csv_rows(&data2.join("tenants/acme/files/dout")).is_empty()
    });
    eprintln!("took over in {:.1} s", killed.elapsed().as_secs_f64());
    let k = h2.ok("GET", "/v1/pipelines/k", &a, None);
    assert_eq!(hosts_running(&k), ["h2"], "{k}");
    wait_until("the commits", || {
        broker.committed(group, &topic, 4) == broker.high_watermarks(&topic, 4)
    });

    // A stop through host 2 is the registry's: nothing runs it any more.
    h2.ok("POST", "/v1/pipelines/d/stop", &a, None);
    assert_eq!(h2.ok("GET", "/v1/pipelines/d", &a, None)["hosts"], json!([]));
}

#[test]
fn an_unreachable_registry_is_named_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 1.
    let out = bizon_host()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(["--registry", "postgres://bizon:s3cret-pw@127.0.0.1:1/reg"])
        .env("BIZON_HOST_ADMIN_TOKEN", ADMIN)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("registry postgres://bizon:***@127.0.0.1:1/reg"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret-pw"), "{stderr}");
}
