//! Plugin egress through the binary: a guest (tests/plugins/egress) tries
//! to reach local servers in every way an SSRF would, under a grant for one
//! of them, and each attempt that the grant does not cover is refused with
//! an error that names the address and the rule, in the plugin and in the
//! host's log.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use serde_json::json;

use crate::support::http_server::{HttpServer, Reply};
use crate::support::{bizon_host, output_with_stdin, run, run_in_with, text, wasm, Run};

/// Runs the egress guest on one record with these probes and grants.
fn probe(probes: &[(&str, &str, String)], allow: serde_json::Value, env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let probes: Vec<_> = probes
        .iter()
        .map(|(name, kind, target)| json!({"name": name, "kind": kind, "target": target}))
        .collect();
    // YAML reads JSON: the nested values go in as they are.
    let yaml = format!(
        "name: egress\nsource:\n  name: dummy\n  total_records: 1\ndestination:\n  name: wasm\n  config:\n    destination_id: t\n    plugin: {}\n    plugin_config: {}\n    allow: {}\n",
        wasm("hostile_egress").display(),
        json!({ "probes": probes }),
        allow
    );
    let output = run_in_with(dir.path(), &yaml, |cmd| {
        cmd.envs(env.iter().copied());
    });
    assert!(output.status.success(), "{}", text(&output));
    text(&output)
}

/// The line the guest logged for probe `name`.
fn outcome<'a>(log: &'a str, name: &str) -> &'a str {
    let needle = format!("probe {name}: ");
    let line = log
        .lines()
        .find(|l| l.contains(&needle))
        .unwrap_or_else(|| panic!("no line for probe {name} in:\n{log}"));
    let text = &line[line.find(&needle).unwrap() + needle.len()..];
    // The host's log adds the plugin as a field after the message.
    text.split(" plugin=\"").next().unwrap()
}

fn assert_denied(log: &str, name: &str, address: &str, rule: &str) {
    let got = outcome(log, name);
    assert!(
        got.starts_with("failed denied: egress denied") && got.contains(address) && got.contains(rule),
        "probe {name}: wanted a refusal naming {address} and {rule}, got: {got}"
    );
    // The host logged the same refusal, naming the plugin.
    assert!(
        log.lines().any(|l| !l.contains("probe ")
            && l.contains("hostile_egress.wasm")
            && l.contains("egress denied")
            && l.contains(address)),
        "the host did not log the refusal of {address}:\n{log}"
    );
}

#[test]
fn a_grant_for_one_address_reaches_it_and_nothing_else() {
    let other = HttpServer::start(|_, _| Reply::ok("other"));
    let proxy = HttpServer::start(|_, _| Reply::ok("proxied"));
    let other_url = other.url();
    let allowed = HttpServer::start(move |_, seen| match seen.path.as_str() {
        "/redirect" => Reply::status(302, "").header("location", &format!("{other_url}/")),
        _ => Reply::ok("hello from the allowed host"),
    });
    let port = allowed.addr.port();
    let rule = format!("http://127.0.0.1:{port}");
    let probes = [
        ("allowed", "get", format!("http://127.0.0.1:{port}/")),
        ("other-port", "get", format!("{}/", other.url())),
        ("localhost", "get", format!("http://localhost:{port}/")),
        ("v4-mapped", "get", format!("http://[::ffff:127.0.0.1]:{port}/")),
        ("decimal", "get", format!("http://2130706433:{port}/")),
        (
            "metadata",
            "get",
            "http://169.254.169.254/latest/meta-data/".to_string(),
        ),
        ("redirect", "follow", format!("http://127.0.0.1:{port}/redirect")),
        ("proxy", "proxy", format!("http://127.0.0.1:{port}/")),
        ("tcp-same-port", "tcp", format!("127.0.0.1:{port}")),
    ];
    let proxy_env = proxy.url();
    let log = probe(
        &probes,
        json!({"hosts": [rule], "env": ["http_proxy"]}),
        &[("http_proxy", &proxy_env), ("HTTP_PROXY", &proxy_env)],
    );

    assert_eq!(outcome(&log, "allowed"), "ok 200 hello from the allowed host");
    let quoted = format!("\"{rule}\"");
    assert_denied(
        &log,
        "other-port",
        &format!("http://127.0.0.1:{}", other.addr.port()),
        &quoted,
    );
    assert_denied(&log, "localhost", &format!("http://localhost:{port}"), &quoted);
    assert_denied(&log, "v4-mapped", &format!("http://[::ffff:127.0.0.1]:{port}"), &quoted);
    assert_denied(&log, "decimal", &format!("http://2130706433:{port}"), &quoted);
    assert_denied(&log, "metadata", "http://169.254.169.254:80", &quoted);
    // The host returned the 302 as it was; the guest's own follow-up to the
    // other server was refused.
    assert_denied(
        &log,
        "redirect",
        &format!("http://127.0.0.1:{}", other.addr.port()),
        &quoted,
    );
    // http_proxy is the plugin's business: the host sent the allowed request
    // directly, and a plugin that uses the proxy needs it granted.
    assert_denied(
        &log,
        "proxy",
        &format!("http://127.0.0.1:{}", proxy.addr.port()),
        &quoted,
    );
    // An http:// rule does not open raw TCP to the same address; over
    // wasi:sockets the guest sees access-denied, the host's log says why.
    assert!(outcome(&log, "tcp-same-port").starts_with("failed connect"), "{log}");
    assert!(
        log.contains(&format!(
            "egress denied: tcp://127.0.0.1:{port}: no rule in allow.hosts [{quoted}]"
        )),
        "{log}"
    );

    let paths: Vec<String> = allowed.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, ["/", "/redirect"], "the allowed server saw: {paths:?}");
    assert!(
        other.seen().is_empty(),
        "the other port was reached: {:?}",
        other.seen()
    );
    assert!(proxy.seen().is_empty(), "the proxy was used: {:?}", proxy.seen());
}

#[test]
fn a_name_that_resolves_to_loopback_needs_the_address_granted() {
    let server = HttpServer::start(|_, _| Reply::ok("reached"));
    let port = server.addr.port();
    let by_name = format!("http://localhost:{port}");
    let log = probe(
        &[("by-name", "get", format!("{by_name}/"))],
        json!({"hosts": [by_name]}),
        &[],
    );
    let got = outcome(&log, "by-name");
    assert!(
        got.contains("a loopback address") && got.contains(&format!("\"{by_name}\"")),
        "{got}"
    );
    assert!(server.seen().is_empty());

    // Granting the address itself (here as a CIDR) is what reaches it.
    let log = probe(
        &[("by-name", "get", format!("{by_name}/"))],
        json!({"hosts": [by_name, format!("http://127.0.0.0/8:{port}")]}),
        &[],
    );
    assert_eq!(outcome(&log, "by-name"), "ok 200 reached");
}

/// Answers one line to every connection.
fn tcp_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut hello = [0u8; 3];
            let _ = stream.read_exact(&mut hello);
            let _ = stream.write_all(b"hello over tcp\n");
        }
    });
    port
}

#[test]
fn raw_tcp_reaches_a_granted_address_and_nothing_else() {
    let port = tcp_server();
    let named_port = tcp_server();
    let by_name = format!("tcp://localhost:{named_port}");
    let log = probe(
        &[
            ("tcp", "tcp", format!("127.0.0.1:{port}")),
            ("tcp-other-port", "tcp", format!("127.0.0.1:{named_port}")),
            ("tcp-by-name", "tcp", format!("localhost:{named_port}")),
            ("tcp-unlisted-name", "tcp", "example.com:80".to_string()),
            ("udp", "udp", "127.0.0.1:53".to_string()),
        ],
        json!({"hosts": [format!("tcp://127.0.0.1:{port}"), by_name]}),
        &[],
    );
    assert_eq!(outcome(&log, "tcp"), "ok hello over tcp");
    for name in ["tcp-other-port", "tcp-by-name", "tcp-unlisted-name", "udp"] {
        assert!(
            outcome(&log, name).starts_with("failed "),
            "{name}: {}",
            outcome(&log, name)
        );
    }
    // The guest sees only access-denied; the host says why. A name rule
    // lets the guest look the name up, but not connect to a loopback address.
    assert!(
        log.contains(&format!(
            "egress denied: tcp://127.0.0.1:{named_port}: 127.0.0.1 is a loopback address; rule \"{by_name}\""
        )),
        "{log}"
    );
    assert!(log.contains("egress denied: name lookup of \"example.com\""), "{log}");
    assert!(log.contains("UDP is never granted"), "{log}");
}

#[test]
fn a_secret_is_added_by_the_host_to_its_host_only() {
    let api = HttpServer::start(|_, _| Reply::ok("api"));
    let other = HttpServer::start(|_, _| Reply::ok("other"));
    let api_rule = api.url();
    let log = probe(
        &[
            ("api", "get", format!("{}/", api.url())),
            ("other", "get", format!("{}/", other.url())),
        ],
        json!({
            "hosts": [api_rule, other.url()],
            "secrets": {"token": {"from": "env:EGRESS_TEST_TOKEN", "host": api_rule, "format": "Bearer {}"}}
        }),
        &[("EGRESS_TEST_TOKEN", "s3cr3t-value")],
    );
    assert_eq!(outcome(&log, "api"), "ok 200 api");
    assert_eq!(outcome(&log, "other"), "ok 200 other");
    assert_eq!(api.seen()[0].header("authorization"), Some("Bearer s3cr3t-value"));
    assert_eq!(other.seen()[0].header("authorization"), None);
    assert!(!log.contains("s3cr3t-value"), "the secret reached the log");
}

#[test]
fn a_missing_secret_stops_the_run_before_any_record_moves() {
    let yaml = format!(
        "name: egress\nsource:\n  name: dummy\n  total_records: 1\ndestination:\n  name: wasm\n  config:\n    plugin: {}\n    plugin_config: {{probes: []}}\n    allow:\n      hosts: [\"https://api.example.com\"]\n      secrets:\n        token: {{from: \"env:EGRESS_TEST_UNSET_VARIABLE\", host: \"https://api.example.com\"}}\n",
        wasm("hostile_egress").display()
    );
    let run = run(&yaml);
    assert!(!run.output.status.success(), "{}", run.text());
    assert!(
        run.text().contains("allow.secrets.token") && run.text().contains("EGRESS_TEST_UNSET_VARIABLE"),
        "{}",
        run.text()
    );
}

#[test]
fn a_bad_rule_is_an_error_naming_the_line() {
    let yaml = format!(
        "name: egress\nsource:\n  name: dummy\n  total_records: 1\ndestination:\n  name: wasm\n  config:\n    plugin: {}\n    allow:\n      hosts: [\"tcp://db.internal\"]\n",
        wasm("hostile_egress").display()
    );
    let run = run(&yaml);
    run.assert_code(2);
    assert!(
        run.text().contains("pipeline.yaml:10") && run.text().contains("needs a port"),
        "{}",
        run.text()
    );
}

#[test]
fn responses_are_bounded_in_size_and_time() {
    let big = HttpServer::start(|_, _| Reply::ok(&"x".repeat(2 * 1024 * 1024)));
    let slow = HttpServer::start(|_, _| Reply::ok("late").after(Duration::from_secs(3)));
    let log = probe(
        &[
            ("big", "get", format!("{}/", big.url())),
            ("slow", "get", format!("{}/", slow.url())),
        ],
        json!({
            "hosts": [big.url(), slow.url()],
            "network": {"max_response_mb": 1, "first_byte_timeout_ms": 300}
        }),
        &[],
    );
    assert!(
        outcome(&log, "big").contains("HttpResponseBodySize"),
        "{}",
        outcome(&log, "big")
    );
    assert!(outcome(&log, "slow").contains("timed out"), "{}", outcome(&log, "slow"));
}

// plugins/http, the first-party HTTP destination, against the local server.

/// plugins/http on 3000 dummy records over destination_ids a, b and c in
/// pages of `page`, with `allow` its grants; `extra` is more of the
/// destination's config.
fn http_pipeline(page: u64, plugin_config: serde_json::Value, allow: serde_json::Value, extra: &str) -> Run {
    run(&format!(
        "name: http\nsource:\n  name: dummy\n  total_records: 3000\n  page_size: {page}\n  destination_ids: [a, b, c]\ndestination:\n  name: wasm\n  config:\n    buffer_size: 0\n    plugin: {}\n    plugin_config: {plugin_config}\n    allow: {allow}\n{extra}",
        wasm("bizon_http").display(),
    ))
}

/// [`http_pipeline`] in pages of 250, granted `url`.
fn http_run(url: &str, plugin_config: serde_json::Value, extra: &str) -> Run {
    http_pipeline(250, plugin_config, json!({"hosts": [url]}), extra)
}

/// The records the server accepted (answered 2xx), as `source_record_id`s,
/// once per idempotency key: what a receiver that de-duplicates keeps.
fn accepted(server: &HttpServer, statuses: &dyn Fn(usize) -> u16) -> Vec<u64> {
    let mut keys = std::collections::HashSet::new();
    let mut ids = Vec::new();
    for (n, seen) in server.seen().iter().enumerate() {
        if statuses(n) >= 300 || !keys.insert(seen.header("idempotency-key").unwrap().to_string()) {
            continue;
        }
        let body = String::from_utf8(seen.body.clone()).unwrap();
        let rows: Vec<serde_json::Value> = if body.starts_with('[') {
            serde_json::from_str(&body).unwrap()
        } else {
            body.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
        };
        ids.extend(rows.iter().map(|r| match &r["source_record_id"] {
            serde_json::Value::String(id) => id.parse::<u64>().unwrap(),
            other => other.as_u64().unwrap(),
        }));
    }
    ids.sort_unstable();
    ids
}

#[test]
fn the_http_plugin_posts_every_record_once_in_requests_under_the_cap() {
    let server = HttpServer::start(|_, _| Reply::ok(""));
    let config =
        json!({"url": format!("{}/ingest", server.url()), "max_request_bytes": 20000, "headers": {"x-team": "data"}});
    http_run(&server.url(), config, "").assert_ok();
    let seen = server.seen();
    assert!(
        seen.len() > 12,
        "250-record batches over a 20 kB cap make several requests each: {}",
        seen.len()
    );
    for request in &seen {
        assert_eq!((request.method.as_str(), request.path.as_str()), ("POST", "/ingest"));
        assert_eq!(request.header("content-type"), Some("application/x-ndjson"));
        assert_eq!(request.header("x-team"), Some("data"));
        assert!(request.body.len() <= 20000, "{} bytes", request.body.len());
    }
    assert_eq!(accepted(&server, &|_| 200), (0..3000).collect::<Vec<u64>>());
}

#[test]
fn the_http_plugin_rides_out_a_429_and_503_storm_honouring_retry_after() {
    // The first 12 requests fail: 429 asking for 1 s, then 503s.
    let status = |n: usize| match n {
        0 => 429,
        1..=11 => 503,
        _ => 200,
    };
    let server = HttpServer::start(move |n, _| match status(n) {
        429 => Reply::status(429, "slow down").header("retry-after", "1"),
        503 => Reply::status(503, "unavailable"),
        _ => Reply::ok(""),
    });
    let config = json!({
        "url": server.url(), "encoding": "json_array", "max_retries": 3,
        "initial_backoff_ms": 10, "max_backoff_ms": 2000
    });
    // One write at a time, so request 1 is request 0's retry.
    let extra = "    max_concurrent_threads: 1\n    retry: {max_attempts: 10, initial_backoff_ms: 10}\n";
    http_run(&server.url(), config, extra).assert_ok();
    let seen = server.seen();
    assert!(
        seen[1].at - seen[0].at >= Duration::from_millis(950),
        "Retry-After was not honoured"
    );
    assert_eq!(
        seen[0].header("idempotency-key"),
        seen[1].header("idempotency-key"),
        "a retry keeps its key"
    );
    assert_eq!(seen[0].header("content-type"), Some("application/json"));
    assert_eq!(accepted(&server, &status), (0..3000).collect::<Vec<u64>>());
}

#[test]
fn the_http_plugin_waits_for_a_slow_server_and_retries_one_past_the_timeout() {
    // Requests 0 and 1 answer after 2 s, past the 500 ms first-byte limit;
    // the rest after 200 ms, within it.
    let server = HttpServer::start(|n, _| Reply::ok("").after(Duration::from_millis(if n < 2 { 2000 } else { 200 })));
    let config = json!({"url": server.url(), "initial_backoff_ms": 10});
    // The first-byte timeout is a grant setting: put it next to the host.
    let allow = json!({"hosts": [server.url()], "network": {"first_byte_timeout_ms": 500}});
    let run = http_pipeline(1000, config, allow, "    max_concurrent_threads: 3\n");
    run.assert_ok();
    assert!(
        run.text().contains("timed out"),
        "the slow answers were not cut: {}",
        run.text()
    );
    let on_time = |n: usize| if n < 2 { 504 } else { 200 };
    assert_eq!(accepted(&server, &on_time), (0..3000).collect::<Vec<u64>>());
}

#[test]
fn the_http_plugin_stops_on_a_client_error() {
    let server = HttpServer::start(|_, _| Reply::status(400, "bad field"));
    let run = http_run(&server.url(), json!({"url": server.url()}), "");
    run.assert_code(1);
    assert!(run.text().contains("HTTP 400: bad field"), "{}", run.text());
    // Writes of a, b and c were in flight at once; none was sent again.
    let mut keys: Vec<String> = server
        .seen()
        .iter()
        .map(|s| s.header("idempotency-key").unwrap().to_string())
        .collect();
    let sent = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), sent, "a 400 was retried: {keys:?}");
}

#[test]
fn the_webhook_example_of_docs_sdk_md_posts_with_allow_host_and_is_denied_without() {
    let server = HttpServer::start(|_, _| Reply::ok(""));
    let dir = tempfile::tempdir().unwrap();
    let records: String = (0..100).map(|i| format!("{{\"n\":{i}}}\n")).collect();
    let run = |grant: bool| {
        let mut cmd = bizon_host();
        cmd.current_dir(dir.path())
            .args(["run", "--no-progress", "--plugin"])
            .arg(wasm("webhook"))
            .args([
                "--plugin-config",
                &json!({"url": format!("{}/hook", server.url())}).to_string(),
            ]);
        if grant {
            cmd.args(["--allow-host", &server.url()]);
        }
        output_with_stdin(cmd, records.clone().into_bytes())
    };
    let output = run(true);
    assert!(output.status.success(), "{}", text(&output));
    let lines: usize = server
        .seen()
        .iter()
        .map(|s| String::from_utf8_lossy(&s.body).lines().count())
        .sum();
    assert_eq!(lines, 100);
    let key = server.seen()[0].header("idempotency-key").unwrap().to_string();
    assert!(key.ends_with("-0"), "destination_id-sequence: {key}");

    let output = run(false);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("egress denied") && text(&output).contains("allow.hosts is empty"),
        "{}",
        text(&output)
    );
    assert_eq!(server.seen().len(), 1, "the denied run reached the server");
}
