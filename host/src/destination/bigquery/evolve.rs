//! Schema evolution of an existing table towards the schema a run writes:
//! missing NULLABLE/REPEATED columns are added, REQUIRED columns the run
//! declares NULLABLE are relaxed (Bizon's ALLOW_FIELD_ADDITION and
//! ALLOW_FIELD_RELAXATION), and what BigQuery cannot change in place (a
//! column's type, REPEATED to or from anything, a new REQUIRED column) is
//! refused before any row is written, naming the column, the table and both
//! sides.

use serde_json::Value;

use super::schema::TableRef;
use crate::destination::DestinationError;

/// What a reconciliation changes, for the log line.
#[derive(Debug, Default, PartialEq)]
pub struct Evolution {
    /// The table's new schema: its own columns (some relaxed), then the added ones.
    pub fields: Vec<Value>,
    pub added: Vec<String>,
    pub relaxed: Vec<String>,
}

/// BigQuery answers with the legacy names; the record_schema may use either.
fn canonical_type(field: &Value) -> String {
    let t = field["type"].as_str().unwrap_or_default().to_ascii_uppercase();
    match t.as_str() {
        "INT64" => "INTEGER".into(),
        "FLOAT64" => "FLOAT".into(),
        "BOOL" => "BOOLEAN".into(),
        "STRUCT" => "RECORD".into(),
        _ => t,
    }
}

fn mode(field: &Value) -> String {
    field["mode"].as_str().unwrap_or("NULLABLE").to_ascii_uppercase()
}

fn name(field: &Value) -> &str {
    field["name"].as_str().unwrap_or_default()
}

/// The changes that bring `existing` (the table's fields) to accept rows of
/// `wanted`, `None` when there are none. Columns only the table has stay.
pub fn reconcile(
    table: &TableRef,
    existing: &[Value],
    wanted: &[Value],
) -> Result<Option<Evolution>, DestinationError> {
    let mut out = Evolution {
        fields: existing.to_vec(),
        ..Default::default()
    };
    for w in wanted {
        // Column names are case-insensitive in BigQuery.
        let found = out.fields.iter_mut().find(|e| name(e).eq_ignore_ascii_case(name(w)));
        let Some(e) = found else {
            if mode(w) == "REQUIRED" {
                return Err(DestinationError::Fatal(format!(
                    "table {table} has no column `{}` and BigQuery cannot add a REQUIRED column to an existing \
                     table; declare it NULLABLE in the record_schema, or add it to the table yourself",
                    name(w)
                )));
            }
            out.added.push(name(w).to_string());
            out.fields.push(w.clone());
            continue;
        };
        let (had, want) = (canonical_type(e), canonical_type(w));
        if had != want {
            return Err(DestinationError::Fatal(format!(
                "column `{}` of table {table} is {had} in the table but {want} in what this run writes; BigQuery \
                 cannot change a column's type in place (change the record_schema, or migrate the table)",
                name(w)
            )));
        }
        let (had_mode, want_mode) = (mode(e), mode(w));
        if (had_mode == "REPEATED") != (want_mode == "REPEATED") {
            return Err(DestinationError::Fatal(format!(
                "column `{}` of table {table} is {had_mode} in the table but {want_mode} in what this run writes; \
                 BigQuery cannot change a column to or from REPEATED",
                name(w)
            )));
        }
        if had_mode == "REQUIRED" && want_mode == "NULLABLE" {
            e["mode"] = Value::from("NULLABLE");
            out.relaxed.push(name(w).to_string());
        }
    }
    Ok((!out.added.is_empty() || !out.relaxed.is_empty()).then_some(out))
}

/// The same evolution as GoogleSQL DDL. Only for bqemulator 1.4, whose
/// `tables.patch` changes its catalog but not the table's storage (BigQuery's
/// changes both, and is what runs everywhere else).
pub fn as_ddl(table: &TableRef, evolution: &Evolution) -> String {
    let added = evolution
        .fields
        .iter()
        .filter(|f| evolution.added.iter().any(|a| a == name(f)));
    let mut statements: Vec<String> = added
        .map(|f| {
            format!(
                "ALTER TABLE `{table}` ADD COLUMN IF NOT EXISTS `{}` {}",
                name(f),
                ddl_type(f)
            )
        })
        .collect();
    statements.extend(
        evolution
            .relaxed
            .iter()
            .map(|c| format!("ALTER TABLE `{table}` ALTER COLUMN `{c}` DROP NOT NULL")),
    );
    statements.join("; ")
}

fn ddl_type(field: &Value) -> String {
    let scalar = match canonical_type(field).as_str() {
        "INTEGER" => "INT64".to_string(),
        "FLOAT" => "FLOAT64".to_string(),
        "BOOLEAN" => "BOOL".to_string(),
        "RECORD" => {
            let inner: Vec<String> = field["fields"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| format!("`{}` {}", name(f), ddl_type(f)))
                .collect();
            format!("STRUCT<{}>", inner.join(", "))
        }
        other => other.to_string(),
    };
    if mode(field) == "REPEATED" {
        format!("ARRAY<{scalar}>")
    } else {
        scalar
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn table() -> TableRef {
        TableRef::resolve("p.d.t", "", "").unwrap()
    }

    #[test]
    fn adds_missing_nullable_columns_and_relaxes_required_ones() {
        let existing = [json!({"name": "id", "type": "INTEGER", "mode": "REQUIRED"})];
        let wanted = [
            json!({"name": "ID", "type": "INT64", "mode": "NULLABLE"}),
            json!({"name": "email", "type": "STRING", "mode": "NULLABLE"}),
        ];
        let e = reconcile(&table(), &existing, &wanted).unwrap().unwrap();
        assert_eq!(e.added, ["email"]);
        assert_eq!(e.relaxed, ["ID"]);
        assert_eq!(e.fields[0]["mode"], "NULLABLE");
        assert_eq!(e.fields[1]["name"], "email");
        assert_eq!(reconcile(&table(), &e.fields, &wanted).unwrap(), None);
        assert_eq!(
            as_ddl(&table(), &e),
            "ALTER TABLE `p.d.t` ADD COLUMN IF NOT EXISTS `email` STRING; ALTER TABLE `p.d.t` ALTER COLUMN `ID` DROP NOT NULL"
        );
    }

    #[test]
    fn refuses_a_type_change_naming_column_table_and_both_types() {
        let existing = [json!({"name": "id", "type": "STRING"})];
        let wanted = [json!({"name": "id", "type": "INTEGER", "mode": "REQUIRED"})];
        let message = reconcile(&table(), &existing, &wanted).unwrap_err().to_string();
        assert!(message.contains("`id`") && message.contains("p.d.t"), "{message}");
        assert!(message.contains("STRING in the table but INTEGER"), "{message}");
    }

    #[test]
    fn refuses_a_new_required_column_and_repeated_changes() {
        let existing = [json!({"name": "tags", "type": "STRING", "mode": "REPEATED"})];
        let required = [json!({"name": "id", "type": "INTEGER", "mode": "REQUIRED"})];
        assert!(reconcile(&table(), &existing, &required)
            .unwrap_err()
            .to_string()
            .contains("REQUIRED column"));
        let scalar = [json!({"name": "tags", "type": "STRING", "mode": "NULLABLE"})];
        assert!(reconcile(&table(), &existing, &scalar)
            .unwrap_err()
            .to_string()
            .contains("REPEATED"));
    }
}
