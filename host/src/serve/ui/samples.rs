//! The last hour of records/s and lag, for the host, each tenant and each
//! pipeline, kept in memory for the console's charts: every [`STEP`] the
//! sampler reads the runs' published progress (the same the API shows)
//! and each tenant's CPU time.
//!
//! A series holds [`POINTS`] pairs of `f32`: 5.8 KiB a pipeline, so 20,000
//! pipelines hold ~115 MiB at most. Only pipelines that ran within the
//! hour have one (a tenant likewise); a stopped pipeline's records/s is 0
//! and its lag unknown (a gap). What other hosts of a shared registry run
//! is theirs to chart.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::super::state::State;
use super::Console;
use crate::quota::cpu::Work;

/// Time between two samples.
pub const STEP: Duration = Duration::from_secs(5);
/// An hour of samples.
pub const POINTS: usize = 720;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    Host,
    Tenant(String),
    Pipeline(String, String),
}

/// A subject's samples, oldest first, the last taken at the last tick;
/// `NaN` where nothing is known.
#[derive(Debug, Clone, Default)]
pub struct Series {
    pub rate: VecDeque<f32>,
    pub lag: VecDeque<f32>,
    /// The tick it last had a run.
    live_at: u64,
}

impl Series {
    fn push(&mut self, rate: f32, lag: f32) {
        if self.rate.len() == POINTS {
            self.rate.pop_front();
            self.lag.pop_front();
        }
        self.rate.push_back(rate);
        self.lag.push_back(lag);
    }

    /// The last sample's records/s.
    pub fn rate_now(&self) -> Option<f32> {
        self.rate.back().copied().filter(|r| r.is_finite())
    }
}

/// A running pipeline as a tick sees it.
pub struct Seen {
    pub tenant: String,
    pub pipeline: String,
    pub written: u64,
    pub lag: i64,
    /// Records/s since its run began, for its first sample.
    pub rate_since_start: f64,
}

#[derive(Default)]
struct Inner {
    tick: u64,
    at: Option<Instant>,
    series: HashMap<Subject, Series>,
    /// Records written by each pipeline running at the last tick.
    written: HashMap<(String, String), u64>,
    /// Each tenant's CPU time at the last tick, and the cores it used since.
    cpu: HashMap<String, Duration>,
    cores: HashMap<String, f32>,
}

#[derive(Default)]
pub struct History {
    inner: Mutex<Inner>,
}

impl History {
    /// One tick: the pipelines running now and each loaded tenant's CPU
    /// time so far.
    pub fn record(&self, seen: Vec<Seen>, cpu: Vec<(String, Duration)>, now: Instant) {
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        let dt = inner
            .at
            .map_or(STEP, |at| now.saturating_duration_since(at))
            .as_secs_f64()
            .max(1e-3);
        inner.at = Some(now);
        inner.tick += 1;
        let tick = inner.tick;

        let mut points: HashMap<Subject, (f32, f32)> = HashMap::new();
        points.insert(Subject::Host, (0.0, 0.0));
        let mut written = HashMap::with_capacity(seen.len());
        for s in seen {
            let key = (s.tenant, s.pipeline);
            let rate = match inner.written.get(&key) {
                Some(&before) if s.written >= before => (s.written - before) as f64 / dt,
                _ => s.rate_since_start,
            } as f32;
            let lag = s.lag.max(0) as f32;
            written.insert(key.clone(), s.written);
            for subject in [Subject::Host, Subject::Tenant(key.0.clone())] {
                let p = points.entry(subject).or_insert((0.0, 0.0));
                p.0 += rate;
                p.1 += lag;
            }
            points.insert(Subject::Pipeline(key.0, key.1), (rate, lag));
        }
        // A pipeline not running now starts its next count from its run's beginning.
        inner.written = written;

        for (subject, (rate, lag)) in &points {
            inner.series.entry(subject.clone()).or_default().live_at = tick;
            inner.series.get_mut(subject).expect("just made").push(*rate, *lag);
        }
        inner.series.retain(|subject, series| {
            if !points.contains_key(subject) {
                series.push(0.0, f32::NAN);
            }
            *subject == Subject::Host || tick - series.live_at < POINTS as u64
        });

        let mut cores = HashMap::with_capacity(cpu.len());
        for (tenant, used) in &cpu {
            if let Some(before) = inner.cpu.get(tenant) {
                cores.insert(tenant.clone(), (used.saturating_sub(*before).as_secs_f64() / dt) as f32);
            }
        }
        inner.cpu = cpu.into_iter().collect();
        inner.cores = cores;
    }

    pub fn series(&self, subject: &Subject) -> Option<Series> {
        self.inner.lock().series.get(subject).cloned()
    }

    /// Records/s of each of a tenant's pipelines at the last tick.
    pub fn rates(&self, tenant: &str) -> HashMap<String, f32> {
        self.inner
            .lock()
            .series
            .iter()
            .filter_map(|(subject, series)| match subject {
                Subject::Pipeline(t, p) if t == tenant => Some((p.clone(), series.rate_now()?)),
                _ => None,
            })
            .collect()
    }

    /// Cores the tenant's plugins and pipelines used between the last two ticks.
    pub fn cores(&self, tenant: &str) -> Option<f32> {
        self.inner.lock().cores.get(tenant).copied()
    }
}

/// What a tick reads from the host.
fn observe(state: &State) -> (Vec<Seen>, Vec<(String, Duration)>) {
    let seen = state
        .supervisor
        .running_keys()
        .into_iter()
        .map(|(tenant, pipeline)| {
            let status = state.supervisor.status(&tenant, &pipeline);
            Seen {
                written: status.records_written,
                lag: status.lag,
                rate_since_start: status.records_per_s,
                tenant,
                pipeline,
            }
        })
        .collect();
    let cpu = state
        .tenants
        .loaded()
        .into_iter()
        .filter_map(|name| {
            let t = state.tenants.loaded_tenant(&name)?;
            Some((name, t.cpu.used(Work::Plugin) + t.cpu.used(Work::Pipeline)))
        })
        .collect();
    (seen, cpu)
}

/// Samples every [`STEP`] while the server's state lives.
pub fn spawn(state: Weak<State>, console: Arc<Console>) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(STEP);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let Some(state) = state.upgrade() else { return };
            let (seen, cpu) = observe(&state);
            console.history.record(seen, cpu, Instant::now());
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(tenant: &str, pipeline: &str, written: u64, lag: i64) -> Seen {
        Seen {
            tenant: tenant.into(),
            pipeline: pipeline.into(),
            written,
            lag,
            rate_since_start: 7.0,
        }
    }

    #[test]
    fn rates_come_from_what_was_written_between_ticks_and_add_up() {
        let history = History::default();
        let t0 = Instant::now();
        history.record(vec![seen("a", "p", 100, 5), seen("b", "q", 0, 0)], vec![], t0);
        let p = Subject::Pipeline("a".into(), "p".into());
        assert_eq!(
            history.series(&p).unwrap().rate_now(),
            Some(7.0),
            "the run's own rate first"
        );
        history.record(vec![seen("a", "p", 600, 3), seen("b", "q", 50, 1)], vec![], t0 + STEP);
        assert_eq!(history.series(&p).unwrap().rate_now(), Some(100.0));
        assert_eq!(
            history.series(&Subject::Tenant("a".into())).unwrap().rate_now(),
            Some(100.0)
        );
        let host = history.series(&Subject::Host).unwrap();
        assert_eq!(host.rate_now(), Some(110.0));
        assert_eq!(host.lag.back(), Some(&4.0));
        assert_eq!(history.rates("a"), HashMap::from([("p".to_string(), 100.0)]));

        // Stopped: 0 records/s, lag unknown; restarted: counted from its new run.
        history.record(vec![], vec![], t0 + STEP * 2);
        let stopped = history.series(&p).unwrap();
        assert_eq!(stopped.rate_now(), Some(0.0));
        assert!(stopped.lag.back().unwrap().is_nan());
        history.record(vec![seen("a", "p", 10, 0)], vec![], t0 + STEP * 3);
        assert_eq!(history.series(&p).unwrap().rate_now(), Some(7.0));
    }

    #[test]
    fn an_hour_is_kept_and_what_did_not_run_in_it_is_dropped() {
        let history = History::default();
        let t0 = Instant::now();
        history.record(vec![seen("a", "p", 0, 0)], vec![], t0);
        for i in 1..POINTS as u32 {
            history.record(vec![], vec![], t0 + STEP * i);
        }
        let p = Subject::Pipeline("a".into(), "p".into());
        assert_eq!(history.series(&p).unwrap().rate.len(), POINTS);
        history.record(vec![], vec![], t0 + STEP * POINTS as u32);
        assert!(history.series(&p).is_none());
        assert!(history.series(&Subject::Tenant("a".into())).is_none());
        assert_eq!(history.series(&Subject::Host).unwrap().rate.len(), POINTS);
    }

    #[test]
    fn cores_are_cpu_time_over_wall_time() {
        let history = History::default();
        let t0 = Instant::now();
        history.record(vec![], vec![("a".into(), Duration::from_secs(1))], t0);
        assert_eq!(history.cores("a"), None);
        history.record(vec![], vec![("a".into(), Duration::from_millis(3500))], t0 + STEP);
        assert_eq!(history.cores("a"), Some(0.5));
    }
}
