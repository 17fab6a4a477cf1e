//! The three BigQuery destinations: `bigquery` (Parquet on GCS + load jobs),
//! `bigquery_streaming` (insertAll) and `bigquery_streaming_v2` (Storage Write API).
//! See docs/bigquery.md.

mod auth;
pub mod config;
mod errors;
pub mod schema;
pub mod streaming_v2;
mod tables;
mod target;

use std::sync::Arc;

pub use config::{BigQueryConfig, BigQueryStreamingConfig, BigQueryStreamingV2Config};

use super::{DestinationError, SharedDestination};

pub async fn build_batch(_: &BigQueryConfig) -> Result<SharedDestination, DestinationError> {
    Err(DestinationError::Fatal("bigquery is not built yet".into()))
}

pub async fn build_streaming(_: &BigQueryStreamingConfig) -> Result<SharedDestination, DestinationError> {
    Err(DestinationError::Fatal("bigquery_streaming is not built yet".into()))
}

pub async fn build_streaming_v2(c: &BigQueryStreamingV2Config) -> Result<SharedDestination, DestinationError> {
    Ok(Arc::new(streaming_v2::build(c).await?))
}
