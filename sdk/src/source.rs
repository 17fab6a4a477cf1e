//! Where a batch's rows were read: for a Kafka source, per topic partition
//! the first and last offset, and a batch id derived from them.
//!
//! ```ignore
//! fn write(&mut self, batch: &RecordBatch, info: &BatchInfo) -> Result<u64, WriteError> {
//!     // The same id for a retry and for a replay cut at the same offsets.
//!     let key = bizon_sdk::batch_source().map(|s| s.batch_id);
//!     ...
//! }
//! ```
//!
//! A replay after a crash starts again from the last commit and may be cut
//! at other offsets (so carry another id): to be exactly-once across
//! crashes, key rows on `_source_record_id` as well (docs/plugins.md).

/// The messages of one topic partition a batch holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetRange {
    pub topic: String,
    pub partition: i32,
    /// Offset of the first message the batch's pages took (records, skips
    /// and dead letters alike).
    pub first: i64,
    pub last: i64,
}

/// What [`batch_source`] answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchSource {
    /// 32 hex digits derived from the destination_id and `ranges` only.
    pub batch_id: String,
    /// Sorted by topic, then partition.
    pub ranges: Vec<OffsetRange>,
}

/// Where the batch being written comes from: call it inside
/// [`Destination::write`](crate::Destination::write). `None` for a source
/// without positions (dummy, jsonl, bridge), outside a write, and in a
/// native `cargo test` (no host there).
///
/// A plugin that calls it imports `host.batch-source`, which hosts before
/// that function was added do not give: such a plugin needs a host that
/// has it (any bizon-host that documents `batch_source`).
#[cfg(target_family = "wasm")]
pub fn batch_source() -> Option<BatchSource> {
    let origin = crate::bindings::bizon::destination::host::batch_source()?;
    Some(BatchSource {
        batch_id: origin.batch_id,
        ranges: origin
            .ranges
            .into_iter()
            .map(|r| OffsetRange {
                topic: r.topic,
                partition: r.partition,
                first: r.first,
                last: r.last,
            })
            .collect(),
    })
}

/// Outside WebAssembly there is no host: no batch has a source.
#[cfg(not(target_family = "wasm"))]
pub fn batch_source() -> Option<BatchSource> {
    None
}
