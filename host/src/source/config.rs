//! The `source` section of a pipeline file, typed by its `name`: the one
//! place that registers sources (name -> typed config; [`super::build`]
//! turns a config into a running source). Each source's config struct lives
//! beside the source.

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::dummy::{DummySourceConfig, DUMMY_KEYS};
use super::jsonl::{JsonlSourceConfig, JSONL_KEYS};
#[cfg(feature = "kafka")]
use super::kafka::config::{KafkaSourceConfig, KAFKA_IGNORED_KEYS, KAFKA_KEYS};
use crate::config::{from_yaml, ConfigError};

#[derive(Debug, Clone, PartialEq)]
pub enum SourceConfig {
    Dummy(DummySourceConfig),
    Jsonl(JsonlSourceConfig),
    #[cfg(feature = "kafka")]
    Kafka(KafkaSourceConfig),
    /// Any other source, and any with a `source_file_path`: Bizon's own, run
    /// by Bizon in a child process (source/bridge/).
    Bridge(super::bridge::BridgeSourceConfig),
}

/// A pipeline file's `source` section typed as `S`; the other sections are
/// skipped here (`pipeline::spec` checks the file's keys).
#[derive(Deserialize)]
struct InFile<S> {
    source: S,
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

/// Parses the source section; keys it does not know become `warnings`.
pub fn parse(
    text: &str,
    file: &str,
    name: &Spanned<String>,
    warnings: &mut Vec<String>,
) -> Result<SourceConfig, ConfigError> {
    fn typed<S: DeserializeOwned>(text: &str, file: &str) -> Result<S, ConfigError> {
        let parsed: InFile<S> = from_yaml(text, file)?;
        Ok(parsed.source)
    }
    // Bizon runs a `source_file_path` whatever the name says.
    let custom = typed::<super::bridge::CustomSource>(text, file)?
        .source_file_path
        .is_some();
    let config = match name.value.as_str() {
        "dummy" if !custom => SourceConfig::Dummy(typed(text, file)?),
        "jsonl" if !custom => SourceConfig::Jsonl(typed(text, file)?),
        #[cfg(feature = "kafka")]
        "kafka" if !custom => SourceConfig::Kafka(typed(text, file)?),
        _ => {
            let bridged: super::bridge::BridgeFile = from_yaml(text, file)?;
            SourceConfig::Bridge(bridged.into_config(text, file))
        }
    };
    let own_keys = match &config {
        SourceConfig::Dummy(_) => DUMMY_KEYS,
        SourceConfig::Jsonl(_) => JSONL_KEYS,
        #[cfg(feature = "kafka")]
        SourceConfig::Kafka(_) => KAFKA_KEYS,
        // Its own config class judges its keys, in the child, as Bizon does.
        SourceConfig::Bridge(_) => return Ok(config),
    };
    let keys: InFile<std::collections::BTreeMap<String, IgnoredAny>> = from_yaml(text, file)?;
    for key in keys.source.keys() {
        #[cfg(feature = "kafka")]
        if matches!(config, SourceConfig::Kafka(_)) && KAFKA_IGNORED_KEYS.contains(&key.as_str()) {
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
pub fn check(config: &SourceConfig, file: &str, name: &Spanned<String>) -> Result<(), ConfigError> {
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
