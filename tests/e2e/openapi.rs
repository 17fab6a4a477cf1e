//! serve's `openapi.json`, checked route by route against a running serve
//! (issue 29: a client generated from the document must fit the server).
//!
//! Every route is called for each answer it has (success, bad token, admin
//! only, unknown name, bad input, conflict, too large, ...), and each answer
//! must be in the document: its status among the route's responses, and the
//! fields of a JSON object exactly the properties of that response's schema
//! (a property outside the schema's `required` may be absent: `hosts`
//! without a shared registry, `last_error` while there is none is `null`,
//! not absent). Every status the document gives a route must have been seen.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use crate::support::serve::{body as yaml, Serve, ADMIN};
use crate::support::wasm;

/// One call's answer, under the route template it was made to.
struct Seen {
    method: &'static str,
    route: &'static str,
    status: u16,
    body: Value,
}

struct Calls<'a> {
    serve: &'a Serve,
    seen: Vec<Seen>,
}

impl Calls<'_> {
    /// Calls `path` (an instance of `route`), expecting `status`.
    fn call(
        &mut self,
        method: &'static str,
        route: &'static str,
        path: &str,
        token: &str,
        body: Option<Vec<u8>>,
        status: u16,
    ) -> Value {
        let (got, answer) = self.serve.call(method, path, token, body);
        assert_eq!(
            got,
            status,
            "{method} {path}: {answer}\nserve log:\n{}",
            self.serve.log()
        );
        self.seen.push(Seen {
            method,
            route,
            status,
            body: answer.clone(),
        });
        answer
    }
}

/// A schema's properties and required ones, `$ref`s followed.
fn fields(doc: &Value, schema: &Value) -> Option<(BTreeSet<String>, BTreeSet<String>)> {
    let schema = match schema["$ref"].as_str() {
        Some(r) => &doc["components"]["schemas"][r.trim_start_matches("#/components/schemas/")],
        None => schema,
    };
    let properties: BTreeSet<String> = schema["properties"].as_object()?.keys().cloned().collect();
    let required = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(|k| k.as_str().map(String::from)).collect())
        .unwrap_or_default();
    Some((properties, required))
}

/// An answer's fields against a schema's, and so on down its objects and
/// arrays of objects.
fn compare(doc: &Value, schema: &Value, value: &Value, at: &str, out: &mut Vec<String>) {
    let resolved = match schema["$ref"].as_str() {
        Some(r) => &doc["components"]["schemas"][r.trim_start_matches("#/components/schemas/")],
        None => schema,
    };
    if let (Some(items), Some(values)) = (resolved.get("items"), value.as_array()) {
        for v in values {
            compare(doc, items, v, &format!("{at}[]"), out);
        }
        return;
    }
    let Some(object) = value.as_object() else {
        return;
    };
    let Some((properties, required)) = fields(doc, schema) else {
        if resolved.get("type") != Some(&json!("object")) {
            out.push(format!("{at}: no schema with properties; the answer: {value}"));
        }
        return;
    };
    let keys: BTreeSet<String> = object.keys().cloned().collect();
    for k in keys.difference(&properties) {
        out.push(format!("{at}: answers `{k}`, which the document does not give"));
    }
    for k in required.difference(&keys) {
        out.push(format!("{at}: lacks `{k}`, which the document requires"));
    }
    for k in keys.intersection(&properties) {
        compare(doc, &resolved["properties"][k], &object[k], &format!("{at}.{k}"), out);
    }
}

/// What differs between the answers seen and the document.
fn differences(doc: &Value, seen: &[Seen]) -> Vec<String> {
    let mut out = Vec::new();
    let mut statuses: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for s in seen {
        let operation = &doc["paths"][s.route][s.method.to_lowercase()];
        let name = format!("{} {}", s.method, s.route);
        if operation.is_null() {
            out.push(format!("{name}: not in the document"));
            continue;
        }
        statuses
            .entry((s.method.to_string(), s.route.to_string()))
            .or_default()
            .insert(s.status.to_string());
        let response = &operation["responses"][s.status.to_string()];
        if response.is_null() {
            out.push(format!(
                "{name}: answered {} ({}), not among its responses",
                s.status, s.body
            ));
            continue;
        }
        if !s.body.is_object() {
            continue; // bytes or text (a file, /metrics)
        }
        let schema = &response["content"]["application/json"]["schema"];
        compare(doc, schema, &s.body, &format!("{name}: {}", s.status), &mut out);
    }
    for (path, operations) in doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(p, _)| !p.starts_with("/ui"))
    {
        for (method, operation) in operations.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            let key = (method.to_uppercase(), path.clone());
            let seen = statuses.get(&key).cloned().unwrap_or_default();
            for status in operation["responses"].as_object().unwrap().keys() {
                if !seen.contains(status) {
                    out.push(format!("{} {path}: {status} is documented but was not seen", key.0));
                }
            }
        }
    }
    out
}

#[test]
fn every_route_answers_as_openapi_json_says() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(&dir.path().join("data"), "");
    let mut c = Calls {
        serve: &serve,
        seen: Vec::new(),
    };
    let doc = c.call("GET", "/v1/openapi.json", "/v1/openapi.json", "", None, 200);
    let body = |v: Value| Some(v.to_string().into_bytes());

    // Tenants (admin).
    let created = c.call(
        "POST",
        "/v1/tenants",
        "/v1/tenants",
        ADMIN,
        body(json!({"name": "acme"})),
        201,
    );
    let a = created["token"].as_str().unwrap().to_string();
    c.call(
        "POST",
        "/v1/tenants",
        "/v1/tenants",
        ADMIN,
        body(json!({"name": "acme"})),
        409,
    );
    c.call(
        "POST",
        "/v1/tenants",
        "/v1/tenants",
        ADMIN,
        body(json!({"name": "-x"})),
        422,
    );
    c.call(
        "POST",
        "/v1/tenants",
        "/v1/tenants",
        "nobody",
        body(json!({"name": "b"})),
        401,
    );
    c.call(
        "POST",
        "/v1/tenants",
        "/v1/tenants",
        &a,
        body(json!({"name": "b"})),
        403,
    );
    c.call(
        "POST",
        "/v1/tenants",
        "/v1/tenants",
        ADMIN,
        Some(vec![b' '; 300 << 10]),
        413,
    );
    c.call("GET", "/v1/tenants", "/v1/tenants", ADMIN, None, 200);
    c.call("GET", "/v1/tenants", "/v1/tenants", "nobody", None, 401);
    c.call("GET", "/v1/tenants", "/v1/tenants", &a, None, 403);
    let t = "/v1/tenants/{tenant}";
    c.call("GET", t, "/v1/tenants/acme", ADMIN, None, 200);
    c.call("GET", t, "/v1/tenants/nobody", ADMIN, None, 404);
    c.call("GET", t, "/v1/tenants/acme", "nobody", None, 401);
    c.call("GET", t, "/v1/tenants/acme", &a, None, 403);
    let limits = |v: Value| body(json!({ "limits": v }));
    c.call(
        "PATCH",
        t,
        "/v1/tenants/acme",
        ADMIN,
        limits(json!({"cpu_cores": 0.5})),
        200,
    );
    c.call("PATCH", t, "/v1/tenants/acme", ADMIN, limits(json!({"nope": 1})), 422);
    c.call("PATCH", t, "/v1/tenants/nobody", ADMIN, limits(json!({})), 404);
    c.call("PATCH", t, "/v1/tenants/acme", "nobody", limits(json!({})), 401);
    c.call("PATCH", t, "/v1/tenants/acme", &a, limits(json!({})), 403);
    c.call("PATCH", t, "/v1/tenants/acme", ADMIN, Some(vec![b' '; 300 << 10]), 413);

    // Plugins (tenant).
    let csv = std::fs::read(wasm("bizon_csv")).unwrap();
    let p = "/v1/plugins/{name}";
    c.call("PUT", p, "/v1/plugins/csv", &a, Some(csv.clone()), 201);
    c.call("PUT", p, "/v1/plugins/bad", &a, Some(b"not wasm".to_vec()), 422);
    c.call("PUT", p, "/v1/plugins/-x", &a, Some(b"x".to_vec()), 422);
    // Refused before the body is read: a small one, that the early answer
    // cannot cut off.
    c.call("PUT", p, "/v1/plugins/csv", "nobody", Some(b"x".to_vec()), 401);
    c.call("PUT", p, "/v1/plugins/csv", ADMIN, Some(b"x".to_vec()), 403);
    // Past its plugin_mb, kept small: a body past the socket's buffers would
    // be cut off by the early answer before the client reads it.
    let tiny = serve.tenant("tiny", json!({"plugin_mb": 1}));
    c.call("PUT", p, "/v1/plugins/big", &tiny, Some(vec![0; 1100 << 10]), 413);
    c.call("GET", "/v1/plugins", "/v1/plugins", &a, None, 200);
    c.call("GET", "/v1/plugins", "/v1/plugins", "nobody", None, 401);
    c.call("GET", "/v1/plugins", "/v1/plugins", ADMIN, None, 403);
    c.call("GET", p, "/v1/plugins/csv", &a, None, 200);
    c.call("GET", p, "/v1/plugins/none", &a, None, 404);
    c.call("GET", p, "/v1/plugins/csv", "nobody", None, 401);
    c.call("GET", p, "/v1/plugins/csv", ADMIN, None, 403);

    // Pipelines (tenant).
    let pipeline = "name: p\nsource: {name: dummy, total_records: 100000000, page_size: 100}\ndestination:\n  \
                    name: wasm\n  config:\n    plugin: csv\n    plugin_config: {dir: /out}\n    allow:\n      \
                    dirs: [{host: out, guest: /out, writable: true, max_mb: 100}]\n";
    let pp = "/v1/pipelines/{name}";
    c.call("PUT", pp, "/v1/pipelines/p", &a, yaml(pipeline), 201);
    c.call("PUT", pp, "/v1/pipelines/p", &a, yaml(pipeline), 200);
    c.call("PUT", pp, "/v1/pipelines/q", &a, yaml("name: q\n"), 422);
    c.call("PUT", pp, "/v1/pipelines/p", "nobody", yaml(pipeline), 401);
    c.call("PUT", pp, "/v1/pipelines/p", ADMIN, yaml(pipeline), 403);
    c.call("PUT", pp, "/v1/pipelines/p", &a, Some(vec![b' '; 300 << 10]), 413);
    let start = "/v1/pipelines/{name}/start";
    c.call("POST", start, "/v1/pipelines/p/start", &a, None, 200);
    c.call("POST", start, "/v1/pipelines/p/start", &a, None, 409);
    c.call("POST", start, "/v1/pipelines/none/start", &a, None, 404);
    c.call("POST", start, "/v1/pipelines/p/start", "nobody", None, 401);
    c.call("POST", start, "/v1/pipelines/p/start", ADMIN, None, 403);
    let failing = pipeline.replace("name: p", "name: f").replace("{dir: /out}", "{}");
    c.call("PUT", pp, "/v1/pipelines/f", &a, yaml(&failing), 201);
    c.call("POST", start, "/v1/pipelines/f/start", &a, None, 200);
    serve.wait_for(&a, "f", "failed", |s| s["state"] == "failed");
    c.call("POST", start, "/v1/pipelines/f/start", &a, None, 429);
    c.call("GET", "/v1/pipelines", "/v1/pipelines", &a, None, 200);
    c.call("GET", "/v1/pipelines", "/v1/pipelines", "nobody", None, 401);
    c.call("GET", "/v1/pipelines", "/v1/pipelines", ADMIN, None, 403);
    c.call("GET", pp, "/v1/pipelines/p", &a, None, 200);
    c.call("GET", pp, "/v1/pipelines/none", &a, None, 404);
    c.call("GET", pp, "/v1/pipelines/p", "nobody", None, 401);
    c.call("GET", pp, "/v1/pipelines/p", ADMIN, None, 403);
    let logs = "/v1/pipelines/{name}/logs";
    c.call("GET", logs, "/v1/pipelines/p/logs", &a, None, 200);
    c.call("GET", logs, "/v1/pipelines/none/logs", &a, None, 404);
    c.call("GET", logs, "/v1/pipelines/p/logs", "nobody", None, 401);
    c.call("GET", logs, "/v1/pipelines/p/logs", ADMIN, None, 403);
    let stop = "/v1/pipelines/{name}/stop";
    c.call("POST", stop, "/v1/pipelines/p/stop", &a, None, 200);
    c.call("POST", stop, "/v1/pipelines/none/stop", &a, None, 404);
    c.call("POST", stop, "/v1/pipelines/p/stop", "nobody", None, 401);
    c.call("POST", stop, "/v1/pipelines/p/stop", ADMIN, None, 403);

    // Secrets (tenant).
    let s = "/v1/secrets/{name}";
    let value = |v: &str| body(json!({ "value": v }));
    c.call("PUT", s, "/v1/secrets/key", &a, value("one"), 201);
    c.call("PUT", s, "/v1/secrets/key", &a, value("two"), 204);
    c.call("PUT", s, "/v1/secrets/key", &a, body(json!({"nope": 1})), 422);
    c.call("PUT", s, "/v1/secrets/key", &a, value(&"x".repeat(65 << 10)), 413);
    c.call("PUT", s, "/v1/secrets/key", "nobody", value("x"), 401);
    c.call("PUT", s, "/v1/secrets/key", ADMIN, value("x"), 403);
    c.call("GET", "/v1/secrets", "/v1/secrets", &a, None, 200);
    c.call("GET", "/v1/secrets", "/v1/secrets", "nobody", None, 401);
    c.call("GET", "/v1/secrets", "/v1/secrets", ADMIN, None, 403);
    c.call("DELETE", s, "/v1/secrets/key", &a, None, 200);
    c.call("DELETE", s, "/v1/secrets/key", &a, None, 404);
    c.call("DELETE", s, "/v1/secrets/key", "nobody", None, 401);
    c.call("DELETE", s, "/v1/secrets/key", ADMIN, None, 403);

    // Files (tenant): what the pipeline wrote.
    c.call("GET", "/v1/files", "/v1/files", &a, None, 200);
    c.call("GET", "/v1/files", "/v1/files", "nobody", None, 401);
    c.call("GET", "/v1/files", "/v1/files", ADMIN, None, 403);
    let f = "/v1/files/{path}";
    c.call("GET", f, "/v1/files/out", &a, None, 200);
    c.call("GET", f, "/v1/files/none.csv", &a, None, 404);
    c.call("GET", f, "/v1/files/out%2F..%2F..%2Fx", &a, None, 422);
    c.call("GET", f, "/v1/files/out", "nobody", None, 401);
    c.call("GET", f, "/v1/files/out", ADMIN, None, 403);

    // Metrics (admin).
    c.call("GET", "/metrics", "/metrics", ADMIN, None, 200);
    c.call("GET", "/metrics", "/metrics", "nobody", None, 401);
    c.call("GET", "/metrics", "/metrics", &a, None, 403);

    // Deleting: the pipeline, then the tenant.
    c.call("DELETE", pp, "/v1/pipelines/p", "nobody", None, 401);
    c.call("DELETE", pp, "/v1/pipelines/p", ADMIN, None, 403);
    c.call("DELETE", pp, "/v1/pipelines/p", &a, None, 200);
    c.call("DELETE", pp, "/v1/pipelines/p", &a, None, 404);
    c.call("DELETE", t, "/v1/tenants/acme", "nobody", None, 401);
    c.call("DELETE", t, "/v1/tenants/acme", &a, None, 403);
    c.call("DELETE", t, "/v1/tenants/acme", ADMIN, None, 200);
    c.call("DELETE", t, "/v1/tenants/acme", ADMIN, None, 404);

    // What info.description says of every path.
    let (status, answer) = serve.call("GET", "/v1/nothing", ADMIN, None);
    assert_eq!(
        (status, &answer["error"]["code"]),
        (404, &json!("no_route")),
        "{answer}"
    );
    let (status, answer) = serve.call("DELETE", "/v1/plugins", ADMIN, None);
    assert_eq!(
        (status, &answer["error"]["code"]),
        (405, &json!("method_not_allowed")),
        "{answer}"
    );
    let info = doc["info"]["description"].as_str().unwrap();
    assert!(
        info.contains("404 `no_route`") && info.contains("405 `method_not_allowed`"),
        "{info}"
    );

    let seen = std::mem::take(&mut c.seen);
    let differences = differences(&doc, &seen);
    assert!(
        differences.is_empty(),
        "openapi.json differs from the server:\n{}",
        differences.join("\n")
    );
}
