//! bqemulator and gcp-storage-emulator from the repo's .venv
//! (scripts/install-emulators.sh), started once per test binary.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::common::{free_port, poll, require_tool, spawn_watched, venv_tool, wait_until};

pub const PROJECT: &str = "test-project";
pub const BUCKET: &str = "bizon-buffer";

pub struct Emulators {
    pub rest: String,
    pub grpc: String,
    /// Where the GCS emulator keeps its objects, which bqemulator's load jobs read.
    pub gcs_objects: PathBuf,
}

/// Waits until `url` answers 2xx; the test fails with `log` when it does not.
fn wait_http(url: &str, what: &str, log: &std::path::Path) {
    poll(
        || {
            format!(
                "{what} to answer at {url}; its log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        },
        || {
            let ok = std::process::Command::new("curl")
                .args(["-sf", "-o", "/dev/null", url])
                .status()
                .is_ok_and(|s| s.success());
            ok.then_some(())
        },
    );
}

/// The emulators, started by the first test that asks (a missing emulator
/// fails the test). Tests take them with [`hold`].
pub fn emulators() -> &'static Emulators {
    static EMULATORS: OnceLock<Emulators> = OnceLock::new();
    EMULATORS.get_or_init(start)
}

/// One test at a time talks to the emulators: bqemulator deadlocks when a
/// REST call arrives while another client holds an AppendRows stream open
/// (seen with two tests at once), which a real BigQuery does not; the runs
/// under test never do that themselves. An async lock: a test holds it
/// across its awaits, to its end.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The emulators, for this test alone until the guard is dropped (at the
/// end of the test).
pub async fn hold() -> (&'static Emulators, tokio::sync::MutexGuard<'static, ()>) {
    let held = ONE_AT_A_TIME.lock().await;
    (emulators(), held)
}

/// [`hold`] for a test that is not async.
pub fn hold_blocking() -> (&'static Emulators, tokio::sync::MutexGuard<'static, ()>) {
    let held = ONE_AT_A_TIME.blocking_lock();
    (emulators(), held)
}

fn start() -> Emulators {
    let install = "bash scripts/install-emulators.sh";
    let bq = require_tool("bqemulator", &[venv_tool("bqemulator")], install);
    let gcs = require_tool("gcp-storage-emulator", &[venv_tool("gcp-storage-emulator")], install);
    let dir = std::env::temp_dir().join(format!("bizon-bq-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let gcs_root = dir.join("gcs");
    std::fs::create_dir_all(&gcs_root).unwrap();
    // The Rust storage client (google-cloud-storage) drops the port from the
    // Host header on resumable uploads: GCS must be on port 80.
    // A test process that ended just before stops its emulators within a
    // second or two (its watchdog polls each second): wait for port 80 that long.
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect("127.0.0.1:80").is_ok() {
        // Another GCS emulator there would take the uploads into a directory
        // this bqemulator does not read: loads would find no files.
        assert!(
            Instant::now() < deadline,
            "port 80 is taken (another gcp-storage-emulator?); the BigQuery tests need it"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let gcs_log = dir.join("gcs.log");
    let gcs_dir = gcs_root.display().to_string();
    spawn_watched(
        &gcs,
        &[
            "-d",
            &gcs_dir,
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            "80",
            "--default-bucket",
            BUCKET,
            "-q",
        ],
        &[],
        &gcs_log,
    );
    let (rest_port, grpc_port) = (free_port(), free_port());
    let bq_log = dir.join("bq.log");
    spawn_watched(
        &bq,
        &[
            "start",
            "--rest-host",
            "127.0.0.1",
            "--rest-port",
            &rest_port.to_string(),
            "--grpc-host",
            "127.0.0.1",
            "--grpc-port",
            &grpc_port.to_string(),
            "--ephemeral",
            "--project",
            PROJECT,
            "--log-level",
            "warning",
        ],
        // Load jobs read gs://b/p from here: the GCS emulator's object store.
        &[("BQEMU_GCS_LOCAL_ROOT", gcs_root.join(".cloudstorage").as_os_str())],
        &bq_log,
    );
    let rest = format!("http://127.0.0.1:{rest_port}");
    wait_http(
        &format!("{rest}/bigquery/v2/projects/{PROJECT}/datasets"),
        "bqemulator",
        &bq_log,
    );
    wait_http("http://127.0.0.1:80/storage/v1/b", "gcp-storage-emulator", &gcs_log);
    Emulators {
        rest,
        grpc: format!("http://127.0.0.1:{grpc_port}"),
        gcs_objects: gcs_root.join(".cloudstorage"),
    }
}

/// A bqemulator of one test's own, file-backed (`--persistent`), that the
/// test SIGKILLs and starts again on the same ports and data: a warehouse
/// that goes away under a run and comes back with what it had. Load jobs
/// read `gcs_objects` (the shared GCS emulator's, [`Emulators::gcs_objects`]).
/// Killed when dropped.
pub struct OwnBigQuery {
    pub rest: String,
    pub grpc: String,
    ports: (u16, u16),
    gcs_objects: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl OwnBigQuery {
    pub fn start(gcs_objects: &Path) -> Self {
        let ports = (free_port(), free_port());
        let mut bq = OwnBigQuery {
            rest: format!("http://127.0.0.1:{}", ports.0),
            grpc: format!("http://127.0.0.1:{}", ports.1),
            ports,
            gcs_objects: gcs_objects.to_path_buf(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        bq.restart();
        bq
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("bq.log")).unwrap_or_default()
    }

    /// Starts it (again), and waits until it answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "bqemulator runs already");
        let bq = require_tool(
            "bqemulator",
            &[venv_tool("bqemulator")],
            "bash scripts/install-emulators.sh",
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("bq.log"))
            .unwrap();
        let data = self.dir.path().join("data");
        let child = Command::new(bq)
            .args(["start", "--rest-host", "127.0.0.1", "--grpc-host", "127.0.0.1"])
            .args(["--rest-port", &self.ports.0.to_string()])
            .args(["--grpc-port", &self.ports.1.to_string()])
            .args(["--persistent", "--project", PROJECT, "--log-level", "warning"])
            .arg("--data-dir")
            .arg(&data)
            .env("BQEMU_GCS_LOCAL_ROOT", &self.gcs_objects)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_http(
            &format!("{}/bigquery/v2/projects/{PROJECT}/datasets", self.rest),
            "bqemulator (persistent)",
            &self.dir.path().join("bq.log"),
        );
    }

    /// SIGKILL, without a word to its clients; returns once its ports are closed.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let rest = format!("127.0.0.1:{}", self.ports.0);
        wait_until("bqemulator to stop", || std::net::TcpStream::connect(&rest).is_err());
    }
}

impl Drop for OwnBigQuery {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
