//! Tenants as the server holds them: their limits (the serve config's
//! defaults under their own), their shares of the host's plugin memory and
//! read-ahead budgets, and their files directory,
//! `<data-dir>/tenants/<name>/files/`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::limits::TenantLimits;
use super::registry::{Registry, RegistryError};
use crate::quota::budget::MemoryBudget;
use crate::quota::cpu::CpuShare;
use crate::quota::ReadAheadPool;

pub struct Tenant {
    pub name: String,
    pub limits: TenantLimits,
    /// All the tenant's instances together, inside the host's budget.
    pub budget: Arc<MemoryBudget>,
    /// All the tenant's plugin calls together.
    pub cpu: Arc<CpuShare>,
    /// All the tenant's pipelines' records read and not yet written.
    pub read_ahead: Arc<ReadAheadPool>,
    pub files: PathBuf,
}

pub struct Tenants {
    data_dir: PathBuf,
    defaults: TenantLimits,
    host_budget: Arc<MemoryBudget>,
    host_read_ahead: Arc<ReadAheadPool>,
    loaded: Mutex<HashMap<String, Arc<Tenant>>>,
    /// One lock a tenant, kept across reloads: see [`Tenants::turn`].
    turns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Tenants {
    pub fn new(
        data_dir: &Path,
        defaults: TenantLimits,
        host_budget: Arc<MemoryBudget>,
        host_read_ahead: Arc<ReadAheadPool>,
    ) -> Self {
        Self {
            data_dir: data_dir.to_path_buf(),
            defaults,
            host_budget,
            host_read_ahead,
            loaded: Mutex::new(HashMap::new()),
            turns: Mutex::new(HashMap::new()),
        }
    }

    pub fn defaults(&self) -> &TenantLimits {
        &self.defaults
    }

    pub fn host_budget(&self) -> &Arc<MemoryBudget> {
        &self.host_budget
    }

    pub fn dir(&self, name: &str) -> PathBuf {
        self.data_dir.join("tenants").join(name)
    }

    /// The tenant, loaded once from the registry; `None` if there is none.
    pub fn get(&self, registry: &Registry, name: &str) -> Result<Option<Arc<Tenant>>, RegistryError> {
        if let Some(t) = self.lock().get(name) {
            return Ok(Some(t.clone()));
        }
        let Some(row) = registry.tenant(name)? else {
            return Ok(None);
        };
        let limits = row.limits.over(&self.defaults);
        let tenant = Arc::new(Tenant {
            name: name.to_string(),
            budget: MemoryBudget::share(
                &format!("tenant {name}"),
                limits.memory_mb,
                limits.instances as u64,
                self.host_budget.clone(),
            ),
            files: self.dir(name).join("files"),
            cpu: Arc::new(CpuShare::new(limits.cpu_cores)),
            read_ahead: ReadAheadPool::share(limits.read_ahead_mb, self.host_read_ahead.clone()),
            limits,
        });
        std::fs::create_dir_all(&tenant.files).map_err(|e| RegistryError::Corrupt {
            what: "tenant directory",
            message: format!("{}: {e}", tenant.files.display()),
        })?;
        Ok(Some(self.lock().entry(name.to_string()).or_insert(tenant).clone()))
    }

    /// Reloads the tenant's limits from the registry. Its memory and CPU
    /// shares are resized in place, so they bind its running pipelines at
    /// once; the other limits gate what it does next (uploads, stores,
    /// starts), as running pipelines were checked when they started.
    pub fn reload(&self, registry: &Registry, name: &str) -> Result<Option<Arc<Tenant>>, RegistryError> {
        let Some(old) = self.lock().get(name).cloned() else {
            return self.get(registry, name);
        };
        let Some(row) = registry.tenant(name)? else {
            return Ok(None);
        };
        let limits = row.limits.over(&self.defaults);
        old.budget.resize(limits.memory_mb, limits.instances as u64);
        old.cpu.set_cores(limits.cpu_cores);
        old.read_ahead.resize(limits.read_ahead_mb);
        let tenant = Arc::new(Tenant {
            name: name.to_string(),
            budget: old.budget.clone(),
            cpu: old.cpu.clone(),
            read_ahead: old.read_ahead.clone(),
            files: old.files.clone(),
            limits,
        });
        self.lock().insert(name.to_string(), tenant.clone());
        Ok(Some(tenant))
    }

    /// Names of the tenants loaded here.
    pub fn loaded(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// The tenant as loaded here, without asking the registry.
    pub fn loaded_tenant(&self, name: &str) -> Option<Arc<Tenant>> {
        self.lock().get(name).cloned()
    }

    pub fn forget(&self, name: &str) {
        self.lock().remove(name);
    }

    /// The tenant's turn: its plugin version changes, pipeline starts and
    /// the collection of unused versions (`super::retention`) take turns,
    /// so a version cannot be removed between a pipeline choosing it and
    /// running it.
    pub async fn turn(&self, name: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let turn = self.turns.lock().entry(name.to_string()).or_default().clone();
        turn.lock_owned().await
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, HashMap<String, Arc<Tenant>>> {
        self.loaded.lock()
    }
}
