//! The console: server-rendered pages a person opens in a browser at
//! `/ui` (docs/serve.md, "The console"). The operator logs in with the
//! admin token and sees the host, every tenant and pipeline; a tenant with
//! its own token sees its own and acts on them. Pages show what the JSON
//! API answers (its handlers are called for it, so the console cannot say
//! or do otherwise) and refresh their live part every 2 s.
//!
//! Its files in data-flow order; each imports only those above it:
//!
//! - [`samples`]: the last hour of records/s and lag, in memory.
//! - [`session`]: sessions, their cookie, CSRF, and the extractors that
//!   say who reads a page and which tenant it may show.
//! - [`html`]: escaping, the page frame and its headers.
//! - [`chart`]: a series as inline SVG.
//! - [`login`]: the form, logging in and out, wrong tokens slowed and counted.
//! - [`pages`]: the operator's overview, a tenant's page, a pipeline's page.
//! - [`actions`]: start, stop, delete; a tenant's limits.

mod actions;
mod chart;
mod html;
mod login;
mod pages;
mod samples;
pub mod session;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};

use super::error::ApiError;
use super::state::State;

/// Largest form: the limits form is the longest, well under 1 KiB.
const FORM_BYTES: usize = 16 << 10;

/// What the console keeps: sessions, login attempts and the samples.
#[derive(Default)]
pub struct Console {
    sessions: session::Sessions,
    attempts: login::Attempts,
    history: samples::History,
}

/// The console's routes, and its sampler, which runs while `state` lives.
pub fn router(state: &Arc<State>) -> Router {
    let console = Arc::new(Console::default());
    samples::spawn(Arc::downgrade(state), console.clone());
    let pipeline = "/ui/tenants/{tenant}/pipelines/{pipeline}";
    Router::new()
        .route("/ui", get(pages::overview))
        .route("/ui/login", get(login::form).post(login::login))
        .route("/ui/logout", post(login::logout))
        .route("/ui/tenants/{tenant}", get(pages::tenant))
        .route("/ui/tenants/{tenant}/limits", post(actions::limits))
        .route(pipeline, get(pages::pipeline))
        .route(&format!("{pipeline}/start"), post(actions::start))
        .route(&format!("{pipeline}/stop"), post(actions::stop))
        .route(&format!("{pipeline}/delete"), post(actions::delete))
        .layer(Extension(console))
        .layer(DefaultBodyLimit::max(FORM_BYTES))
        .with_state(state.clone())
}

/// Why a page is not shown.
#[derive(Debug)]
pub enum UiError {
    /// No live session: to the login form.
    LoginFirst,
    Page {
        status: StatusCode,
        message: String,
    },
}

impl UiError {
    pub fn page(status: StatusCode, message: impl Into<String>) -> Self {
        UiError::Page {
            status,
            message: message.into(),
        }
    }

    /// The API's words for a name that is not the caller's or nobody's.
    pub fn not_found(kind: &str, name: &str) -> Self {
        ApiError::not_found(kind, name).into()
    }
}

impl From<ApiError> for UiError {
    fn from(e: ApiError) -> Self {
        UiError::page(e.status, e.message)
    }
}

impl From<super::registry::RegistryError> for UiError {
    fn from(e: super::registry::RegistryError) -> Self {
        ApiError::from(e).into()
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        match self {
            UiError::LoginFirst => Redirect::to("/ui/login").into_response(),
            UiError::Page { status, message } => {
                let main = format!(
                    "<h1>{} {}</h1><p class=msg>{}</p><p><a href=\"/ui\">Back to the console</a></p>",
                    status.as_u16(),
                    status.canonical_reason().unwrap_or(""),
                    html::esc(&message)
                );
                html::respond(status, html::document("Error", None, &main))
            }
        }
    }
}
