//! A full disk under the `file` destination: a tmpfs of a few hundred KB
//! mounted over the output directory, in a mount namespace of the run's own
//! (`unshare`: as root, or as anyone where unprivileged user namespaces are
//! allowed), so the test needs no privilege over the machine's mounts. The
//! run's error names the file and the bytes, nothing unwritten is published,
//! and with `on_disk_full: wait` the run waits and finishes, every record
//! once, when room returns.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::support::{cache_dir, on_path, poll, require_tool, BIZON_HOST};

/// Records per run: about 170 KB of Bizon lines, three times the room the
/// tests leave.
const RECORDS: u64 = 1000;

/// A run of `bizon-host run` whose `out/` is a tmpfs of `size_kb` KB with
/// `filler_kb` KB of it taken by `out/filler`; what the run left in `out/`
/// is copied to `kept/` when it ends (the tmpfs goes with its namespace).
struct FullDisk {
    dir: tempfile::TempDir,
    child: Child,
}

impl FullDisk {
    fn start(size_kb: u32, filler_kb: u32, on_disk_full: &str) -> Self {
        let unshare = require_tool("unshare", &on_path("unshare"), "apt-get install util-linux");
        let dir = tempfile::tempdir().unwrap();
        for d in ["out", "kept"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        std::fs::write(
            dir.path().join("pipeline.yaml"),
            format!(
                "name: full\nsource:\n  name: dummy\n  stream: s\n  sync_mode: full_refresh\n  total_records: {RECORDS}\n  \
                 page_size: 50\n  destination_ids: [users]\ndestination:\n  name: file\n  config:\n    path: out\n    \
                 buffer_size: 0\n    on_disk_full: {on_disk_full}\n"
            ),
        )
        .unwrap();
        let script = format!(
            "set -e; mount -t tmpfs -o size={size_kb}k bizon-full out; head -c {} /dev/zero > out/filler; \
             code=0; \"$@\" || code=$?; cp -a out/. kept/; exit $code",
            filler_kb * 1024
        );
        // Root may mount in a mount namespace of its own; anyone else needs a
        // user namespace too (Ubuntu 24.04 restricts these by default:
        // `sysctl kernel.apparmor_restrict_unprivileged_userns=0`).
        // SAFETY: geteuid(2) cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        let mut cmd = Command::new(unshare);
        cmd.args(if root {
            &["--mount"][..]
        } else {
            &["--user", "--map-root-user", "--mount"][..]
        })
        .args(["sh", "-c", &script, "sh", BIZON_HOST])
        .args(["run", "pipeline.yaml", "--no-progress", "--result-json", "result.json"])
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .env("BIZON_HOST_CACHE_DIR", cache_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap());
        let child = cmd.spawn().unwrap();
        FullDisk { dir, child }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.path("stderr")).unwrap_or_default()
    }

    /// `out/` as the run sees it: the tmpfs, through its namespace's root.
    fn out(&self) -> PathBuf {
        Path::new(&format!("/proc/{}/root", self.child.id())).join(self.path("out").strip_prefix("/").unwrap())
    }

    /// Waits for the run's end; its exit code.
    fn wait(&mut self) -> Option<i32> {
        let status = self.child.wait().unwrap();
        assert!(
            !self.stderr().contains("mount: "),
            "cannot mount a tmpfs in a namespace of the test's own (run as root, or allow unprivileged user \
             namespaces); the run said:\n{}",
            self.stderr()
        );
        status.code()
    }
}

/// The dummy ids in a file of Bizon lines; every line must parse (no half
/// line left by a failed write).
fn ids(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let line: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("a torn line {l:?}: {e}"));
            let data: Value = serde_json::from_str(line["source_data"].as_str().unwrap()).unwrap();
            data["id"].as_u64().unwrap()
        })
        .collect()
}

#[test]
fn a_full_disk_stops_the_run_naming_the_file_and_the_bytes_and_publishes_nothing() {
    // 64 KB for 170 KB of lines.
    let mut run = FullDisk::start(64, 0, "stop");
    let code = run.wait();
    let said = run.stderr();
    assert_eq!(code, Some(1), "{said}");
    assert!(
        said.contains("disk full writing out/users_temp.json: ")
            && said.contains("bytes did not fit")
            && said.contains("bytes free of 65536 on its filesystem"),
        "{said}"
    );
    // Nothing published; what was staged is whole batches, every line whole.
    assert!(!run.path("kept/users.json").exists(), "{said}");
    let staged = ids(&run.path("kept/users_temp.json"));
    assert!(
        !staged.is_empty() && staged.len().is_multiple_of(50),
        "{} lines staged",
        staged.len()
    );
}

#[test]
fn with_on_disk_full_wait_the_run_waits_for_room_and_writes_every_record_once() {
    // 32 KB of room for 170 KB of lines until the filler goes.
    let mut run = FullDisk::start(512, 480, "wait");
    poll(
        || format!("a WARN of the full disk; the run said:\n{}", run.stderr()),
        || {
            run.stderr()
                .contains("waiting for room (on_disk_full: wait)")
                .then_some(())
        },
    );
    // Still waiting two seconds (two tries) later: the retry policy's
    // attempts do not run out.
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(run.child.try_wait().unwrap().is_none(), "{}", run.stderr());
    assert_eq!(
        run.stderr().matches("disk full writing").count(),
        1,
        "said once: {}",
        run.stderr()
    );
    std::fs::remove_file(run.out().join("filler")).unwrap();
    let code = run.wait();
    let said = run.stderr();
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("the disk has room again"), "{said}");
    let written = ids(&run.path("kept/users.json"));
    assert_eq!(written.len() as u64, RECORDS, "{said}");
    assert_eq!(
        written.iter().copied().collect::<BTreeSet<_>>(),
        (0..RECORDS).collect(),
        "{said}"
    );
}
