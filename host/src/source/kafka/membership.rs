//! Which member of its group this process is on this machine: a slot, and
//! from it the static membership (KIP-345) Bizon sets.
//!
//! Bizon joins a stream-mode group as `group.instance.id = {group_id}-{HOSTNAME}`
//! when `HOSTNAME` is set (Kubernetes sets it to the pod's name) and
//! `consumer_config` names no `group.instance.id`; so does bizon-host. A
//! restarted static member takes its partitions back without waiting for
//! the broker to expire the dead one. Measured on tansu 0.6 (2026-12-07,
//! the bench topic, SIGKILL one second after the first flush, restart, time
//! to the restarted run's first flush, two runs each): 26.3-26.4 s as a static
//! member, 82.4-82.8 s without, at the default `session.timeout.ms` of 45 s;
//! 6.5 s static with `session.timeout.ms: 6000`. The price, as in Bizon: a
//! static member that stops for good leaves its partitions unread until its
//! session times out (it sends no LeaveGroup).
//!
//! Two consumers of one group on one machine share `HOSTNAME`, and one id
//! would fence the older (FENCED_INSTANCE_ID, fatal). So each process holds a
//! slot: the lowest `n` whose lock file in the state directory it can
//! `flock`, kept for its life (the kernel drops it with the process, a crash
//! included). Slot 0 is Bizon's id; slot `n` appends `-n`. A restart after a
//! crash finds its slot free and rejoins as the same member. The slot also
//! names the process's copy of its commits (`checkpoint`), so two consumers
//! on one machine never overwrite each other's.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

/// Consumers of one group on one machine; a 65th runs without a slot.
pub const SLOTS: usize = 64;

/// A slot held for the life of this value.
pub struct Slot {
    pub index: usize,
    _lock: File,
}

impl Slot {
    /// The lowest free slot of `stem` (a group on its brokers) in `dir`.
    pub fn claim(dir: &Path, stem: &str) -> Option<Slot> {
        std::fs::create_dir_all(dir).ok()?;
        (0..SLOTS).find_map(|index| {
            let path = dir.join(format!("{stem}.slot-{index}"));
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(path)
                .ok()?;
            locked(&file).then_some(Slot { index, _lock: file })
        })
    }
}

fn locked(file: &File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on an open descriptor; the kernel drops the lock with
    // the descriptor, a crash included.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// The `group.instance.id` to join with: Bizon's, for the slot held; `None`
/// when `consumer_config` set one or `hostname` is unset.
pub fn static_id(
    settings: &BTreeMap<String, String>,
    group: &str,
    hostname: Option<&str>,
    slot: Option<&Slot>,
) -> Option<String> {
    if settings.contains_key("group.instance.id") {
        return None;
    }
    let host = hostname.filter(|h| !h.is_empty())?;
    Some(match slot.map_or(0, |s| s.index) {
        0 => format!("{group}-{host}"),
        n => format!("{group}-{host}-{n}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_processes_hold_two_slots_and_a_freed_slot_is_taken_again() {
        let dir = tempfile::tempdir().unwrap();
        let first = Slot::claim(dir.path(), "g").unwrap();
        let second = Slot::claim(dir.path(), "g").unwrap();
        assert_eq!((first.index, second.index), (0, 1));
        assert_eq!(Slot::claim(dir.path(), "other").unwrap().index, 0);
        drop(first);
        assert_eq!(Slot::claim(dir.path(), "g").unwrap().index, 0);
    }

    #[test]
    fn bizons_id_for_slot_0_and_a_suffix_beyond_never_over_the_users() {
        let dir = tempfile::tempdir().unwrap();
        let none = BTreeMap::new();
        let (zero, one) = (
            Slot::claim(dir.path(), "g").unwrap(),
            Slot::claim(dir.path(), "g").unwrap(),
        );
        assert_eq!(
            static_id(&none, "orders", Some("pod-7"), Some(&zero)).as_deref(),
            Some("orders-pod-7")
        );
        assert_eq!(
            static_id(&none, "orders", Some("pod-7"), Some(&one)).as_deref(),
            Some("orders-pod-7-1")
        );
        assert_eq!(
            static_id(&none, "orders", Some("pod-7"), None).as_deref(),
            Some("orders-pod-7")
        );
        assert_eq!(static_id(&none, "orders", None, Some(&zero)), None);
        assert_eq!(static_id(&none, "orders", Some(""), Some(&zero)), None);
        let set = BTreeMap::from([("group.instance.id".to_string(), "mine".to_string())]);
        assert_eq!(static_id(&set, "orders", Some("pod-7"), Some(&zero)), None);
    }
}
