//! Grants: what a pipeline asked for its plugin to reach (`allow:` in a
//! `wasm` destination's or a transform's config), as data. A leaf: the
//! filesystem layer (`plugin::files`) and egress (`plugin::egress`) enforce
//! it.
//!
//! - [`hosts`]: `allow.hosts`, where a plugin may connect.
//! - here: the rest of `allow:` (directories, environment variables,
//!   secrets, network limits).

pub mod hosts;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

pub use hosts::{Host, HostRule, Scheme};

/// Quota of a writable grant that does not set `max_mb`, in MiB.
pub const DEFAULT_MAX_MB: u64 = 1024;

pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_FIRST_BYTE_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_MAX_RESPONSE_MB: u64 = 16;
pub const DEFAULT_MAX_CONNECTIONS: usize = 8;

/// `allow:` in a `wasm` destination's config. By default: nothing outside
/// the plugin's own memory but clocks, randomness and a log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    #[serde(default)]
    pub dirs: Vec<DirGrant>,
    /// Environment variables copied from the host's environment, by name.
    #[serde(default)]
    pub env: Vec<String>,
    /// Outbound hosts (`https://api.example.com`, `tcp://db:5432`, ...);
    /// empty: no network.
    #[serde(default)]
    pub hosts: Vec<HostRule>,
    /// Credentials the host adds to requests, by name.
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretGrant>,
    #[serde(default)]
    pub network: NetworkLimits,
}

/// A host directory the plugin sees at `guest`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirGrant {
    /// Relative paths are relative to the working directory.
    pub host: PathBuf,
    /// Where the plugin sees it; the host path when left out.
    #[serde(default)]
    pub guest: Option<String>,
    #[serde(default)]
    pub writable: bool,
    /// Bytes the plugin may keep under a writable grant, in MiB; see
    /// [`DirGrant::quota_mb`].
    #[serde(default)]
    pub max_mb: Option<u64>,
}

impl DirGrant {
    pub fn guest_path(&self) -> String {
        self.guest.clone().unwrap_or_else(|| self.host.display().to_string())
    }

    /// The byte quota of a writable grant, in MiB: `max_mb`, else
    /// [`DEFAULT_MAX_MB`].
    pub fn quota_mb(&self) -> u64 {
        self.max_mb.unwrap_or(DEFAULT_MAX_MB)
    }
}

/// One entry of `allow.secrets`, as configured: a credential the host adds
/// to a plugin's requests, so the plugin never holds it.
///
/// ```yaml
/// allow:
///   hosts: ["https://api.example.com"]
///   secrets:
///     api_token:
///       from: env:API_TOKEN          # or file:/run/secrets/token
///       host: https://api.example.com
///       header: Authorization        # the default
///       format: "Bearer {}"          # the default is "{}"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretGrant {
    /// `env:VAR` or `file:PATH`.
    pub from: String,
    /// The requests it is added to, in `allow.hosts` grammar.
    pub host: HostRule,
    #[serde(default = "default_header")]
    pub header: String,
    #[serde(default = "default_format")]
    pub format: String,
}

fn default_header() -> String {
    "authorization".into()
}

fn default_format() -> String {
    "{}".into()
}

/// `allow.network:` bounds on each connection of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkLimits {
    /// Name resolution, TCP connect and TLS handshake, together.
    pub connect_timeout_ms: u64,
    /// From the request sent to the response's headers, and then the
    /// longest wait between two pieces of the body.
    pub first_byte_timeout_ms: u64,
    /// A response body larger than this fails.
    pub max_response_mb: u64,
    /// HTTP requests one instance may have open at once.
    pub max_connections: usize,
}

impl Default for NetworkLimits {
    fn default() -> Self {
        Self {
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            first_byte_timeout_ms: DEFAULT_FIRST_BYTE_TIMEOUT_MS,
            max_response_mb: DEFAULT_MAX_RESPONSE_MB,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl NetworkLimits {
    pub fn max_response_bytes(&self) -> u64 {
        self.max_response_mb.saturating_mul(1024 * 1024)
    }
}
