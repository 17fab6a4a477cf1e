//! bizon-stats: per destination_id row counts and per-column summaries (null
//! count, min/max of numeric and timestamp columns, longest text), logged
//! through the host: one debug line per batch, an info summary at finalize.
//! It needs no grant at all: no files, no network, no environment.
//!
//! plugin_config: none (`{}`).

use std::collections::BTreeMap;
use std::fmt::Write;

use bizon_sdk::arrow_array::cast::AsArray;
use bizon_sdk::arrow_array::types::{
    Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt16Type, UInt32Type, UInt64Type,
    UInt8Type,
};
use bizon_sdk::arrow_array::Array;
use bizon_sdk::arrow_schema::{DataType, TimeUnit};
use bizon_sdk::{export_destination, log, BatchInfo, Config, Destination, Error, RecordBatch, WriteError};

#[derive(Default)]
struct Stats {
    /// Sorted so the summary reads the same from run to run.
    tables: BTreeMap<String, Table>,
}

#[derive(Default)]
struct Table {
    rows: u64,
    batches: u64,
    columns: Vec<(String, Column)>,
}

#[derive(Default)]
struct Column {
    nulls: u64,
    /// Numbers as f64: exact up to 2^53, which is enough for a summary.
    number: Option<(f64, f64)>,
    /// Microseconds since the Unix epoch, UTC.
    timestamp: Option<(i64, i64)>,
    longest_text: Option<usize>,
}

impl Destination for Stats {
    const NAME: &'static str = "stats";

    fn open(config: Config) -> Result<Self, Error> {
        if let Some(object) = config.value().as_object().filter(|o| !o.is_empty()) {
            let keys: Vec<_> = object.keys().collect();
            return Err(Error::msg(format!("stats takes no plugin_config, got {keys:?}")));
        }
        Ok(Stats::default())
    }

    fn write(&mut self, batch: &RecordBatch, info: &BatchInfo) -> Result<u64, WriteError> {
        let table = self.tables.entry(info.destination_id.clone()).or_default();
        table.rows += batch.num_rows() as u64;
        table.batches += 1;
        for (field, array) in batch.schema().fields().iter().zip(batch.columns()) {
            let index = match table.columns.iter().position(|(n, _)| n == field.name()) {
                Some(index) => index,
                None => {
                    table.columns.push((field.name().clone(), Column::default()));
                    table.columns.len() - 1
                }
            };
            table.columns[index].1.add(array.as_ref());
        }
        log::debug!(
            "{}: batch {} with {} rows ({} so far)",
            info.destination_id,
            info.sequence,
            batch.num_rows(),
            table.rows
        );
        Ok(info.num_rows)
    }

    fn finalize(&mut self) -> Result<(), Error> {
        for (destination_id, table) in &self.tables {
            let mut line = format!("{destination_id}: {} rows in {} batches", table.rows, table.batches);
            for (name, column) in &table.columns {
                write!(line, "; {name}: nulls={}", column.nulls)?;
                if let Some((min, max)) = column.number {
                    write!(line, " min={min} max={max}")?;
                }
                if let Some((min, max)) = column.timestamp {
                    write!(line, " min={} max={}", rfc3339(min), rfc3339(max))?;
                }
                if let Some(longest) = column.longest_text {
                    write!(line, " longest={longest}B")?;
                }
            }
            log::info!("{line}");
        }
        Ok(())
    }
}

impl Column {
    fn add(&mut self, array: &dyn Array) {
        self.nulls += array.null_count() as u64;
        macro_rules! numbers {
            ($($t:ty),*) => {$(
                if let Some(a) = array.as_primitive_opt::<$t>() {
                    self.number = widen(self.number, a.iter().flatten().map(|v| v as f64));
                    return;
                }
            )*};
        }
        numbers!(
            Int8Type,
            Int16Type,
            Int32Type,
            Int64Type,
            UInt8Type,
            UInt16Type,
            UInt32Type,
            UInt64Type,
            Float32Type,
            Float64Type
        );
        match array.data_type() {
            DataType::Timestamp(unit, _) => {
                let micros: Box<dyn Iterator<Item = i64>> = match unit {
                    TimeUnit::Second => Box::new(
                        array
                            .as_primitive::<TimestampSecondType>()
                            .iter()
                            .flatten()
                            .map(|v| v * 1_000_000),
                    ),
                    TimeUnit::Millisecond => Box::new(
                        array
                            .as_primitive::<TimestampMillisecondType>()
                            .iter()
                            .flatten()
                            .map(|v| v * 1_000),
                    ),
                    TimeUnit::Microsecond => {
                        Box::new(array.as_primitive::<TimestampMicrosecondType>().iter().flatten())
                    }
                    TimeUnit::Nanosecond => Box::new(
                        array
                            .as_primitive::<TimestampNanosecondType>()
                            .iter()
                            .flatten()
                            .map(|v| v / 1_000),
                    ),
                };
                self.timestamp = widen(self.timestamp, micros);
            }
            DataType::Utf8 => {
                let longest = array.as_string::<i32>().iter().flatten().map(str::len).max();
                self.longest_text = self.longest_text.max(longest);
            }
            _ => {}
        }
    }
}

fn widen<T: PartialOrd + Copy>(range: Option<(T, T)>, values: impl Iterator<Item = T>) -> Option<(T, T)> {
    values.fold(range, |range, v| match range {
        None => Some((v, v)),
        Some((min, max)) => Some((if v < min { v } else { min }, if v > max { v } else { max })),
    })
}

/// Microseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.ffffffZ`; days to a
/// civil date by Howard Hinnant's algorithm, to avoid a date crate for one line.
fn rfc3339(micros: i64) -> String {
    let (days, micros_of_day) = (micros.div_euclid(86_400_000_000), micros.rem_euclid(86_400_000_000));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let secs = micros_of_day / 1_000_000;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        micros_of_day % 1_000_000
    )
}

export_destination!(Stats);

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bizon_sdk::arrow_array::{ArrayRef, Int64Array, StringArray, TimestampMicrosecondArray};

    use super::*;

    #[test]
    fn formats_timestamps_like_rfc_3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(rfc3339(1_700_000_000_123_456), "2023-11-14T22:13:20.123456Z");
        assert_eq!(rfc3339(951_782_400_000_000), "2000-02-29T00:00:00.000000Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999999Z");
    }

    #[test]
    fn summarizes_columns_across_batches() {
        let batch = |ids: Vec<Option<i64>>, ts: Vec<i64>| {
            RecordBatch::try_from_iter([
                ("id", Arc::new(Int64Array::from(ids)) as ArrayRef),
                ("at", Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC"))),
                ("name", Arc::new(StringArray::from(vec!["a", "abc"]))),
            ])
            .unwrap()
        };
        let info = |sequence| BatchInfo {
            destination_id: "users".into(),
            sequence,
            num_rows: 2,
        };
        let mut stats = Stats::open(Config::from_json("{}").unwrap()).unwrap();
        stats
            .write(&batch(vec![Some(5), None], vec![10, 20]), &info(0))
            .unwrap();
        stats
            .write(&batch(vec![Some(-3), Some(9)], vec![0, 5]), &info(1))
            .unwrap();

        let table = &stats.tables["users"];
        assert_eq!((table.rows, table.batches), (4, 2));
        let column = |name: &str| &table.columns.iter().find(|(n, _)| n == name).unwrap().1;
        assert_eq!(column("id").nulls, 1);
        assert_eq!(column("id").number, Some((-3.0, 9.0)));
        assert_eq!(column("at").timestamp, Some((0, 20)));
        assert_eq!(column("name").longest_text, Some(3));
        stats.finalize().unwrap();
    }

    #[test]
    fn refuses_a_config_it_would_ignore() {
        assert!(Stats::open(Config::from_json(r#"{"dir": "/out"}"#).unwrap()).is_err());
    }
}
