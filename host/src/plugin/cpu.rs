//! A CPU share: what a group of instances (a tenant's, under `serve`) may
//! run of guest code per second, counted in epoch ticks. Every tick a call
//! of the group is seen running costs one token; tokens come back at the
//! share's rate. A group over its share sleeps at its next ticks until the
//! tokens are back, so a spinning neighbour waits and others do not.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::engine::TICK;

#[derive(Debug)]
pub struct CpuShare {
    /// (ticks per second the group may run: 100 per core at a 10 ms tick;
    /// tokens; last refill). A burst of one second at most.
    state: Mutex<(f64, f64, Instant)>,
}

impl CpuShare {
    /// A share of `cores` cores (0.5: half of one).
    pub fn new(cores: f64) -> Self {
        let rate = Self::rate(cores);
        Self {
            state: Mutex::new((rate, rate, Instant::now())),
        }
    }

    fn rate(cores: f64) -> f64 {
        cores.max(0.01) / TICK.as_secs_f64()
    }

    /// A new share for a group that may be running; tokens it holds stay
    /// within the new burst.
    pub fn set_cores(&self, cores: f64) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.0 = Self::rate(cores);
        state.1 = state.1.min(state.0);
    }

    /// Charges one tick; how long the call must wait before it goes on.
    pub fn charge(&self) -> Duration {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (rate, now) = (state.0, Instant::now());
        let tokens = (state.1 + now.duration_since(state.2).as_secs_f64() * rate).min(rate) - 1.0;
        *state = (rate, tokens, now);
        if tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-tokens / rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_over_its_share_waits_for_the_tokens() {
        let share = CpuShare::new(0.1); // 10 ticks per second
        let waits: Vec<Duration> = (0..12).map(|_| share.charge()).collect();
        assert!(waits[..10].iter().all(|w| w.is_zero()), "{waits:?}");
        // Two ticks over: 0.1 s then 0.2 s to earn them back.
        assert!(
            waits[10] > Duration::from_millis(80) && waits[11] > Duration::from_millis(180),
            "{waits:?}"
        );
    }

    #[test]
    fn a_resized_share_applies_at_once() {
        let share = CpuShare::new(0.1);
        share.set_cores(0.05); // 5 ticks per second, burst 5
        let waits: Vec<Duration> = (0..6).map(|_| share.charge()).collect();
        assert!(
            waits[..5].iter().all(|w| w.is_zero()) && waits[5] > Duration::from_millis(150),
            "{waits:?}"
        );
        share.set_cores(10.0);
        assert!(
            share.charge() > Duration::ZERO,
            "the deficit is still owed after a raise"
        );
    }
}
