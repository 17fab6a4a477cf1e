//! `record_schemas`: the typed columns `unnest` decodes `source_data` into,
//! and the BigQuery table layout they describe.

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordSchemaConfig {
    pub destination_id: String,
    pub record_schema: Vec<ColumnSpec>,
    #[serde(default)]
    pub clustering_keys: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: BigQueryType,
    #[serde(default)]
    pub mode: ColumnMode,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub default_value_expression: Option<String>,
    /// Sub-columns of a RECORD.
    #[serde(default)]
    pub fields: Option<Vec<ColumnSpec>>,
}

/// The column types Bizon accepts, by their BigQuery names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum BigQueryType {
    String,
    Bytes,
    Integer,
    Int64,
    Float,
    Float64,
    Numeric,
    Bignumeric,
    Boolean,
    Timestamp,
    Date,
    Datetime,
    Time,
    Geography,
    Json,
    Record,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ColumnMode {
    #[default]
    Nullable,
    Required,
    Repeated,
}
