//! The `file` destination: one file per destination_id.
//!
//! Bizon's NDJSON layout by default (`{destination_id}.json`, a line per row
//! with `source_data` as a JSON string), or Parquet with `format: parquet`.
//!
//! What a run does with the file follows the source's `sync_mode`, as Bizon:
//!
//! - `full_refresh`: the run writes `{id}_temp.{ext}` from scratch and
//!   `finalize` renames it onto `{id}.{ext}`. A crashed run publishes nothing,
//!   and its leftover temp file is truncated by the next run instead of being
//!   appended to (Bizon reuses it and publishes duplicates).
//! - `incremental`: the run appends to `{id}_incremental.json`, and `finalize`
//!   appends that to `{id}.json` and removes it. A crashed run's staged lines
//!   were acknowledged to the source, so the next run keeps them (minus a torn
//!   last line) and publishes them with its own; if the crash came after the
//!   append but before the removal, the next run sees `{id}.json` already ends
//!   with them and drops them instead of publishing them twice.
//! - `stream`: every flush appends to `{id}.json` directly.
//!
//! A flush writes whole lines only and, in `incremental` and `stream`, ends
//! with an fsync (a full refresh's temp file is fsynced once, when published). Every
//! path is opened without following links (see `nofollow`): the directory may
//! be shared with a plugin that can plant them. The file a run writes is
//! locked (`flock`) for the run: a second process writing the same file
//! (two consumers of one group pointed at one directory) is refused with an
//! error naming it, rather than interleaving lines.
//!
//! Exactly-once with a Kafka source (stream and incremental): after each
//! write the destination's [position](Destination::position) is the file's
//! identity (host and path) and its length, which the source commits with
//! the offsets of the records that made it. At the next start the file is
//! cut back to the length of the last commit before anything is appended
//! (what was written after it is read again), and an incremental stage is
//! dropped (its records were never committed). A file shorter than its
//! committed length was cut or replaced outside bizon-host: that stops the
//! run with an error rather than losing records silently.
//!
//! A full disk (ENOSPC, or EDQUOT over a quota) takes the batch's write back
//! whole and says which file and how many bytes did not fit; then, as
//! `on_disk_full:` says, the run stops (`stop`, the default) or the write
//! waits for room and is tried again every second (`wait`): a stream run
//! resumes by itself once space returns. Either way nothing of the batch
//! is acknowledged before it is written.

mod nofollow;
mod resume;

use std::collections::HashMap;
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow_array::RecordBatch;
use async_trait::async_trait;
use parquet::arrow::ArrowWriter;
use serde::Deserialize;

use super::{Batch, Destination, DestinationError};
use crate::config::IgnoredAny2;
use crate::config::SyncMode;

/// Output format of the `file` destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// Bizon's NDJSON lines.
    #[default]
    Json,
    Parquet,
}

impl FileFormat {
    fn extension(self) -> &'static str {
        match self {
            FileFormat::Json => "json",
            FileFormat::Parquet => "parquet",
        }
    }
}

/// What a write does when the file's disk is full (`on_disk_full:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFull {
    /// The run stops with an error naming the file and the bytes.
    #[default]
    Stop,
    /// The write is tried again every [`DISK_FULL_EVERY`] until it fits.
    Wait,
}

/// How often a write waiting for disk space is tried again: space freed
/// by an operator is used within a second, and a failed try costs one
/// batch's encoding and a truncate.
const DISK_FULL_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

crate::destination_config! {
    /// `destination: {name: file, config: ...}`
    pub struct FileConfig {
        /// Directory for the output files; the working directory when absent.
        #[serde(default)]
        pub path: Option<PathBuf>,
        #[serde(default)]
        pub format: FileFormat,
        /// A full disk stops the run (`stop`) or waits for room (`wait`).
        #[serde(default)]
        pub on_disk_full: DiskFull,
        /// Accepted as Bizon does; files need none.
        #[serde(default)]
        pub authentication: Option<IgnoredAny2>,
    }
}

pub struct FileDestination {
    dir: PathBuf,
    format: FileFormat,
    mode: SyncMode,
    on_disk_full: DiskFull,
    files: Mutex<HashMap<Arc<str>, Arc<Mutex<OutputFile>>>>,
    /// Set when the source resumes from commits (Kafka stream and
    /// incremental): each destination_id's committed length of this file.
    committed: Mutex<Option<HashMap<Arc<str>, resume::Committed>>>,
    /// Lines cut at the start because they were written after the last
    /// commit (they are read again and written once).
    replayed: std::sync::atomic::AtomicU64,
}

struct OutputFile {
    /// Where this run's rows go: the temp file, the incremental stage, or
    /// (stream) the published file itself.
    path: PathBuf,
    target: PathBuf,
    mode: SyncMode,
    on_disk_full: DiskFull,
    /// A write found the disk full and waits for room (logged once).
    waiting_for_room: bool,
    /// Bytes in `path`: what every completed write appended (a failed one
    /// is cut off again).
    length: u64,
    /// The target's identity, where its length is recorded with a commit:
    /// stream mode (the target is `path`) and incremental mode (once
    /// published, `published` holds its length); `None` on a full refresh,
    /// which replaces the file.
    identity: Option<String>,
    published: Option<u64>,
    /// `None` once finalized.
    writer: Option<Writer>,
    /// Reused line buffer: a fresh one per flush costs page faults.
    scratch: Vec<u8>,
}

enum Writer {
    Json(File),
    Parquet(Box<ArrowWriter<File>>),
}

fn io_error(path: &Path, what: &str, e: impl std::fmt::Display) -> DestinationError {
    DestinationError::Fatal(format!("{what} {}: {e}", path.display()))
}

impl FileDestination {
    pub fn new(config: &FileConfig) -> Result<Self, DestinationError> {
        let dir = config.path.clone().unwrap_or_else(|| PathBuf::from("."));
        let mode = config.options.sync_mode;
        if config.format == FileFormat::Parquet && mode != SyncMode::FullRefresh {
            return Err(DestinationError::Fatal(format!(
                "format: parquet supports sync_mode full_refresh only (a Parquet file cannot be appended to); \
                 source.sync_mode is {}. Bizon's file destination writes JSON only",
                mode.as_str()
            )));
        }
        Ok(Self {
            dir,
            format: config.format,
            mode,
            on_disk_full: config.on_disk_full,
            files: Mutex::new(HashMap::new()),
            committed: Mutex::new(None),
            replayed: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn output(&self, batch: &Batch) -> Result<Arc<Mutex<OutputFile>>, DestinationError> {
        let mut files = self.files.lock().expect("file table lock");
        if let Some(f) = files.get(&batch.destination_id) {
            return Ok(f.clone());
        }
        let id = &*batch.destination_id;
        if id.is_empty() || id.contains(['/', '\\']) || id == "." || id == ".." {
            return Err(DestinationError::Fatal(format!(
                "destination_id `{id}` cannot name a file (empty, or contains a path separator)"
            )));
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| io_error(&self.dir, "cannot create", e))?;
        let ext = self.format.extension();
        let target = self.dir.join(format!("{id}.{ext}"));
        let committed = self
            .committed
            .lock()
            .expect("committed lengths")
            .as_ref()
            .map(|c| c.get(id).copied().unwrap_or(resume::Committed::Never));
        let identity = (self.mode != SyncMode::FullRefresh).then(|| resume::identity(&target));
        let (path, file) = match self.mode {
            SyncMode::FullRefresh => {
                let temp = self.dir.join(format!("{id}_temp.{ext}"));
                // A crashed run's leftovers are dropped, not published.
                let file = nofollow::create_fresh(&temp).map_err(|e| io_error(&temp, "cannot create", e))?;
                resume::lock(&file, &temp)?;
                (temp, file)
            }
            SyncMode::Incremental => {
                let stage = self.dir.join(format!("{id}_incremental.{ext}"));
                let file = match committed {
                    // Offsets are committed only once the stage is published:
                    // what a crashed run staged is read again, so it goes.
                    Some(committed) => {
                        let file =
                            nofollow::open_append(&stage, true).map_err(|e| io_error(&stage, "cannot open", e))?;
                        resume::lock(&file, &stage)?;
                        file.set_len(0).map_err(|e| io_error(&stage, "cannot empty", e))?;
                        let published =
                            nofollow::open_append(&target, true).map_err(|e| io_error(&target, "cannot open", e))?;
                        let cut = resume::resume(&published, &target, committed)?;
                        self.replayed.fetch_add(cut, std::sync::atomic::Ordering::Relaxed);
                        file
                    }
                    None => {
                        let file = recover_stage(&stage, &target).map_err(|e| io_error(&stage, "cannot open", e))?;
                        resume::lock(&file, &stage)?;
                        file
                    }
                };
                (stage, file)
            }
            SyncMode::Stream => {
                let file = nofollow::open_append(&target, true).map_err(|e| io_error(&target, "cannot open", e))?;
                resume::lock(&file, &target)?;
                match committed {
                    Some(committed) => {
                        let cut = resume::resume(&file, &target, committed)?;
                        self.replayed.fetch_add(cut, std::sync::atomic::Ordering::Relaxed);
                    }
                    None => trim_torn_line(&file).map_err(|e| io_error(&target, "cannot read", e))?,
                }
                (target.clone(), file)
            }
        };
        let length = file.metadata().map_err(|e| io_error(&path, "cannot read", e))?.len();
        let writer = match self.format {
            FileFormat::Json => Writer::Json(file),
            FileFormat::Parquet => Writer::Parquet(Box::new(
                ArrowWriter::try_new(file, batch.records.schema(), None)
                    .map_err(|e| io_error(&path, "cannot start Parquet file", e))?,
            )),
        };
        let out = Arc::new(Mutex::new(OutputFile {
            path,
            target,
            mode: self.mode,
            on_disk_full: self.on_disk_full,
            waiting_for_room: false,
            length,
            identity,
            published: None,
            writer: Some(writer),
            scratch: Vec::new(),
        }));
        files.insert(batch.destination_id.clone(), out.clone());
        Ok(out)
    }
}

/// Opens an incremental stage for appending. A stage left by a crashed or
/// failed run holds lines acknowledged to the source: they stay, unless
/// `target` already ends with them (the crash came between publishing and
/// removing the stage). A torn last line is cut off. Anything at that name
/// that is not a plain file of ours is removed, never followed.
fn recover_stage(stage: &Path, target: &Path) -> std::io::Result<File> {
    if !nofollow::is_own_file(stage)? {
        nofollow::remove_if_present(stage)?;
        return nofollow::open_append(stage, true);
    }
    let file = nofollow::open_append(stage, false)?;
    let len = file.metadata()?.len();
    if len > 0 && nofollow::is_own_file(target)? {
        let published = nofollow::open_append(target, false)?;
        if ends_with(&published, &file, len)? {
            tracing::warn!(
                "{}: its lines were already appended to {}; dropping them",
                stage.display(),
                target.display()
            );
            file.set_len(0)?;
            return Ok(file);
        }
    }
    if len > 0 {
        tracing::warn!(
            "{}: keeping the lines a previous run staged and did not publish; this run publishes them",
            stage.display()
        );
    }
    trim_torn_line(&file)?;
    Ok(file)
}

/// Cuts a file back to its last complete line: a flush interrupted by a crash
/// may have written part of one, and that part was never acknowledged.
fn trim_torn_line(file: &File) -> std::io::Result<()> {
    const BLOCK: u64 = 64 * 1024;
    let len = file.metadata()?.len();
    let mut end = len;
    let mut buf = vec![0u8; BLOCK as usize];
    while end > 0 {
        let start = end.saturating_sub(BLOCK);
        let block = &mut buf[..(end - start) as usize];
        file.read_exact_at(block, start)?;
        if let Some(i) = block.iter().rposition(|&b| b == b'\n') {
            let keep = start + i as u64 + 1;
            if keep < len {
                file.set_len(keep)?;
            }
            return Ok(());
        }
        end = start;
    }
    file.set_len(0)
}

/// `whole` ends with the first `len` bytes of `part`.
fn ends_with(whole: &File, part: &File, len: u64) -> std::io::Result<bool> {
    const BLOCK: u64 = 64 * 1024;
    let whole_len = whole.metadata()?.len();
    if whole_len < len {
        return Ok(false);
    }
    let (mut a, mut b) = (vec![0u8; BLOCK as usize], vec![0u8; BLOCK as usize]);
    let mut at = 0;
    while at < len {
        let n = BLOCK.min(len - at) as usize;
        part.read_exact_at(&mut a[..n], at)?;
        whole.read_exact_at(&mut b[..n], whole_len - len + at)?;
        if a[..n] != b[..n] {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

impl OutputFile {
    fn append(&mut self, records: &RecordBatch) -> Result<(), DestinationError> {
        let path = self.path.clone();
        match self.writer.as_mut() {
            None => Err(DestinationError::Fatal(format!(
                "{} was already finalized",
                path.display()
            ))),
            Some(Writer::Json(file)) => {
                // A write that fails part way is taken back whole, so that
                // its retry (or the next run) does not find half a batch.
                // A full refresh's temp file is published (synced, then
                // renamed) at the end and its offsets committed after that;
                // a crashed run's file is thrown away, so a sync per flush
                // would only make the writer wait for the disk meanwhile.
                let sync = self.mode != SyncMode::FullRefresh;
                let written = append_lines(file, &path, records, &mut self.scratch, sync);
                match written {
                    Ok(bytes) => {
                        self.length += bytes;
                        if std::mem::take(&mut self.waiting_for_room) {
                            tracing::info!("{}: the disk has room again; writing on", path.display());
                        }
                        Ok(())
                    }
                    Err(e) => {
                        // Back to where the batch began: a full refresh's temp
                        // file is not opened to append, and a retry written at
                        // the old offset would leave a hole of NULs before it.
                        if let Err(undo) = file
                            .set_len(self.length)
                            .and_then(|()| file.seek(SeekFrom::Start(self.length)))
                        {
                            tracing::error!("{}: cannot take back a failed write: {undo}", path.display());
                        }
                        Err(match e {
                            Failed::Other(e) => e,
                            Failed::DiskFull { written, pending } => {
                                let message = disk_full(&path, written, pending);
                                match self.on_disk_full {
                                    DiskFull::Stop => DestinationError::Fatal(format!(
                                        "{message}; the run stops (`on_disk_full: wait` waits for room instead)"
                                    )),
                                    DiskFull::Wait => {
                                        self.waiting_for_room = true;
                                        DestinationError::Blocked {
                                            message: format!("{message}; waiting for room (on_disk_full: wait)"),
                                            every: DISK_FULL_EVERY,
                                        }
                                    }
                                }
                            }
                        })
                    }
                }
            }
            Some(Writer::Parquet(writer)) => {
                writer.write(records).map_err(|e| io_error(&path, "cannot write", e))?;
                writer.flush().map_err(|e| io_error(&path, "cannot write", e))?;
                writer
                    .inner()
                    .sync_data()
                    .map_err(|e| io_error(&path, "cannot sync", e))
            }
        }
    }

    fn publish(&mut self) -> Result<(), DestinationError> {
        let file = match self.writer.take() {
            None => return Ok(()),
            Some(Writer::Json(file)) => file,
            Some(Writer::Parquet(writer)) => writer
                .into_inner()
                .map_err(|e| io_error(&self.path, "cannot close", e))?,
        };
        file.sync_all().map_err(|e| io_error(&self.path, "cannot sync", e))?;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        match self.mode {
            SyncMode::Stream => return Ok(()),
            SyncMode::FullRefresh => {
                // Only rename what is still our file: a link swapped in under
                // its name must not become the published file.
                if !nofollow::still_names(&self.path, &file).map_err(|e| io_error(&self.path, "cannot check", e))? {
                    return Err(DestinationError::Fatal(format!(
                        "{} was replaced by something else during the run; nothing is published",
                        self.path.display()
                    )));
                }
                // rename replaces a link at the target, it never writes through one.
                std::fs::rename(&self.path, &self.target).map_err(|e| io_error(&self.target, "cannot publish", e))?;
            }
            SyncMode::Incremental => {
                if file
                    .metadata()
                    .map_err(|e| io_error(&self.path, "cannot read", e))?
                    .len()
                    > 0
                {
                    let mut published = nofollow::open_append(&self.target, true)
                        .map_err(|e| io_error(&self.target, "cannot open", e))?;
                    let mut staged = &file;
                    staged
                        .seek(SeekFrom::Start(0))
                        .and_then(|_| std::io::copy(&mut staged, &mut published))
                        .and_then(|_| published.sync_all())
                        .map_err(|e| io_error(&self.target, "cannot append to", e))?;
                }
                let length = std::fs::symlink_metadata(&self.target).map_or(0, |m| m.len());
                self.published = Some(length);
                nofollow::remove_if_present(&self.path).map_err(|e| io_error(&self.path, "cannot remove", e))?;
            }
        }
        nofollow::sync_dir(dir).map_err(|e| io_error(dir, "cannot sync", e))
    }
}

/// Why a batch's lines were not all written.
enum Failed {
    /// The disk is full: `written` bytes of the batch went in before
    /// `pending` more did not (all of them taken back).
    DiskFull {
        written: u64,
        pending: u64,
    },
    Other(DestinationError),
}

/// A full disk, or a quota that is: nothing but room helps.
fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// What a full disk says: the file, the bytes, and the room its
/// filesystem has left.
fn disk_full(path: &Path, written: u64, pending: u64) -> String {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let room = match free_bytes(dir) {
        Some((free, size)) => format!("{free} bytes free of {size} on its filesystem"),
        None => "its filesystem's free space unknown".into(),
    };
    format!(
        "disk full writing {}: {} bytes did not fit after the batch's first {written} ({room}); \
         the batch's write was taken back whole",
        path.display(),
        pending
    )
}

/// The bytes free to an unprivileged writer and the size of the filesystem
/// holding `dir` (statvfs).
fn free_bytes(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: statvfs(3) fills the struct it is given when it returns 0.
    let stat = unsafe {
        if libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) != 0 {
            return None;
        }
        stat.assume_init()
    };
    let block = stat.f_frsize as u64;
    Some((stat.f_bavail as u64 * block, stat.f_blocks as u64 * block))
}

/// Appends `records` as Bizon's lines (and syncs them, when `sync`); the
/// bytes written.
fn append_lines(
    file: &mut File,
    path: &Path,
    records: &RecordBatch,
    scratch: &mut Vec<u8>,
    sync: bool,
) -> Result<u64, Failed> {
    let mut bytes = 0;
    // Encode a slice at a time: the text of a whole 50 MB batch would
    // double the memory a flush needs.
    for start in (0..records.num_rows()).step_by(ROWS_PER_WRITE) {
        let rows = records.slice(start, ROWS_PER_WRITE.min(records.num_rows() - start));
        scratch.clear();
        crate::record::ndjson::write_lines(&rows, scratch)
            .map_err(|e| Failed::Other(DestinationError::Fatal(format!("cannot encode rows as JSON: {e}"))))?;
        file.write_all(scratch).map_err(|e| match is_disk_full(&e) {
            true => Failed::DiskFull {
                written: bytes,
                pending: scratch.len() as u64,
            },
            false => Failed::Other(io_error(path, "cannot write", e)),
        })?;
        start_writeback(file);
        bytes += scratch.len() as u64;
    }
    if sync {
        // A filesystem that allocates late (NFS, a thin volume) says ENOSPC here.
        file.sync_data().map_err(|e| match is_disk_full(&e) {
            true => Failed::DiskFull {
                written: 0,
                pending: bytes,
            },
            false => Failed::Other(io_error(path, "cannot sync", e)),
        })?;
    }
    Ok(bytes)
}

/// Asks the kernel to start writing what was just appended, without waiting.
/// The fsync that ends a flush then finds most of the batch already on disk,
/// so disk time overlaps encoding instead of following it.
#[cfg(target_os = "linux")]
fn start_writeback(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on an open descriptor; offset 0 with length 0
    // means "the whole file", and pages already queued are skipped cheaply.
    // A failure only loses the head start: the fsync after it still runs.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_: &File) {}

/// Rows encoded per write call: about 1 MB of Bizon lines.
const ROWS_PER_WRITE: usize = 4096;

#[async_trait]
impl Destination for FileDestination {
    async fn check_connection(&self) -> Result<(), DestinationError> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, "cannot create", e))?;
            let probe = dir.join(".bizon-host-write-check");
            nofollow::create_fresh(&probe).map_err(|e| io_error(&dir, "cannot write in", e))?;
            nofollow::remove_if_present(&probe).map_err(|e| io_error(&probe, "cannot remove", e))
        })
        .await
        .map_err(|e| DestinationError::Fatal(format!("write check panicked: {e}")))?
    }

    async fn write(&self, batch: &Batch) -> Result<u64, DestinationError> {
        let output = self.output(batch)?;
        let records = batch.records.clone();
        let rows = records.num_rows() as u64;
        tokio::task::spawn_blocking(move || output.lock().expect("output lock").append(&records))
            .await
            .map_err(|e| DestinationError::Fatal(format!("file write panicked: {e}")))??;
        Ok(rows)
    }

    fn position(&self, destination_id: &str) -> Option<String> {
        let output = self.files.lock().expect("file table lock").get(destination_id)?.clone();
        let output = output.lock().expect("output lock");
        let length = match output.mode {
            SyncMode::Stream => output.length,
            SyncMode::Incremental => output.published?,
            SyncMode::FullRefresh => return None,
        };
        Some(resume::Position::new(output.identity.clone()?, length).to_string())
    }

    async fn resume(&self, positions: &crate::source::Positions) -> Result<(), DestinationError> {
        let mut committed = HashMap::new();
        for (id, recorded) in positions {
            let target = self.dir.join(format!("{id}.{}", self.format.extension()));
            committed.insert(id.clone(), resume::committed_length(&target, recorded));
        }
        *self.committed.lock().expect("committed lengths") = Some(committed);
        Ok(())
    }

    fn replayed(&self) -> u64 {
        self.replayed.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn finalize(&self) -> Result<(), DestinationError> {
        let outputs: Vec<_> = self.files.lock().expect("file table lock").values().cloned().collect();
        tokio::task::spawn_blocking(move || {
            outputs
                .iter()
                .try_for_each(|o| o.lock().expect("output lock").publish())
        })
        .await
        .map_err(|e| DestinationError::Fatal(format!("file finalize panicked: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Int64Array;

    /// /dev/full answers every write with ENOSPC, as a full disk does, to
    /// anyone: the mapping needs no mount.
    #[test]
    fn a_full_disk_is_told_apart_and_names_the_file_and_the_bytes() {
        let mut full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
        let records = RecordBatch::try_from_iter([("id", Arc::new(Int64Array::from(vec![1, 2, 3])) as _)]).unwrap();
        let path = Path::new("/dev/full");
        match append_lines(&mut full, path, &records, &mut Vec::new(), false) {
            Err(Failed::DiskFull { written: 0, pending }) => assert_eq!(pending, "{\"id\":1}\n".len() as u64 * 3),
            Err(Failed::Other(e)) => panic!("not told apart: {e}"),
            other => panic!("{:?}", other.ok()),
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("users.json");
        let said = disk_full(&file, 10, 20);
        let start = format!(
            "disk full writing {}: 20 bytes did not fit after the batch's first 10 (",
            file.display()
        );
        assert!(said.starts_with(&start) && said.contains(" bytes free of "), "{said}");
    }
}
