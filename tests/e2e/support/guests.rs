//! What the end-to-end tests of plugins share: the repository root, the
//! WebAssembly guests (built once per test binary by scripts/build-plugins.sh,
//! a no-op when they are fresh) and a process's output as one text.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Once;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

pub fn wasm(name: &str) -> PathBuf {
    static BUILD: Once = Once::new();
    BUILD.call_once(|| {
        let status = Command::new("bash")
            .arg(root().join("scripts/build-plugins.sh"))
            .stdout(Stdio::null())
            .status()
            .expect("cannot run bash scripts/build-plugins.sh");
        assert!(
            status.success(),
            "scripts/build-plugins.sh failed; is wasm32-wasip2 installed?"
        );
    });
    root()
        .join("target/wasm/wasm32-wasip2/release")
        .join(format!("{name}.wasm"))
}

/// The Python transform runtime, built once per test binary (a no-op when
/// fresh). bizon-host finds it in target/wasm/, `../wasm` from its binary.
#[allow(dead_code)] // for the tests with Python transforms
pub fn python_runtime() {
    static BUILD: Once = Once::new();
    BUILD.call_once(|| {
        let status = Command::new("bash")
            .arg(root().join("scripts/build-transform-runtime.sh"))
            .status()
            .expect("cannot run bash scripts/build-transform-runtime.sh");
        assert!(status.success(), "scripts/build-transform-runtime.sh failed");
    });
}

pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
