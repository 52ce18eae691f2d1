//! Scan over HTTP: segments, paging, page size, capacity, validation and
//! scripted faults.

use std::collections::BTreeSet;

use dynamo_cdc_testkit::streams_sim::{Fault, Op, StreamSim};
use serde_json::{Value, json};

use crate::http::{canonical, ddb, ddb_err, ddb_ok};

const VALIDATION: &str = "com.amazon.coral.validate#ValidationException";

/// A table of `partitions` × `per` items keyed by a string and a number.
fn filled(partitions: usize, per: i64) -> StreamSim {
    let sim = StreamSim::start();
    sim.create_table("t", "pk", Some("sk"));
    for p in 0..partitions {
        for s in 0..per {
            sim.put_item(
                "t",
                json!({"pk": {"S": format!("p{p}")}, "sk": {"N": (s * 7 - 20).to_string()}, "x": {"N": p.to_string()}}),
            );
        }
    }
    sim
}

/// Every item of one segment, page by page; also the number of pages.
fn scan_segment(sim: &StreamSim, segment: u64, total: u64, limit: u64) -> (Vec<Value>, usize) {
    let mut items = Vec::new();
    let mut start: Option<Value> = None;
    let mut pages = 0;
    loop {
        let mut body =
            json!({"TableName": "t", "Segment": segment, "TotalSegments": total, "Limit": limit});
        if let Some(key) = start.take() {
            body["ExclusiveStartKey"] = key;
        }
        let page = ddb_ok(sim, "Scan", body);
        pages += 1;
        let got = page["Items"].as_array().unwrap();
        assert_eq!(page["Count"], got.len());
        assert_eq!(page["ScannedCount"], got.len());
        assert!(got.len() as u64 <= limit);
        items.extend(got.iter().cloned());
        match page.get("LastEvaluatedKey") {
            Some(key) => {
                let last = got.last().expect("a key only after items");
                assert_eq!(key, &json!({"pk": last["pk"], "sk": last["sk"]}));
                start = Some(key.clone());
            }
            None => return (items, pages),
        }
    }
}

#[test]
fn segments_together_return_every_item_exactly_once() {
    let sim = filled(60, 6);
    let all = sim.items("t");
    assert_eq!(all.len(), 360);
    let (whole, _) = scan_segment(&sim, 0, 1, 1000);
    assert_eq!(whole, all, "one segment reads the table in scan order");
    for total in [2, 3, 8, 64, 1000] {
        let mut joined = Vec::new();
        let mut non_empty = 0;
        for segment in 0..total {
            let (items, _) = scan_segment(&sim, segment, total, 7);
            non_empty += usize::from(!items.is_empty());
            joined.extend(items);
        }
        // Segments are consecutive ranges of the one scan order.
        assert_eq!(joined, whole, "{total} segments");
        assert!(non_empty > 1, "items spread over segments");
    }
}

#[test]
fn scan_order_is_hash_of_partition_then_sort_key() {
    let sim = filled(5, 12);
    let (items, _) = scan_segment(&sim, 0, 1, 1000);
    // Each partition's items are together and in numeric sort-key order.
    let mut seen = BTreeSet::new();
    let mut previous: Option<(String, f64)> = None;
    for item in &items {
        let pk = item["pk"]["S"].as_str().unwrap().to_owned();
        let sk: f64 = item["sk"]["N"].as_str().unwrap().parse().unwrap();
        match &previous {
            Some((p, s)) if *p == pk => assert!(sk > *s, "{pk}: {sk} after {s}"),
            _ => assert!(seen.insert(pk.clone()), "{pk} split up"),
        }
        previous = Some((pk, sk));
    }
}

#[test]
fn paging_resumes_after_a_key_whose_item_was_deleted() {
    let sim = filled(20, 5);
    let order = sim.items("t");
    let first = ddb_ok(&sim, "Scan", json!({"TableName": "t", "Limit": 10}));
    let key = first["LastEvaluatedKey"].clone();
    assert_eq!(key, json!({"pk": order[9]["pk"], "sk": order[9]["sk"]}));
    // The page's last item and the next one go away before the next call.
    assert!(sim.delete_item("t", key.clone()).is_some());
    assert!(sim.delete_item("t", order[10].clone()).is_some());
    let next = ddb_ok(
        &sim,
        "Scan",
        json!({"TableName": "t", "Limit": 10, "ExclusiveStartKey": key}),
    );
    assert_eq!(next["Items"].as_array().unwrap(), &order[11..21]);
    // A key that never existed resumes where it would sort.
    let absent = json!({"pk": order[30]["pk"], "sk": {"N": "-20.5"}});
    let after = ddb_ok(
        &sim,
        "Scan",
        json!({"TableName": "t", "Limit": 3, "ExclusiveStartKey": absent}),
    );
    assert_eq!(after["Items"].as_array().unwrap(), &order[30..33]);
}

#[test]
fn the_last_page_has_no_last_evaluated_key() {
    let sim = filled(2, 5);
    let full = ddb_ok(&sim, "Scan", json!({"TableName": "t", "Limit": 10}));
    assert_eq!(full["Count"], 10);
    assert!(full.get("LastEvaluatedKey").is_none());
    let (items, pages) = scan_segment(&sim, 0, 1, 5);
    assert_eq!((items.len(), pages), (10, 2));

    let sim = StreamSim::start();
    sim.create_table("empty", "pk", None);
    let out = ddb_ok(&sim, "Scan", json!({"TableName": "empty"}));
    assert_eq!(out, json!({"Items": [], "Count": 0, "ScannedCount": 0}));
}

#[test]
fn pages_stop_at_one_megabyte() {
    let sim = StreamSim::start();
    sim.create_table("t", "pk", Some("sk"));
    let blob = "x".repeat(100_000);
    for k in 0..25 {
        sim.put_item(
            "t",
            json!({"pk": {"S": "p"}, "sk": {"N": k.to_string()}, "d": {"S": blob}}),
        );
    }
    let (items, pages) = scan_segment(&sim, 0, 1, 1000);
    assert_eq!(items.len(), 25);
    // 11 items of about 100 kB reach 1 MiB; 10 do not.
    let first = ddb_ok(&sim, "Scan", json!({"TableName": "t"}));
    assert_eq!(first["Count"], 11);
    assert_eq!(pages, 3);
}

#[test]
fn consumed_capacity_is_reported_per_page() {
    let sim = StreamSim::start();
    sim.create_table("t", "pk", None);
    // 2 + 1 + 1 + 5000 = 5004 bytes: two read units of 4 KiB.
    sim.put_item("t", json!({"pk": {"S": "a"}, "d": {"S": "y".repeat(5000)}}));
    let total = ddb_ok(
        &sim,
        "Scan",
        json!({"TableName": "t", "ReturnConsumedCapacity": "TOTAL"}),
    );
    assert_eq!(
        total["ConsumedCapacity"],
        json!({"TableName": "t", "CapacityUnits": 1.0})
    );
    let consistent = ddb_ok(
        &sim,
        "Scan",
        json!({"TableName": "t", "ReturnConsumedCapacity": "TOTAL", "ConsistentRead": true}),
    );
    assert_eq!(consistent["ConsumedCapacity"]["CapacityUnits"], 2.0);
    let indexes = ddb_ok(
        &sim,
        "Scan",
        json!({"TableName": "t", "ReturnConsumedCapacity": "INDEXES"}),
    );
    assert_eq!(
        indexes["ConsumedCapacity"],
        json!({"TableName": "t", "CapacityUnits": 1.0, "Table": {"CapacityUnits": 1.0}})
    );
    for none in [
        json!({"TableName": "t", "ReturnConsumedCapacity": "NONE"}),
        json!({"TableName": "t"}),
    ] {
        assert!(ddb_ok(&sim, "Scan", none).get("ConsumedCapacity").is_none());
    }
}

#[test]
fn invalid_scans_are_refused_as_the_service_does() {
    let sim = filled(3, 3);
    let invalid = [
        json!({"TableName": "t", "Segment": 2, "TotalSegments": 2}),
        json!({"TableName": "t", "Segment": 0}),
        json!({"TableName": "t", "TotalSegments": 4}),
        json!({"TableName": "t", "Segment": 0, "TotalSegments": 0}),
        json!({"TableName": "t", "Limit": 0}),
        json!({"TableName": "t", "ReturnConsumedCapacity": "ALL"}),
        json!({"TableName": "t", "FilterExpression": "x = :x"}),
        json!({"TableName": "t", "ExclusiveStartKey": {"pk": {"S": "p0"}}}),
        json!({"TableName": "t", "ExclusiveStartKey": {"pk": {"S": "p0"}, "sk": {"S": "1"}}}),
        json!({"TableName": "t", "ExclusiveStartKey": {"pk": {"S": "p0"}, "sk": {"N": "1"}, "x": {"N": "0"}}}),
        json!({}),
    ];
    for body in invalid {
        let (kind, message) = ddb_err(&sim, "Scan", body.clone());
        assert_eq!(kind, VALIDATION, "{body}: {message}");
        assert!(!message.is_empty());
    }
    let (kind, _) = ddb_err(&sim, "Scan", json!({"TableName": "missing"}));
    assert_eq!(
        kind,
        "com.amazonaws.dynamodb.v20120810#ResourceNotFoundException"
    );

    // A start key from another segment is refused.
    let items = sim.items("t");
    let key = json!({"pk": items[0]["pk"], "sk": items[0]["sk"]});
    let owner = (0..4)
        .find(|s| {
            ddb(&sim, "Scan", json!({"TableName": "t", "Segment": s, "TotalSegments": 4, "ExclusiveStartKey": key})).0 == 200
        })
        .expect("one segment owns the key");
    let other = (owner + 1) % 4;
    let (kind, _) = ddb_err(
        &sim,
        "Scan",
        json!({"TableName": "t", "Segment": other, "TotalSegments": 4, "ExclusiveStartKey": key}),
    );
    assert_eq!(kind, VALIDATION);
}

#[test]
fn scripted_faults_and_call_counts_cover_the_table_operations() {
    let sim = filled(1, 2);
    sim.fail_next(Op::Scan, 1, Fault::Throttle);
    let (kind, _) = ddb_err(&sim, "Scan", json!({"TableName": "t"}));
    assert!(kind.ends_with("#LimitExceededException"));
    assert_eq!(ddb_ok(&sim, "Scan", json!({"TableName": "t"}))["Count"], 2);
    assert_eq!(sim.calls(Op::Scan), 2);

    for (op, name, body) in [
        (
            Op::DescribeContinuousBackups,
            "DescribeContinuousBackups",
            json!({"TableName": "t"}),
        ),
        (
            Op::ExportTableToPointInTime,
            "ExportTableToPointInTime",
            json!({}),
        ),
        (
            Op::DescribeExport,
            "DescribeExport",
            json!({"ExportArn": "x"}),
        ),
    ] {
        sim.fail_next(op, 1, Fault::ServerError);
        assert_eq!(ddb(&sim, name, body).0, 500, "{name}");
        assert_eq!(sim.calls(op), 1, "{name}");
    }
    assert_eq!(canonical(&sim.items("t")).len(), 2);
}
