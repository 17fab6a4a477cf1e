//! What one plugin instance may consume: memory and time per call.

use std::time::Duration;

use serde::Deserialize;

pub const DEFAULT_MEMORY_MB: u64 = 256;
pub const DEFAULT_CALL_TIMEOUT_MS: u64 = 30_000;

/// `limits:` in a `wasm` destination's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Cap on each linear memory of an instance, in MiB.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u64,
    /// Wall time one call into the plugin may take.
    #[serde(default = "default_call_timeout_ms")]
    pub call_timeout_ms: u64,
}

fn default_memory_mb() -> u64 {
    DEFAULT_MEMORY_MB
}

fn default_call_timeout_ms() -> u64 {
    DEFAULT_CALL_TIMEOUT_MS
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_mb: DEFAULT_MEMORY_MB,
            call_timeout_ms: DEFAULT_CALL_TIMEOUT_MS,
        }
    }
}

impl Limits {
    pub fn memory_bytes(&self) -> usize {
        usize::try_from(self.memory_mb.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX)
    }

    /// Epoch ticks a call may run: rounded up, plus one because the first
    /// tick can come right after the deadline was set.
    pub fn deadline_ticks(&self, tick: Duration) -> u64 {
        let tick_ms = tick.as_millis().max(1) as u64;
        self.call_timeout_ms.div_ceil(tick_ms) + 1
    }
}

/// The store's [`wasmtime::ResourceLimiter`]. It remembers that it refused a
/// growth: a guest that runs out of memory aborts with a bare `unreachable`
/// trap, and this flag is how the error can name the memory limit instead.
#[derive(Debug)]
pub struct MemoryLimiter {
    max_bytes: usize,
    hit: bool,
}

impl MemoryLimiter {
    pub fn new(limits: &Limits) -> Self {
        Self {
            max_bytes: limits.memory_bytes(),
            hit: false,
        }
    }

    /// Whether a growth was refused since the last call to this function.
    pub fn take_hit(&mut self) -> bool {
        std::mem::take(&mut self.hit)
    }
}

/// Tables hold function references; a million is far beyond what compiled
/// code needs and keeps a hostile `table.grow` from eating host memory.
const MAX_TABLE_ELEMENTS: usize = 1_000_000;

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    #[test]
    fn refused_growth_is_remembered_once() {
        let mut limiter = MemoryLimiter::new(&Limits {
            memory_mb: 1,
            call_timeout_ms: 10,
        });
        assert!(limiter.memory_growing(0, 1024 * 1024, None).unwrap());
        assert!(!limiter.take_hit());
        assert!(!limiter.memory_growing(0, 1024 * 1024 + 1, None).unwrap());
        assert!(limiter.take_hit());
        assert!(!limiter.take_hit());
    }

    #[test]
    fn deadline_rounds_up_and_adds_a_tick() {
        let limits = Limits {
            memory_mb: 1,
            call_timeout_ms: 25,
        };
        assert_eq!(limits.deadline_ticks(Duration::from_millis(10)), 4);
    }

    #[test]
    fn missing_fields_take_defaults() {
        let limits: Limits = serde_json::from_str(r#"{"memory_mb": 64}"#).unwrap();
        assert_eq!(
            limits,
            Limits {
                memory_mb: 64,
                call_timeout_ms: DEFAULT_CALL_TIMEOUT_MS
            }
        );
        assert!(serde_json::from_str::<Limits>(r#"{"memory": 64}"#).is_err());
    }
}
