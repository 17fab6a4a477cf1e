//! `message_encoding: avro`, as Bizon 0.6.4 decodes it (`decode.py`,
//! `source.py` `decode_avro`): a magic byte 0, then the schema id in 4 bytes
//! (Confluent) or, when those 4 are zero, in 8 (an Apicurio global id); the
//! writer schema comes from the Apicurio registry
//! (`{url}/apis/registry/v2/ids/globalIds/{id}`, basic auth) and is cached
//! per id; the datum is decoded with it. Values are rendered as fastavro's
//! Python values come out of orjson: records as objects in field order,
//! unions as their branch, enums as their symbol, timestamps as ISO 8601
//! text. Bytes and fixed values (which orjson cannot write: Bizon stops)
//! become base64 text; decimals and durations are refused (Bizon stops too),
//! and so are dates and times Python's `datetime` cannot hold (years 1 to
//! 9999, times of day within 24 hours: fastavro raises on them).
//!
//! What a message or the registry can make the decoder do is bounded
//! (found by tests/e2e/fuzz/kafka_avro.rs): a length or item count is at
//! most [`MAX_ALLOCATION`], and schemas whose decoding is bounded by
//! nothing are refused (a type holding itself, an array of items that take
//! no bytes).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use apache_avro::schema::{Name, Namespace};
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

/// Longest string or bytes, and most items in an array or map block, a
/// message may claim, for the whole process (apache-avro's limit is one
/// global; 512 MiB by default). apache-avro reserves room for a block's
/// items before reading them, 56 bytes each: with its default an 11-byte
/// message claiming 500M items asked for 28 GB and aborted the process.
/// 16 Mi items reserve at most 0.9 GB of address space, never touched
/// unless the items are there; 16 MiB is 16 times Kafka's default largest
/// message.
pub const MAX_ALLOCATION: usize = 16 << 20;

pub struct AvroDecoder {
    url: String,
    auth: Option<(String, String)>,
    /// Made at the first fetch, on the consumer's thread: a blocking client
    /// made on the async runtime that assembles the run panics in debug
    /// builds and blocks a worker in release ones.
    client: std::sync::OnceLock<reqwest::blocking::Client>,
    /// Schema id to the parsed schema and Bizon's `schema` text for it;
    /// `Err` for ids the registry does not have.
    schemas: HashMap<i64, Result<Arc<(Schema, String)>, String>>,
}

impl AvroDecoder {
    pub fn new(url: &str, username: &str, password: &str) -> Self {
        apache_avro::util::max_allocation_bytes(MAX_ALLOCATION);
        Self {
            url: url.trim_end_matches('/').to_string(),
            auth: (!username.is_empty()).then(|| (username.to_string(), password.to_string())),
            client: std::sync::OnceLock::new(),
            schemas: HashMap::new(),
        }
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
        render(&value, &mut out).map_err(|e| AvroError::Message(format!("schema {id}: {e}")))?;
        Ok((String::from_utf8(out).expect("rendered JSON is UTF-8"), schema))
    }

    /// `Err` only when the registry cannot be asked; an unknown id or a
    /// schema that does not parse is `Ok(Err)`, the message's fault.
    fn fetch(&self, id: i64) -> Result<Result<Arc<(Schema, String)>, String>, AvroError> {
        let url = format!("{}/apis/registry/v2/ids/globalIds/{id}", self.url);
        let client = match self.client.get() {
            Some(client) => client,
            None => {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .map_err(|e| AvroError::Registry(format!("schema registry client: {e}")))?;
                self.client.get_or_init(|| client)
            }
        };
        let mut request = client.get(&url);
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
    // apache-avro 0.21's parser unwraps on some names it refuses (a record
    // named "": found by tests/e2e/fuzz/kafka_avro.rs; aliases too). The
    // text is the registry's: a panic there is this schema's error, not the
    // end of the run (the panic message still reaches stderr).
    let schema = std::panic::catch_unwind(|| Schema::parse_str(&out))
        .map_err(|_| "not an Avro schema: apache-avro's parser panicked on it (a name that is not an Avro name?)")?
        .map_err(|e| format!("not an Avro schema: {e}"))?;
    bounded(&schema)?;
    Ok((schema, out))
}

/// `Err` for a schema whose decoding nothing bounds. apache-avro recurses
/// once per level of a value with no limit, so a type holding itself (a
/// record field of its own type: no bytes per level; a union branch: one
/// byte) let a few kilobytes of message overflow the stack and abort the
/// process; fastavro, in Bizon, stops at Python's recursion limit. And an
/// array of items that take no bytes (`null`, `fixed` of size 0, records
/// of only those) lets each byte of a message claim millions of items.
fn bounded(schema: &Schema) -> Result<(), String> {
    struct Walk<'a> {
        defined: HashMap<Name, &'a Schema>,
        open: Vec<Name>,
        /// Named types already walked whole: their subtrees are bounded.
        done: HashSet<Name>,
    }
    fn define<'a>(s: &'a Schema, ns: &Namespace, defined: &mut HashMap<Name, &'a Schema>) {
        match s {
            Schema::Record(r) => {
                let name = r.name.fully_qualified_name(ns);
                r.fields
                    .iter()
                    .for_each(|f| define(&f.schema, &name.namespace, defined));
                defined.insert(name, s);
            }
            Schema::Array(a) => define(&a.items, ns, defined),
            Schema::Map(m) => define(&m.types, ns, defined),
            Schema::Union(u) => u.variants().iter().for_each(|v| define(v, ns, defined)),
            _ => {}
        }
    }
    impl<'a> Walk<'a> {
        fn walk(&mut self, s: &'a Schema, ns: &Namespace) -> Result<(), String> {
            match s {
                Schema::Record(r) => {
                    let name = r.name.fully_qualified_name(ns);
                    if self.done.contains(&name) {
                        return Ok(());
                    }
                    self.open.push(name.clone());
                    for f in &r.fields {
                        self.walk(&f.schema, &name.namespace)?;
                    }
                    self.open.pop();
                    self.done.insert(name);
                    Ok(())
                }
                Schema::Ref { name } => {
                    let name = name.fully_qualified_name(ns);
                    if self.open.contains(&name) {
                        return Err(format!(
                            "type `{}` holds itself; a recursive schema is not decoded (its depth would be bounded \
                             only by the message's size)",
                            name.fullname(None)
                        ));
                    }
                    match self.defined.get(&name) {
                        Some(defined) => self.walk(defined, &name.namespace),
                        None => Ok(()),
                    }
                }
                Schema::Array(a) if self.takes_no_bytes(&a.items, ns, 0) => Err(
                    "an array of items that take no bytes (null, fixed of size 0, records of only those): each \
                     byte of a message could claim millions of them"
                        .into(),
                ),
                Schema::Array(a) => self.walk(&a.items, ns),
                Schema::Map(m) => self.walk(&m.types, ns),
                Schema::Union(u) => u.variants().iter().try_for_each(|v| self.walk(v, ns)),
                _ => Ok(()),
            }
        }

        /// `depth` stops at a type holding itself, which `walk` refuses.
        fn takes_no_bytes(&self, s: &Schema, ns: &Namespace, depth: usize) -> bool {
            match s {
                Schema::Null => true,
                Schema::Fixed(f) => f.size == 0,
                Schema::Decimal(d) => self.takes_no_bytes(&d.inner, ns, depth),
                Schema::Record(r) => {
                    let name = r.name.fully_qualified_name(ns);
                    r.fields
                        .iter()
                        .all(|f| self.takes_no_bytes(&f.schema, &name.namespace, depth))
                }
                Schema::Ref { name } if depth < 64 => {
                    let name = name.fully_qualified_name(ns);
                    self.defined
                        .get(&name)
                        .is_some_and(|d| self.takes_no_bytes(d, &name.namespace, depth + 1))
                }
                _ => false,
            }
        }
    }
    let mut defined = HashMap::new();
    define(schema, &None, &mut defined);
    Walk {
        defined,
        open: Vec::new(),
        done: HashSet::new(),
    }
    .walk(schema, &None)
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
            write_iso8601_us(python_datetime(i64::from(*days).checked_mul(DAY_US), value)?, &mut t);
            out.push(b'"');
            out.extend_from_slice(&t[..10]);
            out.push(b'"');
        }
        Value::TimestampMillis(ms) => iso(out, python_datetime(ms.checked_mul(1000), value)?, true),
        Value::TimestampMicros(us) => iso(out, python_datetime(Some(*us), value)?, true),
        Value::TimestampNanos(ns) => iso(out, python_datetime(Some(ns.div_euclid(1000)), value)?, true),
        Value::LocalTimestampMillis(ms) => iso(out, python_datetime(ms.checked_mul(1000), value)?, false),
        Value::LocalTimestampMicros(us) => iso(out, python_datetime(Some(*us), value)?, false),
        Value::LocalTimestampNanos(ns) => iso(out, python_datetime(Some(ns.div_euclid(1000)), value)?, false),
        Value::TimeMillis(ms) => time_of_day(i64::from(*ms) * 1000, value, out)?,
        Value::TimeMicros(us) => time_of_day(*us, value, out)?,
        other => {
            return Err(format!(
                "Avro value {other:?} has no JSON form (Bizon cannot write it either)"
            ))
        }
    }
    Ok(())
}

const DAY_US: i64 = 86_400_000_000;

/// Microseconds since the epoch if Python's `datetime` holds them (years 1
/// to 9999; the text written has a four-digit year then).
fn python_datetime(us: Option<i64>, value: &Value) -> Result<i64, String> {
    const FIRST_US: i64 = -62_135_596_800_000_000; // 0001-01-01T00:00
    const END_US: i64 = 253_402_300_800_000_000; // 10000-01-01T00:00
    us.filter(|us| (FIRST_US..END_US).contains(us)).ok_or_else(|| {
        format!("Avro value {value:?} is outside years 1-9999 (Python's datetime, hence Bizon, cannot hold it)")
    })
}

/// `HH:MM:SS[.ffffff]`, as Python's `time.isoformat()`.
fn time_of_day(us: i64, value: &Value, out: &mut Vec<u8>) -> Result<(), String> {
    if !(0..DAY_US).contains(&us) {
        return Err(format!(
            "Avro value {value:?} is outside 00:00-24:00 (Python's time, hence Bizon, cannot hold it)"
        ));
    }
    let mut t = Vec::with_capacity(32);
    write_iso8601_us(us, &mut t);
    out.push(b'"');
    out.extend_from_slice(&t[11..t.len() - "+00:00".len()]);
    out.push(b'"');
    Ok(())
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
        let mut decoder = AvroDecoder::new("http://127.0.0.1:1", "", "");
        decoder.schemas.insert(5, Ok(Arc::new((schema, bizon))));
        let (json, _) = decoder.decode(&framed).ok().unwrap();
        assert_eq!(
            json,
            r#"{"id":7,"email":"a@b","at":"2024-05-01T12:30:00.123000+00:00","kind":"B","score":1.0}"#
        );
    }
}
