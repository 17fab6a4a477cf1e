//! A native destination run for a `serve` tenant: what confines it to
//! what is the tenant's own. `serve` fills a [`Confined`] in
//! [`super::Host`]; `bizon-host run` leaves it out and its destinations
//! reach what the host reaches.
//!
//! - connections: every endpoint through [`Egress`] (the tenant's egress
//!   ceiling, checked as a plugin's egress is: `plugin::egress::gateway`);
//! - credentials: the tenant's secrets only (`secret://NAME`), never the
//!   host's application default credentials or environment;
//! - files: under the tenant's files directory, no link followed, within
//!   its `disk_mb` ([`file`]);
//! - work: every call charged to the tenant's CPU share, and each write's
//!   request held in its memory share while in flight ([`Charged`]).

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::file::{FileConfig, FileDestination};
use super::{Batch, Destination, DestinationError, SharedDestination};
use crate::config::secret::Secrets;
use crate::quota::budget::MemoryBudget;
use crate::quota::cpu::{CpuShare, Metered, Work};

/// What the host decides for a tenant's native destination.
#[derive(Clone)]
pub struct Confined {
    /// "tenant `acme`", in messages.
    pub owner: String,
    /// The only way out: every endpoint a destination connects to.
    pub egress: Arc<dyn Egress>,
    /// The tenant's files directory: a `file` destination's `path` is
    /// resolved under it.
    pub files: PathBuf,
    /// What a `file` destination's directory may hold, in MiB.
    pub disk_mb: u64,
    /// The tenant's secrets its pipeline names.
    pub secrets: Secrets,
    pub cpu: Arc<CpuShare>,
    /// The tenant's memory share: a write's request is held in it.
    pub memory: Arc<MemoryBudget>,
    /// How long a write waits for room in it before failing (and being
    /// retried by the pipeline's retry loop).
    pub memory_wait: Duration,
}

/// Where a confined destination's clients connect.
#[async_trait]
pub trait Egress: Send + Sync {
    /// A URL to give the client instead of `url`, good while the [`Route`]
    /// lives; refused (naming why) when `url` is outside the ceiling.
    async fn route(&self, url: &str) -> Result<Route, DestinationError>;
}

/// An endpoint's route: the URL its client is pointed at, and what keeps
/// the route open.
pub struct Route {
    pub url: String,
    _open: Box<dyn Send + Sync>,
}

#[cfg(feature = "wasm")]
#[async_trait]
impl Egress for crate::plugin::egress::gateway::Gateway {
    async fn route(&self, url: &str) -> Result<Route, DestinationError> {
        let route = self
            .open(url)
            .await
            .map_err(|denied| DestinationError::Fatal(denied.to_string()))?;
        Ok(Route {
            url: route.url.clone(),
            _open: Box::new(route),
        })
    }
}

/// A tenant's native destination: each call runs under its CPU share, and
/// each write holds its batch's size in its memory share while in flight
/// (the request a destination builds from a batch is about its Arrow size:
/// IPC for Storage Write, JSON or Parquet a little more or less). The
/// routes its clients connect through stay open as long as it lives.
pub struct Charged {
    inner: SharedDestination,
    confined: Confined,
    _routes: Vec<Route>,
}

impl Charged {
    pub fn wrap(inner: SharedDestination, confined: &Confined, routes: Vec<Route>) -> SharedDestination {
        Arc::new(Self {
            inner,
            confined: confined.clone(),
            _routes: routes,
        })
    }

    fn metered<F: std::future::Future>(&self, f: F) -> Metered<F> {
        Metered::new(f, self.confined.cpu.clone(), Work::Pipeline)
    }
}

#[async_trait]
impl Destination for Charged {
    async fn check_connection(&self) -> Result<(), DestinationError> {
        self.metered(self.inner.check_connection()).await
    }

    async fn write(&self, batch: &Batch) -> Result<u64, DestinationError> {
        let bytes = batch.records.get_array_memory_size() as u64;
        let memory = &self.confined.memory;
        if bytes > memory.limit_mib() << 20 {
            return Err(DestinationError::Fatal(format!(
                "a batch of {} MiB is over {}'s memory share of {} MiB; lower buffer_size",
                bytes >> 20,
                self.confined.owner,
                memory.limit_mib()
            )));
        }
        let _held = memory
            .reserve(bytes, self.confined.memory_wait)
            .await
            .map_err(|e| DestinationError::Retryable(e.to_string()))?;
        self.metered(self.inner.write(batch)).await
    }

    async fn finalize(&self) -> Result<(), DestinationError> {
        self.metered(self.inner.finalize()).await
    }

    fn position(&self, destination_id: &str) -> Option<String> {
        self.inner.position(destination_id)
    }

    async fn resume(&self, positions: &crate::source::Positions) -> Result<(), DestinationError> {
        self.inner.resume(positions).await
    }

    fn replayed(&self) -> u64 {
        self.inner.replayed()
    }
}

/// Why a `file` destination's `path` is refused for a tenant: absolute,
/// with `..`, or empty. `None`: a relative path inside its directory.
pub fn file_path_refused(path: Option<&Path>) -> Option<String> {
    let path = path?;
    let inside = path.components().all(|c| matches!(c, Component::Normal(_)));
    (path.as_os_str().is_empty() || !inside).then(|| {
        format!(
            "`{}`: give a relative path inside your files directory, without `..` (absolute paths are refused)",
            path.display()
        )
    })
}

/// A tenant's `file` destination: `path` under its files directory (its
/// root when left out), each directory on the way made or found without
/// following a link, and what the directory holds bounded by `disk_mb`.
pub fn file(config: &FileConfig, confined: &Confined) -> Result<SharedDestination, DestinationError> {
    if let Some(why) = file_path_refused(config.path.as_deref()) {
        return Err(DestinationError::Fatal(format!("path: {why}")));
    }
    let mut dir = confined.files.clone();
    for part in config.path.iter().flat_map(|p| p.components()) {
        dir.push(part);
        match std::fs::symlink_metadata(&dir) {
            Ok(meta) if meta.file_type().is_dir() => {}
            Ok(_) => {
                return Err(DestinationError::Fatal(format!(
                    "path: `{}` is not a directory (a link is never followed)",
                    shown(config, confined, &dir)
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // `mkdir` makes the last component itself: a link planted
                // there in between makes it fail, never followed.
                std::fs::create_dir(&dir).map_err(|e| {
                    DestinationError::Fatal(format!("path: cannot create `{}`: {e}", shown(config, confined, &dir)))
                })?;
            }
            Err(e) => {
                return Err(DestinationError::Fatal(format!(
                    "path: `{}`: {e}",
                    shown(config, confined, &dir)
                )))
            }
        }
    }
    let placed = FileConfig {
        path: Some(dir.clone()),
        ..config.clone()
    };
    let inner = FileDestination::new(&placed)?;
    Ok(Arc::new(DiskBound {
        inner,
        dir,
        limit: confined.disk_mb.saturating_mul(1 << 20),
        owner: confined.owner.clone(),
    }))
}

/// The path as the tenant wrote it, never where the host keeps it.
fn shown(config: &FileConfig, confined: &Confined, dir: &Path) -> String {
    dir.strip_prefix(&confined.files)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| config.path.as_deref().unwrap_or(Path::new(".")).display().to_string())
}

/// A file destination whose directory may hold `limit` bytes: a write
/// that would fill it past the limit fails, before anything of it is written.
struct DiskBound {
    inner: FileDestination,
    dir: PathBuf,
    limit: u64,
    owner: String,
}

impl DiskBound {
    /// Bytes of the regular files in the directory (links not followed).
    fn used(&self) -> Result<u64, DestinationError> {
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| DestinationError::Fatal(format!("reading the output directory: {e}")))?;
        Ok(entries
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.file_type().is_file())
            .map(|m| m.len())
            .sum())
    }
}

#[async_trait]
impl Destination for DiskBound {
    async fn check_connection(&self) -> Result<(), DestinationError> {
        self.inner.check_connection().await
    }

    async fn write(&self, batch: &Batch) -> Result<u64, DestinationError> {
        let used = self.used()?;
        // What the batch will add, from its Arrow size: its lines are about
        // as long (the same text, less the offsets). Checked before the
        // write, or one flush of Bizon's default 50 MB buffer would pass a
        // 1 MiB disk_mb fifty times over.
        let adding = batch.records.get_array_memory_size() as u64;
        if used.saturating_add(adding) > self.limit {
            return Err(DestinationError::Fatal(format!(
                "the output directory holds {} MiB and the next write would add about {} MiB, over {}'s \
                 disk_mb of {} MiB",
                used >> 20,
                adding.div_ceil(1 << 20),
                self.owner,
                self.limit >> 20
            )));
        }
        self.inner.write(batch).await
    }

    async fn finalize(&self) -> Result<(), DestinationError> {
        self.inner.finalize().await
    }

    fn position(&self, destination_id: &str) -> Option<String> {
        self.inner.position(destination_id)
    }

    async fn resume(&self, positions: &crate::source::Positions) -> Result<(), DestinationError> {
        self.inner.resume(positions).await
    }

    fn replayed(&self) -> u64 {
        self.inner.replayed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nowhere;

    #[async_trait]
    impl Egress for Nowhere {
        async fn route(&self, url: &str) -> Result<Route, DestinationError> {
            Err(DestinationError::Fatal(format!("{url}: no")))
        }
    }

    fn confined(root: &Path, disk_mb: u64) -> Confined {
        Confined {
            owner: "tenant `t`".into(),
            egress: Arc::new(Nowhere),
            files: root.to_path_buf(),
            disk_mb,
            secrets: Secrets::default(),
            cpu: Arc::new(CpuShare::new(1.0)),
            memory: MemoryBudget::new(64),
            memory_wait: Duration::from_millis(10),
        }
    }

    fn config(path: Option<&str>) -> FileConfig {
        let yaml = match path {
            Some(p) => format!("path: {p}"),
            None => "{}".into(),
        };
        crate::config::from_yaml(&yaml, "t.yaml").unwrap()
    }

    #[test]
    fn paths_are_relative_without_dot_dot_and_no_link_is_followed() {
        let root = tempfile::tempdir().unwrap();
        let c = confined(root.path(), 1);
        for bad in ["/etc", "../x", "a/../../x", ""] {
            let err = file(&config(Some(&format!("\"{bad}\""))), &c)
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains("relative path"), "{bad}: {err}");
        }
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("link")).unwrap();
        let err = file(&config(Some("link/out")), &c).err().unwrap().to_string();
        assert!(
            err.contains("`link`") && err.contains("link is never followed"),
            "{err}"
        );
        assert!(!err.contains(&root.path().display().to_string()), "{err}");
        file(&config(Some("a/b")), &c).unwrap();
        assert!(root.path().join("a/b").is_dir());
        file(&config(None), &c).unwrap();
    }

    #[tokio::test]
    async fn a_full_directory_refuses_the_next_write() {
        let root = tempfile::tempdir().unwrap();
        let d = file(&config(Some("out")), &confined(root.path(), 1)).unwrap();
        std::fs::write(root.path().join("out/big"), vec![0u8; 1 << 20]).unwrap();
        let mut builder = crate::record::RecordBuilder::new("t".into());
        let record = crate::record::SourceRecord {
            id: "1".into(),
            timestamp_us: 0,
            data: "{}".into(),
            destination_id: None,
        };
        builder.append(&mut crate::record::BizonIdGenerator::new(), 0, &record);
        let batch = Batch {
            destination_id: "t".into(),
            sequence: 0,
            records: builder.finish(0).unwrap(),
            source: Vec::new(),
        };
        let err = d.write(&batch).await.unwrap_err().to_string();
        assert!(err.contains("disk_mb of 1 MiB"), "{err}");
    }
}
