//! A plugin that misbehaves on purpose, one way per `plugin_config`
//! `{"mode": "..."}`, so the host's tests can show that each misbehaviour ends
//! only this instance (or is refused) and never harms the host:
//!
//! - `ok`: behaves.
//! - `loop`: never returns from write (time limit).
//! - `memory`: allocates in write until out of memory (memory cap).
//! - `stack-overflow`: recurses without bound in write.
//! - `panic-open`, `panic-write`: panics there (a trap).
//! - `read-file`: reads /etc/passwd in write and returns a fatal error saying
//!   whether it could ("read /etc/passwd: N bytes" or "read failed: ...").
//! - `env`: fails with "env vars: N", the number of variables it can see.
//! - `log-flood`: logs 1,000,000 lines in write, then succeeds.
//! - `big-error`: returns a 100 MB fatal error message.
//! - `flaky`: the first attempt of each (destination_id, sequence) is
//!   retryable, the retry succeeds.
//! - `reject-odd`: rejects the odd row indexes, writes the others.

use std::collections::HashSet;
use std::hint::black_box;

use bizon_sdk::{export_destination, log, BatchInfo, Config, Destination, Error, RecordBatch, WriteError};

#[derive(serde::Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "kebab-case")]
enum Mode {
    Ok,
    Loop,
    Memory,
    StackOverflow,
    PanicOpen,
    PanicWrite,
    ReadFile,
    Env,
    LogFlood,
    BigError,
    Flaky,
    RejectOdd,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct HostileConfig {
    mode: Mode,
}

struct Hostile {
    mode: Mode,
    attempted: HashSet<(String, u64)>,
}

impl Destination for Hostile {
    const NAME: &'static str = "hostile";

    fn open(config: Config) -> Result<Self, Error> {
        let HostileConfig { mode } = config.parse()?;
        if mode == Mode::PanicOpen {
            panic!("hostile: panic in open");
        }
        Ok(Hostile {
            mode,
            attempted: HashSet::new(),
        })
    }

    fn write(&mut self, batch: &RecordBatch, info: &BatchInfo) -> Result<u64, WriteError> {
        match self.mode {
            Mode::Ok | Mode::PanicOpen => Ok(info.num_rows),
            Mode::Loop => {
                let mut n = 0u64;
                loop {
                    n = black_box(n.wrapping_add(1));
                }
            }
            Mode::Memory => {
                let mut hoard = Vec::new();
                loop {
                    hoard.push(black_box(vec![1u8; 1 << 20]));
                }
            }
            Mode::StackOverflow => Ok(recurse(black_box(0))),
            Mode::PanicWrite => panic!("hostile: panic in write"),
            Mode::ReadFile => Err(match std::fs::read("/etc/passwd") {
                Ok(bytes) => WriteError::fatal(format!("read /etc/passwd: {} bytes", bytes.len())),
                Err(e) => WriteError::fatal(format!("read failed: {e}")),
            }),
            Mode::Env => Err(WriteError::fatal(format!("env vars: {}", std::env::vars().count()))),
            Mode::LogFlood => {
                for i in 0..1_000_000 {
                    log::info!("flood {i}");
                }
                Ok(info.num_rows)
            }
            Mode::BigError => Err(WriteError::fatal("x".repeat(100 << 20))),
            Mode::Flaky => {
                if self.attempted.insert((info.destination_id.clone(), info.sequence)) {
                    Err(WriteError::retryable(format!(
                        "flaky: first attempt of sequence {}",
                        info.sequence
                    )))
                } else {
                    Ok(info.num_rows)
                }
            }
            Mode::RejectOdd => {
                let odd = (1..batch.num_rows() as u64).step_by(2);
                let rejected: Vec<_> = odd.map(|row| (row, format!("row {row} is odd"))).collect();
                if rejected.is_empty() {
                    Ok(info.num_rows)
                } else {
                    Err(WriteError::Rejected(rejected))
                }
            }
        }
    }
}

/// The frame keeps a buffer alive across the call so the recursion can be
/// neither turned into a loop nor optimized away.
#[allow(unconditional_recursion)] // unbounded on purpose: the mode exists to overflow
fn recurse(depth: u64) -> u64 {
    let frame = black_box([depth; 64]);
    recurse(depth + 1) + frame[black_box(3)]
}

export_destination!(Hostile);
