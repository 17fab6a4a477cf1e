//! What the API's routes, the reconcile loop and plugin retention share:
//! the serve config, the registry, the tenants, the plugin store and the
//! supervisor.

use std::sync::Arc;

use super::config::ServeConfig;
use super::error::ApiError;
use super::pipelines::Supervisor;
use super::plugins::PluginStore;
use super::registry::Registry;
use super::secrets::Vault;
use super::tenants::{Tenant, Tenants};

pub struct State {
    pub config: ServeConfig,
    pub registry: Arc<Registry>,
    /// The key tenants' secrets are sealed with.
    pub vault: Arc<Vault>,
    pub tenants: Tenants,
    pub store: Arc<PluginStore>,
    pub supervisor: Arc<Supervisor>,
    /// The admin token's SHA-256.
    pub admin_hash: String,
}

impl State {
    pub fn tenant(&self, name: &str) -> Result<Arc<Tenant>, ApiError> {
        self.tenants
            .get(&self.registry, name)?
            .ok_or_else(|| ApiError::not_found("tenant", name))
    }
}
