//! The `jsonl` source: newline-delimited JSON objects from a file or from
//! standard input (`path: "-"`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{Source, SourceError};
use crate::record::{now_us, SourceRecord};

/// Newline-delimited JSON from a file or standard input.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct JsonlSourceConfig {
    pub name: String,
    /// A file, or "-" for standard input.
    pub path: PathBuf,
    /// Field holding the record's id; the line number when absent.
    #[serde(default)]
    pub id_field: Option<String>,
    /// Field holding the record's time (RFC 3339 text or epoch seconds/millis/micros).
    #[serde(default)]
    pub timestamp_field: Option<String>,
    /// Field naming the record's destination_id.
    #[serde(default)]
    pub destination_id_field: Option<String>,
    /// Count and log lines that are not JSON instead of stopping.
    #[serde(default)]
    pub skip_invalid: bool,
    #[serde(default = "crate::config::default_page_size")]
    pub page_size: usize,
    #[serde(default)]
    pub stream: Option<String>,
    #[serde(default)]
    pub sync_mode: Option<String>,
}

/// Keys of the `jsonl` section besides Bizon's base source keys.
pub const JSONL_KEYS: &[&str] = &[
    "path",
    "id_field",
    "timestamp_field",
    "destination_id_field",
    "skip_invalid",
    "page_size",
];

pub struct JsonlSource {
    lines: Box<dyn BufRead + Send>,
    path: String,
    line_no: u64,
    page_size: usize,
    id_field: Option<String>,
    timestamp_field: Option<String>,
    destination_id_field: Option<String>,
    skip_invalid: bool,
    skipped: u64,
    /// destination_ids seen so far, shared by the records that name them.
    destination_ids: HashMap<String, Arc<str>>,
}

impl JsonlSource {
    pub fn open(config: &JsonlSourceConfig) -> Result<Self, SourceError> {
        let path = config.path.display().to_string();
        let reader: Box<dyn Read + Send> = if path == "-" {
            Box::new(std::io::stdin())
        } else {
            Box::new(File::open(&config.path).map_err(|source| SourceError::Io {
                path: path.clone(),
                source,
            })?)
        };
        Ok(Self {
            lines: Box::new(BufReader::with_capacity(1 << 20, reader)),
            path: if path == "-" { "<stdin>".into() } else { path },
            line_no: 0,
            page_size: config.page_size,
            id_field: config.id_field.clone(),
            timestamp_field: config.timestamp_field.clone(),
            destination_id_field: config.destination_id_field.clone(),
            skip_invalid: config.skip_invalid,
            skipped: 0,
            destination_ids: HashMap::new(),
        })
    }

    fn bad_line(&self, message: impl Into<String>) -> SourceError {
        SourceError::BadLine {
            path: self.path.clone(),
            line: self.line_no,
            message: message.into(),
        }
    }

    fn record(&mut self, line: &str, now: i64) -> Result<SourceRecord, SourceError> {
        let needs_fields =
            self.id_field.is_some() || self.timestamp_field.is_some() || self.destination_id_field.is_some();
        if !line.starts_with('{') {
            return Err(self.bad_line("not a JSON object"));
        }
        let mut record = SourceRecord {
            id: self.line_no.to_string(),
            timestamp_us: now,
            data: line.to_string(),
            destination_id: None,
        };
        if !needs_fields {
            serde_json::from_str::<serde::de::IgnoredAny>(line)
                .map_err(|e| self.bad_line(format!("not valid JSON: {e}")))?;
            return Ok(record);
        }
        let fields: HashMap<Cow<str>, &RawValue> =
            serde_json::from_str(line).map_err(|e| self.bad_line(format!("not valid JSON: {e}")))?;
        let field = |name: &Option<String>| name.clone().and_then(|n| fields.get(n.as_str()).map(|v| (n, *v)));
        if let Some((name, value)) = field(&self.id_field) {
            record.id = scalar_text(value)
                .ok_or_else(|| self.bad_line(format!("id field `{name}` is not a string or number")))?;
        }
        if let Some((name, value)) = field(&self.timestamp_field) {
            record.timestamp_us = timestamp_us(value).ok_or_else(|| {
                self.bad_line(format!(
                    "timestamp field `{name}` is neither RFC 3339 text nor an epoch number"
                ))
            })?;
        }
        if let Some((name, value)) = field(&self.destination_id_field) {
            let id = scalar_text(value)
                .ok_or_else(|| self.bad_line(format!("destination_id field `{name}` is not a string or number")))?;
            let shared = self
                .destination_ids
                .entry(id)
                .or_insert_with_key(|k| Arc::from(k.as_str()));
            record.destination_id = Some(shared.clone());
        }
        Ok(record)
    }
}

/// A JSON string's content or a number's text.
fn scalar_text(value: &RawValue) -> Option<String> {
    let raw = value.get();
    if raw.starts_with('"') {
        serde_json::from_str::<String>(raw).ok()
    } else if raw.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        Some(raw.to_string())
    } else {
        None
    }
}

/// RFC 3339 text, or an epoch number whose size tells its unit (seconds,
/// milliseconds or microseconds), as microseconds.
fn timestamp_us(value: &RawValue) -> Option<i64> {
    let raw = value.get();
    if raw.starts_with('"') {
        let text = serde_json::from_str::<String>(raw).ok()?;
        return arrow_cast::parse::string_to_timestamp_nanos(&text)
            .ok()
            .map(|ns| ns.div_euclid(1000));
    }
    let n: f64 = raw.parse().ok()?;
    let magnitude = n.abs();
    Some(if magnitude < 1e11 {
        (n * 1e6) as i64
    } else if magnitude < 1e14 {
        (n * 1e3) as i64
    } else {
        n as i64
    })
}

impl Source for JsonlSource {
    fn next_page(&mut self) -> Result<Option<Vec<SourceRecord>>, SourceError> {
        let now = now_us();
        let mut records = Vec::with_capacity(self.page_size);
        let mut line = Vec::new();
        while records.len() < self.page_size {
            line.clear();
            // Bytes, then UTF-8 line by line: a line that is not UTF-8 is a
            // bad line, named and skippable, not a read error of the file.
            let read = self
                .lines
                .read_until(b'\n', &mut line)
                .map_err(|source| SourceError::Io {
                    path: self.path.clone(),
                    source,
                })?;
            if read == 0 {
                break;
            }
            self.line_no += 1;
            let record = match std::str::from_utf8(&line) {
                Ok(text) if text.trim().is_empty() => continue,
                Ok(text) => self.record(text.trim(), now),
                Err(e) => Err(self.bad_line(format!("not UTF-8: {e}"))),
            };
            match record {
                Ok(r) => records.push(r),
                Err(e) if self.skip_invalid => {
                    self.skipped += 1;
                    tracing::warn!("skipped: {e}");
                }
                Err(e) => return Err(e),
            }
        }
        Ok((!records.is_empty()).then_some(records))
    }

    fn skipped(&self) -> u64 {
        self.skipped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(text: &str, extra: &str) -> JsonlSource {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, text).unwrap();
        let config: JsonlSourceConfig =
            serde_saphyr::from_str(&format!("name: jsonl\npath: {}\npage_size: 2\n{extra}", path.display())).unwrap();
        let s = JsonlSource::open(&config).unwrap();
        std::mem::forget(dir);
        s
    }

    #[test]
    fn reads_pages_and_extracts_fields() {
        let text = "{\"k\":\"a\",\"t\":\"2024-05-01T12:30:00Z\",\"d\":\"users\"}\n\n{\"k\":7,\"t\":1714566600,\"d\":\"orders\"}\n{\"k\":8}\n";
        let mut s = source(text, "id_field: k\ntimestamp_field: t\ndestination_id_field: d\n");
        let page = s.next_page().unwrap().unwrap();
        assert_eq!(page.len(), 2);
        assert_eq!(page[0].id, "a");
        assert_eq!(page[0].timestamp_us, 1_714_566_600_000_000);
        assert_eq!(page[1].timestamp_us, 1_714_566_600_000_000);
        assert_eq!(page[0].destination_id.as_deref(), Some("users"));
        assert_eq!(page[1].id, "7");
        assert_eq!(page[1].data, "{\"k\":7,\"t\":1714566600,\"d\":\"orders\"}");
        let page = s.next_page().unwrap().unwrap();
        assert_eq!((page.len(), page[0].destination_id.clone()), (1, None));
        assert!(s.next_page().unwrap().is_none());
    }

    #[test]
    fn a_bad_line_is_an_error_naming_its_line_unless_skipped() {
        let mut s = source("{\"a\":1}\nnot json\n", "");
        let err = s.next_page().unwrap_err().to_string();
        assert!(err.ends_with("in.jsonl:2: not a JSON object"), "{err}");
        let mut s = source("{\"a\":1}\n{\"a\": tru}\n{\"a\":3}\n", "skip_invalid: true\n");
        let page = s.next_page().unwrap().unwrap();
        assert_eq!(page.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["1", "3"]);
        assert_eq!(s.skipped(), 1);
    }
}
