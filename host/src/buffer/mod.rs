//! One buffer per destination_id and the three flush triggers Bizon has:
//! size, age and end of source. Unlike Bizon, age is checked by a timer (the
//! pipeline sleeps until [`Buffers::next_deadline`]), so an idle source still
//! gets its records written; and `buffer_size: 0` writes each page at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_schema::ArrowError;
use tokio::time::Instant;

use crate::record::{BizonIdGenerator, RecordBuilder, SourceRecord};
use crate::source::Span;

/// Why a buffer is flushed; logged with each write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushReason {
    /// It reached `buffer_size`.
    Size,
    /// Its first record is older than `buffer_flush_timeout`.
    Age,
    /// `buffer_size: 0`: every page is written as it comes.
    Immediate,
    /// The buffers together hold more than the memory budget allows.
    Memory,
    /// The source is exhausted or the run is stopping.
    End,
    /// The source waits for what it handed over to be written (a Kafka
    /// partition is being revoked).
    Drain,
}

#[derive(Debug, Clone, Copy)]
pub struct BufferPolicy {
    /// 0 writes every page at once.
    pub capacity_bytes: usize,
    /// `None` turns the age trigger off (`buffer_flush_timeout: 0`, as in Bizon).
    pub timeout: Option<Duration>,
}

/// Rows ready to write, with the pages they came from.
pub struct Flushed {
    pub destination_id: Arc<str>,
    pub records: RecordBatch,
    pub reason: FlushReason,
    /// Oldest page with a row in this batch.
    pub first_page: u64,
    /// Bytes the rows held in the buffer, released once written.
    pub bytes: usize,
    /// Per source partition, the messages the batch's pages took (Kafka),
    /// sorted by topic and partition; empty for sources without positions.
    pub spans: Vec<Span>,
}

struct Buffer {
    builder: RecordBuilder,
    opened_at: Option<Instant>,
    first_page: Option<u64>,
    spans: Vec<Span>,
}

pub struct Buffers {
    policy: BufferPolicy,
    default_destination_id: Arc<str>,
    ids: BizonIdGenerator,
    buffers: HashMap<Arc<str>, Buffer>,
    bytes: usize,
}

impl Buffers {
    pub fn new(policy: BufferPolicy, default_destination_id: Arc<str>) -> Self {
        Self {
            policy,
            default_destination_id,
            ids: BizonIdGenerator::new(),
            buffers: HashMap::new(),
            bytes: 0,
        }
    }

    /// Bytes held across all buffers.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Routes a page's records by destination_id (the record's own, else the
    /// default) and returns the destination_ids whose buffer is due because
    /// of it.
    pub fn append(
        &mut self,
        page: u64,
        extracted_at_us: i64,
        records: &[SourceRecord],
        now: Instant,
    ) -> Vec<(Arc<str>, FlushReason)> {
        let mut touched: Vec<Arc<str>> = Vec::new();
        let mut rest = records;
        while let Some(first) = rest.first() {
            // Records of one destination_id mostly come in runs (a page of
            // one topic, a source without ids): look the buffer up once a run.
            let same = |r: &SourceRecord| match (&r.destination_id, &first.destination_id) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
                _ => false,
            };
            let run = rest.iter().position(|r| !same(r)).unwrap_or(rest.len());
            let (batch, tail) = rest.split_at(run);
            rest = tail;
            let id = first.destination_id.as_ref().unwrap_or(&self.default_destination_id);
            let buffer = match self.buffers.get_mut(id) {
                Some(b) => b,
                None => self.buffers.entry(id.clone()).or_insert_with(|| Buffer {
                    builder: RecordBuilder::new(id.clone()),
                    opened_at: None,
                    first_page: None,
                    spans: Vec::new(),
                }),
            };
            if buffer.opened_at.is_none() {
                buffer.opened_at = Some(now);
                buffer.first_page = Some(page);
            }
            if !touched.contains(id) {
                touched.push(id.clone());
            }
            let before = buffer.builder.bytes();
            for record in batch {
                buffer.builder.append(&mut self.ids, extracted_at_us, record);
            }
            self.bytes += buffer.builder.bytes() - before;
        }
        touched
            .into_iter()
            .filter_map(|id| {
                let rows = self.buffers[&id].builder.bytes();
                if self.policy.capacity_bytes == 0 {
                    Some((id, FlushReason::Immediate))
                } else if rows >= self.policy.capacity_bytes {
                    Some((id, FlushReason::Size))
                } else {
                    None
                }
            })
            .collect()
    }

    /// Adds a page's source spans (just appended) to the buffers of their
    /// destination_ids that hold rows: a batch spans from the first offset
    /// of its first page to the last of its last, per partition.
    pub fn note_spans(&mut self, spans: &[Span]) {
        for span in spans {
            let Some(buffer) = self.buffers.get_mut(&span.destination_id) else {
                continue;
            };
            if buffer.builder.rows() == 0 {
                continue;
            }
            let key = |s: &Span| (s.topic.clone(), s.partition);
            match buffer.spans.binary_search_by_key(&key(span), key) {
                Ok(at) => {
                    let held = &mut buffer.spans[at];
                    held.first = held.first.min(span.first);
                    held.last = held.last.max(span.last);
                }
                Err(at) => buffer.spans.insert(at, span.clone()),
            }
        }
    }

    /// When the oldest non-empty buffer reaches its age limit.
    pub fn next_deadline(&self) -> Option<Instant> {
        let timeout = self.policy.timeout?;
        self.buffers
            .values()
            .filter_map(|b| b.opened_at)
            .min()
            .map(|t| t + timeout)
    }

    /// destination_ids whose buffer is at least `timeout` old at `now`.
    pub fn due(&self, now: Instant) -> Vec<Arc<str>> {
        let Some(timeout) = self.policy.timeout else {
            return Vec::new();
        };
        self.buffers
            .iter()
            .filter(|(_, b)| b.opened_at.is_some_and(|t| now >= t + timeout))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The non-empty buffer holding the most bytes, to relieve memory.
    pub fn largest(&self) -> Option<Arc<str>> {
        self.buffers
            .iter()
            .filter(|(_, b)| b.builder.rows() > 0)
            .max_by_key(|(_, b)| b.builder.bytes())
            .map(|(id, _)| id.clone())
    }

    /// Every non-empty buffer's destination_id.
    pub fn non_empty(&self) -> Vec<Arc<str>> {
        self.buffers
            .iter()
            .filter(|(_, b)| b.builder.rows() > 0)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Oldest page that still has rows waiting in a buffer.
    pub fn oldest_page(&self) -> Option<u64> {
        self.buffers.values().filter_map(|b| b.first_page).min()
    }

    /// Oldest page that still has rows of `id` waiting in its buffer.
    pub fn oldest_page_of(&self, id: &str) -> Option<u64> {
        self.buffers.get(id).and_then(|b| b.first_page)
    }

    /// Empties the buffer of `id` into a batch stamped `loaded_at_us`.
    pub fn take(
        &mut self,
        id: &Arc<str>,
        reason: FlushReason,
        loaded_at_us: i64,
    ) -> Result<Option<Flushed>, ArrowError> {
        let Some(buffer) = self.buffers.get_mut(id) else {
            return Ok(None);
        };
        if buffer.builder.rows() == 0 {
            return Ok(None);
        }
        let bytes = buffer.builder.bytes();
        let records = buffer.builder.finish(loaded_at_us)?;
        let first_page = buffer.first_page.take().unwrap_or(0);
        buffer.opened_at = None;
        self.bytes -= bytes;
        Ok(Some(Flushed {
            destination_id: id.clone(),
            records,
            reason,
            first_page,
            bytes,
            spans: std::mem::take(&mut buffer.spans),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(n: usize, id: Option<&str>) -> Vec<SourceRecord> {
        (0..n)
            .map(|i| SourceRecord {
                id: i.to_string(),
                timestamp_us: 0,
                data: format!("{{\"i\":{i}}}"),
                destination_id: id.map(Arc::from),
            })
            .collect()
    }

    fn buffers(capacity_bytes: usize, timeout: Option<u64>) -> Buffers {
        Buffers::new(
            BufferPolicy {
                capacity_bytes,
                timeout: timeout.map(Duration::from_secs),
            },
            "default".into(),
        )
    }

    #[test]
    fn size_trigger_fires_once_the_buffer_holds_buffer_size_bytes() {
        let mut b = buffers(1000, None);
        let now = Instant::now();
        assert!(b.append(0, 0, &records(5, None), now).is_empty());
        let due = b.append(1, 0, &records(50, None), now);
        assert_eq!(due, vec![(Arc::from("default"), FlushReason::Size)]);
        let flushed = b.take(&due[0].0, FlushReason::Size, 1).unwrap().unwrap();
        assert_eq!(flushed.records.num_rows(), 55);
        assert_eq!(flushed.first_page, 0);
        assert_eq!(b.bytes(), 0);
        assert!(b.take(&due[0].0, FlushReason::Size, 1).unwrap().is_none());
    }

    #[test]
    fn a_batch_spans_its_pages_offsets_per_partition_for_its_destination_id_only() {
        let span = |id: &str, partition, first, last| Span {
            destination_id: id.into(),
            topic: format!("topic-{id}").into(),
            partition,
            first,
            last,
        };
        let mut b = buffers(1 << 30, None);
        let now = Instant::now();
        b.append(0, 0, &records(2, Some("x")), now);
        b.note_spans(&[span("x", 1, 10, 11), span("y", 0, 5, 5)]);
        b.append(1, 0, &records(3, Some("x")), now);
        b.note_spans(&[span("x", 1, 12, 14), span("x", 0, 3, 3)]);
        let flushed = b.take(&Arc::from("x"), FlushReason::End, 1).unwrap().unwrap();
        assert_eq!(flushed.spans, vec![span("x", 0, 3, 3), span("x", 1, 10, 14)]);
        // The next batch starts afresh; "y" had no rows, so no batch to span.
        b.append(2, 0, &records(1, Some("x")), now);
        b.note_spans(&[span("x", 1, 15, 15)]);
        let next = b.take(&Arc::from("x"), FlushReason::End, 1).unwrap().unwrap();
        assert_eq!(next.spans, vec![span("x", 1, 15, 15)]);
        assert!(b.take(&Arc::from("y"), FlushReason::End, 1).unwrap().is_none());
    }

    #[test]
    fn zero_buffer_size_flushes_every_page() {
        let mut b = buffers(0, None);
        let due = b.append(0, 0, &records(1, Some("x")), Instant::now());
        assert_eq!(due, vec![(Arc::from("x"), FlushReason::Immediate)]);
    }

    #[test]
    fn age_trigger_counts_from_the_first_record_of_a_buffer() {
        let mut b = buffers(1 << 30, Some(10));
        let t0 = Instant::now();
        b.append(0, 0, &records(1, Some("a")), t0);
        b.append(1, 0, &records(1, Some("b")), t0 + Duration::from_secs(4));
        assert_eq!(b.next_deadline(), Some(t0 + Duration::from_secs(10)));
        assert!(b.due(t0 + Duration::from_secs(9)).is_empty());
        assert_eq!(b.due(t0 + Duration::from_secs(10)), vec![Arc::from("a")]);
        b.take(&Arc::from("a"), FlushReason::Age, 0).unwrap();
        assert_eq!(b.next_deadline(), Some(t0 + Duration::from_secs(14)));
    }

    #[test]
    fn zero_timeout_disables_the_age_trigger() {
        let mut b = buffers(1 << 30, None);
        b.append(0, 0, &records(1, None), Instant::now());
        assert_eq!(b.next_deadline(), None);
    }

    #[test]
    fn routes_by_the_records_destination_id_else_the_default() {
        let mut b = buffers(1 << 30, None);
        let now = Instant::now();
        b.append(0, 0, &records(2, Some("users")), now);
        b.append(1, 0, &records(3, None), now);
        let mut ids: Vec<_> = b.non_empty().iter().map(|s| s.to_string()).collect();
        ids.sort();
        assert_eq!(ids, ["default", "users"]);
        assert_eq!(b.largest().as_deref(), Some("default"));
        assert_eq!(b.oldest_page(), Some(0));
        let users = b.take(&Arc::from("users"), FlushReason::End, 0).unwrap().unwrap();
        assert_eq!(users.records.num_rows(), 2);
        assert_eq!(b.oldest_page(), Some(1));
    }
}
