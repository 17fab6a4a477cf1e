//! Column builders for the records of one destination_id.

use std::sync::Arc;

use arrow_array::builder::{StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::{ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow_schema::ArrowError;

use super::{bizon_schema, BizonIdGenerator, SourceRecord};

/// Appends records of one destination_id into Bizon's columns.
pub struct RecordBuilder {
    destination_id: Arc<str>,
    bizon_id: StringBuilder,
    extracted_at: TimestampMicrosecondBuilder,
    source_record_id: StringBuilder,
    source_timestamp: TimestampMicrosecondBuilder,
    source_data: StringBuilder,
    rows: usize,
    bytes: usize,
}

/// Fixed bytes a row costs besides its strings: two timestamps, three
/// offsets and the 32-byte id.
const ROW_OVERHEAD: usize = 8 * 3 + 4 * 3 + 32;

impl RecordBuilder {
    pub fn new(destination_id: Arc<str>) -> Self {
        Self {
            destination_id,
            bizon_id: StringBuilder::new(),
            extracted_at: TimestampMicrosecondBuilder::new(),
            source_record_id: StringBuilder::new(),
            source_timestamp: TimestampMicrosecondBuilder::new(),
            source_data: StringBuilder::new(),
            rows: 0,
            bytes: 0,
        }
    }

    pub fn destination_id(&self) -> &Arc<str> {
        &self.destination_id
    }

    pub fn append(&mut self, ids: &mut BizonIdGenerator, extracted_at_us: i64, record: &SourceRecord) {
        let id = ids.next_id();
        // The generator only writes ASCII hex digits.
        self.bizon_id
            .append_value(std::str::from_utf8(&id).expect("uuid text is ascii"));
        self.extracted_at.append_value(extracted_at_us);
        self.source_record_id.append_value(&record.id);
        self.source_timestamp.append_value(record.timestamp_us);
        self.source_data.append_value(&record.data);
        self.rows += 1;
        self.bytes += ROW_OVERHEAD + record.id.len() + record.data.len();
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Bytes the buffered rows hold, the measure `buffer_size` is compared to.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Takes the buffered rows as a batch stamped with `loaded_at_us`, leaving
    /// the builder empty and ready for more.
    pub fn finish(&mut self, loaded_at_us: i64) -> Result<RecordBatch, ArrowError> {
        let rows = self.rows;
        let utc = |a: TimestampMicrosecondArray| a.with_timezone(super::UTC);
        let loaded_at = TimestampMicrosecondArray::from(vec![loaded_at_us; rows]);
        let destination_ids = StringArray::from_iter_values(std::iter::repeat_n(&*self.destination_id, rows));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.bizon_id.finish()),
            Arc::new(utc(self.extracted_at.finish())),
            Arc::new(utc(loaded_at)),
            Arc::new(self.source_record_id.finish()),
            Arc::new(utc(self.source_timestamp.finish())),
            Arc::new(self.source_data.finish()),
            Arc::new(destination_ids),
        ];
        // The next batch is likely as large as this one: reserving now
        // saves the copies of growing the builders by doubling.
        let data_bytes = self.bytes.saturating_sub(rows * ROW_OVERHEAD);
        self.bizon_id = StringBuilder::with_capacity(rows, rows * 32);
        self.source_record_id = StringBuilder::with_capacity(rows, rows * 8);
        self.source_data = StringBuilder::with_capacity(rows, data_bytes);
        self.extracted_at = TimestampMicrosecondBuilder::with_capacity(rows);
        self.source_timestamp = TimestampMicrosecondBuilder::with_capacity(rows);
        self.rows = 0;
        self.bytes = 0;
        RecordBatch::try_new(bizon_schema(), columns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;

    fn record(i: usize) -> SourceRecord {
        SourceRecord {
            id: i.to_string(),
            timestamp_us: i as i64,
            data: format!("{{\"id\":{i}}}"),
            destination_id: None,
        }
    }

    #[test]
    fn finish_yields_bizon_columns_and_empties_the_builder() {
        let mut ids = BizonIdGenerator::new();
        let mut b = RecordBuilder::new("users".into());
        b.append(&mut ids, 10, &record(1));
        b.append(&mut ids, 11, &record(2));
        assert_eq!(b.rows(), 2);
        assert!(b.bytes() > 0);
        let batch = b.finish(99).unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.schema(), bizon_schema());
        assert_eq!(batch.column(5).as_string::<i32>().value(1), "{\"id\":2}");
        assert_eq!(batch.column(6).as_string::<i32>().value(0), "users");
        assert_eq!(b.rows(), 0);
        assert_eq!(b.finish(100).unwrap().num_rows(), 0);
    }
}
