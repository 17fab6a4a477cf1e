//! Starting a pipeline: refused while it starts or runs already, or while
//! its backoff lasts; with a shared registry, only by the holder of its
//! lease (kept renewed while the run lives). Then its parts are assembled
//! and its run spawned on the pipelines' runtime, inside a span that
//! carries its tenant and name (its log lines and metrics are told apart by
//! them).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::Instrument;

use super::super::error::ApiError;
use super::super::logs;
use super::super::runtime;
use super::super::tenants::Tenant;
use super::backoff;
use super::environment::assemble;
use super::runs::{key, Running};
use super::supervisor::Supervisor;
use super::swap::Swappable;
use crate::metrics::serve as metrics;
use crate::pipeline::Assembled;
use crate::pipeline::{self, Progress};
use crate::quota::cpu::{Metered, Work};

/// How long a stopped pipeline may go on writing what it had read. Behind a
/// slow plugin that could be hours (a pipeline reads ahead up to its memory
/// budget, 64 MiB or more): a log-flooding plugin paced to a quarter core
/// kept a "stopped" pipeline writing, and its tenant's CPU share busy, for
/// the rest of the isolation bench. What is left is not acknowledged: a
/// Kafka source reads it again at the next start.
const STOP_GRACE: Duration = Duration::from_secs(10);

impl Supervisor {
    /// Starts a stored pipeline; returns once it runs (its destination
    /// built, its plugin instantiated), or why it cannot (then also its
    /// status's `last_error`). After failures in a row it is refused until
    /// its backoff has passed.
    pub async fn start(self: &Arc<Self>, tenant: &Arc<Tenant>, name: &str, yaml: &str) -> Result<(), ApiError> {
        let k = key(&tenant.name, name);
        let _starting = self
            .runs
            .claim(k.clone())
            .ok_or_else(|| ApiError::conflict(format!("pipeline `{name}` is already running")))?;
        let standing = self.backoff.standing(&k);
        if !standing.wait.is_zero() {
            return Err(ApiError::backing_off(
                format!(
                    "pipeline `{name}` failed {} time(s) in a row; it may start again in {:.1} s (the wait doubles \
                     with each failure, up to {} s; see its last_error)",
                    standing.in_a_row,
                    standing.wait.as_secs_f64(),
                    backoff::LONGEST.as_secs()
                ),
                standing.wait,
            ));
        }
        // After the backoff: a start refused here must not hold the lease.
        let leased = match &self.leases {
            Some(leases) => leases.claim(&tenant.name, name, yaml)?,
            None => false,
        };
        if leased {
            // Renewed from now on: building the destination may outlast the lease.
            self.keep_lease(&tenant.name, name);
        }
        let started = self.launch(tenant, name, yaml).await;
        if let Err(e) = &started {
            self.start_failed(&k, leased, e);
        }
        started
    }

    async fn launch(self: &Arc<Self>, tenant: &Arc<Tenant>, name: &str, yaml: &str) -> Result<(), ApiError> {
        let prepared = self.prepare(tenant, name, yaml)?;
        let disk_mb = self.runs.disk_held(&tenant.name);
        let limits = &tenant.limits;
        if disk_mb + prepared.disk_mb > limits.disk_mb {
            return Err(ApiError::limit(format!(
                "starting `{name}` would grant {} MiB of writable disk; this tenant's running pipelines hold \
                 {disk_mb} of its {} MiB",
                prepared.disk_mb, limits.disk_mb
            )));
        }
        // The ring first: the span finds it when it is made.
        logs::ring(&tenant.name, name, limits.log_lines_per_s);
        let span = tracing::info_span!(logs::SPAN, tenant = %tenant.name, pipeline = %name);
        let secrets = self.open_secrets(tenant, name, &prepared)?;
        let assembled = assemble(&self.store.cache_dir, tenant, name, &prepared, secrets, &span).await?;
        let swap = Arc::new(Swappable::new(
            assembled.destination.clone(),
            prepared.plugin.as_ref().map_or(0, |p| p.1),
            metrics::PipelineSeries::new(&tenant.name, name, prepared.pipeline.destination.name()),
        ));
        let (stop, mut stop_rx) = watch::channel(false);
        let (progress_tx, progress) = watch::channel(Progress::default());
        let (done_tx, done) = watch::channel(false);
        let k = key(&tenant.name, name);
        let plugin = prepared.plugin.clone();
        self.runs.running().insert(
            k.clone(),
            Running {
                stop,
                progress,
                done,
                started: Instant::now(),
                swap: Some(swap.clone()),
                plugin: plugin.clone(),
                destination: prepared.pipeline.destination.name(),
                transforms: prepared.transforms.clone(),
                disk_mb: prepared.disk_mb,
                yaml: yaml.to_string(),
            },
        );
        self.registry.set_running(&tenant.name, name, true)?;
        let sup = self.clone();
        let yaml = yaml.to_string();
        let read_ahead = tenant.read_ahead.clone();
        let cpu = tenant.cpu.clone();
        runtime::pipelines().spawn(
            async move {
                tracing::info!(plugin = ?plugin, "pipeline started");
                let started = Instant::now();
                let mut abandon_rx = stop_rx.clone();
                let shutdown = async move {
                    let _ = stop_rx.wait_for(|s| *s).await;
                };
                let bounds = pipeline::Bounds {
                    abandon: async move {
                        let _ = abandon_rx.wait_for(|s| *s).await;
                        tokio::time::sleep(STOP_GRACE).await;
                    },
                    read_ahead: Some(read_ahead),
                };
                // Writes go through the swap, which takes a new plugin
                // version between two batches.
                let run = Assembled {
                    destination: swap.clone(),
                    ..assembled
                };
                let run = pipeline::run(&prepared.pipeline, run, shutdown, progress_tx.clone(), bounds);
                // The run's own work (pages into buffers, batches out) is
                // the tenant's like its plugin calls, which run as tasks of
                // their own and are charged there.
                let report = Metered::new(run, cpu, Work::Pipeline).await;
                let progress = progress_tx.borrow().clone();
                sup.run_ended(&k, &yaml, &report, started.elapsed(), progress);
                let _ = done_tx.send(true);
            }
            .instrument(span),
        );
        Ok(())
    }

    /// Renews the lease taken for a start every interval while the pipeline
    /// is starting or running here; when it cannot (taken over, or the
    /// registry unreachable, so another host may take it), stops the run.
    fn keep_lease(self: &Arc<Self>, tenant: &str, name: &str) {
        let (sup, tenant, name) = (self.clone(), tenant.to_string(), name.to_string());
        tokio::spawn(async move {
            let Some(leases) = &sup.leases else { return };
            loop {
                tokio::time::sleep(leases.interval).await;
                if !sup.is_active(&tenant, &name) {
                    return;
                }
                let kept = leases.renew(&tenant, &name);
                if !matches!(kept, Ok(None)) {
                    tracing::warn!(tenant = %tenant, pipeline = %name, "lease not renewed ({kept:?}): stopping here");
                    // Still being started: stopped at the next turn, once it runs.
                    if sup.stop(&tenant, &name).await {
                        return;
                    }
                }
            }
        });
    }
}
