//! The acknowledgement watermarks: a page is acknowledged to the source
//! only once every one of its records was written (or dead-lettered), and
//! pages are acknowledged in order. Per destination_id too: the pages
//! through which its records are written, with where the destination stood
//! then ([`Destination::position`](crate::destination::Destination::position)),
//! which a Kafka source commits with the offsets of that destination_id's
//! partitions so that a restart can tell a replay from new data.

use std::sync::Arc;

use super::Run;
use crate::source::{Ack, SourceHandle};

impl Run {
    /// The oldest page with records of `id` not written yet, if any.
    fn oldest_unwritten_of(&self, id: &str) -> Option<u64> {
        let pending = self.pending_pages.get(id).and_then(|p| p.front().copied());
        [self.buffers.oldest_page_of(id), pending].into_iter().flatten().min()
    }

    /// Acknowledges every page older than the oldest one with unwritten rows.
    pub(super) fn acknowledge(&mut self, handle: &SourceHandle) {
        let pending = self.pending_pages.values().filter_map(|p| p.front().copied()).min();
        let oldest_unwritten = [self.buffers.oldest_page(), pending]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(self.pages_read);
        if let Some(done) = oldest_unwritten.checked_sub(1) {
            if self.acknowledged.is_none_or(|a| a < done) {
                self.acknowledged = Some(done);
                // The source thread may be gone already; nothing is left to commit then.
                let _ = handle.acks.send(Ack::Pages(done));
            }
        }
    }

    /// Tells the source how far `id`'s records are written, and where its
    /// destination stands now; called when a write of `id` completed (no
    /// other write of `id` is under way then) and after finalize.
    pub(super) fn acknowledge_destination(&mut self, id: &Arc<str>, handle: &SourceHandle) {
        let through = self.oldest_unwritten_of(id).unwrap_or(self.pages_read);
        let Some(through) = through.checked_sub(1) else { return };
        let position = self.destination.position(id);
        let now = (through, position);
        if self.acked_destinations.get(id) == Some(&now) {
            return;
        }
        let (through, position) = now.clone();
        self.acked_destinations.insert(id.clone(), now);
        let _ = handle.acks.send(Ack::Destination {
            destination_id: id.clone(),
            through,
            position,
        });
    }
}
