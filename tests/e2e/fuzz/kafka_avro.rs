//! The Kafka decoder with `message_encoding: avro` (`Decoder { avro }`,
//! source/kafka/avro.rs), its schemas fetched from a registry stand-in
//! served here (`GET /apis/registry/v2/ids/globalIds/{id}`, as Apicurio).
//! Three properties, each for any input:
//! - any bytes after the header, read with a generated schema, never panic
//!   nor exhaust memory: a record, or an error naming the schema id (the
//!   consumer adds topic, partition and offset, source/kafka/mod.rs);
//! - a generated schema (records in records, arrays, maps, unions with
//!   null, enums, fixed, bytes, the logical types fastavro turns into
//!   Python values) and a datum of it, written by `apache-avro`, come out
//!   as the JSON Bizon writes: checked against a mapping written here from
//!   fastavro's and orjson's rules, dates read back by their own inverse;
//! - any registry answer (garbled schemas, bodies that are not JSON, error
//!   statuses) is an error naming the schema id (the message's fault) or
//!   the registry (the run stops), never a panic nor a stack overflow.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use apache_avro::types::Value as Avro;
use bizon_host::source::kafka::avro::AvroDecoder;
use bizon_host::source::kafka::message::{Decoded, Decoder};
use proptest::prelude::*;
use rdkafka::message::{OwnedMessage, Timestamp};
use serde_json::{json, Value};

use crate::support::http_server::{HttpServer, Reply};

/// Schema id to the status and body the registry answers for it.
type Answers = Arc<Mutex<HashMap<u32, (u16, Vec<u8>)>>>;

/// The registry stand-in, one for the test binary: each case registers
/// its answer under an id of its own, so properties run side by side.
struct Registry {
    url: String,
    answers: Answers,
    next: AtomicU32,
}

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let answers = Answers::default();
        let served = answers.clone();
        let server = HttpServer::start(move |_, seen| {
            let answer = seen
                .path
                .strip_prefix("/apis/registry/v2/ids/globalIds/")
                .and_then(|id| id.parse().ok())
                .and_then(|id: u32| served.lock().unwrap().get(&id).cloned());
            let (status, body) = answer.unwrap_or((404, Vec::new()));
            Reply {
                body,
                ..Reply::status(status, "").header("content-type", "application/json")
            }
        });
        Registry {
            url: server.url(),
            answers,
            next: AtomicU32::new(1),
        }
    })
}

/// Registers `body` with `status` under a new schema id.
fn answer(status: u16, body: Vec<u8>) -> u32 {
    let r = registry();
    let id = r.next.fetch_add(1, Ordering::Relaxed);
    r.answers.lock().unwrap().insert(id, (status, body));
    id
}

/// Decodes `value` (the whole Kafka message value, header included) with
/// a decoder of its own (schemas are cached per decoder).
fn decode(value: &[u8]) -> Decoded {
    let decoder = Decoder {
        avro: Some(std::cell::RefCell::new(AvroDecoder::new(&registry().url, "", ""))),
        topics: [("t".to_string(), Arc::from("events"))].into(),
        skip_empty_value: false,
        skip_invalid_keys: false,
        skip_on_decode_error: false,
    };
    let message = OwnedMessage::new(
        Some(value.to_vec()),
        None,
        "t".into(),
        Timestamp::CreateTime(1_700_000_000_000),
        0,
        42,
        None,
    );
    decoder.decode(&message, 0)
}

/// Confluent framing: magic byte 0, the schema id in 4 bytes, the datum.
fn framed(id: u32, datum: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(datum);
    out
}

/// An Avro type, as generated.
#[derive(Clone, Debug)]
enum Ty {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    Str,
    Fixed(usize),
    Enum(Vec<String>),
    Date,
    TimeMillis,
    TimeMicros,
    TimestampMillis,
    TimestampMicros,
    LocalTimestampMillis,
    LocalTimestampMicros,
    Uuid,
    Array(Box<Ty>),
    Map(Box<Ty>),
    /// `["null", T]`, T neither null nor a union.
    Nullable(Box<Ty>),
    Record(Vec<(String, Ty)>),
}

/// An Avro name: `[A-Za-z_][A-Za-z0-9_]*`.
fn ident() -> impl Strategy<Value = String> {
    (
        prop::sample::select(b"abcxyzABZ_".to_vec()),
        prop::collection::vec(prop::sample::select(b"az09_Q".to_vec()), 0..6),
    )
        .prop_map(|(first, rest)| String::from_utf8([vec![first], rest].concat()).unwrap())
}

/// Names made distinct by their place.
fn distinct(names: Vec<String>) -> Vec<String> {
    names.into_iter().enumerate().map(|(i, n)| format!("{n}{i}")).collect()
}

fn nullable(t: Ty) -> Ty {
    match t {
        Ty::Null | Ty::Nullable(_) => t,
        t => Ty::Nullable(Box::new(t)),
    }
}

fn fields(inner: impl Strategy<Value = Ty>) -> impl Strategy<Value = Vec<(String, Ty)>> {
    prop::collection::vec((ident(), inner), 1..5).prop_map(|f| {
        f.into_iter()
            .enumerate()
            .map(|(i, (n, t))| (format!("{n}{i}"), t))
            .collect()
    })
}

fn ty() -> impl Strategy<Value = Ty> {
    let leaf = prop_oneof![
        Just(Ty::Null),
        Just(Ty::Boolean),
        Just(Ty::Int),
        Just(Ty::Long),
        Just(Ty::Float),
        Just(Ty::Double),
        Just(Ty::Bytes),
        Just(Ty::Str),
        (0usize..20).prop_map(Ty::Fixed),
        prop::collection::vec(ident(), 1..5).prop_map(|s| Ty::Enum(distinct(s))),
        Just(Ty::Date),
        Just(Ty::TimeMillis),
        Just(Ty::TimeMicros),
        Just(Ty::TimestampMillis),
        Just(Ty::TimestampMicros),
        Just(Ty::LocalTimestampMillis),
        Just(Ty::LocalTimestampMicros),
        Just(Ty::Uuid),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(|t| Ty::Array(Box::new(t))),
            inner.clone().prop_map(|t| Ty::Map(Box::new(t))),
            inner.clone().prop_map(nullable),
            fields(inner).prop_map(Ty::Record),
        ]
    })
}

impl Ty {
    /// Encoded in no bytes at all.
    fn takes_no_bytes(&self) -> bool {
        match self {
            Ty::Null | Ty::Fixed(0) => true,
            Ty::Record(fields) => fields.iter().all(|(_, t)| t.takes_no_bytes()),
            _ => false,
        }
    }

    /// Holds an array of items that take no bytes: a schema the host
    /// refuses, a message's bytes could claim millions of them.
    fn unbounded(&self) -> bool {
        match self {
            Ty::Array(items) => items.takes_no_bytes() || items.unbounded(),
            Ty::Map(t) | Ty::Nullable(t) => t.unbounded(),
            Ty::Record(fields) => fields.iter().any(|(_, t)| t.unbounded()),
            _ => false,
        }
    }
}

/// A message's schema: a record, as Bizon's messages are.
fn top() -> impl Strategy<Value = Ty> {
    fields(ty()).prop_map(Ty::Record)
}

/// The schema's JSON; named types get names of their own (`n0`, `n1`...).
fn schema(t: &Ty, names: &mut usize) -> Value {
    let mut name = || {
        *names += 1;
        format!("n{names}")
    };
    let logical = |base: &str, logical: &str| json!({"type": base, "logicalType": logical});
    match t {
        Ty::Null => json!("null"),
        Ty::Boolean => json!("boolean"),
        Ty::Int => json!("int"),
        Ty::Long => json!("long"),
        Ty::Float => json!("float"),
        Ty::Double => json!("double"),
        Ty::Bytes => json!("bytes"),
        Ty::Str => json!("string"),
        Ty::Fixed(size) => json!({"type": "fixed", "name": name(), "size": size}),
        Ty::Enum(symbols) => json!({"type": "enum", "name": name(), "symbols": symbols}),
        Ty::Date => logical("int", "date"),
        Ty::TimeMillis => logical("int", "time-millis"),
        Ty::TimeMicros => logical("long", "time-micros"),
        Ty::TimestampMillis => logical("long", "timestamp-millis"),
        Ty::TimestampMicros => logical("long", "timestamp-micros"),
        Ty::LocalTimestampMillis => logical("long", "local-timestamp-millis"),
        Ty::LocalTimestampMicros => logical("long", "local-timestamp-micros"),
        Ty::Uuid => logical("string", "uuid"),
        Ty::Array(items) => json!({"type": "array", "items": schema(items, names)}),
        Ty::Map(values) => json!({"type": "map", "values": schema(values, names)}),
        Ty::Nullable(t) => json!(["null", schema(t, names)]),
        Ty::Record(fields) => {
            let name = name();
            let fields: Vec<Value> = fields
                .iter()
                .map(|(n, t)| json!({"name": n, "type": schema(t, names)}))
                .collect();
            json!({"type": "record", "name": name, "fields": fields})
        }
    }
}

fn schema_text(t: &Ty) -> String {
    schema(t, &mut 0).to_string()
}

/// What Bizon writes for a datum: fastavro's Python value through orjson.
#[derive(Clone, Debug)]
enum Expect {
    Json(Value),
    /// ISO 8601 `YYYY-MM-DD` of these days since 1970-01-01.
    Date(i64),
    /// `HH:MM:SS[.ffffff]` of these microseconds since midnight.
    Time(i64),
    /// `YYYY-MM-DDTHH:MM:SS[.ffffff]` of these microseconds since the
    /// epoch, `+00:00` after it when `zone`.
    Timestamp(i64, bool),
    Array(Vec<Expect>),
    Object(Vec<(String, Expect)>),
}

/// Python's `datetime` holds years 1 to 9999: fastavro cannot make a
/// value outside them, and Bizon stops. Microseconds since the epoch of
/// 0001-01-01T00:00 and of the end of 9999.
const FIRST_US: i64 = -62_135_596_800_000_000;
const END_US: i64 = 253_402_300_800_000_000;
const DAY_US: i64 = 86_400_000_000;

impl Expect {
    /// The datum cannot be written (a date or time Python cannot hold).
    fn refused(&self) -> bool {
        match self {
            Expect::Json(_) => false,
            Expect::Date(days) => !(FIRST_US..END_US).contains(&days.saturating_mul(DAY_US)),
            Expect::Time(us) => !(0..DAY_US).contains(us),
            Expect::Timestamp(us, _) => !(FIRST_US..END_US).contains(us),
            Expect::Array(items) => items.iter().any(Expect::refused),
            Expect::Object(entries) => entries.iter().any(|(_, e)| e.refused()),
        }
    }

    fn check(&self, actual: &Value) -> Result<(), String> {
        let text = |v: &Value| v.as_str().map(str::to_string).ok_or(format!("{v} is not text"));
        match self {
            Expect::Json(v) if v == actual => Ok(()),
            // serde_json reads some floats back a few ulps off (its fast
            // parsing; seen: 2): compared as bits, of one sign.
            Expect::Json(Value::Number(n)) if n.is_f64() && actual.is_f64() => {
                let (e, a) = (n.as_f64().unwrap(), actual.as_f64().unwrap());
                (e.is_sign_negative() == a.is_sign_negative() && e.to_bits().abs_diff(a.to_bits()) <= 4)
                    .then_some(())
                    .ok_or(format!("{a} instead of {e}"))
            }
            Expect::Json(v) => Err(format!("{actual} instead of {v}")),
            Expect::Date(days) => {
                let t = text(actual)?;
                (t.len() == 10 && civil_days(&t) == Some(*days))
                    .then_some(())
                    .ok_or(format!("{t} for day {days}"))
            }
            Expect::Time(us) => {
                let t = text(actual)?;
                (time_us(&t) == Some(*us))
                    .then_some(())
                    .ok_or(format!("{t} for {us} µs"))
            }
            Expect::Timestamp(us, zone) => {
                let t = text(actual)?;
                let rest = if *zone { t.strip_suffix("+00:00") } else { Some(&t[..]) };
                let read = rest.and_then(|r| {
                    let (date, time) = r.split_once('T')?;
                    Some(civil_days(date)? * DAY_US + time_us(time)?)
                });
                (read == Some(*us))
                    .then_some(())
                    .ok_or(format!("{t} for {us} µs (zone {zone})"))
            }
            Expect::Array(items) => {
                let actual = actual.as_array().ok_or(format!("{actual} is not an array"))?;
                if actual.len() != items.len() {
                    return Err(format!("{} items instead of {}", actual.len(), items.len()));
                }
                items.iter().zip(actual).try_for_each(|(e, a)| e.check(a))
            }
            Expect::Object(entries) => {
                let actual = actual.as_object().ok_or(format!("{actual} is not an object"))?;
                if actual.len() != entries.len() {
                    return Err(format!("{} members instead of {}", actual.len(), entries.len()));
                }
                entries
                    .iter()
                    .try_for_each(|(k, e)| e.check(actual.get(k).ok_or(format!("no member {k:?} in {actual:?}"))?))
            }
        }
    }
}

/// Days since 1970-01-01 of `YYYY-MM-DD` (four-digit years), by
/// counting: the inverse of what the host writes, done another way.
fn civil_days(date: &str) -> Option<i64> {
    let b = date.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |s: &str| s.bytes().all(|c| c.is_ascii_digit()).then(|| s.parse::<i64>().ok())?;
    let (y, m, d) = (num(&date[..4])?, num(&date[5..7])?, num(&date[8..])?);
    let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [
        31,
        if leap(y) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if y < 1 || !(1..=12).contains(&m) || d < 1 || d > month_days[m as usize - 1] {
        return None;
    }
    // Days before year y since 0001-01-01, then since 1970-01-01.
    let before = |y: i64| (y - 1) * 365 + (y - 1) / 4 - (y - 1) / 100 + (y - 1) / 400;
    let days = before(y) + month_days[..m as usize - 1].iter().sum::<i64>() + d - 1;
    Some(days - before(1970))
}

/// Microseconds since midnight of `HH:MM:SS` or `HH:MM:SS.ffffff` (the
/// fraction only when not zero, as Python's `isoformat`).
fn time_us(time: &str) -> Option<i64> {
    let (hms, fraction) = match time.split_once('.') {
        Some((hms, f)) if f.len() == 6 && f != "000000" => (hms, f.parse::<i64>().ok()?),
        Some(_) => return None,
        None => (time, 0),
    };
    let parts: Vec<i64> = hms
        .split(':')
        .map(|p| (p.len() == 2).then(|| p.parse().ok())?)
        .collect::<Option<_>>()?;
    match parts[..] {
        [h, m, s] if h < 24 && m < 60 && s < 60 => Some(((h * 60 + m) * 60 + s) * 1_000_000 + fraction),
        _ => None,
    }
}

fn base64(bytes: &[u8]) -> Value {
    use base64::Engine;
    json!(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// Microseconds of milliseconds, as fastavro makes a datetime of them
/// (an overflow is a value Python cannot hold either).
fn ms_to_us(ms: i64) -> i64 {
    ms.checked_mul(1000).unwrap_or(i64::MAX)
}

/// Mostly values Python holds, and some at i32's or i64's ends.
fn instant(in_range: std::ops::Range<i64>) -> impl Strategy<Value = i64> {
    prop_oneof![4 => in_range, 1 => any::<i64>()]
}

/// A datum of `t`, and what Bizon writes for it.
fn datum(t: &Ty) -> BoxedStrategy<(Avro, Expect)> {
    let j = |v: Value| Expect::Json(v);
    match t {
        Ty::Null => Just((Avro::Null, j(Value::Null))).boxed(),
        Ty::Boolean => any::<bool>().prop_map(move |b| (Avro::Boolean(b), j(json!(b)))).boxed(),
        Ty::Int => any::<i32>().prop_map(move |i| (Avro::Int(i), j(json!(i)))).boxed(),
        Ty::Long => any::<i64>().prop_map(move |i| (Avro::Long(i), j(json!(i)))).boxed(),
        // orjson writes NaN and the infinities as null, like serde_json.
        Ty::Float => any::<f32>()
            .prop_map(move |f| (Avro::Float(f), j(Value::from(f64::from(f)))))
            .boxed(),
        Ty::Double => any::<f64>()
            .prop_map(move |f| (Avro::Double(f), j(Value::from(f))))
            .boxed(),
        Ty::Bytes => prop::collection::vec(any::<u8>(), 0..16)
            .prop_map(move |b| (Avro::Bytes(b.clone()), j(base64(&b))))
            .boxed(),
        Ty::Str => any::<String>()
            .prop_map(move |s| (Avro::String(s.clone()), j(json!(s))))
            .boxed(),
        Ty::Fixed(size) => {
            let size = *size;
            prop::collection::vec(any::<u8>(), size)
                .prop_map(move |b| (Avro::Fixed(size, b.clone()), j(base64(&b))))
                .boxed()
        }
        Ty::Enum(symbols) => {
            let symbols = symbols.clone();
            (0..symbols.len())
                .prop_map(move |i| (Avro::Enum(i as u32, symbols[i].clone()), j(json!(symbols[i]))))
                .boxed()
        }
        Ty::Date => prop_oneof![4 => -719_162i32..2_932_897, 1 => any::<i32>()]
            .prop_map(|d| (Avro::Date(d), Expect::Date(d.into())))
            .boxed(),
        Ty::TimeMillis => prop_oneof![4 => 0i32..86_400_000, 1 => any::<i32>()]
            .prop_map(|ms| (Avro::TimeMillis(ms), Expect::Time(i64::from(ms) * 1000)))
            .boxed(),
        Ty::TimeMicros => instant(0..DAY_US)
            .prop_map(|us| (Avro::TimeMicros(us), Expect::Time(us)))
            .boxed(),
        Ty::TimestampMillis => instant(FIRST_US / 1000..END_US / 1000)
            .prop_map(|ms| (Avro::TimestampMillis(ms), Expect::Timestamp(ms_to_us(ms), true)))
            .boxed(),
        Ty::TimestampMicros => instant(FIRST_US..END_US)
            .prop_map(|us| (Avro::TimestampMicros(us), Expect::Timestamp(us, true)))
            .boxed(),
        Ty::LocalTimestampMillis => instant(FIRST_US / 1000..END_US / 1000)
            .prop_map(|ms| (Avro::LocalTimestampMillis(ms), Expect::Timestamp(ms_to_us(ms), false)))
            .boxed(),
        Ty::LocalTimestampMicros => instant(FIRST_US..END_US)
            .prop_map(|us| (Avro::LocalTimestampMicros(us), Expect::Timestamp(us, false)))
            .boxed(),
        Ty::Uuid => any::<u128>()
            .prop_map(|u| {
                let hex = format!("{u:032x}");
                let text = format!(
                    "{}-{}-{}-{}-{}",
                    &hex[..8],
                    &hex[8..12],
                    &hex[12..16],
                    &hex[16..20],
                    &hex[20..]
                );
                (Avro::Uuid(apache_avro::Uuid::from_u128(u)), Expect::Json(json!(text)))
            })
            .boxed(),
        Ty::Array(items) => prop::collection::vec(datum(items), 0..4)
            .prop_map(|d| {
                let (values, expects) = d.into_iter().unzip();
                (Avro::Array(values), Expect::Array(expects))
            })
            .boxed(),
        Ty::Map(values) => prop::collection::btree_map(any::<String>(), datum(values), 0..4)
            .prop_map(|d| {
                let expects = d.iter().map(|(k, (_, e))| (k.clone(), e.clone())).collect();
                (
                    Avro::Map(d.into_iter().map(|(k, (v, _))| (k, v)).collect()),
                    Expect::Object(expects),
                )
            })
            .boxed(),
        Ty::Nullable(inner) => prop_oneof![
            Just((Avro::Union(0, Box::new(Avro::Null)), j(Value::Null))),
            datum(inner).prop_map(|(v, e)| (Avro::Union(1, Box::new(v)), e)),
        ]
        .boxed(),
        Ty::Record(fields) => {
            let names: Vec<String> = fields.iter().map(|(n, _)| n.clone()).collect();
            fields
                .iter()
                .map(|(_, t)| datum(t))
                .collect::<Vec<_>>()
                .prop_map(move |d| {
                    let (values, expects): (Vec<_>, Vec<_>) = d.into_iter().unzip();
                    (
                        Avro::Record(names.iter().cloned().zip(values).collect()),
                        Expect::Object(names.iter().cloned().zip(expects).collect()),
                    )
                })
                .boxed()
        }
    }
}

/// A decoded message's `value`, or why it was refused.
fn value_of(decoded: Decoded) -> Result<Result<Value, String>, TestCaseError> {
    match decoded {
        Decoded::Record(record) => {
            let data: Value = serde_json::from_str(&record.data)
                .map_err(|e| TestCaseError::fail(format!("source_data is not JSON ({e}): {}", record.data)))?;
            prop_assert_eq!(record.id, "partition_0_offset_42");
            Ok(Ok(data["value"].clone()))
        }
        Decoded::Bad(error) => Ok(Err(error)),
        Decoded::Skipped(why) => Err(TestCaseError::fail(format!("skipped ({why}) with every skip off"))),
        Decoded::Failed(why) => Err(TestCaseError::fail(format!("the registry answered, yet: {why}"))),
    }
}

/// What an error about a message with schema `id` must say.
fn names_the_schema(error: &str, id: u32) -> bool {
    error.contains(&format!("schema {id}")) || error.contains(&format!("schema id {id}"))
}

/// A schema with a named type in it made recursive: its node `at` (in
/// preorder, modulo their count) replaced by `piece`.
fn garble(schema: &mut Value, at: usize, piece: &Value) {
    fn count(v: &Value) -> usize {
        1 + match v {
            Value::Array(items) => items.iter().map(count).sum(),
            Value::Object(m) => m.values().map(count).sum(),
            _ => 0,
        }
    }
    fn replace(v: &mut Value, at: &mut usize, piece: &Value) -> bool {
        if *at == 0 {
            *v = piece.clone();
            return true;
        }
        *at -= 1;
        match v {
            Value::Array(items) => items.iter_mut().any(|i| replace(i, at, piece)),
            Value::Object(m) => m.values_mut().any(|i| replace(i, at, piece)),
            _ => false,
        }
    }
    let mut at = at % count(schema);
    replace(schema, &mut at, piece);
}

/// Pieces a garbled schema is made of: names of its own records (a
/// type that holds itself), wrong types, broken logical types, fields
/// that are not what Avro says.
fn piece() -> impl Strategy<Value = Value> {
    prop::sample::select(vec![
        json!("Envelope"),
        json!(["null", "Envelope"]),
        json!({"type": "array", "items": "Envelope"}),
        json!("n1"),
        json!(["null", "n1"]),
        json!({"type": "map", "values": "n2"}),
        json!("nosuchtype"),
        json!({"type": "fixed", "name": "f", "size": -1}),
        json!({"type": "fixed", "name": "f", "size": 1e300}),
        json!({"type": "enum", "name": "e", "symbols": []}),
        json!({"type": "enum", "name": "e", "symbols": ["a", "a"]}),
        json!({"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 2}),
        json!({"type": "bytes", "logicalType": "decimal", "precision": 0, "scale": 9}),
        json!({"type": "fixed", "name": "d", "size": 12, "logicalType": "duration"}),
        json!({"type": "long", "logicalType": "timestamp-nanos"}),
        json!({"type": "array"}),
        json!({"type": "record", "name": "r", "fields": "x"}),
        json!({"type": "record", "name": "r", "fields": []}),
        json!(["int", "int"]),
        json!(["null", ["null"]]),
        json!([]),
        json!(null),
        json!(-1),
        json!(""),
        json!({}),
    ])
}

/// A registry body: bytes, JSON that is not a schema, Confluent's answer
/// shape (`{"schema": "..."}`), or a garbled schema.
fn registry_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        any::<String>().prop_map(String::into_bytes),
        top().prop_map(|t| json!({"schema": schema_text(&t)}).to_string().into_bytes()),
        top().prop_map(|t| schema_text(&t).as_bytes()[1..].to_vec()),
        Just(b"[]".to_vec()),
        Just(b"\"string\"".to_vec()),
        Just(b"{\"type\": \"string\"}".to_vec()),
        Just(b"<html>502 Bad Gateway</html>".to_vec()),
        (top(), prop::collection::vec((any::<usize>(), piece()), 1..4)).prop_map(|(t, pieces)| {
            let mut s = schema(&t, &mut 0);
            for (at, p) in &pieces {
                garble(&mut s, *at, p);
            }
            s.to_string().into_bytes()
        }),
    ]
}

/// Bodies for any schema: bytes, bytes of many zero or 0x02 (a union's
/// second branch, over and over), and counts Avro reads as huge.
fn avro_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..128),
        (any::<u8>(), 0usize..4096).prop_map(|(b, n)| vec![b; n]),
        prop::collection::vec(
            prop::sample::select(vec![
                vec![0x00],
                vec![0x02],
                vec![0x01, 0x00],
                vec![0xfe, 0xff, 0xff, 0xff, 0x0f],
                vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
                vec![0x80, 0x80, 0x80, 0x80, 0x02],
            ]),
            0..32
        )
        .prop_map(|p| p.concat()),
    ]
}

proptest! {
    #![proptest_config(super::config(64))]

    #[test]
    fn any_datum_bytes_give_a_record_or_an_error_naming_the_schema(t in top(), body in avro_body()) {
        let id = answer(200, schema_text(&t).into_bytes());
        if let Err(error) = value_of(decode(&framed(id, &body)))? {
            prop_assert!(names_the_schema(&error, id), "{error}");
        }
    }

    #[test]
    fn a_generated_datum_decodes_to_bizons_json((t, (datum, expect)) in top().prop_flat_map(|t| {
        let d = datum(&t);
        (Just(t), d)
    })) {
        let text = schema_text(&t);
        let parsed = apache_avro::Schema::parse_str(&text).unwrap();
        let bytes = apache_avro::to_avro_datum(&parsed, datum).unwrap();
        let id = answer(200, text.into_bytes());
        match value_of(decode(&framed(id, &bytes)))? {
            Err(error) if t.unbounded() => prop_assert!(names_the_schema(&error, id) && error.contains("take no bytes"), "{error}"),
            Ok(_) if t.unbounded() => prop_assert!(false, "an array of items that take no bytes was decoded"),
            Ok(value) => {
                prop_assert!(!expect.refused(), "wrote {value} for a value Bizon cannot write");
                expect.check(&value).map_err(TestCaseError::fail)?;
            }
            Err(error) => {
                prop_assert!(expect.refused(), "refused: {error}");
                prop_assert!(names_the_schema(&error, id) && error.contains("outside"), "{error}");
            }
        }
    }

    #[test]
    fn any_registry_answer_is_a_schema_or_an_error_naming_it(
        status in prop::sample::select(vec![200u16, 200, 200, 404, 500, 503, 302, 401]),
        body in registry_body(),
        datum in avro_body(),
    ) {
        let id = answer(status, body);
        match (status, decode(&framed(id, &datum))) {
            (200, decoded) => {
                if let Err(error) = value_of(decoded)? {
                    prop_assert!(names_the_schema(&error, id), "{error}");
                }
            }
            (404, Decoded::Bad(error)) => prop_assert!(error.contains(&format!("schema id {id} not found")), "{error}"),
            (_, Decoded::Failed(error)) => prop_assert!(
                error.contains(&format!("globalIds/{id}")) && error.contains(&format!("HTTP {status}")),
                "{error}"
            ),
            (_, Decoded::Bad(error)) => prop_assert!(false, "HTTP {status} taken as the message's fault: {error}"),
            (_, _) => prop_assert!(false, "HTTP {status} gave a record"),
        }
    }
}

/// Found by `a_generated_datum_decodes_to_bizons_json`: a date past
/// i64's microseconds (`Date(i32::MAX)`) overflowed (a panic in a debug
/// build, a wrong date in a release one), and dates, times and timestamps
/// Python cannot hold were written as text of another day. They are
/// refused, as fastavro refuses them in Bizon, naming the schema.
#[test]
fn dates_and_times_python_cannot_hold_are_refused() {
    let cases: [(&str, Avro); 6] = [
        (r#"{"type": "int", "logicalType": "date"}"#, Avro::Date(i32::MAX)),
        (r#"{"type": "int", "logicalType": "date"}"#, Avro::Date(-719_163)),
        (
            r#"{"type": "long", "logicalType": "timestamp-millis"}"#,
            Avro::TimestampMillis(i64::MAX),
        ),
        (
            r#"{"type": "long", "logicalType": "local-timestamp-micros"}"#,
            Avro::LocalTimestampMicros(END_US),
        ),
        (
            r#"{"type": "int", "logicalType": "time-millis"}"#,
            Avro::TimeMillis(86_400_000),
        ),
        (
            r#"{"type": "long", "logicalType": "time-micros"}"#,
            Avro::TimeMicros(-1),
        ),
    ];
    for (ty, value) in cases {
        let text = format!(r#"{{"type": "record", "name": "r", "fields": [{{"name": "at", "type": {ty}}}]}}"#);
        let schema = apache_avro::Schema::parse_str(&text).unwrap();
        let datum = apache_avro::to_avro_datum(&schema, Avro::Record(vec![("at".into(), value.clone())])).unwrap();
        let id = answer(200, text.into_bytes());
        match decode(&framed(id, &datum)) {
            Decoded::Bad(error) => assert!(names_the_schema(&error, id) && error.contains("outside"), "{error}"),
            _ => panic!("{value:?} decoded"),
        }
    }
}

/// A type that holds itself (a linked list through a union, or a record
/// field of its own type) made the decoder recurse once per level, with
/// no bound: 100 KB of `0x02` (the union's second branch) overflowed the
/// stack and aborted the process. Such schemas are refused, naming the
/// type.
#[test]
fn a_type_that_holds_itself_is_refused_not_a_stack_overflow() {
    // The host names the message's record `Envelope`, as Bizon does.
    for (field, body) in [
        (r#"["null", "Envelope"]"#, vec![0x02; 100_000]),
        (r#""Envelope""#, vec![]),
    ] {
        let text = format!(r#"{{"type": "record", "name": "list", "fields": [{{"name": "next", "type": {field}}}]}}"#);
        let id = answer(200, text.into_bytes());
        match decode(&framed(id, &body)) {
            Decoded::Bad(error) => assert!(names_the_schema(&error, id) && error.contains("`Envelope`"), "{error}"),
            _ => panic!("{field} decoded"),
        }
    }
}

/// An 11-byte message whose array claimed 500M items made apache-avro
/// reserve 28 GB for them before reading one, and the process aborted
/// (`memory allocation of 28000000000 bytes failed`); an array of `null`
/// could claim them for real, its items taking no bytes. The count is now
/// bounded, and arrays of items that take no bytes are refused.
#[test]
fn an_item_count_past_the_message_is_refused_not_an_abort() {
    // Avro's zigzag varint of 500,000,000, then the end of the array.
    let body = [0x80, 0x94, 0xeb, 0xdc, 0x03, 0x00];
    for (items, expected) in [("long", "maximum allowed"), ("null", "take no bytes")] {
        let text = format!(
            r#"{{"type": "record", "name": "r", "fields": [{{"name": "a", "type": {{"type": "array", "items": "{items}"}}}}]}}"#
        );
        let id = answer(200, text.into_bytes());
        match decode(&framed(id, &body)) {
            Decoded::Bad(error) => assert!(names_the_schema(&error, id) && error.contains(expected), "{error}"),
            _ => panic!("an array of 500M {items} decoded"),
        }
    }
}

/// Found by `any_registry_answer_is_a_schema_or_an_error_naming_it`:
/// apache-avro's schema parser unwraps on a named type whose name is not
/// an Avro name (`"name": ""`) and on such an alias: a panic in the
/// consumer from the registry's text. Such a schema is the message's
/// error, naming the schema id.
#[test]
fn a_schema_apache_avro_panics_on_is_an_error() {
    for inner in [
        r#"{"type": "record", "name": "", "fields": []}"#,
        r#"{"type": "enum", "name": "e", "aliases": ["not a name"], "symbols": ["A"]}"#,
    ] {
        let text = format!(r#"{{"type": "record", "name": "r", "fields": [{{"name": "a", "type": {inner}}}]}}"#);
        let id = answer(200, text.into_bytes());
        match decode(&framed(id, &[0])) {
            Decoded::Bad(error) => assert!(
                names_the_schema(&error, id) && error.contains("not an Avro schema"),
                "{error}"
            ),
            _ => panic!("{inner} decoded"),
        }
    }
}
