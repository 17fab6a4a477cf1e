//! Egress: the one place a plugin's outbound connections are decided, for
//! `wasi:http` and `wasi:sockets` alike. Both are linked for every plugin
//! (Python and JavaScript components import sockets through their libc),
//! and every connection and name lookup is checked when it is made:
//!
//! - [`address`]: the address classes refused unless a rule names them.
//! - [`policy`]: rule match, resolve once, check every address.
//! - [`http`]: `wasi:http` requests, sent by the host to checked addresses.
//! - [`sockets`]: `wasi:sockets` connects and lookups.
//! - [`secrets`]: credentials the host adds to requests.
//! - [`gateway`]: the same check for the clients of a `serve` tenant's
//!   native destinations, which connect through a local route.
//!
//! What a pipeline granted (`allow.hosts`, `allow.secrets`,
//! `allow.network`) is data in [`crate::plugin::grants`]. The Store's data
//! gives egress what it needs through [`EgressView`], as it gives
//! wasmtime-wasi its contexts through `WasiView`: egress knows nothing of the
//! Store's other parts.

pub mod address;
pub mod gateway;
mod http;
pub mod policy;
pub mod secrets;
mod sockets;

use std::sync::Arc;

use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi::sockets::{WasiSockets, WasiSocketsView};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

pub use policy::{Denied, Policy};
use secrets::Secret;

use crate::config::secret::Secrets;
use crate::plugin::grants::Grants;

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
    /// Reads the secrets (a tenant's from `tenant`); an error names the one
    /// that cannot be read.
    pub fn new(plugin: &str, grants: &Grants, tenant: &Secrets) -> Result<Self, String> {
        let secrets = grants
            .secrets
            .iter()
            .map(|(name, grant)| Secret::load(name, grant, tenant))
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

    /// wasmtime-wasi-http's view of this egress, over the Store's resource
    /// table: what a Store's `WasiHttpView` returns.
    pub fn http<'a>(&'a mut self, table: &'a mut ResourceTable) -> WasiHttpCtxView<'a> {
        WasiHttpCtxView {
            hooks: &mut self.hooks,
            table,
            ctx: &mut self.http,
        }
    }
}

/// What a Store's data gives egress: its WASI sockets context (whose
/// address check [`Egress::configure`] set), its `wasi:http` view (from
/// [`Egress::http`]), and the instance's [`Egress`] itself.
pub trait EgressView: WasiSocketsView + WasiHttpView {
    fn egress(&self) -> &Egress;
}

/// Links `wasi:sockets/*` and `wasi:http/*` (async variants, as the rest).
pub fn add_to_linker<T: EgressView + 'static>(l: &mut Linker<T>) -> wasmtime::Result<()> {
    use wasmtime_wasi::p2::bindings::sockets as s;
    s::tcp::add_to_linker::<T, WasiSockets>(l, T::sockets)?;
    s::udp::add_to_linker::<T, WasiSockets>(l, T::sockets)?;
    s::udp_create_socket::add_to_linker::<T, WasiSockets>(l, T::sockets)?;
    s::tcp_create_socket::add_to_linker::<T, WasiSockets>(l, T::sockets)?;
    s::instance_network::add_to_linker::<T, WasiSockets>(l, T::sockets)?;
    s::network::add_to_linker::<T, WasiSockets>(l, &Default::default(), T::sockets)?;
    s::ip_name_lookup::add_to_linker::<T, sockets::Lookup>(l, |s| {
        let policy = s.egress().policy.clone();
        sockets::LookupView {
            sockets: s.sockets(),
            policy,
        }
    })?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(l)
}
