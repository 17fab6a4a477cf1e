//! `wasi:sockets`: TCP connections and name lookups ask the same [`Policy`]
//! as HTTP. UDP, listening and explicit binds are never granted. The plugin
//! sees `access-denied`; the host logs which address and why.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use wasmtime::component::{HasData, Resource};
use wasmtime_wasi::p2::bindings::sockets::ip_name_lookup::{self, ResolveAddressStream};
use wasmtime_wasi::p2::bindings::sockets::network::{self, ErrorCode, IpAddress, Network};
use wasmtime_wasi::p2::{DynPollable, SocketError};
use wasmtime_wasi::sockets::{SocketAddrUse, WasiSocketsCtxView};

use super::policy::{Denied, Policy};

/// The check wasmtime-wasi runs before every socket operation.
pub async fn check_address(policy: Arc<Policy>, addr: SocketAddr, used: SocketAddrUse) -> bool {
    let verdict = match used {
        SocketAddrUse::TcpConnect => policy.check_tcp(addr).await,
        // `connect` binds the socket to the wildcard address first.
        SocketAddrUse::TcpBind if addr.ip().is_unspecified() && addr.port() == 0 => Ok(()),
        other => Err(Denied {
            target: format!("{addr}"),
            reason: format!("{} is never granted to a plugin", use_name(other)),
        }),
    };
    match verdict {
        Ok(()) => true,
        Err(denied) => {
            tracing::warn!(plugin = %policy.plugin, "{denied}");
            false
        }
    }
}

fn use_name(used: SocketAddrUse) -> &'static str {
    match used {
        SocketAddrUse::TcpBind => "binding a TCP socket to a chosen address",
        SocketAddrUse::TcpListen | SocketAddrUse::TcpAccept => "listening on TCP",
        SocketAddrUse::TcpConnect => "TCP connect",
        SocketAddrUse::UdpBind | SocketAddrUse::UdpSend | SocketAddrUse::UdpReceive => "UDP",
    }
}

/// `wasi:sockets/ip-name-lookup` limited to the names `tcp` rules give.
pub struct Lookup;

impl HasData for Lookup {
    type Data<'a> = LookupView<'a>;
}

pub struct LookupView<'a> {
    pub sockets: WasiSocketsCtxView<'a>,
    pub policy: Arc<Policy>,
}

// The lookup interface reports its errors through `network`'s: delegated.
impl network::Host for LookupView<'_> {
    fn convert_error_code(&mut self, error: SocketError) -> wasmtime::Result<ErrorCode> {
        network::Host::convert_error_code(&mut self.sockets, error)
    }

    fn network_error_code(&mut self, err: Resource<network::Error>) -> wasmtime::Result<Option<ErrorCode>> {
        network::Host::network_error_code(&mut self.sockets, err)
    }
}

impl network::HostNetwork for LookupView<'_> {
    fn drop(&mut self, this: Resource<Network>) -> wasmtime::Result<()> {
        network::HostNetwork::drop(&mut self.sockets, this)
    }
}

impl ip_name_lookup::Host for LookupView<'_> {
    fn resolve_addresses(
        &mut self,
        network: Resource<Network>,
        name: String,
    ) -> Result<Resource<ResolveAddressStream>, SocketError> {
        // An address written out is answered without a DNS query (wasi-libc's
        // getaddrinfo asks for "127.0.0.1" too): nothing is revealed, and the
        // connection to it is checked like any other.
        let literal = name.parse::<IpAddr>().is_ok();
        if !literal {
            if let Err(denied) = self.policy.check_lookup(&name) {
                tracing::warn!(plugin = %self.policy.plugin, "{denied}");
                return Err(ErrorCode::AccessDenied.into());
            }
        }
        // wasmtime-wasi's own lookup: the stream it returns is an entry of
        // this instance's table, and a name that does not resolve comes back
        // as an error code (name-unresolvable), never as a trap.
        ip_name_lookup::Host::resolve_addresses(&mut self.sockets, network, name)
    }
}

impl ip_name_lookup::HostResolveAddressStream for LookupView<'_> {
    fn resolve_next_address(
        &mut self,
        stream: Resource<ResolveAddressStream>,
    ) -> Result<Option<IpAddress>, SocketError> {
        ip_name_lookup::HostResolveAddressStream::resolve_next_address(&mut self.sockets, stream)
    }

    fn subscribe(&mut self, stream: Resource<ResolveAddressStream>) -> wasmtime::Result<Resource<DynPollable>> {
        ip_name_lookup::HostResolveAddressStream::subscribe(&mut self.sockets, stream)
    }

    fn drop(&mut self, stream: Resource<ResolveAddressStream>) -> wasmtime::Result<()> {
        ip_name_lookup::HostResolveAddressStream::drop(&mut self.sockets, stream)
    }
}
