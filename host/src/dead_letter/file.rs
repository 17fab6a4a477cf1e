//! Dead letters as JSON lines appended to a file, synced before `send` returns.

use std::fs::{File, OpenOptions};
use std::io::Write;
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
            .open(path)
            .map_err(|source| DeadLetterError::Io {
                path: shown.clone(),
                source,
            })?;
        Ok(Self { file, path: shown })
    }
}

impl Sink for FileSink {
    fn write(&mut self, letters: &[Letter]) -> Result<(), DeadLetterError> {
        let mut text = Vec::new();
        for letter in letters {
            serde_json::to_writer(&mut text, &letter.to_json()).expect("JSON values serialize");
            text.push(b'\n');
        }
        let io = |source| DeadLetterError::Io {
            path: self.path.clone(),
            source,
        };
        self.file.write_all(&text).map_err(io)?;
        self.file.sync_data().map_err(io)
    }
}
