//! `/v1/secrets`: a tenant stores, lists and deletes its secrets. A value
//! goes in once and never comes out: the list has names and times only,
//! and no error message repeats what the body held (serde's would quote a
//! mistyped value).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State as Extract};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::auth::{TenantAuth, TenantName};
use super::error::ApiError;
use super::request::{check_name, read_body};
use super::state::State;

/// JSON's quoting at most doubles a value (`\"`, `\\`), and `\u00XX` takes
/// six bytes for one: a body of six times the value's limit, and a little
/// for `{"value": ""}`, holds any value within it.
const BODY_PER_VALUE_BYTE: u64 = 6;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSecret {
    value: String,
}

/// `PUT /v1/secrets/{name}` `{"value": "..."}`: 201 when new, 204 when it
/// replaced a value (running pipelines keep the old one until restarted).
pub async fn put(
    Extract(state): Extract<Arc<State>>,
    Path(name): Path<String>,
    TenantAuth(tenant): TenantAuth,
    body: Body,
) -> Result<Response, ApiError> {
    check_name("secret", &name)?;
    let max = tenant.limits.secret_kb.saturating_mul(1024);
    let body = Zeroizing::new(
        read_body(body, max.saturating_mul(BODY_PER_VALUE_BYTE).saturating_add(64), |_| {
            ApiError::too_large(format!("a secret's value is at most {} KiB", tenant.limits.secret_kb))
        })
        .await?
        .to_vec(),
    );
    let new: NewSecret = serde_json::from_slice(&body)
        .map_err(|_| ApiError::invalid("request body: give {\"value\": \"...\"}, the value a string"))?;
    let value = Zeroizing::new(new.value);
    if value.is_empty() {
        return Err(ApiError::invalid("a secret's value is not empty"));
    }
    if value.len() as u64 > max {
        return Err(ApiError::too_large(format!(
            "a secret's value is at most {} KiB (this tenant's secret_kb)",
            tenant.limits.secret_kb
        )));
    }
    let stored = state.registry.secrets(&tenant.name)?;
    if !stored.iter().any(|s| s.name == name) && stored.len() >= tenant.limits.secrets {
        return Err(ApiError::limit(format!(
            "this tenant has its limit of {} secrets",
            tenant.limits.secrets
        )));
    }
    let sealed = state.vault.seal(&tenant.name, &name, value.as_bytes());
    let created = state.registry.put_secret(&tenant.name, &name, &sealed)?;
    tracing::info!(tenant = %tenant.name, secret = %name, created, "secret stored");
    Ok(match created {
        true => (StatusCode::CREATED, Json(json!({"name": name, "created": true}))).into_response(),
        false => StatusCode::NO_CONTENT.into_response(),
    })
}

/// `GET /v1/secrets`: names and times, never values.
pub async fn list(
    Extract(state): Extract<Arc<State>>,
    TenantName(tenant): TenantName,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "secrets": state.registry.secrets(&tenant)? })))
}

/// `DELETE /v1/secrets/{name}`: a pipeline naming it fails at its next
/// start; a running one keeps the value it was given.
pub async fn delete(
    Extract(state): Extract<Arc<State>>,
    Path(name): Path<String>,
    TenantName(tenant): TenantName,
) -> Result<Json<Value>, ApiError> {
    if !state.registry.delete_secret(&tenant, &name)? {
        return Err(ApiError::not_found("secret", &name));
    }
    tracing::info!(tenant = %tenant, secret = %name, "secret deleted");
    Ok(Json(json!({"name": name, "deleted": true})))
}
