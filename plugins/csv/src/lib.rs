//! bizon-csv: one CSV file per destination_id, `<dir>/<destination_id>.csv`.
//!
//! plugin_config: `{"dir": "/out"}` (the default). `dir` is a path inside the
//! sandbox: grant it with `--allow-dir HOST_DIR:/out`.
//!
//! Every column of the batch becomes a CSV column: Bizon's seven columns by
//! default, the record schema's typed columns with `unnest: true`. The header
//! is written when a file is created; a run that finds the file already there
//! appends to it. Quoting follows RFC 4180; timestamps are RFC 3339, nulls are
//! empty fields. Each write is synced to disk before it returns, so a batch
//! the host counts as written survives a crash.

use std::collections::HashMap;
use std::fs::File;
use std::sync::Arc;

use arrow_csv::WriterBuilder;
use bizon_sdk::arrow_array::make_array;
use bizon_sdk::arrow_schema::{DataType, Schema};
use bizon_sdk::{export_destination, log, BatchInfo, Config, Destination, Error, RecordBatch, WriteError};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CsvConfig {
    #[serde(default = "default_dir")]
    dir: String,
}

fn default_dir() -> String {
    "/out".to_string()
}

struct Csv {
    dir: String,
    files: HashMap<String, Output>,
}

struct Output {
    file: File,
    /// True until the first batch lands in a file this run created.
    needs_header: bool,
    /// The host retries a batch under its sequence number; one that was
    /// already written must not be appended twice.
    next_sequence: u64,
}

impl Destination for Csv {
    const NAME: &'static str = "csv";

    fn open(config: Config) -> Result<Self, Error> {
        let CsvConfig { dir } = config.parse()?;
        Ok(Csv {
            dir,
            files: HashMap::new(),
        })
    }

    fn check_connection(&mut self) -> Result<(), Error> {
        // WASI reports no permission bits, so only a real write tells whether
        // the directory was granted writable.
        let probe = format!("{}/.bizon-csv-write-check", self.dir);
        std::fs::write(&probe, b"")
            .and_then(|()| std::fs::remove_file(&probe))
            .map_err(|e| {
                Error::msg(format!(
                    "cannot write in {}: {e} (granted writable with --allow-dir HOST:{}:rw?)",
                    self.dir, self.dir
                ))
            })
    }

    fn write(&mut self, batch: &RecordBatch, info: &BatchInfo) -> Result<u64, WriteError> {
        let output = match self.files.get_mut(&info.destination_id) {
            Some(output) => output,
            None => {
                let output = self.create(&info.destination_id)?;
                self.files.entry(info.destination_id.clone()).or_insert(output)
            }
        };
        if info.sequence < output.next_sequence {
            log::warn!(
                "{}: batch {} already written, skipped",
                info.destination_id,
                info.sequence
            );
            return Ok(info.num_rows);
        }
        // The writer flushes its buffer into the file at the end of each write.
        WriterBuilder::new()
            .with_header(output.needs_header)
            .build(&output.file)
            .write(&utc_as_offset(batch)?)?;
        output.file.sync_data()?;
        output.needs_header = false;
        output.next_sequence = info.sequence + 1;
        Ok(info.num_rows)
    }

    fn finalize(&mut self) -> Result<(), Error> {
        for (destination_id, output) in self.files.drain() {
            output.file.sync_all()?;
            log::info!("{destination_id}: closed");
        }
        Ok(())
    }
}

impl Csv {
    fn create(&self, destination_id: &str) -> Result<Output, WriteError> {
        // destination_id names a file: refuse anything that would leave `dir`.
        if destination_id.is_empty() || destination_id.starts_with('.') || destination_id.contains(['/', '\\']) {
            return Err(WriteError::fatal(format!(
                "destination_id {destination_id:?} cannot be a file name"
            )));
        }
        let path = format!("{}/{destination_id}.csv", self.dir);
        let file = File::options()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| WriteError::fatal(format!("{path}: {e}")))?;
        let is_new = file.metadata()?.len() == 0;
        log::debug!("{path}: opened ({})", if is_new { "new" } else { "appending" });
        Ok(Output {
            file,
            needs_header: is_new,
            next_sequence: 0,
        })
    }
}

/// Arrow's formatter resolves named time zones only with the chrono-tz
/// database (hundreds of KB in every component); Bizon's timestamps are all
/// "UTC", which is the offset "+00:00", so relabel those columns instead. Only
/// the type changes: the column data is shared, not copied.
fn utc_as_offset(batch: &RecordBatch) -> Result<RecordBatch, WriteError> {
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        match field.data_type() {
            DataType::Timestamp(unit, Some(tz)) if matches!(tz.as_ref(), "UTC" | "Etc/UTC" | "Z") => {
                let data_type = DataType::Timestamp(*unit, Some("+00:00".into()));
                let data = column.to_data().into_builder().data_type(data_type.clone()).build()?;
                fields.push(field.as_ref().clone().with_data_type(data_type));
                columns.push(make_array(data));
            }
            _ => {
                fields.push(field.as_ref().clone());
                columns.push(column.clone());
            }
        }
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
}

export_destination!(Csv);

#[cfg(test)]
mod tests {
    use bizon_sdk::arrow_array::{
        ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray,
    };

    use super::*;

    fn temp_dir(name: &str) -> String {
        let dir = std::env::temp_dir().join(format!("bizon-csv-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.to_str().unwrap().to_string()
    }

    fn open(dir: &str) -> Csv {
        Csv::open(Config::from_json(&format!(r#"{{"dir": {dir:?}}}"#)).unwrap()).unwrap()
    }

    fn info(destination_id: &str, sequence: u64, batch: &RecordBatch) -> BatchInfo {
        BatchInfo {
            destination_id: destination_id.to_string(),
            sequence,
            num_rows: batch.num_rows() as u64,
        }
    }

    fn typed_batch(ids: &[i64]) -> RecordBatch {
        let n = ids.len();
        RecordBatch::try_from_iter([
            ("id", Arc::new(Int64Array::from(ids.to_vec())) as ArrayRef),
            (
                "name",
                Arc::new(StringArray::from_iter((0..n).map(|i| match i {
                    0 => Some("plain".to_string()),
                    1 => Some("comma, \"quote\"\nnewline".to_string()),
                    _ => None,
                }))),
            ),
            ("score", Arc::new(Float64Array::from(vec![1.5; n]))),
            ("ok", Arc::new(BooleanArray::from(vec![true; n]))),
            (
                "at",
                Arc::new(TimestampMicrosecondArray::from(vec![1_700_000_000_123_456; n]).with_timezone("UTC")),
            ),
        ])
        .unwrap()
    }

    #[test]
    fn writes_a_header_once_and_quotes_per_rfc_4180() {
        let dir = temp_dir("typed");
        let mut csv = open(&dir);
        let first = typed_batch(&[1, 2, 3]);
        let second = typed_batch(&[4]);
        assert_eq!(csv.write(&first, &info("users", 0, &first)).unwrap(), 3);
        assert_eq!(csv.write(&second, &info("users", 1, &second)).unwrap(), 1);
        csv.finalize().unwrap();

        let text = std::fs::read_to_string(format!("{dir}/users.csv")).unwrap();
        let at = "2023-11-14T22:13:20.123456Z";
        assert_eq!(
            text,
            format!(
                "id,name,score,ok,at\n\
                 1,plain,1.5,true,{at}\n\
                 2,\"comma, \"\"quote\"\"\nnewline\",1.5,true,{at}\n\
                 3,,1.5,true,{at}\n\
                 4,plain,1.5,true,{at}\n"
            )
        );
    }

    #[test]
    fn a_retried_batch_is_not_written_twice_and_a_new_run_appends() {
        let dir = temp_dir("retry");
        let batch = typed_batch(&[7]);
        let mut csv = open(&dir);
        csv.write(&batch, &info("t", 0, &batch)).unwrap();
        csv.write(&batch, &info("t", 0, &batch)).unwrap();
        csv.finalize().unwrap();

        let mut next_run = open(&dir);
        next_run.write(&batch, &info("t", 0, &batch)).unwrap();
        next_run.finalize().unwrap();

        let text = std::fs::read_to_string(format!("{dir}/t.csv")).unwrap();
        assert_eq!(text.lines().filter(|l| l.starts_with("id,")).count(), 1);
        assert_eq!(text.lines().filter(|l| l.starts_with("7,")).count(), 2);
    }

    #[test]
    fn one_file_per_destination_id_and_unsafe_ids_are_refused() {
        let dir = temp_dir("ids");
        let batch = typed_batch(&[1]);
        let mut csv = open(&dir);
        csv.write(&batch, &info("a", 0, &batch)).unwrap();
        csv.write(&batch, &info("b", 0, &batch)).unwrap();
        assert!(std::fs::metadata(format!("{dir}/a.csv")).is_ok());
        assert!(std::fs::metadata(format!("{dir}/b.csv")).is_ok());
        for bad in ["../escape", "", ".hidden", "a/b"] {
            let err = csv.write(&batch, &info(bad, 0, &batch)).unwrap_err();
            assert!(matches!(err, WriteError::Fatal(_)), "{bad}: {err}");
        }
    }

    #[test]
    fn check_connection_fails_without_the_directory() {
        let mut csv = open("/nonexistent/bizon-csv");
        let err = csv.check_connection().unwrap_err();
        assert!(err.message().contains("--allow-dir"), "{err}");
    }
}
