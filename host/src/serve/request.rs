//! What every route does with a request: its body read up to a limit, JSON
//! read from it, names checked.

use axum::body::{Body, Bytes};
use http_body_util::BodyExt;
use serde::Deserialize;

use super::error::ApiError;

/// The body, or 413 past `limit` bytes (read no further than that). A
/// tenant's limit may be any u64 (`plugin_mb: 18446744073709551615`
/// overflowed the `+ 1` here, found by tests/e2e/fuzz/serve_api.rs): the
/// sums saturate.
pub async fn read_body(body: Body, limit: u64, what: impl Fn(u64) -> ApiError) -> Result<Bytes, ApiError> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    Ok(http_body_util::Limited::new(body, limit.saturating_add(1))
        .collect()
        .await
        .map_err(|_| what((limit as u64).saturating_add(1)))?
        .to_bytes())
}

pub fn json_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("request body: {e}")))
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
