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
    #[cfg(feature = "kafka")]
    Kafka(crate::source::kafka::config::KafkaSourceConfig),
    /// Any other source, and any with a `source_file_path`: Bizon's own, run
    /// by Bizon in a child process (source/bridge/).
    Bridge(crate::source::bridge::BridgeSourceConfig),
}

impl SourceConfig {
    /// `name` and `stream` as written, the base of default destination_ids.
    pub fn name_and_stream(&self) -> (&str, Option<&str>) {
        match self {
            SourceConfig::Dummy(c) => (&c.name, c.stream.as_deref()),
            SourceConfig::Jsonl(c) => (&c.name, c.stream.as_deref()),
            #[cfg(feature = "kafka")]
            SourceConfig::Kafka(c) => (&c.name, c.stream.as_deref()),
            SourceConfig::Bridge(c) => (&c.name, c.stream.as_deref()),
        }
    }
}

/// Deterministic records for trying pipelines out and for benchmarks.
///
/// Source sections accept unknown keys with a warning, as Bizon does.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DummySourceConfig {
    pub name: String,
    /// Records to generate; without it, Bizon's five fixed dummy records.
    #[serde(default)]
    pub total_records: Option<u64>,
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

/// Keys of Bizon's base SourceConfig (bizon/source/config.py), valid on every source.
const BIZON_SOURCE_KEYS: &[&str] = &[
    "name",
    "stream",
    "source_file_path",
    "sync_mode",
    "cursor_field",
    "force_ignore_checkpoint",
    "reset",
    "authentication",
    "max_iterations",
    "api_config",
    "http",
    "init_pipeline",
];
const DUMMY_KEYS: &[&str] = &["total_records", "page_size", "destination_ids", "sleep"];
const JSONL_KEYS: &[&str] = &[
    "path",
    "id_field",
    "timestamp_field",
    "destination_id_field",
    "skip_invalid",
    "page_size",
];

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

fn default_page_size() -> usize {
    1000
}

/// Parses the source section; keys it does not know become `warnings`.
pub(super) fn parse(
    text: &str,
    file: &str,
    name: &Spanned<String>,
    warnings: &mut Vec<String>,
) -> Result<SourceConfig, ConfigError> {
    fn typed<S: DeserializeOwned>(text: &str, file: &str) -> Result<S, ConfigError> {
        let parsed: PipelineFile<S, IgnoredAny> = from_yaml(text, file)?;
        Ok(parsed.source)
    }
    // Bizon runs a `source_file_path` whatever the name says.
    let custom = typed::<crate::source::bridge::CustomSource>(text, file)?
        .source_file_path
        .is_some();
    let config = match name.value.as_str() {
        "dummy" if !custom => SourceConfig::Dummy(typed(text, file)?),
        "jsonl" if !custom => SourceConfig::Jsonl(typed(text, file)?),
        #[cfg(feature = "kafka")]
        "kafka" if !custom => SourceConfig::Kafka(typed(text, file)?),
        _ => {
            let bridged: crate::source::bridge::BridgeFile = from_yaml(text, file)?;
            SourceConfig::Bridge(bridged.into_config(text, file))
        }
    };
    let own_keys = match &config {
        SourceConfig::Dummy(_) => DUMMY_KEYS,
        SourceConfig::Jsonl(_) => JSONL_KEYS,
        #[cfg(feature = "kafka")]
        SourceConfig::Kafka(_) => crate::source::kafka::config::KAFKA_KEYS,
        // Its own config class judges its keys, in the child, as Bizon does.
        SourceConfig::Bridge(_) => return Ok(config),
    };
    let keys: PipelineFile<std::collections::BTreeMap<String, IgnoredAny>, IgnoredAny> = from_yaml(text, file)?;
    for key in keys.source.keys() {
        #[cfg(feature = "kafka")]
        if matches!(config, SourceConfig::Kafka(_))
            && crate::source::kafka::config::KAFKA_IGNORED_KEYS.contains(&key.as_str())
        {
            warnings.push(format!(
                "{file}: source.{key}: Bizon 0.6.4 no longer reads this key (the schema id width \
                 is detected from each message); ignored"
            ));
            continue;
        }
        if !BIZON_SOURCE_KEYS.contains(&key.as_str()) && !own_keys.contains(&key.as_str()) {
            warnings.push(format!(
                "{file}: source.{key}: unknown key for the `{}` source, ignored",
                name.value
            ));
        }
    }
    let page_size = match &config {
        SourceConfig::Dummy(c) => c.page_size,
        SourceConfig::Jsonl(c) => c.page_size,
        #[cfg(feature = "kafka")]
        SourceConfig::Kafka(c) => c.batch_size,
        SourceConfig::Bridge(_) => unreachable!("returned with its keys"),
    };
    if page_size == 0 {
        return Err(ConfigError::spanned(file, name, "source.page_size must be at least 1"));
    }
    Ok(config)
}

/// Checks what needs the whole file (a Kafka source's topics may come from
/// `streams:`); errors point at the source's `name`.
pub(super) fn check(config: &SourceConfig, file: &str, name: &Spanned<String>) -> Result<(), ConfigError> {
    match config {
        #[cfg(feature = "kafka")]
        SourceConfig::Kafka(c) => {
            if c.topic_map().is_empty() {
                return Err(ConfigError::spanned(
                    file,
                    name,
                    "source.topics: no topics; list `topics: [{name, destination_id}]` or give a `streams:` section",
                ));
            }
            c.client_settings()
                .map_err(|message| ConfigError::spanned(file, name, format!("source.{message}")))?;
            Ok(())
        }
        _ => Ok(()),
    }
}
