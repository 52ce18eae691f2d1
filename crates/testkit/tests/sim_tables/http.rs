//! Plain JSON-protocol calls to the simulator, and reading a stream back.

use dynamo_cdc_testkit::streams_sim::StreamSim;
use serde_json::{Value, json};

/// Calls `DynamoDB_20120810.<op>`; the status and the parsed body.
pub(crate) fn ddb(sim: &StreamSim, op: &str, body: Value) -> (u16, Value) {
    call(sim, &format!("DynamoDB_20120810.{op}"), body)
}

/// As [`ddb`], for a call that must succeed.
pub(crate) fn ddb_ok(sim: &StreamSim, op: &str, body: Value) -> Value {
    let (status, out) = ddb(sim, op, body);
    assert_eq!(status, 200, "{op}: {out}");
    out
}

/// The error type (`__type` after its namespace) of a call that must fail
/// with HTTP 400.
pub(crate) fn ddb_err(sim: &StreamSim, op: &str, body: Value) -> (String, String) {
    let (status, out) = ddb(sim, op, body);
    assert_eq!(status, 400, "{op}: {out}");
    let kind = out["__type"].as_str().expect("__type").to_owned();
    (kind, out["message"].as_str().unwrap_or_default().to_owned())
}

pub(crate) fn call(sim: &StreamSim, target: &str, body: Value) -> (u16, Value) {
    // The errors are the point of many calls, so statuses are not errors.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .post(&sim.endpoint_url())
        .header("X-Amz-Target", target)
        .header("Content-Type", "application/x-amz-json-1.0")
        .send(body.to_string())
        .expect("the simulator answers");
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().expect("a body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Every record of a stream as `(shard, record)`, read from each shard's
/// trim horizon through DescribeStream, GetShardIterator and GetRecords.
pub(crate) fn stream_records(sim: &StreamSim, arn: &str) -> Vec<(String, Value)> {
    let streams = |op: &str, body: Value| {
        let (status, out) = call(sim, &format!("DynamoDBStreams_20120810.{op}"), body);
        assert_eq!(status, 200, "{op}: {out}");
        out
    };
    let description = streams("DescribeStream", json!({"StreamArn": arn}));
    let mut out = Vec::new();
    for shard in description["StreamDescription"]["Shards"]
        .as_array()
        .unwrap()
    {
        let id = shard["ShardId"].as_str().unwrap();
        let iterator = streams(
            "GetShardIterator",
            json!({"StreamArn": arn, "ShardId": id, "ShardIteratorType": "TRIM_HORIZON"}),
        );
        let mut next = iterator["ShardIterator"].clone();
        while let Some(it) = next.as_str() {
            let page = streams("GetRecords", json!({"ShardIterator": it}));
            let records = page["Records"].as_array().unwrap();
            if records.is_empty() {
                break;
            }
            out.extend(records.iter().map(|r| (id.to_owned(), r.clone())));
            next = page["NextShardIterator"].clone();
        }
    }
    out
}

/// A JSON value's text with map keys sorted: equal items compare equal.
pub(crate) fn canonical(items: &[Value]) -> Vec<String> {
    let mut texts: Vec<String> = items.iter().map(Value::to_string).collect();
    texts.sort();
    texts
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}
