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
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::Mutex as AsyncMutex;

use super::{Batch, Destination, DestinationError, RejectedRow, SharedDestination};
use crate::plugin::{
    cache, ipc, BatchInfo, Grants, Instance, Limits, Plugin, PluginError, PluginSettings, TrapCause, WriteError,
};

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
    pub fn settings(&self) -> Result<PluginSettings, DestinationError> {
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
        Ok(PluginSettings {
            limits: self.limits,
            grants: self.allow.clone(),
            config_json,
            cache_dir: cache::default_dir(),
        })
    }
}

pub async fn build(config: &WasmConfig) -> Result<SharedDestination, DestinationError> {
    Ok(Arc::new(WasmDestination::new(config).await?))
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
    /// Loads the plugin and opens a first instance, so a broken plugin or a
    /// config it refuses stops the pipeline before any record is read.
    pub async fn new(config: &WasmConfig) -> Result<Self, DestinationError> {
        let settings = config.settings()?;
        let path = config.plugin.clone();
        let (plugin, first) = blocking(move || {
            let plugin = Plugin::load(&path, settings)?;
            let first = plugin.instantiate()?;
            Ok::<_, PluginError>((plugin, first))
        })
        .await?;
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
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        let next = routes.len() % self.slots.len();
        let index = *routes.entry(destination_id.clone()).or_insert(next);
        self.slots[index].clone()
    }

    /// Runs `f` on the slot's instance on the blocking pool, building the
    /// instance first if there is none or the last one trapped.
    async fn with_instance<R: Send + 'static>(
        &self,
        slot: &Arc<AsyncMutex<Slot>>,
        f: impl FnOnce(&mut Instance, &mut Vec<u8>) -> Result<R, DestinationError> + Send + 'static,
    ) -> Result<R, DestinationError> {
        let mut slot = slot.clone().lock_owned().await;
        let plugin = self.plugin.clone();
        blocking(move || {
            let slot = &mut *slot;
            let instance = match &mut slot.instance {
                Some(instance) if !instance.is_poisoned() => instance,
                stale => {
                    // Drop the trapped Store first: its memory returns to
                    // the pool before the new one is taken.
                    *stale = None;
                    stale.insert(plugin.instantiate().map_err(fatal)?)
                }
            };
            let result = f(instance, &mut slot.buffer);
            if instance.is_poisoned() {
                slot.instance = None;
            }
            result
        })
        .await
    }
}

/// Runs blocking plugin work (compiling, wasm calls) off the async workers.
async fn blocking<R: Send + 'static, E: Into<DestinationError> + Send + 'static>(
    f: impl FnOnce() -> Result<R, E> + Send + 'static,
) -> Result<R, DestinationError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(Into::into),
        Err(e) => Err(DestinationError::Fatal(format!(
            "a plugin call crashed the host task: {e}"
        ))),
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
        let label = self.plugin.label().to_string();
        self.with_instance(&self.slots[0], move |instance, _| {
            instance
                .check_connection()?
                .map_err(|m| DestinationError::Fatal(format!("plugin {label}: check-connection: {m}")))
        })
        .await
    }

    async fn write(&self, batch: &Batch) -> Result<u64, DestinationError> {
        let slot = self.slot_for(&batch.destination_id);
        let label = self.plugin.label().to_string();
        let records = batch.records.clone();
        let num_rows = records.num_rows() as u64;
        let info = BatchInfo {
            destination_id: batch.destination_id.to_string(),
            sequence: batch.sequence,
            num_rows,
        };
        self.with_instance(&slot, move |instance, buffer| {
            ipc::encode(instance.info().input_format, &records, buffer)
                .map_err(|e| DestinationError::Fatal(format!("plugin {label}: cannot encode the batch: {e}")))?;
            match instance.write(&info, buffer)? {
                Ok(n) if n == num_rows => Ok(n),
                Ok(n) => Err(DestinationError::Fatal(format!(
                    "plugin {label} reported {n} row(s) written for a batch of {num_rows} (destination_id {}, sequence {})",
                    info.destination_id, info.sequence
                ))),
                Err(WriteError::Retryable(m)) => Err(DestinationError::Retryable(format!("plugin {label}: {m}"))),
                Err(WriteError::Fatal(m)) => Err(DestinationError::Fatal(format!("plugin {label}: {m}"))),
                Err(WriteError::Rejected(rows)) => {
                    if let Some(bad) = rows.iter().find(|r| r.row >= num_rows) {
                        return Err(DestinationError::Fatal(format!(
                            "plugin {label} rejected row {} of a batch of {num_rows} rows",
                            bad.row
                        )));
                    }
                    Err(DestinationError::Rejected(
                        rows.into_iter().map(|r| RejectedRow { row: r.row, reason: r.reason }).collect(),
                    ))
                }
            }
        })
        .await
    }

    async fn finalize(&self) -> Result<(), DestinationError> {
        let mut first_error = None;
        for slot in &self.slots {
            if slot.lock().await.instance.is_none() {
                continue;
            }
            let label = self.plugin.label().to_string();
            let result = self
                .with_instance(slot, move |instance, _| {
                    instance
                        .finalize()?
                        .map_err(|m| DestinationError::Fatal(format!("plugin {label}: finalize: {m}")))
                })
                .await;
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
