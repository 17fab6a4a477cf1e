//! Transforms: reshaping records between the source and the buffers.
//!
//! A pipeline's `transforms:` are Bizon's `{label, python}` entries, run by
//! the Python transform runtime (a CPython component, [`runtime`]), and
//! `{label, wasm: PATH}` entries, components exporting wit/transform.wit.
//! Both run in the plugin sandbox (limits, budget, no files, network or
//! environment unless granted).
//!
//! - [`config`]: the entries as written, with their file and line.
//! - [`runtime`]: where the Python runtime is found.
//! - [`component`]: a transform component and its instances.
//! - [`wire`]: records to and from a component (NDJSON or Arrow IPC).
//! - [`chain`]: the transforms loaded as steps, and a page run through them.
//! - [`stage`]: the source wrapper that runs every page through the chain on
//!   the pipeline's worker threads, in order, before buffering.
//!
//! Consecutive Python transforms with the same limits and grants share one
//! runtime instance (one call per page runs them all); a component transform
//! is its own step.

pub mod chain;
pub mod component;
pub mod config;
pub mod runtime;
pub mod stage;
pub mod wire;

use std::sync::Arc;

pub use chain::{Chain, TransformError};
pub(crate) use config::{check as check_entries, TransformEntry};
pub use config::{Location, TransformKind, TransformSpec};
pub use stage::Transformed;

use crate::config::ConfigError;
use crate::plugin::HostPolicy;
use crate::source::SourceTask;

/// `source` with `transforms` applied to its pages by `workers` workers
/// (each one instance of every transform), with the components loaded under
/// `policy` and the workers' instances opened now; `source` itself when
/// there are no transforms. With `dead_letter`, a record that a transform
/// failed on becomes its page's letter (bound for `default_destination_id`
/// when it names no destination_id) instead of stopping the run.
pub async fn wrap(
    transforms: &[TransformSpec],
    source: Box<dyn SourceTask>,
    dead_letter: bool,
    default_destination_id: Arc<str>,
    policy: &HostPolicy,
    workers: usize,
) -> Result<Box<dyn SourceTask>, ConfigError> {
    let Some(chain) = Chain::load(transforms, policy).await? else {
        return Ok(source);
    };
    let staged = Transformed::new(source, chain, workers, dead_letter, default_destination_id).await?;
    Ok(Box::new(staged))
}

/// For `check`: loads `transforms` and opens one instance of each, which
/// compiles the Python code. Returns how many transforms there are.
pub async fn check(transforms: &[TransformSpec], policy: &HostPolicy) -> Result<usize, ConfigError> {
    if let Some(chain) = Chain::load(transforms, policy).await? {
        chain.worker().await?;
    }
    Ok(transforms.len())
}
