//! End-to-end: the `file` destination under each `source.sync_mode` (Bizon
//! 0.6.4's semantics), its crash recovery, and that it never writes through
//! a link planted in its directory (issue 7, "Files").

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use crate::support::{run_in, stderr, text};

/// A working directory holding the pipeline file, with the output in `out/`
/// and files outside the output directory next to it.
struct Work {
    dir: tempfile::TempDir,
}

impl Work {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("out")).unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn out(&self, name: &str) -> PathBuf {
        self.dir.path().join("out").join(name)
    }

    /// `bizon-host run` with `total` dummy records into `out/users.*`.
    fn run(&self, total: u64, sync_mode: &str, extra: &str) -> Output {
        let yaml = format!(
            "name: modes\nsource:\n  name: dummy\n  stream: s\n  sync_mode: {sync_mode}\n  total_records: {total}\n  \
             page_size: 7\n  destination_ids: [users]\ndestination:\n  name: file\n  config:\n    path: out\n    \
             buffer_size: 0\n{extra}"
        );
        run_in(self.dir.path(), &yaml)
    }

    fn leftovers(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path("out"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "users.json" && n != "users.parquet")
            .collect();
        names.sort();
        names
    }
}

fn ok(output: &Output) {
    assert!(output.status.success(), "{}", text(output));
}

/// The records' ids, line by line.
fn ids(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let line: Value = serde_json::from_str(l).unwrap();
            let data: Value = serde_json::from_str(line["source_data"].as_str().unwrap()).unwrap();
            data["id"].as_u64().unwrap()
        })
        .collect()
}

fn regular(path: &Path) -> bool {
    std::fs::symlink_metadata(path).unwrap().file_type().is_file()
}

#[test]
fn full_refresh_replaces_the_file() {
    let w = Work::new();
    ok(&w.run(30, "full_refresh", ""));
    ok(&w.run(20, "full_refresh", ""));
    assert_eq!(ids(&w.out("users.json")), (0..20).collect::<Vec<_>>());
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
}

#[test]
fn incremental_appends_after_a_successful_run_and_stream_appends_directly() {
    let w = Work::new();
    ok(&w.run(30, "incremental", ""));
    ok(&w.run(20, "incremental", ""));
    let expected: Vec<u64> = (0..30).chain(0..20).collect();
    assert_eq!(ids(&w.out("users.json")), expected);
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());

    let s = Work::new();
    ok(&s.run(10, "stream", ""));
    ok(&s.run(5, "stream", ""));
    assert_eq!(ids(&s.out("users.json")), (0..10).chain(0..5).collect::<Vec<_>>());
    assert!(s.leftovers().is_empty(), "{:?}", s.leftovers());
}

#[test]
fn incremental_publishes_a_crashed_runs_staged_lines_once_without_a_torn_line() {
    let w = Work::new();
    ok(&w.run(3, "incremental", ""));
    let published = std::fs::read_to_string(w.out("users.json")).unwrap();
    let lines: Vec<&str> = published.lines().collect();

    // A crash mid-flush: two whole staged lines, then half of a third.
    let staged = format!("{}\n{}\n{}", lines[0], lines[1], &lines[2][..20]);
    std::fs::write(w.out("users_incremental.json"), staged).unwrap();
    ok(&w.run(4, "incremental", ""));
    assert_eq!(ids(&w.out("users.json")), vec![0, 1, 2, 0, 1, 0, 1, 2, 3]);

    // A crash after publishing, before removing the stage: not published twice.
    let tail: String = std::fs::read_to_string(w.out("users.json"))
        .unwrap()
        .lines()
        .skip(5)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(w.out("users_incremental.json"), tail).unwrap();
    ok(&w.run(1, "incremental", ""));
    assert_eq!(ids(&w.out("users.json")), vec![0, 1, 2, 0, 1, 0, 1, 2, 3, 0]);
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
}

/// A run that failed (with exit status `code`, when given) saying `expected`.
fn refused(output: &Output, code: Option<i32>, expected: &str) {
    match code {
        Some(code) => assert_eq!(output.status.code(), Some(code), "{}", text(output)),
        None => assert!(!output.status.success(), "{}", text(output)),
    }
    let err = stderr(output);
    assert!(err.contains(expected), "expected `{expected}` in: {err}");
}

#[test]
fn parquet_is_refused_outside_full_refresh() {
    let output = Work::new().run(3, "incremental", "    format: parquet\n");
    refused(&output, None, "format: parquet supports sync_mode full_refresh only");
}

#[test]
fn an_unknown_sync_mode_is_a_located_config_error() {
    let output = Work::new().run(3, "sometimes", "");
    refused(
        &output,
        Some(2),
        "pipeline.yaml:5:14: source.sync_mode: unknown sync mode `sometimes`",
    );
}

#[test]
fn links_planted_in_the_directory_are_never_written_through() {
    let w = Work::new();
    std::fs::write(w.path("victim.txt"), "precious").unwrap();
    std::fs::write(w.path("victim2.txt"), "precious too").unwrap();
    // What a plugin granted `out/` could leave there for a later run.
    symlink("../victim.txt", w.out("users_temp.json")).unwrap();
    symlink("../victim.txt", w.out("users.json")).unwrap();
    symlink("../victim2.txt", w.out(".bizon-host-write-check")).unwrap();
    ok(&w.run(12, "full_refresh", ""));
    assert_eq!(std::fs::read_to_string(w.path("victim.txt")).unwrap(), "precious");
    assert_eq!(std::fs::read_to_string(w.path("victim2.txt")).unwrap(), "precious too");
    assert!(regular(&w.out("users.json")), "the published file is a plain file");
    assert_eq!(ids(&w.out("users.json")), (0..12).collect::<Vec<_>>());
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());

    // Incremental: a planted stage is dropped, not appended through.
    symlink("../victim.txt", w.out("users_incremental.json")).unwrap();
    ok(&w.run(2, "incremental", ""));
    assert_eq!(std::fs::read_to_string(w.path("victim.txt")).unwrap(), "precious");
    assert_eq!(ids(&w.out("users.json")), (0..12).chain(0..2).collect::<Vec<_>>());

    // A link in place of the published file: refused, nothing written through it.
    std::fs::remove_file(w.out("users.json")).unwrap();
    symlink("../victim.txt", w.out("users.json")).unwrap();
    for mode in ["incremental", "stream"] {
        let output = w.run(2, mode, "");
        assert!(!output.status.success(), "{mode}");
        let err = stderr(&output);
        assert!(err.contains("is a symbolic link"), "{mode}: {err}");
        assert_eq!(
            std::fs::read_to_string(w.path("victim.txt")).unwrap(),
            "precious",
            "{mode}"
        );
    }
    // A hard link to a file elsewhere is not appended to either.
    std::fs::remove_file(w.out("users.json")).unwrap();
    std::fs::hard_link(w.path("victim.txt"), w.out("users.json")).unwrap();
    let output = w.run(2, "stream", "");
    assert!(!output.status.success());
    assert_eq!(std::fs::read_to_string(w.path("victim.txt")).unwrap(), "precious");
}

#[test]
fn parquet_columns_are_required_or_optional_as_the_record_schema_says() {
    let w = Work::new();
    let schema = "    unnest: true\n    destination_id: users\n    format: parquet\n    record_schemas:\n      \
                  - destination_id: users\n        record_schema:\n          \
                  - {name: id, type: INTEGER, mode: REQUIRED}\n          \
                  - {name: name, type: STRING, mode: NULLABLE}\n          \
                  - {name: tags, type: STRING, mode: REPEATED}\n";
    ok(&w.run(9, "full_refresh", schema));
    let file = std::fs::File::open(w.out("users.parquet")).unwrap();
    let reader = parquet::file::reader::SerializedFileReader::new(file).unwrap();
    use parquet::file::reader::FileReader;
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    let repetition = |name: &str| {
        schema
            .root_schema()
            .get_fields()
            .iter()
            .find(|f| f.name() == name)
            .unwrap()
            .get_basic_info()
            .repetition()
    };
    use parquet::basic::Repetition;
    assert_eq!(repetition("id"), Repetition::REQUIRED);
    assert_eq!(repetition("name"), Repetition::OPTIONAL);
    assert_eq!(reader.metadata().file_metadata().num_rows(), 9);
}
