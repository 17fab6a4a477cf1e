//! The acknowledgement watermark: a page is acknowledged to the source
//! only once every one of its records was written (or dead-lettered), and
//! pages are acknowledged in order.

use super::Run;
use crate::source::SourceHandle;

impl Run {
    /// Acknowledges every page older than the oldest one with unwritten rows.
    pub(super) fn acknowledge(&mut self, handle: &SourceHandle) {
        let oldest_unwritten = [self.buffers.oldest_page(), self.pending_pages.keys().next().copied()]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(self.pages_read);
        if let Some(done) = oldest_unwritten.checked_sub(1) {
            if self.acknowledged.is_none_or(|a| a < done) {
                self.acknowledged = Some(done);
                // The source thread may be gone already; nothing is left to commit then.
                let _ = handle.acks.send(done);
            }
        }
    }
}
