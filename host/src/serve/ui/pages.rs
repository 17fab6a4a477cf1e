//! The pages: the operator's overview (`/ui`), a tenant's
//! (`/ui/tenants/{tenant}`) and a pipeline's
//! (`/ui/tenants/{tenant}/pipelines/{pipeline}`). Each has a live part, the
//! `live` element, which the page fetches again every 2 s as `?live=1`.
//! Lists are filtered (`q`: a part of the name; `state`) and paged, so a
//! page of a host with 1,000 tenants renders 25 of them.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path, Query, State as Extract};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::Value;

use super::super::api;
use super::super::auth::TenantName;
use super::super::state::State;
use super::super::tenants::Tenant;
use super::chart::figure;
use super::html::{count, csrf_field, cut, document, esc, mib, query, respond, state as state_badge};
use super::samples::Subject;
use super::session::{Scoped, ScopedPipeline, Viewer, Who};
use super::{Console, UiError};

const TENANTS_PER_PAGE: usize = 25;
const PIPELINES_PER_PAGE: usize = 50;
/// Log lines a pipeline's page shows (the API keeps 1,000).
const LOG_LINES: usize = 40;
/// Dead letters a pipeline's page shows.
const DEAD_LETTERS: usize = 5;

const STATES: [&str; 6] = ["running", "stopping", "stopped", "completed", "failed", "never_started"];

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    page: Option<String>,
    #[serde(default)]
    live: Option<String>,
}

impl ListQuery {
    /// The page asked for, from 0.
    fn page(&self) -> usize {
        self.page
            .as_deref()
            .and_then(|p| p.parse::<usize>().ok())
            .map_or(0, |p| p.saturating_sub(1))
    }

    fn matches(&self, name: &str) -> bool {
        self.q.is_empty() || name.contains(self.q.trim())
    }
}

fn url_tenant(tenant: &str) -> String {
    format!("/ui/tenants/{}", esc(tenant))
}

fn url_pipeline(tenant: &str, pipeline: &str) -> String {
    format!("/ui/tenants/{}/pipelines/{}", esc(tenant), esc(pipeline))
}

/// The page's live part, which its script fetches again as `?live=1`.
fn live_part(live: &str) -> String {
    format!("<div id=live>{live}</div>")
}

/// The slice of `items` on page `page` (from 0), and the pager's links.
fn paged<T>(items: Vec<T>, page: usize, per: usize, base: &str, q: &ListQuery) -> (Vec<T>, String) {
    let pages = items.len().div_ceil(per).max(1);
    let page = page.min(pages - 1);
    let total = items.len();
    let shown: Vec<T> = items.into_iter().skip(page * per).take(per).collect();
    let link = |n: usize, text: &str| {
        let n = (n + 1).to_string();
        format!(
            "<a href=\"{base}{}\">{text}</a>",
            esc(&query(&[("q", &q.q), ("state", &q.state), ("page", &n)]))
        )
    };
    let mut nav = format!("<nav class=pages>{total} · page {} of {pages} ", page + 1);
    if page > 0 {
        nav.push_str(&link(0, "« first"));
        nav.push_str(&link(page - 1, "‹ previous"));
    }
    if page + 1 < pages {
        nav.push_str(&link(page + 1, "next ›"));
        nav.push_str(&link(pages - 1, "last »"));
    }
    nav.push_str("</nav>");
    (shown, nav)
}

/// The filter form of a list: a part of the name, a state.
fn filter_form(action: &str, q: &ListQuery, what: &str) -> String {
    let mut options = String::from("<option value=\"\">any state</option>");
    for s in STATES {
        let selected = if q.state == s { " selected" } else { "" };
        let _ = write!(options, "<option{selected}>{s}</option>");
    }
    format!(
        "<form method=get action=\"{action}\"><input type=text name=q value=\"{}\" placeholder=\"{what} name contains\">\
         <select name=state>{options}</select> <button>Filter</button></form>",
        esc(&q.q)
    )
}

/// A tenant's pipelines as the API lists them (merged with other hosts'
/// reports under a shared registry).
async fn statuses(state: &Arc<State>, tenant: &str) -> Result<Vec<Value>, UiError> {
    let Json(mut list) = api::list_pipelines(Extract(state.clone()), TenantName(tenant.to_string())).await?;
    Ok(match list["pipelines"].take() {
        Value::Array(items) => items,
        _ => Vec::new(),
    })
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn number(v: &Value) -> String {
    v.as_u64().map_or_else(|| text(v), count)
}

/// Records/s now: the last sample's, else the run's average the API shows.
fn rate(p: &Value, rates: &HashMap<String, f32>) -> String {
    let name = p["name"].as_str().unwrap_or("");
    match rates.get(name) {
        Some(r) => format!("{:.1}", r),
        None => format!("{:.1}", p["records_per_s"].as_f64().unwrap_or(0.0)),
    }
}

const PIPELINE_HEADS: &str = "<th>pipeline</th><th>state</th><th>destination</th><th>records/s</th><th>written</th>\
                              <th>lag</th><th>dead letters</th><th>write errors</th><th>last error</th>";
/// Cells of a pipeline's row, for a `colspan` that spans them.
const PIPELINE_CELLS: usize = 9;

/// The destination by its name, and its plugin's version for a wasm one;
/// never its config, so no secret can reach a page.
fn destination(p: &Value) -> String {
    match (&p["destination"], &p["plugin"]) {
        (Value::String(d), Value::String(plugin)) => esc(&format!("{d} {plugin}@{}", text(&p["plugin_version"]))),
        (d, _) => esc(&text(d)),
    }
}

fn pipeline_cells(tenant: &str, p: &Value, rates: &HashMap<String, f32>) -> String {
    let name = p["name"].as_str().unwrap_or("");
    format!(
        "<td><a href=\"{}\">{}</a></td><td>{}</td><td>{}</td><td class=n>{}</td><td class=n>{}</td>\
         <td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=err>{}</td>",
        url_pipeline(tenant, name),
        esc(name),
        state_badge(p["state"].as_str().unwrap_or("")),
        destination(p),
        rate(p, rates),
        number(&p["records_written"]),
        number(&p["lag"]),
        number(&p["dead_letters"]),
        number(&p["write_errors"]),
        cut(&text(&p["last_error"]), 300),
    )
}

/// What a tenant uses now against its limits: (memory, instances, CPU, disk, read-ahead).
fn usage(state: &State, console: &Console, t: &Tenant) -> [String; 5] {
    let l = &t.limits;
    let cores = console
        .history
        .cores(&t.name)
        .map_or("–".to_string(), |c| format!("{c:.2}"));
    [
        format!("{} / {} MiB", mib(t.budget.in_use()), l.memory_mb),
        format!("{} / {}", t.budget.instances(), l.instances),
        format!("{cores} / {} cores", l.cpu_cores),
        format!("{} / {} MiB", state.supervisor.disk_held(&t.name), l.disk_mb),
        format!("{} / {} MiB", mib(t.read_ahead.in_use() as u64), l.read_ahead_mb),
    ]
}

const USAGE_HEADS: &str = "<th>plugin memory</th><th>live instances</th><th>CPU (last 5 s)</th>\
                           <th>disk granted</th><th>read-ahead</th>";

fn charts(console: &Console, subject: &Subject) -> String {
    let series = console.history.series(subject);
    format!(
        "<div class=charts>{}{}</div>",
        figure("records/s, last hour", series.as_ref().map(|s| &s.rate), "#1565c0"),
        figure("lag (records), last hour", series.as_ref().map(|s| &s.lag), "#e65100"),
    )
}

/// `GET /ui`: the operator's overview; a tenant goes to its own page.
pub async fn overview(
    viewer: Viewer,
    Extract(state): Extract<Arc<State>>,
    Extension(console): Extension<Arc<Console>>,
    Query(q): Query<ListQuery>,
) -> Result<Response, UiError> {
    if let Who::Tenant(tenant) = &viewer.who {
        return Ok(Redirect::to(&url_tenant(tenant)).into_response());
    }
    let live = overview_live(&state, &console, &q).await?;
    if q.live.is_some() {
        return Ok(respond(StatusCode::OK, live));
    }
    let main = format!(
        "<h1>Host</h1>{}{}<p class=note>Records/s: the last 5 s. The charts show this host's runs, \
         sampled every 5 s.</p>",
        filter_form("/ui", &q, "tenant or pipeline"),
        live_part(&live),
    );
    Ok(respond(StatusCode::OK, document("Operator", Some(&viewer), &main)))
}

async fn overview_live(state: &Arc<State>, console: &Console, q: &ListQuery) -> Result<String, UiError> {
    let budget = state.tenants.host_budget();
    let (compiling, waiting) = state.store.compile_queue();
    let all = state.registry.tenants()?;
    let mut out = format!(
        "<table><tr><th>plugin memory budget</th><th>live instances</th><th>compile queue</th>\
         <th>tenants</th><th>pipelines running here</th></tr>\
         <tr><td class=n>{} / {} MiB</td><td class=n>{} (pool of {})</td><td class=n>{compiling} compiling, \
         {waiting} waiting (pool of {})</td><td class=n>{}</td><td class=n>{}</td></tr></table>{}",
        mib(budget.in_use()),
        budget.limit_mib(),
        budget.instances(),
        state.config.live_instances,
        state.config.compile_concurrency,
        count(all.len() as u64),
        count(state.supervisor.running_keys().len() as u64),
        charts(console, &Subject::Host),
    );

    // The tenants the filter keeps: by name alone, or (with a state, or a
    // name no tenant has) by their pipelines too, which asks for each
    // tenant's statuses.
    let mut listed: Vec<(String, Option<Vec<Value>>)> = Vec::new();
    for row in all {
        let by_name = q.matches(&row.name);
        if by_name && q.state.is_empty() {
            listed.push((row.name, None));
            continue;
        }
        let pipelines = statuses(state, &row.name).await?;
        let kept: Vec<Value> = pipelines
            .into_iter()
            .filter(|p| (by_name || q.matches(p["name"].as_str().unwrap_or(""))) && state_matches(q, p))
            .collect();
        if !kept.is_empty() {
            listed.push((row.name, Some(kept)));
        }
    }
    let (page, nav) = paged(listed, q.page(), TENANTS_PER_PAGE, "/ui", q);
    let _ = write!(
        out,
        "<h2>Tenants</h2>{nav}<table><tr><th>tenant</th>{USAGE_HEADS}{PIPELINE_HEADS}</tr>"
    );
    for (name, pipelines) in page {
        let Some(tenant) = state.tenants.get(&state.registry, &name)? else {
            continue;
        };
        let pipelines = match pipelines {
            Some(p) => p,
            None => statuses(state, &name).await?,
        };
        let rates = console.history.rates(&name);
        let span = pipelines.len().max(1);
        let _ = write!(
            out,
            "<tr><td rowspan={span}><a href=\"{}\">{}</a><br><span class=note>{} of {} pipelines</span></td>",
            url_tenant(&name),
            esc(&name),
            pipelines.len(),
            tenant.limits.pipelines
        );
        for cell in usage(state, console, &tenant) {
            let _ = write!(out, "<td rowspan={span} class=n>{cell}</td>");
        }
        match pipelines.split_first() {
            None => {
                let _ = write!(out, "<td colspan={PIPELINE_CELLS} class=note>no pipelines</td></tr>");
            }
            Some((first, rest)) => {
                let _ = write!(out, "{}</tr>", pipeline_cells(&name, first, &rates));
                for p in rest {
                    let _ = write!(out, "<tr>{}</tr>", pipeline_cells(&name, p, &rates));
                }
            }
        }
    }
    out.push_str("</table>");
    Ok(out)
}

fn state_matches(q: &ListQuery, p: &Value) -> bool {
    q.state.is_empty() || p["state"].as_str() == Some(q.state.as_str())
}

/// `GET /ui/tenants/{tenant}`.
pub async fn tenant(
    Scoped { viewer, tenant }: Scoped,
    Extract(state): Extract<Arc<State>>,
    Extension(console): Extension<Arc<Console>>,
    Query(q): Query<ListQuery>,
) -> Result<Response, UiError> {
    let live = tenant_live(&state, &console, &tenant, &q).await?;
    if q.live.is_some() {
        return Ok(respond(StatusCode::OK, live));
    }
    let plugins = plugins(&state, &tenant.name)?;
    let limits = limits(&state, &viewer, &tenant, None)?;
    let main = format!(
        "<h1>Tenant {}</h1>{}{}<h2>Plugins</h2>{plugins}<h2>Limits</h2>{limits}",
        esc(&tenant.name),
        filter_form(&url_tenant(&tenant.name), &q, "pipeline"),
        live_part(&live),
    );
    Ok(respond(StatusCode::OK, document(&tenant.name, Some(&viewer), &main)))
}

async fn tenant_live(state: &Arc<State>, console: &Console, tenant: &Tenant, q: &ListQuery) -> Result<String, UiError> {
    let pipelines: Vec<Value> = statuses(state, &tenant.name)
        .await?
        .into_iter()
        .filter(|p| q.matches(p["name"].as_str().unwrap_or("")) && state_matches(q, p))
        .collect();
    let mut out = format!("<table><tr>{USAGE_HEADS}</tr><tr>");
    for cell in usage(state, console, tenant) {
        let _ = write!(out, "<td class=n>{cell}</td>");
    }
    out.push_str("</tr></table>");
    out.push_str(&charts(console, &Subject::Tenant(tenant.name.clone())));
    let (page, nav) = paged(pipelines, q.page(), PIPELINES_PER_PAGE, &url_tenant(&tenant.name), q);
    let rates = console.history.rates(&tenant.name);
    let _ = write!(out, "<h2>Pipelines</h2>{nav}<table><tr>{PIPELINE_HEADS}</tr>");
    for p in &page {
        let _ = write!(out, "<tr>{}</tr>", pipeline_cells(&tenant.name, p, &rates));
    }
    if page.is_empty() {
        let _ = write!(out, "<tr><td colspan={PIPELINE_CELLS} class=note>none</td></tr>");
    }
    out.push_str("</table>");
    Ok(out)
}

/// The tenant's plugins: every version kept, what each says it is.
fn plugins(state: &State, tenant: &str) -> Result<String, UiError> {
    let rows = state.registry.plugins(tenant, None)?;
    if rows.is_empty() {
        return Ok("<p class=note>none</p>".into());
    }
    let mut out = String::from(
        "<table><tr><th>plugin</th><th>versions kept</th><th>kind</th><th>describes itself as</th>\
         <th>size</th><th>compile</th></tr>",
    );
    let mut names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    names.dedup();
    for name in names {
        let versions: Vec<_> = rows.iter().filter(|r| r.name == name).collect();
        let newest = versions.last().expect("a name has a version");
        let list: Vec<String> = versions.iter().map(|v| v.version.to_string()).collect();
        let d = &newest.describe;
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} {}</td><td class=n>{} KiB</td><td class=n>{} ms</td></tr>",
            esc(name),
            list.join(", "),
            esc(&text(&d["kind"])),
            esc(&text(&d["name"])),
            esc(&text(&d["version"])),
            newest.size >> 10,
            newest.compile_ms,
        );
    }
    out.push_str("</table>");
    Ok(out)
}

/// The tenant's limits: a form for the operator (a field left empty
/// returns to the serve config's default), a table for the tenant.
/// `back`: the pipeline whose page the form is on.
fn limits(state: &State, viewer: &Viewer, tenant: &Tenant, back: Option<&str>) -> Result<String, UiError> {
    let own = state
        .registry
        .tenant(&tenant.name)?
        .ok_or_else(|| UiError::not_found("tenant", &tenant.name))?;
    let own = serde_json::to_value(&own.limits).unwrap_or_default();
    let defaults = serde_json::to_value(state.tenants.defaults()).unwrap_or_default();
    let effective = serde_json::to_value(&tenant.limits).unwrap_or_default();
    let Some(effective) = effective.as_object() else {
        return Ok(String::new());
    };
    let mut rows = String::new();
    for (key, value) in effective {
        let shown = esc(&text(value));
        match viewer.is_admin() {
            true => {
                let _ = write!(
                    rows,
                    "<tr><td><label for=\"l-{key}\">{key}</label></td><td>{shown}</td><td>\
                     <input type=text id=\"l-{key}\" name=\"{key}\" value=\"{}\" placeholder=\"default: {}\"></td></tr>",
                    esc(&own.get(key).map(text).unwrap_or_default()),
                    esc(&text(&defaults[key])),
                );
            }
            false => {
                let _ = write!(rows, "<tr><td>{key}</td><td>{shown}</td></tr>");
            }
        }
    }
    Ok(match viewer.is_admin() {
        true => format!(
            "<form method=post action=\"{}/limits\">{}{}<table><tr><th>limit</th><th>now</th>\
             <th>this tenant's own (empty: the default)</th></tr>{rows}</table><button>Save limits</button></form>",
            url_tenant(&tenant.name),
            csrf_field(viewer),
            back.map_or(String::new(), |b| format!(
                "<input type=hidden name=back value=\"{}\">",
                esc(b)
            )),
        ),
        false => format!("<table><tr><th>limit</th><th>value</th></tr>{rows}</table>"),
    })
}

/// `GET /ui/tenants/{tenant}/pipelines/{pipeline}`.
pub async fn pipeline(
    ScopedPipeline { viewer, tenant, row }: ScopedPipeline,
    Extract(state): Extract<Arc<State>>,
    Extension(console): Extension<Arc<Console>>,
    Query(q): Query<ListQuery>,
) -> Result<Response, UiError> {
    let live = pipeline_live(&state, &console, &tenant, &row.name).await?;
    if q.live.is_some() {
        return Ok(respond(StatusCode::OK, live));
    }
    let versions = plugin_versions(&state, &tenant, &row.name, &row.yaml)?;
    let limits = match viewer.is_admin() {
        true => format!(
            "<h2>Limits of tenant {}</h2>{}",
            esc(&tenant.name),
            limits(&state, &viewer, &tenant, Some(&row.name))?
        ),
        false => String::new(),
    };
    let url = url_pipeline(&tenant.name, &row.name);
    let buttons = match &viewer.who {
        Who::Tenant(_) => {
            let csrf = csrf_field(&viewer);
            format!(
                "<p><form class=inline method=post action=\"{url}/start\">{csrf}<button>Start</button></form>\
                 <form class=inline method=post action=\"{url}/stop\">{csrf}<button>Stop</button></form>\
                 <form class=inline method=post action=\"{url}/delete\">{csrf}\
                 <label><input type=checkbox name=confirm required> delete it</label> <button>Delete</button></form></p>"
            )
        }
        Who::Admin => "<p class=note>Starting, stopping and deleting are the tenant's, with its own session \
                       (as in the API: the admin token does not act as a tenant).</p>"
            .into(),
    };
    let main = format!(
        "<h1><a href=\"{}\">{}</a> / {}</h1>{buttons}{}<h2>Plugins</h2>{versions}\
         <h2>Pipeline file</h2><pre>{}</pre>{limits}",
        url_tenant(&tenant.name),
        esc(&tenant.name),
        esc(&row.name),
        live_part(&live),
        esc(&row.yaml),
    );
    let title = format!("{} / {}", tenant.name, row.name);
    Ok(respond(StatusCode::OK, document(&title, Some(&viewer), &main)))
}

async fn pipeline_live(state: &Arc<State>, console: &Console, tenant: &Tenant, name: &str) -> Result<String, UiError> {
    let who = || TenantName(tenant.name.clone());
    let Json(status) = api::get_pipeline(Extract(state.clone()), Path(name.to_string()), who()).await?;
    let Json(logs) = api::pipeline_logs(Extract(state.clone()), Path(name.to_string()), who()).await?;
    let rates = console.history.rates(&tenant.name);
    let mut out = format!(
        "<table><tr><th>state</th><th>records/s</th><th>read</th><th>written</th><th>lag</th><th>dead letters</th>\
         <th>write errors</th><th>failures in a row</th><th>destination</th></tr><tr><td id=state>{}</td>\
         <td id=rate class=n>{}</td><td class=n>{}</td><td id=written class=n>{}</td><td class=n>{}</td><td class=n>{}</td>\
         <td class=n>{}</td><td class=n>{}</td><td id=destination>{}</td></tr></table>",
        state_badge(status["state"].as_str().unwrap_or("")),
        rate(&status, &rates),
        number(&status["records_read"]),
        number(&status["records_written"]),
        number(&status["lag"]),
        number(&status["dead_letters"]),
        number(&status["write_errors"]),
        number(&status["failures_in_a_row"]),
        destination(&status),
    );
    if let Some(error) = status["last_error"].as_str() {
        let _ = write!(
            out,
            "<p>Last error:</p><pre id=last-error class=err>{}</pre>",
            esc(error)
        );
    }
    if let Some(ms) = status["start_allowed_in_ms"].as_u64().filter(|ms| *ms > 0) {
        let _ = write!(
            out,
            "<p class=note>A start is accepted again in {} s.</p>",
            ms.div_ceil(1000)
        );
    }
    out.push_str(&charts(
        console,
        &Subject::Pipeline(tenant.name.clone(), name.to_string()),
    ));
    let lines = logs["lines"].as_array().cloned().unwrap_or_default();
    let letters = dead_letters(&lines);
    let _ = write!(
        out,
        "<h2>Dead letters</h2><p>{} in this run{}</p>",
        number(&status["dead_letters"]),
        match letters.is_empty() {
            true => String::new(),
            false => format!("; the last {} logged:", letters.len().min(DEAD_LETTERS)),
        }
    );
    if !letters.is_empty() {
        out.push_str("<pre>");
        for letter in &letters[letters.len().saturating_sub(DEAD_LETTERS)..] {
            let _ = writeln!(out, "{}", cut(letter, 2000));
        }
        out.push_str("</pre>");
    }
    let _ = write!(
        out,
        "<h2>Log</h2><p class=note>The last {LOG_LINES} lines{}.</p><pre>",
        match logs["dropped"].as_u64() {
            Some(n) if n > 0 => format!(" ({} more were dropped by the tenant's log rate)", count(n)),
            _ => String::new(),
        }
    );
    for line in &lines[lines.len().saturating_sub(LOG_LINES)..] {
        let at = line["unix_ms"].as_u64().unwrap_or(0);
        let _ = writeln!(
            out,
            "{} {:5} {}",
            clock(at),
            esc(line["level"].as_str().unwrap_or("")),
            cut(line["message"].as_str().unwrap_or(""), 2000)
        );
    }
    out.push_str("</pre>");
    Ok(out)
}

/// The dead letters among a run's log lines: the run logs each one it
/// writes (`dead letter letter={...}`, dead_letter/), so the last few are
/// there while the letters themselves went to the pipeline's topic.
fn dead_letters(lines: &[Value]) -> Vec<&str> {
    lines
        .iter()
        .filter_map(|l| l["message"].as_str()?.strip_prefix("dead letter letter="))
        .collect()
}

/// `HH:MM:SS` (UTC) of a Unix time in milliseconds.
fn clock(unix_ms: u64) -> String {
    let s = unix_ms / 1000;
    format!("{:02}:{:02}:{:02}", s / 3600 % 24, s / 60 % 60, s % 60)
}

/// The plugins the pipeline runs and would run at its next start, with
/// every version the tenant keeps of each.
fn plugin_versions(state: &State, tenant: &Arc<Tenant>, name: &str, yaml: &str) -> Result<String, UiError> {
    let (mut running, mut next) = (Vec::new(), Vec::new());
    let status = state.supervisor.status(&tenant.name, name);
    if status.state.is_live() {
        running.extend(status.plugin.clone().zip(status.plugin_version));
        running.extend(state.supervisor.transforms_of(&tenant.name, name));
    }
    let mut out = String::new();
    match state.supervisor.prepare(tenant, name, yaml) {
        Ok(prepared) => {
            next.extend(prepared.plugin);
            next.extend(prepared.transforms);
        }
        Err(e) => {
            let _ = write!(
                out,
                "<p class=err>The stored file would not start now: {}</p>",
                esc(&e.message)
            );
        }
    }
    let mut names: Vec<&str> = running.iter().chain(&next).map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    if names.is_empty() {
        out.push_str("<p class=note>none (a native destination)</p>");
        return Ok(out);
    }
    out.push_str("<table><tr><th>plugin</th><th>versions kept</th></tr>");
    for plugin in names {
        let mut cells = Vec::new();
        for row in state.registry.plugins(&tenant.name, Some(plugin))? {
            let v = row.version;
            let mut marks = Vec::new();
            if running.iter().any(|(n, r)| n == plugin && *r == v) {
                marks.push("runs now");
            }
            if next.iter().any(|(n, r)| n == plugin && *r == v) {
                marks.push("next start");
            }
            cells.push(match marks.is_empty() {
                true => format!("v{v}"),
                false => format!("<b>v{v}</b> ({})", marks.join(", ")),
            });
        }
        let _ = write!(out, "<tr><td>{}</td><td>{}</td></tr>", esc(plugin), cells.join(" · "));
    }
    out.push_str("</table>");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipeline_row_escapes_what_the_tenant_and_its_run_control() {
        let p = serde_json::json!({
            "name": "p", "state": "failed", "records_written": 1234, "records_per_s": 0.5,
            "lag": 0, "dead_letters": 2, "last_error": "<script>alert(1)</script>"
        });
        let row = pipeline_cells("acme", &p, &HashMap::new());
        assert!(row.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{row}");
        assert!(!row.contains("<script>"), "{row}");
        assert!(
            row.contains("<td class=n>0.5</td>"),
            "the run's own rate before a sample: {row}"
        );
        let sampled = pipeline_cells("acme", &p, &HashMap::from([("p".to_string(), 42.0)]));
        assert!(sampled.contains("<td class=n>42.0</td>"), "{sampled}");
    }

    #[test]
    fn lists_are_paged_and_the_pager_keeps_the_filter() {
        let q = ListQuery {
            q: "a&b".into(),
            state: "failed".into(),
            ..Default::default()
        };
        let (shown, nav) = paged((0..60).collect(), 1, 25, "/ui", &q);
        assert_eq!(shown, (25..50).collect::<Vec<_>>());
        assert!(nav.contains("page 2 of 3"), "{nav}");
        assert!(
            nav.contains("href=\"/ui?q=a%26b&amp;state=failed&amp;page=3\""),
            "{nav}"
        );
        let (shown, _) = paged((0..10).collect::<Vec<_>>(), 9, 25, "/ui", &q);
        assert_eq!(shown.len(), 10, "past the last page: the last page");
    }

    #[test]
    fn dead_letters_are_read_from_the_runs_log_lines() {
        let lines = serde_json::json!([
            {"message": "wrote 100 records"},
            {"message": "dead letter letter={\"error\":\"<script>\"}"},
        ]);
        let letters = dead_letters(lines.as_array().unwrap());
        assert_eq!(letters, ["{\"error\":\"<script>\"}"]);
        assert_eq!(cut(letters[0], 100), "{&quot;error&quot;:&quot;&lt;script&gt;&quot;}");
    }

    #[test]
    fn clock_reads_utc() {
        assert_eq!(clock(((13 * 3600 + 5 * 60 + 9) * 1000) as u64), "13:05:09");
    }
}
