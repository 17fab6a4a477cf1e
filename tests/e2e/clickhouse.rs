//! plugins/clickhouse against a real clickhouse-server that the test starts:
//! every record arrives once, in its destination_id's table, created from
//! the record_schema.

use crate::support::clickhouse::ClickHouse;
use crate::support::{run, wasm};

const SCHEMA: &str = "[{name: id, type: INTEGER, mode: REQUIRED}, {name: name, type: STRING}, {name: age, type: INTEGER}, {name: active, type: BOOLEAN}, {name: score, type: FLOAT}, {name: tags, type: STRING, mode: REPEATED}]";

#[test]
fn a_million_records_over_three_destination_ids_arrive_exactly_once() {
    let server = ClickHouse::start();
    let ids = ["users", "orders", "events"];
    let schemas: Vec<String> = ids
        .iter()
        .map(|id| format!("      - {{destination_id: {id}, record_schema: {SCHEMA}}}\n"))
        .collect();
    let yaml = format!(
        "name: ch\nsource:\n  name: dummy\n  total_records: 1000000\n  destination_ids: [users, orders, events]\ndestination:\n  name: wasm\n  config:\n    plugin: {}\n    plugin_config: {{url: \"{}\", table_prefix: bizon_}}\n    allow:\n      hosts: [\"{}\"]\n    unnest: true\n    record_schemas:\n{}",
        wasm("bizon_clickhouse").display(),
        server.url(),
        server.url(),
        schemas.concat()
    );
    run(&yaml).assert_ok();
    for (k, id) in ids.iter().enumerate() {
        // dummy sends record i to destination_ids[i % 3].
        let expected: Vec<u64> = (0..1_000_000u64).filter(|i| i % 3 == k as u64).collect();
        let got = server.query(&format!(
            "SELECT count(), uniqExact(id), sum(id), sum(active), countIf(length(tags) = 2) FROM bizon_{id} FORMAT TSV"
        ));
        let n = expected.len();
        let sum: u64 = expected.iter().sum();
        let active = expected.iter().filter(|i| *i % 2 == 0).count();
        assert_eq!(
            got.trim(),
            format!("{n}\t{n}\t{sum}\t{active}\t{n}"),
            "table bizon_{id}"
        );
    }
    let types = server.query("SELECT name, type FROM system.columns WHERE table = 'bizon_users' FORMAT TSV");
    assert_eq!(
        types.trim(),
        "id\tInt64\nname\tNullable(String)\nage\tNullable(Int64)\nactive\tNullable(UInt8)\nscore\tNullable(Float64)\ntags\tArray(Nullable(String))"
    );
}

#[test]
fn bizon_columns_by_default_and_a_bad_table_is_fatal() {
    let server = ClickHouse::start();
    let yaml = |id: &str| {
        format!(
            "name: ch\nsource:\n  name: dummy\n  total_records: 1000\ndestination:\n  name: wasm\n  config:\n    destination_id: {id}\n    plugin: {}\n    plugin_config: {{url: \"{}\"}}\n    allow:\n      hosts: [\"{}\"]\n    retry: {{max_attempts: 2, initial_backoff_ms: 10}}\n",
            wasm("bizon_clickhouse").display(),
            server.url(),
            server.url()
        )
    };
    run(&yaml("raw")).assert_ok();
    let got = server.query("SELECT count(), uniqExact(bizon_id), min(length(source_data)) > 10 FROM raw FORMAT TSV");
    assert_eq!(got.trim(), "1000\t1000\t1");

    // A table that exists with other columns: ClickHouse refuses the rows,
    // and that is not worth retrying.
    server.query("CREATE TABLE clash (x UInt8) ENGINE = Memory");
    let clash = run(&yaml("clash"));
    clash.assert_code(1);
    assert!(
        clash.text().contains("HTTP 500") && clash.text().contains("Code:"),
        "{}",
        clash.text()
    );
}
