//! The registry several hosts share: a PostgreSQL database. Besides the
//! tables SQLite has, it keeps the plugins' bytes (`blobs`), the leases of
//! pipelines that must run on one host at a time (`leases`) and what each
//! host runs (`host_status`).
//!
//! The sync `postgres` client is owned by one dedicated std thread and asked
//! over a channel. Why not tokio-postgres: every registry call is sync
//! today (handlers call it like the SQLite one, under no await), and the
//! sync client blocks on a runtime of its own, which panics on a tokio
//! worker thread ("Cannot start a runtime from within a runtime"). On its
//! own thread it never meets the server's runtime, the method API stays the
//! same for both backends, and calls are serialized like SQLite's under its
//! lock (each is a few rows by key).

use std::sync::mpsc;
use std::time::Duration;

use postgres::{Client, NoTls};

use super::super::limits::LimitOverrides;
use super::store::{
    now, Cluster, HostStatus, PipelineRow, PluginRow, RegistryError, SecretRow, Store, StoredPlugin, TenantRow,
};

/// Two hosts starting at once create the schema in turn (an advisory lock):
/// concurrent `CREATE TABLE IF NOT EXISTS` can fail on the catalog.
const SCHEMA: &str = "
SELECT pg_advisory_xact_lock(7243015);
CREATE TABLE IF NOT EXISTS tenants (
    name TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    limits TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS plugins (
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    digest TEXT NOT NULL,
    size BIGINT NOT NULL,
    imports TEXT NOT NULL,
    describe TEXT NOT NULL,
    compile_ms BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, name, version)
);
CREATE TABLE IF NOT EXISTS pipelines (
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    yaml TEXT NOT NULL,
    running BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (tenant, name)
);
CREATE TABLE IF NOT EXISTS blobs (
    digest TEXT PRIMARY KEY,
    bytes BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    host TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant, name),
    FOREIGN KEY (tenant, name) REFERENCES pipelines (tenant, name) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS secrets (
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    sealed BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, name)
);
CREATE TABLE IF NOT EXISTS secrets_key (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    sealed BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS host_status (
    host TEXT NOT NULL,
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    records_read BIGINT NOT NULL,
    records_written BIGINT NOT NULL,
    plugin TEXT,
    plugin_version INTEGER,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (host, tenant, name)
);
";

/// Bytes no plugin version names any more.
const COLLECT_BLOBS: &str = "DELETE FROM blobs WHERE digest NOT IN (SELECT digest FROM plugins)";

type Job = Box<dyn FnOnce(Result<&mut Client, String>) + Send>;

pub struct Postgres {
    /// Without its password: for messages.
    url: String,
    jobs: mpsc::Sender<Job>,
}

fn connect(url: &str) -> Result<Client, String> {
    let mut config: postgres::Config = url.parse().map_err(|e: postgres::Error| describe(&e))?;
    config.connect_timeout(Duration::from_secs(5));
    config.connect(NoTls).map_err(|e| describe(&e))
}

/// The server's own message for a database error; otherwise the error with
/// its cause, which the client's message leaves out ("error connecting to
/// server" alone does not say the connection was refused or timed out).
fn describe(e: &postgres::Error) -> String {
    match (e.as_db_error(), std::error::Error::source(e)) {
        (Some(db), _) => db.to_string(),
        (None, Some(cause)) => format!("{e}: {cause}"),
        (None, None) => e.to_string(),
    }
}

impl Postgres {
    /// Connects and creates the schema; then the connection's thread serves
    /// calls, reconnecting when the connection was lost.
    pub fn open(url: &str) -> Result<Self, RegistryError> {
        let shown = redact(url);
        let fail = |message: String| RegistryError::Postgres {
            url: shown.clone(),
            message,
        };
        let (jobs, queue) = mpsc::channel::<Job>();
        let (ready, opened) = mpsc::sync_channel(1);
        let url = url.to_string();
        // Connecting blocks on the client's own runtime too: on this thread.
        std::thread::Builder::new()
            .name("registry-postgres".into())
            .spawn(move || {
                let mut client = connect(&url).and_then(|mut client| {
                    let mut tx = client.transaction().map_err(|e| describe(&e))?;
                    tx.batch_execute(SCHEMA).map_err(|e| describe(&e))?;
                    tx.commit().map_err(|e| describe(&e))?;
                    Ok(client)
                });
                let failed = client.as_ref().err().cloned();
                let _ = ready.send(failed.clone().map_or(Ok(()), Err));
                if failed.is_some() {
                    return;
                }
                for job in queue {
                    if client.as_ref().is_ok_and(Client::is_closed) || client.is_err() {
                        client = connect(&url);
                    }
                    job(client.as_mut().map_err(|e| e.clone()));
                }
            })
            .map_err(|e| fail(e.to_string()))?;
        opened
            .recv()
            .map_err(|_| fail("the registry's connection thread ended".into()))?
            .map_err(fail)?;
        Ok(Self { url: shown, jobs })
    }

    /// Runs `f` on the connection's thread and waits for its answer. The
    /// caller blocks like it does on SQLite's lock: a few rows by key.
    fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<R, postgres::Error> + Send + 'static,
    ) -> Result<R, RegistryError> {
        let (reply, answer) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |client| {
            let _ = reply.send(match client {
                Ok(client) => f(client).map_err(|e| describe(&e)),
                Err(e) => Err(e),
            });
        });
        let gone = || "the registry's connection thread ended".to_string();
        let result = match self.jobs.send(job) {
            Ok(()) => answer.recv().unwrap_or_else(|_| Err(gone())),
            Err(_) => Err(gone()),
        };
        result.map_err(|message| RegistryError::Postgres {
            url: self.url.clone(),
            message,
        })
    }
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

fn plugin_row(r: &postgres::Row) -> StoredPlugin {
    (
        r.get(0),
        r.get::<_, i32>(1) as u32,
        r.get(2),
        r.get::<_, i64>(3) as u64,
        r.get(4),
        r.get(5),
        r.get::<_, i64>(6) as u64,
    )
}

fn pipeline_row(r: &postgres::Row) -> PipelineRow {
    PipelineRow {
        tenant: r.get(0),
        name: r.get(1),
        yaml: r.get(2),
        running: r.get(3),
    }
}

impl Store for Postgres {
    fn create_tenant(&self, name: &str, token_hash: &str, limits: &LimitOverrides) -> Result<bool, RegistryError> {
        let (name, token_hash) = (name.to_string(), token_hash.to_string());
        let limits = serde_json::to_string(limits).expect("limits serialize");
        self.call(move |c| {
            c.execute(
                "INSERT INTO tenants (name, token_hash, limits, created_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT DO NOTHING",
                &[&name, &token_hash, &limits, &now()],
            )
        })
        .map(|n| n == 1)
    }

    fn tenant_by_token(&self, token_hash: &str) -> Result<Option<String>, RegistryError> {
        let token_hash = token_hash.to_string();
        self.call(move |c| {
            c.query_opt("SELECT name FROM tenants WHERE token_hash = $1", &[&token_hash])
                .map(|r| r.map(|r| r.get(0)))
        })
    }

    fn tenant(&self, name: &str) -> Result<Option<TenantRow>, RegistryError> {
        let key = name.to_string();
        let limits: Option<String> = self.call(move |c| {
            c.query_opt("SELECT limits FROM tenants WHERE name = $1", &[&key])
                .map(|r| r.map(|r| r.get(0)))
        })?;
        limits.map(|l| TenantRow::stored(name.to_string(), &l)).transpose()
    }

    fn tenants(&self) -> Result<Vec<TenantRow>, RegistryError> {
        let rows: Vec<(String, String)> = self.call(|c| {
            c.query("SELECT name, limits FROM tenants ORDER BY name", &[])
                .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })?;
        rows.into_iter().map(|(name, l)| TenantRow::stored(name, &l)).collect()
    }

    fn set_limits(&self, name: &str, limits: &LimitOverrides) -> Result<bool, RegistryError> {
        let name = name.to_string();
        let limits = serde_json::to_string(limits).expect("limits serialize");
        self.call(move |c| c.execute("UPDATE tenants SET limits = $2 WHERE name = $1", &[&name, &limits]))
            .map(|n| n == 1)
    }

    fn delete_tenant(&self, name: &str) -> Result<bool, RegistryError> {
        let name = name.to_string();
        self.call(move |c| {
            let mut tx = c.transaction()?;
            let n = tx.execute("DELETE FROM tenants WHERE name = $1", &[&name])?;
            tx.execute("DELETE FROM host_status WHERE tenant = $1", &[&name])?;
            tx.execute(COLLECT_BLOBS, &[])?;
            tx.commit()?;
            Ok(n == 1)
        })
    }

    fn add_plugin(&self, tenant: &str, row: &PluginRow, bytes: &[u8]) -> Result<u32, RegistryError> {
        let tenant = tenant.to_string();
        let row = row.clone();
        let bytes = bytes.to_vec();
        self.call(move |c| {
            let mut tx = c.transaction()?;
            // Two hosts uploading the same plugin take turns on the tenant's row.
            tx.execute("SELECT 1 FROM tenants WHERE name = $1 FOR UPDATE", &[&tenant])?;
            let version: i32 = tx
                .query_one(
                    "SELECT COALESCE(MAX(version), 0) + 1 FROM plugins WHERE tenant = $1 AND name = $2",
                    &[&tenant, &row.name],
                )?
                .get(0);
            tx.execute(
                "INSERT INTO blobs (digest, bytes) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&row.digest, &bytes],
            )?;
            tx.execute(
                "INSERT INTO plugins (tenant, name, version, digest, size, imports, describe, compile_ms, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    &tenant,
                    &row.name,
                    &version,
                    &row.digest,
                    &(row.size as i64),
                    &serde_json::to_string(&row.imports).expect("strings serialize"),
                    &row.describe.to_string(),
                    &(row.compile_ms as i64),
                    &now(),
                ],
            )?;
            tx.commit()?;
            Ok(version as u32)
        })
    }

    fn plugins(&self, tenant: &str, name: Option<&str>) -> Result<Vec<PluginRow>, RegistryError> {
        let tenant = tenant.to_string();
        let name = name.map(str::to_string);
        let rows = self.call(move |c| {
            c.query(
                "SELECT name, version, digest, size, imports, describe, compile_ms FROM plugins
                 WHERE tenant = $1 AND ($2::text IS NULL OR name = $2) ORDER BY name, version",
                &[&tenant, &name],
            )
            .map(|rows| rows.iter().map(plugin_row).collect::<Vec<_>>())
        })?;
        rows.into_iter().map(PluginRow::stored).collect()
    }

    fn digests(&self) -> Result<Vec<String>, RegistryError> {
        self.call(|c| {
            c.query("SELECT DISTINCT digest FROM plugins", &[])
                .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        })
    }

    fn remove_plugin_version(&self, tenant: &str, name: &str, version: u32) -> Result<(), RegistryError> {
        let (tenant, name) = (tenant.to_string(), name.to_string());
        self.call(move |c| {
            let mut tx = c.transaction()?;
            tx.execute(
                "DELETE FROM plugins WHERE tenant = $1 AND name = $2 AND version = $3",
                &[&tenant, &name, &(version as i32)],
            )?;
            tx.execute(COLLECT_BLOBS, &[])?;
            tx.commit()
        })
    }

    fn put_pipeline(&self, tenant: &str, name: &str, yaml: &str) -> Result<(), RegistryError> {
        let (tenant, name, yaml) = (tenant.to_string(), name.to_string(), yaml.to_string());
        self.call(move |c| {
            c.execute(
                "INSERT INTO pipelines (tenant, name, yaml) VALUES ($1, $2, $3)
                 ON CONFLICT (tenant, name) DO UPDATE SET yaml = excluded.yaml",
                &[&tenant, &name, &yaml],
            )
            .map(drop)
        })
    }

    fn pipeline(&self, tenant: &str, name: &str) -> Result<Option<PipelineRow>, RegistryError> {
        let (tenant, name) = (tenant.to_string(), name.to_string());
        self.call(move |c| {
            c.query_opt(
                "SELECT tenant, name, yaml, running FROM pipelines WHERE tenant = $1 AND name = $2",
                &[&tenant, &name],
            )
            .map(|r| r.as_ref().map(pipeline_row))
        })
    }

    fn pipelines(&self, tenant: Option<&str>) -> Result<Vec<PipelineRow>, RegistryError> {
        let tenant = tenant.map(str::to_string);
        self.call(move |c| {
            c.query(
                "SELECT tenant, name, yaml, running FROM pipelines WHERE $1::text IS NULL OR tenant = $1
                 ORDER BY tenant, name",
                &[&tenant],
            )
            .map(|rows| rows.iter().map(pipeline_row).collect())
        })
    }

    fn count_pipelines(&self, tenant: &str) -> Result<usize, RegistryError> {
        let tenant = tenant.to_string();
        self.call(move |c| {
            c.query_one("SELECT COUNT(*) FROM pipelines WHERE tenant = $1", &[&tenant])
                .map(|r| r.get::<_, i64>(0) as usize)
        })
    }

    fn set_running(&self, tenant: &str, name: &str, running: bool) -> Result<(), RegistryError> {
        let (tenant, name) = (tenant.to_string(), name.to_string());
        self.call(move |c| {
            c.execute(
                "UPDATE pipelines SET running = $3 WHERE tenant = $1 AND name = $2",
                &[&tenant, &name, &running],
            )
            .map(drop)
        })
    }

    fn delete_pipeline(&self, tenant: &str, name: &str) -> Result<bool, RegistryError> {
        let (tenant, name) = (tenant.to_string(), name.to_string());
        self.call(move |c| {
            let mut tx = c.transaction()?;
            let n = tx.execute(
                "DELETE FROM pipelines WHERE tenant = $1 AND name = $2",
                &[&tenant, &name],
            )?;
            tx.execute(
                "DELETE FROM host_status WHERE tenant = $1 AND name = $2",
                &[&tenant, &name],
            )?;
            tx.commit()?;
            Ok(n == 1)
        })
    }

    fn put_secret(&self, tenant: &str, name: &str, sealed: &[u8]) -> Result<bool, RegistryError> {
        let (tenant, name, sealed) = (tenant.to_string(), name.to_string(), sealed.to_vec());
        self.call(move |c| {
            // `xmax = 0`: the row was inserted, not updated.
            c.query_one(
                "INSERT INTO secrets (tenant, name, sealed, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)
                 ON CONFLICT (tenant, name) DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at
                 RETURNING (xmax = 0)",
                &[&tenant, &name, &sealed, &now()],
            )
            .map(|r| r.get(0))
        })
    }

    fn secret(&self, tenant: &str, name: &str) -> Result<Option<Vec<u8>>, RegistryError> {
        let (tenant, name) = (tenant.to_string(), name.to_string());
        self.call(move |c| {
            c.query_opt(
                "SELECT sealed FROM secrets WHERE tenant = $1 AND name = $2",
                &[&tenant, &name],
            )
            .map(|r| r.map(|r| r.get(0)))
        })
    }

    fn secrets(&self, tenant: &str) -> Result<Vec<SecretRow>, RegistryError> {
        let tenant = tenant.to_string();
        self.call(move |c| {
            c.query(
                "SELECT name, created_at, updated_at FROM secrets WHERE tenant = $1 ORDER BY name",
                &[&tenant],
            )
            .map(|rows| {
                rows.iter()
                    .map(|r| SecretRow {
                        name: r.get(0),
                        created_at: r.get(1),
                        updated_at: r.get(2),
                    })
                    .collect()
            })
        })
    }

    fn delete_secret(&self, tenant: &str, name: &str) -> Result<bool, RegistryError> {
        let (tenant, name) = (tenant.to_string(), name.to_string());
        self.call(move |c| c.execute("DELETE FROM secrets WHERE tenant = $1 AND name = $2", &[&tenant, &name]))
            .map(|n| n == 1)
    }

    fn key_check(&self) -> Result<Option<Vec<u8>>, RegistryError> {
        self.call(|c| {
            c.query_opt("SELECT sealed FROM secrets_key WHERE id = 1", &[])
                .map(|r| r.map(|r| r.get(0)))
        })
    }

    fn set_key_check(&self, sealed: &[u8]) -> Result<(), RegistryError> {
        let sealed = sealed.to_vec();
        self.call(move |c| {
            c.execute(
                "INSERT INTO secrets_key (id, sealed) VALUES (1, $1) ON CONFLICT DO NOTHING",
                &[&sealed],
            )
        })
        .map(drop)
    }

    fn cluster(&self) -> Option<&dyn Cluster> {
        Some(self)
    }
}

impl Cluster for Postgres {
    fn blob(&self, digest: &str) -> Result<Option<Vec<u8>>, RegistryError> {
        let digest = digest.to_string();
        self.call(move |c| {
            c.query_opt("SELECT bytes FROM blobs WHERE digest = $1", &[&digest])
                .map(|r| r.map(|r| r.get(0)))
        })
    }

    fn take_lease(&self, tenant: &str, name: &str, host: &str, ttl_ms: u64) -> Result<Option<String>, RegistryError> {
        let (tenant, name, host) = (tenant.to_string(), name.to_string(), host.to_string());
        self.call(move |c| {
            let taken = c.query_opt(
                "INSERT INTO leases (tenant, name, host, expires_at)
                 VALUES ($1, $2, $3, now() + $4::bigint * interval '1 millisecond')
                 ON CONFLICT (tenant, name) DO UPDATE SET host = excluded.host, expires_at = excluded.expires_at
                 WHERE leases.host = excluded.host OR leases.expires_at < now()
                 RETURNING host",
                &[&tenant, &name, &host, &(ttl_ms as i64)],
            )?;
            if taken.is_some() {
                return Ok(None);
            }
            let holder = c.query_opt(
                "SELECT host FROM leases WHERE tenant = $1 AND name = $2",
                &[&tenant, &name],
            )?;
            // Released between the two statements: nobody holds it, try at the next turn.
            Ok(Some(holder.map_or_else(|| "another host".to_string(), |r| r.get(0))))
        })
    }

    fn release_lease(&self, tenant: &str, name: &str, host: &str) -> Result<(), RegistryError> {
        let (tenant, name, host) = (tenant.to_string(), name.to_string(), host.to_string());
        self.call(move |c| {
            c.execute(
                "DELETE FROM leases WHERE tenant = $1 AND name = $2 AND host = $3",
                &[&tenant, &name, &host],
            )
            .map(drop)
        })
    }

    fn report(&self, host: &str, rows: &[(String, String, HostStatus)]) -> Result<(), RegistryError> {
        let host = host.to_string();
        let rows = rows.to_vec();
        self.call(move |c| {
            let mut tx = c.transaction()?;
            tx.execute("DELETE FROM host_status WHERE host = $1", &[&host])?;
            for (tenant, name, s) in &rows {
                tx.execute(
                    "INSERT INTO host_status (host, tenant, name, state, records_read, records_written, plugin,
                     plugin_version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    &[
                        &host,
                        tenant,
                        name,
                        &s.state,
                        &(s.records_read as i64),
                        &(s.records_written as i64),
                        &s.plugin,
                        &s.plugin_version.map(|v| v as i32),
                    ],
                )?;
            }
            tx.commit()
        })
    }

    fn statuses(
        &self,
        tenant: &str,
        name: Option<&str>,
        fresh_ms: u64,
    ) -> Result<Vec<(String, HostStatus)>, RegistryError> {
        let tenant = tenant.to_string();
        let name = name.map(str::to_string);
        self.call(move |c| {
            let rows = c.query(
                "SELECT name, host, state, records_read, records_written, plugin, plugin_version,
                        (EXTRACT(EPOCH FROM now() - updated_at) * 1000)::bigint
                 FROM host_status
                 WHERE tenant = $1 AND ($2::text IS NULL OR name = $2)
                   AND updated_at > now() - $3::bigint * interval '1 millisecond'
                 ORDER BY name, host",
                &[&tenant, &name, &(fresh_ms as i64)],
            )?;
            Ok(rows
                .iter()
                .map(|r| {
                    (
                        r.get(0),
                        HostStatus {
                            host: r.get(1),
                            state: r.get(2),
                            records_read: r.get::<_, i64>(3) as u64,
                            records_written: r.get::<_, i64>(4) as u64,
                            plugin: r.get(5),
                            plugin_version: r.get::<_, Option<i32>>(6).map(|v| v as u32),
                            age_ms: r.get::<_, i64>(7).max(0) as u64,
                        },
                    )
                })
                .collect())
        })
    }
}
