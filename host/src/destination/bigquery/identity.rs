//! Ids derived from what a record is at its source (for Kafka: topic,
//! partition, offset, all in source_record_id and source_data), so that the
//! same messages read again after a crash produce the same insertIds and
//! load job ids, and BigQuery drops the repeat.

use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch};

use crate::record::{SOURCE_DATA, SOURCE_RECORD_ID};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// A second FNV-1a lane: 64 bits alone could collide among the millions of
/// ids a busy table sees in the de-duplication window.
const SECOND_LANE: u64 = 0x9e37_79b9_7f4a_7c15;

pub fn fnv1a(start: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(start, |h, &b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3))
}

/// 128 bits of FNV-1a over `parts` (each ended by a 0 byte), as 32 hex digits.
fn hash128<'a>(parts: impl Iterator<Item = &'a [u8]> + Clone) -> String {
    let lane = |seed: u64| {
        parts
            .clone()
            .fold(FNV_OFFSET ^ seed, |h, part| fnv1a(fnv1a(h, part), b"\0"))
    };
    format!("{:016x}{:016x}", lane(0), lane(SECOND_LANE))
}

/// The insertId of one row: destination_id, source_record_id, source_data.
pub fn row_id(destination_id: &str, source_record_id: &str, source_data: &[u8]) -> String {
    hash128([destination_id.as_bytes(), source_record_id.as_bytes(), source_data].into_iter())
}

/// The identity of a whole batch of Bizon records: the set of its rows
/// (source_record_id and source_data), whatever their order (partitions
/// interleave differently from one read to the next), or None when the batch
/// does not carry those columns.
pub fn batch_id(records: &RecordBatch) -> Option<String> {
    let ids = records.column_by_name(SOURCE_RECORD_ID)?.as_string_opt::<i32>()?;
    let data = records.column_by_name(SOURCE_DATA)?.as_string_opt::<i32>()?;
    let (mut a, mut b) = (0u64, 0u64);
    for i in 0..records.num_rows() {
        let d = if data.is_valid(i) { data.value(i) } else { "" };
        let lane = |seed: u64| {
            let h = fnv1a(fnv1a(FNV_OFFSET ^ seed, ids.value(i).as_bytes()), b"\0");
            fnv1a(fnv1a(h, d.as_bytes()), b"\0")
        };
        a = a.wrapping_add(lane(0));
        b = b.wrapping_add(lane(SECOND_LANE));
    }
    Some(format!("{a:016x}{b:016x}_{}", records.num_rows()))
}
