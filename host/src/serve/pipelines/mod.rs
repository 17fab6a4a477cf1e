//! The supervisor: each running pipeline is a tokio task driving
//! [`crate::pipeline::run_with_dead_letters`], inside a span that carries
//! its tenant and name (its log lines and metrics are told apart by them).
//! A stop flushes what was read and finalizes; the registry remembers
//! which pipelines should run, so a restarted server resumes them (a Kafka
//! source from its group's committed offsets).

pub mod backoff;
pub mod policy;
pub mod swap;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;
use tracing::Instrument;

use super::error::ApiError;
use super::logs;
use super::metrics::{self, PipelineSeries};
use super::tenants::Tenant;
use super::State;
use crate::config::DestinationConfig;
use crate::dead_letter::DeadLetters;
use crate::destination::wasm::WasmDestination;
use crate::destination::SharedDestination;
use crate::pipeline::{self, Progress, RunStatus};
use crate::plugin::cpu::{Metered, Work};
use crate::plugin::PluginSettings;
use crate::source::SourceTask;
use backoff::Backoff;
use policy::Prepared;
use swap::Swappable;

type Key = (String, String);

/// How long a stopped pipeline may go on writing what it had read. Behind a
/// slow plugin that could be hours (a pipeline reads ahead up to its memory
/// budget, 64 MiB or more): a log-flooding plugin paced to a quarter core
/// kept a "stopped" pipeline writing, and its tenant's CPU share busy, for
/// the rest of the isolation bench. What is left is not acknowledged: a
/// Kafka source reads it again at the next start.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// What `GET /v1/pipelines/{name}` answers.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub name: String,
    /// `running`, `stopping`, `stopped`, `completed`, `failed` or `never_started`.
    pub state: &'static str,
    pub records_read: u64,
    pub records_written: u64,
    pub records_per_s: f64,
    pub lag: i64,
    pub dead_letters: u64,
    pub last_error: Option<String>,
    pub plugin: Option<String>,
    pub plugin_version: Option<u32>,
    pub log_lines_dropped: u64,
    /// Failures in a row (a start refused or a run failed); zero once a run
    /// completes or is stopped.
    pub failures_in_a_row: u32,
    /// How long until `start` is accepted again after those failures.
    pub start_allowed_in_ms: u64,
}

struct Running {
    stop: watch::Sender<bool>,
    progress: watch::Receiver<Progress>,
    done: watch::Receiver<bool>,
    started: Instant,
    swap: Option<Arc<Swappable>>,
    plugin: Option<(String, u32)>,
    /// The `wasm:` transforms' versions, fixed for the run.
    transforms: Vec<(String, u32)>,
    disk_mb: u64,
    /// The stored YAML this run has taken in (a plugin change swaps it in;
    /// the rest waits for a restart): another host's change is told apart by it.
    yaml: String,
}

struct Finished {
    state: &'static str,
    progress: Progress,
    error: Option<String>,
    plugin: Option<(String, u32)>,
    rate: f64,
}

#[derive(Default)]
pub struct Supervisor {
    /// Pipelines between `start` and running: a second start is refused.
    starting: Mutex<HashSet<Key>>,
    running: Mutex<HashMap<Key, Running>>,
    finished: Mutex<HashMap<Key, Finished>>,
    backoff: Backoff,
}

fn key(tenant: &str, name: &str) -> Key {
    (tenant.to_string(), name.to_string())
}

impl Supervisor {
    fn running(&self) -> parking_lot::MutexGuard<'_, HashMap<Key, Running>> {
        self.running.lock()
    }

    fn finished(&self) -> parking_lot::MutexGuard<'_, HashMap<Key, Finished>> {
        self.finished.lock()
    }

    pub fn is_running(&self, tenant: &str, name: &str) -> bool {
        self.running().contains_key(&key(tenant, name))
    }

    /// Whether the pipeline is being started or runs here.
    pub fn is_active(&self, tenant: &str, name: &str) -> bool {
        let k = key(tenant, name);
        self.running().contains_key(&k) || self.starting.lock().contains(&k)
    }

    /// (tenant, pipeline) of every pipeline running here.
    pub fn running_keys(&self) -> Vec<(String, String)> {
        self.running().keys().cloned().collect()
    }

    /// The stored YAML a running pipeline has taken in.
    /// The transform versions a pipeline running here uses.
    pub fn transforms_of(&self, tenant: &str, name: &str) -> Vec<(String, u32)> {
        self.running()
            .get(&key(tenant, name))
            .map(|r| r.transforms.clone())
            .unwrap_or_default()
    }

    pub fn applied_yaml(&self, tenant: &str, name: &str) -> Option<String> {
        self.running().get(&key(tenant, name)).map(|r| r.yaml.clone())
    }

    /// Records that a running pipeline has taken `yaml` in.
    pub fn set_applied_yaml(&self, tenant: &str, name: &str, yaml: &str) {
        if let Some(run) = self.running().get_mut(&key(tenant, name)) {
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
        let (tenant, _) = k;
        let dropped = logs::existing(tenant, name).map_or(0, |r| r.dropped());
        if let Some(run) = self.running().get(k) {
            let progress = run.progress.borrow().clone();
            let elapsed = run.started.elapsed().as_secs_f64().max(1e-3);
            let state = if *run.stop.borrow() { "stopping" } else { "running" };
            return status(
                name,
                state,
                &progress,
                progress.records_written as f64 / elapsed,
                None,
                run.plugin.clone(),
                dropped,
            );
        }
        match self.finished().get(k) {
            Some(f) => status(
                name,
                f.state,
                &f.progress,
                f.rate,
                f.error.clone(),
                f.plugin.clone(),
                dropped,
            ),
            None => status(name, "never_started", &Progress::default(), 0.0, None, None, dropped),
        }
    }

    /// Sets every pipeline's gauges, for a scrape.
    pub fn publish_metrics(&self) {
        for ((tenant, name), run) in self.running().iter() {
            metrics::set_progress(tenant, name, &run.progress.borrow(), true);
        }
        for ((tenant, name), f) in self.finished().iter() {
            metrics::set_progress(tenant, name, &f.progress, false);
        }
    }

    /// The writable disk a tenant's running pipelines were granted, in MiB.
    fn disk_held(&self, tenant: &str) -> u64 {
        self.running()
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .map(|(_, r)| r.disk_mb)
            .sum()
    }

    /// Starts a stored pipeline; returns once it runs (its destination
    /// built, its plugin instantiated), or why it cannot (then also its
    /// status's `last_error`). After failures in a row it is refused until
    /// its backoff has passed.
    pub async fn start(state: &Arc<State>, tenant: &Arc<Tenant>, name: &str, yaml: &str) -> Result<(), ApiError> {
        let sup = &state.supervisor;
        let k = key(&tenant.name, name);
        let _starting = Starting::claim(sup, k.clone())
            .ok_or_else(|| ApiError::conflict(format!("pipeline `{name}` is already running")))?;
        let standing = sup.backoff.standing(&k);
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
        let leased = match &state.hosts {
            Some(hosts) => hosts.claim(state, &tenant.name, name, yaml)?,
            None => false,
        };
        if leased {
            // Renewed from now on: building the destination may outlast the lease.
            super::hosts::Hosts::keep_lease(state.clone(), &tenant.name, name);
        }
        let started = Self::launch(state, tenant, name, yaml).await;
        if let Err(e) = &started {
            if leased {
                if let Some(hosts) = &state.hosts {
                    hosts.release(state, &tenant.name, name);
                }
            }
            sup.backoff.failed(&k, Duration::ZERO);
            sup.finished().insert(
                key(&tenant.name, name),
                Finished {
                    state: "failed",
                    progress: Progress::default(),
                    error: Some(e.message.clone()),
                    plugin: None,
                    rate: 0.0,
                },
            );
        }
        started
    }

    async fn launch(state: &Arc<State>, tenant: &Arc<Tenant>, name: &str, yaml: &str) -> Result<(), ApiError> {
        let sup = &state.supervisor;
        let prepared = state.prepare(tenant, name, yaml)?;
        let disk_mb = sup.disk_held(&tenant.name);
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
        let series = PipelineSeries::new(&tenant.name, name);
        let built = build_destination(state, tenant, &prepared)
            .instrument(span.clone())
            .await;
        let destination = built.map_err(|e| ApiError::invalid(format!("pipeline `{name}`: {e}")))?;
        let swap = Arc::new(Swappable::new(
            destination,
            prepared.plugin.as_ref().map_or(0, |p| p.1),
            series,
        ));
        // Off the API's threads: a dead-letter topic's brokers are asked for
        // their addresses first, which can take its whole timeout.
        let pipeline = prepared.pipeline.clone();
        let dead_letters = tokio::task::spawn_blocking(move || crate::cli::open_dead_letters(&pipeline))
            .await
            .map_err(ApiError::internal)?
            .map_err(|e| ApiError::invalid(format!("pipeline `{name}`: {e}")))?;
        let source = crate::source::build_with(&prepared.pipeline.source, dead_letters.clone())
            .map_err(|e| ApiError::invalid(format!("pipeline `{name}`: source: {e}")))?;
        let source = with_transforms(state, tenant, &prepared, source, dead_letters.clone())
            .instrument(span.clone())
            .await
            .map_err(|e| ApiError::invalid(format!("pipeline `{name}`: {e}")))?;
        let (stop, mut stop_rx) = watch::channel(false);
        let (progress_tx, progress) = watch::channel(Progress::default());
        let (done_tx, done) = watch::channel(false);
        let k = key(&tenant.name, name);
        let plugin = prepared.plugin.clone();
        sup.running().insert(
            k.clone(),
            Running {
                stop,
                progress,
                done,
                started: Instant::now(),
                swap: Some(swap.clone()),
                plugin: plugin.clone(),
                transforms: prepared.transforms.clone(),
                disk_mb: prepared.disk_mb,
                yaml: yaml.to_string(),
            },
        );
        state.registry.set_running(&tenant.name, name, true)?;
        let state = state.clone();
        let yaml = yaml.to_string();
        let task_span = span.clone();
        let read_ahead = tenant.read_ahead.clone();
        let cpu = tenant.cpu.clone();
        super::runtime::pipelines().spawn(
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
                let destination: SharedDestination = swap.clone();
                let run = pipeline::run_bounded(
                    &prepared.pipeline,
                    source,
                    destination,
                    dead_letters,
                    shutdown,
                    progress_tx.clone(),
                    bounds,
                );
                // The run's own work (pages into buffers, batches out) is
                // the tenant's like its plugin calls, which run as tasks of
                // their own and are charged there.
                let report = Metered::new(run, cpu, Work::Pipeline).await;
                let final_state = match report.status {
                    RunStatus::Success => "completed",
                    RunStatus::Interrupted => "stopped",
                    RunStatus::Failed => "failed",
                };
                let sup = &state.supervisor;
                match report.status {
                    RunStatus::Failed => sup.backoff.failed(&k, started.elapsed()),
                    _ => sup.backoff.succeeded(&k),
                }
                match &report.error {
                    Some(e) => tracing::error!(records_written = report.records_written, "pipeline {final_state}: {e}"),
                    None => tracing::info!(records_written = report.records_written, "pipeline {final_state}"),
                }
                let plugin = sup.running().get(&k).and_then(|r| r.plugin.clone());
                // A run that ended by itself is over; a stopped one was either
                // stopped through the API (which cleared `running` first), by a
                // shutdown (it resumes at the next start) or because another
                // host holds it now: `running` stays. So it does when a Kafka
                // run fails on one of several hosts: the others go on, and this
                // one starts it again after its backoff.
                let shared = state.hosts.is_some() && !super::hosts::needs_lease(&yaml);
                let over = match final_state {
                    "stopped" => false,
                    "failed" => !shared,
                    _ => true,
                };
                if over {
                    if let Err(e) = state.registry.set_running(&k.0, &k.1, false) {
                        tracing::error!("{e}");
                    }
                }
                if let Some(hosts) = &state.hosts {
                    hosts.release(&state, &k.0, &k.1);
                }
                sup.finished().insert(
                    k.clone(),
                    Finished {
                        state: final_state,
                        progress: progress_tx.borrow().clone(),
                        error: report.error.clone(),
                        plugin,
                        rate: report.records_written as f64 / started.elapsed().as_secs_f64().max(1e-3),
                    },
                );
                sup.running().remove(&k);
                let _ = done_tx.send(true);
            }
            .instrument(task_span),
        );
        Ok(())
    }

    /// Asks a running pipeline to stop and waits until it did (what was
    /// read is written first). False if it was not running.
    pub async fn stop(&self, tenant: &str, name: &str) -> bool {
        let done = {
            let running = self.running();
            let Some(run) = running.get(&key(tenant, name)) else {
                return false;
            };
            run.stop.send_replace(true);
            run.done.clone()
        };
        wait_done(done).await;
        true
    }

    /// Stops every pipeline for a server shutdown; they resume at the next start.
    pub async fn stop_all(&self) {
        let waits: Vec<_> = self
            .running()
            .values()
            .map(|r| {
                r.stop.send_replace(true);
                r.done.clone()
            })
            .collect();
        for done in waits {
            wait_done(done).await;
        }
    }

    /// Changes a running pipeline's plugin version between batches; false
    /// if it is not running or already on that version.
    pub async fn swap(
        state: &Arc<State>,
        tenant: &Arc<Tenant>,
        name: &str,
        prepared: &Prepared,
    ) -> Result<bool, ApiError> {
        let Some(next) = prepared.plugin.clone() else {
            return Ok(false);
        };
        let swap = {
            let running = state.supervisor.running();
            match running.get(&key(&tenant.name, name)) {
                Some(run) if run.plugin.as_ref() != Some(&next) => run.swap.clone(),
                _ => None,
            }
        };
        let Some(swap) = swap else { return Ok(false) };
        let span = tracing::info_span!(logs::SPAN, tenant = %tenant.name, pipeline = %name);
        let destination = async {
            let d = build_destination(state, tenant, prepared).await?;
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
        if let Some(run) = state.supervisor.running().get_mut(&key(&tenant.name, name)) {
            run.plugin = Some(next);
        }
        Ok(true)
    }

    pub fn forget(&self, tenant: &str, name: Option<&str>) {
        self.finished()
            .retain(|(t, n), _| !(t == tenant && name.is_none_or(|name| name == n)));
        if name.is_none() {
            self.backoff.forget_tenant(tenant);
        }
    }
}

/// A pipeline being started; dropped once it runs or failed to start.
struct Starting<'a> {
    supervisor: &'a Supervisor,
    key: Key,
}

impl<'a> Starting<'a> {
    fn claim(supervisor: &'a Supervisor, key: Key) -> Option<Self> {
        let mut starting = supervisor.starting.lock();
        if supervisor.running().contains_key(&key) || !starting.insert(key.clone()) {
            return None;
        }
        Some(Self { supervisor, key })
    }
}

impl Drop for Starting<'_> {
    fn drop(&mut self) {
        self.supervisor.starting.lock().remove(&self.key);
    }
}

async fn wait_done(mut done: watch::Receiver<bool>) {
    let _ = done.wait_for(|d| *d).await;
}

fn status(
    name: &str,
    state: &'static str,
    progress: &Progress,
    rate: f64,
    error: Option<String>,
    plugin: Option<(String, u32)>,
    dropped: u64,
) -> Status {
    let source = progress.source.clone().unwrap_or_default();
    Status {
        name: name.to_string(),
        state,
        records_read: progress.records_read,
        records_written: progress.records_written,
        records_per_s: (rate * 10.0).round() / 10.0,
        lag: source.lag.values().map(|l| l.lag.max(0)).sum(),
        dead_letters: source.dead_letters,
        last_error: error,
        plugin_version: plugin.as_ref().map(|p| p.1),
        plugin: plugin.map(|p| p.0),
        log_lines_dropped: dropped,
        failures_in_a_row: 0,
        start_allowed_in_ms: 0,
    }
}

/// The source with the pipeline's transforms applied. Their instances are
/// the tenant's like its destination's: they count against its memory
/// budget and instance limit, and their calls against its CPU share. The
/// stage is made on the pipelines' runtime, which runs its calls.
async fn with_transforms(
    state: &State,
    tenant: &Tenant,
    prepared: &Prepared,
    source: Box<dyn SourceTask>,
    dead_letters: Option<Arc<DeadLetters>>,
) -> Result<Box<dyn SourceTask>, String> {
    if prepared.pipeline.transforms.is_empty() {
        return Ok(source);
    }
    let base = PluginSettings {
        cache_dir: Some(state.store.cache_dir.clone()),
        budget: tenant.budget.clone(),
        cpu: Some(tenant.cpu.clone()),
        // Named for the tenant, not by where the host keeps it.
        label: Some("python-transform".into()),
        ..PluginSettings::default()
    };
    // More workers than the cores its share buys would only take turns.
    let workers = (tenant.limits.cpu_cores.ceil() as usize).clamp(1, crate::transform::stage::default_workers());
    let pipeline = prepared.pipeline.clone();
    let wrap = async move { crate::transform::wrap_with(&pipeline, source, dead_letters, &base, workers).await };
    match super::runtime::pipelines().spawn(wrap.in_current_span()).await {
        Ok(wrapped) => wrapped.map_err(|e| e.to_string()),
        Err(e) => Err(format!("opening the transforms crashed: {e}")),
    }
}

/// The pipeline's destination: a wasm plugin under the tenant's memory
/// budget and the server's compile cache, or an offered native one.
async fn build_destination(
    state: &State,
    tenant: &Tenant,
    prepared: &Prepared,
) -> Result<SharedDestination, crate::destination::DestinationError> {
    match &prepared.pipeline.destination {
        DestinationConfig::Wasm(config) => {
            let mut settings = config.settings()?;
            settings.budget = tenant.budget.clone();
            settings.cpu = Some(tenant.cpu.clone());
            settings.cache_dir = Some(state.store.cache_dir.clone());
            settings.max_component_mb = tenant.limits.plugin_mb;
            settings.label = prepared
                .plugin
                .as_ref()
                .map(|(name, version)| format!("{name}@{version}"));
            Ok(Arc::new(WasmDestination::with_settings(config, settings).await?))
        }
        other => crate::destination::build(other).await,
    }
}
