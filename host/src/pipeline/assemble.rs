//! The one place that builds a run from a pipeline file: destination ->
//! dead letters -> source -> transforms, under an [`Environment`] that says
//! what the host decides (plugin cache, memory budget, CPU share, names in
//! messages). `bizon-host run` and `serve` differ only in the environment
//! they pass.

use std::sync::Arc;

use super::spec::Pipeline;
use crate::config::ConfigError;
use crate::dead_letter::{DeadLetterError, DeadLetters};
use crate::destination::{self, DestinationError, SharedDestination};
use crate::source::{self, SourceError, SourceTask};

/// What the host decides for a run, never what its pipeline file asks for.
#[derive(Clone)]
pub struct Environment {
    /// For the destination (a wasm plugin's cache, budget, CPU share, label).
    pub destination: destination::Host,
    /// What every transform shares (cache, budget, CPU share; the label
    /// names the Python runtime in messages).
    #[cfg(feature = "wasm")]
    pub transforms: crate::plugin::HostPolicy,
    /// Instances of each transform working at once.
    #[cfg(feature = "wasm")]
    pub transform_workers: usize,
}

impl Environment {
    /// `bizon-host run`'s: the default compile cache and the process-wide
    /// plugin memory budget, one transform worker per core.
    pub fn for_run() -> Self {
        Self {
            destination: destination::Host::default(),
            #[cfg(feature = "wasm")]
            transforms: crate::plugin::HostPolicy::for_run(),
            #[cfg(feature = "wasm")]
            transform_workers: crate::transform::stage::default_workers(),
        }
    }
}

/// A run, built: hand it to [`super::run`].
pub struct Assembled {
    pub destination: SharedDestination,
    /// Where undecodable messages and refused rows go, when the file has a `dead_letter`.
    pub dead_letters: Option<Arc<DeadLetters>>,
    /// The source, with the transforms applied to its pages.
    pub source: Box<dyn SourceTask>,
}

/// Why a run could not be built; nothing was read yet.
#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    #[error("destination `{name}`: {source}")]
    Destination {
        name: &'static str,
        source: DestinationError,
    },
    #[error("{0}")]
    DeadLetter(#[from] DeadLetterError),
    #[error("source: {0}")]
    Source(#[from] SourceError),
    #[error("{0}")]
    Transform(#[from] ConfigError),
}

/// Builds `pipeline`'s run under `env`. The destination comes first (a
/// plugin that does not load or refuses its config stops here), then the
/// dead letters (a topic's brokers are asked for their addresses: blocking,
/// so off the async workers), then the source and its transforms.
pub async fn assemble(pipeline: &Pipeline, env: &Environment) -> Result<Assembled, AssembleError> {
    let destination = destination::build(&pipeline.destination, &env.destination)
        .await
        .map_err(|source| AssembleError::Destination {
            name: pipeline.destination.name(),
            source,
        })?;
    let opened = pipeline.clone();
    let dead_letters = tokio::task::spawn_blocking(move || open_dead_letters(&opened))
        .await
        .expect("opening the dead letters does not panic")?;
    let source = source::build(&pipeline.source, dead_letters.is_some())?;
    #[cfg(feature = "wasm")]
    let source = crate::transform::wrap(
        &pipeline.transforms,
        source,
        dead_letters.is_some(),
        pipeline.destination.options().default_destination_id().into(),
        &env.transforms,
        env.transform_workers,
    )
    .await?;
    Ok(Assembled {
        destination,
        dead_letters,
        source,
    })
}

/// The pipeline's `dead_letter` sink; a topic there reuses a kafka source's
/// brokers and credentials.
fn open_dead_letters(pipeline: &Pipeline) -> Result<Option<Arc<DeadLetters>>, DeadLetterError> {
    let Some(config) = &pipeline.dead_letter else {
        return Ok(None);
    };
    let kafka = match &pipeline.source {
        #[cfg(feature = "kafka")]
        source::SourceConfig::Kafka(c) => c.client_settings().ok(),
        _ => None,
    };
    let dead_letters = DeadLetters::open(config, kafka.as_ref())?;
    // A kafka source in stream or incremental mode reads again what it read
    // after its last commit: the letters of those messages may be in the
    // file already. A full refresh reads everything again on purpose.
    let replays = match &pipeline.source {
        #[cfg(feature = "kafka")]
        source::SourceConfig::Kafka(c) => c.sync_mode != crate::config::SyncMode::FullRefresh,
        _ => false,
    };
    let dead_letters = if replays {
        dead_letters.recognise_replays()?
    } else {
        dead_letters
    };
    Ok(Some(Arc::new(dead_letters)))
}
