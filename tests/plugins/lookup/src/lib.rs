//! A plugin that looks up each name of `plugin_config.names` twice: through
//! `wasi:sockets/ip-name-lookup` itself (resolve-addresses, then the stream
//! it returns: subscribe, block, resolve-next-address until none, drop), and
//! through wasi-libc's `getaddrinfo` (Rust's `ToSocketAddrs`), which is what
//! Python's and JavaScript's runtimes call. It logs one line per lookup,
//! `lookup NAME via wasi: ok [addresses]` or `... failed ERROR`: a refused
//! lookup must come back as an error code, never as a trap, and a granted
//! one as a stream the plugin can use.

use std::net::ToSocketAddrs;

use bizon_sdk::{export_destination, log, BatchInfo, Config, Destination, Error, RecordBatch, WriteError};
use serde::Deserialize;
use wasip2::sockets::instance_network::instance_network;
use wasip2::sockets::ip_name_lookup::resolve_addresses;
use wasip2::sockets::network::{ErrorCode, IpAddress};

#[derive(Deserialize)]
struct Settings {
    names: Vec<String>,
}

struct Lookup {
    names: Vec<String>,
}

impl Destination for Lookup {
    const NAME: &'static str = "hostile-lookup";

    fn open(config: Config) -> Result<Self, Error> {
        let settings: Settings = config.parse()?;
        Ok(Lookup { names: settings.names })
    }

    fn write(&mut self, _batch: &RecordBatch, info: &BatchInfo) -> Result<u64, WriteError> {
        for name in &self.names {
            match via_wasi(name) {
                Ok(found) => log::info!("lookup {name} via wasi: ok {found:?}"),
                Err(code) => log::info!("lookup {name} via wasi: failed {code:?}"),
            }
            match (name.as_str(), 80).to_socket_addrs() {
                Ok(found) => {
                    let ips: Vec<String> = found.map(|a| a.ip().to_string()).collect();
                    log::info!("lookup {name} via libc: ok {ips:?}");
                }
                Err(e) => log::info!("lookup {name} via libc: failed {e}"),
            }
        }
        Ok(info.num_rows)
    }
}

/// Every address of `name`, waiting on the stream's pollable when the host
/// has none yet.
fn via_wasi(name: &str) -> Result<Vec<String>, ErrorCode> {
    let network = instance_network();
    let stream = resolve_addresses(&network, name)?;
    let mut found = Vec::new();
    loop {
        match stream.resolve_next_address() {
            Ok(Some(IpAddress::Ipv4((a, b, c, d)))) => found.push(format!("{a}.{b}.{c}.{d}")),
            Ok(Some(IpAddress::Ipv6(parts))) => found.push(format!("{parts:x?}")),
            Ok(None) => return Ok(found),
            Err(ErrorCode::WouldBlock) => stream.subscribe().block(),
            Err(code) => return Err(code),
        }
    }
}

export_destination!(Lookup);
