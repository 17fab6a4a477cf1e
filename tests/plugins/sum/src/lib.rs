//! A well-behaved plugin for benchmarks and as the good neighbour in the
//! hostile tests: it decodes every batch, touches every value of one column
//! and logs `sum=<n> rows=<n>` at finalize, so a test can check that every row
//! arrived exactly once.
//!
//! plugin_config: `{"column": "amount"}` sums that numeric column (integers
//! exactly, floats as f64); without it, or when a Bizon-layout batch has no
//! such column, it sums the byte length of `source_data`.

use bizon_sdk::arrow_array::cast::AsArray;
use bizon_sdk::arrow_array::types::{
    Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use bizon_sdk::arrow_array::Array;
use bizon_sdk::{
    export_destination, log, BatchInfo, BizonColumns, Config, Destination, Error, RecordBatch, WriteError,
};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SumConfig {
    column: Option<String>,
}

struct Sum {
    column: Option<String>,
    int_sum: i128,
    float_sum: f64,
    saw_float: bool,
    rows: u64,
}

impl Destination for Sum {
    const NAME: &'static str = "bench-sum";

    fn open(config: Config) -> Result<Self, Error> {
        let SumConfig { column } = config.parse()?;
        Ok(Sum {
            column,
            int_sum: 0,
            float_sum: 0.0,
            saw_float: false,
            rows: 0,
        })
    }

    fn write(&mut self, batch: &RecordBatch, info: &BatchInfo) -> Result<u64, WriteError> {
        let column = self.column.as_deref().and_then(|c| batch.column_by_name(c));
        match column {
            Some(array) => self.add_column(array.as_ref())?,
            None => {
                let columns = BizonColumns::new(batch)?;
                let data = columns.source_data_array();
                self.int_sum += (0..data.len()).map(|i| data.value(i).len() as i128).sum::<i128>();
            }
        }
        self.rows += batch.num_rows() as u64;
        Ok(info.num_rows)
    }

    fn finalize(&mut self) -> Result<(), Error> {
        if self.saw_float {
            let total = self.float_sum + self.int_sum as f64;
            log::info!("sum={total} rows={}", self.rows);
        } else {
            log::info!("sum={} rows={}", self.int_sum, self.rows);
        }
        Ok(())
    }
}

impl Sum {
    fn add_column(&mut self, array: &dyn Array) -> Result<(), WriteError> {
        macro_rules! sum_ints {
            ($($t:ty),*) => {$(
                if let Some(a) = array.as_primitive_opt::<$t>() {
                    self.int_sum += a.iter().flatten().map(|v| v as i128).sum::<i128>();
                    return Ok(());
                }
            )*};
        }
        sum_ints!(Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type, UInt32Type, UInt64Type);
        macro_rules! sum_floats {
            ($($t:ty),*) => {$(
                if let Some(a) = array.as_primitive_opt::<$t>() {
                    self.float_sum += a.iter().flatten().map(|v| v as f64).sum::<f64>();
                    self.saw_float = true;
                    return Ok(());
                }
            )*};
        }
        sum_floats!(Float32Type, Float64Type);
        Err(WriteError::fatal(format!(
            "column {:?} is {}, not a number",
            self.column,
            array.data_type()
        )))
    }
}

export_destination!(Sum);
