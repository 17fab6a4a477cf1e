//! Restart backoff: a pipeline that failed may start again only after a
//! wait that doubles with each failure in a row (1 s, 2 s, 4 s, ... up to a
//! minute). A failing pipeline restarted in a loop (by a tenant's script or
//! a hostile one) otherwise costs the host a plugin instantiation, its
//! memory and its log lines several times a second, outside the tenant's
//! CPU share. A run that completes or is stopped, or that ran longer than
//! the longest wait before failing, starts the count again.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::runs::Key;

/// The wait after the first failure.
pub const FIRST: Duration = Duration::from_secs(1);
/// The longest wait, and how long a run must last for its failure to count
/// as a first one.
pub const LONGEST: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct Backoff {
    failures: Mutex<HashMap<Key, Failures>>,
}

#[derive(Clone, Copy)]
struct Failures {
    in_a_row: u32,
    until: Instant,
}

/// Where a pipeline stands: its failures in a row and how long until it may
/// start again (zero: now).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Standing {
    pub in_a_row: u32,
    pub wait: Duration,
}

impl Backoff {
    fn lock(&self) -> parking_lot::MutexGuard<'_, HashMap<Key, Failures>> {
        self.failures.lock()
    }

    /// A run that lasted `ran` failed (or a start failed: zero).
    pub fn failed(&self, key: &Key, ran: Duration) {
        let mut failures = self.lock();
        let in_a_row = match failures.get(key) {
            Some(f) if ran < LONGEST => f.in_a_row.saturating_add(1),
            _ => 1,
        };
        let wait = FIRST.saturating_mul(1 << (in_a_row - 1).min(16)).min(LONGEST);
        failures.insert(
            key.clone(),
            Failures {
                in_a_row,
                until: Instant::now() + wait,
            },
        );
    }

    /// A run completed or was stopped.
    pub fn succeeded(&self, key: &Key) {
        self.lock().remove(key);
    }

    pub fn standing(&self, key: &Key) -> Standing {
        self.lock().get(key).map_or_else(Standing::default, |f| Standing {
            in_a_row: f.in_a_row,
            wait: f.until.saturating_duration_since(Instant::now()),
        })
    }

    /// Forgets a tenant's pipelines (the tenant is deleted). A deleted and
    /// re-created pipeline keeps its count: deleting is no way around it.
    pub fn forget_tenant(&self, tenant: &str) {
        self.lock().retain(|(t, _), _| t != tenant);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        ("t".into(), "p".into())
    }

    #[test]
    fn the_wait_doubles_with_each_failure_up_to_the_longest() {
        let backoff = Backoff::default();
        let mut waits = Vec::new();
        for _ in 0..9 {
            backoff.failed(&key(), Duration::ZERO);
            waits.push(backoff.standing(&key()).wait.as_secs_f64().round() as u64);
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff.standing(&key()).in_a_row, 9);
    }

    #[test]
    fn a_success_or_a_long_run_starts_the_count_again() {
        let backoff = Backoff::default();
        backoff.failed(&key(), Duration::ZERO);
        backoff.failed(&key(), Duration::ZERO);
        backoff.failed(&key(), LONGEST);
        assert_eq!(backoff.standing(&key()).in_a_row, 1);
        backoff.succeeded(&key());
        assert_eq!(backoff.standing(&key()), Standing::default());
    }
}
