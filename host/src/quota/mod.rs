//! What bounds a tenant or a run: the memory and CPU its work may take,
//! shared by the runs of one tenant under `serve` and by all of a host.
//!
//! In data-flow order:
//! - [`read_ahead`]: memory for records read and not yet written, a pool
//!   per tenant inside the host's (the source stops reading when it is full).
//! - [`budget`]: memory plugin and transform instances may hold together,
//!   reserved whole when an instance is made.
//! - [`cpu`]: a CPU share (token bucket of CPU seconds) that plugin calls,
//!   instantiations and compiles are charged to.

pub mod read_ahead;

#[cfg(feature = "wasm")]
pub mod budget;

#[cfg(feature = "wasm")]
pub mod cpu;

pub use read_ahead::ReadAheadPool;
