//! Positions inside snapshot summaries: the commit is the position.
//!
//! Every commit this sink makes carries, in its snapshot summary, the last
//! sequence number of each shard whose changes it adds:
//! `dynamo-cdc.positions` = `{"<shard id>": "<sequence number>", ...}`.
//! A table's position is the highest sequence number per shard over the
//! current snapshot and its ancestors, so a summary stays the size of one
//! commit (the table's metadata file holds every snapshot's summary).
//!
//! Each commit also carries a token of its own, `dynamo-cdc.commit`: a
//! commit whose answer was lost (a timeout, a gateway that retried the
//! request and got 409) may have been applied all the same, and the token
//! is how the writer knows its own snapshot from another writer's.
//!
//! Pure: tables come in as their snapshots, read by the caller.

use std::collections::BTreeMap;
use std::sync::Arc;

use dynamo_cdc_core::{Positions, SequenceNumber, ShardKey};

/// The summary property holding a commit's positions.
pub(crate) const POSITIONS: &str = "dynamo-cdc.positions";

/// The summary property naming the sink version that committed.
pub(crate) const WRITER: &str = "dynamo-cdc.writer";

/// The summary property holding the lease epoch of the table when the
/// commit was made by a process sharing the tables (`[coordination]`).
pub(crate) const LEASE_EPOCH: &str = "dynamo-cdc.lease_epoch";

/// The summary property holding the token of the commit (see the module
/// docs).
pub(crate) const COMMIT: &str = "dynamo-cdc.commit";

/// A snapshot, as much of it as positions need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SnapshotView {
    pub id: i64,
    pub parent: Option<i64>,
    /// The `dynamo-cdc.positions` property, when the snapshot has one.
    pub positions: Option<String>,
    /// The `dynamo-cdc.commit` property, when the snapshot has one.
    pub commit: Option<String>,
}

/// The summary properties of the commit `token` adding `positions` (of one
/// table).
pub(crate) fn encode(
    positions: &Positions,
    epoch: Option<u64>,
    token: &str,
) -> BTreeMap<String, String> {
    let map: BTreeMap<&str, &str> = positions
        .iter()
        .map(|(k, s)| (&*k.shard, s.as_str()))
        .collect();
    let mut properties = BTreeMap::from([
        (
            POSITIONS.to_owned(),
            serde_json::to_string(&map).expect("a map of strings serializes"),
        ),
        (
            WRITER.to_owned(),
            format!("dynamo-cdc {}", env!("CARGO_PKG_VERSION")),
        ),
        (COMMIT.to_owned(), token.to_owned()),
    ]);
    if let Some(epoch) = epoch {
        properties.insert(LEASE_EPOCH.to_owned(), epoch.to_string());
    }
    properties
}

/// The positions one summary property holds, as shards of `table`.
///
/// # Errors
/// When the property is not what [`encode`] writes: someone else wrote it,
/// and guessing could skip data.
pub(crate) fn decode(table: &Arc<str>, property: &str) -> Result<Positions, String> {
    let map: BTreeMap<String, String> = serde_json::from_str(property)
        .map_err(|e| format!("`{POSITIONS}` is not a JSON object of strings: {e}"))?;
    let mut positions = Positions::new();
    for (shard, seq) in map {
        let seq = SequenceNumber::parse(&seq)
            .map_err(|e| format!("`{POSITIONS}` of shard {shard}: {}", e.0))?;
        positions.advance(ShardKey::new(table.clone(), shard), seq);
    }
    Ok(positions)
}

/// The positions committed by `current` and its ancestors, stopping after
/// `stop` (exclusive) when given: with `stop` the snapshot a writer last
/// knew, this is what others committed since.
///
/// # Errors
/// When a summary cannot be read (see [`decode`]).
pub(crate) fn committed(
    table: &Arc<str>,
    snapshots: &[SnapshotView],
    current: Option<i64>,
    stop: Option<i64>,
) -> Result<Positions, String> {
    let mut positions = Positions::new();
    for snapshot in lineage(snapshots, current, stop) {
        if let Some(property) = &snapshot.positions {
            positions.merge_max(&decode(table, property)?);
        }
    }
    Ok(positions)
}

/// The snapshot among `current` and its ancestors after `stop` (exclusive)
/// made by the commit `token`, if it was applied.
pub(crate) fn applied(
    snapshots: &[SnapshotView],
    current: Option<i64>,
    stop: Option<i64>,
    token: &str,
) -> Option<i64> {
    lineage(snapshots, current, stop)
        .find(|s| s.commit.as_deref() == Some(token))
        .map(|s| s.id)
}

/// `current` and its ancestors, newest first, up to `stop` (exclusive) or
/// the first ancestor expired. Bounded by the number of snapshots, should
/// a parent link loop.
fn lineage(
    snapshots: &[SnapshotView],
    current: Option<i64>,
    stop: Option<i64>,
) -> impl Iterator<Item = &SnapshotView> {
    let by_id: BTreeMap<i64, &SnapshotView> = snapshots.iter().map(|s| (s.id, s)).collect();
    let mut at = current;
    std::iter::from_fn(move || {
        let id = at.filter(|id| Some(*id) != stop)?;
        let snapshot = by_id.get(&id)?;
        at = snapshot.parent;
        Some(*snapshot)
    })
    .take(snapshots.len())
}

/// Whether `theirs` holds any change of `ours`: `first` is, per shard, the
/// first sequence number `ours` would commit.
pub(crate) fn overlaps(theirs: &Positions, first: &Positions) -> bool {
    first.iter().any(|(key, seq)| theirs.covers(key, seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(n: u64) -> SequenceNumber {
        SequenceNumber::parse(&format!("{n:021}")).unwrap()
    }

    fn table() -> Arc<str> {
        Arc::from("orders")
    }

    fn positions(pairs: &[(&str, u64)]) -> Positions {
        pairs
            .iter()
            .map(|(shard, n)| (ShardKey::new(table(), *shard), seq(*n)))
            .collect()
    }

    fn snapshot(id: i64, parent: Option<i64>, pairs: &[(&str, u64)]) -> SnapshotView {
        let p = positions(pairs);
        SnapshotView {
            id,
            parent,
            positions: (!p.is_empty()).then(|| encode(&p, None, "t")[POSITIONS].clone()),
            commit: Some(format!("c{id}")),
        }
    }

    #[test]
    fn a_summary_round_trips() {
        let p = positions(&[("s1", 10), ("s2", 7)]);
        assert_eq!(
            decode(&table(), &encode(&p, None, "t")[POSITIONS]).unwrap(),
            p
        );
        assert!(!encode(&p, None, "t").contains_key(LEASE_EPOCH));
        assert_eq!(encode(&p, None, "t")[COMMIT], "t");
        assert_eq!(
            encode(&p, Some(7), "t")[LEASE_EPOCH],
            "7",
            "the lease epoch, when shared"
        );
    }

    #[test]
    fn the_position_is_the_highest_over_the_ancestors() {
        let snaps = [
            snapshot(1, None, &[("s1", 10)]),
            snapshot(2, Some(1), &[("s1", 20), ("s2", 5)]),
            // someone else's commit, without positions
            snapshot(3, Some(2), &[]),
            snapshot(4, Some(3), &[("s2", 9)]),
            // not an ancestor of the current snapshot
            snapshot(5, Some(1), &[("s3", 99)]),
        ];
        let got = committed(&table(), &snaps, Some(4), None).unwrap();
        assert_eq!(got, positions(&[("s1", 20), ("s2", 9)]));
        assert!(committed(&table(), &snaps, None, None).unwrap().is_empty());
    }

    #[test]
    fn since_a_known_snapshot_only_the_newer_commits_count() {
        let snaps = [
            snapshot(1, None, &[("s1", 10)]),
            snapshot(2, Some(1), &[("s2", 5)]),
            snapshot(3, Some(2), &[("s1", 30)]),
        ];
        let since = committed(&table(), &snaps, Some(3), Some(1)).unwrap();
        assert_eq!(since, positions(&[("s1", 30), ("s2", 5)]));
        assert!(
            committed(&table(), &snaps, Some(3), Some(3))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_commit_is_found_by_its_token_among_the_newer_snapshots_only() {
        let snaps = [
            snapshot(1, None, &[("s1", 10)]),
            snapshot(2, Some(1), &[("s2", 5)]),
            snapshot(3, Some(2), &[("s1", 30)]),
            // not an ancestor of the current snapshot
            snapshot(4, Some(1), &[("s3", 1)]),
        ];
        assert_eq!(applied(&snaps, Some(3), Some(1), "c2"), Some(2));
        assert_eq!(applied(&snaps, Some(3), Some(1), "c3"), Some(3));
        // At or before the snapshot known: not a commit whose answer was lost.
        assert_eq!(applied(&snaps, Some(3), Some(1), "c1"), None);
        assert_eq!(applied(&snaps, Some(3), None, "c4"), None);
        assert_eq!(applied(&snaps, None, None, "c1"), None);
    }

    #[test]
    fn overlap_is_any_of_our_first_changes_covered() {
        let theirs = positions(&[("s1", 20)]);
        assert!(overlaps(&theirs, &positions(&[("s1", 15)])));
        assert!(overlaps(&theirs, &positions(&[("s2", 1), ("s1", 20)])));
        assert!(!overlaps(&theirs, &positions(&[("s1", 21), ("s2", 1)])));
    }

    #[test]
    fn a_foreign_summary_is_an_error_not_a_guess() {
        let snaps = [SnapshotView {
            id: 1,
            parent: None,
            positions: Some("[1,2]".into()),
            commit: None,
        }];
        assert!(committed(&table(), &snaps, Some(1), None).is_err());
    }
}
