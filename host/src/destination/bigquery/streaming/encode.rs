//! insertAll requests of a batch: rows as `{"insertId":..,"json":{..}}`
//! objects, at most `bq_max_rows_per_request` rows and [`REQUEST_BUDGET`]
//! bytes a request, handed over as each request fills so that memory holds
//! a few requests, not a whole batch as JSON.

use std::ops::Range;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMicrosecondType;
use arrow_array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};

use super::super::identity;
use crate::destination::{Batch, DestinationError, RejectedRow};
use crate::record::ndjson::write_json_string;
use crate::record::time::write_iso8601_us;
use crate::record::{BIZON_EXTRACTED_AT, BIZON_ID, BIZON_LOADED_AT, SOURCE_DATA, SOURCE_RECORD_ID, SOURCE_TIMESTAMP};

/// insertAll refuses requests over 10 MB; the envelope and HTTP framing ride along.
pub const REQUEST_BUDGET: usize = 9_000_000;

/// Rows encoded at a time before they are cut into requests: a batch is
/// never held as JSON all at once, only the requests in flight are.
const ROWS_PER_SLICE: usize = 1024;

/// One request's rows: their indexes in the batch and their encoded
/// `{"insertId":..,"json":{..}}` objects, as ranges of `buf`.
#[derive(Debug, Default)]
pub struct Request {
    pub rows: Vec<usize>,
    pub spans: Vec<Range<usize>>,
    pub buf: Vec<u8>,
}

impl Request {
    /// The rows' JSON and a separator each.
    fn bytes(&self) -> usize {
        self.buf.len() + self.rows.len()
    }

    /// The request body holding `positions` (indexes into `rows`).
    pub fn body(&self, positions: &[usize]) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.bytes() + 32);
        body.extend_from_slice(br#"{"rows":["#);
        for (k, &p) in positions.iter().enumerate() {
            if k > 0 {
                body.push(b',');
            }
            body.extend_from_slice(&self.buf[self.spans[p].clone()]);
        }
        body.extend_from_slice(b"]}");
        body
    }
}

/// A whole batch's requests (tests, benchmarks).
#[derive(Debug, Default)]
pub struct Encoded {
    pub requests: Vec<Request>,
    /// Rows that alone exceed a request.
    pub too_large: Vec<RejectedRow>,
}

impl Encoded {
    pub fn body(&self, request: &Request, positions: &[usize]) -> Vec<u8> {
        request.body(positions)
    }
}

/// Stable within a run, different between runs: unnested rows have no id of
/// their own, and two runs' rows must not de-duplicate each other.
fn run_nonce() -> u64 {
    static NONCE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *NONCE.get_or_init(|| fastrand::u64(..))
}

/// FNV-1a: the insertId prefix of a destination_id.
fn fnv1a(seed: u64, s: &str) -> u64 {
    identity::fnv1a(0xcbf2_9ce4_8422_2325 ^ seed, s.as_bytes())
}

/// What a raw row's insertId is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertIds {
    /// The row's `_bizon_id`: new every run, so only a retry within the run
    /// de-duplicates.
    BizonId,
    /// 128 bits of FNV-1a over destination_id, source_record_id and
    /// source_data: the same Kafka message (topic, partition, offset) read
    /// again after a crash gets the same id, so a restart within BigQuery's
    /// de-duplication window (about a minute) does not double it.
    SourceIdentity,
}

/// Splits a batch into insertAll requests of at most `max_rows` rows and
/// `budget` bytes. Raw rows carry `ids` as insertId; unnested rows
/// `<hash(run, destination_id)>-<sequence>-<row>`, so a retried batch sends
/// the same ids and BigQuery de-duplicates (best effort, about a minute).
pub fn encode(
    batch: &Batch,
    unnest: bool,
    ids: InsertIds,
    max_rows: usize,
    budget: usize,
) -> Result<Encoded, DestinationError> {
    let mut requests = Vec::new();
    let too_large = encode_each(batch, unnest, ids, max_rows, budget, |r| {
        requests.push(r);
        true
    })?;
    Ok(Encoded { requests, too_large })
}

/// [`encode`], handing each request to `emit` as soon as it is full; `emit`
/// answering `false` stops the encoding. Returns the rows too large for any
/// request.
pub fn encode_each(
    batch: &Batch,
    unnest: bool,
    ids: InsertIds,
    max_rows: usize,
    budget: usize,
    mut emit: impl FnMut(Request) -> bool,
) -> Result<Vec<RejectedRow>, DestinationError> {
    let n = batch.records.num_rows();
    let mut too_large = Vec::new();
    let mut current = Request::default();
    let (mut scratch, mut ends) = (Vec::new(), Vec::new());
    for first in (0..n).step_by(ROWS_PER_SLICE) {
        let slice = batch.records.slice(first, ROWS_PER_SLICE.min(n - first));
        scratch.clear();
        ends.clear();
        if unnest {
            encode_unnested(batch, &slice, first, &mut scratch, &mut ends)?;
        } else {
            encode_raw(&batch.destination_id, &slice, ids, &mut scratch, &mut ends)?;
        }
        let mut start = 0;
        for (k, &end) in ends.iter().enumerate() {
            let (row, len) = (first + k, end - start);
            if len + 16 > budget {
                too_large.push(RejectedRow {
                    row: row as u64,
                    reason: format!("the row is {len} bytes of JSON; an insertAll request holds at most {budget}"),
                });
                start = end;
                continue;
            }
            let full = current.rows.len() == max_rows || current.bytes() + len + 16 > budget;
            if full && !emit(std::mem::take(&mut current)) {
                return Ok(too_large);
            }
            let at = current.buf.len();
            current.buf.extend_from_slice(&scratch[start..end]);
            current.rows.push(row);
            current.spans.push(at..at + len);
            start = end;
        }
    }
    if !current.rows.is_empty() {
        emit(current);
    }
    Ok(too_large)
}

fn column<'a>(records: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, DestinationError> {
    records
        .column_by_name(name)
        .ok_or_else(|| DestinationError::Fatal(format!("batch has no `{name}` column (unnest is off)")))
}

fn strings<'a>(records: &'a RecordBatch, name: &str) -> Result<&'a StringArray, DestinationError> {
    column(records, name)?
        .as_string_opt::<i32>()
        .ok_or_else(|| DestinationError::Fatal(format!("`{name}` is not a string column")))
}

fn micros<'a>(
    records: &'a RecordBatch,
    name: &str,
) -> Result<&'a arrow_array::PrimitiveArray<TimestampMicrosecondType>, DestinationError> {
    column(records, name)?
        .as_primitive_opt::<TimestampMicrosecondType>()
        .ok_or_else(|| DestinationError::Fatal(format!("`{name}` is not a microsecond timestamp column")))
}

/// Bizon's raw columns by hand: the JSON shape is the same for every row,
/// and `_source_data` goes as the JSON text in a string, which is what a JSON
/// column takes in insertAll (and what Bizon sends).
fn encode_raw(
    destination_id: &str,
    records: &RecordBatch,
    insert_ids: InsertIds,
    buf: &mut Vec<u8>,
    row_ends: &mut Vec<usize>,
) -> Result<(), DestinationError> {
    let ids = strings(records, BIZON_ID)?;
    let record_ids = strings(records, SOURCE_RECORD_ID)?;
    let data = strings(records, SOURCE_DATA)?;
    let source_ts = micros(records, SOURCE_TIMESTAMP)?;
    let extracted = micros(records, BIZON_EXTRACTED_AT)?;
    let loaded = micros(records, BIZON_LOADED_AT)?;
    let timestamp = |buf: &mut Vec<u8>, key: &[u8], a: &arrow_array::PrimitiveArray<_>, i: usize| {
        buf.extend_from_slice(key);
        buf.push(b'"');
        write_iso8601_us(a.value(i), buf);
        buf.push(b'"');
    };
    for i in 0..records.num_rows() {
        buf.extend_from_slice(br#"{"insertId":"#);
        match insert_ids {
            InsertIds::BizonId => write_json_string(ids.value(i), buf),
            InsertIds::SourceIdentity => {
                let data = if data.is_valid(i) { data.value(i) } else { "" };
                let id = identity::row_id(destination_id, record_ids.value(i), data.as_bytes());
                write_json_string(&id, buf);
            }
        }
        buf.extend_from_slice(br#","json":{"_source_record_id":"#);
        write_json_string(record_ids.value(i), buf);
        timestamp(buf, br#","_source_timestamp":"#, source_ts, i);
        if data.is_valid(i) {
            buf.extend_from_slice(br#","_source_data":"#);
            write_json_string(data.value(i), buf);
        }
        timestamp(buf, br#","_bizon_extracted_at":"#, extracted, i);
        timestamp(buf, br#","_bizon_loaded_at":"#, loaded, i);
        buf.extend_from_slice(br#","_bizon_id":"#);
        write_json_string(ids.value(i), buf);
        buf.extend_from_slice(b"}}");
        row_ends.push(buf.len());
    }
    Ok(())
}

/// The record_schema columns through arrow-json, timestamps first turned into
/// RFC 3339 text with microseconds (arrow-json would need the tz database to
/// print zone names, and epoch numbers lose the fraction in some readers).
fn encode_unnested(
    batch: &Batch,
    records: &RecordBatch,
    first_row: usize,
    buf: &mut Vec<u8>,
    row_ends: &mut Vec<usize>,
) -> Result<(), DestinationError> {
    let mut fields = Vec::with_capacity(records.num_columns());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(records.num_columns());
    for (field, array) in records.schema().fields().iter().zip(records.columns()) {
        if let DataType::Timestamp(unit, _) = field.data_type() {
            let us = arrow_cast::cast(array, &DataType::Timestamp(TimeUnit::Microsecond, None)).map_err(|e| {
                DestinationError::Fatal(format!(
                    "column `{}`: {unit:?} timestamps to microseconds: {e}",
                    field.name()
                ))
            })?;
            let us = us.as_primitive::<TimestampMicrosecondType>();
            let mut text = Vec::with_capacity(32);
            let strings: StringArray = (0..us.len())
                .map(|i| {
                    us.is_valid(i).then(|| {
                        text.clear();
                        write_iso8601_us(us.value(i), &mut text);
                        String::from_utf8(text.clone()).expect("ASCII")
                    })
                })
                .collect();
            fields.push(Field::new(field.name(), DataType::Utf8, true));
            columns.push(Arc::new(strings));
        } else {
            fields.push(field.as_ref().clone());
            columns.push(array.clone());
        }
    }
    let textual = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| DestinationError::Fatal(format!("preparing rows for insertAll: {e}")))?;
    let mut lines = Vec::with_capacity(textual.get_array_memory_size());
    let mut writer = arrow_json::LineDelimitedWriter::new(&mut lines);
    writer
        .write(&textual)
        .and_then(|_| writer.finish())
        .map_err(|e| DestinationError::Fatal(format!("rows of `{}` as JSON: {e}", batch.destination_id)))?;
    let prefix = format!("{:016x}-{}-", fnv1a(run_nonce(), &batch.destination_id), batch.sequence);
    let mut row = itoa::Buffer::new();
    for (i, line) in lines.split(|&b| b == b'\n').take(records.num_rows()).enumerate() {
        buf.extend_from_slice(br#"{"insertId":""#);
        buf.extend_from_slice(prefix.as_bytes());
        buf.extend_from_slice(row.format(first_row + i).as_bytes());
        buf.extend_from_slice(br#"","json":"#);
        buf.extend_from_slice(line);
        buf.push(b'}');
        row_ends.push(buf.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::record::{BizonIdGenerator, RecordBuilder, SourceRecord};

    fn raw_batch(n: u64, data: impl Fn(u64) -> String) -> Batch {
        let dest: Arc<str> = "t".into();
        let mut builder = RecordBuilder::new(dest.clone());
        let mut ids = BizonIdGenerator::new();
        for k in 0..n {
            let record = SourceRecord {
                id: k.to_string(),
                timestamp_us: 1_700_000_000_000_007 + k as i64,
                data: data(k),
                destination_id: None,
            };
            builder.append(&mut ids, 1_700_000_000_000_000, &record);
        }
        Batch {
            destination_id: dest,
            sequence: 3,
            records: builder.finish(1_700_000_000_123_456).unwrap(),
            source: Vec::new(),
        }
    }

    fn rows_of(encoded: &Encoded, request: &Request) -> Vec<Value> {
        let all: Vec<usize> = (0..request.rows.len()).collect();
        let body: Value = serde_json::from_slice(&encoded.body(request, &all)).unwrap();
        body["rows"].as_array().unwrap().clone()
    }

    #[test]
    fn raw_rows_carry_their_bizon_id_microseconds_and_the_record_as_json_text() {
        let batch = raw_batch(5, |k| format!(r#"{{"id":{k},"q":"a\"b"}}"#));
        let encoded = encode(&batch, false, InsertIds::BizonId, 2, REQUEST_BUDGET).unwrap();
        assert_eq!(
            encoded.requests.iter().map(|r| r.rows.clone()).collect::<Vec<_>>(),
            vec![vec![0, 1], vec![2, 3], vec![4]]
        );
        let row = &rows_of(&encoded, &encoded.requests[1])[1];
        let ids = batch.records.column_by_name(BIZON_ID).unwrap().as_string::<i32>();
        assert_eq!(row["insertId"], ids.value(3));
        assert_eq!(row["json"]["_bizon_id"], ids.value(3));
        assert_eq!(row["json"]["_source_record_id"], "3");
        assert_eq!(row["json"]["_source_timestamp"], "2023-11-14T22:13:20.000010+00:00");
        assert_eq!(row["json"]["_bizon_loaded_at"], "2023-11-14T22:13:20.123456+00:00");
        assert_eq!(row["json"]["_source_data"], r#"{"id":3,"q":"a\"b"}"#);
    }

    #[test]
    fn source_identity_insert_ids_are_the_same_for_the_same_message_read_again() {
        let kafka = |topic: &str, offset: u64| format!(r#"{{"topic":"{topic}","offset":{offset},"partition":0}}"#);
        let first = raw_batch(3, |k| kafka("users", k));
        // The same messages read again by another run: new bizon_ids, same insertIds.
        let again = raw_batch(3, |k| kafka("users", k));
        let ids = |batch: &Batch, how| {
            let encoded = encode(batch, false, how, 100, REQUEST_BUDGET).unwrap();
            rows_of(&encoded, &encoded.requests[0])
                .iter()
                .map(|r| r["insertId"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        assert_ne!(ids(&first, InsertIds::BizonId), ids(&again, InsertIds::BizonId));
        let source = ids(&first, InsertIds::SourceIdentity);
        assert_eq!(source, ids(&again, InsertIds::SourceIdentity));
        assert_eq!(source[1], identity::row_id("t", "1", kafka("users", 1).as_bytes()));
        assert_eq!(source[1].len(), 32);
        // Another topic's message at the same partition and offset is another row.
        let other = raw_batch(3, |k| kafka("orders", k));
        assert_ne!(source[1], ids(&other, InsertIds::SourceIdentity)[1]);
        let set: std::collections::BTreeSet<_> = source.iter().collect();
        assert_eq!(set.len(), 3);
    }

    #[test]
    fn requests_are_handed_over_as_they_fill_and_encoding_stops_when_the_sender_is_gone() {
        let batch = raw_batch(5000, |k| format!(r#"{{"id":{k}}}"#));
        let mut seen = Vec::new();
        let too_large = encode_each(&batch, false, InsertIds::BizonId, 100, REQUEST_BUDGET, |r| {
            seen.push(r.rows.clone());
            seen.len() < 3
        })
        .unwrap();
        assert!(too_large.is_empty());
        assert_eq!(seen.len(), 3, "nothing is encoded after the receiver said stop");
        assert_eq!(seen[2], (200..300).collect::<Vec<_>>());
    }

    #[test]
    fn requests_stay_under_the_byte_budget_and_an_oversized_row_is_rejected_alone() {
        let batch = raw_batch(10, |k| {
            let size = if k == 6 { 5000 } else { 300 };
            format!(r#"{{"pad":"{}"}}"#, "x".repeat(size))
        });
        let budget = 2000;
        let encoded = encode(&batch, false, InsertIds::BizonId, 10_000, budget).unwrap();
        assert_eq!(encoded.too_large.len(), 1);
        assert_eq!(encoded.too_large[0].row, 6);
        let sent: Vec<usize> = encoded.requests.iter().flat_map(|r| r.rows.clone()).collect();
        assert_eq!(sent, vec![0, 1, 2, 3, 4, 5, 7, 8, 9]);
        for request in &encoded.requests {
            let all: Vec<usize> = (0..request.rows.len()).collect();
            assert!(encoded.body(request, &all).len() <= budget);
        }
        assert!(encoded.requests.len() > 1);
    }

    #[test]
    fn unnested_rows_get_stable_insert_ids_and_rfc3339_microseconds() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new(
                "at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
                true,
            ),
        ]));
        let records = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(arrow_array::Int64Array::from(vec![1, 2])),
                Arc::new(
                    arrow_array::TimestampMicrosecondArray::from(vec![Some(1_700_000_000_000_001), None])
                        .with_timezone("+00:00"),
                ),
            ],
        )
        .unwrap();
        let batch = Batch {
            destination_id: "typed".into(),
            sequence: 9,
            records,
            source: Vec::new(),
        };
        let first = encode(&batch, true, InsertIds::BizonId, 100, REQUEST_BUDGET).unwrap();
        let again = encode(&batch, true, InsertIds::BizonId, 100, REQUEST_BUDGET).unwrap();
        let rows = rows_of(&first, &first.requests[0]);
        assert_eq!(
            rows,
            rows_of(&again, &again.requests[0]),
            "a retried batch sends the same insertIds"
        );
        assert!(rows[1]["insertId"].as_str().unwrap().ends_with("-9-1"));
        assert_ne!(rows[0]["insertId"], rows[1]["insertId"]);
        assert_eq!(rows[0]["json"]["at"], "2023-11-14T22:13:20.000001+00:00");
        assert_eq!(rows[1]["json"], serde_json::json!({"id": 2}));
    }
}
