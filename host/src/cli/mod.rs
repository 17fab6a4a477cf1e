//! The `bizon-host` command line.
//!
//! Exit status of `run` and `check`: 0 the run wrote everything; 1 a write
//! failed for good (the message names the destination_id and the cause); 2
//! the pipeline file, a plugin or a connection check is wrong, before any
//! record moved; 130 a signal stopped the run after what was read was
//! flushed and finalized. `plugin test`: 1 when a step fails. The client
//! commands (`tenant`, `pipeline`, `plugin push|list|versions`): 1 the API
//! answered an error, 2 it could not be asked. README.md lists them all.

#[cfg(feature = "serve")]
pub mod client;
mod out;
#[cfg(feature = "wasm")]
pub mod plugin;
mod progress;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tokio::sync::watch;

use out::say;

use crate::metrics::Metrics;
use crate::pipeline::{self, Bounds, Environment, Pipeline, Progress, RunReport, RunStatus};

const EXAMPLES: &str = "\
Examples:
  bizon-host run examples/quickstart.yaml
  bizon-host run pipeline.yaml --result-json result.json --log-level debug
  cat records.jsonl | bizon-host run --plugin my_dest.wasm --allow-dir ./out:/out:rw
  bizon-host check pipeline.yaml
  bizon-host plugin inspect my_dest.wasm";

#[derive(Debug, Parser)]
#[command(name = "bizon-host", version, about = "Runs Bizon pipelines: buffered Arrow batches into BigQuery, files, logs and sandboxed WebAssembly destinations", after_help = EXAMPLES)]
pub struct Cli {
    /// error, warn, info, debug or trace (RUST_LOG, when set, wins)
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,
    /// Memory all live plugin instances may hold together, in MiB (default:
    /// half of the machine's memory; env BIZON_HOST_PLUGIN_MEMORY_BUDGET_MB).
    /// Each instance holds its whole `memory_mb` while it lives.
    #[cfg(feature = "wasm")]
    #[arg(long, global = true, value_name = "MiB")]
    pub plugin_memory_budget_mb: Option<u64>,
    /// Largest plugin component accepted, in MiB (default 64; env
    /// BIZON_HOST_MAX_COMPONENT_MB).
    #[cfg(feature = "wasm")]
    #[arg(long, global = true, value_name = "MiB")]
    pub max_component_mb: Option<u64>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a pipeline until its source is exhausted.
    Run(RunArgs),
    /// Validate a pipeline file and check the destination's connection.
    Check {
        /// The Bizon pipeline YAML file.
        pipeline: PathBuf,
    },
    /// Inspect, compile or test a WebAssembly plugin; push, list or show the versions of a
    /// tenant's plugins on a `serve`.
    #[cfg(feature = "wasm")]
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Host many tenants' plugins and pipelines behind an HTTP API (docs/serve.md).
    #[cfg(feature = "serve")]
    Serve(crate::serve::ServeArgs),
    /// `serve`'s compile of an upload, in a process of its own (serve/compile.rs).
    #[cfg(feature = "serve")]
    #[command(name = "serve-compile", hide = true)]
    ServeCompile(crate::serve::compile::ChildArgs),
    /// Create, list, show, change the limits of or delete the tenants of a `serve` (admin token).
    #[cfg(feature = "serve")]
    Tenant {
        #[command(subcommand)]
        command: client::TenantCommand,
        #[command(flatten)]
        remote: client::Remote,
    },
    /// Put, start, stop, show the status or logs of, list or delete a tenant's pipelines on a
    /// `serve`.
    #[cfg(feature = "serve")]
    Pipeline {
        #[command(subcommand)]
        command: client::PipelineCommand,
        #[command(flatten)]
        remote: client::Remote,
    },
    /// Put, list or delete a tenant's secrets on a `serve` (values are never shown).
    #[cfg(feature = "serve")]
    Secret {
        #[command(subcommand)]
        command: client::SecretCommand,
        #[command(flatten)]
        remote: client::Remote,
    },
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The Bizon pipeline YAML file; optional with --plugin, which then reads
    /// NDJSON records from standard input.
    pub pipeline: Option<PathBuf>,
    /// Write {status, records_read, records_written, by_destination_id, duration_s, ...} here.
    #[arg(long, value_name = "PATH")]
    pub result_json: Option<PathBuf>,
    /// No progress display, even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
    /// Serve Prometheus metrics (records, dead letters, Kafka lag, commits,
    /// rebalances) at http://HOST:PORT/metrics while the run goes.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    #[cfg(feature = "wasm")]
    #[command(flatten)]
    pub plugin: plugin::PluginRunArgs,
}

pub async fn main(cli: Cli) -> ExitCode {
    #[cfg(feature = "wasm")]
    {
        if let Some(mib) = cli.plugin_memory_budget_mb {
            crate::quota::budget::set_global(mib);
        }
        if let Some(mib) = cli.max_component_mb {
            crate::plugin::set_max_component_mb(mib);
        }
    }
    match cli.command {
        Command::Run(args) => run(args).await,
        Command::Check { pipeline } => check(&pipeline).await,
        #[cfg(feature = "serve")]
        Command::Tenant { command, remote } => client_exit(client::tenant(command, &remote).await),
        #[cfg(feature = "serve")]
        Command::Pipeline { command, remote } => client_exit(client::pipeline(command, &remote).await),
        #[cfg(feature = "serve")]
        Command::Secret { command, remote } => client_exit(client::secret(command, &remote).await),
        #[cfg(feature = "serve")]
        Command::ServeCompile(args) => crate::serve::compile::child_main(args),
        #[cfg(feature = "serve")]
        Command::Serve(args) => match crate::serve::run(args, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        #[cfg(feature = "wasm")]
        Command::Plugin(cmd) => plugin::run(cmd).await.unwrap_or_else(|e| {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }),
    }
}

#[cfg(feature = "serve")]
fn client_exit(result: anyhow::Result<ExitCode>) -> ExitCode {
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::from(2)
    })
}

/// A pipeline file read and checked, its warnings told.
fn load(path: &Path) -> Result<Pipeline, ExitCode> {
    let pipeline = pipeline::load(path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })?;
    tell_warnings(path, &pipeline);
    Ok(pipeline)
}

fn tell_warnings(path: &Path, pipeline: &Pipeline) {
    for warning in &pipeline.warnings {
        tracing::warn!("{warning}");
    }
    for section in &pipeline.ignored_sections {
        tracing::warn!(
            "{}: `{section}` is accepted but not implemented by bizon-host; ignored",
            path.display()
        );
    }
}

async fn run(args: RunArgs) -> ExitCode {
    // Before any record moved: exit 2, and the result file still says why.
    let refuse = |message: String| {
        eprintln!("error: {message}");
        if let Some(path) = &args.result_json {
            let report = RunReport::new(
                RunStatus::Failed,
                Some(message),
                &Progress::default(),
                Default::default(),
            );
            write_result(&report, path);
        }
        ExitCode::from(2)
    };
    let pipeline = match &args.pipeline {
        Some(path) => match pipeline::load(path) {
            Ok(p) => {
                tell_warnings(path, &p);
                Some(p)
            }
            Err(e) => return refuse(e.to_string()),
        },
        None => None,
    };
    #[cfg(feature = "wasm")]
    let pipeline = match plugin::apply(&args.plugin, pipeline) {
        Ok(p) => p,
        Err(e) => return refuse(format!("{e:#}")),
    };
    let Some(pipeline) = pipeline else {
        return refuse("give a pipeline file (bizon-host run PIPELINE.yaml) or a plugin (--plugin FILE.wasm)".into());
    };
    let assembled = match pipeline::assemble(&pipeline, &Environment::for_run()).await {
        Ok(a) => a,
        Err(e) => return refuse(e.to_string()),
    };
    tracing::info!(pipeline = %pipeline.name, destination = pipeline.destination.name(), "starting");
    let (progress_tx, progress_rx) = watch::channel(Progress::default());
    if let Some(addr) = args.metrics_addr {
        let metrics = Arc::new(Metrics::new(&pipeline.name));
        if let Err(e) = metrics.clone().serve(addr).await {
            eprintln!("error: --metrics-addr {addr}: {e}");
            return ExitCode::from(2);
        }
        metrics.follow(progress_rx.clone());
    }
    let display = progress::spawn(progress_rx, !args.no_progress);
    let report = pipeline::run(&pipeline, assembled, shutdown_signal(), progress_tx, Bounds::none()).await;
    display.finish().await;
    finish(&report, args.result_json.as_deref())
}

fn write_result(report: &RunReport, path: &Path) {
    let json = serde_json::to_vec_pretty(report).expect("the report serializes");
    if let Err(e) = std::fs::write(path, json) {
        eprintln!("error: cannot write {}: {e}", path.display());
    }
}

/// Prints the outcome, writes the result file, and picks the exit status.
fn finish(report: &RunReport, result_json: Option<&Path>) -> ExitCode {
    if let Some(path) = result_json {
        write_result(report, path);
    }
    let rate = report.records_written as f64 / report.duration_s.max(1e-9);
    match report.status {
        RunStatus::Success => {
            tracing::info!(
                records_written = report.records_written,
                duration_s = format!("{:.3}", report.duration_s),
                records_per_s = rate as u64,
                "done"
            );
            ExitCode::SUCCESS
        }
        RunStatus::Interrupted => {
            tracing::warn!(
                records_read = report.records_read,
                records_written = report.records_written,
                records_unwritten = report.records_unwritten,
                "interrupted"
            );
            if let Some(error) = &report.error {
                eprintln!("error while stopping: {error}");
            }
            ExitCode::from(130)
        }
        RunStatus::Failed => {
            eprintln!(
                "error: {}\n{} of {} records read were not written",
                report.error.as_deref().unwrap_or("the run failed"),
                report.records_unwritten,
                report.records_read
            );
            ExitCode::from(1)
        }
    }
}

async fn check(path: &Path) -> ExitCode {
    let pipeline = match load(path) {
        Ok(p) => p,
        Err(code) => return code,
    };
    #[cfg(feature = "wasm")]
    if let Err(e) = crate::transform::check(&pipeline.transforms, &crate::plugin::HostPolicy::for_run()).await {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let name = pipeline.destination.name();
    let outcome = match crate::destination::build(&pipeline.destination, &Default::default()).await {
        Ok(d) => d.check_connection().await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(()) => {
            say!(
                "{}: configuration valid; destination `{name}` reachable",
                path.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: destination `{name}`: {e}");
            ExitCode::from(2)
        }
    }
}

/// Resolves on SIGINT or SIGTERM; a second one ends the process at once
/// with status 130, whatever is under way.
async fn shutdown_signal() {
    signal().await;
    tokio::spawn(async {
        signal().await;
        eprintln!("error: second signal: exiting without waiting for writes under way");
        std::process::exit(130);
    });
}

async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests;
