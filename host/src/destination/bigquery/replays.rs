//! Exactly-once with a Kafka source for the three BigQuery destinations.
//!
//! After each completed write a destination_id's position is its table and
//! the batch's `_bizon_loaded_at`, which the source commits with the offsets
//! of those records. After a crash, what was written after the last commit
//! is read again: at the restart each table is asked which rows came after
//! the committed `_bizon_loaded_at`, and records of those (by
//! `_source_record_id` and `_source_timestamp`) are recognised in the
//! replayed batches and not written again. A table holds them already;
//! BigQuery has no way to take rows back (a committed stream cannot be
//! truncated), so recognising them is the way.
//!
//! The table is asked at the first write after the restart, not at the
//! restart itself: an append the killed process had on the wire may still
//! land after it died, and bqemulator answers a query without the rows of
//! an AppendRows stream still open (the dead process's too, until it
//! notices the connection is gone): a chaos run on a loaded machine found
//! 33 rows twice with the table asked at the restart. The
//! first write comes only once the group has handed the partitions over,
//! seconds later; it asks before opening its own stream.
//!
//! A restarted run keeps recording the position it resumed from (not its
//! own) until it has read past every row the table was found to hold on
//! each partition it writes: killed again before that, the next run must
//! still find the first crashed run's rows, which were written before this
//! run's own. Partitions it never reads do not hold it: it commits none of
//! them. (Found by reading the code after a chaos run wrote 33 rows twice
//! among 14,233; the unit test below pins the rule, the chaos tests only
//! meet it by chance.)
//!
//! Tables with `unnest: true` have no `_source_record_id` column (Bizon's
//! layout): there, what a crashed run wrote after its last commit can be
//! written once more (docs/kafka.md).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMicrosecondType;
use arrow_array::{Array, BooleanArray};
use serde::{Deserialize, Serialize};

use super::schema::TableRef;
use super::tables::Tables;
use crate::destination::{Batch, DestinationError, RejectedRow};
use crate::record::{BIZON_LOADED_AT, SOURCE_RECORD_ID, SOURCE_TIMESTAMP};

/// A destination_id's position: its table, and the last written batch's
/// `_bizon_loaded_at` (microseconds).
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Position {
    table: String,
    loaded_at_us: i64,
}

/// A record's identity across runs: its source_record_id and timestamp.
type Identity = (String, i64);

/// What a restart found its table holding past the last commit, until this
/// run has read past it.
struct Inherited {
    /// The position resumed from.
    table: String,
    since: i64,
    /// By partition (of any topic: `partition_{p}_offset_{o}` names no
    /// topic): the highest offset among the rows found.
    found_through: HashMap<i32, i64>,
    /// By topic and partition this run wrote: the last offset written.
    read: HashMap<(Arc<str>, i32), i64>,
}

impl Inherited {
    /// True while a partition this run writes has rows found further on
    /// than it has read: its commits must still name `since`.
    fn holds(&self) -> bool {
        self.read
            .iter()
            .any(|((_, p), last)| self.found_through.get(p).is_some_and(|found| last < found))
    }
}

/// The Kafka partition and offset of a `partition_{p}_offset_{o}` record id.
fn kafka_position(id: &str) -> Option<(i32, i64)> {
    let (p, o) = id.strip_prefix("partition_")?.split_once("_offset_")?;
    Some((p.parse().ok()?, o.parse().ok()?))
}

#[derive(Default)]
pub struct Replays {
    /// The positions of the last commit, until the first write asks the
    /// tables (an async lock: writes of other destination_ids wait for it).
    deferred: tokio::sync::Mutex<Option<crate::source::Positions>>,
    /// By destination_id: the records its table got after the last commit.
    written: Mutex<HashMap<Arc<str>, HashSet<Identity>>>,
    /// By destination_id: its table and last written batch's loaded time.
    last: Mutex<HashMap<Arc<str>, (String, i64)>>,
    /// By destination_id: the position resumed from, while it must be kept.
    inherited: Mutex<HashMap<Arc<str>, Inherited>>,
    replayed: AtomicU64,
}

/// A batch less the records its table already has, and the original index
/// of each row kept (to name refused rows by their place in the batch).
pub struct Kept {
    pub batch: Batch,
    pub rows: Vec<usize>,
}

impl Kept {
    /// A refused row of the kept batch, named by its place in the original.
    pub fn original(&self, mut row: RejectedRow) -> RejectedRow {
        row.row = self.rows[row.row as usize] as u64;
        row
    }
}

impl Replays {
    /// Keeps the positions of the last commit for the first write (see the
    /// module).
    pub async fn resume(&self, positions: &crate::source::Positions) {
        *self.deferred.lock().await = Some(positions.clone());
    }

    /// At the first write after [`resume`](Self::resume): asks each
    /// destination_id's table which records came after its last commit.
    /// `table_of` resolves a destination_id to the table its rows are
    /// published to.
    pub async fn load<F, Fut>(&self, tables: &Tables, table_of: F) -> Result<(), DestinationError>
    where
        F: Fn(Arc<str>) -> Fut,
        Fut: std::future::Future<Output = Result<TableRef, DestinationError>>,
    {
        let mut deferred = self.deferred.lock().await;
        let Some(positions) = deferred.as_ref() else {
            return Ok(());
        };
        for (id, recorded) in positions {
            let table = table_of(id.clone()).await?;
            let name = table.to_string();
            // Every writer of the table recorded its own time; rows after the
            // earliest cover what any of them wrote after its commit.
            let Some(since) = recorded
                .iter()
                .filter_map(|p| serde_json::from_str::<Position>(p).ok())
                .filter(|p| p.table == name)
                .map(|p| p.loaded_at_us)
                .min()
            else {
                continue;
            };
            let sql = format!(
                "SELECT _source_record_id, UNIX_MICROS(_source_timestamp) FROM `{table}` \
                 WHERE _bizon_loaded_at > TIMESTAMP_MICROS({since})"
            );
            let what = format!("reading what {table} got after the last commit");
            let rows = tables.select(&table.project, &sql, &what).await?;
            let found: HashSet<Identity> = rows
                .into_iter()
                .filter_map(|r| match r.as_slice() {
                    [Some(id), Some(at)] => Some((id.clone(), at.parse().ok()?)),
                    _ => None,
                })
                .collect();
            if !found.is_empty() {
                tracing::info!(
                    destination_id = &**id,
                    rows = found.len(),
                    "{table}: rows written after the last commit; the same records read again are not written twice"
                );
                let mut found_through = HashMap::new();
                for (p, o) in found.iter().filter_map(|(id, _)| kafka_position(id)) {
                    let through = found_through.entry(p).or_insert(o);
                    *through = o.max(*through);
                }
                let inherited = Inherited {
                    table: name,
                    since,
                    found_through,
                    read: HashMap::new(),
                };
                self.inherited.lock().expect("replays").insert(id.clone(), inherited);
                self.written.lock().expect("replays").insert(id.clone(), found);
            }
        }
        *deferred = None;
        Ok(())
    }

    /// `batch` less the records its table has already; `None` when it keeps
    /// every row. Deterministic: a retry of the batch keeps the same rows.
    pub fn filter(&self, batch: &Batch) -> Result<Option<Kept>, DestinationError> {
        let written = self.written.lock().expect("replays");
        let Some(found) = written.get(&batch.destination_id) else {
            return Ok(None);
        };
        let records = &batch.records;
        let (Some(ids), Some(times)) = (
            records
                .column_by_name(SOURCE_RECORD_ID)
                .and_then(|c| c.as_string_opt::<i32>()),
            records
                .column_by_name(SOURCE_TIMESTAMP)
                .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>()),
        ) else {
            return Ok(None);
        };
        let keep: Vec<bool> = (0..records.num_rows())
            .map(|i| !found.contains(&(ids.value(i).to_string(), times.value(i))))
            .collect();
        let skipped = keep.iter().filter(|k| !**k).count();
        if skipped == 0 {
            return Ok(None);
        }
        let rows: Vec<usize> = keep.iter().enumerate().filter(|(_, k)| **k).map(|(i, _)| i).collect();
        let kept = arrow_select::filter::filter_record_batch(records, &BooleanArray::from(keep))
            .map_err(|e| DestinationError::Fatal(format!("leaving out rows already written: {e}")))?;
        self.replayed.fetch_add(skipped as u64, Ordering::Relaxed);
        Ok(Some(Kept {
            batch: Batch {
                records: kept,
                ..batch.clone()
            },
            rows,
        }))
    }

    /// What to send of `batch` after [`filter`](Self::filter): the kept
    /// rows, the whole batch, or nothing when every row was written before.
    pub fn to_send<'a>(kept: &'a Option<Kept>, batch: &'a Batch) -> Option<&'a Batch> {
        match kept {
            Some(kept) if kept.batch.records.num_rows() == 0 => None,
            Some(kept) => Some(&kept.batch),
            None => Some(batch),
        }
    }

    /// The outcome of sending what [`to_send`](Self::to_send) gave: the
    /// batch recorded as written to `table` (its rows, kept or recognised,
    /// counted), or rows refused of a filtered batch named by their place
    /// in `batch`.
    pub fn settle(
        &self,
        batch: &Batch,
        table: &TableRef,
        kept: Option<Kept>,
        sent: Result<(), DestinationError>,
    ) -> Result<u64, DestinationError> {
        match (sent, kept) {
            (Ok(()), _) => {
                self.written(batch, table);
                Ok(batch.records.num_rows() as u64)
            }
            (Err(DestinationError::Rejected(rows)), Some(kept)) => Err(DestinationError::Rejected(
                rows.into_iter().map(|r| kept.original(r)).collect(),
            )),
            (Err(e), _) => Err(e),
        }
    }

    /// `batch` is in `table` (written, or recognised as written before): its
    /// destination_id's position moves.
    pub fn written(&self, batch: &Batch, table: &TableRef) {
        let destination_id = &batch.destination_id;
        if let Some(inherited) = self.inherited.lock().expect("replays").get_mut(destination_id) {
            for span in &batch.source {
                let last = inherited
                    .read
                    .entry((span.topic.clone(), span.partition))
                    .or_insert(span.last);
                *last = span.last.max(*last);
            }
        }
        let loaded = batch
            .records
            .column_by_name(BIZON_LOADED_AT)
            .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
            .filter(|c| !c.is_empty())
            .map(|c| c.value(0));
        if let Some(at) = loaded {
            let mut last = self.last.lock().expect("replays");
            let entry = last.entry(destination_id.clone()).or_insert((table.to_string(), at));
            *entry = (table.to_string(), entry.1.max(at));
        }
    }

    pub fn position(&self, destination_id: &str) -> Option<String> {
        if let Some(held) = self.inherited.lock().expect("replays").get(destination_id) {
            if held.holds() {
                return serde_json::to_string(&Position {
                    table: held.table.clone(),
                    loaded_at_us: held.since,
                })
                .ok();
            }
        }
        let last = self.last.lock().expect("replays");
        let (table, loaded_at_us) = last.get(destination_id)?.clone();
        serde_json::to_string(&Position { table, loaded_at_us }).ok()
    }

    /// Records recognised as written before and left out.
    pub fn replayed(&self) -> u64 {
        self.replayed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Span;
    use arrow_array::{RecordBatch, TimestampMicrosecondArray};
    use arrow_schema::{DataType, Field, Schema, TimeUnit};

    fn batch(loaded_at: i64, spans: &[(&str, i32, i64)]) -> Batch {
        let field = Field::new(BIZON_LOADED_AT, DataType::Timestamp(TimeUnit::Microsecond, None), false);
        let records = RecordBatch::try_new(
            Arc::new(Schema::new(vec![field])),
            vec![Arc::new(TimestampMicrosecondArray::from(vec![loaded_at]))],
        )
        .unwrap();
        Batch {
            destination_id: "events".into(),
            sequence: 0,
            records,
            source: spans
                .iter()
                .map(|(topic, partition, last)| Span {
                    destination_id: "events".into(),
                    topic: (*topic).into(),
                    partition: *partition,
                    first: 0,
                    last: *last,
                })
                .collect(),
        }
    }

    fn loaded_at(replays: &Replays) -> i64 {
        let position: Position = serde_json::from_str(&replays.position("events").unwrap()).unwrap();
        position.loaded_at_us
    }

    #[test]
    fn a_restarted_run_names_the_position_it_resumed_from_until_it_read_past_what_was_found() {
        let replays = Replays::default();
        let table = TableRef {
            project: "p".into(),
            dataset: "d".into(),
            table: "events".into(),
        };
        replays.inherited.lock().unwrap().insert(
            "events".into(),
            Inherited {
                table: table.to_string(),
                since: 100,
                found_through: HashMap::from([(0, 40), (1, 7)]),
                read: HashMap::new(),
            },
        );
        // Partition 0 read up to 30 of the 40 found: a commit now must
        // still let the next run find offsets 31-40.
        replays.written(&batch(500, &[("t", 0, 30)]), &table);
        assert_eq!(loaded_at(&replays), 100);
        // Partition 2 had nothing found; partition 0 is read past.
        replays.written(&batch(600, &[("t", 0, 41), ("t", 2, 9)]), &table);
        assert_eq!(loaded_at(&replays), 600);
        // Partition 1 comes to this run later, behind what was found.
        replays.written(&batch(700, &[("t", 1, 3)]), &table);
        assert_eq!(loaded_at(&replays), 100);
        replays.written(&batch(800, &[("t", 1, 7)]), &table);
        assert_eq!(loaded_at(&replays), 800);
    }
}
