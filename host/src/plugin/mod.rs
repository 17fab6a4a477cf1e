//! The WebAssembly plugin runtime: loads a destination plugin (a component
//! targeting `wit/destination.wit`) or a transform, checks what it imports
//! and exports, and builds sandboxed instances of it.
//!
//! Modules in data-flow order (each imports only modules above it; this file
//! only declares them and names what the rest of the host uses):
//! - [`bindings`], [`error`], [`text`]: the contract's generated types, what
//!   can go wrong, and plugin text made safe to show.
//! - [`grants`]: what a pipeline asked its plugin to reach (`allow:`), as
//!   data; [`limits`]: memory and call-time limits of an instance.
//! - [`engine`]: the shared wasmtime engine and the epoch clock; [`cache`]:
//!   compiled artifacts on disk, verified before they are run.
//! - [`settings`]: a load's [`Request`] (limits, grants, config: the
//!   pipeline's) and [`HostPolicy`] (cache, size cap, budget, CPU share,
//!   name: the host's).
//! - [`log`], [`stdio`]: the plugin's log lines and output, bounded and
//!   escaped.
//! - [`files`]: the filesystem layer over granted directories (no symlinks,
//!   byte quotas); [`egress`]: outbound HTTP and TCP, checked where each
//!   connection is made. Each links itself over its own view of the Store.
//! - [`state`]: the data of one Store and its views for each of those.
//! - [`linker`]: wasi + the contract's host + files + egress, and nothing
//!   else; [`capabilities`]: the import and export check against it.
//! - `linked`: one copy of a component's code for all plugins loading it.
//! - [`instance`]: one Store, the calls into it and what a trap means.
//! - [`load`]: read, compile or fetch, check and pre-link: a [`Plugin`].
//! - [`ipc`]: a batch encoded the way the plugin asked.
//!
//! The memory budget and CPU share instances count against are
//! [`crate::quota`]'s.

pub mod bindings;
pub mod error;
pub mod text;

pub mod grants;
pub mod limits;

pub mod engine;

pub mod cache;

pub mod settings;

pub mod log;
pub mod stdio;

pub mod files;

pub mod egress;

pub mod state;

pub mod linker;

pub mod capabilities;

mod linked;

pub mod instance;
pub mod load;

pub mod ipc;

pub use bindings::bizon::destination::types::{
    BatchInfo, BatchOrigin, InputFormat, OffsetRange, PluginInfo, RejectedRow, WriteError,
};
pub use cache::CacheStatus;
pub use error::{PluginError, TrapCause};
pub use grants::{DirGrant, Grants, HostRule};
pub use instance::Instance;
pub(crate) use instance::{Sandbox, Shared};
pub use limits::Limits;
pub(crate) use load::load_component;
pub use load::{LoadReport, Plugin};
pub use settings::{
    max_component_mb, set_max_component_mb, HostPolicy, Request, COMPILE_TIMEOUT, DEFAULT_MAX_COMPONENT_MB,
};
