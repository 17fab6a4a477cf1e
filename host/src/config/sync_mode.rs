//! `source.sync_mode` (and `source.reset`), which Bizon hands to its
//! destinations: it decides whether a run replaces, appends to, or streams
//! into what a destination writes.

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::ConfigError;

/// Bizon's `SourceSyncModes`: what a source reads (a Kafka full refresh reads
/// every partition from its low watermark, incremental from the group's
/// commit, stream until stopped) and what a destination does with it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// Each run replaces the destination's data (staged, then swapped in).
    #[default]
    FullRefresh,
    /// Each run appends its records, published only when the run succeeded.
    Incremental,
    /// Writes go straight to the final file or table.
    Stream,
}

impl SyncMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncMode::FullRefresh => "full_refresh",
            SyncMode::Incremental => "incremental",
            SyncMode::Stream => "stream",
        }
    }
}

/// The keys of the source section that shape what a destination does.
#[derive(Deserialize)]
pub struct SourceRun {
    name: String,
    #[serde(default)]
    stream: Option<String>,
    #[serde(default)]
    sync_mode: Option<Spanned<String>>,
    #[serde(default)]
    reset: Option<bool>,
}

impl SourceRun {
    /// The sync mode the destination sees. As in Bizon
    /// (`SyncMetadata.from_bizon_config`), `reset: true` turns an incremental
    /// run into a full refresh, which `bigquery_streaming` cannot do.
    pub fn sync_mode(&self, file: &str, destination: &str) -> Result<SyncMode, ConfigError> {
        let Some(written) = &self.sync_mode else {
            return Ok(SyncMode::FullRefresh);
        };
        let at = |message: String| ConfigError::spanned(file, written, message);
        let mode = match written.value.as_str() {
            "full_refresh" => SyncMode::FullRefresh,
            "incremental" => SyncMode::Incremental,
            "stream" => SyncMode::Stream,
            other => {
                return Err(at(format!(
                    "source.sync_mode: unknown sync mode `{other}`; expected one of: full_refresh, incremental, stream"
                )))
            }
        };
        if mode == SyncMode::Incremental && self.reset == Some(true) {
            if destination == "bigquery_streaming" {
                return Err(at(
                    "source.reset is not supported by destination `bigquery_streaming`, \
                               which appends to its table instead of replacing it"
                        .into(),
                ));
            }
            return Ok(SyncMode::FullRefresh);
        }
        Ok(mode)
    }

    /// Bizon's auto-generated name, `<source>_<stream>`: the base of a
    /// BigQuery table name that `table_prefix` applies to.
    pub fn generated_destination_id(&self) -> String {
        match &self.stream {
            Some(stream) => format!("{}_{stream}", self.name),
            None => self.name.clone(),
        }
    }
}
