//! BigQuery jobs (load, copy, query): submitted with our own ids, so a
//! retried submission is the same job, then polled until done.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use super::rest::{encode_component, RestError};
use super::tables::Tables;
use crate::destination::DestinationError;

/// Rows a query answers per page.
const QUERY_PAGE_ROWS: u32 = 50_000;

/// Job error reasons that a new job can get past.
const RETRYABLE_JOB_REASONS: [&str; 4] = ["backendError", "internalError", "rateLimitExceeded", "jobBackendError"];

impl Tables {
    pub async fn insert_job(
        &self,
        project: &str,
        id: &str,
        configuration: Value,
    ) -> Result<Option<String>, DestinationError> {
        let url = format!("{}/bigquery/v2/projects/{project}/jobs", self.base);
        let body = json!({
            "jobReference": {"projectId": project, "jobId": id, "location": self.location},
            "configuration": configuration,
        });
        match self.rest.json(Method::POST, &url, &body).await {
            Ok(job) => Ok(job["jobReference"]["location"].as_str().map(str::to_string)),
            // The same id was submitted before and its answer lost: it is the same job.
            Err(RestError::Status { status: 409, .. }) => Ok(Some(self.location.clone())),
            Err(e) => Err(e.into_destination(&format!("submitting job {id}"))),
        }
    }

    /// The job once done (`None` while it runs), without waiting.
    pub async fn job_status(
        &self,
        project: &str,
        id: &str,
        location: Option<&str>,
    ) -> Result<Option<Value>, DestinationError> {
        let mut url = format!("{}/bigquery/v2/projects/{project}/jobs/{id}", self.base);
        if let Some(l) = location {
            url.push_str(&format!("?location={}", encode_component(l)));
        }
        let job = self
            .rest
            .json(Method::GET, &url, &Value::Null)
            .await
            .map_err(|e| e.into_destination(&format!("reading job {id}")))?;
        Ok((job["status"]["state"] == "DONE").then_some(job))
    }

    /// Polls until the job is done and returns it. Errors here are about
    /// asking, not about the job: they leave the job to be asked about again.
    pub async fn await_done(&self, project: &str, id: &str, location: Option<&str>) -> Result<Value, DestinationError> {
        let mut wait = Duration::from_millis(100);
        loop {
            if let Some(job) = self.job_status(project, id, location).await? {
                return Ok(job);
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(2));
        }
    }

    /// Waits for a job; its errors, if any, become the destination's, with `what`.
    pub async fn wait_job(
        &self,
        project: &str,
        id: &str,
        location: Option<&str>,
        what: &str,
    ) -> Result<Value, DestinationError> {
        let job = self.await_done(project, id, location).await?;
        job_outcome(&job, id, what)?;
        Ok(job)
    }

    /// Runs a GoogleSQL script as a query job and waits for it.
    /// The rows a SELECT answers, every page of them, each as its cells'
    /// text (`None` for NULL).
    pub async fn select(
        &self,
        project: &str,
        sql: &str,
        what: &str,
    ) -> Result<Vec<Vec<Option<String>>>, DestinationError> {
        let url = format!("{}/bigquery/v2/projects/{project}/queries", self.base);
        let body = json!({
            "query": sql,
            "useLegacySql": false,
            "maxResults": QUERY_PAGE_ROWS,
            "location": self.location,
        });
        let fail = |e: RestError| e.into_destination(what);
        let mut answer = self.rest.json(Method::POST, &url, &body).await.map_err(fail)?;
        let job = answer["jobReference"]["jobId"].as_str().unwrap_or_default().to_string();
        let mut rows = Vec::new();
        let mut wait = Duration::from_millis(100);
        loop {
            if answer["jobComplete"] == false {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            } else {
                for row in answer["rows"].as_array().into_iter().flatten() {
                    let cells = row["f"].as_array().into_iter().flatten();
                    rows.push(cells.map(|c| c["v"].as_str().map(str::to_string)).collect());
                }
            }
            let token = answer["pageToken"].as_str().map(str::to_string);
            if answer["jobComplete"] != false && token.is_none() {
                return Ok(rows);
            }
            let mut next = format!(
                "{}/bigquery/v2/projects/{project}/queries/{job}?maxResults={QUERY_PAGE_ROWS}&location={}",
                self.base,
                encode_component(&self.location)
            );
            if let Some(token) = token {
                next.push_str(&format!("&pageToken={}", encode_component(&token)));
            }
            answer = self.rest.json(Method::GET, &next, &Value::Null).await.map_err(fail)?;
        }
    }

    pub async fn run_query(&self, project: &str, id: &str, sql: &str, what: &str) -> Result<(), DestinationError> {
        let configuration = json!({"query": {"query": sql, "useLegacySql": false}});
        let location = self.insert_job(project, id, configuration).await?;
        self.wait_job(project, id, location.as_deref(), what).await.map(|_| ())
    }
}

/// A done job's errors as the destination's: retryable when BigQuery says
/// a new job can get past them.
pub fn job_outcome(job: &Value, id: &str, what: &str) -> Result<(), DestinationError> {
    let status = &job["status"];
    if status["errorResult"].is_null() {
        return Ok(());
    }
    let message = format!("{what} (job {id}) failed: {}", job_errors(status));
    let reason = status["errorResult"]["reason"].as_str().unwrap_or_default();
    Err(if RETRYABLE_JOB_REASONS.contains(&reason) {
        DestinationError::Retryable(message)
    } else {
        DestinationError::Fatal(message)
    })
}

/// A finished job's errors: the main one, then each with its location.
fn job_errors(status: &Value) -> String {
    let mut parts = vec![];
    for e in std::iter::once(&status["errorResult"]).chain(status["errors"].as_array().into_iter().flatten()) {
        let Some(message) = e["message"].as_str() else { continue };
        let mut s = format!("{}: {message}", e["reason"].as_str().unwrap_or("error"));
        if let Some(location) = e["location"].as_str().filter(|l| !l.is_empty()) {
            s.push_str(&format!(" (at {location})"));
        }
        if !parts.contains(&s) {
            parts.push(s);
        }
    }
    parts.join("; ")
}
