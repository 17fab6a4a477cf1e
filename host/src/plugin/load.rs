//! Loading a component: read it (bounded), compile it or take it from the
//! cache, check what it imports and exports, and pre-link it, once per
//! distinct component in the process. A [`Plugin`] is a loaded destination
//! plugin; transforms are loaded through [`load_component`] too.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::bindings::bizon::destination::types::PluginInfo;
use super::cache::{self, CacheStatus};
use super::capabilities::{self, Export};
use super::engine;
use super::error::PluginError;
use super::files::Quotas;
use super::instance::{Instance, Shared};
use super::limits::Limits;
use super::linked::{self, Linked};
use super::linker;
use super::log::PluginLog;
use super::settings::{HostPolicy, Request};

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
    /// plugin at `path`, for what `request` asks under `policy`. Blocking:
    /// compiling can take a second.
    pub fn load(path: &Path, request: &Request, policy: &HostPolicy) -> Result<Plugin, PluginError> {
        let (shared, report) = load_component(path, request, policy, Export::DESTINATION)?;
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
    request: &Request,
    policy: &HostPolicy,
    export: Export,
) -> Result<(Arc<Shared>, LoadReport), PluginError> {
    let started = Instant::now();
    let label = policy.label.clone().unwrap_or_else(|| path.display().to_string());
    let too_large = |size: u64| PluginError::TooLarge {
        plugin: label.clone(),
        size_mib: size as f64 / (1 << 20) as f64,
        limit_mib: policy.max_component_mb,
    };
    let limit = policy.max_component_mb.saturating_mul(1 << 20);
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
        let loaded = cache::load(&engine, &wasm, policy.cache_dir.as_deref(), policy.compile_timeout).map_err(|e| {
            PluginError::Compile {
                plugin: label.clone(),
                message: format!("{e:#}"),
            }
        })?;
        capabilities::check_component(&label, &loaded.component, &engine, export)?;
        let linker = linker::linker(&engine).map_err(|e| PluginError::Link {
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
        Ok(Linked {
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
        log: Arc::new(PluginLog::new(&label)),
        quotas: Arc::new(Quotas::new(&request.grants.dirs)),
        budget: policy.budget.clone(),
        cpu: policy.cpu.clone(),
        secrets: policy.secrets.clone(),
        label,
        engine,
        linked,
        limits: request.limits.for_component(size),
        grants: request.grants.clone(),
        config_json: request.config_json.clone(),
    };
    Ok((Arc::new(shared), report))
}
