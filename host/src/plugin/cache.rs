//! Compiled plugins on disk. Compiling a 2 MB component takes about a second;
//! loading the precompiled artifact takes well under a millisecond, so each
//! file is compiled once per engine build and the result kept.

use std::hash::Hasher;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

/// Where a component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Loaded from a precompiled artifact.
    Hit,
    /// Compiled now (and stored when the cache directory is writable).
    Miss,
    /// An artifact existed but could not be loaded; compiled again and replaced.
    Recompiled,
}

impl std::fmt::Display for CacheStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Recompiled => "corrupt entry, recompiled",
        })
    }
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

/// The artifact's name: the wasm bytes' hash plus the engine's compatibility
/// hash (wasmtime version, target, compiler settings), so a different host
/// build never picks up an artifact it cannot run.
pub fn key(engine: &Engine, wasm: &[u8]) -> String {
    let mut hasher = Sha256Hasher(Sha256::new());
    std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut hasher);
    let engine_hash = hasher.0.finalize();
    let wasm_hash = Sha256::digest(wasm);
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    format!("{}-{}", hex(&wasm_hash), &hex(&engine_hash)[..16])
}

pub fn artifact_path(dir: &Path, engine: &Engine, wasm: &[u8]) -> PathBuf {
    dir.join(format!("{}.cwasm", key(engine, wasm)))
}

/// The component for `wasm`: from the cache in `dir` when possible, compiled
/// (and stored) otherwise. Cache trouble is logged and never fatal; only a
/// component that does not compile is an error.
pub fn load(engine: &Engine, wasm: &[u8], dir: Option<&Path>) -> wasmtime::Result<Loaded> {
    let Some(dir) = dir else {
        let started = Instant::now();
        let component = Component::new(engine, wasm)?;
        return Ok(Loaded {
            component,
            status: CacheStatus::Miss,
            artifact: None,
            compile_time: started.elapsed(),
        });
    };
    let path = artifact_path(dir, engine, wasm);
    let mut status = CacheStatus::Miss;
    if path.exists() {
        // SAFETY: deserializing runs the artifact's machine code unchecked. The
        // file is one this host wrote (temp file + rename, so never partial),
        // named by the sha256 of the wasm it was compiled from and by the
        // engine's compatibility hash; wasmtime still checks its header and
        // engine settings and refuses a mismatch, which lands below.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => {
                return Ok(Loaded {
                    component,
                    status: CacheStatus::Hit,
                    artifact: Some(path),
                    compile_time: Duration::ZERO,
                })
            }
            Err(e) => {
                tracing::warn!("plugin cache entry {} is unusable, recompiling: {e:#}", path.display());
                status = CacheStatus::Recompiled;
            }
        }
    }
    let started = Instant::now();
    let artifact = engine.precompile_component(wasm)?;
    let compile_time = started.elapsed();
    if let Err(e) = store(dir, &path, &artifact) {
        tracing::warn!("cannot store the compiled plugin in {}: {e}", dir.display());
    }
    // SAFETY: `artifact` was produced by `precompile_component` of this very
    // engine a moment ago.
    let component = unsafe { Component::deserialize(engine, &artifact)? };
    Ok(Loaded {
        component,
        status,
        artifact: Some(path),
        compile_time,
    })
}

/// Writes `bytes` to `path` so that readers see either nothing or the whole
/// file: concurrent hosts compiling the same plugin each rename a complete
/// file over the other's.
fn store(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut temp = tempfile_in(dir)?;
    temp.1.write_all(bytes)?;
    temp.1.sync_all()?;
    std::fs::rename(&temp.0, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&temp.0);
    })
}

fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    let name = format!(".tmp-{}-{}", std::process::id(), fastrand::u64(..));
    let path = dir.join(name);
    let file = std::fs::OpenOptions::new().write(true).create_new(true).open(&path)?;
    Ok((path, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest valid component: the preamble of component-model layer 1.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    #[test]
    fn miss_then_hit_then_corrupt_entry_is_recompiled() {
        let engine = Engine::default();
        let dir = tempfile::tempdir().unwrap();
        let first = load(&engine, EMPTY_COMPONENT, Some(dir.path())).unwrap();
        assert_eq!(first.status, CacheStatus::Miss);
        let path = first.artifact.unwrap();
        assert!(path.exists());

        let second = load(&engine, EMPTY_COMPONENT, Some(dir.path())).unwrap();
        assert_eq!(second.status, CacheStatus::Hit);

        std::fs::write(&path, b"not an artifact").unwrap();
        let third = load(&engine, EMPTY_COMPONENT, Some(dir.path())).unwrap();
        assert_eq!(third.status, CacheStatus::Recompiled);
        assert_eq!(
            load(&engine, EMPTY_COMPONENT, Some(dir.path())).unwrap().status,
            CacheStatus::Hit
        );
        // No temp files left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
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
        let loaded = load(&engine, EMPTY_COMPONENT, Some(&file.path().join("cache"))).unwrap();
        assert_eq!(loaded.status, CacheStatus::Miss);
    }
}
