//! Leases over a shared registry: a pipeline whose source has no offsets
//! to share (anything but Kafka) runs on one host at a time, the holder of
//! its lease. The supervisor takes the lease before a start, renews it
//! every interval while the run lives and gives it up when the run ends; a
//! lease not renewed for three intervals may be taken by another host.
//! [`Leases`] is also this host's name among the others and the pace of
//! their reconciles (`super::cluster`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::error::ApiError;
use super::registry::{Cluster, Registry, RegistryError};
#[cfg(feature = "kafka")]
use crate::source::SourceConfig;

pub struct Leases {
    /// This host's name in leases and statuses.
    pub host: String,
    /// How often a host brings what it runs in line with the registry, and
    /// renews its leases.
    pub interval: Duration,
    registry: Arc<Registry>,
}

impl Leases {
    /// `host` defaults to the machine's hostname and the listen address.
    pub fn new(host: Option<String>, listen: SocketAddr, interval_ms: u64, registry: Arc<Registry>) -> Self {
        let host = host.unwrap_or_else(|| {
            let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            format!("{}/{listen}", name.trim())
        });
        Self {
            host,
            interval: Duration::from_millis(interval_ms),
            registry,
        }
    }

    /// How long a lease lasts unless renewed, and a host's status counts as
    /// current: three reconciles, so one slow turn does not move a pipeline.
    pub fn ttl(&self) -> Duration {
        self.interval * 3
    }

    /// What hosts sharing the registry tell each other.
    pub fn cluster(&self) -> &dyn Cluster {
        self.registry
            .cluster()
            .expect("leases are made only over a shared registry")
    }

    /// Before a start here: takes the pipeline's lease when its source is
    /// read by one host at a time. Ok(true) when taken, Ok(false) when it
    /// needs none, a conflict naming the holder when another host runs it.
    pub fn claim(&self, tenant: &str, name: &str, yaml: &str) -> Result<bool, ApiError> {
        if !needs_lease(yaml) {
            return Ok(false);
        }
        match self.renew(tenant, name)? {
            None => Ok(true),
            Some(holder) => Err(ApiError::conflict(format!(
                "pipeline `{name}` runs on host `{holder}`: its source is read by one host at a time (it moves \
                 to another host when that one stops or has not renewed its lease for {} s)",
                self.ttl().as_secs()
            ))),
        }
    }

    /// Takes or renews the lease for another [`Self::ttl`]: None when this
    /// host holds it now, else the host that does.
    pub fn renew(&self, tenant: &str, name: &str) -> Result<Option<String>, RegistryError> {
        let ttl = self.ttl().as_millis() as u64;
        self.cluster().take_lease(tenant, name, &self.host, ttl)
    }

    /// After a run here ended: another host may take the pipeline at once.
    pub fn release(&self, tenant: &str, name: &str) {
        if let Err(e) = self.cluster().release_lease(tenant, name, &self.host) {
            tracing::warn!(tenant, pipeline = name, "cannot release the lease: {e}");
        }
    }
}

/// Whether the pipeline's source must be read by one host at a time: all
/// but Kafka, whose group shares the partitions. A file that does not parse
/// is held to the stricter rule (it will not start anyway).
pub fn needs_lease(yaml: &str) -> bool {
    match crate::pipeline::parse(yaml, "pipeline", |_| None) {
        #[cfg(feature = "kafka")]
        Ok(p) if matches!(p.source, SourceConfig::Kafka(_)) => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_kafka_pipelines_run_on_every_host() {
        let dummy = "name: d\nsource:\n  name: dummy\n  stream: s\ndestination:\n  name: logger\n";
        assert!(needs_lease(dummy));
        assert!(needs_lease("not: [a pipeline"));
        #[cfg(feature = "kafka")]
        {
            let kafka = "name: k\nsource:\n  name: kafka\n  bootstrap_servers: b:9092\n  topic: t\ndestination:\n  name: logger\n";
            assert!(!needs_lease(kafka));
        }
    }
}
