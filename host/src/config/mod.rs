//! Reading a Bizon pipeline file.
//!
//! Bizon's YAML is read unchanged: `name`, `source`, `destination` (`name` +
//! `config`), `streams` (injected into the source and destination as Bizon
//! does), `transforms` (checked here, run by [`crate::transform`]), and the
//! `engine` section, which is accepted and, since bizon-host does not
//! implement it, reported with a warning.
//! `dead_letter` is bizon-host's own. Every error names the file, the line
//! and the field.
//!
//! Parsing goes in passes over the same text: first the source's and the
//! destination's `name`, then the whole file with the typed config those names
//! call for. Serde's tagged enums would do it in one pass, but they buffer
//! values and lose the line numbers the errors need.

mod common;
mod env;
mod schema;
pub mod source;
mod streams;
mod sync_mode;

use std::fmt;
use std::path::Path;

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Deserialize;
use serde_saphyr::Spanned;

pub use common::DestinationOptions;
pub use schema::{BigQueryType, ColumnMode, ColumnSpec, RecordSchemaConfig};
pub use source::{DummySourceConfig, JsonlSourceConfig, SourceConfig};
pub use streams::StreamConfig;

pub use crate::dead_letter::DeadLetterConfig;
pub use sync_mode::SyncMode;

use crate::destination::file::FileConfig;
use crate::destination::logger::LoggerConfig;

/// A config error, located in its file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ConfigError {
    pub file: String,
    /// 1-based; 0 when the error has no line (a missing file).
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl ConfigError {
    pub fn at(file: &str, line: usize, column: usize, message: impl Into<String>) -> Self {
        Self {
            file: file.to_string(),
            line,
            column,
            message: message.into(),
        }
    }

    pub(crate) fn spanned<T>(file: &str, span: &Spanned<T>, message: impl Into<String>) -> Self {
        let at = span.referenced;
        Self::at(file, at.line() as usize, at.column() as usize, message)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            0 => write!(f, "{}: {}", self.file, self.message),
            line => write!(f, "{}:{}:{}: {}", self.file, line, self.column, self.message),
        }
    }
}

/// A pipeline, parsed and checked.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub name: String,
    pub source: SourceConfig,
    pub destination: DestinationConfig,
    /// Where undecodable messages and rejected rows go instead of stopping the run.
    pub dead_letter: Option<DeadLetterConfig>,
    /// Applied in order to every record before buffering.
    #[cfg(feature = "wasm")]
    pub transforms: Vec<crate::transform::TransformSpec>,
    /// Sections of the file that bizon-host reads but does not act on.
    pub ignored_sections: Vec<&'static str>,
    /// Things worth telling the user that do not stop the run.
    pub warnings: Vec<String>,
}

/// The destination section, typed by its `name`.
#[derive(Debug, Clone)]
pub enum DestinationConfig {
    File(FileConfig),
    Logger(LoggerConfig),
    #[cfg(feature = "wasm")]
    Wasm(crate::destination::wasm::WasmConfig),
    #[cfg(feature = "bigquery")]
    BigQuery(crate::destination::bigquery::BigQueryConfig),
    #[cfg(feature = "bigquery")]
    BigQueryStreaming(crate::destination::bigquery::BigQueryStreamingConfig),
    #[cfg(feature = "bigquery")]
    BigQueryStreamingV2(crate::destination::bigquery::BigQueryStreamingV2Config),
}

/// Destination names this build understands, for the error on an unknown one.
const DESTINATIONS: &[&str] = &[
    "file",
    "logger",
    #[cfg(feature = "wasm")]
    "wasm",
    #[cfg(feature = "bigquery")]
    "bigquery",
    #[cfg(feature = "bigquery")]
    "bigquery_streaming",
    #[cfg(feature = "bigquery")]
    "bigquery_streaming_v2",
];

impl DestinationConfig {
    /// The destination's name as written in the pipeline file.
    pub fn name(&self) -> &'static str {
        match self {
            DestinationConfig::File(_) => "file",
            DestinationConfig::Logger(_) => "logger",
            #[cfg(feature = "wasm")]
            DestinationConfig::Wasm(_) => "wasm",
            #[cfg(feature = "bigquery")]
            DestinationConfig::BigQuery(_) => "bigquery",
            #[cfg(feature = "bigquery")]
            DestinationConfig::BigQueryStreaming(_) => "bigquery_streaming",
            #[cfg(feature = "bigquery")]
            DestinationConfig::BigQueryStreamingV2(_) => "bigquery_streaming_v2",
        }
    }

    pub fn options(&self) -> &DestinationOptions {
        match self {
            DestinationConfig::File(c) => &c.options,
            DestinationConfig::Logger(c) => &c.options,
            #[cfg(feature = "wasm")]
            DestinationConfig::Wasm(c) => &c.options,
            #[cfg(feature = "bigquery")]
            DestinationConfig::BigQuery(c) => &c.options,
            #[cfg(feature = "bigquery")]
            DestinationConfig::BigQueryStreaming(c) => &c.options,
            #[cfg(feature = "bigquery")]
            DestinationConfig::BigQueryStreamingV2(c) => &c.options,
        }
    }

    pub fn options_mut(&mut self) -> &mut DestinationOptions {
        match self {
            DestinationConfig::File(c) => &mut c.options,
            DestinationConfig::Logger(c) => &mut c.options,
            #[cfg(feature = "wasm")]
            DestinationConfig::Wasm(c) => &mut c.options,
            #[cfg(feature = "bigquery")]
            DestinationConfig::BigQuery(c) => &mut c.options,
            #[cfg(feature = "bigquery")]
            DestinationConfig::BigQueryStreaming(c) => &mut c.options,
            #[cfg(feature = "bigquery")]
            DestinationConfig::BigQueryStreamingV2(c) => &mut c.options,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineFile<S, D> {
    name: String,
    source: S,
    destination: DestinationSection<D>,
    #[serde(default)]
    engine: Option<IgnoredAny>,
    #[cfg(feature = "wasm")]
    #[serde(default)]
    transforms: Option<Vec<crate::transform::TransformEntry>>,
    #[cfg(not(feature = "wasm"))]
    #[serde(default)]
    transforms: Option<IgnoredAny>,
    #[serde(default)]
    streams: Option<Vec<StreamConfig>>,
    #[serde(default)]
    dead_letter: Option<DeadLetterConfig>,
    #[serde(default)]
    #[serde(rename = "id")]
    _id: Option<IgnoredAny>,
    #[serde(default)]
    alerting: Option<IgnoredAny>,
    #[serde(default)]
    monitoring: Option<IgnoredAny>,
    #[serde(default)]
    secrets: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DestinationSection<D> {
    name: Spanned<String>,
    /// Bizon's tracking name (`bigquery` for `bigquery_streaming`); unused here.
    #[serde(default, rename = "alias")]
    _alias: Option<IgnoredAny>,
    /// Declared by Bizon's `bigquery` destination (default 400) and never read:
    /// its buffer takes `config.buffer_size`. Accepted so its files parse.
    #[serde(default, rename = "buffer_size")]
    _buffer_size: Option<IgnoredAny>,
    config: Option<D>,
}

/// Just the source's name; the rest of the section is read in a later pass.
#[derive(Deserialize)]
struct SourceName {
    name: Spanned<String>,
}

/// Reads, substitutes and parses a pipeline file.
pub fn load(path: &Path) -> Result<Pipeline, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::at(&file, 0, 0, format!("cannot read the pipeline file: {e}")))?;
    parse(&text, &file, |name| std::env::var(name).ok())
}

/// Parses pipeline text; `file` names it in errors, `lookup` reads the environment.
pub fn parse(text: &str, file: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<Pipeline, ConfigError> {
    let text = env::substitute(text, file, lookup)?;
    let names: PipelineFile<SourceName, IgnoredAny> = from_yaml(&text, file)?;
    let mut warnings = Vec::new();
    let mut source = source::parse(&text, file, &names.source.name, &mut warnings)?;
    let mut destination = parse_destination(&text, file, &names.destination.name)?;
    if let Some(streams) = names.streams.as_deref().filter(|s| !s.is_empty()) {
        streams::apply(
            streams,
            file,
            &mut source,
            &mut destination.options_mut().record_schemas,
        )?;
    }
    source::check(&source, file, &names.source.name)?;
    destination.options().validate(file)?;
    let run: PipelineFile<sync_mode::SourceRun, IgnoredAny> = from_yaml(&text, file)?;
    let options = destination.options_mut();
    options.sync_mode = run.source.sync_mode(file, &names.destination.name.value)?;
    #[cfg(feature = "kafka")]
    {
        options.source_identity = matches!(source, SourceConfig::Kafka(_));
    }
    if options.destination_id.is_none() {
        options.generated_destination_id = Some(run.source.generated_destination_id());
    }
    #[cfg(feature = "wasm")]
    let transforms = crate::transform::check_entries(names.transforms.unwrap_or_default(), &text, file)?;
    let ignored_sections = [
        ("engine", names.engine.is_some()),
        #[cfg(not(feature = "wasm"))]
        ("transforms", names.transforms.is_some()),
        ("alerting", names.alerting.is_some()),
        ("monitoring", names.monitoring.is_some()),
        ("secrets", names.secrets.is_some()),
    ]
    .into_iter()
    .filter_map(|(section, present)| present.then_some(section))
    .collect();
    Ok(Pipeline {
        name: names.name,
        source,
        destination,
        dead_letter: names.dead_letter,
        #[cfg(feature = "wasm")]
        transforms,
        ignored_sections,
        warnings,
    })
}

fn parse_destination(text: &str, file: &str, name: &Spanned<String>) -> Result<DestinationConfig, ConfigError> {
    // A destination whose options all have defaults may leave `config` out.
    fn typed<D: DeserializeOwned>(text: &str, file: &str, name: &Spanned<String>) -> Result<D, ConfigError> {
        let parsed: PipelineFile<IgnoredAny, D> = from_yaml(text, file)?;
        match parsed.destination.config {
            Some(config) => Ok(config),
            None => serde_saphyr::from_str("{}").map_err(|e| {
                ConfigError::spanned(
                    file,
                    name,
                    format!("destination.config is missing: {}", plain_message(&e.to_string())),
                )
            }),
        }
    }
    Ok(match name.value.as_str() {
        "file" => DestinationConfig::File(typed(text, file, name)?),
        "logger" => DestinationConfig::Logger(typed(text, file, name)?),
        #[cfg(feature = "wasm")]
        "wasm" => DestinationConfig::Wasm(typed(text, file, name)?),
        #[cfg(feature = "bigquery")]
        "bigquery" => DestinationConfig::BigQuery(typed(text, file, name)?),
        #[cfg(feature = "bigquery")]
        "bigquery_streaming" => DestinationConfig::BigQueryStreaming(typed(text, file, name)?),
        #[cfg(feature = "bigquery")]
        "bigquery_streaming_v2" => DestinationConfig::BigQueryStreamingV2(typed(text, file, name)?),
        other => {
            return Err(ConfigError::spanned(
                file,
                name,
                format!(
                    "destination.name: unknown destination `{other}`; expected one of: {}",
                    DESTINATIONS.join(", ")
                ),
            ))
        }
    })
}

/// Deserializes YAML text, turning the parser's error into a located one
/// that also names the field by its path (`destination.config.buffer_size`).
pub fn from_yaml<T: DeserializeOwned>(text: &str, file: &str) -> Result<T, ConfigError> {
    let mut path = String::new();
    serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            path = e.path().to_string();
            e.into_inner()
        })
    })
    .map_err(|e| {
        let (line, column) = e
            .location()
            .map_or((0, 0), |l| (l.line() as usize, l.column() as usize));
        let message = plain_message(&e.to_string());
        let message = match path.as_str() {
            "" | "." => message,
            path => format!("{path}: {message}"),
        };
        ConfigError::at(file, line, column, message)
    })
}

/// The parser's message without its own rendering of the location and the
/// source snippet, which our `file:line:col:` prefix replaces.
fn plain_message(rendered: &str) -> String {
    let first = rendered
        .lines()
        .next()
        .unwrap_or(rendered)
        .trim()
        .trim_start_matches("error: ");
    let without_at = first.split(" at line ").next().unwrap_or(first);
    // "line 7 column 18: invalid floating point" -> "invalid floating point"
    match without_at.strip_prefix("line ").and_then(|rest| rest.split_once(": ")) {
        Some((position, message)) if position.contains(" column ") => message.to_string(),
        _ => without_at.to_string(),
    }
}
