//! `GET /ui`: one server-rendered page for the operator, tenants and their
//! pipelines with state, destination, records/s and errors. Every value is
//! escaped; a destination is shown by its name (and plugin), never its
//! config, so no secret can reach the page.

use serde_json::Value;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => escape(s),
        Value::Null => String::new(),
        other => escape(&other.to_string()),
    }
}

pub fn page(tenants: &[Value]) -> String {
    let mut rows = String::new();
    for t in tenants {
        let name = text(&t["tenant"]);
        let memory = t["memory_in_use_bytes"].as_u64().unwrap_or(0) >> 20;
        let empty = Vec::new();
        let pipelines = t["pipelines"].as_array().unwrap_or(&empty);
        if pipelines.is_empty() {
            rows.push_str(&format!(
                "<tr><td>{name}</td><td>{memory} MiB</td><td colspan=7><i>no pipelines</i></td></tr>"
            ));
        }
        for p in pipelines {
            let state = text(&p["state"]);
            let destination = match (&p["destination"], &p["plugin"]) {
                (Value::String(d), Value::String(plugin)) => escape(&format!("{d} {plugin}@{}", p["plugin_version"])),
                (d, _) => text(d),
            };
            rows.push_str(&format!(
                "<tr><td>{name}</td><td>{memory} MiB</td><td>{}</td><td class=\"{state}\">{state}</td>\
                 <td>{destination}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                text(&p["name"]),
                text(&p["records_written"]),
                text(&p["records_per_s"]),
                text(&p["write_errors"]),
                text(&p["last_error"]),
            ));
        }
    }
    format!(
        "<!doctype html><html><head><meta charset=utf-8><title>bizon-host serve</title><style>\
         body{{font:14px system-ui,sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}th{{background:#eee}}\
         .running{{color:#070}}.failed{{color:#b00}}</style></head><body>\
         <h1>bizon-host serve</h1><p>{} tenant(s)</p>\
         <table><tr><th>tenant</th><th>plugin memory</th><th>pipeline</th><th>state</th><th>destination</th>\
         <th>records written</th><th>records/s</th><th>write errors</th><th>last error</th></tr>{rows}</table>\
         </body></html>",
        tenants.len()
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn values_are_escaped() {
        let page = super::page(&[serde_json::json!({
            "tenant": "a", "memory_in_use_bytes": 0,
            "pipelines": [{"name": "p", "state": "failed", "records_written": 1, "records_per_s": 0.5,
                           "last_error": "<script>alert(1)</script>"}]
        })]);
        assert!(page.contains("&lt;script&gt;"), "{page}");
        assert!(!page.contains("<script>"));
    }
}
