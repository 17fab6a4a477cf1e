//! The leaf every room reads its configuration with: YAML loading that
//! names the file, line, column and field path of every error, environment
//! substitution, and the pieces more than one room shares: the options every
//! destination has ([`DestinationOptions`], [`RetryPolicy`]), [`SyncMode`]
//! and the `record_schemas` types. It imports no other room; what a source,
//! a destination or a whole pipeline file holds is parsed by that room with
//! [`from_yaml`] (`source::config`, `destination`, `pipeline::spec`).

mod common;
pub mod env;
mod retry;
mod schema;
pub mod secret;
mod sync_mode;

use std::fmt;

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Deserialize;
use serde_saphyr::Spanned;

pub use common::DestinationOptions;
pub use retry::RetryPolicy;
pub use schema::{BigQueryType, ColumnMode, ColumnSpec, RecordSchemaConfig};
pub use sync_mode::{SourceRun, SyncMode};

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

    pub fn spanned<T>(file: &str, span: &Spanned<T>, message: impl Into<String>) -> Self {
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

/// Bizon's page size, where a source has one: records handed over at once.
pub fn default_page_size() -> usize {
    1000
}

/// A value of any shape, accepted and ignored (with `PartialEq` and `Clone`
/// for configs, which serde's `IgnoredAny` lacks): Bizon's keys that
/// bizon-host reads but does not act on.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(from = "IgnoredAny")]
pub struct IgnoredAny2;

impl From<IgnoredAny> for IgnoredAny2 {
    fn from(_: IgnoredAny) -> Self {
        IgnoredAny2
    }
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
