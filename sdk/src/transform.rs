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

use std::borrow::Cow;
use std::cell::RefCell;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::{Config, Error};

/// One record as the host hands it over and takes it back.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub source_record_id: String,
    /// Microseconds since the Unix epoch, UTC.
    pub source_timestamp: i64,
    /// Where the source routed it; `None` for the pipeline's default.
    pub destination_id: Option<String>,
    /// The record itself (Bizon's `source_data`) as JSON text, as it came:
    /// a transform that only splices text never pays for a parse.
    data: String,
}

impl Record {
    /// A record whose source_data is `json` (see [`Record::set_json`]).
    pub fn new(source_record_id: String, source_timestamp: i64, destination_id: Option<String>, json: String) -> Self {
        Self {
            source_record_id,
            source_timestamp,
            destination_id,
            data: json,
        }
    }

    /// source_data's JSON text. What is here on the way out is written byte
    /// for byte.
    pub fn json(&self) -> &str {
        &self.data
    }

    /// source_data parsed. (Keys come back sorted: serde_json's maps are
    /// ordered by key unless its `preserve_order` feature is on.)
    pub fn value(&self) -> Result<Value, Error> {
        Ok(serde_json::from_str(&self.data)?)
    }

    /// Replaces source_data with `value`'s JSON.
    pub fn set_value(&mut self, value: &Value) {
        self.data = serde_json::to_string(value).expect("a JSON value serializes");
    }

    /// Replaces source_data with `json`, kept as it is. It is not parsed
    /// here: the host checks every record it gets back, and text that is
    /// not one JSON value fails this record alone (dead letter or error).
    pub fn set_json(&mut self, json: String) {
        self.data = json;
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
    /// record the transform refuses is an error of that row alone. A record
    /// that keeps its input row's metadata goes back as `{"row", "source_data"}`,
    /// so neither side copies or parses the metadata again.
    pub fn run<T: Transform>(instance: &mut T, batch: &[u8]) -> Transformed {
        let mut out = Vec::with_capacity(batch.len());
        let mut errors = Vec::new();
        let mut produced = Vec::new();
        let mut scratch = String::new();
        for (row, line) in lines(batch).enumerate() {
            let result = line.and_then(|line| {
                let (record, meta) = parse(line, &mut scratch)?;
                instance.transform(record, &mut produced).map(|()| meta)
            });
            match result {
                Ok(meta) => {
                    for record in produced.drain(..) {
                        write(&mut out, row, &meta, &record);
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

    /// The batch's non-empty lines. The host sends UTF-8, so one check of the
    /// whole batch lets `split` find line ends with `memchr` (a word at a
    /// time) instead of testing every byte; a batch that is not UTF-8 is
    /// checked line by line, so only its bad lines fail.
    fn lines(batch: &[u8]) -> Box<dyn Iterator<Item = Result<&str, Error>> + '_> {
        match std::str::from_utf8(batch) {
            Ok(text) => Box::new(text.split('\n').filter(|l| !l.is_empty()).map(Ok)),
            Err(_) => Box::new(
                batch
                    .split(|b| *b == b'\n')
                    .filter(|l| !l.is_empty())
                    .map(|l| std::str::from_utf8(l).map_err(|e| Error::msg(format!("not a record: {e}")))),
            ),
        }
    }

    /// A record's metadata as it came, to tell whether the transform changed
    /// it. Borrowed from the line when the line spells it plainly (the usual
    /// case), so that keeping it costs no allocation.
    #[derive(Deserialize)]
    struct Meta<'a> {
        #[serde(borrow)]
        source_record_id: Cow<'a, str>,
        source_timestamp: i64,
        #[serde(borrow)]
        destination_id: Option<Cow<'a, str>>,
    }

    impl Meta<'_> {
        fn is_of(&self, record: &Record) -> bool {
            self.source_record_id == record.source_record_id.as_str()
                && self.source_timestamp == record.source_timestamp
                && self.destination_id.as_deref() == record.destination_id.as_deref()
        }
    }

    const DATA_KEY: &str = ",\"source_data\":";

    fn parse<'a>(line: &'a str, scratch: &mut String) -> Result<(Record, Meta<'a>), Error> {
        if let Some(parsed) = host_layout(line) {
            return Ok(parsed);
        }
        if let (Some(at), Some(body)) = (line.find(DATA_KEY), line.strip_suffix('}')) {
            scratch.clear();
            scratch.push_str(&line[..at]);
            scratch.push('}');
            if let Ok(meta) = serde_json::from_str::<Meta>(scratch) {
                let meta = Meta {
                    source_record_id: Cow::Owned(meta.source_record_id.into_owned()),
                    source_timestamp: meta.source_timestamp,
                    destination_id: meta.destination_id.map(|d| Cow::Owned(d.into_owned())),
                };
                return Ok((record(&meta, &body[at + DATA_KEY.len()..]), meta));
            }
        }
        #[derive(Deserialize)]
        struct Full<'a> {
            #[serde(borrow)]
            source_record_id: Cow<'a, str>,
            source_timestamp: i64,
            #[serde(borrow)]
            destination_id: Option<Cow<'a, str>>,
            #[serde(borrow)]
            source_data: &'a RawValue,
        }
        let full: Full = serde_json::from_str(line).map_err(|e| Error::msg(format!("not a record: {e}")))?;
        let meta = Meta {
            source_record_id: full.source_record_id,
            source_timestamp: full.source_timestamp,
            destination_id: full.destination_id,
        };
        Ok((record(&meta, full.source_data.get()), meta))
    }

    fn record(meta: &Meta, data: &str) -> Record {
        Record::new(
            meta.source_record_id.to_string(),
            meta.source_timestamp,
            meta.destination_id.as_deref().map(str::to_string),
            data.to_string(),
        )
    }

    /// The host writes every line as
    /// `{"source_record_id":S,"source_timestamp":N,"destination_id":S|null,"source_data":D}`
    /// (host/src/transform/wire.rs). Read in that order, with no search and
    /// no parse of `source_data`; a line spelled any other way (escapes in
    /// the strings, other keys, another order) is left to serde.
    fn host_layout(line: &str) -> Option<(Record, Meta<'_>)> {
        let rest = line.strip_prefix("{\"source_record_id\":")?;
        let (id, rest) = plain_string(rest)?;
        let rest = rest.strip_prefix(",\"source_timestamp\":")?;
        let digits = rest.find(',')?;
        let timestamp = rest[..digits].parse().ok()?;
        let rest = rest[digits..].strip_prefix(",\"destination_id\":")?;
        let (destination_id, rest) = match rest.strip_prefix("null") {
            Some(rest) => (None, rest),
            None => plain_string(rest).map(|(d, rest)| (Some(Cow::Borrowed(d)), rest))?,
        };
        let data = rest.strip_prefix(DATA_KEY)?.strip_suffix('}')?;
        let meta = Meta {
            source_record_id: Cow::Borrowed(id),
            source_timestamp: timestamp,
            destination_id,
        };
        Some((record(&meta, data), meta))
    }

    /// A JSON string with no escapes in it, and the text after it.
    fn plain_string(text: &str) -> Option<(&str, &str)> {
        let body = text.strip_prefix('"')?;
        let end = body.find('"')?;
        let value = &body[..end];
        (!value.contains('\\')).then(|| (value, &body[end + 1..]))
    }

    fn write(out: &mut Vec<u8>, row: usize, meta: &Meta, record: &Record) {
        out.extend_from_slice(b"{\"row\":");
        out.extend_from_slice(itoa::Buffer::new().format(row).as_bytes());
        if !meta.is_of(record) {
            out.extend_from_slice(b",\"source_record_id\":");
            serde_json::to_writer(&mut *out, &record.source_record_id).expect("a string serializes");
            out.extend_from_slice(b",\"source_timestamp\":");
            out.extend_from_slice(itoa::Buffer::new().format(record.source_timestamp).as_bytes());
            out.extend_from_slice(b",\"destination_id\":");
            serde_json::to_writer(&mut *out, &record.destination_id).expect("a string serializes");
        }
        out.extend_from_slice(DATA_KEY.as_bytes());
        out.extend_from_slice(record.data.as_bytes());
        out.extend_from_slice(b"}\n");
    }
}

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
        assert_eq!(lines[1], r#"{"row":0,"source_data":{"i":1,"n":2,"z":0}}"#);
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
        assert_eq!(
            String::from_utf8(out.batch).unwrap(),
            "{\"row\":0,\"source_data\":{\"z\": 1,  \"a\":\"\\u00e9\"}}\n"
        );
    }

    #[test]
    fn a_line_in_another_key_order_is_read_in_full() {
        // A nested `source_data` key first: the fast path must not take it.
        let line = r#"{"source_data":{"a":1,"source_data":2},"destination_id":null,"source_timestamp":1,"source_record_id":"x\"y"}"#;
        let out = run(&mut Pass, format!("{line}\n").as_bytes());
        assert_eq!(
            String::from_utf8(out.batch).unwrap(),
            "{\"row\":0,\"source_data\":{\"a\":1,\"source_data\":2}}\n"
        );
    }

    struct Rename;

    impl Transform for Rename {
        const NAME: &'static str = "rename";

        fn open(_: Config) -> Result<Self, Error> {
            Ok(Rename)
        }

        fn transform(&mut self, mut record: Record, out: &mut Vec<Record>) -> Result<(), Error> {
            record.source_record_id.push_str("-1");
            record.destination_id = Some("d\"2".into());
            out.push(record);
            Ok(())
        }
    }

    #[test]
    fn changed_metadata_goes_back_in_full() {
        let line = r#"{"source_record_id":"a","source_timestamp":-5,"destination_id":null,"source_data":[1]}"#;
        let out = run(&mut Rename, format!("{line}\n").as_bytes());
        assert_eq!(
            String::from_utf8(out.batch).unwrap(),
            "{\"row\":0,\"source_record_id\":\"a-1\",\"source_timestamp\":-5,\"destination_id\":\"d\\\"2\",\"source_data\":[1]}\n"
        );
    }
}
