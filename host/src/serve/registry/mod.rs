//! The registry: tenants, plugin versions and pipelines. One API over two
//! backends: an embedded SQLite database in the data dir (one host), or a
//! PostgreSQL database several hosts share (`--registry postgres://...`),
//! which also holds the plugins' bytes, the leases of pipelines that must
//! run on one host at a time and what each host runs ([`Cluster`]).

mod postgres;
mod sqlite;
mod store;

use std::path::Path;

use postgres::redact;
pub use store::{Cluster, HostStatus, PipelineRow, PluginRow, RegistryError, SecretRow, Store, TenantRow};

/// Where the registry is: `sqlite` (the data dir's file) or a PostgreSQL URL.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Location {
    #[default]
    Sqlite,
    Postgres(String),
}

impl std::str::FromStr for Location {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "" | "sqlite" => Ok(Self::Sqlite),
            url if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(Self::Postgres(url.to_string()))
            }
            other => Err(format!(
                "registry `{}`: give `sqlite` or a postgres://user:pass@host:port/db URL",
                redact(other)
            )),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Location {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

pub struct Registry {
    store: Box<dyn Store>,
}

impl Registry {
    /// Opens (and creates, if need be) the registry's schema.
    pub fn open(location: &Location, data_dir: &Path) -> Result<Self, RegistryError> {
        let store: Box<dyn Store> = match location {
            Location::Sqlite => Box::new(sqlite::Sqlite::open(&data_dir.join("registry.sqlite"))?),
            Location::Postgres(url) => Box::new(postgres::Postgres::open(url)?),
        };
        Ok(Self { store })
    }
}

impl std::ops::Deref for Registry {
    type Target = dyn Store;

    fn deref(&self) -> &Self::Target {
        &*self.store
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_shown_without_its_password() {
        assert_eq!(
            redact("postgres://bizon:s3cret@db.internal:5432/reg"),
            "postgres://bizon:***@db.internal:5432/reg"
        );
        assert_eq!(redact("postgres://bizon@db:5432/reg"), "postgres://bizon@db:5432/reg");
        let err = "mysql://u:pw@h/db".parse::<Location>().unwrap_err();
        assert!(err.contains("u:***@h") && !err.contains("pw"), "{err}");
        assert_eq!("sqlite".parse::<Location>().unwrap(), Location::Sqlite);
    }
}
