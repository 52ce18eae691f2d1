//! The Parquet sink on an object store (object_store's in-memory store):
//! the same layout and names as on a disk, a file visible only once
//! complete, a name collision transient and naming the object, and a
//! reopened sink learning its position from the listed names and the
//! newest file's footer.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use dynamo_cdc_core::{
    AttributeValue, Change, ErrorKind, Item, Op, SequenceNumber, ShardKey, Sink, SourceInfo,
};
use dynamo_cdc_object_store::{InMemory, ObjectStore, Objects, STAGING_DIR, StoreUrl};
use dynamo_cdc_sink_parquet::{ParquetConfig, ParquetSink};
use dynamo_cdc_transform::NumbersMode;

/// 2024-05-01T00:00:00Z
const DAY_ONE_MS: i64 = 1_714_521_600_000;
const DAY: &str = "orders/date=2024-05-01";

fn change(seq: u64, at_ms: i64) -> Change {
    let keys: Item = [("id", AttributeValue::S(format!("k{seq}").into()))].into();
    let mut image = keys.clone();
    if seq.is_multiple_of(2) {
        image = [
            ("id", AttributeValue::S(format!("k{seq}").into())),
            (
                "n",
                AttributeValue::N(dynamo_cdc_core::Number::parse(&seq.to_string()).unwrap()),
            ),
        ]
        .into();
    }
    Change {
        op: Op::Insert,
        keys,
        old_image: None,
        unread_old_image: None,
        new_image: Some(image),
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

fn bucket() -> Objects {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    Objects::with_store(store, StoreUrl::parse("s3://lake/cdc").unwrap())
}

fn open(objects: &Objects, rows: usize) -> ParquetSink {
    let mut config = ParquetConfig::new("s3://lake/cdc");
    config.max_rows_per_file = rows;
    ParquetSink::open_on(objects.clone(), config, NumbersMode::Auto, HashMap::new()).unwrap()
}

/// Object names below the prefix, sorted.
fn listed(objects: &Objects) -> Vec<String> {
    let mut names: Vec<String> = objects
        .list("")
        .unwrap()
        .iter()
        .filter_map(|m| objects.relative(&m.location))
        .collect();
    names.sort();
    names
}

/// The sequence numbers of every committed row, sorted.
fn sequence_numbers(objects: &Objects) -> Vec<u64> {
    let mut out = Vec::new();
    for name in listed(objects) {
        let bytes = objects.read(&objects.path(&name)).unwrap();
        out.extend(common::sequence_numbers_in(bytes));
    }
    out.sort_unstable();
    out
}

fn position(sink: &ParquetSink) -> Option<String> {
    sink.durable_positions()
        .get(&ShardKey::new("orders", "s1"))
        .map(ToString::to_string)
}

#[test]
fn files_are_visible_only_once_committed_under_the_local_layout() {
    let objects = bucket();
    let mut sink = open(&objects, 3);
    let changes: Vec<Change> = (101..=107).map(|s| change(s, DAY_ONE_MS)).collect();
    assert!(sink.write(&changes).unwrap().is_empty());
    // Sealed, not committed: nothing is listed, not even a temp name.
    assert!(listed(&objects).is_empty());
    assert_eq!(position(&sink), None);
    sink.poll().unwrap();
    assert_eq!(
        listed(&objects),
        [
            format!("{DAY}/s1_101.parquet"),
            format!("{DAY}/s1_104.parquet")
        ]
    );
    assert_eq!(position(&sink).as_deref(), Some("106"));
    sink.flush().unwrap();
    assert!(listed(&objects).contains(&format!("{DAY}/s1_107.parquet")));
    assert_eq!(position(&sink).as_deref(), Some("107"));
    assert_eq!(sink.stats().files, 3);
    assert_eq!(sink.stats().temp_files_swept, 0);
}

#[test]
fn a_reopened_sink_learns_its_position_from_listed_names_and_drops_what_it_holds() {
    let objects = bucket();
    let mut sink = open(&objects, 1000);
    let first: Vec<Change> = (1..=5).map(|s| change(s, DAY_ONE_MS)).collect();
    sink.write(&first).unwrap();
    sink.flush().unwrap();
    drop(sink);

    let mut again = open(&objects, 1000);
    assert_eq!(position(&again).as_deref(), Some("5"));
    let more: Vec<Change> = (3..=8).map(|s| change(s, DAY_ONE_MS)).collect();
    again.write(&more).unwrap();
    again.flush().unwrap();
    assert_eq!(again.stats().already_held, 3);
    assert_eq!(again.stats().delivered, 3);
    assert_eq!(
        listed(&objects),
        [format!("{DAY}/s1_1.parquet"), format!("{DAY}/s1_6.parquet")]
    );
    // The second file continued the first one's schema (read from its
    // footer in the bucket): both have the `n` column.
    for name in listed(&objects) {
        let bytes = objects.read(&objects.path(&name)).unwrap();
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap();
        assert!(reader.schema().field_with_name("n").is_ok(), "{name}");
    }
}

/// A replay shard is named after its capture file, which may hold
/// characters an object key holds percent-encoded: a reopened sink still
/// finds its files, and what they hold is not written again.
#[test]
fn a_shard_named_with_characters_keys_encode_is_found_again() {
    let objects = bucket();
    let shard = "capture#1 [été]";
    let in_shard = |seq| {
        let mut c = change(seq, DAY_ONE_MS);
        c.source.shard_id = shard.into();
        c
    };
    let mut sink = open(&objects, 1000);
    sink.write(&(1..=5).map(in_shard).collect::<Vec<_>>())
        .unwrap();
    sink.flush().unwrap();
    drop(sink);
    assert_eq!(listed(&objects), [format!("{DAY}/{shard}_1.parquet")]);

    let mut again = open(&objects, 1000);
    let key = ShardKey::new("orders", shard);
    assert_eq!(
        again
            .durable_positions()
            .get(&key)
            .map(ToString::to_string)
            .as_deref(),
        Some("5")
    );
    again
        .write(&(3..=8).map(in_shard).collect::<Vec<_>>())
        .unwrap();
    again.flush().unwrap();
    assert_eq!(again.stats().already_held, 3);
    assert_eq!(
        listed(&objects),
        [
            format!("{DAY}/{shard}_1.parquet"),
            format!("{DAY}/{shard}_6.parquet")
        ]
    );
}

#[test]
fn a_crash_before_commit_leaves_nothing_listed_and_the_rerun_writes_it_once() {
    let objects = bucket();
    let mut sink = open(&objects, 1000);
    sink.write(&[change(1, DAY_ONE_MS)]).unwrap();
    drop(sink); // no flush: as a crash
    assert!(listed(&objects).is_empty());
    let mut again = open(&objects, 1000);
    assert_eq!(position(&again), None);
    again.write(&[change(1, DAY_ONE_MS)]).unwrap();
    again.flush().unwrap();
    assert_eq!(listed(&objects), [format!("{DAY}/s1_1.parquet")]);
}

/// A create whose answer was lost is retried by the client and refused:
/// the name then holds this very file, which counts as committed (no
/// collision, no alarm); a name holding other bytes still collides.
#[test]
fn a_commit_found_already_made_with_the_same_bytes_is_not_a_collision() {
    let changes: Vec<Change> = (1..=3).map(|s| change(s, DAY_ONE_MS)).collect();
    let name = format!("{DAY}/s1_1.parquet");
    // The bytes this sink writes for those changes.
    let elsewhere = bucket();
    let mut first = open(&elsewhere, 1000);
    first.write(&changes).unwrap();
    first.flush().unwrap();
    let bytes = elsewhere.read(&elsewhere.path(&name)).unwrap();

    // The same file appears under the name between the open and the
    // commit, as a retried create that was applied would leave it.
    let objects = bucket();
    let mut sink = open(&objects, 1000);
    sink.write(&changes).unwrap();
    objects.create(&objects.path(&name), bytes.clone()).unwrap();
    sink.flush().unwrap();
    assert_eq!(position(&sink).as_deref(), Some("3"));
    assert_eq!(listed(&objects), std::slice::from_ref(&name));

    // Other bytes under the name: another writer's file.
    let objects = bucket();
    let mut sink = open(&objects, 1000);
    sink.write(&changes).unwrap();
    let mut other = bytes.to_vec();
    let last = other.len() - 9;
    other[last] ^= 1;
    objects.create(&objects.path(&name), other.into()).unwrap();
    let e = sink.flush().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Transient);
    assert!(e.to_string().contains(&name), "{e}");
}

#[test]
fn a_name_another_writer_committed_is_a_transient_collision_naming_the_object() {
    let objects = bucket();
    // Two writers continue the shard from the same (empty) position with
    // different file sizes: their first files end apart but share a name.
    let mut ours = open(&objects, 1000);
    let mut theirs = open(&objects, 3);
    let changes: Vec<Change> = (1..=4).map(|s| change(s, DAY_ONE_MS)).collect();
    theirs.write(&changes).unwrap();
    theirs.flush().unwrap();
    assert_eq!(
        listed(&objects),
        [format!("{DAY}/s1_1.parquet"), format!("{DAY}/s1_4.parquet")]
    );
    let committed = objects.read(&objects.path(&format!("{DAY}/s1_1.parquet")));
    ours.write(&changes).unwrap();
    let e = ours.flush().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Transient);
    let text = e.to_string();
    assert!(
        text.contains("s3://lake/cdc/orders/date=2024-05-01/s1_1.parquet")
            && text.contains("another writer committed this range"),
        "{text}"
    );
    assert_eq!(position(&ours), None, "the position does not move");
    // Never overwritten, nothing added.
    assert_eq!(
        objects
            .read(&objects.path(&format!("{DAY}/s1_1.parquet")))
            .unwrap(),
        committed.unwrap()
    );
    assert_eq!(listed(&objects).len(), 2);
    // Starting over learns the other writer's position and writes nothing.
    drop(ours);
    let mut again = open(&objects, 1000);
    assert_eq!(position(&again).as_deref(), Some("4"));
    again.write(&changes).unwrap();
    again.flush().unwrap();
    assert_eq!(again.stats().files, 0);
    assert_eq!(sequence_numbers(&objects), (1..=4).collect::<Vec<u64>>());
}

#[test]
fn the_position_of_a_new_name_is_read_from_its_footer() {
    let objects = bucket();
    let mut sink = open(&objects, 1000);
    let changes: Vec<Change> = (7..=9).map(|s| change(s, DAY_ONE_MS)).collect();
    sink.write(&changes).unwrap();
    sink.flush().unwrap();
    let bytes = objects
        .read(&objects.path(&format!("{DAY}/s1_7.parquet")))
        .unwrap();
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap();
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
    assert_eq!(position(&open(&objects, 1000)).as_deref(), Some("9"));
}

#[test]
fn names_of_earlier_versions_still_count_beside_new_ones() {
    let objects = bucket();
    let mut sink = open(&objects, 1000);
    sink.write(&(1..=3).map(|s| change(s, DAY_ONE_MS)).collect::<Vec<_>>())
        .unwrap();
    sink.flush().unwrap();
    drop(sink);
    // As an earlier version named it.
    let new = objects.path(&format!("{DAY}/s1_1.parquet"));
    let old = objects.path(&format!("{DAY}/s1-1-3.parquet"));
    objects.create(&old, objects.read(&new).unwrap()).unwrap();
    objects.delete(&new).unwrap();
    let mut again = open(&objects, 1000);
    assert_eq!(position(&again).as_deref(), Some("3"));
    again
        .write(&(1..=6).map(|s| change(s, DAY_ONE_MS)).collect::<Vec<_>>())
        .unwrap();
    again.flush().unwrap();
    assert_eq!(
        listed(&objects),
        [
            format!("{DAY}/s1-1-3.parquet"),
            format!("{DAY}/s1_4.parquet")
        ]
    );
    assert_eq!(position(&open(&objects, 1000)).as_deref(), Some("6"));
    assert_eq!(sequence_numbers(&objects), (1..=6).collect::<Vec<u64>>());
}

#[test]
fn an_unreadable_footer_stops_the_open_naming_the_object() {
    let objects = bucket();
    objects
        .create(
            &objects.path(&format!("{DAY}/s1_5.parquet")),
            "not parquet".into(),
        )
        .unwrap();
    let mut config = ParquetConfig::new("s3://lake/cdc");
    config.max_rows_per_file = 10;
    let e = ParquetSink::open_on(objects.clone(), config, NumbersMode::Auto, HashMap::new())
        .err()
        .expect("the open fails");
    let text = e.to_string();
    assert!(
        text.contains("cannot read the footer")
            && text.contains("s3://lake/cdc/orders/date=2024-05-01/s1_5.parquet"),
        "{text}"
    );
}

/// An empty or truncated object under a committed file's name (left by
/// another tool) stops the open naming it, as the same file on a disk
/// does; it is not taken for a store that may come back.
#[test]
fn an_empty_object_under_a_file_name_stops_the_open_naming_it() {
    for contents in ["", "PAR1"] {
        let objects = bucket();
        objects
            .create(
                &objects.path(&format!("{DAY}/s1_5.parquet")),
                contents.into(),
            )
            .unwrap();
        let mut config = ParquetConfig::new("s3://lake/cdc");
        config.max_rows_per_file = 10;
        let e = ParquetSink::open_on(objects.clone(), config, NumbersMode::Auto, HashMap::new())
            .err()
            .expect("the open fails");
        let text = e.to_string();
        assert!(
            text.contains("cannot read the footer")
                && text.contains("s3://lake/cdc/orders/date=2024-05-01/s1_5.parquet"),
            "{contents:?}: {text}"
        );
        assert!(
            dynamo_cdc_core::SinkError::from(e).kind() == dynamo_cdc_core::ErrorKind::Fatal,
            "{contents:?}"
        );
    }
}

#[test]
fn dead_letter_and_gap_prefixes_are_not_data() {
    let objects = bucket();
    objects
        .create(
            &objects.path("_dead_letter/orders/00000001-s1_9.parquet"),
            "x".into(),
        )
        .unwrap();
    objects
        .create(&objects.path("_gaps/date=x/s1_1.parquet"), "x".into())
        .unwrap();
    let sink = open(&objects, 1000);
    assert_eq!(position(&sink), None);
}

/// A staging object a crash left behind (completed, never copied to its
/// name) is not a committed file. A sink alone on the dataset removes it
/// at open; one that shares it leaves a fresh one (another writer's commit
/// may be under way) to a later open or the lifecycle rule.
#[test]
fn staging_objects_are_not_data_and_leftovers_are_swept() {
    let objects = bucket();
    let staged = objects.path(&format!("{STAGING_DIR}/{DAY}/s1_1.parquet.18f2c-4d2-0"));
    objects.create(&staged, "x".into()).unwrap();
    let mut config = ParquetConfig::new("s3://lake/cdc");
    config.exclusive = false;
    let shared =
        ParquetSink::open_on(objects.clone(), config, NumbersMode::Auto, HashMap::new()).unwrap();
    assert_eq!(position(&shared), None);
    assert!(
        objects.exists(&staged).unwrap(),
        "young, and maybe another writer's"
    );
    let alone = open(&objects, 1000);
    assert_eq!(position(&alone), None);
    assert!(!objects.exists(&staged).unwrap(), "swept");
    assert_eq!(alone.parquet_stats().swept, 1);
}

/// Where processes share the dataset, a file of several parts is committed
/// whole under its name and no staging object is left (that it goes
/// through staging is `uploads_are_fenced_when_shared_and_the_copy_fits`,
/// and the staging itself the object-store crate's tests).
#[test]
fn a_shared_dataset_commits_a_large_file_whole_and_leaves_no_staging_object() {
    let objects = bucket();
    let mut config = ParquetConfig::new("s3://lake/cdc");
    config.exclusive = false;
    let mut sink =
        ParquetSink::open_on(objects.clone(), config, NumbersMode::Auto, HashMap::new()).unwrap();
    // Incompressible (xorshift): 12 MiB of file, more than one part.
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let changes: Vec<Change> = (1..=12)
        .map(|seq| {
            let mut c = change(seq, DAY_ONE_MS);
            let blob: Vec<u8> = (0..1 << 20)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            c.new_image
                .as_mut()
                .unwrap()
                .insert("blob".into(), AttributeValue::B(blob));
            c
        })
        .collect();
    sink.write(&changes).unwrap();
    sink.flush().unwrap();
    assert_eq!(listed(&objects), [format!("{DAY}/s1_1.parquet")]);
    let size = objects.list("").unwrap()[0].size;
    assert!(size > dynamo_cdc_object_store::PART_BYTES as u64, "{size}");
    assert_eq!(sequence_numbers(&objects), (1..=12).collect::<Vec<u64>>());
}
