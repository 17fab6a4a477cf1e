//! `bizon-host tenant|plugin|pipeline|secret ...`: a client of `serve`'s API, so
//! operators and tenants need no curl. The URL and token come from flags
//! (anywhere after the command) or BIZON_HOST_URL / BIZON_HOST_TOKEN; the
//! answer is printed as JSON.
//!
//! Exit status: 0 the API answered with success; 1 the API answered with an
//! error (its message is printed); 2 the command could not ask (bad
//! arguments or JSON, no token, a file it cannot read, a server it cannot
//! reach).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::{json, Value};

use super::out::say;

/// Where the server is and who calls. Global: `--token` works after the
/// nested subcommand (`tenant create acme --token T`) as well as before it.
#[derive(Debug, Clone, clap::Args)]
pub struct Remote {
    /// The server's URL.
    #[arg(long, global = true, env = "BIZON_HOST_URL", default_value = "http://127.0.0.1:8700")]
    pub url: String,
    /// The admin token (tenant commands) or a tenant's token (plugin and
    /// pipeline commands).
    // Optional to clap (a global argument cannot be required); `call` says
    // what is missing.
    #[arg(long, global = true, env = "BIZON_HOST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum TenantCommand {
    /// Create a tenant; prints its token (shown once).
    Create {
        name: String,
        /// Limits as JSON, over the server's defaults: '{"memory_mb": 256, "egress": ["https://*.example.com"]}'.
        #[arg(long, value_name = "JSON")]
        limits: Option<String>,
    },
    /// Every tenant: its limits, memory and read-ahead in use, pipelines' status.
    List,
    /// One tenant: its limits, memory and read-ahead in use, pipelines' status.
    Show { name: String },
    /// Change a tenant's limits: the keys given, `null` for the default.
    Limits {
        name: String,
        /// As JSON: '{"memory_mb": 512, "cpu_cores": null}'.
        #[arg(value_name = "JSON")]
        limits: String,
    },
    /// Stop and remove everything of a tenant.
    Delete { name: String },
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum PipelineCommand {
    /// Store a pipeline file (Bizon YAML) under NAME; on a running pipeline a
    /// new plugin version is swapped in between batches.
    Put { name: String, file: PathBuf },
    /// Start a stored pipeline.
    Start { name: String },
    /// Stop a pipeline: what was read is written and finalized (up to 10 s).
    Stop { name: String },
    /// A pipeline's state, records, records/s, lag and last error.
    Status { name: String },
    /// Every pipeline of the tenant, with its status.
    List,
    /// The last 1,000 log lines of a pipeline's run and its plugin.
    Logs { name: String },
    /// Stop a pipeline and remove it.
    Delete { name: String },
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum SecretCommand {
    /// Store NAME's value (a new one replaces the old; running pipelines
    /// take it at their next start). The value is read from a file or an
    /// environment variable, never from the command line, which others can
    /// see in the process list.
    Put {
        name: String,
        /// The value is this file's content (one trailing newline dropped).
        #[arg(
            long,
            value_name = "FILE",
            conflicts_with = "from_env",
            required_unless_present = "from_env"
        )]
        from_file: Option<PathBuf>,
        /// The value is this environment variable's.
        #[arg(long, value_name = "VAR")]
        from_env: Option<String>,
    },
    /// The tenant's secrets: names and times, never values.
    List,
    /// Remove a secret; pipelines that use it fail at their next start.
    Delete { name: String },
}

/// The client side of `plugin` (push, list, versions).
#[derive(Debug, Clone, clap::Subcommand)]
pub enum RemotePluginCommand {
    /// Upload FILE.wasm as a new version of NAME.
    Push {
        name: String,
        file: PathBuf,
        #[command(flatten)]
        remote: Remote,
    },
    /// The tenant's plugins, every version.
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// One plugin's versions.
    Versions {
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
}

async fn call(remote: &Remote, method: reqwest::Method, path: &str, body: Option<Vec<u8>>) -> anyhow::Result<ExitCode> {
    let url = format!("{}{path}", remote.url.trim_end_matches('/'));
    let Some(token) = &remote.token else {
        anyhow::bail!("no token: give --token TOKEN or set BIZON_HOST_TOKEN");
    };
    let mut request = reqwest::Client::new().request(method, &url).bearer_auth(token);
    if let Some(body) = body {
        request = request.body(body);
    }
    let response = request.send().await.with_context(|| format!("cannot reach {url}"))?;
    let ok = response.status().is_success();
    let text = response
        .text()
        .await
        .with_context(|| format!("reading the answer of {url}"))?;
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if ok {
        // 204 (a secret's value replaced) has no body to print.
        if value != Value::String(String::new()) {
            say!("{}", serde_json::to_string_pretty(&value)?);
        }
        Ok(ExitCode::SUCCESS)
    } else {
        let message = value["error"]["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| value.to_string());
        eprintln!("error: {message}");
        Ok(ExitCode::from(1))
    }
}

pub async fn tenant(cmd: TenantCommand, remote: &Remote) -> anyhow::Result<ExitCode> {
    use reqwest::Method;
    match cmd {
        TenantCommand::Create { name, limits } => {
            let limits: Value = match limits {
                Some(text) => serde_json::from_str(&text).context("--limits is not JSON")?,
                None => json!({}),
            };
            let body = json!({"name": name, "limits": limits}).to_string().into_bytes();
            call(remote, Method::POST, "/v1/tenants", Some(body)).await
        }
        TenantCommand::List => call(remote, Method::GET, "/v1/tenants", None).await,
        TenantCommand::Show { name } => call(remote, Method::GET, &format!("/v1/tenants/{name}"), None).await,
        TenantCommand::Limits { name, limits } => {
            let limits: Value = serde_json::from_str(&limits).context("the limits are not JSON")?;
            let body = json!({ "limits": limits }).to_string().into_bytes();
            call(remote, Method::PATCH, &format!("/v1/tenants/{name}"), Some(body)).await
        }
        TenantCommand::Delete { name } => call(remote, Method::DELETE, &format!("/v1/tenants/{name}"), None).await,
    }
}

pub async fn pipeline(cmd: PipelineCommand, remote: &Remote) -> anyhow::Result<ExitCode> {
    use reqwest::Method;
    let path = |name: &str, tail: &str| format!("/v1/pipelines/{name}{tail}");
    match cmd {
        PipelineCommand::Put { name, file } => {
            let body = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            call(remote, Method::PUT, &path(&name, ""), Some(body)).await
        }
        PipelineCommand::Start { name } => call(remote, Method::POST, &path(&name, "/start"), None).await,
        PipelineCommand::Stop { name } => call(remote, Method::POST, &path(&name, "/stop"), None).await,
        PipelineCommand::Status { name } => call(remote, Method::GET, &path(&name, ""), None).await,
        PipelineCommand::List => call(remote, Method::GET, "/v1/pipelines", None).await,
        PipelineCommand::Logs { name } => call(remote, Method::GET, &path(&name, "/logs"), None).await,
        PipelineCommand::Delete { name } => call(remote, Method::DELETE, &path(&name, ""), None).await,
    }
}

pub async fn secret(cmd: SecretCommand, remote: &Remote) -> anyhow::Result<ExitCode> {
    use reqwest::Method;
    match cmd {
        SecretCommand::Put {
            name,
            from_file,
            from_env,
        } => {
            let value = match (from_file, from_env) {
                (Some(file), _) => {
                    let text =
                        std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
                    let text = text.strip_suffix('\n').unwrap_or(&text);
                    zeroize::Zeroizing::new(text.strip_suffix('\r').unwrap_or(text).to_string())
                }
                (None, Some(var)) => zeroize::Zeroizing::new(
                    std::env::var(&var).with_context(|| format!("the environment variable {var} is not set"))?,
                ),
                (None, None) => anyhow::bail!("give --from-file FILE or --from-env VAR"),
            };
            let body = zeroize::Zeroizing::new(json!({ "value": value.as_str() }).to_string().into_bytes());
            call(remote, Method::PUT, &format!("/v1/secrets/{name}"), Some(body.to_vec())).await
        }
        SecretCommand::List => call(remote, Method::GET, "/v1/secrets", None).await,
        SecretCommand::Delete { name } => call(remote, Method::DELETE, &format!("/v1/secrets/{name}"), None).await,
    }
}

pub async fn plugin(cmd: RemotePluginCommand) -> anyhow::Result<ExitCode> {
    use reqwest::Method;
    match cmd {
        RemotePluginCommand::Push { name, file, remote } => {
            let body = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            call(&remote, Method::PUT, &format!("/v1/plugins/{name}"), Some(body)).await
        }
        RemotePluginCommand::List { remote } => call(&remote, Method::GET, "/v1/plugins", None).await,
        RemotePluginCommand::Versions { name, remote } => {
            call(&remote, Method::GET, &format!("/v1/plugins/{name}"), None).await
        }
    }
}
