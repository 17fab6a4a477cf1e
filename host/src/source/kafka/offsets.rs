//! Which offsets may be committed, and what is recorded with them.
//!
//! A partition's offset is committable once every page that carried its
//! records is covered: by the pipeline's page watermark (every record of the
//! page written or dead-lettered), or by the watermark of the destination_id
//! its topic goes to (that destination_id's records of the page written).
//! The second lets a partition commit without waiting for other
//! destination_ids, and keeps its commit in step with its destination's
//! [position](crate::source::Ack::Destination), which is recorded with it:
//! the position describes exactly the records below the committed offset,
//! so that a restart cuts (a file) or recognises (a stream) what was written
//! after the commit and will be read again.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::source::Ack;

/// A topic and partition.
pub type Tp = (Arc<str>, i32);

/// An offset to commit and what to record with it (the destination's
/// position, when it keeps one).
pub type Commit = (i64, Option<String>);

#[derive(Debug, Default)]
pub struct Offsets {
    /// The destination_id each topic's records go to.
    destinations: HashMap<Arc<str>, Arc<str>>,
    /// Pages handed to the pipeline with the next offset of each partition
    /// they reach, less the partitions already covered.
    pages: VecDeque<(u64, Vec<(Tp, i64)>)>,
    /// Pages through which every record was written.
    pages_done: Option<u64>,
    /// Pages through which each destination_id's records were written, and
    /// where it stood then.
    destinations_done: HashMap<Arc<str>, (u64, Option<String>)>,
    /// Next offset of each partition below which everything was written.
    written: HashMap<Tp, Commit>,
    committed: HashMap<Tp, Commit>,
}

impl Offsets {
    /// `destinations`: the destination_id of each topic.
    pub fn new(destinations: HashMap<Arc<str>, Arc<str>>) -> Self {
        Self {
            destinations,
            ..Self::default()
        }
    }

    /// Page `sequence` carried records of these partitions up to these next offsets.
    pub fn page(&mut self, sequence: u64, next: Vec<(Tp, i64)>) {
        if !next.is_empty() {
            self.pages.push_back((sequence, next));
        }
    }

    /// What the pipeline says was written.
    pub fn acknowledge(&mut self, ack: Ack) {
        match ack {
            Ack::Pages(done) => self.pages_done = self.pages_done.max(Some(done)),
            Ack::Destination {
                destination_id,
                through,
                position,
            } => {
                let entry = self.destinations_done.entry(destination_id).or_insert((through, None));
                entry.0 = entry.0.max(through);
                entry.1 = position;
            }
        }
        self.advance();
    }

    /// Moves every partition's written offset over the pages now covered.
    fn advance(&mut self) {
        let Self {
            destinations,
            pages,
            pages_done,
            destinations_done,
            written,
            ..
        } = self;
        for (sequence, next) in pages.iter_mut() {
            next.retain(|(tp, offset)| {
                let done = destinations.get(&tp.0).and_then(|d| destinations_done.get(d));
                let covered = pages_done.is_some_and(|p| p >= *sequence) || done.is_some_and(|(t, _)| *t >= *sequence);
                if covered {
                    // Max, not assignment: after a rebalance an older page
                    // of a partition can be covered after a newer one.
                    let at = written.entry(tp.clone()).or_insert((*offset, None));
                    at.0 = at.0.max(*offset);
                    // Where the destination stands now describes its records
                    // through this page: it moves only by writes, and a
                    // write under way keeps the page watermark below it.
                    at.1 = done.and_then(|(_, position)| position.clone());
                }
                !covered
            });
        }
        while pages.front().is_some_and(|(_, next)| next.is_empty()) {
            pages.pop_front();
        }
    }

    /// The last page holding records of `partitions` not covered yet.
    pub fn last_uncovered_page(&self, partitions: &[Tp]) -> Option<u64> {
        self.pages
            .iter()
            .rev()
            .find(|(_, next)| next.iter().any(|(tp, _)| partitions.contains(tp)))
            .map(|(s, _)| *s)
    }

    /// Written offsets not committed yet, of the partitions `keep` accepts.
    pub fn uncommitted(&self, keep: impl Fn(&Tp) -> bool) -> Vec<(Tp, Commit)> {
        self.written
            .iter()
            .filter(|(tp, w)| keep(tp) && self.committed.get(*tp) != Some(*w))
            .map(|(tp, w)| (tp.clone(), w.clone()))
            .collect()
    }

    pub fn mark_committed(&mut self, list: &[(Tp, Commit)]) {
        for (tp, commit) in list {
            self.committed.insert(tp.clone(), commit.clone());
        }
    }

    /// A commit of `tp` failed: the next commit sends it again.
    pub fn forget_commit(&mut self, tp: &Tp) {
        self.committed.remove(tp);
    }

    pub fn committed(&self, tp: &Tp) -> Option<i64> {
        self.committed.get(tp).map(|(offset, _)| *offset)
    }

    /// The destination_id of `tp`'s records.
    pub fn destination_of(&self, tp: &Tp) -> Option<&Arc<str>> {
        self.destinations.get(&tp.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(topic: &str, p: i32) -> Tp {
        (Arc::from(topic), p)
    }

    fn offsets() -> Offsets {
        Offsets::new([("t".into(), "a".into()), ("u".into(), "b".into())].into())
    }

    fn dest(id: &str, through: u64, position: &str) -> Ack {
        Ack::Destination {
            destination_id: id.into(),
            through,
            position: Some(position.into()),
        }
    }

    #[test]
    fn an_offset_is_committable_only_once_its_page_is_acknowledged() {
        let mut o = offsets();
        o.page(0, vec![(tp("t", 0), 10), (tp("t", 1), 5)]);
        o.page(1, vec![(tp("t", 0), 20)]);
        assert!(o.uncommitted(|_| true).is_empty());
        assert_eq!(o.last_uncovered_page(&[tp("t", 1)]), Some(0));
        assert_eq!(o.last_uncovered_page(&[tp("t", 0)]), Some(1));
        o.acknowledge(Ack::Pages(0));
        let mut due = o.uncommitted(|_| true);
        due.sort();
        assert_eq!(due, vec![(tp("t", 0), (10, None)), (tp("t", 1), (5, None))]);
        o.mark_committed(&due);
        assert!(o.uncommitted(|_| true).is_empty());
        assert_eq!(o.last_uncovered_page(&[tp("t", 1)]), None);
        o.acknowledge(Ack::Pages(1));
        assert_eq!(o.uncommitted(|t| t.1 == 0), vec![(tp("t", 0), (20, None))]);
        assert!(o.uncommitted(|t| t.1 == 1).is_empty());
    }

    #[test]
    fn an_older_page_acknowledged_late_never_moves_an_offset_back() {
        let mut o = offsets();
        o.page(3, vec![(tp("t", 0), 30)]);
        o.acknowledge(Ack::Pages(3));
        o.page(4, vec![(tp("t", 0), 12)]);
        o.acknowledge(Ack::Pages(4));
        assert_eq!(o.uncommitted(|_| true), vec![(tp("t", 0), (30, None))]);
    }

    #[test]
    fn a_destination_commits_its_partitions_with_its_position_without_waiting_for_others() {
        let mut o = offsets();
        o.page(0, vec![(tp("t", 0), 10), (tp("u", 0), 7)]);
        o.page(1, vec![(tp("t", 0), 20), (tp("u", 0), 9)]);
        // `a` (topic t) wrote pages 0 and 1; `b` (topic u) nothing yet.
        o.acknowledge(dest("a", 1, "a@100"));
        assert_eq!(o.uncommitted(|_| true), vec![(tp("t", 0), (20, Some("a@100".into())))]);
        assert_eq!(o.last_uncovered_page(&[tp("u", 0)]), Some(1));
        o.acknowledge(dest("b", 0, "b@5"));
        let mut due = o.uncommitted(|_| true);
        due.sort();
        assert_eq!(
            due,
            vec![
                (tp("t", 0), (20, Some("a@100".into()))),
                (tp("u", 0), (7, Some("b@5".into())))
            ]
        );
    }

    #[test]
    fn a_partition_covered_by_the_page_watermark_keeps_its_destinations_last_position() {
        let mut o = offsets();
        o.page(0, vec![(tp("t", 0), 10)]);
        o.acknowledge(dest("a", 0, "a@100"));
        // Page 1 held only records of `t` that were skipped: no write of `a`.
        o.page(1, vec![(tp("t", 0), 15)]);
        o.acknowledge(Ack::Pages(1));
        assert_eq!(o.uncommitted(|_| true), vec![(tp("t", 0), (15, Some("a@100".into())))]);
    }
}
