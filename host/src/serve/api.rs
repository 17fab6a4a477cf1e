//! The HTTP API (docs/serve.md; the OpenAPI document is
//! `GET /v1/openapi.json`). Each route takes who it answers as an argument
//! ([`super::auth`]), so it is checked before the body is read, then looks
//! names up only among the caller's own: another tenant's plugin or
//! pipeline is "not found", exactly like a name nobody has. The console
//! ([`super::ui`]) calls the `pub(super)` handlers for its pages and buttons.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State as Extract};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{Admin, TenantAuth, TenantName};
use super::cluster;
use super::error::ApiError;
use super::files;
use super::limits::LimitOverrides;
use super::logs;
use super::request::{check_name, json_body, read_body};
use super::retention;
use super::secrets_api;
use super::state::State;
use super::token;
use crate::metrics::serve as metrics;
use crate::quota::cpu::Work;

type AppState = Arc<State>;
type ApiResult<T = Json<Value>> = Result<T, ApiError>;

/// Largest pipeline file or JSON body; plugins have their tenant's limit.
const MAX_BODY_BYTES: usize = 256 << 10;

pub const OPENAPI: &str = include_str!("openapi.json");

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/tenants", post(create_tenant).get(list_tenants))
        .route(
            "/v1/tenants/{tenant}",
            get(get_tenant).patch(patch_tenant).delete(delete_tenant),
        )
        .route("/v1/plugins", get(list_plugins))
        .route("/v1/plugins/{name}", get(get_plugin).put(put_plugin))
        .route("/v1/pipelines", get(list_pipelines))
        .route(
            "/v1/pipelines/{name}",
            get(get_pipeline).put(put_pipeline).delete(delete_pipeline),
        )
        .route("/v1/pipelines/{name}/start", post(start_pipeline))
        .route("/v1/pipelines/{name}/stop", post(stop_pipeline))
        .route("/v1/pipelines/{name}/logs", get(pipeline_logs))
        .route("/v1/secrets", get(secrets_api::list))
        .route("/v1/secrets/{name}", put(secrets_api::put).delete(secrets_api::delete))
        .route("/v1/files", get(files::list))
        .route("/v1/files/{*path}", get(files::get))
        .route("/metrics", get(prometheus))
        .fallback(no_route)
        .method_not_allowed_fallback(no_method)
        // Bodies are read by the handlers, after the caller is known, up to a limit.
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::map_response(plain_rejection_as_json))
        .with_state(state)
}

/// An extractor's own rejection is plain text (axum's `Path` refusing a
/// segment that is not UTF-8 once percent-decoded: `PUT /v1/plugins/%FF`,
/// found by tests/e2e/fuzz/serve_api.rs): it is answered in the error
/// shape of every other 4xx, its text the message.
async fn plain_rejection_as_json(response: Response) -> Response {
    let status = response.status();
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes() == b"application/json");
    if !status.is_client_error() || json {
        return response;
    }
    let text = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .unwrap_or_default();
    let message = match String::from_utf8_lossy(&text).trim() {
        "" => status.canonical_reason().unwrap_or("bad request").to_string(),
        text => text.to_string(),
    };
    ApiError::new(status, "bad_request", message).into_response()
}

async fn no_route() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_route",
        "no such route; see GET /v1/openapi.json",
    )
}

async fn no_method() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method; see GET /v1/openapi.json",
    )
}

fn too_long(_: u64) -> ApiError {
    ApiError::too_large(format!("the request body is over {} KiB", MAX_BODY_BYTES >> 10))
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    name: String,
    #[serde(default)]
    limits: LimitOverrides,
}

async fn create_tenant(Extract(state): Extract<AppState>, _: Admin, body: Body) -> ApiResult<Response> {
    let new: NewTenant = json_body(&read_body(body, MAX_BODY_BYTES as u64, too_long).await?)?;
    check_name("tenant", &new.name)?;
    let token = token::new_token();
    if !state
        .registry
        .create_tenant(&new.name, &token::hash(&token), &new.limits)?
    {
        return Err(ApiError::conflict(format!("tenant `{}` exists", new.name)));
    }
    let tenant = state.tenant(&new.name)?;
    tracing::info!(tenant = %new.name, "tenant created");
    let body = json!({"tenant": new.name, "token": token, "limits": tenant.limits});
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn list_tenants(Extract(state): Extract<AppState>, _: Admin) -> ApiResult {
    let mut out = Vec::new();
    for row in state.registry.tenants()? {
        out.push(tenant_json(&state, &row.name)?);
    }
    Ok(Json(json!({ "tenants": out })))
}

fn tenant_json(state: &State, name: &str) -> Result<Value, ApiError> {
    let tenant = state.tenant(name)?;
    let pipelines: Vec<_> = state
        .registry
        .pipelines(Some(name))?
        .iter()
        .map(|p| state.supervisor.status(name, &p.name))
        .collect();
    Ok(json!({
        "tenant": name,
        "limits": tenant.limits,
        "memory_in_use_bytes": tenant.budget.in_use(),
        "read_ahead_bytes": tenant.read_ahead.in_use(),
        "pipelines": pipelines,
    }))
}

async fn get_tenant(Extract(state): Extract<AppState>, Path(name): Path<String>, _: Admin) -> ApiResult {
    Ok(Json(tenant_json(&state, &name)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantPatch {
    limits: serde_json::Map<String, Value>,
}

/// Changes the keys the body names; `null` returns one to the default.
pub(super) async fn patch_tenant(
    Extract(state): Extract<AppState>,
    Path(name): Path<String>,
    _: Admin,
    body: Body,
) -> ApiResult {
    let patch: TenantPatch = json_body(&read_body(body, MAX_BODY_BYTES as u64, too_long).await?)?;
    let row = state
        .registry
        .tenant(&name)?
        .ok_or_else(|| ApiError::not_found("tenant", &name))?;
    let Value::Object(mut limits) = json!(row.limits) else {
        unreachable!("limits serialize as an object")
    };
    for (key, value) in patch.limits {
        match value {
            Value::Null => limits.remove(&key),
            value => limits.insert(key, value),
        };
    }
    let limits: LimitOverrides =
        serde_json::from_value(Value::Object(limits)).map_err(|e| ApiError::invalid(format!("limits: {e}")))?;
    if !state.registry.set_limits(&name, &limits)? {
        return Err(ApiError::not_found("tenant", &name));
    }
    state.tenants.reload(&state.registry, &name)?;
    tracing::info!(tenant = %name, "tenant limits changed");
    tenant_json(&state, &name).map(Json)
}

async fn delete_tenant(Extract(state): Extract<AppState>, Path(name): Path<String>, _: Admin) -> ApiResult {
    state.tenant(&name)?;
    let pipelines = state.registry.pipelines(Some(&name))?;
    for p in &pipelines {
        state.supervisor.stop(&name, &p.name).await;
        metrics::forget_pipeline(&name, &p.name);
    }
    state.registry.delete_tenant(&name)?;
    state.tenants.forget(&name);
    state.supervisor.forget(&name, None);
    logs::forget(&name, None);
    metrics::forget_tenant(&name);
    let dir = state.tenants.dir(&name);
    if let Err(e) = tokio::fs::remove_dir_all(&dir).await {
        tracing::warn!("cannot remove {}: {e}", dir.display());
    }
    state.store.collect(&state.registry.digests()?);
    tracing::info!(tenant = %name, "tenant deleted");
    Ok(Json(json!({"tenant": name, "deleted": true})))
}

async fn put_plugin(
    Extract(state): Extract<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    TenantAuth(tenant): TenantAuth,
    body: Body,
) -> ApiResult<Response> {
    check_name("plugin", &name)?;
    let limit = tenant.limits.plugin_mb.saturating_mul(1 << 20);
    if let Some(length) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
    {
        if length > limit {
            return Err(super::plugins::too_large(length, tenant.limits.plugin_mb));
        }
    }
    // The body is read only up to the limit, whatever the header said.
    let plugin_mb = tenant.limits.plugin_mb;
    let bytes = read_body(body, limit, |size| super::plugins::too_large(size, plugin_mb)).await?;
    let (mut row, staged) = state.store.check(&tenant, &name, &bytes).await?;
    let _turn = state.tenants.turn(&tenant.name).await;
    row.version = state.registry.add_plugin(&tenant.name, &row, &bytes)?;
    state.store.keep(&staged, &row.digest).await?;
    retention::collect(&state, &tenant)?;
    tracing::info!(tenant = %tenant.name, plugin = %name, version = row.version, "plugin uploaded");
    Ok((StatusCode::CREATED, Json(json!(row))).into_response())
}

async fn list_plugins(Extract(state): Extract<AppState>, TenantName(tenant): TenantName) -> ApiResult {
    Ok(Json(json!({ "plugins": state.registry.plugins(&tenant, None)? })))
}

async fn get_plugin(
    Extract(state): Extract<AppState>,
    Path(name): Path<String>,
    TenantName(tenant): TenantName,
) -> ApiResult {
    let versions = state.registry.plugins(&tenant, Some(&name))?;
    if versions.is_empty() {
        return Err(ApiError::not_found("plugin", &name));
    }
    Ok(Json(json!({"name": name, "versions": versions})))
}

async fn put_pipeline(
    Extract(state): Extract<AppState>,
    Path(name): Path<String>,
    TenantAuth(tenant): TenantAuth,
    body: Body,
) -> ApiResult<Response> {
    check_name("pipeline", &name)?;
    let body = read_body(body, MAX_BODY_BYTES as u64, too_long).await?;
    let yaml = std::str::from_utf8(&body).map_err(|_| ApiError::invalid("the pipeline file is not UTF-8"))?;
    let _turn = state.tenants.turn(&tenant.name).await;
    let prepared = state.supervisor.prepare(&tenant, &name, yaml)?;
    let existed = state.registry.pipeline(&tenant.name, &name)?.is_some();
    if !existed && state.registry.count_pipelines(&tenant.name)? >= tenant.limits.pipelines {
        return Err(ApiError::limit(format!(
            "this tenant has its limit of {} pipelines",
            tenant.limits.pipelines
        )));
    }
    let swapped = state.supervisor.swap(&tenant, &name, &prepared).await?;
    state.registry.put_pipeline(&tenant.name, &name, yaml)?;
    state.supervisor.set_applied_yaml(&tenant.name, &name, yaml);
    retention::collect(&state, &tenant)?;
    let running = state.supervisor.is_running(&tenant.name, &name);
    let status = if existed { StatusCode::OK } else { StatusCode::CREATED };
    let body = json!({
        "name": name,
        "stored": true,
        "plugin_swapped": swapped,
        // A running pipeline keeps its source and buffer settings until restarted.
        "restart_to_apply": running && !swapped,
        "status": state.supervisor.status(&tenant.name, &name),
    });
    Ok((status, Json(body)).into_response())
}

pub(super) async fn list_pipelines(Extract(state): Extract<AppState>, TenantName(tenant): TenantName) -> ApiResult {
    let pipelines: Vec<_> = state
        .registry
        .pipelines(Some(&tenant))?
        .iter()
        .map(|p| state.supervisor.status(&tenant, &p.name))
        .collect();
    let pipelines = match state.supervisor.leases() {
        Some(leases) => json!(cluster::merge_all(leases, &tenant, &pipelines)?),
        None => json!(pipelines),
    };
    Ok(Json(json!({ "pipelines": pipelines })))
}

/// The caller's pipeline row, or the same 404 for a name that is not theirs.
fn own_pipeline(state: &State, tenant: &str, name: &str) -> Result<super::registry::PipelineRow, ApiError> {
    state
        .registry
        .pipeline(tenant, name)?
        .ok_or_else(|| ApiError::not_found("pipeline", name))
}

pub(super) async fn get_pipeline(
    Extract(state): Extract<AppState>,
    Path(name): Path<String>,
    TenantName(tenant): TenantName,
) -> ApiResult {
    let row = own_pipeline(&state, &tenant, &name)?;
    let local = state.supervisor.status(&tenant, &name);
    let mut status = match state.supervisor.leases() {
        Some(leases) => cluster::merge(leases, &tenant, &local)?,
        None => json!(local),
    };
    status["yaml"] = json!(row.yaml);
    Ok(Json(status))
}

pub(super) async fn delete_pipeline(
    Extract(state): Extract<AppState>,
    Path(name): Path<String>,
    TenantAuth(tenant): TenantAuth,
) -> ApiResult {
    own_pipeline(&state, &tenant.name, &name)?;
    let _turn = state.tenants.turn(&tenant.name).await;
    state.supervisor.stop(&tenant.name, &name).await;
    state.registry.delete_pipeline(&tenant.name, &name)?;
    state.supervisor.forget(&tenant.name, Some(&name));
    logs::forget(&tenant.name, Some(&name));
    metrics::forget_pipeline(&tenant.name, &name);
    retention::collect(&state, &tenant)?;
    Ok(Json(json!({"name": name, "deleted": true})))
}

pub(super) async fn start_pipeline(
    Extract(state): Extract<AppState>,
    Path(name): Path<String>,
    TenantAuth(tenant): TenantAuth,
) -> ApiResult {
    let row = own_pipeline(&state, &tenant.name, &name)?;
    // Between resolving `plugin: NAME` and running it, an upload must not
    // collect the version the start chose.
    let _turn = state.tenants.turn(&tenant.name).await;
    state.supervisor.start(&tenant, &name, &row.yaml).await?;
    Ok(Json(json!(state.supervisor.status(&tenant.name, &name))))
}

pub(super) async fn stop_pipeline(
    Extract(state): Extract<AppState>,
    Path(name): Path<String>,
    TenantAuth(tenant): TenantAuth,
) -> ApiResult {
    own_pipeline(&state, &tenant.name, &name)?;
    let _turn = state.tenants.turn(&tenant.name).await;
    state.registry.set_running(&tenant.name, &name, false)?;
    state.supervisor.stop(&tenant.name, &name).await;
    retention::collect(&state, &tenant)?;
    Ok(Json(json!(state.supervisor.status(&tenant.name, &name))))
}

pub(super) async fn pipeline_logs(
    Extract(state): Extract<AppState>,
    Path(name): Path<String>,
    TenantName(tenant): TenantName,
) -> ApiResult {
    own_pipeline(&state, &tenant, &name)?;
    let ring = logs::existing(&tenant, &name);
    Ok(Json(json!({
        "name": name,
        "lines": ring.as_ref().map(|r| r.lines()).unwrap_or_default(),
        "dropped": ring.map_or(0, |r| r.dropped()),
    })))
}

async fn prometheus(Extract(state): Extract<AppState>, _: Admin) -> ApiResult<Response> {
    metrics::reset_gauges();
    state.supervisor.publish_metrics();
    for row in state.registry.tenants()? {
        if let Some(t) = state.tenants.get(&state.registry, &row.name)? {
            metrics::set_memory(&t.name, t.budget.in_use(), t.read_ahead.in_use());
            metrics::set_cpu(&t.name, t.cpu.used(Work::Plugin), t.cpu.used(Work::Pipeline));
        }
    }
    Ok(crate::metrics::http::exposition(metrics::render()))
}
