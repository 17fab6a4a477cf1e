//! The process-wide wasmtime engine and the clock that bounds call time.

use std::sync::OnceLock;
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::limits::{MAX_CORE_INSTANCES, MAX_MEMORIES, MAX_TABLES, MAX_TABLE_ELEMENTS};

/// How often the engine's epoch advances, and so how long guest code runs
/// before it yields its thread to other tasks (under `serve`, other
/// tenants' calls queued on the same worker). A call's timeout is rounded
/// up to whole ticks. 2 ms rather than 10: a neighbour's spinning call held
/// a worker a whole tick, the latency another tenant's write then saw;
/// 500 wake-ups a second cost nothing measurable.
pub const TICK: Duration = Duration::from_millis(2);

/// Largest linear memory the pooling allocator reserves room for. A plugin's
/// own `memory_mb` is enforced by the store's limiter below this.
const POOL_MAX_MEMORY: usize = 4 << 30;

static POOL_INSTANCES: OnceLock<u32> = OnceLock::new();

/// Sets how many plugin instances may live at once in the pool (wasmtime's
/// default: 1,000); only the first call before the engine is built counts.
/// `serve` raises it: each running pipeline holds an instance.
pub fn set_pool_instances(instances: u32) {
    let _ = POOL_INSTANCES.set(instances);
}

static SERIAL_COMPILATION: OnceLock<()> = OnceLock::new();

/// Compiles each plugin on the calling thread only (before the engine is
/// built): `serve` compiles uploads on one low-priority thread, so that an
/// upload cannot take the cores the pipelines run on.
pub fn set_serial_compilation() {
    let _ = SERIAL_COMPILATION.set(());
}

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
    if SERIAL_COMPILATION.get().is_some() {
        config.parallel_compilation(false);
    }
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
    if let Some(&n) = POOL_INSTANCES.get() {
        // A plugin built by Rust or componentize-* has a few core instances,
        // a memory or two and a few tables; the pool sizes every kind.
        pool.total_component_instances(n);
        pool.total_stacks(n);
        pool.total_core_instances(n.saturating_mul(4));
        pool.total_memories(n.saturating_mul(2));
        pool.total_tables(n.saturating_mul(4));
    }
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
