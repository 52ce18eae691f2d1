//! A capture's changes as the stream simulator takes them, and what a
//! bridge process needs to talk to the simulator.

use std::io::{BufRead, BufReader};
use std::process::Command;

use dynamo_cdc_testkit::streams_sim::StreamSim;
use serde_json::Value;

use crate::Input;

/// One change of a capture.
pub(crate) struct Change {
    op: String,
    keys: Value,
    old: Option<Value>,
    new: Option<Value>,
}

impl Change {
    /// Makes the change readable on its item's shard of `shards`; returns
    /// its sequence number.
    pub(crate) fn put(&self, sim: &StreamSim, arn: &str, shards: &[String]) -> u128 {
        sim.put_json(
            arn,
            &shards[shard_of(&self.keys, shards.len())],
            &self.op,
            self.keys.clone(),
            Some((self.old.clone(), self.new.clone())),
        )
    }
}

/// The first `limit` changes of `input`, in capture order.
pub(crate) fn changes(input: &Input, limit: usize) -> Vec<Change> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&input.dir).expect("capture").flatten() {
        let reader = BufReader::new(std::fs::File::open(entry.path()).expect("capture file"));
        for line in reader.lines() {
            let page: Value = serde_json::from_str(&line.expect("line")).expect("page");
            for record in page["Records"].as_array().into_iter().flatten() {
                if out.len() >= limit {
                    return out;
                }
                let ddb = &record["dynamodb"];
                out.push(Change {
                    op: record["eventName"].as_str().expect("eventName").to_owned(),
                    keys: ddb["Keys"].clone(),
                    old: ddb.get("OldImage").cloned(),
                    new: ddb.get("NewImage").cloned(),
                });
            }
        }
    }
    out
}

/// An item always goes to the same shard, so its changes stay in order.
fn shard_of(keys: &Value, shards: usize) -> usize {
    let text = keys.to_string();
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    (hash % shards as u64) as usize
}

/// Credentials the simulator accepts, and nothing from the machine's own
/// AWS setup.
pub(crate) fn local_credentials(cmd: &mut Command) -> &mut Command {
    cmd.env("AWS_ACCESS_KEY_ID", "bench")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env("AWS_EC2_METADATA_DISABLED", "true")
}
