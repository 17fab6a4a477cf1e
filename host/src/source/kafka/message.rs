//! A Kafka message as Bizon 0.6.4 makes it a record
//! (`bizon/connectors/sources/kafka/src/source.py` `parse_encoded_messages`):
//! `source_record_id` `partition_{p}_offset_{o}`, `source_timestamp` the
//! message time, `destination_id` from the topic map, and `source_data` the
//! compact JSON `{topic, offset, partition, timestamp, keys, headers, value,
//! schema}` in that order. Unlike Bizon, a message without a timestamp is
//! stamped with the time it was read (not 1969), and a null or non-UTF-8
//! header is kept (null, or with replacement characters) instead of
//! aborting the run.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use rdkafka::message::{Headers, Message};

use super::avro::{AvroDecoder, AvroError};
use super::json;
use crate::record::ndjson::push_json_string;
use crate::record::Letter;
use crate::record::SourceRecord;

pub enum Decoded {
    Record(SourceRecord),
    /// Dropped on purpose (`skip_message_*`), with why.
    Skipped(&'static str),
    /// Cannot become a record: to the dead letter, or the run stops.
    Bad(String),
    /// Not the message's fault (the schema registry cannot be reached):
    /// the run stops without moving past it.
    Failed(String),
}

pub struct Decoder {
    /// Avro with a schema registry; JSON text (`utf-8`) without.
    pub avro: Option<RefCell<AvroDecoder>>,
    pub topics: HashMap<String, Arc<str>>,
    pub skip_empty_value: bool,
    pub skip_invalid_keys: bool,
    pub skip_on_decode_error: bool,
}

impl Decoder {
    /// `source_data` is written straight into one string: the key and the
    /// value are checked and made compact into it (`json::append`), headers
    /// escaped into it, with no text in between.
    pub fn decode<M: Message>(&self, message: &M, read_at_us: i64) -> Decoded {
        let value = message.payload().unwrap_or_default();
        if self.skip_empty_value && value.is_empty() {
            return Decoded::Skipped("empty value (tombstone)");
        }
        let key = message.key().unwrap_or_default();
        let timestamp_ms = message.timestamp().to_millis();
        let mut data = String::with_capacity(160 + message.topic().len() + key.len() + value.len());
        data.push_str("{\"topic\":");
        push_json_string(message.topic(), &mut data);
        data.push_str(",\"offset\":");
        data.push_str(itoa::Buffer::new().format(message.offset()));
        data.push_str(",\"partition\":");
        data.push_str(itoa::Buffer::new().format(message.partition()));
        data.push_str(",\"timestamp\":");
        match timestamp_ms {
            Some(ms) => data.push_str(itoa::Buffer::new().format(ms)),
            None => data.push_str("null"),
        }
        data.push_str(",\"keys\":");
        if key.is_empty() {
            data.push_str("{}");
        } else if let Err(e) = json::append(key, &mut data) {
            if self.skip_invalid_keys {
                tracing::debug!("skipped a message with an invalid key: {e}");
                return Decoded::Skipped("invalid key");
            }
            return self.bad(format!("the key is not JSON: {e}"));
        }
        data.push_str(",\"headers\":");
        push_headers(message, &mut data);
        data.push_str(",\"value\":");
        let schema = match &self.avro {
            None => match json::append(value, &mut data) {
                Ok(()) => None,
                Err(e) => return self.bad(format!("the value is not JSON: {e}")),
            },
            Some(avro) => match avro.borrow_mut().decode(value) {
                Ok((v, schema)) => {
                    data.push_str(&v);
                    Some(schema)
                }
                Err(AvroError::Message(e)) => return self.bad(e),
                Err(AvroError::Registry(e)) => return Decoded::Failed(e),
            },
        };
        let Some(destination_id) = self.topics.get(message.topic()) else {
            return self.bad(format!("topic `{}` is not in the topic map", message.topic()));
        };
        data.push_str(",\"schema\":");
        data.push_str(schema.as_ref().map_or("{}", |s| s.1.as_str()));
        data.push('}');
        let mut id = String::with_capacity(40);
        id.push_str("partition_");
        id.push_str(itoa::Buffer::new().format(message.partition()));
        id.push_str("_offset_");
        id.push_str(itoa::Buffer::new().format(message.offset()));
        Decoded::Record(SourceRecord {
            id,
            timestamp_us: timestamp_ms.map_or(read_at_us, |ms| ms.saturating_mul(1000)),
            data,
            destination_id: Some(destination_id.clone()),
        })
    }

    fn bad(&self, error: String) -> Decoded {
        if self.skip_on_decode_error {
            tracing::warn!("skipped a message that could not be decoded: {error}");
            Decoded::Skipped("decode error")
        } else {
            Decoded::Bad(error)
        }
    }
}

/// The dead letter of a message that could not be decoded.
pub fn letter<M: Message>(message: &M, error: String) -> Letter {
    let headers = message
        .headers()
        .map(|h| {
            h.iter()
                .map(|header| (header.key.to_string(), header.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default();
    Letter::Undecodable {
        topic: message.topic().to_string(),
        partition: message.partition(),
        offset: message.offset(),
        timestamp_ms: message.timestamp().to_millis(),
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().map(<[u8]>::to_vec),
        headers,
        error,
    }
}

/// `{name: value}`: null for a null header, text with replacement
/// characters for bytes that are not UTF-8. A repeated name keeps its last
/// value at its first place, as Bizon's dict comprehension does. Names are
/// compared pairwise: a message carries a handful of headers.
fn push_headers<M: Message>(message: &M, out: &mut String) {
    let Some(headers) = message.headers() else {
        out.push_str("{}");
        return;
    };
    out.push('{');
    let mut first = true;
    for i in 0..headers.count() {
        let name = headers.get(i).key;
        if (0..i).any(|j| headers.get(j).key == name) {
            continue;
        }
        let last = (i..headers.count())
            .rev()
            .map(|j| headers.get(j))
            .find(|h| h.key == name)
            .expect("header i has this name");
        if !first {
            out.push(',');
        }
        first = false;
        push_json_string(name, out);
        out.push(':');
        match last.value {
            None => out.push_str("null"),
            Some(bytes) => push_json_string(&String::from_utf8_lossy(bytes), out),
        }
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::{Header, OwnedHeaders, OwnedMessage, Timestamp};

    fn decoder() -> Decoder {
        Decoder {
            avro: None,
            topics: [("orders".to_string(), Arc::from("shop.orders"))].into(),
            skip_empty_value: true,
            skip_invalid_keys: false,
            skip_on_decode_error: false,
        }
    }

    fn message(key: Option<&[u8]>, value: Option<&[u8]>, ts: Timestamp, headers: Option<OwnedHeaders>) -> OwnedMessage {
        OwnedMessage::new(
            value.map(<[u8]>::to_vec),
            key.map(<[u8]>::to_vec),
            "orders".into(),
            ts,
            2,
            41,
            headers,
        )
    }

    #[test]
    fn a_message_becomes_bizons_record() {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "h",
                value: Some("v"),
            })
            .insert(Header::<&[u8]> {
                key: "null",
                value: None,
            })
            .insert(Header {
                key: "bin",
                value: Some(&[0xffu8][..]),
            });
        let m = message(
            Some(br#"{"id": 7}"#),
            Some(b"{ \"a\": [1, 2.50],\n \"s\": \"x y\" }"),
            Timestamp::CreateTime(1_714_566_600_123),
            Some(headers),
        );
        let Decoded::Record(r) = decoder().decode(&m, 5) else {
            panic!("decoded")
        };
        assert_eq!(r.id, "partition_2_offset_41");
        assert_eq!(r.timestamp_us, 1_714_566_600_123_000);
        assert_eq!(r.destination_id.as_deref(), Some("shop.orders"));
        assert_eq!(
            r.data,
            r#"{"topic":"orders","offset":41,"partition":2,"timestamp":1714566600123,"keys":{"id":7},"headers":{"h":"v","null":null,"bin":"�"},"value":{"a":[1,2.50],"s":"x y"},"schema":{}}"#
        );
    }

    #[test]
    fn no_timestamp_means_the_time_it_was_read() {
        let m = message(None, Some(b"{}"), Timestamp::NotAvailable, None);
        let Decoded::Record(r) = decoder().decode(&m, 1_000_000) else {
            panic!("decoded")
        };
        assert_eq!(r.timestamp_us, 1_000_000);
        assert!(r.data.contains("\"timestamp\":null,\"keys\":{},\"headers\":{}"));
    }

    #[test]
    fn tombstones_bad_keys_and_bad_values() {
        let d = decoder();
        let tombstone = message(None, None, Timestamp::NotAvailable, None);
        assert!(matches!(d.decode(&tombstone, 0), Decoded::Skipped(_)));
        let bad_key = message(Some(b"plain"), Some(b"{}"), Timestamp::NotAvailable, None);
        assert!(matches!(d.decode(&bad_key, 0), Decoded::Bad(e) if e.starts_with("the key is not JSON")));
        let bad_value = message(None, Some(b"{nope"), Timestamp::NotAvailable, None);
        assert!(matches!(d.decode(&bad_value, 0), Decoded::Bad(e) if e.starts_with("the value is not JSON")));
        let lenient = Decoder {
            skip_invalid_keys: true,
            skip_on_decode_error: true,
            ..decoder()
        };
        assert!(matches!(lenient.decode(&bad_key, 0), Decoded::Skipped("invalid key")));
        assert!(matches!(
            lenient.decode(&bad_value, 0),
            Decoded::Skipped("decode error")
        ));
    }
}
