//! A plugin that tries to reach what it is given in `plugin_config.probes`,
//! each by HTTP (`get`, `follow` a redirect itself, `proxy` through the
//! `http_proxy` variable) or raw TCP (`tcp`, `udp`), and logs one line per
//! probe: `probe NAME: ok ...` or `probe NAME: failed ...`. The egress test
//! reads those lines and the host's own log of what it refused.

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};

use bizon_sdk::http::{HttpError, Request};
use bizon_sdk::{export_destination, log, BatchInfo, Config, Destination, Error, RecordBatch, WriteError};
use serde::Deserialize;

#[derive(Deserialize)]
struct Probe {
    name: String,
    kind: String,
    target: String,
}

#[derive(Deserialize)]
struct Settings {
    probes: Vec<Probe>,
}

struct Egress {
    probes: Vec<Probe>,
}

impl Destination for Egress {
    const NAME: &'static str = "hostile-egress";

    fn open(config: Config) -> Result<Self, Error> {
        let settings: Settings = config.parse()?;
        Ok(Egress {
            probes: settings.probes,
        })
    }

    fn write(&mut self, _batch: &RecordBatch, info: &BatchInfo) -> Result<u64, WriteError> {
        for probe in &self.probes {
            let outcome = match probe.kind.as_str() {
                "get" => get(&probe.target),
                "follow" => follow(&probe.target),
                "proxy" => through_proxy(&probe.target),
                "tcp" => tcp(&probe.target),
                "udp" => udp(&probe.target),
                other => Err(format!("unknown probe kind {other}")),
            };
            match outcome {
                Ok(text) => log::info!("probe {}: ok {}", probe.name, text.trim()),
                Err(text) => log::info!("probe {}: failed {}", probe.name, text.trim()),
            }
        }
        Ok(info.num_rows)
    }
}

fn get(url: &str) -> Result<String, String> {
    let response = Request::get(url).send().map_err(describe)?;
    Ok(format!("{} {}", response.status, response.text()))
}

/// What a careless client does: follows a redirect wherever it points.
fn follow(url: &str) -> Result<String, String> {
    let response = Request::get(url).send().map_err(describe)?;
    match (response.status, response.header("location")) {
        (300..=399, Some(location)) => {
            let location = location.to_string();
            get(&location).map(|text| format!("{} then {location}: {text}", response.status))
        }
        (status, _) => Err(format!("no redirect: {status}")),
    }
}

/// What a client that honours `http_proxy` does: sends the request to the
/// proxy with the full URL as the target.
fn through_proxy(url: &str) -> Result<String, String> {
    let proxy = std::env::var("http_proxy").map_err(|_| "http_proxy is not set".to_string())?;
    let proxy = proxy.trim_end_matches('/');
    let response = Request::get(&format!("{proxy}/{url}")).send().map_err(describe)?;
    Ok(format!("{} {}", response.status, response.text()))
}

fn tcp(target: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect(target).map_err(|e| format!("connect: {e}"))?;
    stream.write_all(b"hi\n").map_err(|e| format!("write: {e}"))?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).map_err(|e| format!("read: {e}"))?;
    Ok(answer)
}

fn udp(target: &str) -> Result<String, String> {
    let socket = UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("bind: {e}"))?;
    socket.send_to(b"hi", target).map_err(|e| format!("send: {e}"))?;
    Ok("sent".into())
}

fn describe(error: HttpError) -> String {
    let kind = match &error {
        HttpError::Denied(_) => "denied",
        _ if error.is_retryable() => "retryable",
        _ => "fatal",
    };
    format!("{kind}: {error}")
}

export_destination!(Egress);
