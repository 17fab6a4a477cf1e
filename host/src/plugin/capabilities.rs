//! What a component must export and may import to be loaded: the
//! contract's interface at a version this host supports, and no import the
//! linker ([`super::linker`]) does not give. By default a plugin gets nothing
//! outside its own memory but clocks, randomness and a log; its grants
//! ([`super::grants`]) add directories, environment variables and hosts.

use wasmtime::component::types::ComponentItem;
use wasmtime::component::Component;
use wasmtime::Engine;

use super::error::PluginError;
use super::linker;

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
            !linker::links(name) || !matches!(item.ty, ComponentItem::ComponentInstance(_))
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
}
