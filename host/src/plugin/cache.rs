//! Compiled plugins on disk. Compiling a 2 MB component takes about a second;
//! loading the precompiled artifact takes well under a millisecond, so each
//! file is compiled once per engine build and the result kept.
//!
//! A precompiled artifact is machine code that wasmtime runs without checking
//! it, so the cache trusts nothing it did not write itself: each entry carries
//! an HMAC-SHA256, keyed by a secret that only this user can read
//! (`<dir>/key`, 0600, in a 0700 directory) and bound to the entry's name
//! (the wasm's digest), and it is verified on the very bytes that are then
//! deserialized. A swapped, edited or foreign entry fails the check, is
//! reported and recompiled. The cache is also bounded: least recently used
//! entries go once it passes its size budget.

use std::hash::Hasher;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

/// Default size budget of the cache directory, in MiB.
pub const DEFAULT_MAX_MB: u64 = 1024;
const MAC_BYTES: usize = 32;
const KEY_FILE: &str = "key";

/// Where a component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Loaded from a verified precompiled artifact.
    Hit,
    /// Compiled now (and stored when the cache directory is writable).
    Miss,
    /// An entry existed but failed its check or could not be loaded;
    /// compiled again and replaced.
    Recompiled,
}

impl std::fmt::Display for CacheStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Recompiled => "untrusted or corrupt entry, recompiled",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("{0:#}")]
    Wasmtime(wasmtime::Error),
    #[error("compiling took longer than {} s (the limit for one component)", .0.as_secs())]
    TimedOut(Duration),
}

pub struct Loaded {
    pub component: Component,
    pub status: CacheStatus,
    /// The artifact's path, when the cache directory is usable.
    pub artifact: Option<PathBuf>,
    /// Time spent compiling (zero on a hit).
    pub compile_time: Duration,
}

/// `$BIZON_HOST_CACHE_DIR`, else `$XDG_CACHE_HOME/bizon-host`, else
/// `~/.cache/bizon-host`; `None` when none of them can be worked out.
pub fn default_dir() -> Option<PathBuf> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("BIZON_HOST_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("bizon-host")))
        .or_else(|| var("HOME").map(|d| d.join(".cache").join("bizon-host")))
}

/// `$BIZON_HOST_CACHE_MAX_MB`, else [`DEFAULT_MAX_MB`].
pub fn max_bytes() -> u64 {
    std::env::var("BIZON_HOST_CACHE_MAX_MB")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(DEFAULT_MAX_MB)
        .saturating_mul(1 << 20)
}

/// Feeds `Hash` output into sha256, so the key does not depend on std's
/// hasher, whose algorithm may change between Rust releases.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        unreachable!("only the digest is read")
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The artifact's name: the wasm bytes' hash plus the engine's compatibility
/// hash (wasmtime version, target, compiler settings), so a different host
/// build never picks up an artifact it cannot run.
pub fn key(engine: &Engine, wasm: &[u8]) -> String {
    let mut hasher = Sha256Hasher(Sha256::new());
    std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut hasher);
    let engine_hash = hasher.0.finalize();
    format!("{}-{}", hex(&Sha256::digest(wasm)), &hex(&engine_hash)[..16])
}

pub fn artifact_path(dir: &Path, engine: &Engine, wasm: &[u8]) -> PathBuf {
    dir.join(format!("{}.cwasm", key(engine, wasm)))
}

/// The component for `wasm`: from the cache in `dir` when a verified entry
/// is there, compiled (and stored) otherwise. Cache trouble is logged and
/// never fatal; only a component that does not compile in time is an error.
pub fn load(engine: &Engine, wasm: &[u8], dir: Option<&Path>, compile_limit: Duration) -> Result<Loaded, CompileError> {
    let Some(dir) = dir else {
        let started = Instant::now();
        let artifact = compile(engine, wasm, compile_limit)?;
        return Ok(Loaded {
            component: from_own_artifact(engine, &artifact)?,
            status: CacheStatus::Miss,
            artifact: None,
            compile_time: started.elapsed(),
        });
    };
    let name = key(engine, wasm);
    let path = dir.join(format!("{name}.cwasm"));
    let secret = match secret(dir) {
        Ok(secret) => Some(secret),
        Err(e) => {
            tracing::warn!("plugin cache {} is unusable, compiling without it: {e}", dir.display());
            None
        }
    };
    let mut status = CacheStatus::Miss;
    if let (Some(secret), Ok(mut file)) = (&secret, std::fs::File::open(&path)) {
        match read_verified(&mut file, secret, &name) {
            Ok(artifact) => {
                // SAFETY: these exact bytes carry a MAC that only a holder of
                // this cache's secret key (this host, as this user) can make,
                // bound to the digest of the wasm they were compiled from;
                // wasmtime still checks the header and engine settings.
                match unsafe { Component::deserialize(engine, &artifact) } {
                    Ok(component) => {
                        touch(&path);
                        return Ok(Loaded {
                            component,
                            status: CacheStatus::Hit,
                            artifact: Some(path),
                            compile_time: Duration::ZERO,
                        });
                    }
                    Err(e) => tracing::warn!(
                        "plugin cache entry {} cannot be loaded, recompiling: {e:#}",
                        path.display()
                    ),
                }
            }
            Err(why) => tracing::warn!("plugin cache entry {} {why}; recompiling", path.display()),
        }
        status = CacheStatus::Recompiled;
    }
    let started = Instant::now();
    let artifact = compile(engine, wasm, compile_limit)?;
    let compile_time = started.elapsed();
    if let Some(secret) = &secret {
        if let Err(e) = store(dir, &path, &artifact, secret, &name) {
            tracing::warn!("cannot store the compiled plugin in {}: {e}", dir.display());
        }
        evict(dir, max_bytes(), &path);
    }
    Ok(Loaded {
        component: from_own_artifact(engine, &artifact)?,
        status,
        artifact: Some(path),
        compile_time,
    })
}

fn from_own_artifact(engine: &Engine, artifact: &[u8]) -> Result<Component, CompileError> {
    // SAFETY: `artifact` was produced by `precompile_component` of this very
    // engine a moment ago, in this process.
    unsafe { Component::deserialize(engine, artifact) }.map_err(CompileError::Wasmtime)
}

/// Compiles on a thread of its own, so a component that takes too long is
/// given up on (the thread finishes in the background; its result is
/// dropped) instead of holding the caller.
fn compile(engine: &Engine, wasm: &[u8], limit: Duration) -> Result<Vec<u8>, CompileError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let (engine, wasm) = (engine.clone(), wasm.to_vec());
    std::thread::Builder::new()
        .name("wasm-compile".into())
        .spawn(move || {
            let _ = tx.send(engine.precompile_component(&wasm));
        })
        .map_err(|e| CompileError::Wasmtime(e.into()))?;
    match rx.recv_timeout(limit) {
        Ok(result) => result.map_err(CompileError::Wasmtime),
        Err(_) => Err(CompileError::TimedOut(limit)),
    }
}

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8], name: &str, artifact: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(name.as_bytes());
    mac.update(&[0]);
    mac.update(artifact);
    mac
}

/// The artifact of an entry file (`MAC || artifact`), if its MAC checks.
fn read_verified(file: &mut std::fs::File, secret: &[u8], name: &str) -> Result<Vec<u8>, &'static str> {
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(|_| "cannot be read")?;
    if bytes.len() < MAC_BYTES {
        return Err("is truncated");
    }
    let artifact = bytes.split_off(MAC_BYTES);
    mac(secret, name, &artifact)
        .verify_slice(&bytes)
        .map_err(|_| "fails its integrity check (not written by this host for this plugin)")?;
    Ok(artifact)
}

/// The cache's secret key, made on first use. The directory is created
/// 0700 and the key 0600; a key others can read or write is not trusted.
fn secret(dir: &Path) -> std::io::Result<Vec<u8>> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let path = dir.join(KEY_FILE);
    match std::fs::File::open(&path) {
        Ok(mut file) => {
            let meta = file.metadata()?;
            if meta.permissions().mode() & 0o077 != 0 || meta.uid() != unsafe { libc::geteuid() } {
                return Err(std::io::Error::other(format!(
                    "{} is readable or writable by other users (or owned by another user)",
                    path.display()
                )));
            }
            let mut key = Vec::new();
            file.read_to_end(&mut key)?;
            if key.len() < 32 {
                return Err(std::io::Error::other(format!("{} is too short", path.display())));
            }
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = vec![0u8; 32];
            // As text: getrandom's error is a std error only with its `std`
            // feature, which only other crates turn on.
            getrandom::fill(&mut key).map_err(|e| std::io::Error::other(e.to_string()))?;
            let (temp, mut file) = tempfile_in(dir)?;
            file.write_all(&key)?;
            file.sync_all()?;
            // A concurrent host may have made one first: keep whichever won.
            match std::fs::hard_link(&temp, &path) {
                Ok(()) => {
                    let _ = std::fs::remove_file(&temp);
                    Ok(key)
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let _ = std::fs::remove_file(&temp);
                    secret(dir)
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&temp);
                    Err(e)
                }
            }
        }
        Err(e) => Err(e),
    }
}

/// Writes `MAC || artifact` to `path` so that readers see either nothing or
/// the whole file: concurrent hosts compiling the same plugin each rename a
/// complete file over the other's.
fn store(dir: &Path, path: &Path, artifact: &[u8], secret: &[u8], name: &str) -> std::io::Result<()> {
    let (temp, mut file) = tempfile_in(dir)?;
    let result = (|| {
        file.write_all(&mac(secret, name, artifact).finalize().into_bytes())?;
        file.write_all(artifact)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    let name = format!(".tmp-{}-{}", std::process::id(), fastrand::u64(..));
    let path = dir.join(name);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    Ok((path, file))
}

/// Marks an entry as just used, for eviction.
fn touch(path: &Path) {
    if let Ok(file) = std::fs::File::options().append(true).open(path) {
        let _ = file.set_modified(SystemTime::now());
    }
}

/// Deletes the least recently used entries until the cache fits `max_bytes`;
/// `keep` (the entry just written) stays whatever its size.
fn evict(dir: &Path, max_bytes: u64, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut artifacts: Vec<(SystemTime, u64, PathBuf)> = entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some((meta.modified().ok()?, meta.len(), e.path()))
        })
        .collect();
    let mut total: u64 = artifacts.iter().map(|a| a.1).sum();
    artifacts.sort();
    for (_, size, path) in artifacts {
        if total <= max_bytes {
            break;
        }
        if path == keep {
            continue;
        }
        if std::fs::remove_file(&path).is_ok() {
            tracing::debug!("plugin cache: evicted {}", path.display());
            total -= size;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest valid component: the preamble of component-model layer 1.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";
    const LIMIT: Duration = Duration::from_secs(60);

    #[test]
    fn miss_then_hit_then_tampered_entry_is_recompiled() {
        let engine = Engine::default();
        let dir = tempfile::tempdir().unwrap();
        let first = load(&engine, EMPTY_COMPONENT, Some(dir.path()), LIMIT).unwrap();
        assert_eq!(first.status, CacheStatus::Miss);
        let path = first.artifact.unwrap();
        assert!(path.exists());

        let second = load(&engine, EMPTY_COMPONENT, Some(dir.path()), LIMIT).unwrap();
        assert_eq!(second.status, CacheStatus::Hit);

        // One flipped bit of the machine code: the MAC no longer matches.
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let third = load(&engine, EMPTY_COMPONENT, Some(dir.path()), LIMIT).unwrap();
        assert_eq!(third.status, CacheStatus::Recompiled);
        assert_eq!(
            load(&engine, EMPTY_COMPONENT, Some(dir.path()), LIMIT).unwrap().status,
            CacheStatus::Hit
        );
        // No temp files left behind: the key and one entry.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn an_entry_moved_to_another_plugins_name_is_refused() {
        let engine = Engine::default();
        let dir = tempfile::tempdir().unwrap();
        let other = b"\0asm\x0d\0\x01\0\0";
        let a = load(&engine, EMPTY_COMPONENT, Some(dir.path()), LIMIT).unwrap();
        let b_path = artifact_path(dir.path(), &engine, other);
        std::fs::copy(a.artifact.unwrap(), &b_path).unwrap();
        // `other` is not even a valid component: it must be compiled (and
        // fail), never served from A's entry.
        assert!(load(&engine, other, Some(dir.path()), LIMIT).is_err());
    }

    #[test]
    fn the_cache_and_its_key_are_private() {
        let engine = Engine::default();
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("cache");
        load(&engine, EMPTY_COMPONENT, Some(&dir), LIMIT).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(KEY_FILE)), 0o600);
        // A key others may read is not used: every load compiles, none is served.
        std::fs::set_permissions(dir.join(KEY_FILE), std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            load(&engine, EMPTY_COMPONENT, Some(&dir), LIMIT).unwrap().status,
            CacheStatus::Miss
        );
    }

    #[test]
    fn least_recently_used_entries_are_evicted_past_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let old = SystemTime::now() - Duration::from_secs(3600);
        for (name, age) in [("a", 3), ("b", 2), ("c", 1)] {
            let path = dir.path().join(format!("{name}.cwasm"));
            std::fs::write(&path, vec![0u8; 1000]).unwrap();
            let file = std::fs::File::options().append(true).open(&path).unwrap();
            file.set_modified(old + Duration::from_secs(60 * (3 - age))).unwrap();
        }
        evict(dir.path(), 2000, &dir.path().join("a.cwasm"));
        let left: Vec<_> = ["a", "b", "c"]
            .into_iter()
            .filter(|n| dir.path().join(format!("{n}.cwasm")).exists())
            .collect();
        // a is the oldest but was just written; b goes.
        assert_eq!(left, ["a", "c"]);
    }

    #[test]
    fn key_changes_with_the_wasm_and_with_the_engine() {
        let plain = Engine::default();
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let epochs = Engine::new(&config).unwrap();
        let other = b"\0asm\x0d\0\x01\0\0";
        assert_ne!(key(&plain, EMPTY_COMPONENT), key(&plain, other));
        assert_ne!(key(&plain, EMPTY_COMPONENT), key(&epochs, EMPTY_COMPONENT));
        assert_eq!(key(&plain, EMPTY_COMPONENT), key(&Engine::default(), EMPTY_COMPONENT));
    }

    #[test]
    fn unwritable_cache_dir_still_compiles() {
        let engine = Engine::default();
        let file = tempfile::NamedTempFile::new().unwrap();
        // A directory below a regular file cannot be created.
        let loaded = load(&engine, EMPTY_COMPONENT, Some(&file.path().join("cache")), LIMIT).unwrap();
        assert_eq!(loaded.status, CacheStatus::Miss);
    }
}
