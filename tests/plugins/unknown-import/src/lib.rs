//! A plugin that imports `bizon:destination/escape`, which the host does not
//! implement: it must be refused at load, naming the import, while sockets
//! and HTTP (linked for every plugin) are denied at use instead.

wit_bindgen::generate!({ path: "wit", world: "plugin-with-escape" });

use bizon::destination::types::{BatchInfo, InputFormat, PluginInfo, WriteError};
use exports::bizon::destination::destination::Guest;

struct UnknownImport;

impl Guest for UnknownImport {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "unknown-import".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            input_format: InputFormat::ArrowIpc,
        }
    }

    fn open(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn check_connection() -> Result<(), String> {
        Ok(())
    }

    fn write_records(info: BatchInfo, _batch: Vec<u8>) -> Result<u64, WriteError> {
        Err(WriteError::Fatal(bizon::destination::escape::run(&info.destination_id)))
    }

    fn finalize() -> Result<(), String> {
        Ok(())
    }
}

export!(UnknownImport);
