use std::fs::File;
use std::io::{BufWriter, Write};

use bizon_sdk::{export_destination, log, BatchInfo, BizonColumns, Config, Destination, Error};
use bizon_sdk::{RecordBatch, WriteError};

/// Appends each record's JSON (`source_data`) to one file.
struct MyDest {
    out: BufWriter<File>,
    rows: u64,
}

#[derive(serde::Deserialize)]
struct MyConfig {
    path: String,
}

impl Destination for MyDest {
    const NAME: &'static str = "my-dest";

    fn open(config: Config) -> Result<Self, Error> {
        let MyConfig { path } = config.parse()?;
        let file = File::options().create(true).append(true).open(&path)?;
        Ok(MyDest {
            out: BufWriter::new(file),
            rows: 0,
        })
    }

    fn write(&mut self, batch: &RecordBatch, info: &BatchInfo) -> Result<u64, WriteError> {
        let columns = BizonColumns::new(batch)?;
        for row in 0..columns.len() {
            writeln!(self.out, "{}", columns.source_data(row))?;
        }
        self.out.flush()?;
        self.rows += info.num_rows;
        Ok(info.num_rows)
    }

    fn finalize(&mut self) -> Result<(), Error> {
        log::info!("wrote {} rows", self.rows);
        Ok(())
    }
}

export_destination!(MyDest);
