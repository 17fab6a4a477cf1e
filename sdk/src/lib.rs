//! Write [bizon-host](https://github.com/) destination plugins in Rust.
//!
//! A destination plugin is a WebAssembly component (`wasm32-wasip2`) that the
//! host hands one batch of records at a time. The host does the buffering,
//! routing by `destination_id`, retries and concurrency; a plugin only writes.
//! It runs sandboxed: no files, network or environment unless the pipeline
//! grants them, a memory cap and a time limit per call.
//!
//! Implement [`Destination`] for your type and call [`export_destination!`]
//! once. A complete plugin that appends each record's JSON to a file per
//! `destination_id` (it needs `--allow-dir HOST_DIR:/out`):
//!
//! ```ignore
//! use std::collections::HashMap;
//! use std::fs::File;
//! use std::io::Write;
//!
//! use bizon_sdk::{export_destination, log, BatchInfo, BizonColumns, Config, Destination,
//!                 Error, RecordBatch, WriteError};
//!
//! struct Lines { dir: String, files: HashMap<String, File> }
//!
//! impl Destination for Lines {
//!     const NAME: &'static str = "lines";
//!
//!     fn open(config: Config) -> Result<Self, Error> {
//!         let dir = config.str_or("dir", "/out")?.to_string();
//!         Ok(Lines { dir, files: HashMap::new() })
//!     }
//!
//!     fn write(&mut self, batch: &RecordBatch, info: &BatchInfo) -> Result<u64, WriteError> {
//!         let columns = BizonColumns::new(batch)?;
//!         let path = format!("{}/{}.jsonl", self.dir, info.destination_id);
//!         let file = match self.files.entry(info.destination_id.clone()) {
//!             std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
//!             std::collections::hash_map::Entry::Vacant(e) => e.insert(
//!                 File::options().create(true).append(true).open(&path)?),
//!         };
//!         for row in 0..columns.len() {
//!             writeln!(file, "{}", columns.source_data(row))?;
//!         }
//!         file.flush()?;
//!         log::debug!("{} rows to {path}", columns.len());
//!         Ok(info.num_rows)
//!     }
//! }
//!
//! export_destination!(Lines);
//! ```
//!
//! The crate type must be `cdylib`; `cargo build --target wasm32-wasip2
//! --release` then produces the component. See `docs/sdk.md` in the
//! repository for running it with `bizon-host run --plugin`.
//!
//! What a batch looks like: by default Bizon's columns (see [`BizonColumns`]);
//! with `unnest: true` the typed columns of the destination's
//! `record_schema`, read straight from the [`RecordBatch`].
//!
//! Errors: `?` turns any error into a fatal [`WriteError`]; return
//! [`WriteError::retryable`] for passing failures and
//! [`WriteError::rejected`] to refuse single rows.
//!
//! Transforms (records reshaped between the source and the buffers) implement
//! [`Transform`] and call [`export_transform!`]; see [`transform`].
//!
//! Where a batch's rows come from (a Kafka source's offset ranges, and a
//! batch id to write idempotently with): [`batch_source`].
//!
//! Plugins that would rather parse JSON lines than Arrow implement
//! [`NdjsonDestination`] and call [`export_ndjson_destination!`]; split the
//! batch with [`ndjson_rows`].

// Lets the generated bindings name the runtime the same way from this crate
// and from the plugin crates the export macro expands in.
extern crate self as bizon_sdk;

mod columns;
mod config;
mod error;
#[doc(hidden)]
pub mod export;
#[cfg(feature = "http")]
pub mod http;
mod ipc;
pub mod json;
pub mod log;
mod ndjson;
mod source;
pub mod transform;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__export_plugin_world",
        runtime_path: "::bizon_sdk::__wit_bindgen::rt",
    });
}

#[doc(hidden)]
pub mod transform_bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "transformer",
        pub_export_macro: true,
        export_macro_name: "__export_transformer_world",
        runtime_path: "::bizon_sdk::__wit_bindgen::rt",
        with: {
            "bizon:destination/types@0.1.0": crate::bindings::bizon::destination::types,
            "bizon:destination/host@0.1.0": crate::bindings::bizon::destination::host,
        },
    });
}

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

pub use arrow_array::{self, RecordBatch};
pub use arrow_schema;
pub use columns::{
    is_bizon_layout, BizonColumns, BIZON_EXTRACTED_AT, BIZON_ID, BIZON_LOADED_AT, DESTINATION_ID, SOURCE_DATA,
    SOURCE_RECORD_ID, SOURCE_TIMESTAMP,
};
pub use config::Config;
pub use error::{Error, WriteError};
pub use ipc::decode_ipc;
pub use ndjson::ndjson_rows;
pub use serde_json;
pub use source::{batch_source, BatchSource, OffsetRange};
pub use transform::{Record, Transform};

/// Where a batch comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchInfo {
    /// The destination_id the records were routed to (a table, a file, ...).
    pub destination_id: String,
    /// Position of the batch among those of its destination_id, from 0. A
    /// retried batch keeps its number, so a plugin can de-duplicate retries.
    pub sequence: u64,
    pub num_rows: u64,
}

/// A destination that receives Arrow record batches.
///
/// The host calls `open` once per instance, then `write` once per flushed
/// batch (batches of one destination_id in order), then `finalize`.
pub trait Destination: Sized + 'static {
    /// Short name shown in the host's logs and errors.
    const NAME: &'static str;

    /// `config` is the pipeline's `plugin_config`. An error stops the pipeline.
    fn open(config: Config) -> Result<Self, Error>;

    /// Write one batch; on success return the number of rows written, which
    /// must be `info.num_rows`.
    fn write(&mut self, batch: &RecordBatch, info: &BatchInfo) -> Result<u64, WriteError>;

    /// Called by `bizon-host check`: prove the plugin can write.
    fn check_connection(&mut self) -> Result<(), Error> {
        Ok(())
    }

    /// Called once after the last batch: flush and close. The instance is
    /// dropped afterwards.
    fn finalize(&mut self) -> Result<(), Error> {
        Ok(())
    }
}

/// A destination that receives NDJSON text: one JSON object per line, with
/// the same fields as the Arrow columns (see [`ndjson_rows`]).
pub trait NdjsonDestination: Sized + 'static {
    const NAME: &'static str;

    fn open(config: Config) -> Result<Self, Error>;

    fn write(&mut self, batch: &str, info: &BatchInfo) -> Result<u64, WriteError>;

    fn check_connection(&mut self) -> Result<(), Error> {
        Ok(())
    }

    fn finalize(&mut self) -> Result<(), Error> {
        Ok(())
    }
}

/// Export a [`Destination`] as the component's `destination` interface. Call
/// it once, at the crate root of a `cdylib`. The version the host shows is the
/// plugin crate's `CARGO_PKG_VERSION`.
#[macro_export]
macro_rules! export_destination {
    ($ty:ty) => {
        $crate::__export_plugin!($crate::export::Arrow<$ty>);
    };
}

/// Export an [`NdjsonDestination`]; the host then sends NDJSON instead of Arrow.
#[macro_export]
macro_rules! export_ndjson_destination {
    ($ty:ty) => {
        $crate::__export_plugin!($crate::export::Ndjson<$ty>);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __export_plugin {
    ($plugin:ty) => {
        const _: () = {
            struct BizonPlugin;

            impl $crate::export::Guest for BizonPlugin {
                fn describe() -> $crate::export::PluginInfo {
                    $crate::export::describe::<$plugin>(env!("CARGO_PKG_VERSION"))
                }

                fn open(config: String) -> Result<(), String> {
                    $crate::export::open::<$plugin>(config)
                }

                fn check_connection() -> Result<(), String> {
                    $crate::export::check_connection::<$plugin>()
                }

                fn write_records(
                    info: $crate::export::WireBatchInfo,
                    batch: Vec<u8>,
                ) -> Result<u64, $crate::export::WireWriteError> {
                    $crate::export::write_records::<$plugin>(info, batch)
                }

                fn finalize() -> Result<(), String> {
                    $crate::export::finalize::<$plugin>()
                }
            }

    $crate::bindings::__export_plugin_world!(BizonPlugin with_types_in $crate::bindings);
        };
    };
}
