//! Records as Arrow columns, in Bizon's layout.
//!
//! Sources hand over [`SourceRecord`]s; a [`RecordBuilder`] appends them to
//! column builders as they arrive, so a flush is one `finish()` and nothing is
//! converted row by row twice.

mod builder;
mod id;
mod letter;
pub mod ndjson;
pub mod time;
pub mod unnest;

use std::sync::{Arc, OnceLock};

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

pub use builder::RecordBuilder;
pub use id::BizonIdGenerator;
pub use letter::Letter;

pub const BIZON_ID: &str = "bizon_id";
pub const BIZON_EXTRACTED_AT: &str = "bizon_extracted_at";
pub const BIZON_LOADED_AT: &str = "bizon_loaded_at";
pub const SOURCE_RECORD_ID: &str = "source_record_id";
pub const SOURCE_TIMESTAMP: &str = "source_timestamp";
pub const SOURCE_DATA: &str = "source_data";
pub const DESTINATION_ID: &str = "destination_id";

/// One record as a source yields it. `data` is the record as JSON text.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceRecord {
    pub id: String,
    /// Microseconds since the Unix epoch, UTC.
    pub timestamp_us: i64,
    pub data: String,
    /// Set by sources that know where a record goes (a Kafka topic, a field);
    /// it wins over the destination's default destination_id.
    pub destination_id: Option<Arc<str>>,
}

/// Timestamps are microseconds in UTC, as BigQuery stores them. The zone is
/// written "+00:00" rather than "UTC": arrow parses and prints zone names
/// only with chrono-tz, the whole tz database, and the offset is the same
/// instant without it.
pub const UTC: &str = "+00:00";

pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()))
}

/// The columns Bizon hands to every destination, in Bizon's order.
pub fn bizon_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new(BIZON_ID, DataType::Utf8, false),
                Field::new(BIZON_EXTRACTED_AT, timestamp_type(), false),
                Field::new(BIZON_LOADED_AT, timestamp_type(), false),
                Field::new(SOURCE_RECORD_ID, DataType::Utf8, false),
                Field::new(SOURCE_TIMESTAMP, timestamp_type(), false),
                Field::new(SOURCE_DATA, DataType::Utf8, false),
                Field::new(DESTINATION_ID, DataType::Utf8, false),
            ]))
        })
        .clone()
}

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}
