//! What every end-to-end test shares: where the repository and the binary
//! are, running `bizon-host` and reading what it wrote, waiting for a
//! condition, the tools the tests start (a missing one fails the test and
//! names the script that installs it), and processes watched so that none
//! outlives the tests. The other support files build on this one, and the
//! benches (host/benches) include it beside the ones they use.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a test waits for a condition before it fails. Generous on
/// purpose: what the tests wait for takes seconds on a quiet machine, and a
/// loaded one (a fresh-clone CI run took 186 s for a 60 s suite) may make a
/// test slow but must never make it fail.
pub const DEADLINE: Duration = Duration::from_secs(180);

/// The repository's root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The binary under test.
pub const BIZON_HOST: &str = env!("CARGO_BIN_EXE_bizon-host");

/// The compile cache of the tests' runs: shared, so that a plugin is
/// compiled once (seconds each) and not once per test.
pub fn cache_dir() -> PathBuf {
    root().join("target/wasm-cache-tests")
}

/// The `bizon-host` binary with the environment of the tests: no RUST_LOG
/// of the caller's, the tests' compile cache and state directory (the Kafka
/// source's copy of its commits) under target/, the Python transform
/// runtime where the build put it, nothing on standard input.
pub fn bizon_host() -> Command {
    let mut cmd = Command::new(BIZON_HOST);
    // HOSTNAME makes a stream-mode Kafka consumer a static member (as
    // Bizon): tests that want it set it.
    cmd.env_remove("RUST_LOG")
        .env_remove("HOSTNAME")
        .env_remove("BIZON_HOST_PYTHON_TRANSFORM")
        .env("BIZON_HOST_CACHE_DIR", cache_dir())
        .env("BIZON_HOST_STATE_DIR", root().join("target/state-tests"))
        .stdin(Stdio::null());
    cmd
}

/// `bizon-host run pipeline.yaml --no-progress --result-json result.json`
/// in `dir`, after writing `yaml` to `dir/pipeline.yaml`.
pub fn run_command(dir: &Path, yaml: &str) -> Command {
    std::fs::write(dir.join("pipeline.yaml"), yaml).unwrap();
    let mut cmd = bizon_host();
    cmd.current_dir(dir)
        .args(["run", "pipeline.yaml", "--no-progress", "--result-json", "result.json"]);
    cmd
}

/// [`run_command`] to its end; `more` adds arguments or environment.
pub fn run_in_with(dir: &Path, yaml: &str, more: impl FnOnce(&mut Command)) -> Output {
    let mut cmd = run_command(dir, yaml);
    more(&mut cmd);
    cmd.output().unwrap()
}

/// [`run_in_with`] with nothing more.
pub fn run_in(dir: &Path, yaml: &str) -> Output {
    run_in_with(dir, yaml, |_| {})
}

/// A run of `bizon-host run` in a directory of its own.
pub struct Run {
    pub dir: tempfile::TempDir,
    pub output: Output,
}

/// [`run_in`] in a fresh directory.
pub fn run(yaml: &str) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let output = run_in(dir.path(), yaml);
    Run { dir, output }
}

impl Run {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    pub fn text(&self) -> String {
        text(&self.output)
    }

    pub fn stderr(&self) -> String {
        stderr(&self.output)
    }

    /// Fails the test, with what the run printed, unless it exited 0.
    pub fn assert_ok(&self) -> &Self {
        assert!(self.output.status.success(), "{}", self.text());
        self
    }

    /// Fails the test, with what the run printed, unless it exited `code`.
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code(), Some(code), "{}", self.text());
        self
    }

    /// The `--result-json` file; fails the test, with what the run printed,
    /// when there is none.
    pub fn result(&self) -> Value {
        try_result(self.dir.path()).unwrap_or_else(|| panic!("no result.json; the run printed:\n{}", self.text()))
    }
}

/// `dir/result.json`, when the run wrote one.
pub fn try_result(dir: &Path) -> Option<Value> {
    let bytes = std::fs::read(dir.join("result.json")).ok()?;
    Some(serde_json::from_slice(&bytes).unwrap())
}

/// `dir/result.json`.
pub fn result(dir: &Path) -> Value {
    try_result(dir).unwrap_or_else(|| panic!("no result.json in {}", dir.display()))
}

/// Runs `cmd` to its end with `input` on its standard input.
pub fn output_with_stdin(mut cmd: Command, input: Vec<u8>) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // From a thread of its own: a child that writes much before it reads
    // all of its input must not wait on this one.
    let feeder = std::thread::spawn(move || {
        use std::io::Write;
        // A child that stopped reading (it failed) closes the pipe: not an error here.
        let _ = stdin.write_all(&input);
    });
    let output = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    output
}

/// A process's standard output and error as one text.
pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A process's standard error.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The JSON value of each line of a file.
pub fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}: {l}", path.display())))
        .collect()
}

/// A port of 127.0.0.1 that nothing listened on a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Asks `probe` every 100 ms until it answers, and returns the answer;
/// after [`DEADLINE`] the test fails saying `what()`.
pub fn poll<T>(what: impl FnOnce() -> String, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(answer) = probe() {
            return answer;
        }
        if Instant::now() > deadline {
            panic!("waited {DEADLINE:?} for {}", what());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until `done()` holds (see [`poll`]).
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    poll(|| what.to_string(), || done().then_some(()))
}

/// Waits until something listens on `addr`; the test fails with `log`'s
/// text when nothing does.
pub fn wait_for_listener(addr: &str, what: &str, log: &Path) {
    poll(
        || {
            format!(
                "{what} to listen on {addr}; its log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        },
        || std::net::TcpStream::connect(addr).ok(),
    );
}

/// Sends `signal` (libc::SIGTERM, ...) to the child process `pid`.
pub fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) on the pid of a child this test has not waited for.
    let sent = unsafe { libc::kill(pid as i32, signal) };
    assert_eq!(sent, 0, "kill -{signal} {pid}");
}

/// The text of `GET /metrics` at `addr` (HOST:PORT), or "" when nothing answers.
pub fn metrics(addr: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text
}

/// The first of `candidates` that exists. A tool that is missing fails the
/// test, always, and says how to install it: a test that passed without its
/// tool would have checked nothing.
pub fn require_tool(name: &str, candidates: &[PathBuf], install: &str) -> PathBuf {
    let found = candidates.iter().find(|p| p.exists());
    found.cloned().unwrap_or_else(|| {
        let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        panic!(
            "{name} is missing (looked for [{}]): run `{install}`",
            looked.join(", ")
        )
    })
}

/// `program` in each directory of PATH, for [`require_tool`].
pub fn on_path(program: &str) -> Vec<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join(program))
        .collect()
}

/// `.venv/bin/NAME` at the root: where scripts/install-*.sh put the Python tools.
pub fn venv_tool(name: &str) -> PathBuf {
    root().join(".venv/bin").join(name)
}

/// Starts `program args` (with `env`, output into `log`) under a watchdog
/// shell that kills it once this test process is gone: a service started
/// once for the whole test binary lives in a static, and statics are never
/// dropped.
pub fn spawn_watched(program: &Path, args: &[&str], env: &[(&str, &OsStr)], log: &Path) {
    let quoted: Vec<String> = std::iter::once(program.display().to_string())
        .chain(args.iter().map(|a| a.to_string()))
        .map(|a| format!("'{a}'"))
        .collect();
    let script = format!(
        "{} >'{}' 2>&1 & child=$!; while kill -0 {} 2>/dev/null; do sleep 1; done; kill $child",
        quoted.join(" "),
        log.display(),
        std::process::id()
    );
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
    // Reaped when the watchdog exits, so it does not linger as a zombie.
    std::thread::spawn(move || child.wait());
}

/// Whether this is the process of its own that `test` (its name as libtest
/// gives it, `module::name`) runs in. The first time (false) runs the test
/// binary again on that one test, waits for it and fails when it failed;
/// the test then returns, and measures only in the second process (true),
/// where no other test runs beside it.
pub fn in_a_process_of_its_own(test: &str) -> bool {
    const MARK: &str = "BIZON_E2E_PROCESS_OF_ITS_OWN";
    if std::env::var_os(MARK).is_some_and(|t| t == test) {
        return true;
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads", "1"])
        .env(MARK, test)
        .output()
        .unwrap();
    let text = text(&output);
    assert!(output.status.success(), "{test} in a process of its own:\n{text}");
    assert!(text.contains("1 passed"), "{test} did not run:\n{text}");
    eprintln!("{text}");
    false
}

/// Serves a listener on a free port of 127.0.0.1 with `serve`, on a thread
/// and runtime of its own (the test blocks on the binary meanwhile), until
/// the test process ends; returns where it listens.
pub fn serve_in_background<F, Fut>(serve: F) -> std::net::SocketAddr
where
    F: FnOnce(tokio::net::TcpListener) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move { serve(tokio::net::TcpListener::from_std(listener).unwrap()).await });
    });
    addr
}
