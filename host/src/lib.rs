//! bizon-host: Bizon's destination runtime.
//!
//! Modules in data-flow order: a pipeline file is read by [`config`], a
//! [`source`] yields records, [`transform`] reshapes them, [`record`] turns them into Arrow columns, the
//! [`buffer`] of each destination_id decides when to flush, and a
//! [`destination`] writes the batch. [`pipeline`] wires these together and
//! [`cli`] is the command line on top.

pub mod buffer;
pub mod cli;
pub mod config;
pub mod dead_letter;
pub mod destination;
pub mod metrics;
pub mod pipeline;
#[cfg(feature = "wasm")]
pub mod plugin;
pub mod quota;
pub mod record;
#[cfg(feature = "serve")]
pub mod serve;
pub mod source;
#[cfg(feature = "wasm")]
pub mod transform;
