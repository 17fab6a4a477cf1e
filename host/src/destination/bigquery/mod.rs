//! BigQuery destinations.
