//! `enforce_partitioning`, as Bizon 0.6.4 (bigquery/src/partitioning.py):
//! BigQuery cannot change an existing table's partitioning or clustering, and
//! publishing into it keeps the table's own. When the table differs from the
//! configured layout the run warns; with `enforce_partitioning: true` a full
//! refresh (which republishes every row) drops and recreates the table first.
//! Any other sync mode only warns: rebuilding would discard history.

use serde_json::Value;

use super::schema::{TableRef, TableSpec};
use super::tables::Tables;
use crate::config::SyncMode;
use crate::destination::DestinationError;

/// (window, field, clustering): `window` None = not time-partitioned, `field`
/// None with a window = ingestion time. Bizon's `PartitioningSpec`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub window: Option<String>,
    pub field: Option<String>,
    pub clustering: Vec<String>,
}

impl Layout {
    fn from_json(partitioning: &Value, clustering: &Value) -> Self {
        let text = |v: &Value| v.as_str().map(str::to_string);
        Self {
            window: text(&partitioning["type"]),
            field: text(&partitioning["field"]),
            clustering: clustering["fields"]
                .as_array()
                .map(|a| a.iter().filter_map(text).collect())
                .unwrap_or_default(),
        }
    }

    /// What a table resource says.
    pub fn of_table(table: &Value) -> Self {
        Self::from_json(&table["timePartitioning"], &table["clustering"])
    }

    /// What the config asks for.
    pub fn of_spec(spec: &TableSpec) -> Self {
        let json = spec.table_json(&TableRef {
            project: String::new(),
            dataset: String::new(),
            table: String::new(),
        });
        Self::from_json(&json["timePartitioning"], &json["clustering"])
    }

    /// Bizon's `describe`, for the log line.
    pub fn describe(&self) -> String {
        let mut out = match (&self.window, &self.field) {
            (None, _) => "not partitioned".to_string(),
            (Some(w), None) => format!("partitioned by ingestion time ({w})"),
            (Some(w), Some(f)) => format!("partitioned by `{f}` ({w})"),
        };
        if !self.clustering.is_empty() {
            out.push_str(&format!(", clustered by ({})", self.clustering.join(", ")));
        }
        out
    }
}

/// Before publishing into `main`: compares its layout with the configured
/// one, warns on a difference, and on a full refresh with `enforce` drops and
/// recreates `main` with the configured layout. Returns whether it did.
pub async fn check_before_publish(
    tables: &Tables,
    main: &TableRef,
    spec: &TableSpec,
    enforce: bool,
    mode: SyncMode,
) -> Result<bool, DestinationError> {
    let current = match tables.get_table(main).await {
        Ok(Some(table)) => Layout::of_table(&table),
        // Absent: it is created with the configured layout.
        Ok(None) => return Ok(false),
        // This look exists for a warning; it must not fail a run that would publish.
        Err(e) => {
            tracing::warn!("could not check the partitioning of {main}, skipping the check: {e}");
            return Ok(false);
        }
    };
    let wanted = Layout::of_spec(spec);
    if current == wanted {
        return Ok(false);
    }
    tracing::warn!(
        "partitioning mismatch on {main}: the table is {}, the config asks for {}. BigQuery cannot change an \
         existing table's partitioning, so publishing keeps it {}",
        current.describe(),
        wanted.describe(),
        current.describe()
    );
    if !enforce {
        tracing::warn!(
            "set `enforce_partitioning: true` to have a full refresh drop and rebuild {main} with the configured \
             partitioning"
        );
        return Ok(false);
    }
    if mode != SyncMode::FullRefresh {
        tracing::warn!(
            "`enforce_partitioning` only rebuilds on a full refresh, which republishes every row; this run is {} \
             and rebuilding would discard history",
            mode.as_str()
        );
        return Ok(false);
    }
    tracing::warn!(
        "enforce_partitioning: dropping {main} and recreating it {}; table-level metadata (description, labels, \
         ACLs, policy tags) is not recreated",
        wanted.describe()
    );
    tables.recreate_table(main, spec).await?;
    Ok(true)
}
