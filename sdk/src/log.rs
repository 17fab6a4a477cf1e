//! Log lines go to the host's log, tagged with the plugin's name. The host
//! caps message size and rate, so log per batch or per run, not per row.
//!
//! In a native `cargo test` of a plugin the lines go to stderr, so a
//! plugin's logic can be unit-tested without a WebAssembly runtime.
//!
//! ```ignore
//! bizon_sdk::log::info!("wrote {} rows to {}", n, path);
//! ```

pub use crate::bindings::bizon::destination::types::LogLevel as Level;

/// Write one line to the host's log.
#[cfg(target_family = "wasm")]
pub fn write(level: Level, message: &str) {
    crate::bindings::bizon::destination::host::log(level, message);
}

/// Outside WebAssembly there is no host to import `log` from; plugin unit
/// tests (`cargo test` on the native target) see the lines on stderr instead.
#[cfg(not(target_family = "wasm"))]
pub fn write(level: Level, message: &str) {
    eprintln!("{level:?}: {message}");
}

#[doc(inline)]
pub use crate::{
    __bizon_log_debug as debug, __bizon_log_error as error, __bizon_log_info as info, __bizon_log_trace as trace,
    __bizon_log_warn as warn,
};

#[doc(hidden)]
#[macro_export]
macro_rules! __bizon_log_trace {
    ($($arg:tt)+) => { $crate::log::write($crate::log::Level::Trace, &::std::format!($($arg)+)) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __bizon_log_debug {
    ($($arg:tt)+) => { $crate::log::write($crate::log::Level::Debug, &::std::format!($($arg)+)) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __bizon_log_info {
    ($($arg:tt)+) => { $crate::log::write($crate::log::Level::Info, &::std::format!($($arg)+)) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __bizon_log_warn {
    ($($arg:tt)+) => { $crate::log::write($crate::log::Level::Warn, &::std::format!($($arg)+)) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __bizon_log_error {
    ($($arg:tt)+) => { $crate::log::write($crate::log::Level::Error, &::std::format!($($arg)+)) };
}
