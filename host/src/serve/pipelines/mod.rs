//! Tenants' pipelines: what one may ask for ([`policy`]), what its run is
//! built under ([`environment`]), and the [`Supervisor`] that starts, watches,
//! upgrades and stops the runs. Each run is a tokio task driving
//! [`crate::pipeline::run`]. A stop flushes what was read and
//! finalizes; the registry remembers which pipelines should run, so a
//! restarted server resumes them (a Kafka source from its group's
//! committed offsets).
//!
//! In data-flow order:
//! - [`policy`]: a pipeline file checked and placed for its tenant;
//! - [`environment`]: what the host decides for a tenant's run, which `pipeline::assemble` builds it under;
//! - [`swap`]: a running destination replaceable between batches;
//! - [`status`]: run states and the status the API shows;
//! - [`backoff`]: the wait before a failing pipeline may start again;
//! - [`runs`]: the supervisor's maps of runs being started, running, ended;
//! - [`supervisor`]: the supervisor and what it answers;
//! - `start`: the start path (lease, assembly, the run's task);
//! - `cleanup`: stops, ended runs, forgotten pipelines.

pub mod backoff;
mod cleanup;
pub mod environment;
pub mod policy;
pub mod runs;
mod start;
pub mod status;
pub mod supervisor;
pub mod swap;

pub use status::{RunState, Status};
pub use supervisor::Supervisor;
