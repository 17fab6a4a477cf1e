//! A private PostgreSQL cluster for a test (scripts/start-postgres.sh): a
//! temporary directory, a free port, trust authentication on 127.0.0.1,
//! stopped when dropped. Outside CI a machine without PostgreSQL skips the
//! test loudly; in CI it fails it.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

pub struct Postgres {
    pub url: String,
    dir: tempfile::TempDir,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/start-postgres.sh")
}

pub fn start() -> Option<Postgres> {
    let installed = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .any(|v| v.path().join("bin/initdb").exists());
    if !installed {
        let message = "PostgreSQL missing: run scripts/install-postgres.sh";
        if std::env::var_os("CI").is_some() {
            panic!("{message}");
        }
        eprintln!("\n!!!!!!!! SKIPPED: {message} !!!!!!!!\n");
        return None;
    }
    let dir = tempfile::Builder::new().prefix("bizon-pg").tempdir().unwrap();
    // As root the cluster runs as `postgres`, which must reach its directory.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = Command::new("bash")
        .arg(script())
        .arg(dir.path().join("pg"))
        .arg(port.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "start-postgres.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8(out.stdout).unwrap().trim().to_string();
    Some(Postgres { url, dir })
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("--stop")
            .arg(self.dir.path().join("pg"))
            .status();
    }
}
