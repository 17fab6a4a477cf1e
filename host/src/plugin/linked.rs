//! Linked components shared by every plugin of this process that loads the
//! same bytes. `serve` loads a plugin per pipeline; each load used to
//! deserialize its own copy of the compiled code and link its own
//! pre-instance (with what it allocated, 6.4 MiB of the 8.6 MiB an idle
//! tenant cost with `bench_sum`). An entry lives as long as a loaded plugin holds it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use parking_lot::{Mutex, MutexGuard};
use wasmtime::component::InstancePre;

use super::cache::CacheStatus;
use super::error::PluginError;
use super::state::State;

/// A checked component, linked against the host's imports.
pub(crate) struct Linked {
    pub(crate) pre: InstancePre<State>,
    /// How the first load got the code.
    pub(crate) status: CacheStatus,
    pub(crate) artifact: Option<PathBuf>,
    pub(crate) compile_time: Duration,
    pub(crate) imports: Vec<String>,
    pub(crate) exports: Vec<String>,
}

/// (cache key: the wasm's digest and the engine's, the export required).
type Key = (String, &'static str);

fn loaded() -> MutexGuard<'static, HashMap<Key, Weak<Linked>>> {
    static LOADED: OnceLock<Mutex<HashMap<Key, Weak<Linked>>>> = OnceLock::new();
    LOADED.get_or_init(Default::default).lock()
}

/// The linked component for `key`: one a live plugin holds, else what
/// `load` makes (true: it was reused). The lock is not held while loading,
/// which can take a compile; two loads at once both load, and the second
/// is kept.
pub(crate) fn get_or_load(
    key: Key,
    load: impl FnOnce() -> Result<Linked, PluginError>,
) -> Result<(Arc<Linked>, bool), PluginError> {
    if let Some(linked) = loaded().get(&key).and_then(Weak::upgrade) {
        return Ok((linked, true));
    }
    let linked = Arc::new(load()?);
    let mut map = loaded();
    map.retain(|_, w| w.strong_count() > 0);
    map.insert(key, Arc::downgrade(&linked));
    Ok((linked, false))
}
