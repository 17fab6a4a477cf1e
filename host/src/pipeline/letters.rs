//! Dead letters: what a page could not turn into records, and rows a
//! destination refused, go to the run's `dead_letter` sink; once it has
//! them they count as delivered, and past its bound the run stops.

use std::sync::atomic::Ordering;

use super::{PipelineError, RejectedRecord, Run};
use crate::record::Letter;

impl Run {
    /// Sends rejected rows to the dead letter; once it has them they count as
    /// delivered (their pages may be acknowledged). Past its bound, the run stops.
    pub(super) fn dead_letter(
        &mut self,
        rejected: Vec<RejectedRecord>,
        data: Vec<Option<String>>,
    ) -> Result<(), PipelineError> {
        let dead_letters = self.dead_letters.clone().expect("a dead letter sink");
        let letters: Vec<Letter> = rejected
            .iter()
            .zip(data)
            .map(|(r, source_data)| Letter::Rejected {
                destination_id: r.destination_id.clone(),
                source_record_id: r.source_record_id.clone(),
                reason: r.reason.clone(),
                source_data,
            })
            .collect();
        if let Some(stats) = &self.source_stats {
            stats.dead_letters.fetch_add(letters.len() as u64, Ordering::Relaxed);
        }
        self.stats.note_rejected(rejected);
        dead_letters.send(&letters)?;
        Ok(())
    }

    /// What a page could not turn into records goes to the dead letters
    /// before the page can be acknowledged; `records` more were read (the
    /// ratio bound's denominator).
    pub(super) fn dead_letter_page(&mut self, records: usize, letters: Vec<Letter>) -> Result<(), PipelineError> {
        let Some(dead_letters) = &self.dead_letters else {
            debug_assert!(letters.is_empty(), "letters come only when there is a dead letter sink");
            return Ok(());
        };
        dead_letters.saw((records + letters.len()) as u64);
        if letters.is_empty() {
            return Ok(());
        }
        if let Some(stats) = &self.source_stats {
            stats.dead_letters.fetch_add(letters.len() as u64, Ordering::Relaxed);
        }
        dead_letters.send(&letters)?;
        Ok(())
    }
}
