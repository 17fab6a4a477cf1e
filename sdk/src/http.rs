//! Outbound HTTP for plugins (feature `http`), on the raw `wasi:http`
//! bindings of the `wasip2` crate: the host sends the request if the
//! pipeline's `allow.hosts` grants it, so a refusal comes back as
//! [`HttpError::Denied`] with the host's reason.
//!
//! ```ignore
//! use bizon_sdk::http::Request;
//!
//! let response = Request::post("https://api.example.com/v1/events")
//!     .header("content-type", "application/x-ndjson")
//!     .body(lines)
//!     .send()?            // connect errors, timeouts: retryable
//!     .error_for_status()?; // 429 and 5xx retryable, other 4xx fatal
//! ```
//!
//! Redirects are not followed (the host does not either): a 3xx is returned
//! as it is, and following it is a new request, checked like any other.

use std::fmt;
use std::io::{Read, Write};
use std::time::Duration;

use wasip2::http::outgoing_handler;
use wasip2::http::types::{ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme};

use crate::{Error, WriteError};

/// An HTTP request; build it, then [`Request::send`] it.
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Request {
    pub fn new(method: &str, url: &str) -> Self {
        Self {
            method: method.to_ascii_uppercase(),
            url: url.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn get(url: &str) -> Self {
        Self::new("GET", url)
    }

    pub fn post(url: &str) -> Self {
        Self::new("POST", url)
    }

    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.as_ref().to_vec()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sends the request and reads the whole response.
    pub fn send(self) -> Result<Response, HttpError> {
        let (scheme, authority, path) = split_url(&self.url)?;
        let mut headers = self.headers;
        headers.push(("content-length".into(), self.body.len().to_string().into_bytes()));
        let fields = Fields::from_list(&headers).map_err(|e| HttpError::Request(format!("header: {e:?}")))?;
        let request = OutgoingRequest::new(fields);
        let method = match self.method.as_str() {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "OPTIONS" => Method::Options,
            other => Method::Other(other.to_string()),
        };
        let bad = |what: &str| HttpError::Request(format!("{what} of {}", self.url));
        request.set_method(&method).map_err(|_| bad("method"))?;
        request.set_scheme(Some(&scheme)).map_err(|_| bad("scheme"))?;
        request.set_authority(Some(authority)).map_err(|_| bad("host"))?;
        request.set_path_with_query(Some(path)).map_err(|_| bad("path"))?;
        let body = request.body().map_err(|_| bad("body"))?;

        // The request goes out first and the body streams into it: a body
        // larger than the host's buffer written before `handle` would wait
        // forever.
        let pending = outgoing_handler::handle(request, None).map_err(HttpError::from_code)?;
        if let Ok(mut stream) = body.write() {
            // A failed write or finish shows in the response: the host
            // fails a request whose body ended short of its length. The
            // stream reports "closed" once the server has read the whole
            // body, which is not a failure.
            let _ = stream.write_all(&self.body).and_then(|_| Write::flush(&mut stream));
        }
        let _ = OutgoingBody::finish(body, None);

        pending.subscribe().block();
        let response = match pending.get() {
            Some(Ok(Ok(response))) => response,
            Some(Ok(Err(code))) => return Err(HttpError::from_code(code)),
            _ => return Err(HttpError::Connect("the host returned no response".into())),
        };
        let status = response.status();
        let headers = response.headers().entries();
        let incoming = response
            .consume()
            .map_err(|_| HttpError::Connect("response body taken".into()))?;
        let mut body = Vec::new();
        {
            let mut stream = incoming
                .stream()
                .map_err(|_| HttpError::Connect("response body taken".into()))?;
            stream
                .read_to_end(&mut body)
                .map_err(|e| HttpError::Connect(format!("reading the response: {e}")))?;
        }
        drop(IncomingBody::finish(incoming));
        Ok(Response { status, headers, body })
    }
}

fn split_url(url: &str) -> Result<(Scheme, &str, &str), HttpError> {
    let bad = || HttpError::Request(format!("{url:?} is not an http:// or https:// URL"));
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        _ => return Err(bad()),
    };
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    if authority.is_empty() {
        return Err(bad());
    }
    Ok((scheme, authority, if path.is_empty() { "/" } else { path }))
}

/// A whole response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of a header, if it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }

    /// `Retry-After` in seconds (an HTTP date is not understood: `None`).
    pub fn retry_after(&self) -> Option<Duration> {
        self.header("retry-after")?.trim().parse().ok().map(Duration::from_secs)
    }

    /// `Ok` for 1xx-3xx, [`HttpError::Status`] otherwise.
    pub fn error_for_status(self) -> Result<Response, HttpError> {
        if self.status < 400 {
            return Ok(self);
        }
        let mut body = self.text().into_owned();
        if body.len() > 1024 {
            let mut cut = 1024;
            while !body.is_char_boundary(cut) {
                cut -= 1;
            }
            body.truncate(cut);
        }
        Err(HttpError::Status {
            status: self.status,
            retry_after: self.retry_after(),
            body,
        })
    }
}

/// Why a request failed, and whether trying again can help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The host refused the connection (not in `allow.hosts`, a private
    /// address, ...): the message names the address and the rule. Fatal.
    Denied(String),
    /// The request cannot be built (bad URL, header). Fatal.
    Request(String),
    /// Could not connect, or the connection broke. Retryable.
    Connect(String),
    /// Connect or first-byte timeout. Retryable.
    Timeout(String),
    /// The server answered with an error status.
    Status {
        status: u16,
        body: String,
        retry_after: Option<Duration>,
    },
}

impl HttpError {
    fn from_code(code: ErrorCode) -> Self {
        match code {
            ErrorCode::InternalError(Some(message)) if message.starts_with("egress denied") => {
                HttpError::Denied(message)
            }
            ErrorCode::DestinationIpProhibited | ErrorCode::HttpRequestDenied => HttpError::Denied(format!("{code:?}")),
            ErrorCode::ConnectionTimeout | ErrorCode::ConnectionReadTimeout | ErrorCode::HttpResponseTimeout => {
                HttpError::Timeout(format!("{code:?}"))
            }
            ErrorCode::HttpRequestUriInvalid
            | ErrorCode::HttpRequestMethodInvalid
            | ErrorCode::HttpRequestHeaderSize(_)
            | ErrorCode::HttpRequestHeaderSectionSize(_) => HttpError::Request(format!("{code:?}")),
            other => HttpError::Connect(format!("{other:?}")),
        }
    }

    /// 408, 429 and 5xx, connection failures and timeouts.
    pub fn is_retryable(&self) -> bool {
        match self {
            HttpError::Connect(_) | HttpError::Timeout(_) => true,
            HttpError::Status { status, .. } => *status == 408 || *status == 429 || *status >= 500,
            HttpError::Denied(_) | HttpError::Request(_) => false,
        }
    }

    /// What the server asked to wait before trying again.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            HttpError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Denied(m) => f.write_str(m),
            HttpError::Request(m) => write!(f, "bad request: {m}"),
            HttpError::Connect(m) => write!(f, "connection failed: {m}"),
            HttpError::Timeout(m) => write!(f, "timed out: {m}"),
            HttpError::Status { status, body, .. } => write!(f, "HTTP {status}: {body}"),
        }
    }
}

/// Retryable failures retry the batch; the others stop the pipeline.
impl From<HttpError> for WriteError {
    fn from(error: HttpError) -> Self {
        if error.is_retryable() {
            WriteError::Retryable(error.to_string())
        } else {
            WriteError::Fatal(error.to_string())
        }
    }
}

impl From<HttpError> for Error {
    fn from(error: HttpError) -> Self {
        Error::msg(error)
    }
}
