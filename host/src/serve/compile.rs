//! Compiling an upload in a child process, paced by the uploader's CPU share.
//!
//! Why a process and not a thread of the host: Cranelift compiling a hostile
//! upload (a 60 MB module takes minutes) in the host's address space slowed
//! every tenant's pipelines, even at `SCHED_IDLE` on cores they left idle:
//! its allocations take the process's memory-map lock that their page
//! faults wait on, its unmaps interrupt the cores they run on to flush
//! TLBs, and its memory counted in the host's RSS. Beside one such compile
//! another tenant's p99 write went from 0.6 to 1.8 ms (`cargo bench --bench
//! serve -- isolation bomb`). A child has an address space of its own, and
//! can be held: every 5-100 ms the host reads the child's CPU clock,
//! charges what it used to the tenant's CPU share, and stops it (`SIGSTOP`)
//! while the share is overdrawn, so a compile takes no more of the machine
//! than the tenant's share, idle cores included. The time limit counts its
//! CPU time, not the time it was held.
//!
//! The child (`bizon-host serve-compile`, hidden) loads the upload as the
//! host would, which compiles it into the shared compile cache, and prints
//! why it refused it, if it did; the host then loads it from the cache.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::error::ApiError;
use super::tenants::Tenant;
use crate::metrics::serve as metrics;
use crate::plugin::capabilities::Export;
use crate::plugin::{HostPolicy, LoadReport, Plugin, PluginError, Request, COMPILE_TIMEOUT};
use crate::transform::component::Component;

/// How often a compile's CPU time is charged, and its share looked at, at
/// most and at least.
const CHARGE_EVERY: Duration = Duration::from_millis(100);
const MIN_CHARGE_EVERY: Duration = Duration::from_millis(5);

/// The child's own limit on wall time: effectively none, since the host
/// holds it stopped while its tenant's share refills and bounds its CPU time.
const CHILD_WALL_LIMIT: Duration = Duration::from_secs(24 * 3600);

/// The hidden subcommand the child runs.
pub const SUBCOMMAND: &str = "serve-compile";

/// What the child is asked to compile.
#[derive(Debug, Clone, clap::Args)]
pub struct ChildArgs {
    /// The uploaded file.
    pub file: PathBuf,
    /// The shared compile cache, where the compiled code goes.
    #[arg(long)]
    pub cache_dir: PathBuf,
    /// Largest component accepted, in MiB (the tenant's `plugin_mb`).
    #[arg(long)]
    pub max_component_mb: u64,
    /// How messages name the plugin.
    #[arg(long)]
    pub label: String,
}

/// Compiles `file` for `tenant` in a child: `Ok(Err(why))` when the upload
/// is refused (it is no plugin, does not compile, or used more CPU time than
/// a compile may), `Err` when the child could not be run. Dropping the
/// future kills the child.
pub async fn in_child(
    tenant: &Tenant,
    label: &str,
    file: &Path,
    cache_dir: &Path,
) -> Result<Result<(), String>, ApiError> {
    let exe = std::env::current_exe().map_err(ApiError::internal)?;
    let mut child = tokio::process::Command::new(exe)
        .arg(SUBCOMMAND)
        .arg(file)
        .arg("--cache-dir")
        .arg(cache_dir)
        .arg("--max-component-mb")
        .arg(tenant.limits.plugin_mb.to_string())
        .arg("--label")
        .arg(label)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .env_remove("RUST_LOG")
        .kill_on_drop(true)
        .spawn()
        .map_err(ApiError::internal)?;
    let pid = child
        .id()
        .ok_or_else(|| ApiError::internal("the compile process ended at once"))?;
    let mut stdout = child.stdout.take().expect("piped");
    let said = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text).await;
        text
    });
    let clock = ProcessClock::of(pid);
    let (mut charged, mut held) = (Duration::ZERO, false);
    let mut next = CHARGE_EVERY;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status.map_err(ApiError::internal)?,
            () = tokio::time::sleep(next) => {}
        }
        let used = clock.as_ref().and_then(ProcessClock::used).unwrap_or(charged);
        tenant.cpu.charge(used.saturating_sub(charged));
        charged = charged.max(used);
        if used > COMPILE_TIMEOUT {
            let _ = child.kill().await;
            metrics::compile_cpu(&tenant.name, charged);
            return Ok(Err(format!(
                "plugin {label} did not compile within {} s of CPU time",
                COMPILE_TIMEOUT.as_secs()
            )));
        }
        let overdrawn = !tenant.cpu.owed().is_zero();
        if overdrawn != held {
            signal(pid, if overdrawn { libc::SIGSTOP } else { libc::SIGCONT });
            held = overdrawn;
        }
        // Looked at again when a running child (on one core: wasmtime's
        // parallel compilation is off) may have used what the share holds.
        // The share forgets a debt above a second of it, so a compile let run
        // a whole interval past its share would run faster than the share.
        next = match held {
            true => CHARGE_EVERY,
            false => tenant.cpu.available().clamp(MIN_CHARGE_EVERY, CHARGE_EVERY),
        };
    };
    metrics::compile_cpu(&tenant.name, charged);
    let said = said.await.unwrap_or_default();
    match status.code() {
        Some(0) => Ok(Ok(())),
        Some(REFUSED) => Ok(Err(said.trim_end().to_string())),
        _ => Ok(Err(format!("plugin {label}: compiling it crashed ({status})"))),
    }
}

/// The child's exit code for an upload it refused (the reason on stdout).
const REFUSED: i32 = 3;

/// The child's side: loads the upload as the host does after it, which
/// puts the compiled code in the cache.
pub fn child_main(args: ChildArgs) -> ExitCode {
    super::runtime::set_nice(super::runtime::COMPILE_NICE);
    set_idle();
    // The host's engine settings (its cache entries are keyed by them), with
    // a pool of one: the child instantiates nothing.
    crate::plugin::engine::set_pool_instances(1);
    crate::plugin::engine::set_serial_compilation();
    let policy = HostPolicy {
        cache_dir: Some(args.cache_dir),
        max_component_mb: args.max_component_mb,
        label: Some(args.label),
        compile_timeout: CHILD_WALL_LIMIT,
        ..HostPolicy::for_run()
    };
    match Uploaded::load(&args.file, &Request::default(), &policy) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            println!("{e}");
            ExitCode::from(REFUSED as u8)
        }
    }
}

/// An upload, loaded as what it exports: a destination plugin (world
/// `destination`) or a transform (world `transformer`).
pub enum Uploaded {
    Destination(Plugin),
    Transform(Component),
}

impl Uploaded {
    /// Blocking, like the loads it makes. A transform is tried once the
    /// component proves not to be a destination; its compiled code is then
    /// in the cache, so the second load does not compile again.
    pub fn load(path: &Path, request: &Request, policy: &HostPolicy) -> Result<Self, PluginError> {
        match Plugin::load(path, request, policy) {
            Err(PluginError::NotAPlugin { exports, .. })
                if exports
                    .split(", ")
                    .any(|e| e.split('@').next() == Some(Export::TRANSFORM.interface)) =>
            {
                Component::load(path, request, policy).map(Uploaded::Transform)
            }
            loaded => loaded.map(Uploaded::Destination),
        }
    }

    pub fn report(&self) -> &LoadReport {
        match self {
            Uploaded::Destination(plugin) => plugin.report(),
            Uploaded::Transform(component) => component.report(),
        }
    }
}

/// Puts the calling thread, and the threads it starts, under SCHED_IDLE.
fn set_idle() {
    #[cfg(target_os = "linux")]
    {
        /// linux/sched.h; the libc crate does not define it for glibc.
        const SCHED_IDLE: libc::c_int = 5;
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: sched_setscheduler on this thread with a param we own;
        // lowering a thread's policy needs no privilege.
        unsafe { libc::sched_setscheduler(0, SCHED_IDLE, &param) };
    }
}

/// Another process's CPU clock (all its threads).
struct ProcessClock(libc::clockid_t);

impl ProcessClock {
    fn of(pid: u32) -> Option<Self> {
        let mut clock: libc::clockid_t = 0;
        // SAFETY: clock_getcpuclockid writes one clockid we own.
        (unsafe { libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) } == 0).then_some(Self(clock))
    }

    fn used(&self) -> Option<Duration> {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes one timespec we own.
        (unsafe { libc::clock_gettime(self.0, &mut ts) } == 0)
            .then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
    }
}

fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill with a pid of our own child, not yet reaped (we are
    // still waiting for it), so the id cannot be another process's.
    unsafe { libc::kill(pid as libc::pid_t, signal) };
}
