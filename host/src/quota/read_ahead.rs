//! Memory for records read and not yet written, shared by several runs.
//!
//! A run bounds its own read-ahead (buffers, queued and in-flight batches)
//! by its budget; under `serve` many runs belong to one tenant, and their
//! budgets together would be the tenant's to grow without limit. A pool is
//! one tenant's read-ahead, a share of the host's: a run whose pool is full
//! reads no more until its own writes give memory back. Unlike plugin
//! memory, nothing is reserved up front: an idle pipeline holds nothing, so
//! a thousand of them cost no budget.
//!
//! A run with nothing read may always read one page, whatever the pool
//! says: otherwise a tenant's busy pipeline could starve its idle ones, and
//! the pool may be over by a page per run.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Debug)]
pub struct ReadAheadPool {
    /// Atomic so an operator can resize a tenant's share while it runs.
    limit_bytes: AtomicU64,
    in_use: AtomicUsize,
    parent: Option<Arc<ReadAheadPool>>,
}

impl ReadAheadPool {
    pub fn new(limit_mib: u64) -> Arc<Self> {
        Self::with_parent(limit_mib, None)
    }

    /// A share of `parent`: what is held counts against both.
    pub fn share(limit_mib: u64, parent: Arc<ReadAheadPool>) -> Arc<Self> {
        Self::with_parent(limit_mib, Some(parent))
    }

    fn with_parent(limit_mib: u64, parent: Option<Arc<ReadAheadPool>>) -> Arc<Self> {
        Arc::new(Self {
            limit_bytes: AtomicU64::new(limit_mib.saturating_mul(1 << 20)),
            in_use: AtomicUsize::new(0),
            parent,
        })
    }

    pub fn resize(&self, limit_mib: u64) {
        self.limit_bytes
            .store(limit_mib.saturating_mul(1 << 20), Ordering::Relaxed);
    }

    /// Bytes of records held by the runs charged to this pool.
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Relaxed)
    }

    pub fn limit_bytes(&self) -> u64 {
        self.limit_bytes.load(Ordering::Relaxed)
    }

    /// Whether this pool or one it is a share of is spent.
    pub fn is_full(&self) -> bool {
        self.in_use() as u64 >= self.limit_bytes() || self.parent.as_ref().is_some_and(|p| p.is_full())
    }

    fn add(&self, bytes: usize) {
        self.in_use.fetch_add(bytes, Ordering::Relaxed);
        if let Some(parent) = &self.parent {
            parent.add(bytes);
        }
    }

    fn sub(&self, bytes: usize) {
        self.in_use.fetch_sub(bytes, Ordering::Relaxed);
        if let Some(parent) = &self.parent {
            parent.sub(bytes);
        }
    }
}

/// One run's part of a pool, given back when the run ends.
#[derive(Debug)]
pub(crate) struct Charge {
    pool: Arc<ReadAheadPool>,
    bytes: usize,
}

impl Charge {
    pub(crate) fn new(pool: Arc<ReadAheadPool>) -> Self {
        Self { pool, bytes: 0 }
    }

    /// Makes the run's part `bytes`.
    pub(crate) fn set(&mut self, bytes: usize) {
        match bytes.cmp(&self.bytes) {
            std::cmp::Ordering::Greater => self.pool.add(bytes - self.bytes),
            std::cmp::Ordering::Less => self.pool.sub(self.bytes - bytes),
            std::cmp::Ordering::Equal => return,
        }
        self.bytes = bytes;
    }

    /// Whether a run holding `bytes` may read another page.
    pub(crate) fn allows_reading(&self) -> bool {
        self.bytes == 0 || !self.pool.is_full()
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.set(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_counts_against_its_parent_and_gives_back_on_drop() {
        let host = ReadAheadPool::new(3);
        let a = ReadAheadPool::share(2, host.clone());
        let b = ReadAheadPool::share(2, host.clone());
        let mut run_a = Charge::new(a.clone());
        run_a.set(2 << 20);
        assert!(a.is_full(), "a's own share is spent");
        assert!(!b.is_full(), "b's is not, nor is the host's");
        let mut run_b = Charge::new(b.clone());
        assert!(run_b.allows_reading());
        run_b.set(1 << 20);
        assert!(b.is_full(), "the host's budget is spent: b's share with it");
        assert!(!run_b.allows_reading());
        let idle = Charge::new(b.clone());
        assert!(idle.allows_reading(), "a run with nothing read may read a page");
        run_a.set(1 << 20);
        assert!(run_b.allows_reading());
        drop(run_a);
        drop(run_b);
        assert_eq!((host.in_use(), a.in_use(), b.in_use()), (0, 0, 0));
    }
}
