//! Bizon's `streams:` section (Bizon 0.6.4 `common/models.py`): one entry per
//! stream, naming the source's topic and the destination's table and schema.
//! As in Bizon's `inject_config_from_streams`, a Kafka source without
//! `topics` gets one per stream (destination_id = the table_id), and a
//! destination without `record_schemas` gets each stream's schema.

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{ColumnSpec, ConfigError, RecordSchemaConfig, SourceConfig};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    pub name: Spanned<String>,
    pub source: StreamSource,
    pub destination: StreamDestination,
}

/// Source routing; other keys (Bizon allows any) are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct StreamSource {
    #[serde(default)]
    pub topic: Option<String>,
}

/// Bizon allows extra keys here too; they are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct StreamDestination {
    pub table_id: Spanned<String>,
    #[serde(default)]
    pub record_schema: Option<Vec<ColumnSpec>>,
    #[serde(default)]
    pub clustering_keys: Option<Vec<String>>,
}

/// Checks the streams as Bizon does and injects them into the source and
/// destination configs.
pub fn apply(
    streams: &[StreamConfig],
    file: &str,
    source: &mut SourceConfig,
    record_schemas: &mut Vec<RecordSchemaConfig>,
) -> Result<(), ConfigError> {
    for (i, stream) in streams.iter().enumerate() {
        if streams[..i].iter().any(|s| s.name.value == stream.name.value) {
            return Err(ConfigError::spanned(
                file,
                &stream.name,
                format!("streams: duplicate stream name `{}`", stream.name.value),
            ));
        }
        let table = &stream.destination.table_id;
        if streams[..i].iter().any(|s| s.destination.table_id.value == table.value) {
            return Err(ConfigError::spanned(
                file,
                table,
                format!("streams: duplicate table_id `{}`", table.value),
            ));
        }
        if table.value.split('.').count() != 3 {
            return Err(ConfigError::spanned(
                file,
                table,
                format!(
                    "streams.destination.table_id: must be `project.dataset.table`, got `{}`",
                    table.value
                ),
            ));
        }
    }
    match source {
        #[cfg(feature = "kafka")]
        SourceConfig::Kafka(kafka) => {
            use crate::source::kafka::config::{SyncMode, TopicConfig};
            if kafka.sync_mode != SyncMode::Stream {
                let first = &streams.first().expect("streams is not empty").name;
                return Err(ConfigError::spanned(
                    file,
                    first,
                    "streams: the `streams` section requires source.sync_mode: stream (as in Bizon)",
                ));
            }
            if kafka.topics.is_empty() {
                kafka.topics = streams
                    .iter()
                    .filter_map(|s| {
                        s.source.topic.as_ref().map(|topic| TopicConfig {
                            name: topic.clone(),
                            destination_id: s.destination.table_id.value.clone(),
                        })
                    })
                    .collect();
            }
        }
        _ => {}
    }
    if record_schemas.is_empty() {
        *record_schemas = streams
            .iter()
            .filter_map(|s| {
                s.destination.record_schema.as_ref().map(|schema| RecordSchemaConfig {
                    destination_id: s.destination.table_id.value.clone(),
                    record_schema: schema.clone(),
                    clustering_keys: s.destination.clustering_keys.clone(),
                })
            })
            .collect();
    }
    Ok(())
}
