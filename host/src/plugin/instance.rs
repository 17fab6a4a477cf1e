//! One live plugin instance: its own Store (memory, limits, WASI context)
//! instantiated from the plugin's pre-linked component. Any trap poisons a
//! Store, so an instance that trapped refuses further calls and its owner
//! builds a new one.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::{Store, Trap};
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxView, WasiView};

use super::bindings::bizon::destination::types::LogLevel;
use super::bindings::bizon::destination::types::{BatchInfo, PluginInfo, RejectedRow, WriteError};
use super::bindings::{bizon, Plugin as Bindings};
use super::egress::Egress;
use super::limits::MemoryLimiter;
use super::log::{truncate, PluginLog, MAX_LINE_BYTES};
use super::stdio::Captured;
use super::{capabilities, engine, PluginError, Shared, TrapCause};

/// Longest error text kept from a plugin; a plugin could return megabytes.
pub const MAX_ERROR_BYTES: usize = 64 * 1024;

/// The data of one instance's Store.
pub struct State {
    wasi: WasiCtx,
    pub(super) table: ResourceTable,
    limiter: MemoryLimiter,
    log: Arc<PluginLog>,
    pub(super) egress: Egress,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bizon::destination::host::Host for State {
    fn log(&mut self, level: LogLevel, message: String) {
        self.log.log(level, &message);
    }
}

impl bizon::destination::types::Host for State {}

pub struct Instance {
    store: Store<State>,
    bindings: Bindings,
    captured: Captured,
    shared: Arc<Shared>,
    info: PluginInfo,
    /// Set by a trap: the Store is unusable from then on.
    poisoned: bool,
}

impl Instance {
    /// Instantiates, asks `describe`, and calls `open` with the plugin's config.
    pub(super) fn new(shared: &Arc<Shared>) -> Result<Self, PluginError> {
        let mut instance = Self::described(shared)?;
        let config = shared.config_json.clone();
        instance
            .call("open", |b, s| b.bizon_destination_destination().call_open(s, &config))?
            .map_err(|message| PluginError::Open {
                plugin: shared.label.clone(),
                message: cap_error(message),
            })?;
        Ok(instance)
    }

    /// Instantiates and asks `describe`, without opening.
    pub(super) fn described(shared: &Arc<Shared>) -> Result<Self, PluginError> {
        let captured = Captured::default();
        let grant_error = |message| PluginError::Grant {
            plugin: shared.label.clone(),
            message,
        };
        let egress = Egress::new(&shared.label, &shared.grants).map_err(grant_error)?;
        let wasi = capabilities::wasi_ctx(&shared.grants, &captured, &egress).map_err(grant_error)?;
        let state = State {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(&shared.limits),
            log: shared.log.clone(),
            egress,
        };
        let mut store = Store::new(&shared.engine, state);
        store.limiter(|s| &mut s.limiter);
        // With epoch interruption on, a Store starts with a deadline of 0:
        // instantiation (which may run start functions) needs one too.
        store.set_epoch_deadline(shared.limits.deadline_ticks(engine::TICK));
        let bindings = match shared.pre.instantiate(&mut store) {
            Ok(b) => b,
            Err(e) => {
                let hit = store.data_mut().limiter.take_hit();
                let (output, _) = captured.take();
                let cause = classify(e, hit, shared, &output);
                return Err(PluginError::Trap {
                    plugin: shared.label.clone(),
                    function: "instantiate",
                    cause,
                });
            }
        };
        let placeholder = PluginInfo {
            name: String::new(),
            version: String::new(),
            input_format: super::InputFormat::ArrowIpc,
        };
        let mut instance = Instance {
            store,
            bindings,
            captured,
            shared: shared.clone(),
            info: placeholder,
            poisoned: false,
        };
        instance.info = instance.call("describe", |b, s| b.bizon_destination_destination().call_describe(s))?;
        instance.info.name = truncate(&instance.info.name, MAX_LINE_BYTES).into_owned();
        instance.info.version = truncate(&instance.info.version, MAX_LINE_BYTES).into_owned();
        Ok(instance)
    }

    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// Whether a trap ended this instance; it must be replaced.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    pub fn check_connection(&mut self) -> Result<Result<(), String>, PluginError> {
        let result = self.call("check-connection", |b, s| {
            b.bizon_destination_destination().call_check_connection(s)
        })?;
        Ok(result.map_err(cap_error))
    }

    pub fn write(&mut self, info: &BatchInfo, batch: &[u8]) -> Result<Result<u64, WriteError>, PluginError> {
        let result = self.call("write-records", |b, s| {
            b.bizon_destination_destination().call_write_records(s, info, batch)
        })?;
        Ok(result.map_err(|e| match e {
            WriteError::Retryable(m) => WriteError::Retryable(cap_error(m)),
            WriteError::Fatal(m) => WriteError::Fatal(cap_error(m)),
            WriteError::Rejected(rows) => WriteError::Rejected(
                rows.into_iter()
                    .map(|r| RejectedRow {
                        row: r.row,
                        reason: truncate(&r.reason, MAX_LINE_BYTES).into_owned(),
                    })
                    .collect(),
            ),
        }))
    }

    pub fn finalize(&mut self) -> Result<Result<(), String>, PluginError> {
        let result = self.call("finalize", |b, s| b.bizon_destination_destination().call_finalize(s));
        self.shared.log.flush_dropped();
        Ok(result?.map_err(cap_error))
    }

    /// Runs one export under the call timeout, forwards what the guest
    /// printed to the log, and turns a trap into an error that says why.
    fn call<R>(
        &mut self,
        function: &'static str,
        f: impl FnOnce(&Bindings, &mut Store<State>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        if self.poisoned {
            return Err(PluginError::Poisoned {
                plugin: self.shared.label.clone(),
                function,
            });
        }
        self.store
            .set_epoch_deadline(self.shared.limits.deadline_ticks(engine::TICK));
        let result = f(&self.bindings, &mut self.store);
        let hit = self.store.data_mut().limiter.take_hit();
        let (output, discarded) = self.captured.take();
        match result {
            Ok(r) => {
                self.forward_output(&output, discarded);
                Ok(r)
            }
            Err(e) => {
                self.poisoned = true;
                let cause = classify(e, hit, &self.shared, &output);
                Err(PluginError::Trap {
                    plugin: self.shared.label.clone(),
                    function,
                    cause,
                })
            }
        }
    }

    fn forward_output(&self, output: &str, discarded: usize) {
        if discarded > 0 {
            self.shared.log.log(
                LogLevel::Warn,
                &format!("[stdout/stderr] {discarded} byte(s) of output dropped"),
            );
        }
        for line in output.lines().filter(|l| !l.trim().is_empty()) {
            self.shared.log.log(LogLevel::Info, &format!("[stdout/stderr] {line}"));
        }
    }
}

fn cap_error(message: String) -> String {
    match truncate(&message, MAX_ERROR_BYTES) {
        std::borrow::Cow::Borrowed(_) => message,
        std::borrow::Cow::Owned(cut) => cut,
    }
}

/// Why a call failed. OOM and panics both surface as an `unreachable` trap:
/// the limiter's flag and the guest's stderr tell them apart.
fn classify(error: wasmtime::Error, memory_hit: bool, shared: &Shared, output: &str) -> TrapCause {
    if memory_hit {
        return TrapCause::Memory {
            limit_mb: shared.limits.memory_mb,
        };
    }
    if let Some(exit) = error.downcast_ref::<I32Exit>() {
        return TrapCause::Exit { code: exit.0 };
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => TrapCause::Timeout {
            limit_ms: shared.limits.call_timeout_ms,
        },
        Some(Trap::StackOverflow) => TrapCause::StackOverflow,
        Some(Trap::MemoryOutOfBounds) if shadow_stack_wrapped(&error) => TrapCause::StackOverflow,
        _ => match panic_message(output) {
            Some(message) => TrapCause::Panic { message },
            None => {
                let mut message = format!("{error:#}");
                if !output.trim().is_empty() {
                    message.push_str("; last output: ");
                    message.push_str(output.trim());
                }
                TrapCause::Other {
                    message: truncate(&message, MAX_LINE_BYTES).into_owned(),
                }
            }
        },
    }
}

/// Rust and C guests keep their stack in linear memory, growing down from a
/// fixed address, so deep recursion does not hit wasmtime's stack limit: the
/// stack pointer wraps below zero and the next access faults far past the end
/// of a 32-bit memory. wasmtime only says where in the error's text.
fn shadow_stack_wrapped(error: &wasmtime::Error) -> bool {
    const WRAPPED: u64 = (1 << 32) - (1 << 20);
    let text = format!("{error:#}");
    text.split("memory fault at wasm address 0x")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_hexdigit()).next())
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .is_some_and(|address| address >= WRAPPED)
}

/// The text of a Rust panic in the guest's output: from "panicked at" to the
/// "note: run with RUST_BACKTRACE" hint.
fn panic_message(output: &str) -> Option<String> {
    let start = output.rfind("panicked at")?;
    let text = &output[start..];
    let text = text.split("\nnote: ").next().unwrap_or(text).trim();
    Some(truncate(text, MAX_LINE_BYTES).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_text_is_cut_out_of_stderr() {
        let stderr = "hello\nthread '<unnamed>' panicked at src/lib.rs:3:5:\nboom\nnote: run with `RUST_BACKTRACE=1`\n";
        assert_eq!(panic_message(stderr).unwrap(), "panicked at src/lib.rs:3:5:\nboom");
        assert_eq!(panic_message("nothing"), None);
    }
}
