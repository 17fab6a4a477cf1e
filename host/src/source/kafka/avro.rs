//! `message_encoding: avro`, as Bizon 0.6.4 decodes it (`decode.py`,
//! `source.py` `decode_avro`): a magic byte 0, then the schema id in 4 bytes
//! (Confluent) or, when those 4 are zero, in 8 (an Apicurio global id); the
//! writer schema comes from the Apicurio registry
//! (`{url}/apis/registry/v2/ids/globalIds/{id}`, basic auth) and is cached
//! per id; the datum is decoded with it. Values are rendered as fastavro's
//! Python values come out of orjson: records as objects in field order,
//! unions as their branch, enums as their symbol, timestamps as ISO 8601
//! text. Bytes and fixed values (which orjson cannot write: Bizon stops)
//! become base64 text; decimals and durations are refused (Bizon stops too).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use apache_avro::types::Value;
use apache_avro::Schema;
use serde_json::value::RawValue;

use crate::record::time::write_iso8601_us;

/// Why a message is not decoded: the message's fault (to the dead letter)
/// or the registry's (the run stops; the message is not lost).
pub enum AvroError {
    Message(String),
    Registry(String),
}

pub struct AvroDecoder {
    url: String,
    auth: Option<(String, String)>,
    client: reqwest::blocking::Client,
    /// Schema id to the parsed schema and Bizon's `schema` text for it;
    /// `Err` for ids the registry does not have.
    schemas: HashMap<i64, Result<Arc<(Schema, String)>, String>>,
}

impl AvroDecoder {
    pub fn new(url: &str, username: &str, password: &str) -> Result<Self, String> {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| format!("schema registry client: {e}"))?;
        Ok(Self {
            url: url.trim_end_matches('/').to_string(),
            auth: (!username.is_empty()).then(|| (username.to_string(), password.to_string())),
            client,
            schemas: HashMap::new(),
        })
    }

    /// The decoded value as JSON text, and Bizon's `schema` for it.
    pub fn decode(&mut self, bytes: &[u8]) -> Result<(String, Arc<(Schema, String)>), AvroError> {
        let (id, width) = schema_id(bytes).map_err(AvroError::Message)?;
        let schema = match self.schemas.get(&id) {
            Some(s) => s.clone(),
            None => {
                let fetched = self.fetch(id)?;
                self.schemas.insert(id, fetched.clone());
                fetched
            }
        }
        .map_err(AvroError::Message)?;
        let mut body = &bytes[1 + width..];
        let value = apache_avro::from_avro_datum(&schema.0, &mut body, None)
            .map_err(|e| AvroError::Message(format!("not Avro of schema {id}: {e}")))?;
        let mut out = Vec::with_capacity(bytes.len() * 2);
        render(&value, &mut out).map_err(AvroError::Message)?;
        Ok((String::from_utf8(out).expect("rendered JSON is UTF-8"), schema))
    }

    /// `Err` only when the registry cannot be asked; an unknown id or a
    /// schema that does not parse is `Ok(Err)`, the message's fault.
    fn fetch(&self, id: i64) -> Result<Result<Arc<(Schema, String)>, String>, AvroError> {
        let url = format!("{}/apis/registry/v2/ids/globalIds/{id}", self.url);
        let mut request = self.client.get(&url);
        if let Some((user, password)) = &self.auth {
            request = request.basic_auth(user, Some(password));
        }
        let response = request
            .send()
            .map_err(|e| AvroError::Registry(format!("schema registry {url}: {e}")))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(Err(format!("schema id {id} not found in the registry")));
        }
        if !response.status().is_success() {
            return Err(AvroError::Registry(format!(
                "schema registry {url}: HTTP {}",
                response.status()
            )));
        }
        let text = response
            .text()
            .map_err(|e| AvroError::Registry(format!("schema registry {url}: {e}")))?;
        Ok(parse_schema(&text)
            .map(Arc::new)
            .map_err(|e| format!("schema {id}: {e}")))
    }
}

/// The schema, and Bizon's rendering of it in `source_data.schema`: the
/// registry's JSON with `name` set to "Envelope" (fastavro wants a name),
/// compact, in the registry's key order.
fn parse_schema(text: &str) -> Result<(Schema, String), String> {
    let fields = ordered_object(text).map_err(|e| format!("not a JSON object: {e}"))?;
    let mut out = String::from("{");
    let mut named = false;
    for (i, (key, raw)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(key).expect("strings serialize"));
        out.push(':');
        if key == "name" {
            out.push_str("\"Envelope\"");
            named = true;
        } else {
            let value: serde_json::Value = serde_json::from_str(raw.get()).expect("checked JSON");
            out.push_str(&value.to_string());
        }
    }
    if !named {
        out.push_str(if fields.is_empty() {
            "\"name\":\"Envelope\""
        } else {
            ",\"name\":\"Envelope\""
        });
    }
    out.push('}');
    let schema = Schema::parse_str(&out).map_err(|e| format!("not an Avro schema: {e}"))?;
    Ok((schema, out))
}

/// A JSON object's members in their order.
fn ordered_object(text: &str) -> Result<Vec<(String, Box<RawValue>)>, serde_json::Error> {
    struct Members(Vec<(String, Box<RawValue>)>);
    impl<'de> serde::Deserialize<'de> for Members {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Visit;
            impl<'de> serde::de::Visitor<'de> for Visit {
                type Value = Members;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                    let mut members = Vec::new();
                    while let Some(member) = map.next_entry::<String, Box<RawValue>>()? {
                        members.push(member);
                    }
                    Ok(Members(members))
                }
            }
            d.deserialize_map(Visit)
        }
    }
    serde_json::from_str::<Members>(text).map(|m| m.0)
}

/// The schema id and how many bytes it takes, as Bizon's
/// `parse_global_id_from_serialized_message` reads it.
fn schema_id(bytes: &[u8]) -> Result<(i64, usize), String> {
    if bytes.len() < 5 {
        return Err("not Avro from a schema registry serializer: shorter than its header".into());
    }
    if bytes[0] != 0 {
        return Err(format!(
            "not Avro from a schema registry serializer: magic byte {} (expected 0)",
            bytes[0]
        ));
    }
    let confluent = u32::from_be_bytes(bytes[1..5].try_into().expect("4 bytes"));
    if confluent != 0 {
        return Ok((i64::from(confluent), 4));
    }
    if bytes.len() < 9 {
        return Err("not Avro from a schema registry serializer: an 8-byte schema id is cut short".into());
    }
    Ok((i64::from_be_bytes(bytes[1..9].try_into().expect("8 bytes")), 8))
}

fn text(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("writing to memory");
}

/// A JSON object of `entries` in their order.
fn object<'a>(entries: impl IntoIterator<Item = (&'a String, &'a Value)>, out: &mut Vec<u8>) -> Result<(), String> {
    out.push(b'{');
    for (i, (k, v)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        text(out, k);
        out.push(b':');
        render(v, out)?;
    }
    out.push(b'}');
    Ok(())
}

fn render(value: &Value, out: &mut Vec<u8>) -> Result<(), String> {
    use base64::Engine;
    let iso = |out: &mut Vec<u8>, us: i64, zone: bool| {
        let mut t = Vec::with_capacity(32);
        write_iso8601_us(us, &mut t);
        if !zone {
            t.truncate(t.len() - "+00:00".len());
        }
        out.push(b'"');
        out.extend_from_slice(&t);
        out.push(b'"');
    };
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Int(i) => out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
        Value::Long(i) => out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
        Value::Float(f) => serde_json::to_writer(&mut *out, &(f64::from(*f))).expect("writing to memory"),
        Value::Double(f) => serde_json::to_writer(&mut *out, f).expect("writing to memory"),
        Value::Bytes(b) | Value::Fixed(_, b) => text(out, &base64::engine::general_purpose::STANDARD.encode(b)),
        Value::String(s) | Value::Enum(_, s) => text(out, s),
        Value::Uuid(u) => text(out, &u.to_string()),
        Value::Union(_, inner) => render(inner, out)?,
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                render(item, out)?;
            }
            out.push(b']');
        }
        Value::Map(map) => {
            // Avro maps have no order; sorted keys make the text stable.
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            object(entries, out)?;
        }
        Value::Record(fields) => object(fields.iter().map(|(k, v)| (k, v)), out)?,
        Value::Date(days) => {
            let mut t = Vec::new();
            write_iso8601_us(i64::from(*days) * 86_400_000_000, &mut t);
            out.push(b'"');
            out.extend_from_slice(&t[..10]);
            out.push(b'"');
        }
        Value::TimestampMillis(ms) => iso(out, ms.saturating_mul(1000), true),
        Value::TimestampMicros(us) => iso(out, *us, true),
        Value::TimestampNanos(ns) => iso(out, ns.div_euclid(1000), true),
        Value::LocalTimestampMillis(ms) => iso(out, ms.saturating_mul(1000), false),
        Value::LocalTimestampMicros(us) => iso(out, *us, false),
        Value::LocalTimestampNanos(ns) => iso(out, ns.div_euclid(1000), false),
        Value::TimeMillis(ms) => time_of_day(i64::from(*ms) * 1000, out),
        Value::TimeMicros(us) => time_of_day(*us, out),
        other => {
            return Err(format!(
                "Avro value {other:?} has no JSON form (Bizon cannot write it either)"
            ))
        }
    }
    Ok(())
}

/// `HH:MM:SS[.ffffff]`, as Python's `time.isoformat()`.
fn time_of_day(us: i64, out: &mut Vec<u8>) {
    let mut t = Vec::with_capacity(32);
    write_iso8601_us(us, &mut t);
    out.push(b'"');
    out.extend_from_slice(&t[11..t.len() - "+00:00".len()]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_ids_are_read_as_bizon_reads_them() {
        assert_eq!(schema_id(&[0, 0, 0, 0, 7, 1]).unwrap(), (7, 4));
        assert_eq!(schema_id(&[0, 0, 0, 0, 0, 0, 0, 1, 2, 9]).unwrap(), (258, 8));
        assert!(schema_id(&[1, 0, 0, 0, 7]).unwrap_err().contains("magic byte 1"));
        assert!(schema_id(&[0, 0]).is_err());
    }

    #[test]
    fn values_render_as_fastavro_through_orjson() {
        let (schema, bizon) = parse_schema(
            r#"{"type": "record", "name": "users", "fields": [
                {"name": "id", "type": "long"},
                {"name": "email", "type": ["null", "string"]},
                {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
                {"name": "kind", "type": {"type": "enum", "name": "K", "symbols": ["A", "B"]}},
                {"name": "score", "type": "double"}]}"#,
        )
        .unwrap();
        assert!(
            bizon.starts_with(r#"{"type":"record","name":"Envelope","fields":[{"name":"id","type":"long"}"#),
            "{bizon}"
        );
        let record = Value::Record(vec![
            ("id".into(), Value::Long(7)),
            ("email".into(), Value::Union(1, Box::new(Value::String("a@b".into())))),
            ("at".into(), Value::TimestampMillis(1_714_566_600_123)),
            ("kind".into(), Value::Enum(1, "B".into())),
            ("score".into(), Value::Double(1.0)),
        ]);
        let datum = apache_avro::to_avro_datum(&schema, record).unwrap();
        let mut framed = vec![0, 0, 0, 0, 5];
        framed.extend_from_slice(&datum);
        let mut decoder = AvroDecoder::new("http://127.0.0.1:1", "", "").unwrap();
        decoder.schemas.insert(5, Ok(Arc::new((schema, bizon))));
        let (json, _) = decoder.decode(&framed).ok().unwrap();
        assert_eq!(
            json,
            r#"{"id":7,"email":"a@b","at":"2024-05-01T12:30:00.123000+00:00","kind":"B","score":1.0}"#
        );
    }
}
