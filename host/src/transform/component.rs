//! A transform component (world `transformer` of wit/transform.wit) loaded
//! into the plugin sandbox: the same engine, cache, import check, limits,
//! budget and grants as a destination plugin, with the transform world's
//! bindings on top.

use std::path::Path;
use std::sync::Arc;

use crate::plugin::capabilities::Export;
use crate::plugin::instance::{bounded, cap_error, MAX_ERROR_BYTES};
use crate::plugin::text::sanitize;
use crate::plugin::{load_component, HostPolicy, LoadReport, PluginError, Request, Sandbox, Shared};

/// Host bindings generated from the transform contract; the shared `types`
/// and `host` interfaces are the destination world's.
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "transformer",
        exports: { default: async },
        with: {
            "bizon:destination/types": crate::plugin::bindings::bizon::destination::types,
            "bizon:destination/host": crate::plugin::bindings::bizon::destination::host,
        },
    });
}

pub use crate::plugin::InputFormat;
pub use bindings::exports::bizon::destination::transform::{RecordError, TransformInfo, Transformed};

/// A loaded, checked and pre-linked transform; instances are cheap.
pub struct Component {
    shared: Arc<Shared>,
    report: LoadReport,
}

impl Component {
    /// Reads, compiles (or loads from the cache) and checks the component,
    /// for what `request` asks under `policy`. Blocking: compiling CPython
    /// takes seconds the first time.
    pub fn load(path: &Path, request: &Request, policy: &HostPolicy) -> Result<Self, PluginError> {
        let (shared, report) = load_component(path, request, policy, Export::TRANSFORM)?;
        Ok(Self { shared, report })
    }

    pub fn report(&self) -> &LoadReport {
        &self.report
    }

    /// What the component says it is, from an instance made for that alone
    /// (not opened: `serve` describes an upload before any pipeline has a
    /// config for it).
    pub async fn describe(&self) -> Result<TransformInfo, PluginError> {
        Ok(self.described().await?.2)
    }

    /// A new instance, its bindings, and what its `describe` answered.
    async fn described(&self) -> Result<(Sandbox, bindings::Transformer, TransformInfo), PluginError> {
        let (mut sandbox, instance) = Sandbox::instantiate(&self.shared).await?;
        let bindings = bindings::Transformer::new(&mut sandbox.store, &instance).map_err(|e| sandbox.link_error(e))?;
        let bounds = sandbox.bounds();
        sandbox.begin("describe")?;
        let call = bindings.bizon_destination_transform().call_describe(&mut sandbox.store);
        let result = bounded(&bounds, call).await;
        let info = sandbox.end("describe", result)?;
        Ok((sandbox, bindings, info))
    }

    /// A new instance, described and opened with the transform's config.
    pub async fn instantiate(&self) -> Result<Instance, OpenError> {
        let (mut sandbox, bindings, info) = self.described().await?;
        let bounds = sandbox.bounds();
        sandbox.begin("open")?;
        let config = self.shared_config();
        let call = bindings
            .bizon_destination_transform()
            .call_open(&mut sandbox.store, &config);
        let result = bounded(&bounds, call).await;
        sandbox
            .end("open", result)?
            .map_err(|message| OpenError::Refused(sanitize(&message, MAX_ERROR_BYTES)))?;
        Ok(Instance {
            sandbox,
            bindings,
            format: info.input_format,
        })
    }

    fn shared_config(&self) -> String {
        self.shared.config_json().to_string()
    }
}

/// Why an instance could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{0}")]
    Plugin(#[from] PluginError),
    /// `open` returned this error: the config (or the Python code) is wrong.
    #[error("{0}")]
    Refused(String),
}

/// One opened transform instance.
pub struct Instance {
    sandbox: Sandbox,
    bindings: bindings::Transformer,
    format: InputFormat,
}

impl Instance {
    /// The encoding `transform_records` takes and returns.
    pub fn format(&self) -> InputFormat {
        self.format
    }

    /// Transforms one encoded batch. The outer error is a trap (the
    /// instance is then unusable); the inner one the transform's own
    /// refusal of the whole batch.
    pub async fn transform(&mut self, batch: &[u8]) -> Result<Result<Transformed, String>, PluginError> {
        self.sandbox.begin("transform-records")?;
        let bounds = self.sandbox.bounds();
        let call = self
            .bindings
            .bizon_destination_transform()
            .call_transform_records(&mut self.sandbox.store, batch);
        let result = bounded(&bounds, call).await;
        Ok(self.sandbox.end("transform-records", result)?.map_err(cap_error))
    }
}
