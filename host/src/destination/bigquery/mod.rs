//! The three BigQuery destinations. PLACEHOLDER until they land.

use super::{DestinationError, SharedDestination};

crate::destination_config! {
    /// `destination: {name: bigquery, config: ...}`
    pub struct BigQueryConfig {
        pub project_id: String,
        pub dataset_id: String,
    }
}

crate::destination_config! {
    /// `destination: {name: bigquery_streaming, config: ...}`
    pub struct BigQueryStreamingConfig {
        pub project_id: String,
        pub dataset_id: String,
    }
}

crate::destination_config! {
    /// `destination: {name: bigquery_streaming_v2, config: ...}`
    pub struct BigQueryStreamingV2Config {
        pub project_id: String,
        pub dataset_id: String,
    }
}

pub async fn build_batch(_: &BigQueryConfig) -> Result<SharedDestination, DestinationError> {
    Err(DestinationError::Fatal("bigquery is not built yet".into()))
}

pub async fn build_streaming(_: &BigQueryStreamingConfig) -> Result<SharedDestination, DestinationError> {
    Err(DestinationError::Fatal("bigquery_streaming is not built yet".into()))
}

pub async fn build_streaming_v2(_: &BigQueryStreamingV2Config) -> Result<SharedDestination, DestinationError> {
    Err(DestinationError::Fatal("bigquery_streaming_v2 is not built yet".into()))
}
