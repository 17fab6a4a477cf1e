//! Bizon's own sources, unchanged, feeding bizon-host's destinations
//! (docs/bridge.md).
//!
//! A source bizon-host has no native version of (hubspot, notion, a
//! `source_file_path` custom source) runs in a child CPython process that
//! has `bizon` installed: child.py makes the source as Bizon does and
//! streams its pages over a pipe, one frame a page (protocol.rs). The
//! source thread here hands the pages to the pipeline and the pipeline's
//! acknowledgements back to the child; it stops, bounds and, when it hangs,
//! crashes or writes garbage, kills the child (process.rs). A run that
//! ended with everything written and published records where it ended
//! (state.rs), and the next incremental run starts there.

mod config;
mod process;
mod protocol;
mod state;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;

pub use config::{state_path_for, BridgeFile, BridgeSettings, BridgeSourceConfig, CustomSource, DEFAULT_MEMORY_MB};
pub use process::set_python;

use self::process::{describe, Child, Python};
use self::protocol::{ChildFailure, Incoming, ReadError, PROTOCOL};
use self::state::RunState;
use super::{Ack, Page, SourceEvent, SourceLink, SourceTask};
use crate::record::now_us;

/// How often the source thread looks at acknowledgements and the stop flag
/// while it waits for the child.
const TICK: Duration = Duration::from_millis(100);
/// How long a stopped child may take to finish the page it is fetching.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long a child may take to exit once told the run is over.
const EXIT_GRACE: Duration = Duration::from_secs(10);
/// How long a hung child is given to print its threads' stacks (SIGUSR1).
const DUMP_WAIT: Duration = Duration::from_secs(1);
/// How long `bizon-host check` waits for check_connection(): HubSpot's
/// session retries an unreachable host 50 times, for over an hour.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);
/// The Bizon this bridge was written against and tested with.
const BIZON_VERSION: &str = "0.6.4";

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error(
        "cannot start Python `{python}` (from {from}): {source}; install Python 3 and bizon \
         (scripts/install-bizon.sh), or name the Python with --python or BIZON_HOST_PYTHON"
    )]
    Spawn {
        python: String,
        from: &'static str,
        source: std::io::Error,
    },
    #[error(
        "cannot give the child a network namespace of its own ({source}): this host cannot run tenants' \
         Bizon sources; allow unprivileged user namespaces (user.max_user_namespaces above 0, and \
         kernel.unprivileged_userns_clone=1 where it exists) or set `bridge: false` in the serve config"
    )]
    Isolation { source: std::io::Error },
    /// The source's own error, with its Python traceback.
    #[error("{label}: {message}{}{}", hint_text(.hint), block("traceback", .traceback))]
    Source {
        label: String,
        message: String,
        hint: Option<String>,
        traceback: String,
    },
    #[error("{label}: check_connection() failed: {message}")]
    Connection { label: String, message: String },
    #[error("{label}: the Python child (pid {pid}) {how} before the end of the stream{}", block("its stderr ended with", .stderr))]
    Exited {
        label: String,
        pid: u32,
        how: String,
        stderr: String,
    },
    #[error("{label}: {waited}; the child was killed{}", block("its last words (stderr, then where its threads were)", .stack))]
    Hung {
        label: String,
        /// What did not come in time.
        waited: String,
        stack: String,
    },
    #[error("{label}: the child wrote something that is not the bridge protocol: {what}{}", block("its stderr ended with", .stderr))]
    Garbage {
        label: String,
        what: String,
        stderr: String,
    },
    #[error("{path}: {message}")]
    State { path: String, message: String },
}

impl BridgeError {
    fn state(path: &std::path::Path, message: String) -> Self {
        BridgeError::State {
            path: path.display().to_string(),
            message,
        }
    }
}

fn hint_text(hint: &Option<String>) -> String {
    hint.as_ref().map(|h| format!(" (to fix: {h})")).unwrap_or_default()
}

fn block(title: &str, text: &str) -> String {
    match text.trim_end() {
        "" => String::new(),
        text => format!("\n{title}:\n{text}"),
    }
}

/// A bridged source, ready to start its child.
pub struct BridgeSource {
    config: BridgeSourceConfig,
    python: Python,
    /// The last successful run's state, when there is one.
    previous: Option<RunState>,
}

impl BridgeSource {
    pub fn new(config: &BridgeSourceConfig) -> Result<Self, BridgeError> {
        let previous = match &config.state_path {
            Some(path) => state::load(path, config)?,
            None => None,
        };
        Ok(Self {
            config: config.clone(),
            python: Python::find(),
            previous,
        })
    }

    fn init(&self, mode: &str, run_started_at: &str) -> Vec<u8> {
        let previous = self
            .previous
            .as_ref()
            .map(|s| json!({"last_run": s.last_run, "state": s.state}));
        serde_json::to_vec(&json!({
            "mode": mode,
            "config": &*self.config.pipeline,
            "state": previous,
            "run_started_at": run_started_at,
            "log_level": loguru_level(),
        }))
        .expect("the init frame serializes")
    }

    fn start(&self, mode: &str, run_started_at: &str) -> Result<Child, BridgeError> {
        let label = self.config.label();
        let mut child = Child::spawn(&self.python, &self.config.bridge, &label)?;
        if child.send(b'I', &self.init(mode, run_started_at)).is_err() {
            // It died before reading: its exit says why.
            return Err(exited(&mut child));
        }
        Ok(child)
    }

    /// Makes the source as a run would and calls its check_connection().
    pub fn check(&self) -> Result<(), BridgeError> {
        let mut child = self.start("check", &iso8601(now_us()))?;
        let timeout = Duration::from_secs(self.config.bridge.page_timeout_s.max(1)).min(CHECK_TIMEOUT);
        let until = Instant::now() + timeout;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match child.frames.recv_timeout(left) {
                Ok(Ok(Incoming::Hello(hello))) => self.greet(&hello),
                Ok(Ok(Incoming::Checked(checked))) if checked.ok => return Ok(()),
                Ok(Ok(Incoming::Checked(checked))) => {
                    return Err(BridgeError::Connection {
                        label: child.label.clone(),
                        message: checked.error.unwrap_or_default(),
                    })
                }
                Ok(Ok(Incoming::Failed(failure))) => return Err(source_error(&child, failure)),
                Ok(Ok(other)) => return Err(garbage(&mut child, format!("{other:?} while checking"))),
                Ok(Err(ReadError::Garbage(what))) => return Err(garbage(&mut child, what)),
                Ok(Err(ReadError::Io(e))) => return Err(garbage(&mut child, e.to_string())),
                Ok(Err(ReadError::Eof)) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(exited(&mut child))
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    let waited = format!("check_connection() gave no answer within {} s", timeout.as_secs());
                    return Err(hung(&mut child, waited));
                }
            }
        }
    }

    fn greet(&self, hello: &protocol::Hello) {
        tracing::debug!(
            "source {}: Bizon {} on Python {} ({}, from {})",
            self.config.label(),
            hello.bizon,
            hello.python,
            self.python.path.display(),
            self.python.from
        );
        if hello.bizon != BIZON_VERSION {
            tracing::warn!(
                "source {}: {} has Bizon {}; the bridge is tested with {BIZON_VERSION}",
                self.config.label(),
                self.python.path.display(),
                hello.bizon
            );
        }
    }
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Pages flow to the pipeline.
    Running,
    /// The pipeline asked to stop: the child was sent SIGTERM, its pages are dropped.
    Stopping(Instant),
    /// The child sent its last page; acknowledgements still come.
    Finished,
    /// The run was told of an error; nothing more goes to the pipeline.
    Failed,
}

impl SourceTask for BridgeSource {
    fn run(self: Box<Self>, link: SourceLink) {
        let started_at = iso8601(now_us());
        let timeout = Duration::from_secs(self.config.bridge.page_timeout_s.max(1));
        let mut phase = Phase::Running;
        let fail = |phase: &mut Phase, error: BridgeError| {
            if matches!(phase, Phase::Running) {
                let _ = link.events.blocking_send(SourceEvent::Failed(error.into()));
            }
            *phase = Phase::Failed;
        };
        let mut child = match self.start("run", &started_at) {
            Ok(child) => Some(child),
            Err(e) => {
                fail(&mut phase, e);
                None
            }
        };
        let mut sequence = 0u64;
        let mut acked: Option<u64> = None;
        let mut acks_open = true;
        let mut closed_at: Option<Instant> = None;
        let mut waiting_since = Instant::now();
        let mut extracted_at_us = now_us();
        let mut done = None;
        while acks_open {
            loop {
                match link.acks.try_recv() {
                    // A destination's position matters only to a source that
                    // commits it with its own (Kafka's offsets); Bizon's state
                    // advances with whole pages written.
                    Ok(Ack::Destination { .. }) => {}
                    Ok(Ack::Pages(through)) => {
                        acked = Some(through);
                        if let Some(child) = &mut child {
                            // A child gone meanwhile shows as the end of its frames.
                            let _ = child.send(b'A', &through.to_le_bytes());
                        }
                    }
                    Err(std::sync::mpsc::TryRecvError::Empty) => break,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        acks_open = false;
                        break;
                    }
                }
            }
            let Some(running) = &mut child else {
                // Only acknowledgements are left to hear of.
                match link.acks.recv() {
                    Ok(Ack::Pages(through)) => acked = Some(through),
                    Ok(Ack::Destination { .. }) => {}
                    Err(_) => acks_open = false,
                }
                continue;
            };
            if !acks_open && closed_at.is_none() {
                // The run is over: the child exits once its stdin closes.
                running.close_stdin();
                closed_at = Some(Instant::now());
            }
            if phase == Phase::Running && link.stop.load(Ordering::Relaxed) {
                running.signal(libc::SIGTERM);
                phase = Phase::Stopping(Instant::now());
            }
            let frame = match running.frames.recv_timeout(TICK) {
                Ok(frame) => frame,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(ReadError::Eof),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    let overdue = match phase {
                        Phase::Running => waiting_since.elapsed() > timeout,
                        Phase::Stopping(since) => since.elapsed() > STOP_GRACE,
                        Phase::Finished | Phase::Failed => closed_at.is_some_and(|at| at.elapsed() > EXIT_GRACE),
                    };
                    if overdue {
                        if phase == Phase::Running {
                            let waited = format!(
                                "no answer from the source within {} s (source.bridge.page_timeout_s)",
                                timeout.as_secs()
                            );
                            let error = hung(running, waited);
                            fail(&mut phase, error);
                        }
                        running.kill();
                        child = None;
                    }
                    continue;
                }
            };
            match frame {
                Ok(Incoming::Hello(hello)) if hello.protocol == PROTOCOL => self.greet(&hello),
                Ok(Incoming::Hello(hello)) => {
                    let error = garbage(running, format!("bridge protocol {}, not {PROTOCOL}", hello.protocol));
                    fail(&mut phase, error);
                    child = None;
                }
                Ok(Incoming::Started(started)) => {
                    let since = match (&self.previous, started.incremental) {
                        (Some(previous), true) => format!("; incremental, after {}", previous.last_run),
                        _ => String::new(),
                    };
                    let total = started
                        .total_records
                        .map(|n| format!("; {n} records"))
                        .unwrap_or_default();
                    tracing::info!("source {}: {}{total}{since}", running.label, started.source_class);
                    extracted_at_us = now_us();
                }
                Ok(Incoming::Page(records)) => {
                    if phase == Phase::Running {
                        let page = Page {
                            sequence,
                            extracted_at_us,
                            records,
                            letters: Vec::new(),
                            spans: Vec::new(),
                        };
                        sequence += 1;
                        if link.events.blocking_send(SourceEvent::Page(page)).is_err() {
                            running.signal(libc::SIGTERM);
                            phase = Phase::Stopping(Instant::now());
                        }
                    }
                    extracted_at_us = now_us();
                }
                Ok(Incoming::Done(end)) => {
                    if phase == Phase::Running {
                        let _ = link.events.blocking_send(SourceEvent::Done { skipped: 0 });
                        phase = Phase::Finished;
                        tracing::debug!(
                            "source {}: {} records in {} iterations",
                            running.label,
                            end.records,
                            end.iterations
                        );
                        done = Some(end);
                    }
                }
                Ok(Incoming::Failed(failure)) => {
                    let error = source_error(running, failure);
                    fail(&mut phase, error);
                    running.wait_for(EXIT_GRACE);
                    running.kill();
                    child = None;
                }
                Ok(other @ Incoming::Checked(_)) => {
                    let error = garbage(running, format!("{other:?} during a run"));
                    fail(&mut phase, error);
                    child = None;
                }
                Err(ReadError::Eof) => {
                    match phase {
                        Phase::Running => {
                            let error = exited(running);
                            fail(&mut phase, error);
                        }
                        _ => {
                            if let Some(status) = running.wait_for(EXIT_GRACE).filter(|s| !s.success()) {
                                tracing::warn!("source {}: the Python child {}", running.label, describe(status));
                            }
                        }
                    }
                    running.kill();
                    child = None;
                }
                Err(ReadError::Garbage(what)) => {
                    let error = garbage(running, what);
                    fail(&mut phase, error);
                    child = None;
                }
                Err(ReadError::Io(e)) => {
                    let error = garbage(running, format!("reading its output: {e}"));
                    fail(&mut phase, error);
                    child = None;
                }
            }
            waiting_since = Instant::now();
        }
        drop(child);
        let everything_written = sequence == 0 || acked == Some(sequence - 1);
        if let (Some(done), Some(path)) = (done, &self.config.state_path) {
            if !(everything_written && link.published.load(Ordering::Relaxed)) {
                return;
            }
            let state = RunState {
                job: self.config.job.clone(),
                source: self.config.name.clone(),
                stream: self.config.stream.clone(),
                last_run: started_at,
                state: done.state,
            };
            // The run succeeded before this point: a state that cannot be
            // kept makes the next incremental run fetch again, not lose records.
            match state::save(path, &state) {
                Ok(()) => tracing::info!("source {}: state kept in {}", self.config.label(), path.display()),
                Err(e) => tracing::error!("{e}; the next incremental run starts from the previous state"),
            }
        }
    }

    fn closes(&self) -> bool {
        true
    }
}

fn source_error(child: &Child, failure: ChildFailure) -> BridgeError {
    BridgeError::Source {
        label: child.label.clone(),
        message: failure.message,
        hint: failure.hint,
        traceback: failure.traceback,
    }
}

/// The child ended on its own: how, and what it last wrote to stderr (a
/// traceback from before the frames started, a native crash's dump).
fn exited(child: &mut Child) -> BridgeError {
    let status = child.wait_for(EXIT_GRACE).or_else(|| child.kill());
    BridgeError::Exited {
        label: child.label.clone(),
        pid: child.pid(),
        how: status.map_or_else(|| "stopped answering".into(), describe),
        stderr: child.stderr_tail(Duration::from_secs(1)),
    }
}

fn garbage(child: &mut Child, what: String) -> BridgeError {
    child.kill();
    BridgeError::Garbage {
        label: child.label.clone(),
        what,
        stderr: child.stderr_tail(Duration::from_secs(1)),
    }
}

/// Asks the hung child where its threads are (faulthandler prints them on
/// SIGUSR1), then kills it.
fn hung(child: &mut Child, waited: String) -> BridgeError {
    child.signal(libc::SIGUSR1);
    std::thread::sleep(DUMP_WAIT);
    child.kill();
    BridgeError::Hung {
        label: child.label.clone(),
        waited,
        stack: child.stderr_tail(Duration::from_secs(1)),
    }
}

/// The host's log level, as loguru names it.
fn loguru_level() -> &'static str {
    use tracing::level_filters::LevelFilter;
    match LevelFilter::current() {
        LevelFilter::TRACE => "TRACE",
        LevelFilter::DEBUG => "DEBUG",
        LevelFilter::INFO => "INFO",
        LevelFilter::WARN => "WARNING",
        _ => "ERROR",
    }
}

fn iso8601(us: i64) -> String {
    let mut out = Vec::with_capacity(32);
    crate::record::time::write_iso8601_us(us, &mut out);
    String::from_utf8(out).expect("ASCII")
}
