//! Options every destination accepts, with Bizon's defaults.

use std::time::Duration;

use super::{ConfigError, RecordSchemaConfig, RetryPolicy, SyncMode};

/// Bizon's defaults.
pub const DEFAULT_BUFFER_SIZE_MB: f64 = 50.0;
pub const DEFAULT_BUFFER_FLUSH_TIMEOUT_S: u64 = 600;
pub const DEFAULT_MAX_CONCURRENT_THREADS: usize = 10;

/// The options every destination has, as Bizon 0.6.4 reads them from a
/// destination's `config` (buffer, retries, destination id, record schemas).
#[derive(Debug, Clone, PartialEq)]
pub struct DestinationOptions {
    /// Flush a destination_id's buffer once it holds this many megabytes;
    /// 0 writes every incoming page at once.
    pub buffer_size_mb: f64,
    /// Flush a buffer this long after its first record arrived.
    pub buffer_flush_timeout: Duration,
    /// Writes in flight at once, across destination_ids.
    pub max_concurrent_threads: usize,
    pub unnest: bool,
    pub record_schemas: Vec<RecordSchemaConfig>,
    /// Where records go when their source does not say.
    pub destination_id: Option<String>,
    pub retry: RetryPolicy,
    /// Where `unnest` was written, for errors about it.
    pub unnest_at: (usize, usize),
    /// The source's `sync_mode`: replace, append or stream (file, bigquery, streaming_v2).
    pub sync_mode: SyncMode,
    /// `<source>_<stream>` when `destination_id` is not set: Bizon's
    /// auto-generated table name, which `table_prefix` applies to.
    pub generated_destination_id: Option<String>,
    /// The records' source_record_id and source_data name the same message
    /// when it is read again (Kafka: topic, partition, offset), so writes can
    /// be made idempotent across runs.
    pub source_identity: bool,
}

impl Default for DestinationOptions {
    fn default() -> Self {
        Self {
            buffer_size_mb: DEFAULT_BUFFER_SIZE_MB,
            buffer_flush_timeout: Duration::from_secs(DEFAULT_BUFFER_FLUSH_TIMEOUT_S),
            max_concurrent_threads: DEFAULT_MAX_CONCURRENT_THREADS,
            unnest: false,
            record_schemas: Vec::new(),
            destination_id: None,
            retry: RetryPolicy::default(),
            unnest_at: (0, 0),
            sync_mode: SyncMode::FullRefresh,
            generated_destination_id: None,
            source_identity: false,
        }
    }
}

impl DestinationOptions {
    /// Buffer capacity in bytes; 0 means write each page at once.
    pub fn buffer_bytes(&self) -> usize {
        (self.buffer_size_mb * 1024.0 * 1024.0) as usize
    }

    /// Where records go when their source does not name a destination_id:
    /// `destination_id`, else Bizon's auto-generated `<source>_<stream>`
    /// (set when the pipeline file is parsed).
    pub fn default_destination_id(&self) -> &str {
        self.destination_id
            .as_deref()
            .or(self.generated_destination_id.as_deref())
            .unwrap_or_default()
    }

    pub fn record_schema(&self, destination_id: &str) -> Option<&RecordSchemaConfig> {
        self.record_schemas.iter().find(|s| s.destination_id == destination_id)
    }

    /// Checks what one field alone cannot: the errors point at `unnest`.
    pub fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let (line, column) = self.unnest_at;
        let at = |message: String| ConfigError::at(file, line, column, message);
        if !self.unnest {
            return Ok(());
        }
        if self.record_schemas.is_empty() {
            return Err(at("destination.config.unnest: `unnest: true` needs `record_schemas` \
                           (the columns to decode source_data into)"
                .into()));
        }
        if let Some(id) = &self.destination_id {
            if self.record_schema(id).is_none() {
                return Err(at(format!(
                    "destination.config.unnest: no record_schemas entry for the destination_id `{id}`"
                )));
            }
        }
        Ok(())
    }
}

/// Declares a destination's config struct: its own fields plus the common
/// options, with unknown keys refused. Serde cannot combine `flatten` with
/// `deny_unknown_fields`, hence a macro that writes the fields out.
///
/// Field attributes are serde attributes and apply to deserialization.
#[macro_export]
macro_rules! destination_config {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* pub $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone)]
        pub struct $name {
            pub options: $crate::config::DestinationOptions,
            $( pub $field: $ty, )*
        }

        const _: () = {
            use $crate::config::DestinationOptions;
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Raw {
                #[serde(default)]
                buffer_size: Option<f64>,
                #[serde(default)]
                buffer_flush_timeout: Option<u64>,
                #[serde(default)]
                max_concurrent_threads: Option<usize>,
                #[serde(default)]
                unnest: Option<serde_saphyr::Spanned<bool>>,
                #[serde(default)]
                record_schemas: Option<Vec<$crate::config::RecordSchemaConfig>>,
                #[serde(default)]
                destination_id: Option<String>,
                #[serde(default)]
                retry: Option<$crate::config::RetryPolicy>,
                $( $(#[$fmeta])* $field: $ty, )*
            }

            impl<'de> serde::Deserialize<'de> for $name {
                fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                    use serde::de::Error;
                    let raw = Raw::deserialize(d)?;
                    let defaults = DestinationOptions::default();
                    let buffer_size_mb = raw.buffer_size.unwrap_or(defaults.buffer_size_mb);
                    if buffer_size_mb.is_nan() || buffer_size_mb < 0.0 {
                        return Err(D::Error::custom("buffer_size must be 0 or more megabytes"));
                    }
                    let threads = raw.max_concurrent_threads.unwrap_or(defaults.max_concurrent_threads);
                    if threads == 0 {
                        return Err(D::Error::custom("max_concurrent_threads must be at least 1"));
                    }
                    let retry = raw.retry.unwrap_or(defaults.retry);
                    if retry.max_attempts == 0 {
                        return Err(D::Error::custom("retry.max_attempts must be at least 1"));
                    }
                    let (unnest, unnest_at) = match raw.unnest {
                        Some(s) => (s.value, (s.referenced.line() as usize, s.referenced.column() as usize)),
                        None => (false, (0, 0)),
                    };
                    Ok($name {
                        options: DestinationOptions {
                            buffer_size_mb,
                            buffer_flush_timeout: std::time::Duration::from_secs(
                                raw.buffer_flush_timeout.unwrap_or(defaults.buffer_flush_timeout.as_secs()),
                            ),
                            max_concurrent_threads: threads,
                            unnest,
                            record_schemas: raw.record_schemas.unwrap_or_default(),
                            destination_id: raw.destination_id,
                            retry,
                            unnest_at,
                            sync_mode: Default::default(),
                            generated_destination_id: None,
                            source_identity: false,
                        },
                        $( $field: raw.$field, )*
                    })
                }
            }
        };
    };
}
