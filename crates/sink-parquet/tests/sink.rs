//! The Parquet sink's rules, on a real directory: files roll by rows and by
//! day, commit only on poll or flush (never inside a write), the committed
//! files are the position (names, and the newest file's footer), so a
//! reopened sink drops what it holds, and a commit never lands over a name
//! another writer took.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use dynamo_cdc_core::{
    AttributeValue, Change, ErrorKind, Item, Op, Positions, SequenceNumber, ShardKey, Sink,
    SourceInfo,
};
use dynamo_cdc_sink_parquet::{ParquetConfig, ParquetSink};
use dynamo_cdc_transform::NumbersMode;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// 2024-05-01T00:00:00Z
const DAY_ONE_MS: i64 = 1_714_521_600_000;

fn change(seq: u64, at_ms: i64) -> Change {
    let keys: Item = [("id", AttributeValue::S(format!("k{seq}").into()))].into();
    Change {
        op: Op::Insert,
        keys: keys.clone(),
        old_image: None,
        unread_old_image: None,
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

fn config(root: &Path, rows: usize) -> ParquetConfig {
    let mut config = ParquetConfig::new(root.to_str().unwrap());
    config.max_rows_per_file = rows;
    config
}

fn open(root: &Path, rows: usize) -> ParquetSink {
    ParquetSink::open(config(root, rows), NumbersMode::Auto, HashMap::new()).unwrap()
}

/// A sink on a dataset other live processes write too.
fn open_shared(root: &Path, rows: usize) -> ParquetSink {
    let mut config = config(root, rows);
    config.exclusive = false;
    ParquetSink::open(config, NumbersMode::Auto, HashMap::new()).unwrap()
}

fn changes(seqs: std::ops::RangeInclusive<u64>) -> Vec<Change> {
    seqs.map(|s| change(s, DAY_ONE_MS)).collect()
}

const DAY: &str = "orders/date=2024-05-01";

/// The sequence numbers of every committed row, sorted.
fn sequence_numbers(root: &Path) -> Vec<u64> {
    let mut out = Vec::new();
    for name in parquet_files(root) {
        let file = std::fs::File::open(root.join(&name)).unwrap();
        out.extend(common::sequence_numbers_in(file));
    }
    out.sort_unstable();
    out
}

/// Renames a committed file as an earlier version named it.
fn rename_to_old_form(root: &Path, new: &str, old: &str) {
    let dir = root.join(DAY);
    std::fs::rename(dir.join(new), dir.join(old)).unwrap();
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

/// Committed Parquet files, relative to the root, sorted.
fn parquet_files(root: &Path) -> Vec<String> {
    committed(root)
        .into_iter()
        .filter(|n| n.ends_with(".parquet"))
        .collect()
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
    assert_eq!(
        parquet_files(dir.path()),
        [
            format!("{day}/s1_101.parquet"),
            format!("{day}/s1_104.parquet"),
        ]
    );
    assert_eq!(position(&sink).as_deref(), Some("106"));
    // The last, partly filled file waits for its age or a flush.
    sink.flush().unwrap();
    assert!(committed(dir.path()).contains(&format!("{day}/s1_107.parquet")));
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
            "orders/date=2024-05-01/s1_1.parquet",
            "orders/date=2024-05-02/s1_3.parquet"
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

    // A reopened sink learns its position from the committed files alone.
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
            "orders/date=2024-05-01/s1_1.parquet",
            "orders/date=2024-05-01/s1_6.parquet"
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
        ["orders/date=2024-05-01/s1_5.parquet"]
    );
}

/// `orders` declared with `n` a long: a change whose `n` is text is refused.
fn declared_orders() -> HashMap<String, dynamo_cdc_transform::DeclaredSchema> {
    let declared = dynamo_cdc_transform::DeclaredSchema::parse_avsc(
        r#"{"type":"record","name":"orders","fields":[
            {"name":"id","type":"string"},{"name":"n","type":["null","long"]}]}"#,
    )
    .unwrap();
    [("orders".to_owned(), declared)].into()
}

fn with_n(seq: u64, n: AttributeValue) -> Change {
    let mut c = change(seq, DAY_ONE_MS);
    c.new_image.as_mut().unwrap().insert("n".into(), n);
    c
}

/// A change that fits [`declared_orders`].
fn fits(seq: u64) -> Change {
    let n = dynamo_cdc_core::Number::parse(&seq.to_string()).unwrap();
    with_n(seq, AttributeValue::N(n))
}

/// A change [`declared_orders`] refuses.
fn refused(seq: u64) -> Change {
    with_n(seq, AttributeValue::S("many".into()))
}

/// A change that does not fit the declared schema is refused (the
/// pipeline dead-letters it); the position passes it once the rows before
/// it are committed, so a shard ending with it is not read again, and a
/// reopened sink that adopts the recorded position does not refuse it twice.
#[test]
fn the_position_passes_a_refused_change_once_the_rows_before_it_are_committed() {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        let mut config = config(dir.path(), 1000);
        // A poll commits nothing here: files are not due for ten minutes.
        config.max_file_age_ms = 600_000;
        ParquetSink::open(config, NumbersMode::Auto, declared_orders()).unwrap()
    };
    let mut sink = open();

    // Rows 1 and 2 are written, 3 is refused: the position waits for the
    // commit of 1 and 2 (a flush; a poll finds the file not due), then
    // passes 3.
    let rejected = sink.write(&[fits(1), fits(2), refused(3)]).unwrap();
    assert_eq!(rejected.iter().map(|r| r.index).collect::<Vec<_>>(), [2]);
    sink.poll().unwrap();
    assert_eq!(position(&sink), None, "rows 1 and 2 are not committed yet");
    sink.flush().unwrap();
    assert_eq!(position(&sink).as_deref(), Some("3"));
    assert_eq!(sequence_numbers(dir.path()), [1, 2]);

    // Refused with nothing pending: passed at the next poll, with no file.
    assert_eq!(sink.write(&[refused(4)]).unwrap().len(), 1);
    assert_eq!(
        position(&sink).as_deref(),
        Some("3"),
        "not inside the write"
    );
    sink.poll().unwrap();
    assert_eq!(position(&sink).as_deref(), Some("4"));

    // Rows after a refused one do not hold it back.
    assert_eq!(sink.write(&[refused(5), fits(6)]).unwrap().len(), 1);
    sink.poll().unwrap();
    assert_eq!(position(&sink).as_deref(), Some("5"));
    sink.flush().unwrap();
    assert_eq!(position(&sink).as_deref(), Some("6"));
    assert_eq!(sequence_numbers(dir.path()), [1, 2, 6]);

    // A refused last change is held by whoever adopts the recorded
    // position: given again, it is dropped, not refused a second time.
    assert_eq!(sink.write(&[refused(7)]).unwrap().len(), 1);
    sink.flush().unwrap();
    let recorded = sink.durable_positions().clone();
    let mut again = open();
    again.adopt(&recorded, &serde_json::Value::Null);
    assert!(again.write(&[refused(7)]).unwrap().is_empty());
    assert_eq!(again.parquet_stats().already_held, 1);
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

#[test]
fn the_first_of_two_writers_from_one_position_wins_and_the_other_collides() {
    let dir = tempfile::tempdir().unwrap();
    // A process paused past its lease and the one that took the shard over
    // continue from the same position, with different file sizes.
    let mut zombie = open_shared(dir.path(), 5);
    let mut owner = open_shared(dir.path(), 3);
    let all = changes(1..=7);
    owner.write(&all).unwrap();
    zombie.write(&all).unwrap();
    owner.flush().unwrap();
    assert_eq!(
        committed(dir.path())
            .into_iter()
            .filter(|n| n.ends_with(".parquet"))
            .collect::<Vec<_>>(),
        [
            format!("{DAY}/s1_1.parquet"),
            format!("{DAY}/s1_4.parquet"),
            format!("{DAY}/s1_7.parquet"),
        ]
    );
    let e = zombie.flush().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Transient);
    let text = e.to_string();
    let taken = dir.path().join(DAY).join("s1_1.parquet");
    assert!(
        text.contains(&taken.display().to_string())
            && text.contains("another writer committed this range"),
        "{text}"
    );
    assert_eq!(position(&zombie), None, "the position does not move");
    // The loser's files are gone, not committed under other names, and
    // its temp files with them.
    assert_eq!(
        committed(dir.path()),
        [
            format!("{DAY}/s1_1.parquet"),
            format!("{DAY}/s1_4.parquet"),
            format!("{DAY}/s1_7.parquet"),
        ]
    );
    // Its sink stays usable and holds nothing of the shard.
    zombie.flush().unwrap();
    drop(zombie);
    let mut again = open_shared(dir.path(), 5);
    assert_eq!(position(&again).as_deref(), Some("7"));
    again.write(&all).unwrap();
    again.flush().unwrap();
    assert_eq!(again.stats().files, 0);
    assert_eq!(sequence_numbers(dir.path()), (1..=7).collect::<Vec<u64>>());
}

/// A sink whose commit failed stays usable (the collision below): the
/// rows it dropped came before a change it refused, so its position must
/// not pass that change at a later commit.
#[test]
fn after_a_failed_commit_the_position_does_not_pass_a_refused_change() {
    let dir = tempfile::tempdir().unwrap();
    let shared = || {
        let mut config = config(dir.path(), 1000);
        config.exclusive = false;
        ParquetSink::open(config, NumbersMode::Auto, declared_orders()).unwrap()
    };
    let mut theirs = shared();
    let mut ours = shared();
    theirs.write(&[fits(1), fits(2)]).unwrap();
    theirs.flush().unwrap();
    assert_eq!(
        ours.write(&[fits(1), fits(2), refused(3)]).unwrap().len(),
        1
    );
    let e = ours.flush().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Transient, "{e}");
    ours.flush().unwrap();
    ours.poll().unwrap();
    assert_eq!(
        position(&ours),
        None,
        "rows 1 and 2 were dropped, not committed"
    );
}

#[test]
fn a_collision_drops_only_its_shard() {
    let dir = tempfile::tempdir().unwrap();
    let mut ours = open_shared(dir.path(), 1000);
    let mut theirs = open_shared(dir.path(), 1000);
    theirs.write(&changes(1..=2)).unwrap();
    theirs.flush().unwrap();
    let mut other_shard = changes(1..=2);
    for c in &mut other_shard {
        c.source.shard_id = "s2".into();
    }
    ours.write(&changes(1..=3)).unwrap();
    ours.write(&other_shard).unwrap();
    let e = ours.flush().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Transient, "{e}");
    // The other shard's file was not lost with it.
    ours.flush().unwrap();
    let s2 = ours
        .durable_positions()
        .get(&ShardKey::new("orders", "s2"))
        .map(ToString::to_string);
    assert_eq!(s2.as_deref(), Some("2"));
    assert!(committed(dir.path()).contains(&format!("{DAY}/s2_1.parquet")));
}

#[test]
fn the_position_of_a_new_name_is_read_from_its_footer() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = open(dir.path(), 1000);
    sink.write(&changes(7..=9)).unwrap();
    sink.flush().unwrap();
    let file = std::fs::File::open(dir.path().join(DAY).join("s1_7.parquet")).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let kv: HashMap<String, Option<String>> = reader
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .unwrap()
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone()))
        .collect();
    assert_eq!(kv["dynamo_cdc.first_sequence_number"].as_deref(), Some("7"));
    assert_eq!(kv["dynamo_cdc.last_sequence_number"].as_deref(), Some("9"));
    drop(sink);
    assert_eq!(position(&open(dir.path(), 1000)).as_deref(), Some("9"));
}

#[test]
fn a_footer_without_the_last_sequence_number_stops_the_open_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = open(dir.path(), 1000);
    sink.write(&changes(1..=2)).unwrap();
    sink.flush().unwrap();
    drop(sink);
    // A Parquet file whose footer lacks the key, under a new-form name.
    let partition = dir.path().join(DAY);
    let batch = arrow_array::RecordBatch::try_from_iter([(
        "x",
        std::sync::Arc::new(arrow_array::Int64Array::from(vec![1])) as arrow_array::ArrayRef,
    )])
    .unwrap();
    let file = std::fs::File::create(partition.join("s1_3.parquet")).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let e = ParquetSink::open(config(dir.path(), 10), NumbersMode::Auto, HashMap::new())
        .err()
        .expect("the open fails");
    let text = e.to_string();
    assert!(
        text.contains(&partition.join("s1_3.parquet").display().to_string())
            && text.contains("dynamo_cdc.last_sequence_number"),
        "{text}"
    );
    // Not a Parquet file at all.
    std::fs::write(partition.join("s1_3.parquet"), "garbage").unwrap();
    let e = ParquetSink::open(config(dir.path(), 10), NumbersMode::Auto, HashMap::new())
        .err()
        .expect("the open fails");
    let text = e.to_string();
    assert!(
        text.contains("cannot read the footer of committed file") && text.contains("s1_3.parquet"),
        "{text}"
    );
}

#[test]
fn names_of_earlier_versions_still_count_beside_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = open(dir.path(), 3);
    sink.write(&changes(1..=6)).unwrap();
    sink.flush().unwrap();
    drop(sink);
    // Written by an earlier version.
    rename_to_old_form(dir.path(), "s1_1.parquet", "s1-1-3.parquet");
    rename_to_old_form(dir.path(), "s1_4.parquet", "s1-4-6.parquet");
    let mut again = open(dir.path(), 3);
    assert_eq!(position(&again).as_deref(), Some("6"));
    again.write(&changes(1..=8)).unwrap();
    again.flush().unwrap();
    assert_eq!(again.stats().already_held, 6);
    drop(again);
    // The newest file is new-form: its footer gives the position.
    let again = open(dir.path(), 3);
    assert_eq!(position(&again).as_deref(), Some("8"));
    assert_eq!(
        committed(dir.path()),
        [
            format!("{DAY}/s1-1-3.parquet"),
            format!("{DAY}/s1-4-6.parquet"),
            format!("{DAY}/s1_7.parquet"),
        ]
    );
    assert_eq!(sequence_numbers(dir.path()), (1..=8).collect::<Vec<u64>>());
}

#[test]
fn a_shared_sweep_keeps_a_live_writers_temp_and_removes_a_covered_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = open(dir.path(), 1000);
    sink.write(&changes(1..=5)).unwrap();
    sink.flush().unwrap();
    drop(sink);
    // A live writer, past the position.
    let mut live = open_shared(dir.path(), 1000);
    live.write(&changes(6..=7)).unwrap();
    let live_temp: Vec<String> = committed(dir.path())
        .into_iter()
        .filter(|n| n.contains(".s1_6."))
        .collect();
    assert_eq!(live_temp.len(), 1, "{:?}", committed(dir.path()));
    let partition = dir.path().join(DAY);
    // Covered by s1_1 (1..5): a crash between linking and removing, or a
    // writer that lost its lease. Both forms of temp names.
    let covered = [
        ".s1_3.4242-00000000deadbeef.parquet.inprogress",
        ".s1-2.parquet.inprogress",
    ];
    for name in covered {
        std::fs::write(partition.join(name), "partial").unwrap();
    }
    // Another shard with no position, and a name that says nothing.
    let unknown = [
        ".s2_1.4242-00000000deadbeef.parquet.inprogress",
        ".junk.parquet.inprogress",
    ];
    for name in unknown {
        std::fs::write(partition.join(name), "partial").unwrap();
    }
    let other = open_shared(dir.path(), 1000);
    assert_eq!(other.stats().temp_files_swept, 2);
    let left = committed(dir.path());
    for name in covered {
        assert!(!left.contains(&format!("{DAY}/{name}")), "{left:?}");
    }
    for name in unknown {
        assert!(left.contains(&format!("{DAY}/{name}")), "{left:?}");
    }
    assert!(left.contains(&live_temp[0]), "{left:?}");
    // The live writer commits as if nothing happened.
    live.flush().unwrap();
    assert_eq!(position(&live).as_deref(), Some("7"));
    assert_eq!(sequence_numbers(dir.path()), (1..=7).collect::<Vec<u64>>());
    drop((live, other));
    // Alone again, every leftover goes.
    let alone = open(dir.path(), 1000);
    assert_eq!(alone.stats().temp_files_swept, 2);
    assert!(
        !committed(dir.path())
            .iter()
            .any(|n| n.ends_with(".inprogress"))
    );
}

#[test]
fn a_sink_dropped_before_committing_removes_its_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = open_shared(dir.path(), 2);
    sink.write(&changes(1..=3)).unwrap();
    assert_eq!(committed(dir.path()).len(), 2, "one sealed, one open");
    drop(sink);
    assert!(committed(dir.path()).is_empty());
}

#[test]
fn row_groups_close_at_their_byte_size_so_large_items_do_not_fill_memory() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), 1_000);
    config.row_group_bytes = 64 * 1024;
    let mut sink = ParquetSink::open(config, NumbersMode::Auto, HashMap::new()).unwrap();
    // Items of about 20 KB of text that zstd cannot shrink much: 40 of them
    // are far more than one row group of 64 KiB, and far fewer rows than
    // `row_group_rows`.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let changes: Vec<Change> = (1..=40)
        .map(|seq| {
            let body: String = (0..20_000)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    char::from(b'a' + (state % 26) as u8)
                })
                .collect();
            let mut c = change(seq, DAY_ONE_MS);
            let mut image = c.keys.clone();
            image.insert("body".into(), AttributeValue::S(body.into()));
            c.new_image = Some(image);
            c
        })
        .collect();
    // One change per write, as batches of large items come (a batch closes
    // at `batch_bytes`): a row group closes after the write that takes it
    // to the limit.
    for c in changes.chunks(1) {
        assert!(sink.write(c).unwrap().is_empty());
    }
    sink.flush().unwrap();

    let name = format!("{DAY}/s1_1.parquet");
    assert_eq!(
        parquet_files(dir.path()),
        std::slice::from_ref(&name),
        "one file holds every row"
    );
    let file = std::fs::File::open(dir.path().join(&name)).unwrap();
    let metadata = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .metadata()
        .clone();
    let groups = metadata.row_groups();
    assert!(groups.len() >= 4, "{} row groups", groups.len());
    let rows: i64 = groups.iter().map(|g| g.num_rows()).sum();
    assert_eq!(rows, 40);
    for g in groups {
        // A group closes once it reaches the limit: it passes it by less
        // than a write.
        assert!(
            g.compressed_size() < 64 * 1024 + 20_000,
            "a row group of {} bytes",
            g.compressed_size()
        );
    }
    let file = std::fs::File::open(dir.path().join(&name)).unwrap();
    assert_eq!(
        common::sequence_numbers_in(file),
        (1..=40).collect::<Vec<u64>>()
    );
}

/// A table named as a directory the dataset keeps its own records in
/// (`_dead_letter`, `_gaps`, `_staging`) is refused, naming it: its files would sit
/// where every scan looks away, and never be found again.
#[test]
fn a_table_named_as_a_reserved_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = open(dir.path(), 10);
    for table in ["_gaps", "_dead_letter", "_staging"] {
        let mut c = change(1, DAY_ONE_MS);
        c.source.table = table.into();
        let e = sink.write(&[c]).unwrap_err();
        assert_eq!(e.kind(), dynamo_cdc_core::ErrorKind::Fatal);
        assert!(
            e.to_string()
                .contains(&format!("a table named `{table}` cannot")),
            "{e}"
        );
    }
}
