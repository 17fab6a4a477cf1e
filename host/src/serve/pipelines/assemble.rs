//! Builds what a tenant's run is made of, from its checked pipeline:
//! destination -> dead letters -> source -> transforms, each under the
//! tenant's memory budget, CPU share and limits and the server's compile
//! cache. (The one place serve builds a run; `pipeline::assemble` is to
//! take its place.)

use std::path::Path;
use std::sync::Arc;

use tracing::Instrument;

use super::super::error::ApiError;
use super::super::tenants::Tenant;
use super::policy::Prepared;
use crate::config::DestinationConfig;
use crate::dead_letter::DeadLetters;
use crate::destination::wasm::WasmDestination;
use crate::destination::SharedDestination;
use crate::plugin::PluginSettings;
use crate::source::SourceTask;

/// A run's parts, ready for `pipeline::run_bounded`.
pub struct Assembled {
    pub destination: SharedDestination,
    pub dead_letters: Option<Arc<DeadLetters>>,
    /// The source with the pipeline's transforms applied.
    pub source: Box<dyn SourceTask>,
}

/// The parts of pipeline `name`'s run; what is built inside the plugins
/// logs in `span` (the pipeline's).
pub async fn assemble(
    cache_dir: &Path,
    tenant: &Tenant,
    name: &str,
    prepared: &Prepared,
    span: &tracing::Span,
) -> Result<Assembled, ApiError> {
    let built = build_destination(cache_dir, tenant, prepared)
        .instrument(span.clone())
        .await;
    let destination = built.map_err(|e| ApiError::invalid(format!("pipeline `{name}`: {e}")))?;
    // Off the API's threads: a dead-letter topic's brokers are asked for
    // their addresses first, which can take its whole timeout.
    let pipeline = prepared.pipeline.clone();
    let dead_letters = tokio::task::spawn_blocking(move || crate::cli::open_dead_letters(&pipeline))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::invalid(format!("pipeline `{name}`: {e}")))?;
    let source = crate::source::build_with(&prepared.pipeline.source, dead_letters.clone())
        .map_err(|e| ApiError::invalid(format!("pipeline `{name}`: source: {e}")))?;
    let source = with_transforms(cache_dir, tenant, prepared, source, dead_letters.clone())
        .instrument(span.clone())
        .await
        .map_err(|e| ApiError::invalid(format!("pipeline `{name}`: {e}")))?;
    Ok(Assembled {
        destination,
        dead_letters,
        source,
    })
}

/// The source with the pipeline's transforms applied. Their instances are
/// the tenant's like its destination's: they count against its memory
/// budget and instance limit, and their calls against its CPU share. The
/// stage is made on the pipelines' runtime, which runs its calls.
async fn with_transforms(
    cache_dir: &Path,
    tenant: &Tenant,
    prepared: &Prepared,
    source: Box<dyn SourceTask>,
    dead_letters: Option<Arc<DeadLetters>>,
) -> Result<Box<dyn SourceTask>, String> {
    if prepared.pipeline.transforms.is_empty() {
        return Ok(source);
    }
    let base = PluginSettings {
        cache_dir: Some(cache_dir.to_path_buf()),
        budget: tenant.budget.clone(),
        cpu: Some(tenant.cpu.clone()),
        // Named for the tenant, not by where the host keeps it.
        label: Some("python-transform".into()),
        ..PluginSettings::default()
    };
    // More workers than the cores its share buys would only take turns.
    let workers = (tenant.limits.cpu_cores.ceil() as usize).clamp(1, crate::transform::stage::default_workers());
    let pipeline = prepared.pipeline.clone();
    let wrap = async move { crate::transform::wrap_with(&pipeline, source, dead_letters, &base, workers).await };
    match super::super::runtime::pipelines().spawn(wrap.in_current_span()).await {
        Ok(wrapped) => wrapped.map_err(|e| e.to_string()),
        Err(e) => Err(format!("opening the transforms crashed: {e}")),
    }
}

/// The pipeline's destination: a wasm plugin under the tenant's memory
/// budget and the server's compile cache, or an offered native one. Also
/// what an upgrade swaps in.
pub async fn build_destination(
    cache_dir: &Path,
    tenant: &Tenant,
    prepared: &Prepared,
) -> Result<SharedDestination, crate::destination::DestinationError> {
    match &prepared.pipeline.destination {
        DestinationConfig::Wasm(config) => {
            let mut settings = config.settings()?;
            settings.budget = tenant.budget.clone();
            settings.cpu = Some(tenant.cpu.clone());
            settings.cache_dir = Some(cache_dir.to_path_buf());
            settings.max_component_mb = tenant.limits.plugin_mb;
            settings.label = prepared
                .plugin
                .as_ref()
                .map(|(name, version)| format!("{name}@{version}"));
            Ok(Arc::new(WasmDestination::with_settings(config, settings).await?))
        }
        other => crate::destination::build(other).await,
    }
}
