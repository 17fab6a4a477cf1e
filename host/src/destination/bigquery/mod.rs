//! The three BigQuery destinations: `bigquery` (Parquet on GCS + load jobs),
//! `bigquery_streaming` (insertAll) and `bigquery_streaming_v2` (Storage Write API).
//! See docs/bigquery.md.

mod auth;
pub mod config;
pub mod confined;
mod errors;
mod evolve;
mod identity;
mod jobs;
pub mod load;
mod partitioning;
mod replays;
mod rest;
pub mod schema;
pub mod streaming;
pub mod streaming_v2;
mod tables;
mod target;

use std::sync::Arc;

pub use config::{BigQueryConfig, BigQueryStreamingConfig, BigQueryStreamingV2Config};
/// The REST API's default endpoint (datasets, tables, jobs, insertAll).
pub use tables::DEFAULT_ENDPOINT as REST_ENDPOINT;

use super::{DestinationError, SharedDestination};

pub async fn build_batch(c: &BigQueryConfig) -> Result<SharedDestination, DestinationError> {
    Ok(Arc::new(load::build(c).await?))
}

pub async fn build_streaming(c: &BigQueryStreamingConfig) -> Result<SharedDestination, DestinationError> {
    Ok(Arc::new(streaming::build(c).await?))
}

pub async fn build_streaming_v2(c: &BigQueryStreamingV2Config) -> Result<SharedDestination, DestinationError> {
    Ok(Arc::new(streaming_v2::build(c).await?))
}
