//! Where batches go. Every destination, native or WebAssembly, implements
//! [`Destination`], shaped like Bizon's contract: check the connection, write
//! a batch, finalize. This file is the one registration of destinations:
//! `destination.name` -> its typed config ([`parse`]) -> a running
//! destination ([`build`]); each destination's config struct lives beside it.

#[cfg(feature = "bigquery")]
pub mod bigquery;
pub mod confined;
pub mod file;
pub mod logger;
pub mod retry;
#[cfg(feature = "wasm")]
pub mod wasm;

use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;
use async_trait::async_trait;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::config::{from_yaml, ConfigError, DestinationOptions};
use file::FileConfig;
use logger::LoggerConfig;

/// The destination section, typed by its `name`.
#[derive(Debug, Clone)]
pub enum DestinationConfig {
    File(FileConfig),
    Logger(LoggerConfig),
    #[cfg(feature = "wasm")]
    Wasm(wasm::WasmConfig),
    #[cfg(feature = "bigquery")]
    BigQuery(bigquery::BigQueryConfig),
    #[cfg(feature = "bigquery")]
    BigQueryStreaming(bigquery::BigQueryStreamingConfig),
    #[cfg(feature = "bigquery")]
    BigQueryStreamingV2(bigquery::BigQueryStreamingV2Config),
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

/// A pipeline file's `destination` section with its config typed as `D`;
/// the other sections are skipped here (`pipeline::spec` checks the file).
#[derive(Deserialize)]
struct InFile<D> {
    destination: Section<D>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Section<D> {
    #[serde(rename = "name")]
    _name: IgnoredAny,
    /// Bizon's tracking name (`bigquery` for `bigquery_streaming`); unused here.
    #[serde(default, rename = "alias")]
    _alias: Option<IgnoredAny>,
    /// Declared by Bizon's `bigquery` destination (default 400) and never read:
    /// its buffer takes `config.buffer_size`. Accepted so its files parse.
    #[serde(default, rename = "buffer_size")]
    _buffer_size: Option<IgnoredAny>,
    config: Option<D>,
}

/// Parses the destination section of pipeline `text` as the destination
/// `name` (read by the caller, with its place) calls for.
pub fn parse(text: &str, file: &str, name: &Spanned<String>) -> Result<DestinationConfig, ConfigError> {
    // A destination whose options all have defaults may leave `config` out.
    fn typed<D: DeserializeOwned>(text: &str, file: &str, name: &Spanned<String>) -> Result<D, ConfigError> {
        let parsed: InFile<D> = from_yaml(text, file)?;
        match parsed.destination.config {
            Some(config) => Ok(config),
            None => from_yaml::<D>("{}", file)
                .map_err(|e| ConfigError::spanned(file, name, format!("destination.config is missing: {}", e.message))),
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

/// One flushed buffer on its way to a destination.
#[derive(Debug, Clone)]
pub struct Batch {
    pub destination_id: Arc<str>,
    /// Position among the batches of this destination_id, from 0. A retry
    /// sends the same sequence again, so a destination can de-duplicate.
    pub sequence: u64,
    pub records: RecordBatch,
    /// Where the rows were read (Kafka: per partition, the first and last
    /// offset the batch's pages took); empty for sources without positions.
    /// A plugin gets it with a batch id derived from it (`wasm`).
    pub source: Vec<crate::source::Span>,
}

/// A row a destination refused, by its index in the batch.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedRow {
    pub row: u64,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DestinationError {
    /// Worth trying again: a timeout, a 5xx, a busy service.
    #[error("{0}")]
    Retryable(String),
    /// Worth trying again once `after` has passed: the service said when
    /// (HTTP `Retry-After` on a 429 or 503).
    #[error("{message}")]
    RetryAfter { message: String, after: Duration },
    /// Trying again will not help: bad credentials, a missing table, a bug.
    #[error("{0}")]
    Fatal(String),
    /// Nothing can be written until something outside the run changes (a
    /// full disk gets room): tried again every `every` for as long as it
    /// takes, without using up the retry policy's attempts; a stop ends it.
    #[error("{message}")]
    Blocked { message: String, every: Duration },
    /// These rows were refused; the others were written.
    #[error("{} row(s) rejected; first: row {}: {}", .0.len(), .0.first().map_or(0, |r| r.row), .0.first().map_or("", |r| r.reason.as_str()))]
    Rejected(Vec<RejectedRow>),
}

impl DestinationError {
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            DestinationError::Retryable(_) | DestinationError::RetryAfter { .. } | DestinationError::Blocked { .. }
        )
    }

    /// How long the service asked to be left alone, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            DestinationError::RetryAfter { after, .. } => Some(*after),
            _ => None,
        }
    }
}

#[async_trait]
pub trait Destination: Send + Sync {
    /// Checks that writes can succeed (credentials, permissions, a directory).
    async fn check_connection(&self) -> Result<(), DestinationError>;

    /// Writes one batch and returns the number of rows written. Batches of one
    /// destination_id arrive in sequence order, one at a time; batches of
    /// different destination_ids may arrive concurrently.
    async fn write(&self, batch: &Batch) -> Result<u64, DestinationError>;

    /// Called once after the last batch of every destination_id was written.
    async fn finalize(&self) -> Result<(), DestinationError>;

    /// Where the destination stands for `destination_id` after its last
    /// completed write (or its finalize): a file's length, a stream and its
    /// offset. The source records it in the same commit as the offsets that
    /// produced those writes, and hands it back to [`resume`](Self::resume)
    /// after a restart. `None`: nothing to record (the destination makes
    /// its writes idempotent otherwise, or cannot).
    fn position(&self, _destination_id: &str) -> Option<String> {
        None
    }

    /// Before any write: the positions recorded with the source's last
    /// commit, so that what was written after it (and will be read again)
    /// is not written twice. A destination takes the ones that are its own
    /// (its file, its stream) and ignores the rest.
    async fn resume(&self, _positions: &crate::source::Positions) -> Result<(), DestinationError> {
        Ok(())
    }

    /// Records written before a crash and after the last commit, found at
    /// the restart (cut from a file, already in a stream) and so written
    /// once rather than twice.
    fn replayed(&self) -> u64 {
        0
    }
}

pub type SharedDestination = Arc<dyn Destination>;

/// What the host decides for a run's destination, never what the pipeline
/// file asks for: `bizon-host run` takes [`Host::default`], `serve` a
/// tenant's.
#[derive(Clone)]
pub struct Host {
    /// A wasm destination's compile cache, memory budget, CPU share and label.
    #[cfg(feature = "wasm")]
    pub plugins: crate::plugin::HostPolicy,
    /// For a `serve` tenant: what confines a native destination to what is
    /// the tenant's (egress, secrets, files, CPU and memory shares).
    pub confined: Option<confined::Confined>,
}

impl Default for Host {
    fn default() -> Self {
        Self {
            #[cfg(feature = "wasm")]
            plugins: crate::plugin::HostPolicy::for_run(),
            confined: None,
        }
    }
}

/// Builds the destination a pipeline's config names, under `host`. Building
/// does no I/O that can fail for passing reasons; `check_connection` does that.
pub async fn build(config: &DestinationConfig, host: &Host) -> Result<SharedDestination, DestinationError> {
    if let Some(confined) = &host.confined {
        return build_confined(config, host, confined).await;
    }
    Ok(match config {
        DestinationConfig::File(c) => Arc::new(file::FileDestination::new(c)?),
        DestinationConfig::Logger(c) => Arc::new(logger::LoggerDestination::new(c)),
        #[cfg(feature = "wasm")]
        DestinationConfig::Wasm(c) => wasm::build(c, &host.plugins).await?,
        #[cfg(feature = "bigquery")]
        DestinationConfig::BigQuery(c) => {
            bigquery::confined::unconfined(c.authentication.as_ref())?;
            bigquery::build_batch(c).await?
        }
        #[cfg(feature = "bigquery")]
        DestinationConfig::BigQueryStreaming(c) => {
            bigquery::confined::unconfined(c.authentication.as_ref())?;
            bigquery::build_streaming(c).await?
        }
        #[cfg(feature = "bigquery")]
        DestinationConfig::BigQueryStreamingV2(c) => {
            bigquery::confined::unconfined(c.authentication.as_ref())?;
            bigquery::build_streaming_v2(c).await?
        }
    })
}

/// A tenant's destination: a plugin under its policy, a native one
/// confined ([`confined`]).
async fn build_confined(
    config: &DestinationConfig,
    host: &Host,
    t: &confined::Confined,
) -> Result<SharedDestination, DestinationError> {
    let _ = host;
    Ok(match config {
        DestinationConfig::File(c) => confined::Charged::wrap(confined::file(c, t)?, t, Vec::new()),
        DestinationConfig::Logger(c) => {
            confined::Charged::wrap(Arc::new(logger::LoggerDestination::new(c)), t, Vec::new())
        }
        // Its calls are charged inside the plugin runtime already.
        #[cfg(feature = "wasm")]
        DestinationConfig::Wasm(c) => wasm::build(c, &host.plugins).await?,
        #[cfg(feature = "bigquery")]
        DestinationConfig::BigQuery(c) => bigquery::confined::build_batch(c, t).await?,
        #[cfg(feature = "bigquery")]
        DestinationConfig::BigQueryStreaming(c) => bigquery::confined::build_streaming(c, t).await?,
        #[cfg(feature = "bigquery")]
        DestinationConfig::BigQueryStreamingV2(c) => bigquery::confined::build_streaming_v2(c, t).await?,
    })
}
