//! Bizon's `streams:` section (Bizon 0.6.4 `common/models.py`): one entry per
//! stream, naming the source's topic and the destination's table and schema.
//! As in Bizon's `inject_config_from_streams`, a Kafka source without
//! `topics` gets one per stream (destination_id = the table_id), and a
//! destination without `record_schemas` gets each stream's schema.

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::config::{ColumnSpec, ConfigError, RecordSchemaConfig};
use crate::source::config::SourceConfig;

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
            use crate::source::kafka::config::TopicConfig;
            if kafka.sync_mode != crate::config::SyncMode::Stream {
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

#[cfg(all(test, feature = "kafka", feature = "bigquery"))]
mod tests {
    use crate::source::config::SourceConfig;
    use crate::source::kafka::config::TopicConfig;

    #[test]
    fn bizons_streams_example_gets_its_topics_and_record_schemas_injected() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/bizon/kafka_streams.example.yml"
        );
        let text = std::fs::read_to_string(path).unwrap();
        let p = crate::pipeline::parse(&text, "kafka_streams.example.yml", |_| None).unwrap();
        let SourceConfig::Kafka(kafka) = &p.source else {
            panic!("a kafka source")
        };
        let topic = |name: &str, table: &str| TopicConfig {
            name: name.into(),
            destination_id: table.into(),
        };
        assert_eq!(
            kafka.topic_map(),
            vec![
                topic("cdc.public.users", "your-gcp-project.your_dataset.users"),
                topic("cdc.public.orders", "your-gcp-project.your_dataset.orders"),
            ]
        );
        let schemas = &p.destination.options().record_schemas;
        assert_eq!(schemas.len(), 2);
        assert_eq!(schemas[1].destination_id, "your-gcp-project.your_dataset.orders");
        assert_eq!(
            schemas[1].clustering_keys,
            Some(vec!["id".to_string(), "user_id".to_string()])
        );
        assert_eq!(schemas[0].record_schema.len(), 10);
        assert!(
            p.warnings.iter().any(|w| w.contains("source.nb_bytes_schema_id")),
            "{:?}",
            p.warnings
        );
        assert!(!p.ignored_sections.contains(&"streams"));
    }
}
