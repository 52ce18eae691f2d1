//! Property: any DynamoDB items, replayed and written to Parquet, read back
//! with the parquet crate and turned back into DynamoDB values, equal the
//! input (numbers compared as exact decimals) in the lossless number modes.

use dynamo_cdc::Config;
use dynamo_cdc_core::{AttributeValue, Item};
use dynamo_cdc_testkit::strategies::{arb_item, get_records_json, stream_record_json};
use dynamo_cdc_tests::{Scratch, read_rows};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Kind {
    Insert,
    Modify(Item),
    Remove,
}

fn arb_change() -> impl Strategy<Value = (Item, Kind)> {
    let kind = prop_oneof![
        2 => Just(Kind::Insert),
        1 => arb_item().prop_map(Kind::Modify),
        1 => Just(Kind::Remove),
    ];
    (arb_item(), kind)
}

fn without_top_level_nulls(item: &Item) -> Item {
    item.iter()
        .filter(|(_, v)| !matches!(v, AttributeValue::Null))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn check(changes: &[(Item, Kind)], numbers: &str) -> Result<(), TestCaseError> {
    let scratch = Scratch::new();
    let mut records = Vec::new();
    let mut expected = Vec::new();
    for (i, (item, kind)) in changes.iter().enumerate() {
        let key = AttributeValue::S(format!("item-{i}").into());
        let keys: Item = [("pk", key.clone())].into();
        let mut item = item.clone();
        item.insert("pk".into(), key);
        let seq = 100_000_000_000_000_000_000u128 + i as u128;
        let record = match kind {
            Kind::Insert => {
                stream_record_json("things", seq, "INSERT", &keys, None, Some(&item), false)
            }
            Kind::Modify(old) => {
                let mut old = old.clone();
                old.insert("pk".into(), keys["pk"].clone());
                stream_record_json(
                    "things",
                    seq,
                    "MODIFY",
                    &keys,
                    Some(&old),
                    Some(&item),
                    false,
                )
            }
            Kind::Remove => stream_record_json(
                "things",
                seq,
                "REMOVE",
                &keys,
                Some(&item),
                None,
                i % 2 == 0,
            ),
        };
        records.push(record);
        expected.push((seq.to_string(), without_top_level_nulls(&item)));
    }
    let mut capture = String::new();
    for page in records.chunks(3) {
        capture.push_str(&get_records_json(page, Some("iter")));
        capture.push('\n');
    }
    scratch.write_capture("shard-0001.jsonl", &capture);
    let config = Config::parse(
        &std::fs::read_to_string(scratch.config(&format!("numbers = \"{numbers}\""), "")).unwrap(),
    )
    .unwrap();
    let summary = dynamo_cdc::run(&config, &dynamo_cdc::RunOptions::default())
        .map_err(|e| TestCaseError::fail(format!("{e:#}")))?;
    prop_assert_eq!(summary.dead_lettered, 0, "valid items were dead-lettered");
    let rows = read_rows(&scratch.parquet());
    prop_assert_eq!(rows.len(), expected.len());
    for (row, (seq, item)) in rows.iter().zip(&expected) {
        prop_assert_eq!(&row.seq, seq);
        prop_assert_eq!(&row.item, item, "row {} differs", seq);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// The hand-written DynamoDB-JSON writer makes exactly serde_json's text.
    #[test]
    fn ddb_json_matches_serde_json(item in arb_item()) {
        let value = AttributeValue::M(item);
        prop_assert_eq!(value.to_ddb_json(), serde_json::to_string(&value).unwrap());
    }

    #[test]
    fn lossless_in_auto_mode(changes in proptest::collection::vec(arb_change(), 1..12)) {
        check(&changes, "auto")?;
    }

    #[test]
    fn lossless_in_string_mode(changes in proptest::collection::vec(arb_change(), 1..12)) {
        check(&changes, "string")?;
    }
}
