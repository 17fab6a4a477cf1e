//! Where what cannot be written goes instead of stopping the run: messages
//! the source cannot decode (raw bytes, headers, topic, partition, offset,
//! error) and rows a destination rejected (with the reason). One sink per
//! run, shared by the source and the pipeline; a letter counts as delivered
//! (its record may be acknowledged to the source) once `send` returned.
//!
//! ```yaml
//! dead_letter:
//!   path: dead_letters.jsonl     # a file of JSON lines, or
//!   topic: bizon-dead-letters    # a Kafka topic (the kafka source's brokers and credentials)
//!   max_dead_letters: 1000       # stop the run past this many
//!   max_dead_letter_ratio: 0.01  # or past this share of the records read
//! ```

mod file;
#[cfg(feature = "kafka")]
mod topic;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Deserialize;

use crate::record::Letter;

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterConfig {
    #[serde(default)]
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub topic: Option<String>,
    /// For `topic`: brokers, when not the kafka source's.
    #[serde(default)]
    pub bootstrap_servers: Option<String>,
    #[serde(default)]
    pub max_dead_letters: Option<u64>,
    #[serde(default)]
    pub max_dead_letter_ratio: Option<f64>,
    /// For `topic`: the addresses its brokers may advertise (`serve`: the
    /// tenant's egress ceiling). Set by the host, never read from a file.
    #[cfg(feature = "kafka")]
    #[serde(skip)]
    pub advertised_within: Option<crate::source::kafka::config::BrokerGate>,
}

/// The ratio bound is checked once this many records were read, so that the
/// first bad message of a run does not count as 100%.
const RATIO_MIN_SAMPLE: u64 = 100;

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("dead_letter: give `path` (a file) or `topic` (a Kafka topic), not both nor neither")]
    Target,
    #[error("dead_letter: cannot write {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("dead_letter: topic `{topic}`: {message}")]
    Kafka { topic: String, message: String },
    #[error("dead_letter: {count} dead letters {bound}; stopping (the last one was written)")]
    TooMany { count: u64, bound: String },
}

trait Sink: Send {
    /// Writes the letters durably before returning.
    fn write(&mut self, letters: &[Letter]) -> Result<(), DeadLetterError>;

    /// The [`position`] of every letter the target holds, to leave out the
    /// letters of messages read again after a crash; `None` when it cannot
    /// tell: a topic cannot be asked cheaply what it holds, so there a
    /// replay can dead-letter a message twice.
    fn held(&mut self) -> Result<Option<HashSet<String>>, DeadLetterError> {
        Ok(None)
    }
}

/// Where a letter's message or row was read, the same for the letter of a
/// message read again: a message's topic, partition and offset; a refused
/// row's destination_id and source_record_id (`partition_{p}_offset_{o}`
/// for Kafka).
fn position(letter: &Letter) -> String {
    match letter {
        Letter::Undecodable {
            topic,
            partition,
            offset,
            ..
        } => undecodable_at(topic, i64::from(*partition), *offset),
        Letter::Rejected {
            destination_id,
            source_record_id,
            ..
        } => rejected_at(destination_id, source_record_id),
    }
}

fn undecodable_at(topic: &str, partition: i64, offset: i64) -> String {
    format!("u\0{topic}\0{partition}\0{offset}")
}

fn rejected_at(destination_id: &str, source_record_id: &str) -> String {
    format!("r\0{destination_id}\0{source_record_id}")
}

pub struct DeadLetters {
    sink: Mutex<Box<dyn Sink>>,
    /// With replays recognised: the [`position`] of every letter written.
    held: Mutex<Option<HashSet<String>>>,
    written: AtomicU64,
    read: AtomicU64,
    max_count: Option<u64>,
    max_ratio: Option<f64>,
}

impl DeadLetters {
    /// Opens the target. `kafka` is the kafka source's client settings
    /// (brokers, security), which a `topic` target reuses.
    pub fn open(config: &DeadLetterConfig, kafka: Option<&BTreeMap<String, String>>) -> Result<Self, DeadLetterError> {
        let sink: Box<dyn Sink> = match (&config.path, &config.topic) {
            (Some(path), None) => Box::new(file::FileSink::open(path)?),
            #[cfg(feature = "kafka")]
            (None, Some(topic)) => Box::new(topic::TopicSink::open(
                topic,
                config.bootstrap_servers.as_deref(),
                kafka,
                config.advertised_within.clone(),
            )?),
            _ => return Err(DeadLetterError::Target),
        };
        let _ = kafka;
        Ok(Self {
            sink: Mutex::new(sink),
            held: Mutex::new(None),
            written: AtomicU64::new(0),
            read: AtomicU64::new(0),
            max_count: config.max_dead_letters,
            max_ratio: config.max_dead_letter_ratio,
        })
    }

    /// For a source that reads messages again after a crash (Kafka in
    /// stream or incremental mode): a letter the file holds already is not
    /// written again (see `file`).
    pub fn recognise_replays(self) -> Result<Self, DeadLetterError> {
        let held = self.sink.lock().expect("dead letter sink").held()?;
        if held.is_none() {
            tracing::warn!(
                "dead_letter: a topic cannot be asked which letters it holds: a message read again \
                 after a crash may be dead-lettered twice (a `path` dead letter is written once)"
            );
        }
        *self.held.lock().expect("held letters") = held;
        Ok(self)
    }

    /// `n` more records were read by the source (the ratio's denominator).
    pub fn saw(&self, n: u64) {
        self.read.fetch_add(n, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Writes `letters`; `Err` when the write failed or a bound is passed
    /// (the letters are written then too: nothing is lost either way).
    pub fn send(&self, letters: &[Letter]) -> Result<(), DeadLetterError> {
        let mut fresh = std::borrow::Cow::Borrowed(letters);
        if let Some(held) = self.held.lock().expect("held letters").as_mut() {
            let new: Vec<Letter> = letters.iter().filter(|l| held.insert(position(l))).cloned().collect();
            if new.len() < letters.len() {
                tracing::info!(
                    "dead_letter: {} letter(s) written before a restart, not written again",
                    letters.len() - new.len()
                );
                fresh = std::borrow::Cow::Owned(new);
            }
        }
        let letters = &*fresh;
        if letters.is_empty() {
            return Ok(());
        }
        self.sink.lock().expect("dead letter sink").write(letters)?;
        let count = self.written.fetch_add(letters.len() as u64, Ordering::Relaxed) + letters.len() as u64;
        for letter in letters {
            tracing::warn!(letter = %letter.to_json(), "dead letter");
        }
        if let Some(max) = self.max_count {
            if count > max {
                return Err(DeadLetterError::TooMany {
                    count,
                    bound: format!("passed max_dead_letters ({max})"),
                });
            }
        }
        if let Some(ratio) = self.max_ratio {
            let read = self.read.load(Ordering::Relaxed);
            if read >= RATIO_MIN_SAMPLE && count as f64 > ratio * read as f64 {
                return Err(DeadLetterError::TooMany {
                    count,
                    bound: format!("of {read} records read passed max_dead_letter_ratio ({ratio})"),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn rejected(i: u64) -> Letter {
        Letter::Rejected {
            destination_id: "d".into(),
            source_record_id: i.to_string(),
            reason: "bad".into(),
            source_data: Some("{}".into()),
        }
    }

    #[test]
    fn letters_go_to_the_file_and_the_count_bound_stops_past_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dl.jsonl");
        let config = DeadLetterConfig {
            path: Some(path.clone()),
            max_dead_letters: Some(2),
            ..DeadLetterConfig::default()
        };
        let dl = DeadLetters::open(&config, None).unwrap();
        dl.send(&[rejected(1), rejected(2)]).unwrap();
        let err = dl.send(&[rejected(3)]).unwrap_err().to_string();
        assert!(err.contains("3 dead letters passed max_dead_letters (2)"), "{err}");
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "the letter past the bound is written too");
        assert_eq!(lines[2]["source_record_id"], "3");
    }

    fn undecodable(offset: i64) -> Letter {
        Letter::Undecodable {
            topic: "t".into(),
            partition: 1,
            offset,
            timestamp_ms: None,
            key: None,
            value: Some(b"{".to_vec()),
            headers: Vec::new(),
            error: "not JSON".into(),
        }
    }

    #[test]
    fn a_restart_that_recognises_replays_writes_each_letter_once_and_cuts_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dl.jsonl");
        let config = DeadLetterConfig {
            path: Some(path.clone()),
            ..DeadLetterConfig::default()
        };
        let first = DeadLetters::open(&config, None).unwrap().recognise_replays().unwrap();
        first.send(&[undecodable(7), rejected(1)]).unwrap();
        drop(first);
        // A crash in the middle of the next write.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"kind\":\"undecod")
            .unwrap();
        let lines = || -> Vec<serde_json::Value> {
            std::fs::read_to_string(&path)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        };
        // The replay reads the same messages and refuses the same row.
        let again = DeadLetters::open(&config, None).unwrap().recognise_replays().unwrap();
        again
            .send(&[undecodable(7), undecodable(8), rejected(1), rejected(2)])
            .unwrap();
        let offsets: Vec<_> = lines().iter().map(|l| l["offset"].clone()).collect();
        assert_eq!(
            offsets,
            [7.into(), serde_json::Value::Null, 8.into(), serde_json::Value::Null]
        );
        assert_eq!(lines()[3]["source_record_id"], "2");
        // Without it (a full refresh reads every message again on purpose),
        // each run writes its own.
        let plain = DeadLetters::open(&config, None).unwrap();
        plain.send(&[undecodable(7)]).unwrap();
        assert_eq!(lines().len(), 5);
    }

    #[test]
    fn the_ratio_bound_waits_for_a_sample() {
        let dir = tempfile::tempdir().unwrap();
        let config = DeadLetterConfig {
            path: Some(dir.path().join("dl.jsonl")),
            max_dead_letter_ratio: Some(0.05),
            ..DeadLetterConfig::default()
        };
        let dl = DeadLetters::open(&config, None).unwrap();
        dl.saw(10);
        dl.send(&[rejected(1)]).unwrap();
        dl.saw(90);
        dl.send(&[rejected(2), rejected(3), rejected(4), rejected(5)]).unwrap();
        assert!(dl.send(&[rejected(6)]).is_err());
    }

    #[test]
    fn undecodable_bytes_keep_their_exact_value() {
        let letter = Letter::Undecodable {
            topic: "t".into(),
            partition: 1,
            offset: 7,
            timestamp_ms: None,
            key: Some(b"k".to_vec()),
            value: Some(vec![0xff, 0x00]),
            headers: vec![("h".into(), None)],
            error: "not JSON".into(),
        };
        let json = letter.to_json();
        assert_eq!(json["value"], serde_json::Value::Null);
        assert_eq!(json["value_base64"], "/wA=");
        assert_eq!(json["key"], "k");
        assert_eq!(json["headers"]["h"], serde_json::Value::Null);
    }
}
