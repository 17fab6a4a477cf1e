//! Property tests ("fuzzing without nightly", proptest) of what the host
//! reads from outside: pipeline YAML, Kafka message bytes (JSON, and Avro
//! with the schema registry's answers), `jsonl` lines, what a plugin hands
//! back (describe fields, error and rejected-row reasons, log lines), and
//! the bodies of `serve`'s API requests. Each property holds for any
//! input: nothing panics, an error says where, and what is accepted
//! round-trips.
//!
//! CI runs a few hundred cases of each (a few seconds in all);
//! `scripts/fuzz.sh MINUTES` runs each for that long with many more cases.
//! A failing case is written down by proptest (its seed, under
//! `proptest-regressions/`) and replayed first on the next runs; a crash
//! found becomes a named regression test beside its property.

mod jsonl;
mod kafka_avro;
mod kafka_json;
mod plugin_text;
mod serve_api;
mod yaml;

use proptest::test_runner::Config;

/// Cases per property: `PROPTEST_CASES` when set (scripts/fuzz.sh), else
/// `default` (CI).
fn config(default: u32) -> Config {
    let mut config = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = default;
    }
    // Shrinking a failure to its smallest form, bounded: a failure found in
    // a long run is reported within minutes.
    config.max_shrink_iters = 4096;
    config
}
