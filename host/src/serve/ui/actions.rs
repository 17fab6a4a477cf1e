//! What the pages' buttons do, each a POST that takes [`Checked`] (the
//! session's CSRF token) and calls the API's own handler, so a click does
//! exactly what the API call does, refusals included. As in the API, a
//! tenant starts, stops and deletes its pipelines, and the operator
//! changes a tenant's limits.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State as Extract};
use axum::http::StatusCode;
use axum::response::Redirect;
use serde_json::{Map, Value};

use super::super::api;
use super::super::auth::{Admin, TenantAuth};
use super::super::request::check_name;
use super::super::state::State;
use super::session::{Checked, Scoped, ScopedPipeline, Who};
use super::UiError;

/// The tenant acting on its pipeline; the operator does not.
fn acting(scope: &ScopedPipeline) -> Result<TenantAuth, UiError> {
    match scope.viewer.who {
        Who::Tenant(_) => Ok(TenantAuth(scope.tenant.clone())),
        Who::Admin => Err(UiError::page(
            StatusCode::FORBIDDEN,
            "a tenant's pipelines are started, stopped and deleted with its own session \
             (as in the API: the admin token does not act as a tenant)",
        )),
    }
}

fn back(scope: &ScopedPipeline) -> Redirect {
    Redirect::to(&format!(
        "/ui/tenants/{}/pipelines/{}",
        scope.tenant.name, scope.row.name
    ))
}

/// `POST .../pipelines/{pipeline}/start`.
pub async fn start(
    scope: ScopedPipeline,
    Extract(state): Extract<Arc<State>>,
    _: Checked,
) -> Result<Redirect, UiError> {
    let auth = acting(&scope)?;
    api::start_pipeline(Extract(state), Path(scope.row.name.clone()), auth)
        .await
        .map(drop)?;
    Ok(back(&scope))
}

/// `POST .../pipelines/{pipeline}/stop`.
pub async fn stop(scope: ScopedPipeline, Extract(state): Extract<Arc<State>>, _: Checked) -> Result<Redirect, UiError> {
    let auth = acting(&scope)?;
    api::stop_pipeline(Extract(state), Path(scope.row.name.clone()), auth)
        .await
        .map(drop)?;
    Ok(back(&scope))
}

/// `POST .../pipelines/{pipeline}/delete`, with its `confirm` box ticked.
pub async fn delete(
    scope: ScopedPipeline,
    Extract(state): Extract<Arc<State>>,
    form: Checked,
) -> Result<Redirect, UiError> {
    let auth = acting(&scope)?;
    if form.field("confirm").is_none() {
        return Err(UiError::page(
            StatusCode::UNPROCESSABLE_ENTITY,
            "tick the box beside Delete to delete the pipeline",
        ));
    }
    api::delete_pipeline(Extract(state), Path(scope.row.name.clone()), auth)
        .await
        .map(drop)?;
    Ok(Redirect::to(&format!("/ui/tenants/{}", scope.tenant.name)))
}

/// The limits form as the API's patch: each field's JSON, an empty one
/// `null` (back to the default).
fn patch(form: &Checked) -> Result<Value, UiError> {
    let mut limits = Map::new();
    for (key, value) in form.fields.iter().filter(|(k, _)| k != "back") {
        let value = match value.trim() {
            "" => Value::Null,
            text => serde_json::from_str(text).map_err(|_| {
                UiError::page(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("limits.{key}: `{text}` is not a number (nor JSON, for a list)"),
                )
            })?,
        };
        limits.insert(key.clone(), value);
    }
    Ok(serde_json::json!({ "limits": limits }))
}

/// `POST /ui/tenants/{tenant}/limits`: the operator's.
pub async fn limits(scope: Scoped, Extract(state): Extract<Arc<State>>, form: Checked) -> Result<Redirect, UiError> {
    if !scope.viewer.is_admin() {
        return Err(UiError::page(
            StatusCode::FORBIDDEN,
            "a tenant's limits are the operator's to set",
        ));
    }
    let body = Body::from(patch(&form)?.to_string());
    let name = scope.tenant.name.clone();
    api::patch_tenant(Extract(state), Path(name.clone()), Admin, body)
        .await
        .map(drop)?;
    tracing::info!(tenant = %name, "tenant limits changed in the console");
    Ok(match form.field("back").filter(|b| check_name("pipeline", b).is_ok()) {
        Some(pipeline) => Redirect::to(&format!("/ui/tenants/{name}/pipelines/{pipeline}")),
        None => Redirect::to(&format!("/ui/tenants/{name}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::ui::session::Viewer;

    fn form(fields: &[(&str, &str)]) -> Checked {
        Checked {
            viewer: Viewer {
                who: Who::Admin,
                csrf: String::new(),
                id: String::new(),
            },
            fields: fields.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    #[test]
    fn the_limits_form_becomes_the_apis_patch() {
        let patched = patch(&form(&[
            ("memory_mb", " 256 "),
            ("cpu_cores", "0.5"),
            ("instances", ""),
            ("egress", "[\"*.example.com\"]"),
            ("back", "orders"),
        ]))
        .unwrap();
        assert_eq!(
            patched,
            serde_json::json!({"limits": {"memory_mb": 256, "cpu_cores": 0.5, "instances": null,
                                          "egress": ["*.example.com"]}})
        );
        let Err(UiError::Page { status, message }) = patch(&form(&[("memory_mb", "lots")])) else {
            panic!("not a number")
        };
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(message.contains("limits.memory_mb: `lots`"), "{message}");
    }
}
