//! Fenced uploads on moto's S3: a file of several parts is staged, copied
//! to its name create-if-absent (a one-part upload copy completed with
//! `If-None-Match: *`, as the product's client is configured), and the
//! staging object removed; a second writer of the same name collides and
//! replaces nothing.

use std::io::Write as _;

use dynamo_cdc_object_store::{FailureClass, Objects, STAGING_DIR, Upload};
use dynamo_cdc_tests::Scratch;
use dynamo_cdc_tests::servers::{create_bucket, moto_lake, start_moto};

/// S3 takes parts of at least 5 MiB, except the last.
const PART: usize = 5 << 20;

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

/// `len` bytes that differ from writer to writer.
fn file(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
#[ignore = "needs moto_server; scripts/test.sh installs it and runs this"]
fn fenced_multipart_commits_on_moto_are_create_if_absent() {
    let s = Scratch::new();
    let (_moto, url) = start_moto(s.path());
    create_bucket(&url, "lake");
    let objects = moto_lake(&url);
    let key = objects.path("orders/date=2024-05-01/s1_100.parquet");

    let first = file(2 * PART + 12_345, 1);
    let mut upload = Upload::with_part_bytes(&objects, key.clone(), PART).fenced();
    upload.write_all(&first).unwrap();
    assert!(
        names(&objects).is_empty(),
        "nothing visible before the commit"
    );
    assert_eq!(upload.finish().unwrap(), first.len() as u64);
    assert_eq!(
        names(&objects),
        ["cdc/orders/date=2024-05-01/s1_100.parquet"],
        "committed, and no {STAGING_DIR}/ object left"
    );
    assert!(objects.read(&key).unwrap() == first);

    // A zombie with the same range, a little larger.
    let second = file(PART + 99, 2);
    let mut late = Upload::with_part_bytes(&objects, key.clone(), PART).fenced();
    late.write_all(&second).unwrap();
    let e = late.finish().unwrap_err();
    assert_eq!(e.class, FailureClass::Collision, "{e}");
    assert!(objects.read(&key).unwrap() == first, "nothing replaced");
    assert_eq!(
        names(&objects),
        ["cdc/orders/date=2024-05-01/s1_100.parquet"]
    );
}
