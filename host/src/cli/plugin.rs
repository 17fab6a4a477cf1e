//! `run --plugin ...` and `plugin inspect|compile|test`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};

use super::out::say;
use crate::config::DestinationOptions;
use crate::destination::wasm::WasmConfig;
use crate::destination::DestinationConfig;
use crate::pipeline::Pipeline;
use crate::plugin::{
    capabilities, ipc, BatchInfo, DirGrant, Grants, HostPolicy, HostRule, Instance, Limits, Plugin, PluginError,
    Request, WriteError,
};
use crate::record::{BizonIdGenerator, RecordBuilder, SourceRecord};
use crate::source::{JsonlSourceConfig, SourceConfig};

/// Flags of `run` that send the records to a WebAssembly plugin.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PluginRunArgs {
    /// Write to this WebAssembly plugin instead of the pipeline's destination
    /// (the destination's buffer and retry options are kept). Without a
    /// pipeline file, NDJSON records are read from standard input.
    #[arg(long, value_name = "FILE.wasm")]
    pub plugin: Option<PathBuf>,
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

/// What a plugin is given: its config and its grants.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SandboxArgs {
    /// The plugin's config, a JSON object handed to its `open`.
    #[arg(long, value_name = "JSON")]
    pub plugin_config: Option<String>,
    /// Let the plugin see a host directory: HOST[:GUEST][:ro|:rw]. GUEST
    /// defaults to HOST; read-only unless `:rw`. Repeatable.
    #[arg(long, value_name = "HOST[:GUEST][:rw]")]
    pub allow_dir: Vec<String>,
    /// Copy this host environment variable into the plugin. Repeatable.
    #[arg(long, value_name = "NAME")]
    pub allow_env: Vec<String>,
    /// Let the plugin connect to this host: `https://api.example.com`,
    /// `http://127.0.0.1:8123`, `*.example.com:443`, `tcp://db:5432`
    /// (docs/plugins.md, Network). Repeatable; none: no network.
    #[arg(long, value_name = "SCHEME://HOST:PORT", value_parser = parse_allow_host)]
    pub allow_host: Vec<HostRule>,
    /// Memory cap of each plugin instance (all its memories and tables), in
    /// MiB (default 256; 512 for a component of 8 MiB or more, which embeds
    /// an interpreter).
    #[arg(long, value_name = "N")]
    pub memory_mb: Option<u64>,
    /// Byte quota of each writable --allow-dir, in MiB (default 1024).
    #[arg(long, value_name = "N")]
    pub dir_quota_mb: Option<u64>,
    /// Time one plugin call may take, in milliseconds (default 30000).
    #[arg(long, value_name = "N")]
    pub call_timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum PluginCommand {
    /// Show a plugin's contract version, description, imports, exports and cache status.
    Inspect { file: PathBuf },
    /// Compile a plugin into the cache ahead of a run; prints the artifact's path.
    Compile { file: PathBuf },
    /// Conformance run: open, check-connection, several batches, finalize.
    Test {
        file: PathBuf,
        #[command(flatten)]
        sandbox: SandboxArgs,
    },
    // push, list, versions: a tenant's plugins on a `serve`.
    #[cfg(feature = "serve")]
    #[command(flatten)]
    Remote(super::client::RemotePluginCommand),
}

/// Points `pipeline` (or a stdin-to-plugin pipeline when there is none) at
/// `--plugin`; without `--plugin`, returns the pipeline unchanged.
pub fn apply(args: &PluginRunArgs, pipeline: Option<Pipeline>) -> Result<Option<Pipeline>, anyhow::Error> {
    let Some(plugin) = &args.plugin else {
        return Ok(pipeline);
    };
    let mut pipeline = pipeline.unwrap_or_else(stdin_pipeline);
    // A pipeline that already used a plugin keeps its config and grants
    // unless the flags say otherwise.
    let previous = match &pipeline.destination {
        DestinationConfig::Wasm(c) => Some(c.clone()),
        _ => None,
    };
    let sandbox = &args.sandbox;
    let plugin_config = match &sandbox.plugin_config {
        Some(text) => Some(parse_plugin_config(text)?),
        None => previous.as_ref().and_then(|c| c.plugin_config.clone()),
    };
    let base_limits = previous.as_ref().map(|c| c.limits).unwrap_or_default();
    let mut allow = if sandbox.allow_dir.is_empty() && sandbox.allow_env.is_empty() && sandbox.allow_host.is_empty() {
        previous.as_ref().map(|c| c.allow.clone()).unwrap_or_default()
    } else {
        Grants::default()
    };
    allow.dirs.extend(sandbox.dirs()?);
    allow.env.extend(sandbox.allow_env.iter().cloned());
    allow.hosts.extend(sandbox.allow_host.iter().cloned());
    pipeline.destination = DestinationConfig::Wasm(WasmConfig {
        options: pipeline.destination.options().clone(),
        plugin: plugin.clone(),
        plugin_config,
        limits: sandbox.limits(base_limits),
        allow,
    });
    Ok(Some(pipeline))
}

/// NDJSON from standard input to a plugin that has not been chosen yet.
fn stdin_pipeline() -> Pipeline {
    Pipeline {
        name: "plugin".into(),
        dead_letter: None,
        transforms: Vec::new(),
        source: SourceConfig::Jsonl(JsonlSourceConfig {
            name: "jsonl".into(),
            path: "-".into(),
            id_field: None,
            timestamp_field: None,
            destination_id_field: None,
            skip_invalid: false,
            page_size: 1000,
            stream: None,
            sync_mode: None,
        }),
        destination: DestinationConfig::Wasm(WasmConfig {
            // What parsing a file with this source would set: its records go
            // to `jsonl` (docs/sdk-js.md's example writes `/out/jsonl.jsonl`).
            options: DestinationOptions {
                generated_destination_id: Some("jsonl".into()),
                ..Default::default()
            },
            plugin: PathBuf::new(),
            plugin_config: None,
            limits: Limits::default(),
            allow: Grants::default(),
        }),
        ignored_sections: Vec::new(),
        warnings: Vec::new(),
    }
}

impl SandboxArgs {
    fn limits(&self, base: Limits) -> Limits {
        Limits {
            memory_mb: self.memory_mb.or(base.memory_mb),
            call_timeout_ms: self.call_timeout_ms.unwrap_or(base.call_timeout_ms),
        }
    }

    /// What the flags ask for the plugin.
    fn request(&self) -> anyhow::Result<Request> {
        let config_json = match &self.plugin_config {
            Some(text) => parse_plugin_config(text)?.to_string(),
            None => "{}".into(),
        };
        let grants = Grants {
            dirs: self.dirs()?,
            env: self.allow_env.clone(),
            hosts: self.allow_host.clone(),
            ..Grants::default()
        };
        Ok(Request {
            limits: self.limits(Limits::default()),
            grants,
            config_json,
        })
    }

    fn dirs(&self) -> anyhow::Result<Vec<DirGrant>> {
        self.allow_dir
            .iter()
            .map(|d| {
                let mut grant = parse_allow_dir(d)?;
                grant.max_mb = self.dir_quota_mb;
                Ok(grant)
            })
            .collect()
    }
}

fn parse_allow_host(text: &str) -> Result<HostRule, String> {
    HostRule::parse(text)
}

fn parse_plugin_config(text: &str) -> anyhow::Result<serde_json::Value> {
    let value: serde_json::Value = serde_json::from_str(text).context("--plugin-config is not JSON")?;
    if !value.is_object() {
        bail!("--plugin-config must be a JSON object, like '{{\"dir\": \"/out\"}}'");
    }
    Ok(value)
}

/// `HOST[:GUEST][:ro|:rw]`.
fn parse_allow_dir(spec: &str) -> anyhow::Result<DirGrant> {
    let (rest, writable) = match spec.rsplit_once(':') {
        Some((rest, "rw")) => (rest, true),
        Some((rest, "ro")) => (rest, false),
        _ => (spec, false),
    };
    let (host, guest) = match rest.split_once(':') {
        Some((host, guest)) => (host, Some(guest.to_string())),
        None => (rest, None),
    };
    if host.is_empty() || guest.as_deref() == Some("") {
        bail!("--allow-dir {spec}: expected HOST[:GUEST][:ro|:rw]");
    }
    Ok(DirGrant {
        host: host.into(),
        guest,
        writable,
        max_mb: None,
    })
}

pub async fn run(cmd: PluginCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PluginCommand::Inspect { file } => inspect(&file).await,
        PluginCommand::Compile { file } => compile(&file).await,
        PluginCommand::Test { file, sandbox } => test(&file, &sandbox).await,
        #[cfg(feature = "serve")]
        PluginCommand::Remote(cmd) => super::client::plugin(cmd).await,
    }
}

/// Loads under what `bizon-host run` gives a plugin. Compiling is CPU work
/// of up to seconds: off the async workers.
async fn load(file: &Path, request: Request) -> Result<Plugin, PluginError> {
    let file = file.to_path_buf();
    tokio::task::spawn_blocking(move || Plugin::load(&file, &request, &HostPolicy::for_run()))
        .await
        .expect("loading a plugin does not panic")
}

/// `plugin inspect` runs nothing of the plugin but `describe`, and that
/// under this deadline: inspecting a file must be safe and quick.
const INSPECT_TIMEOUT_MS: u64 = 5_000;

async fn inspect(file: &Path) -> anyhow::Result<ExitCode> {
    let request = Request {
        limits: Limits {
            call_timeout_ms: INSPECT_TIMEOUT_MS,
            ..Limits::default()
        },
        ..Request::default()
    };
    let plugin = load(file, request).await?;
    let report = plugin.report();
    let info = plugin.describe().await?;
    let contract = report
        .exports
        .iter()
        .find(|e| e.starts_with(capabilities::DESTINATION_EXPORT))
        .and_then(|e| e.split_once('@'))
        .map_or("?", |(_, v)| v);
    say!("file:      {} ({} bytes)", file.display(), report.file_size);
    say!(
        "contract:  bizon:destination@{contract} (host: {})",
        capabilities::host_version()
    );
    say!("plugin:    {} {}", info.name, info.version);
    say!("input:     {:?}", info.input_format);
    say!("imports:   {}", report.imports.join(", "));
    say!("exports:   {}", report.exports.join(", "));
    say!(
        "cache:     {}{}",
        report.cache,
        artifact_text(report.artifact.as_deref())
    );
    Ok(ExitCode::SUCCESS)
}

fn artifact_text(artifact: Option<&Path>) -> String {
    artifact.map_or_else(|| " (no cache directory)".into(), |p| format!(" ({})", p.display()))
}

async fn compile(file: &Path) -> anyhow::Result<ExitCode> {
    let plugin = load(file, Request::default()).await?;
    let report = plugin.report();
    match &report.artifact {
        Some(path) => say!("{}", path.display()),
        None => bail!("no cache directory: set BIZON_HOST_CACHE_DIR"),
    }
    say!(
        "cache {}: compiled in {:.1} ms, loaded in {:.1} ms",
        report.cache,
        report.compile_time.as_secs_f64() * 1e3,
        report.load_time.as_secs_f64() * 1e3
    );
    Ok(ExitCode::SUCCESS)
}

/// Rows of the conformance batches: the cases a plugin most often gets wrong.
fn conformance_batches() -> Vec<(&'static str, Vec<String>)> {
    vec![
        (
            "plain rows",
            (0..3).map(|i| format!(r#"{{"id":{i},"name":"row {i}"}}"#)).collect(),
        ),
        ("empty batch", Vec::new()),
        (
            "unicode",
            vec![
                r#"{"emoji":"🚀🎉👩‍👩‍👧"}"#.into(),
                r#"{"cjk":"数据仓库 データ 데이터"}"#.into(),
                r#"{"combining":"e\u0301 n\u0303 Å"}"#.into(),
            ],
        ),
        (
            "quotes and newlines",
            vec![
                r#"{"quote":"she said \"hi\"","newline":"a\nb\r\nc","tab":"x\ty","backslash":"C:\\dir"}"#.into(),
                r#"{"comma":"a,b;c|d","empty":"","null":null}"#.into(),
            ],
        ),
    ]
}

async fn test(file: &Path, sandbox: &SandboxArgs) -> anyhow::Result<ExitCode> {
    let mut failed = 0;
    let mut step = |name: &str, result: Result<String, String>| {
        match &result {
            Ok(detail) => say!(
                "PASS  {name}{}",
                if detail.is_empty() {
                    String::new()
                } else {
                    format!(": {detail}")
                }
            ),
            Err(reason) => {
                failed += 1;
                say!("FAIL  {name}: {reason}");
            }
        }
        result.is_ok()
    };
    let plugin = match load(file, sandbox.request()?).await {
        Ok(p) => p,
        Err(e) => {
            step("load", Err(e.to_string()));
            return Ok(ExitCode::FAILURE);
        }
    };
    step("load", Ok(format!("cache {}", plugin.report().cache)));
    let mut instance = match plugin.instantiate().await {
        Ok(i) => i,
        Err(e) => {
            step("describe + open", Err(e.to_string()));
            return Ok(ExitCode::FAILURE);
        }
    };
    let info = instance.info().clone();
    step(
        "describe + open",
        Ok(format!("{} {} ({:?})", info.name, info.version, info.input_format)),
    );
    step("check-connection", flatten(instance.check_connection().await));
    let mut ids = BizonIdGenerator::new();
    let destination_id: Arc<str> = Arc::from("conformance");
    let mut buffer = Vec::new();
    for (sequence, (name, rows)) in conformance_batches().into_iter().enumerate() {
        if instance.is_poisoned() {
            step(
                &format!("write: {name}"),
                Err("skipped: the instance trapped earlier".into()),
            );
            continue;
        }
        let result = write_rows(
            &mut instance,
            &mut ids,
            &destination_id,
            sequence as u64,
            &rows,
            &mut buffer,
        )
        .await;
        step(&format!("write: {name}"), result);
    }
    if instance.is_poisoned() {
        step("finalize", Err("skipped: the instance trapped earlier".into()));
    } else {
        step("finalize", flatten(instance.finalize().await));
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn flatten(result: Result<Result<(), String>, PluginError>) -> Result<String, String> {
    match result {
        Ok(Ok(())) => Ok(String::new()),
        Ok(Err(message)) => Err(message),
        Err(e) => Err(e.to_string()),
    }
}

async fn write_rows(
    instance: &mut Instance,
    ids: &mut BizonIdGenerator,
    destination_id: &Arc<str>,
    sequence: u64,
    rows: &[String],
    buffer: &mut Vec<u8>,
) -> Result<String, String> {
    let mut builder = RecordBuilder::new(destination_id.clone());
    let now = crate::record::now_us();
    for (i, data) in rows.iter().enumerate() {
        let record = SourceRecord {
            id: i.to_string(),
            timestamp_us: now,
            data: data.clone(),
            destination_id: None,
        };
        builder.append(ids, now, &record);
    }
    let batch = builder.finish(now).map_err(|e| e.to_string())?;
    ipc::encode(instance.info().input_format, &batch, buffer).map_err(|e| e.to_string())?;
    let info = BatchInfo {
        destination_id: destination_id.to_string(),
        sequence,
        num_rows: rows.len() as u64,
    };
    match instance.write(&info, None, buffer).await {
        Ok(Ok(n)) if n == info.num_rows => Ok(format!("{n} row(s)")),
        Ok(Ok(n)) => Err(format!("returned {n} rows written for a batch of {}", info.num_rows)),
        Ok(Err(WriteError::Retryable(m))) => Err(format!("retryable error: {m}")),
        Ok(Err(WriteError::Fatal(m))) => Err(format!("fatal error: {m}")),
        Ok(Err(WriteError::Rejected(r))) => Err(format!(
            "{} row(s) rejected; first: row {}: {}",
            r.len(),
            r.first().map_or(0, |r| r.row),
            r.first().map_or("", |r| r.reason.as_str())
        )),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_dir_forms() {
        let d = parse_allow_dir("out").unwrap();
        assert_eq!(
            (d.host.to_str().unwrap(), d.guest_path(), d.writable),
            ("out", "out".into(), false)
        );
        let d = parse_allow_dir("./out:/out:rw").unwrap();
        assert_eq!(
            (d.host.to_str().unwrap(), d.guest_path(), d.writable),
            ("./out", "/out".into(), true)
        );
        let d = parse_allow_dir("/data:ro").unwrap();
        assert_eq!(
            (d.host.to_str().unwrap(), d.guest_path(), d.writable),
            ("/data", "/data".into(), false)
        );
        assert!(parse_allow_dir(":/x").is_err());
    }

    #[test]
    fn stdin_records_go_to_the_destination_id_jsonl() {
        assert_eq!(stdin_pipeline().destination.options().default_destination_id(), "jsonl");
    }

    #[test]
    fn plugin_replaces_the_destination_and_keeps_its_options() {
        let options = DestinationOptions {
            max_concurrent_threads: 3,
            ..Default::default()
        };
        let mut pipeline = stdin_pipeline();
        *pipeline.destination.options_mut() = options;
        let args = PluginRunArgs {
            plugin: Some("x.wasm".into()),
            sandbox: SandboxArgs {
                plugin_config: Some(r#"{"dir":"/out"}"#.into()),
                allow_dir: vec!["o:/out:rw".into()],
                allow_host: vec![HostRule::parse("http://127.0.0.1:8123").unwrap()],
                memory_mb: Some(64),
                ..Default::default()
            },
        };
        let out = apply(&args, Some(pipeline.clone())).unwrap().unwrap();
        let DestinationConfig::Wasm(c) = &out.destination else {
            panic!("not wasm")
        };
        assert_eq!(c.options.max_concurrent_threads, 3);
        assert_eq!(c.plugin_config, Some(serde_json::json!({"dir": "/out"})));
        assert_eq!(c.limits.memory_mb, Some(64));
        assert!(c.allow.dirs[0].writable);
        assert_eq!(c.allow.hosts[0].to_string(), "http://127.0.0.1:8123");
        assert!(apply(&PluginRunArgs::default(), Some(pipeline)).unwrap().is_some());
        assert!(apply(&PluginRunArgs::default(), None).unwrap().is_none());
    }
}
