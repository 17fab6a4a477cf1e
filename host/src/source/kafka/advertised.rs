//! Keeping a Kafka client to the brokers a [`BrokerGate`] allows.
//!
//! A client connects to the addresses the brokers advertise, not only to
//! its bootstrap servers, so a broker a tenant controls could point the host
//! anywhere. Before a client that would connect to advertised addresses is
//! made, the brokers are asked for them (see [`check_before_connecting`]):
//! one outside the gate fails the run before anything connects there. The
//! client made next asks again, and is checked again, but it may already
//! have connected to what that second answer says: a broker that answers
//! the two differently is caught as one that changes mid-run. A broker may
//! advertise a new address later (librdkafka
//! reads metadata again every few minutes and after errors); librdkafka
//! offers no hook that rust-rdkafka exposes to refuse a connection, so the
//! brokers a client learned are read from its statistics every 5 s and one
//! outside the gate ends the run. That bounds, not prevents, what such a
//! broker gets: librdkafka may have connected to it within those seconds.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::metadata::Metadata;
use rdkafka::statistics::Statistics;

use super::config::BrokerGate;
use super::metadata_request;

/// How often a gated client's statistics (and so the brokers it knows) are
/// read, whatever its settings say; a client without a gate keeps the
/// user's. Every second tripled the load average of 1,000 idle tenants'
/// consumers (`cargo bench --bench serve -- density`: 6.9 -> 18.3).
pub const STATISTICS_EVERY_MS: &str = "5000";

/// Asks the bootstrap servers in `settings` for the brokers, and refuses
/// any that advertises an address outside `gate`.
///
/// On a plaintext connection the host asks itself: a Kafka Metadata request
/// on one TCP connection to a bootstrap server. librdkafka, even without a
/// group, drops its bootstrap connections once it learned the brokers (2.10
/// and later), so the answer to its own metadata request at start could
/// send the request made here to an advertised address. Against a broker
/// advertising a listener that never answers, librdkafka's request failed
/// with a transport error in three runs of six, as a request sent there
/// would. Behind TLS or SASL librdkafka asks (that race stays;
/// docs/serve.md says so).
pub fn check_before_connecting(
    settings: impl IntoIterator<Item = (impl AsRef<str>, impl AsRef<str>)>,
    gate: &BrokerGate,
    timeout: Duration,
) -> Result<(), String> {
    let mut client = ClientConfig::new();
    for (k, v) in settings {
        if k.as_ref() != "group.id" {
            client.set(k.as_ref(), v.as_ref());
        }
    }
    let servers = client.get("bootstrap.servers").unwrap_or_default().to_string();
    let plaintext = client
        .get("security.protocol")
        .is_none_or(|p| p.eq_ignore_ascii_case("plaintext"));
    let brokers = match plaintext {
        true => metadata_request::brokers(&servers, timeout),
        false => {
            let probe: BaseConsumer = client
                .create()
                .map_err(|e| format!("cannot create a client to ask for the brokers: {e}"))?;
            probe
                .fetch_metadata(None, timeout)
                .map(|m| {
                    m.brokers()
                        .iter()
                        .map(|b| (b.id(), b.host().to_string(), b.port()))
                        .collect()
                })
                .map_err(|e| e.to_string())
        }
    };
    let brokers = brokers.map_err(|e| format!("cannot reach the brokers {servers}: {e}"))?;
    refuse_outside(gate, brokers.iter().map(|(id, host, port)| (*id, host.as_str(), *port)))
}

/// Refuses brokers in `metadata` that advertise an address outside `gate`.
pub fn within(gate: &BrokerGate, metadata: &Metadata) -> Result<(), String> {
    refuse_outside(gate, metadata.brokers().iter().map(|b| (b.id(), b.host(), b.port())))
}

fn refuse_outside<'a>(gate: &BrokerGate, brokers: impl Iterator<Item = (i32, &'a str, i32)>) -> Result<(), String> {
    for (id, host, port) in brokers {
        if !gate.allows(host, u16::try_from(port).unwrap_or(0)) {
            return Err(format!(
                "broker {id} advertises {host}:{port}, outside the egress ceiling ({}); nothing was read",
                gate.ceiling()
            ));
        }
    }
    Ok(())
}

/// The first broker a client learned (in its `statistics`) whose address is
/// outside `gate`, as the error that ends the run says it.
pub fn learned_outside(gate: &BrokerGate, statistics: &Statistics) -> Option<String> {
    statistics.brokers.values().find_map(|broker| {
        let (host, port) = broker.nodename.rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = port.parse().unwrap_or(0);
        (!gate.allows(host, port)).then(|| {
            format!(
                "broker {} advertised {host}:{port} mid-run, outside the egress ceiling ({}); the run was stopped",
                broker.nodeid,
                gate.ceiling()
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_learned_broker_outside_the_gate_is_named() {
        let gate = BrokerGate::new("tcp://10.0.0.5:9092".into(), |host, port| {
            host == "10.0.0.5" && port == 9092
        });
        let stats = |nodename: &str| Statistics {
            brokers: [(
                "b".to_string(),
                rdkafka::statistics::Broker {
                    nodeid: 2,
                    nodename: nodename.into(),
                    ..Default::default()
                },
            )]
            .into(),
            ..Default::default()
        };
        assert_eq!(learned_outside(&gate, &stats("10.0.0.5:9092")), None);
        let error = learned_outside(&gate, &stats("169.254.169.254:80")).unwrap();
        assert!(
            error.contains("broker 2 advertised 169.254.169.254:80 mid-run"),
            "{error}"
        );
    }
}
