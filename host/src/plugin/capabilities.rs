//! What a plugin may touch. By default: nothing outside its own memory but
//! clocks, randomness and a log. Grants add preopened directories (through
//! the host's filesystem layer, [`super::files`]: no symlinks, a byte quota),
//! named environment variables and outbound hosts. Sockets and HTTP are
//! linked for every plugin and denied at use unless granted (see
//! [`super::egress`]); anything else is not linked, and a component that
//! imports it is refused at load time.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::Engine;
use wasmtime_wasi::cli::{WasiCli, WasiCliView};
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView};
use wasmtime_wasi::random::{WasiRandom, WasiRandomView};
use wasmtime_wasi::{FsPerms, ResourceTable, WasiCtx, WasiCtxBuilder};

use super::egress::{self, Egress, HostRule, NetworkLimits, SecretGrant};
use super::instance::State;
use super::stdio::Captured;
use super::PluginError;

/// `allow:` in a `wasm` destination's config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    #[serde(default)]
    pub dirs: Vec<DirGrant>,
    /// Environment variables copied from the host's environment, by name.
    #[serde(default)]
    pub env: Vec<String>,
    /// Outbound hosts (`https://api.example.com`, `tcp://db:5432`, ...);
    /// empty: no network.
    #[serde(default)]
    pub hosts: Vec<HostRule>,
    /// Credentials the host adds to requests, by name.
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretGrant>,
    #[serde(default)]
    pub network: NetworkLimits,
}

/// A host directory the plugin sees at `guest`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirGrant {
    /// Relative paths are relative to the working directory.
    pub host: PathBuf,
    /// Where the plugin sees it; the host path when left out.
    #[serde(default)]
    pub guest: Option<String>,
    #[serde(default)]
    pub writable: bool,
    /// Bytes the plugin may keep under a writable grant, in MiB; see
    /// [`super::files::DEFAULT_MAX_MB`].
    #[serde(default)]
    pub max_mb: Option<u64>,
}

impl DirGrant {
    pub fn guest_path(&self) -> String {
        self.guest.clone().unwrap_or_else(|| self.host.display().to_string())
    }
}

/// Interfaces the host links, without versions: what a plugin built with
/// Rust's std for wasm32-wasip2 imports, and the plugin contract.
const LINKED: &[&str] = &[
    "bizon:destination/host",
    "bizon:destination/types",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:clocks/wall-clock",
    "wasi:clocks/monotonic-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    // Linked always: without a granted directory there is nothing to open.
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
];

/// The package and interface a plugin must export.
pub const DESTINATION_EXPORT: &str = "bizon:destination/destination";

/// What a component must export to be loaded as one kind of plugin.
#[derive(Debug, Clone, Copy)]
pub struct Export {
    /// The interface, without its version.
    pub interface: &'static str,
    /// What the user calls it, in errors.
    pub kind: &'static str,
}

impl Export {
    pub const DESTINATION: Export = Export {
        interface: DESTINATION_EXPORT,
        kind: "destination plugin",
    };
    pub const TRANSFORM: Export = Export {
        interface: "bizon:destination/transform",
        kind: "transform",
    };
}

/// The WIT package version this host implements, read from the contract.
pub fn host_version() -> &'static str {
    const WIT: &str = include_str!("../../../wit/destination.wit");
    WIT.lines()
        .find_map(|l| l.trim().strip_prefix("package bizon:destination@"))
        .and_then(|v| v.strip_suffix(';'))
        .expect("wit/destination.wit declares `package bizon:destination@X.Y.Z;`")
}

fn unversioned(name: &str) -> &str {
    name.split('@').next().unwrap_or(name)
}

/// (major, minor) of `X.Y.Z[-pre]`.
fn major_minor(version: &str) -> Option<(u64, u64)> {
    let mut parts = version.split(['.', '-', '+']);
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Semver compatibility: same major, and before 1.0 the same minor too.
pub fn version_supported(plugin: &str, host: &str) -> bool {
    match (major_minor(plugin), major_minor(host)) {
        (Some((pm, pn)), Some((hm, hn))) => pm == hm && (hm > 0 || pn == hn),
        _ => false,
    }
}

/// Refuses a component that does not export `wanted` at a supported
/// version, or that imports what the host does not give.
pub fn check_component(
    plugin: &str,
    component: &Component,
    engine: &Engine,
    wanted: Export,
) -> Result<(), PluginError> {
    let ty = component.component_type();
    let exports: Vec<&str> = ty.exports(engine).map(|(name, _)| name).collect();
    let Some(export) = exports.iter().find(|name| unversioned(name) == wanted.interface) else {
        return Err(PluginError::NotAPlugin {
            plugin: plugin.to_string(),
            kind: wanted.kind,
            wanted: wanted.interface,
            exports: if exports.is_empty() {
                "nothing".into()
            } else {
                exports.join(", ")
            },
        });
    };
    let found = export.split_once('@').map_or("none", |(_, v)| v);
    if !version_supported(found, host_version()) {
        return Err(PluginError::Version {
            plugin: plugin.to_string(),
            found: found.to_string(),
            supported: host_version().to_string(),
        });
    }
    let refused: Vec<String> = ty
        .imports(engine)
        .filter(|(name, item)| {
            let name = unversioned(name);
            !(LINKED.contains(&name) || egress::LINKED.contains(&name))
                || !matches!(item.ty, ComponentItem::ComponentInstance(_))
        })
        .map(|(name, _)| name.to_string())
        .collect();
    if !refused.is_empty() {
        return Err(PluginError::Imports {
            plugin: plugin.to_string(),
            refused,
        });
    }
    Ok(())
}

/// The linker every instance of a plugin is built against: the contract's
/// `host` plus the WASI interfaces of [`LINKED`] (their async variants: calls
/// are futures), the filesystem behind the host's own checks, sockets and
/// HTTP behind [`egress`] ([`egress::LINKED`]), and nothing else.
pub fn linker(engine: &Engine) -> wasmtime::Result<Linker<State>> {
    use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, io, random};
    let mut linker = Linker::new(engine);
    let l = &mut linker;
    super::bindings::Plugin::add_to_linker::<State, HasSelf<State>>(l, |s| s)?;
    io::error::add_to_linker::<State, HasTable>(l, |s| &mut s.table)?;
    io::poll::add_to_linker::<State, HasTable>(l, |s| &mut s.table)?;
    io::streams::add_to_linker::<State, HasTable>(l, |s| &mut s.table)?;
    clocks::wall_clock::add_to_linker::<State, WasiClocks>(l, State::clocks)?;
    clocks::monotonic_clock::add_to_linker::<State, WasiClocks>(l, State::clocks)?;
    random::random::add_to_linker::<State, WasiRandom>(l, State::random)?;
    random::insecure::add_to_linker::<State, WasiRandom>(l, State::random)?;
    random::insecure_seed::add_to_linker::<State, WasiRandom>(l, State::random)?;
    cli::environment::add_to_linker::<State, WasiCli>(l, State::cli)?;
    cli::exit::add_to_linker::<State, WasiCli>(l, State::cli)?;
    cli::stdin::add_to_linker::<State, WasiCli>(l, State::cli)?;
    cli::stdout::add_to_linker::<State, WasiCli>(l, State::cli)?;
    cli::stderr::add_to_linker::<State, WasiCli>(l, State::cli)?;
    cli::terminal_input::add_to_linker::<State, WasiCli>(l, State::cli)?;
    cli::terminal_output::add_to_linker::<State, WasiCli>(l, State::cli)?;
    cli::terminal_stdin::add_to_linker::<State, WasiCli>(l, State::cli)?;
    cli::terminal_stdout::add_to_linker::<State, WasiCli>(l, State::cli)?;
    cli::terminal_stderr::add_to_linker::<State, WasiCli>(l, State::cli)?;
    filesystem::types::add_to_linker::<State, WasiFilesystem>(l, State::filesystem)?;
    filesystem::preopens::add_to_linker::<State, WasiFilesystem>(l, State::filesystem)?;
    super::files::add_to_linker(l)?;
    egress::add_to_linker(l)?;
    Ok(linker)
}

struct HasTable;

impl wasmtime::component::HasData for HasTable {
    type Data<'a> = &'a mut ResourceTable;
}

/// The WASI context of one instance: the grants, and stdout/stderr captured.
pub fn wasi_ctx(grants: &Grants, captured: &Captured, egress: &Egress) -> Result<WasiCtx, String> {
    let mut builder = WasiCtxBuilder::new();
    egress.configure(&mut builder);
    builder.stdout(captured.clone()).stderr(captured.clone());
    for dir in &grants.dirs {
        let perms = if dir.writable {
            FsPerms::ReadWrite
        } else {
            FsPerms::ReadOnly
        };
        builder
            .preopened_dir(&dir.host, dir.guest_path(), perms)
            .map_err(|e| format!("cannot grant the directory {} (allow.dirs): {e:#}", dir.host.display()))?;
    }
    for name in &grants.env {
        // A granted variable that is unset is simply absent, as it would be
        // for a native program.
        if let Ok(value) = std::env::var(name) {
            builder.env(name, value);
        }
    }
    Ok(builder.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_follow_semver_with_minor_pinned_before_1_0() {
        assert!(version_supported("0.1.0", "0.1.0"));
        assert!(version_supported("0.1.7", "0.1.0"));
        assert!(!version_supported("0.2.0", "0.1.0"));
        assert!(!version_supported("9.0.0", "0.1.0"));
        assert!(version_supported("1.4.0", "1.0.0"));
        assert!(!version_supported("2.0.0", "1.0.0"));
        assert!(!version_supported("none", "0.1.0"));
    }

    #[test]
    fn host_version_comes_from_the_wit_file() {
        assert_eq!(host_version(), "0.1.0");
    }

    #[test]
    fn an_empty_component_is_not_a_plugin() {
        let engine = Engine::default();
        let component = Component::new(&engine, b"\0asm\x0d\0\x01\0").unwrap();
        let err = check_component("empty.wasm", &component, &engine, Export::DESTINATION).unwrap_err();
        assert!(err.to_string().contains("not a bizon destination plugin"), "{err}");
        assert!(err.to_string().contains("exports nothing"), "{err}");
    }

    #[test]
    fn unset_granted_env_is_absent_and_missing_dir_is_an_error() {
        let grants = Grants {
            dirs: vec![DirGrant {
                host: "/definitely/not/here".into(),
                guest: None,
                writable: false,
                max_mb: None,
            }],
            ..Grants::default()
        };
        let egress = Egress::new("t.wasm", &grants).unwrap();
        let Err(err) = wasi_ctx(&grants, &Captured::default(), &egress) else {
            panic!("granted a missing directory")
        };
        assert!(err.contains("/definitely/not/here"), "{err}");
    }
}
