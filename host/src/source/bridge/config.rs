//! A source section bizon-host hands to Bizon itself: any `source.name` it
//! has no native source for, and any section with a `source_file_path`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

/// The section as bizon-host needs it; the child validates the rest with the
/// source's own config class, as Bizon does.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BridgeSourceConfig {
    pub name: String,
    #[serde(default)]
    pub stream: Option<String>,
    #[serde(default)]
    pub source_file_path: Option<String>,
    /// bizon-host's settings for the child, taken out of the section before
    /// Bizon sees it.
    #[serde(default)]
    pub bridge: BridgeSettings,
    /// The pipeline, environment substituted: the child reads its `source:`
    /// with PyYAML, as Bizon reads the file.
    #[serde(skip)]
    pub pipeline: Arc<str>,
    /// What Bizon keys a stream's state by: the pipeline's `id`, else its `name`.
    #[serde(skip)]
    pub job: String,
    /// Where the last successful run's incremental state is kept; `None`
    /// keeps none (every incremental run is then a first one).
    #[serde(skip)]
    pub state_path: Option<PathBuf>,
}

/// `source.bridge`: bounds on the child process.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeSettings {
    /// Address space of the child (RLIMIT_AS), MiB. Bizon's imports alone
    /// map ~430 MB (89 MB resident) for a custom source.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u64,
    /// CPU seconds the child may use in all (RLIMIT_CPU); unbounded when absent.
    #[serde(default)]
    pub cpu_seconds: Option<u64>,
    /// How long a page (or the start: imports, check_connection) may take
    /// before the child is deemed hung and stopped. Bizon's HTTP retries back
    /// off up to 120 s a try, hence the margin.
    #[serde(default = "default_page_timeout_s")]
    pub page_timeout_s: u64,
    /// Set by `serve`, never read from a file: the child gets a network
    /// namespace of its own (no network at all), an empty environment and a
    /// lower priority (docs/bridge.md, "Under serve").
    #[serde(skip)]
    pub isolated: bool,
    /// The child's working directory (relative `source_file_path`s resolve
    /// there, as Bizon's do in its own); the host's when `None`.
    #[serde(skip)]
    pub workdir: Option<PathBuf>,
}

impl Default for BridgeSettings {
    fn default() -> Self {
        Self {
            memory_mb: default_memory_mb(),
            cpu_seconds: None,
            page_timeout_s: default_page_timeout_s(),
            isolated: false,
            workdir: None,
        }
    }
}

/// `memory_mb` unless given, and the most a tenant's pipeline may ask for
/// under `serve`.
pub const DEFAULT_MEMORY_MB: u64 = 4096;

fn default_memory_mb() -> u64 {
    DEFAULT_MEMORY_MB
}

fn default_page_timeout_s() -> u64 {
    600
}

/// Whether a source section names a custom source file.
#[derive(Deserialize)]
pub struct CustomSource {
    #[serde(default)]
    pub source_file_path: Option<serde::de::IgnoredAny>,
}

/// What a bridged pipeline file gives the bridge.
#[derive(Deserialize)]
pub struct BridgeFile {
    name: String,
    #[serde(default)]
    id: Option<String>,
    source: BridgeSourceConfig,
}

impl BridgeFile {
    /// `pipeline` is the file's text, `file` its path: the state is kept
    /// beside it (see [`state_path_for`]).
    pub fn into_config(self, pipeline: &str, file: &str) -> BridgeSourceConfig {
        BridgeSourceConfig {
            pipeline: Arc::from(pipeline),
            job: self.id.unwrap_or(self.name),
            state_path: Some(state_path_for(Path::new(file))),
            ..self.source
        }
    }
}

impl BridgeSourceConfig {
    /// How errors and logs name the source.
    pub fn label(&self) -> String {
        let stream = self.stream.as_deref().unwrap_or("?");
        match &self.source_file_path {
            Some(path) => format!("`{}` (stream `{stream}`, {path})", self.name),
            None => format!("`{}` (stream `{stream}`)", self.name),
        }
    }
}

/// `pipeline.yaml` keeps its state in `pipeline.bizon-state.json` beside it:
/// found with the file, removed to start over.
pub fn state_path_for(pipeline: &Path) -> PathBuf {
    let stem = pipeline.file_stem().unwrap_or_default().to_string_lossy();
    pipeline.with_file_name(format!("{stem}.bizon-state.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_sits_beside_the_pipeline() {
        assert_eq!(
            state_path_for(Path::new("/srv/pipes/hubspot.yaml")),
            Path::new("/srv/pipes/hubspot.bizon-state.json")
        );
        assert_eq!(state_path_for(Path::new("p.yml")), Path::new("p.bizon-state.json"));
    }
}
