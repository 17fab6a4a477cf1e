//! One live plugin instance: its own Store (memory, limits, WASI context)
//! instantiated from the plugin's pre-linked component, and its share of the
//! host's plugin memory budget. Any trap poisons a Store, so an instance
//! that trapped refuses further calls and its owner builds a new one.
//!
//! Every call into the plugin (instantiation with its start functions,
//! describe, open, check-connection, write-records, finalize) is bounded in
//! wall time twice over: guest code is interrupted at the epoch tick after
//! its deadline, and the whole call, host calls included (a WASI sleep, a
//! slow file), is a future dropped by a timer a short grace later. A dropped
//! call leaves the Store unusable, so the instance is poisoned either way.
//! While it runs, a call yields to the async runtime at every tick, so a
//! spinning plugin cannot hold a thread that other work needs.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::{Engine, Store, Trap, UpdateDeadline};
use wasmtime_wasi::I32Exit;

use super::bindings::bizon::destination::types::{
    BatchInfo, BatchOrigin, InputFormat, LogLevel, PluginInfo, RejectedRow, WriteError,
};
use super::bindings::Plugin as Bindings;
use super::error::{PluginError, TrapCause};
use super::files::Quotas;
use super::grants::Grants;
use super::limits::Limits;
use super::linked::Linked;
use super::log::{PluginLog, MAX_LINE_BYTES};
use super::state::State;
use super::stdio::Captured;
use super::text::sanitize;
use crate::config::secret::Secrets;
use crate::quota::budget::{MemoryBudget, Reservation};
use crate::quota::cpu::{CpuShare, Metered, Work};

/// Longest error text kept from a plugin; a plugin could return megabytes.
pub const MAX_ERROR_BYTES: usize = 64 * 1024;

/// How long after its deadline a call blocked in a host call is dropped.
/// Guest code is stopped at the first epoch tick past the deadline; this
/// covers the rest.
pub const GRACE: Duration = Duration::from_millis(100);

/// What every instance of a plugin shares: its code, linked, what its
/// pipeline asked for, and what the host decided.
pub(crate) struct Shared {
    pub(super) label: String,
    pub(super) engine: Engine,
    pub(super) linked: Arc<Linked>,
    pub(super) limits: Limits,
    pub(super) grants: Grants,
    pub(super) config_json: String,
    pub(super) log: Arc<PluginLog>,
    pub(super) quotas: Arc<Quotas>,
    pub(super) budget: Arc<MemoryBudget>,
    pub(super) cpu: Option<Arc<CpuShare>>,
    /// The tenant secrets its `allow.secrets` may name.
    pub(super) secrets: Secrets,
}

impl Shared {
    /// The component's `open` argument.
    pub(crate) fn config_json(&self) -> &str {
        &self.config_json
    }
}

/// One Store with its limits, instantiated from a pre-linked component of
/// either world (a destination plugin or a transform), and the state every
/// call needs: the captured output, the trap flag, the budget reservation.
pub(crate) struct Sandbox {
    pub(crate) store: Store<State>,
    captured: Captured,
    pub(crate) shared: Arc<Shared>,
    /// Set by a trap or a dropped call: the Store is unusable from then on.
    poisoned: bool,
    /// This instance's room in the host's plugin memory budget.
    _reservation: Reservation,
}

impl Sandbox {
    /// A new Store under the plugin's limits and grants, instantiated.
    pub(crate) async fn instantiate(
        shared: &Arc<Shared>,
    ) -> Result<(Sandbox, wasmtime::component::Instance), PluginError> {
        let reservation = shared
            .budget
            .reserve(shared.limits.memory_bytes() as u64, shared.limits.call_timeout())
            .await
            .map_err(|e| PluginError::Budget {
                plugin: shared.label.clone(),
                message: e.to_string(),
            })?;
        let captured = Captured::default();
        let state = State::new(
            &shared.label,
            &shared.grants,
            &shared.secrets,
            &shared.limits,
            &captured,
            shared.log.clone(),
            shared.quotas.clone(),
        )
        .map_err(|message| PluginError::Grant {
            plugin: shared.label.clone(),
            message,
        })?;
        let mut store = Store::new(&shared.engine, state);
        store.limiter(|s| s.limiter());
        store.epoch_deadline_callback(|ctx| {
            if ctx.data().past_deadline() {
                return Ok(UpdateDeadline::Interrupt);
            }
            // Let the runtime run other tasks (and this call's timer) once
            // per tick, and the CPU share charge the call (bounded). A
            // plain `Yield` is polled again at once under tokio.
            Ok(UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now())))
        });
        store.set_epoch_deadline(1);
        let instantiated = bounded(&Bounds::of(shared), shared.linked.pre.instantiate_async(&mut store)).await;
        match instantiated {
            Ok(Ok(instance)) => Ok((
                Sandbox {
                    store,
                    captured,
                    shared: shared.clone(),
                    poisoned: false,
                    _reservation: reservation,
                },
                instance,
            )),
            other => {
                let hit = store.data_mut().limiter().take_hit();
                let (output, _) = captured.take();
                let error = match other {
                    Ok(Err(e)) => Some(e),
                    _ => None,
                };
                Err(PluginError::Trap {
                    plugin: shared.label.clone(),
                    function: "instantiate",
                    cause: classify(error, hit, shared, &output),
                })
            }
        }
    }

    /// Whether a trap ended this instance; it must be replaced.
    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    pub(crate) fn bounds(&self) -> Bounds {
        Bounds::of(&self.shared)
    }

    /// A bindings error (a missing export) as the plugin's own error.
    pub(crate) fn link_error(&self, error: wasmtime::Error) -> PluginError {
        PluginError::Link {
            plugin: self.shared.label.clone(),
            message: format!("{error:#}"),
        }
    }

    /// Arms the deadline of a call, or refuses a poisoned instance.
    pub(crate) fn begin(&mut self, function: &'static str) -> Result<(), PluginError> {
        if self.poisoned {
            return Err(PluginError::Poisoned {
                plugin: self.shared.label.clone(),
                function,
            });
        }
        self.store.data_mut().arm(&self.shared.limits);
        Ok(())
    }

    /// Forwards what the guest printed to the log and turns a trap or a
    /// dropped call into an error that says why.
    pub(crate) fn end<R>(&mut self, function: &'static str, result: Bounded<R>) -> Result<R, PluginError> {
        let hit = self.store.data_mut().limiter().take_hit();
        let (output, discarded) = self.captured.take();
        let error = match result {
            Ok(Ok(r)) => {
                self.forward_output(&output, discarded);
                return Ok(r);
            }
            Ok(Err(e)) => Some(e),
            Err(_elapsed) => None,
        };
        self.poisoned = true;
        Err(PluginError::Trap {
            plugin: self.shared.label.clone(),
            function,
            cause: classify(error, hit, &self.shared, &output),
        })
    }

    pub(crate) fn flush_log(&self) {
        self.shared.log.flush_dropped();
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

/// A destination plugin's instance: a [`Sandbox`] with the destination
/// world's bindings.
pub struct Instance {
    sandbox: Sandbox,
    bindings: Bindings,
    info: PluginInfo,
}

impl Instance {
    /// Instantiates, asks `describe`, and calls `open` with the plugin's config.
    pub(super) async fn new(shared: &Arc<Shared>) -> Result<Self, PluginError> {
        let mut instance = Self::described(shared).await?;
        let config = shared.config_json.clone();
        instance.sandbox.begin("open")?;
        let call = instance
            .bindings
            .bizon_destination_destination()
            .call_open(&mut instance.sandbox.store, &config);
        let result = bounded(&Bounds::of(shared), call).await;
        instance
            .sandbox
            .end("open", result)?
            .map_err(|message| PluginError::Open {
                plugin: shared.label.clone(),
                message: sanitize(&message, MAX_ERROR_BYTES),
            })?;
        Ok(instance)
    }

    /// Instantiates and asks `describe`, without opening.
    pub(super) async fn described(shared: &Arc<Shared>) -> Result<Self, PluginError> {
        let (mut sandbox, instance) = Sandbox::instantiate(shared).await?;
        let bindings = Bindings::new(&mut sandbox.store, &instance).map_err(|e| sandbox.link_error(e))?;
        let placeholder = PluginInfo {
            name: String::new(),
            version: String::new(),
            input_format: InputFormat::ArrowIpc,
        };
        let mut instance = Instance {
            sandbox,
            bindings,
            info: placeholder,
        };
        instance.sandbox.begin("describe")?;
        let call = instance
            .bindings
            .bizon_destination_destination()
            .call_describe(&mut instance.sandbox.store);
        let result = bounded(&Bounds::of(shared), call).await;
        let mut info = instance.sandbox.end("describe", result)?;
        info.name = sanitize(&info.name, MAX_LINE_BYTES);
        info.version = sanitize(&info.version, MAX_LINE_BYTES);
        instance.info = info;
        Ok(instance)
    }

    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// Whether a trap ended this instance; it must be replaced.
    pub fn is_poisoned(&self) -> bool {
        self.sandbox.is_poisoned()
    }

    pub async fn check_connection(&mut self) -> Result<Result<(), String>, PluginError> {
        self.sandbox.begin("check-connection")?;
        let bounds = self.sandbox.bounds();
        let call = self
            .bindings
            .bizon_destination_destination()
            .call_check_connection(&mut self.sandbox.store);
        let result = bounded(&bounds, call).await;
        Ok(self.sandbox.end("check-connection", result)?.map_err(cap_error))
    }

    /// Writes one batch; `source` is what `host.batch-source` answers
    /// during the call.
    pub async fn write(
        &mut self,
        info: &BatchInfo,
        source: Option<BatchOrigin>,
        batch: &[u8],
    ) -> Result<Result<u64, WriteError>, PluginError> {
        self.sandbox.begin("write-records")?;
        self.sandbox.store.data_mut().set_batch_source(source);
        let bounds = self.sandbox.bounds();
        let call =
            self.bindings
                .bizon_destination_destination()
                .call_write_records(&mut self.sandbox.store, info, batch);
        let result = bounded(&bounds, call).await;
        self.sandbox.store.data_mut().set_batch_source(None);
        Ok(self.sandbox.end("write-records", result)?.map_err(|e| match e {
            WriteError::Retryable(m) => WriteError::Retryable(cap_error(m)),
            WriteError::Fatal(m) => WriteError::Fatal(cap_error(m)),
            WriteError::Rejected(rows) => WriteError::Rejected(
                rows.into_iter()
                    .map(|r| RejectedRow {
                        row: r.row,
                        reason: sanitize(&r.reason, MAX_LINE_BYTES),
                    })
                    .collect(),
            ),
        }))
    }

    pub async fn finalize(&mut self) -> Result<Result<(), String>, PluginError> {
        self.sandbox.begin("finalize")?;
        let bounds = self.sandbox.bounds();
        let call = self
            .bindings
            .bizon_destination_destination()
            .call_finalize(&mut self.sandbox.store);
        let result = bounded(&bounds, call).await;
        let result = self.sandbox.end("finalize", result);
        self.sandbox.flush_log();
        Ok(result?.map_err(cap_error))
    }
}

/// A call's outcome: `Err` when the timer dropped it.
pub(crate) type Bounded<R> = Result<wasmtime::Result<R>, tokio::time::error::Elapsed>;

/// What bounds a call: its time limit, and the CPU share it is charged to.
pub(crate) struct Bounds {
    timeout: Duration,
    cpu: Option<Arc<CpuShare>>,
}

impl Bounds {
    pub(crate) fn of(shared: &Shared) -> Self {
        Self {
            timeout: shared.limits.call_timeout() + GRACE,
            cpu: shared.cpu.clone(),
        }
    }
}

pub(crate) async fn bounded<R>(
    bounds: &Bounds,
    call: impl std::future::Future<Output = wasmtime::Result<R>>,
) -> Bounded<R> {
    match &bounds.cpu {
        // Waiting for the share counts against the call's time: a tenant
        // over its share sees its calls time out, not the host stall.
        Some(share) => tokio::time::timeout(bounds.timeout, Metered::new(call, share.clone(), Work::Plugin)).await,
        None => tokio::time::timeout(bounds.timeout, call).await,
    }
}

pub(crate) fn cap_error(message: String) -> String {
    sanitize(&message, MAX_ERROR_BYTES)
}

/// Why a call failed. OOM and panics both surface as an `unreachable` trap:
/// the limiter's flag and the guest's stderr tell them apart. No error at
/// all means the timer dropped the call.
fn classify(error: Option<wasmtime::Error>, memory_hit: bool, shared: &Shared, output: &str) -> TrapCause {
    if memory_hit {
        return TrapCause::Memory {
            limit_mb: shared.limits.memory_mb(),
        };
    }
    let timeout = TrapCause::Timeout {
        limit_ms: shared.limits.call_timeout_ms,
    };
    let Some(error) = error else { return timeout };
    if let Some(exit) = error.downcast_ref::<I32Exit>() {
        return TrapCause::Exit { code: exit.0 };
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => timeout,
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
                    message: sanitize(&message, MAX_LINE_BYTES),
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
/// "note: run with RUST_BACKTRACE" hint, escaped.
fn panic_message(output: &str) -> Option<String> {
    let start = output.find("panicked at")?;
    let text = &output[start..];
    let text = text.split("\nnote: ").next().unwrap_or(text).trim();
    Some(sanitize(text, MAX_LINE_BYTES))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_text_is_cut_out_of_stderr_and_escaped() {
        let stderr =
            "hello\nthread '<unnamed>' panicked at src/lib.rs:3:5:\nboom\u{1b}[2J\nnote: run with `RUST_BACKTRACE=1`\n";
        assert_eq!(
            panic_message(stderr).unwrap(),
            "panicked at src/lib.rs:3:5:\\nboom\\e[2J"
        );
        assert_eq!(panic_message("nothing"), None);
    }
}
