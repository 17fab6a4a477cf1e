//! End-to-end: the `bizon-host` binary on pipeline files, and what it wrote.

use std::collections::HashSet;
use std::io::Write;
use std::process::Stdio;

use serde_json::Value;

use crate::support::{
    bizon_host, free_port, lines, metrics, output_with_stdin, poll, root, run, run_command, run_in, run_in_with,
    signal, stderr, text, try_result, Run,
};

/// The top-level keys of a JSON object line, in the order they are written.
fn keys_in_order(line: &str) -> Vec<String> {
    struct Keys(Vec<String>);
    impl<'de> serde::Deserialize<'de> for Keys {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Keys;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                    let mut keys = Vec::new();
                    while let Some((k, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                        keys.push(k);
                    }
                    Ok(Keys(keys))
                }
            }
            d.deserialize_map(V)
        }
    }
    serde_json::from_str::<Keys>(line).unwrap().0
}

#[test]
fn dummy_to_file_writes_every_record_once_routed_by_destination_id_in_bizons_format() {
    let run = run(
        "name: e2e\nsource:\n  name: dummy\n  stream: s\n  total_records: 10000\n  page_size: 333\n  destination_ids: [users, orders, events]\ndestination:\n  name: file\n  config:\n    buffer_size: 1\n",
    );
    run.assert_ok();
    let result = run.result();
    assert_eq!(result["status"], "success");
    assert_eq!(result["records_read"], 10000);
    assert_eq!(result["records_written"], 10000);

    // The keys, in order, of a line Bizon 0.6.4 wrote.
    let sample = std::fs::read_to_string(root().join("tests/fixtures/bizon/file_destination_sample.json")).unwrap();
    let bizon_keys = keys_in_order(sample.lines().next().unwrap());

    let mut seen = HashSet::new();
    for (k, id) in ["users", "orders", "events"].iter().enumerate() {
        let text = std::fs::read_to_string(run.path(&format!("{id}.json"))).unwrap();
        assert_eq!(
            keys_in_order(text.lines().next().unwrap()),
            bizon_keys,
            "line layout differs from Bizon's"
        );
        let rows = lines(&run.path(&format!("{id}.json")));
        assert_eq!(result["by_destination_id"][id], rows.len());
        for row in &rows {
            assert_eq!(row.as_object().unwrap().len(), bizon_keys.len());
            let record_id: u64 = row["source_record_id"].as_str().unwrap().parse().unwrap();
            assert_eq!(record_id % 3, k as u64, "record {record_id} routed to {id}");
            let data: Value = serde_json::from_str(row["source_data"].as_str().unwrap()).unwrap();
            assert_eq!(data["id"], record_id);
            assert_eq!(data["name"], format!("bizon-{record_id}"));
            assert_eq!(row["bizon_id"].as_str().unwrap().len(), 32);
            assert!(row["bizon_loaded_at"].as_str().unwrap().ends_with("+00:00"));
            assert!(seen.insert(record_id), "record {record_id} written twice");
        }
        assert!(!run.path(&format!("{id}_temp.json")).exists(), "temp file left behind");
    }
    assert_eq!(seen.len(), 10000);
}

/// Bizon's example pipeline file of this name, run unchanged.
fn bizons_example(name: &str) -> Run {
    let yaml = std::fs::read_to_string(root().join("tests/fixtures/bizon").join(name)).unwrap();
    let run = run(&yaml);
    run.assert_ok();
    run
}

#[test]
fn bizons_own_dummy_pipeline_runs_unchanged_with_the_same_records() {
    let run = bizons_example("dummy_to_file.yml");
    let ours = lines(&run.path("dummy_plants.json"));
    let bizons = lines(&root().join("tests/fixtures/bizon/dummy_file_destination_output.json"));
    let data = |rows: &[Value]| rows.iter().map(|r| r["source_data"].clone()).collect::<Vec<_>>();
    assert_eq!(data(&ours), data(&bizons));
    let ids = |rows: &[Value]| rows.iter().map(|r| r["source_record_id"].clone()).collect::<Vec<_>>();
    assert_eq!(ids(&ours), ids(&bizons));
}

#[test]
fn logger_prints_one_line_per_record_with_its_source_data() {
    let log = bizons_example("dummy_to_logger.yml").stderr();
    for data in [
        r#"{"id":9898,"name":"bizon","age":26}"#,
        r#"{"id":56565,"name":"poulpo","age":26}"#,
    ] {
        assert_eq!(log.matches(data).count(), 1, "{data} not logged once:\n{log}");
    }
}

/// A pipeline from a JSON-lines file of `input` to the file destination
/// with `destination` (its config's keys).
fn from_jsonl(input: &str, source: &str, destination: &str) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.jsonl");
    std::fs::write(&path, input).unwrap();
    run(&format!(
        "name: unnest\nsource:\n  name: jsonl\n  path: {}\n{source}destination:\n  name: file\n  config:\n{destination}",
        path.display()
    ))
}

#[test]
fn jsonl_with_unnest_writes_the_typed_record_schema_columns() {
    let run = from_jsonl(
        "{\"id\": 1, \"name\": \"a\", \"score\": 1.5, \"at\": \"2024-05-01T12:30:00Z\", \"kind\": \"users\"}\n\
         {\"id\": 2, \"name\": \"b\", \"score\": 2, \"at\": \"2024-05-01T12:31:00Z\", \"kind\": \"users\"}\n",
        "  id_field: id\n  destination_id_field: kind\n",
        "    unnest: true\n    record_schemas:\n      - destination_id: users\n        record_schema:\n          - {name: id, type: INTEGER, mode: REQUIRED}\n          - {name: name, type: STRING}\n          - {name: score, type: FLOAT}\n          - {name: at, type: TIMESTAMP}\n",
    );
    run.assert_ok();
    assert_eq!(run.result()["records_written"], 2);
    let rows = lines(&run.path("users.json"));
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["id"], 2);
    assert_eq!(rows[1]["score"], 2.0);
    assert_eq!(rows[0]["name"], "a");
    assert!(
        rows[0]["at"].as_str().unwrap().starts_with("2024-05-01T12:30:00"),
        "{}",
        rows[0]
    );
    assert!(rows[0].get("kind").is_none(), "only record_schema columns: {}", rows[0]);
}

#[test]
fn a_record_that_does_not_fit_its_record_schema_fails_naming_record_and_column() {
    let run = from_jsonl(
        "{\"id\": 1}\n{\"id\": \"seven\"}\n",
        "",
        "    destination_id: t\n    unnest: true\n    record_schemas:\n      - destination_id: t\n        record_schema:\n          - {name: id, type: INTEGER}\n",
    );
    run.assert_code(1);
    let err = run.stderr();
    assert!(err.contains("record 2") && err.contains("id"), "{err}");
    assert_eq!(run.result()["records_unwritten"], 2);
    assert!(!run.path("t.json").exists(), "a failed run must not publish");
}

#[test]
fn parquet_format_holds_every_row() {
    let run = run(
        "name: pq\nsource:\n  name: dummy\n  total_records: 5000\ndestination:\n  name: file\n  config:\n    format: parquet\n    destination_id: t\n    buffer_size: 0\n",
    );
    run.assert_ok();
    let file = std::fs::File::open(run.path("t.parquet")).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, 5000);
}

#[test]
fn a_crashed_runs_temp_file_is_not_published_by_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("t_temp.json"),
        "{\"left\":\"by a crashed run\"}\n{\"half\": ",
    )
    .unwrap();
    let output = run_in(
        dir.path(),
        "name: c\nsource:\n  name: dummy\n  total_records: 100\ndestination:\n  name: file\n  config:\n    destination_id: t\n",
    );
    assert!(output.status.success(), "{}", text(&output));
    let rows = lines(&dir.path().join("t.json"));
    assert_eq!(rows.len(), 100);
}

#[test]
fn broken_configs_exit_2_naming_the_line_and_field() {
    let cases = [
        ("name: x\nsource: [\n", "pipeline.yaml:2:"),
        (
            "name: x\nsource:\n  name: dummy\ndestination:\n  name: nowhere\n  config: {}\n",
            "pipeline.yaml:5:9: destination.name: unknown destination `nowhere`",
        ),
        (
            "name: x\nsource:\n  name: dummy\ndestination:\n  name: file\n  config:\n    buffer_size: lots\n",
            "pipeline.yaml:7:18: destination.config.buffer_size",
        ),
        (
            "name: x\nsource:\n  name: dummy\ndestination:\n  name: file\n  config:\n    unnest: true\n",
            "pipeline.yaml:7:13: destination.config.unnest: `unnest: true` needs `record_schemas`",
        ),
        (
            "name: x\nsource:\n  name: dummy\ndestination:\n  name: file\n  config:\n    bufer_size: 1\n",
            "pipeline.yaml:7:5: destination.config.bufer_size: unknown field `bufer_size`",
        ),
        (
            "name: x\nsource:\n  name: dummy\ndestination:\n  name: file\n  config:\n    unnest: true\n    record_schemas:\n      - destination_id: a\n        record_schema:\n          - {name: x, type: STRNG}\n",
            "destination.config.record_schemas[0].record_schema[0].type: unknown variant `STRNG`",
        ),
        ("name: x\nsource:\n  name: dummy\n  token: ${env://BIZON_HOST_TEST_UNSET}\n", "pipeline.yaml:4:10: environment variable `BIZON_HOST_TEST_UNSET` is not set"),
    ];
    for (yaml, expected) in cases {
        let run = run(yaml);
        assert_eq!(run.code(), Some(2), "{yaml}\n{}", run.stderr());
        assert!(
            run.stderr().contains(expected),
            "expected `{expected}` in:\n{}",
            run.stderr()
        );
        // The result file says why, and that nothing moved.
        let result = try_result(run.dir.path()).expect("exit 2 still writes --result-json");
        assert_eq!(result["status"], "failed");
        assert_eq!(result["records_read"], 0, "no record may move on a broken config");
        assert!(result["error"].as_str().unwrap().contains(expected), "{result}");
        assert_eq!(
            std::fs::read_dir(run.dir.path()).unwrap().count(),
            2,
            "only the pipeline file and the result"
        );
    }
}

#[test]
fn environment_references_are_resolved_as_bizon_does() {
    let dir = tempfile::tempdir().unwrap();
    let output = run_in_with(
        dir.path(),
        "name: env\nsource:\n  name: dummy\n  total_records: env://BIZON_HOST_TEST_N\ndestination:\n  name: file\n  config:\n    destination_id: \"out-${env://BIZON_HOST_TEST_ID}\"\n",
        |cmd| {
            cmd.env("BIZON_HOST_TEST_N", "7").env("BIZON_HOST_TEST_ID", "x");
        },
    );
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(lines(&dir.path().join("out-x.json")).len(), 7);
}

#[test]
fn a_write_that_fails_for_good_exits_1_naming_the_destination_id() {
    let run =
        run("name: f\nsource:\n  name: dummy\n  total_records: 10\ndestination:\n  name: file\n  config:\n    destination_id: a/b\n");
    run.assert_code(1);
    let err = run.stderr();
    assert!(
        err.contains("destination_id `a/b`") && err.contains("cannot name a file"),
        "{err}"
    );
    let result = run.result();
    assert_eq!(result["status"], "failed");
    assert_eq!(result["records_written"], 0);
}

#[test]
fn check_validates_and_reaches_the_destination() {
    let dir = tempfile::tempdir().unwrap();
    let check = |name: &str, path: &str| {
        std::fs::write(
            dir.path().join(name),
            format!("name: c\nsource:\n  name: dummy\ndestination:\n  name: file\n  config:\n    path: {path}\n"),
        )
        .unwrap();
        bizon_host()
            .args(["check", name])
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let output = check("ok.yaml", "out");
    assert!(output.status.success(), "{}", text(&output));
    std::fs::write(dir.path().join("blocker"), "a file where a directory should be").unwrap();
    let output = check("bad.yaml", "blocker/out");
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("blocker/out"), "{}", stderr(&output));
}

/// Records read from an open standard input, then SIGTERM: what was read is
/// flushed and published, and the run says it was interrupted.
#[test]
fn sigterm_flushes_what_was_read_and_exits_130() {
    let dir = tempfile::tempdir().unwrap();
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let mut child = run_command(
        dir.path(),
        "name: s\nsource:\n  name: jsonl\n  path: \"-\"\n  page_size: 1\ndestination:\n  name: file\n  config:\n    destination_id: t\n",
    )
    .args(["--metrics-addr", &metrics_addr])
    .stdin(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for i in 0..25 {
        writeln!(stdin, "{{\"i\": {i}}}").unwrap();
    }
    stdin.flush().unwrap();
    // Standard input stays open: only the signal can end this run. It comes
    // once the run has read all 25, however long that takes.
    poll(
        || format!("25 records read; metrics:\n{}", metrics(&metrics_addr)),
        || {
            metrics(&metrics_addr)
                .contains("bizon_records_read_total{pipeline=\"s\"} 25")
                .then_some(())
        },
    );
    signal(child.id(), libc::SIGTERM);
    let output = child.wait_with_output().unwrap();
    drop(stdin);
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
    let result = try_result(dir.path()).unwrap();
    assert_eq!(result["status"], "interrupted");
    assert_eq!(result["records_read"], 25);
    assert_eq!(result["records_written"], 25);
    assert_eq!(lines(&dir.path().join("t.json")).len(), 25);
}

#[test]
fn stdin_jsonl_with_invalid_lines_names_the_line_or_skips_when_asked() {
    let feed = |yaml: &str| {
        let dir = tempfile::tempdir().unwrap();
        let input = b"{\"a\":1}\n{\"a\":2}\n{oops\n{\"a\":4}\n".to_vec();
        let output = output_with_stdin(run_command(dir.path(), yaml), input);
        let result = try_result(dir.path()).unwrap();
        (dir, output, result)
    };
    let base = "name: j\nsource:\n  name: jsonl\n  path: \"-\"\n";
    let dest = "destination:\n  name: file\n  config:\n    destination_id: t\n";
    let (_d, output, result) = feed(&format!("{base}{dest}"));
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("<stdin>:3: not valid JSON"),
        "{}",
        stderr(&output)
    );
    assert_eq!(result["status"], "failed");

    let (dir, output, result) = feed(&format!("{base}  skip_invalid: true\n{dest}"));
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(result["records_written"], 3);
    assert_eq!(result["records_skipped"], 1);
    assert_eq!(lines(&dir.path().join("t.json")).len(), 3);
}
