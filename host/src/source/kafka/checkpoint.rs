//! A local copy of what bizon-host commits, for brokers that drop commit
//! metadata. Kafka keeps a commit's metadata string (up to
//! `offset.metadata.max.bytes`, 4 KiB), and the destinations' positions
//! ride in it (see `position`); tansu 0.6 accepts the string and answers an
//! empty one (checked 2026-12-07: three partitions committed with metadata,
//! `committed()` gave `None` for each). Without a position a restart cannot
//! tell what it wrote after its last commit, and writes it again.
//!
//! So each commit is also written here first, by group and brokers: the
//! offset and metadata of each partition, the last [`KEPT`] per partition
//! (asynchronous commits may be in flight, and one may fail). At the next
//! start a partition whose broker metadata is empty takes the metadata
//! recorded here for *exactly its committed offset*: an offset another
//! member committed since, or a copy lost in a power cut, matches nothing
//! and the partition is read as having no position (its records written
//! after the commit may come twice, none is lost).
//!
//! The copy lives in `$BIZON_HOST_STATE_DIR`, else
//! `$XDG_STATE_HOME/bizon-host`, else `~/.local/state/bizon-host`, under
//! `kafka/`. It serves restarts on the same machine; a consumer that moves
//! to another one finds none there and falls back as above. Each consumer
//! of the group on this machine writes its own file, named by its slot
//! (`membership`), and reads every slot's: after a rebalance a restarted
//! process may hold partitions another one committed.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::membership::{Slot, SLOTS};

/// Commits kept per partition: more than can be in flight at once (one
/// asynchronous commit every 250 ms, each answered in milliseconds).
const KEPT: usize = 8;

#[derive(Default, Serialize, Deserialize)]
struct Stored {
    /// `topic/partition` -> `[offset, metadata]`, oldest first.
    partitions: BTreeMap<String, VecDeque<(i64, String)>>,
}

pub struct Checkpoint {
    path: PathBuf,
    /// What this process committed, and what its slot held before.
    stored: Stored,
    /// What the other slots' files held at the start.
    others: Stored,
    /// This process's slot, held as long as the copy is written.
    slot: Option<Slot>,
    /// A write failed already: said once, not every 250 ms.
    warned: bool,
}

impl Checkpoint {
    /// The copy for `group` on `servers`, in this process's slot, with the
    /// other slots' copies read; `None` when no state directory can be named.
    pub fn open(servers: &str, group: &str) -> Option<Self> {
        Some(Self::open_in(&state_dir()?.join("kafka"), servers, group))
    }

    fn open_in(dir: &Path, servers: &str, group: &str) -> Self {
        let stem = stem(servers, group);
        let slot = Slot::claim(dir, &stem);
        let name = |index: usize| match index {
            0 => format!("{stem}.json"),
            n => format!("{stem}-{n}.json"),
        };
        // Without a slot (no directory, 64 taken) the copy is slot 0's, as
        // before slots: shared, it only matches fewer offsets.
        let own = slot.as_ref().map_or(0, |s| s.index);
        let mut others = Stored::default();
        for index in (0..SLOTS).filter(|i| *i != own) {
            for (partition, kept) in read(&dir.join(name(index))).partitions {
                others.partitions.entry(partition).or_default().extend(kept);
            }
        }
        let path = dir.join(name(own));
        Self {
            stored: read(&path),
            path,
            others,
            slot,
            warned: false,
        }
    }

    /// This process's slot among the group's consumers on this machine.
    pub fn slot(&self) -> Option<&Slot> {
        self.slot.as_ref()
    }

    /// The metadata recorded with `offset` of `topic`/`partition`.
    pub fn metadata(&self, topic: &str, partition: i32, offset: i64) -> Option<&str> {
        let key = key(topic, partition);
        [&self.stored, &self.others]
            .into_iter()
            .filter_map(|s| s.partitions.get(&key))
            .flat_map(|kept| kept.iter().rev())
            .find(|(o, _)| *o == offset)
            .map(|(_, m)| m.as_str())
    }

    /// Records commits about to be sent: `(topic, partition, offset, metadata)`.
    pub fn record<'a>(&mut self, commits: impl IntoIterator<Item = (&'a str, i32, i64, String)>) {
        for (topic, partition, offset, metadata) in commits {
            let kept = self.stored.partitions.entry(key(topic, partition)).or_default();
            if kept.back().is_some_and(|(o, m)| *o == offset && *m == metadata) {
                continue;
            }
            kept.push_back((offset, metadata));
            while kept.len() > KEPT {
                kept.pop_front();
            }
        }
        if let Err(e) = self.write() {
            if !std::mem::replace(&mut self.warned, true) {
                tracing::warn!(
                    "kafka: cannot keep a copy of the commits in {}: {e}; on a broker that drops commit \
                     metadata a restart may write again what was written after the last commit",
                    self.path.display()
                );
            }
        }
    }

    /// Whole-file replace by rename: a reader sees the old copy or the new,
    /// never half of one. No fsync: a SIGKILL keeps the page cache, and a
    /// copy lost in a power cut only matches no offset (see the module).
    fn write(&self) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let temp = self.path.with_extension("json.tmp");
        std::fs::write(&temp, serde_json::to_vec(&self.stored)?)?;
        std::fs::rename(&temp, &self.path)
    }
}

/// A copy as stored; none (with a warning when unreadable) otherwise.
fn read(path: &Path) -> Stored {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(
                "kafka: {} is not a commit record ({e}); a restart may write again what was written after \
                 the last commit",
                path.display()
            );
            Stored::default()
        }),
        Err(_) => Stored::default(),
    }
}

fn key(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

fn state_dir() -> Option<PathBuf> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("BIZON_HOST_STATE_DIR")
        .or_else(|| var("XDG_STATE_HOME").map(|d| d.join("bizon-host")))
        .or_else(|| var("HOME").map(|h| Path::new(&h).join(".local/state/bizon-host")))
}

/// The group's name kept readable (characters a file name takes), and a
/// hash of brokers and group so that two clusters, or two groups that read
/// alike, never share a copy.
fn stem(servers: &str, group: &str) -> String {
    let readable: String = group
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    // FNV-1a, written out: the same name from every build and version,
    // which std's hashers do not promise.
    let hash = [servers.as_bytes(), b"\0", group.as_bytes()]
        .concat()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("{readable}-{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(dir: &Path) -> Checkpoint {
        Checkpoint {
            path: dir.join("kafka/g.json"),
            stored: Stored::default(),
            others: Stored::default(),
            slot: None,
            warned: false,
        }
    }

    #[test]
    fn a_commit_is_found_by_its_exact_offset_after_a_reopen_and_old_ones_go() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = at(dir.path());
        for offset in 0..20 {
            c.record([("t", 0, offset * 10, format!("m{offset}"))]);
        }
        let reread = Checkpoint {
            stored: serde_json::from_slice(&std::fs::read(&c.path).unwrap()).unwrap(),
            ..at(dir.path())
        };
        assert_eq!(reread.metadata("t", 0, 190), Some("m19"));
        assert_eq!(reread.metadata("t", 0, 120), Some("m12"));
        // Older than the last KEPT, another partition, an offset never committed.
        assert_eq!(reread.metadata("t", 0, 110), None);
        assert_eq!(reread.metadata("t", 1, 190), None);
        assert_eq!(reread.metadata("t", 0, 195), None);
    }

    #[test]
    fn two_consumers_on_one_machine_keep_their_own_copies_and_a_restart_reads_both() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Checkpoint::open_in(dir.path(), "k:9092", "g");
        let mut b = Checkpoint::open_in(dir.path(), "k:9092", "g");
        assert_eq!((a.slot().unwrap().index, b.slot().unwrap().index), (0, 1));
        a.record([("t", 0, 10, "a10".to_string())]);
        b.record([("t", 1, 20, "b20".to_string())]);
        a.record([("t", 0, 11, "a11".to_string())]);
        // b crashes; its partitions go to a restarted process, in b's slot.
        drop(b);
        let c = Checkpoint::open_in(dir.path(), "k:9092", "g");
        assert_eq!(c.slot().unwrap().index, 1);
        assert_eq!(c.metadata("t", 1, 20), Some("b20"));
        assert_eq!(c.metadata("t", 0, 11), Some("a11"));
        assert_eq!(a.metadata("t", 1, 20), None, "read at its start only");
    }

    #[test]
    fn names_differ_by_brokers_and_stay_file_names() {
        let a = stem("k1:9092", "orders/../x");
        assert!(a.starts_with("orders_.._x-") && !a.contains('/'), "{a}");
        assert_ne!(a, stem("k2:9092", "orders/../x"));
    }
}
