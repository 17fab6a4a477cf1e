//! `kafka-flatten`: a transform for Kafka pipelines. A Kafka record's
//! source_data is Bizon's wrapper `{topic, offset, partition, timestamp,
//! keys, headers, value, schema}`; this makes it `{**value, __kafka_offset,
//! __kafka_partition, __kafka_topic, __kafka_timestamp}`, so that `unnest`
//! with a record_schema of the value's fields writes typed columns. The
//! Python equivalent is
//! `data = {**data['value'], '__kafka_offset': data['offset'], ...}`.
//!
//! Config (all optional): `prefix` ("__kafka_"), `fields` (the wrapper's keys
//! copied next to the value's: offset, partition, topic, timestamp by
//! default; keys and headers may be added), `tombstones` ("drop" or "error":
//! a message with a null value).

use bizon_sdk::serde_json::{Map, Value};
use bizon_sdk::{export_transform, Config, Error, Record, Transform};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Settings {
    prefix: String,
    fields: Vec<String>,
    tombstones: Tombstones,
}

#[derive(Deserialize, Default, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Tombstones {
    Drop,
    #[default]
    Error,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            prefix: "__kafka_".into(),
            fields: ["offset", "partition", "topic", "timestamp"].map(String::from).to_vec(),
            tombstones: Tombstones::Error,
        }
    }
}

const WRAPPER: &[&str] = &["topic", "offset", "partition", "timestamp", "keys", "headers", "schema"];

struct Flatten {
    /// (wrapper key, output key), in output order.
    copies: Vec<(String, String)>,
    drop_tombstones: bool,
}

impl Transform for Flatten {
    const NAME: &'static str = "kafka-flatten";

    fn open(config: Config) -> Result<Self, Error> {
        let settings: Settings = config.parse()?;
        if let Some(unknown) = settings.fields.iter().find(|f| !WRAPPER.contains(&f.as_str())) {
            return Err(Error::msg(format!(
                "fields: `{unknown}` is not a key of Bizon's Kafka record; expected some of {}",
                WRAPPER.join(", ")
            )));
        }
        Ok(Flatten {
            copies: settings
                .fields
                .iter()
                .map(|f| (f.clone(), format!("{}{f}", settings.prefix)))
                .collect(),
            drop_tombstones: settings.tombstones == Tombstones::Drop,
        })
    }

    fn transform(&mut self, mut record: Record, out: &mut Vec<Record>) -> Result<(), Error> {
        let Value::Object(mut wrapper) = record.data else {
            return Err(Error::msg(
                "source_data is not Bizon's Kafka record (an object with `value`)",
            ));
        };
        let mut flat: Map<String, Value> = match wrapper.remove("value") {
            Some(Value::Object(value)) => value,
            Some(Value::Null) if self.drop_tombstones => return Ok(()),
            Some(Value::Null) => {
                return Err(Error::msg(
                    "the message has no value (a tombstone); set `tombstones: drop` to drop such messages",
                ))
            }
            Some(other) => {
                return Err(Error::msg(format!(
                    "the message value is not a JSON object but {}",
                    kind(&other)
                )))
            }
            None => return Err(Error::msg("source_data has no `value`: not Bizon's Kafka record")),
        };
        for (from, to) in &self.copies {
            flat.insert(to.clone(), wrapper.remove(from).unwrap_or(Value::Null));
        }
        record.data = Value::Object(flat);
        out.push(record);
        Ok(())
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

export_transform!(Flatten);
