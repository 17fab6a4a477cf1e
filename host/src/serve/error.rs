//! API errors: `{"error": {"code", "message"}}` with the HTTP status the
//! code implies. Another tenant's things answer [`ApiError::not_found`],
//! word for word what a missing name answers.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds, for a `Retry-After` header.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid `Authorization: Bearer TOKEN` header is required",
        )
    }

    pub fn forbidden() -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "this needs the admin token")
    }

    pub fn not_found(kind: &str, name: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("no {kind} named `{name}`"))
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    pub fn limit(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded", message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }

    /// 429 with `Retry-After`: a failing pipeline started again too soon.
    pub fn backing_off(message: impl Into<String>, wait: std::time::Duration) -> Self {
        Self {
            retry_after: Some(wait.as_secs_f64().ceil() as u64),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "backing_off", message)
        }
    }

    pub fn internal(message: impl std::fmt::Display) -> Self {
        tracing::error!("internal error: {message}");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message.to_string())
    }
}

impl From<super::registry::RegistryError> for ApiError {
    fn from(e: super::registry::RegistryError) -> Self {
        ApiError::internal(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (self.status, Json(body)).into_response();
        // A 413 is answered before the rest of the body is read, so the
        // connection cannot carry another request: saying so keeps a
        // keep-alive client from sending its next request down a socket the
        // server is about to close.
        if self.status == StatusCode::PAYLOAD_TOO_LARGE {
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_413_closes_the_connection_and_other_errors_keep_it() {
        let closed = ApiError::too_large("big").into_response();
        assert_eq!(closed.headers()[axum::http::header::CONNECTION], "close");
        let kept = ApiError::invalid("bad").into_response();
        assert!(kept.headers().get(axum::http::header::CONNECTION).is_none());
    }
}
