//! Fenced uploads on moto's S3: a file of several parts is staged, copied
//! to its name create-if-absent (a one-part upload copy completed with
//! `If-None-Match: *`, as the product's client is configured), and the
//! staging object removed; a second writer of the same name collides and
//! replaces nothing.

use std::io::Write as _;
use std::sync::Arc;

use dynamo_cdc_object_store::{FailureClass, Objects, STAGING_DIR, StoreUrl, Upload};
use dynamo_cdc_tests::Scratch;
use dynamo_cdc_tests::servers::{create_bucket, start_moto};
use object_store::aws::{AmazonS3Builder, S3CopyIfNotExists};

/// S3 takes parts of at least 5 MiB, except the last.
const PART: usize = 5 << 20;

/// `s3://lake/cdc` on moto, with create-if-absent copies as the product
/// makes them (`connect.rs` sets the same mode; its unit test checks it).
fn bucket(moto: &str) -> Objects {
    dynamo_cdc_object_store::install_tls_provider();
    let s3 = AmazonS3Builder::new()
        .with_bucket_name("lake")
        .with_region("us-east-1")
        .with_endpoint(moto)
        .with_allow_http(true)
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .with_copy_if_not_exists(S3CopyIfNotExists::Multipart)
        .build()
        .unwrap();
    Objects::with_store(Arc::new(s3), StoreUrl::parse("s3://lake/cdc").unwrap())
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
    let objects = bucket(&url);
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
