//! A private PostgreSQL cluster for a test (scripts/start-postgres.sh): a
//! temporary directory, a free port, trust authentication on 127.0.0.1,
//! stopped when dropped.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

use super::common::{free_port, require_tool, root};

pub struct Postgres {
    pub url: String,
    dir: tempfile::TempDir,
}

fn script() -> PathBuf {
    root().join("scripts/start-postgres.sh")
}

pub fn start() -> Postgres {
    // Debian installs each major version under its own directory.
    let initdbs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|v| v.path().join("bin/initdb"))
        .collect();
    require_tool("PostgreSQL (initdb)", &initdbs, "bash scripts/install-postgres.sh");
    let dir = tempfile::Builder::new().prefix("bizon-pg").tempdir().unwrap();
    // As root the cluster runs as `postgres`, which must reach its directory.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let port = free_port();
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
    Postgres { url, dir }
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
