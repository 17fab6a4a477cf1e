//! The host-wide plugin memory budget. Each live instance holds a
//! reservation of its whole `memory_mb` for as long as it lives, so the sum of
//! what all instances can ever allocate stays under the budget: admission at
//! creation, as Redpanda does per core, rather than failing a running write
//! when a neighbour grows. A new instance waits for room (an instance being
//! dropped frees its reservation) and gives up with a clear error.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

/// Default share of the machine's memory that plugins may hold together.
const DEFAULT_SHARE_OF_RAM: u64 = 2;
/// How often a waiter of a share looks whether its parent freed room.
const PARENT_POLL: Duration = Duration::from_millis(50);
/// Used when the machine's memory cannot be read.
const FALLBACK_BUDGET_MB: u64 = 4096;

#[derive(Debug, thiserror::Error)]
#[error(
    "no room in {scope} for another instance of {wanted_mib} MiB: \
     {in_use_mib} of {budget_mib} MiB are held by {instances} live instance(s){} \
     (waited {waited_ms} ms; {advice})",
    .max_instances.map(|m| format!(" of at most {m}")).unwrap_or_default()
)]
pub struct BudgetExceeded {
    pub wanted_mib: u64,
    pub in_use_mib: u64,
    pub budget_mib: u64,
    pub instances: u64,
    pub max_instances: Option<u64>,
    pub waited_ms: u64,
    pub scope: String,
    pub advice: &'static str,
}

#[derive(Debug)]
pub struct MemoryBudget {
    /// Atomic so an operator can resize a tenant's share while it runs.
    limit_bytes: AtomicU64,
    state: Mutex<Held>,
    freed: Notify,
    /// A budget this one is a share of (a tenant's of the host's): room is
    /// taken from both.
    parent: Option<Arc<MemoryBudget>>,
    /// Live instances this budget admits at most (a tenant's `instances`);
    /// `u64::MAX` for none.
    max_instances: AtomicU64,
    /// Whose share this is, for the error.
    owner: Option<String>,
}

#[derive(Debug, Default)]
struct Held {
    bytes: u64,
    instances: u64,
}

impl MemoryBudget {
    pub fn new(limit_mib: u64) -> Arc<Self> {
        Arc::new(Self {
            limit_bytes: AtomicU64::new(limit_mib.saturating_mul(1 << 20)),
            state: Mutex::new(Held::default()),
            freed: Notify::new(),
            parent: None,
            max_instances: AtomicU64::new(u64::MAX),
            owner: None,
        })
    }

    /// `owner`'s share of `parent`: at most `limit_mib` and `max_instances`
    /// live instances, whose reservations also count against `parent`, so
    /// shares can be promised beyond the total and the total still holds.
    pub fn share(owner: &str, limit_mib: u64, max_instances: u64, parent: Arc<MemoryBudget>) -> Arc<Self> {
        Arc::new(Self {
            limit_bytes: AtomicU64::new(limit_mib.saturating_mul(1 << 20)),
            state: Mutex::new(Held::default()),
            freed: Notify::new(),
            parent: Some(parent),
            max_instances: AtomicU64::new(max_instances),
            owner: Some(owner.to_string()),
        })
    }

    /// New limits for a share that may be in use: instances already live
    /// keep their memory, and what waits for room is woken to look again.
    pub fn resize(&self, limit_mib: u64, max_instances: u64) {
        self.limit_bytes
            .store(limit_mib.saturating_mul(1 << 20), Ordering::Relaxed);
        self.max_instances.store(max_instances, Ordering::Relaxed);
        self.freed.notify_waiters();
    }

    fn limit_bytes(&self) -> u64 {
        self.limit_bytes.load(Ordering::Relaxed)
    }

    fn max_instances(&self) -> Option<u64> {
        Some(self.max_instances.load(Ordering::Relaxed)).filter(|&m| m != u64::MAX)
    }

    /// Whether this budget alone (not counting its parent) has room.
    fn has_room(&self, bytes: u64) -> bool {
        let held = self.state.lock();
        held.bytes.saturating_add(bytes) <= self.limit_bytes()
            && self.max_instances().is_none_or(|m| held.instances < m)
    }

    /// Why `bytes` found no room: this budget's figures, or its parent's
    /// when this one had room.
    fn exceeded(&self, bytes: u64, waited: Duration) -> BudgetExceeded {
        if let Some(parent) = self.parent.as_ref().filter(|_| self.has_room(bytes)) {
            return parent.exceeded(bytes, waited);
        }
        let held = self.state.lock();
        BudgetExceeded {
            wanted_mib: bytes >> 20,
            in_use_mib: held.bytes >> 20,
            budget_mib: self.limit_mib(),
            instances: held.instances,
            max_instances: self.max_instances(),
            waited_ms: waited.as_millis() as u64,
            scope: match &self.owner {
                Some(owner) => format!("{owner}'s plugin memory share"),
                None => "the plugin memory budget".into(),
            },
            advice: match self.owner {
                Some(_) => {
                    "the operator sets memory_mb and instances; lower limits.memory_mb or max_concurrent_threads"
                }
                None => "raise --plugin-memory-budget-mb or lower memory_mb / max_concurrent_threads",
            },
        }
    }

    pub fn limit_mib(&self) -> u64 {
        self.limit_bytes() >> 20
    }

    /// Bytes held by live instances.
    pub fn in_use(&self) -> u64 {
        self.state.lock().bytes
    }

    /// Live instances holding a reservation.
    pub fn instances(&self) -> u64 {
        self.state.lock().instances
    }

    fn try_reserve(self: &Arc<Self>, bytes: u64) -> Option<Reservation> {
        let mut held = self.state.lock();
        if held.bytes.saturating_add(bytes) > self.limit_bytes()
            || self.max_instances().is_some_and(|m| held.instances >= m)
        {
            return None;
        }
        let parent = match &self.parent {
            Some(parent) => Some(Box::new(parent.try_reserve(bytes)?)),
            None => None,
        };
        held.bytes += bytes;
        held.instances += 1;
        Some(Reservation {
            budget: self.clone(),
            bytes,
            _parent: parent,
        })
    }

    /// Reserves `bytes`, waiting up to `wait` for other instances to free room.
    pub async fn reserve(self: &Arc<Self>, bytes: u64, wait: Duration) -> Result<Reservation, BudgetExceeded> {
        let started = tokio::time::Instant::now();
        let deadline = started + wait;
        loop {
            // Registered before trying, so a release between the try and
            // the wait is not missed.
            let freed = self.freed.notified();
            if let Some(reservation) = self.try_reserve(bytes) {
                return Ok(reservation);
            }
            // A parent's release does not wake this budget's waiters: look
            // again now and then.
            let wake = match self.parent {
                Some(_) => deadline.min(tokio::time::Instant::now() + PARENT_POLL),
                None => deadline,
            };
            let hopeless = bytes > self.limit_bytes();
            if hopeless || (tokio::time::timeout_at(wake, freed).await.is_err() && wake >= deadline) {
                return Err(self.exceeded(bytes, started.elapsed()));
            }
        }
    }
}

/// Room held in a budget; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: u64,
    _parent: Option<Box<Reservation>>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        {
            let mut held = self.budget.state.lock();
            held.bytes -= self.bytes;
            held.instances -= 1;
        }
        self.budget.freed.notify_waiters();
    }
}

static GLOBAL: OnceLock<Arc<MemoryBudget>> = OnceLock::new();

/// Sets the process-wide budget; only the first call counts (the CLI makes
/// it, before any plugin is loaded).
pub fn set_global(limit_mib: u64) {
    let _ = GLOBAL.set(MemoryBudget::new(limit_mib));
}

/// The process-wide budget: `--plugin-memory-budget-mb`, else
/// `$BIZON_HOST_PLUGIN_MEMORY_BUDGET_MB`, else half of the machine's memory.
pub fn global() -> Arc<MemoryBudget> {
    GLOBAL
        .get_or_init(|| {
            let from_env = std::env::var("BIZON_HOST_PLUGIN_MEMORY_BUDGET_MB")
                .ok()
                .and_then(|v| v.trim().parse().ok());
            MemoryBudget::new(from_env.unwrap_or_else(default_budget_mib))
        })
        .clone()
}

fn default_budget_mib() -> u64 {
    machine_memory_mib().map_or(FALLBACK_BUDGET_MB, |mib| mib / DEFAULT_SHARE_OF_RAM)
}

/// The machine's memory, if `/proc/meminfo` says.
pub fn machine_memory_mib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_budget_waits_then_fails_or_admits_after_a_release() {
        let budget = MemoryBudget::new(10);
        let first = budget.reserve(6 << 20, Duration::ZERO).await.unwrap();
        let err = budget.reserve(6 << 20, Duration::from_millis(20)).await.unwrap_err();
        assert_eq!((err.in_use_mib, err.budget_mib, err.instances), (6, 10, 1));
        assert!(err.to_string().contains("6 of 10 MiB"), "{err}");

        let waiter = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.reserve(6 << 20, Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(first);
        let second = waiter.await.unwrap().unwrap();
        assert_eq!(budget.in_use(), 6 << 20);
        drop(second);
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test]
    async fn a_resized_share_admits_or_refuses_from_then_on() {
        let host = MemoryBudget::new(100);
        let share = MemoryBudget::share("a", 8, 1, host.clone());
        let first = share.reserve(6 << 20, Duration::ZERO).await.unwrap();
        let waiter = {
            let share = share.clone();
            tokio::spawn(async move { share.reserve(6 << 20, Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        share.resize(16, 2);
        let second = waiter.await.unwrap().expect("a raise wakes what waits");
        share.resize(4, 2);
        let err = share.reserve(1 << 20, Duration::ZERO).await.unwrap_err();
        assert_eq!(
            (err.in_use_mib, err.budget_mib),
            (12, 4),
            "live instances keep their memory"
        );
        drop((first, second));
        assert_eq!(host.in_use(), 0);
    }

    #[tokio::test]
    async fn a_share_takes_room_from_its_parent_too() {
        let host = MemoryBudget::new(10);
        let (a, b) = (
            MemoryBudget::share("a", 8, 1, host.clone()),
            MemoryBudget::share("b", 8, 4, host.clone()),
        );
        let held = a.reserve(6 << 20, Duration::ZERO).await.unwrap();
        assert_eq!(host.in_use(), 6 << 20);
        // A's share admits one instance, whatever its memory.
        let err = a.reserve(1 << 20, Duration::ZERO).await.unwrap_err();
        assert!(err.to_string().contains("a's plugin memory share"), "{err}");
        assert!(err.to_string().contains("1 live instance(s) of at most 1"), "{err}");
        // B's own share has room, the host does not: the host's figures say so.
        let err = b.reserve(6 << 20, Duration::from_millis(20)).await.unwrap_err();
        assert!(
            err.to_string().starts_with("no room in the plugin memory budget"),
            "{err}"
        );
        assert_eq!(err.budget_mib, 10);
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move { b.reserve(6 << 20, Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(held);
        let second = waiter.await.unwrap().unwrap();
        assert_eq!((host.in_use(), a.in_use(), b.in_use()), (6 << 20, 0, 6 << 20));
        drop(second);
        assert_eq!(host.in_use(), 0);
    }

    #[tokio::test]
    async fn more_than_the_whole_budget_fails_at_once() {
        let budget = MemoryBudget::new(1);
        let err = budget.reserve(2 << 20, Duration::from_secs(60)).await.unwrap_err();
        assert!(err.waited_ms < 1000);
    }
}
