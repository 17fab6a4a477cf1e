//! The child process: which Python, its bounds, its signals, its stderr.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::config::BridgeSettings;
use super::protocol::{self, FrameReader, Incoming, ReadError};
use super::BridgeError;

/// The child program, run with `python -c` so that nothing is written to disk.
const CHILD: &str = include_str!("child.py");

static PYTHON: OnceLock<PathBuf> = OnceLock::new();

/// `--python`: wins over the environment.
pub fn set_python(path: PathBuf) {
    let _ = PYTHON.set(path);
}

/// The Python that runs Bizon, and where that choice came from (for errors).
#[derive(Debug, Clone)]
pub struct Python {
    pub path: PathBuf,
    pub from: &'static str,
}

impl Python {
    /// `--python`, else BIZON_HOST_PYTHON, else the active virtualenv's, else
    /// `python3` from PATH.
    pub fn find() -> Self {
        if let Some(path) = PYTHON.get() {
            return Self {
                path: path.clone(),
                from: "--python",
            };
        }
        if let Some(path) = std::env::var_os("BIZON_HOST_PYTHON").filter(|p| !p.is_empty()) {
            return Self {
                path: path.into(),
                from: "BIZON_HOST_PYTHON",
            };
        }
        if let Some(venv) = std::env::var_os("VIRTUAL_ENV").filter(|p| !p.is_empty()) {
            let path = PathBuf::from(venv).join("bin/python");
            if path.exists() {
                return Self {
                    path,
                    from: "the active virtualenv (VIRTUAL_ENV)",
                };
            }
        }
        Self {
            path: "python3".into(),
            from: "PATH (no --python, BIZON_HOST_PYTHON or VIRTUAL_ENV)",
        }
    }
}

/// The niceness of a tenant's child under `serve`.
const ISOLATED_NICE: libc::c_int = 10;
/// The size asked for the pipe the pages come through.
const PIPE_BYTES: libc::c_int = 1 << 20;
/// Lines of the child's stderr kept for error messages: a Python traceback
/// with chained causes runs to 40-50 lines.
const TAIL_LINES: usize = 60;
/// A longer stderr line is cut (the rest is counted, not kept).
const MAX_LINE: usize = 8 << 10;
/// stderr lines relayed to the log per second, after a burst of `BURST`:
/// Bizon logs a line or two a page, a runaway print loop thousands.
const LINES_PER_S: f64 = 50.0;
const BURST: f64 = 200.0;

pub struct Child {
    process: std::process::Child,
    stdin: Option<ChildStdin>,
    /// Decoded frames, from the reader thread; one may wait while the
    /// pipeline is busy, then the child blocks on its full pipe.
    pub frames: Receiver<Result<Incoming, ReadError>>,
    tail: Arc<Mutex<VecDeque<String>>>,
    relay: Option<JoinHandle<()>>,
    pub label: String,
}

impl Child {
    pub fn spawn(python: &Python, settings: &BridgeSettings, label: &str) -> Result<Self, BridgeError> {
        let mut command = Command::new(&python.path);
        command
            .arg("-c")
            .arg(CHILD)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a Ctrl-C on the terminal reaches the
            // host, which stops the child in order, not both at once.
            .process_group(0);
        let memory = settings.memory_mb.saturating_mul(1 << 20);
        let cpu = settings.cpu_seconds;
        let isolated = settings.isolated;
        if let Some(dir) = &settings.workdir {
            command.current_dir(dir);
        }
        if isolated {
            // Nothing of the host's environment (its credentials, tokens)
            // reaches a tenant's code; PATH and the locale keep Python usual.
            command.env_clear();
            for name in ["PATH", "LANG", "LC_ALL", "TZ"] {
                if let Some(value) = std::env::var_os(name) {
                    command.env(name, value);
                }
            }
        }
        // SAFETY: between fork and exec only async-signal-safe calls
        // (prctl, setrlimit, unshare, setpriority), no allocation.
        unsafe {
            command.pre_exec(move || {
                // Dies with the host, even a host killed with SIGKILL.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                limit(libc::RLIMIT_AS, memory, memory)?;
                limit(libc::RLIMIT_CORE, 0, 0)?;
                if let Some(seconds) = cpu {
                    // SIGXCPU at the soft limit; the kernel's SIGKILL 5 s later.
                    limit(libc::RLIMIT_CPU, seconds, seconds + 5)?;
                }
                if isolated {
                    // A user namespace makes a network namespace possible
                    // without privileges; the new network namespace has only
                    // a loopback, down: no socket reaches anything. Files
                    // are still reached as the host's user.
                    if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    // The host's own work first.
                    if libc::setpriority(libc::PRIO_PROCESS, 0, ISOLATED_NICE) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let mut process = command.spawn().map_err(|source| {
            // Isolated, anything but a missing Python is almost surely the
            // namespace refused (EPERM or ENOSPC from unshare): the rlimits
            // only fail above the host's own hard limits.
            if isolated && source.kind() != io::ErrorKind::NotFound {
                BridgeError::Isolation { source }
            } else {
                BridgeError::Spawn {
                    python: python.path.display().to_string(),
                    from: python.from,
                    source,
                }
            }
        })?;
        let stdin = process.stdin.take();
        let stdout = process.stdout.take().expect("piped stdout");
        // Room for several pages in the pipe (Linux's default is 64 KiB, half
        // a page of 1,000 small records), so that the child fetches the next
        // while the host decodes the last. Best effort: 1 MiB is the default
        // ceiling for an unprivileged process (/proc/sys/fs/pipe-max-size).
        // SAFETY: fcntl(2) on a pipe this process owns.
        unsafe {
            libc::fcntl(stdout.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_BYTES);
        }
        let stderr = process.stderr.take().expect("piped stderr");
        let (tx, frames) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("bizon-bridge-read".into())
            .spawn(move || {
                let mut reader = FrameReader::new(stdout);
                loop {
                    let frame = reader.next();
                    let last = frame.is_err();
                    if tx.send(frame).is_err() || last {
                        break;
                    }
                }
            })
            .expect("spawning the bridge reader");
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
        let relay = {
            let (tail, label) = (tail.clone(), label.to_string());
            std::thread::Builder::new()
                .name("bizon-bridge-stderr".into())
                .spawn(move || relay_stderr(stderr, &label, &tail))
                .expect("spawning the bridge stderr relay")
        };
        Ok(Self {
            process,
            stdin,
            frames,
            tail,
            relay: Some(relay),
            label: label.to_string(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    pub fn send(&mut self, kind: u8, payload: &[u8]) -> io::Result<()> {
        match &mut self.stdin {
            Some(stdin) => protocol::write_frame(stdin, kind, payload),
            None => Ok(()),
        }
    }

    /// The child's end of the run: it exits once it sees this.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Signals the child's process group (what the source may have started too).
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) with the group of a child not yet reaped.
        unsafe {
            libc::kill(-(self.process.id() as libc::pid_t), signal);
        }
    }

    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.process.try_wait().ok().flatten()
    }

    /// Waits up to `timeout` for the child to exit.
    pub fn wait_for(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the child's group and reaps it.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        if let Some(status) = self.try_wait() {
            return Some(status);
        }
        self.signal(libc::SIGKILL);
        self.process.wait().ok()
    }

    /// The last lines the child wrote to stderr, once it stopped writing
    /// (bounded by `settle`).
    pub fn stderr_tail(&mut self, settle: Duration) -> String {
        if let Some(relay) = self.relay.take() {
            let until = Instant::now() + settle;
            while !relay.is_finished() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
            if relay.is_finished() {
                let _ = relay.join();
            }
        }
        let tail = self.tail.lock();
        tail.iter().map(String::as_str).collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.stdin = None;
        self.kill();
    }
}

fn limit(resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> io::Result<()> {
    let value = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit(2) on this process with a valid struct.
    if unsafe { libc::setrlimit(resource, &value) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// How a child ended, in words, naming the bound it hit when it hit one.
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (_, Some(libc::SIGXCPU)) => "used up its CPU time (source.bridge.cpu_seconds) and was stopped (SIGXCPU)".into(),
        (_, Some(libc::SIGKILL)) => {
            "was killed (SIGKILL: past source.bridge.cpu_seconds, or the kernel's out-of-memory killer)".into()
        }
        (_, Some(libc::SIGSEGV)) => "crashed (SIGSEGV, in native code)".into(),
        (_, Some(signal)) => format!("was ended by signal {signal}"),
        _ => "ended".into(),
    }
}

/// Relays the child's stderr to the log, a line at a time: control
/// characters escaped, long lines cut, at most `LINES_PER_S` (the rest
/// counted); the last `TAIL_LINES` kept whatever the rate.
fn relay_stderr(stderr: impl Read, label: &str, tail: &Mutex<VecDeque<String>>) {
    let mut reader = BufReader::with_capacity(1 << 16, stderr);
    let mut line = Vec::new();
    let mut cut = false;
    let mut tokens = BURST;
    let mut refilled = Instant::now();
    let mut dropped = 0u64;
    loop {
        let (done, used) = match reader.fill_buf() {
            Ok([]) | Err(_) => break,
            Ok(buf) => match buf.iter().position(|&b| b == b'\n') {
                Some(at) => {
                    take(&mut line, &buf[..at], &mut cut);
                    (true, at + 1)
                }
                None => {
                    take(&mut line, buf, &mut cut);
                    (false, buf.len())
                }
            },
        };
        reader.consume(used);
        if !done {
            continue;
        }
        let text = escape(&line, cut);
        line.clear();
        cut = false;
        {
            let mut tail = tail.lock();
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(text.clone());
        }
        let now = Instant::now();
        tokens = (tokens + now.duration_since(refilled).as_secs_f64() * LINES_PER_S).min(BURST);
        refilled = now;
        if tokens < 1.0 {
            dropped += 1;
            continue;
        }
        tokens -= 1.0;
        if dropped > 0 {
            tracing::warn!(
                source = label,
                "{dropped} line(s) of the source's stderr not shown (at most {LINES_PER_S} a second)"
            );
            dropped = 0;
        }
        log_line(label, &text);
    }
    if dropped > 0 {
        tracing::warn!(
            source = label,
            "{dropped} line(s) of the source's stderr not shown (at most {LINES_PER_S} a second)"
        );
    }
}

fn take(line: &mut Vec<u8>, bytes: &[u8], cut: &mut bool) {
    let room = MAX_LINE.saturating_sub(line.len());
    line.extend_from_slice(&bytes[..bytes.len().min(room)]);
    *cut |= bytes.len() > room;
}

/// The line as text a terminal shows as is: control characters (an ANSI
/// escape, a carriage return) written as escapes, invalid UTF-8 replaced.
fn escape(line: &[u8], cut: bool) -> String {
    let text = String::from_utf8_lossy(line);
    let text = text.strip_suffix('\r').unwrap_or(&text);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if cut {
        out.push_str(" [line cut]");
    }
    out
}

/// Loguru's lines (`time | LEVEL | where - message`) keep their level.
fn log_line(label: &str, text: &str) {
    let level = text.split(" | ").nth(1).map(str::trim).unwrap_or("");
    match level {
        "ERROR" | "CRITICAL" => tracing::error!(source = label, "{text}"),
        "WARNING" => tracing::warn!(source = label, "{text}"),
        "DEBUG" => tracing::debug!(source = label, "{text}"),
        "TRACE" => tracing::trace!(source = label, "{text}"),
        _ => tracing::info!(source = label, "{text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_lines_are_escaped_and_cut() {
        assert_eq!(
            escape(b"\x1b[31mred\x1b[0m\tok\r", false),
            "\\u{1b}[31mred\\u{1b}[0m\tok"
        );
        assert_eq!(escape(b"caf\xc3\xa9 \xff", true), "café \u{fffd} [line cut]");
        let mut line = Vec::new();
        let mut cut = false;
        take(&mut line, &vec![b'x'; MAX_LINE + 10], &mut cut);
        assert_eq!(line.len(), MAX_LINE);
        assert!(cut);
    }

    #[test]
    fn relays_at_a_bounded_rate_but_keeps_the_tail() {
        let text: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        let tail = Mutex::new(VecDeque::new());
        relay_stderr(text.as_bytes(), "test", &tail);
        let tail = tail.lock();
        assert_eq!(tail.len(), TAIL_LINES);
        assert_eq!(tail.back().map(String::as_str), Some("line 999"));
    }
}
