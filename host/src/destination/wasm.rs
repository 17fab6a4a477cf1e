//! The `wasm` destination: a sandboxed WebAssembly plugin (see crate::plugin).
//! PLACEHOLDER until the plugin runtime lands.

use super::{DestinationError, SharedDestination};

crate::destination_config! {
    /// `destination: {name: wasm, config: {plugin: PATH, ...}}`
    pub struct WasmConfig {
        pub plugin: std::path::PathBuf,
    }
}

pub async fn build(config: &WasmConfig) -> Result<SharedDestination, DestinationError> {
    Err(DestinationError::Fatal(format!("{}: wasm destinations are not built yet", config.plugin.display())))
}
