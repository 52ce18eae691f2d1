//! Bad input at scale: captures of valid records, damaged at random (bytes
//! flipped, inserted, removed, lines cut), read by the replay source. No
//! input may panic or hang the reader, and every line is accounted for: its
//! records become changes, or dead letters with a reason.
//!
//! `PROPTEST_CASES` raises the case count (CI runs the default).

use std::time::{Duration, Instant};

use dynamo_cdc_core::{AttributeValue, Item, Positions, Source};
use dynamo_cdc_source::{ImageReading, ReplayConfig, ReplaySource};
use dynamo_cdc_testkit::strategies::{arb_item, get_records_json, stream_record_json};
use proptest::prelude::*;

/// A damage to apply at a position of the text.
#[derive(Clone, Debug)]
enum Damage {
    Flip(proptest::sample::Index, u8),
    Insert(proptest::sample::Index, u8),
    Remove(proptest::sample::Index),
    Cut(proptest::sample::Index),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<proptest::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Damage::Flip(i, b)),
        (any::<proptest::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Damage::Insert(i, b)),
        any::<proptest::sample::Index>().prop_map(Damage::Remove),
        any::<proptest::sample::Index>().prop_map(Damage::Cut),
    ]
}

fn apply(bytes: &mut Vec<u8>, d: &Damage) {
    if bytes.is_empty() {
        return;
    }
    match d {
        Damage::Flip(i, b) => {
            let at = i.index(bytes.len());
            bytes[at] = *b;
        }
        Damage::Insert(i, b) => {
            let at = i.index(bytes.len());
            bytes.insert(at, *b);
        }
        Damage::Remove(i) => {
            let at = i.index(bytes.len());
            bytes.remove(at);
        }
        Damage::Cut(i) => {
            let at = i.index(bytes.len());
            bytes.truncate(at);
        }
    }
}

fn page(items: &[Item], first: u128) -> String {
    let records: Vec<String> = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let keys: Item = [("pk", AttributeValue::S(format!("k{i}").into()))].into();
            let op = ["INSERT", "MODIFY", "REMOVE"][i % 3];
            let (old, new) = match op {
                "INSERT" => (None, Some(item)),
                "MODIFY" => (Some(item), Some(item)),
                _ => (Some(item), None),
            };
            stream_record_json("fuzz", first + i as u128, op, &keys, old, new, false)
        })
        .collect();
    get_records_json(&records, Some("next"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn damaged_captures_never_panic_or_hang_and_nothing_is_dropped(
        pages in proptest::collection::vec(proptest::collection::vec(arb_item(), 1..4), 1..4),
        damages in proptest::collection::vec(damage(), 0..4),
        gzip in any::<bool>(),
    ) {
        let mut text = String::new();
        let mut seq = 1_000u128;
        let mut records = 0;
        for items in &pages {
            text.push_str(&page(items, seq));
            text.push('\n');
            seq += 100;
            records += items.len();
        }
        let mut bytes = text.into_bytes();
        for d in &damages {
            apply(&mut bytes, d);
        }
        if gzip {
            use std::io::Write as _;
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&bytes).unwrap();
            bytes = gz.finish().unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("shard-1.jsonl");
        std::fs::write(&file, &bytes).unwrap();
        let mut source = ReplaySource::open(
            &ReplayConfig {
                path: file,
                table: Some("fuzz".into()),
                batch_size: 7,
                batch_bytes: 4096,
                reading: ImageReading::default(),
            },
            Positions::new(),
        )
        .unwrap();
        let started = Instant::now();
        let (mut changes, mut letters) = (0, 0);
        loop {
            prop_assert!(started.elapsed() < Duration::from_secs(20), "the reader hangs");
            match source.next_batch() {
                Ok(Some(batch)) => {
                    for l in &batch.dead_letters {
                        prop_assert!(!l.error.is_empty(), "a dead letter without a reason");
                    }
                    changes += batch.changes.len();
                    letters += batch.dead_letters.len();
                }
                Ok(None) => break,
                // A gzip stream cut short is an I/O error of the whole file.
                Err(e) => {
                    prop_assert!(gzip, "a plain capture failed as a whole: {e}");
                    break;
                }
            }
        }
        if damages.is_empty() {
            prop_assert_eq!(changes, records);
            prop_assert_eq!(letters, 0);
        } else if !gzip {
            // Damage may merge or split lines and change what a line holds,
            // but a capture with records in it never reads as nothing.
            prop_assert!(changes + letters > 0 || bytes.iter().all(u8::is_ascii_whitespace));
        }
    }
}
