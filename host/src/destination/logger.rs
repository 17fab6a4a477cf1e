//! The `logger` destination: one log line per record with its `source_data`,
//! as Bizon's does. Useful to see what a pipeline would write.

use arrow_array::cast::AsArray;
use arrow_array::Array;
use async_trait::async_trait;

use super::{Batch, Destination, DestinationError};
use crate::config::IgnoredAny2;

crate::destination_config! {
    /// `destination: {name: logger, config: ...}`
    pub struct LoggerConfig {
        /// Accepted as Bizon does; the logger needs none.
        #[serde(default)]
        pub authentication: Option<IgnoredAny2>,
        /// Bizon's logger has this placeholder field; accepted, unused.
        #[serde(default)]
        pub dummy: Option<String>,
    }
}

pub struct LoggerDestination;

impl LoggerDestination {
    pub fn new(_: &LoggerConfig) -> Self {
        LoggerDestination
    }
}

#[async_trait]
impl Destination for LoggerDestination {
    async fn check_connection(&self) -> Result<(), DestinationError> {
        Ok(())
    }

    async fn write(&self, batch: &Batch) -> Result<u64, DestinationError> {
        let records = &batch.records;
        match records.column_by_name(crate::record::SOURCE_DATA) {
            Some(data) => {
                let data = data.as_string::<i32>();
                for row in 0..data.len() {
                    tracing::info!(destination_id = &*batch.destination_id, "{}", data.value(row));
                }
            }
            // Under `unnest` there is no source_data: log the typed row instead.
            None => {
                let mut lines = arrow_json::LineDelimitedWriter::new(Vec::new());
                lines
                    .write(records)
                    .and_then(|_| lines.finish())
                    .map_err(|e| DestinationError::Fatal(format!("cannot render rows as JSON: {e}")))?;
                let text = lines.into_inner();
                for line in String::from_utf8_lossy(&text).lines() {
                    tracing::info!(destination_id = &*batch.destination_id, "{line}");
                }
            }
        }
        Ok(records.num_rows() as u64)
    }

    async fn finalize(&self) -> Result<(), DestinationError> {
        Ok(())
    }
}
