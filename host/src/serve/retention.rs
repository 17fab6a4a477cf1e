//! Plugin versions a tenant no longer needs are removed. Every upload is a
//! new version; a version stays while it is its plugin's newest (what
//! `plugin: NAME` starts), a stored pipeline pins it (`plugin: NAME@N`, or
//! a transform's `wasm: NAME@N`), or a running pipeline runs it (on this
//! host, or on another one sharing the registry, as it last reported; other
//! hosts report destination plugins only). Its bytes go when no version of
//! any tenant names them.
//!
//! Collection runs after each change that can free a version: an upload, a
//! pipeline stored, stopped or deleted, and when serve starts. Those
//! changes, pipeline starts and the collection take the tenant's turn
//! ([`super::tenants::Tenants::turn`]), so a version cannot be removed
//! between a pipeline choosing it and running it.

use std::collections::{HashMap, HashSet};

use super::error::ApiError;
use super::state::State;
use super::tenants::Tenant;

/// Removes the tenant's unneeded versions; returns them as (name, version).
/// The caller holds the tenant's turn.
pub fn collect(state: &State, tenant: &Tenant) -> Result<Vec<(String, u32)>, ApiError> {
    let mut keep = HashSet::new();
    for pipeline in state.registry.pipelines(Some(&tenant.name))? {
        // A stored pipeline that no longer validates pins nothing it could run.
        if let Ok(prepared) = state.supervisor.prepare(tenant, &pipeline.name, &pipeline.yaml) {
            keep.extend(prepared.plugin);
            keep.extend(prepared.transforms);
        }
        keep.extend(state.supervisor.transforms_of(&tenant.name, &pipeline.name));
        if state.supervisor.is_running(&tenant.name, &pipeline.name) {
            let status = state.supervisor.status(&tenant.name, &pipeline.name);
            if let (Some(name), Some(version)) = (status.plugin, status.plugin_version) {
                keep.insert((name, version));
            }
        }
    }
    // What other hosts sharing the registry run (as of their last report).
    if let Some(leases) = state.supervisor.leases() {
        let fresh = leases.ttl().as_millis() as u64;
        for (_, s) in leases.cluster().statuses(&tenant.name, None, fresh)? {
            if let (Some(name), Some(version)) = (s.plugin, s.plugin_version) {
                keep.insert((name, version));
            }
        }
    }
    let versions = state.registry.plugins(&tenant.name, None)?;
    let mut newest = HashMap::new();
    for row in &versions {
        let v = newest.entry(row.name.clone()).or_insert(row.version);
        *v = (*v).max(row.version);
    }
    let mut removed = Vec::new();
    for row in versions {
        let key = (row.name, row.version);
        if newest[&key.0] != key.1 && !keep.contains(&key) {
            state.registry.remove_plugin_version(&tenant.name, &key.0, key.1)?;
            tracing::info!(tenant = %tenant.name, plugin = %key.0, version = key.1, "unused plugin version removed");
            removed.push(key);
        }
    }
    if !removed.is_empty() {
        state.store.collect(&state.registry.digests()?);
    }
    Ok(removed)
}
