//! The process-wide wasmtime engine and the clock that bounds call time.

use std::sync::OnceLock;
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::limits::{MAX_CORE_INSTANCES, MAX_MEMORIES, MAX_TABLES, MAX_TABLE_ELEMENTS};

/// How often the engine's epoch advances. A call's timeout is rounded up to
/// whole ticks; 10 ms keeps the wake-ups cheap and the rounding invisible.
pub const TICK: Duration = Duration::from_millis(10);

/// Largest linear memory the pooling allocator reserves room for. A plugin's
/// own `memory_mb` is enforced by the store's limiter below this.
const POOL_MAX_MEMORY: usize = 4 << 30;

/// Which allocator the engine got, for `plugin inspect` and the docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocator {
    Pooling,
    OnDemand,
}

pub struct SharedEngine {
    pub engine: Engine,
    pub allocator: Allocator,
}

/// The engine every plugin of this process shares: compiled code and the
/// instance pool are per engine, and so is the epoch ticker thread.
pub fn shared() -> &'static SharedEngine {
    static ENGINE: OnceLock<SharedEngine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let shared = build();
        let engine = shared.engine.clone();
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || loop {
                std::thread::sleep(TICK);
                engine.increment_epoch();
            })
            .expect("cannot start the wasm epoch thread");
        shared
    })
}

fn config() -> Config {
    let mut config = Config::new();
    // Epochs rather than fuel: a check per loop back-edge costs less than
    // counting every instruction, and a wall-clock bound is what users set.
    config.epoch_interruption(true);
    config
}

fn build() -> SharedEngine {
    let mut pooled = config();
    let mut pool = PoolingAllocationConfig::default();
    pool.max_memory_size(POOL_MAX_MEMORY);
    // The same shape limits as the store limiter applies on demand
    // (limits.rs), so both allocators refuse the same components.
    pool.max_core_instances_per_component(MAX_CORE_INSTANCES as u32);
    pool.max_memories_per_component(MAX_MEMORIES as u32);
    pool.max_tables_per_component(MAX_TABLES as u32);
    pool.table_elements(MAX_TABLE_ELEMENTS);
    pooled.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    match Engine::new(&pooled) {
        Ok(engine) => SharedEngine {
            engine,
            allocator: Allocator::Pooling,
        },
        Err(e) => {
            // The pool reserves its address space up front, which a low
            // `ulimit -v` or a 32-bit host refuses; instantiation is then
            // slower (~2x) but everything else is the same.
            tracing::debug!("wasm pooling allocator unavailable, allocating on demand: {e:#}");
            let engine = Engine::new(&config()).expect("the default wasmtime config is valid");
            SharedEngine {
                engine,
                allocator: Allocator::OnDemand,
            }
        }
    }
}
