//! Which offsets may be committed: a partition's offset is committable once
//! every page that carried its records was acknowledged (written or
//! dead-lettered), never before.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// A topic and partition.
pub type Tp = (Arc<str>, i32);

#[derive(Debug, Default)]
pub struct Offsets {
    /// Pages handed to the pipeline and not yet acknowledged, with the next
    /// offset of each partition they reach.
    pages: VecDeque<(u64, Vec<(Tp, i64)>)>,
    /// Next offset of each partition below which everything was written.
    written: HashMap<Tp, i64>,
    committed: HashMap<Tp, i64>,
    acked: Option<u64>,
}

impl Offsets {
    /// Page `sequence` carried records of these partitions up to these next offsets.
    pub fn page(&mut self, sequence: u64, next: Vec<(Tp, i64)>) {
        if !next.is_empty() {
            self.pages.push_back((sequence, next));
        }
    }

    /// Every page up to `sequence` was written.
    pub fn acknowledge(&mut self, sequence: u64) {
        self.acked = self.acked.max(Some(sequence));
        while self.pages.front().is_some_and(|(s, _)| *s <= sequence) {
            let (_, next) = self.pages.pop_front().expect("front exists");
            for (tp, offset) in next {
                // Max, not assignment: after a rebalance an older page of a
                // partition can be acknowledged after a newer one; what both
                // cover was written either way.
                let at = self.written.entry(tp).or_insert(offset);
                *at = (*at).max(offset);
            }
        }
    }

    pub fn acked(&self) -> Option<u64> {
        self.acked
    }

    /// The last unacknowledged page holding records of any of `partitions`.
    pub fn last_unacked_page(&self, partitions: &[Tp]) -> Option<u64> {
        self.pages
            .iter()
            .rev()
            .find(|(_, next)| next.iter().any(|(tp, _)| partitions.contains(tp)))
            .map(|(s, _)| *s)
    }

    /// Written offsets not committed yet, of the partitions `keep` accepts.
    pub fn uncommitted(&self, keep: impl Fn(&Tp) -> bool) -> Vec<(Tp, i64)> {
        self.written
            .iter()
            .filter(|(tp, o)| keep(tp) && self.committed.get(*tp).is_none_or(|c| c < *o))
            .map(|(tp, o)| (tp.clone(), *o))
            .collect()
    }

    pub fn mark_committed(&mut self, list: &[(Tp, i64)]) {
        for (tp, o) in list {
            self.committed.insert(tp.clone(), *o);
        }
    }

    pub fn committed(&self, tp: &Tp) -> Option<i64> {
        self.committed.get(tp).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> Tp {
        (Arc::from("t"), p)
    }

    #[test]
    fn an_offset_is_committable_only_once_its_page_is_acknowledged() {
        let mut o = Offsets::default();
        o.page(0, vec![(tp(0), 10), (tp(1), 5)]);
        o.page(1, vec![(tp(0), 20)]);
        assert!(o.uncommitted(|_| true).is_empty());
        assert_eq!(o.last_unacked_page(&[tp(1)]), Some(0));
        assert_eq!(o.last_unacked_page(&[tp(0)]), Some(1));
        o.acknowledge(0);
        let mut due = o.uncommitted(|_| true);
        due.sort();
        assert_eq!(due, vec![(tp(0), 10), (tp(1), 5)]);
        o.mark_committed(&due);
        assert!(o.uncommitted(|_| true).is_empty());
        assert_eq!(o.last_unacked_page(&[tp(1)]), None);
        o.acknowledge(1);
        assert_eq!(o.uncommitted(|t| t.1 == 0), vec![(tp(0), 20)]);
        assert!(o.uncommitted(|t| t.1 == 1).is_empty());
    }

    #[test]
    fn an_older_page_acknowledged_late_never_moves_an_offset_back() {
        let mut o = Offsets::default();
        o.page(3, vec![(tp(0), 30)]);
        o.acknowledge(3);
        o.page(4, vec![(tp(0), 12)]);
        o.acknowledge(4);
        assert_eq!(o.uncommitted(|_| true), vec![(tp(0), 30)]);
    }
}
