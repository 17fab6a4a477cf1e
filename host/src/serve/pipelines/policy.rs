//! What a tenant's pipeline may ask for. The YAML is read like `check`
//! reads it (without the host's environment: `${VAR}` is an error), then
//! held to the tenant's limits and ceilings:
//!
//! - destination `wasm` with `plugin: NAME[@VERSION]`, one of the tenant's
//!   own plugins; a native destination only if the operator offers it,
//!   confined to the tenant (`destination::confined`): BigQuery's endpoints
//!   (named, or Google's) inside its egress ceiling and its key a secret of
//!   its own (`secret://NAME`), `file`'s path relative under its files
//!   directory (holding its `disk_mb` while it runs);
//! - transforms: `wasm: NAME[@VERSION]`, one of the tenant's own transform
//!   components, and `python` when the host has the Python runtime; each
//!   held to the same limits and grants as the destination (below), and its
//!   instances charged to the tenant's memory and CPU shares when it runs;
//! - `allow.dirs` (the destination's and the transforms') relative paths inside the tenant's files directory (no
//!   absolute path, no `..`), writable ones within its disk quota;
//! - `allow.hosts` each inside the tenant's egress ceiling; no `allow.env`
//!   (the host's environment); `allow.secrets` only `from: secret:NAME`, one
//!   of the tenant's own secrets, toward a host inside the ceiling;
//! - memory and call time within its limits; `max_concurrent_threads`
//!   lowered to the tenant's `instances` (its share of the memory budget
//!   admits no more live instances than that, whichever pipelines hold them);
//! - sources `dummy` and `kafka` (brokers inside the egress ceiling, the
//!   consumer group under the tenant's prefix), never `jsonl` (a host path);
//! - `dead_letter` to a topic, not a file.

use std::path::{Component, Path, PathBuf};

use crate::destination::DestinationConfig;
use crate::pipeline::{self, Pipeline};
use crate::plugin::grants::{Host, Scheme};
use crate::plugin::{DirGrant, Grants, HostRule, Limits};
#[cfg(feature = "kafka")]
use crate::source::kafka::config::BrokerGate;
use crate::source::SourceConfig;
use crate::transform::TransformKind;

use super::super::error::ApiError;
use super::super::registry::Registry;
use super::super::tenants::Tenant;

/// A pipeline checked for its tenant, ready to run.
pub struct Prepared {
    pub pipeline: Pipeline,
    /// The plugin and the version the run uses (the newest, unless pinned).
    pub plugin: Option<(String, u32)>,
    /// Its `wasm:` transforms and the versions the run uses.
    pub transforms: Vec<(String, u32)>,
    /// Bytes its writable grants may hold, in MiB.
    pub disk_mb: u64,
    /// The tenant's secrets it names: what its run is given.
    pub secrets: Vec<String>,
}

/// Where plugins' bytes are, by digest.
pub trait Blobs {
    fn blob(&self, digest: &str) -> PathBuf;
}

impl Blobs for super::super::plugins::PluginStore {
    fn blob(&self, digest: &str) -> PathBuf {
        super::super::plugins::PluginStore::blob(self, digest)
    }
}

pub struct Context<'a> {
    pub tenant: &'a Tenant,
    pub registry: &'a Registry,
    pub blobs: &'a dyn Blobs,
    pub native_destinations: &'a [String],
}

pub fn prepare(cx: &Context<'_>, name: &str, yaml: &str) -> Result<Prepared, ApiError> {
    let file = format!("pipelines/{name}.yaml");
    let mut pipeline = pipeline::parse(yaml, &file, |_| None).map_err(|e| ApiError::invalid(e.to_string()))?;
    let limits = &cx.tenant.limits;
    let refuse = |what: String| Err(ApiError::invalid(format!("{file}: {what}")));
    let threads = &mut pipeline.destination.options_mut().max_concurrent_threads;
    *threads = (*threads).clamp(1, limits.instances.max(1));
    check_source(cx, &file, &mut pipeline.source)?;
    let mut transforms = Vec::new();
    let mut disk_mb = 0;
    let mut secrets = Vec::new();
    for (i, spec) in pipeline.transforms.iter_mut().enumerate() {
        let field = format!("transforms[{i}] (`{}`)", spec.label);
        let size = match &mut spec.kind {
            TransformKind::Python { .. } => {
                let runtime = crate::transform::runtime::locate().map_err(|_| {
                    ApiError::invalid(format!(
                        "{file}: {field}: `python` transforms are not offered by this host (its Python transform \
                         runtime is not installed); upload a transform component and name it with `wasm: NAME`"
                    ))
                })?;
                std::fs::metadata(runtime).map_err(ApiError::internal)?.len()
            }
            TransformKind::Wasm { path, named, .. } => {
                let reference = path.to_string_lossy().into_owned();
                let (plugin, version, digest) =
                    resolve(cx, &file, &format!("{field}.wasm"), &reference, Kind::Transform)?;
                *path = cx.blobs.blob(&digest);
                if let Some(cluster) = cx.registry.cluster() {
                    super::super::plugins::fetch(cluster, path, &digest)?;
                }
                *named = Some(format!("{plugin}@{version}"));
                transforms.push((plugin, version));
                std::fs::metadata(path).map_err(ApiError::internal)?.len()
            }
        };
        disk_mb += check_sandbox(cx, &file, &field, size, &mut spec.limits, &mut spec.allow, &mut secrets)?;
    }
    if let Some(dead_letter) = &mut pipeline.dead_letter {
        if dead_letter.path.is_some() {
            return refuse("dead_letter.path: a file on the host is not offered; use dead_letter.topic".into());
        }
        if let Some(servers) = &dead_letter.bootstrap_servers {
            check_brokers(cx, &file, "dead_letter.bootstrap_servers", servers)?;
        }
        dead_letter.advertised_within = Some(broker_gate(cx));
    }
    let plugin = match &mut pipeline.destination {
        DestinationConfig::Wasm(wasm) => {
            let field = "destination.config";
            let reference = wasm.plugin.to_string_lossy().into_owned();
            let (plugin, version, digest) =
                resolve(cx, &file, &format!("{field}.plugin"), &reference, Kind::Destination)?;
            wasm.plugin = cx.blobs.blob(&digest);
            if let Some(cluster) = cx.registry.cluster() {
                super::super::plugins::fetch(cluster, &wasm.plugin, &digest)?;
            }
            let size = std::fs::metadata(&wasm.plugin).map_err(ApiError::internal)?.len();
            disk_mb += check_sandbox(cx, &file, field, size, &mut wasm.limits, &mut wasm.allow, &mut secrets)?;
            Some((plugin, version))
        }
        other if cx.native_destinations.iter().any(|d| d == other.name()) => {
            disk_mb += check_native(cx, &file, other, &mut secrets)?;
            None
        }
        other => {
            return refuse(format!(
                "destination.name: `{}` is not offered by this host; use `wasm` with one of your plugins{}",
                other.name(),
                match cx.native_destinations {
                    [] => String::new(),
                    natives => format!(" or one of: {}", natives.join(", ")),
                }
            ))
        }
    };
    if disk_mb > limits.disk_mb {
        return refuse(format!(
            "allow.dirs: writable grants of {disk_mb} MiB together are over this tenant's disk quota of {} MiB \
             (set max_mb on each)",
            limits.disk_mb
        ));
    }
    secrets.sort();
    secrets.dedup();
    Ok(Prepared {
        pipeline,
        plugin,
        transforms,
        disk_mb,
        secrets,
    })
}

/// A native destination the operator offers, held to the tenant: what it
/// connects to inside the egress ceiling, its credentials the tenant's
/// secrets, its files under the tenant's directory. Returns the disk it
/// may hold, in MiB.
fn check_native(
    cx: &Context<'_>,
    file: &str,
    destination: &DestinationConfig,
    secrets: &mut Vec<String>,
) -> Result<u64, ApiError> {
    #[cfg(feature = "bigquery")]
    check_bigquery(cx, file, destination, secrets)?;
    #[cfg(not(feature = "bigquery"))]
    let _ = secrets;
    match destination {
        DestinationConfig::File(c) => {
            if let Some(why) = crate::destination::confined::file_path_refused(c.path.as_deref()) {
                return Err(ApiError::invalid(format!("{file}: destination.config.path: {why}")));
            }
            // Like a writable grant without max_mb: the tenant's whole disk.
            Ok(cx.tenant.limits.disk_mb)
        }
        _ => Ok(0),
    }
}

/// A BigQuery destination's endpoints (those named, else Google's) inside
/// the egress ceiling, its key one of the tenant's secrets.
#[cfg(feature = "bigquery")]
fn check_bigquery(
    cx: &Context<'_>,
    file: &str,
    destination: &DestinationConfig,
    secrets: &mut Vec<String>,
) -> Result<(), ApiError> {
    use crate::destination::bigquery::{load, streaming_v2, REST_ENDPOINT as REST};
    let or = |named: &Option<String>, default: &str| named.clone().unwrap_or_else(|| default.to_string());
    let (endpoints, auth, named) = match destination {
        DestinationConfig::BigQuery(c) => {
            let gcs = c.gcs_endpoint.as_ref().map(|e| match e.contains("://") {
                true => e.clone(),
                false => format!("http://{e}"),
            });
            let named = c.endpoint.is_some() || gcs.is_some();
            let endpoints = vec![
                ("endpoint", or(&c.endpoint, REST)),
                ("gcs_endpoint", or(&gcs, load::GCS_DEFAULT_ENDPOINT)),
            ];
            (endpoints, c.authentication.as_ref(), named)
        }
        DestinationConfig::BigQueryStreaming(c) => (
            vec![("endpoint", or(&c.endpoint, REST))],
            c.authentication.as_ref(),
            c.endpoint.is_some(),
        ),
        DestinationConfig::BigQueryStreamingV2(c) => {
            let named = c.endpoint.is_some() || c.storage_write_endpoint.is_some();
            let endpoints = vec![
                ("endpoint", or(&c.endpoint, REST)),
                (
                    "storage_write_endpoint",
                    or(&c.storage_write_endpoint, streaming_v2::DEFAULT_ENDPOINT),
                ),
            ];
            (endpoints, c.authentication.as_ref(), named)
        }
        _ => return Ok(()),
    };
    let refuse = |what: String| Err(ApiError::invalid(format!("{file}: destination.config.{what}")));
    let egress = &cx.tenant.limits.egress;
    for (field, url) in endpoints {
        let rule = match endpoint_rule(&url) {
            Ok(rule) => rule,
            Err(why) => return refuse(format!("{field}: `{url}`: {why}")),
        };
        if !egress.iter().any(|c| rule.within(c)) {
            return refuse(format!(
                "{field}: `{url}` is outside this tenant's egress ceiling ({})",
                ceiling(egress)
            ));
        }
    }
    let key = auth.map(|a| a.service_account_key.trim()).unwrap_or_default();
    match crate::config::secret::reference(key) {
        None if key.is_empty() && named => Ok(()),
        None if key.is_empty() => refuse(
            "authentication.service_account_key: give secret://NAME, a secret of yours holding a service account \
             key (the host's own credentials are never used for tenants)"
                .into(),
        ),
        None => refuse(
            "authentication.service_account_key: give secret://NAME (PUT /v1/secrets/NAME with the key), not the \
             key itself: a pipeline file is shown by GET"
                .into(),
        ),
        Some(name) => {
            require_secret(cx, file, "destination.config.authentication.service_account_key", name)?;
            secrets.push(name.to_string());
            Ok(())
        }
    }
}

/// The tenant has a secret `name`: the same answer for another tenant's as
/// for one nobody has.
fn require_secret(cx: &Context<'_>, file: &str, field: &str, name: &str) -> Result<(), ApiError> {
    if cx.registry.secret(&cx.tenant.name, name)?.is_none() {
        return Err(ApiError::invalid(format!(
            "{file}: {field}: no secret `{name}` (store it with PUT /v1/secrets/{name})"
        )));
    }
    Ok(())
}

/// The rule an endpoint URL must be inside the ceiling as:
/// `scheme://host:port`.
#[cfg(feature = "bigquery")]
fn endpoint_rule(url: &str) -> Result<HostRule, String> {
    let uri: http::Uri = url.parse().map_err(|_| "not a URL".to_string())?;
    let scheme = match uri.scheme_str() {
        Some(s @ ("http" | "https")) => s,
        _ => return Err("an endpoint is http:// or https://".into()),
    };
    let authority = uri.authority().ok_or("the URL has no host")?;
    let port = authority.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
    HostRule::parse(&format!("{scheme}://{}:{port}", authority.host()))
}

/// A sandboxed component's limits and grants (the destination's, or a
/// transform's), held to the tenant's: memory and call time within its
/// limits, no environment or secrets, hosts inside its egress ceiling,
/// directories placed in its files directory. Returns the writable disk
/// the grants may hold, in MiB.
fn check_sandbox(
    cx: &Context<'_>,
    file: &str,
    field: &str,
    size: u64,
    sandbox: &mut Limits,
    allow: &mut Grants,
    secrets: &mut Vec<String>,
) -> Result<u64, ApiError> {
    let limits = &cx.tenant.limits;
    let refuse = |what: String| Err(ApiError::invalid(format!("{file}: {field}.{what}")));
    match sandbox.memory_mb {
        Some(asked) if asked > limits.memory_mb => {
            return refuse(format!(
                "limits.memory_mb: {asked} is over this tenant's memory limit of {} MiB",
                limits.memory_mb
            ));
        }
        Some(_) => {}
        // The size-based default (more for an interpreter inside), capped by the tenant's limit.
        None => {
            let default = sandbox.for_component(size).memory_mb();
            sandbox.memory_mb = Some(default.min(limits.memory_mb));
        }
    }
    if sandbox.call_timeout_ms > limits.call_timeout_ms {
        return refuse(format!(
            "limits.call_timeout_ms: {} is over this tenant's limit of {} ms",
            sandbox.call_timeout_ms, limits.call_timeout_ms
        ));
    }
    if let Some(var) = allow.env.first() {
        return refuse(format!(
            "allow.env: `{var}`: the host's environment is not offered to tenants"
        ));
    }
    for (name, grant) in &allow.secrets {
        let Some(secret) = crate::config::secret::grant_source(&grant.from) else {
            return refuse(format!(
                "allow.secrets.{name}.from: `{}`: env: and file: read the host's environment or files, which are \
                 not offered to tenants; give secret:NAME, one of your secrets (PUT /v1/secrets/NAME)",
                grant.from
            ));
        };
        require_secret(cx, file, &format!("{field}.allow.secrets.{name}.from"), secret)?;
        if !limits.egress.iter().any(|c| grant.host.within(c)) {
            return refuse(format!(
                "allow.secrets.{name}.host: `{}` is outside this tenant's egress ceiling ({})",
                grant.host,
                ceiling(&limits.egress)
            ));
        }
        secrets.push(secret.to_string());
    }
    for rule in &allow.hosts {
        if !limits.egress.iter().any(|c| rule.within(c)) {
            return refuse(format!(
                "allow.hosts: `{rule}` is outside this tenant's egress ceiling ({})",
                ceiling(&limits.egress)
            ));
        }
    }
    let mut disk_mb = 0;
    for grant in &mut allow.dirs {
        disk_mb += place(cx.tenant, file, field, grant)?;
    }
    Ok(disk_mb)
}

/// What a pipeline uses a plugin as; an upload is one or the other (its
/// `describe.kind`; uploads from before transforms were offered are
/// destinations).
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Destination,
    Transform,
}

impl Kind {
    fn of(describe: &serde_json::Value) -> Kind {
        match describe["kind"].as_str() {
            Some("transform") => Kind::Transform,
            _ => Kind::Destination,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Destination => "a destination plugin",
            Kind::Transform => "a transform",
        }
    }
}

fn ceiling(rules: &[HostRule]) -> String {
    match rules {
        [] => "none: no network".into(),
        rules => rules.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", "),
    }
}

/// `NAME[@VERSION]` among the tenant's plugins, used as `kind` in `field`:
/// (name, version, digest).
fn resolve(
    cx: &Context<'_>,
    file: &str,
    field: &str,
    reference: &str,
    kind: Kind,
) -> Result<(String, u32, String), ApiError> {
    let (name, pinned) = match reference.split_once('@') {
        Some((name, version)) => {
            let version = version.parse::<u32>().map_err(|_| {
                ApiError::invalid(format!(
                    "{file}: {field}: `{reference}`: the version after `@` is a number (1, 2, ...)"
                ))
            })?;
            (name, Some(version))
        }
        None => (reference, None),
    };
    let versions = cx.registry.plugins(&cx.tenant.name, Some(name))?;
    let found = match pinned {
        Some(v) => versions.iter().find(|p| p.version == v),
        None => versions.last(),
    };
    match found {
        Some(p) if Kind::of(&p.describe) != kind => Err(ApiError::invalid(format!(
            "{file}: {field}: `{reference}`: plugin `{name}` version {} is {}, not {}",
            p.version,
            Kind::of(&p.describe).name(),
            kind.name()
        ))),
        Some(p) => Ok((p.name.clone(), p.version, p.digest.clone())),
        None if !versions.is_empty() => {
            let kept: Vec<_> = versions.iter().map(|p| p.version.to_string()).collect();
            Err(ApiError::invalid(format!(
                "{file}: {field}: `{reference}`: plugin `{name}` has version(s) {} \
                 (versions no pipeline pins or runs are removed when a newer one comes)",
                kept.join(", ")
            )))
        }
        None => Err(ApiError::invalid(format!(
            "{file}: {field}: no plugin `{reference}` (upload it with PUT /v1/plugins/{name})"
        ))),
    }
}

/// Puts a directory grant inside the tenant's files directory; returns its
/// quota in MiB when it is writable.
fn place(tenant: &Tenant, file: &str, field: &str, grant: &mut DirGrant) -> Result<u64, ApiError> {
    let asked = grant.host.clone();
    let inside = asked.components().all(|c| matches!(c, Component::Normal(_)));
    if asked.as_os_str().is_empty() || !inside {
        return Err(ApiError::invalid(format!(
            "{file}: {field}.allow.dirs: `{}`: give a relative path inside your files directory, \
             without `..` (absolute paths are refused)",
            asked.display()
        )));
    }
    let host = tenant.files.join(&asked);
    std::fs::create_dir_all(&host).map_err(ApiError::internal)?;
    // The plugin sees its own path, never where the host keeps it.
    grant
        .guest
        .get_or_insert_with(|| Path::new("/").join(&asked).display().to_string());
    grant.host = host;
    if !grant.writable {
        return Ok(0);
    }
    let quota = *grant.max_mb.get_or_insert(tenant.limits.disk_mb);
    Ok(quota)
}

fn check_source(cx: &Context<'_>, file: &str, source: &mut SourceConfig) -> Result<(), ApiError> {
    match source {
        SourceConfig::Dummy(_) => Ok(()),
        SourceConfig::Jsonl(_) => Err(ApiError::invalid(format!(
            "{file}: source.name: `jsonl` reads a host path, which is not offered; use `kafka` or `dummy`"
        ))),
        #[cfg(feature = "kafka")]
        SourceConfig::Kafka(kafka) => {
            check_brokers(cx, file, "source.bootstrap_servers", &kafka.bootstrap_servers)?;
            if let Some(key) = kafka
                .consumer_config
                .keys()
                .find(|k| !CONSUMER_KEYS.contains(&k.as_str()))
            {
                return Err(ApiError::invalid(format!(
                    "{file}: source.consumer_config.{key}: not offered to tenants (allowed: {})",
                    CONSUMER_KEYS.join(", ")
                )));
            }
            // Tenants on one broker cannot join (and steal from) each other's groups.
            kafka.group_id = format!("{}{}.{}", GROUP_PREFIX, cx.tenant.name, kafka.group_id);
            kafka.advertised_within = Some(broker_gate(cx));
            Ok(())
        }
    }
}

/// The addresses the tenant's brokers may advertise: its egress ceiling.
fn broker_gate(cx: &Context<'_>) -> BrokerGate {
    let egress = cx.tenant.limits.egress.clone();
    BrokerGate::new(ceiling(&egress), move |host, port| within(&egress, host, port))
}

/// The prefix of every consumer group a tenant's pipeline joins:
/// `bizon-serve.<tenant>.<group_id>`.
pub const GROUP_PREFIX: &str = "bizon-serve.";

/// librdkafka settings a tenant may set: none reads a host file or loads code.
#[cfg(feature = "kafka")]
const CONSUMER_KEYS: &[&str] = &[
    "auto.offset.reset",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "fetch.min.bytes",
    "fetch.max.bytes",
    "fetch.wait.max.ms",
    "max.partition.fetch.bytes",
    "queued.max.messages.kbytes",
    "partition.assignment.strategy",
    "client.id",
    "security.protocol",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
    "isolation.level",
];

/// Whether a broker at `host:port` is inside the egress ceiling.
fn within(egress: &[HostRule], host: &str, port: u16) -> bool {
    let host = Host::parse(host);
    egress.iter().any(|c| c.matches(Scheme::Tcp, &host, port))
}

fn check_brokers(cx: &Context<'_>, file: &str, field: &str, servers: &str) -> Result<(), ApiError> {
    let egress = &cx.tenant.limits.egress;
    for server in servers.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let parsed = server
            .rsplit_once(':')
            .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)));
        let allowed = parsed.is_some_and(|(host, port)| within(egress, host, port));
        if !allowed {
            return Err(ApiError::invalid(format!(
                "{file}: {field}: `{server}` is outside this tenant's egress ceiling ({}); brokers are HOST:PORT",
                ceiling(egress)
            )));
        }
    }
    Ok(())
}
