//! The data of one instance's Store, and the views it gives each part of the
//! linker: wasmtime-wasi's contexts (`WasiView`), the filesystem layer's
//! ([`FilesView`]), egress's ([`EgressView`], `WasiHttpView`) and the
//! contract's `host` interface (the plugin's log). Those parts never see
//! this type, only their views of it, so none of them depends on another.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtxView, WasiHttpView};

use super::bindings::bizon;
use super::bindings::bizon::destination::types::{BatchOrigin, LogLevel};
use super::egress::{Egress, EgressView};
use super::files::{FilesView, Quotas};
use super::grants::Grants;
use super::limits::{Limits, MemoryLimiter};
use super::log::PluginLog;
use super::stdio::Captured;
use crate::config::secret::Secrets;

/// The data of one instance's Store.
pub struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    log: Arc<PluginLog>,
    quotas: Arc<Quotas>,
    /// When the call under way must end; read at each epoch tick.
    deadline: Instant,
    egress: Egress,
    /// What `host.batch-source` answers: the batch of the `write-records`
    /// call under way, if its source has positions.
    batch_source: Option<BatchOrigin>,
}

impl State {
    /// A Store's data under `limits` and `grants`, its output captured into
    /// `captured`. The error (a secret or a directory that cannot be
    /// granted) names the grant.
    pub(super) fn new(
        plugin: &str,
        grants: &Grants,
        secrets: &Secrets,
        limits: &Limits,
        captured: &Captured,
        log: Arc<PluginLog>,
        quotas: Arc<Quotas>,
    ) -> Result<Self, String> {
        let egress = Egress::new(plugin, grants, secrets)?;
        let wasi = wasi_ctx(grants, captured, &egress)?;
        Ok(Self {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(limits),
            log,
            quotas,
            deadline: Instant::now() + limits.call_timeout(),
            egress,
            batch_source: None,
        })
    }

    /// Starts the clock of a call: it must end within `limits`' call timeout.
    pub(super) fn arm(&mut self, limits: &Limits) {
        self.deadline = Instant::now() + limits.call_timeout();
    }

    /// The source of the batch a `write-records` call is handed (`None`
    /// again once the call is over).
    pub(super) fn set_batch_source(&mut self, source: Option<BatchOrigin>) {
        self.batch_source = source;
    }

    pub(super) fn past_deadline(&self) -> bool {
        Instant::now() >= self.deadline
    }

    pub(super) fn limiter(&mut self) -> &mut MemoryLimiter {
        &mut self.limiter
    }

    /// The resource table the WASI interfaces share (`wasi:io` reads it
    /// directly).
    pub(super) fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }
}

/// The WASI context of one instance: the grants, and stdout/stderr captured.
fn wasi_ctx(grants: &Grants, captured: &Captured, egress: &Egress) -> Result<WasiCtx, String> {
    let mut builder = WasiCtxBuilder::new();
    egress.configure(&mut builder);
    builder.stdout(captured.clone()).stderr(captured.clone());
    for dir in &grants.dirs {
        let perms = if dir.writable {
            FsPerms::ReadWrite
        } else {
            FsPerms::ReadOnly
        };
        builder
            .preopened_dir(&dir.host, dir.guest_path(), perms)
            .map_err(|e| format!("cannot grant the directory {} (allow.dirs): {e:#}", dir.host.display()))?;
    }
    for name in &grants.env {
        // A granted variable that is unset is simply absent, as it would be
        // for a native program.
        if let Ok(value) = std::env::var(name) {
            builder.env(name, value);
        }
    }
    Ok(builder.build())
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl FilesView for State {
    fn quotas(&self) -> &Arc<Quotas> {
        &self.quotas
    }

    fn plugin_log(&self) -> &Arc<PluginLog> {
        &self.log
    }
}

impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        self.egress.http(&mut self.table)
    }
}

impl EgressView for State {
    fn egress(&self) -> &Egress {
        &self.egress
    }
}

impl bizon::destination::host::Host for State {
    fn log(&mut self, level: LogLevel, message: String) {
        self.log.log(level, &message);
    }

    fn batch_source(&mut self) -> Option<BatchOrigin> {
        self.batch_source.clone()
    }
}

impl bizon::destination::types::Host for State {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::grants::DirGrant;

    #[test]
    fn unset_granted_env_is_absent_and_missing_dir_is_an_error() {
        let grants = Grants {
            dirs: vec![DirGrant {
                host: "/definitely/not/here".into(),
                guest: None,
                writable: false,
                max_mb: None,
            }],
            ..Grants::default()
        };
        let egress = Egress::new("t.wasm", &grants, &Secrets::default()).unwrap();
        let Err(err) = wasi_ctx(&grants, &Captured::default(), &egress) else {
            panic!("granted a missing directory")
        };
        assert!(err.contains("/definitely/not/here"), "{err}");
    }
}
