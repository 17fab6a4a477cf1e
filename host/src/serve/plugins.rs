//! The plugin store: every upload is checked (size, contract version,
//! imports), compiled in a bounded pool off the data path, described, and
//! kept content-addressed as `<data-dir>/plugins/<sha256>.wasm`. The
//! compiled artifact goes to the shared compile cache, so a pipeline that
//! starts later loads it without compiling again. With a shared registry
//! the bytes are kept there too; this directory is then the host's cache.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::compile::{self, Uploaded};
use super::error::ApiError;
use super::registry::{Cluster, PluginRow};
use super::tenants::Tenant;
use super::token::{hex, new_token};
use crate::metrics::serve as metrics;
use crate::plugin::cache::{self, CacheStatus};
use crate::plugin::{HostPolicy, InputFormat, Limits, PluginError, Request};

pub struct PluginStore {
    dir: PathBuf,
    incoming: PathBuf,
    pub cache_dir: PathBuf,
    compile: Semaphore,
    /// The pool's size: `compile`'s permits when none is taken.
    concurrency: usize,
    /// Uploads compiling or waiting for a permit, for the console.
    queued: AtomicUsize,
}

/// One upload counted in [`PluginStore::compile_queue`] until dropped
/// (a cancelled upload too).
struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl PluginStore {
    /// Whether the compile cache holds these bytes' code for this host's
    /// engine.
    async fn compiled_before(&self, staged: &Path) -> Result<bool, ApiError> {
        let (file, dir) = (staged.to_path_buf(), self.cache_dir.clone());
        let look = move || -> std::io::Result<bool> {
            let wasm = std::fs::read(file)?;
            Ok(cache::artifact_path(&dir, &crate::plugin::engine::shared().engine, &wasm).exists())
        };
        tokio::task::spawn_blocking(look)
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)
    }

    pub fn open(data_dir: &Path, compile_concurrency: usize) -> std::io::Result<Self> {
        let dir = data_dir.join("plugins");
        let incoming = data_dir.join("incoming");
        let cache_dir = data_dir.join("cache");
        for d in [&dir, &incoming, &cache_dir] {
            std::fs::create_dir_all(d)?;
        }
        // Uploads a crash interrupted.
        for entry in std::fs::read_dir(&incoming)?.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
        Ok(Self {
            dir,
            incoming,
            cache_dir,
            compile: Semaphore::new(compile_concurrency.max(1)),
            concurrency: compile_concurrency.max(1),
            queued: AtomicUsize::new(0),
        })
    }

    /// Uploads being compiled now and uploads waiting for their turn.
    pub fn compile_queue(&self) -> (usize, usize) {
        let compiling = self.concurrency - self.compile.available_permits();
        (compiling, self.queued.load(Ordering::Relaxed).saturating_sub(compiling))
    }

    pub fn blob(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}.wasm"))
    }

    /// Checks, compiles and describes `bytes` as a plugin of `tenant`:
    /// the row to register (its version is the registry's to give) and the
    /// staged file to [`Self::keep`] once it is registered.
    pub async fn check(&self, tenant: &Tenant, name: &str, bytes: &[u8]) -> Result<(PluginRow, PathBuf), ApiError> {
        let limit = tenant.limits.plugin_mb.saturating_mul(1 << 20);
        if bytes.len() as u64 > limit {
            return Err(too_large(bytes.len() as u64, tenant.limits.plugin_mb));
        }
        let digest = hex(&Sha256::digest(bytes));
        let staged = self.incoming.join(format!("{}-{digest}.wasm", new_token()));
        tokio::fs::write(&staged, bytes).await.map_err(ApiError::internal)?;
        match self.compile(tenant, name, &staged, bytes.len() as u64, digest).await {
            Ok(row) => Ok((row, staged)),
            Err(e) => {
                let _ = tokio::fs::remove_file(&staged).await;
                Err(e)
            }
        }
    }

    /// Moves a registered upload to its content address (after the
    /// registry names it, so a concurrent [`Self::collect`] cannot drop it).
    pub async fn keep(&self, staged: &Path, digest: &str) -> Result<(), ApiError> {
        let blob = self.blob(digest);
        if blob.exists() {
            let _ = tokio::fs::remove_file(staged).await;
            return Ok(());
        }
        tokio::fs::rename(staged, &blob).await.map_err(ApiError::internal)
    }

    async fn compile(
        &self,
        tenant: &Tenant,
        name: &str,
        staged: &Path,
        size: u64,
        digest: String,
    ) -> Result<PluginRow, ApiError> {
        // describe runs inside the tenant's memory share: the size-based
        // default, capped by what one instance of this tenant may hold.
        let describe_mb = Limits::default()
            .for_component(size)
            .memory_mb()
            .min(tenant.limits.memory_mb);
        let request = Request {
            limits: Limits {
                memory_mb: Some(describe_mb),
                ..Limits::default()
            },
            ..Request::default()
        };
        let policy = HostPolicy {
            max_component_mb: tenant.limits.plugin_mb,
            cache_dir: Some(self.cache_dir.clone()),
            budget: tenant.budget.clone(),
            label: Some(name.to_string()),
            cpu: Some(tenant.cpu.clone()),
            ..HostPolicy::for_run()
        };
        self.queued.fetch_add(1, Ordering::Relaxed);
        let _queued = Queued(&self.queued);
        let _permit = self.compile.acquire().await.expect("the pool is never closed");
        let started = Instant::now();
        // The compile itself, in a child paced by the tenant's CPU share;
        // then the host loads what it put in the cache. Bytes compiled
        // before (by any tenant: many upload the same SDK build) are loaded
        // at once: a process per upload was most of an upload's time.
        if !self.compiled_before(staged).await? {
            if let Err(refused) = compile::in_child(tenant, name, staged, &self.cache_dir).await? {
                return Err(ApiError::invalid(refused));
            }
        }
        let path = staged.to_path_buf();
        let loaded = tokio::task::spawn_blocking(move || Uploaded::load(&path, &request, &policy))
            .await
            .map_err(ApiError::internal)?;
        let refused = |e: PluginError| ApiError::invalid(e.to_string());
        let uploaded = loaded.map_err(refused)?;
        if uploaded.report().cache != CacheStatus::Hit {
            // Compiled again here, outside the child's pacing: the child's
            // engine settings differ from the host's.
            tracing::warn!(tenant = %tenant.name, plugin = name, "the compile cache missed the upload's compiled code");
        }
        let compile_ms = started.elapsed().as_millis() as u64;
        let (kind, imports, described_name, described_version, input_format) = match &uploaded {
            Uploaded::Destination(plugin) => {
                let info = plugin.describe().await.map_err(refused)?;
                let imports = plugin.report().imports.clone();
                ("destination", imports, info.name, info.version, info.input_format)
            }
            Uploaded::Transform(component) => {
                let info = component.describe().await.map_err(refused)?;
                let imports = component.report().imports.clone();
                ("transform", imports, info.name, info.version, info.input_format)
            }
        };
        let format = match input_format {
            InputFormat::ArrowIpc => "arrow-ipc",
            InputFormat::Ndjson => "ndjson",
        };
        metrics::compile_time(&tenant.name, started.elapsed());
        Ok(PluginRow {
            name: name.to_string(),
            version: 0,
            digest,
            size,
            imports,
            describe: serde_json::json!({
                "kind": kind, "name": described_name, "version": described_version, "input_format": format,
            }),
            compile_ms,
        })
    }

    /// Deletes blobs no plugin version names any more.
    pub fn collect(&self, live: &[String]) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let digest = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
            if !live.iter().any(|d| d == digest) {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// With a shared registry, the host's copy of a plugin's bytes is a cache:
/// fetched from the registry on first need and checked against its digest.
pub fn fetch(cluster: &dyn Cluster, path: &Path, digest: &str) -> Result<(), ApiError> {
    if path.exists() {
        return Ok(());
    }
    let bytes = cluster
        .blob(digest)?
        .ok_or_else(|| ApiError::internal(format!("the registry has no bytes for plugin digest {digest}")))?;
    let got = hex(&Sha256::digest(&bytes));
    if got != digest {
        return Err(ApiError::internal(format!(
            "the registry's bytes for plugin digest {digest} hash to {got}"
        )));
    }
    // Whole or not at all: a concurrent start may read it as it lands.
    let staged = path.with_extension(format!("{}.part", new_token()));
    std::fs::write(&staged, &bytes).map_err(ApiError::internal)?;
    std::fs::rename(&staged, path).map_err(ApiError::internal)
}

pub fn too_large(size: u64, limit_mb: u64) -> ApiError {
    ApiError::too_large(format!(
        "the plugin is {:.1} MiB, over this tenant's limit of {limit_mb} MiB",
        size as f64 / (1 << 20) as f64
    ))
}
