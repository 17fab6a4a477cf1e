//! What the host decides for a tenant's run, as the [`pipeline::Environment`]
//! that `pipeline::assemble` (the one place that builds a run, for `run` and
//! `serve` alike) builds it under: the tenant's memory budget, instance
//! limit, CPU share and plugin size, the server's compile cache, and names
//! in messages that never say where the host keeps a file; for a native
//! destination, what confines it to the tenant (its egress through a
//! gateway, its secrets, its files directory, its CPU and memory shares).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

use super::super::error::ApiError;
use super::super::runtime;
use super::super::tenants::Tenant;
use super::policy::Prepared;
use crate::config::secret::Secrets;
use crate::destination::confined::Confined;
use crate::destination::{self, DestinationError, SharedDestination};
use crate::pipeline::{self, Assembled, Environment};
use crate::plugin::egress::gateway::Gateway;
use crate::plugin::HostPolicy;

/// The tenant's environment for pipeline `name`'s run, given the secrets
/// it names (opened by the supervisor).
pub fn environment(
    cache_dir: &Path,
    tenant: &Tenant,
    name: &str,
    prepared: &Prepared,
    secrets: Secrets,
) -> Environment {
    let base = HostPolicy {
        cache_dir: Some(cache_dir.to_path_buf()),
        budget: tenant.budget.clone(),
        cpu: Some(tenant.cpu.clone()),
        secrets: secrets.clone(),
        ..HostPolicy::for_run()
    };
    let owner = format!("tenant `{}`", tenant.name);
    let destination = prepared.pipeline.destination.name();
    let gateway = Gateway::new(
        &format!("{owner} pipeline `{name}` ({destination})"),
        tenant.limits.egress.clone(),
        Some(tenant.cpu.clone()),
    );
    Environment {
        destination: destination::Host {
            plugins: HostPolicy {
                max_component_mb: tenant.limits.plugin_mb,
                label: prepared
                    .plugin
                    .as_ref()
                    .map(|(name, version)| format!("{name}@{version}")),
                ..base.clone()
            },
            confined: Some(Confined {
                owner,
                egress: Arc::new(gateway),
                files: tenant.files.clone(),
                disk_mb: tenant.limits.disk_mb,
                secrets,
                cpu: tenant.cpu.clone(),
                memory: tenant.budget.clone(),
                // As long as a plugin call may wait for an instance's room.
                memory_wait: Duration::from_millis(tenant.limits.call_timeout_ms),
            }),
        },
        transforms: HostPolicy {
            // Named for the tenant, not by where the host keeps it.
            label: Some("python-transform".into()),
            ..base
        },
        // More workers than the cores its share buys would only take turns.
        transform_workers: (tenant.limits.cpu_cores.ceil() as usize)
            .clamp(1, crate::transform::stage::default_workers()),
    }
}

/// Pipeline `name`'s run, built on the pipelines' runtime (which runs the
/// transforms' calls); what is built inside the plugins logs in `span`.
pub async fn assemble(
    cache_dir: &Path,
    tenant: &Tenant,
    name: &str,
    prepared: &Prepared,
    secrets: Secrets,
    span: &tracing::Span,
) -> Result<Assembled, ApiError> {
    let env = environment(cache_dir, tenant, name, prepared, secrets);
    let pipeline = prepared.pipeline.clone();
    let build = async move { pipeline::assemble(&pipeline, &env).await };
    runtime::pipelines()
        .spawn(build.instrument(span.clone()))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::invalid(format!("pipeline `{name}`: {e}")))
}

/// The pipeline's destination alone, under the tenant's environment: what
/// an upgrade swaps in.
pub async fn build_destination(
    cache_dir: &Path,
    tenant: &Tenant,
    name: &str,
    prepared: &Prepared,
    secrets: Secrets,
) -> Result<SharedDestination, DestinationError> {
    let env = environment(cache_dir, tenant, name, prepared, secrets);
    destination::build(&prepared.pipeline.destination, &env.destination).await
}
