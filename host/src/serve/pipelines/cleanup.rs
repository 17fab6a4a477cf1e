//! Ending runs: a stop asked for (what was read is written first), what a
//! refused start or an ended run leaves behind (its status, backoff, the
//! registry's `running` mark, the lease), and a deleted pipeline or
//! tenant forgotten.

use std::time::Duration;

use tokio::sync::watch;

use super::super::error::ApiError;
use super::super::lease::needs_lease;
use super::runs::{key, Finished, Key};
use super::status::RunState;
use super::supervisor::Supervisor;
use crate::pipeline::{Progress, RunReport, RunStatus};

impl Supervisor {
    /// Asks a running pipeline to stop and waits until it did (what was
    /// read is written first). False if it was not running.
    pub async fn stop(&self, tenant: &str, name: &str) -> bool {
        let done = {
            let running = self.runs.running();
            let Some(run) = running.get(&key(tenant, name)) else {
                return false;
            };
            run.stop.send_replace(true);
            run.done.clone()
        };
        wait_done(done).await;
        true
    }

    /// Stops every pipeline for a server shutdown; they resume at the next start.
    pub async fn stop_all(&self) {
        let waits: Vec<_> = self
            .runs
            .running()
            .values()
            .map(|r| {
                r.stop.send_replace(true);
                r.done.clone()
            })
            .collect();
        for done in waits {
            wait_done(done).await;
        }
    }

    /// Forgets how a tenant's pipeline (or all its pipelines) last ran; with
    /// the whole tenant, its backoff too.
    pub fn forget(&self, tenant: &str, name: Option<&str>) {
        self.runs
            .finished()
            .retain(|(t, n), _| !(t == tenant && name.is_none_or(|name| name == n)));
        if name.is_none() {
            self.backoff.forget_tenant(tenant);
        }
    }

    /// A start refused after its checks began: the lease taken for it goes,
    /// the failure counts for the backoff and shows as the status.
    pub(super) fn start_failed(&self, k: &Key, leased: bool, error: &ApiError) {
        if leased {
            if let Some(leases) = &self.leases {
                leases.release(&k.0, &k.1);
            }
        }
        self.backoff.failed(k, Duration::ZERO);
        self.runs.finished().insert(
            k.clone(),
            Finished {
                state: RunState::Failed,
                progress: Progress::default(),
                error: Some(error.message.clone()),
                plugin: None,
                destination: None,
                rate: 0.0,
            },
        );
    }

    /// A run of `yaml` ended after `ran`: its status, backoff, the
    /// registry's mark and the lease follow how.
    pub(super) fn run_ended(&self, k: &Key, yaml: &str, report: &RunReport, ran: Duration, progress: Progress) {
        let final_state = RunState::from(report.status);
        match report.status {
            RunStatus::Failed => self.backoff.failed(k, ran),
            _ => self.backoff.succeeded(k),
        }
        match &report.error {
            Some(e) => tracing::error!(records_written = report.records_written, "pipeline {final_state}: {e}"),
            None => tracing::info!(records_written = report.records_written, "pipeline {final_state}"),
        }
        let (plugin, destination) = self
            .runs
            .running()
            .get(k)
            .map_or((None, None), |r| (r.plugin.clone(), Some(r.destination)));
        // A run that ended by itself is over; a stopped one was either
        // stopped through the API (which cleared `running` first), by a
        // shutdown (it resumes at the next start) or because another host
        // holds it now: `running` stays. So it does when a Kafka run fails
        // on one of several hosts: the others go on, and this one starts it
        // again after its backoff.
        let shared = self.leases.is_some() && !needs_lease(yaml);
        let over = match final_state {
            RunState::Stopped => false,
            RunState::Failed => !shared,
            _ => true,
        };
        if over {
            if let Err(e) = self.registry.set_running(&k.0, &k.1, false) {
                tracing::error!("{e}");
            }
        }
        if let Some(leases) = &self.leases {
            leases.release(&k.0, &k.1);
        }
        self.runs.finished().insert(
            k.clone(),
            Finished {
                state: final_state,
                progress,
                error: report.error.clone(),
                plugin,
                destination,
                rate: report.records_written as f64 / ran.as_secs_f64().max(1e-3),
            },
        );
        self.runs.running().remove(k);
    }
}

async fn wait_done(mut done: watch::Receiver<bool>) {
    let _ = done.wait_for(|d| *d).await;
}
