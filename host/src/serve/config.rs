//! `serve.yaml`: where the server listens and keeps its data, the admin
//! token's file, the host-wide plugin memory budget and the limits every
//! tenant gets unless the operator gave it its own.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::limits::TenantLimits;
use super::registry::Location;
use crate::config::from_yaml;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Located like a pipeline file's errors: file:line:column and the
    /// field's path.
    #[error("{0}")]
    File(#[from] crate::config::ConfigError),
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
    /// Native destinations tenants may use besides `wasm`: any of
    /// [`NATIVE_DESTINATIONS`], each confined to the tenant (its egress
    /// ceiling, its secrets, its files directory, its shares).
    #[serde(default)]
    pub native_destinations: Vec<String>,
    /// The key tenants' secrets are sealed with (default
    /// `<data_dir>/secrets.key`, made at the first start).
    #[serde(default)]
    pub secrets_key_file: Option<PathBuf>,
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

/// What `native_destinations` may offer.
pub const NATIVE_DESTINATIONS: &[&str] = &[
    "logger",
    "file",
    "bigquery",
    "bigquery_streaming",
    "bigquery_streaming_v2",
];

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
        from_yaml("{}", "serve.yaml").expect("every field has a default")
    }
}

impl ServeConfig {
    /// Reads the serve config through the pipeline files' loader.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let unplaced = |message: String| crate::config::ConfigError::at(&file, 0, 0, message);
        let text = std::fs::read_to_string(path).map_err(|e| unplaced(e.to_string()))?;
        let config: ServeConfig = from_yaml(&text, &file)?;
        if config.reconcile_interval_ms < 100 {
            return Err(unplaced("reconcile_interval_ms: at least 100".into()).into());
        }
        if let Some(bad) = config
            .native_destinations
            .iter()
            .find(|d| !NATIVE_DESTINATIONS.contains(&d.as_str()))
        {
            return Err(unplaced(format!(
                "native_destinations: `{bad}` cannot be offered to tenants (one of: {})",
                NATIVE_DESTINATIONS.join(", ")
            ))
            .into());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_field_is_named_with_its_path_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serve.yaml");
        std::fs::write(
            &path,
            "listen: 127.0.0.1:8700
limits:
  memory_mb: lots
",
        )
        .unwrap();
        let message = ServeConfig::load(&path).unwrap_err().to_string();
        let at = format!("{}:3:", path.display());
        assert!(message.starts_with(&at), "{message}");
        assert!(message.contains("limits.memory_mb"), "{message}");
    }

    #[test]
    fn checks_after_parsing_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serve.yaml");
        std::fs::write(
            &path,
            "reconcile_interval_ms: 10
",
        )
        .unwrap();
        let message = ServeConfig::load(&path).unwrap_err().to_string();
        assert_eq!(
            message,
            format!("{}: reconcile_interval_ms: at least 100", path.display())
        );
    }
}
