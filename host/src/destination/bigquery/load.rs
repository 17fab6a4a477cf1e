//! `bigquery`: a Parquet file per flush in `gcs_buffer_bucket`, load jobs
//! (WRITE_APPEND) into a staging table, published at `finalize` as Bizon 0.6.4
//! does for the source's `sync_mode`:
//!
//! - `full_refresh`: staging `<table>_temp`, dropped and created anew before
//!   this run's first load (a crashed run's rows are never published), then a
//!   copy job WRITE_TRUNCATE replaces the table, and the temp table is dropped.
//! - `incremental`: staging `<table>_incremental`, kept across a crash (its
//!   rows were acknowledged to the source), copied WRITE_APPEND, then dropped.
//! - `stream`: loads go straight into the table; nothing to publish.
//!
//! Before publishing, `enforce_partitioning` may rebuild the table (see
//! partitioning.rs); every table is created or evolved before its first write.
//!
//! GCS goes through one authenticated media upload (`uploadType=media`), not
//! google-cloud-storage: a flush is one object written once, which is one
//! request, and that crate's resumable uploads drop the port from the Host
//! header (so a storage emulator on any port but 80 is unreachable).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use arrow_array::RecordBatch;
use async_trait::async_trait;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use reqwest::Method;
use serde_json::{json, Value};

use super::auth;
use super::config::{BigQueryConfig, GcsBufferFormat};
use super::identity;
use super::partitioning;
use super::replays::Replays;
use super::rest::{encode_component, Rest};
use super::schema::{table_batch, SourceDataType, TableRef, TableSpec};
use super::tables::Tables;
use super::target::Target;
use crate::config::SyncMode;
use crate::destination::{Batch, Destination, DestinationError};

pub const GCS_DEFAULT_ENDPOINT: &str = "https://storage.googleapis.com";

/// One Parquet file (snappy) holding the batch in the table's columns.
pub fn parquet_bytes(shaped: &RecordBatch) -> Result<Vec<u8>, DestinationError> {
    let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
    let mut out = Vec::with_capacity(shaped.get_array_memory_size() / 2);
    let mut writer = ArrowWriter::try_new(&mut out, shaped.schema(), Some(props))
        .map_err(|e| DestinationError::Fatal(format!("Parquet writer: {e}")))?;
    writer
        .write(shaped)
        .and_then(|_| writer.close().map(|_| ()))
        .map_err(|e| DestinationError::Fatal(format!("writing Parquet: {e}")))?;
    Ok(out)
}

/// `gcs_endpoint`, else `STORAGE_EMULATOR_HOST` (as Google's clients read it,
/// scheme optional), else Google's.
fn gcs_endpoint(configured: Option<&str>) -> (String, bool) {
    let from_env = std::env::var("STORAGE_EMULATOR_HOST").ok().filter(|v| !v.is_empty());
    match configured.map(str::to_string).or(from_env) {
        Some(e) if e.contains("://") => (e.trim_end_matches('/').to_string(), true),
        Some(e) => (format!("http://{}", e.trim_end_matches('/')), true),
        None => (GCS_DEFAULT_ENDPOINT.into(), false),
    }
}

/// An uploaded file and the rows it holds.
type Object = (String, u64);

struct LoadJob {
    id: String,
    location: Option<String>,
    objects: Vec<Object>,
}

/// A destination_id's staging: its temp table and the loads into it.
struct Staging {
    main: TableRef,
    temp: TableRef,
    spec: Arc<TableSpec>,
    /// The temp table was reset and created for this run.
    ready: bool,
    /// async_load: uploaded objects not yet in a job, and submitted jobs, oldest first.
    pending: Vec<Object>,
    in_flight: VecDeque<LoadJob>,
    /// The last synchronous load's batch sequence and job: a retried batch
    /// whose job did land is not loaded twice.
    last: Option<(Arc<str>, u64, String, Option<String>)>,
    /// async_load: the last batch sequence whose object joined `pending`; a
    /// retry of it only repeats the job bookkeeping that failed.
    staged: HashMap<Arc<str>, u64>,
    jobs: u64,
}

pub struct BatchLoad {
    target: Target,
    rest: Rest,
    gcs: String,
    bucket: String,
    async_load: bool,
    mode: SyncMode,
    enforce_partitioning: bool,
    files_per_job: usize,
    max_in_flight: usize,
    /// Names this run's objects and jobs apart from any other run's.
    run: String,
    /// Load jobs named by the rows they load (Kafka records, loading into
    /// the table or the kept incremental stage, one job per batch): the same
    /// messages loaded again after a crash are the same job, which BigQuery
    /// answers 409 and does not run twice.
    idempotent_loads: bool,
    /// By table, not destination_id: two destination_ids naming one table
    /// (`t` and `dataset.t`) must share its temp table, not drop each other's.
    staging: Mutex<HashMap<TableRef, Arc<tokio::sync::Mutex<Staging>>>>,
    /// Rows a crashed run loaded after its last commit, recognised when read
    /// again (loads waited for: with `async_load` a write returns before
    /// its load, so no position is recorded).
    replays: Replays,
    /// The source resumes from commits (Kafka).
    resumed: std::sync::atomic::AtomicBool,
}

/// A table name as job ids may hold it: letters, digits, `_` and `-`, at
/// most 1024 in all.
fn job_table(table: &TableRef) -> String {
    table
        .table
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
        .take(200)
        .collect()
}

pub async fn build(c: &BigQueryConfig) -> Result<BatchLoad, DestinationError> {
    if c.gcs_buffer_format == GcsBufferFormat::Csv {
        return Err(DestinationError::Fatal(
            "gcs_buffer_format: csv is not supported (Bizon refuses it too); use parquet".into(),
        ));
    }
    if c.load_files_per_job == 0 || c.load_max_in_flight_jobs == 0 {
        return Err(DestinationError::Fatal(
            "load_files_per_job and load_max_in_flight_jobs must be at least 1".into(),
        ));
    }
    let (gcs, gcs_emulated) = gcs_endpoint(c.gcs_endpoint.as_deref());
    let credentials = auth::credentials(c.authentication.as_ref(), c.endpoint.is_some() || gcs_emulated)?;
    let tables = Tables::new(
        c.endpoint.as_deref(),
        credentials.clone(),
        &c.dataset_location,
        c.create_dataset,
    )
    .await?;
    let target = Target::new(
        c.options.clone(),
        c.project_id.clone(),
        c.dataset_id.clone(),
        c.time_partitioning.clone(),
        SourceDataType::String,
        tables,
        c.table_prefix.clone(),
    )?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Ok(BatchLoad {
        target,
        rest: Rest::new(credentials)?,
        gcs,
        bucket: c.gcs_buffer_bucket.clone(),
        async_load: c.async_load,
        mode: c.options.sync_mode,
        enforce_partitioning: c.enforce_partitioning,
        files_per_job: c.load_files_per_job,
        max_in_flight: c.load_max_in_flight_jobs,
        run: format!("{}_{:08x}", now.as_secs(), fastrand::u32(..)),
        // A full refresh loads into a temp table made anew each run: the same
        // rows must be loaded again there, so its jobs are per run.
        idempotent_loads: c.options.source_identity && c.options.sync_mode != SyncMode::FullRefresh && !c.async_load,
        staging: Mutex::default(),
        replays: Replays::default(),
        resumed: Default::default(),
    })
}

impl BatchLoad {
    /// A destination_id's staging, by the table it resolves to. The staging
    /// table follows Bizon: `<table>_temp` on a full refresh, `<table>_incremental`
    /// on an incremental run, the table itself in stream mode.
    async fn staging(&self, destination_id: &Arc<str>) -> Result<Arc<tokio::sync::Mutex<Staging>>, DestinationError> {
        let (main, spec) = self.target.resolve(destination_id).await?;
        if let Some(s) = self.staging.lock().expect("poisoned").get(&main) {
            return Ok(s.clone());
        }
        let temp = match self.mode {
            SyncMode::FullRefresh => main.with_table(format!("{}_temp", main.table)),
            SyncMode::Incremental => main.with_table(format!("{}_incremental", main.table)),
            SyncMode::Stream => main.clone(),
        };
        let staging = Arc::new(tokio::sync::Mutex::new(Staging {
            main: main.clone(),
            temp,
            spec,
            ready: false,
            pending: Vec::new(),
            in_flight: VecDeque::new(),
            last: None,
            staged: HashMap::new(),
            jobs: 0,
        }));
        Ok(self
            .staging
            .lock()
            .expect("poisoned")
            .entry(main)
            .or_insert(staging)
            .clone())
    }

    /// Once per run and table, before its first load. Full refresh: whatever a
    /// crashed run left in the temp table goes, then the table is made anew.
    /// Incremental: a crashed run's staged rows were acknowledged to the
    /// source, so they stay and are published with this run's (as Bizon).
    /// Both: the table is created, or evolved to take this run's columns.
    async fn prepare(&self, s: &mut Staging) -> Result<(), DestinationError> {
        if s.ready {
            return Ok(());
        }
        let tables = &self.target.tables;
        tables.ensure_dataset(&s.temp.project, &s.temp.dataset).await?;
        // A Kafka source commits only once published: a crashed run's
        // incremental stage is read again, so it goes too.
        let resumed = self.resumed.load(std::sync::atomic::Ordering::Relaxed);
        if self.mode == SyncMode::FullRefresh || (self.mode == SyncMode::Incremental && resumed) {
            tables.drop_table(&s.temp).await?;
        }
        tables.ensure_table(&s.temp, &s.spec).await?;
        // The table published into is checked now, not at finalize: a column
        // it cannot take fails the run before anything is uploaded.
        tables.ensure_table(&s.main, &s.spec).await?;
        s.ready = true;
        Ok(())
    }

    async fn upload(&self, object: &str, bytes: Vec<u8>) -> Result<(), DestinationError> {
        let url = format!(
            "{}/upload/storage/v1/b/{}/o?uploadType=media&name={}",
            self.gcs,
            encode_component(&self.bucket),
            encode_component(object)
        );
        self.rest
            .call(Method::POST, &url, Some(bytes), Some("application/octet-stream"))
            .await
            .map(|_| ())
            .map_err(|e| e.into_destination(&format!("uploading gs://{}/{object}", self.bucket)))
    }

    /// Removing a loaded file is housekeeping: a failure is logged, not raised.
    async fn delete_objects(&self, objects: &[Object]) {
        for (object, _) in objects {
            let url = format!(
                "{}/storage/v1/b/{}/o/{}",
                self.gcs,
                encode_component(&self.bucket),
                encode_component(object)
            );
            if let Err(e) = self.rest.call(Method::DELETE, &url, None, None).await {
                tracing::warn!("could not delete gs://{}/{object}: {e}", self.bucket);
            }
        }
    }

    fn job_id(&self, s: &mut Staging, kind: &str) -> String {
        s.jobs += 1;
        format!("bizon_{kind}_{}_{}_{}", self.run, job_table(&s.temp), s.jobs)
    }

    /// Submits one load job of `objects` into the temp table, named by
    /// `rows` (a batch's identity) when given, else by the run.
    async fn submit_load(
        &self,
        s: &mut Staging,
        objects: Vec<Object>,
        rows: Option<&str>,
    ) -> Result<LoadJob, DestinationError> {
        let id = match rows {
            Some(rows) => format!("bizon_load_{}_{rows}", job_table(&s.temp)),
            None => self.job_id(s, "load"),
        };
        let uris: Vec<String> = objects
            .iter()
            .map(|(o, _)| format!("gs://{}/{o}", self.bucket))
            .collect();
        let configuration = json!({"load": {
            "sourceUris": uris,
            "sourceFormat": "PARQUET",
            "writeDisposition": "WRITE_APPEND",
            "createDisposition": "CREATE_NEVER",
            // Bizon's: a table created by older code converges without a migration.
            "schemaUpdateOptions": ["ALLOW_FIELD_ADDITION", "ALLOW_FIELD_RELAXATION"],
            "destinationTable": {"projectId": s.temp.project, "datasetId": s.temp.dataset, "tableId": s.temp.table},
            "schema": {"fields": s.spec.fields},
        }});
        let location = self
            .target
            .tables
            .insert_job(&s.temp.project, &id, configuration)
            .await?;
        Ok(LoadJob { id, location, objects })
    }

    fn describe_load(s: &Staging, job: &LoadJob) -> String {
        format!(
            "loading {} file(s) ({}) into {}",
            job.objects.len(),
            job.objects.first().map(|(o, _)| o.as_str()).unwrap_or_default(),
            s.temp
        )
    }

    /// A done load job's verdict: its own errors, or fewer rows than uploaded.
    fn landed(s: &Staging, job: &LoadJob, done: &Value) -> Result<(), DestinationError> {
        let what = Self::describe_load(s, job);
        super::jobs::job_outcome(done, &job.id, &what)?;
        // A load that reads fewer rows than were uploaded (a truncated object)
        // must not pass for a success. Only fewer: bqemulator 1.4 reports the
        // table's row count after the load here, not the job's.
        let expected: u64 = job.objects.iter().map(|(_, rows)| rows).sum();
        let loaded = done["statistics"]["load"]["outputRows"]
            .as_str()
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(loaded) = loaded.filter(|&n| n < expected) {
            return Err(DestinationError::Fatal(format!(
                "{what} (job {}): BigQuery loaded {loaded} rows of {expected}; the files are kept",
                job.id
            )));
        }
        Ok(())
    }

    async fn finish_load(&self, s: &Staging, job: &LoadJob) -> Result<(), DestinationError> {
        let done = self
            .target
            .tables
            .await_done(&s.temp.project, &job.id, job.location.as_deref())
            .await?;
        Self::landed(s, job, &done)?;
        self.delete_objects(&job.objects).await;
        Ok(())
    }

    /// async_load: a batch's object joins the pending files; a full set
    /// becomes a job; past `load_max_in_flight_jobs` the oldest job is waited
    /// for, and finished ones are reaped in order. A failed job fails the run
    /// (its files stay in the bucket), as in Bizon.
    async fn stage_async(
        &self,
        s: &mut Staging,
        destination_id: &Arc<str>,
        sequence: u64,
        object: Object,
    ) -> Result<(), DestinationError> {
        s.pending.push(object);
        s.staged.insert(destination_id.clone(), sequence);
        self.drive_async(s).await
    }

    async fn drive_async(&self, s: &mut Staging) -> Result<(), DestinationError> {
        if s.pending.len() >= self.files_per_job {
            let job = self.submit_load(s, s.pending.clone(), None).await?;
            s.pending.clear();
            s.in_flight.push_back(job);
        }
        while let Some(job) = s.in_flight.front() {
            let done = if s.in_flight.len() >= self.max_in_flight {
                self.target
                    .tables
                    .await_done(&s.temp.project, &job.id, job.location.as_deref())
                    .await?
            } else {
                match self
                    .target
                    .tables
                    .job_status(&s.temp.project, &job.id, job.location.as_deref())
                    .await?
                {
                    Some(done) => done,
                    None => break,
                }
            };
            // This batch cannot mend an earlier batch's failed load.
            Self::landed(s, job, &done).map_err(fatal)?;
            let job = s.in_flight.pop_front().expect("not empty");
            self.delete_objects(&job.objects).await;
        }
        Ok(())
    }

    async fn load_now(
        &self,
        s: &mut Staging,
        destination_id: &Arc<str>,
        sequence: u64,
        object: Object,
        rows: Option<String>,
    ) -> Result<(), DestinationError> {
        // The same batch again: its job may have landed, or still be running.
        if let Some((dest, seq, id, location)) = s.last.clone() {
            if seq == sequence && dest == *destination_id {
                let done = self
                    .target
                    .tables
                    .await_done(&s.temp.project, &id, location.as_deref())
                    .await?;
                if done["status"]["errorResult"].is_null() {
                    let job = LoadJob {
                        id,
                        location,
                        objects: vec![object],
                    };
                    Self::landed(s, &job, &done)?;
                    self.delete_objects(&job.objects).await;
                    return Ok(());
                }
            }
        }
        let job = self.submit_load(s, vec![object.clone()], rows.as_deref()).await?;
        s.last = Some((destination_id.clone(), sequence, job.id.clone(), job.location.clone()));
        match self.finish_load(s, &job).await {
            // A job of that name that failed (in an earlier run) cannot be
            // submitted again: this load goes under the run's own name.
            Err(DestinationError::Fatal(e)) if rows.is_some() => {
                tracing::warn!("load job {} failed ({e}); loading again as a job of this run", job.id);
                let job = self.submit_load(s, vec![object], None).await?;
                s.last = Some((destination_id.clone(), sequence, job.id.clone(), job.location.clone()));
                self.finish_load(s, &job).await
            }
            done => done,
        }
    }

    async fn publish(&self, s: &mut Staging) -> Result<(), DestinationError> {
        if self.async_load && !s.pending.is_empty() {
            let objects = std::mem::take(&mut s.pending);
            let job = self.submit_load(s, objects, None).await?;
            s.in_flight.push_back(job);
        }
        while let Some(job) = s.in_flight.front() {
            self.finish_load(s, job).await?;
            s.in_flight.pop_front();
        }
        if !s.ready || self.mode == SyncMode::Stream {
            // Nothing staged, or the loads went to the table itself.
            return Ok(());
        }
        let tables = &self.target.tables;
        partitioning::check_before_publish(tables, &s.main, &s.spec, self.enforce_partitioning, self.mode).await?;
        tables.ensure_table(&s.main, &s.spec).await?;
        // Bizon's publish: a full refresh replaces the table, incremental appends.
        let disposition = match self.mode {
            SyncMode::FullRefresh => "WRITE_TRUNCATE",
            _ => "WRITE_APPEND",
        };
        let id = self.job_id(s, "copy");
        let table = |t: &TableRef| json!({"projectId": t.project, "datasetId": t.dataset, "tableId": t.table});
        let configuration = json!({"copy": {
            "sourceTable": table(&s.temp),
            "destinationTable": table(&s.main),
            "writeDisposition": disposition,
            "createDisposition": "CREATE_IF_NEEDED",
        }});
        let location = tables.insert_job(&s.main.project, &id, configuration).await?;
        let what = format!("copying {} into {} ({disposition})", s.temp, s.main);
        tables
            .wait_job(&s.main.project, &id, location.as_deref(), &what)
            .await?;
        tables.drop_table(&s.temp).await?;
        s.ready = false;
        Ok(())
    }
}

fn fatal(e: DestinationError) -> DestinationError {
    match e {
        DestinationError::Retryable(m) => DestinationError::Fatal(m),
        other => other,
    }
}

#[async_trait]
impl Destination for BatchLoad {
    async fn check_connection(&self) -> Result<(), DestinationError> {
        self.target.check_connection().await?;
        let url = format!("{}/storage/v1/b/{}", self.gcs, encode_component(&self.bucket));
        match self.rest.call(Method::GET, &url, None, None).await {
            Ok(_) => Ok(()),
            Err(e) if e.status() == Some(404) => Err(DestinationError::Fatal(format!(
                "GCS bucket gs://{} (gcs_buffer_bucket) does not exist at {}",
                self.bucket, self.gcs
            ))),
            Err(e) => Err(e.into_destination(&format!("reading GCS bucket gs://{}", self.bucket))),
        }
    }

    async fn write(&self, batch: &Batch) -> Result<u64, DestinationError> {
        let rows = batch.records.num_rows();
        if rows == 0 {
            return Ok(0);
        }
        let staging = self.staging(&batch.destination_id).await?;
        let mut s = staging.lock().await;
        if self.async_load
            && s.staged
                .get(&batch.destination_id)
                .is_some_and(|&q| q >= batch.sequence)
        {
            self.drive_async(&mut s).await?;
            return Ok(rows as u64);
        }
        self.prepare(&mut s).await?;
        let kept = match self.async_load {
            true => None,
            false => {
                let table_of = |id: Arc<str>| async move { self.target.resolve(&id).await.map(|(table, _)| table) };
                self.replays.load(&self.target.tables, table_of).await?;
                self.replays.filter(batch)?
            }
        };
        let records = kept.as_ref().map_or(&batch.records, |k| &k.batch.records).clone();
        if records.num_rows() == 0 {
            self.replays.written(batch, &s.main);
            return Ok(rows as u64);
        }
        let (unnest, idempotent, loading) = (self.target.options.unnest, self.idempotent_loads, records.num_rows());
        let (bytes, rows_id) = tokio::task::spawn_blocking(move || {
            let rows_id = idempotent.then(|| identity::batch_id(&records)).flatten();
            parquet_bytes(&table_batch(&records, unnest)?).map(|b| (b, rows_id))
        })
        .await
        .map_err(|e| DestinationError::Fatal(format!("encoding Parquet: {e}")))??;
        let object = format!(
            "bizon/{}/{}/{}/{:010}.parquet",
            self.run,
            s.main.to_string().replace('.', "/"),
            batch.destination_id,
            batch.sequence
        );
        self.upload(&object, bytes).await?;
        let object = (object, loading as u64);
        if self.async_load {
            self.stage_async(&mut s, &batch.destination_id, batch.sequence, object)
                .await?;
        } else {
            self.load_now(&mut s, &batch.destination_id, batch.sequence, object, rows_id)
                .await?;
            self.replays.written(batch, &s.main);
        }
        Ok(rows as u64)
    }

    fn position(&self, destination_id: &str) -> Option<String> {
        self.replays.position(destination_id)
    }

    async fn resume(&self, positions: &crate::source::Positions) -> Result<(), DestinationError> {
        self.resumed.store(true, std::sync::atomic::Ordering::Relaxed);
        if self.async_load {
            return Ok(());
        }
        self.replays.resume(positions).await;
        Ok(())
    }

    fn replayed(&self) -> u64 {
        self.replays.replayed()
    }

    async fn finalize(&self) -> Result<(), DestinationError> {
        let all: Vec<_> = self.staging.lock().expect("poisoned").values().cloned().collect();
        for staging in all {
            let mut s = staging.lock().await;
            self.publish(&mut s).await?;
        }
        Ok(())
    }
}
