//! Faults under a running pipeline, from outside: a broker SIGKILLed and
//! started again with its data, destinations that go away, a full disk, a
//! `serve` killed, alone or as one of two hosts sharing a registry. Each
//! test asserts that nothing was lost, counts (or forbids) duplicates, and
//! checks what the host said while it waited.
//!
//! CI runs the short forms (a 10 s outage); `bench/faults.sh` runs the long
//! ones (a 90 s outage) through the same tests.

mod broker;
mod disk;
mod hosts;
mod serve;
mod soak;
mod warehouse;
