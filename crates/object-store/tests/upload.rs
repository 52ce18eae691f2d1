//! The commit rules of an upload, on object_store's in-memory store: an
//! object is visible only when complete, small or multipart, and a name that
//! exists is never overwritten.

use std::io::Write as _;
use std::sync::Arc;

use dynamo_cdc_object_store::{FailureClass, InMemory, Objects, StoreUrl, Upload};

fn objects() -> Objects {
    Objects::with_store(
        Arc::new(InMemory::new()),
        StoreUrl::parse("s3://lake/cdc").unwrap(),
    )
}

fn names(objects: &Objects) -> Vec<String> {
    let mut names: Vec<String> = objects
        .list("")
        .unwrap()
        .into_iter()
        .map(|m| m.location.to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn a_small_file_is_one_conditional_put_made_on_finish() {
    let objects = objects();
    let mut upload = Upload::new(&objects, objects.path("t/a.parquet"));
    upload.write_all(b"hello").unwrap();
    assert!(names(&objects).is_empty(), "nothing visible before finish");
    assert_eq!(upload.finish().unwrap(), 5);
    assert_eq!(names(&objects), ["cdc/t/a.parquet"]);
    assert_eq!(
        &objects.read(&objects.path("t/a.parquet")).unwrap()[..],
        b"hello"
    );
}

#[test]
fn a_large_file_streams_in_parts_and_appears_only_when_complete() {
    let objects = objects();
    let key = objects.path("t/big.parquet");
    let mut upload = Upload::with_part_bytes(&objects, key.clone(), 4);
    upload.write_all(b"0123456789").unwrap();
    assert!(names(&objects).is_empty(), "parts sent, object not visible");
    assert_eq!(upload.finish().unwrap(), 10);
    assert_eq!(&objects.read(&key).unwrap()[..], b"0123456789");
    assert_eq!(&objects.read_range(&key, 8..10).unwrap()[..], b"89");
}

#[test]
fn an_upload_dropped_unfinished_leaves_nothing() {
    let objects = objects();
    let mut upload = Upload::with_part_bytes(&objects, objects.path("t/x.parquet"), 4);
    upload.write_all(b"0123456789").unwrap();
    drop(upload);
    assert!(names(&objects).is_empty());
}

#[test]
fn an_existing_name_is_a_collision_naming_the_object_and_is_never_overwritten() {
    let objects = objects();
    for part_bytes in [1 << 20, 4] {
        let key = objects.path(&format!("t/{part_bytes}.parquet"));
        objects.create(&key, "first".into()).unwrap();
        let mut upload = Upload::with_part_bytes(&objects, key.clone(), part_bytes);
        upload.write_all(b"second writer").unwrap();
        let e = upload.finish().unwrap_err();
        assert_eq!(e.class, FailureClass::Collision);
        assert!(e.is_transient());
        let text = e.to_string();
        assert!(
            text.contains(&format!("s3://lake/cdc/t/{part_bytes}.parquet"))
                && text.contains("another writer committed it"),
            "{text}"
        );
        assert_eq!(&objects.read(&key).unwrap()[..], b"first");
    }
}

#[test]
fn keys_are_relative_to_the_prefix() {
    let objects = objects();
    let key = objects.path("t/date=2024-05-01/s1-1-2.parquet");
    assert_eq!(key.as_ref(), "cdc/t/date=2024-05-01/s1-1-2.parquet");
    assert_eq!(
        objects.relative(&key),
        Some("t/date=2024-05-01/s1-1-2.parquet")
    );
    assert_eq!(
        objects.describe(&key),
        "s3://lake/cdc/t/date=2024-05-01/s1-1-2.parquet"
    );
    let other = dynamo_cdc_object_store::ObjectPath::from("cdcx/t");
    assert_eq!(objects.relative(&other), None);
    assert_eq!(objects.join("_gaps").path("t").as_ref(), "cdc/_gaps/t");
}
