//! bqemulator and gcp-storage-emulator from the repo's .venv
//! (scripts/install-emulators.sh), started once per test binary.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const PROJECT: &str = "test-project";
pub const BUCKET: &str = "bizon-buffer";

pub struct Emulators {
    pub rest: String,
    pub grpc: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts `program args` under a watchdog shell that kills it once this test
/// process is gone: statics are never dropped, so nothing else would.
fn spawn_watched(program: &Path, args: &[String], env: &[(&str, String)], log: &Path) {
    let quoted: Vec<String> = std::iter::once(program.display().to_string())
        .chain(args.iter().cloned())
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
    let mut child = cmd.spawn().expect("spawning an emulator");
    // Reaped when the watchdog exits, so it does not linger as a zombie.
    std::thread::spawn(move || child.wait());
}

fn wait_http(url: &str, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let ok = std::process::Command::new("curl")
            .args(["-sf", "-o", "/dev/null", url])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "{what} did not answer at {url}; log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The emulators, or None (after a loud message) when the .venv is missing
/// outside CI. In CI a missing emulator fails the test.
pub fn emulators() -> Option<&'static Emulators> {
    static EMULATORS: OnceLock<Option<Emulators>> = OnceLock::new();
    EMULATORS.get_or_init(start).as_ref()
}

/// Held for a whole test: one test at a time talks to the emulators.
/// bqemulator deadlocks when a REST call arrives while another client holds
/// an AppendRows stream open (seen with two tests at once), which a real
/// BigQuery does not; the runs under test never do that themselves.
pub struct Serial(#[allow(dead_code)] std::sync::MutexGuard<'static, ()>);

pub fn serial() -> Serial {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    Serial(LOCK.lock().unwrap_or_else(|e| e.into_inner()))
}

fn start() -> Option<Emulators> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let bin = root.join(".venv/bin");
    let (bq, gcs) = (bin.join("bqemulator"), bin.join("gcp-storage-emulator"));
    if !bq.exists() || !gcs.exists() {
        let message = format!(
            "BigQuery emulators missing ({}): run scripts/install-emulators.sh",
            bin.display()
        );
        if std::env::var_os("CI").is_some() {
            panic!("{message}");
        }
        eprintln!("\n!!!!!!!! SKIPPED: {message} !!!!!!!!\n");
        return None;
    }
    let dir = std::env::temp_dir().join(format!("bizon-bq-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let gcs_root = dir.join("gcs");
    std::fs::create_dir_all(&gcs_root).unwrap();
    // The Rust storage client drops the port from the Host header on resumable
    // uploads (REFERENCE section 3): GCS must be on port 80.
    // A test binary that ran just before stops its emulators within a second
    // or two of ending (its watchdog polls): wait for port 80 that long.
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
    spawn_watched(
        &gcs,
        &[
            "-d".into(),
            gcs_root.display().to_string(),
            "start".into(),
            "--host".into(),
            "127.0.0.1".into(),
            "--port".into(),
            "80".into(),
            "--default-bucket".into(),
            BUCKET.into(),
            "-q".into(),
        ],
        &[],
        &gcs_log,
    );
    let (rest_port, grpc_port) = (free_port(), free_port());
    let bq_log = dir.join("bq.log");
    spawn_watched(
        &bq,
        &[
            "start".into(),
            "--rest-host".into(),
            "127.0.0.1".into(),
            "--rest-port".into(),
            rest_port.to_string(),
            "--grpc-host".into(),
            "127.0.0.1".into(),
            "--grpc-port".into(),
            grpc_port.to_string(),
            "--ephemeral".into(),
            "--project".into(),
            PROJECT.into(),
            "--log-level".into(),
            "warning".into(),
        ],
        // Load jobs read gs://b/p from here: the GCS emulator's object store.
        &[(
            "BQEMU_GCS_LOCAL_ROOT",
            gcs_root.join(".cloudstorage").display().to_string(),
        )],
        &bq_log,
    );
    let rest = format!("http://127.0.0.1:{rest_port}");
    wait_http(
        &format!("{rest}/bigquery/v2/projects/{PROJECT}/datasets"),
        "bqemulator",
        &bq_log,
    );
    wait_http("http://127.0.0.1:80/storage/v1/b", "gcp-storage-emulator", &gcs_log);
    Some(Emulators {
        rest,
        grpc: format!("http://127.0.0.1:{grpc_port}"),
    })
}
