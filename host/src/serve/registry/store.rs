//! What the registry holds and the operations both backends answer: the
//! rows, the [`Store`] every registry has, the [`Cluster`] a shared one
//! adds, and the helpers their stored columns are read with.

use serde::Serialize;

use super::super::limits::LimitOverrides;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("registry {url}: {message}")]
    Postgres { url: String, message: String },
    #[error("registry: a stored {what} is corrupt: {message}")]
    Corrupt { what: &'static str, message: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct TenantRow {
    pub name: String,
    pub limits: LimitOverrides,
}

#[derive(Debug, Clone, Serialize)]
pub struct PluginRow {
    pub name: String,
    pub version: u32,
    pub digest: String,
    pub size: u64,
    pub imports: Vec<String>,
    pub describe: serde_json::Value,
    pub compile_ms: u64,
}

/// A tenant's secret as the API lists it: never its value.
#[derive(Debug, Clone, Serialize)]
pub struct SecretRow {
    pub name: String,
    /// Seconds since the Unix epoch.
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone)]
pub struct PipelineRow {
    pub tenant: String,
    pub name: String,
    pub yaml: String,
    pub running: bool,
}

/// What one host runs of a pipeline, as it wrote it at its last reconcile.
#[derive(Debug, Clone, Serialize)]
pub struct HostStatus {
    pub host: String,
    pub state: String,
    pub records_read: u64,
    pub records_written: u64,
    pub plugin: Option<String>,
    pub plugin_version: Option<u32>,
    /// How long ago the host wrote it.
    pub age_ms: u64,
}

/// The registry's operations; both backends give the same answers.
pub trait Store: Send + Sync {
    /// False when the name is taken.
    fn create_tenant(&self, name: &str, token_hash: &str, limits: &LimitOverrides) -> Result<bool, RegistryError>;
    fn tenant_by_token(&self, token_hash: &str) -> Result<Option<String>, RegistryError>;
    fn tenant(&self, name: &str) -> Result<Option<TenantRow>, RegistryError>;
    fn tenants(&self) -> Result<Vec<TenantRow>, RegistryError>;
    /// False when there is no such tenant.
    fn set_limits(&self, name: &str, limits: &LimitOverrides) -> Result<bool, RegistryError>;
    /// Removes the tenant with its plugins and pipelines; false if there was none.
    fn delete_tenant(&self, name: &str) -> Result<bool, RegistryError>;
    /// Stores the next version of `row.name` and returns it. A shared
    /// registry keeps `bytes` too, in the same transaction, so no host sees
    /// a version whose bytes it cannot fetch.
    fn add_plugin(&self, tenant: &str, row: &PluginRow, bytes: &[u8]) -> Result<u32, RegistryError>;
    /// Every version of a tenant's plugins (of one, with `name`), oldest first.
    fn plugins(&self, tenant: &str, name: Option<&str>) -> Result<Vec<PluginRow>, RegistryError>;
    /// Digests some tenant's plugin still uses: what the blob store keeps.
    fn digests(&self) -> Result<Vec<String>, RegistryError>;
    fn remove_plugin_version(&self, tenant: &str, name: &str, version: u32) -> Result<(), RegistryError>;
    /// Stores a pipeline's YAML; `running` keeps its value when it exists.
    fn put_pipeline(&self, tenant: &str, name: &str, yaml: &str) -> Result<(), RegistryError>;
    fn pipeline(&self, tenant: &str, name: &str) -> Result<Option<PipelineRow>, RegistryError>;
    /// A tenant's pipelines, or with `tenant` None every tenant's.
    fn pipelines(&self, tenant: Option<&str>) -> Result<Vec<PipelineRow>, RegistryError>;
    fn count_pipelines(&self, tenant: &str) -> Result<usize, RegistryError>;
    /// Whether the pipeline should run: kept across restarts.
    fn set_running(&self, tenant: &str, name: &str, running: bool) -> Result<(), RegistryError>;
    fn delete_pipeline(&self, tenant: &str, name: &str) -> Result<bool, RegistryError>;
    /// Stores a tenant's secret, sealed (`serve::secrets`); true when it is new.
    fn put_secret(&self, tenant: &str, name: &str, sealed: &[u8]) -> Result<bool, RegistryError>;
    /// A tenant's secret, sealed.
    fn secret(&self, tenant: &str, name: &str) -> Result<Option<Vec<u8>>, RegistryError>;
    /// A tenant's secrets, by name.
    fn secrets(&self, tenant: &str) -> Result<Vec<SecretRow>, RegistryError>;
    fn delete_secret(&self, tenant: &str, name: &str) -> Result<bool, RegistryError>;
    /// A value sealed with the secrets key: which key the secrets need.
    fn key_check(&self) -> Result<Option<Vec<u8>>, RegistryError>;
    /// Stores the key's check value, unless there is one.
    fn set_key_check(&self, sealed: &[u8]) -> Result<(), RegistryError>;
    /// The operations only a registry several hosts share has.
    fn cluster(&self) -> Option<&dyn Cluster> {
        None
    }
}

/// What hosts sharing a registry tell each other.
pub trait Cluster: Send + Sync {
    /// An uploaded plugin's bytes, by digest.
    fn blob(&self, digest: &str) -> Result<Option<Vec<u8>>, RegistryError>;
    /// Takes or renews the pipeline's lease for `host` until `ttl_ms` from
    /// now (the database's clock, so hosts' clocks need not agree). None
    /// when `host` holds it now; else the host that does.
    fn take_lease(&self, tenant: &str, name: &str, host: &str, ttl_ms: u64) -> Result<Option<String>, RegistryError>;
    /// Gives the lease up, if `host` holds it.
    fn release_lease(&self, tenant: &str, name: &str, host: &str) -> Result<(), RegistryError>;
    /// Replaces what `host` said it runs with `rows` ((tenant, pipeline, status)).
    fn report(&self, host: &str, rows: &[(String, String, HostStatus)]) -> Result<(), RegistryError>;
    /// What hosts reported within `fresh_ms` for a tenant's pipeline (or all
    /// its pipelines): (pipeline, status).
    fn statuses(
        &self,
        tenant: &str,
        name: Option<&str>,
        fresh_ms: u64,
    ) -> Result<Vec<(String, HostStatus)>, RegistryError>;
}

pub(super) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A plugin version as both backends read it: name, version, digest, size,
/// imports and description as JSON text, compile milliseconds.
pub(super) type StoredPlugin = (String, u32, String, u64, String, String, u64);

impl TenantRow {
    /// A tenant from its stored columns (the limits as JSON text).
    pub(super) fn stored(name: String, limits: &str) -> Result<Self, RegistryError> {
        Ok(Self {
            name,
            limits: json("tenant's limits", limits)?,
        })
    }
}

impl PluginRow {
    pub(super) fn stored(
        (name, version, digest, size, imports, describe, compile_ms): StoredPlugin,
    ) -> Result<Self, RegistryError> {
        Ok(Self {
            name,
            version,
            digest,
            size,
            imports: json("plugin's imports", &imports)?,
            describe: json("plugin's description", &describe)?,
            compile_ms,
        })
    }
}

fn json<T: serde::de::DeserializeOwned>(what: &'static str, text: &str) -> Result<T, RegistryError> {
    serde_json::from_str(text).map_err(|e| RegistryError::Corrupt {
        what,
        message: e.to_string(),
    })
}
