//! What bizon-host records with each committed offset: Kafka's commit
//! metadata (a string per partition, 4 KiB by default on the broker) holds
//! the destination_id the partition's records go to and where that
//! destination stood when the offset was committed (a file's length, a
//! stream and its offset: opaque here). At the next start those positions
//! go to the destination before it writes, so that what it wrote after the
//! commit (and that will be read again) is cut or recognised, not doubled.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::source::Positions;

/// The metadata's format version; a later one is refused rather than misread.
const VERSION: u64 = 1;

#[derive(Serialize, Deserialize)]
struct Metadata<'a> {
    #[serde(rename = "bizon-host")]
    version: u64,
    destination_id: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    position: Option<Cow<'a, str>>,
}

/// The metadata committed with a partition's offset.
pub fn metadata(destination_id: &str, position: Option<&str>) -> String {
    serde_json::to_string(&Metadata {
        version: VERSION,
        destination_id: destination_id.into(),
        position: position.map(Into::into),
    })
    .expect("metadata serializes")
}

/// What a partition's committed metadata says.
#[derive(Debug, PartialEq)]
pub enum Recorded {
    /// Ours: the destination_id and its position, if it keeps one.
    Ours {
        destination_id: String,
        position: Option<String>,
    },
    /// Empty, or another writer's (an older bizon-host, another tool).
    Foreign,
}

pub fn read(metadata: &str) -> Result<Recorded, String> {
    if metadata.is_empty() {
        return Ok(Recorded::Foreign);
    }
    match serde_json::from_str::<Metadata>(metadata) {
        Ok(m) if m.version > VERSION => Err(format!(
            "committed by a newer bizon-host (commit metadata version {}, this one reads {VERSION}); \
             run that version, or reset the group's offsets",
            m.version
        )),
        Ok(m) => Ok(Recorded::Ours {
            destination_id: m.destination_id.into_owned(),
            position: m.position.map(Cow::into_owned),
        }),
        Err(_) => Ok(Recorded::Foreign),
    }
}

/// Gathers the positions of every partition's commit, by destination_id,
/// and warns once per destination_id whose partitions carry an offset
/// without ours (committed by an older version or another tool, or by a
/// broker that drops commit metadata with no local copy of it: what was
/// written since that commit may be written once more). A destination_id
/// with a committed offset is in the answer even with no position: it
/// tells a destination that something was committed (nothing it wrote may
/// be cut back) from nothing ever committed.
pub fn gather<'a>(
    committed: impl IntoIterator<Item = (&'a str, i32, i64, &'a str)>,
    destination_of: impl Fn(&str) -> Option<Arc<str>>,
) -> Result<Positions, String> {
    let mut positions = Positions::new();
    let mut warned = HashSet::new();
    for (topic, partition, offset, metadata) in committed {
        if offset < 0 {
            continue;
        }
        let recorded = read(metadata).map_err(|e| format!("{topic}/{partition}: {e}"))?;
        match recorded {
            Recorded::Ours {
                destination_id,
                position,
            } => positions.entry(destination_id.into()).or_default().extend(position),
            Recorded::Foreign => {
                if let Some(destination_id) = destination_of(topic) {
                    positions.entry(destination_id.clone()).or_default();
                    if warned.insert(destination_id.clone()) {
                        tracing::warn!(
                            "kafka: {topic}/{partition} was committed without bizon-host's record of where \
                             `{destination_id}` stood (an older version or another tool, or a broker that \
                             drops commit metadata): records written since that commit may be written once more"
                        );
                    }
                }
            }
        }
    }
    Ok(positions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_and_a_newer_version_is_refused() {
        let m = metadata("users", Some(r#"{"file":"h:/o/users.json","length":42}"#));
        assert_eq!(
            read(&m).unwrap(),
            Recorded::Ours {
                destination_id: "users".into(),
                position: Some(r#"{"file":"h:/o/users.json","length":42}"#.into())
            }
        );
        assert_eq!(read("").unwrap(), Recorded::Foreign);
        assert_eq!(read("committed by kcat").unwrap(), Recorded::Foreign);
        let newer = r#"{"bizon-host":2,"destination_id":"users"}"#;
        assert!(read(newer).unwrap_err().contains("newer bizon-host"));
    }

    #[test]
    fn positions_are_gathered_by_destination_id() {
        let a = metadata("a", Some("1"));
        let b = metadata("a", Some("2"));
        let committed = [("t", 0, 10, a.as_str()), ("t", 1, 5, b.as_str()), ("t", 2, -1001, "")];
        let positions = gather(committed, |_| Some("a".into())).unwrap();
        assert_eq!(
            positions[&Arc::<str>::from("a")],
            vec!["1".to_string(), "2".to_string()]
        );
        // Committed without a position: present, empty; never committed: absent.
        let committed = [("t", 0, 10, ""), ("u", 0, -1001, "")];
        let positions = gather(committed, |t| Some(t.into())).unwrap();
        assert_eq!(positions.get("t"), Some(&vec![]));
        assert_eq!(positions.get("u"), None);
    }
}
