//! Datasets and tables over the REST API: created when missing, once per run
//! per table (not per flush).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use google_cloud_auth::credentials::Credentials;
use google_cloud_bigquery_v2::client::{DatasetService, TableService};
use google_cloud_bigquery_v2::model::{Dataset, Table};
use google_cloud_gax::error::rpc::Code;
use google_cloud_gax::retry_policy::{Aip194Strict, RetryPolicyExt};
use serde_json::json;
use tokio::sync::OnceCell;

use super::errors::{classify, is_code};
use super::schema::{TableRef, TableSpec};
use crate::destination::DestinationError;

pub const DEFAULT_ENDPOINT: &str = "https://bigquery.googleapis.com";

/// Once-per-run initialisation, keyed by what it initialises.
type Once<K> = Mutex<HashMap<K, Arc<OnceCell<()>>>>;

pub struct Tables {
    pub datasets: DatasetService,
    pub tables: TableService,
    location: String,
    create_dataset: bool,
    ensured: Once<TableRef>,
    datasets_ensured: Once<(String, String)>,
}

impl Tables {
    pub async fn new(
        endpoint: Option<&str>,
        credentials: Credentials,
        location: &str,
        create_dataset: bool,
    ) -> Result<Self, DestinationError> {
        let endpoint = endpoint.unwrap_or(DEFAULT_ENDPOINT).trim_end_matches('/').to_string();
        // The client's own default retries a refused connection for about a
        // minute; the pipeline already retries a failed write with backoff,
        // and `check` should answer a wrong endpoint promptly.
        let retry = || {
            Aip194Strict
                .with_attempt_limit(3)
                .with_time_limit(Duration::from_secs(10))
        };
        let datasets = DatasetService::builder()
            .with_endpoint(endpoint.clone())
            .with_retry_policy(retry())
            .with_credentials(credentials.clone())
            .build()
            .await
            .map_err(|e| DestinationError::Fatal(format!("BigQuery REST client for {endpoint}: {e}")))?;
        let tables = TableService::builder()
            .with_endpoint(endpoint.clone())
            .with_retry_policy(retry())
            .with_credentials(credentials)
            .build()
            .await
            .map_err(|e| DestinationError::Fatal(format!("BigQuery REST client for {endpoint}: {e}")))?;
        Ok(Self {
            datasets,
            tables,
            location: location.into(),
            create_dataset,
            ensured: Mutex::default(),
            datasets_ensured: Mutex::default(),
        })
    }

    /// Fails when the dataset is missing and may not be created, or cannot be
    /// read with these credentials.
    pub async fn ensure_dataset(&self, project: &str, dataset: &str) -> Result<(), DestinationError> {
        let cell = self
            .datasets_ensured
            .lock()
            .expect("poisoned")
            .entry((project.into(), dataset.into()))
            .or_default()
            .clone();
        cell.get_or_try_init(|| async {
            let what = format!("reading dataset {project}.{dataset}");
            match self
                .datasets
                .get_dataset()
                .set_project_id(project)
                .set_dataset_id(dataset)
                .send()
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if is_code(&e, Code::NotFound) && self.create_dataset => {}
                Err(e) if is_code(&e, Code::NotFound) => {
                    return Err(DestinationError::Fatal(format!(
                        "BigQuery dataset {project}.{dataset} does not exist; create it or set create_dataset: true"
                    )))
                }
                Err(e) => return Err(classify(&what, &e)),
            }
            let body: Dataset = serde_json::from_value(json!({
                "datasetReference": {"projectId": project, "datasetId": dataset},
                "location": self.location,
            }))
            .map_err(|e| DestinationError::Fatal(format!("dataset definition: {e}")))?;
            match self
                .datasets
                .insert_dataset()
                .set_project_id(project)
                .set_dataset(body)
                .send()
                .await
            {
                Ok(_) => Ok(()),
                // Another writer created it first.
                Err(e) if is_code(&e, Code::AlreadyExists) => Ok(()),
                Err(e) => Err(classify(&format!("creating dataset {project}.{dataset}"), &e)),
            }
        })
        .await
        .map(|_| ())
    }

    /// Creates the table unless it exists; an existing table is kept as it is,
    /// as Bizon does (BigQuery answers Conflict).
    pub async fn ensure_table(&self, table: &TableRef, spec: &TableSpec) -> Result<(), DestinationError> {
        let cell = self
            .ensured
            .lock()
            .expect("poisoned")
            .entry(table.clone())
            .or_default()
            .clone();
        cell.get_or_try_init(|| async {
            self.ensure_dataset(&table.project, &table.dataset).await?;
            self.create_table(table, spec).await
        })
        .await
        .map(|_| ())
    }

    async fn create_table(&self, table: &TableRef, spec: &TableSpec) -> Result<(), DestinationError> {
        let body: Table = serde_json::from_value(spec.table_json(table))
            .map_err(|e| DestinationError::Fatal(format!("table definition for {table}: {e}")))?;
        match self
            .tables
            .insert_table()
            .set_project_id(&table.project)
            .set_dataset_id(&table.dataset)
            .set_table(body)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_code(&e, Code::AlreadyExists) => Ok(()),
            Err(e) => Err(classify(&format!("creating table {table}"), &e)),
        }
    }
}
