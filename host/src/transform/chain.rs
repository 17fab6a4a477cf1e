//! A pipeline's transforms loaded as a chain of steps, and a page run
//! through them: encode, call, decode, and the records a transform failed on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::component::{self, Component, OpenError};
use super::config::{TransformKind, TransformSpec};
use super::runtime;
use super::wire;
use crate::config::ConfigError;
use crate::plugin::{HostPolicy, PluginError, Request, TrapCause};

/// Why a run stopped in its transforms.
#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    #[error("source_record_id `{source_record_id}`: {reason}")]
    Record { source_record_id: String, reason: String },
    #[error("transform {labels} {cause} (in {function}); the batch held source_record_id {first} to {last}")]
    Trap {
        labels: String,
        function: &'static str,
        cause: TrapCause,
        first: String,
        last: String,
    },
    #[error("transform {labels}: {message}")]
    Batch { labels: String, message: String },
}

/// One call per page: a Python step runs several Bizon transforms.
struct Step {
    specs: Vec<TransformSpec>,
    component: Component,
    python: bool,
}

impl Step {
    /// The step's transforms' labels, quoted, for messages.
    fn labels(&self) -> String {
        self.specs
            .iter()
            .map(|s| format!("`{}`", s.label))
            .collect::<Vec<_>>()
            .join(", ")
    }

    async fn instantiate(&self) -> Result<component::Instance, ConfigError> {
        let first = &self.specs[0];
        self.component.instantiate().await.map_err(|e| match e {
            OpenError::Refused(message) if self.python => self.compile_error(&message),
            OpenError::Refused(message) => first.at.error(format!(
                "transform `{}` refused its config (open): {message}",
                first.label
            )),
            OpenError::Plugin(e) => first.at.error(format!("transform {}: {e}", self.labels())),
        })
    }

    /// The runtime's `open` error for code that does not compile:
    /// `{"transform": index, "line", "message"}`, mapped to the file's line.
    fn compile_error(&self, message: &str) -> ConfigError {
        #[derive(serde::Deserialize)]
        struct Syntax {
            transform: usize,
            line: usize,
            message: String,
        }
        match serde_json::from_str::<Syntax>(message) {
            Ok(s) if s.transform < self.specs.len() => {
                let spec = &self.specs[s.transform];
                let line = spec.code_line(s.line.max(1));
                ConfigError::at(
                    &spec.at.file,
                    line,
                    spec.at.column,
                    format!(
                        "transforms: `{}` does not compile: {} (line {} of its code)",
                        spec.label, s.message, s.line
                    ),
                )
            }
            _ => self.specs[0].at.error(format!(
                "transform {}: the Python runtime refused it: {message}",
                self.labels()
            )),
        }
    }
}

/// A pipeline's transforms, loaded and checked.
pub struct Chain {
    steps: Vec<Step>,
    spent: Spent,
}

/// Wall time in the chain, all workers together: encoding batches for the
/// components, the calls, and checking what they returned. The run's debug
/// log shows it, to tell where a slow transform stage spends its time.
#[derive(Default)]
pub struct Spent {
    encode: AtomicU64,
    call: AtomicU64,
    decode: AtomicU64,
}

impl Spent {
    fn add(&self, to: &AtomicU64, since: Instant) {
        to.fetch_add(since.elapsed().as_micros() as u64, Ordering::Relaxed);
    }

    /// "encode 0.1 s, calls 2.0 s, decode 0.3 s".
    pub fn summary(&self) -> String {
        let s = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64 / 1e6;
        format!(
            "encode {:.2} s, calls {:.2} s, decode {:.2} s",
            s(&self.encode),
            s(&self.call),
            s(&self.decode)
        )
    }
}

/// One worker's instances: one per step.
pub struct Worker {
    instances: Vec<component::Instance>,
    buffer: Vec<u8>,
}

impl Chain {
    /// Loads every transform's component (compiling it, or reading it from
    /// the cache), so that a missing runtime or a broken component is a
    /// config error naming the transform's line. `None` without transforms:
    /// then nothing Python is ever looked for.
    /// Every transform is loaded under `policy` (the cache, and under
    /// `serve` the tenant's memory budget and CPU share), with its own
    /// limits, grants and config as its request.
    pub async fn load(specs: &[TransformSpec], policy: &HostPolicy) -> Result<Option<Arc<Chain>>, ConfigError> {
        if specs.is_empty() {
            return Ok(None);
        }
        let mut groups: Vec<Vec<TransformSpec>> = Vec::new();
        for spec in specs {
            let python = |s: &TransformSpec| matches!(s.kind, TransformKind::Python { .. });
            if let Some(last) = groups.last_mut() {
                let first = &last[0];
                if python(spec) && python(first) && first.limits == spec.limits && first.allow == spec.allow {
                    last.push(spec.clone());
                    continue;
                }
            }
            groups.push(vec![spec.clone()]);
        }
        let mut steps = Vec::with_capacity(groups.len());
        for specs in groups {
            let python = matches!(specs[0].kind, TransformKind::Python { .. });
            let component = load_step(&specs, policy).await?;
            steps.push(Step {
                specs,
                component,
                python,
            });
        }
        Ok(Some(Arc::new(Chain {
            steps,
            spent: Spent::default(),
        })))
    }

    /// A worker: an opened instance of every step. The first one is how
    /// Python code gets compiled before any record moves.
    pub async fn worker(&self) -> Result<Worker, ConfigError> {
        let mut instances = Vec::with_capacity(self.steps.len());
        for step in &self.steps {
            instances.push(step.instantiate().await?);
        }
        Ok(Worker {
            instances,
            buffer: Vec::new(),
        })
    }

    pub fn spent(&self) -> &Spent {
        &self.spent
    }

    /// Runs `records` through every step. Records a transform failed on are
    /// returned apart, with their step's error.
    pub async fn run(
        &self,
        worker: &mut Worker,
        mut records: Vec<crate::record::SourceRecord>,
    ) -> Result<(Vec<crate::record::SourceRecord>, Vec<Failed>), TransformError> {
        let mut failed = Vec::new();
        for (step, instance) in self.steps.iter().zip(&mut worker.instances) {
            if records.is_empty() {
                break;
            }
            let format = instance.format();
            let batch_error = |message: String| TransformError::Batch {
                labels: step.labels(),
                message,
            };
            let started = Instant::now();
            wire::encode(format, &records, &mut worker.buffer).map_err(|e| batch_error(e.to_string()))?;
            self.spent.add(&self.spent.encode, started);
            let started = Instant::now();
            let out = instance.transform(&worker.buffer).await;
            self.spent.add(&self.spent.call, started);
            let started = Instant::now();
            let out = match out {
                Ok(Ok(out)) => out,
                Ok(Err(message)) => return Err(batch_error(format!("refused the batch: {message}"))),
                Err(PluginError::Trap { function, cause, .. }) => {
                    return Err(TransformError::Trap {
                        labels: step.labels(),
                        function,
                        cause,
                        first: records.first().map(|r| r.id.clone()).unwrap_or_default(),
                        last: records.last().map(|r| r.id.clone()).unwrap_or_default(),
                    })
                }
                Err(e) => return Err(batch_error(e.to_string())),
            };
            let mut intern = wire::Interner::new(&records);
            let next =
                wire::decode(format, &out.batch, &records, &mut intern).map_err(|e| batch_error(e.to_string()))?;
            for error in out.errors {
                let Some(record) = usize::try_from(error.row).ok().and_then(|row| records.get(row)) else {
                    return Err(batch_error(format!(
                        "reported an error for row {} of a {}-row batch: {}",
                        error.row,
                        records.len(),
                        error.reason
                    )));
                };
                let reason = multiline(&error.reason);
                failed.push(Failed {
                    reason: match step.python {
                        // The runtime names the transform (and its traceback) itself.
                        true => reason,
                        false => format!("transform {}: {reason}", step.labels()),
                    },
                    record: record.clone(),
                });
            }
            for (row, reason) in next.rejected {
                failed.push(Failed {
                    reason: format!("transform {}: {}", step.labels(), multiline(&reason)),
                    record: records[row].clone(),
                });
            }
            records = next.records;
            self.spent.add(&self.spent.decode, started);
        }
        Ok((records, failed))
    }
}

/// A transform's error text (a traceback), bounded, each line escaped as a
/// plugin's text is and the lines after the first indented, so that it reads
/// as one block and cannot pass for a log line of the host.
fn multiline(text: &str) -> String {
    let bounded = crate::plugin::text::sanitize_lines(text, crate::plugin::instance::MAX_ERROR_BYTES);
    bounded.join("\n    ")
}

/// A record a transform failed on, and why.
#[derive(Debug, Clone)]
pub struct Failed {
    pub record: crate::record::SourceRecord,
    pub reason: String,
}

async fn load_step(specs: &[TransformSpec], policy: &HostPolicy) -> Result<Component, ConfigError> {
    let first = &specs[0];
    let labels = || {
        specs
            .iter()
            .map(|s| format!("`{}`", s.label))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (path, config_json, named) = match &first.kind {
        TransformKind::Python { .. } => {
            let path = runtime::locate().map_err(|searched| {
                first.at.error(format!(
                    "transforms: `{}`: {}",
                    first.label,
                    runtime::missing_message(&searched)
                ))
            })?;
            let transforms: Vec<serde_json::Value> = specs
                .iter()
                .map(|s| match &s.kind {
                    TransformKind::Python { code, .. } => serde_json::json!({"label": s.label, "python": code}),
                    TransformKind::Wasm { .. } => unreachable!("a Python step holds Python transforms"),
                })
                .collect();
            let config = serde_json::json!({ "transforms": transforms }).to_string();
            // `serve` names the runtime in `policy`, not by where the host keeps it.
            (path, config, policy.label.clone())
        }
        TransformKind::Wasm {
            path,
            config_json,
            named,
        } => (path.clone(), config_json.clone(), named.clone()),
    };
    let request = Request {
        limits: first.limits,
        grants: first.allow.clone(),
        config_json,
    };
    let policy = HostPolicy {
        label: named,
        ..policy.clone()
    };
    // Compiling is CPU work of seconds (CPython): off the async workers.
    let loaded = tokio::task::spawn_blocking(move || Component::load(&path, &request, &policy))
        .await
        .map_err(|e| {
            first
                .at
                .error(format!("loading transform `{}` crashed: {e}", first.label))
        })?;
    loaded.map_err(|e| first.at.error(format!("transform {}: {e}", labels())))
}
