//! The Parquet sink's rules, on a real directory: files roll by rows and by
//! day, commit only on poll or flush (never inside a write), and the names
//! of committed files are the position, so a reopened sink drops what it
//! holds.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use dynamo_cdc_core::{
    AttributeValue, Change, Item, Op, Positions, SequenceNumber, ShardKey, Sink, SourceInfo,
};
use dynamo_cdc_sink_parquet::{ParquetConfig, ParquetSink};
use dynamo_cdc_transform::NumbersMode;

/// 2024-05-01T00:00:00Z
const DAY_ONE_MS: i64 = 1_714_521_600_000;

fn change(seq: u64, at_ms: i64) -> Change {
    let keys: Item = [("id", AttributeValue::S(format!("k{seq}").into()))].into();
    Change {
        op: Op::Insert,
        keys: keys.clone(),
        old_image: None,
        new_image: Some(keys),
        source: SourceInfo {
            table: "orders".into(),
            stream_arn: None,
            shard_id: "s1".into(),
            sequence_number: SequenceNumber::parse(&seq.to_string()).unwrap(),
            event_id: String::new(),
            approx_creation_ms: Some(at_ms),
            ttl_delete: false,
            snapshot: None,
        },
    }
}

fn open(root: &Path, rows: usize) -> ParquetSink {
    let mut config = ParquetConfig::new(root.to_str().unwrap());
    config.max_rows_per_file = rows;
    ParquetSink::open(config, NumbersMode::Auto, HashMap::new()).unwrap()
}

/// Committed file names, relative to the root, sorted.
fn committed(root: &Path) -> Vec<String> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path: PathBuf = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

fn position(sink: &ParquetSink) -> Option<String> {
    sink.durable_positions()
        .get(&ShardKey::new("orders", "s1"))
        .map(ToString::to_string)
}

#[test]
fn files_roll_by_rows_and_commit_only_on_poll() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = open(dir.path(), 3);
    let changes: Vec<Change> = (101..=107).map(|s| change(s, DAY_ONE_MS)).collect();
    assert!(sink.write(&changes).unwrap().is_empty());
    // Full files are sealed, not committed: nothing is visible and the
    // position has not moved until the next poll.
    assert!(
        committed(dir.path())
            .iter()
            .all(|n| n.ends_with(".inprogress")),
        "{:?}",
        committed(dir.path())
    );
    assert_eq!(position(&sink), None);
    sink.poll().unwrap();
    let day = "orders/date=2024-05-01";
    let names: Vec<String> = committed(dir.path())
        .into_iter()
        .filter(|n| n.ends_with(".parquet"))
        .collect();
    assert_eq!(
        names,
        [
            format!("{day}/s1-101-103.parquet"),
            format!("{day}/s1-104-106.parquet"),
        ]
    );
    assert_eq!(position(&sink).as_deref(), Some("106"));
    // The last, partly filled file waits for its age or a flush.
    sink.flush().unwrap();
    assert!(committed(dir.path()).contains(&format!("{day}/s1-107-107.parquet")));
    assert_eq!(position(&sink).as_deref(), Some("107"));
    assert!(
        !committed(dir.path())
            .iter()
            .any(|n| n.ends_with(".inprogress"))
    );
}

#[test]
fn a_new_day_starts_a_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = open(dir.path(), 1000);
    let changes = [
        change(1, DAY_ONE_MS + 1),
        change(2, DAY_ONE_MS + 86_400_000 - 1),
        change(3, DAY_ONE_MS + 86_400_000),
    ];
    sink.write(&changes).unwrap();
    sink.flush().unwrap();
    assert_eq!(
        committed(dir.path()),
        [
            "orders/date=2024-05-01/s1-1-2.parquet",
            "orders/date=2024-05-02/s1-3-3.parquet"
        ]
    );
}

#[test]
fn what_is_held_is_dropped_in_a_run_and_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = open(dir.path(), 1000);
    let first: Vec<Change> = (1..=5).map(|s| change(s, DAY_ONE_MS)).collect();
    sink.write(&first).unwrap();
    // The same changes again while they are still buffered: dropped.
    sink.write(&first[2..]).unwrap();
    sink.flush().unwrap();
    assert_eq!(sink.stats().already_held, 3);
    assert_eq!(sink.stats().delivered, 5);
    drop(sink);

    // A reopened sink learns its position from the file names alone.
    let mut again = open(dir.path(), 1000);
    assert_eq!(position(&again).as_deref(), Some("5"));
    let more: Vec<Change> = (3..=8).map(|s| change(s, DAY_ONE_MS)).collect();
    again.write(&more).unwrap();
    again.flush().unwrap();
    assert_eq!(again.stats().already_held, 3);
    assert_eq!(again.stats().delivered, 3);
    assert_eq!(
        committed(dir.path()),
        [
            "orders/date=2024-05-01/s1-1-5.parquet",
            "orders/date=2024-05-01/s1-6-8.parquet"
        ]
    );
}

#[test]
fn positions_recorded_elsewhere_are_adopted_so_removed_files_are_not_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = open(dir.path(), 1000);
    let recorded: Positions = [(
        ShardKey::new("orders", "s1"),
        SequenceNumber::parse("4").unwrap(),
    )]
    .into_iter()
    .collect();
    sink.adopt(&recorded, &serde_json::Value::Null);
    let changes: Vec<Change> = (1..=6).map(|s| change(s, DAY_ONE_MS)).collect();
    sink.write(&changes).unwrap();
    sink.flush().unwrap();
    assert_eq!(
        committed(dir.path()),
        ["orders/date=2024-05-01/s1-5-6.parquet"]
    );
}

#[test]
fn temp_files_of_a_crash_are_swept_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = open(dir.path(), 1000);
    sink.write(&[change(1, DAY_ONE_MS)]).unwrap();
    // No flush: a crash leaves the file in progress.
    std::mem::forget(sink);
    assert!(committed(dir.path())[0].ends_with(".inprogress"));
    let reopened = open(dir.path(), 1000);
    assert_eq!(reopened.stats().temp_files_swept, 1);
    assert_eq!(position(&reopened), None);
    assert!(committed(dir.path()).is_empty());
}
