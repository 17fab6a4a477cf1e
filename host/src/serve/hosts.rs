//! Several `serve` hosts over one shared registry (PostgreSQL). Any host
//! answers any API call; what runs where follows the registry:
//!
//! - every `reconcile_interval_ms`, each host brings what it runs in line
//!   with it: pipelines marked running that it does not run are started
//!   (the usual checks and backoff apply), those stopped, deleted, or whose
//!   tenant was deleted elsewhere are stopped here, a changed plugin pin is
//!   swapped in, changed tenant limits reloaded;
//! - a Kafka pipeline runs on every host: its consumer group (one per
//!   tenant and `group_id`) shares the partitions among them. A run that
//!   fails on one host leaves the pipeline running on the others (the
//!   group gives them its partitions) and starts again here after its
//!   backoff, at a reconcile;
//! - any other source runs on one host at a time, the holder of the
//!   pipeline's lease, renewed every interval by the run and taken over by
//!   another host once it has expired (three intervals), so that a source
//!   without offsets is never read twice at once;
//! - each host writes what it runs, with its counters, at each reconcile;
//!   `GET /v1/pipelines/{name}` on any host lists the hosts and sums them.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::error::ApiError;
use super::pipelines::{Status, Supervisor};
use super::registry::{Cluster, HostStatus};
use super::{logs, metrics, retention, State};
#[cfg(feature = "kafka")]
use crate::source::SourceConfig;

pub struct Hosts {
    /// This host's name in leases and statuses.
    pub id: String,
    interval: Duration,
}

impl Hosts {
    pub fn new(id: Option<String>, listen: SocketAddr, interval_ms: u64) -> Self {
        let id = id.unwrap_or_else(|| {
            let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            format!("{}/{listen}", name.trim())
        });
        Self {
            id,
            interval: Duration::from_millis(interval_ms),
        }
    }

    /// How long a lease lasts unless renewed, and a host's status counts as
    /// current: three reconciles, so one slow turn does not move a pipeline.
    pub fn lease_ttl(&self) -> Duration {
        self.interval * 3
    }

    fn cluster<'a>(&self, state: &'a State) -> &'a dyn Cluster {
        state
            .registry
            .cluster()
            .expect("hosts are set only over a shared registry")
    }

    /// Before a start here: takes the pipeline's lease when its source is
    /// read by one host at a time. Ok(true) when taken, Ok(false) when it
    /// needs none, a conflict naming the holder when another host runs it.
    pub fn claim(&self, state: &State, tenant: &str, name: &str, yaml: &str) -> Result<bool, ApiError> {
        if !needs_lease(yaml) {
            return Ok(false);
        }
        let ttl = self.lease_ttl().as_millis() as u64;
        match self.cluster(state).take_lease(tenant, name, &self.id, ttl)? {
            None => Ok(true),
            Some(holder) => Err(ApiError::conflict(format!(
                "pipeline `{name}` runs on host `{holder}`: its source is read by one host at a time (it moves \
                 to another host when that one stops or has not renewed its lease for {} s)",
                self.lease_ttl().as_secs()
            ))),
        }
    }

    /// Renews the lease taken for a start every interval while the pipeline
    /// is starting or running here; when it cannot (taken over, or the
    /// registry unreachable, so another host may take it), stops the run.
    pub fn keep_lease(state: Arc<State>, tenant: &str, name: &str) {
        let (tenant, name) = (tenant.to_string(), name.to_string());
        tokio::spawn(async move {
            let Some(hosts) = &state.hosts else { return };
            let ttl = hosts.lease_ttl().as_millis() as u64;
            loop {
                tokio::time::sleep(hosts.interval).await;
                if !state.supervisor.is_active(&tenant, &name) {
                    return;
                }
                let kept = hosts.cluster(&state).take_lease(&tenant, &name, &hosts.id, ttl);
                if !matches!(kept, Ok(None)) {
                    tracing::warn!(tenant = %tenant, pipeline = %name, "lease not renewed ({kept:?}): stopping here");
                    // Still being started: stopped at the next turn, once it runs.
                    if state.supervisor.stop(&tenant, &name).await {
                        return;
                    }
                }
            }
        });
    }

    /// After a run here ended: another host may take the pipeline at once.
    pub fn release(&self, state: &State, tenant: &str, name: &str) {
        if let Err(e) = self.cluster(state).release_lease(tenant, name, &self.id) {
            tracing::warn!(tenant, pipeline = name, "cannot release the lease: {e}");
        }
    }

    /// Reconciles now and then every interval, until the process ends.
    pub fn spawn(state: Arc<State>) {
        tokio::spawn(async move {
            let Some(hosts) = &state.hosts else { return };
            let mut ticks = tokio::time::interval(hosts.interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if let Err(e) = reconcile(&state, hosts).await {
                    tracing::warn!(host = %hosts.id, "reconcile: {}", e.message);
                }
            }
        });
    }

    /// `status` (this host's) with what every host running the pipeline
    /// reported: `hosts`, counters summed, `running` if any host runs it.
    pub fn merge(&self, state: &State, tenant: &str, status: &Status) -> Result<Value, ApiError> {
        let reported = self
            .cluster(state)
            .statuses(tenant, Some(&status.name), self.lease_ttl().as_millis() as u64)?;
        Ok(merged(&self.id, status, reported.into_iter().map(|(_, s)| s).collect()))
    }

    /// [`Self::merge`] for a list of a tenant's statuses, with one query.
    pub fn merge_all(&self, state: &State, tenant: &str, statuses: &[Status]) -> Result<Vec<Value>, ApiError> {
        let mut by_name: HashMap<String, Vec<HostStatus>> = HashMap::new();
        for (name, s) in self
            .cluster(state)
            .statuses(tenant, None, self.lease_ttl().as_millis() as u64)?
        {
            by_name.entry(name).or_default().push(s);
        }
        Ok(statuses
            .iter()
            .map(|s| merged(&self.id, s, by_name.remove(&s.name).unwrap_or_default()))
            .collect())
    }
}

fn merged(me: &str, local: &Status, reported: Vec<HostStatus>) -> Value {
    let mut hosts: Vec<HostStatus> = reported.into_iter().filter(|s| s.host != me).collect();
    if matches!(local.state, "running" | "stopping") {
        hosts.push(HostStatus {
            host: me.to_string(),
            state: local.state.to_string(),
            records_read: local.records_read,
            records_written: local.records_written,
            plugin: local.plugin.clone(),
            plugin_version: local.plugin_version,
            age_ms: 0,
        });
    }
    hosts.sort_by(|a, b| a.host.cmp(&b.host));
    let mut out = json!(local);
    if !hosts.is_empty() {
        out["records_read"] = json!(hosts.iter().map(|h| h.records_read).sum::<u64>());
        out["records_written"] = json!(hosts.iter().map(|h| h.records_written).sum::<u64>());
        if !matches!(local.state, "running" | "stopping") {
            out["state"] = json!("running");
        }
    }
    out["hosts"] = json!(hosts);
    out
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

async fn reconcile(state: &Arc<State>, hosts: &Hosts) -> Result<(), ApiError> {
    let registry = &state.registry;
    let tenants: HashMap<String, _> = registry.tenants()?.into_iter().map(|t| (t.name.clone(), t)).collect();
    let rows = registry.pipelines(None)?;
    let stored: HashSet<(String, String)> = rows.iter().map(|r| (r.tenant.clone(), r.name.clone())).collect();
    let wanted: Vec<_> = rows.into_iter().filter(|r| r.running).collect();
    let wanted_keys: HashSet<(String, String)> = wanted.iter().map(|r| (r.tenant.clone(), r.name.clone())).collect();

    // Deleted or stopped elsewhere.
    let mut gone_tenants = HashSet::new();
    for (tenant, name) in state.supervisor.running_keys() {
        if wanted_keys.contains(&(tenant.clone(), name.clone())) {
            continue;
        }
        tracing::info!(tenant = %tenant, pipeline = %name, "stopped: the registry says it does not run");
        state.supervisor.stop(&tenant, &name).await;
        if !tenants.contains_key(&tenant) {
            gone_tenants.insert(tenant);
        } else if !stored.contains(&(tenant.clone(), name.clone())) {
            state.supervisor.forget(&tenant, Some(&name));
            logs::forget(&tenant, Some(&name));
            metrics::forget_pipeline(&tenant, &name);
        }
    }
    gone_tenants.extend(state.tenants.loaded().into_iter().filter(|t| !tenants.contains_key(t)));
    for tenant in gone_tenants {
        forget_tenant(state, &tenant).await;
    }

    // Limits changed elsewhere.
    for row in tenants.values() {
        if let Some(loaded) = state.tenants.loaded_tenant(&row.name) {
            if loaded.limits != row.limits.over(state.tenants.defaults()) {
                state.tenants.reload(registry, &row.name)?;
                tracing::info!(tenant = %row.name, "tenant limits reloaded");
            }
        }
    }

    // Marked running: run here (a lease permitting), apply changes.
    for row in wanted {
        let tenant = match state.tenant(&row.tenant) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(tenant = %row.tenant, pipeline = %row.name, "{}", e.message);
                continue;
            }
        };
        if state.supervisor.is_running(&row.tenant, &row.name) {
            if state.supervisor.applied_yaml(&row.tenant, &row.name).as_deref() != Some(row.yaml.as_str()) {
                let _turn = retention::lock(state, &row.tenant).await;
                let swapped = match state.prepare(&tenant, &row.name, &row.yaml) {
                    Ok(prepared) => Supervisor::swap(state, &tenant, &row.name, &prepared).await,
                    Err(e) => Err(e),
                };
                match swapped {
                    Ok(swapped) => {
                        tracing::info!(tenant = %row.tenant, pipeline = %row.name, swapped, "changed pipeline taken in")
                    }
                    Err(e) => {
                        tracing::warn!(tenant = %row.tenant, pipeline = %row.name, "changed pipeline: {}", e.message)
                    }
                }
                // Tried once: a failed swap is in the logs, not retried each turn.
                state.supervisor.set_applied_yaml(&row.tenant, &row.name, &row.yaml);
            }
            continue;
        }
        let _turn = retention::lock(state, &row.tenant).await;
        match Supervisor::start(state, &tenant, &row.name, &row.yaml).await {
            Ok(()) => tracing::info!(tenant = %row.tenant, pipeline = %row.name, host = %hosts.id, "started here"),
            // Held by another host, or waiting out a backoff: not news every turn.
            Err(e) if matches!(e.code, "conflict" | "backing_off") => {
                tracing::debug!(tenant = %row.tenant, pipeline = %row.name, "{}", e.message)
            }
            Err(e) => tracing::warn!(tenant = %row.tenant, pipeline = %row.name, "cannot start here: {}", e.message),
        }
    }

    let mut report = Vec::new();
    for (tenant, name) in state.supervisor.running_keys() {
        let s = state.supervisor.status(&tenant, &name);
        let status = HostStatus {
            host: hosts.id.clone(),
            state: s.state.to_string(),
            records_read: s.records_read,
            records_written: s.records_written,
            plugin: s.plugin,
            plugin_version: s.plugin_version,
            age_ms: 0,
        };
        report.push((tenant, name, status));
    }
    hosts.cluster(state).report(&hosts.id, &report)?;
    Ok(())
}

/// A tenant deleted through another host: its runs, state and files here go.
async fn forget_tenant(state: &State, name: &str) {
    for (tenant, pipeline) in state.supervisor.running_keys() {
        if tenant == name {
            state.supervisor.stop(&tenant, &pipeline).await;
        }
    }
    state.tenants.forget(name);
    state.supervisor.forget(name, None);
    logs::forget(name, None);
    metrics::forget_tenant(name);
    let dir = state.tenants.dir(name);
    if let Err(e) = tokio::fs::remove_dir_all(&dir).await {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!("cannot remove {}: {e}", dir.display());
        }
    }
    tracing::info!(tenant = %name, "tenant deleted elsewhere: forgotten here");
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
