//! A pipeline's status as the API shows it (`GET /v1/pipelines/{name}`):
//! its run state, and counts computed from the run's published progress.

use serde::Serialize;

use crate::pipeline::{Progress, RunStatus};

/// Where a pipeline's run stands on this host. Serialized as the API and
/// the shared registry's `host_status` table spell it (`never_started`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Running,
    /// Asked to stop: writing what it had read.
    Stopping,
    Stopped,
    Completed,
    Failed,
    NeverStarted,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Stopping => "stopping",
            RunState::Stopped => "stopped",
            RunState::Completed => "completed",
            RunState::Failed => "failed",
            RunState::NeverStarted => "never_started",
        }
    }

    /// Whether a run is under way here (running, or finishing after a stop).
    pub fn is_live(self) -> bool {
        matches!(self, RunState::Running | RunState::Stopping)
    }
}

impl From<RunStatus> for RunState {
    /// How a run that ended ends up.
    fn from(status: RunStatus) -> Self {
        match status {
            RunStatus::Success => RunState::Completed,
            RunStatus::Interrupted => RunState::Stopped,
            RunStatus::Failed => RunState::Failed,
        }
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What `GET /v1/pipelines/{name}` answers.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub name: String,
    pub state: RunState,
    pub records_read: u64,
    pub records_written: u64,
    pub records_per_s: f64,
    pub lag: i64,
    pub dead_letters: u64,
    pub last_error: Option<String>,
    pub plugin: Option<String>,
    pub plugin_version: Option<u32>,
    /// The destination's name (`wasm`, `bigquery_streaming_v2`, ...), once
    /// a run was built.
    pub destination: Option<String>,
    /// Writes that failed (each attempt) in this server's life.
    pub write_errors: u64,
    pub log_lines_dropped: u64,
    /// Failures in a row (a start refused or a run failed); zero once a run
    /// completes or is stopped.
    pub failures_in_a_row: u32,
    /// How long until `start` is accepted again after those failures.
    pub start_allowed_in_ms: u64,
}

/// What a status is computed from: a run's progress and what the
/// supervisor knows of it.
pub struct Seen<'a> {
    pub state: RunState,
    pub progress: &'a Progress,
    /// Records written a second.
    pub rate: f64,
    pub error: Option<String>,
    pub plugin: Option<(String, u32)>,
    pub destination: Option<&'static str>,
    /// Failed writes of that destination.
    pub write_errors: u64,
    /// Log lines the tenant's rate dropped.
    pub dropped: u64,
}

impl Status {
    /// The backoff's fields are the supervisor's to fill in.
    pub fn new(name: &str, seen: Seen<'_>) -> Self {
        let source = seen.progress.source.clone().unwrap_or_default();
        Status {
            name: name.to_string(),
            state: seen.state,
            records_read: seen.progress.records_read,
            records_written: seen.progress.records_written,
            records_per_s: (seen.rate * 10.0).round() / 10.0,
            lag: source.lag.values().map(|l| l.lag.max(0)).sum(),
            dead_letters: source.dead_letters,
            last_error: seen.error,
            plugin_version: seen.plugin.as_ref().map(|p| p.1),
            plugin: seen.plugin.map(|p| p.0),
            destination: seen.destination.map(str::to_string),
            write_errors: seen.write_errors,
            log_lines_dropped: seen.dropped,
            failures_in_a_row: 0,
            start_allowed_in_ms: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_states_serialize_as_the_api_spells_them() {
        let all = [
            RunState::Running,
            RunState::Stopping,
            RunState::Stopped,
            RunState::Completed,
            RunState::Failed,
            RunState::NeverStarted,
        ];
        let json: Vec<String> = all
            .iter()
            .map(|s| serde_json::to_value(s).unwrap().to_string())
            .collect();
        assert_eq!(
            json,
            [
                "\"running\"",
                "\"stopping\"",
                "\"stopped\"",
                "\"completed\"",
                "\"failed\"",
                "\"never_started\""
            ]
        );
        for s in all {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }
}
