//! Prometheus metrics, one stack for `run --metrics-addr` and `serve`: one
//! registry type ([`Registry`]: the series registered once, rendered as the
//! text exposition) and one HTTP side on axum ([`http`]). What each maps
//! the runs' published progress to: [`run`] (one run's series, `bizon_*`
//! with a `pipeline` label) and `serve` (every tenant's pipelines,
//! `bizon_serve_*` by tenant and pipeline). Nothing on the data path knows
//! about Prometheus: values are read from the progress.

pub mod http;
pub mod registry;
pub mod run;
#[cfg(feature = "serve")]
pub mod serve;

pub use registry::Registry;
pub use run::Metrics;
