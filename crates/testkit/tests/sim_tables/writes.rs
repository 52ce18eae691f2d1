//! Table writes, their stream records, and the table's description.

use std::collections::BTreeMap;

use dynamo_cdc_testkit::streams_sim::StreamSim;
use serde_json::{Value, json};

use crate::http::{ddb, ddb_ok, now, stream_records};

fn item(pk: &str, sk: i64, v: &str) -> Value {
    json!({"pk": {"S": pk}, "sk": {"N": sk.to_string()}, "v": {"S": v}})
}

#[test]
fn put_and_delete_append_the_matching_records() {
    let sim = StreamSim::start();
    let arn = sim.create_table("orders", "pk", Some("sk"));
    let before = now();
    let s1 = sim.put_item("orders", item("a", 1, "first"));
    let s2 = sim.put_item("orders", item("a", 1, "second"));
    let s3 = sim.delete_item("orders", json!({"pk": {"S": "a"}, "sk": {"N": "1"}}));
    assert_eq!(
        sim.delete_item("orders", json!({"pk": {"S": "a"}, "sk": {"N": "1"}})),
        None,
        "deleting a missing item writes no record"
    );
    let after = now();
    let s3 = s3.expect("a record for the delete");
    assert!(s1 < s2 && s2 < s3);
    assert!(sim.items("orders").is_empty());

    let records = stream_records(&sim, &arn);
    let events: Vec<&str> = records
        .iter()
        .map(|(_, r)| r["eventName"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["INSERT", "MODIFY", "REMOVE"]);
    let keys = json!({"pk": {"S": "a"}, "sk": {"N": "1"}});
    for (i, (_, r)) in records.iter().enumerate() {
        let d = &r["dynamodb"];
        assert_eq!(d["Keys"], keys);
        assert_eq!(d["StreamViewType"], "NEW_AND_OLD_IMAGES");
        assert_eq!(d["SequenceNumber"], [s1, s2, s3][i].to_string());
        let created = d["ApproximateCreationDateTime"].as_f64().unwrap();
        assert!(
            created >= before - 0.001 && created <= after + 0.001,
            "{created}"
        );
    }
    let (insert, modify, remove) = (
        &records[0].1["dynamodb"],
        &records[1].1["dynamodb"],
        &records[2].1["dynamodb"],
    );
    assert_eq!(insert["NewImage"], item("a", 1, "first"));
    assert!(insert.get("OldImage").is_none());
    assert_eq!(modify["OldImage"], item("a", 1, "first"));
    assert_eq!(modify["NewImage"], item("a", 1, "second"));
    assert_eq!(remove["OldImage"], item("a", 1, "second"));
    assert!(remove.get("NewImage").is_none());
}

#[test]
fn a_key_keeps_its_open_shard_while_shards_do_not_change() {
    let sim = StreamSim::start();
    let arn = sim.create_table("t", "pk", None);
    let root = sim.open_shards(&arn)[0].clone();
    let (left, right) = sim.split(&arn, &root);
    for round in 0..3 {
        for k in 0..40 {
            sim.put_item(
                "t",
                json!({"pk": {"S": format!("k{k}")}, "round": {"N": round.to_string()}}),
            );
        }
    }
    let mut shard_of: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (shard, r) in stream_records(&sim, &arn) {
        let key = r["dynamodb"]["Keys"]["pk"]["S"]
            .as_str()
            .unwrap()
            .to_owned();
        shard_of.entry(key).or_default().push(shard);
    }
    assert_eq!(shard_of.len(), 40);
    for (key, shards) in &shard_of {
        assert_eq!(shards.len(), 3);
        assert!(shards.iter().all(|s| *s == shards[0]), "{key}: {shards:?}");
        assert_ne!(shards[0], root, "the closed parent takes no writes");
    }
    let used: std::collections::BTreeSet<&String> = shard_of.values().map(|s| &s[0]).collect();
    assert_eq!(used.len(), 2, "both children take writes");

    // After a rotation, writes only go to shards that are open.
    let child = sim.rotate(&arn, &left);
    for k in 0..40 {
        sim.put_item(
            "t",
            json!({"pk": {"S": format!("k{k}")}, "round": {"N": "9"}}),
        );
    }
    let later: Vec<String> = stream_records(&sim, &arn)
        .into_iter()
        .filter(|(_, r)| r["dynamodb"]["NewImage"]["round"]["N"] == "9")
        .map(|(s, _)| s)
        .collect();
    assert_eq!(later.len(), 40);
    assert!(later.iter().all(|s| *s == child || *s == right));
}

#[test]
fn describe_table_answers_like_the_service() {
    let sim = StreamSim::start();
    let before = now();
    let arn = sim.create_table("orders", "pk", Some("sk"));
    sim.put_item("orders", item("a", 1, "x"));
    sim.put_item("orders", item("b", 2, "y"));
    let out = ddb_ok(&sim, "DescribeTable", json!({"TableName": "orders"}));
    let t = &out["Table"];
    assert_eq!(t["TableName"], "orders");
    assert_eq!(
        t["TableArn"],
        "arn:aws:dynamodb:us-east-1:123456789012:table/orders"
    );
    assert_eq!(t["TableStatus"], "ACTIVE");
    assert_eq!(
        t["KeySchema"],
        json!([{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}])
    );
    assert_eq!(
        t["AttributeDefinitions"],
        json!([{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "N"}])
    );
    assert_eq!(t["ItemCount"], 2);
    // pk 2+1, sk 2+2, v 1+1 per item.
    assert_eq!(t["TableSizeBytes"], 18);
    assert_eq!(
        t["StreamSpecification"],
        json!({"StreamEnabled": true, "StreamViewType": "NEW_AND_OLD_IMAGES"})
    );
    assert_eq!(t["LatestStreamArn"], arn.as_str());
    assert_eq!(t["LatestStreamLabel"], arn.rsplit('/').next().unwrap());
    let created = t["CreationDateTime"].as_f64().unwrap();
    assert!(created >= before - 0.001 && created <= now() + 0.001);

    // The table's stream reports the table's key schema.
    let (_, stream) = crate::http::call(
        &sim,
        "DynamoDBStreams_20120810.DescribeStream",
        json!({"StreamArn": arn}),
    );
    assert_eq!(stream["StreamDescription"]["KeySchema"], t["KeySchema"]);

    // The table can be named by its ARN too; unknown tables are not found.
    let by_arn = ddb_ok(&sim, "DescribeTable", json!({"TableName": t["TableArn"]}));
    assert_eq!(by_arn["Table"]["TableName"], "orders");
    let (status, err) = ddb(&sim, "DescribeTable", json!({"TableName": "nope"}));
    assert_eq!(status, 400);
    assert!(
        err["__type"]
            .as_str()
            .unwrap()
            .ends_with("#ResourceNotFoundException")
    );
}

#[test]
fn describe_table_of_a_plain_stream_is_unchanged() {
    let sim = StreamSim::start();
    let arn = sim.create_stream("legacy");
    let out = ddb_ok(&sim, "DescribeTable", json!({"TableName": "legacy"}));
    assert_eq!(
        out,
        json!({"Table": {
            "TableName": "legacy",
            "TableStatus": "ACTIVE",
            "LatestStreamArn": arn,
            "LatestStreamLabel": arn.rsplit('/').next(),
            "StreamSpecification": {"StreamEnabled": true, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        }})
    );
}

#[test]
fn writes_from_another_thread_while_scans_are_served() {
    let sim = StreamSim::start();
    let arn = sim.create_table("busy", "pk", None);
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            for k in 0..300 {
                sim.put_item("busy", json!({"pk": {"S": format!("k{k}")}}));
            }
        });
        while !writer.is_finished() {
            let page = ddb_ok(&sim, "Scan", json!({"TableName": "busy", "Limit": 50}));
            assert!(page["Count"].as_u64().unwrap() <= 50);
        }
    });
    let all = ddb_ok(&sim, "Scan", json!({"TableName": "busy"}));
    assert_eq!(all["Count"], 300);
    assert_eq!(stream_records(&sim, &arn).len(), 300);
}
