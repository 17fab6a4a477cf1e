//! `bizon-host serve` SIGKILLed with pipelines running: two tenants, each
//! with a stream-mode Kafka pipeline (a producer writing on all along) and
//! a `dummy` pipeline, both into the csv plugin. The host started again on
//! the same data directory finds its registry whole (tenants, tokens,
//! plugins, pipelines), resumes the pipelines that were running, the Kafka
//! ones from their groups' committed offsets, and nothing is lost. The
//! csv plugin writes at least once: what was written after the last
//! commit before the kill is written again (counted and bounded), and the
//! dummy pipeline, which has no checkpoint, runs again from its first record.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};

use super::broker::{assert_every_id, csv_ids, Producing, PARTITIONS};
use crate::support::kafka::{broker, unique};
use crate::support::serve::{body as yaml, Serve, ADMIN};
use crate::support::{poll, wasm};

/// Records of each tenant's `dummy` pipeline: enough that it still runs
/// when the host is killed.
const DUMMY: u64 = 300_000;

/// Pipeline `k`: `topic` in stream mode into the csv plugin under `out`; a
/// killed consumer leaves the group after 6 s (`session.timeout.ms`).
pub(super) fn kafka_pipeline(servers: &str, topic: &str) -> String {
    format!(
        "name: k\nsource:\n  name: kafka\n  sync_mode: stream\n  bootstrap_servers: {servers}\n  group_id: g\n  topic: {topic}\n  \
         message_encoding: utf-8\n  batch_size: 20\n  consumer_config:\n    session.timeout.ms: 6000\n    \
         heartbeat.interval.ms: 500\ndestination:\n  name: wasm\n  config:\n    \
         plugin: csv\n    buffer_size: 0\n    buffer_flush_timeout: 0\n    plugin_config: {{dir: /out}}\n    allow:\n      \
         dirs:\n        - {{host: out, guest: /out, writable: true, max_mb: 50}}\n"
    )
}

fn dummy_pipeline() -> String {
    format!(
        "name: d\nsource:\n  name: dummy\n  stream: s\n  total_records: {DUMMY}\n  page_size: 500\ndestination:\n  \
         name: wasm\n  config:\n    plugin: csv\n    buffer_size: 0\n    plugin_config: {{dir: /dummy}}\n    allow:\n      \
         dirs:\n        - {{host: dummy, guest: /dummy, writable: true, max_mb: 400}}\n"
    )
}

/// What the registry holds for a tenant: its pipelines (name, yaml,
/// running) and plugin versions.
pub(super) fn registry_of(serve: &Serve, token: &str) -> Value {
    let mut pipelines: Vec<Value> = serve.ok("GET", "/v1/pipelines", token, None)["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let name = p["name"].as_str().unwrap();
            let one = serve.ok("GET", &format!("/v1/pipelines/{name}"), token, None);
            json!({"name": name, "yaml": one["yaml"], "plugin_version": one["plugin_version"]})
        })
        .collect();
    pipelines.sort_by_key(|p| p["name"].as_str().unwrap().to_string());
    json!({"pipelines": pipelines, "plugins": serve.ok("GET", "/v1/plugins", token, None)})
}

/// Each tenant's name, limits and pipelines' names.
pub(super) fn tenants_of(serve: &Serve) -> Vec<Value> {
    serve.ok("GET", "/v1/tenants", ADMIN, None)["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let pipelines: Vec<&Value> = t["pipelines"].as_array().unwrap().iter().map(|p| &p["name"]).collect();
            json!({"tenant": t["tenant"], "limits": t["limits"], "pipelines": pipelines})
        })
        .collect()
}

#[test]
fn a_killed_serve_resumes_every_running_pipeline_of_two_tenants_from_its_offsets_and_loses_nothing() {
    let broker = broker();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut serve = Serve::start(&data, "");
    // Names no other test on the shared broker gives a tenant: a group
    // (`bizon-serve.<tenant>.g`) is the broker's, and a member SIGKILLed
    // here would hold up another test's rebalances for its session (6 s).
    let tenants = ["kilo", "lima"];
    let mut runs = Vec::new();
    for name in tenants {
        let topic = unique(&format!("killed-{name}"));
        broker.create_topic(&topic, PARTITIONS);
        let token = serve.tenant(name, json!({"egress": [format!("tcp://{}", broker.servers)]}));
        serve.ok(
            "PUT",
            "/v1/plugins/csv",
            &token,
            Some(std::fs::read(wasm("bizon_csv")).unwrap()),
        );
        serve.ok(
            "PUT",
            "/v1/pipelines/k",
            &token,
            yaml(&kafka_pipeline(&broker.servers, &topic)),
        );
        serve.ok("PUT", "/v1/pipelines/d", &token, yaml(&dummy_pipeline()));
        serve.ok("POST", "/v1/pipelines/k/start", &token, None);
        let producing = Producing::start(broker, &topic);
        runs.push((name, topic, token, producing));
    }
    let files = |tenant: &str, dir: &str| data.join("tenants").join(tenant).join("files").join(dir);
    for (_, _, token, _) in &runs {
        serve.wait_for(token, "k", "50 Kafka records written", |s| {
            s["records_written"].as_u64() >= Some(50)
        });
    }
    // The dummy pipelines start last, and the kill follows their first
    // 10,000 records at once: they run for seconds, even in a release build.
    for (_, _, token, _) in &runs {
        serve.ok("POST", "/v1/pipelines/d/start", token, None);
    }
    let before: Vec<Value> = runs.iter().map(|(_, _, t, _)| registry_of(&serve, t)).collect();
    let tenants_before = tenants_of(&serve);
    for (name, _, token, _) in &runs {
        let d = serve.wait_for(token, "d", "10,000 dummy records written", |s| {
            s["records_written"].as_u64() >= Some(10_000)
        });
        assert_eq!(
            d["state"], "running",
            "{name}: the dummy pipeline ended before the kill: {d}"
        );
    }
    serve.kill();
    std::thread::sleep(Duration::from_secs(2));
    let serve = Serve::start(&data, "");
    // The registry is whole: the same tenants, and for each the same
    // pipelines and plugin versions, under the tokens given before the kill.
    assert_eq!(tenants_of(&serve), tenants_before);
    for ((name, _, token, _), before) in runs.iter().zip(&before) {
        assert_eq!(&registry_of(&serve, token), before, "{name}");
        for p in ["k", "d"] {
            let status = serve.ok("GET", &format!("/v1/pipelines/{p}"), token, None);
            assert_eq!(status["state"], "running", "{name}/{p} not resumed: {status}");
        }
    }
    let mut report = Vec::new();
    for (name, topic, token, producing) in runs {
        let sent = producing.finish();
        let out = files(name, "out");
        poll(
            || format!("{name}: {sent} Kafka ids written:\n{}", serve.log()),
            || (csv_ids(&out).into_iter().collect::<BTreeSet<_>>().len() >= sent).then_some(()),
        );
        let ids = csv_ids(&out);
        assert_every_id(&ids, sent);
        let group = format!("bizon-serve.{name}.g");
        serve.wait_for(&token, "k", "every offset committed", |_| {
            broker.committed(&group, &topic, PARTITIONS) == broker.high_watermarks(&topic, PARTITIONS)
        });
        // What was written after the last commit before the kill is written
        // again: seen 10 and 59 at 20 messages a second; never more than
        // the last 5 s.
        let kafka_twice = ids.len() - sent;
        assert!(kafka_twice <= 100, "{name}: {kafka_twice} Kafka records written twice");

        let d = serve.wait_for(&token, "d", "the dummy pipeline completed", |s| s["state"] != "running");
        assert_eq!(d["state"], "completed", "{name}: {d}\n{}", serve.log());
        let ids = csv_ids(&files(name, "dummy"));
        assert_every_id(&ids, DUMMY as usize);
        report.push(format!(
            "{name}: Kafka {sent} sent, 0 lost, {kafka_twice} twice; dummy {DUMMY}, 0 lost, {} twice",
            ids.len() as u64 - DUMMY
        ));
    }
    eprintln!("serve SIGKILLed and started again: {}", report.join("; "));
}
