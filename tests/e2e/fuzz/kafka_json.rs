//! The Kafka decoder (`source::kafka::message::Decoder`, JSON text, which
//! checks and compacts keys and values in one pass: source/kafka/json.rs):
//! any bytes as key and value never panic, the verdict is serde_json's, an
//! accepted message's `source_data` is JSON whose key and value are the
//! message's, and any JSON value round-trips (pretty in, compact out).

use std::sync::Arc;

use bizon_host::source::kafka::message::{Decoded, Decoder};
use proptest::prelude::*;
use rdkafka::message::{OwnedMessage, Timestamp};
use serde_json::Value;

fn decoder() -> Decoder {
    Decoder {
        avro: None,
        topics: [("t".to_string(), Arc::from("events"))].into(),
        skip_empty_value: false,
        skip_invalid_keys: false,
        skip_on_decode_error: false,
    }
}

fn decode(key: Option<&[u8]>, value: &[u8]) -> Decoded {
    let message = OwnedMessage::new(
        Some(value.to_vec()),
        key.map(<[u8]>::to_vec),
        "t".into(),
        Timestamp::CreateTime(1_700_000_000_000),
        0,
        42,
        None,
    );
    decoder().decode(&message, 0)
}

/// serde_json's verdict on `bytes`, read as Bizon reads them (invalid UTF-8
/// replaced).
fn serde_value(bytes: &[u8]) -> Option<Value> {
    serde_json::from_str(&String::from_utf8_lossy(bytes)).ok()
}

/// Any JSON value: scalars (numbers of every shape, strings with escapes
/// and any characters), nested arrays and objects.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinities", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Bytes that are mostly JSON-ish: tokens, whitespace, escapes, odd
/// numbers and broken UTF-8, so the fast path's corners are reached more
/// often than with uniform bytes.
fn jsonish_bytes() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(b"{".to_vec()),
        Just(b"}".to_vec()),
        Just(b"[".to_vec()),
        Just(b"]".to_vec()),
        Just(b":".to_vec()),
        Just(b",".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"\\".to_vec()),
        Just(b"\\u".to_vec()),
        Just(b"\\ud800".to_vec()),
        Just(b" ".to_vec()),
        Just(b"\n\t\r".to_vec()),
        Just(b"true".to_vec()),
        Just(b"nul".to_vec()),
        Just(b"-0.5e+3".to_vec()),
        Just(b"1E400".to_vec()),
        Just(b"01".to_vec()),
        Just(b"\xff\xfe".to_vec()),
        Just("é\u{2028}".as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 1..4),
        prop::collection::vec(prop::sample::select(b"az09_.".to_vec()), 1..4),
    ];
    prop::collection::vec(token, 0..40).prop_map(|t| t.concat())
}

/// The decoder accepts exactly what serde_json accepts, and what it
/// writes holds the same key and value.
fn check(key: Option<&[u8]>, value: &[u8]) -> Result<(), TestCaseError> {
    let expected_key = match key {
        None | Some([]) => Some(Value::Object(Default::default())),
        Some(k) => serde_value(k),
    };
    let expected_value = serde_value(value);
    match decode(key, value) {
        Decoded::Record(record) => {
            let data: Value = serde_json::from_str(&record.data)
                .map_err(|e| TestCaseError::fail(format!("source_data is not JSON ({e}): {}", record.data)))?;
            prop_assert_eq!(Some(&data["keys"]), expected_key.as_ref());
            prop_assert_eq!(Some(&data["value"]), expected_value.as_ref());
            prop_assert_eq!(record.id, "partition_0_offset_42");
        }
        Decoded::Bad(error) => {
            prop_assert!(
                expected_key.is_none() || expected_value.is_none(),
                "refused what serde_json accepts: {error}"
            );
            prop_assert!(error.contains("not JSON"), "{error}");
        }
        Decoded::Skipped(why) => prop_assert!(false, "skipped ({why}) with every skip off"),
        Decoded::Failed(why) => prop_assert!(false, "failed ({why}) without a registry"),
    }
    Ok(())
}

proptest! {
    #![proptest_config(super::config(256))]

    #[test]
    fn any_bytes_get_serde_jsons_verdict(key in prop::option::of(prop::collection::vec(any::<u8>(), 0..64)),
                                         value in prop::collection::vec(any::<u8>(), 0..256)) {
        check(key.as_deref(), &value)?;
    }

    #[test]
    fn jsonish_bytes_get_serde_jsons_verdict(key in prop::option::of(jsonish_bytes()), value in jsonish_bytes()) {
        check(key.as_deref(), &value)?;
    }

    #[test]
    fn a_json_value_round_trips_compact(value in json_value(), key in json_value()) {
        let pretty = serde_json::to_vec_pretty(&value).unwrap();
        let Decoded::Record(record) = decode(Some(&serde_json::to_vec_pretty(&key).unwrap()), &pretty) else {
            return Err(TestCaseError::fail("refused valid JSON"));
        };
        // The value is the message's text without its whitespace: the
        // compact form, number text and key order kept.
        let compact = serde_json::to_string(&value).unwrap();
        prop_assert!(record.data.contains(&format!(",\"value\":{compact},\"schema\":")), "{} vs {compact}", record.data);
        // serde_json reads some floats back a bit off (its fast float
        // parsing): compared as read back, from the compact text.
        let data: Value = serde_json::from_str(&record.data).unwrap();
        let reread = |v: &Value| serde_json::from_str::<Value>(&serde_json::to_string(v).unwrap()).unwrap();
        prop_assert_eq!(&data["value"], &reread(&value));
        prop_assert_eq!(&data["keys"], &reread(&key));
    }
}

/// Found by the properties above: a number past f64's range (`1E400`) was
/// accepted, and made source_data that serde_json (and BigQuery's JSON)
/// cannot read back. It is refused, as orjson refuses it in Bizon.
#[test]
fn a_number_out_of_range_is_not_json() {
    for (key, value) in [(None, &b"1E400"[..]), (Some(&b"[-1e999]"[..]), &b"{}"[..])] {
        match decode(key, value) {
            Decoded::Bad(error) => assert!(error.contains("number out of range"), "{error}"),
            _ => panic!("{key:?} {value:?} accepted"),
        }
    }
}
