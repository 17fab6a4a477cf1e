//! What could not become a record, or stay one: a message a source could
//! not decode, a row a destination or a transform refused. Sources and
//! transforms put letters in their pages; the pipeline hands them to the
//! run's `dead_letter` sink before the page can be acknowledged.

use std::collections::BTreeMap;

/// One thing that could not be written.
#[derive(Debug, Clone)]
pub enum Letter {
    /// A message the source could not turn into a record.
    Undecodable {
        topic: String,
        partition: i32,
        offset: i64,
        timestamp_ms: Option<i64>,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        /// Header values as bytes; `None` for a null header.
        headers: Vec<(String, Option<Vec<u8>>)>,
        error: String,
    },
    /// A row its destination refused.
    Rejected {
        destination_id: String,
        source_record_id: String,
        reason: String,
        source_data: Option<String>,
    },
}

impl Letter {
    /// The letter as one JSON object: byte fields in base64 (`*_base64`),
    /// and as text too when they are UTF-8.
    pub fn to_json(&self) -> serde_json::Value {
        use base64::Engine;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let text = |b: &[u8]| std::str::from_utf8(b).ok().map(str::to_string);
        match self {
            Letter::Undecodable {
                topic,
                partition,
                offset,
                timestamp_ms,
                key,
                value,
                headers,
                error,
            } => {
                let headers: BTreeMap<&str, serde_json::Value> = headers
                    .iter()
                    .map(|(k, v)| {
                        let v = match v {
                            None => serde_json::Value::Null,
                            Some(b) => match text(b) {
                                Some(t) => t.into(),
                                None => serde_json::json!({ "base64": b64(b) }),
                            },
                        };
                        (k.as_str(), v)
                    })
                    .collect();
                serde_json::json!({
                    "kind": "undecodable",
                    "topic": topic,
                    "partition": partition,
                    "offset": offset,
                    "timestamp": timestamp_ms,
                    "key": key.as_deref().and_then(text),
                    "key_base64": key.as_deref().map(b64),
                    "value": value.as_deref().and_then(text),
                    "value_base64": value.as_deref().map(b64),
                    "headers": headers,
                    "error": error,
                })
            }
            Letter::Rejected {
                destination_id,
                source_record_id,
                reason,
                source_data,
            } => serde_json::json!({
                "kind": "rejected",
                "destination_id": destination_id,
                "source_record_id": source_record_id,
                "reason": reason,
                "source_data": source_data,
            }),
        }
    }
}
