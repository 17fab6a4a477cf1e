//! The end-to-end tests: the `bizon-host` binary (and, for a few, the
//! library) against real plugins built from the repository, the tansu Kafka
//! broker, the BigQuery and GCS emulators, clickhouse-server, PostgreSQL and
//! Chromium (driven by chromedriver). One test binary, so the host is linked
//! once; each file below is a module, which `cargo test --release --test e2e MODULE::` runs alone
//! (`kafka::`, `serve::`, `bigquery::parity::`, ...). What the modules share
//! is in support/.
//!
//! A tool a test needs that is not installed fails that test, naming the
//! script that installs it (scripts/install.sh installs them all). Tests run
//! side by side: each starts its services on ports of its own, except the
//! BigQuery emulators, which one test at a time holds
//! (support::emulators::serial). The one test that measures this process's
//! memory runs in a process of its own (support::in_a_process_of_its_own).
//!
//! bigquery_real is `#[ignore]`d: it needs a Google Cloud project (its file
//! says how to run it).

mod bigquery;
mod bigquery_real;
mod bridge;
mod clickhouse;
mod client;
mod console;
mod docs;
mod egress;
mod faults;
mod file_modes;
mod fuzz;
mod kafka;
mod openapi;
mod pipeline;
mod plugin_cli;
mod plugins;
mod sandbox;
mod sdk_http;
mod sdk_js;
mod sdk_python;
mod serve;
mod serve_hosts;
mod serve_tenants;
mod support;
mod transforms;
