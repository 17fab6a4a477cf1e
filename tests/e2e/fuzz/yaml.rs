//! The pipeline YAML loader (`pipeline::spec::parse`: environment
//! substitution, `config::from_yaml`, every source's and destination's
//! typed config, streams, transforms, dead letters): any text never
//! panics, and every error names the file and a place in it (a line, or
//! the field's path when the parser has no line).

use bizon_host::config::ConfigError;
use bizon_host::pipeline::spec::parse;
use proptest::prelude::*;

const FILE: &str = "fuzz.yaml";

/// Pipelines that load, of every section the loader knows: the mutations
/// below start from these.
pub(super) const SEEDS: &[&str] = &[
    include_str!("../../../examples/quickstart.yaml"),
    include_str!("../../../examples/bizon-dummy-logger.yaml"),
    "name: k\nsource:\n  name: kafka\n  stream: topic\n  sync_mode: stream\n  bootstrap_servers: ${BROKERS}\n  \
     group_id: g\n  message_encoding: utf-8\n  batch_size: 50\n  topics:\n    - name: orders\n      destination_id: o\n  \
     consumer_config:\n    session.timeout.ms: 6000\ndestination:\n  name: file\n  config:\n    path: out\n    \
     buffer_size: 0\n    on_disk_full: wait\n    retry: {max_attempts: 3, initial_backoff_ms: 10}\n\
     dead_letter:\n  path: dead\n",
    "name: bq\nsource:\n  name: jsonl\n  path: in.jsonl\n  id_field: id\n  page_size: 100\ndestination:\n  \
     name: bigquery_streaming_v2\n  config:\n    project_id: p\n    dataset_id: d\n    unnest: true\n    \
     destination_id: typed\n    record_schemas:\n      - destination_id: typed\n        record_schema:\n          \
     - {name: id, type: INTEGER, mode: REQUIRED}\n          - {name: seen_at, type: TIMESTAMP}\n    \
     time_partitioning: {type: DAY, field: seen_at}\n",
    "name: s\nsource:\n  name: kafka\n  stream: topic\n  sync_mode: stream\n  bootstrap_servers: b:9092\n  \
     group_id: g\nstreams:\n  - name: s\n    source:\n      topic: t\n    destination:\n      table_id: p.d.t\n      \
     record_schema:\n        - {name: a, type: STRING}\ndestination:\n  name: bigquery\n  config:\n    \
     project_id: p\n    dataset_id: d\n    gcs_buffer_bucket: b\n    buffer_flush_timeout: 5\n",
    "name: w\nsource:\n  name: dummy\n  total_records: 10\ntransforms:\n  - label: t\n    wasm: t.wasm\n\
     destination:\n  name: wasm\n  config:\n    plugin: p.wasm\n    plugin_config: {dir: /out, n: [1, 2]}\n    \
     allow:\n      hosts: [\"http://127.0.0.1:8123\"]\n      dirs:\n        - {host: out, guest: /out, writable: true}\n",
];

/// Pieces of YAML and of this loader's language that a mutation inserts.
const PIECES: &[&str] = &[
    ":",
    ": ",
    "- ",
    "  ",
    "\n",
    "\n  ",
    "\t",
    "{",
    "}",
    "[",
    "]",
    ",",
    "#",
    "&a ",
    "*a",
    "<<: *a",
    "!!binary ",
    "!tag ",
    "'",
    "\"",
    "\\",
    "|",
    ">-",
    "~",
    "null",
    "true",
    "yes",
    "0x1F",
    "1e999",
    "-1",
    "18446744073709551616",
    ".nan",
    "${",
    "${X}",
    "${X:-d}",
    "$$",
    "}}",
    "\u{0}",
    "\u{feff}",
    "é",
    "---\n",
    "...\n",
    "? ",
    "name",
    "source",
    "destination",
    "config",
    "streams",
    "transforms",
    "dead_letter",
    "buffer_size",
    "retry",
    "record_schema",
    "sync_mode",
    "topics",
];

#[derive(Debug, Clone)]
pub(super) enum Edit {
    Delete(usize, usize),
    Insert(usize, &'static str),
    DuplicateLine(usize),
    SwapLines(usize, usize),
}

pub(super) fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 1usize..30).prop_map(|(at, n)| Edit::Delete(at, n)),
        (any::<usize>(), prop::sample::select(PIECES)).prop_map(|(at, p)| Edit::Insert(at, p)),
        any::<usize>().prop_map(Edit::DuplicateLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
    ]
}

/// `seed` with `edits` applied (positions taken modulo the text, on char
/// boundaries).
pub(super) fn mutate(seed: &str, edits: &[Edit]) -> String {
    let mut text = seed.to_string();
    let boundary = |t: &str, at: usize| {
        let mut at = at % (t.len() + 1);
        while !t.is_char_boundary(at) {
            at -= 1;
        }
        at
    };
    for edit in edits {
        match *edit {
            Edit::Delete(at, n) => {
                let from = boundary(&text, at);
                let to = boundary(&text, (from + n).min(text.len()));
                text.replace_range(from..to.max(from), "");
            }
            Edit::Insert(at, piece) => {
                let at = boundary(&text, at);
                text.insert_str(at, piece);
            }
            Edit::DuplicateLine(n) | Edit::SwapLines(n, _) if text.is_empty() => {
                let _ = n;
            }
            Edit::DuplicateLine(n) => {
                let mut lines: Vec<&str> = text.split('\n').collect();
                let i = n % lines.len();
                lines.insert(i, lines[i]);
                text = lines.join("\n");
            }
            Edit::SwapLines(a, b) => {
                let mut lines: Vec<&str> = text.split('\n').collect();
                let (a, b) = (a % lines.len(), b % lines.len());
                lines.swap(a, b);
                text = lines.join("\n");
            }
        }
    }
    text
}

/// The error names the file, and a line of the text or a field.
fn assert_located(error: &ConfigError, text: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(&error.file, FILE);
    prop_assert!(!error.message.trim().is_empty(), "an empty message");
    let lines = text.split('\n').count();
    prop_assert!(
        error.line <= lines + 1,
        "line {} of a text of {} lines: {}",
        error.line,
        lines,
        error
    );
    prop_assert!(
        error.line >= 1 || error.message.contains('`') || error.message.contains(": "),
        "an error naming no place: {}\n--- text:\n{}",
        error,
        text
    );
    Ok(())
}

/// Parses `text` with `env` answering every `${NAME}`.
fn load(text: &str, env: Option<String>) -> Result<(), ConfigError> {
    parse(text, FILE, |_| env.clone()).map(drop)
}

#[test]
fn the_seeds_load() {
    for seed in SEEDS {
        if let Err(e) = load(seed, Some("127.0.0.1:9092".into())) {
            panic!("{e}\n{seed}");
        }
    }
}

proptest! {
    #![proptest_config(super::config(256))]

    #[test]
    fn any_text_loads_or_fails_naming_a_place(text in any::<String>(), env in prop::option::of(any::<String>())) {
        if let Err(e) = load(&text, env) {
            assert_located(&e, &text)?;
        }
    }

    #[test]
    fn a_mutated_pipeline_loads_or_fails_naming_a_place(
        seed in prop::sample::select(SEEDS),
        edits in prop::collection::vec(edit(), 1..6),
        env in prop::option::of(prop::sample::select(vec!["x", "", "a: b", "\n- x", "${Y}", "{", "1e999"])),
    ) {
        let text = mutate(seed, &edits);
        if let Err(e) = load(&text, env.map(str::to_string)) {
            assert_located(&e, &text)?;
        }
    }
}
