//! What a tenant may use: the limits every tenant gets (the serve
//! config's `limits`) and a tenant's own overrides of them (the registry
//! keeps those; the API's `limits` field).

use serde::{Deserialize, Serialize};

use crate::plugin::HostRule;

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
    /// Secrets stored.
    pub secrets: usize,
    /// Largest secret value, in KiB (a service account key is about 2.3).
    pub secret_kb: u64,
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
            secrets: 32,
            secret_kb: 64,
        }
    }
}

/// A tenant's own limits: the keys it was given, stored as given (a key set
/// to today's default stays pinned when the default changes); a key not
/// given follows the server's default.
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_kb: Option<u64>,
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
            secrets: self.secrets.unwrap_or(defaults.secrets),
            secret_kb: self.secret_kb.unwrap_or(defaults.secret_kb),
        }
    }
}
