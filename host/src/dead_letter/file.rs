//! Dead letters as JSON lines appended to a file, synced before `send` returns.
//!
//! Exactly once across crashes (a Kafka source in stream or incremental
//! mode): a letter is written before its page can be acknowledged, so a
//! process killed between the two wrote it and will read its message
//! again. [`Sink::recognise_replays`] reads the file's letters at the
//! start, by their source position (see `super::position`), so that a
//! letter the file already holds is not written again. A line torn by the
//! crash is cut: its page was not acknowledged, so its letter comes again.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;

use super::{DeadLetterError, Letter, Sink};

pub struct FileSink {
    file: File,
    path: String,
}

impl FileSink {
    pub fn open(path: &Path) -> Result<Self, DeadLetterError> {
        let shown = path.display().to_string();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)
            .map_err(|source| DeadLetterError::Io {
                path: shown.clone(),
                source,
            })?;
        Ok(Self { file, path: shown })
    }

    fn io(&self) -> impl Fn(std::io::Error) -> DeadLetterError + '_ {
        |source| DeadLetterError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

/// [`super::position`] of a letter as the file holds it.
fn position(letter: &serde_json::Value) -> Option<String> {
    match letter["kind"].as_str()? {
        "undecodable" => Some(super::undecodable_at(
            letter["topic"].as_str()?,
            letter["partition"].as_i64()?,
            letter["offset"].as_i64()?,
        )),
        "rejected" => Some(super::rejected_at(
            letter["destination_id"].as_str()?,
            letter["source_record_id"].as_str()?,
        )),
        _ => None,
    }
}

impl Sink for FileSink {
    fn write(&mut self, letters: &[Letter]) -> Result<(), DeadLetterError> {
        let mut text = Vec::new();
        for letter in letters {
            serde_json::to_writer(&mut text, &letter.to_json()).expect("JSON values serialize");
            text.push(b'\n');
        }
        self.file.write_all(&text).map_err(self.io())?;
        self.file.sync_data().map_err(self.io())
    }

    fn held(&mut self) -> Result<Option<HashSet<String>>, DeadLetterError> {
        let mut text = Vec::new();
        (&self.file).read_to_end(&mut text).map_err(self.io())?;
        let whole = text.iter().rposition(|b| *b == b'\n').map_or(0, |at| at + 1);
        if whole < text.len() {
            tracing::warn!(
                "dead_letter: {}: cut a line torn by a crash ({} bytes); its letter is written again",
                self.path,
                text.len() - whole
            );
            self.file.set_len(whole as u64).map_err(self.io())?;
            self.file.sync_data().map_err(self.io())?;
        }
        let held = text[..whole]
            .split(|b| *b == b'\n')
            .filter_map(|line| serde_json::from_slice::<serde_json::Value>(line).ok())
            .filter_map(|letter| position(&letter))
            .collect();
        Ok(Some(held))
    }
}
