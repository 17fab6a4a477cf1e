//! The host's filesystem layer over a plugin's granted directories. WASI
//! already keeps every path a plugin opens beneath its grants; this adds what
//! WASI does not:
//!
//! - **No symlinks.** A link planted in a writable grant is harmless to the
//!   plugin (its own lookups stay beneath the grant) but not to whoever reads
//!   that directory later: the native `file` destination, an operator's
//!   script. `symlink-at` is refused outright.
//! - **A byte quota per writable grant** (`allow.dirs[].max_mb`, default
//!   [`DEFAULT_MAX_MB`](super::grants::DEFAULT_MAX_MB)). Every way a plugin
//!   can make a file bigger (`write`, `set-size`, the write and append
//!   streams) is charged against its grant before it happens; past the
//!   quota the plugin gets "no space left", not the host's disk. A sparse
//!   1 TiB file is 1 TiB here.
//!
//! Both are done by shadowing those functions of `wasi:filesystem/types` in
//! the linker and delegating to wasmtime-wasi's own implementation once the
//! check passes, so everything else about files stays wasmtime-wasi's. The
//! Store's data gives this layer what it needs through [`FilesView`], as it
//! gives wasmtime-wasi its filesystem context.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemView};
use wasmtime_wasi::p2::bindings::filesystem::types::{ErrorCode, Host as _, HostDescriptor as _};
use wasmtime_wasi::p2::{DynOutputStream, OutputStream, Pollable, StreamError, StreamResult};

use super::bindings::bizon::destination::types::LogLevel;
use super::grants::DirGrant;
use super::log::PluginLog;

/// The WASI filesystem interface whose functions are shadowed; the version
/// wasmtime-wasi implements (plugins built against an older 0.2.x link to it).
const TYPES: &str = "wasi:filesystem/types@0.2.12";

/// Bytes used under one writable grant, and its cap.
#[derive(Debug)]
pub struct Quota {
    dir: PathBuf,
    limit: u64,
    used: AtomicU64,
    /// Held while the directory is measured again.
    rescan: Mutex<()>,
}

impl Quota {
    fn new(dir: PathBuf, limit_mb: u64) -> Self {
        let used = disk_usage(&dir);
        Self {
            dir,
            limit: limit_mb.saturating_mul(1 << 20),
            used: AtomicU64::new(used),
            rescan: Mutex::new(()),
        }
    }

    pub fn limit_mib(&self) -> u64 {
        self.limit >> 20
    }

    /// Takes `bytes` from the quota, or refuses. A refusal first measures the
    /// directory again: files the plugin deleted give their room back then.
    fn charge(&self, bytes: u64) -> bool {
        if bytes == 0 || self.try_charge(bytes) {
            return true;
        }
        let _measuring = self.rescan.lock();
        self.used.store(disk_usage(&self.dir), Ordering::SeqCst);
        self.try_charge(bytes)
    }

    fn try_charge(&self, bytes: u64) -> bool {
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }

    fn credit(&self, bytes: u64) {
        let _ = self.used.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
            Some(used.saturating_sub(bytes))
        });
    }
}

/// Logical size of the regular files beneath `dir`, links not followed.
fn disk_usage(dir: &Path) -> u64 {
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => pending.push(entry.path()),
                Ok(m) if m.is_file() => total += m.len(),
                _ => {}
            }
        }
    }
    total
}

/// The quotas of one plugin's writable grants, shared by its instances.
#[derive(Debug, Default)]
pub struct Quotas(Vec<Arc<Quota>>);

impl Quotas {
    pub fn new(dirs: &[DirGrant]) -> Self {
        Self(
            dirs.iter()
                .filter(|d| d.writable)
                .filter_map(|d| {
                    let dir = std::fs::canonicalize(&d.host).ok()?;
                    Some(Arc::new(Quota::new(dir, d.quota_mb())))
                })
                .collect(),
        )
    }

    /// The grant `file` lives in, found from the path the kernel has for it
    /// (the innermost grant when grants nest).
    fn of(&self, file: &std::fs::File) -> Option<Arc<Quota>> {
        let path = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()?;
        self.0
            .iter()
            .filter(|q| path.starts_with(&q.dir))
            .max_by_key(|q| q.dir.as_os_str().len())
            .cloned()
    }
}

/// What a Store's data gives this layer: wasmtime-wasi's filesystem view
/// (whose functions it delegates to), the quotas of the plugin's grants, and
/// the log a refusal is told in.
pub trait FilesView: WasiFilesystemView {
    fn quotas(&self) -> &Arc<Quotas>;
    fn plugin_log(&self) -> &Arc<PluginLog>;
}

/// Shadows the file-growing and link-making functions of
/// `wasi:filesystem/types` with checked ones. Call after wasmtime-wasi's
/// own `add_to_linker`.
pub fn add_to_linker<T: FilesView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut types = linker.instance(TYPES)?;

    types.func_wrap_async(
        "[method]descriptor.symlink-at",
        |store, (_fd, target, link): (Resource<Descriptor>, String, String)| {
            store.data().plugin_log().log(
                LogLevel::Warn,
                &format!("denied: creating the symlink {link} -> {target} (plugins may not create symlinks)"),
            );
            Box::new(async { Ok((Err::<(), _>(ErrorCode::NotPermitted),)) })
        },
    )?;

    types.func_wrap_async(
        "[method]descriptor.write",
        |mut store, (fd, buf, offset): (Resource<Descriptor>, Vec<u8>, u64)| {
            Box::new(async move {
                let state = store.data_mut();
                let end = offset.saturating_add(buf.len() as u64);
                let charged = match charge_growth(state, &fd, |size| end.saturating_sub(size)) {
                    Ok(charged) => charged,
                    Err(code) => return Ok((Err(code),)),
                };
                let result = state.filesystem().write(fd, buf, offset).await;
                Ok((settle(state, charged, result)?,))
            })
        },
    )?;

    types.func_wrap_async(
        "[method]descriptor.set-size",
        |mut store, (fd, size): (Resource<Descriptor>, u64)| {
            Box::new(async move {
                let state = store.data_mut();
                let (quota, before) = match file_of(state, &fd) {
                    Ok(Some((quota, before))) => (quota, before),
                    Ok(None) => return Ok((Err(ErrorCode::NotPermitted),)),
                    Err(code) => return Ok((Err(code),)),
                };
                if size > before && !quota.charge(size - before) {
                    return Ok((Err(refuse(state, &quota)),));
                }
                let result = state.filesystem().set_size(fd, size).await;
                match result {
                    Ok(()) => {
                        if size < before {
                            quota.credit(before - size);
                        }
                        Ok((Ok(()),))
                    }
                    Err(e) => {
                        quota.credit(size.saturating_sub(before));
                        Ok((Err(state.filesystem().convert_error_code(e)?),))
                    }
                }
            })
        },
    )?;

    types.func_wrap_async(
        "[method]descriptor.write-via-stream",
        |mut store, (fd, offset): (Resource<Descriptor>, u64)| {
            Box::new(async move {
                let state = store.data_mut();
                let quota = match file_of(state, &fd) {
                    Ok(quota) => quota,
                    Err(code) => return Ok((Err(code),)),
                };
                let stream = match state.filesystem().write_via_stream(fd, offset) {
                    Ok(stream) => stream,
                    Err(e) => return Ok((Err(state.filesystem().convert_error_code(e)?),)),
                };
                Ok((Ok(wrap(state, stream, quota, Some(offset))?),))
            })
        },
    )?;

    types.func_wrap_async(
        "[method]descriptor.append-via-stream",
        |mut store, (fd,): (Resource<Descriptor>,)| {
            Box::new(async move {
                let state = store.data_mut();
                let quota = match file_of(state, &fd) {
                    Ok(quota) => quota,
                    Err(code) => return Ok((Err(code),)),
                };
                let stream = match state.filesystem().append_via_stream(fd) {
                    Ok(stream) => stream,
                    Err(e) => return Ok((Err(state.filesystem().convert_error_code(e)?),)),
                };
                Ok((Ok(wrap(state, stream, quota, None)?),))
            })
        },
    )?;
    Ok(())
}

/// The quota and current size of a writable file descriptor; `Ok(None)`
/// when the descriptor is not a writable file (wasmtime-wasi then answers
/// with its own error). A writable file whose grant cannot be told is
/// refused: an unaccounted write would be a way around the quota.
fn file_of(state: &mut impl FilesView, fd: &Resource<Descriptor>) -> Result<Option<(Arc<Quota>, u64)>, ErrorCode> {
    let quotas = state.quotas().clone();
    let view = state.filesystem();
    let Ok(Descriptor::File(file)) = view.table.get(fd) else {
        return Ok(None);
    };
    if file.perms.write_not_permitted() {
        return Ok(None);
    }
    let size = file.file.metadata().map(|m| m.len()).unwrap_or(0);
    let quota = quotas.of(&file.file).ok_or(ErrorCode::NotPermitted)?;
    Ok(Some((quota, size)))
}

/// Charges what a write would add to its file (`growth` of the current
/// size); `Ok(None)` when the descriptor is not a writable file (wasmtime-wasi
/// then answers with its own error).
fn charge_growth(
    state: &mut impl FilesView,
    fd: &Resource<Descriptor>,
    growth: impl FnOnce(u64) -> u64,
) -> Result<Option<(Arc<Quota>, u64)>, ErrorCode> {
    let Some((quota, size)) = file_of(state, fd)? else {
        return Ok(None);
    };
    let bytes = growth(size);
    if !quota.charge(bytes) {
        return Err(refuse(state, &quota));
    }
    Ok(Some((quota, bytes)))
}

/// A failed write gives back what it was charged.
fn settle<T>(
    state: &mut impl FilesView,
    charged: Option<(Arc<Quota>, u64)>,
    result: wasmtime_wasi::p2::FsResult<T>,
) -> wasmtime::Result<Result<T, ErrorCode>> {
    match result {
        Ok(v) => Ok(Ok(v)),
        Err(e) => {
            if let Some((quota, bytes)) = charged {
                quota.credit(bytes);
            }
            Ok(Err(state.filesystem().convert_error_code(e)?))
        }
    }
}

fn refuse(state: &impl FilesView, quota: &Quota) -> ErrorCode {
    state.plugin_log().log(
        LogLevel::Warn,
        &format!(
            "denied: a write past the {} MiB quota of the granted directory {} (allow.dirs[].max_mb)",
            quota.limit_mib(),
            quota.dir.display()
        ),
    );
    ErrorCode::InsufficientSpace
}

/// Puts a quota-checking stream in place of wasmtime-wasi's file stream.
fn wrap(
    state: &mut impl FilesView,
    stream: Resource<DynOutputStream>,
    quota: Option<(Arc<Quota>, u64)>,
    offset: Option<u64>,
) -> wasmtime::Result<Resource<DynOutputStream>> {
    let Some((quota, size)) = quota else { return Ok(stream) };
    let view = state.filesystem();
    let inner = view.table.delete(stream)?;
    let guarded: DynOutputStream = Box::new(QuotaStream {
        inner,
        quota,
        log: state.plugin_log().clone(),
        position: offset,
        end: size,
    });
    Ok(state.filesystem().table.push(guarded)?)
}

/// A file stream that charges its grant's quota before each write.
struct QuotaStream {
    inner: DynOutputStream,
    quota: Arc<Quota>,
    log: Arc<PluginLog>,
    /// Where the next byte goes; `None` for an append stream.
    position: Option<u64>,
    /// The file's end as far as this stream knows.
    end: u64,
}

#[wasmtime_wasi::async_trait]
impl Pollable for QuotaStream {
    async fn ready(&mut self) {
        self.inner.ready().await
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for QuotaStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        let len = bytes.len() as u64;
        let growth = match self.position {
            Some(position) => (position + len).saturating_sub(self.end),
            None => len,
        };
        if !self.quota.charge(growth) {
            self.log.log(
                LogLevel::Warn,
                &format!(
                    "denied: a write past the {} MiB quota of the granted directory {} (allow.dirs[].max_mb)",
                    self.quota.limit_mib(),
                    self.quota.dir.display()
                ),
            );
            return Err(StreamError::LastOperationFailed(
                std::io::Error::from_raw_os_error(libc::ENOSPC).into(),
            ));
        }
        if let Some(position) = &mut self.position {
            *position += len;
            self.end = self.end.max(*position);
        }
        self.inner.write(bytes)
    }

    fn flush(&mut self) -> StreamResult<()> {
        self.inner.flush()
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        self.inner.check_write()
    }

    async fn cancel(&mut self) {
        self.inner.cancel().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_counts_what_is_there_and_measures_again_before_refusing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![0u8; 600 << 10]).unwrap();
        let quota = Quota::new(dir.path().to_path_buf(), 1);
        assert_eq!(quota.used.load(Ordering::SeqCst), 600 << 10);
        // A charge comes before the bytes reach the disk.
        assert!(quota.charge(400 << 10));
        std::fs::write(dir.path().join("b"), vec![0u8; 400 << 10]).unwrap();
        assert!(!quota.charge(100 << 10));
        // Deleting a file gives its room back at the next refusal.
        std::fs::remove_file(dir.path().join("a")).unwrap();
        assert!(quota.charge(100 << 10));
        assert!(!quota.charge(u64::MAX));
    }

    #[test]
    fn symlinks_are_not_followed_when_measuring() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("big"), vec![0u8; 1 << 20]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path().join("big"), dir.path().join("link")).unwrap();
        assert_eq!(disk_usage(dir.path()), 0);
    }
}
