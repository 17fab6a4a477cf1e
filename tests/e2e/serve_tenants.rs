//! End-to-end: tenants' own destinations under `bizon-host serve`, driven
//! through its API (issue 25). Secrets stored sealed and never shown, a
//! plugin's request carrying one to a local webhook, a native
//! `bigquery_streaming_v2` writing into bqemulator with the tenant's own key
//! through its egress ceiling, a native `file` destination under the
//! tenant's directory, and what each refuses.

use std::path::Path;

use serde_json::{json, Value};

use crate::support::emulators::{hold_blocking, PROJECT};
use crate::support::http_server::{HttpServer, Reply};
use crate::support::serve::{body as yaml, refused_start, Serve, ADMIN};
use crate::support::{bizon_host, on_path, require_tool, text, wasm};

/// A value that must never be seen again once stored.
const VALUE: &str = "tok-7f3a9c51e2b84d06-never-shown";

fn secret(value: &str) -> Option<Vec<u8>> {
    yaml(&json!({ "value": value }).to_string())
}

/// Everything a tenant, the operator and the host's own log can read about
/// `pipeline`: none of it holds `value`.
fn assert_nowhere(serve: &Serve, token: &str, pipeline: &str, value: &str) {
    let seen = [
        serve.call("GET", &format!("/v1/pipelines/{pipeline}"), token, None).1,
        serve.call("GET", "/v1/pipelines", token, None).1,
        serve
            .call("GET", &format!("/v1/pipelines/{pipeline}/logs"), token, None)
            .1,
        serve.call("GET", "/v1/secrets", token, None).1,
        serve.call("GET", "/v1/tenants", ADMIN, None).1,
        serve.call("GET", "/metrics", ADMIN, None).1,
        serve.call("GET", "/ui", ADMIN, None).1,
        Value::String(serve.log()),
    ];
    for (i, answer) in seen.iter().enumerate() {
        let text = match answer {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        assert!(!text.contains(value), "answer {i} shows the secret: {text}");
    }
}

#[test]
fn a_tenants_secrets_are_sealed_at_rest_listed_without_values_and_nobody_elses() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = "limits:\n  secrets: 2\n  secret_kb: 1\n";
    let mut serve = Serve::start(&data, config);
    let a = serve.tenant("acme", json!({}));
    let b = serve.tenant("bravo", json!({}));

    let (status, created) = serve.call("PUT", "/v1/secrets/hook-token", &a, secret(VALUE));
    assert_eq!((status, created["created"].clone()), (201, json!(true)), "{created}");
    let (status, replaced) = serve.call("PUT", "/v1/secrets/hook-token", &a, secret(VALUE));
    assert_eq!(status, 204, "{replaced}");
    let listed = serve.ok("GET", "/v1/secrets", &a, None);
    assert_eq!(listed["secrets"][0]["name"], "hook-token", "{listed}");
    assert!(
        listed["secrets"][0]["updated_at"].as_i64().unwrap() > 1_700_000_000,
        "{listed}"
    );
    assert!(!listed.to_string().contains(VALUE));

    // Limits: 1 KiB a value, 2 secrets; a body that is not {"value": "..."}
    // is refused without repeating what it held.
    let (status, big) = serve.call("PUT", "/v1/secrets/big", &a, secret(&"x".repeat(1025)));
    assert_eq!(
        (status, big["error"]["code"].clone()),
        (413, json!("too_large")),
        "{big}"
    );
    serve.ok("PUT", "/v1/secrets/second", &a, secret("two"));
    let (status, third) = serve.call("PUT", "/v1/secrets/third", &a, secret("three"));
    assert_eq!(
        (status, third["error"]["code"].clone()),
        (422, json!("limit_exceeded")),
        "{third}"
    );
    let (status, typed) = serve.call("PUT", "/v1/secrets/n", &a, yaml("{\"value\": 4242424242}"));
    assert_eq!(status, 422, "{typed}");
    assert!(!typed.to_string().contains("4242424242"), "{typed}");

    // Another tenant sees none of them, and a name of acme's answers as one
    // nobody has.
    assert_eq!(serve.ok("GET", "/v1/secrets", &b, None)["secrets"], json!([]));
    let (status, theirs) = serve.call("DELETE", "/v1/secrets/hook-token", &b, None);
    let (_, nobodys) = serve.call("DELETE", "/v1/secrets/nobody", &b, None);
    assert_eq!(status, 404, "{theirs}");
    assert_eq!(
        theirs["error"]["message"].as_str().unwrap(),
        nobodys["error"]["message"]
            .as_str()
            .unwrap()
            .replace("nobody", "hook-token")
    );
    assert_eq!(
        serve.ok("GET", "/v1/secrets", &a, None)["secrets"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // At rest: not in the registry's bytes (the database, its WAL).
    for file in ["registry.sqlite", "registry.sqlite-wal", "registry.sqlite-shm"] {
        if let Ok(bytes) = std::fs::read(data.join(file)) {
            assert!(
                !bytes.windows(VALUE.len()).any(|w| w == VALUE.as_bytes()),
                "{file} holds the value"
            );
        }
    }
    assert_nowhere(&serve, &a, "none", VALUE);

    // The client: put from a variable, list, delete.
    let client = |args: &[&str], env: &[(&str, &str)]| {
        let mut command = bizon_host();
        command
            .args(args)
            .env("BIZON_HOST_URL", &serve.url)
            .env("BIZON_HOST_TOKEN", &a);
        for (k, v) in env {
            command.env(k, v);
        }
        command.output().unwrap()
    };
    let deleted = client(&["secret", "delete", "second"], &[]);
    assert!(deleted.status.success(), "{}", text(&deleted));
    let put = client(
        &["secret", "put", "from-cli", "--from-env", "E2E_SECRET"],
        &[("E2E_SECRET", "cli-value-0c1d")],
    );
    assert!(put.status.success(), "{}", text(&put));
    let listed = client(&["secret", "list"], &[]);
    let listed = text(&listed);
    assert!(
        listed.contains("from-cli") && listed.contains("hook-token") && !listed.contains("second"),
        "{listed}"
    );
    assert!(!listed.contains("cli-value-0c1d"), "{listed}");
    serve.ok("DELETE", "/v1/secrets/hook-token", &a, None);

    // The key: made at the first start, the owner's only; another key or
    // none is refused at start, naming the file.
    serve.stop();
    let key = data.join("secrets.key");
    let mode = std::fs::metadata(&key).unwrap().permissions();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
    let other = dir.path().join("other.key");
    std::fs::write(&other, "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n").unwrap();
    std::fs::set_permissions(&other, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let wrong = refused_start(&data, config, &["--secrets-key-file", other.to_str().unwrap()]);
    assert!(
        wrong.contains(other.to_str().unwrap()) && wrong.contains("is not the key"),
        "{wrong}"
    );
    let kept = dir.path().join("kept.key");
    std::fs::rename(&key, &kept).unwrap();
    let missing = refused_start(&data, config, &[]);
    assert!(
        missing.contains("secrets.key is missing") && missing.contains("restore"),
        "{missing}"
    );
    let serve = Serve::start_with(&data, config, &["--secrets-key-file", kept.to_str().unwrap()]);
    let names: Vec<Value> = serve.ok("GET", "/v1/secrets", &a, None)["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].clone())
        .collect();
    assert_eq!(names, [json!("from-cli")]);
}

/// plugins/http posting `records` dummy records to `url`, with the tenant
/// secret `from` as a bearer token toward `secret_host`.
fn http_pipeline(url: &str, records: u64, from: &str, secret_host: &str) -> String {
    format!(
        "name: hook\nsource:\n  name: dummy\n  total_records: {records}\n  page_size: 100\ndestination:\n  name: wasm\n  \
         config:\n    plugin: http\n    buffer_size: 0\n    plugin_config: {{url: \"{url}/ingest\"}}\n    allow:\n      \
         hosts: [\"{url}\"]\n      secrets:\n        token: {{from: \"{from}\", host: \"{secret_host}\", format: \"Bearer {{}}\"}}\n"
    )
}

#[test]
fn a_plugin_sends_its_tenants_secret_to_a_webhook_and_the_value_shows_nowhere() {
    let hook = HttpServer::start(|_, _| Reply::ok(""));
    let url = hook.url();
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(
        &dir.path().join("data"),
        "native_destinations: [logger, bigquery_streaming_v2]\n",
    );
    let a = serve.tenant("acme", json!({ "egress": [url] }));
    let b = serve.tenant("bravo", json!({ "egress": [url] }));
    for token in [&a, &b] {
        serve.ok(
            "PUT",
            "/v1/plugins/http",
            token,
            Some(std::fs::read(wasm("bizon_http")).unwrap()),
        );
    }
    serve.ok("PUT", "/v1/secrets/hook-token", &a, secret(VALUE));
    let pipeline = http_pipeline(&url, 500, "secret:hook-token", &url);
    serve.ok("PUT", "/v1/pipelines/hook", &a, yaml(&pipeline));
    serve.ok("POST", "/v1/pipelines/hook/start", &a, None);
    let done = serve.wait_for(&a, "hook", "completed", |s| s["state"] == "completed");
    assert_eq!(done["records_written"], 500, "{done}");
    let seen = hook.seen();
    assert!(!seen.is_empty());
    for request in &seen {
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {VALUE}").as_str())
        );
    }
    assert_nowhere(&serve, &a, "hook", VALUE);

    // Another tenant naming it is refused at PUT, as for a name nobody has.
    let (status, theirs) = serve.call("PUT", "/v1/pipelines/hook", &b, yaml(&pipeline));
    assert_eq!(status, 422, "{theirs}");
    let nobodys = serve.call(
        "PUT",
        "/v1/pipelines/hook",
        &b,
        yaml(&http_pipeline(&url, 500, "secret:nobody", &url)),
    );
    let theirs = theirs["error"]["message"].as_str().unwrap();
    assert!(theirs.contains("no secret `hook-token`"), "{theirs}");
    assert_eq!(
        theirs,
        nobodys.1["error"]["message"]
            .as_str()
            .unwrap()
            .replace("nobody", "hook-token")
    );
    // The host's environment and files are not a tenant's to name, and a
    // secret goes only toward a host inside the ceiling.
    let (status, env) = serve.call(
        "PUT",
        "/v1/pipelines/env",
        &a,
        yaml(&http_pipeline(&url, 1, "env:HOME", &url)),
    );
    assert!(status == 422 && env.to_string().contains("env: and file:"), "{env}");
    let (status, away) = serve.call(
        "PUT",
        "/v1/pipelines/away",
        &a,
        yaml(&http_pipeline(
            &url,
            1,
            "secret:hook-token",
            "https://elsewhere.example",
        )),
    );
    assert!(
        status == 422 && away.to_string().contains("outside this tenant's egress ceiling"),
        "{away}"
    );
}

/// A service account key of a fresh RSA key (openssl), whose token endpoint
/// answers nothing: the destination signs its own tokens and never asks one.
fn service_account_key() -> String {
    let openssl = require_tool("openssl", &on_path("openssl"), "apt-get install openssl");
    let out = std::process::Command::new(openssl)
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    json!({
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": "e2e",
        "private_key": String::from_utf8(out.stdout).unwrap(),
        "client_email": format!("tenant@{PROJECT}.iam.gserviceaccount.com"),
        "client_id": "1",
        "token_uri": "http://127.0.0.1:9/token",
    })
    .to_string()
}

/// A dummy source of `records` into `bigquery_streaming_v2` with `config`.
fn bigquery_pipeline(records: u64, config: &str) -> String {
    let config: String = config.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "name: bq\nsource:\n  name: dummy\n  stream: s\n  total_records: {records}\n  page_size: 1000\n  \
         destination_ids: [t]\ndestination:\n  name: bigquery_streaming_v2\n  config:\n{config}"
    )
}

/// One row of a query's answer, as strings.
fn query(rest: &str, sql: &str) -> Vec<String> {
    let answer: Value = reqwest::blocking::Client::new()
        .post(format!("{rest}/bigquery/v2/projects/{PROJECT}/queries"))
        .json(&json!({"query": sql, "useLegacySql": false}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    answer["rows"][0]["f"]
        .as_array()
        .unwrap_or_else(|| panic!("{sql}: {answer}"))
        .iter()
        .map(|c| c["v"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn a_tenants_native_bigquery_streaming_v2_writes_10000_rows_with_its_own_key_inside_its_ceiling() {
    let (e, _held) = hold_blocking();
    let key = service_account_key();
    // A line of the private key: what would leak if the key did.
    let key_line = key
        .split("\\n")
        .find(|l| l.len() > 60)
        .expect("a base64 line of the key")
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(
        &dir.path().join("data"),
        "native_destinations: [logger, bigquery_streaming_v2]\n",
    );
    let a = serve.tenant("acme", json!({ "egress": [e.rest, e.grpc] }));
    serve.ok("PUT", "/v1/secrets/sa-key", &a, secret(&key));
    let ds = format!("tenant_{}", std::process::id());
    let endpoints = format!("endpoint: {}\nstorage_write_endpoint: {}\n", e.rest, e.grpc);
    let with_key = "authentication:\n  service_account_key: secret://sa-key\n";
    let config = format!("project_id: {PROJECT}\ndataset_id: {ds}\n{endpoints}{with_key}");
    serve.ok("PUT", "/v1/pipelines/bq", &a, yaml(&bigquery_pipeline(10_000, &config)));
    serve.ok("POST", "/v1/pipelines/bq/start", &a, None);
    let done = serve.wait_for(&a, "bq", "completed", |s| {
        s["state"] == "completed" || s["state"] == "failed"
    });
    assert_eq!(
        (done["state"].clone(), done["records_written"].clone()),
        (json!("completed"), json!(10_000)),
        "{done}\nserve log:\n{}",
        serve.log()
    );
    assert_eq!(done["destination"], "bigquery_streaming_v2");
    let counted = query(
        &e.rest,
        &format!("SELECT COUNT(*), COUNT(DISTINCT _source_record_id) FROM {ds}.t"),
    );
    assert_eq!(counted, ["10000", "10000"]);
    let Value::String(metrics) = serve.ok("GET", "/metrics", ADMIN, None) else {
        panic!("metrics are text")
    };
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("bizon_serve_destination_rows_written_total")
                && l.contains("destination=\"bigquery_streaming_v2\"")
                && l.contains("tenant=\"acme\"")
                && l.ends_with(" 10000")),
        "{metrics}"
    );
    let Value::String(page) = serve.ok("GET", "/ui", ADMIN, None) else {
        panic!("the page is HTML")
    };
    assert!(page.contains("<td>bigquery_streaming_v2</td>"), "{page}");
    assert_nowhere(&serve, &a, "bq", &key_line);

    // What the pipeline would reach is held to the ceiling at PUT: an
    // endpoint outside it, or Google's own when none is named.
    let refused = |config: &str| {
        let (status, answer) = serve.call("PUT", "/v1/pipelines/out", &a, yaml(&bigquery_pipeline(1, config)));
        assert_eq!(status, 422, "{answer}");
        answer["error"]["message"].as_str().unwrap().to_string()
    };
    let outside = refused(&format!(
        "project_id: {PROJECT}\ndataset_id: {ds}\nendpoint: {}\nstorage_write_endpoint: http://127.0.0.1:1\n{with_key}",
        e.rest
    ));
    assert!(
        outside.contains("storage_write_endpoint: `http://127.0.0.1:1` is outside this tenant's egress ceiling"),
        "{outside}"
    );
    let google = refused(&format!("project_id: {PROJECT}\ndataset_id: {ds}\n{with_key}"));
    assert!(
        google.contains("`https://bigquery.googleapis.com` is outside this tenant's egress ceiling"),
        "{google}"
    );
    // The key in the file itself, or a secret the tenant does not have.
    let inline = refused(&format!(
        "project_id: {PROJECT}\ndataset_id: {ds}\n{endpoints}authentication:\n  service_account_key: '{{}}'\n"
    ));
    assert!(inline.contains("not the key itself"), "{inline}");
    let missing = refused(&config.replace("secret://sa-key", "secret://nope"));
    assert!(missing.contains("no secret `nope`"), "{missing}");

    // Inside the ceiling by name, but the name resolves to a loopback
    // address no rule names: checked when the run connects, as a plugin's
    // request is, and refused.
    let (rest_port, grpc_port) = (e.rest.rsplit(':').next().unwrap(), e.grpc.rsplit(':').next().unwrap());
    let by_name = format!("http://localhost:{rest_port}");
    let b = serve.tenant(
        "bravo",
        json!({ "egress": [by_name, format!("http://localhost:{grpc_port}")] }),
    );
    let named = format!(
        "project_id: {PROJECT}\ndataset_id: {ds}_b\nendpoint: {by_name}\nstorage_write_endpoint: http://localhost:{grpc_port}\n"
    );
    serve.ok("PUT", "/v1/pipelines/bq", &b, yaml(&bigquery_pipeline(10, &named)));
    let (status, started) = serve.call("POST", "/v1/pipelines/bq/start", &b, None);
    assert_eq!(status, 422, "{started}");
    assert!(started.to_string().contains("a loopback address"), "{started}");
}

/// A dummy source of `records` into the `file` destination at `path`.
fn file_pipeline(records: u64, path: &str) -> String {
    format!(
        "name: files\nsource:\n  name: dummy\n  stream: s\n  total_records: {records}\n  page_size: 500\n  \
         destination_ids: [orders]\ndestination:\n  name: file\n  config:\n    path: \"{path}\"\n"
    )
}

#[test]
fn a_tenants_file_destination_writes_under_its_directory_within_disk_mb_and_is_downloadable() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let serve = Serve::start(&data, "native_destinations: [file]\n");
    let a = serve.tenant("acme", json!({ "disk_mb": 1 }));
    let b = serve.tenant("bravo", json!({}));
    serve.ok("PUT", "/v1/pipelines/files", &a, yaml(&file_pipeline(2000, "out")));
    serve.ok("POST", "/v1/pipelines/files/start", &a, None);
    let done = serve.wait_for(&a, "files", "completed", |s| s["state"] == "completed");
    assert_eq!(done["records_written"], 2000, "{done}");
    let files = data.join("tenants/acme/files");
    assert_eq!(
        std::fs::read_to_string(files.join("out/orders.json"))
            .unwrap()
            .lines()
            .count(),
        2000
    );

    // Listed and downloaded through the API; another tenant sees nothing.
    let listed = serve.ok("GET", "/v1/files", &a, None);
    assert_eq!(listed["files"][0]["path"], "out/orders.json", "{listed}");
    let Value::String(downloaded) = serve.ok("GET", "/v1/files/out/orders.json", &a, None) else {
        panic!("NDJSON is not one JSON value")
    };
    assert_eq!(downloaded.lines().count(), 2000);
    assert_eq!(serve.ok("GET", "/v1/files/out", &a, None)["files"], listed["files"]);
    assert_eq!(serve.call("GET", "/v1/files/out/orders.json", &b, None).0, 404);
    assert_eq!(serve.ok("GET", "/v1/files", &b, None)["files"], json!([]));

    // Escapes: refused at PUT (absolute, `..`), at download (`..` however
    // spelled), and a link planted in the directory is never followed.
    for path in ["/tmp/escape", "../escape", "out/../../escape"] {
        let (status, answer) = serve.call("PUT", "/v1/pipelines/escape", &a, yaml(&file_pipeline(1, path)));
        assert_eq!(status, 422, "{path}: {answer}");
        assert!(answer.to_string().contains("relative path"), "{path}: {answer}");
    }
    let (status, answer) = serve.call("GET", "/v1/files/out%2F..%2F..%2F..%2Fregistry.sqlite", &a, None);
    assert_eq!(status, 422, "{answer}");
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("theirs"), "not the tenant's").unwrap();
    std::os::unix::fs::symlink(&outside, files.join("link")).unwrap();
    assert_eq!(serve.call("GET", "/v1/files/link/theirs", &a, None).0, 404);
    serve.ok("PUT", "/v1/pipelines/linked", &a, yaml(&file_pipeline(10, "link/out")));
    let (status, started) = serve.call("POST", "/v1/pipelines/linked/start", &a, None);
    assert_eq!(status, 422, "{started}");
    assert!(started.to_string().contains("never followed"), "{started}");
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        1,
        "nothing was written through the link"
    );
    assert!(!started.to_string().contains(&data.display().to_string()), "{started}");

    // disk_mb bounds what it writes: 40,000 records are some 10 MB.
    serve.ok("PUT", "/v1/pipelines/big", &a, yaml(&file_pipeline(40_000, "big")));
    serve.ok("POST", "/v1/pipelines/big/start", &a, None);
    let failed = serve.wait_for(&a, "big", "failed", |s| s["state"] == "failed");
    assert!(
        failed["last_error"].as_str().unwrap_or("").contains("disk_mb of 1 MiB"),
        "{failed}"
    );
    let held: u64 = std::fs::read_dir(files.join("big"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(
        held < 2 << 20,
        "{held} bytes under a 1 MiB disk_mb (at most a batch over)"
    );
    assert!(Path::new(&files.join("big")).is_dir());
}
