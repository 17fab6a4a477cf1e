//! The `jsonl` source's lines: any bytes in the file never panic; a line
//! the source cannot take stops the read with an error naming the file and
//! that line (or is counted and skipped with `skip_invalid`, never stopping
//! the read); JSON objects are handed over as written, one record a line.

use std::io::Write;

use bizon_host::source::{JsonlSource, JsonlSourceConfig, Source, SourceError};
use proptest::prelude::*;
use serde_json::{json, Value};

/// Reads `content` through a `jsonl` source configured with `extra`; the
/// records' (id, data) and how the read ended.
fn read(content: &[u8], extra: Value) -> (Vec<(String, String)>, Result<u64, SourceError>, String) {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(content).unwrap();
    let path = file.path().display().to_string();
    let mut config = json!({"name": "jsonl", "path": path, "page_size": 7});
    config
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let config: JsonlSourceConfig = serde_json::from_value(config).unwrap();
    let mut source = JsonlSource::open(&config).unwrap();
    let mut records = Vec::new();
    loop {
        match source.next_page() {
            Ok(Some(page)) => records.extend(page.into_iter().map(|r| (r.id, r.data))),
            Ok(None) => return (records, Ok(source.skipped()), path),
            Err(e) => return (records, Err(e), path),
        }
    }
}

/// A line of any shape: JSON objects with the fields the source looks at
/// (of every type), other JSON, broken JSON, any bytes.
fn line() -> impl Strategy<Value = Vec<u8>> {
    let scalar = prop_oneof![
        Just(json!(null)),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        Just(json!("2024-02-29T23:59:59.999999Z")),
        Just(json!("1969-12-31T23:59:59+14:00")),
        Just(json!(1e300)),
        Just(json!([1, {"a": 2}])),
    ];
    let object = (
        prop::option::of(scalar.clone()),
        prop::option::of(scalar.clone()),
        prop::option::of(scalar),
    )
        .prop_map(|(id, at, to)| {
            let mut o = serde_json::Map::new();
            for (k, v) in [("id", id), ("at", at), ("to", to)] {
                if let Some(v) = v {
                    o.insert(k.into(), v);
                }
            }
            serde_json::to_vec(&Value::Object(o)).unwrap()
        });
    prop_oneof![
        4 => object.clone(),
        1 => object.prop_map(|mut b| { b.truncate(b.len() / 2); b }),
        1 => any::<String>().prop_map(|s| serde_json::to_vec(&json!([s])).unwrap()),
        1 => prop::collection::vec(any::<u8>(), 0..40),
        1 => Just(b"{\"id\": \xff\xfe}".to_vec()),
        1 => Just(b"   ".to_vec()),
    ]
}

/// The file's content, and its lines as the source splits them (a line of
/// any bytes may hold a newline).
fn file() -> impl Strategy<Value = (Vec<u8>, Vec<Vec<u8>>)> {
    prop::collection::vec(line(), 0..30).prop_map(|lines| {
        let content = lines.join(&b'\n');
        let split = match content.is_empty() {
            true => Vec::new(),
            false => content.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect(),
        };
        (content, split)
    })
}

/// Blank once trimmed, as the source skips it.
fn blank(line: &[u8]) -> bool {
    std::str::from_utf8(line).is_ok_and(|l| l.trim().is_empty())
}

/// The error names the file and a line of it.
fn assert_located(error: &SourceError, path: &str, lines: usize) -> Result<(), TestCaseError> {
    match error {
        SourceError::BadLine { path: p, line, .. } => {
            prop_assert_eq!(p, path);
            prop_assert!(
                (1..=lines as u64).contains(line),
                "line {} of {}: {}",
                line,
                lines,
                error
            );
        }
        other => prop_assert!(false, "an error without its line: {}", other),
    }
    Ok(())
}

proptest! {
    #![proptest_config(super::config(256))]

    #[test]
    fn any_lines_end_in_records_or_an_error_naming_the_line((content, lines) in file(), fields in any::<bool>()) {
        let extra = match fields {
            true => json!({"id_field": "id", "timestamp_field": "at", "destination_id_field": "to"}),
            false => json!({}),
        };
        let (_, end, path) = read(&content, extra);
        if let Err(e) = &end {
            assert_located(e, &path, lines.len())?;
        }
    }

    #[test]
    fn skip_invalid_reads_to_the_end_and_counts_what_it_skipped((content, lines) in file()) {
        let extra = json!({"id_field": "id", "timestamp_field": "at", "destination_id_field": "to", "skip_invalid": true});
        let (records, end, _) = read(&content, extra);
        let skipped = end.map_err(|e| TestCaseError::fail(format!("skip_invalid stopped: {e}")))?;
        let blank = lines.iter().filter(|l| blank(l)).count();
        prop_assert_eq!(records.len() as u64 + skipped + blank as u64, lines.len() as u64);
    }

    #[test]
    fn json_objects_are_handed_over_as_written(objects in prop::collection::vec(
        prop::collection::btree_map(any::<String>(), any::<i64>(), 0..5), 0..30)) {
        let lines: Vec<String> = objects.iter().map(|o| serde_json::to_string(o).unwrap()).collect();
        let (records, end, _) = read(lines.join("\n").as_bytes(), json!({}));
        prop_assert_eq!(end.unwrap(), 0);
        let expected: Vec<(String, String)> = lines.iter().enumerate().map(|(i, l)| ((i + 1).to_string(), l.clone())).collect();
        prop_assert_eq!(records, expected);
    }
}

/// Found by the properties above: a line that was not UTF-8 stopped the
/// read with "cannot read FILE: stream did not contain valid UTF-8",
/// naming no line, and `skip_invalid` could not skip it.
#[test]
fn a_line_that_is_not_utf8_is_a_bad_line_naming_it_and_skippable() {
    let content = b"{\"id\":1}\n{\"id\": \"\xff\"}\n{\"id\":3}\n";
    // The page holding the bad line fails whole: the run stops on it.
    let (records, end, path) = read(content, json!({}));
    assert_eq!(records.len(), 0);
    let error = end.unwrap_err().to_string();
    assert!(error.starts_with(&format!("{path}:2: not UTF-8")), "{error}");
    let (records, end, _) = read(content, json!({"skip_invalid": true}));
    assert_eq!((records.len(), end.unwrap()), (2, 1));
}
