//! The `file` destination (filled in below).
use serde::Deserialize;

/// Output format of the `file` destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// Bizon's NDJSON lines.
    #[default]
    Json,
    Parquet,
}

crate::destination_config! {
    /// `destination: {name: file, config: ...}`
    pub struct FileConfig {
        /// Directory for the output files; the working directory when absent.
        #[serde(default)]
        pub path: Option<std::path::PathBuf>,
        #[serde(default)]
        pub format: FileFormat,
    }
}
