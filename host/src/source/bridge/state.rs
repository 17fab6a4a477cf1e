//! The last successful run of a bridged source: what Bizon's backend keeps
//! in its `stream_jobs` table (`created_at`, `incremental_state`), kept by
//! bizon-host in a small JSON file so that the next incremental run starts
//! where the last one ended.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::config::BridgeSourceConfig;
use super::BridgeError;

#[derive(Debug, Serialize, Deserialize)]
pub struct RunState {
    /// Bizon's job key: the pipeline's `id` or `name`, the source, the stream.
    pub job: String,
    pub source: String,
    pub stream: Option<String>,
    /// When the last successful run started, ISO 8601 in UTC: an incremental
    /// run fetches what changed after it (Bizon's `last_run`).
    pub last_run: String,
    /// The state the source's pages gave last (`next_state`), handed back
    /// as `source_state.state`.
    pub state: Box<RawValue>,
}

impl RunState {
    fn matches(&self, config: &BridgeSourceConfig) -> bool {
        self.job == config.job && self.source == config.name && self.stream == config.stream
    }
}

/// The state of the last successful run of this job, if there is one.
pub fn load(path: &Path, config: &BridgeSourceConfig) -> Result<Option<RunState>, BridgeError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(BridgeError::state(path, format!("cannot read: {e}"))),
    };
    let state: RunState = serde_json::from_str(&text).map_err(|e| {
        BridgeError::state(
            path,
            format!("not a bizon-host state file ({e}); remove it to start the stream over"),
        )
    })?;
    if !state.matches(config) {
        tracing::warn!(
            "{}: kept for job `{}` source `{}` stream `{}`, not this pipeline's; starting as a first run",
            path.display(),
            state.job,
            state.source,
            state.stream.as_deref().unwrap_or("")
        );
        return Ok(None);
    }
    Ok(Some(state))
}

/// Replaces the file whole (a new file renamed over it, synced), so that a
/// crash leaves the old state or the new one, never half of one.
pub fn save(path: &Path, state: &RunState) -> Result<(), BridgeError> {
    let fail = |what: &str, e: std::io::Error| BridgeError::state(path, format!("cannot {what}: {e}"));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temp = path.with_file_name(format!(".{name}.tmp"));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| fail("create its directory", e))?;
    }
    let mut file = std::fs::File::create(&temp).map_err(|e| fail("create", e))?;
    let json = serde_json::to_vec_pretty(state).expect("the state serializes");
    file.write_all(&json).map_err(|e| fail("write", e))?;
    file.sync_all().map_err(|e| fail("sync", e))?;
    std::fs::rename(&temp, path).map_err(|e| fail("replace", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BridgeSourceConfig {
        BridgeSourceConfig {
            name: "api".into(),
            stream: Some("items".into()),
            source_file_path: None,
            bridge: Default::default(),
            pipeline: "".into(),
            job: "job".into(),
            state_path: None,
        }
    }

    #[test]
    fn saves_loads_and_ignores_another_jobs_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.bizon-state.json");
        assert!(load(&path, &config()).unwrap().is_none());
        let state = RunState {
            job: "job".into(),
            source: "api".into(),
            stream: Some("items".into()),
            last_run: "2026-12-07T05:30:23+00:00".into(),
            state: RawValue::from_string(r#"{"page":3}"#.into()).unwrap(),
        };
        save(&path, &state).unwrap();
        let loaded = load(&path, &config()).unwrap().unwrap();
        assert_eq!(loaded.last_run, state.last_run);
        assert_eq!(loaded.state.get(), r#"{"page":3}"#);
        let mut other = config();
        other.stream = Some("others".into());
        assert!(load(&path, &other).unwrap().is_none());
        std::fs::write(&path, "{").unwrap();
        let error = load(&path, &config()).unwrap_err().to_string();
        assert!(error.contains("remove it to start the stream over"), "{error}");
    }
}
