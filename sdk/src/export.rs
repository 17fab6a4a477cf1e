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
