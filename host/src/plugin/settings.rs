//! What a plugin load is given besides the component's bytes, in two parts
//! kept apart: the [`Request`] (what the pipeline asked for: limits, grants,
//! its config) and the [`HostPolicy`] (what the host decides: where compiled
//! code is kept, how large a component may be, the memory budget and CPU
//! share its instances count against, how messages name it). `serve` builds
//! its own policy for each tenant; a pipeline cannot set any of it.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::cache;
use super::grants::Grants;
use super::limits::Limits;
use crate::config::secret::Secrets;
use crate::quota::budget::{self, MemoryBudget};
use crate::quota::cpu::CpuShare;

/// Largest component file accepted by default, in MiB. Compile time and
/// memory grow with the size (a 100 MB component took 26 s and 869 MB).
pub const DEFAULT_MAX_COMPONENT_MB: u64 = 64;
/// Longest a component may take to compile.
pub const COMPILE_TIMEOUT: Duration = Duration::from_secs(120);

/// What a pipeline asks of a plugin: its limits, its grants, its config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub limits: Limits,
    pub grants: Grants,
    /// The plugin's `open` argument: its config as a JSON object.
    pub config_json: String,
}

impl Default for Request {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            grants: Grants::default(),
            config_json: "{}".into(),
        }
    }
}

/// What the host decides for a plugin, whatever its pipeline says.
#[derive(Debug, Clone)]
pub struct HostPolicy {
    /// Where compiled artifacts are kept; `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
    /// Largest component file accepted, in MiB.
    pub max_component_mb: u64,
    /// What all live instances may hold together: the host-wide budget, or
    /// a tenant's.
    pub budget: Arc<MemoryBudget>,
    /// The CPU share its calls run under (a tenant's); none: unpaced.
    pub cpu: Option<Arc<CpuShare>>,
    /// How messages name the plugin; its file path when `None` (`serve`
    /// names it `NAME@VERSION`, not where the host keeps it).
    pub label: Option<String>,
    /// Wall time a compile may take ([`COMPILE_TIMEOUT`]; `serve` bounds
    /// its compiles' CPU time instead).
    pub compile_timeout: Duration,
    /// A `serve` tenant's secrets its grants name (`from: secret:NAME`);
    /// empty for `bizon-host run`, whose grants read `env:` and `file:`.
    pub secrets: Secrets,
}

impl HostPolicy {
    /// What `bizon-host run` (and `check`, `plugin ...`) gives every plugin:
    /// the default compile cache, `--max-component-mb`, the host-wide memory
    /// budget, no CPU share, the file's path as its name.
    pub fn for_run() -> Self {
        Self {
            cache_dir: cache::default_dir(),
            max_component_mb: max_component_mb(),
            budget: budget::global(),
            cpu: None,
            label: None,
            compile_timeout: COMPILE_TIMEOUT,
            secrets: Secrets::default(),
        }
    }
}

static MAX_COMPONENT_MB: OnceLock<u64> = OnceLock::new();

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
