//! `bizon-host serve`: many tenants' plugins and pipelines in one process,
//! behind an HTTP API. Its modules in data-flow order; each imports only
//! modules above it:
//!
//! - [`limits`]: what a tenant may use: the defaults and its own overrides.
//! - [`registry`]: tenants, plugin versions and pipelines, in SQLite or in a
//!   PostgreSQL database several hosts share.
//! - [`config`]: `serve.yaml`, the admin token, tenants' default limits.
//! - [`secrets`]: tenants' secrets sealed at rest under a key kept outside
//!   the registry.
//! - [`error`]: API errors, `{error: {code, message}}` with their status.
//! - [`token`]: tokens and the digests the registry keeps of them.
//! - [`tenants`]: a tenant's limits, memory, CPU and read-ahead shares,
//!   files directory and turn (version changes and collections take turns).
//! - [`logs`]: per-pipeline log rings, rate-limited per tenant.
//! - [`runtime`]: pipelines on their own runtime, below the API's priority.
//! - [`compile`]: an upload compiled in a child process paced by its
//!   tenant's CPU share.
//! - [`plugins`]: uploads checked, compiled in a bounded pool, content-addressed.
//! - [`lease`]: with a shared registry, a pipeline read by one host at a
//!   time runs on the holder of its lease.
//! - [`pipelines`]: what a tenant's pipeline may ask for, what its run is
//!   built from, and the supervisor that runs, stops, resumes and upgrades them.
//! - [`state`]: what the routes share.
//! - [`retention`]: plugin versions no pipeline needs are removed.
//! - [`cluster`]: with a shared registry, what each host runs follows it.
//! - [`auth`]: who calls, as extractors the routes take.
//! - [`request`]: bodies read up to a limit, names checked.
//! - [`secrets_api`] and [`files`]: a tenant's secrets (stored, listed,
//!   deleted; never shown) and the files its pipelines wrote.
//! - [`api`]: the routes of the JSON API.
//! - [`ui`]: the console, pages a person opens in a browser at `/ui`.
//!
//! Its Prometheus series are [`crate::metrics::serve`].

pub mod api;
pub mod auth;
pub mod cluster;
pub mod compile;
pub mod config;
pub mod error;
pub mod files;
pub mod lease;
pub mod limits;
pub mod logs;
pub mod pipelines;
pub mod plugins;
pub mod registry;
pub mod request;
pub mod retention;
pub mod runtime;
pub mod secrets;
pub mod secrets_api;
pub mod state;
pub mod tenants;
pub mod token;
pub mod ui;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::quota::ReadAheadPool;
use config::ServeConfig;
use lease::Leases;
use pipelines::Supervisor;
use plugins::PluginStore;
use registry::{Location, Registry};
use state::State;
use tenants::Tenants;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    #[error("{0}")]
    Registry(#[from] registry::RegistryError),
    #[error("{0}")]
    Secrets(#[from] secrets::SecretsError),
    #[error("data directory {dir}: {source}")]
    DataDir { dir: String, source: std::io::Error },
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
}

/// Command-line overrides of the serve config.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// The serve config (limits, budgets, the admin token file); every field
    /// has a default.
    #[arg(long, value_name = "serve.yaml")]
    pub config: Option<PathBuf>,
    /// Where the API listens (default 127.0.0.1:8700).
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<SocketAddr>,
    /// Where the registry, plugins and tenants' files are kept (default ./bizon-data).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// `sqlite` (the data dir's registry.sqlite, the default) or a
    /// postgres://user:pass@host:port/db URL several hosts share.
    #[arg(long, value_name = "sqlite|URL")]
    pub registry: Option<Location>,
    /// This host's name among those sharing a registry (default: its
    /// hostname and listen address).
    #[arg(long, value_name = "NAME")]
    pub host_id: Option<String>,
    /// The key tenants' secrets are sealed with (default:
    /// <data-dir>/secrets.key, made at the first start; keep a copy).
    #[arg(long, value_name = "FILE")]
    pub secrets_key_file: Option<PathBuf>,
}

/// Opens the data directory, resumes the pipelines that were running and
/// serves the API until `shutdown` resolves; then stops every pipeline
/// (they resume at the next start).
pub async fn run(
    args: ServeArgs,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let mut config = match &args.config {
        Some(path) => ServeConfig::load(path)?,
        None => ServeConfig::default(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let Some(registry) = args.registry {
        config.registry = registry;
    }
    if let Some(id) = args.host_id {
        config.host_id = Some(id);
    }
    if let Some(key) = args.secrets_key_file {
        config.secrets_key_file = Some(key);
    }
    let admin_hash = token::hash(&config.admin_token()?);
    if let Some(python) = &config.bridge_python {
        crate::source::bridge::set_python(python.clone());
    }
    crate::plugin::engine::set_pool_instances(config.live_instances);
    crate::plugin::engine::set_serial_compilation();
    runtime::start_engine();
    let data_dir = config.data_dir.clone();
    let io = |source| ServeError::DataDir {
        dir: data_dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(&data_dir).map_err(io)?;
    let registry = Arc::new(Registry::open(&config.registry, &data_dir)?);
    let key = secrets::key_path(config.secrets_key_file.as_deref(), &data_dir);
    let vault = Arc::new(secrets::Vault::open(&key, &registry)?);
    let store = Arc::new(PluginStore::open(&data_dir, config.compile_concurrency).map_err(io)?);
    let host_budget = match config.plugin_memory_budget_mb {
        Some(mib) => crate::quota::budget::MemoryBudget::new(mib),
        None => crate::quota::budget::global(),
    };
    let read_ahead = ReadAheadPool::new(config.read_ahead_budget_mb.unwrap_or_else(default_read_ahead_mib));
    let tenants = Tenants::new(&data_dir, config.limits.clone(), host_budget, read_ahead);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: config.listen,
            source,
        })?;
    let leases = registry.cluster().map(|_| {
        Leases::new(
            config.host_id.clone(),
            config.listen,
            config.reconcile_interval_ms,
            registry.clone(),
        )
    });
    let supervisor = Supervisor::new(
        registry.clone(),
        store.clone(),
        config.native_destinations.clone(),
        config.bridge,
        leases,
        vault.clone(),
    );
    let state = Arc::new(State {
        config,
        registry,
        vault,
        tenants,
        store,
        supervisor: Arc::new(supervisor),
        admin_hash,
    });
    resume(&state).await?;
    runtime::spawn_memory_trim();
    let addr = listener.local_addr().map_err(io)?;
    match state.supervisor.leases() {
        Some(leases) => {
            tracing::info!(%addr, data_dir = %data_dir.display(), host = %leases.host, "serving, with a shared registry");
            cluster::spawn(state.clone());
        }
        None => tracing::info!(%addr, data_dir = %data_dir.display(), "serving"),
    }
    let app = api::router(state.clone()).merge(ui::router(&state));
    // The client's address: the console counts wrong tokens by it.
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
    tracing::info!("stopping the pipelines (they resume at the next start)");
    state.supervisor.stop_all().await;
    served.map_err(io)
}

/// Starts the pipelines the registry says were running, then removes the
/// plugin versions none of them needs (those that ended since). With a
/// shared registry the reconcile loop starts them instead: a failure here
/// must not mark stopped a pipeline other hosts run.
async fn resume(state: &Arc<State>) -> Result<(), ServeError> {
    let running = match state.supervisor.leases() {
        Some(_) => Vec::new(),
        None => state
            .registry
            .pipelines(None)?
            .into_iter()
            .filter(|r| r.running)
            .collect(),
    };
    for row in running {
        let started = match state.tenant(&row.tenant) {
            Ok(tenant) => state.supervisor.start(&tenant, &row.name, &row.yaml).await,
            Err(e) => Err(e),
        };
        match started {
            Ok(()) => tracing::info!(tenant = %row.tenant, pipeline = %row.name, "resumed"),
            Err(e) => {
                tracing::error!(tenant = %row.tenant, pipeline = %row.name, "cannot resume: {e}");
                state.registry.set_running(&row.tenant, &row.name, false)?;
            }
        }
    }
    for row in state.registry.tenants()? {
        let collected = match state.tenant(&row.name) {
            Ok(tenant) => retention::collect(state, &tenant).map(drop),
            Err(e) => Err(e),
        };
        if let Err(e) = collected {
            tracing::warn!(tenant = %row.name, "cannot collect unused plugin versions: {e}");
        }
    }
    Ok(())
}

/// An eighth of the machine's memory: with the plugins' half, what the
/// tenants can hold together stays well inside it.
fn default_read_ahead_mib() -> u64 {
    crate::quota::budget::machine_memory_mib().map_or(512, |mib| mib / 8)
}
