//! Transforms: components that reshape records between the source and the
//! buffers (world `transformer` of wit/transform.wit).
//!
//! Implement [`Transform`] and call [`export_transform!`](crate::export_transform)
//! once. The host hands a batch of records at a time (as NDJSON, parsed here
//! into [`Record`]s); for each record, push the records that replace it: none
//! drops it, several split it. An `Err` fails that record alone: the host
//! sends it to the pipeline's dead letter, or stops the run naming it.
//!
//! ```ignore
//! use bizon_sdk::{export_transform, Config, Error, Record, Transform};
//!
//! struct Upper;
//!
//! impl Transform for Upper {
//!     const NAME: &'static str = "upper";
//!
//!     fn open(_config: Config) -> Result<Self, Error> {
//!         Ok(Upper)
//!     }
//!
//!     fn transform(&mut self, mut record: Record, out: &mut Vec<Record>) -> Result<(), Error> {
//!         let mut data = record.value()?;
//!         if let Some(name) = data.get_mut("name") {
//!             *name = name.as_str().unwrap_or_default().to_uppercase().into();
//!         }
//!         record.set_value(&data);
//!         out.push(record);
//!         Ok(())
//!     }
//! }
//!
//! export_transform!(Upper);
//! ```

use std::cell::RefCell;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::{Config, Error};

/// One record as the host hands it over and takes it back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub source_record_id: String,
    /// Microseconds since the Unix epoch, UTC.
    pub source_timestamp: i64,
    /// Where the source routed it; `None` for the pipeline's default.
    pub destination_id: Option<String>,
    /// The record itself (Bizon's `source_data`) as JSON text, as it came:
    /// a transform that only splices text never pays for a parse. What is
    /// here on the way out is written byte for byte.
    #[serde(rename = "source_data")]
    pub data: Box<RawValue>,
}

impl Record {
    /// `data` parsed. (Keys come back sorted: serde_json's maps are ordered
    /// by key unless its `preserve_order` feature is on.)
    pub fn value(&self) -> Result<Value, Error> {
        Ok(serde_json::from_str(self.data.get())?)
    }

    /// Replaces `data` with `value`'s JSON.
    pub fn set_value(&mut self, value: &Value) {
        self.data = serde_json::value::to_raw_value(value).expect("a JSON value serializes");
    }

    /// Replaces `data` with `json`, which must be valid JSON.
    pub fn set_json(&mut self, json: String) -> Result<(), Error> {
        self.data = RawValue::from_string(json)?;
        Ok(())
    }
}

/// A transform: `open` once per instance, then `transform` for every record.
pub trait Transform: Sized + 'static {
    /// Short name shown in the host's logs and errors.
    const NAME: &'static str;

    /// `config` is the transform's `config:` in the pipeline. An error stops
    /// the pipeline before any record moves.
    fn open(config: Config) -> Result<Self, Error>;

    /// Push what replaces `record` to `out`.
    fn transform(&mut self, record: Record, out: &mut Vec<Record>) -> Result<(), Error>;
}

#[doc(hidden)]
pub mod export {
    use super::*;
    use crate::bindings::bizon::destination::types::InputFormat;
    pub use crate::transform_bindings::exports::bizon::destination::transform::{
        Guest, RecordError, TransformInfo, Transformed,
    };

    thread_local! {
        static STATE: RefCell<Option<Box<dyn std::any::Any>>> = const { RefCell::new(None) };
    }

    pub fn describe<T: Transform>(version: &str) -> TransformInfo {
        TransformInfo {
            name: T::NAME.to_string(),
            version: version.to_string(),
            input_format: InputFormat::Ndjson,
        }
    }

    pub fn open<T: Transform>(config: String) -> Result<(), String> {
        let config = Config::from_json(&config).map_err(|e| e.to_string())?;
        let instance = T::open(config).map_err(|e| e.to_string())?;
        STATE.with(|s| *s.borrow_mut() = Some(Box::new(instance)));
        Ok(())
    }

    pub fn transform_records<T: Transform>(batch: Vec<u8>) -> Result<Transformed, String> {
        STATE.with(|s| {
            let mut state = s.borrow_mut();
            let instance = state
                .as_mut()
                .and_then(|b| b.downcast_mut::<T>())
                .ok_or("transform-records called before open")?;
            Ok(run(instance, &batch))
        })
    }

    /// Every line through the transform; a line that does not parse or a
    /// record the transform refuses is an error of that row alone.
    pub fn run<T: Transform>(instance: &mut T, batch: &[u8]) -> Transformed {
        let mut out = Vec::new();
        let mut errors = Vec::new();
        let mut produced = Vec::new();
        let lines = batch.split(|b| *b == b'\n').filter(|l| !l.is_empty());
        for (row, line) in lines.enumerate() {
            let result = serde_json::from_slice::<Record>(line)
                .map_err(|e| Error::msg(format!("not a record: {e}")))
                .and_then(|record| instance.transform(record, &mut produced));
            match result {
                Ok(()) => {
                    for record in produced.drain(..) {
                        serde_json::to_writer(&mut out, &record).expect("a record serializes");
                        out.push(b'\n');
                    }
                }
                Err(e) => {
                    produced.clear();
                    errors.push(RecordError {
                        row: row as u64,
                        reason: e.to_string(),
                    });
                }
            }
        }
        Transformed { batch: out, errors }
    }
}

/// Export a [`Transform`] as the component's `transform` interface. Call it
/// once, at the crate root of a `cdylib`.
#[macro_export]
macro_rules! export_transform {
    ($ty:ty) => {
        const _: () = {
            struct BizonTransform;

            impl $crate::transform::export::Guest for BizonTransform {
                fn describe() -> $crate::transform::export::TransformInfo {
                    $crate::transform::export::describe::<$ty>(env!("CARGO_PKG_VERSION"))
                }

                fn open(config: String) -> Result<(), String> {
                    $crate::transform::export::open::<$ty>(config)
                }

                fn transform_records(batch: Vec<u8>) -> Result<$crate::transform::export::Transformed, String> {
                    $crate::transform::export::transform_records::<$ty>(batch)
                }
            }

            $crate::transform_bindings::__export_transformer_world!(
                BizonTransform with_types_in $crate::transform_bindings
            );
        };
    };
}

#[cfg(test)]
mod tests {
    use super::export::run;
    use super::*;

    struct Split;

    impl Transform for Split {
        const NAME: &'static str = "split";

        fn open(_: Config) -> Result<Self, Error> {
            Ok(Split)
        }

        fn transform(&mut self, record: Record, out: &mut Vec<Record>) -> Result<(), Error> {
            let mut value = record.value()?;
            let n = value["n"].as_u64().ok_or_else(|| Error::msg("no n"))?;
            for i in 0..n {
                let mut copy = record.clone();
                value["i"] = i.into();
                copy.set_value(&value);
                out.push(copy);
            }
            Ok(())
        }
    }

    #[test]
    fn records_may_be_dropped_split_or_refused_one_by_one() {
        let batch = concat!(
            r#"{"source_record_id":"a","source_timestamp":1,"destination_id":null,"source_data":{"n":2,"z":0}}"#,
            "\n",
            r#"{"source_record_id":"b","source_timestamp":2,"destination_id":"d","source_data":{"n": 0}}"#,
            "\n",
            r#"{"source_record_id":"c","source_timestamp":3,"destination_id":"d","source_data":{}}"#,
            "\n",
        );
        let out = run(&mut Split, batch.as_bytes());
        let text = String::from_utf8(out.batch).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[1],
            r#"{"source_record_id":"a","source_timestamp":1,"destination_id":null,"source_data":{"i":1,"n":2,"z":0}}"#
        );
        assert_eq!(out.errors.len(), 1);
        assert_eq!(out.errors[0].row, 2);
        assert_eq!(out.errors[0].reason, "no n");
    }

    struct Pass;

    impl Transform for Pass {
        const NAME: &'static str = "pass";

        fn open(_: Config) -> Result<Self, Error> {
            Ok(Pass)
        }

        fn transform(&mut self, record: Record, out: &mut Vec<Record>) -> Result<(), Error> {
            out.push(record);
            Ok(())
        }
    }

    #[test]
    fn untouched_source_data_goes_back_byte_for_byte() {
        let line = r#"{"source_record_id":"a","source_timestamp":1,"destination_id":"d","source_data":{"z": 1,  "a":"\u00e9"}}"#;
        let out = run(&mut Pass, format!("{line}\n").as_bytes());
        assert_eq!(String::from_utf8(out.batch).unwrap(), format!("{line}\n"));
    }
}
