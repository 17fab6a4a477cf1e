//! The linker every instance of a plugin is built against: the contract's
//! `host` interface, the WASI interfaces of [`LINKED`] (their async variants:
//! calls are futures), the filesystem behind the host's own checks
//! ([`super::files`]), sockets and HTTP behind [`super::egress`]
//! ([`egress::LINKED`]), and nothing else: a component that imports anything
//! more is refused at load time (`plugin::capabilities`).
//!
//! Each part links itself over its own view of the Store's data (as
//! wasmtime-wasi's `add_to_linker` functions do over `WasiView`); only this
//! module names the Store's data type, [`State`].

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::Engine;
use wasmtime_wasi::cli::{WasiCli, WasiCliView};
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView};
use wasmtime_wasi::random::{WasiRandom, WasiRandomView};

use super::bindings;
use super::egress;
use super::files;
use super::state::State;

/// Interfaces linked here, without versions: what a plugin built with Rust's
/// std for wasm32-wasip2 imports, and the plugin contract.
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

/// Whether the linker gives `interface` (without its version).
pub fn links(interface: &str) -> bool {
    LINKED.contains(&interface) || egress::LINKED.contains(&interface)
}

/// The linker for instances of any plugin or transform.
pub fn linker(engine: &Engine) -> wasmtime::Result<Linker<State>> {
    use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, io, random};
    let mut linker = Linker::new(engine);
    let l = &mut linker;
    bindings::Plugin::add_to_linker::<State, HasSelf<State>>(l, |s| s)?;
    io::error::add_to_linker::<State, HasTable>(l, State::table)?;
    io::poll::add_to_linker::<State, HasTable>(l, State::table)?;
    io::streams::add_to_linker::<State, HasTable>(l, State::table)?;
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
    files::add_to_linker(l)?;
    egress::add_to_linker(l)?;
    Ok(linker)
}

/// `wasi:io` works on the resource table alone.
struct HasTable;

impl wasmtime::component::HasData for HasTable {
    type Data<'a> = &'a mut ResourceTable;
}
