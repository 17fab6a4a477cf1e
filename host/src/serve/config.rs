//! `serve.yaml`: where the server listens and keeps its data, the admin
//! token's file, the host-wide plugin memory budget and the limits every
//! tenant gets unless the operator gave it its own.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::registry::Location;
use crate::plugin::HostRule;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {message}")]
    File { file: String, message: String },
    #[error("no admin token: set BIZON_HOST_ADMIN_TOKEN or name a file with `admin_token_file` in the serve config")]
    NoAdminToken,
    #[error("admin token ({origin}): {message}")]
    AdminToken { origin: String, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// A file holding the admin token (its first line); the environment's
    /// BIZON_HOST_ADMIN_TOKEN wins.
    #[serde(default)]
    pub admin_token_file: Option<PathBuf>,
    /// Memory all tenants' plugin instances may hold together, in MiB
    /// (default: the process-wide budget, half the machine's memory).
    #[serde(default)]
    pub plugin_memory_budget_mb: Option<u64>,
    /// Memory all tenants' pipelines may hold in records read and not yet
    /// written, in MiB (default: an eighth of the machine's memory).
    #[serde(default)]
    pub read_ahead_budget_mb: Option<u64>,
    /// Plugin instances alive at once across all tenants (the engine's
    /// pool; each running pipeline holds at least one).
    #[serde(default = "default_live_instances")]
    pub live_instances: u32,
    /// Plugin uploads compiled at once; the rest wait their turn.
    #[serde(default = "one")]
    pub compile_concurrency: usize,
    /// Native destinations tenants may use besides `wasm` (only `logger`
    /// is offered: the others write where the host's own credentials and
    /// paths reach).
    #[serde(default)]
    pub native_destinations: Vec<String>,
    /// What every tenant gets unless created with its own.
    #[serde(default)]
    pub limits: TenantLimits,
    /// Where tenants, plugins and pipelines are kept: `sqlite` (the data
    /// dir's registry.sqlite) or a `postgres://user:pass@host:port/db` URL
    /// that several hosts share (docs/serve.md, "Several hosts").
    #[serde(default)]
    pub registry: Location,
    /// This host's name among those sharing a registry (default: the
    /// machine's hostname and the listen address).
    #[serde(default)]
    pub host_id: Option<String>,
    /// With a shared registry, how often a host brings what it runs in line
    /// with it. A lease on a pipeline lasts three of these.
    #[serde(default = "default_reconcile_interval_ms")]
    pub reconcile_interval_ms: u64,
}

/// Shortest admin token accepted.
const MIN_ADMIN_TOKEN: usize = 16;

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8700))
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("bizon-data")
}

fn default_live_instances() -> u32 {
    2000
}

fn default_reconcile_interval_ms() -> u64 {
    2000
}

fn one() -> usize {
    1
}

impl Default for ServeConfig {
    fn default() -> Self {
        serde_saphyr::from_str("{}").expect("every field has a default")
    }
}

impl ServeConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            file: file.clone(),
            message: e.to_string(),
        })?;
        let config: ServeConfig = serde_saphyr::from_str(&text).map_err(|e| ConfigError::File {
            file: file.clone(),
            message: e.to_string(),
        })?;
        if config.reconcile_interval_ms < 100 {
            return Err(ConfigError::File {
                file,
                message: "reconcile_interval_ms: at least 100".into(),
            });
        }
        if let Some(bad) = config.native_destinations.iter().find(|d| *d != "logger") {
            return Err(ConfigError::File {
                file,
                message: format!("native_destinations: `{bad}` cannot be offered to tenants (only `logger`)"),
            });
        }
        Ok(config)
    }

    /// BIZON_HOST_ADMIN_TOKEN, else the first line of `admin_token_file`.
    pub fn admin_token(&self) -> Result<String, ConfigError> {
        let from_env = std::env::var("BIZON_HOST_ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty());
        let (token, origin) = match (from_env, &self.admin_token_file) {
            (Some(token), _) => (token, "BIZON_HOST_ADMIN_TOKEN".to_string()),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError::AdminToken {
                    origin: path.display().to_string(),
                    message: e.to_string(),
                })?;
                (
                    text.lines().next().unwrap_or("").to_string(),
                    path.display().to_string(),
                )
            }
            (None, None) => return Err(ConfigError::NoAdminToken),
        };
        let token = token.trim().to_string();
        if token.len() < MIN_ADMIN_TOKEN {
            return Err(ConfigError::AdminToken {
                origin,
                message: format!("the admin token must be at least {MIN_ADMIN_TOKEN} characters"),
            });
        }
        Ok(token)
    }
}

/// What one tenant may use. Each field left out of a tenant's own limits
/// takes the serve config's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantLimits {
    /// Memory all the tenant's plugin instances hold together, in MiB.
    pub memory_mb: u64,
    /// Live plugin instances at once, all its pipelines together.
    pub instances: usize,
    /// Pipelines stored.
    pub pipelines: usize,
    /// Largest plugin upload, in MiB.
    pub plugin_mb: u64,
    /// Bytes its plugins may write under its files directory, in MiB (the
    /// sum of the `max_mb` of its running pipelines' writable grants).
    pub disk_mb: u64,
    /// The hosts its pipelines may grant (`allow.hosts`) and its Kafka
    /// brokers may be: each must be inside one of these. Empty: none.
    pub egress: Vec<HostRule>,
    /// Longest a plugin call may take, in milliseconds.
    pub call_timeout_ms: u64,
    /// Log lines per second kept for its pipelines.
    pub log_lines_per_s: u32,
    /// Cores its plugin calls and pipelines may use together (0.5: half of
    /// one); over it, they wait.
    pub cpu_cores: f64,
    /// Records read and not yet written, all its pipelines together, in
    /// MiB; over it, they read no more until their writes give it back.
    pub read_ahead_mb: u64,
}

impl Default for TenantLimits {
    fn default() -> Self {
        Self {
            memory_mb: 512,
            instances: 8,
            pipelines: 20,
            plugin_mb: 16,
            disk_mb: 1024,
            egress: Vec::new(),
            call_timeout_ms: 30_000,
            log_lines_per_s: 50,
            cpu_cores: 1.0,
            read_ahead_mb: 64,
        }
    }
}

/// A tenant's own limits: only what differs from the defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipelines: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Vec<HostRule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_lines_per_s: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_cores: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_ahead_mb: Option<u64>,
}

impl LimitOverrides {
    pub fn over(&self, defaults: &TenantLimits) -> TenantLimits {
        TenantLimits {
            memory_mb: self.memory_mb.unwrap_or(defaults.memory_mb),
            instances: self.instances.unwrap_or(defaults.instances),
            pipelines: self.pipelines.unwrap_or(defaults.pipelines),
            plugin_mb: self.plugin_mb.unwrap_or(defaults.plugin_mb),
            disk_mb: self.disk_mb.unwrap_or(defaults.disk_mb),
            egress: self.egress.clone().unwrap_or_else(|| defaults.egress.clone()),
            call_timeout_ms: self.call_timeout_ms.unwrap_or(defaults.call_timeout_ms),
            log_lines_per_s: self.log_lines_per_s.unwrap_or(defaults.log_lines_per_s),
            cpu_cores: self.cpu_cores.unwrap_or(defaults.cpu_cores),
            read_ahead_mb: self.read_ahead_mb.unwrap_or(defaults.read_ahead_mb),
        }
    }
}
