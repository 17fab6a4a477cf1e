//! End-to-end: `bizon-host serve` driven only through its HTTP API. Two
//! tenants upload real plugins and run pipelines (dummy, and Kafka through
//! tansu); every record lands once; a tenant cannot see or touch another's
//! things nor grant itself what its ceiling does not hold; a plugin upgrade
//! mid-run and a restart of the server lose and duplicate nothing.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::guests::wrong_version;
use crate::support::kafka::{broker, broker_advertising, broker_of_its_own, unique};
use crate::support::serve::{body as yaml, csv_files, kafka_positions, Serve, ADMIN};
use crate::support::{bizon_host, python_runtime, wasm};

/// A guest's bytes, for an upload.
fn plugin(name: &str) -> Vec<u8> {
    std::fs::read(wasm(name)).unwrap()
}

/// A dummy source into the csv plugin, writing under the tenant's `out`.
fn dummy_to_csv(records: u64, plugin: &str) -> String {
    format!(
        "name: e2e\nsource:\n  name: dummy\n  stream: s\n  total_records: {records}\n  page_size: 100\n  \
         destination_ids: [users, orders]\ndestination:\n  name: wasm\n  config:\n    plugin: {plugin}\n    \
         buffer_size: 0\n    buffer_flush_timeout: 0\n    plugin_config: {{dir: /out}}\n    allow:\n      dirs:\n        \
         - {{host: out, guest: /out, writable: true, max_mb: 50}}\n"
    )
}

/// A dummy source into tests/plugins/my-dest, appending source_data to `out/records.jsonl`.
fn dummy_to_my_dest(records: u64) -> String {
    format!(
        "name: e2e\nsource:\n  name: dummy\n  total_records: {records}\ndestination:\n  name: wasm\n  config:\n    \
         plugin: mine\n    plugin_config: {{path: /out/records.jsonl}}\n    allow:\n      dirs:\n        \
         - {{host: out, guest: /out, writable: true, max_mb: 10}}\n"
    )
}

#[test]
fn two_tenants_run_pipelines_side_by_side_and_neither_can_reach_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(&dir.path().join("data"), "limits:\n  plugin_mb: 8\n");
    let a = serve.tenant("acme", json!({}));
    let b = serve.tenant("bravo", json!({"instances": 2}));
    let c = serve.tenant("charlie", json!({"plugin_mb": 1}));

    // Tokens: a tenant's is not the admin's, a made-up one is nobody's.
    assert_eq!(serve.call("POST", "/v1/tenants", &a, yaml("{\"name\":\"x\"}")).0, 403);
    assert_eq!(serve.call("GET", "/v1/pipelines", "bzt_guess", None).0, 401);
    assert_eq!(serve.call("GET", "/v1/pipelines", "", None).0, 401);
    let (status, dup) = serve.call("POST", "/v1/tenants", ADMIN, yaml("{\"name\":\"acme\"}"));
    assert_eq!((status, dup["error"]["code"].clone()), (409, json!("conflict")));

    // Each uploads the csv plugin under the same name: two tenants, two plugins.
    let up = serve.ok("PUT", "/v1/plugins/csv", &a, Some(plugin("bizon_csv")));
    assert_eq!(
        (up["version"].clone(), up["describe"]["name"].clone()),
        (json!(1), json!("csv"))
    );
    assert!(up["digest"].as_str().unwrap().len() == 64);
    assert!(up["imports"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i.as_str().unwrap().starts_with("wasi:filesystem")));
    // charlie's limit is 1 MiB; the csv plugin is larger. The server answers
    // 413 without reading the rest, so the client may instead see the
    // connection closed under it while still sending.
    match serve.send("PUT", "/v1/plugins/csv", &c, Some(plugin("bizon_csv"))) {
        Ok((status, err)) => {
            assert_eq!(
                (status, err["error"]["code"].clone()),
                (413, json!("too_large")),
                "{err}"
            );
            assert!(
                err["error"]["message"].as_str().unwrap().contains("limit of 1 MiB"),
                "{err}"
            );
        }
        Err(e) => assert!(e.is_request(), "{e}"),
    }
    assert_eq!(serve.call("GET", "/v1/plugins/csv", &c, None).0, 404);
    // A tenant whose memory share is under the default instance size can
    // still upload: describe runs inside its share.
    let d = serve.tenant("delta", json!({"memory_mb": 64}));
    serve.ok("PUT", "/v1/plugins/mine", &d, Some(plugin("my_dest")));
    serve.ok("PUT", "/v1/plugins/mine", &b, Some(plugin("my_dest")));
    // Not a component, not a plugin of this contract.
    let (status, err) = serve.call("PUT", "/v1/plugins/junk", &a, Some(b"\0asm junk".to_vec()));
    assert_eq!(status, 422, "{err}");
    let wrong_version = std::fs::read(wrong_version(dir.path())).unwrap();
    let (status, err) = serve.call("PUT", "/v1/plugins/old", &a, Some(wrong_version));
    assert!(
        status == 422 && err["error"]["message"].as_str().unwrap().contains("bizon:destination@"),
        "{err}"
    );

    // Both run a pipeline named `p`.
    serve.ok("PUT", "/v1/pipelines/p", &a, yaml(&dummy_to_csv(3000, "csv")));
    serve.ok("PUT", "/v1/pipelines/secret", &a, yaml(&dummy_to_csv(10, "csv@1")));
    let b_yaml = dummy_to_my_dest(2000);
    serve.ok("PUT", "/v1/pipelines/p", &b, yaml(&b_yaml));
    serve.ok("POST", "/v1/pipelines/p/start", &a, None);
    serve.ok("POST", "/v1/pipelines/p/start", &b, None);
    let done_a = serve.wait_for(&a, "p", "completed", |s| s["state"] == "completed");
    let done_b = serve.wait_for(&b, "p", "completed", |s| s["state"] == "completed");
    assert_eq!(
        (done_a["records_written"].clone(), done_a["plugin_version"].clone()),
        (json!(3000), json!(1))
    );
    assert_eq!(done_b["records_written"], 2000);
    // Every record once, in acme's own directory.
    let rows = csv_files(&serve.data.join("tenants/acme/files/out"));
    assert_eq!(rows.keys().collect::<Vec<_>>(), ["orders.csv", "users.csv"]);
    let mut ids: Vec<String> = rows
        .values()
        .flatten()
        .map(|r| r.split(',').nth(3).unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 3000);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3000, "duplicates");
    let bravo_rows = std::fs::read_to_string(serve.data.join("tenants/bravo/files/out/records.jsonl")).unwrap();
    assert_eq!(bravo_rows.lines().count(), 2000);

    // bravo cannot list, read, start, stop, replace or delete acme's things:
    // each answers exactly what a name nobody has answers.
    serve.assert_not_found(
        &b,
        &[
            ("GET", "/v1/pipelines/secret"),
            ("POST", "/v1/pipelines/secret/start"),
            ("POST", "/v1/pipelines/secret/stop"),
            ("GET", "/v1/pipelines/secret/logs"),
            ("DELETE", "/v1/pipelines/secret"),
            ("GET", "/v1/plugins/csv"),
        ],
    );
    let listed = serve.ok("GET", "/v1/pipelines", &b, None);
    assert_eq!(listed["pipelines"].as_array().unwrap().len(), 1);
    assert_eq!(
        serve.ok("GET", "/v1/plugins", &b, None)["plugins"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // A pipeline of bravo's naming acme's plugin finds none.
    let (status, err) = serve.call("PUT", "/v1/pipelines/steal", &b, yaml(&dummy_to_csv(10, "csv")));
    assert!(
        status == 422 && err["error"]["message"].as_str().unwrap().contains("no plugin `csv`"),
        "{err}"
    );
    // acme's `secret` is untouched and its plugin has one version.
    assert_eq!(
        serve.ok("GET", "/v1/pipelines/secret", &a, None)["state"],
        "never_started"
    );
    assert_eq!(
        serve.ok("GET", "/v1/plugins/csv", &a, None)["versions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(serve.call("DELETE", "/v1/tenants/acme", &b, None).0, 403);

    // Nor grant itself directories, hosts, the host's environment or files.
    let with_allow = |allow: &str| {
        format!("name: x\nsource:\n  name: dummy\n  total_records: 1\ndestination:\n  name: wasm\n  config:\n    plugin: mine\n    allow:\n{allow}")
    };
    for (what, text) in [
        ("absolute dir", with_allow("      dirs: [{host: /etc, guest: /etc}]\n")),
        ("`..`", with_allow("      dirs: [{host: ../../acme/files, guest: /x}]\n")),
        ("`..` inside", with_allow("      dirs: [{host: out/../../../acme, guest: /x}]\n")),
        ("host outside the ceiling", with_allow("      hosts: [\"https://example.com\"]\n")),
        ("environment", with_allow("      env: [BIZON_HOST_ADMIN_TOKEN]\n")),
        ("secret from a file", with_allow("      secrets: {k: {from: \"file:/etc/passwd\", host: \"https://example.com\"}}\n")),
        ("disk over quota", with_allow("      dirs: [{host: out, writable: true, max_mb: 999999}]\n")),
        ("jsonl source", "name: x\nsource:\n  name: jsonl\n  path: /etc/passwd\ndestination:\n  name: wasm\n  config:\n    plugin: mine\n".into()),
        ("file destination", "name: x\nsource:\n  name: dummy\ndestination:\n  name: file\n  config:\n    path: /tmp\n".into()),
        ("host environment", "name: x\nsource:\n  name: dummy\ndestination:\n  name: wasm\n  config:\n    plugin: ${BIZON_HOST_ADMIN_TOKEN}\n".into()),
        ("transforms (a `wasm:` one names a host path)", "name: x\nsource:\n  name: dummy\ntransforms:\n  - label: t\n    wasm: /etc/passwd\ndestination:\n  name: wasm\n  config:\n    plugin: mine\n".into()),
        ("kafka outside the ceiling", "name: x\nsource:\n  name: kafka\n  bootstrap_servers: 127.0.0.1:9092\n  topic: t\ndestination:\n  name: wasm\n  config:\n    plugin: mine\n".into()),
    ] {
        let (status, err) = serve.call("PUT", "/v1/pipelines/x", &b, yaml(&text));
        assert_eq!(status, 422, "{what}: {err}");
        assert!(err["error"]["message"].as_str().unwrap().contains("pipelines/x.yaml"), "{what}: {err}");
        assert!(!err.to_string().contains(ADMIN), "{what}: the admin token leaked: {err}");
    }
    // Path tricks and odd names.
    for path in ["/v1/pipelines/..%2Facme", "/v1/pipelines/A", "/v1/pipelines/a%20b"] {
        let (status, _) = serve.call("PUT", path, &b, yaml(&b_yaml));
        assert!(status == 422 || status == 404, "{path}: {status}");
    }
    // A body far over the limit is cut off, not read: the answer is 413, or
    // the connection closes under the client still sending.
    match serve.send("PUT", "/v1/pipelines/big", &b, Some(vec![b'#'; 4 << 20])) {
        Ok((status, body)) => assert_eq!((status, body["error"]["code"].clone()), (413, json!("too_large"))),
        Err(e) => assert!(e.is_request(), "{e}"),
    }
    assert_eq!(serve.call("GET", "/v1/pipelines/big", &b, None).0, 404);

    // Logs, metrics, the page, the document.
    let logs = serve.ok("GET", "/v1/pipelines/p/logs", &a, None);
    let lines = logs["lines"].as_array().unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l["message"].as_str().unwrap().contains("pipeline started")),
        "{logs}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["message"].as_str().unwrap().contains("pipeline completed")),
        "{logs}"
    );
    let b_logs = serve.ok("GET", "/v1/pipelines/p/logs", &b, None);
    assert!(!b_logs.to_string().contains("acme"), "{b_logs}");
    assert_eq!(serve.call("GET", "/metrics", &a, None).0, 403);
    let Value::String(metrics) = serve.ok("GET", "/metrics", ADMIN, None) else {
        panic!()
    };
    assert!(
        metrics.contains("bizon_serve_records_written_total{pipeline=\"p\",tenant=\"acme\"} 3000"),
        "{metrics}"
    );
    assert!(
        metrics.contains("bizon_serve_records_written_total{pipeline=\"p\",tenant=\"bravo\"} 2000"),
        "{metrics}"
    );
    assert!(
        metrics.contains("bizon_serve_write_seconds_count{pipeline=\"p\",tenant=\"acme\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("bizon_serve_plugin_compile_seconds_count{tenant=\"acme\"} 1"),
        "{metrics}"
    );
    let console = serve.console([127, 0, 0, 1]);
    let session = console.login(ADMIN).1.unwrap();
    let page = console.page(&session, "/ui");
    assert!(
        page.contains(">acme<") && page.contains(">bravo<") && page.contains("completed"),
        "{page}"
    );
    let openapi = serve.ok("GET", "/v1/openapi.json", "", None);
    for (path, ops) in openapi["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys().filter(|m| *m != "parameters") {
            let concrete = path.replace("{name}", "p").replace("{tenant}", "acme");
            let (_, body) = serve.call(&method.to_uppercase(), &concrete, "nobody", None);
            assert_ne!(
                body["error"]["code"], "no_route",
                "{method} {path} is documented, not routed"
            );
        }
    }
    assert_eq!(
        serve.call("GET", "/v1/nothing", ADMIN, None).1["error"]["code"],
        "no_route"
    );

    // Deleting a tenant removes everything of it; its token stops working.
    serve.ok("DELETE", "/v1/tenants/acme", ADMIN, None);
    assert!(!serve.data.join("tenants/acme").exists());
    assert_eq!(serve.call("GET", "/v1/pipelines", &a, None).0, 401);
    assert_eq!(serve.ok("GET", "/v1/pipelines/p", &b, None)["records_written"], 2000);
}

#[test]
fn a_kafka_pipeline_survives_a_plugin_upgrade_mid_run_and_a_restart_without_loss_or_duplicates() {
    let broker = broker();
    let topic = unique("serve");
    broker.create_topic(&topic, 2);
    let produce = |from: usize, n: usize, pause: Duration| {
        let p = broker.producer();
        for i in from..from + n {
            let value = format!("{{\"id\":{i}}}");
            p.send(&topic, (i % 2) as i32, None, Some(value.as_bytes()), &[]);
            if !pause.is_zero() && i % 20 == 0 {
                p.flush();
                std::thread::sleep(pause);
            }
        }
        p.flush();
    };
    produce(0, 300, Duration::ZERO);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut serve = Serve::start(&data, "");
    let egress = format!("tcp://{}", broker.servers);
    let a = serve.tenant("acme", json!({"egress": [egress]}));
    serve.ok("PUT", "/v1/plugins/csv", &a, Some(plugin("bizon_csv")));
    let pipeline = |version: u32| {
        format!(
            "name: k\nsource:\n  name: kafka\n  sync_mode: stream\n  bootstrap_servers: {}\n  group_id: g\n  topic: {topic}\n  \
             message_encoding: utf-8\n  batch_size: 20\n  consumer_config:\n    session.timeout.ms: 6000\n    \
             heartbeat.interval.ms: 500\ndestination:\n  name: wasm\n  config:\n    plugin: csv@{version}\n    \
             buffer_size: 0\n    buffer_flush_timeout: 0\n    plugin_config: {{dir: /out}}\n    allow:\n      dirs:\n        \
             - {{host: out, guest: /out, writable: true, max_mb: 50}}\n",
            broker.servers
        )
    };
    serve.ok("PUT", "/v1/pipelines/k", &a, yaml(&pipeline(1)));
    serve.ok("POST", "/v1/pipelines/k/start", &a, None);
    serve.wait_for(&a, "k", "300 written", |s| s["records_written"] == 300);

    // v2 while records flow: the swap happens between two batches.
    let v2 = serve.ok("PUT", "/v1/plugins/csv", &a, Some(plugin("bizon_csv")));
    assert_eq!(v2["version"], 2);
    std::thread::scope(|s| {
        s.spawn(|| produce(300, 600, Duration::from_millis(15)));
        std::thread::sleep(Duration::from_millis(200));
        let put = serve.ok("PUT", "/v1/pipelines/k", &a, yaml(&pipeline(2)));
        assert_eq!(put["plugin_swapped"], true, "{put}");
    });
    let status = serve.wait_for(&a, "k", "900 written", |s| s["records_written"] == 900);
    assert_eq!(status["plugin_version"], 2);
    let logs = serve.ok("GET", "/v1/pipelines/k/logs", &a, None).to_string();
    assert!(logs.contains("swapped from version 1 to 2"), "{logs}");

    // A restart: the pipeline resumes from the group's committed offsets.
    serve.stop();
    produce(900, 100, Duration::ZERO);
    let serve = Serve::start(&data, "");
    let status = serve.wait_for(&a, "k", "the 100 new ones", |s| s["records_written"] == 100);
    assert_eq!(
        (status["state"].clone(), status["plugin_version"].clone()),
        (json!("running"), json!(2))
    );

    let mut positions = kafka_positions(&[&data]);
    assert_eq!(positions.len(), 1000, "rows written");
    positions.sort();
    positions.dedup();
    assert_eq!(positions.len(), 1000, "duplicates");
    let group = "bizon-serve.acme.g";
    serve.wait_for(&a, "k", "the commit", |_| {
        broker.committed(group, &topic, 2) == broker.high_watermarks(&topic, 2)
    });
}

#[test]
fn the_client_subcommands_drive_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(&dir.path().join("data"), "");
    let client = |token: &str, args: &[&str]| {
        let output = bizon_host()
            .args(args)
            .env("BIZON_HOST_URL", &serve.url)
            .env("BIZON_HOST_TOKEN", token)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        (
            output.status.code(),
            serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text)),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, created, err) = client(ADMIN, &["tenant", "create", "acme", "--limits", "{\"pipelines\": 1}"]);
    assert_eq!(code, Some(0), "{err}");
    let token = created["token"].as_str().unwrap().to_string();
    assert_eq!(created["limits"]["pipelines"], 1);
    let wasm = wasm("my_dest");
    let (code, pushed, err) = client(&token, &["plugin", "push", "mine", wasm.to_str().unwrap()]);
    assert_eq!((code, pushed["version"].clone()), (Some(0), json!(1)), "{err}");
    let file = dir.path().join("p.yaml");
    std::fs::write(&file, dummy_to_my_dest(500)).unwrap();
    let (code, _, err) = client(&token, &["pipeline", "put", "p", file.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    // Its limit is one pipeline.
    let (code, _, err) = client(&token, &["pipeline", "put", "q", file.to_str().unwrap()]);
    assert!(code == Some(1) && err.contains("limit of 1 pipelines"), "{err}");
    // The operator raises it; `null` returns a key to the default.
    let (code, changed, err) = client(
        ADMIN,
        &["tenant", "limits", "acme", "{\"pipelines\": 2, \"cpu_cores\": 0.5}"],
    );
    assert_eq!(
        (code, changed["limits"]["pipelines"].clone()),
        (Some(0), json!(2)),
        "{err}"
    );
    assert_eq!(changed["limits"]["cpu_cores"], 0.5);
    let (code, _, err) = client(&token, &["pipeline", "put", "q", file.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    let (code, changed, err) = client(ADMIN, &["tenant", "limits", "acme", "{\"cpu_cores\": null}"]);
    assert_eq!(code, Some(0), "{err}");
    let defaults = serve.ok("POST", "/v1/tenants", ADMIN, yaml("{\"name\": \"plain\"}"));
    assert_eq!(changed["limits"]["cpu_cores"], defaults["limits"]["cpu_cores"]);
    assert_eq!(changed["limits"]["pipelines"], 2);
    let (code, _, err) = client(ADMIN, &["tenant", "limits", "acme", "{\"pipelnes\": 3}"]);
    assert!(code == Some(1) && err.contains("unknown field `pipelnes`"), "{err}");
    let (code, _, _) = client(&token, &["tenant", "limits", "acme", "{\"pipelines\": 9}"]);
    assert_eq!(code, Some(1), "only the admin changes limits");
    let (code, _, err) = client(&token, &["pipeline", "start", "p"]);
    assert_eq!(code, Some(0), "{err}");
    serve.wait_for(&token, "p", "completed", |s| {
        s["state"] == "completed" && s["records_written"] == 500
    });
    let (code, listed, _) = client(&token, &["plugin", "list"]);
    assert_eq!((code, listed["plugins"][0]["name"].clone()), (Some(0), json!("mine")));
    let (code, _, err) = client(&token, &["pipeline", "status", "nope"]);
    assert!(code == Some(1) && err.contains("no pipeline named `nope`"), "{err}");
    let (code, _, _) = client(&token, &["tenant", "list"]);
    assert_eq!(code, Some(1), "a tenant's token is not the admin's");
}

#[test]
fn plugin_versions_stay_while_newest_pinned_or_running_and_then_go() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let serve = Serve::start(&data, "");
    let a = serve.tenant("acme", json!({}));
    let versions = |name: &str| -> Vec<u64> {
        let listed = serve.ok("GET", &format!("/v1/plugins/{name}"), &a, None);
        let rows = listed["versions"].as_array().expect("versions");
        rows.iter().map(|r| r["version"].as_u64().unwrap()).collect()
    };
    let blob = |digest: &Value| data.join("plugins").join(format!("{}.wasm", digest.as_str().unwrap()));
    let pinned = |version: u32| {
        format!(
            "name: e2e\nsource:\n  name: dummy\n  total_records: 10\ndestination:\n  name: wasm\n  config:\n    \
             plugin: p@{version}\n    plugin_config: {{path: /out/records.jsonl}}\n    allow:\n      dirs:\n        \
             - {{host: out, guest: /out, writable: true, max_mb: 10}}\n"
        )
    };

    // v1 is pinned by a stored pipeline, v2 is neither newest nor used once v3 comes.
    let v1 = serve.ok("PUT", "/v1/plugins/p", &a, Some(plugin("my_dest")));
    serve.ok("PUT", "/v1/pipelines/pinned", &a, yaml(&pinned(1)));
    let v2 = serve.ok("PUT", "/v1/plugins/p", &a, Some(plugin("bizon_csv")));
    assert!(blob(&v2["digest"]).exists());
    let v3 = serve.ok("PUT", "/v1/plugins/p", &a, Some(plugin("bizon_stats")));
    assert_eq!(versions("p"), [1, 3]);
    assert!(!blob(&v2["digest"]).exists(), "v2's bytes stay on disk");
    assert!(blob(&v1["digest"]).exists() && blob(&v3["digest"]).exists());
    let (status, err) = serve.call("PUT", "/v1/pipelines/old", &a, yaml(&pinned(2)));
    assert_eq!(status, 422, "{err}");
    assert!(
        err.to_string().contains("`p@2`: plugin `p` has version(s) 1, 3"),
        "{err}"
    );

    // Re-pinning the pipeline frees v1.
    serve.ok("PUT", "/v1/pipelines/pinned", &a, yaml(&pinned(3)));
    assert_eq!(versions("p"), [3]);
    assert!(!blob(&v1["digest"]).exists());

    // A running pipeline keeps the version it runs until it stops.
    serve.ok("PUT", "/v1/plugins/slow", &a, Some(plugin("bizon_stats")));
    let endless = "name: e2e\nsource:\n  name: dummy\n  total_records: 1000000000\ndestination:\n  name: wasm\n  config:\n    plugin: slow\n";
    serve.ok("PUT", "/v1/pipelines/running", &a, yaml(endless));
    serve.ok("POST", "/v1/pipelines/running/start", &a, None);
    serve.wait_for(&a, "running", "running", |s| s["state"] == "running");
    serve.ok("PUT", "/v1/plugins/slow", &a, Some(plugin("my_dest")));
    let status = serve.ok("GET", "/v1/pipelines/running", &a, None);
    assert_eq!(versions("slow"), [1, 2], "{status}\n{}", serve.log());
    serve.ok("POST", "/v1/pipelines/running/stop", &a, None);
    assert_eq!(versions("slow"), [2]);
}

#[test]
fn a_failing_pipeline_is_started_again_only_after_a_backoff_that_doubles() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(&dir.path().join("data"), "");
    let a = serve.tenant("acme", json!({}));
    serve.ok("PUT", "/v1/plugins/hostile", &a, Some(plugin("hostile")));
    let panics = "name: p\nsource:\n  name: dummy\n  total_records: 100\ndestination:\n  name: wasm\n  config:\n    \
                  plugin: hostile\n    plugin_config: {mode: panic-write}\n";
    serve.ok("PUT", "/v1/pipelines/panics", &a, yaml(panics));
    let mut waits = Vec::new();
    for failures in 1..=2u64 {
        serve.ok("POST", "/v1/pipelines/panics/start", &a, None);
        let failed = serve.wait_for(&a, "panics", "failed", |s| s["state"] == "failed");
        assert_eq!(failed["failures_in_a_row"], failures, "{failed}");
        assert!(failed["last_error"].as_str().unwrap().contains("panic"), "{failed}");
        let wait = failed["start_allowed_in_ms"].as_u64().unwrap();
        waits.push(wait);
        // Started again at once: refused, saying why and for how long.
        let (code, refused) = serve.call("POST", "/v1/pipelines/panics/start", &a, None);
        assert_eq!(code, 429, "{refused}");
        assert_eq!(refused["error"]["code"], "backing_off", "{refused}");
        let message = refused["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("failed {failures} time(s) in a row")),
            "{message}"
        );
        std::thread::sleep(Duration::from_millis(wait + 50));
    }
    // 1 s after the first failure, 2 s after the second.
    assert!(waits[0] > 500 && waits[0] <= 1000, "{waits:?}");
    assert!(waits[1] > 1500 && waits[1] <= 2000, "{waits:?}");
    assert_eq!(
        serve.ok("GET", "/v1/pipelines/panics", &a, None)["start_allowed_in_ms"],
        0
    );
}

#[test]
fn a_broker_advertising_an_address_outside_the_tenants_ceiling_is_never_connected_to() {
    // Where the broker sends its clients: a listener of the test's own (all
    // of 127/8 is loopback), which sees whoever connects.
    let trap = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let advertised = trap.local_addr().unwrap().to_string();
    let broker = broker_advertising(&advertised);
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(&dir.path().join("data"), "");
    let a = serve.tenant("acme", json!({"egress": [format!("tcp://{}", broker.servers)]}));
    serve.ok("PUT", "/v1/plugins/mine", &a, Some(plugin("my_dest")));
    let pipeline = format!(
        "name: k\nsource:\n  name: kafka\n  sync_mode: stream\n  bootstrap_servers: {}\n  group_id: g\n  topic: t\n  \
         message_encoding: utf-8\ndestination:\n  name: wasm\n  config:\n    plugin: mine\n    \
         plugin_config: {{path: /out/records.jsonl}}\n    allow:\n      dirs:\n        \
         - {{host: out, guest: /out, writable: true, max_mb: 10}}\n",
        broker.servers
    );
    // The bootstrap server is inside the ceiling: stored and started.
    serve.ok("PUT", "/v1/pipelines/k", &a, yaml(&pipeline));
    serve.ok("POST", "/v1/pipelines/k/start", &a, None);
    // A broker just started may drop the first connection (the run then
    // fails on that, and starts again after its backoff).
    let refused = format!("advertises {advertised}");
    let failed = serve.wait_for(&a, "k", "refused", |s| {
        s["state"] == "failed" && s["last_error"].as_str().is_some_and(|e| e.contains(&refused))
    });
    let error = failed["last_error"].as_str().unwrap();
    assert!(error.contains("egress ceiling"), "{failed}");
    // A dead-letter topic's producer on that broker is refused the same way.
    let dead_lettered = format!(
        "name: d\nsource:\n  name: dummy\n  total_records: 10\ndestination:\n  name: wasm\n  config:\n    \
         plugin: mine\n    plugin_config: {{path: /out/records.jsonl}}\n    allow:\n      dirs:\n        \
         - {{host: out, guest: /out, writable: true, max_mb: 10}}\ndead_letter:\n  topic: dlq\n  \
         bootstrap_servers: {}\n",
        broker.servers
    );
    serve.ok("PUT", "/v1/pipelines/d", &a, yaml(&dead_lettered));
    let (status, body) = serve.call("POST", "/v1/pipelines/d/start", &a, None);
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        status == 422 && message.contains(&format!("advertises {advertised}")),
        "{status} {body}"
    );
    std::thread::sleep(Duration::from_millis(500));
    match trap.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("something connected to the advertised address: {other:?}"),
    }
}

#[test]
fn a_broker_that_advertises_an_address_outside_the_ceiling_mid_run_ends_the_run() {
    // 127.0.0.3, not the other trap test's 127.0.0.2: this run is meant to
    // reach its trap before it ends, and a reconnect after this test would
    // otherwise land on a port the other test may bind next.
    let trap = std::net::TcpListener::bind("127.0.0.3:0").unwrap();
    let advertised = trap.local_addr().unwrap().to_string();
    let broker = broker_of_its_own();
    let topic = unique("serve-readvertised");
    broker.create_topic(&topic, 1);
    let producer = broker.producer();
    for i in 0..10 {
        producer.send(&topic, 0, None, Some(format!("{{\"id\":{i}}}").as_bytes()), &[]);
    }
    producer.flush();
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(&dir.path().join("data"), "");
    let a = serve.tenant("acme", json!({"egress": [format!("tcp://{}", broker.servers)]}));
    serve.ok("PUT", "/v1/plugins/mine", &a, Some(plugin("my_dest")));
    let pipeline = format!(
        "name: k\nsource:\n  name: kafka\n  sync_mode: stream\n  bootstrap_servers: {}\n  group_id: g\n  topic: {topic}\n  \
         message_encoding: utf-8\ndestination:\n  name: wasm\n  config:\n    plugin: mine\n    buffer_size: 0\n    \
         plugin_config: {{path: /out/records.jsonl}}\n    allow:\n      dirs:\n        \
         - {{host: out, guest: /out, writable: true, max_mb: 10}}\n",
        broker.servers
    );
    serve.ok("PUT", "/v1/pipelines/k", &a, yaml(&pipeline));
    serve.ok("POST", "/v1/pipelines/k/start", &a, None);
    serve.wait_for(&a, "k", "10 records written", |s| s["records_written"] == 10);
    // The same broker (its address and node id), now advertising the trap.
    broker.restart_advertising(&advertised);
    let failed = serve.wait_for(&a, "k", "failed", |s| s["state"] == "failed");
    let error = failed["last_error"].as_str().unwrap();
    assert!(
        error.contains(&format!("advertised {advertised} mid-run")) && error.contains("egress ceiling"),
        "{failed}"
    );
}

#[test]
fn a_tenants_transforms_run_as_its_own_and_are_held_to_its_limits() {
    let broker = broker();
    python_runtime();
    let topic = unique("serve-transforms");
    broker.create_topic(&topic, 2);
    let producer = broker.producer();
    for i in 0..200 {
        let value = format!("{{\"id\":{i}}}");
        producer.send(&topic, i % 2, None, Some(value.as_bytes()), &[]);
    }
    producer.flush();
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(&dir.path().join("data"), "");
    let egress = format!("tcp://{}", broker.servers);
    let a = serve.tenant("acme", json!({"egress": [egress], "instances": 4, "memory_mb": 1024}));
    let b = serve.tenant("bravo", json!({"egress": [egress]}));
    let up = serve.ok("PUT", "/v1/plugins/flatten", &a, Some(plugin("bizon_kafka_flatten")));
    assert_eq!(up["describe"]["kind"], "transform", "{up}");
    let up = serve.ok("PUT", "/v1/plugins/mine", &a, Some(plugin("my_dest")));
    assert_eq!(up["describe"]["kind"], "destination", "{up}");
    serve.ok("PUT", "/v1/plugins/mine", &b, Some(plugin("my_dest")));

    // The tenant's own component, then Bizon's Python code, into its plugin.
    let pipeline = |transforms: &str, plugin: &str| {
        format!(
            "name: k\nsource:\n  name: kafka\n  sync_mode: stream\n  bootstrap_servers: {}\n  group_id: g\n  \
             topic: {topic}\n  message_encoding: utf-8\n  batch_size: 50\ntransforms:\n{transforms}destination:\n  \
             name: wasm\n  config:\n    plugin: {plugin}\n    buffer_size: 0\n    buffer_flush_timeout: 0\n    \
             plugin_config: {{path: /out/records.jsonl}}\n    allow:\n      dirs:\n        \
             - {{host: out, guest: /out, writable: true, max_mb: 10}}\n",
            broker.servers
        )
    };
    let both = "  - label: flatten\n    wasm: flatten\n    config: {fields: [offset, partition]}\n  \
                - label: double\n    python: |\n      data['doubled'] = data['id'] * 2\n";
    serve.ok("PUT", "/v1/pipelines/k", &a, yaml(&pipeline(both, "mine")));
    serve.ok("POST", "/v1/pipelines/k/start", &a, None);
    serve.wait_for(&a, "k", "200 written", |s| s["records_written"] == 200);
    let written = std::fs::read_to_string(serve.data.join("tenants/acme/files/out/records.jsonl")).unwrap();
    let mut ids: Vec<i64> = written
        .lines()
        .map(|line| {
            let record: Value = serde_json::from_str(line).unwrap();
            assert_eq!(record["doubled"], json!(record["id"].as_i64().unwrap() * 2), "{record}");
            assert!(record["__kafka_offset"].is_i64(), "{record}");
            record["id"].as_i64().unwrap()
        })
        .collect();
    ids.sort();
    assert_eq!(ids, (0..200).collect::<Vec<_>>());
    serve.ok("POST", "/v1/pipelines/k/stop", &a, None);

    let refused = |token: &str, yaml_text: String| {
        let (code, body) = serve.call("PUT", "/v1/pipelines/t", token, yaml(&yaml_text));
        assert_eq!(code, 422, "{body}");
        body["error"]["message"].as_str().unwrap().to_string()
    };
    // Another tenant's transform is a name nobody has.
    let error = refused(&b, pipeline(both, "mine"));
    assert!(
        error.contains("transforms[0] (`flatten`).wasm: no plugin `flatten`"),
        "{error}"
    );
    // A transform is not a destination, nor the other way round.
    let error = refused(&a, pipeline(both, "flatten"));
    assert!(error.contains("is a transform, not a destination plugin"), "{error}");
    let error = refused(&a, pipeline("  - label: m\n    wasm: mine\n", "mine"));
    assert!(error.contains("is a destination plugin, not a transform"), "{error}");
    // A transform's grants and limits are held to the tenant's, like a destination's.
    for (grant, expected) in [
        (
            "    allow:\n      hosts: [\"https://example.com\"]\n",
            "transforms[0] (`flatten`).allow.hosts: `https://example.com` is outside",
        ),
        (
            "    allow:\n      dirs: [{host: /etc, guest: /etc}]\n",
            "transforms[0] (`flatten`).allow.dirs: `/etc`: give a relative path",
        ),
        ("    allow:\n      env: [HOME]\n", "transforms[0] (`flatten`).allow.env"),
        (
            "    limits:\n      memory_mb: 100000\n",
            "transforms[0] (`flatten`).limits.memory_mb: 100000 is over",
        ),
    ] {
        let error = refused(
            &a,
            pipeline(&format!("  - label: flatten\n    wasm: flatten\n{grant}"), "mine"),
        );
        assert!(error.contains(expected), "{error}");
    }

    // The transforms' instances are the tenant's: one instance allowed is
    // taken by the destination, so the transform's cannot be opened.
    let c = serve.tenant("carol", json!({"egress": [egress], "instances": 1}));
    serve.ok("PUT", "/v1/plugins/flatten", &c, Some(plugin("bizon_kafka_flatten")));
    serve.ok("PUT", "/v1/plugins/mine", &c, Some(plugin("my_dest")));
    serve.ok(
        "PUT",
        "/v1/pipelines/k",
        &c,
        yaml(&pipeline("  - label: flatten\n    wasm: flatten\n", "mine")),
    );
    let (code, body) = serve.call("POST", "/v1/pipelines/k/start", &c, None);
    let error = body["error"]["message"].as_str().unwrap_or_default();
    assert!(code == 422 && error.contains("live instance"), "{code} {body}");
}

/// The value of one series in `/metrics` (`name{labels}`), 0 when absent.
fn metric(serve: &Serve, series: &str) -> f64 {
    let Value::String(metrics) = serve.ok("GET", "/metrics", ADMIN, None) else {
        panic!("metrics are text")
    };
    let series = format!("bizon_serve_{series} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0.0, |v| v.parse().unwrap())
}

fn compile_cpu_s(serve: &Serve, tenant: &str) -> f64 {
    metric(
        serve,
        &format!("plugin_compile_cpu_seconds_total{{tenant=\"{tenant}\"}}"),
    )
}

fn cpu_s(serve: &Serve, tenant: &str, work: &str) -> f64 {
    metric(
        serve,
        &format!("cpu_seconds_total{{tenant=\"{tenant}\",work=\"{work}\"}}"),
    )
}

#[test]
fn a_tenants_pipeline_work_and_plugin_calls_are_charged_to_its_cpu_share() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(&dir.path().join("data"), "");
    // A fiftieth of a core: 5 ms of CPU at once (the bucket's quarter
    // second of share), then 20 ms per second.
    let cores = 0.02;
    let small = serve.tenant("small", json!({"cpu_cores": cores}));
    // Compiled by another tenant first: at a fiftieth of a core its own
    // compile would take a minute; this upload is a cache hit.
    let big = serve.tenant("big", json!({}));
    serve.ok("PUT", "/v1/plugins/sum", &big, Some(plugin("bench_sum")));
    serve.ok("PUT", "/v1/plugins/sum", &small, Some(plugin("bench_sum")));
    let run = "name: s\nsource:\n  name: dummy\n  total_records: 100000\n  page_size: 1000\ndestination:\n  \
               name: wasm\n  config:\n    plugin: sum\n    buffer_size: 0\n";
    serve.ok("PUT", "/v1/pipelines/s", &small, yaml(run));
    let started = std::time::Instant::now();
    serve.ok("POST", "/v1/pipelines/s/start", &small, None);
    let status = serve.wait_for(&small, "s", "completed", |s| s["state"] != "running");
    let took = started.elapsed().as_secs_f64();
    assert_eq!(status["records_written"], 100_000, "{status}");
    let (plugin_s, pipeline_s) = (cpu_s(&serve, "small", "plugin"), cpu_s(&serve, "small", "pipeline"));
    // Pages into buffers and batches into Arrow IPC, on the host: charged
    // as the plugin's calls are.
    assert!(
        pipeline_s > 0.005,
        "the pipeline's own work was charged: {pipeline_s} s"
    );
    assert!(plugin_s > 0.0, "the plugin's calls were charged: {plugin_s} s");
    // Half of it at least: what the last polls charged is owed after the
    // run ended, and is never waited for (unpaced, the run takes 0.1 s).
    let paced = (plugin_s + pipeline_s - cores * 0.25) / cores;
    assert!(
        took > paced * 0.5,
        "{:.3} s of CPU at {cores} cores took {took:.1} s, not about {paced:.1} s",
        plugin_s + pipeline_s
    );
}

#[test]
fn an_upload_compiles_in_a_child_paced_by_the_uploaders_cpu_share() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(&dir.path().join("data"), "");
    // A twentieth of a core: its compile may use 12.5 ms of CPU at once
    // (the bucket's quarter second of share), then 50 ms per second.
    let cores = 0.05;
    let slow = serve.tenant("slow", json!({"cpu_cores": cores}));
    let started = std::time::Instant::now();
    let up = serve.ok("PUT", "/v1/plugins/http", &slow, Some(plugin("bizon_http")));
    let took = started.elapsed().as_secs_f64();
    assert_eq!(up["describe"]["kind"], "destination", "{up}");
    let cpu = compile_cpu_s(&serve, "slow");
    assert!(cpu > 0.05, "the compile's CPU time was charged: {cpu} s");
    let paced = (cpu - cores * 0.25) / cores;
    assert!(
        took > paced * 0.8,
        "a compile of {cpu:.2} s CPU at {cores} cores took {took:.1} s, not about {paced:.1} s"
    );
    // The host loaded what the child compiled from the cache; a second
    // tenant's upload of the same bytes starts no compile at all.
    let fast = serve.tenant("fast", json!({}));
    serve.ok("PUT", "/v1/plugins/http", &fast, Some(plugin("bizon_http")));
    let again = compile_cpu_s(&serve, "fast");
    assert_eq!(again, 0.0, "a cache hit runs no compile process");
    assert!(!serve.log().contains("compile cache missed"), "{}", serve.log());
}

#[test]
fn a_stuck_pipeline_reads_ahead_only_its_tenants_share_and_a_stop_ends_after_its_grace() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(&dir.path().join("data"), "");
    let a = serve.tenant("acme", json!({"read_ahead_mb": 1}));
    serve.ok("PUT", "/v1/plugins/hostile", &a, Some(plugin("hostile")));
    // Each write sleeps ten minutes; the call timeout is 30 s, retried. The
    // 100,000 records (about 11 MB) fit the pipeline's own 64 MiB budget:
    // only the tenant's 1 MiB share stops it reading them all.
    let yaml_text = "name: s\nsource:\n  name: dummy\n  total_records: 100000\n  page_size: 100\ndestination:\n  \
                     name: wasm\n  config:\n    plugin: hostile\n    buffer_size: 0\n    plugin_config: {mode: sleep-write}\n";
    serve.ok("PUT", "/v1/pipelines/s", &a, yaml(yaml_text));
    serve.ok("POST", "/v1/pipelines/s/start", &a, None);
    serve.wait_for(&a, "s", "records read", |s| s["records_read"].as_u64() > Some(0));
    std::thread::sleep(Duration::from_secs(2));
    let tenant = serve.ok("GET", "/v1/tenants/acme", ADMIN, None);
    let held = tenant["read_ahead_bytes"].as_u64().unwrap();
    assert!(held > 0 && held <= (1 << 20) + 100_000, "{tenant}");
    let read = serve.ok("GET", "/v1/pipelines/s", &a, None)["records_read"]
        .as_u64()
        .unwrap();
    assert!(read < 20_000, "{read} records read ahead of a stuck write");
    let asked = std::time::Instant::now();
    serve.ok("POST", "/v1/pipelines/s/stop", &a, None);
    let took = asked.elapsed();
    let status = serve.ok("GET", "/v1/pipelines/s", &a, None);
    assert_eq!(status["state"], "stopped", "{status}");
    assert_eq!(status["records_written"], 0, "{status}");
    assert!(
        status["last_error"].as_str().unwrap().contains("left unacknowledged"),
        "{status}"
    );
    // The 10 s grace, not the write's 30 s timeout and its retries.
    assert!(took < Duration::from_secs(25), "the stop took {took:?}");
    let tenant = serve.ok("GET", "/v1/tenants/acme", ADMIN, None);
    assert_eq!(tenant["read_ahead_bytes"], 0, "given back at the stop: {tenant}");
}
