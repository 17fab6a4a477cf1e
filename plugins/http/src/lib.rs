//! bizon-http: sends each batch to an HTTP endpoint, modelled on Vector's
//! `http` sink. The batch goes as NDJSON (one record per line) or as a JSON
//! array, split into requests of at most `max_request_bytes`. 429, 408, 5xx
//! and connection failures are retried here with exponential backoff,
//! honouring `Retry-After`; once `max_retries` are spent the batch comes back
//! retryable, and the host retries it later. Every request carries an
//! idempotency key, the same on every retry, so the receiver can drop
//! duplicates:
//!
//! - from a Kafka source, `{batch_id}-{part}`: the host's batch id
//!   (`host.batch-source`) depends only on the destination_id and the offset
//!   ranges, so a replay after a crash cut at the same offsets sends the
//!   same keys too (one cut elsewhere does not: see docs/plugins.md);
//! - from other sources, `{destination_id}-{hash}-{length}` of the request
//!   body: the same for a retry (even after the plugin was rebuilt), and
//!   another for the next run's batches, whose `_bizon_id`s differ (a
//!   sequence number would restart at 0 with each run, and a receiver would
//!   then drop a later run's first batches as duplicates).
//!
//! It needs the endpoint granted: `allow: {hosts: ["https://api.example.com"]}`
//! (and a credential with `allow.secrets`, which the host adds).
//!
//! plugin_config:
//!
//! | key | default | |
//! |---|---|---|
//! | `url` | required | where to send |
//! | `method` | `POST` | `POST` or `PUT` |
//! | `encoding` | `ndjson` | `ndjson` or `json_array` |
//! | `headers` | `{}` | added to every request |
//! | `max_request_bytes` | 10 MB | a batch larger than this goes in several requests |
//! | `max_retries` | 5 | retries of one request inside a call |
//! | `initial_backoff_ms`, `max_backoff_ms` | 200, 10000 | the wait between retries (and the cap on `Retry-After`) |
//! | `idempotency_header` | `Idempotency-Key` | empty: none |

use std::collections::BTreeMap;
use std::time::Duration;

use bizon_sdk::http::{HttpError, Request};
use bizon_sdk::{export_ndjson_destination, log, ndjson_rows, BatchInfo, Config, Error, NdjsonDestination, WriteError};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    url: String,
    #[serde(default = "default_method")]
    method: String,
    #[serde(default)]
    encoding: Encoding,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default = "default_max_request_bytes")]
    max_request_bytes: usize,
    #[serde(default = "default_max_retries")]
    max_retries: u32,
    #[serde(default = "default_initial_backoff_ms")]
    initial_backoff_ms: u64,
    #[serde(default = "default_max_backoff_ms")]
    max_backoff_ms: u64,
    #[serde(default = "default_idempotency_header")]
    idempotency_header: String,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Encoding {
    #[default]
    Ndjson,
    JsonArray,
}

fn default_method() -> String {
    "POST".into()
}
fn default_max_request_bytes() -> usize {
    10 * 1024 * 1024
}
fn default_max_retries() -> u32 {
    5
}
fn default_initial_backoff_ms() -> u64 {
    200
}
fn default_max_backoff_ms() -> u64 {
    10_000
}
fn default_idempotency_header() -> String {
    "Idempotency-Key".into()
}

struct Http {
    settings: Settings,
}

impl NdjsonDestination for Http {
    const NAME: &'static str = "http";

    fn open(config: Config) -> Result<Self, Error> {
        let settings: Settings = config.parse()?;
        if !matches!(settings.method.to_ascii_uppercase().as_str(), "POST" | "PUT") {
            return Err(Error::msg(format!("method {:?}: use POST or PUT", settings.method)));
        }
        Ok(Http { settings })
    }

    fn write(&mut self, batch: &str, info: &BatchInfo) -> Result<u64, WriteError> {
        let bodies = split(
            ndjson_rows(batch),
            self.settings.encoding,
            self.settings.max_request_bytes,
        );
        let source = bizon_sdk::batch_source();
        for (part, body) in bodies.into_iter().enumerate() {
            let key = match &source {
                Some(source) => format!("{}-{part}", source.batch_id),
                None => content_key(&info.destination_id, &body),
            };
            self.send(body, &key)?;
        }
        log::debug!("{} rows of {} sent", info.num_rows, info.destination_id);
        Ok(info.num_rows)
    }
}

impl Http {
    /// One request, retried here while the failure is worth retrying.
    fn send(&self, body: Vec<u8>, key: &str) -> Result<(), HttpError> {
        let s = &self.settings;
        let content_type = match s.encoding {
            Encoding::Ndjson => "application/x-ndjson",
            Encoding::JsonArray => "application/json",
        };
        let mut backoff = Duration::from_millis(s.initial_backoff_ms);
        let cap = Duration::from_millis(s.max_backoff_ms);
        let mut attempt = 0;
        loop {
            let mut request = Request::new(&s.method, &s.url).header("content-type", content_type);
            for (name, value) in &s.headers {
                request = request.header(name, value);
            }
            if !s.idempotency_header.is_empty() {
                request = request.header(&s.idempotency_header, key);
            }
            let error = match request.body(body.clone()).send().and_then(|r| r.error_for_status()) {
                Ok(_) => return Ok(()),
                Err(error) => error,
            };
            if !error.is_retryable() || attempt >= s.max_retries {
                return Err(error);
            }
            let wait = error.retry_after().unwrap_or(backoff).min(cap);
            log::warn!("{key}: {error}; retrying in {} ms", wait.as_millis());
            std::thread::sleep(wait);
            backoff = (backoff * 2).min(cap);
            attempt += 1;
        }
    }
}

/// The idempotency key of a request from a source without positions: its
/// body's 64-bit FNV-1a hash and length (a stable hash: std's is seeded).
fn content_key(destination_id: &str, body: &[u8]) -> String {
    let hash = body.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{destination_id}-{hash:016x}-{}", body.len())
}

/// The request bodies: rows in order, each body under `max_bytes` unless a
/// single row is larger (it then goes alone).
fn split<'a>(rows: impl Iterator<Item = &'a str>, encoding: Encoding, max_bytes: usize) -> Vec<Vec<u8>> {
    let mut bodies = Vec::new();
    let mut body = Vec::new();
    let close = |body: &mut Vec<u8>| {
        if encoding == Encoding::JsonArray {
            body.push(b']');
        }
    };
    for row in rows {
        let extra = row.len() + 1;
        if !body.is_empty() && body.len() + extra + 1 > max_bytes {
            close(&mut body);
            bodies.push(std::mem::take(&mut body));
        }
        match encoding {
            Encoding::Ndjson => {
                body.extend_from_slice(row.as_bytes());
                body.push(b'\n');
            }
            Encoding::JsonArray => {
                body.push(if body.is_empty() { b'[' } else { b',' });
                body.extend_from_slice(row.as_bytes());
            }
        }
    }
    if !body.is_empty() {
        close(&mut body);
        bodies.push(body);
    }
    bodies
}

export_ndjson_destination!(Http);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_content_key_is_stable_and_tells_bodies_apart() {
        let a = content_key("users", b"{\"_bizon_id\":\"a\"}\n");
        assert_eq!(a, content_key("users", b"{\"_bizon_id\":\"a\"}\n"));
        assert_ne!(a, content_key("users", b"{\"_bizon_id\":\"b\"}\n"));
        assert_ne!(a, content_key("orders", b"{\"_bizon_id\":\"a\"}\n"));
        assert!(a.starts_with("users-") && a.ends_with("-18"), "{a}");
    }
}
