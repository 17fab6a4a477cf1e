//! What a table looks like: Bizon's raw layout or the record_schema under
//! `unnest`, its partitioning as Bizon resolves it, its clustering; and the
//! batch reshaped into those columns.

use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{Field, Schema};
use serde_json::{json, Value};

use super::config::TimePartitioning;
use crate::config::{BigQueryType, ColumnMode, ColumnSpec, DestinationOptions};
use crate::destination::DestinationError;
use crate::record;

/// `_source_data` is JSON in the streaming tables and STRING in the batch one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceDataType {
    Json,
    String,
}

/// Bizon's raw columns, in its order: (table column, batch column, type, mode).
fn raw_columns(source_data: SourceDataType) -> [(&'static str, &'static str, &'static str, &'static str); 6] {
    // The batch destination declares every column NULLABLE (Parquet loads); the
    // streaming ones declare REQUIRED (get_bigquery_schema in each destination.py).
    let (required, data) = match source_data {
        SourceDataType::Json => ("REQUIRED", "JSON"),
        SourceDataType::String => ("NULLABLE", "STRING"),
    };
    [
        ("_source_record_id", record::SOURCE_RECORD_ID, "STRING", required),
        ("_source_timestamp", record::SOURCE_TIMESTAMP, "TIMESTAMP", required),
        ("_source_data", record::SOURCE_DATA, data, "NULLABLE"),
        ("_bizon_extracted_at", record::BIZON_EXTRACTED_AT, "TIMESTAMP", required),
        ("_bizon_loaded_at", record::BIZON_LOADED_AT, "TIMESTAMP", required),
        ("_bizon_id", record::BIZON_ID, "STRING", required),
    ]
}

/// A table's definition for `tables.insert` and load jobs.
#[derive(Debug, Clone)]
pub struct TableSpec {
    pub fields: Vec<Value>,
    pub time_partitioning: Option<Value>,
    pub clustering: Option<Vec<String>>,
}

impl TableSpec {
    pub fn new(
        options: &DestinationOptions,
        destination_id: &str,
        partitioning: Option<&TimePartitioning>,
        source_data: SourceDataType,
    ) -> Result<Self, DestinationError> {
        let (fields, types, clustering): (Vec<Value>, Vec<(String, String)>, _) = if options.unnest {
            let schema = options.record_schema(destination_id).ok_or_else(|| {
                DestinationError::Fatal(format!(
                    "unnest: no record_schemas entry for the destination_id `{destination_id}`"
                ))
            })?;
            let types = schema
                .record_schema
                .iter()
                .map(|c| (c.name.clone(), type_name(c.kind).to_string()))
                .collect();
            (
                schema.record_schema.iter().map(column).collect(),
                types,
                schema.clustering_keys.clone(),
            )
        } else {
            let cols = raw_columns(source_data);
            let mut fields: Vec<Value> = cols
                .iter()
                .map(|(name, _, kind, mode)| json!({"name": name, "type": kind, "mode": mode}))
                .collect();
            fields[4]["defaultValueExpression"] = json!("CURRENT_TIMESTAMP()");
            let types = cols
                .iter()
                .map(|(name, _, kind, _)| (name.to_string(), kind.to_string()))
                .collect();
            (fields, types, None)
        };
        let time_partitioning = resolve_partitioning(partitioning, options.unnest, &types, destination_id)?;
        Ok(Self {
            fields,
            time_partitioning,
            clustering: clustering.filter(|c| !c.is_empty()),
        })
    }

    pub fn table_json(&self, table: &TableRef) -> Value {
        let mut t = json!({
            "tableReference": {"projectId": table.project, "datasetId": table.dataset, "tableId": table.table},
            "schema": {"fields": self.fields},
        });
        if let Some(p) = &self.time_partitioning {
            t["timePartitioning"] = p.clone();
        }
        if let Some(c) = &self.clustering {
            t["clustering"] = json!({"fields": c});
        }
        t
    }
}

/// Bizon's `resolve_partition_field`: under `unnest` an unwritten default field
/// falls back to ingestion time; a field that cannot partition is an error.
fn resolve_partitioning(
    partitioning: Option<&TimePartitioning>,
    unnest: bool,
    types: &[(String, String)],
    destination_id: &str,
) -> Result<Option<Value>, DestinationError> {
    let Some(p) = partitioning else { return Ok(None) };
    let field = if unnest && !p.field_written {
        None
    } else {
        p.field.clone()
    };
    if let Some(field) = &field {
        let kind = types.iter().find(|(n, _)| n == field).map(|(_, k)| k.as_str());
        let problem = match kind {
            None => Some(format!("the table does not have the column `{field}`")),
            Some("TIMESTAMP" | "DATETIME") => None,
            Some("DATE") if p.window.as_str() == "HOUR" => {
                Some(format!("HOUR partitioning on the DATE column `{field}`"))
            }
            Some("DATE") => None,
            Some(other) => Some(format!(
                "`{field}` is {other}; only TIMESTAMP, DATE and DATETIME partition"
            )),
        };
        if let Some(problem) = problem {
            return Err(DestinationError::Fatal(format!(
                "time_partitioning.field for destination_id `{destination_id}`: {problem}. Point it at a \
                 TIMESTAMP/DATE/DATETIME column or set it to null for ingestion-time partitioning"
            )));
        }
    }
    let mut v = json!({"type": p.window.as_str()});
    if let Some(field) = field {
        v["field"] = json!(field);
    }
    Ok(Some(v))
}

fn type_name(kind: BigQueryType) -> &'static str {
    match kind {
        BigQueryType::String => "STRING",
        BigQueryType::Bytes => "BYTES",
        BigQueryType::Integer | BigQueryType::Int64 => "INTEGER",
        BigQueryType::Float | BigQueryType::Float64 => "FLOAT",
        BigQueryType::Numeric => "NUMERIC",
        BigQueryType::Bignumeric => "BIGNUMERIC",
        BigQueryType::Boolean => "BOOLEAN",
        BigQueryType::Timestamp => "TIMESTAMP",
        BigQueryType::Date => "DATE",
        BigQueryType::Datetime => "DATETIME",
        BigQueryType::Time => "TIME",
        BigQueryType::Geography => "GEOGRAPHY",
        BigQueryType::Json => "JSON",
        BigQueryType::Record => "RECORD",
    }
}

fn column(c: &ColumnSpec) -> Value {
    let mode = match c.mode {
        ColumnMode::Nullable => "NULLABLE",
        ColumnMode::Required => "REQUIRED",
        ColumnMode::Repeated => "REPEATED",
    };
    let mut v = json!({"name": c.name, "type": type_name(c.kind), "mode": mode});
    if let Some(d) = &c.description {
        v["description"] = json!(d);
    }
    if let Some(d) = &c.default_value_expression {
        v["defaultValueExpression"] = json!(d);
    }
    if let Some(fields) = &c.fields {
        v["fields"] = Value::Array(fields.iter().map(column).collect());
    }
    v
}

/// The batch in the table's columns: Bizon's raw layout renamed with `_`
/// (destination_id is not a table column), or the unnested columns as they are.
pub fn table_batch(batch: &RecordBatch, unnest: bool) -> Result<RecordBatch, DestinationError> {
    if unnest {
        return Ok(batch.clone());
    }
    let mut fields = Vec::with_capacity(6);
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(6);
    for (name, source, _, _) in raw_columns(SourceDataType::Json) {
        let (i, field) = batch
            .schema()
            .column_with_name(source)
            .map(|(i, f)| (i, f.clone()))
            .ok_or_else(|| DestinationError::Fatal(format!("batch has no `{source}` column (unnest is off)")))?;
        fields.push(Field::new(name, field.data_type().clone(), field.is_nullable()));
        columns.push(batch.column(i).clone());
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| DestinationError::Fatal(format!("reshaping the batch for BigQuery: {e}")))
}

/// `project.dataset.table`, parsed from a destination_id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableRef {
    pub project: String,
    pub dataset: String,
    pub table: String,
}

impl TableRef {
    /// `project.dataset.table` as given (Bizon's streaming destinations),
    /// `dataset.table` in the configured project, or a bare table name in the
    /// configured dataset (Bizon's batch destination).
    pub fn resolve(destination_id: &str, project: &str, dataset: &str) -> Result<Self, DestinationError> {
        let parts: Vec<&str> = destination_id.split('.').collect();
        let (p, d, t) = match parts.as_slice() {
            [t] => (project, dataset, *t),
            [d, t] => (project, *d, *t),
            [p, d, t] => (*p, *d, *t),
            _ => ("", "", ""),
        };
        if [p, d, t].iter().any(|s| s.is_empty()) {
            return Err(DestinationError::Fatal(format!(
                "destination_id `{destination_id}` is not a table name, `dataset.table` or `project.dataset.table`"
            )));
        }
        Ok(Self {
            project: p.into(),
            dataset: d.into(),
            table: t.into(),
        })
    }

    pub fn with_table(&self, table: String) -> Self {
        Self { table, ..self.clone() }
    }

    /// The Storage Write API's name for it.
    pub fn path(&self) -> String {
        format!(
            "projects/{}/datasets/{}/tables/{}",
            self.project, self.dataset, self.table
        )
    }
}

impl std::fmt::Display for TableRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.project, self.dataset, self.table)
    }
}
