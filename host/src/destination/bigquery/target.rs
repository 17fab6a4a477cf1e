//! What the three destinations share: where a destination_id's rows go, and
//! that table's existence and definition.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use super::config::TimePartitioning;
use super::schema::{SourceDataType, TableRef, TableSpec};
use super::tables::Tables;
use crate::config::DestinationOptions;
use crate::destination::DestinationError;

/// A destination_id's table and definition.
pub type Resolved = (TableRef, Arc<TableSpec>);

pub struct Target {
    pub options: DestinationOptions,
    pub project: String,
    pub dataset: String,
    pub partitioning: Option<TimePartitioning>,
    pub source_data: SourceDataType,
    pub tables: Tables,
    /// Bizon's `table_prefix`, for auto-generated names only.
    pub table_prefix: String,
    specs: Mutex<HashMap<Arc<str>, Resolved>>,
    /// Auto-generated names, resolved once: prefixed, or the legacy table.
    named: Mutex<HashMap<Arc<str>, Arc<OnceCell<TableRef>>>>,
}

impl Target {
    pub fn new(
        options: DestinationOptions,
        project: String,
        dataset: String,
        partitioning: Option<TimePartitioning>,
        source_data: SourceDataType,
        tables: Tables,
        table_prefix: String,
    ) -> Result<Self, DestinationError> {
        let target = Self {
            options,
            project,
            dataset,
            partitioning,
            source_data,
            tables,
            table_prefix,
            specs: Mutex::default(),
            named: Mutex::default(),
        };
        // A partition field that cannot work is a config error: say so before any row moves.
        for schema in &target.options.record_schemas {
            target.spec_for(&schema.destination_id)?;
        }
        if let Some(id) = target.options.destination_id.clone() {
            target.spec_for(&id)?;
        }
        Ok(target)
    }

    /// The table and its definition for a destination_id, computed once.
    pub fn spec_for(&self, destination_id: &str) -> Result<Resolved, DestinationError> {
        if let Some(found) = self.specs.lock().expect("poisoned").get(destination_id) {
            return Ok(found.clone());
        }
        let table = TableRef::resolve(destination_id, &self.project, &self.dataset)?;
        let spec = Arc::new(TableSpec::new(
            &self.options,
            destination_id,
            self.partitioning.as_ref(),
            self.source_data,
        )?);
        self.specs
            .lock()
            .expect("poisoned")
            .insert(destination_id.into(), (table.clone(), spec.clone()));
        Ok((table, spec))
    }

    /// The table a destination_id's rows go to. A name Bizon would have
    /// auto-generated (`<source>_<stream>`: no `destination_id` anywhere) gets
    /// `table_prefix` unless a table of the unprefixed name already exists,
    /// which keeps being used (Bizon's `resolve_default_table_id`). As in Bizon,
    /// an error while looking falls back to the unprefixed name.
    pub async fn resolve(&self, destination_id: &str) -> Result<Resolved, DestinationError> {
        let (table, spec) = self.spec_for(destination_id)?;
        let generated = self.options.generated_destination_id.as_deref() == Some(destination_id);
        if !generated || self.table_prefix.is_empty() {
            return Ok((table, spec));
        }
        let cell = self
            .named
            .lock()
            .expect("poisoned")
            .entry(destination_id.into())
            .or_default()
            .clone();
        let named = cell
            .get_or_init(|| async {
                match self.tables.get_table(&table).await {
                    Ok(Some(_)) => {
                        tracing::info!(
                            "reusing the existing table {table} (not adding table_prefix `{}`)",
                            self.table_prefix
                        );
                        table.clone()
                    }
                    Ok(None) => table.with_table(format!("{}{}", self.table_prefix, table.table)),
                    Err(e) => {
                        tracing::warn!("could not check whether {table} exists ({e}); using that name");
                        table.clone()
                    }
                }
            })
            .await
            .clone();
        Ok((named, spec))
    }

    /// The table for a destination_id, created or evolved (once per run).
    pub async fn ensure(&self, destination_id: &str) -> Result<Resolved, DestinationError> {
        let (table, spec) = self.resolve(destination_id).await?;
        self.tables.ensure_table(&table, &spec).await?;
        Ok((table, spec))
    }

    /// Credentials work and the dataset is there (or may be created).
    pub async fn check_connection(&self) -> Result<(), DestinationError> {
        self.tables.ensure_dataset(&self.project, &self.dataset).await
    }
}
