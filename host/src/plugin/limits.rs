//! What one plugin instance may consume: memory (all of its linear memories
//! and tables together), how many core instances, memories and tables it may
//! create, and the wall time of one call.

use std::time::Duration;

use serde::Deserialize;

pub const DEFAULT_MEMORY_MB: u64 = 256;
/// The default for a component that carries a language runtime: CPython
/// (componentize-py, ~20 MB) or SpiderMonkey (componentize-js, ~13 MB) use
/// 30-40 MiB before the first batch, and a Python plugin that reads every
/// column of a default 50 MB batch as rows peaks near 384 MiB.
pub const INTERPRETER_MEMORY_MB: u64 = 512;
/// Components this large embed an interpreter; a Rust plugin is 1-3 MB.
pub const INTERPRETER_COMPONENT_BYTES: u64 = 8 << 20;
pub const DEFAULT_CALL_TIMEOUT_MS: u64 = 30_000;

/// Core module instances one plugin instance may create. A Rust plugin has
/// a handful, a componentize-py or componentize-js one a few dozen.
pub const MAX_CORE_INSTANCES: usize = 100;
/// Linear memories one plugin instance may create: each reserves address
/// space, so thousands of tiny ones would be an attack of their own.
pub const MAX_MEMORIES: usize = 32;
/// Tables one plugin instance may create.
pub const MAX_TABLES: usize = 100;
/// Elements one table may hold. Tables hold function references: CPython
/// compiled to wasm has some ten thousand functions, so this leaves ample
/// room while keeping the pool's reservation per table under a MiB.
pub const MAX_TABLE_ELEMENTS: usize = 100_000;
/// What a table element is counted as against `memory_mb`: a pointer.
const TABLE_ELEMENT_BYTES: usize = 8;

/// `limits:` in a `wasm` destination's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Cap on everything an instance allocates (all its linear memories and
    /// tables together), in MiB. Unset: by the component's size
    /// ([`Limits::for_component`]).
    #[serde(default)]
    pub memory_mb: Option<u64>,
    /// Wall time one call into the plugin may take, host calls included.
    #[serde(default = "default_call_timeout_ms")]
    pub call_timeout_ms: u64,
}

fn default_call_timeout_ms() -> u64 {
    DEFAULT_CALL_TIMEOUT_MS
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_mb: None,
            call_timeout_ms: DEFAULT_CALL_TIMEOUT_MS,
        }
    }
}

impl Limits {
    /// These limits for a component of `size` bytes: an unset `memory_mb`
    /// becomes [`INTERPRETER_MEMORY_MB`] for a component that embeds an
    /// interpreter, [`DEFAULT_MEMORY_MB`] otherwise.
    pub fn for_component(self, size: u64) -> Limits {
        let default = if size >= INTERPRETER_COMPONENT_BYTES {
            INTERPRETER_MEMORY_MB
        } else {
            DEFAULT_MEMORY_MB
        };
        Limits {
            memory_mb: Some(self.memory_mb.unwrap_or(default)),
            ..self
        }
    }

    pub fn memory_mb(&self) -> u64 {
        self.memory_mb.unwrap_or(DEFAULT_MEMORY_MB)
    }

    pub fn memory_bytes(&self) -> usize {
        usize::try_from(self.memory_mb().saturating_mul(1024 * 1024)).unwrap_or(usize::MAX)
    }

    /// At most a week: a longer timeout is none, and deadlines (now + this)
    /// must not overflow (a tenant's `call_timeout_ms: 18446744073709551615`
    /// panicked at its first call; found beside the serve API's fuzzing).
    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms.min(7 * 24 * 3600 * 1000))
    }
}

/// The store's [`wasmtime::ResourceLimiter`]. It keeps the sum of every
/// memory and table of the instance under `memory_mb` (wasmtime asks about
/// each one separately, so a component with sixteen core instances would
/// otherwise get sixteen times the cap), and it remembers that it refused a
/// growth: a guest that runs out of memory aborts with a bare `unreachable`
/// trap, and this flag is how the error can name the memory limit instead.
#[derive(Debug)]
pub struct MemoryLimiter {
    max_bytes: usize,
    used_bytes: usize,
    hit: bool,
}

impl MemoryLimiter {
    pub fn new(limits: &Limits) -> Self {
        Self {
            max_bytes: limits.memory_bytes(),
            used_bytes: 0,
            hit: false,
        }
    }

    /// Whether a growth was refused since the last call to this function.
    pub fn take_hit(&mut self) -> bool {
        std::mem::take(&mut self.hit)
    }

    fn grow(&mut self, more: usize) -> bool {
        match self.used_bytes.checked_add(more) {
            Some(total) if total <= self.max_bytes => {
                self.used_bytes = total;
                true
            }
            _ => {
                self.hit = true;
                false
            }
        }
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(self.grow(desired.saturating_sub(current)))
    }

    fn table_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            return Ok(false);
        }
        Ok(self.grow(desired.saturating_sub(current).saturating_mul(TABLE_ELEMENT_BYTES)))
    }

    fn instances(&self) -> usize {
        MAX_CORE_INSTANCES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    fn limiter(memory_mb: u64) -> MemoryLimiter {
        MemoryLimiter::new(&Limits {
            memory_mb: Some(memory_mb),
            call_timeout_ms: 10,
        })
    }

    #[test]
    fn the_longest_call_timeout_still_makes_a_deadline() {
        let limits = Limits {
            memory_mb: None,
            call_timeout_ms: u64::MAX,
        };
        assert_eq!(limits.call_timeout(), Duration::from_secs(7 * 24 * 3600));
        let _deadline = std::time::Instant::now() + limits.call_timeout();
    }

    #[test]
    fn refused_growth_is_remembered_once() {
        let mut limiter = limiter(1);
        assert!(limiter.memory_growing(0, 1024 * 1024, None).unwrap());
        assert!(!limiter.take_hit());
        assert!(!limiter.memory_growing(1024 * 1024, 1024 * 1024 + 1, None).unwrap());
        assert!(limiter.take_hit());
        assert!(!limiter.take_hit());
    }

    #[test]
    fn memories_and_tables_share_one_cap() {
        let mut limiter = limiter(4);
        // Three memories of 1 MiB each fit; a fourth of 1 MiB does not,
        // once a table took its share.
        for _ in 0..3 {
            assert!(limiter.memory_growing(0, 1 << 20, None).unwrap());
        }
        assert!(limiter.table_growing(0, 1000, None).unwrap());
        assert!(!limiter.memory_growing(0, 1 << 20, None).unwrap());
        assert!(limiter.take_hit());
        // Growing an existing memory counts only the difference.
        assert!(limiter.memory_growing(1 << 20, (1 << 20) + 4096, None).unwrap());
        assert!(!limiter.table_growing(0, MAX_TABLE_ELEMENTS + 1, None).unwrap());
    }

    #[test]
    fn missing_fields_take_defaults() {
        let limits: Limits = serde_json::from_str(r#"{"memory_mb": 64}"#).unwrap();
        assert_eq!(
            limits,
            Limits {
                memory_mb: Some(64),
                call_timeout_ms: DEFAULT_CALL_TIMEOUT_MS
            }
        );
        assert!(serde_json::from_str::<Limits>(r#"{"memory": 64}"#).is_err());
    }

    #[test]
    fn unset_memory_follows_the_component_and_a_set_one_is_kept() {
        let unset = Limits::default();
        assert_eq!(unset.for_component(2 << 20).memory_mb(), DEFAULT_MEMORY_MB);
        assert_eq!(unset.for_component(20 << 20).memory_mb(), INTERPRETER_MEMORY_MB);
        let set = Limits {
            memory_mb: Some(128),
            ..Limits::default()
        };
        assert_eq!(set.for_component(20 << 20).memory_mb(), 128);
    }
}
