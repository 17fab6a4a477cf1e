//! Authenticated JSON and upload calls for what the Google crates do not
//! cover or cover awkwardly: `tabledata.insertAll` (no crate has it), GCS
//! uploads (one media request; see load.rs) and the job calls that go with
//! them, so one error type describes every HTTP answer.

use google_cloud_auth::credentials::{CacheableResource, Credentials};
use reqwest::header::{HeaderMap, CONTENT_TYPE};
use reqwest::Method;
use serde_json::Value;

use super::errors::transient_http;
use crate::destination::DestinationError;

#[derive(Debug, thiserror::Error)]
pub enum RestError {
    /// BigQuery/GCS answered with an error status; `reason` is the first
    /// `error.errors[].reason` (e.g. `notFound`, `duplicate`, `rateLimitExceeded`).
    #[error("HTTP {status}: {message}{}", reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default())]
    Status {
        status: u16,
        reason: Option<String>,
        message: String,
        /// The server's `Retry-After`, in seconds (the form Google sends).
        retry_after: Option<std::time::Duration>,
    },
    /// No answer: connection refused or reset, timeout.
    #[error("{0}")]
    Transport(String),
    #[error("credentials: {0}")]
    Auth(String),
    #[error("unreadable answer: {0}")]
    Decode(String),
}

impl RestError {
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// How long the server asked to be left alone, if it did.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub fn is_transient(&self) -> bool {
        match self {
            Self::Status { status, .. } => transient_http(*status),
            Self::Transport(_) => true,
            Self::Auth(_) | Self::Decode(_) => false,
        }
    }

    /// `what` names the call and its object, e.g. "insertAll into p.d.t".
    pub fn into_destination(self, what: &str) -> DestinationError {
        let message = format!("{what}: {self}");
        if self.is_transient() {
            DestinationError::Retryable(message)
        } else {
            DestinationError::Fatal(message)
        }
    }
}

pub struct Rest {
    client: reqwest::Client,
    credentials: Credentials,
}

impl Rest {
    pub fn new(credentials: Credentials) -> Result<Self, DestinationError> {
        let client = reqwest::Client::builder()
            // insertAll and uploads answer within seconds; a hung connection must
            // become a retry, not a stuck pipeline.
            .timeout(std::time::Duration::from_secs(300))
            .connect_timeout(std::time::Duration::from_secs(20))
            .build()
            .map_err(|e| DestinationError::Fatal(format!("HTTP client: {e}")))?;
        Ok(Self { client, credentials })
    }

    async fn auth_headers(&self) -> Result<HeaderMap, RestError> {
        match self.credentials.headers(Default::default()).await {
            Ok(CacheableResource::New { data, .. }) => Ok(data),
            // Only answered when an entity tag was sent, which this never does.
            Ok(CacheableResource::NotModified) => Ok(HeaderMap::new()),
            Err(e) if e.is_transient() => Err(RestError::Transport(format!("credentials: {e}"))),
            Err(e) => Err(RestError::Auth(e.to_string())),
        }
    }

    /// Sends `body` (JSON when `content_type` is None) and returns the JSON
    /// answer, `Value::Null` for an empty one (DELETE).
    pub async fn call(
        &self,
        method: Method,
        url: &str,
        body: Option<Vec<u8>>,
        content_type: Option<&str>,
    ) -> Result<Value, RestError> {
        let mut request = self.client.request(method, url).headers(self.auth_headers().await?);
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, content_type.unwrap_or("application/json"))
                .body(body);
        }
        let response = request.send().await.map_err(|e| RestError::Transport(e.to_string()))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(std::time::Duration::from_secs_f64);
        let bytes = response
            .bytes()
            .await
            .map_err(|e| RestError::Transport(e.to_string()))?;
        let value: Value = if bytes.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice(&bytes) {
                Ok(v) => v,
                Err(_) if !(200..300).contains(&status) => Value::String(String::from_utf8_lossy(&bytes).into_owned()),
                Err(e) => return Err(RestError::Decode(format!("{url}: {e}"))),
            }
        };
        if (200..300).contains(&status) {
            return Ok(value);
        }
        let error = &value["error"];
        Err(RestError::Status {
            status,
            reason: error["errors"][0]["reason"].as_str().map(str::to_string),
            message: error["message"]
                .as_str()
                .or(value.as_str())
                .map(|m| m.chars().take(2000).collect())
                .unwrap_or_default(),
            retry_after,
        })
    }

    pub async fn json(&self, method: Method, url: &str, body: &Value) -> Result<Value, RestError> {
        let bytes = serde_json::to_vec(body).expect("a JSON value serializes");
        self.call(method, url, Some(bytes), None).await
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters: object
/// names go into paths and query strings.
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
