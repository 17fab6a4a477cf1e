use arrow_array::{Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow_schema::{DataType, TimeUnit};

use crate::Error;

pub const BIZON_ID: &str = "bizon_id";
pub const BIZON_EXTRACTED_AT: &str = "bizon_extracted_at";
pub const BIZON_LOADED_AT: &str = "bizon_loaded_at";
pub const SOURCE_RECORD_ID: &str = "source_record_id";
pub const SOURCE_TIMESTAMP: &str = "source_timestamp";
pub const SOURCE_DATA: &str = "source_data";
pub const DESTINATION_ID: &str = "destination_id";

/// Typed access to a batch in Bizon's layout (the default, `unnest: false`):
/// `source_data` is the record as JSON text, timestamps are microseconds since
/// the Unix epoch in UTC.
///
/// Columns are found by name, so extra columns or another order do not matter.
/// With `unnest: true` the batch holds the typed columns of the record schema
/// instead and [`BizonColumns::new`] fails; check with [`is_bizon_layout`].
#[derive(Debug, Clone, Copy)]
pub struct BizonColumns<'a> {
    bizon_id: &'a StringArray,
    bizon_extracted_at: &'a TimestampMicrosecondArray,
    bizon_loaded_at: &'a TimestampMicrosecondArray,
    source_record_id: &'a StringArray,
    source_timestamp: &'a TimestampMicrosecondArray,
    source_data: &'a StringArray,
    destination_id: &'a StringArray,
}

impl<'a> BizonColumns<'a> {
    pub fn new(batch: &'a RecordBatch) -> Result<Self, Error> {
        Ok(Self {
            bizon_id: string(batch, BIZON_ID)?,
            bizon_extracted_at: timestamp(batch, BIZON_EXTRACTED_AT)?,
            bizon_loaded_at: timestamp(batch, BIZON_LOADED_AT)?,
            source_record_id: string(batch, SOURCE_RECORD_ID)?,
            source_timestamp: timestamp(batch, SOURCE_TIMESTAMP)?,
            source_data: string(batch, SOURCE_DATA)?,
            destination_id: string(batch, DESTINATION_ID)?,
        })
    }

    pub fn len(&self) -> usize {
        self.bizon_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn bizon_id(&self, row: usize) -> &'a str {
        self.bizon_id.value(row)
    }

    pub fn bizon_extracted_at(&self, row: usize) -> i64 {
        self.bizon_extracted_at.value(row)
    }

    pub fn bizon_loaded_at(&self, row: usize) -> i64 {
        self.bizon_loaded_at.value(row)
    }

    pub fn source_record_id(&self, row: usize) -> &'a str {
        self.source_record_id.value(row)
    }

    pub fn source_timestamp(&self, row: usize) -> i64 {
        self.source_timestamp.value(row)
    }

    /// The record as JSON text, as the source produced it.
    pub fn source_data(&self, row: usize) -> &'a str {
        self.source_data.value(row)
    }

    pub fn destination_id(&self, row: usize) -> &'a str {
        self.destination_id.value(row)
    }

    /// The whole `source_data` column, for plugins that work column-wise.
    pub fn source_data_array(&self) -> &'a StringArray {
        self.source_data
    }
}

/// True when the batch carries Bizon's `source_data` column as text, i.e. it
/// was not unnested.
pub fn is_bizon_layout(batch: &RecordBatch) -> bool {
    string(batch, SOURCE_DATA).is_ok()
}

fn string<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a StringArray, Error> {
    column(batch, name)?
        .as_any()
        .downcast_ref()
        .ok_or_else(|| wrong_type(batch, name, "Utf8"))
}

fn timestamp<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a TimestampMicrosecondArray, Error> {
    let array = column(batch, name)?;
    // The tz annotation does not change the stored value (UTC micros), so any
    // microsecond timestamp is accepted.
    match array.data_type() {
        DataType::Timestamp(TimeUnit::Microsecond, _) => array
            .as_any()
            .downcast_ref()
            .ok_or_else(|| wrong_type(batch, name, "Timestamp(Microsecond)")),
        _ => Err(wrong_type(batch, name, "Timestamp(Microsecond)")),
    }
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a dyn Array, Error> {
    batch.column_by_name(name).map(|c| c.as_ref()).ok_or_else(|| {
        Error::msg(format!(
            "not a Bizon-layout batch: no `{name}` column (an unnest batch has the record schema's columns; read them from the RecordBatch)"
        ))
    })
}

fn wrong_type(batch: &RecordBatch, name: &str, expected: &str) -> Error {
    let actual = batch
        .column_by_name(name)
        .map(|c| c.data_type().to_string())
        .unwrap_or_default();
    Error::msg(format!("column `{name}` is {actual}, expected {expected}"))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Int64Array};
    use arrow_schema::{Field, Schema};

    use super::*;

    pub(crate) fn bizon_batch(rows: &[(&str, &str)]) -> RecordBatch {
        let ts = || {
            Arc::new(TimestampMicrosecondArray::from_iter_values(0..rows.len() as i64).with_timezone("UTC")) as ArrayRef
        };
        let text =
            |f: &dyn Fn(usize) -> String| Arc::new(StringArray::from_iter_values((0..rows.len()).map(f))) as ArrayRef;
        let columns = vec![
            (BIZON_ID, text(&|i| format!("id-{i}"))),
            (BIZON_EXTRACTED_AT, ts()),
            (BIZON_LOADED_AT, ts()),
            (SOURCE_RECORD_ID, text(&|i| rows[i].0.to_string())),
            (SOURCE_TIMESTAMP, ts()),
            (SOURCE_DATA, text(&|i| rows[i].1.to_string())),
            (DESTINATION_ID, text(&|_| "users".to_string())),
        ];
        RecordBatch::try_from_iter(columns).unwrap()
    }

    #[test]
    fn reads_every_bizon_column() {
        let batch = bizon_batch(&[("r0", r#"{"a":1}"#), ("r1", r#"{"a":2}"#)]);
        let cols = BizonColumns::new(&batch).unwrap();
        assert_eq!(cols.len(), 2);
        assert_eq!(cols.source_data(1), r#"{"a":2}"#);
        assert_eq!(cols.source_record_id(0), "r0");
        assert_eq!(cols.bizon_id(1), "id-1");
        assert_eq!(cols.destination_id(0), "users");
        assert_eq!(cols.source_timestamp(1), 1);
        assert!(is_bizon_layout(&batch));
    }

    #[test]
    fn an_unnest_batch_is_refused_with_a_reason() {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1, 2]))]).unwrap();
        let err = BizonColumns::new(&batch).unwrap_err();
        assert!(err.message().contains("no `bizon_id` column"), "{err}");
        assert!(!is_bizon_layout(&batch));
    }

    #[test]
    fn a_column_of_the_wrong_type_is_named() {
        let batch =
            RecordBatch::try_from_iter([(SOURCE_DATA, Arc::new(Int64Array::from(vec![1])) as ArrayRef)]).unwrap();
        assert!(!is_bizon_layout(&batch));
        let err = string(&batch, SOURCE_DATA).unwrap_err();
        assert!(err.message().contains("`source_data` is Int64"), "{err}");
    }
}
