//! The supervisor: what it holds (the registry, the plugin store, this
//! host's leases, its maps of runs and their backoff) and what it answers
//! about them: statuses, a pipeline checked for its tenant, a running
//! pipeline's plugin swapped. Starting a run is `start.rs`; stopping,
//! ending and forgetting one is `cleanup.rs`.

use std::sync::Arc;

use tracing::Instrument;

use super::super::error::ApiError;
use super::super::lease::Leases;
use super::super::logs;
use super::super::plugins::PluginStore;
use super::super::registry::Registry;
use super::super::secrets::{ReadError, Vault};
use super::super::tenants::Tenant;
use super::backoff::Backoff;
use super::environment::build_destination;
use super::policy::{self, Prepared};
use super::runs::{key, Key, Runs};
use super::status::{RunState, Seen, Status};
use crate::config::secret::Secrets;
use crate::metrics::serve as metrics;
use crate::pipeline::Progress;

pub struct Supervisor {
    pub(super) registry: Arc<Registry>,
    pub(super) store: Arc<PluginStore>,
    /// Native destinations the operator offers tenants.
    native_destinations: Vec<String>,
    /// With a shared registry: this host among the others.
    pub(super) leases: Option<Leases>,
    /// Opens the secrets a run names.
    pub(super) vault: Arc<Vault>,
    pub(super) runs: Runs,
    pub(super) backoff: Backoff,
}

impl Supervisor {
    pub fn new(
        registry: Arc<Registry>,
        store: Arc<PluginStore>,
        native_destinations: Vec<String>,
        leases: Option<Leases>,
        vault: Arc<Vault>,
    ) -> Self {
        Self {
            registry,
            store,
            native_destinations,
            leases,
            vault,
            runs: Runs::default(),
            backoff: Backoff::default(),
        }
    }

    /// With a shared registry: this host's name, leases and reconcile pace.
    pub fn leases(&self) -> Option<&Leases> {
        self.leases.as_ref()
    }

    /// Checks a tenant's pipeline file against what it may ask for.
    pub fn prepare(&self, tenant: &Tenant, name: &str, yaml: &str) -> Result<Prepared, ApiError> {
        let cx = policy::Context {
            tenant,
            registry: &self.registry,
            blobs: &*self.store,
            native_destinations: &self.native_destinations,
        };
        policy::prepare(&cx, name, yaml)
    }

    /// The values of the secrets `prepared` names, for its run; a secret
    /// deleted since the pipeline was stored is named.
    pub fn open_secrets(&self, tenant: &Tenant, name: &str, prepared: &Prepared) -> Result<Secrets, ApiError> {
        self.vault
            .secrets(&self.registry, &tenant.name, &prepared.secrets)
            .map_err(|e| match e {
                ReadError::Missing(secret) => ApiError::invalid(format!(
                    "pipeline `{name}`: no secret `{secret}` (store it with PUT /v1/secrets/{secret})"
                )),
                ReadError::Failed(e) => ApiError::internal(e),
            })
    }

    pub fn is_running(&self, tenant: &str, name: &str) -> bool {
        self.runs.running().contains_key(&key(tenant, name))
    }

    /// Whether the pipeline is being started or runs here.
    pub fn is_active(&self, tenant: &str, name: &str) -> bool {
        let k = key(tenant, name);
        let running = self.runs.running().contains_key(&k);
        running || self.runs.is_starting(&k)
    }

    /// (tenant, pipeline) of every pipeline running here.
    pub fn running_keys(&self) -> Vec<(String, String)> {
        self.runs.running().keys().cloned().collect()
    }

    /// The transform versions a pipeline running here uses.
    pub fn transforms_of(&self, tenant: &str, name: &str) -> Vec<(String, u32)> {
        self.runs
            .running()
            .get(&key(tenant, name))
            .map(|r| r.transforms.clone())
            .unwrap_or_default()
    }

    /// The stored YAML a running pipeline has taken in.
    pub fn applied_yaml(&self, tenant: &str, name: &str) -> Option<String> {
        self.runs.running().get(&key(tenant, name)).map(|r| r.yaml.clone())
    }

    /// Records that a running pipeline has taken `yaml` in.
    pub fn set_applied_yaml(&self, tenant: &str, name: &str, yaml: &str) {
        if let Some(run) = self.runs.running().get_mut(&key(tenant, name)) {
            run.yaml = yaml.to_string();
        }
    }

    pub fn status(&self, tenant: &str, name: &str) -> Status {
        let k = key(tenant, name);
        let standing = self.backoff.standing(&k);
        let mut status = self.progress_status(&k, name);
        status.failures_in_a_row = standing.in_a_row;
        status.start_allowed_in_ms = standing.wait.as_millis() as u64;
        status
    }

    fn progress_status(&self, k: &Key, name: &str) -> Status {
        let dropped = logs::existing(&k.0, name).map_or(0, |r| r.dropped());
        if let Some(run) = self.runs.running().get(k) {
            let progress = run.progress.borrow().clone();
            let elapsed = run.started.elapsed().as_secs_f64().max(1e-3);
            let state = match *run.stop.borrow() {
                true => RunState::Stopping,
                false => RunState::Running,
            };
            let seen = Seen {
                state,
                progress: &progress,
                rate: progress.records_written as f64 / elapsed,
                error: None,
                plugin: run.plugin.clone(),
                destination: Some(run.destination),
                write_errors: metrics::write_errors(&k.0, name, run.destination),
                dropped,
            };
            return Status::new(name, seen);
        }
        let never = Progress::default();
        let finished = self.runs.finished();
        let seen = match finished.get(k) {
            Some(f) => Seen {
                state: f.state,
                progress: &f.progress,
                rate: f.rate,
                error: f.error.clone(),
                plugin: f.plugin.clone(),
                destination: f.destination,
                write_errors: f.destination.map_or(0, |d| metrics::write_errors(&k.0, name, d)),
                dropped,
            },
            None => Seen {
                state: RunState::NeverStarted,
                progress: &never,
                rate: 0.0,
                error: None,
                plugin: None,
                destination: None,
                write_errors: 0,
                dropped,
            },
        };
        Status::new(name, seen)
    }

    /// Sets every pipeline's gauges, for a scrape.
    pub fn publish_metrics(&self) {
        for ((tenant, name), run) in self.runs.running().iter() {
            metrics::set_progress(tenant, name, &run.progress.borrow(), true);
        }
        for ((tenant, name), f) in self.runs.finished().iter() {
            metrics::set_progress(tenant, name, &f.progress, false);
        }
    }

    /// Changes a running pipeline's plugin version between batches; false
    /// if it is not running or already on that version.
    pub async fn swap(&self, tenant: &Arc<Tenant>, name: &str, prepared: &Prepared) -> Result<bool, ApiError> {
        let Some(next) = prepared.plugin.clone() else {
            return Ok(false);
        };
        let swap = {
            let running = self.runs.running();
            match running.get(&key(&tenant.name, name)) {
                Some(run) if run.plugin.as_ref() != Some(&next) => run.swap.clone(),
                _ => None,
            }
        };
        let Some(swap) = swap else { return Ok(false) };
        let span = tracing::info_span!(logs::SPAN, tenant = %tenant.name, pipeline = %name);
        let secrets = self.open_secrets(tenant, name, prepared)?;
        let destination = async {
            let d = build_destination(&self.store.cache_dir, tenant, name, prepared, secrets).await?;
            d.check_connection().await?;
            Ok::<_, crate::destination::DestinationError>(d)
        }
        .instrument(span.clone())
        .await
        .map_err(|e| ApiError::invalid(format!("pipeline `{name}`: the new plugin version: {e}")))?;
        let old = swap.version().await;
        if let Err(e) = swap.swap(destination, next.1).instrument(span.clone()).await {
            span.in_scope(|| tracing::warn!("finalize of plugin version {old} after the swap: {e}"));
        }
        span.in_scope(|| tracing::info!("plugin {} swapped from version {old} to {}", next.0, next.1));
        if let Some(run) = self.runs.running().get_mut(&key(&tenant.name, name)) {
            run.plugin = Some(next);
        }
        Ok(true)
    }
}
