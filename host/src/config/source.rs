//! The `source` section, typed by its `name`.

use std::path::PathBuf;

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{from_yaml, ConfigError, PipelineFile};

#[derive(Debug, Clone, PartialEq)]
pub enum SourceConfig {
    Dummy(DummySourceConfig),
    Jsonl(JsonlSourceConfig),
}

const SOURCES: &[&str] = &["dummy", "jsonl"];

/// Deterministic records for trying pipelines out and for benchmarks.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DummySourceConfig {
    pub name: String,
    #[serde(default = "default_total_records")]
    pub total_records: u64,
    #[serde(default = "default_page_size")]
    pub page_size: usize,
    /// Spreads records round-robin over these destination_ids.
    #[serde(default)]
    pub destination_ids: Vec<String>,
    /// Fields of Bizon's own source config, accepted so its files run unchanged.
    #[serde(default)]
    pub stream: Option<String>,
    #[serde(default)]
    pub sync_mode: Option<String>,
    #[serde(default)]
    pub force_ignore_checkpoint: Option<bool>,
    #[serde(default)]
    pub max_iterations: Option<u64>,
    #[serde(default)]
    pub authentication: Option<IgnoredAny2>,
    #[serde(default)]
    pub sleep: Option<f64>,
}

/// Newline-delimited JSON from a file or standard input.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
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
    #[serde(default = "default_page_size")]
    pub page_size: usize,
    #[serde(default)]
    pub stream: Option<String>,
    #[serde(default)]
    pub sync_mode: Option<String>,
}

/// A value of any shape, accepted and ignored (with `PartialEq` for configs).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(from = "IgnoredAny")]
pub struct IgnoredAny2;

impl From<IgnoredAny> for IgnoredAny2 {
    fn from(_: IgnoredAny) -> Self {
        IgnoredAny2
    }
}

fn default_total_records() -> u64 {
    1000
}

fn default_page_size() -> usize {
    1000
}

pub(super) fn parse(text: &str, file: &str, name: &Spanned<String>) -> Result<SourceConfig, ConfigError> {
    fn typed<S: DeserializeOwned>(text: &str, file: &str) -> Result<S, ConfigError> {
        let parsed: PipelineFile<S, IgnoredAny> = from_yaml(text, file)?;
        Ok(parsed.source)
    }
    let config = match name.value.as_str() {
        "dummy" => SourceConfig::Dummy(typed(text, file)?),
        "jsonl" => SourceConfig::Jsonl(typed(text, file)?),
        other => {
            return Err(ConfigError::spanned(
                file,
                name,
                format!("source.name: unknown source `{other}`; expected one of: {}", SOURCES.join(", ")),
            ))
        }
    };
    let page_size = match &config {
        SourceConfig::Dummy(c) => c.page_size,
        SourceConfig::Jsonl(c) => c.page_size,
    };
    if page_size == 0 {
        return Err(ConfigError::spanned(file, name, "source.page_size must be at least 1"));
    }
    Ok(config)
}
