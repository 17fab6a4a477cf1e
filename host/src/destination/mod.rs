//! Where batches go. Every destination, native or WebAssembly, implements
//! [`Destination`], shaped like Bizon's contract: check the connection, write
//! a batch, finalize.

#[cfg(feature = "bigquery")]
pub mod bigquery;
pub mod file;
pub mod logger;
pub mod retry;
#[cfg(feature = "wasm")]
pub mod wasm;

use std::sync::Arc;

use arrow_array::RecordBatch;
use async_trait::async_trait;

use crate::config::DestinationConfig;

/// One flushed buffer on its way to a destination.
#[derive(Debug, Clone)]
pub struct Batch {
    pub destination_id: Arc<str>,
    /// Position among the batches of this destination_id, from 0. A retry
    /// sends the same sequence again, so a destination can de-duplicate.
    pub sequence: u64,
    pub records: RecordBatch,
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
    /// Trying again will not help: bad credentials, a missing table, a bug.
    #[error("{0}")]
    Fatal(String),
    /// These rows were refused; the others were written.
    #[error("{} row(s) rejected; first: row {}: {}", .0.len(), .0.first().map_or(0, |r| r.row), .0.first().map_or("", |r| r.reason.as_str()))]
    Rejected(Vec<RejectedRow>),
}

impl DestinationError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, DestinationError::Retryable(_))
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
}

pub type SharedDestination = Arc<dyn Destination>;

/// Builds the destination a pipeline's config names. Building does no I/O
/// that can fail for passing reasons; `check_connection` does that.
pub async fn build(config: &DestinationConfig) -> Result<SharedDestination, DestinationError> {
    Ok(match config {
        DestinationConfig::File(c) => Arc::new(file::FileDestination::new(c)?),
        DestinationConfig::Logger(c) => Arc::new(logger::LoggerDestination::new(c)),
        #[cfg(feature = "wasm")]
        DestinationConfig::Wasm(c) => wasm::build(c).await?,
        #[cfg(feature = "bigquery")]
        DestinationConfig::BigQuery(c) => bigquery::build_batch(c).await?,
        #[cfg(feature = "bigquery")]
        DestinationConfig::BigQueryStreaming(c) => bigquery::build_streaming(c).await?,
        #[cfg(feature = "bigquery")]
        DestinationConfig::BigQueryStreamingV2(c) => bigquery::build_streaming_v2(c).await?,
    })
}
