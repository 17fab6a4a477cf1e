//! Sorting Google's errors into retryable and fatal, with the table they were about.

use google_cloud_gax::error::rpc::Code;
use google_cloud_gax::error::Error as GaxError;

use crate::destination::DestinationError;

/// gRPC codes that a later attempt can get past.
fn transient_code(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::ResourceExhausted | Code::Internal | Code::Aborted | Code::DeadlineExceeded
    )
}

/// HTTP statuses that a later attempt can get past.
pub fn transient_http(status: u16) -> bool {
    status == 429 || status == 408 || (500..600).contains(&status)
}

pub fn is_transient(e: &GaxError) -> bool {
    if e.is_timeout() || e.is_io() || e.is_connect() || e.is_transient_and_before_rpc() {
        return true;
    }
    if let Some(status) = e.status() {
        return transient_code(status.code);
    }
    if let Some(http) = e.http_status_code() {
        return transient_http(http);
    }
    // A transport error without a status is a dropped connection.
    e.is_transport()
}

/// `what` says what was being done and to which table, e.g. "creating table p.d.t".
pub fn classify(what: &str, e: &GaxError) -> DestinationError {
    let message = format!("BigQuery: {what}: {}", describe(e));
    if is_transient(e) {
        DestinationError::Retryable(message)
    } else {
        DestinationError::Fatal(message)
    }
}

/// The status message alone when there is one: it is what BigQuery said.
pub fn describe(e: &GaxError) -> String {
    match e.status() {
        Some(s) if !s.message.is_empty() => format!("{} ({:?})", s.message, s.code),
        _ => e.to_string(),
    }
}

pub fn is_code(e: &GaxError, code: Code) -> bool {
    e.status().is_some_and(|s| s.code == code) || {
        let http = match code {
            Code::NotFound => 404,
            Code::AlreadyExists => 409,
            _ => 0,
        };
        http != 0 && e.http_status_code() == Some(http)
    }
}
