//! Where `serve`'s work runs, and at which priority.
//!
//! Pipelines run on their own tokio runtime whose threads have a lower CPU
//! priority (a higher nice value; Linux sets it per thread). What they
//! start inherits it: the source threads, librdkafka's threads, blocking
//! tasks. The API stays on the process's runtime at the default priority,
//! so its tasks never queue behind plugin calls, and when the cores are
//! saturated the scheduler gives a woken API thread the CPU first.
//! Compiling uploads runs lower still, beneath the pipelines. And once a
//! minute the memory the allocator holds free goes back to the system.

use std::sync::OnceLock;
use std::time::Duration;

/// The pipelines' nice value: a third of the API's CPU weight when both want
/// a core (CFS weights 335 against 1024), yet above the compile processes.
pub const PIPELINE_NICE: libc::c_int = 5;

/// Upload compiles' nice value: below the pipelines (a third of their CPU
/// weight when both want it), yet not starved on a busy host, where 19 made
/// a 2 MB plugin miss the compile timeout.
pub const COMPILE_NICE: libc::c_int = 10;

/// The runtime every pipeline task runs on; built on first use and kept for
/// the life of the process (a runtime cannot be dropped inside another).
pub fn pipelines() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        // One worker per core. Twice as many (so that a task queued behind
        // another tenant's call could run on another thread) doubled a
        // tenant's p99 write alone (0.5 to 1.1 ms): its tasks moved between
        // threads on every wake-up.
        tokio::runtime::Builder::new_multi_thread()
            .thread_name("pipeline")
            .on_thread_start(|| set_nice(PIPELINE_NICE))
            .enable_all()
            .build()
            .expect("starting the pipelines' runtime")
    })
}

/// Builds the plugin engine from a thread at the process's own priority, so
/// that its epoch thread (which inherits it) ticks on time when the cores
/// are saturated: guest code yields its worker only at a tick, so a late
/// tick is a neighbour's spinning call holding the worker that long. At the
/// pipelines' nice 5, one hostile tenant spinning at a quarter core cost
/// another 20% of its throughput and doubled its p99 write (`cargo bench
/// --bench serve -- isolation spin`). (The ticker ran at nice 5 while a
/// tick charged every call in flight to its tenant's CPU share; shares now
/// charge the thread CPU time calls really use, plugin/cpu.rs, which a
/// punctual ticker does not change.) Otherwise the first upload's compile
/// or a resumed pipeline's start would decide.
pub fn start_engine() {
    std::thread::spawn(crate::plugin::engine::shared)
        .join()
        .expect("building the plugin engine");
}

/// How often `serve` hands the memory glibc holds free back to the system.
/// glibc keeps what a thread frees in that thread's arena (up to 16 arenas
/// on 2 cores, shared by ~140 threads: librdkafka's, the pipelines', the
/// blocking pool), so memory freed after a burst (a batch, a plugin
/// instance's start, a hostile tenant's trap) stays resident. In an hour's
/// soak (`bench/soak.sh serve`, 20 tenants) RSS crept from 184 to 234 MiB in
/// 40 minutes, and one `malloc_trim` gave 46 MiB of it back: free memory,
/// not a leak. A trim walks every arena under its lock, once a minute.
const TRIM_EVERY: Duration = Duration::from_secs(60);

/// Caps glibc's malloc arenas at 2 for `serve`, unless `MALLOC_ARENA_MAX`
/// is set (glibc reads that itself); called before any thread starts.
///
/// glibc gives each thread that finds an arena busy one more, up to 8 per
/// core, and memory freed in one arena stays there for that arena's next
/// allocations. `serve` runs ~140 threads (librdkafka's, pipelines', the
/// blocking pool): in an hour's soak with 20 tenants (`bench/soak.sh
/// serve`), its arenas held 178 MB from the system with 23 MB in use at
/// 27 minutes, and RSS grew 17.6% after the warm-up even with a trim every
/// minute. With 2 arenas the same hour held RSS at 87 then 82 MiB (-5.2%;
/// the default's was 164 then 192 MiB). The cost, lock contention in
/// malloc: one pipeline writing 4.5 M records/s runs ~7% slower (api-load's
/// tenant A alone, 4.52 against 4.19-4.22 M), far above what a tenant's
/// Kafka pipeline reads. `run` keeps glibc's default: one
/// pipeline, its speed first.
pub fn cap_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt sets one of glibc's malloc parameters; no memory
        // is passed, and no other thread allocates yet.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
    }
}

/// Trims glibc's free memory every [`TRIM_EVERY`], on a blocking thread, for
/// the life of the process (nothing to do elsewhere than glibc).
pub fn spawn_memory_trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    tokio::spawn(async {
        let mut every = tokio::time::interval(TRIM_EVERY);
        every.tick().await;
        loop {
            every.tick().await;
            let _ = tokio::task::spawn_blocking(trim).await;
        }
    });
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // RSS before and after, read only for a debug line.
    let rss_mib = || {
        // SAFETY: sysconf reads a constant.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        let pages: u64 = statm
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        (pages * page) >> 20
    };
    let before = tracing::enabled!(tracing::Level::DEBUG).then(rss_mib);
    let started = std::time::Instant::now();
    // SAFETY: malloc_trim only releases glibc's own free memory; no pointer
    // is passed.
    unsafe { libc::malloc_trim(0) };
    if let Some(before) = before {
        tracing::debug!(
            before_mib = before,
            after_mib = rss_mib(),
            ms = started.elapsed().as_millis() as u64,
            "free memory returned to the system"
        );
    }
}

/// Lowers the calling thread's priority to `nice`, never raising it: a
/// thread started by one that runs lower (`nice bizon-host serve`) stays
/// there.
pub fn set_nice(nice: libc::c_int) {
    #[cfg(target_os = "linux")]
    // SAFETY: getpriority and setpriority on this thread's own id; no memory
    // is passed. (-1 from getpriority may be an error; either way the max
    // below is `nice`.)
    unsafe {
        let tid = libc::gettid() as libc::id_t;
        let current = libc::getpriority(libc::PRIO_PROCESS, tid);
        libc::setpriority(libc::PRIO_PROCESS, tid, nice.max(current));
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn nice_of_this_thread() -> libc::c_int {
        // SAFETY: getpriority on this thread's own id.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
    }

    #[test]
    fn pipeline_threads_and_what_they_start_run_below_the_caller() {
        let caller = nice_of_this_thread();
        // `block_on` runs on the calling thread; a spawned task on a worker.
        let on_worker = pipelines().spawn(async {
            let worker = nice_of_this_thread();
            let child = std::thread::spawn(nice_of_this_thread).join().unwrap();
            let blocking = tokio::task::spawn_blocking(nice_of_this_thread).await.unwrap();
            (worker, child, blocking)
        });
        let (worker, child, blocking) = pipelines().block_on(on_worker).unwrap();
        let expected = PIPELINE_NICE.max(caller);
        assert_eq!((worker, child, blocking), (expected, expected, expected));
        assert_eq!(nice_of_this_thread(), caller, "the caller keeps its priority");
    }

    #[test]
    fn a_thread_gives_priority_away_and_never_takes_it() {
        let caller = nice_of_this_thread();
        let on_thread = |nice| {
            std::thread::spawn(move || {
                set_nice(nice);
                nice_of_this_thread()
            })
        };
        let lower = (caller + 1).min(19);
        assert_eq!(on_thread(lower).join().unwrap(), lower);
        assert_eq!(on_thread(caller - 1).join().unwrap(), caller, "not even as root");
        assert_eq!(nice_of_this_thread(), caller);
    }
}
