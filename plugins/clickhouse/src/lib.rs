//! bizon-clickhouse: writes each destination_id to its own ClickHouse table
//! through ClickHouse's HTTP interface, `INSERT INTO t FORMAT JSONEachRow`,
//! one request per batch. The table is created on the first batch from the
//! batch's columns: Bizon's columns by default, or the `record_schema`
//! columns under `unnest: true`.
//!
//! It needs the server granted: `allow: {hosts: ["http://127.0.0.1:8123"]}`;
//! a password is best given with `allow.secrets` (header `X-ClickHouse-Key`),
//! so the plugin never holds it.
//!
//! plugin_config:
//!
//! | key | default | |
//! |---|---|---|
//! | `url` | required | the HTTP interface, e.g. `http://127.0.0.1:8123` |
//! | `database` | `default` | |
//! | `table_prefix` | `""` | table = prefix + destination_id (other characters than `[A-Za-z0-9_]` become `_`) |
//! | `user` | none | sent as `X-ClickHouse-User` |
//! | `create_tables` | `true` | `CREATE TABLE IF NOT EXISTS` on a destination_id's first batch |
//! | `engine` | `MergeTree ORDER BY tuple()` | the table engine clause |
//! | `exactly_once` | `false` | key rows on their source position (below) |
//!
//! Types: Int64 -> Int64, Float64 -> Float64, Boolean -> UInt8, Utf8/Binary ->
//! String, Decimal -> Decimal(P, S), Timestamp -> DateTime('UTC') (seconds),
//! Date -> Date, Time -> String, lists -> Array(T); nullable columns are
//! Nullable(T). A RECORD (struct) column is refused with its name.
//!
//! Errors: connection failures, 5xx and 429 are retryable (the host retries
//! the batch), except ClickHouse errors that will not pass on a retry (bad
//! data, unknown table or column, syntax, authentication), which are fatal.
//! A plain MergeTree table does not de-duplicate a batch retried after a
//! timeout that had in fact been written.
//!
//! Idempotent writes. From a Kafka source each INSERT carries
//! `insert_deduplication_token` = the host's batch id (`host.batch-source`:
//! derived from the destination_id and the batch's offset ranges), when the
//! server knows that setting (ClickHouse 22.2 and later; asked once, in
//! `system.settings`). ClickHouse then drops an insert whose token it saw
//! among the last inserts of a Replicated table, or of a MergeTree with
//! `non_replicated_deduplication_window`: a retry, and a replay after a
//! crash that the host cut at the same offsets. A replay is cut again from
//! the last commit, though, and its batches can span other offsets (the
//! pages of a restarted consumer are not the killed one's), so the token
//! alone does not make a crash loop exactly-once.
//!
//! `exactly_once: true` does: each row is keyed on its source position.
//! Tables are created `ReplacingMergeTree ORDER BY (source_record_id,
//! source_timestamp)` (plus the deduplication window where the server has
//! it), so a row written twice, whatever the batch it came in, is one row
//! once merged; read with `FINAL` (`SELECT count() FROM t FINAL`) or after
//! `OPTIMIZE TABLE t FINAL` to see each once before the background merge.
//! For Kafka, `source_record_id` is `partition_{p}_offset_{o}`, the same on
//! every replay; it does not name the topic, so this mode refuses a
//! destination_id fed by two topics (their positions could meet). It needs
//! Bizon's columns: with `unnest: true` there is no source position in the
//! rows, and it stops at the first batch saying so. An `engine` given in
//! the config wins over this one.

use std::collections::{HashMap, HashSet};
use std::io::Write;

use bizon_sdk::arrow_array::cast::AsArray;
use bizon_sdk::arrow_array::types::{
    Date32Type, Decimal128Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type,
    Time64MicrosecondType, TimestampMicrosecondType, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use bizon_sdk::arrow_array::{Array, RecordBatch};
use bizon_sdk::arrow_schema::{DataType, Field, TimeUnit};
use bizon_sdk::http::{HttpError, Request};
use bizon_sdk::{
    export_destination, log, BatchInfo, Config, Destination, Error, WriteError, SOURCE_RECORD_ID, SOURCE_TIMESTAMP,
};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    url: String,
    #[serde(default = "default_database")]
    database: String,
    #[serde(default)]
    table_prefix: String,
    #[serde(default)]
    user: Option<String>,
    #[serde(default = "default_true")]
    create_tables: bool,
    #[serde(default)]
    engine: Option<String>,
    #[serde(default)]
    exactly_once: bool,
}

fn default_database() -> String {
    "default".into()
}
fn default_true() -> bool {
    true
}
/// A table's engine unless the config names one.
const ENGINE: &str = "MergeTree ORDER BY tuple()";
/// With `exactly_once`: a row per source position once merged.
const ENGINE_EXACTLY_ONCE: &str = "ReplacingMergeTree ORDER BY (source_record_id, source_timestamp)";
/// Inserts remembered by token, where the server has the setting (its
/// default for Replicated tables).
const DEDUPLICATION_WINDOW: u32 = 1000;

struct ClickHouse {
    settings: Settings,
    /// Tables this instance created (or found) already.
    ready: HashSet<String>,
    /// Whether the server knows `insert_deduplication_token`; asked at the
    /// first write.
    tokens: Option<bool>,
    /// With `exactly_once`: the topic each destination_id's rows come from.
    topics: HashMap<String, String>,
}

impl Destination for ClickHouse {
    const NAME: &'static str = "clickhouse";

    fn open(config: Config) -> Result<Self, Error> {
        let mut settings: Settings = config.parse()?;
        settings.url = settings.url.trim_end_matches('/').to_string();
        Ok(ClickHouse {
            settings,
            ready: HashSet::new(),
            tokens: None,
            topics: HashMap::new(),
        })
    }

    fn check_connection(&mut self) -> Result<(), Error> {
        let answer = self.query("SELECT 1", Vec::new())?;
        if answer.trim() != "1" {
            return Err(Error::msg(format!("SELECT 1 answered {answer:?}")));
        }
        Ok(())
    }

    fn write(&mut self, batch: &RecordBatch, info: &BatchInfo) -> Result<u64, WriteError> {
        let table = self.table(&info.destination_id);
        let source = bizon_sdk::batch_source();
        if self.settings.exactly_once {
            self.check_exactly_once(batch, info, source.as_ref())?;
        }
        let tokens = match self.tokens {
            Some(known) => known,
            None => {
                let known = self.query(
                    "SELECT count() FROM system.settings WHERE name = 'insert_deduplication_token'",
                    Vec::new(),
                )?;
                let known = known.trim() == "1";
                if !known && source.is_some() {
                    log::info!(
                        "this ClickHouse has no insert_deduplication_token: a retried batch is \
                         de-duplicated only by `exactly_once: true`"
                    );
                }
                *self.tokens.insert(known)
            }
        };
        if self.settings.create_tables && !self.ready.contains(&table) {
            let columns = batch
                .schema()
                .fields()
                .iter()
                .map(|f| Ok(format!("{} {}", quote(f.name()), column_type(f)?)))
                .collect::<Result<Vec<_>, String>>()
                .map_err(WriteError::fatal)?;
            let create = format!(
                "CREATE TABLE IF NOT EXISTS {table} ({}) ENGINE = {}",
                columns.join(", "),
                self.engine(tokens)
            );
            self.query(&create, Vec::new())?;
            log::info!("table {table} ready for destination_id {}", info.destination_id);
            self.ready.insert(table.clone());
        }
        let mut body = Vec::with_capacity(batch.get_array_memory_size());
        json_each_row(batch, &mut body).map_err(WriteError::fatal)?;
        let token = source.filter(|_| tokens).map(|s| s.batch_id);
        self.query(&insert(&table, token.as_deref()), body)?;
        Ok(info.num_rows)
    }
}

/// The INSERT of a batch, with its deduplication token when it has one.
/// (A setting named in the query's SETTINGS clause, which the HTTP
/// interface takes as the query text.)
fn insert(table: &str, token: Option<&str>) -> String {
    match token {
        Some(token) => {
            format!("INSERT INTO {table} SETTINGS insert_deduplication_token = '{token}' FORMAT JSONEachRow")
        }
        None => format!("INSERT INTO {table} FORMAT JSONEachRow"),
    }
}

impl ClickHouse {
    /// The engine clause new tables get.
    fn engine(&self, tokens: bool) -> String {
        match (&self.settings.engine, self.settings.exactly_once) {
            (Some(engine), _) => engine.clone(),
            (None, false) => ENGINE.into(),
            (None, true) if tokens => {
                format!("{ENGINE_EXACTLY_ONCE} SETTINGS non_replicated_deduplication_window = {DEDUPLICATION_WINDOW}")
            }
            (None, true) => ENGINE_EXACTLY_ONCE.into(),
        }
    }

    /// `exactly_once` keys rows on `source_record_id` and
    /// `source_timestamp`: both must be there, and one topic per
    /// destination_id (a Kafka record id does not name its topic).
    fn check_exactly_once(
        &mut self,
        batch: &RecordBatch,
        info: &BatchInfo,
        source: Option<&bizon_sdk::BatchSource>,
    ) -> Result<(), WriteError> {
        let schema = batch.schema();
        for column in [SOURCE_RECORD_ID, SOURCE_TIMESTAMP] {
            if schema.field_with_name(column).is_err() {
                return Err(WriteError::fatal(format!(
                    "exactly_once: destination_id {} has no `{column}` column to key rows on \
                     (`unnest: true` drops Bizon's columns; turn one of the two off)",
                    info.destination_id
                )));
            }
        }
        for range in source.map(|s| s.ranges.as_slice()).unwrap_or_default() {
            let topic = self
                .topics
                .entry(info.destination_id.clone())
                .or_insert_with(|| range.topic.clone());
            if *topic != range.topic {
                return Err(WriteError::fatal(format!(
                    "exactly_once: destination_id {} gets topics `{topic}` and `{}`, whose rows \
                     could share a source_record_id (partition_P_offset_O); give each topic its own \
                     destination_id",
                    info.destination_id, range.topic
                )));
            }
        }
        Ok(())
    }

    fn table(&self, destination_id: &str) -> String {
        let name: String = format!("{}{destination_id}", self.settings.table_prefix)
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
            .collect();
        format!("{}.{}", quote(&self.settings.database), quote(&name))
    }

    /// Runs `sql` with `body` as its data; returns what the server answered.
    fn query(&self, sql: &str, body: Vec<u8>) -> Result<String, ClickHouseError> {
        let url = format!("{}/?query={}", self.settings.url, percent_encode(sql));
        let mut request = Request::post(&url).body(body);
        if let Some(user) = &self.settings.user {
            request = request.header("x-clickhouse-user", user);
        }
        let response = request.send().map_err(ClickHouseError)?;
        let response = response.error_for_status().map_err(ClickHouseError)?;
        Ok(response.text().into_owned())
    }
}

/// An HTTP failure, judged with what ClickHouse said.
struct ClickHouseError(HttpError);

/// ClickHouse exception codes that the same request will hit again.
const PERMANENT: &[u32] = &[
    6,   // CANNOT_PARSE_TEXT
    16,  // NO_SUCH_COLUMN_IN_TABLE
    26,  // CANNOT_PARSE_QUOTED_STRING
    27,  // CANNOT_PARSE_INPUT_ASSERTION_FAILED
    36,  // BAD_ARGUMENTS
    44,  // ILLEGAL_COLUMN
    47,  // UNKNOWN_IDENTIFIER
    50,  // UNKNOWN_TYPE
    53,  // TYPE_MISMATCH
    60,  // UNKNOWN_TABLE
    62,  // SYNTAX_ERROR
    81,  // UNKNOWN_DATABASE
    117, // INCORRECT_DATA
    192, // UNKNOWN_USER
    193, // WRONG_PASSWORD
    194, // REQUIRED_PASSWORD
    497, // ACCESS_DENIED
    516, // AUTHENTICATION_FAILED
];

impl ClickHouseError {
    fn code(&self) -> Option<u32> {
        let HttpError::Status { body, .. } = &self.0 else {
            return None;
        };
        let rest = &body[body.find("Code: ")? + 6..];
        rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    }
}

impl From<ClickHouseError> for WriteError {
    fn from(error: ClickHouseError) -> Self {
        match error.code() {
            Some(code) if PERMANENT.contains(&code) => WriteError::fatal(error.0),
            _ => error.0.into(),
        }
    }
}

impl From<ClickHouseError> for Error {
    fn from(error: ClickHouseError) -> Self {
        error.0.into()
    }
}

fn quote(name: &str) -> String {
    format!("`{}`", name.replace('\\', "\\\\").replace('`', "\\`"))
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3 / 2);
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The ClickHouse type a column is created with.
fn column_type(field: &Field) -> Result<String, String> {
    let inner = scalar_type(field.data_type())
        .map_err(|t| format!("column {:?}: {t} has no ClickHouse type in this plugin", field.name()))?;
    // Arrays cannot be Nullable in ClickHouse: an absent list is empty.
    Ok(
        if field.is_nullable() && !matches!(field.data_type(), DataType::List(_)) {
            format!("Nullable({inner})")
        } else {
            inner
        },
    )
}

fn scalar_type(data_type: &DataType) -> Result<String, String> {
    Ok(match data_type {
        DataType::Int8 => "Int8".into(),
        DataType::Int16 => "Int16".into(),
        DataType::Int32 => "Int32".into(),
        DataType::Int64 => "Int64".into(),
        DataType::UInt8 | DataType::Boolean => "UInt8".into(),
        DataType::UInt16 => "UInt16".into(),
        DataType::UInt32 => "UInt32".into(),
        DataType::UInt64 => "UInt64".into(),
        DataType::Float32 => "Float32".into(),
        DataType::Float64 => "Float64".into(),
        DataType::Utf8 | DataType::Binary | DataType::Time64(TimeUnit::Microsecond) => "String".into(),
        DataType::Decimal128(p, s) => format!("Decimal({p}, {s})"),
        DataType::Timestamp(TimeUnit::Microsecond, _) => "DateTime('UTC')".into(),
        DataType::Date32 => "Date".into(),
        DataType::List(item) => {
            let inner = scalar_type(item.data_type())?;
            if item.is_nullable() && !matches!(item.data_type(), DataType::List(_)) {
                format!("Array(Nullable({inner}))")
            } else {
                format!("Array({inner})")
            }
        }
        other => return Err(format!("{other}")),
    })
}

/// One JSON object per row, keyed by column name.
fn json_each_row(batch: &RecordBatch, out: &mut Vec<u8>) -> Result<(), String> {
    let schema = batch.schema();
    let keys: Vec<Vec<u8>> = schema
        .fields()
        .iter()
        .map(|f| {
            let mut key = serde_json::to_vec(f.name()).expect("a string serializes");
            key.push(b':');
            key
        })
        .collect();
    for row in 0..batch.num_rows() {
        out.push(b'{');
        for (i, column) in batch.columns().iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&keys[i]);
            value(column.as_ref(), row, out).map_err(|t| format!("column {:?}: {t}", schema.field(i).name()))?;
        }
        out.extend_from_slice(b"}\n");
    }
    Ok(())
}

fn value(array: &dyn Array, row: usize, out: &mut Vec<u8>) -> Result<(), String> {
    if array.is_null(row) {
        // A null list is an empty array (ClickHouse arrays are not nullable).
        out.extend_from_slice(if matches!(array.data_type(), DataType::List(_)) {
            b"[]"
        } else {
            b"null"
        });
        return Ok(());
    }
    let number = |out: &mut Vec<u8>, v: &dyn std::fmt::Display| {
        let _ = write!(out, "{v}");
    };
    match array.data_type() {
        DataType::Int8 => number(out, &array.as_primitive::<Int8Type>().value(row)),
        DataType::Int16 => number(out, &array.as_primitive::<Int16Type>().value(row)),
        DataType::Int32 => number(out, &array.as_primitive::<Int32Type>().value(row)),
        DataType::Int64 => number(out, &array.as_primitive::<Int64Type>().value(row)),
        DataType::UInt8 => number(out, &array.as_primitive::<UInt8Type>().value(row)),
        DataType::UInt16 => number(out, &array.as_primitive::<UInt16Type>().value(row)),
        DataType::UInt32 => number(out, &array.as_primitive::<UInt32Type>().value(row)),
        DataType::UInt64 => number(out, &array.as_primitive::<UInt64Type>().value(row)),
        DataType::Float32 => float(out, array.as_primitive::<Float32Type>().value(row) as f64),
        DataType::Float64 => float(out, array.as_primitive::<Float64Type>().value(row)),
        DataType::Boolean => out.push(if array.as_boolean().value(row) { b'1' } else { b'0' }),
        DataType::Utf8 => string(out, array.as_string::<i32>().value(row)),
        DataType::Binary => string(out, &String::from_utf8_lossy(array.as_binary::<i32>().value(row))),
        DataType::Decimal128(_, scale) => {
            let text = decimal(array.as_primitive::<Decimal128Type>().value(row), *scale);
            out.extend_from_slice(text.as_bytes());
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            let micros = array.as_primitive::<TimestampMicrosecondType>().value(row);
            number(out, &micros.div_euclid(1_000_000));
        }
        DataType::Date32 => {
            let (y, m, d) = civil_from_days(array.as_primitive::<Date32Type>().value(row) as i64);
            let _ = write!(out, "\"{y:04}-{m:02}-{d:02}\"");
        }
        DataType::Time64(TimeUnit::Microsecond) => {
            let micros = array.as_primitive::<Time64MicrosecondType>().value(row);
            let (s, us) = (micros / 1_000_000, micros % 1_000_000);
            let _ = write!(out, "\"{:02}:{:02}:{:02}.{us:06}\"", s / 3600, s / 60 % 60, s % 60);
        }
        DataType::List(_) => {
            let items = array.as_list::<i32>().value(row);
            out.push(b'[');
            for i in 0..items.len() {
                if i > 0 {
                    out.push(b',');
                }
                value(items.as_ref(), i, out)?;
            }
            out.push(b']');
        }
        other => return Err(format!("{other} is not supported")),
    }
    Ok(())
}

fn float(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        let _ = write!(out, "{v}");
    } else {
        // JSON has no NaN or infinity; ClickHouse reads them quoted.
        let _ = write!(out, "\"{v}\"");
    }
}

fn string(out: &mut Vec<u8>, text: &str) {
    serde_json::to_writer(out, text).expect("a string serializes");
}

fn decimal(unscaled: i128, scale: i8) -> String {
    if scale <= 0 {
        return unscaled.to_string();
    }
    let scale = scale as usize;
    let digits = unscaled.unsigned_abs().to_string();
    let digits = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = digits.split_at(digits.len() - scale);
    format!("{}{int}.{frac}", if unscaled < 0 { "-" } else { "" })
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's
/// algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

export_destination!(ClickHouse);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_insert_carries_the_batch_id_as_its_deduplication_token() {
        assert_eq!(
            insert("`default`.`t`", Some("0123abcd")),
            "INSERT INTO `default`.`t` SETTINGS insert_deduplication_token = '0123abcd' FORMAT JSONEachRow"
        );
        assert_eq!(
            insert("`default`.`t`", None),
            "INSERT INTO `default`.`t` FORMAT JSONEachRow"
        );
    }

    fn plugin(config: &str) -> ClickHouse {
        ClickHouse::open(Config::from_json(config).unwrap()).unwrap_or_else(|_| panic!("{config}"))
    }

    #[test]
    fn exactly_once_tables_are_keyed_on_the_source_position_unless_an_engine_is_given() {
        let url = r#""url": "http://127.0.0.1:8123""#;
        assert_eq!(plugin(&format!("{{{url}}}")).engine(true), ENGINE);
        let once = plugin(&format!(r#"{{{url}, "exactly_once": true}}"#));
        assert_eq!(once.engine(false), ENGINE_EXACTLY_ONCE);
        assert_eq!(
            once.engine(true),
            format!("{ENGINE_EXACTLY_ONCE} SETTINGS non_replicated_deduplication_window = 1000")
        );
        let own = plugin(&format!(r#"{{{url}, "exactly_once": true, "engine": "Log"}}"#));
        assert_eq!(own.engine(true), "Log");
    }

    #[test]
    fn exactly_once_refuses_rows_without_a_position_and_two_topics_in_one_table() {
        use bizon_sdk::arrow_array::{ArrayRef, Int64Array, StringArray};
        use bizon_sdk::{BatchSource, OffsetRange};
        use std::sync::Arc;

        let mut once = plugin(r#"{"url": "http://127.0.0.1:8123", "exactly_once": true}"#);
        let info = BatchInfo {
            destination_id: "events".into(),
            sequence: 0,
            num_rows: 1,
        };
        let ids: ArrayRef = Arc::new(StringArray::from(vec!["partition_0_offset_1"]));
        let times: ArrayRef = Arc::new(Int64Array::from(vec![1]));
        let bizon = RecordBatch::try_from_iter([(SOURCE_RECORD_ID, ids), (SOURCE_TIMESTAMP, times)]).unwrap();
        let unnested = RecordBatch::try_from_iter([("id", Arc::new(Int64Array::from(vec![1])) as ArrayRef)]).unwrap();
        let from = |topic: &str| BatchSource {
            batch_id: "x".into(),
            ranges: vec![OffsetRange {
                topic: topic.into(),
                partition: 0,
                first: 1,
                last: 1,
            }],
        };
        let err = once.check_exactly_once(&unnested, &info, None).unwrap_err().to_string();
        assert!(err.contains("no `source_record_id` column"), "{err}");
        once.check_exactly_once(&bizon, &info, Some(&from("orders"))).unwrap();
        once.check_exactly_once(&bizon, &info, Some(&from("orders"))).unwrap();
        let err = once
            .check_exactly_once(&bizon, &info, Some(&from("refunds")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("topics `orders` and `refunds`"), "{err}");
    }
}
