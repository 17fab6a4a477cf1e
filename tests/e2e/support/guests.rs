//! The WebAssembly guests the tests run: the Rust plugins and transforms of
//! plugins/ and tests/plugins/, the Python and JavaScript ones built with the
//! SDKs (scripts/build-plugins.sh builds them all, once per test process; a
//! no-op when they are fresh), components written by hand in WAT for shapes
//! a Rust plugin cannot take, and the Python transform runtime.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Once;

use super::common::root;

fn build_once() {
    static BUILD: Once = Once::new();
    BUILD.call_once(|| {
        let status = Command::new("bash")
            .arg(root().join("scripts/build-plugins.sh"))
            .current_dir(root())
            .stdout(Stdio::null())
            .status()
            .expect("cannot run bash scripts/build-plugins.sh");
        assert!(
            status.success(),
            "bash scripts/build-plugins.sh failed (its errors are above)"
        );
    });
}

fn built(path: PathBuf) -> PathBuf {
    build_once();
    assert!(
        path.exists(),
        "{} is not there after scripts/build-plugins.sh",
        path.display()
    );
    path
}

/// A Rust guest: `name` is its crate's name with `_` for `-` (bizon_csv).
pub fn wasm(name: &str) -> PathBuf {
    built(
        root()
            .join("target/wasm/wasm32-wasip2/release")
            .join(format!("{name}.wasm")),
    )
}

/// A Python guest: its directory's name with `_` for `-` (python_jsonl).
pub fn python_wasm(name: &str) -> PathBuf {
    built(root().join("target/wasm/python").join(format!("{name}.wasm")))
}

/// A JavaScript guest: its directory's name with `_` for `-` (js_summary).
pub fn js_wasm(name: &str) -> PathBuf {
    built(root().join("target/wasm/js").join(format!("{name}.wasm")))
}

/// Builds the Python transform runtime once per test process (a no-op when
/// fresh); bizon-host finds it in target/wasm/, `../wasm` from its binary.
pub fn python_runtime() {
    static BUILD: Once = Once::new();
    BUILD.call_once(|| {
        let status = Command::new("bash")
            .arg(root().join("scripts/build-transform-runtime.sh"))
            .status()
            .expect("cannot run bash scripts/build-transform-runtime.sh");
        assert!(status.success(), "bash scripts/build-transform-runtime.sh failed");
    });
}

/// tests/plugins/wat/destination.wat with its @EXTRA@ and @DESCRIBE@ holes
/// filled, compiled to the component `dir/NAME.wasm`.
pub fn wat_plugin(dir: &Path, name: &str, extra: &str, describe: &str) -> PathBuf {
    wat_component(dir, name, |template| {
        template.replace("@EXTRA@", extra).replace("@DESCRIBE@", describe)
    })
}

/// tests/plugins/wat/destination.wat as `edit` makes it (holes it leaves
/// are emptied), compiled to the component `dir/NAME.wasm`.
fn wat_component(dir: &Path, name: &str, edit: impl FnOnce(&str) -> String) -> PathBuf {
    let template = std::fs::read_to_string(root().join("tests/plugins/wat/destination.wat")).unwrap();
    let text = edit(&template).replace("@EXTRA@", "").replace("@DESCRIBE@", "");
    let bytes = wat::parse_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    let path = dir.join(format!("{name}.wasm"));
    std::fs::write(&path, bytes).unwrap();
    path
}

/// `dir/wrong_version.wasm`: a plugin of the contract `bizon:destination@9.0.0`,
/// which a host must refuse to load, naming both versions.
pub fn wrong_version(dir: &Path) -> PathBuf {
    wat_component(dir, "wrong_version", |text| {
        text.replace(
            "\"bizon:destination/destination@0.1.0\"",
            "\"bizon:destination/destination@9.0.0\"",
        )
    })
}

/// `dir/unknown_import.wasm`: a plugin that imports `bizon:destination/escape`,
/// an interface no host implements, which a host must refuse at load,
/// naming the import.
pub fn unknown_import(dir: &Path) -> PathBuf {
    let escape = r#"(import "bizon:destination/escape@0.1.0" (instance (export "run" (func (param "command" string) (result string)))))"#;
    wat_plugin(dir, "unknown_import", escape, "")
}

/// `dir/first_contract.wasm`: a plugin shaped as a component built against
/// `bizon:destination@0.1.0` as first published imports it: `types` with
/// `log-level` only, `host` with `log` only (no `batch-source`).
pub fn first_contract(dir: &Path) -> PathBuf {
    let imports = r#"(import "bizon:destination/types@0.1.0" (instance $types
        (type $level (enum "trace" "debug" "info" "warn" "error"))
        (export "log-level" (type (eq $level)))))
      (alias export $types "log-level" (type $log-level))
      (import "bizon:destination/host@0.1.0" (instance $host
        (alias outer 1 $log-level (type $level))
        (export "log-level" (type $lv (eq $level)))
        (export "log" (func (param "level" $lv) (param "message" string)))))"#;
    wat_plugin(dir, "first_contract", imports, "")
}
