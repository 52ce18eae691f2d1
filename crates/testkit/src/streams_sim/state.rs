//! The simulated streams: shards, records, iterators, and the answers to
//! each operation as the service words them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A service error: HTTP status, error code, message.
#[derive(Debug)]
pub(crate) struct Fault {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl Fault {
    fn client(code: &'static str, message: impl Into<String>) -> Self {
        Fault {
            status: 400,
            code,
            message: message.into(),
        }
    }
}

pub(crate) struct Shard {
    pub id: String,
    pub parent: Option<String>,
    /// Report the parent in listings (false scripts incomplete lineage).
    pub show_parent: bool,
    /// Records, oldest first; `trimmed` of them are gone.
    pub records: Vec<(u128, Value)>,
    pub trimmed: usize,
    pub starting: u128,
    pub ending: Option<u128>,
    /// Still listed (false once retention removed the whole shard).
    pub listed: bool,
}

pub(crate) struct StreamState {
    pub arn: String,
    pub table: String,
    pub shards: Vec<Shard>,
}

pub(crate) struct State {
    pub streams: BTreeMap<String, StreamState>,
    pub next_seq: u128,
    pub next_shard: u64,
    pub iterator_ttl: Duration,
    pub describe_page_size: usize,
    pub epoch: Instant,
}

impl State {
    pub(crate) fn new() -> Self {
        State {
            streams: BTreeMap::new(),
            // 21 digits, like the service's.
            next_seq: 100_000_000_000_000_000_000,
            next_shard: 1,
            iterator_ttl: Duration::from_secs(15 * 60),
            describe_page_size: 100,
            epoch: Instant::now(),
        }
    }

    pub(crate) fn new_shard_id(&mut self) -> String {
        let n = self.next_shard;
        self.next_shard += 1;
        format!("shardId-{n:020}-{:08x}", n.wrapping_mul(0x9E37_79B9) as u32)
    }

    pub(crate) fn stream(&self, arn: &str) -> Result<&StreamState, Fault> {
        self.streams.get(arn).ok_or_else(|| {
            Fault::client(
                "ResourceNotFoundException",
                format!("Requested resource not found: Stream: {arn} not found"),
            )
        })
    }

    pub(crate) fn describe_table(&self, body: &Value) -> Result<Value, Fault> {
        let name = body["TableName"].as_str().unwrap_or_default();
        let stream = self
            .streams
            .values()
            .find(|s| s.table == name)
            .ok_or_else(|| {
                Fault::client(
                    "ResourceNotFoundException",
                    format!("Requested resource not found: Table: {name} not found"),
                )
            })?;
        Ok(json!({"Table": {
            "TableName": name,
            "TableStatus": "ACTIVE",
            "LatestStreamArn": stream.arn,
            "LatestStreamLabel": stream.arn.rsplit('/').next(),
            "StreamSpecification": {"StreamEnabled": true, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        }}))
    }

    pub(crate) fn describe_stream(&self, body: &Value) -> Result<Value, Fault> {
        let stream = self.stream(body["StreamArn"].as_str().unwrap_or_default())?;
        let listed: Vec<&Shard> = stream.shards.iter().filter(|s| s.listed).collect();
        let from = match body["ExclusiveStartShardId"].as_str() {
            Some(id) => listed.iter().position(|s| s.id == id).map_or(0, |p| p + 1),
            None => 0,
        };
        let limit = body["Limit"].as_u64().map_or(self.describe_page_size, |l| {
            (l as usize).min(self.describe_page_size)
        });
        let page: Vec<&&Shard> = listed.iter().skip(from).take(limit).collect();
        let shards: Vec<Value> = page
            .iter()
            .map(|s| {
                let mut range = json!({"StartingSequenceNumber": s.starting.to_string()});
                if let Some(end) = s.ending {
                    range["EndingSequenceNumber"] = json!(end.to_string());
                }
                let mut shard = json!({"ShardId": s.id, "SequenceNumberRange": range});
                if let (Some(p), true) = (&s.parent, s.show_parent) {
                    shard["ParentShardId"] = json!(p);
                }
                shard
            })
            .collect();
        let mut description = json!({
            "StreamArn": stream.arn,
            "StreamLabel": stream.arn.rsplit('/').next(),
            "StreamStatus": "ENABLED",
            "StreamViewType": "NEW_AND_OLD_IMAGES",
            "TableName": stream.table,
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            "Shards": shards,
        });
        if from + page.len() < listed.len()
            && let Some(last) = page.last()
        {
            description["LastEvaluatedShardId"] = json!(last.id);
        }
        Ok(json!({ "StreamDescription": description }))
    }

    pub(crate) fn get_shard_iterator(&self, body: &Value) -> Result<Value, Fault> {
        let arn = body["StreamArn"].as_str().unwrap_or_default();
        let stream = self.stream(arn)?;
        let shard_id = body["ShardId"].as_str().unwrap_or_default();
        let (index, shard) = stream
            .shards
            .iter()
            .enumerate()
            .find(|(_, s)| s.id == shard_id && s.listed)
            .ok_or_else(|| {
                Fault::client(
                    "ResourceNotFoundException",
                    format!("Requested resource not found: Shard: {shard_id} not found"),
                )
            })?;
        let seq = || -> Result<u128, Fault> {
            body["SequenceNumber"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| Fault::client("ValidationException", "Invalid SequenceNumber"))
        };
        let position = match body["ShardIteratorType"].as_str().unwrap_or_default() {
            "TRIM_HORIZON" => shard.trimmed,
            "LATEST" => shard.records.len(),
            kind @ ("AT_SEQUENCE_NUMBER" | "AFTER_SEQUENCE_NUMBER") => {
                let seq = seq()?;
                if seq < shard.starting || shard.ending.is_some_and(|e| seq > e) {
                    return Err(Fault::client(
                        "ValidationException",
                        format!("Invalid SequenceNumber {seq} for shard {shard_id}"),
                    ));
                }
                let at = shard.records.partition_point(|(s, _)| *s < seq);
                let position = if kind == "AFTER_SEQUENCE_NUMBER"
                    && shard.records.get(at).is_some_and(|(s, _)| *s == seq)
                {
                    at + 1
                } else {
                    at
                };
                // Records at or after the position were trimmed away.
                if position < shard.trimmed {
                    return Err(Fault::client(
                        "TrimmedDataAccessException",
                        format!(
                            "The requested sequence number {seq} is beyond the trim horizon of shard {shard_id}"
                        ),
                    ));
                }
                position
            }
            other => {
                return Err(Fault::client(
                    "ValidationException",
                    format!("Invalid ShardIteratorType {other}"),
                ));
            }
        };
        let issued = self.epoch.elapsed().as_millis();
        Ok(json!({ "ShardIterator": format!("{issued}|{index}|{position}|{arn}") }))
    }

    pub(crate) fn get_records(&self, body: &Value) -> Result<Value, Fault> {
        let text = body["ShardIterator"].as_str().unwrap_or_default();
        let bad = || Fault::client("ValidationException", "Invalid ShardIterator");
        let mut parts = text.splitn(4, '|');
        let issued: u128 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let index: usize = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let position: usize = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let arn = parts.next().ok_or_else(bad)?;
        if self.epoch.elapsed().as_millis() - issued > self.iterator_ttl.as_millis() {
            return Err(Fault::client(
                "ExpiredIteratorException",
                "Iterator expired. The iterator was created more than 15 minutes ago",
            ));
        }
        let stream = self.stream(arn)?;
        let shard = stream
            .shards
            .get(index)
            .filter(|s| s.listed)
            .ok_or_else(|| {
                Fault::client(
                    "ResourceNotFoundException",
                    "Requested resource not found: Shard",
                )
            })?;
        if position < shard.trimmed {
            return Err(Fault::client(
                "TrimmedDataAccessException",
                format!(
                    "The operation attempted to read past the trim horizon of shard {}",
                    shard.id
                ),
            ));
        }
        let limit = body["Limit"].as_u64().unwrap_or(1000).clamp(1, 1000) as usize;
        let end = (position + limit).min(shard.records.len());
        let records: Vec<&Value> = shard.records[position.min(end)..end]
            .iter()
            .map(|(_, r)| r)
            .collect();
        let mut out = json!({ "Records": records });
        // A closed shard read to its end has no next iterator.
        if !(shard.ending.is_some() && end == shard.records.len()) {
            let now = self.epoch.elapsed().as_millis();
            out["NextShardIterator"] = json!(format!("{now}|{index}|{end}|{arn}"));
        }
        Ok(out)
    }
}
