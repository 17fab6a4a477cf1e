//! Plugins that keep their HTTP libraries, run by the binary against a local
//! server: Python destinations written with `requests`, `urllib3` and
//! `urllib.request` (tests/plugins/python-http, plugins/python-webhook) and
//! JavaScript ones with `fetch` (tests/plugins/js-http, plugins/js-webhook),
//! every request sent by the host over wasi:http through its egress
//! chokepoint; and name lookups through wasi:sockets, which come back to the
//! guest as error codes, never as traps (tests/plugins/lookup); transforms
//! that look records up (tests/plugins/python-enrich, js-enrich). The
//! components are built by scripts/build-plugins.sh.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::http_server::{HttpServer, Reply, Seen};
use crate::support::{js_wasm, python_wasm, run_in, text, wasm};

/// Runs `total` dummy records into `plugin` with these grants; `extra` is
/// more of the destination's config (YAML lines, indented).
fn run(plugin: &Path, total: u64, plugin_config: Value, allow: Value, extra: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    // YAML reads JSON: the nested values go in as they are.
    let yaml = format!(
        "name: http\nsource:\n  name: dummy\n  total_records: {total}\n  page_size: 1000\n\
         destination:\n  name: wasm\n  config:\n    plugin: {}\n    plugin_config: {plugin_config}\n    \
         allow: {allow}\n{extra}",
        plugin.display()
    );
    run_in(dir.path(), &yaml)
}

/// The line the plugin logged for step `name` (`tour NAME: ...`, `lookup NAME ...`).
fn logged<'a>(log: &'a str, prefix: &str) -> &'a str {
    let line = log
        .lines()
        .find(|l| l.contains(prefix))
        .unwrap_or_else(|| panic!("no line with {prefix:?} in:\n{log}"));
    let text = &line[line.find(prefix).unwrap() + prefix.len()..];
    // The host's log adds the plugin as a field after the message.
    text.split(" plugin=\"").next().unwrap().trim()
}

/// The `id`s of the records the server accepted (`status(n)` of its n-th
/// answer is 2xx), once per idempotency key: what a receiver that drops
/// duplicates keeps.
fn accepted(server: &HttpServer, status: &dyn Fn(usize) -> u16) -> Vec<u64> {
    let mut keys = BTreeSet::new();
    let mut ids = Vec::new();
    for (n, seen) in server.seen().iter().enumerate() {
        if status(n) >= 300 || !keys.insert(seen.header("idempotency-key").unwrap_or("").to_string()) {
            continue;
        }
        let rows: Vec<Value> = serde_json::from_slice(&seen.body).unwrap();
        ids.extend(rows.iter().map(|r| r["id"].as_u64().unwrap()));
    }
    ids.sort_unstable();
    ids
}

/// What tests/plugins/python-http's and js-http's tours call.
fn tour_server() -> HttpServer {
    // "hello gzip", gzip-compressed (mtime 0).
    const GZIP: [u8; 30] = [
        31, 139, 8, 0, 0, 0, 0, 0, 2, 3, 203, 72, 205, 201, 201, 87, 72, 175, 202, 44, 0, 0, 25, 106, 210, 223, 10, 0,
        0, 0,
    ];
    let flaky = AtomicUsize::new(0);
    HttpServer::start(move |_, seen| match seen.path.split('?').next().unwrap() {
        "/get" => Reply::ok(&format!("got {}", seen.path))
            .header("content-type", "text/plain")
            .header("set-cookie", "session=abc; Path=/"),
        "/json" => Reply::ok(&String::from_utf8_lossy(&seen.body)).header("content-type", "application/json"),
        "/form" | "/put" => Reply::status(201, ""),
        "/delete" => Reply::status(204, ""),
        "/big" => Reply::ok(&"x".repeat(300_000)),
        "/gzip" => Reply {
            body: GZIP.to_vec(),
            ..Reply::ok("")
        }
        .header("content-encoding", "gzip"),
        "/redirect" => Reply::status(302, "").header("location", "/get?from=redirect"),
        "/flaky" if flaky.fetch_add(1, Ordering::SeqCst) == 0 => Reply::status(503, "busy").header("retry-after", "1"),
        "/flaky" => Reply::ok("steady"),
        "/slow" => Reply::ok("late").after(Duration::from_secs(2)),
        _ => Reply::status(404, "no such page"),
    })
}

/// The first request the server saw for `method` `path` (without its query).
fn request<'a>(seen: &'a [Seen], method: &str, path: &str) -> &'a Seen {
    seen.iter()
        .find(|s| s.method == method && s.path.split('?').next() == Some(path))
        .unwrap_or_else(|| {
            panic!(
                "no {method} {path} among {:?}",
                seen.iter().map(|s| &s.path).collect::<Vec<_>>()
            )
        })
}

fn body(seen: &Seen) -> String {
    String::from_utf8_lossy(&seen.body).into_owned()
}

/// tests/plugins/python-http walks requests (a Session with headers, auth,
/// params and cookies; each method; json=, data=, files=; streaming;
/// gzip; a redirect; raise_for_status; a timeout; urllib3's Retry with
/// Retry-After), urllib.request, urllib3 and httpx, against a granted local
/// server; a host not granted raises each library's connection error with
/// the host's reason, and a name lookup comes back as an error, not a trap.
#[test]
fn python_plugins_keep_requests_urllib3_urllib_and_httpx() {
    let server = tour_server();
    let base = server.url();
    let https = base.replace("http://", "https://");
    let output = run(
        &python_wasm("python_http"),
        1,
        json!({"tour": base}),
        json!({"hosts": [base, https]}),
        "",
    );
    let log = text(&output);
    assert!(output.status.success(), "{log}");
    let step = |name: &str| logged(&log, &format!("tour {name}: ")).to_string();
    let seen = server.seen();

    assert_eq!(step("get"), "got /get?v=1&q=a+b");
    let get = request(&seen, "GET", "/get");
    assert_eq!(get.header("x-team"), Some("data"), "the session's headers");
    assert_eq!(
        get.header("authorization"),
        Some("Basic YWRhOnMzY3JldA=="),
        "the session's auth"
    );
    assert_eq!(step("json"), "{'n': 1}");
    let posted = request(&seen, "POST", "/json");
    assert_eq!(
        (body(posted).as_str(), posted.path.as_str()),
        (r#"{"n": 1}"#, "/json?v=1")
    );
    assert_eq!(posted.header("content-type"), Some("application/json"));
    assert_eq!(posted.header("cookie"), Some("session=abc"), "the cookie /get set");
    assert_eq!(step("form"), "201");
    let form = &seen.iter().filter(|s| s.path.starts_with("/form")).collect::<Vec<_>>();
    assert_eq!(body(form[0]), "k=v+w");
    assert_eq!(
        form[0].header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(step("upload"), "201");
    assert!(
        body(form[1]).contains("file body")
            && form[1]
                .header("content-type")
                .unwrap()
                .starts_with("multipart/form-data"),
        "{:?}",
        form[1]
    );
    assert_eq!(step("put"), "201");
    assert_eq!(body(request(&seen, "PUT", "/put")), "raw bytes");
    assert_eq!(step("delete"), "204");
    request(&seen, "DELETE", "/delete");
    assert_eq!(step("head"), "200 text/plain b''");
    assert_eq!(step("stream"), "300000", "iter_content over 300 kB");
    assert_eq!(step("gzip"), "hello gzip", "content-encoding decoded");
    assert_eq!(step("redirect"), format!("{base}/get?from=redirect after [302]"));
    assert!(step("not-found").starts_with("raised requests.exceptions.HTTPError: 404 Client Error: Not Found"));
    assert!(
        step("timeout").starts_with("raised requests.exceptions.ReadTimeout:"),
        "{}",
        step("timeout")
    );
    assert_eq!(step("retry"), "steady");
    let flaky: Vec<&Seen> = seen.iter().filter(|s| s.path == "/flaky").collect();
    assert!(
        flaky.len() == 2 && flaky[1].at - flaky[0].at >= Duration::from_millis(950),
        "urllib3's Retry waits for Retry-After: 1"
    );
    let denied = step("denied");
    assert!(
        denied.starts_with("raised requests.exceptions.ConnectionError:")
            && denied.contains("egress denied: http://127.0.0.1:9: no rule in allow.hosts"),
        "{denied}"
    );
    // https goes to the host, which makes the TLS connection (here to a
    // plain-HTTP server): requests needs no ssl module nor CA bundle.
    let tls = step("https");
    assert!(
        tls.starts_with("raised requests.exceptions.SSLError:") && tls.contains("Tls"),
        "{tls}"
    );
    assert_eq!(step("urllib"), "got /get?via=urllib");
    assert_eq!(
        step("urllib-404"),
        "raised urllib.error.HTTPError: HTTP Error 404: Not Found"
    );
    assert_eq!(step("urllib3"), "got /get?via=urllib3");
    assert_eq!(step("httpx"), "got /get?via=httpx");
    assert_eq!(step("httpx-json"), "{'h': 2}");
    assert!(
        step("httpx-timeout").starts_with("raised httpx.ReadTimeout:"),
        "{}",
        step("httpx-timeout")
    );
    assert!(
        step("httpx-denied").starts_with("raised httpx.ConnectError: egress denied: http://127.0.0.1:9"),
        "{}",
        step("httpx-denied")
    );
    // urllib3 binds a socket when it is imported; the build refuses sockets
    // then, so wasi-libc holds no network handle that the instance lacks.
    assert!(
        step("lookup").starts_with("raised builtins.PermissionError"),
        "{}",
        step("lookup")
    );
    assert!(log.contains("egress denied: name lookup of \"example.com\""), "{log}");
}

/// tests/plugins/js-http walks fetch: Request, Headers, JSON and text
/// bodies, PUT and DELETE, a 300 kB body, a redirect, checkResponse,
/// AbortSignal.timeout, and a host not granted (a TypeError with the
/// host's reason).
#[test]
fn javascript_plugins_keep_fetch() {
    let server = tour_server();
    let base = server.url();
    let https = base.replace("http://", "https://");
    let output = run(
        &js_wasm("js_http"),
        1,
        json!({"tour": base}),
        json!({"hosts": [base, https]}),
        "",
    );
    let log = text(&output);
    assert!(output.status.success(), "{log}");
    let step = |name: &str| logged(&log, &format!("tour {name}: ")).to_string();
    let seen = server.seen();

    assert_eq!(step("get"), "got /get?q=a%20b");
    assert_eq!(request(&seen, "GET", "/get").header("x-team"), Some("data"));
    assert_eq!(step("json"), r#"{"n":1}"#);
    let posted = request(&seen, "POST", "/json");
    assert_eq!(body(posted), r#"{"n":1}"#);
    assert_eq!(posted.header("content-type"), Some("application/json"));
    assert_eq!(step("put"), "201");
    assert_eq!(body(request(&seen, "PUT", "/put")), "raw text");
    assert_eq!(step("delete"), "204");
    assert_eq!(step("headers"), "text/plain true OK");
    assert_eq!(step("big"), "300000");
    assert_eq!(step("redirect"), format!("200 {base}/get?from=redirect true"));
    assert_eq!(
        step("not-found"),
        format!("rejected HttpStatusError: HTTP 404 Not Found from {base}/missing")
    );
    assert!(
        step("timeout").starts_with("rejected TimeoutError"),
        "{}",
        step("timeout")
    );
    assert_eq!(
        step("denied"),
        format!(
            "rejected TypeError: egress denied: http://127.0.0.1:9: no rule in allow.hosts [\"{base}\", \"{https}\"] allows it"
        )
    );
    assert!(
        step("https").starts_with("rejected TypeError: fetch https://"),
        "{}",
        step("https")
    );
    assert!(step("https").contains("TLS"), "{}", step("https"));
}

/// tests/plugins/lookup resolves names through wasi:sockets and through
/// wasi-libc's getaddrinfo: an address written out and a name a `tcp://`
/// rule gives come back as addresses, a name no rule gives as
/// access-denied, a granted name that does not exist as name-unresolvable;
/// the instance lives on (a trap would fail the run).
#[test]
fn name_lookups_come_back_as_addresses_or_error_codes_never_traps() {
    let output = run(
        &wasm("hostile_lookup"),
        1,
        json!({"names": ["127.0.0.1", "localhost", "example.com", "no-such-name.invalid"]}),
        json!({"hosts": ["tcp://localhost:5432", "tcp://no-such-name.invalid:80"]}),
        "",
    );
    let log = text(&output);
    assert!(output.status.success(), "{log}");
    let lookup = |name: &str, via: &str| logged(&log, &format!("lookup {name} via {via}: ")).to_string();
    for via in ["wasi", "libc"] {
        assert_eq!(lookup("127.0.0.1", via), r#"ok ["127.0.0.1"]"#);
        assert!(
            lookup("localhost", via).contains("127.0.0.1"),
            "{}",
            lookup("localhost", via)
        );
    }
    assert!(lookup("example.com", "wasi").contains("access-denied"), "{log}");
    assert!(lookup("example.com", "libc").starts_with("failed"), "{log}");
    assert!(
        lookup("no-such-name.invalid", "wasi").contains("name-unresolvable"),
        "{log}"
    );
    assert!(lookup("no-such-name.invalid", "libc").starts_with("failed"), "{log}");
    assert!(log.contains("egress denied: name lookup of \"example.com\""), "{log}");
}

// Delivery: each batch POSTed as one JSON array, by each library, through
// the failures a real service produces.

/// 429 asking for 1 s, then 503, then an answer 2 s late (past the
/// plugin's 500 ms timeout), then 200s.
fn storm(n: usize) -> u16 {
    match n {
        0 => 429,
        1 => 503,
        _ => 200,
    }
}

fn storm_server() -> HttpServer {
    HttpServer::start(|n, _| match n {
        0 => Reply::status(429, "slow down").header("retry-after", "1"),
        1 => Reply::status(503, "unavailable"),
        2 => Reply::ok("late").after(Duration::from_secs(2)),
        _ => Reply::ok("ok"),
    })
}

/// One write at a time, so request n+1 is request n's retry; the host's own
/// backoff is short, so a wait of a second is Retry-After's.
const ONE_AT_A_TIME: &str =
    "    buffer_size: 0\n    max_concurrent_threads: 1\n    retry: {max_attempts: 6, initial_backoff_ms: 10, max_backoff_ms: 50}\n";

fn rides_out_the_storm(plugin: &Path, config: Value) {
    let server = storm_server();
    let url = format!("{}/in", server.url());
    let mut config = config;
    config["url"] = json!(url);
    let output = run(plugin, 3000, config, json!({"hosts": [server.url()]}), ONE_AT_A_TIME);
    let log = text(&output);
    assert!(output.status.success(), "{log}");
    let seen = server.seen();
    assert!(
        seen[1].at - seen[0].at >= Duration::from_millis(950),
        "Retry-After: 1 was not waited for ({:?})",
        seen[1].at - seen[0].at
    );
    assert_eq!(
        seen[0].header("idempotency-key"),
        seen[3].header("idempotency-key"),
        "one batch, four tries"
    );
    assert_eq!(seen.len(), 6, "3 batches, the first tried 4 times");
    assert!(
        log.contains("429") && log.contains("503"),
        "the retries are logged: {log}"
    );
    assert_eq!(accepted(&server, &storm), (0..3000).collect::<Vec<u64>>());
}

#[test]
fn requests_rides_out_429_503_and_a_timeout() {
    rides_out_the_storm(
        &python_wasm("python_http"),
        json!({"client": "requests", "timeout": 0.5}),
    );
}

#[test]
fn urllib3_and_urllib_ride_out_429_503_and_a_timeout() {
    rides_out_the_storm(
        &python_wasm("python_http"),
        json!({"client": "urllib3", "timeout": 0.5}),
    );
    rides_out_the_storm(&python_wasm("python_http"), json!({"client": "urllib", "timeout": 0.5}));
}

#[test]
fn fetch_rides_out_429_503_and_a_timeout() {
    rides_out_the_storm(&js_wasm("js_http"), json!({"timeout_ms": 500}));
}

/// The granted server redirects to one that is not granted: the library
/// follows, the host refuses the second hop, and the run stops with the
/// host's reason; the other server sees nothing.
fn a_redirect_to_a_host_not_granted_stops_the_run(plugin: &Path, error: &str) {
    let other = HttpServer::start(|_, _| Reply::ok("other"));
    let target = format!("{}/elsewhere", other.url());
    let server = HttpServer::start(move |_, _| Reply::status(307, "").header("location", &target));
    let config = json!({"url": format!("{}/in", server.url()), "timeout": 5});
    let output = run(plugin, 10, config, json!({"hosts": [server.url()]}), ONE_AT_A_TIME);
    let log = text(&output);
    assert_eq!(output.status.code(), Some(1), "{log}");
    let refusal = format!("egress denied: {}: no rule in allow.hosts", other.url());
    assert!(log.contains(error) && log.contains(&refusal), "{log}");
    assert_eq!(server.seen().len(), 1, "a refused host is not retried");
    assert!(other.seen().is_empty(), "the host not granted was reached");
}

#[test]
fn requests_follows_a_redirect_only_to_a_granted_host() {
    a_redirect_to_a_host_not_granted_stops_the_run(&python_wasm("python_http"), "requests.exceptions.ConnectionError");
}

#[test]
fn fetch_follows_a_redirect_only_to_a_granted_host() {
    a_redirect_to_a_host_not_granted_stops_the_run(&js_wasm("js_http"), "TypeError: egress denied");
}

/// plugins/python-webhook and plugins/js-webhook, the docs' examples:
/// 20,000 records reach the server with the grant, once each; without it
/// the run fails naming the refusal, and the server sees nothing.
fn the_webhook_delivers_everything_with_the_grant_and_nothing_without(plugin: &Path, extra: &str, error: &str) {
    let server = HttpServer::start(|_, _| Reply::ok(""));
    let url = format!("{}/in", server.url());
    let output = run(
        plugin,
        20_000,
        json!({"url": url}),
        json!({"hosts": [server.url()]}),
        extra,
    );
    assert!(output.status.success(), "{}", text(&output));
    let seen = server.seen();
    assert!(
        seen.len() >= 20,
        "1,000 records a request at most: {} requests",
        seen.len()
    );
    assert_eq!(accepted(&server, &|_| 200), (0..20_000).collect::<Vec<u64>>());

    let server = HttpServer::start(|_, _| Reply::ok(""));
    let url = format!("{}/in", server.url());
    let output = run(plugin, 20_000, json!({"url": url}), json!({}), extra);
    let log = text(&output);
    assert_eq!(output.status.code(), Some(1), "{log}");
    assert!(
        log.contains(error) && log.contains("egress denied") && log.contains("allow.hosts is empty"),
        "{log}"
    );
    assert!(server.seen().is_empty(), "the server was reached without the grant");
}

#[test]
fn the_python_webhook_delivers_20000_records_with_the_grant_and_none_without() {
    the_webhook_delivers_everything_with_the_grant_and_nothing_without(
        &python_wasm("python_webhook"),
        "",
        "requests.exceptions.ConnectionError",
    );
}

#[test]
fn the_js_webhook_delivers_20000_records_with_the_grant_and_none_without() {
    the_webhook_delivers_everything_with_the_grant_and_nothing_without(
        &js_wasm("js_webhook"),
        "    buffer_size: 10\n",
        "TypeError: egress denied",
    );
}

/// Transforms call APIs too: tests/plugins/python-enrich (`requests`) and
/// js-enrich (an async transform awaiting `fetch`) look each record up on a
/// granted server; without the grant each record fails with the host's
/// refusal, and the server sees nothing.
fn a_transform_looks_each_record_up(plugin: &Path, error: &str) {
    let server = HttpServer::start(|_, seen| Reply::ok(&format!("name of {}", &seen.path[1..])));
    let pipeline = |allow: Value| {
        format!(
            "name: enrich\nsource:\n  name: dummy\n  total_records: 20\n  page_size: 10\ndestination:\n  name: file\n  \
             config:\n    destination_id: out\ntransforms:\n  - label: enrich\n    wasm: {}\n    config: {}\n    allow: {allow}\n",
            plugin.display(),
            json!({"url": server.url()}),
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let output = run_in(dir.path(), &pipeline(json!({"hosts": [server.url()]})));
    assert!(output.status.success(), "{}", text(&output));
    let written = std::fs::read_to_string(dir.path().join("out.json")).unwrap();
    let mut looked_up: Vec<(u64, String)> = written
        .lines()
        .map(|line| {
            let row: Value = serde_json::from_str(line).unwrap();
            let data: Value = match &row["source_data"] {
                Value::String(text) => serde_json::from_str(text).unwrap(),
                other => other.clone(),
            };
            (
                data["id"].as_u64().unwrap(),
                data["looked_up"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    looked_up.sort();
    assert_eq!(
        looked_up,
        (0..20).map(|i| (i, format!("name of {i}"))).collect::<Vec<_>>()
    );
    assert_eq!(server.seen().len(), 20);

    let output = run_in(dir.path(), &pipeline(json!({})));
    let log = text(&output);
    assert_eq!(output.status.code(), Some(1), "{log}");
    assert!(log.contains(error) && log.contains("egress denied"), "{log}");
    assert_eq!(server.seen().len(), 20, "the server was reached without the grant");
}

#[test]
fn a_python_transform_looks_records_up_with_requests() {
    a_transform_looks_each_record_up(&python_wasm("python_enrich"), "requests.exceptions.ConnectionError");
}

#[test]
fn a_javascript_transform_awaits_fetch() {
    a_transform_looks_each_record_up(&js_wasm("js_enrich"), "TypeError: egress denied");
}
