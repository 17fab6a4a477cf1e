//! The glue between the WIT exports and a plugin's trait implementation; used
//! only through [`export_destination!`](crate::export_destination) and
//! [`export_ndjson_destination!`](crate::export_ndjson_destination).

use std::any::Any;
use std::cell::RefCell;

use arrow_array::RecordBatch;

pub use crate::bindings::bizon::destination::types::{
    BatchInfo as WireBatchInfo, InputFormat, PluginInfo, WriteError as WireWriteError,
};
pub use crate::bindings::exports::bizon::destination::destination::Guest;
use crate::{decode_ipc, BatchInfo, Config, Destination, Error, NdjsonDestination, WriteError};

/// What the two plugin traits have in common once the batch is decoded, so
/// the state handling below exists once.
pub trait Plugin: Sized + 'static {
    const NAME: &'static str;
    const FORMAT: InputFormat;
    fn open(config: Config) -> Result<Self, Error>;
    fn write(&mut self, batch: Vec<u8>, info: &BatchInfo) -> Result<u64, WriteError>;
    fn check_connection(&mut self) -> Result<(), Error>;
    fn finalize(&mut self) -> Result<(), Error>;
}

pub struct Arrow<T>(T);

impl<T: Destination> Plugin for Arrow<T> {
    const NAME: &'static str = T::NAME;
    const FORMAT: InputFormat = InputFormat::ArrowIpc;

    fn open(config: Config) -> Result<Self, Error> {
        T::open(config).map(Self)
    }

    fn write(&mut self, batch: Vec<u8>, info: &BatchInfo) -> Result<u64, WriteError> {
        let batch: RecordBatch = decode_ipc(batch)?;
        self.0.write(&batch, info)
    }

    fn check_connection(&mut self) -> Result<(), Error> {
        self.0.check_connection()
    }

    fn finalize(&mut self) -> Result<(), Error> {
        self.0.finalize()
    }
}

pub struct Ndjson<T>(T);

impl<T: NdjsonDestination> Plugin for Ndjson<T> {
    const NAME: &'static str = T::NAME;
    const FORMAT: InputFormat = InputFormat::Ndjson;

    fn open(config: Config) -> Result<Self, Error> {
        T::open(config).map(Self)
    }

    fn write(&mut self, batch: Vec<u8>, info: &BatchInfo) -> Result<u64, WriteError> {
        let text =
            String::from_utf8(batch).map_err(|e| WriteError::fatal(format!("NDJSON batch is not UTF-8: {e}")))?;
        self.0.write(&text, info)
    }

    fn check_connection(&mut self) -> Result<(), Error> {
        self.0.check_connection()
    }

    fn finalize(&mut self) -> Result<(), Error> {
        self.0.finalize()
    }
}

/// One component instance runs one destination, so one slot holds it; the
/// host serializes calls into an instance, so the RefCell is never contended.
enum State {
    NotOpen,
    Open(Box<dyn Any>),
    Finalized,
}

thread_local! {
    static STATE: RefCell<State> = const { RefCell::new(State::NotOpen) };
}

/// Calls the plugin's method on the open instance; a call out of order is an
/// error the host can report, not a trap that would look like a plugin crash.
fn with_instance<P: Plugin, R>(call: &str, f: impl FnOnce(&mut P) -> R) -> Result<R, String> {
    STATE.with(|state| match &mut *state.borrow_mut() {
        State::Open(instance) => instance
            .downcast_mut::<P>()
            .map(f)
            .ok_or_else(|| format!("{call}: instance of another type")),
        State::NotOpen => Err(format!("{call} called before open")),
        State::Finalized => Err(format!("{call} called after finalize")),
    })
}

pub fn describe<P: Plugin>(version: &str) -> PluginInfo {
    PluginInfo {
        name: P::NAME.to_string(),
        version: version.to_string(),
        input_format: P::FORMAT,
    }
}

pub fn open<P: Plugin>(config: String) -> Result<(), String> {
    let config = Config::from_json(&config).map_err(|e| e.to_string())?;
    let instance = P::open(config).map_err(|e| e.to_string())?;
    STATE.with(|state| *state.borrow_mut() = State::Open(Box::new(instance)));
    Ok(())
}

pub fn check_connection<P: Plugin>() -> Result<(), String> {
    with_instance::<P, _>("check-connection", |p| p.check_connection())?.map_err(|e| e.to_string())
}

pub fn write_records<P: Plugin>(info: WireBatchInfo, batch: Vec<u8>) -> Result<u64, WireWriteError> {
    let info = BatchInfo {
        destination_id: info.destination_id,
        sequence: info.sequence,
        num_rows: info.num_rows,
    };
    with_instance::<P, _>("write-records", |p| p.write(batch, &info))
        .map_err(WireWriteError::Fatal)?
        .map_err(Into::into)
}

/// The instance is dropped after finalize so that whatever it holds (open
/// files, buffers) is released even if the plugin's finalize forgot to.
pub fn finalize<P: Plugin>() -> Result<(), String> {
    let result = with_instance::<P, _>("finalize", |p| p.finalize())?;
    STATE.with(|state| *state.borrow_mut() = State::Finalized);
    result.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use arrow_ipc::writer::StreamWriter;

    use super::*;
    use crate::columns::tests::bizon_batch;
    use crate::BizonColumns;

    /// Records what it was given, so the tests see what the glue passed on.
    struct Echo {
        seen: Vec<String>,
    }

    impl Destination for Echo {
        const NAME: &'static str = "echo";

        fn open(config: Config) -> Result<Self, Error> {
            match config.get("fail") {
                Some(_) => Err(Error::msg("told to fail")),
                None => Ok(Echo { seen: Vec::new() }),
            }
        }

        fn write(&mut self, batch: &RecordBatch, info: &BatchInfo) -> Result<u64, WriteError> {
            let columns = BizonColumns::new(batch)?;
            self.seen
                .extend((0..columns.len()).map(|i| columns.source_data(i).to_string()));
            Ok(info.num_rows)
        }
    }

    impl NdjsonDestination for Echo {
        const NAME: &'static str = "echo-ndjson";

        fn open(config: Config) -> Result<Self, Error> {
            <Echo as Destination>::open(config)
        }

        fn write(&mut self, batch: &str, _info: &BatchInfo) -> Result<u64, WriteError> {
            self.seen.extend(crate::ndjson_rows(batch).map(str::to_string));
            Ok(self.seen.len() as u64)
        }
    }

    fn info(num_rows: u64) -> WireBatchInfo {
        WireBatchInfo {
            destination_id: "users".into(),
            sequence: 0,
            num_rows,
        }
    }

    fn ipc(batch: &RecordBatch) -> Vec<u8> {
        let mut writer = StreamWriter::try_new(Vec::new(), &batch.schema()).unwrap();
        writer.write(batch).unwrap();
        writer.into_inner().unwrap()
    }

    fn fatal(result: Result<u64, WireWriteError>) -> String {
        match result {
            Err(WireWriteError::Fatal(message)) => message,
            other => panic!("expected a fatal error, got {other:?}"),
        }
    }

    #[test]
    fn calls_out_of_order_are_errors_not_traps() {
        let batch = ipc(&bizon_batch(&[("r0", "{}")]));
        let early = fatal(write_records::<Arrow<Echo>>(info(1), batch.clone()));
        assert_eq!(early, "write-records called before open");
        assert!(check_connection::<Arrow<Echo>>().is_err());
        assert!(finalize::<Arrow<Echo>>().is_err());

        open::<Arrow<Echo>>("{}".into()).unwrap();
        assert!(matches!(write_records::<Arrow<Echo>>(info(1), batch.clone()), Ok(1)));
        finalize::<Arrow<Echo>>().unwrap();

        let late = fatal(write_records::<Arrow<Echo>>(info(1), batch));
        assert_eq!(late, "write-records called after finalize");
    }

    #[test]
    fn open_reports_bad_json_and_the_plugins_own_error() {
        assert!(open::<Arrow<Echo>>("{".into()).unwrap_err().contains("plugin_config"));
        assert_eq!(
            open::<Arrow<Echo>>(r#"{"fail": 1}"#.into()).unwrap_err(),
            "told to fail"
        );
    }

    #[test]
    fn arrow_batches_reach_the_plugin_decoded_and_bad_bytes_are_fatal() {
        open::<Arrow<Echo>>(String::new()).unwrap();
        let batch = ipc(&bizon_batch(&[("r0", r#"{"a":1}"#), ("r1", r#"{"a":2}"#)]));
        assert!(matches!(write_records::<Arrow<Echo>>(info(2), batch), Ok(2)));
        assert!(matches!(
            write_records::<Arrow<Echo>>(info(0), ipc(&bizon_batch(&[]))),
            Ok(0)
        ));
        assert!(fatal(write_records::<Arrow<Echo>>(info(1), b"junk".to_vec())).contains("Arrow"));
        with_instance::<Arrow<Echo>, _>("test", |p| {
            assert_eq!(p.0.seen, [r#"{"a":1}"#, r#"{"a":2}"#]);
        })
        .unwrap();
    }

    #[test]
    fn ndjson_plugins_describe_themselves_and_get_lines() {
        let described = describe::<Ndjson<Echo>>("1.2.3");
        assert_eq!(described.name, "echo-ndjson");
        assert_eq!(described.version, "1.2.3");
        assert!(matches!(described.input_format, InputFormat::Ndjson));
        assert!(matches!(
            describe::<Arrow<Echo>>("1").input_format,
            InputFormat::ArrowIpc
        ));

        open::<Ndjson<Echo>>("{}".into()).unwrap();
        let rows = b"{\"a\":1}\n{\"a\":2}\n".to_vec();
        assert!(matches!(write_records::<Ndjson<Echo>>(info(2), rows), Ok(2)));
        assert!(fatal(write_records::<Ndjson<Echo>>(info(1), vec![0xff])).contains("UTF-8"));
    }
}
