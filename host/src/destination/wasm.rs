//! The `wasm` destination: batches go to a sandboxed WebAssembly plugin (see
//! [`crate::plugin`]).
//!
//! Each destination_id is bound to one instance for the whole run, so a
//! plugin that keeps per-destination state (an open file, a header already
//! written) sees all of a destination_id's batches. There are at most
//! `max_concurrent_threads` instances, created when first needed, each with
//! its own Store and its own `open`.
//!
//! A trap ends only its instance; the next call on that slot builds a new
//! one (calling `open` again). A call that hit its timeout comes back
//! retryable, since a busy machine can be the cause; a panic, an exhausted
//! memory limit, a stack overflow or an exit come back fatal, since running
//! the same batch through the same code again would end the same way.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::Mutex as AsyncMutex;

use super::{Batch, Destination, DestinationError, RejectedRow, SharedDestination};
use crate::plugin::{
    ipc, BatchInfo, BatchOrigin, Grants, HostPolicy, Instance, Limits, OffsetRange, Plugin, PluginError, Request,
    TrapCause, WriteError,
};
use crate::source::Span;

crate::destination_config! {
    /// `destination: {name: wasm, config: {plugin: PATH, ...}}`
    pub struct WasmConfig {
        /// The component file; relative to the working directory.
        pub plugin: PathBuf,
        /// Handed to the plugin's `open` as a JSON object.
        #[serde(default)]
        pub plugin_config: Option<serde_json::Value>,
        #[serde(default)]
        pub limits: Limits,
        #[serde(default)]
        pub allow: Grants,
    }
}

impl WasmConfig {
    /// What this pipeline asks of its plugin: limits, grants and its config.
    pub fn request(&self) -> Result<Request, DestinationError> {
        let config_json = match &self.plugin_config {
            None | Some(serde_json::Value::Null) => "{}".to_string(),
            Some(value @ serde_json::Value::Object(_)) => value.to_string(),
            Some(_) => {
                return Err(DestinationError::Fatal(format!(
                    "plugin {}: plugin_config must be a mapping",
                    self.plugin.display()
                )))
            }
        };
        Ok(Request {
            limits: self.limits,
            grants: self.allow.clone(),
            config_json,
        })
    }
}

/// The destination under `policy`: what the host decides for the plugin.
pub async fn build(config: &WasmConfig, policy: &HostPolicy) -> Result<SharedDestination, DestinationError> {
    Ok(Arc::new(WasmDestination::new(config, policy.clone()).await?))
}

/// An instance slot and the buffer its batches are encoded into.
#[derive(Default)]
struct Slot {
    instance: Option<Instance>,
    buffer: Vec<u8>,
}

pub struct WasmDestination {
    plugin: Arc<Plugin>,
    slots: Vec<Arc<AsyncMutex<Slot>>>,
    /// destination_id -> slot, fixed on first sight.
    routes: Mutex<HashMap<Arc<str>, usize>>,
}

impl WasmDestination {
    /// Loads the plugin under `policy` (`serve`'s: the tenant's memory
    /// budget, CPU share and the server's compile cache) and opens a first
    /// instance, so a broken plugin or a config it refuses stops the
    /// pipeline before any record is read.
    pub async fn new(config: &WasmConfig, policy: HostPolicy) -> Result<Self, DestinationError> {
        let path = config.plugin.clone();
        let request = config.request()?;
        // Compiling is CPU work of up to seconds: off the async workers.
        let plugin = match tokio::task::spawn_blocking(move || Plugin::load(&path, &request, &policy)).await {
            Ok(loaded) => loaded?,
            Err(e) => return Err(DestinationError::Fatal(format!("loading the plugin crashed: {e}"))),
        };
        let first = plugin.instantiate().await?;
        let slots: Vec<_> = (0..config.options.max_concurrent_threads.max(1))
            .map(|_| Arc::new(AsyncMutex::new(Slot::default())))
            .collect();
        slots[0].try_lock().expect("a new slot is not locked").instance = Some(first);
        Ok(Self {
            plugin: Arc::new(plugin),
            slots,
            routes: Mutex::new(HashMap::new()),
        })
    }

    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    fn slot_for(&self, destination_id: &Arc<str>) -> Arc<AsyncMutex<Slot>> {
        let mut routes = self.routes.lock();
        let next = routes.len() % self.slots.len();
        let index = *routes.entry(destination_id.clone()).or_insert(next);
        self.slots[index].clone()
    }

    /// The slot's instance, built first if there is none or the last one
    /// trapped.
    async fn ready<'a>(&self, held: &'a mut Option<Instance>) -> Result<&'a mut Instance, DestinationError> {
        if held.as_ref().is_some_and(Instance::is_poisoned) {
            // Drop the trapped Store first: its memory returns to the pool
            // and its reservation to the budget before the new one is taken.
            *held = None;
        }
        if held.is_none() {
            *held = Some(self.plugin.instantiate().await.map_err(fatal)?);
        }
        Ok(held.as_mut().expect("just built"))
    }
}

/// A trapped instance is dropped at once, so it holds no memory while the
/// pipeline waits to retry.
fn drop_if_poisoned(held: &mut Option<Instance>) {
    if held.as_ref().is_some_and(Instance::is_poisoned) {
        *held = None;
    }
}

impl From<PluginError> for DestinationError {
    fn from(e: PluginError) -> Self {
        match &e {
            PluginError::Trap {
                cause: TrapCause::Timeout { .. },
                ..
            } => DestinationError::Retryable(e.to_string()),
            _ => DestinationError::Fatal(e.to_string()),
        }
    }
}

fn fatal(e: PluginError) -> DestinationError {
    DestinationError::Fatal(e.to_string())
}

#[async_trait]
impl Destination for WasmDestination {
    async fn check_connection(&self) -> Result<(), DestinationError> {
        let label = self.plugin.label();
        let mut slot = self.slots[0].lock().await;
        let result = async {
            let instance = self.ready(&mut slot.instance).await?;
            Ok::<_, DestinationError>(instance.check_connection().await?)
        }
        .await;
        drop_if_poisoned(&mut slot.instance);
        result?.map_err(|m| DestinationError::Fatal(format!("plugin {label}: check-connection: {m}")))
    }

    async fn write(&self, batch: &Batch) -> Result<u64, DestinationError> {
        let label = self.plugin.label();
        let num_rows = batch.records.num_rows() as u64;
        let info = BatchInfo {
            destination_id: batch.destination_id.to_string(),
            sequence: batch.sequence,
            num_rows,
        };
        let source = batch_source(&batch.destination_id, &batch.source);
        let slot = self.slot_for(&batch.destination_id);
        let mut slot = slot.lock().await;
        let Slot { instance: held, buffer } = &mut *slot;
        let result = async {
            let instance = self.ready(held).await?;
            ipc::encode(instance.info().input_format, &batch.records, buffer)
                .map_err(|e| DestinationError::Fatal(format!("plugin {label}: cannot encode the batch: {e}")))?;
            Ok::<_, DestinationError>(instance.write(&info, source, buffer).await?)
        }
        .await;
        drop_if_poisoned(held);
        let written = match result? {
            Ok(n) => n,
            Err(WriteError::Retryable(m)) => return Err(DestinationError::Retryable(format!("plugin {label}: {m}"))),
            Err(WriteError::Fatal(m)) => return Err(DestinationError::Fatal(format!("plugin {label}: {m}"))),
            Err(WriteError::Rejected(rows)) => return Err(rejected(label, &info, rows)),
        };
        if written != num_rows {
            return Err(DestinationError::Fatal(format!(
                "plugin {label} reported {written} row(s) written for a batch of {num_rows} (destination_id {}, sequence {})",
                info.destination_id, info.sequence
            )));
        }
        Ok(written)
    }

    async fn finalize(&self) -> Result<(), DestinationError> {
        let mut first_error = None;
        let label = self.plugin.label();
        for slot in &self.slots {
            let mut slot = slot.lock().await;
            if slot.instance.is_none() {
                continue;
            }
            let result = async {
                let instance = self.ready(&mut slot.instance).await?;
                Ok::<_, DestinationError>(instance.finalize().await?)
            }
            .await;
            drop_if_poisoned(&mut slot.instance);
            let result =
                result.and_then(|r| r.map_err(|m| DestinationError::Fatal(format!("plugin {label}: finalize: {m}"))));
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// What `host.batch-source` tells the plugin of a batch: its ranges, and
/// an id that depends on them and the destination_id only, so a retry, or
/// a replay cut at the same offsets, has the same id (an idempotency key).
fn batch_source(destination_id: &str, spans: &[Span]) -> Option<BatchOrigin> {
    use sha2::{Digest, Sha256};
    if spans.is_empty() {
        return None;
    }
    let mut hash = Sha256::new();
    hash.update(destination_id.as_bytes());
    for span in spans {
        // NUL cannot occur in a destination_id or a topic name: no two
        // different range lists hash the same text.
        hash.update(format!(
            "\0{}\0{}\0{}\0{}",
            span.topic, span.partition, span.first, span.last
        ));
    }
    let digest = hash.finalize();
    let batch_id = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    Some(BatchOrigin {
        batch_id,
        ranges: spans
            .iter()
            .map(|s| OffsetRange {
                topic: s.topic.to_string(),
                partition: s.partition,
                first: s.first,
                last: s.last,
            })
            .collect(),
    })
}

/// A plugin's rejected rows, checked: at least one, each inside the batch.
/// (The pipeline counts a row named twice once.)
fn rejected(label: &str, info: &BatchInfo, rows: Vec<crate::plugin::RejectedRow>) -> DestinationError {
    if rows.is_empty() {
        return DestinationError::Fatal(format!(
            "plugin {label} answered `rejected` with no rows for destination_id {} sequence {} \
             (a protocol error: reject at least one row, or return the count written)",
            info.destination_id, info.sequence
        ));
    }
    if let Some(bad) = rows.iter().find(|r| r.row >= info.num_rows) {
        return DestinationError::Fatal(format!(
            "plugin {label} rejected row {} of a batch of {} rows",
            bad.row, info.num_rows
        ));
    }
    DestinationError::Rejected(
        rows.into_iter()
            .map(|r| RejectedRow {
                row: r.row,
                reason: r.reason,
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(topic: &str, partition: i32, first: i64, last: i64) -> Span {
        Span {
            destination_id: "events".into(),
            topic: topic.into(),
            partition,
            first,
            last,
        }
    }

    #[test]
    fn the_batch_id_depends_on_the_ranges_and_the_destination_id_only() {
        assert!(batch_source("events", &[]).is_none());
        let a = batch_source("events", &[span("t", 0, 0, 49), span("t", 1, 10, 19)]).unwrap();
        assert_eq!(a.batch_id.len(), 32);
        assert_eq!(a.ranges.len(), 2);
        assert_eq!(
            (a.ranges[1].partition, a.ranges[1].first, a.ranges[1].last),
            (1, 10, 19)
        );
        let again = batch_source("events", &[span("t", 0, 0, 49), span("t", 1, 10, 19)]).unwrap();
        assert_eq!(a.batch_id, again.batch_id);
        // Another cut, partition or destination_id: another id.
        for other in [
            batch_source("events", &[span("t", 0, 0, 48), span("t", 1, 10, 19)]),
            batch_source("events", &[span("t", 0, 0, 49), span("t", 2, 10, 19)]),
            batch_source("other", &[span("t", 0, 0, 49), span("t", 1, 10, 19)]),
        ] {
            assert_ne!(other.unwrap().batch_id, a.batch_id);
        }
    }
}
