//! The WebAssembly plugin runtime: loads a destination plugin (a component
//! targeting `wit/destination.wit`), checks what it imports and exports,
//! and builds sandboxed instances of it.
//!
//! - [`engine`]: the shared wasmtime engine and the epoch clock.
//! - [`cache`]: compiled artifacts on disk, verified before they are run.
//! - [`capabilities`]: grants, the linker and the import check.
//! - [`egress`]: outbound HTTP and TCP, checked where each connection is made.
//! - [`files`]: the filesystem layer over granted directories (no symlinks,
//!   byte quotas).
//! - [`limits`], [`budget`], [`cpu`]: memory and call-time limits of an
//!   instance, the host-wide memory budget of all instances, and CPU shares.
//! - [`instance`]: one Store, the calls into it and what a trap means.
//! - `linked`: one copy of a component's code for all plugins loading it.
//! - [`log`], [`stdio`], [`text`]: the plugin's log lines and output,
//!   bounded and escaped.
//! - [`ipc`]: a batch encoded the way the plugin asked.

pub mod cache;
pub mod capabilities;
pub mod egress;
pub mod engine;
pub mod files;
pub mod instance;
pub mod ipc;
pub mod limits;
mod linked;
pub mod log;
pub mod stdio;
pub mod text;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::Engine;

use crate::quota::{budget, cpu};

pub use cache::CacheStatus;
pub use capabilities::{DirGrant, Grants};
pub use instance::Instance;
pub(crate) use instance::Sandbox;
pub use limits::Limits;

/// Host bindings generated from the plugin contract.
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "plugin",
        exports: { default: async },
    });
}

pub use bindings::bizon::destination::types::{BatchInfo, InputFormat, PluginInfo, RejectedRow, WriteError};

/// Largest component file accepted by default, in MiB. Compile time and
/// memory grow with the size (a 100 MB component took 26 s and 869 MB).
pub const DEFAULT_MAX_COMPONENT_MB: u64 = 64;
/// Longest a component may take to compile.
pub const COMPILE_TIMEOUT: Duration = Duration::from_secs(120);

/// What a plugin gets besides its code.
#[derive(Debug, Clone)]
pub struct PluginSettings {
    pub limits: Limits,
    pub grants: Grants,
    /// The plugin's `open` argument: its config as a JSON object.
    pub config_json: String,
    /// Where compiled artifacts are kept; `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
    /// Largest component file accepted, in MiB.
    pub max_component_mb: u64,
    /// What all live instances may hold together; the host-wide one unless
    /// a caller (a tenant) has its own.
    pub budget: Arc<budget::MemoryBudget>,
    /// How messages name the plugin; its file path when `None` (`serve`
    /// names it `NAME@VERSION`, not where the host keeps it).
    pub label: Option<String>,
    /// The CPU share its calls run under (a tenant's); none: unpaced.
    pub cpu: Option<Arc<cpu::CpuShare>>,
    /// Wall time a compile may take ([`COMPILE_TIMEOUT`]; `serve` bounds
    /// its compiles' CPU time instead).
    pub compile_timeout: Duration,
}

impl Default for PluginSettings {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            grants: Grants::default(),
            config_json: "{}".into(),
            cache_dir: None,
            max_component_mb: max_component_mb(),
            budget: budget::global(),
            label: None,
            cpu: None,
            compile_timeout: COMPILE_TIMEOUT,
        }
    }
}

static MAX_COMPONENT_MB: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// Sets the process-wide component size limit (`--max-component-mb`); only
/// the first call counts.
pub fn set_max_component_mb(mib: u64) {
    let _ = MAX_COMPONENT_MB.set(mib);
}

/// `--max-component-mb`, else `$BIZON_HOST_MAX_COMPONENT_MB`, else
/// [`DEFAULT_MAX_COMPONENT_MB`].
pub fn max_component_mb() -> u64 {
    *MAX_COMPONENT_MB.get_or_init(|| {
        std::env::var("BIZON_HOST_MAX_COMPONENT_MB")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(DEFAULT_MAX_COMPONENT_MB)
    })
}

/// Why a plugin call ended in a trap, as users should read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrapCause {
    Memory { limit_mb: u64 },
    Timeout { limit_ms: u64 },
    StackOverflow,
    Panic { message: String },
    Exit { code: i32 },
    Other { message: String },
}

impl std::fmt::Display for TrapCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrapCause::Memory { limit_mb } => write!(f, "exceeded its memory limit of {limit_mb} MiB"),
            TrapCause::Timeout { limit_ms } => write!(f, "exceeded its call timeout of {limit_ms} ms"),
            TrapCause::StackOverflow => f.write_str("overflowed its stack"),
            TrapCause::Panic { message } => write!(f, "panicked: {message}"),
            TrapCause::Exit { code } => write!(f, "called exit({code})"),
            TrapCause::Other { message } => write!(f, "trapped: {message}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("cannot read plugin {plugin}: {source}")]
    Read { plugin: String, source: std::io::Error },
    #[error(
        "plugin {plugin} is {size_mib:.1} MiB, over the {limit_mib} MiB limit for a component \
         (--max-component-mb or BIZON_HOST_MAX_COMPONENT_MB)"
    )]
    TooLarge {
        plugin: String,
        size_mib: f64,
        limit_mib: u64,
    },
    #[error("plugin {plugin} is not a valid WebAssembly component: {message}")]
    Compile { plugin: String, message: String },
    #[error("plugin {plugin} is not a bizon {kind}: it exports {exports}, not {wanted}")]
    NotAPlugin {
        plugin: String,
        kind: &'static str,
        exports: String,
        wanted: &'static str,
    },
    #[error(
        "plugin {plugin} was built for bizon:destination@{found}, which this host does not support: \
         it implements bizon:destination@{supported} (a plugin needs the same major version, and the same minor before 1.0)"
    )]
    Version {
        plugin: String,
        found: String,
        supported: String,
    },
    #[error(
        "plugin {plugin} imports interfaces a plugin cannot have: {}; plugins get only the WASI interfaces for \
         files, environment, clocks, randomness, sockets and HTTP",
        refused.join(", ")
    )]
    Imports { plugin: String, refused: Vec<String> },
    #[error("plugin {plugin} cannot be linked: {message}")]
    Link { plugin: String, message: String },
    #[error("plugin {plugin}: {message}")]
    Grant { plugin: String, message: String },
    #[error("plugin {plugin} refused its configuration (open): {message}")]
    Open { plugin: String, message: String },
    #[error("plugin {plugin} {cause} (in {function})")]
    Trap {
        plugin: String,
        function: &'static str,
        cause: TrapCause,
    },
    #[error("plugin {plugin}: {message}")]
    Budget { plugin: String, message: String },
    #[error("plugin {plugin}: {function} called on an instance that trapped before")]
    Poisoned { plugin: String, function: &'static str },
}

/// What every instance of a plugin shares.
pub(crate) struct Shared {
    label: String,
    engine: Engine,
    linked: Arc<linked::Linked>,
    limits: Limits,
    grants: Grants,
    config_json: String,
    log: Arc<log::PluginLog>,
    quotas: Arc<files::Quotas>,
    budget: Arc<budget::MemoryBudget>,
    cpu: Option<Arc<cpu::CpuShare>>,
}

impl Shared {
    /// The component's `open` argument.
    pub(crate) fn config_json(&self) -> &str {
        &self.config_json
    }
}

/// How loading went, for `plugin inspect|compile` and the logs.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub file_size: u64,
    pub cache: CacheStatus,
    pub artifact: Option<PathBuf>,
    pub compile_time: Duration,
    /// Read + compile or deserialize + checks + pre-instantiation.
    pub load_time: Duration,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
}

/// A loaded, checked and pre-instantiated plugin; instances are cheap.
pub struct Plugin {
    shared: Arc<Shared>,
    report: LoadReport,
}

impl Plugin {
    /// Reads, compiles (or loads from the cache), checks and pre-links the
    /// plugin at `path`. Blocking: compiling can take a second.
    pub fn load(path: &Path, settings: PluginSettings) -> Result<Plugin, PluginError> {
        let (shared, report) = load_component(path, settings, capabilities::Export::DESTINATION)?;
        Ok(Plugin { shared, report })
    }

    /// A new instance with its own Store, described and opened.
    pub async fn instantiate(&self) -> Result<Instance, PluginError> {
        Instance::new(&self.shared).await
    }

    /// What the plugin says about itself, from an instance that is not opened.
    pub async fn describe(&self) -> Result<PluginInfo, PluginError> {
        Ok(Instance::described(&self.shared).await?.info().clone())
    }

    /// The plugin's file as the user named it, used in every message.
    pub fn label(&self) -> &str {
        &self.shared.label
    }

    pub fn report(&self) -> &LoadReport {
        &self.report
    }

    pub fn limits(&self) -> &Limits {
        &self.shared.limits
    }
}

/// Reads, compiles (or loads from the cache), checks and pre-links the
/// component at `path`, which must export `export` (a destination plugin or a
/// transform). Blocking: compiling can take a second.
pub(crate) fn load_component(
    path: &Path,
    settings: PluginSettings,
    export: capabilities::Export,
) -> Result<(Arc<Shared>, LoadReport), PluginError> {
    let started = Instant::now();
    let label = settings.label.clone().unwrap_or_else(|| path.display().to_string());
    let too_large = |size: u64| PluginError::TooLarge {
        plugin: label.clone(),
        size_mib: size as f64 / (1 << 20) as f64,
        limit_mib: settings.max_component_mb,
    };
    let limit = settings.max_component_mb.saturating_mul(1 << 20);
    let read = |source| PluginError::Read {
        plugin: label.clone(),
        source,
    };
    // Checked before reading, so a huge file is not even loaded.
    let size = std::fs::metadata(path).map_err(read)?.len();
    if size > limit {
        return Err(too_large(size));
    }
    let mut wasm = Vec::with_capacity(size as usize);
    std::fs::File::open(path)
        .map_err(read)?
        .take(limit + 1)
        .read_to_end(&mut wasm)
        .map_err(read)?;
    if wasm.len() as u64 > limit {
        return Err(too_large(wasm.len() as u64));
    }
    if !wasm.starts_with(b"\0asm") {
        // wasmtime's own message for this dumps the expected bytes over ten lines.
        return Err(PluginError::Compile {
            plugin: label,
            message: "not a WebAssembly file (build it with `cargo build --target wasm32-wasip2`)".into(),
        });
    }
    let engine = engine::shared().engine.clone();
    let key = (cache::key(&engine, &wasm), export.interface);
    let (linked, reused) = linked::get_or_load(key, || {
        let loaded =
            cache::load(&engine, &wasm, settings.cache_dir.as_deref(), settings.compile_timeout).map_err(|e| {
                PluginError::Compile {
                    plugin: label.clone(),
                    message: format!("{e:#}"),
                }
            })?;
        capabilities::check_component(&label, &loaded.component, &engine, export)?;
        let linker = capabilities::linker(&engine).map_err(|e| PluginError::Link {
            plugin: label.clone(),
            message: format!("{e:#}"),
        })?;
        let pre = linker
            .instantiate_pre(&loaded.component)
            .map_err(|e| PluginError::Link {
                plugin: label.clone(),
                message: format!("{e:#}"),
            })?;
        let ty = loaded.component.component_type();
        Ok(linked::Linked {
            pre,
            status: loaded.status,
            artifact: loaded.artifact,
            compile_time: loaded.compile_time,
            imports: ty.imports(&engine).map(|(name, _)| name.to_string()).collect(),
            exports: ty.exports(&engine).map(|(name, _)| name.to_string()).collect(),
        })
    })?;
    let report = LoadReport {
        file_size: wasm.len() as u64,
        // Reused code was loaded before, from the cache or compiled then.
        cache: if reused { CacheStatus::Hit } else { linked.status },
        artifact: linked.artifact.clone(),
        compile_time: if reused { Duration::ZERO } else { linked.compile_time },
        load_time: started.elapsed(),
        imports: linked.imports.clone(),
        exports: linked.exports.clone(),
    };
    let shared = Shared {
        log: Arc::new(log::PluginLog::new(&label)),
        quotas: Arc::new(files::Quotas::new(&settings.grants.dirs)),
        budget: settings.budget,
        cpu: settings.cpu,
        label,
        engine,
        linked,
        limits: settings.limits.for_component(size),
        grants: settings.grants,
        config_json: settings.config_json,
    };
    Ok((Arc::new(shared), report))
}
