//! The `file` destination: one file per destination_id.
//!
//! Bizon's NDJSON layout by default (`{destination_id}.json`, a line per row
//! with `source_data` as a JSON string), or Parquet with `format: parquet`.
//!
//! Every run writes `{destination_id}_temp.{ext}` from scratch and `finalize`
//! renames it onto the final name. So a crashed run never publishes anything,
//! and its leftover temp file is truncated by the next run instead of being
//! appended to (Bizon reuses it and publishes duplicates). Each flush ends
//! with an fsync, and a flush writes whole lines only.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow_array::RecordBatch;
use async_trait::async_trait;
use parquet::arrow::ArrowWriter;
use serde::Deserialize;

use super::{Batch, Destination, DestinationError};
use crate::config::source::IgnoredAny2;

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

crate::destination_config! {
    /// `destination: {name: file, config: ...}`
    pub struct FileConfig {
        /// Directory for the output files; the working directory when absent.
        #[serde(default)]
        pub path: Option<PathBuf>,
        #[serde(default)]
        pub format: FileFormat,
        /// Accepted as Bizon does; files need none.
        #[serde(default)]
        pub authentication: Option<IgnoredAny2>,
    }
}

pub struct FileDestination {
    dir: PathBuf,
    format: FileFormat,
    files: Mutex<HashMap<Arc<str>, Arc<Mutex<OutputFile>>>>,
}

struct OutputFile {
    temp: PathBuf,
    target: PathBuf,
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
        Ok(Self {
            dir,
            format: config.format,
            files: Mutex::new(HashMap::new()),
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
        let temp = self.dir.join(format!("{id}_temp.{ext}"));
        let target = self.dir.join(format!("{id}.{ext}"));
        // `create` truncates: a crashed run's leftovers are dropped, not published.
        let file = File::create(&temp).map_err(|e| io_error(&temp, "cannot create", e))?;
        let writer = match self.format {
            FileFormat::Json => Writer::Json(file),
            FileFormat::Parquet => Writer::Parquet(Box::new(
                ArrowWriter::try_new(file, batch.records.schema(), None)
                    .map_err(|e| io_error(&temp, "cannot start Parquet file", e))?,
            )),
        };
        let out = Arc::new(Mutex::new(OutputFile {
            temp,
            target,
            writer: Some(writer),
            scratch: Vec::new(),
        }));
        files.insert(batch.destination_id.clone(), out.clone());
        Ok(out)
    }
}

impl OutputFile {
    fn append(&mut self, records: &RecordBatch) -> Result<(), DestinationError> {
        let temp = self.temp.clone();
        match self.writer.as_mut() {
            None => Err(DestinationError::Fatal(format!(
                "{} was already finalized",
                temp.display()
            ))),
            Some(Writer::Json(file)) => {
                // Encode a slice at a time: the text of a whole 50 MB batch
                // would double the memory a flush needs.
                for start in (0..records.num_rows()).step_by(ROWS_PER_WRITE) {
                    let rows = records.slice(start, ROWS_PER_WRITE.min(records.num_rows() - start));
                    self.scratch.clear();
                    crate::record::ndjson::write_lines(&rows, &mut self.scratch)
                        .map_err(|e| DestinationError::Fatal(format!("cannot encode rows as JSON: {e}")))?;
                    file.write_all(&self.scratch)
                        .map_err(|e| io_error(&temp, "cannot write", e))?;
                    start_writeback(file);
                }
                file.sync_data().map_err(|e| io_error(&temp, "cannot sync", e))
            }
            Some(Writer::Parquet(writer)) => {
                writer.write(records).map_err(|e| io_error(&temp, "cannot write", e))?;
                writer.flush().map_err(|e| io_error(&temp, "cannot write", e))?;
                writer
                    .inner()
                    .sync_data()
                    .map_err(|e| io_error(&temp, "cannot sync", e))
            }
        }
    }

    fn publish(&mut self) -> Result<(), DestinationError> {
        match self.writer.take() {
            None => return Ok(()),
            Some(Writer::Json(file)) => file.sync_all().map_err(|e| io_error(&self.temp, "cannot sync", e))?,
            Some(Writer::Parquet(writer)) => {
                let file = writer
                    .into_inner()
                    .map_err(|e| io_error(&self.temp, "cannot close", e))?;
                file.sync_all().map_err(|e| io_error(&self.temp, "cannot sync", e))?;
            }
        }
        std::fs::rename(&self.temp, &self.target).map_err(|e| io_error(&self.target, "cannot publish", e))
    }
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
            File::create(&probe).map_err(|e| io_error(&dir, "cannot write in", e))?;
            std::fs::remove_file(&probe).map_err(|e| io_error(&probe, "cannot remove", e))
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
