//! The registry of one host: an embedded SQLite database
//! (`<data-dir>/registry.sqlite`); plugins' bytes stay in the data dir.
//! Every query is a few rows by primary key, done under one connection's
//! lock.

use parking_lot::{Mutex, MutexGuard};
use std::path::Path;

use super::super::limits::LimitOverrides;
use super::store::{now, PipelineRow, PluginRow, RegistryError, SecretRow, Store, TenantRow};
use rusqlite::{params, Connection, OptionalExtension};

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA foreign_keys = ON;
CREATE TABLE IF NOT EXISTS tenants (
    name TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    limits TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS plugins (
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    digest TEXT NOT NULL,
    size INTEGER NOT NULL,
    imports TEXT NOT NULL,
    describe TEXT NOT NULL,
    compile_ms INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, name, version)
);
CREATE TABLE IF NOT EXISTS pipelines (
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    yaml TEXT NOT NULL,
    running INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, name)
);
CREATE TABLE IF NOT EXISTS secrets (
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    sealed BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, name)
);
CREATE TABLE IF NOT EXISTS secrets_key (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    sealed BLOB NOT NULL
);
";

pub struct Sqlite {
    conn: Mutex<Connection>,
}

impl Sqlite {
    pub fn open(path: &Path) -> Result<Self, RegistryError> {
        let conn = Connection::open(path)?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self { conn: Mutex::new(conn) })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock()
    }
}

impl Store for Sqlite {
    /// False when the name is taken.
    fn create_tenant(&self, name: &str, token_hash: &str, limits: &LimitOverrides) -> Result<bool, RegistryError> {
        let limits = serde_json::to_string(limits).expect("limits serialize");
        let n = self.conn().execute(
            "INSERT INTO tenants (name, token_hash, limits, created_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
            params![name, token_hash, limits, now()],
        )?;
        Ok(n == 1)
    }

    fn tenant_by_token(&self, token_hash: &str) -> Result<Option<String>, RegistryError> {
        Ok(self
            .conn()
            .query_row("SELECT name FROM tenants WHERE token_hash = ?1", [token_hash], |r| {
                r.get(0)
            })
            .optional()?)
    }

    fn tenant(&self, name: &str) -> Result<Option<TenantRow>, RegistryError> {
        let limits: Option<String> = self
            .conn()
            .query_row("SELECT limits FROM tenants WHERE name = ?1", [name], |r| r.get(0))
            .optional()?;
        limits.map(|l| TenantRow::stored(name.to_string(), &l)).transpose()
    }

    fn tenants(&self) -> Result<Vec<TenantRow>, RegistryError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT name, limits FROM tenants ORDER BY name")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(|(name, l)| TenantRow::stored(name, &l)).collect()
    }

    /// False when there is no such tenant.
    fn set_limits(&self, name: &str, limits: &LimitOverrides) -> Result<bool, RegistryError> {
        let limits = serde_json::to_string(limits).expect("limits serialize");
        let n = self
            .conn()
            .execute("UPDATE tenants SET limits = ?2 WHERE name = ?1", params![name, limits])?;
        Ok(n == 1)
    }

    /// Removes the tenant with its plugins and pipelines; false if there was none.
    fn delete_tenant(&self, name: &str) -> Result<bool, RegistryError> {
        Ok(self.conn().execute("DELETE FROM tenants WHERE name = ?1", [name])? == 1)
    }

    /// Stores the next version of `name` and returns it.
    fn add_plugin(&self, tenant: &str, row: &PluginRow, _bytes: &[u8]) -> Result<u32, RegistryError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let version: u32 = tx.query_row(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM plugins WHERE tenant = ?1 AND name = ?2",
            params![tenant, row.name],
            |r| r.get(0),
        )?;
        tx.execute(
            "INSERT INTO plugins (tenant, name, version, digest, size, imports, describe, compile_ms, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                tenant,
                row.name,
                version,
                row.digest,
                row.size as i64,
                serde_json::to_string(&row.imports).expect("strings serialize"),
                row.describe.to_string(),
                row.compile_ms as i64,
                now()
            ],
        )?;
        tx.commit()?;
        Ok(version)
    }

    /// Every version of a tenant's plugins (of one, with `name`), oldest first.
    fn plugins(&self, tenant: &str, name: Option<&str>) -> Result<Vec<PluginRow>, RegistryError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT name, version, digest, size, imports, describe, compile_ms FROM plugins
             WHERE tenant = ?1 AND (?2 IS NULL OR name = ?2) ORDER BY name, version",
        )?;
        let rows = stmt
            .query_map(params![tenant, name], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, u32>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)? as u64,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, i64>(6)? as u64,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(PluginRow::stored).collect()
    }

    /// Digests some tenant's plugin still uses: what the blob store keeps.
    fn digests(&self) -> Result<Vec<String>, RegistryError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT DISTINCT digest FROM plugins")?;
        let rows = stmt.query_map([], |r| r.get(0))?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn remove_plugin_version(&self, tenant: &str, name: &str, version: u32) -> Result<(), RegistryError> {
        self.conn().execute(
            "DELETE FROM plugins WHERE tenant = ?1 AND name = ?2 AND version = ?3",
            params![tenant, name, version],
        )?;
        Ok(())
    }

    /// Stores a pipeline's YAML; `running` keeps its value when it exists.
    fn put_pipeline(&self, tenant: &str, name: &str, yaml: &str) -> Result<(), RegistryError> {
        self.conn().execute(
            "INSERT INTO pipelines (tenant, name, yaml) VALUES (?1, ?2, ?3)
             ON CONFLICT (tenant, name) DO UPDATE SET yaml = excluded.yaml",
            params![tenant, name, yaml],
        )?;
        Ok(())
    }

    fn pipeline(&self, tenant: &str, name: &str) -> Result<Option<PipelineRow>, RegistryError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT yaml, running FROM pipelines WHERE tenant = ?1 AND name = ?2",
                params![tenant, name],
                |r| {
                    Ok(PipelineRow {
                        tenant: tenant.to_string(),
                        name: name.to_string(),
                        yaml: r.get(0)?,
                        running: r.get(1)?,
                    })
                },
            )
            .optional()?)
    }

    /// A tenant's pipelines, or with `tenant` None every tenant's.
    fn pipelines(&self, tenant: Option<&str>) -> Result<Vec<PipelineRow>, RegistryError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT tenant, name, yaml, running FROM pipelines WHERE ?1 IS NULL OR tenant = ?1 ORDER BY tenant, name",
        )?;
        let rows = stmt
            .query_map([tenant], |r| {
                Ok(PipelineRow {
                    tenant: r.get(0)?,
                    name: r.get(1)?,
                    yaml: r.get(2)?,
                    running: r.get(3)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn count_pipelines(&self, tenant: &str) -> Result<usize, RegistryError> {
        let n: i64 = self
            .conn()
            .query_row("SELECT COUNT(*) FROM pipelines WHERE tenant = ?1", [tenant], |r| {
                r.get(0)
            })?;
        Ok(n as usize)
    }

    /// Whether the pipeline should run: kept across restarts.
    fn set_running(&self, tenant: &str, name: &str, running: bool) -> Result<(), RegistryError> {
        self.conn().execute(
            "UPDATE pipelines SET running = ?3 WHERE tenant = ?1 AND name = ?2",
            params![tenant, name, running],
        )?;
        Ok(())
    }

    fn delete_pipeline(&self, tenant: &str, name: &str) -> Result<bool, RegistryError> {
        Ok(self.conn().execute(
            "DELETE FROM pipelines WHERE tenant = ?1 AND name = ?2",
            params![tenant, name],
        )? == 1)
    }

    fn put_secret(&self, tenant: &str, name: &str, sealed: &[u8]) -> Result<bool, RegistryError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let existed = tx
            .query_row(
                "SELECT 1 FROM secrets WHERE tenant = ?1 AND name = ?2",
                params![tenant, name],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        let at = now();
        tx.execute(
            "INSERT INTO secrets (tenant, name, sealed, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)
             ON CONFLICT (tenant, name) DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at",
            params![tenant, name, sealed, at],
        )?;
        tx.commit()?;
        Ok(!existed)
    }

    fn secret(&self, tenant: &str, name: &str) -> Result<Option<Vec<u8>>, RegistryError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT sealed FROM secrets WHERE tenant = ?1 AND name = ?2",
                params![tenant, name],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn secrets(&self, tenant: &str) -> Result<Vec<SecretRow>, RegistryError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT name, created_at, updated_at FROM secrets WHERE tenant = ?1 ORDER BY name")?;
        let rows = stmt
            .query_map([tenant], |r| {
                Ok(SecretRow {
                    name: r.get(0)?,
                    created_at: r.get(1)?,
                    updated_at: r.get(2)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn delete_secret(&self, tenant: &str, name: &str) -> Result<bool, RegistryError> {
        Ok(self.conn().execute(
            "DELETE FROM secrets WHERE tenant = ?1 AND name = ?2",
            params![tenant, name],
        )? == 1)
    }

    fn key_check(&self) -> Result<Option<Vec<u8>>, RegistryError> {
        Ok(self
            .conn()
            .query_row("SELECT sealed FROM secrets_key WHERE id = 1", [], |r| r.get(0))
            .optional()?)
    }

    fn set_key_check(&self, sealed: &[u8]) -> Result<(), RegistryError> {
        self.conn().execute(
            "INSERT INTO secrets_key (id, sealed) VALUES (1, ?1) ON CONFLICT DO NOTHING",
            [sealed],
        )?;
        Ok(())
    }
}
