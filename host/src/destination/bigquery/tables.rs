//! Datasets and tables over the REST API: created when missing, or evolved
//! to accept what the run writes (see `evolve`), once per run per table (not
//! per flush).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use google_cloud_auth::credentials::Credentials;
use google_cloud_bigquery_v2::client::{DatasetService, TableService};
use google_cloud_bigquery_v2::model::{Dataset, Table};
use google_cloud_gax::error::rpc::Code;
use google_cloud_gax::retry_policy::NeverRetry;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::sync::OnceCell;

use super::errors::{classify, is_code};
use super::evolve;
use super::rest::Rest;
use super::schema::{TableRef, TableSpec};
use crate::destination::DestinationError;

pub const DEFAULT_ENDPOINT: &str = "https://bigquery.googleapis.com";

/// Once-per-run initialisation, keyed by what it initialises.
type Once<K> = Mutex<HashMap<K, Arc<OnceCell<()>>>>;

pub struct Tables {
    pub datasets: DatasetService,
    pub tables: TableService,
    /// Table reads, patches and drops, and jobs (jobs.rs).
    pub rest: Rest,
    /// The REST base URL.
    pub base: String,
    pub location: String,
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
        // minute; the pipeline's retry loop (destination::retry, with the
        // destination's `retry:` policy and the stop signal) is the one retry.
        let retry = || NeverRetry;
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
            .with_credentials(credentials.clone())
            .build()
            .await
            .map_err(|e| DestinationError::Fatal(format!("BigQuery REST client for {endpoint}: {e}")))?;
        Ok(Self {
            datasets,
            tables,
            rest: Rest::new(credentials)?,
            base: endpoint,
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

    /// Creates the table unless it exists; an existing one is evolved to
    /// take this spec's rows (columns added, REQUIRED relaxed) or refused.
    /// Its partitioning and clustering are kept, as BigQuery keeps them.
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
            if !self.create_table(table, spec).await? {
                self.evolve_table(table, spec).await?;
            }
            Ok::<(), DestinationError>(())
        })
        .await
        .map(|_| ())
    }

    /// Drops the table and creates it anew from `spec`.
    pub async fn recreate_table(&self, table: &TableRef, spec: &TableSpec) -> Result<(), DestinationError> {
        self.drop_table(table).await?;
        self.create_table(table, spec).await?;
        // Whatever an earlier ensure_table learnt about it is stale.
        self.ensured.lock().expect("poisoned").remove(table);
        Ok(())
    }

    pub fn table_url(&self, t: &TableRef) -> String {
        format!(
            "{}/bigquery/v2/projects/{}/datasets/{}/tables/{}",
            self.base, t.project, t.dataset, t.table
        )
    }

    /// The table's resource, `None` when it does not exist.
    pub async fn get_table(&self, t: &TableRef) -> Result<Option<Value>, DestinationError> {
        match self.rest.json(Method::GET, &self.table_url(t), &Value::Null).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e.into_destination(&format!("reading table {t}"))),
        }
    }

    pub async fn drop_table(&self, t: &TableRef) -> Result<(), DestinationError> {
        match self.rest.call(Method::DELETE, &self.table_url(t), None, None).await {
            Ok(_) => Ok(()),
            Err(e) if e.status() == Some(404) => Ok(()),
            Err(e) => Err(e.into_destination(&format!("dropping table {t}"))),
        }
    }

    /// Patches an existing table's schema (tables.patch) so this spec's rows fit.
    async fn evolve_table(&self, table: &TableRef, spec: &TableSpec) -> Result<(), DestinationError> {
        let Some(current) = self.get_table(table).await? else {
            return Err(DestinationError::Retryable(format!(
                "table {table} was reported to exist and then not found"
            )));
        };
        let existing = current["schema"]["fields"].as_array().cloned().unwrap_or_default();
        let Some(evolution) = evolve::reconcile(table, &existing, &spec.fields)? else {
            return Ok(());
        };
        let body = json!({"schema": {"fields": evolution.fields}});
        self.rest
            .json(Method::PATCH, &self.table_url(table), &body)
            .await
            .map_err(|e| e.into_destination(&format!("updating the schema of {table}")))?;
        if self.base.starts_with("http://") {
            // An emulator (BigQuery is https only): bqemulator 1.4's patch
            // leaves the stored table as it was; DDL changes that too.
            let id = format!("bizon_evolve_{:016x}", fastrand::u64(..));
            let sql = evolve::as_ddl(table, &evolution);
            self.run_query(&table.project, &id, &sql, &format!("altering {table}"))
                .await?;
        }
        tracing::warn!(
            "table {table}: schema updated before the first write (added: [{}], relaxed to NULLABLE: [{}])",
            evolution.added.join(", "),
            evolution.relaxed.join(", ")
        );
        Ok(())
    }

    /// Creates the table; `false` when it already existed.
    async fn create_table(&self, table: &TableRef, spec: &TableSpec) -> Result<bool, DestinationError> {
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
            Ok(_) => Ok(true),
            Err(e) if is_code(&e, Code::AlreadyExists) => Ok(false),
            Err(e) => Err(classify(&format!("creating table {table}"), &e)),
        }
    }
}
