//! What the end-to-end tests share. `support::run`, `support::wait_until`
//! and the other helpers of every test are in common.rs (re-exported here);
//! the services the tests start and talk to each have a module.

pub mod browser;
pub mod clickhouse;
pub mod common;
pub mod durable;
pub mod emulators;
pub mod fault;
pub mod guests;
pub mod http_server;
pub mod kafka;
pub mod postgres;
pub mod sdk;
pub mod serve;
pub mod storage_write;

pub use common::*;
pub use guests::{js_wasm, python_runtime, python_wasm, wasm, wat_plugin};
