//! A CPU share: how much CPU time a group of instances (a tenant's, under
//! `serve`) may use per second of wall time, as a token bucket of CPU
//! seconds.
//!
//! What is charged is the CPU time the group's work really took on its
//! thread (`CLOCK_THREAD_CPUTIME_ID`, read around every poll of a plugin
//! call and of an instantiation, host functions the guest calls included),
//! and, through [`CpuShare::charge`], work done for the group elsewhere,
//! such as compiling its uploads. An earlier version charged one epoch tick
//! per tick a call was seen in flight: that counted calls merely waiting
//! for a core, and missed calls shorter than a tick, so a tenant of many
//! short calls ran free while one queued behind others paid for waiting.
//!
//! A group over its share waits before its next poll until the bucket has
//! refilled, so a spinning neighbour waits and others do not.
//!
//! A group also runs on no more threads at once than its share rounds up
//! to (one for a quarter of a core). The bucket alone bounds a group's CPU
//! over a quarter of a second, not how it is spread: a tenant of several
//! busy pipelines at 0.25 cores spent its banked 60 ms with a call on every
//! worker at once, and another tenant's woken task waited behind one tick
//! of each. With the bound, a small tenant holds one worker at most, and
//! the others always find one free.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How much CPU time a group may bank while idle, in seconds of its share:
/// enough for a burst of a few batches, short enough that a tenant back
/// from idle does not take the cores for long.
const BURST: f64 = 0.25;

/// More cores than any machine the host runs on has: a share this large
/// never waits.
const MAX_CORES: f64 = 4096.0;

/// The longest a group is made to wait at once, in seconds. Work charged
/// after the fact (a compile bomb's minutes, run on idle cores once the
/// share was spent) would otherwise freeze the tenant's pipelines for many
/// minutes, stops included; a spinning call is charged a tick at a time and
/// never gets near it.
const MAX_WAIT: f64 = 1.0;

#[derive(Debug)]
pub struct CpuShare {
    /// (cores: CPU seconds per second; tokens in CPU seconds; last refill).
    state: Mutex<(f64, f64, Instant)>,
    /// A permit per thread the group may run on at once.
    threads: Arc<Semaphore>,
    /// How many permits there should be.
    permits: Mutex<usize>,
    /// Permits to forget as they come back, after a resize took more than
    /// were free.
    held_back: AtomicUsize,
    /// CPU time charged through [`Metered`], in nanoseconds, by [`Work`].
    used: [AtomicU64; 2],
}

/// What a metered future is, for the CPU time a group is shown to have used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Plugin calls and instantiations.
    Plugin,
    /// A pipeline's own work on the host: pages into buffers, batches out.
    Pipeline,
}

impl CpuShare {
    /// A share of `cores` cores (0.5: half of one).
    pub fn new(cores: f64) -> Self {
        let cores = Self::floor(cores);
        let threads = Self::threads_for(cores);
        Self {
            state: Mutex::new((cores, cores * BURST, Instant::now())),
            threads: Arc::new(Semaphore::new(threads)),
            permits: Mutex::new(threads),
            held_back: AtomicUsize::new(0),
            used: [AtomicU64::new(0), AtomicU64::new(0)],
        }
    }

    /// The CPU time charged for `work` since the share was made.
    pub fn used(&self, work: Work) -> Duration {
        Duration::from_nanos(self.used[work as usize].load(Ordering::Relaxed))
    }

    /// At least 0.01 of a core, at most [`MAX_CORES`]: a tenant's
    /// `cpu_cores: 1e300` (any f64 the API takes) made a semaphore of
    /// 1e300 threads, and tokio panics past 2^61 permits (found by
    /// tests/e2e/fuzz/serve_api.rs); NaN (a YAML `.nan`) is the floor.
    fn floor(cores: f64) -> f64 {
        if cores.is_nan() {
            0.01
        } else {
            cores.clamp(0.01, MAX_CORES)
        }
    }

    fn threads_for(cores: f64) -> usize {
        (cores.ceil() as usize).max(1)
    }

    /// A new share for a group that may be running; tokens it holds stay
    /// within the new burst, and a deficit is still owed.
    pub fn set_cores(&self, cores: f64) {
        let mut state = self.state.lock();
        state.0 = Self::floor(cores);
        state.1 = state.1.min(state.0 * BURST);
        let wanted = Self::threads_for(state.0);
        drop(state);
        let mut permits = self.permits.lock();
        if wanted > *permits {
            // Permits still held back are cancelled before any is added.
            let cancelled = self.take_held_back(wanted - *permits);
            self.threads.add_permits(wanted - *permits - cancelled);
        } else {
            let fewer = *permits - wanted;
            let forgotten = self.threads.forget_permits(fewer);
            self.held_back.fetch_add(fewer - forgotten, Ordering::AcqRel);
        }
        *permits = wanted;
    }

    /// Takes up to `n` held-back permits off the debt; how many it took.
    fn take_held_back(&self, n: usize) -> usize {
        let mut taken = 0;
        let _ = self
            .held_back
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |owed| {
                taken = owed.min(n);
                Some(owed - taken)
            });
        taken
    }

    /// Gives a thread permit back, or forgets it while a resize is owed one.
    fn release(&self, permit: OwnedSemaphorePermit) {
        match self.take_held_back(1) {
            1 => permit.forget(),
            _ => drop(permit),
        }
    }

    /// Charges `spent` CPU time; how long the group must wait before it
    /// goes on.
    pub fn charge(&self, spent: Duration) -> Duration {
        let mut state = self.state.lock();
        let (cores, now) = (state.0, Instant::now());
        let refilled = state.1 + now.duration_since(state.2).as_secs_f64() * cores;
        let tokens = (refilled.min(cores * BURST) - spent.as_secs_f64()).max(-cores * MAX_WAIT);
        *state = (cores, tokens, now);
        if tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-tokens / cores)
        }
    }

    /// How long the group must wait now, charging nothing.
    pub fn owed(&self) -> Duration {
        self.charge(Duration::ZERO)
    }

    /// The CPU time the group may use now before it must wait.
    pub fn available(&self) -> Duration {
        let state = self.state.lock();
        let refilled = state.1 + state.2.elapsed().as_secs_f64() * state.0;
        Duration::from_secs_f64(refilled.clamp(0.0, state.0 * BURST))
    }
}

/// The CPU time the calling thread has used.
pub fn thread_cpu() -> Duration {
    #[cfg(unix)]
    {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes one timespec we own.
        if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0 {
            return Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32);
        }
        Duration::ZERO
    }
    #[cfg(not(unix))]
    Duration::ZERO
}

thread_local! {
    /// The share whose thread permit this thread holds in a poll, so that a
    /// metered future inside another of the same group does not wait for
    /// the permit its caller holds.
    static ON_THREAD: Cell<*const CpuShare> = const { Cell::new(std::ptr::null()) };
}

/// This thread in a poll of `share`'s group: marks it (see [`ON_THREAD`])
/// and holds the permit, until dropped, even if the poll panics (tokio
/// catches a task's panic and the worker goes on: a mark left behind would
/// let the group's next poll on this thread skip its permit).
struct OnThread<'a> {
    share: &'a CpuShare,
    permit: Option<OwnedSemaphorePermit>,
    caller: *const CpuShare,
}

impl<'a> OnThread<'a> {
    fn enter(share: &'a Arc<CpuShare>, permit: Option<OwnedSemaphorePermit>) -> Self {
        let caller = ON_THREAD.with(|on| on.replace(Arc::as_ptr(share)));
        Self { share, permit, caller }
    }
}

impl Drop for OnThread<'_> {
    fn drop(&mut self) {
        ON_THREAD.with(|on| on.set(self.caller));
        if let Some(permit) = self.permit.take() {
            self.share.release(permit);
        }
    }
}

type Acquiring = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, tokio::sync::AcquireError>> + Send>>;

/// `inner`, charging the CPU time of each of its polls to `share` and,
/// while the share is spent, waiting before polling it again; each poll
/// holds one of the share's thread permits. A wasmtime call yields at every
/// epoch tick, so a spinning guest comes back here once a tick and pays as
/// it goes.
pub struct Metered<F> {
    inner: Pin<Box<F>>,
    share: Arc<CpuShare>,
    work: Work,
    nap: Option<Pin<Box<tokio::time::Sleep>>>,
    acquiring: Option<Acquiring>,
}

impl<F> Metered<F> {
    pub fn new(inner: F, share: Arc<CpuShare>, work: Work) -> Self {
        Self {
            inner: Box::pin(inner),
            share,
            work,
            nap: None,
            acquiring: None,
        }
    }
}

impl<F: Future> Future for Metered<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        if self.nap.is_none() {
            let owed = self.share.owed();
            if !owed.is_zero() {
                self.nap = Some(Box::pin(tokio::time::sleep(owed)));
            }
        }
        if let Some(nap) = &mut self.nap {
            if nap.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.nap = None;
        }
        let share = Arc::as_ptr(&self.share);
        let nested = ON_THREAD.with(|on| on.get() == share);
        let permit = match nested {
            true => None,
            false => match self.permit(cx) {
                Poll::Ready(permit) => Some(permit),
                Poll::Pending => return Poll::Pending,
            },
        };
        let this = &mut *self;
        let on_thread = OnThread::enter(&this.share, permit);
        let started = thread_cpu();
        let polled = this.inner.as_mut().poll(cx);
        let spent = thread_cpu().saturating_sub(started);
        drop(on_thread);
        let wait = self.share.charge(spent);
        self.share.used[self.work as usize].fetch_add(spent.as_nanos() as u64, Ordering::Relaxed);
        if polled.is_pending() && !wait.is_zero() {
            // Over its share: this call waits; the waker of the inner
            // poll may fire first, and then finds the nap pending.
            let mut nap = Box::pin(tokio::time::sleep(wait));
            if nap.as_mut().poll(cx).is_pending() {
                self.nap = Some(nap);
            }
        }
        polled
    }
}

impl<F> Metered<F> {
    /// One of the share's thread permits, or `Pending` until one is free
    /// (the semaphore is fair: waiters get permits in turn).
    fn permit(&mut self, cx: &mut Context<'_>) -> Poll<OwnedSemaphorePermit> {
        if self.acquiring.is_none() {
            if let Ok(permit) = self.share.threads.clone().try_acquire_owned() {
                return Poll::Ready(permit);
            }
            self.acquiring = Some(Box::pin(self.share.threads.clone().acquire_owned()));
        }
        let acquiring = self.acquiring.as_mut().expect("set above");
        match acquiring.as_mut().poll(cx) {
            Poll::Ready(permit) => {
                self.acquiring = None;
                Poll::Ready(permit.expect("a share's semaphore is never closed"))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_over_its_share_waits_for_the_tokens() {
        let share = CpuShare::new(0.1); // a burst of 25 ms of CPU
        assert!(share.charge(Duration::from_millis(20)).is_zero());
        // 15 ms over at 0.1 cores: 150 ms to earn back (less what the
        // bucket refilled between the two charges on a slow machine).
        let wait = share.charge(Duration::from_millis(20));
        assert!(
            wait > Duration::from_millis(100) && wait <= Duration::from_millis(150),
            "{wait:?}"
        );
    }

    #[test]
    fn a_deficit_never_makes_a_group_wait_more_than_a_second() {
        let share = CpuShare::new(0.25);
        let wait = share.charge(Duration::from_secs(80));
        assert!(
            wait > Duration::from_millis(990) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
    }

    #[test]
    fn a_resized_share_applies_at_once() {
        let share = CpuShare::new(0.1);
        share.set_cores(0.05); // burst 12.5 ms
        assert!(!share.charge(Duration::from_millis(15)).is_zero());
        share.set_cores(10.0);
        assert!(!share.owed().is_zero(), "the deficit is still owed after a raise");
    }

    /// Spins until this thread has used `cpu` more CPU time (wall time
    /// says nothing on a loaded machine); panics after 10 s of wall time.
    fn spin_cpu(cpu: Duration) {
        let (from, started) = (thread_cpu(), Instant::now());
        while thread_cpu() - from < cpu {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the thread's clock does not move"
            );
            for _ in 0..1000 {
                std::hint::spin_loop();
            }
        }
    }

    #[test]
    fn thread_cpu_counts_work_not_sleep() {
        let before = thread_cpu();
        std::thread::sleep(Duration::from_millis(30));
        let slept = thread_cpu() - before;
        assert!(slept < Duration::from_millis(5), "{slept:?}");
        spin_cpu(Duration::from_millis(20));
        assert!(thread_cpu() - before >= Duration::from_millis(20));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn metered_work_over_the_share_is_spread_out() {
        // 0.1 cores: 40 ms of spinning in 2 ms polls may not finish in
        // much under (40 - 25 burst) / 0.1 = 150 ms.
        let share = Arc::new(CpuShare::new(0.1));
        let spin = async {
            for _ in 0..20 {
                spin_cpu(Duration::from_millis(2));
                tokio::task::yield_now().await;
            }
        };
        let started = Instant::now();
        Metered::new(spin, share, Work::Plugin).await;
        assert!(
            started.elapsed() > Duration::from_millis(120),
            "{:?}",
            started.elapsed()
        );
    }

    /// The most of `tasks` metered futures on `share` seen polling at once,
    /// each spinning 1 ms of CPU per poll, 30 polls, on two workers.
    fn most_at_once(share: Arc<CpuShare>, tasks: usize) -> usize {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        runtime.block_on(async {
            let handles: Vec<_> = (0..tasks)
                .map(|_| {
                    let (now, most) = (now.clone(), most.clone());
                    let work = async move {
                        for _ in 0..30 {
                            most.fetch_max(now.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                            spin_cpu(Duration::from_millis(1));
                            now.fetch_sub(1, Ordering::SeqCst);
                            tokio::task::yield_now().await;
                        }
                    };
                    tokio::spawn(Metered::new(work, share.clone(), Work::Plugin))
                })
                .collect();
            for handle in handles {
                handle.await.unwrap();
            }
        });
        most.load(Ordering::SeqCst)
    }

    #[test]
    fn a_group_runs_on_no_more_threads_than_its_share_rounds_up_to() {
        assert_eq!(most_at_once(Arc::new(CpuShare::new(0.25)), 3), 1);
        // Two cores' worth do run side by side (a loaded machine may still
        // not give both at once: tried a few times).
        let side_by_side = (0..5).any(|_| most_at_once(Arc::new(CpuShare::new(2.0)), 3) == 2);
        assert!(side_by_side, "a 2-core share never ran two polls at once");
        let resized = Arc::new(CpuShare::new(2.0));
        resized.set_cores(0.5);
        assert_eq!(most_at_once(resized, 3), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_metered_future_inside_another_of_its_group_does_not_wait_for_its_callers_permit() {
        let share = Arc::new(CpuShare::new(0.5));
        let inner = Metered::new(async { 7 }, share.clone(), Work::Plugin);
        let outer = Metered::new(inner, share, Work::Pipeline);
        let answer = tokio::time::timeout(Duration::from_secs(5), outer).await;
        assert_eq!(answer.ok(), Some(7));
    }

    #[test]
    fn a_poll_that_panics_leaves_no_mark_and_gives_its_permit_back() {
        let share = Arc::new(CpuShare::new(0.25));
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let boom = Metered::new(
            async {
                if std::hint::black_box(true) {
                    panic!("a host bug in a pipeline's poll");
                }
            },
            share.clone(),
            Work::Pipeline,
        );
        // On this thread: a current-thread runtime polls its tasks here.
        assert!(runtime.block_on(async { tokio::spawn(boom).await }).is_err());
        assert!(
            ON_THREAD.with(|on| on.get().is_null()),
            "the group's mark was left on the thread"
        );
        assert_eq!(share.threads.available_permits(), 1);
    }
}
