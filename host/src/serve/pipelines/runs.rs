//! The supervisor's maps, by (tenant, pipeline): the pipelines being
//! started (a second start is refused), those running here with the
//! handles to stop, watch and upgrade them, and how the last run of each
//! ended.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, MutexGuard};
use tokio::sync::watch;

use super::status::RunState;
use super::swap::Swappable;
use crate::pipeline::Progress;

/// (tenant, pipeline).
pub type Key = (String, String);

pub fn key(tenant: &str, name: &str) -> Key {
    (tenant.to_string(), name.to_string())
}

pub struct Running {
    pub stop: watch::Sender<bool>,
    pub progress: watch::Receiver<Progress>,
    /// True once the run's task has recorded how it ended.
    pub done: watch::Receiver<bool>,
    pub started: Instant,
    pub swap: Option<Arc<Swappable>>,
    pub plugin: Option<(String, u32)>,
    /// The destination's name (`wasm`, `bigquery_streaming_v2`, ...).
    pub destination: &'static str,
    /// The `wasm:` transforms' versions, fixed for the run.
    pub transforms: Vec<(String, u32)>,
    pub disk_mb: u64,
    /// The stored YAML this run has taken in (a plugin change swaps it in;
    /// the rest waits for a restart): another host's change is told apart by it.
    pub yaml: String,
}

pub struct Finished {
    pub state: RunState,
    pub progress: Progress,
    pub error: Option<String>,
    pub plugin: Option<(String, u32)>,
    /// The destination's name, when the run was built.
    pub destination: Option<&'static str>,
    /// Records written a second over the run.
    pub rate: f64,
}

#[derive(Default)]
pub struct Runs {
    starting: Mutex<HashSet<Key>>,
    running: Mutex<HashMap<Key, Running>>,
    finished: Mutex<HashMap<Key, Finished>>,
}

impl Runs {
    pub fn running(&self) -> MutexGuard<'_, HashMap<Key, Running>> {
        self.running.lock()
    }

    pub fn finished(&self) -> MutexGuard<'_, HashMap<Key, Finished>> {
        self.finished.lock()
    }

    pub fn is_starting(&self, key: &Key) -> bool {
        self.starting.lock().contains(key)
    }

    /// Marks the pipeline as being started, unless it is or runs already.
    pub fn claim(&self, key: Key) -> Option<Starting<'_>> {
        let mut starting = self.starting.lock();
        if self.running().contains_key(&key) || !starting.insert(key.clone()) {
            return None;
        }
        Some(Starting { runs: self, key })
    }

    /// The writable disk a tenant's running pipelines were granted, in MiB.
    pub fn disk_held(&self, tenant: &str) -> u64 {
        self.running()
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .map(|(_, r)| r.disk_mb)
            .sum()
    }
}

/// A pipeline being started; dropped once it runs or failed to start.
pub struct Starting<'a> {
    runs: &'a Runs,
    key: Key,
}

impl Drop for Starting<'_> {
    fn drop(&mut self) {
        self.runs.starting.lock().remove(&self.key);
    }
}
