//! Transforms through the binary: Bizon's transform examples against what
//! Bizon 0.6.4 itself wrote (tests/fixtures/bizon/transforms, made by its
//! make.sh), errors that name the transform, the record and the traceback,
//! dead letters, code that does not compile, and the sandbox (time, memory,
//! files, network, environment).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::kafka::{broker, unique};
use crate::support::{bizon_host, js_wasm, lines, python_runtime, python_wasm, result, root, text, wasm};

/// `bizon-host ARGS` in `dir`, with the Python transform runtime built.
fn host_in(dir: &Path, args: &[&str]) -> Command {
    python_runtime();
    let mut cmd = bizon_host();
    cmd.current_dir(dir).args(args);
    cmd
}

/// `bizon-host run` on `yaml` in a fresh directory.
fn run(yaml: &str) -> (tempfile::TempDir, Output) {
    python_runtime();
    let run = crate::support::run(yaml);
    (run.dir, run.output)
}

/// The error in the result file of a run that exited `code`.
fn error_of(dir: &Path, output: &Output, code: i32) -> String {
    assert_eq!(output.status.code(), Some(code), "{}", text(output));
    result(dir)["error"].as_str().unwrap().to_string()
}

fn assert_contains_all(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "`{needle}` missing from: {text}");
    }
}

fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/bizon/transforms").join(name)
}

/// A dummy-source pipeline to the file destination with `transforms`
/// (YAML text starting `transforms:`) and `extra` top-level sections.
fn dummy_pipeline(records: u64, transforms: &str, extra: &str) -> String {
    format!(
        "name: t\nsource:\n  name: dummy\n  stream: s\n  total_records: {records}\n  page_size: 100\ndestination:\n  name: file\n  config:\n    destination_id: out\n{transforms}{extra}"
    )
}

#[test]
fn bizons_transform_examples_give_the_records_bizon_wrote() {
    for name in ["records", "debezium", "libraries"] {
        let transforms = std::fs::read_to_string(fixture(&format!("{name}.transforms.yml"))).unwrap();
        let input = fixture(&format!("{name}.input.jsonl"));
        let yaml = format!(
            "name: fixture\nsource:\n  name: jsonl\n  path: {}\n  page_size: 7\ndestination:\n  name: file\n  config:\n    destination_id: out\n{transforms}",
            input.display()
        );
        let (dir, output) = run(&yaml);
        assert!(output.status.success(), "{name}: {}", text(&output));
        let mut written = lines(&dir.path().join("out.json"));
        written.sort_by_key(|r| r["source_record_id"].as_str().unwrap().parse::<u64>().unwrap());
        let expected = lines(&fixture(&format!("{name}.expected.jsonl")));
        assert_eq!(written.len(), expected.len(), "{name}");
        for (got, want) in written.iter().zip(&expected) {
            assert_eq!(got["source_record_id"], want["source_record_id"], "{name}");
            // Byte for byte: Bizon's json.dumps text, escapes and float repr included.
            assert_eq!(got["source_data"], want["source_data"], "{name}");
        }
    }
}

const RAISES_ON_3: &str =
    "transforms:\n  - label: boom\n    python: |\n      if data['id'] == 3:\n          data['x'] = 1 / 0\n";

#[test]
fn a_raising_transform_stops_the_run_naming_label_record_and_traceback() {
    let (dir, output) = run(&dummy_pipeline(10, RAISES_ON_3, ""));
    let error = error_of(dir.path(), &output, 1);
    assert_contains_all(
        &error,
        &[
            "transform: source_record_id `3`",
            "transform `boom` raised",
            "Traceback (most recent call last)",
            "File \"boom\", line 2",
            "data['x'] = 1 / 0",
            "ZeroDivisionError: division by zero",
        ],
    );
    assert!(text(&output).contains("ZeroDivisionError"), "{}", text(&output));
}

#[test]
fn importing_what_the_sandbox_lacks_names_the_module_and_what_is_there() {
    let imports = "transforms:\n  - label: polars\n    python: |\n      import polars\n";
    let (dir, output) = run(&dummy_pipeline(3, imports, ""));
    let error = error_of(dir.path(), &output, 1);
    assert_contains_all(
        &error,
        &[
            "transform `polars` raised",
            "No module named 'polars'",
            "what it holds:",
            "zoneinfo",
            "dateutil",
        ],
    );
}

#[test]
fn with_a_dead_letter_a_failing_record_goes_there_and_the_rest_is_written() {
    let (dir, output) = run(&dummy_pipeline(250, RAISES_ON_3, "dead_letter:\n  path: dead.jsonl\n"));
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(result(dir.path())["records_written"], 249);
    let written = lines(&dir.path().join("out.json"));
    assert!(written.iter().all(|r| r["source_record_id"] != "3"));
    let dead = lines(&dir.path().join("dead.jsonl"));
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["source_record_id"], "3");
    assert_eq!(dead[0]["destination_id"], "out");
    assert!(
        dead[0]["reason"].as_str().unwrap().contains("ZeroDivisionError"),
        "{dead:?}"
    );
    let data: Value = serde_json::from_str(dead[0]["source_data"].as_str().unwrap()).unwrap();
    assert_eq!(data["id"], 3);
}

#[test]
fn a_record_whose_data_does_not_dump_or_is_not_json_fails_alone() {
    // A set does not dump (TypeError); NaN dumps to `NaN`, which is not JSON.
    // Either fails its record, and the rest of its batch is written.
    let transforms = "transforms:\n  - label: odd\n    python: |\n      if data['id'] == 3:\n          data['x'] = {1}\n      if data['id'] == 5:\n          data['x'] = float('nan')\n";
    let (dir, output) = run(&dummy_pipeline(250, transforms, "dead_letter:\n  path: dead.jsonl\n"));
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(result(dir.path())["records_written"], 248);
    let mut dead = lines(&dir.path().join("dead.jsonl"));
    dead.sort_by_key(|d| d["source_record_id"].as_str().unwrap().to_string());
    let ids: Vec<_> = dead.iter().map(|d| d["source_record_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["3", "5"], "{dead:?}");
    let reason = |i: usize| dead[i]["reason"].as_str().unwrap();
    assert!(
        reason(0).contains("Object of type set is not JSON serializable"),
        "{dead:?}"
    );
    assert!(
        reason(1).contains("transform `odd`") && reason(1).contains("source_data is not JSON"),
        "{dead:?}"
    );
    let written = lines(&dir.path().join("out.json"));
    let r = written.iter().find(|r| r["source_record_id"] == "4").unwrap();
    assert_eq!(
        r["source_data"],
        "{\"id\": 4, \"name\": \"bizon-4\", \"age\": 4, \"active\": true, \"score\": 2.0, \"tags\": [\"a\", \"b\"]}"
    );
}

#[test]
fn a_transform_may_reassign_data_and_records_keep_their_metadata() {
    let transforms =
        "transforms:\n  - label: reshape\n    python: |\n      data = {'who': data['name'], 'n': data['id'] * 2}\n";
    let (dir, output) = run(&dummy_pipeline(300, transforms, ""));
    assert!(output.status.success(), "{}", text(&output));
    let written = lines(&dir.path().join("out.json"));
    assert_eq!(written.len(), 300);
    let r = written.iter().find(|r| r["source_record_id"] == "7").unwrap();
    assert_eq!(r["source_data"], "{\"who\": \"bizon-7\", \"n\": 14}");
    assert!(r["source_timestamp"].as_str().unwrap().ends_with("+00:00"));
}

#[test]
fn code_that_does_not_compile_is_a_config_error_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    // Line 12 of the file is the code's line 2.
    let yaml = dummy_pipeline(
        5,
        "transforms:\n  - label: ok\n    python: data['a'] = 1\n  - label: broken\n    python: |\n      x = 1\n      if x\n          pass\n",
        "",
    );
    std::fs::write(dir.path().join("pipeline.yaml"), &yaml).unwrap();
    let broken_line = yaml.lines().position(|l| l.contains("if x")).unwrap() + 1;
    for command in ["check", "run"] {
        let output = host_in(dir.path(), &[command, "pipeline.yaml"]).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{command}: {}", text(&output));
        let want = format!("pipeline.yaml:{broken_line}:");
        assert!(
            text(&output).contains(&want),
            "{command}: no `{want}` in {}",
            text(&output)
        );
        assert!(
            text(&output).contains("`broken` does not compile: SyntaxError"),
            "{}",
            text(&output)
        );
    }
    assert!(!dir.path().join("out.json").exists());
}

#[test]
fn an_endless_loop_is_stopped_by_the_call_timeout_and_named() {
    let transforms = "transforms:\n  - label: spin\n    limits: {call_timeout_ms: 1500}\n    python: |\n      while True:\n          pass\n";
    let started = std::time::Instant::now();
    let (dir, output) = run(&dummy_pipeline(10, transforms, ""));
    let error = error_of(dir.path(), &output, 1);
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    assert_contains_all(
        &error,
        &["transform `spin`", "call timeout of 1500 ms", "source_record_id 0 to 9"],
    );
}

#[test]
fn an_unbounded_allocation_is_stopped_by_the_memory_limit_and_named() {
    let transforms = "transforms:\n  - label: hog\n    limits: {memory_mb: 96}\n    python: |\n      hoard = []\n      while True:\n          hoard.append(bytearray(1 << 20))\n";
    let (dir, output) = run(&dummy_pipeline(10, transforms, ""));
    let error = error_of(dir.path(), &output, 1);
    assert!(error.contains("`hog`"), "{error}");
    assert!(
        error.contains("MemoryError") || error.contains("memory limit of 96 MiB"),
        "{error}"
    );
}

#[test]
fn files_sockets_and_the_environment_are_out_of_reach() {
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = secret_dir.path().join("secret.txt");
    std::fs::write(&secret, "TOP-SECRET-CONTENT").unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let transforms = format!(
        "transforms:\n  - label: snoop\n    python: |\n      import os\n      data['env'] = sorted(os.environ)\n      try:\n          data['file'] = open('{}').read()\n      except OSError as e:\n          data['file_error'] = type(e).__name__\n      import socket\n      try:\n          socket.create_connection(('127.0.0.1', {port}), timeout=2)\n          data['socket'] = 'connected'\n      except OSError as e:\n          data['socket_error'] = type(e).__name__\n",
        secret.display()
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipeline.yaml"), dummy_pipeline(3, &transforms, "")).unwrap();
    let output = host_in(dir.path(), &["run", "pipeline.yaml", "--no-progress"])
        .env("SNOOP_SECRET", "do-not-leak")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let written = std::fs::read_to_string(dir.path().join("out.json")).unwrap();
    assert!(!written.contains("TOP-SECRET-CONTENT"), "{written}");
    assert!(!written.contains("SNOOP_SECRET"), "{written}");
    for line in lines(&dir.path().join("out.json")) {
        let data: Value = serde_json::from_str(line["source_data"].as_str().unwrap()).unwrap();
        assert_eq!(data["env"], serde_json::json!([]), "{data}");
        assert!(data["file_error"].is_string(), "{data}");
        assert!(data["socket_error"].is_string(), "{data}");
        assert!(data.get("socket").is_none(), "{data}");
    }
    // Nothing reached the listener.
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_err());
}

#[test]
fn without_the_runtime_python_transforms_say_how_to_build_it_and_others_never_need_it() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = dummy_pipeline(5, RAISES_ON_3, "");
    std::fs::write(dir.path().join("pipeline.yaml"), &yaml).unwrap();
    let code_line = yaml.lines().position(|l| l.contains("if data['id']")).unwrap() + 1;
    let output = host_in(dir.path(), &["run", "pipeline.yaml"])
        .env("BIZON_HOST_PYTHON_TRANSFORM", dir.path().join("missing.wasm"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let out = text(&output);
    assert!(out.contains(&format!("pipeline.yaml:{code_line}:")), "{out}");
    assert!(out.contains("bash scripts/build-transform-runtime.sh"), "{out}");
    assert!(out.contains("missing.wasm"), "{out}");

    std::fs::write(dir.path().join("plain.yaml"), dummy_pipeline(5, "", "")).unwrap();
    let output = host_in(dir.path(), &["run", "plain.yaml"])
        .env("BIZON_HOST_PYTHON_TRANSFORM", dir.path().join("missing.wasm"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
}

/// Kafka records are Bizon's wrapper ({topic, offset, partition, ..., value});
/// a flatten transform makes the value's fields the record, so that `unnest`
/// writes them as typed columns.
fn kafka_flatten_then_unnest(transform: &str) {
    let broker = broker();
    let topic = unique("transform");
    broker.create_topic(&topic, 2);
    let producer = broker.producer();
    for i in 0..20 {
        let value = format!(
            r#"{{"user_id": {i}, "email": "u{i}@example.com", "score": {}.5}}"#,
            i * 2
        );
        producer.send(&topic, i % 2, None, Some(value.as_bytes()), &[]);
    }
    producer.flush();
    let yaml = format!(
        "name: kafka flatten\nsource:\n  name: kafka\n  stream: topic\n  sync_mode: full_refresh\n  bootstrap_servers: {}\n  group_id: {}\n  message_encoding: utf-8\n  topics:\n    - name: {topic}\n      destination_id: users\n{transform}destination:\n  name: file\n  config:\n    unnest: true\n    record_schemas:\n      - destination_id: users\n        record_schema:\n          - {{name: user_id, type: INTEGER, mode: REQUIRED}}\n          - {{name: email, type: STRING}}\n          - {{name: score, type: FLOAT}}\n          - {{name: __kafka_offset, type: INTEGER, mode: REQUIRED}}\n          - {{name: __kafka_partition, type: INTEGER}}\n",
        broker.servers,
        unique("group"),
    );
    let (dir, output) = run(&yaml);
    assert!(output.status.success(), "{}", text(&output));
    let mut rows = lines(&dir.path().join("users.json"));
    rows.sort_by_key(|r| r["user_id"].as_i64().unwrap());
    assert_eq!(rows.len(), 20);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["user_id"], i as i64, "{row}");
        assert_eq!(row["email"], format!("u{i}@example.com"), "{row}");
        assert_eq!(row["score"], (i * 2) as f64 + 0.5, "{row}");
        assert_eq!(row["__kafka_partition"], (i % 2) as i64, "{row}");
        assert_eq!(row["__kafka_offset"], (i / 2) as i64, "{row}");
    }
}

#[test]
fn kafka_records_flattened_in_python_unnest_into_typed_columns() {
    kafka_flatten_then_unnest(
        "transforms:\n  - label: flatten\n    python: |\n      data = {**data['value'], '__kafka_offset': data['offset'], '__kafka_partition': data['partition']}\n",
    );
}

/// [`kafka_flatten_then_unnest`] through a flatten component.
fn kafka_flattened_by(component: &Path) {
    kafka_flatten_then_unnest(&format!(
        "transforms:\n  - label: flatten\n    wasm: {}\n    config: {{fields: [offset, partition]}}\n",
        component.display()
    ));
}

#[test]
fn kafka_records_flattened_by_the_rust_component_unnest_into_typed_columns() {
    kafka_flattened_by(&wasm("bizon_kafka_flatten"));
}

#[test]
fn a_component_transform_names_the_records_it_refuses_and_its_config_errors() {
    let flatten = wasm("bizon_kafka_flatten");
    // dummy records are not Kafka records: every one is refused, by name.
    let transforms = format!("transforms:\n  - label: flatten\n    wasm: {}\n", flatten.display());
    let (dir, output) = run(&dummy_pipeline(5, &transforms, ""));
    let error = error_of(dir.path(), &output, 1);
    assert!(
        error.contains("source_record_id `0`: transform `flatten`: source_data has no `value`"),
        "{error}"
    );

    let transforms = format!(
        "transforms:\n  - label: flatten\n    wasm: {}\n    config: {{fields: [offst]}}\n",
        flatten.display()
    );
    let (_dir, output) = run(&dummy_pipeline(5, &transforms, ""));
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains("pipeline.yaml:12:"), "{}", text(&output));
    assert!(
        text(&output).contains("refused its config (open): fields: `offst`"),
        "{}",
        text(&output)
    );
}

/// The flatten transform in each SDK: plugins/kafka-flatten (Rust),
/// plugins/python-flatten and plugins/js-flatten, built by
/// scripts/build-plugins.sh (the last two through build-sdk-plugins.sh).
fn flattens() -> [(&'static str, PathBuf); 3] {
    [
        ("rust", wasm("bizon_kafka_flatten")),
        ("python", python_wasm("python_flatten")),
        ("js", js_wasm("js_flatten")),
    ]
}

/// Bizon's Kafka records as the jsonl source reads them: numbers, floats,
/// unicode, nested values, a tombstone (line 5), and with `bad` a value that
/// is not an object (line 3).
fn kafka_shaped_input(dir: &Path, bad: bool) -> PathBuf {
    let mut text = String::new();
    for i in 0..12u32 {
        let value = match i {
            2 if bad => "\"not an object\"".to_string(),
            4 => "null".to_string(),
            _ => format!(
                r#"{{"user_id": {i}, "email": "u{i}@example.com", "score": {}.{i}5, "tags": ["Zoë 🚀", {{"n": {i}}}], "note": null}}"#,
                i * 3
            ),
        };
        text.push_str(&format!(
            r#"{{"topic": "users", "partition": {}, "offset": {}, "timestamp": "2024-05-0{}T10:00:00+00:00", "keys": {{"id": "{i}"}}, "headers": {{}}, "value": {value}}}"#,
            i % 3,
            100 + i,
            1 + i % 9
        ));
        text.push('\n');
    }
    let path = dir.join("kafka.jsonl");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs the jsonl file through one flatten component to the file destination.
fn flatten_run(wasm: &Path, input: &Path, config: &str, extra: &str) -> (tempfile::TempDir, Output) {
    run(&format!(
        "name: flatten\nsource:\n  name: jsonl\n  path: {}\n  page_size: 5\ndestination:\n  name: file\n  config:\n    destination_id: out\ntransforms:\n  - label: flatten\n    wasm: {}\n    config: {config}\n{extra}",
        input.display(),
        wasm.display()
    ))
}

/// source_record_id -> source_data text of what a run wrote.
fn written(dir: &Path) -> std::collections::BTreeMap<String, String> {
    lines(&dir.join("out.json"))
        .into_iter()
        .map(|r| {
            (
                r["source_record_id"].as_str().unwrap().to_string(),
                r["source_data"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn the_python_and_js_sdk_flattens_write_the_rust_components_records() {
    let input_dir = tempfile::tempdir().unwrap();
    let input = kafka_shaped_input(input_dir.path(), false);
    let mut outputs = Vec::new();
    for (sdk, wasm) in flattens() {
        let (dir, output) = flatten_run(&wasm, &input, "{tombstones: drop}", "");
        assert!(output.status.success(), "{sdk}: {}", text(&output));
        assert_eq!(result(dir.path())["records_written"], 11, "{sdk}");
        outputs.push((sdk, written(dir.path())));
    }
    let (_, rust) = &outputs[0];
    // The tombstone (line 5) is dropped; every other record is flattened.
    assert_eq!(rust.len(), 11);
    assert!(!rust.contains_key("5"));
    let seven: Value = serde_json::from_str(&rust["8"]).unwrap();
    assert_eq!(
        seven,
        serde_json::json!({"user_id": 7, "email": "u7@example.com", "score": 21.75, "tags": ["Zoë 🚀", {"n": 7}],
            "note": null, "__kafka_offset": 107, "__kafka_partition": 1, "__kafka_topic": "users",
            "__kafka_timestamp": "2024-05-08T10:00:00+00:00"})
    );
    let order = [
        "user_id",
        "email",
        "score",
        "tags",
        "note",
        "__kafka_offset",
        "__kafka_partition",
        "__kafka_topic",
        "__kafka_timestamp",
    ];
    for (sdk, records) in &outputs[1..] {
        assert_eq!(
            records.keys().collect::<Vec<_>>(),
            rust.keys().collect::<Vec<_>>(),
            "{sdk}: the same records"
        );
        for (id, text) in records {
            let got: Value = serde_json::from_str(text).unwrap();
            let want: Value = serde_json::from_str(&rust[id]).unwrap();
            assert_eq!(got, want, "{sdk}: source_record_id {id}");
            // The value's keys in their order, then the wrapper's, as in Rust.
            let positions: Vec<usize> = order.iter().map(|k| text.find(&format!("\"{k}\"")).unwrap()).collect();
            assert!(positions.windows(2).all(|w| w[0] < w[1]), "{sdk}: key order of {text}");
        }
    }
}

#[test]
fn a_record_an_sdk_transform_refuses_is_named_and_dead_lettered() {
    let input_dir = tempfile::tempdir().unwrap();
    let input = kafka_shaped_input(input_dir.path(), true);
    for (sdk, wasm) in flattens().into_iter().skip(1) {
        // With a dead letter: line 3 goes there with why, the rest is written.
        let (dir, output) = flatten_run(
            &wasm,
            &input,
            "{tombstones: drop}",
            "dead_letter:\n  path: dead.jsonl\n",
        );
        assert!(output.status.success(), "{sdk}: {}", text(&output));
        assert_eq!(result(dir.path())["records_written"], 10, "{sdk}");
        assert!(!written(dir.path()).contains_key("3"), "{sdk}");
        let dead = lines(&dir.path().join("dead.jsonl"));
        assert_eq!(dead.len(), 1, "{sdk}: {dead:?}");
        assert_eq!(dead[0]["source_record_id"], "3", "{sdk}");
        assert_eq!(dead[0]["kind"], "rejected", "{sdk}");
        let reason = dead[0]["reason"].as_str().unwrap();
        assert!(reason.starts_with("transform `flatten`: "), "{sdk}: {reason}");
        assert!(
            reason.contains("the message value is not a JSON object: \"not an object\""),
            "{sdk}: {reason}"
        );
        let data: Value = serde_json::from_str(dead[0]["source_data"].as_str().unwrap()).unwrap();
        assert_eq!(data["offset"], 102, "{sdk}: the record as it came");

        // Without one, the run stops naming the record; the tombstone
        // (line 5, tombstones: error by default) would be next.
        let (dir, output) = flatten_run(&wasm, &input, "{}", "");
        let error = error_of(dir.path(), &output, 1);
        assert!(
            error.contains("source_record_id `3`: transform `flatten`:") && error.contains("not a JSON object"),
            "{sdk}: {error}"
        );

        // open() refusing its config is a config error naming the field.
        let (_dir, output) = flatten_run(&wasm, &input, "{fields: [offst]}", "");
        assert_eq!(output.status.code(), Some(2), "{sdk}: {}", text(&output));
        assert!(
            text(&output).contains("refused its config (open)"),
            "{sdk}: {}",
            text(&output)
        );
        assert!(
            text(&output).contains("fields: `offst` is not a key"),
            "{sdk}: {}",
            text(&output)
        );
    }
}

#[test]
fn kafka_records_flattened_by_the_python_sdk_component_unnest_into_typed_columns() {
    kafka_flattened_by(&python_wasm("python_flatten"));
}

#[test]
fn kafka_records_flattened_by_the_js_sdk_component_unnest_into_typed_columns() {
    kafka_flattened_by(&js_wasm("js_flatten"));
}
