//! `kafka-flatten`: a transform for Kafka pipelines. A Kafka record's
//! source_data is Bizon's wrapper `{topic, offset, partition, timestamp,
//! keys, headers, value, schema}`; this makes it `{**value, __kafka_offset,
//! __kafka_partition, __kafka_topic, __kafka_timestamp}`, so that `unnest`
//! with a record_schema of the value's fields writes typed columns. The
//! Python equivalent is
//! `data = {**data['value'], '__kafka_offset': data['offset'], ...}`.
//!
//! The value's JSON text is kept as it is (its keys in their order) and the
//! wrapper's fields are spliced in after them: nothing is parsed into a tree.
//!
//! Config (all optional): `prefix` ("__kafka_"), `fields` (the wrapper's keys
//! copied next to the value's: offset, partition, topic, timestamp by
//! default; keys, headers and schema may be added), `tombstones` ("drop" or
//! "error": a message with a null value).

use bizon_sdk::serde_json;
use bizon_sdk::{export_transform, json, Config, Error, Record, Transform};
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

/// Bizon's Kafka record, its fields left as JSON text.
#[derive(Default)]
struct Wrapper<'a> {
    /// `Some("null")` for a tombstone, `None` when there is no `value`.
    value: Option<&'a str>,
    topic: Option<&'a str>,
    offset: Option<&'a str>,
    partition: Option<&'a str>,
    timestamp: Option<&'a str>,
    keys: Option<&'a str>,
    headers: Option<&'a str>,
    schema: Option<&'a str>,
}

impl<'a> Wrapper<'a> {
    /// The record's members found by position, not parsed (`bizon_sdk::json`):
    /// the host has checked the text is JSON, and checks what comes back.
    fn read(text: &'a str) -> Result<Self, Error> {
        let mut wrapper = Wrapper::default();
        for member in json::members(text) {
            let (key, value) = member?;
            let slot = match key.as_ref() {
                "value" => &mut wrapper.value,
                "topic" => &mut wrapper.topic,
                "offset" => &mut wrapper.offset,
                "partition" => &mut wrapper.partition,
                "timestamp" => &mut wrapper.timestamp,
                "keys" => &mut wrapper.keys,
                "headers" => &mut wrapper.headers,
                "schema" => &mut wrapper.schema,
                _ => continue,
            };
            *slot = Some(value);
        }
        Ok(wrapper)
    }

    fn field(&self, name: &str) -> Option<&'a str> {
        match name {
            "topic" => self.topic,
            "offset" => self.offset,
            "partition" => self.partition,
            "timestamp" => self.timestamp,
            "keys" => self.keys,
            "headers" => self.headers,
            "schema" => self.schema,
            _ => None,
        }
    }
}

const WRAPPER: &[&str] = &["topic", "offset", "partition", "timestamp", "keys", "headers", "schema"];

struct Flatten {
    /// (wrapper key, the output key as JSON text), in output order.
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
        let copies = settings
            .fields
            .iter()
            .map(|f| Ok((f.clone(), serde_json::to_string(&format!("{}{f}", settings.prefix))?)))
            .collect::<Result<_, Error>>()?;
        Ok(Flatten {
            copies,
            drop_tombstones: settings.tombstones == Tombstones::Drop,
        })
    }

    fn transform(&mut self, mut record: Record, out: &mut Vec<Record>) -> Result<(), Error> {
        let wrapper = Wrapper::read(record.json())
            .map_err(|_| Error::msg("source_data is not Bizon's Kafka record (an object with `value`)"))?;
        let value = match wrapper.value {
            None => return Err(Error::msg("source_data has no `value`: not Bizon's Kafka record")),
            Some("null") if self.drop_tombstones => return Ok(()),
            Some("null") => {
                return Err(Error::msg(
                    "the message has no value (a tombstone); set `tombstones: drop` to drop such messages",
                ))
            }
            Some(v) if v.starts_with('{') => v,
            Some(v) => {
                return Err(Error::msg(format!(
                    "the message value is not a JSON object: {}",
                    v.chars().take(80).collect::<String>()
                )))
            }
        };
        // `{"a": 1}` -> `{"a": 1, "__kafka_offset": 7}`: the value's closing
        // brace comes off, the fields go after its last member.
        let body = value[1..value.len() - 1].trim_end();
        let mut text = String::with_capacity(record.json().len());
        text.push('{');
        text.push_str(body);
        let mut first = body.trim().is_empty();
        for (from, key) in &self.copies {
            if !first {
                text.push_str(", ");
            }
            first = false;
            text.push_str(key);
            text.push_str(": ");
            text.push_str(wrapper.field(from).unwrap_or("null"));
        }
        text.push('}');
        record.set_json(text);
        out.push(record);
        Ok(())
    }
}

export_transform!(Flatten);

#[cfg(test)]
mod tests {
    use super::*;

    fn flatten(config: &str, data: &str) -> Result<Vec<String>, String> {
        let mut t = Flatten::open(Config::from_json(config).unwrap()).map_err(|e| e.to_string())?;
        let record = Record::new("1".into(), 0, None, data.into());
        let mut out = Vec::new();
        t.transform(record, &mut out).map_err(|e| e.to_string())?;
        Ok(out.into_iter().map(|r| r.json().to_string()).collect())
    }

    #[test]
    fn the_value_keeps_its_text_and_the_wrapper_fields_follow() {
        let data = r#"{"topic": "t", "offset": 7, "partition": 1, "timestamp": "x", "keys": {}, "headers": {}, "value": {"z": 1, "a": [2]}}"#;
        assert_eq!(
            flatten("{}", data).unwrap(),
            [
                r#"{"z": 1, "a": [2], "__kafka_offset": 7, "__kafka_partition": 1, "__kafka_topic": "t", "__kafka_timestamp": "x"}"#
            ]
        );
        let empty = r#"{"offset": 3, "value": {}}"#;
        assert_eq!(
            flatten(r#"{"fields": ["offset"], "prefix": "k_"}"#, empty).unwrap(),
            [r#"{"k_offset": 3}"#]
        );
    }

    #[test]
    fn tombstones_and_other_shapes() {
        let tombstone = r#"{"offset": 3, "value": null}"#;
        assert!(flatten("{}", tombstone).unwrap_err().contains("tombstone"));
        assert!(flatten(r#"{"tombstones": "drop"}"#, tombstone).unwrap().is_empty());
        assert!(flatten("{}", r#"{"value": 5}"#)
            .unwrap_err()
            .contains("not a JSON object"));
        assert!(flatten("{}", r#"{"id": 1}"#).unwrap_err().contains("no `value`"));
        assert!(flatten(r#"{"fields": ["ofset"]}"#, "{}")
            .unwrap_err()
            .contains("`ofset`"));
    }
}
