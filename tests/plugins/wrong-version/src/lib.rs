//! A trivial plugin built against `bizon:destination@9.0.0`: the host must
//! refuse to load it and name both versions.

wit_bindgen::generate!({ path: "wit", world: "plugin" });

use bizon::destination::types::{BatchInfo, InputFormat, PluginInfo, WriteError};
use exports::bizon::destination::destination::Guest;

struct WrongVersion;

impl Guest for WrongVersion {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "wrong-version".to_string(),
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
        Ok(info.num_rows)
    }

    fn finalize() -> Result<(), String> {
        Ok(())
    }
}

export!(WrongVersion);
