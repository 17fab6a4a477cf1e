//! Egress: the one place a plugin's outbound connections are decided, for
//! `wasi:http` and `wasi:sockets` alike. Both are linked for every plugin
//! (Python and JavaScript components import sockets through their libc),
//! and every connection and name lookup is checked when it is made:
//!
//! - [`rules`]: `allow.hosts`, the grants, as data.
//! - [`address`]: the address classes refused unless a rule names them.
//! - [`policy`]: rule match, resolve once, check every address.
//! - [`http`]: `wasi:http` requests, sent by the host to checked addresses.
//! - [`sockets`]: `wasi:sockets` connects and lookups.
//! - [`secrets`]: credentials the host adds to requests.

pub mod address;
mod http;
pub mod policy;
pub mod rules;
pub mod secrets;
mod sockets;

use std::sync::Arc;

use serde::Deserialize;
use wasmtime::component::Linker;
use wasmtime_wasi::sockets::{WasiSockets, WasiSocketsView};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

pub use policy::{Denied, Policy};
pub use rules::HostRule;
pub use secrets::SecretGrant;

use super::capabilities::Grants;
use super::instance::State;

pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_FIRST_BYTE_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_MAX_RESPONSE_MB: u64 = 16;
pub const DEFAULT_MAX_CONNECTIONS: usize = 8;

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

/// Interfaces linked here, without versions, for the import check.
pub const LINKED: &[&str] = &[
    "wasi:sockets/network",
    "wasi:sockets/instance-network",
    "wasi:sockets/ip-name-lookup",
    "wasi:sockets/tcp",
    "wasi:sockets/tcp-create-socket",
    "wasi:sockets/udp",
    "wasi:sockets/udp-create-socket",
    "wasi:http/types",
    "wasi:http/outgoing-handler",
];

/// One instance's egress: the policy (shared with its socket check) and
/// the HTTP state.
pub struct Egress {
    policy: Arc<Policy>,
    http: WasiHttpCtx,
    hooks: http::Hooks,
}

impl Egress {
    /// Reads the secrets; an error names the one that cannot be read.
    pub fn new(plugin: &str, grants: &Grants) -> Result<Self, String> {
        let secrets = grants
            .secrets
            .iter()
            .map(|(name, grant)| grant.load(name))
            .collect::<Result<Vec<_>, _>>()?;
        let policy = Arc::new(Policy {
            plugin: plugin.to_string(),
            rules: grants.hosts.clone(),
            secrets,
            limits: grants.network,
        });
        Ok(Self {
            hooks: http::Hooks::new(policy.clone()),
            http: WasiHttpCtx::new(),
            policy,
        })
    }

    /// Sockets are enabled so that every use reaches the check, which
    /// refuses and logs what the grants do not allow.
    pub fn configure(&self, builder: &mut WasiCtxBuilder) {
        let policy = self.policy.clone();
        builder
            .allow_tcp(true)
            .allow_udp(true)
            .allow_ip_name_lookup(true)
            .socket_addr_check(move |addr, used| Box::pin(sockets::check_address(policy.clone(), addr, used)));
    }
}

impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            hooks: &mut self.egress.hooks,
            table: &mut self.table,
            ctx: &mut self.egress.http,
        }
    }
}

/// Links `wasi:sockets/*` and `wasi:http/*` (async variants, as the rest).
pub fn add_to_linker(l: &mut Linker<State>) -> wasmtime::Result<()> {
    use wasmtime_wasi::p2::bindings::sockets as s;
    s::tcp::add_to_linker::<State, WasiSockets>(l, State::sockets)?;
    s::udp::add_to_linker::<State, WasiSockets>(l, State::sockets)?;
    s::udp_create_socket::add_to_linker::<State, WasiSockets>(l, State::sockets)?;
    s::tcp_create_socket::add_to_linker::<State, WasiSockets>(l, State::sockets)?;
    s::instance_network::add_to_linker::<State, WasiSockets>(l, State::sockets)?;
    s::network::add_to_linker::<State, WasiSockets>(l, &Default::default(), State::sockets)?;
    s::ip_name_lookup::add_to_linker::<State, sockets::Lookup>(l, |s| {
        let policy = s.egress.policy.clone();
        sockets::LookupView {
            sockets: s.sockets(),
            policy,
        }
    })?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(l)
}
