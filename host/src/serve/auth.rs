//! Who calls: the operator (the admin token) or a tenant (its own token).
//! Tokens are 256 random bits; the registry keeps only their SHA-256, and a
//! token is looked up by that hash, so a stolen database holds no token.

use axum::http::HeaderMap;

use super::error::ApiError;
use super::token::hash;
use super::State;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Admin,
    Tenant(String),
}

/// Compares two digests without stopping at the first difference.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

pub fn caller(state: &State, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let token = bearer(headers).ok_or_else(ApiError::unauthorized)?;
    let digest = hash(token);
    if same(&digest, &state.admin_hash) {
        return Ok(Caller::Admin);
    }
    match state.registry.tenant_by_token(&digest)? {
        Some(tenant) => Ok(Caller::Tenant(tenant)),
        None => Err(ApiError::unauthorized()),
    }
}

pub fn admin(state: &State, headers: &HeaderMap) -> Result<(), ApiError> {
    match caller(state, headers)? {
        Caller::Admin => Ok(()),
        Caller::Tenant(_) => Err(ApiError::forbidden()),
    }
}

/// The tenant a call acts for. The admin token does not act as a tenant:
/// a tenant's plugins and pipelines are its own.
pub fn tenant(state: &State, headers: &HeaderMap) -> Result<String, ApiError> {
    match caller(state, headers)? {
        Caller::Tenant(t) => Ok(t),
        Caller::Admin => Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "forbidden",
            "plugins and pipelines are a tenant's: use the tenant's token",
        )),
    }
}

/// Tenant, plugin and pipeline names: what can go in a path, a label and a
/// log line without escaping.
pub fn check_name(kind: &str, name: &str) -> Result<(), ApiError> {
    let ok = (1..=63).contains(&name.len())
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "{kind} name {name:?}: use 1 to 63 of a-z, 0-9, `-` and `_`, starting with a letter or digit"
        )))
    }
}
