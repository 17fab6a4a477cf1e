//! What the file destination records with a Kafka commit, and how it
//! resumes from it: a file is named by its host and absolute path (two
//! consumers of a group, each writing its own directory, never take each
//! other's lengths), its length is recorded after each completed write, and
//! at the next start the file is cut back to the length of the last commit.
//!
//! Before the first commit there is no such length: a run that finds none
//! notes the file's length in a sidecar (`.{file}.uncommitted`, synced
//! before the first append), so that a run killed before its first commit
//! is cut back to where it started. The sidecar goes once a commit recorded
//! a length.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::io_error;
use crate::destination::DestinationError;

/// A file's identity and length, as recorded with a commit.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct Position {
    pub file: String,
    pub length: u64,
}

impl Position {
    pub fn new(file: String, length: u64) -> Self {
        Self { file, length }
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&serde_json::to_string(self).map_err(|_| std::fmt::Error)?)
    }
}

/// `host:/absolute/path` of `target`: the same file for every run on this
/// machine, another for a consumer elsewhere.
pub fn identity(target: &Path) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let absolute = std::path::absolute(target).unwrap_or_else(|_| target.to_path_buf());
    format!("{}:{}", host.trim(), absolute.display())
}

/// What the last commit says of a file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Committed {
    /// Its length then: the file is cut back to it.
    Length(u64),
    /// Offsets were committed, but no length of this file came with them (a
    /// broker that drops commit metadata, an older version, another
    /// machine's file): nothing may be cut, since what it holds may be
    /// committed; what was written after the commit comes again.
    Unknown,
    /// Nothing was ever committed: the file is cut back to where the first
    /// run began (the sidecar), since all of it will be read again.
    Never,
}

/// The length committed last for `target`, among the positions recorded
/// for its destination_id: the largest of this file's (a file only grows
/// between commits; earlier commits recorded less).
pub fn committed_length(target: &Path, recorded: &[String]) -> Committed {
    let me = identity(target);
    recorded
        .iter()
        .filter_map(|p| serde_json::from_str::<Position>(p).ok())
        .filter(|p| p.file == me)
        .map(|p| p.length)
        .max()
        .map_or(Committed::Unknown, Committed::Length)
}

/// Cuts `file` (at `path`) back to where its last commit left it, or where
/// the run that never committed began: the lines cut.
pub fn resume(file: &File, path: &Path, committed: Committed) -> Result<u64, DestinationError> {
    let sidecar = sidecar(path);
    let drop_sidecar = || match std::fs::remove_file(&sidecar) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error(&sidecar, "cannot remove", e)),
        _ => Ok(()),
    };
    match committed {
        Committed::Length(length) => {
            let cut = cut_back(file, path, length)?;
            drop_sidecar()?;
            Ok(cut)
        }
        Committed::Unknown => {
            tracing::warn!(
                "{}: offsets were committed without this file's length; what was written after the last \
                 commit may be written once more",
                path.display()
            );
            super::trim_torn_line(file).map_err(|e| io_error(path, "cannot read", e))?;
            drop_sidecar()?;
            Ok(0)
        }
        Committed::Never => match std::fs::read_to_string(&sidecar) {
            Ok(text) => {
                let started = text
                    .trim()
                    .parse()
                    .map_err(|_| DestinationError::Fatal(format!("{}: not a length: {text:?}", sidecar.display())))?;
                cut_back(file, path, started)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                super::trim_torn_line(file).map_err(|e| io_error(path, "cannot read", e))?;
                let length = file.metadata().map_err(|e| io_error(path, "cannot read", e))?.len();
                write_synced(&sidecar, length.to_string().as_bytes())
                    .map_err(|e| io_error(&sidecar, "cannot write", e))?;
                Ok(0)
            }
            Err(e) => Err(io_error(&sidecar, "cannot read", e)),
        },
    }
}

/// `.{name}.uncommitted` beside `path`.
fn sidecar(path: &Path) -> std::path::PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.uncommitted"))
}

/// Writes `bytes` to `path` and syncs the file and its directory.
fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = super::nofollow::create_fresh(path)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    super::nofollow::sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Holds `file` for this process alone until it is closed: two runs
/// appending to one file would interleave and cut each other's lines.
pub fn lock(file: &File, path: &Path) -> Result<(), DestinationError> {
    // SAFETY: flock on an open descriptor; the kernel drops the lock with
    // the descriptor, a crash included.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if locked == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EWOULDBLOCK) => Err(DestinationError::Fatal(format!(
            "{} is being written by another process (another run, or another consumer of the group pointed \
             at the same directory); give each its own `path`",
            path.display()
        ))),
        _ => Err(io_error(path, "cannot lock", e)),
    }
}

/// Cuts `file` back to `length`, the length its last commit recorded: what
/// was written after that commit is read again and written once. Returns
/// the lines cut. A file shorter than that was cut or replaced outside
/// bizon-host, and continuing would lose committed records silently.
pub fn cut_back(file: &File, path: &Path, length: u64) -> Result<u64, DestinationError> {
    let now = file.metadata().map_err(|e| io_error(path, "cannot read", e))?.len();
    if now < length {
        return Err(DestinationError::Fatal(format!(
            "{} is {now} bytes, shorter than the {length} bytes the last Kafka commit recorded for it: it was \
             cut or replaced outside bizon-host, and records below the committed offsets are missing from it; \
             restore the file, or reset the consumer group's offsets to write them again",
            path.display()
        )));
    }
    if now == length {
        return Ok(0);
    }
    let lines = count_lines(file, length, now).map_err(|e| io_error(path, "cannot read", e))?;
    file.set_len(length).map_err(|e| io_error(path, "cannot cut", e))?;
    file.sync_all().map_err(|e| io_error(path, "cannot sync", e))?;
    tracing::info!(
        lines,
        bytes = now - length,
        "{}: cut back to its last commit; what was written after it is read again and written once",
        path.display()
    );
    Ok(lines)
}

/// Newlines between `from` and `to`.
fn count_lines(file: &File, from: u64, to: u64) -> std::io::Result<u64> {
    let mut reader = file.try_clone()?;
    reader.seek(SeekFrom::Start(from))?;
    let mut reader = reader.take(to - from);
    let mut buf = vec![0u8; 64 * 1024];
    let mut lines = 0;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(lines);
        }
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn a_file_is_cut_back_to_its_commit_and_a_shorter_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.json");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)
            .unwrap();
        file.write_all(b"a\nb\nc\n").unwrap();
        assert_eq!(cut_back(&file, &path, 2).unwrap(), 2);
        assert_eq!(std::fs::read(&path).unwrap(), b"a\n");
        let error = cut_back(&file, &path, 10).unwrap_err().to_string();
        assert!(error.contains("shorter than the 10 bytes"), "{error}");
    }

    #[test]
    fn a_run_that_never_committed_is_cut_back_to_where_it_began() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.json");
        std::fs::write(&path, b"before\n").unwrap();
        let open = || std::fs::OpenOptions::new().append(true).read(true).open(&path).unwrap();
        let file = open();
        assert_eq!(resume(&file, &path, Committed::Never).unwrap(), 0);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"x\ny\n")
            .unwrap();
        // Killed before any commit: the next run starts where this one did.
        assert_eq!(resume(&open(), &path, Committed::Never).unwrap(), 2);
        assert_eq!(std::fs::read(&path).unwrap(), b"before\n");
        // Once a commit recorded a length, it wins and the sidecar goes.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"z\n")
            .unwrap();
        assert_eq!(resume(&open(), &path, Committed::Length(9)).unwrap(), 0);
        assert!(!sidecar(&path).exists());
    }

    #[test]
    fn a_commit_without_this_files_length_cuts_nothing_and_ends_the_sidecar() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.json");
        let open = || std::fs::OpenOptions::new().append(true).read(true).open(&path).unwrap();
        std::fs::write(&path, b"").unwrap();
        assert_eq!(resume(&open(), &path, Committed::Never).unwrap(), 0);
        std::fs::write(&path, b"a\nb\nto").unwrap();
        // A broker that dropped the length: what is there may be committed.
        assert_eq!(resume(&open(), &path, Committed::Unknown).unwrap(), 0);
        assert_eq!(std::fs::read(&path).unwrap(), b"a\nb\n");
        assert!(!sidecar(&path).exists());
    }

    #[test]
    fn only_this_files_positions_count_and_the_largest_is_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.json");
        let mine = |length| Position::new(identity(&path), length).to_string();
        let other = Position::new("elsewhere:/x/t.json".into(), 999).to_string();
        assert_eq!(
            committed_length(&path, &[mine(10), other, mine(30), mine(20)]),
            Committed::Length(30)
        );
        assert_eq!(committed_length(&path, &["garbage".into()]), Committed::Unknown);
    }

    #[test]
    fn a_second_writer_of_a_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.json");
        let first = File::create(&path).unwrap();
        lock(&first, &path).unwrap();
        let second = File::open(&path).unwrap();
        let error = lock(&second, &path).unwrap_err().to_string();
        assert!(error.contains("another process"), "{error}");
    }
}
