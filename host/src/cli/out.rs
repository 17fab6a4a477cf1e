//! Standard output for the commands that print an answer. `println!` panics
//! when the reader went away (`bizon-host pipeline logs p | head`: "failed
//! printing to stdout: Broken pipe"); a Unix tool stops quietly instead.
//! Rust ignores SIGPIPE so that a closed socket is an error, not a death,
//! which `run` and `serve` need; so the pipe is handled here, where it is
//! written, and the process ends with status 0: the reader asked for no
//! more.

use std::fmt::Arguments;
use std::io::{ErrorKind, Write};

/// Writes one line to standard output; a closed pipe ends the process quietly.
pub fn line(args: Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    let written = stdout.write_fmt(args).and_then(|()| stdout.write_all(b"\n"));
    match written.and_then(|()| stdout.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::BrokenPipe => std::process::exit(0),
        // Anything else (a full disk behind a redirection) is worth a word.
        Err(e) => {
            eprintln!("error: writing to standard output: {e}");
            std::process::exit(1);
        }
    }
}

/// `println!` that ends the process quietly on a closed pipe.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::cli::out::line(format_args!($($arg)*))
    };
}
pub(crate) use say;
