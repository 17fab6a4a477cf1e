//! `bigquery_streaming_v2`: the Storage Write API with Arrow rows.
//!
//! Bizon opens a new client per call and encodes protobuf rows one by one in
//! Python; here one client serves the run, each table keeps one writer (one
//! long-lived AppendRows connection), and a batch goes as Arrow IPC slices
//! under the 10 MB request limit, up to `max_concurrent_threads` in flight.
//!
//! Staging follows the source's `sync_mode` as in Bizon: rows go to
//! `<table>_temp` (full refresh) or `<table>_incremental` (incremental) and
//! `finalize` publishes them with a query, or straight to the table (stream).
//! A query, not a copy job: rows appended through the Storage Write API may
//! not yet be visible to copy jobs, while a query sees them (Bizon's reason).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow_array::{BooleanArray, RecordBatch};
use arrow_ipc::writer::{write_message, DictionaryTracker, IpcDataGenerator, IpcWriteContext, IpcWriteOptions};
use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use google_cloud_bigquery::client::Write;
// The pipeline's retry loop (destination::retry) is the one that retries a
// write: with the client's own (up to 300 s on transient errors) a stop
// signal would wait behind it. (Writers of application-created streams
// take no retry policy in this client version; their appends carry offsets,
// so a resent chunk is refused as ALREADY_EXISTS rather than doubled.)
use google_cloud_bigquery::error::{AppendError, WriterBuilderError};
use google_cloud_bigquery::model::{ArrowRecordBatch, ArrowSchema};
use google_cloud_bigquery::write::format::Arrow;
use google_cloud_bigquery::write::stream_type::CommittedStream;
use google_cloud_bigquery::write::{CommittedWriter, DefaultWriter};
use google_cloud_gax::error::rpc::Code;
use google_cloud_gax::retry_policy::NeverRetry;
use tokio::sync::OnceCell;

use super::auth;
use super::config::{AppendConnections, BigQueryStreamingV2Config, WriteMode, MAX_ROWS_PER_REQUEST};
use super::errors::{classify, describe, is_code};
use super::partitioning;
use super::replays::Replays;
use super::schema::TableSpec;
use super::schema::{table_batch, SourceDataType, TableRef};
use super::tables::Tables;
use super::target::Target;
use crate::config::SyncMode;
use crate::destination::{Batch, Destination, DestinationError, RejectedRow};

pub const DEFAULT_ENDPOINT: &str = "https://bigquerystorage.googleapis.com";
/// AppendRows requests must stay under 10 MB; the schema and stream name ride along.
pub const REQUEST_BUDGET: usize = 9_500_000;

pub struct StreamingV2 {
    target: Target,
    write: Write,
    mode: WriteMode,
    max_rows: usize,
    in_flight: usize,
    writers: Mutex<HashMap<TableRef, Arc<OnceCell<TableWriter>>>>,
    sync_mode: SyncMode,
    enforce_partitioning: bool,
    /// By main table: its staging table, prepared once per run.
    staging: Mutex<HashMap<TableRef, Arc<OnceCell<Staged>>>>,
    /// Names this run's publish jobs apart from any other run's.
    run: String,
    /// Rows a crashed run wrote after its last commit, recognised when read again.
    replays: Replays,
    /// The source resumes from commits (Kafka): an incremental stage left
    /// by a crashed run holds records not committed, read again now.
    resumed: std::sync::atomic::AtomicBool,
    /// Default-stream batches a write left unfinished, by destination_id and
    /// sequence: the chunks that landed, and the rows refused in them.
    landed: Mutex<HashMap<(Arc<str>, u64), Landed>>,
    /// The crate sends `write_stream` only on a connection's first request;
    /// bqemulator 1.4 needs it on every one ("Stream not found"), so against
    /// it each append gets its own connection. BigQuery keeps one per table.
    connection_per_append: bool,
}

/// What a default-stream batch's earlier attempts did.
#[derive(Default)]
struct Landed {
    /// The chunks (by first row) that landed.
    chunks: std::collections::HashSet<usize>,
    rejected: Vec<RejectedRow>,
}

/// Where a main table's rows go this run, and its definition.
#[derive(Clone)]
struct Staged {
    main: TableRef,
    rows_to: TableRef,
    spec: Arc<TableSpec>,
}

enum TableWriter {
    Default(DefaultWriter<Arrow>, ArrowSchema),
    Committed(tokio::sync::Mutex<Committed>),
}

struct Committed {
    writer: CommittedWriter<Arrow>,
    schema: ArrowSchema,
    next_offset: i64,
    /// The last batch's sequence and first offset: a retried batch goes to the
    /// same offsets, so what already landed answers ALREADY_EXISTS.
    last: Option<(u64, i64)>,
    /// An append failed: the connection may be gone (the crate does not
    /// reconnect a committed writer), so the next batch attaches anew.
    broken: bool,
}

/// One append: rows `start..start + rows` of the batch, IPC-encoded.
pub struct Chunk {
    pub start: usize,
    pub rows: usize,
    pub bytes: Vec<u8>,
}

pub async fn build(c: &BigQueryStreamingV2Config) -> Result<StreamingV2, DestinationError> {
    if c.bq_max_rows_per_request == 0 || c.bq_max_rows_per_request > MAX_ROWS_PER_REQUEST {
        return Err(DestinationError::Fatal(format!(
            "bq_max_rows_per_request must be between 1 and {MAX_ROWS_PER_REQUEST}"
        )));
    }
    let emulated = c.endpoint.is_some() || c.storage_write_endpoint.is_some();
    let credentials = auth::credentials(c.authentication.as_ref(), emulated)?;
    // Bizon's streaming destinations create a missing dataset in check_connection.
    let tables = Tables::new(c.endpoint.as_deref(), credentials.clone(), &c.dataset_location, true).await?;
    let target = Target::new(
        c.options.clone(),
        c.project_id.clone(),
        c.dataset_id.clone(),
        c.time_partitioning.clone(),
        SourceDataType::Json,
        tables,
        c.table_prefix.clone(),
    )?;
    let endpoint = c
        .storage_write_endpoint
        .clone()
        .unwrap_or_else(|| DEFAULT_ENDPOINT.into());
    let write = Write::builder()
        .with_endpoint(endpoint.clone())
        .with_credentials(credentials)
        .build()
        .await
        .map_err(|e| DestinationError::Fatal(format!("Storage Write client for {endpoint}: {e}")))?;
    Ok(StreamingV2 {
        target,
        write,
        mode: c.write_mode,
        max_rows: c.bq_max_rows_per_request,
        in_flight: c.options.max_concurrent_threads,
        writers: Mutex::default(),
        sync_mode: c.options.sync_mode,
        enforce_partitioning: c.enforce_partitioning,
        staging: Mutex::default(),
        run: format!("{:08x}", fastrand::u32(..)),
        landed: Mutex::default(),
        replays: Replays::default(),
        resumed: Default::default(),
        connection_per_append: match c.append_connections {
            Some(AppendConnections::PerAppend) => true,
            Some(AppendConnections::PerTable) => false,
            None => endpoint.starts_with("http://"),
        },
    })
}

/// The encapsulated IPC message (continuation marker, length, flatbuffer,
/// body), the form BigQuery reads for both the schema and the rows.
fn schema_bytes(batch: &RecordBatch) -> Result<Vec<u8>, DestinationError> {
    let options = IpcWriteOptions::default();
    let encoded = IpcDataGenerator::default().schema_to_bytes_with_dictionary_tracker(
        batch.schema_ref(),
        &mut DictionaryTracker::new(false),
        &options,
    );
    let mut out = Vec::new();
    write_message(&mut out, encoded, &options).map_err(|e| DestinationError::Fatal(format!("Arrow schema: {e}")))?;
    Ok(out)
}

fn batch_bytes(batch: &RecordBatch) -> Result<Vec<u8>, DestinationError> {
    let options = IpcWriteOptions::default();
    let (_, encoded) = IpcDataGenerator::default()
        .encode(
            batch,
            &mut DictionaryTracker::new(false),
            &options,
            &mut IpcWriteContext::default(),
        )
        .map_err(|e| DestinationError::Fatal(format!("Arrow rows: {e}")))?;
    let mut out = Vec::with_capacity(encoded.arrow_data.len() + encoded.ipc_message.len() + 16);
    write_message(&mut out, encoded, &options).map_err(|e| DestinationError::Fatal(format!("Arrow rows: {e}")))?;
    Ok(out)
}

/// Splits a batch into appends of at most `max_rows` rows and `budget` bytes.
pub fn chunks(batch: &RecordBatch, max_rows: usize, budget: usize) -> Result<Vec<Chunk>, DestinationError> {
    let total = batch.num_rows();
    let per_row = (batch.get_array_memory_size() / total.max(1)).max(1);
    let mut step = max_rows.min(budget / per_row).max(1);
    let mut out = Vec::new();
    let mut start = 0;
    while start < total {
        let rows = step.min(total - start);
        let bytes = batch_bytes(&batch.slice(start, rows))?;
        if bytes.len() > budget {
            if rows == 1 {
                return Err(DestinationError::Rejected(vec![RejectedRow {
                    row: start as u64,
                    reason: format!(
                        "row is {} bytes; an AppendRows request holds at most {budget}",
                        bytes.len()
                    ),
                }]));
            }
            step = rows / 2;
            continue;
        }
        out.push(Chunk { start, rows, bytes });
        start += rows;
    }
    Ok(out)
}

fn rows_message(bytes: Vec<u8>) -> ArrowRecordBatch {
    ArrowRecordBatch::new().set_serialized_record_batch(bytes)
}

fn builder_error(what: &str, e: WriterBuilderError) -> DestinationError {
    match e {
        WriterBuilderError::Rpc { source, .. } => classify(what, &source),
        other => DestinationError::Fatal(format!("BigQuery: {what}: {other}")),
    }
}

fn append_error(table: &TableRef, e: AppendError) -> DestinationError {
    match e {
        AppendError::Rpc { source, .. } => classify(&format!("appending to {table}"), &source),
        AppendError::UnexpectedEndOfStream => {
            DestinationError::Retryable(format!("BigQuery: appending to {table}: the AppendRows stream closed"))
        }
        other => DestinationError::Fatal(format!("BigQuery: appending to {table}: {other}")),
    }
}

impl StreamingV2 {
    /// The table a destination_id's rows are appended to this run, ready:
    /// on a full refresh a crashed run's temp table is dropped first (its
    /// rows are never published); an incremental stage is kept (its rows were
    /// acknowledged to the source) unless the source resumes from commits
    /// (Kafka commits only once published: a crashed run's stage is read
    /// again). Created or evolved once per run.
    async fn stage(&self, destination_id: &str) -> Result<Staged, DestinationError> {
        let (main, spec) = self.target.resolve(destination_id).await?;
        let cell = self
            .staging
            .lock()
            .expect("poisoned")
            .entry(main.clone())
            .or_default()
            .clone();
        cell.get_or_try_init(|| async {
            let rows_to = match self.sync_mode {
                SyncMode::FullRefresh => main.with_table(format!("{}_temp", main.table)),
                SyncMode::Incremental => main.with_table(format!("{}_incremental", main.table)),
                SyncMode::Stream => main.clone(),
            };
            let tables = &self.target.tables;
            tables.ensure_dataset(&rows_to.project, &rows_to.dataset).await?;
            let resumed = self.resumed.load(std::sync::atomic::Ordering::Relaxed);
            if self.sync_mode == SyncMode::FullRefresh || (self.sync_mode == SyncMode::Incremental && resumed) {
                tables.drop_table(&rows_to).await?;
            }
            tables.ensure_table(&rows_to, &spec).await?;
            // The table published into takes these columns, or the run stops now.
            tables.ensure_table(&main, &spec).await?;
            Ok::<_, DestinationError>(Staged { main, rows_to, spec })
        })
        .await
        .cloned()
    }

    /// Moves a staging table's rows into the main table: replaced by one MERGE
    /// on a full refresh (Bizon: CREATE OR REPLACE ... AS SELECT, or a
    /// non-atomic TRUNCATE + INSERT under ingestion-time partitioning; MERGE
    /// keeps the table's partitioning, clustering and metadata and is atomic
    /// in every case), appended with INSERT ... SELECT on incremental.
    async fn publish(&self, staged: &Staged, n: usize) -> Result<(), DestinationError> {
        let Staged { main, rows_to, spec } = staged;
        let tables = &self.target.tables;
        partitioning::check_before_publish(tables, main, spec, self.enforce_partitioning, self.sync_mode).await?;
        tables.ensure_table(main, spec).await?;
        let columns = spec
            .fields
            .iter()
            .filter_map(|f| f["name"].as_str())
            .map(|c| format!("`{c}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = match self.sync_mode {
            // One statement, so atomic: every old row matches no staged row and
            // goes, every staged row matches no old row and comes in.
            SyncMode::FullRefresh => format!(
                "MERGE `{main}` T USING `{rows_to}` S ON FALSE WHEN NOT MATCHED BY SOURCE THEN DELETE \
                 WHEN NOT MATCHED THEN INSERT ({columns}) VALUES ({columns})"
            ),
            _ => format!("INSERT INTO `{main}` ({columns}) SELECT {columns} FROM `{rows_to}`"),
        };
        let table: String = main
            .table
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
            .take(200)
            .collect();
        let id = format!("bizon_publish_{}_{table}_{n}", self.run);
        let what = format!("publishing {rows_to} into {main} ({})", self.sync_mode.as_str());
        tables.run_query(&main.project, &id, &sql, &what).await?;
        tables.drop_table(rows_to).await
    }

    async fn writer(
        &self,
        table: &TableRef,
        shaped: &RecordBatch,
    ) -> Result<Arc<OnceCell<TableWriter>>, DestinationError> {
        let cell = self
            .writers
            .lock()
            .expect("poisoned")
            .entry(table.clone())
            .or_default()
            .clone();
        cell.get_or_try_init(|| async {
            let schema = ArrowSchema::new().set_serialized_schema(schema_bytes(shaped)?);
            let what = format!("opening a write stream on {table}");
            let built = match self.mode {
                WriteMode::Default => self
                    .write
                    .open_default_stream(table.path())
                    .with_retry_policy(NeverRetry)
                    .build_arrow(schema.clone())
                    .await
                    .map(|w| TableWriter::Default(w, schema)),
                WriteMode::ExactlyOnce => self
                    .write
                    .create_stream(table.path())
                    .build_arrow(schema.clone())
                    .await
                    .map(|writer| {
                        TableWriter::Committed(tokio::sync::Mutex::new(Committed {
                            writer,
                            schema,
                            next_offset: 0,
                            last: None,
                            broken: false,
                        }))
                    }),
            };
            built.map_err(|e| builder_error(&what, e))
        })
        .await?;
        Ok(cell)
    }

    /// Default stream: chunks in parallel; a chunk with bad rows is sent again
    /// without them (BigQuery wrote none of it) and the bad rows are reported.
    async fn write_default(
        &self,
        key: (Arc<str>, u64),
        table: &TableRef,
        shared: &DefaultWriter<Arrow>,
        schema: &ArrowSchema,
        shaped: &RecordBatch,
        chunks: Vec<Chunk>,
    ) -> Result<u64, DestinationError> {
        // The default stream does not take offsets: a retry of this batch
        // (the pipeline's retry loop) sends only the chunks that did not land.
        let mut landed = self.landed.lock().expect("poisoned").remove(&key).unwrap_or_default();
        let pending: Vec<Chunk> = chunks
            .into_iter()
            .filter(|c| !landed.chunks.contains(&c.start))
            .collect();
        let outcomes: Vec<(usize, Result<Vec<RejectedRow>, DestinationError>)> = futures::stream::iter(pending)
            .map(|chunk| async move {
                let start = chunk.start;
                (start, self.append_default(table, shared, schema, shaped, chunk).await)
            })
            .buffer_unordered(self.in_flight)
            .collect()
            .await;
        let mut failed = None;
        for (start, outcome) in outcomes {
            match outcome {
                Ok(rejected) => {
                    landed.chunks.insert(start);
                    landed.rejected.extend(rejected);
                }
                // A fatal error wins over a passing one: retrying cannot help then.
                Err(e) => {
                    if failed.as_ref().is_none_or(DestinationError::is_retryable) {
                        failed = Some(e);
                    }
                }
            }
        }
        if let Some(e) = failed {
            self.landed.lock().expect("poisoned").insert(key, landed);
            return Err(e);
        }
        let mut rejected = landed.rejected;
        if rejected.is_empty() {
            return Ok(shaped.num_rows() as u64);
        }
        rejected.sort_by_key(|r| r.row);
        Err(DestinationError::Rejected(rejected))
    }

    /// One chunk to the default stream; rows BigQuery refuses are taken out
    /// and the rest sent again.
    async fn append_default(
        &self,
        table: &TableRef,
        shared: &DefaultWriter<Arrow>,
        schema: &ArrowSchema,
        shaped: &RecordBatch,
        chunk: Chunk,
    ) -> Result<Vec<RejectedRow>, DestinationError> {
        let own;
        let writer = if self.connection_per_append {
            own = self
                .write
                .open_default_stream(table.path())
                .with_retry_policy(NeverRetry)
                .build_arrow(schema.clone())
                .await
                .map_err(|e| builder_error(&format!("opening the default stream on {table}"), e))?;
            &own
        } else {
            shared
        };
        match writer.append(rows_message(chunk.bytes)).send().await {
            Ok(_) => Ok(Vec::new()),
            Err(AppendError::RowErrors { row_errors, .. }) => {
                let bad: Vec<RejectedRow> = row_errors
                    .iter()
                    .map(|r| RejectedRow {
                        row: (chunk.start as i64 + r.index) as u64,
                        reason: format!("{table}: {} ({:?})", r.message, r.code),
                    })
                    .collect();
                let keep: BooleanArray = (0..chunk.rows)
                    .map(|i| Some(!row_errors.iter().any(|r| r.index == i as i64)))
                    .collect();
                let rest = arrow_select::filter::filter_record_batch(&shaped.slice(chunk.start, chunk.rows), &keep)
                    .map_err(|e| DestinationError::Fatal(format!("dropping rejected rows: {e}")))?;
                if rest.num_rows() > 0 {
                    writer
                        .append(rows_message(batch_bytes(&rest)?))
                        .send()
                        .await
                        .map_err(|e| append_error(table, e))?;
                }
                Ok(bad)
            }
            Err(e) => Err(append_error(table, e)),
        }
    }

    /// One batch (less what a crashed run wrote already) into `table`.
    async fn append(&self, table: &TableRef, batch: &Batch) -> Result<u64, DestinationError> {
        let shaped = table_batch(&batch.records, self.target.options.unnest)?;
        let chunks = chunks(&shaped, self.max_rows, REQUEST_BUDGET)?;
        let cell = self.writer(table, &shaped).await?;
        match cell.get().expect("initialised above") {
            TableWriter::Default(w, schema) => {
                let key = (batch.destination_id.clone(), batch.sequence);
                self.write_default(key, table, w, schema, &shaped, chunks).await
            }
            TableWriter::Committed(c) => {
                self.write_committed(table, c, batch.sequence, chunks, shaped.num_rows())
                    .await
            }
        }
    }

    /// Committed stream: each chunk at its offset. A retry of the same batch
    /// reuses the offsets, so chunks that landed answer ALREADY_EXISTS.
    async fn write_committed(
        &self,
        table: &TableRef,
        committed: &tokio::sync::Mutex<Committed>,
        sequence: u64,
        chunks: Vec<Chunk>,
        total: usize,
    ) -> Result<u64, DestinationError> {
        let mut state = committed.lock().await;
        if state.broken && !self.connection_per_append {
            // A new connection on the same stream: the offsets carry on.
            let name = state.writer.write_stream().to_string();
            state.writer = self
                .write
                .attach_to_stream::<CommittedStream>(&name)
                .build_arrow(state.schema.clone())
                .await
                .map_err(|e| builder_error(&format!("attaching again to the stream on {table}"), e))?;
            state.broken = false;
        }
        let first = match state.last {
            Some((seq, first)) if seq == sequence => first,
            _ => state.next_offset,
        };
        state.last = Some((sequence, first));
        let (shared, schema) = (&state.writer, &state.schema);
        let written = futures::stream::iter(chunks)
            .map(|chunk| async move {
                let offset = first + chunk.start as i64;
                let own: CommittedWriter<Arrow>;
                let writer = if self.connection_per_append {
                    own = self
                        .write
                        .attach_to_stream::<CommittedStream>(shared.write_stream())
                        .build_arrow(schema.clone())
                        .await
                        .map_err(|e| builder_error(&format!("attaching to the stream on {table}"), e))?;
                    &own
                } else {
                    shared
                };
                match writer.append(rows_message(chunk.bytes)).set_offset(offset).send().await {
                    Ok(_) => Ok(()),
                    Err(AppendError::Rpc { source, .. }) if is_code(&source, Code::AlreadyExists) => Ok(()),
                    Err(AppendError::RowErrors { row_errors, .. }) => Err(DestinationError::Fatal(format!(
                        "BigQuery refused rows of an exactly-once append to {table}: {}",
                        row_errors
                            .iter()
                            .map(|r| format!("row {}: {}", chunk.start as i64 + r.index, r.message))
                            .collect::<Vec<_>>()
                            .join("; ")
                    ))),
                    Err(AppendError::Rpc { source, .. }) if is_code(&source, Code::OutOfRange) => {
                        // An earlier chunk of this batch did not land; the batch retry fills the gap.
                        // If it persists, rows the stream acknowledged are missing from it.
                        Err(DestinationError::Retryable(format!(
                            "BigQuery: OUT_OF_RANGE: offset {offset} on {table} is past the end of stream {} \
                             (rows before it are missing): {}",
                            writer.write_stream(),
                            describe(&source)
                        )))
                    }
                    Err(e) => Err(append_error(table, e)),
                }
            })
            .buffered(if self.connection_per_append {
                // Separate connections would deliver offsets out of order.
                1
            } else {
                self.in_flight
            })
            .try_collect::<Vec<()>>()
            .await;
        if let Err(e) = written {
            state.broken = true;
            return Err(e);
        }
        state.next_offset = first + total as i64;
        Ok(total as u64)
    }
}

#[async_trait]
impl Destination for StreamingV2 {
    async fn check_connection(&self) -> Result<(), DestinationError> {
        self.target.check_connection().await
    }

    async fn write(&self, batch: &Batch) -> Result<u64, DestinationError> {
        if batch.records.num_rows() == 0 {
            return Ok(0);
        }
        // Before the stream opens: bqemulator answers a query with no rows
        // while an AppendRows stream is open (1,200 rows twice in a chaos
        // run asked after).
        let table_of = |id: Arc<str>| async move { self.target.resolve(&id).await.map(|(table, _)| table) };
        self.replays.load(&self.target.tables, table_of).await?;
        let staged = self.stage(&batch.destination_id).await?;
        let kept = self.replays.filter(batch)?;
        let sent = match Replays::to_send(&kept, batch) {
            Some(rows) => self.append(&staged.rows_to, rows).await.map(drop),
            None => Ok(()),
        };
        self.replays.settle(batch, &staged.main, kept, sent)
    }

    fn position(&self, destination_id: &str) -> Option<String> {
        self.replays.position(destination_id)
    }

    async fn resume(&self, positions: &crate::source::Positions) -> Result<(), DestinationError> {
        self.resumed.store(true, std::sync::atomic::Ordering::Relaxed);
        self.replays.resume(positions).await;
        Ok(())
    }

    fn replayed(&self) -> u64 {
        self.replays.replayed()
    }

    async fn finalize(&self) -> Result<(), DestinationError> {
        // The run's writers go: their AppendRows connections close before the
        // staged rows are published (bqemulator can stall a query behind an
        // open one), and a later write would open new ones.
        let cells: Vec<(TableRef, Arc<OnceCell<TableWriter>>)> =
            std::mem::take(&mut *self.writers.lock().expect("poisoned"))
                .into_iter()
                .collect();
        for (table, cell) in &cells {
            if let Some(TableWriter::Committed(c)) = cell.get() {
                c.lock()
                    .await
                    .writer
                    .finalize()
                    .await
                    .map_err(|e| classify(&format!("finalizing the stream on {table}"), &e))?;
            }
        }
        drop(cells);
        if self.sync_mode == SyncMode::Stream {
            return Ok(());
        }
        let staged: Vec<Staged> = self
            .staging
            .lock()
            .expect("poisoned")
            .values()
            .filter_map(|c| c.get().cloned())
            .collect();
        for (n, staged) in staged.iter().enumerate() {
            self.publish(staged, n).await?;
        }
        Ok(())
    }
}
