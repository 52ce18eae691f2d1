//! Where readers of a table find a snapshot's S0: table properties.
//!
//! - `dynamo-cdc.snapshot.<id>`: the snapshot's record as JSON (id, table,
//!   method, `s0` as shard id -> sequence number, `started_ms`,
//!   `finished_ms`, `segments`, `items`), the same document the Parquet sink
//!   writes to `_snapshots/<table>/<id>.json`;
//! - `dynamo-cdc.snapshot-newest`: the id of the newest finished snapshot
//!   (by start), the one a reader of the table's latest state needs. A
//!   snapshot still running does not move it: its rows are not all there.
//!
//! Set in a commit of their own when the snapshot starts, before any of its
//! rows, and again once every sink committed its last row (so the newest
//! pointer never names a snapshot whose rows are not all in the table). A
//! commit that would change nothing is not made. Table
//! properties, unlike snapshot summaries, survive the expiry of old
//! snapshots.
//!
//! Pure: the sink commits what [`properties`] returns.

use std::collections::HashMap;

use dynamo_cdc_core::SnapshotRecord;

/// The prefix of the property holding a snapshot's record.
pub(crate) const SNAPSHOT_PROPERTY: &str = "dynamo-cdc.snapshot.";

/// The property naming the snapshot that started last.
pub(crate) const NEWEST_SNAPSHOT: &str = "dynamo-cdc.snapshot-newest";

/// The properties to set for `record`, given the table's current ones, that
/// differ from them: its own, and, once it finished, the newest pointer
/// unless a snapshot that started later holds it (a late record of an older
/// snapshot leaves the pointer alone).
pub(crate) fn properties(
    record: &SnapshotRecord,
    current: &HashMap<String, String>,
) -> Vec<(String, String)> {
    let mut out = vec![(
        format!("{SNAPSHOT_PROPERTY}{}", record.id),
        serde_json::to_string(record).expect("a snapshot record serializes"),
    )];
    let newer = current
        .get(NEWEST_SNAPSHOT)
        .filter(|id| **id != record.id)
        .and_then(|id| current.get(&format!("{SNAPSHOT_PROPERTY}{id}")))
        .and_then(|json| serde_json::from_str::<SnapshotRecord>(json).ok())
        .is_some_and(|other| other.started_ms > record.started_ms);
    if record.finished_ms.is_some() && !newer {
        out.push((NEWEST_SNAPSHOT.to_owned(), record.id.clone()));
    }
    out.retain(|(key, value)| current.get(key) != Some(value));
    out
}

/// Whether the table's properties hold a record of `record`'s snapshot.
pub(crate) fn holds(record: &SnapshotRecord, current: &HashMap<String, String>) -> bool {
    current.contains_key(&format!("{SNAPSHOT_PROPERTY}{}", record.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, started_ms: i64, finished_ms: Option<i64>) -> SnapshotRecord {
        SnapshotRecord {
            id: id.into(),
            table: "orders".into(),
            method: "scan".into(),
            s0: [("shardId-1".to_owned(), "000100".to_owned())].into(),
            started_ms,
            finished_ms,
            segments: 2,
            items: 0,
        }
    }

    fn apply(current: &mut HashMap<String, String>, record: &SnapshotRecord) {
        current.extend(properties(record, current));
    }

    #[test]
    fn a_table_holds_a_snapshot_once_either_of_its_records_was_set() {
        let mut props = HashMap::new();
        assert!(!holds(&record("s1", 1_000, None), &props));
        apply(&mut props, &record("s1", 1_000, Some(2_000)));
        assert!(holds(&record("s1", 1_000, None), &props));
        assert!(!holds(&record("s2", 3_000, None), &props));
    }

    #[test]
    fn a_snapshot_is_recorded_under_its_id_and_becomes_the_newest_once_finished() {
        let mut props = HashMap::new();
        let first = record("s1", 1_000, None);
        apply(&mut props, &first);
        assert!(!props.contains_key(NEWEST_SNAPSHOT), "still running");
        let stored: SnapshotRecord =
            serde_json::from_str(&props["dynamo-cdc.snapshot.s1"]).unwrap();
        assert_eq!(stored, first);
        // Its end replaces its start.
        apply(&mut props, &record("s1", 1_000, Some(5_000)));
        let stored: SnapshotRecord =
            serde_json::from_str(&props["dynamo-cdc.snapshot.s1"]).unwrap();
        assert_eq!(stored.finished_ms, Some(5_000));
        assert_eq!(props[NEWEST_SNAPSHOT], "s1");
    }

    #[test]
    fn a_running_snapshot_leaves_the_pointer_on_the_last_finished_one() {
        let mut props = HashMap::new();
        apply(&mut props, &record("s1", 1_000, Some(2_000)));
        apply(&mut props, &record("s2", 9_000, None));
        assert_eq!(props[NEWEST_SNAPSHOT], "s1");
        apply(&mut props, &record("s2", 9_000, Some(12_000)));
        assert_eq!(props[NEWEST_SNAPSHOT], "s2");
        // Recorded again after a restart: the older one's end.
        apply(&mut props, &record("s1", 1_000, Some(2_000)));
        assert_eq!(props[NEWEST_SNAPSHOT], "s2");
        assert!(props.contains_key("dynamo-cdc.snapshot.s1"));
    }

    #[test]
    fn recording_the_same_again_changes_nothing() {
        let mut props = HashMap::new();
        let done = record("s1", 1_000, Some(2_000));
        apply(&mut props, &done);
        assert!(properties(&done, &props).is_empty());
        let restarted = record("s1", 1_000, None);
        assert_eq!(
            properties(&restarted, &props),
            [(
                "dynamo-cdc.snapshot.s1".to_owned(),
                serde_json::to_string(&restarted).unwrap()
            )],
            "resumed after a crash: the record again, the pointer stays"
        );
    }

    #[test]
    fn a_pointer_to_a_record_that_cannot_be_read_is_replaced() {
        let mut props = HashMap::from([
            (NEWEST_SNAPSHOT.to_owned(), "gone".to_owned()),
            ("dynamo-cdc.snapshot.gone".to_owned(), "not json".to_owned()),
        ]);
        apply(&mut props, &record("s3", 1, Some(2)));
        assert_eq!(props[NEWEST_SNAPSHOT], "s3");
    }
}
