//! `unnest`: `source_data` decoded into the typed columns of a destination_id's
//! `record_schema`, with arrow-json decoding against that schema.
//!
//! BigQuery types map to Arrow as BigQuery's own Arrow export does: INT64 to
//! Int64, NUMERIC to Decimal128(38, 9), TIMESTAMP to microseconds in UTC,
//! DATETIME to microseconds without a zone, RECORD to Struct, REPEATED to
//! List. BIGNUMERIC, GEOGRAPHY and JSON stay text. JSON columns take any JSON
//! value and keep its text, which arrow-json cannot do, so they are read from
//! the record separately.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow_json::ReaderBuilder;
use arrow_schema::{ArrowError, DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use serde_json::value::RawValue;

use super::{timestamp_type, SOURCE_DATA, SOURCE_RECORD_ID};
use crate::config::{BigQueryType, ColumnMode, ColumnSpec, RecordSchemaConfig};

#[derive(Debug, thiserror::Error)]
pub enum UnnestError {
    #[error("destination_id `{destination_id}`: record {record_id}: {message}")]
    Record {
        destination_id: String,
        record_id: String,
        message: String,
    },
    #[error("destination_id `{destination_id}`: {message}")]
    Batch { destination_id: String, message: String },
}

/// The Arrow field a record_schema column decodes into.
pub fn arrow_field(column: &ColumnSpec) -> Field {
    let scalar = match column.kind {
        BigQueryType::String | BigQueryType::Bignumeric | BigQueryType::Geography | BigQueryType::Json => {
            DataType::Utf8
        }
        BigQueryType::Bytes => DataType::Binary,
        BigQueryType::Integer | BigQueryType::Int64 => DataType::Int64,
        BigQueryType::Float | BigQueryType::Float64 => DataType::Float64,
        BigQueryType::Numeric => DataType::Decimal128(38, 9),
        BigQueryType::Boolean => DataType::Boolean,
        BigQueryType::Timestamp => timestamp_type(),
        BigQueryType::Date => DataType::Date32,
        BigQueryType::Datetime => DataType::Timestamp(TimeUnit::Microsecond, None),
        BigQueryType::Time => DataType::Time64(TimeUnit::Microsecond),
        BigQueryType::Record => {
            let fields: Fields = column.fields.iter().flatten().map(arrow_field).collect();
            DataType::Struct(fields)
        }
    };
    match column.mode {
        ColumnMode::Repeated => Field::new(&column.name, DataType::new_list(scalar, true), true),
        ColumnMode::Required => Field::new(&column.name, scalar, false),
        ColumnMode::Nullable => Field::new(&column.name, scalar, true),
    }
}

/// Decodes Bizon batches of one destination_id into its record_schema.
pub struct Unnester {
    destination_id: String,
    schema: SchemaRef,
    /// What arrow-json decodes: every column but the JSON ones.
    decoded: SchemaRef,
    json_columns: Vec<String>,
}

impl Unnester {
    pub fn new(config: &RecordSchemaConfig) -> Self {
        let fields: Vec<Field> = config.record_schema.iter().map(arrow_field).collect();
        let is_json = |c: &&ColumnSpec| c.kind == BigQueryType::Json && c.mode != ColumnMode::Repeated;
        let json_columns: Vec<String> = config
            .record_schema
            .iter()
            .filter(is_json)
            .map(|c| c.name.clone())
            .collect();
        let decoded = fields
            .iter()
            .filter(|f| !json_columns.contains(f.name()))
            .cloned()
            .collect::<Vec<_>>();
        Self {
            destination_id: config.destination_id.clone(),
            schema: Arc::new(Schema::new(fields)),
            decoded: Arc::new(Schema::new(decoded)),
            json_columns,
        }
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The typed rows of a batch in Bizon's layout.
    pub fn unnest(&self, batch: &RecordBatch) -> Result<RecordBatch, UnnestError> {
        let column = |name| {
            batch
                .column_by_name(name)
                .map(|c| c.as_string::<i32>())
                .ok_or_else(|| UnnestError::Batch {
                    destination_id: self.destination_id.clone(),
                    message: format!("the batch has no `{name}` column"),
                })
        };
        let data = column(SOURCE_DATA)?;
        let ids = column(SOURCE_RECORD_ID)?;
        let decoded = self.decode(data).map_err(|e| self.locate(data, ids, e))?;
        let json = self.json_columns(data, ids)?;
        let columns: Vec<ArrayRef> = self
            .schema
            .fields()
            .iter()
            .map(|f| match json.get(f.name()) {
                Some(array) => Ok(array.clone()),
                None => {
                    let array = decoded
                        .column_by_name(f.name())
                        .expect("decoded schema has every other column");
                    arrow_cast::cast(array, f.data_type())
                }
            })
            .collect::<Result<_, _>>()
            .map_err(|e| UnnestError::Batch {
                destination_id: self.destination_id.clone(),
                message: e.to_string(),
            })?;
        RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| UnnestError::Batch {
            destination_id: self.destination_id.clone(),
            message: e.to_string(),
        })
    }

    fn decode(&self, data: &StringArray) -> Result<RecordBatch, ArrowError> {
        let mut decoder = ReaderBuilder::new(self.decoded.clone())
            .with_batch_size(data.len().max(1))
            .build_decoder()?;
        for value in data.iter().flatten() {
            decoder.decode(value.as_bytes())?;
            decoder.decode(b"\n")?;
        }
        Ok(decoder
            .flush()?
            .unwrap_or_else(|| RecordBatch::new_empty(self.decoded.clone())))
    }

    /// arrow-json says what is wrong but not in which row: decode the rows one
    /// at a time to find the first that fails.
    fn locate(&self, data: &StringArray, ids: &StringArray, batch_error: ArrowError) -> UnnestError {
        for row in 0..data.len() {
            if let Err(e) = self.decode(&StringArray::from(vec![data.value(row)])) {
                return UnnestError::Record {
                    destination_id: self.destination_id.clone(),
                    record_id: ids.value(row).to_string(),
                    message: column_message(&e),
                };
            }
        }
        UnnestError::Batch {
            destination_id: self.destination_id.clone(),
            message: column_message(&batch_error),
        }
    }

    fn json_columns(&self, data: &StringArray, ids: &StringArray) -> Result<HashMap<String, ArrayRef>, UnnestError> {
        if self.json_columns.is_empty() {
            return Ok(HashMap::new());
        }
        let mut builders: Vec<StringBuilder> = self.json_columns.iter().map(|_| StringBuilder::new()).collect();
        for row in 0..data.len() {
            let fields: HashMap<Cow<str>, &RawValue> =
                serde_json::from_str(data.value(row)).map_err(|e| UnnestError::Record {
                    destination_id: self.destination_id.clone(),
                    record_id: ids.value(row).to_string(),
                    message: format!("source_data is not a JSON object: {e}"),
                })?;
            for (name, builder) in self.json_columns.iter().zip(&mut builders) {
                match fields.get(name.as_str()).map(|v| v.get()) {
                    None | Some("null") => builder.append_null(),
                    Some(text) => builder.append_value(text),
                }
            }
        }
        Ok(self
            .json_columns
            .iter()
            .cloned()
            .zip(builders.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef))
            .collect())
    }
}

/// arrow-json's message, which names the column ("whilst decoding field 'age': ...").
fn column_message(e: &ArrowError) -> String {
    e.to_string().trim_start_matches("Json error: ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{BizonIdGenerator, RecordBuilder, SourceRecord};
    use arrow_array::types::{Int64Type, TimestampMicrosecondType};

    fn schema() -> RecordSchemaConfig {
        serde_saphyr::from_str(
            "destination_id: users\nrecord_schema:\n  - {name: id, type: INTEGER, mode: REQUIRED}\n  - {name: name, type: STRING}\n  - {name: at, type: TIMESTAMP}\n  - {name: extra, type: JSON}\n",
        )
        .unwrap()
    }

    fn batch(rows: &[&str]) -> RecordBatch {
        let mut b = RecordBuilder::new("users".into());
        let mut ids = BizonIdGenerator::new();
        for (i, data) in rows.iter().enumerate() {
            let r = SourceRecord {
                id: format!("r{i}"),
                timestamp_us: 0,
                data: data.to_string(),
                destination_id: None,
            };
            b.append(&mut ids, 0, &r);
        }
        b.finish(0).unwrap()
    }

    #[test]
    fn decodes_typed_columns_in_schema_order() {
        let u = Unnester::new(&schema());
        let out = u
            .unnest(&batch(&[
                r#"{"id": 1, "name": "a", "at": "2024-05-01T12:30:00Z", "extra": {"k": [1, 2]}}"#,
                r#"{"id": 2, "extra": null}"#,
            ]))
            .unwrap();
        assert_eq!(
            out.schema()
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>(),
            ["id", "name", "at", "extra"]
        );
        assert_eq!(out.column(0).as_primitive::<Int64Type>().values(), &[1, 2]);
        assert_eq!(
            out.column(2).as_primitive::<TimestampMicrosecondType>().value(0),
            1_714_566_600_000_000
        );
        assert!(out.column(1).is_null(1));
        assert_eq!(out.column(3).as_string::<i32>().value(0), r#"{"k": [1, 2]}"#);
        assert!(out.column(3).is_null(1));
    }

    #[test]
    fn a_record_that_does_not_fit_names_the_record_and_the_column() {
        let u = Unnester::new(&schema());
        let err = u
            .unnest(&batch(&[r#"{"id": 1}"#, r#"{"id": "x1"}"#]))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("destination_id `users`: record r1:"), "{err}");
        assert!(err.contains("id"), "{err}");
        let err = u.unnest(&batch(&[r#"{"name": "no id"}"#])).unwrap_err().to_string();
        assert!(err.contains("record r0") && err.contains("id"), "{err}");
    }
}
