//! Several `serve` hosts over one shared registry (PostgreSQL): the
//! reconcile loop and the statuses merged across hosts. Any host
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
//!   pipeline's lease ([`super::lease`]), renewed every interval by the run
//!   and taken over by another host once it has expired (three intervals),
//!   so that a source without offsets is never read twice at once;
//! - each host writes what it runs, with its counters, at each reconcile;
//!   `GET /v1/pipelines/{name}` on any host lists the hosts and sums them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::{json, Value};

use super::error::ApiError;
use super::lease::Leases;
use super::logs;
use super::pipelines::Status;
use super::registry::HostStatus;
use super::state::State;
use crate::metrics::serve as metrics;

/// Reconciles now and then every interval, until the process ends.
pub fn spawn(state: Arc<State>) {
    tokio::spawn(async move {
        let Some(leases) = state.supervisor.leases() else {
            return;
        };
        let mut ticks = tokio::time::interval(leases.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if let Err(e) = reconcile(&state, leases).await {
                tracing::warn!(host = %leases.host, "reconcile: {}", e.message);
            }
        }
    });
}

/// `status` (this host's) with what every host running the pipeline
/// reported: `hosts`, counters summed, `running` if any host runs it.
pub fn merge(leases: &Leases, tenant: &str, status: &Status) -> Result<Value, ApiError> {
    let reported = leases
        .cluster()
        .statuses(tenant, Some(&status.name), leases.ttl().as_millis() as u64)?;
    Ok(merged(
        &leases.host,
        status,
        reported.into_iter().map(|(_, s)| s).collect(),
    ))
}

/// [`merge`] for a list of a tenant's statuses, with one query.
pub fn merge_all(leases: &Leases, tenant: &str, statuses: &[Status]) -> Result<Vec<Value>, ApiError> {
    let mut by_name: HashMap<String, Vec<HostStatus>> = HashMap::new();
    for (name, s) in leases
        .cluster()
        .statuses(tenant, None, leases.ttl().as_millis() as u64)?
    {
        by_name.entry(name).or_default().push(s);
    }
    Ok(statuses
        .iter()
        .map(|s| merged(&leases.host, s, by_name.remove(&s.name).unwrap_or_default()))
        .collect())
}

fn merged(me: &str, local: &Status, reported: Vec<HostStatus>) -> Value {
    let mut hosts: Vec<HostStatus> = reported.into_iter().filter(|s| s.host != me).collect();
    if local.state.is_live() {
        hosts.push(HostStatus {
            host: me.to_string(),
            state: local.state.as_str().to_string(),
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
        if !local.state.is_live() {
            out["state"] = json!("running");
        }
    }
    out["hosts"] = json!(hosts);
    out
}

async fn reconcile(state: &State, leases: &Leases) -> Result<(), ApiError> {
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
                let _turn = state.tenants.turn(&row.tenant).await;
                let swapped = match state.supervisor.prepare(&tenant, &row.name, &row.yaml) {
                    Ok(prepared) => state.supervisor.swap(&tenant, &row.name, &prepared).await,
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
        let _turn = state.tenants.turn(&row.tenant).await;
        match state.supervisor.start(&tenant, &row.name, &row.yaml).await {
            Ok(()) => tracing::info!(tenant = %row.tenant, pipeline = %row.name, host = %leases.host, "started here"),
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
            host: leases.host.clone(),
            state: s.state.as_str().to_string(),
            records_read: s.records_read,
            records_written: s.records_written,
            plugin: s.plugin,
            plugin_version: s.plugin_version,
            age_ms: 0,
        };
        report.push((tenant, name, status));
    }
    leases.cluster().report(&leases.host, &report)?;
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
