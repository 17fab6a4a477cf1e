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
//! - `reject-first`: rejects row 0 only, writes the others.
//! - `reject-duplicates`: names row 0 ten times.
//! - `reject-none`: answers `rejected` with an empty list.
//! - `sleep-open`, `sleep-check`, `sleep-write`, `sleep-finalize`: sleep
//!   (a blocking WASI poll, not a loop) for ten minutes there.
//! - `forge-log`: logs, prints and fails with newlines and terminal escapes
//!   meant to forge host log lines and rewrite the terminal.
//! - `long-panic`: panics with a 200 KB message.
//! - `symlink`: plants links to outside its grant in `/out` (where a native
//!   `file` destination would write) and fails saying what happened.
//! - `fill-disk`: writes 2 GiB into `/out/fill.bin`, then fails saying how
//!   far it got.
//! - `sparse`: makes `/out/sparse.bin` 1 TiB long, then fails saying whether
//!   it could.

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
    RejectFirst,
    RejectDuplicates,
    RejectNone,
    SleepOpen,
    SleepCheck,
    SleepWrite,
    SleepFinalize,
    ForgeLog,
    LongPanic,
    Symlink,
    FillDisk,
    Sparse,
}

const FOREVER: std::time::Duration = std::time::Duration::from_secs(600);

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
        match mode {
            Mode::PanicOpen => panic!("hostile: panic in open"),
            Mode::SleepOpen => std::thread::sleep(FOREVER),
            _ => {}
        }
        Ok(Hostile {
            mode,
            attempted: HashSet::new(),
        })
    }

    fn check_connection(&mut self) -> Result<(), Error> {
        if self.mode == Mode::SleepCheck {
            std::thread::sleep(FOREVER);
        }
        Ok(())
    }

    fn finalize(&mut self) -> Result<(), Error> {
        if self.mode == Mode::SleepFinalize {
            std::thread::sleep(FOREVER);
        }
        Ok(())
    }

    fn write(&mut self, batch: &RecordBatch, info: &BatchInfo) -> Result<u64, WriteError> {
        match self.mode {
            Mode::SleepWrite => {
                std::thread::sleep(FOREVER);
                Ok(info.num_rows)
            }
            Mode::RejectFirst => Err(WriteError::Rejected(vec![(0, "row 0 is refused".into())])),
            Mode::RejectDuplicates => Err(WriteError::Rejected(
                (0..10).map(|i| (0, format!("row 0 again ({i})"))).collect(),
            )),
            Mode::RejectNone => Err(WriteError::Rejected(Vec::new())),
            Mode::ForgeLog => {
                log::info!("ok\nINFO done records_written=1000000\x1b[2K\x1b]0;owned\x07");
                println!("\x1b[31mprinted\rINFO forged by stdout");
                Err(WriteError::fatal("failed\nINFO done records_written=1000000\x1b[2J"))
            }
            Mode::LongPanic => panic!("hostile: long panic {}", "y".repeat(200_000)),
            Mode::Symlink => {
                #[allow(deprecated)] // the only stable std call that makes a symlink on WASI
                let results: Vec<String> = [
                    ("../victim.txt", "/out/users_temp.json"),
                    ("/etc/passwd", "/out/passwd"),
                ]
                .into_iter()
                .map(|(target, link)| match std::fs::soft_link(target, link) {
                    Ok(()) => format!("{link}: created"),
                    Err(e) => format!("{link}: {e}"),
                })
                .collect();
                Err(WriteError::fatal(format!("symlink: {}", results.join("; "))))
            }
            Mode::FillDisk => {
                use std::io::Write;
                let chunk = vec![7u8; 1 << 20];
                let mut written = 0u64;
                let outcome = std::fs::File::create("/out/fill.bin").and_then(|mut f| {
                    for _ in 0..2048 {
                        f.write_all(&chunk)?;
                        written += chunk.len() as u64;
                    }
                    f.sync_all()
                });
                Err(WriteError::fatal(format!(
                    "fill-disk: {} MiB written, {}",
                    written >> 20,
                    outcome.map_or_else(|e| format!("then: {e}"), |()| "no error".into())
                )))
            }
            Mode::Sparse => {
                let outcome = std::fs::File::create("/out/sparse.bin").and_then(|f| f.set_len(1 << 40));
                Err(WriteError::fatal(format!(
                    "sparse: {}",
                    outcome.map_or_else(|e| format!("refused: {e}"), |()| "1 TiB file made".into())
                )))
            }
            Mode::Ok | Mode::PanicOpen | Mode::SleepOpen | Mode::SleepCheck | Mode::SleepFinalize => Ok(info.num_rows),
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
