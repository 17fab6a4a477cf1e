//! What the three destinations share: where a destination_id's rows go, and
//! that table's existence and definition.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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
    specs: Mutex<HashMap<Arc<str>, Resolved>>,
}

impl Target {
    pub fn new(
        options: DestinationOptions,
        project: String,
        dataset: String,
        partitioning: Option<TimePartitioning>,
        source_data: SourceDataType,
        tables: Tables,
    ) -> Result<Self, DestinationError> {
        let target = Self {
            options,
            project,
            dataset,
            partitioning,
            source_data,
            tables,
            specs: Mutex::default(),
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

    /// The table for a destination_id, created if missing (once per run).
    pub async fn ensure(&self, destination_id: &str) -> Result<Resolved, DestinationError> {
        let (table, spec) = self.spec_for(destination_id)?;
        self.tables.ensure_table(&table, &spec).await?;
        Ok((table, spec))
    }

    /// Credentials work and the dataset is there (or may be created).
    pub async fn check_connection(&self) -> Result<(), DestinationError> {
        self.tables.ensure_dataset(&self.project, &self.dataset).await
    }
}
