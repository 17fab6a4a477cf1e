//! Bizon 0.6.4's BigQuery options (connectors/destinations/bigquery*/src/config.py),
//! field for field, plus the endpoints that point a destination at an emulator.

use serde::{Deserialize, Deserializer};

pub const DEFAULT_PARTITION_FIELD: &str = "_bizon_loaded_at";
pub const DEFAULT_TABLE_PREFIX: &str = "_bizon_";
pub const DEFAULT_MAX_ROWS_PER_REQUEST: usize = 5000;
/// Bizon's pydantic bound on `bq_max_rows_per_request`.
pub const MAX_ROWS_PER_REQUEST: usize = 10_000;

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Authentication {
    /// The service account key as JSON text; empty means application default credentials.
    #[serde(default)]
    pub service_account_key: String,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum PartitionWindow {
    #[default]
    Day,
    Hour,
    Month,
    Year,
}

impl PartitionWindow {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Day => "DAY",
            Self::Hour => "HOUR",
            Self::Month => "MONTH",
            Self::Year => "YEAR",
        }
    }
}

/// `time_partitioning: {type, field}` or a bare `DAY`. Whether `field` was
/// written matters: under `unnest` Bizon drops an unwritten default field.
#[derive(Debug, Clone, PartialEq)]
pub struct TimePartitioning {
    pub window: PartitionWindow,
    /// `None`: ingestion-time partitioning.
    pub field: Option<String>,
    pub field_written: bool,
}

impl Default for TimePartitioning {
    fn default() -> Self {
        Self {
            window: PartitionWindow::Day,
            field: Some(DEFAULT_PARTITION_FIELD.into()),
            field_written: false,
        }
    }
}

impl<'de> Deserialize<'de> for TimePartitioning {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Full {
            #[serde(rename = "type", default)]
            window: PartitionWindow,
            #[serde(default, deserialize_with = "written")]
            field: Option<Option<String>>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bare(PartitionWindow),
            Full(Full),
        }
        Ok(match Raw::deserialize(d)? {
            Raw::Bare(window) => TimePartitioning {
                window,
                ..Default::default()
            },
            Raw::Full(Full { window, field: None }) => TimePartitioning {
                window,
                ..Default::default()
            },
            Raw::Full(Full {
                window,
                field: Some(field),
            }) => TimePartitioning {
                window,
                field,
                field_written: true,
            },
        })
    }
}

/// Tells a `field: null` (Some(None)) from an absent field (None).
fn written<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

fn default_time_partitioning() -> Option<TimePartitioning> {
    Some(TimePartitioning::default())
}
fn default_location() -> String {
    "US".into()
}
fn default_table_prefix() -> String {
    DEFAULT_TABLE_PREFIX.into()
}
fn default_max_rows() -> usize {
    DEFAULT_MAX_ROWS_PER_REQUEST
}
fn default_files_per_job() -> usize {
    10
}
fn default_in_flight_jobs() -> usize {
    3
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum GcsBufferFormat {
    #[default]
    Parquet,
    /// Accepted because Bizon's schema accepts it; like Bizon, refused at build.
    Csv,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WriteMode {
    /// The `_default` stream: at-least-once, the cheapest.
    #[default]
    Default,
    /// A committed stream per destination_id with offsets: a retried append
    /// is never written twice.
    ExactlyOnce,
}

/// How `bigquery_streaming_v2` holds its AppendRows connections.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AppendConnections {
    /// One long-lived connection per table, `write_stream` on its first
    /// request only: what BigQuery expects.
    PerTable,
    /// A connection per append, `write_stream` on every one: what
    /// bqemulator 1.4 needs.
    PerAppend,
}

crate::destination_config! {
    /// `destination: {name: bigquery, config: ...}`
    pub struct BigQueryConfig {
        pub project_id: String,
        pub dataset_id: String,
        #[serde(default = "default_location")]
        pub dataset_location: String,
        #[serde(default)]
        pub create_dataset: bool,
        pub gcs_buffer_bucket: String,
        #[serde(default)]
        pub gcs_buffer_format: GcsBufferFormat,
        #[serde(default = "default_time_partitioning")]
        pub time_partitioning: Option<TimePartitioning>,
        #[serde(default)]
        pub enforce_partitioning: bool,
        #[serde(default)]
        pub async_load: bool,
        #[serde(default = "default_files_per_job")]
        pub load_files_per_job: usize,
        #[serde(default = "default_in_flight_jobs")]
        pub load_max_in_flight_jobs: usize,
        #[serde(default = "default_table_prefix")]
        pub table_prefix: String,
        #[serde(default)]
        pub authentication: Option<Authentication>,
        /// REST base URL (default `https://bigquery.googleapis.com`).
        #[serde(default)]
        pub endpoint: Option<String>,
        /// GCS base URL; else `STORAGE_EMULATOR_HOST`, else Google's.
        #[serde(default)]
        pub gcs_endpoint: Option<String>,
    }
}

crate::destination_config! {
    /// `destination: {name: bigquery_streaming, config: ...}`
    pub struct BigQueryStreamingConfig {
        pub project_id: String,
        pub dataset_id: String,
        #[serde(default = "default_location")]
        pub dataset_location: String,
        #[serde(default = "default_time_partitioning")]
        pub time_partitioning: Option<TimePartitioning>,
        #[serde(default)]
        pub authentication: Option<Authentication>,
        #[serde(default = "default_max_rows")]
        pub bq_max_rows_per_request: usize,
        #[serde(default = "default_table_prefix")]
        pub table_prefix: String,
        #[serde(default)]
        pub endpoint: Option<String>,
    }
}

crate::destination_config! {
    /// `destination: {name: bigquery_streaming_v2, config: ...}`
    pub struct BigQueryStreamingV2Config {
        pub project_id: String,
        pub dataset_id: String,
        #[serde(default = "default_location")]
        pub dataset_location: String,
        #[serde(default = "default_time_partitioning")]
        pub time_partitioning: Option<TimePartitioning>,
        #[serde(default)]
        pub enforce_partitioning: bool,
        #[serde(default)]
        pub authentication: Option<Authentication>,
        #[serde(default = "default_max_rows")]
        pub bq_max_rows_per_request: usize,
        #[serde(default = "default_table_prefix")]
        pub table_prefix: String,
        /// REST base URL, for datasets and tables.
        #[serde(default)]
        pub endpoint: Option<String>,
        /// Storage Write gRPC URL (default `https://bigquerystorage.googleapis.com`).
        #[serde(default)]
        pub storage_write_endpoint: Option<String>,
        #[serde(default)]
        pub write_mode: WriteMode,
        /// Default: `per_append` for a plain `http://` storage_write_endpoint
        /// (an emulator; BigQuery is https only), else `per_table`.
        #[serde(default)]
        pub append_connections: Option<AppendConnections>,
    }
}
