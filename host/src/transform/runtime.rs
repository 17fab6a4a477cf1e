//! Where the Python transform runtime (`python-transform.wasm`, built by
//! `scripts/build-transform-runtime.sh`) is found: `$BIZON_HOST_PYTHON_TRANSFORM`,
//! else next to the `bizon-host` binary, else in `../wasm/` from it (the
//! repository's `target/wasm/`, where the script puts it).

use std::path::PathBuf;

pub const FILE_NAME: &str = "python-transform.wasm";
pub const ENV: &str = "BIZON_HOST_PYTHON_TRANSFORM";
pub const BUILD: &str = "bash scripts/build-transform-runtime.sh";

/// The runtime's path, or the places looked at.
pub fn locate() -> Result<PathBuf, Vec<PathBuf>> {
    if let Some(path) = std::env::var_os(ENV).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        // Named explicitly: not looking further, so a typo is not hidden.
        return if path.is_file() { Ok(path) } else { Err(vec![path]) };
    }
    let candidates: Vec<PathBuf> = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(PathBuf::from))
        .map(|dir| vec![dir.join(FILE_NAME), dir.join("..").join("wasm").join(FILE_NAME)])
        .unwrap_or_default();
    match candidates.iter().find(|p| p.is_file()) {
        Some(found) => Ok(found.clone()),
        None => Err(candidates),
    }
}

/// The one message a pipeline with Python transforms gets when the runtime
/// is not there.
pub fn missing_message(searched: &[PathBuf]) -> String {
    let searched: Vec<String> = searched.iter().map(|p| p.display().to_string()).collect();
    format!(
        "Python transforms run in bizon-host's Python transform runtime ({FILE_NAME}), which is not installed \
         (looked at: {}). Build it from the bizon-host repository with `{BUILD}` (it goes to target/wasm/), \
         or point ${ENV} at it",
        if searched.is_empty() {
            "nowhere: the binary's directory is unknown".to_string()
        } else {
            searched.join(", ")
        }
    )
}
