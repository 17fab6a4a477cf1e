//! Records to and from a transform, in the encoding it asked for
//! (wit/transform.wit): NDJSON lines with `source_data` embedded as a JSON
//! value, or an Arrow IPC stream with `source_data` as text. On the way
//! back, `source_data`'s text is kept byte for byte (what Python's
//! `json.dumps` wrote is what the destination gets).

use std::io::Write;
use std::sync::Arc;

use arrow_array::builder::{StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMicrosecondType;
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::component::InputFormat;
use crate::record::ndjson::write_json_string;
use crate::record::{timestamp_type, SourceRecord, DESTINATION_ID, SOURCE_DATA, SOURCE_RECORD_ID, SOURCE_TIMESTAMP};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct WireError(String);

/// The Arrow schema of a batch to or from a transform.
fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(SOURCE_RECORD_ID, DataType::Utf8, false),
        Field::new(SOURCE_TIMESTAMP, timestamp_type(), false),
        Field::new(DESTINATION_ID, DataType::Utf8, true),
        Field::new(SOURCE_DATA, DataType::Utf8, false),
    ]))
}

/// Replaces `out`'s content with `records` encoded as `format`.
pub fn encode(format: InputFormat, records: &[SourceRecord], out: &mut Vec<u8>) -> Result<(), WireError> {
    out.clear();
    match format {
        InputFormat::Ndjson => {
            for r in records {
                out.extend_from_slice(b"{\"source_record_id\":");
                write_json_string(&r.id, out);
                write!(out, ",\"source_timestamp\":{},\"destination_id\":", r.timestamp_us).expect("writing to a Vec");
                match &r.destination_id {
                    Some(id) => write_json_string(id, out),
                    None => out.extend_from_slice(b"null"),
                }
                out.extend_from_slice(b",\"source_data\":");
                out.extend_from_slice(r.data.as_bytes());
                out.extend_from_slice(b"}\n");
            }
            Ok(())
        }
        InputFormat::ArrowIpc => {
            let bytes: usize = records.iter().map(|r| r.id.len() + r.data.len()).sum();
            let mut ids = StringBuilder::with_capacity(records.len(), bytes);
            let mut times = TimestampMicrosecondBuilder::with_capacity(records.len()).with_timezone(crate::record::UTC);
            let mut dests = StringBuilder::new();
            let mut data = StringBuilder::with_capacity(records.len(), bytes);
            for r in records {
                ids.append_value(&r.id);
                times.append_value(r.timestamp_us);
                dests.append_option(r.destination_id.as_deref());
                data.append_value(&r.data);
            }
            let batch = RecordBatch::try_new(
                schema(),
                vec![
                    Arc::new(ids.finish()),
                    Arc::new(times.finish()),
                    Arc::new(dests.finish()),
                    Arc::new(data.finish()),
                ],
            )
            .map_err(|e| WireError(e.to_string()))?;
            let mut writer = arrow_ipc::writer::StreamWriter::try_new(&mut *out, &batch.schema())
                .map_err(|e| WireError(e.to_string()))?;
            writer.write(&batch).map_err(|e| WireError(e.to_string()))?;
            writer.finish().map_err(|e| WireError(e.to_string()))
        }
    }
}

/// An output line. With `row` (the index of the input record it comes
/// from), the metadata it leaves out is that record's.
#[derive(Deserialize)]
struct Row<'a> {
    #[serde(default)]
    row: Option<usize>,
    #[serde(borrow, default)]
    source_record_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    source_timestamp: Option<i64>,
    #[serde(borrow, default, deserialize_with = "present")]
    destination_id: Option<Option<std::borrow::Cow<'a, str>>>,
    #[serde(borrow)]
    source_data: &'a RawValue,
}

/// `destination_id: null` (no destination_id) apart from a missing key.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// What a transform returned for a batch: the records that replace it, and
/// the input rows whose output is not a record (source_data that is not
/// JSON), each with why. A guest is untrusted: its bad output fails the
/// records it stands for, not the host.
#[derive(Debug, Default)]
pub struct Decoded {
    pub records: Vec<SourceRecord>,
    pub rejected: Vec<(usize, String)>,
}

/// The records a transform returned for `input`. `intern` reuses the
/// input's destination_id strings rather than allocating one per record.
pub fn decode(
    format: InputFormat,
    bytes: &[u8],
    input: &[SourceRecord],
    intern: &mut Interner,
) -> Result<Decoded, WireError> {
    match format {
        InputFormat::Ndjson => {
            let text = std::str::from_utf8(bytes).map_err(|e| WireError(format!("output is not UTF-8: {e}")))?;
            let mut decoded = Decoded::default();
            for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                let error = |message: String| WireError(format!("output line {}: {message}", n + 1));
                if line.starts_with("{\"rows\":") {
                    rows_line(line, input, &mut decoded).map_err(error)?;
                    continue;
                }
                // The usual line: only source_data needs checking.
                if let Some((row, data)) = row_line(line) {
                    let from = input
                        .get(row)
                        .ok_or_else(|| error(format!("`row` {row} is not a row of the {}-row input", input.len())))?;
                    match serde_json::from_str::<serde::de::IgnoredAny>(data) {
                        Ok(_) => {
                            decoded.records.push(keeping(from, data));
                            continue;
                        }
                        // Unless the line holds more keys after source_data.
                        Err(e) if serde_json::from_str::<Row>(line).is_err() => {
                            decoded
                                .rejected
                                .push((row, format!("output line {}: source_data is not JSON: {e}", n + 1)));
                            continue;
                        }
                        Err(_) => {}
                    }
                }
                let row: Row = serde_json::from_str(line).map_err(|e| error(e.to_string()))?;
                let from =
                    match row.row {
                        Some(i) => Some(input.get(i).ok_or_else(|| {
                            error(format!("`row` {i} is not a row of the {}-row input", input.len()))
                        })?),
                        None => None,
                    };
                let id = match (row.source_record_id, from) {
                    (Some(id), _) => id.into_owned(),
                    (None, Some(r)) => r.id.clone(),
                    (None, None) => return Err(error("no `source_record_id` and no `row`".into())),
                };
                let timestamp_us = match (row.source_timestamp, from) {
                    (Some(t), _) => t,
                    (None, Some(r)) => r.timestamp_us,
                    (None, None) => return Err(error("no `source_timestamp` and no `row`".into())),
                };
                let destination_id = match (row.destination_id, from) {
                    (Some(d), _) => d.map(|d| intern.get(&d)),
                    (None, Some(r)) => r.destination_id.clone(),
                    (None, None) => None,
                };
                decoded.records.push(SourceRecord {
                    id,
                    timestamp_us,
                    data: row.source_data.get().to_string(),
                    destination_id,
                });
            }
            Ok(decoded)
        }
        InputFormat::ArrowIpc => {
            let reader = arrow_ipc::reader::StreamReader::try_new(bytes, None).map_err(|e| WireError(e.to_string()))?;
            let mut records = Vec::new();
            for batch in reader {
                let batch = batch.map_err(|e| WireError(e.to_string()))?;
                let column = |name: &str| {
                    batch
                        .column_by_name(name)
                        .ok_or_else(|| WireError(format!("output has no `{name}` column")))
                };
                let ids = column(SOURCE_RECORD_ID)?
                    .as_string_opt::<i32>()
                    .ok_or_else(|| WireError("source_record_id is not utf8".into()))?;
                let times = column(SOURCE_TIMESTAMP)?
                    .as_primitive_opt::<TimestampMicrosecondType>()
                    .ok_or_else(|| WireError("source_timestamp is not a microsecond timestamp".into()))?;
                let dests = column(DESTINATION_ID)?
                    .as_string_opt::<i32>()
                    .ok_or_else(|| WireError("destination_id is not utf8".into()))?;
                let data = column(SOURCE_DATA)?
                    .as_string_opt::<i32>()
                    .ok_or_else(|| WireError("source_data is not utf8".into()))?;
                for row in 0..batch.num_rows() {
                    // No row index to blame an input record with: the batch fails.
                    serde_json::from_str::<serde::de::IgnoredAny>(data.value(row)).map_err(|e| {
                        WireError(format!(
                            "output record {} (source_record_id `{}`): source_data is not JSON: {e}",
                            records.len(),
                            ids.value(row)
                        ))
                    })?;
                    records.push(SourceRecord {
                        id: ids.value(row).to_string(),
                        timestamp_us: times.value(row),
                        data: data.value(row).to_string(),
                        destination_id: dests.is_valid(row).then(|| intern.get(dests.value(row))),
                    });
                }
            }
            Ok(Decoded {
                records,
                rejected: Vec::new(),
            })
        }
    }
}

/// `{"rows": [N, ...], "source_data": [DATA, ...]}`: the records of rows
/// N, ... with their metadata and each DATA as its source_data. Parsing it
/// checks every DATA; one that is not JSON fails the batch, as the line
/// cannot be split without it.
fn rows_line(line: &str, input: &[SourceRecord], decoded: &mut Decoded) -> Result<(), String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Rows<'a> {
        rows: Vec<usize>,
        #[serde(borrow)]
        source_data: Vec<&'a RawValue>,
    }
    let bulk: Rows = serde_json::from_str(line).map_err(|e| e.to_string())?;
    if bulk.rows.len() != bulk.source_data.len() {
        return Err(format!(
            "{} `rows` but {} `source_data`",
            bulk.rows.len(),
            bulk.source_data.len()
        ));
    }
    decoded.records.reserve(bulk.rows.len());
    for (row, data) in bulk.rows.into_iter().zip(bulk.source_data) {
        let from = input
            .get(row)
            .ok_or_else(|| format!("`rows` holds {row}, not a row of the {}-row input", input.len()))?;
        decoded.records.push(keeping(from, data.get()));
    }
    Ok(())
}

/// The record of input row `from` with `data` as its source_data.
fn keeping(from: &SourceRecord, data: &str) -> SourceRecord {
    SourceRecord {
        id: from.id.clone(),
        timestamp_us: from.timestamp_us,
        data: data.to_string(),
        destination_id: from.destination_id.clone(),
    }
}

/// `{"row":N,"source_data":DATA}`, the line the SDKs and the Python runtime
/// write for a record that keeps its input's metadata: N and DATA (unchecked).
fn row_line(line: &str) -> Option<(usize, &str)> {
    let rest = line.strip_prefix("{\"row\":")?;
    let digits = rest.find(|c: char| !c.is_ascii_digit())?;
    let row = rest[..digits].parse().ok()?;
    let data = rest[digits..].strip_prefix(",\"source_data\":")?.strip_suffix('}')?;
    Some((row, data))
}

/// destination_id strings seen in a batch, shared by the records that name them.
#[derive(Default)]
pub struct Interner(Vec<Arc<str>>);

impl Interner {
    pub fn new(records: &[SourceRecord]) -> Self {
        let mut seen: Vec<Arc<str>> = Vec::new();
        for id in records.iter().filter_map(|r| r.destination_id.as_ref()) {
            if !seen.iter().any(|s| Arc::ptr_eq(s, id) || **s == **id) {
                seen.push(id.clone());
            }
        }
        Self(seen)
    }

    fn get(&mut self, id: &str) -> Arc<str> {
        if let Some(s) = self.0.iter().find(|s| &***s == id) {
            return s.clone();
        }
        let s: Arc<str> = id.into();
        self.0.push(s.clone());
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records() -> Vec<SourceRecord> {
        vec![
            SourceRecord {
                id: "a\"1".into(),
                timestamp_us: 5,
                data: r#"{"x": [1, 2.5, "é"]}"#.into(),
                destination_id: Some("users".into()),
            },
            SourceRecord {
                id: "2".into(),
                timestamp_us: -1,
                data: "null".into(),
                destination_id: None,
            },
        ]
    }

    #[test]
    fn both_encodings_round_trip_records_exactly() {
        for format in [InputFormat::Ndjson, InputFormat::ArrowIpc] {
            let mut out = Vec::new();
            encode(format, &records(), &mut out).unwrap();
            let back = decode(format, &out, &[], &mut Interner::new(&records())).unwrap();
            assert_eq!(back.records, records(), "{format:?}");
        }
    }

    #[test]
    fn a_bad_output_line_is_named() {
        let decode = |text: &str| {
            decode(
                InputFormat::Ndjson,
                text.as_bytes(),
                &records(),
                &mut Interner::default(),
            )
        };
        let err = decode("{\"source_record_id\":\"1\"}\n").unwrap_err();
        assert!(err.to_string().starts_with("output line 1:"), "{err}");
        let err = decode("{\"row\":2,\"source_data\":{}}\n").unwrap_err();
        assert!(
            err.to_string().contains("`row` 2 is not a row of the 2-row input"),
            "{err}"
        );
        let err = decode("{\"source_timestamp\":1,\"source_data\":{}}\n").unwrap_err();
        assert!(err.to_string().contains("no `source_record_id` and no `row`"), "{err}");
    }

    #[test]
    fn a_row_index_stands_for_the_metadata_left_out() {
        let out = "{\"row\":0,\"source_data\":{\"a\": 1}}\n{\"row\":0,\"destination_id\":null,\"source_record_id\":\"x\",\"source_data\":[]}\n";
        let back = decode(
            InputFormat::Ndjson,
            out.as_bytes(),
            &records(),
            &mut Interner::default(),
        )
        .unwrap()
        .records;
        assert_eq!(back[0].id, "a\"1");
        assert_eq!(back[0].timestamp_us, 5);
        assert_eq!(back[0].destination_id.as_deref(), Some("users"));
        assert_eq!(back[0].data, "{\"a\": 1}");
        assert_eq!((back[1].id.as_str(), back[1].destination_id.as_deref()), ("x", None));
    }

    #[test]
    fn source_data_that_is_not_json_fails_its_row_alone() {
        let out = concat!(
            "{\"row\":1,\"source_data\":{\"a\": [1, 2]}}\n",
            "{\"row\":0,\"source_data\":{\"a\": 1}, \"b\"}\n",
            "{\"row\":0,\"source_data\":nul}\n",
            // Keys after source_data: a record, read in full.
            "{\"row\":0,\"source_data\":{},\"destination_id\":\"x\"}\n",
        );
        let back = decode(
            InputFormat::Ndjson,
            out.as_bytes(),
            &records(),
            &mut Interner::default(),
        )
        .unwrap();
        assert_eq!(back.records.len(), 2);
        assert_eq!(
            (back.records[0].id.as_str(), back.records[0].data.as_str()),
            ("2", "{\"a\": [1, 2]}")
        );
        assert_eq!(
            (back.records[1].data.as_str(), back.records[1].destination_id.as_deref()),
            ("{}", Some("x"))
        );
        let rows: Vec<_> = back.rejected.iter().map(|(row, _)| *row).collect();
        assert_eq!(rows, [0, 0]);
        assert!(
            back.rejected[0].1.starts_with("output line 2: source_data is not JSON"),
            "{:?}",
            back.rejected
        );
        assert!(
            back.rejected[1].1.starts_with("output line 3: source_data is not JSON"),
            "{:?}",
            back.rejected
        );
    }

    #[test]
    fn a_rows_line_is_one_record_per_row() {
        let out = "{\"rows\":[1,0,1],\"source_data\":[{\"a\": 1}, \"x\", null]}\n";
        let back = decode(
            InputFormat::Ndjson,
            out.as_bytes(),
            &records(),
            &mut Interner::default(),
        )
        .unwrap();
        let got: Vec<_> = back.records.iter().map(|r| (r.id.as_str(), r.data.as_str())).collect();
        assert_eq!(got, [("2", "{\"a\": 1}"), ("a\"1", "\"x\""), ("2", "null")]);
        assert_eq!(back.records[1].destination_id.as_deref(), Some("users"));
        let bad = |text: &str| {
            decode(
                InputFormat::Ndjson,
                text.as_bytes(),
                &records(),
                &mut Interner::default(),
            )
            .unwrap_err()
            .to_string()
        };
        assert!(bad("{\"rows\":[0,1],\"source_data\":[1]}").contains("2 `rows` but 1 `source_data`"));
        assert!(bad("{\"rows\":[2],\"source_data\":[1]}").contains("`rows` holds 2, not a row of the 2-row input"));
        assert!(bad("{\"rows\":[0],\"source_data\":[nul]}").starts_with("output line 1:"));
    }
}
