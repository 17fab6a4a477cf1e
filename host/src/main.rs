use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::prelude::*;
use tracing_subscriber::EnvFilter;

use bizon_host::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cli.log_level));
    let stderr = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_filter(filter);
    let registry = tracing_subscriber::registry().with(stderr);
    // `serve` keeps each pipeline's lines for its API, whatever stderr shows.
    #[cfg(feature = "serve")]
    let registry = registry.with(bizon_host::serve::logs::Layer.with_filter(LevelFilter::INFO));
    registry.init();
    #[cfg(feature = "serve")]
    if matches!(cli.command, cli::Command::Serve(_)) {
        bizon_host::serve::runtime::cap_malloc_arenas();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("starting the runtime");
    runtime.block_on(cli::main(cli))
}
