//! Checks on the generated captures themselves: shape, determinism, history
//! consistency and validity of every value.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use dynamo_cdc_core::{Item, parse_item};
use serde_json::Value;

use super::*;

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "dynamo-cdc-testkit-{}-{name}-{n}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn read_text(path: &Path) -> String {
    let raw = fs::read(path).unwrap();
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_string(&mut text)
            .unwrap();
        text
    } else {
        String::from_utf8(raw).unwrap()
    }
}

/// Every page of a file, checked for the GetRecords shape.
fn pages(text: &str) -> Vec<Value> {
    let lines: Vec<&str> = text.lines().collect();
    assert!(!lines.is_empty());
    lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let page: Value = serde_json::from_str(line).unwrap();
            let obj = page.as_object().unwrap();
            assert_eq!(obj.len(), 2, "{line}");
            assert!(page["Records"].is_array());
            if i + 1 == lines.len() {
                assert!(
                    page["NextShardIterator"].is_null(),
                    "last page must close the shard"
                );
            } else {
                let it = page["NextShardIterator"].as_str().unwrap();
                assert!(it.starts_with("arn:aws:dynamodb:us-east-1:123456789012:table/"));
            }
            page
        })
        .collect()
}

fn records(text: &str) -> Vec<Value> {
    pages(text)
        .into_iter()
        .flat_map(|p| p["Records"].as_array().unwrap().clone())
        .collect()
}

fn image(record: &Value, field: &str) -> Option<Item> {
    let v = record["dynamodb"].get(field)?;
    Some(parse_item(&v.to_string(), field).unwrap_or_else(|e| panic!("{e}: {v}")))
}

/// Checks one shard's records; returns the type tags seen and op counts.
fn check_shard(table: &str, text: &str) -> (BTreeSet<String>, OpCounts) {
    let mut state: BTreeMap<String, Item> = BTreeMap::new();
    let mut seen_keys: BTreeSet<String> = BTreeSet::new();
    let mut last_seq: Option<(usize, String)> = None;
    let mut last_ts = 0.0f64;
    let mut tags = BTreeSet::new();
    let mut counts = OpCounts::default();
    for r in records(text) {
        assert_eq!(r["eventVersion"], "1.1");
        assert_eq!(r["eventSource"], "aws:dynamodb");
        assert_eq!(r["awsRegion"], "us-east-1");
        let arn = format!(
            "arn:aws:dynamodb:us-east-1:123456789012:table/{table}/stream/2024-11-01T00:00:00.000"
        );
        assert_eq!(r["eventSourceARN"], arn.as_str());
        let id = r["eventID"].as_str().unwrap();
        assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()));
        let ddb = &r["dynamodb"];
        assert_eq!(ddb["StreamViewType"], "NEW_AND_OLD_IMAGES");
        assert!(ddb["SizeBytes"].as_u64().unwrap() > 0);
        let ts = ddb["ApproximateCreationDateTime"].as_f64().unwrap();
        assert!(ts >= last_ts && ts > 1.7e9 && ts < 1.8e9, "{ts}");
        last_ts = ts;

        let seq = ddb["SequenceNumber"].as_str().unwrap().to_owned();
        assert!(
            seq.len() >= 21 && seq.bytes().all(|b| b.is_ascii_digit()),
            "{seq}"
        );
        let key = (seq.len(), seq.clone());
        if let Some(prev) = &last_seq {
            assert!(
                key > *prev,
                "sequence numbers must rise: {prev:?} then {seq}"
            );
        }
        last_seq = Some(key);

        let keys = image(&r, "Keys").unwrap();
        let key_text = serde_json::to_string(&keys).unwrap();
        let old = image(&r, "OldImage");
        let new = image(&r, "NewImage");
        for img in [&old, &new].into_iter().flatten() {
            for (k, v) in &keys {
                assert_eq!(img.get(k), Some(v), "key {k} missing from image");
            }
            collect_tags(&serde_json::to_value(img).unwrap(), &mut tags);
        }
        let ttl = r.get("userIdentity");
        match r["eventName"].as_str().unwrap() {
            "INSERT" => {
                counts.insert += 1;
                assert!(old.is_none() && ttl.is_none());
                assert!(
                    seen_keys.insert(key_text.clone()),
                    "key inserted twice: {key_text}"
                );
                state.insert(key_text, new.unwrap());
            }
            "MODIFY" => {
                counts.modify += 1;
                assert!(ttl.is_none());
                let prev = state
                    .get(&key_text)
                    .expect("modify of an item never inserted");
                assert_eq!(
                    old.as_ref(),
                    Some(prev),
                    "OldImage is not the previous NewImage"
                );
                let new = new.unwrap();
                assert_ne!(&new, prev, "a modify changes the item");
                state.insert(key_text, new);
            }
            "REMOVE" => {
                counts.remove += 1;
                assert!(new.is_none());
                let prev = state
                    .remove(&key_text)
                    .expect("remove of an item never inserted");
                assert_eq!(old.as_ref(), Some(&prev), "OldImage is not the last state");
                if let Some(who) = ttl {
                    counts.ttl_remove += 1;
                    assert_eq!(who["Type"], "Service");
                    assert_eq!(who["PrincipalId"], "dynamodb.amazonaws.com");
                    // TTL only removes expired items.
                    let expiry = prev["expires_at"].clone();
                    let dynamo_cdc_core::AttributeValue::N(at) = expiry else {
                        panic!("a TTL delete of an item without expires_at")
                    };
                    assert!(at.to_f64() <= ts);
                }
            }
            other => panic!("eventName {other}"),
        }
    }
    (tags, counts)
}

fn collect_tags(v: &Value, tags: &mut BTreeSet<String>) {
    // `v` is an item: attribute name to {"TAG": payload}.
    if let Some(obj) = v.as_object() {
        for value in obj.values() {
            let Some((tag, payload)) = value.as_object().and_then(|o| o.iter().next()) else {
                continue;
            };
            tags.insert(tag.clone());
            match tag.as_str() {
                "M" => collect_tags(payload, tags),
                "L" => {
                    for (i, el) in payload.as_array().unwrap().iter().enumerate() {
                        collect_tags(&serde_json::json!({ i.to_string(): el }), tags);
                    }
                }
                _ => {}
            }
        }
    }
}

#[test]
fn quickstart_is_consistent_and_complete() {
    let dir = Scratch::new("quickstart");
    let summary = write_capture_dir(&dir.0, &quickstart()).unwrap();
    let names: Vec<_> = summary
        .files
        .iter()
        .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["orders-shard-0001.jsonl", "customers-shard-0001.jsonl"]
    );
    assert_eq!(summary.records(), 400);
    let mut all_tags = BTreeSet::new();
    for f in &summary.files {
        let text = read_text(&f.path);
        assert_eq!(text.len() as u64, f.bytes);
        assert_eq!(text.lines().count() as u64, f.pages);
        let (tags, counts) = check_shard(&f.table, &text);
        assert_eq!(counts, f.counts, "{}", f.shard_id);
        assert!(
            counts.insert > 0 && counts.modify > 0 && counts.remove > 0,
            "{counts:?}"
        );
        all_tags.extend(tags);
    }
    let expected: BTreeSet<String> = ["S", "N", "B", "BOOL", "NULL", "SS", "NS", "BS", "L", "M"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    assert_eq!(all_tags, expected);
    let ttl: u64 = summary.files.iter().map(|f| f.counts.ttl_remove).sum();
    assert!(ttl >= 1, "no TTL delete");
}

#[test]
fn quickstart_numbers_cover_the_range() {
    let dir = Scratch::new("numbers");
    write_capture_dir(&dir.0, &quickstart()).unwrap();
    let text = read_text(&dir.0.join("customers-shard-0001.jsonl"))
        + &read_text(&dir.0.join("orders-shard-0001.jsonl"));
    let numbers: Vec<&str> = text
        .split(r#"{"N":""#)
        .skip(1)
        .map(|rest| &rest[..rest.find('"').unwrap()])
        .collect();
    let has = |f: &dyn Fn(&str) -> bool| numbers.iter().any(|n| f(n));
    assert!(has(&|n| n.starts_with('-')), "negative");
    assert!(has(&|n| n.contains('.') && n.len() < 12), "plain decimal");
    assert!(
        has(&|n| !n.contains('.') && n.trim_start_matches('-').len() > 19),
        "beyond i64"
    );
    assert!(
        has(&|n| n.starts_with("0.") && n.len() > 100),
        "tiny exponent"
    );
    assert!(
        has(&|n| n.trim_start_matches('-').len() > 100 && !n.contains('.')),
        "huge exponent"
    );
}

#[test]
fn ttl_deletes_appear_for_other_seeds_too() {
    for seed in 0..8 {
        let dir = Scratch::new("seeds");
        let cfg = GenConfig {
            seed,
            ..quickstart()
        };
        let summary = write_capture_dir(&dir.0, &cfg).unwrap();
        let ttl: u64 = summary.files.iter().map(|f| f.counts.ttl_remove).sum();
        assert!(ttl >= 1, "seed {seed}: no TTL delete");
        for f in &summary.files {
            check_shard(&f.table, &read_text(&f.path));
        }
    }
}

#[test]
fn same_seed_same_bytes() {
    let (a, b, c) = (
        Scratch::new("det-a"),
        Scratch::new("det-b"),
        Scratch::new("det-c"),
    );
    let sa = write_capture_dir(&a.0, &quickstart()).unwrap();
    write_capture_dir(&b.0, &quickstart()).unwrap();
    write_capture_dir(
        &c.0,
        &GenConfig {
            seed: 7,
            ..quickstart()
        },
    )
    .unwrap();
    for f in &sa.files {
        let name = f.path.file_name().unwrap();
        assert_eq!(
            fs::read(&f.path).unwrap(),
            fs::read(b.0.join(name)).unwrap()
        );
        assert_ne!(
            fs::read(&f.path).unwrap(),
            fs::read(c.0.join(name)).unwrap()
        );
    }
    let mut x = Vec::new();
    let mut y = Vec::new();
    write_bench_capture(&mut x, 3, 200_000).unwrap();
    write_bench_capture(&mut y, 3, 200_000).unwrap();
    assert_eq!(x, y);
}

#[test]
fn gzip_holds_the_same_lines() {
    let (plain, gz) = (Scratch::new("plain"), Scratch::new("gz"));
    write_capture_dir(&plain.0, &quickstart()).unwrap();
    let summary = write_capture_dir(
        &gz.0,
        &GenConfig {
            gzip: true,
            ..quickstart()
        },
    )
    .unwrap();
    for f in &summary.files {
        let name = f.path.file_name().unwrap().to_string_lossy().into_owned();
        let stem = name.strip_suffix(".gz").unwrap();
        assert!(stem.ends_with(".jsonl"));
        assert_eq!(read_text(&f.path), read_text(&plain.0.join(stem)));
    }
}

#[test]
fn shards_split_items_and_keep_order() {
    let dir = Scratch::new("shards");
    let mut orders = TableSpec::orders();
    orders.shards = 3;
    let cfg = GenConfig {
        tables: vec![orders],
        records: 600,
        ..quickstart()
    };
    let summary = write_capture_dir(&dir.0, &cfg).unwrap();
    assert_eq!(summary.files.len(), 3);
    assert_eq!(summary.files[2].shard_id, "orders-shard-0003");
    for f in &summary.files {
        let (_, counts) = check_shard("orders", &read_text(&f.path));
        assert!(counts.total() > 50, "{counts:?}");
    }
    assert_eq!(summary.table_counts("orders").total(), 600);
}

#[test]
fn bench_records_are_about_1_3_kb() {
    let mut out = Vec::new();
    let records = write_bench_capture(&mut out, 11, 4 << 20).unwrap();
    let mean = out.len() as f64 / records as f64;
    assert!(
        (1100.0..=1500.0).contains(&mean),
        "mean record size {mean:.0} bytes"
    );
    assert!(out.len() as u64 >= 4 << 20 && out.len() as u64 <= (4 << 20) + 10_000);
    let text = String::from_utf8(out).unwrap();
    let (tags, c) = check_shard(BENCH_TABLE, &text);
    assert_eq!(c.total(), records);
    let share = |n: u64| n as f64 / records as f64;
    assert!((0.55..0.65).contains(&share(c.insert)), "{c:?}");
    assert!((0.25..0.35).contains(&share(c.modify)), "{c:?}");
    assert!((0.07..0.13).contains(&share(c.remove)), "{c:?}");
    for tag in ["M", "L", "SS", "NS", "BS", "B"] {
        assert!(tags.contains(tag), "{tag}");
    }
}

#[test]
fn tiny_bench_is_one_closed_page() {
    let mut out = Vec::new();
    assert_eq!(write_bench_capture(&mut out, 1, 0).unwrap(), 0);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "{\"Records\":[],\"NextShardIterator\":null}\n"
    );
    let mut out = Vec::new();
    assert_eq!(write_bench_capture(&mut out, 1, 1).unwrap(), 1);
    assert_eq!(pages(std::str::from_utf8(&out).unwrap()).len(), 1);
}

#[test]
fn bad_configs_are_rejected() {
    let mut cfg = quickstart();
    cfg.records_per_page = 0;
    assert!(cfg.validate().is_err());
    let mut cfg = quickstart();
    cfg.tables.push(TableSpec::orders());
    assert!(cfg.validate().unwrap_err().contains("twice"));
    let dir = Scratch::new("bad");
    let err = write_capture_dir(
        &dir.0,
        &GenConfig {
            tables: vec![],
            ..quickstart()
        },
    )
    .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn bench_shapes_are_consistent_and_have_their_sizes() {
    use super::bench_profiles::wide;

    fn depth(v: &Value) -> usize {
        match v {
            Value::Object(m) => match m.iter().next() {
                Some((tag, inner)) if tag == "M" => {
                    1 + inner
                        .as_object()
                        .unwrap()
                        .values()
                        .map(depth)
                        .max()
                        .unwrap_or(0)
                }
                Some((tag, inner)) if tag == "L" => {
                    1 + inner
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(depth)
                        .max()
                        .unwrap_or(0)
                }
                _ => 1,
            },
            _ => 0,
        }
    }

    for shape in BenchShape::ALL {
        let mut out = Vec::new();
        let bytes = if shape == BenchShape::Large {
            8 << 20
        } else {
            2 << 20
        };
        let count = write_bench_shape(&mut out, shape, 5, bytes).unwrap();
        let mut again = Vec::new();
        write_bench_shape(&mut again, shape, 5, bytes).unwrap();
        assert_eq!(out, again, "{shape:?} is not deterministic");
        let mean = out.len() as f64 / count as f64;
        let text = String::from_utf8(out).unwrap();
        let table = shape.table().name;
        let (_, counts) = check_shard(&table, &text);
        assert_eq!(counts.total(), count, "{shape:?}");
        for line in text.lines() {
            assert!(line.len() < 1 << 20, "{shape:?}: a page over 1 MB");
        }
        let new_images: Vec<Value> = records(&text)
            .into_iter()
            .filter_map(|r| r["dynamodb"].get("NewImage").cloned())
            .collect();
        match shape {
            BenchShape::Mixed => assert!((1100.0..=1500.0).contains(&mean), "{mean}"),
            BenchShape::Small => assert!(mean < 700.0, "{mean}"),
            BenchShape::Large => assert!(mean > 250_000.0, "{mean}"),
            BenchShape::Wide => {
                for image in &new_images {
                    assert!(image.as_object().unwrap().len() >= wide::ATTRIBUTES);
                    assert_eq!(depth(&image["deep"]), wide::DEPTH);
                }
                assert!(text.contains("1E-130") || text.contains("0.0000000000"));
            }
        }
        assert!(!new_images.is_empty());
    }
}
