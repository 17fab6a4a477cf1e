//! Who calls: the operator (the admin token) or a tenant (its own token),
//! as extractors. A handler that takes [`Admin`] answers only the admin
//! token; one that takes [`TenantName`] or [`TenantAuth`] only a tenant's
//! token, and acts for that tenant. A route cannot forget to check: what it
//! acts for is an argument it cannot get otherwise. Tokens are looked up by
//! their SHA-256 ([`super::token`]), so a stolen database holds no token.
//!
//! These are the API's: a bearer token, which a browser never sends by
//! itself, so no other site can make one act. The console's pages use a
//! session cookie instead, with extractors of the same kind and a CSRF
//! token on every form ([`super::ui::session`]).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};

use super::error::ApiError;
use super::state::State;
use super::tenants::Tenant;
use super::token::hash;

/// A call with the admin token.
pub struct Admin;

/// A call with a tenant's token: the tenant's name.
pub struct TenantName(pub String);

/// A call with a tenant's token: the tenant, loaded.
pub struct TenantAuth(pub Arc<Tenant>);

/// Who a token belongs to.
pub(super) enum Caller {
    Admin,
    Tenant(String),
}

/// Compares two digests without stopping at the first difference.
pub(super) fn same(a: &str, b: &str) -> bool {
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

/// Whose token this is: the admin's, a tenant's, or nobody's (`None`).
/// The console's login asks it too ([`super::ui`]).
pub(super) fn who(state: &State, token: &str) -> Result<Option<Caller>, ApiError> {
    let digest = hash(token);
    if same(&digest, &state.admin_hash) {
        return Ok(Some(Caller::Admin));
    }
    Ok(state.registry.tenant_by_token(&digest)?.map(Caller::Tenant))
}

fn caller(state: &State, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let token = bearer(headers).ok_or_else(ApiError::unauthorized)?;
    who(state, token)?.ok_or_else(ApiError::unauthorized)
}

impl FromRequestParts<Arc<State>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<State>) -> Result<Self, ApiError> {
        match caller(state, &parts.headers)? {
            Caller::Admin => Ok(Admin),
            Caller::Tenant(_) => Err(ApiError::forbidden()),
        }
    }
}

/// The admin token does not act as a tenant: a tenant's plugins and
/// pipelines are its own.
impl FromRequestParts<Arc<State>> for TenantName {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<State>) -> Result<Self, ApiError> {
        match caller(state, &parts.headers)? {
            Caller::Tenant(t) => Ok(TenantName(t)),
            Caller::Admin => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "plugins and pipelines are a tenant's: use the tenant's token",
            )),
        }
    }
}

impl FromRequestParts<Arc<State>> for TenantAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<State>) -> Result<Self, ApiError> {
        let TenantName(name) = TenantName::from_request_parts(parts, state).await?;
        state.tenant(&name).map(TenantAuth)
    }
}
