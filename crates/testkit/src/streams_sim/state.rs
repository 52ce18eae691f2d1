//! The simulated streams: shards, records, iterators, and the answers to
//! each operation as the service words them. Tables, when a test creates
//! them, live here too, so an item and its stream record change together.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::pitr::ExportJob;
use super::plain::PlainTable;
use super::table::{self, Table};

/// A service error: HTTP status, error code, message.
#[derive(Debug)]
pub(crate) struct Fault {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl Fault {
    pub(crate) fn client(code: &'static str, message: impl Into<String>) -> Self {
        Fault {
            status: 400,
            code,
            message: message.into(),
        }
    }

    /// The DynamoDB API's input validation error, which (unlike the Streams
    /// API's) comes from the request validation layer and is named so.
    pub(crate) fn validation(message: impl Into<String>) -> Self {
        Fault::client("com.amazon.coral.validate#ValidationException", message)
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

/// One stream record's content, before it gets its sequence number.
pub(crate) struct Change {
    pub event: String,
    pub keys: Value,
    pub old: Option<Value>,
    pub new: Option<Value>,
    /// `ApproximateCreationDateTime`, in epoch seconds.
    pub created: f64,
    pub size: u64,
}

pub(crate) struct State {
    pub streams: BTreeMap<String, StreamState>,
    /// By table name.
    pub tables: BTreeMap<String, Table>,
    /// Tables created through `CreateTable`, by name.
    pub plain: BTreeMap<String, PlainTable>,
    /// By export ARN.
    pub exports: BTreeMap<String, ExportJob>,
    /// Where exports write their files (the directory standing for S3).
    pub export_root: Option<PathBuf>,
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
            tables: BTreeMap::new(),
            plain: BTreeMap::new(),
            exports: BTreeMap::new(),
            export_root: None,
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

    /// Appends a record to an open shard with the next sequence number, so
    /// numbers grow across every shard and stream.
    ///
    /// # Panics
    /// When the stream or shard does not exist or the shard is closed.
    pub(crate) fn append(&mut self, arn: &str, shard: &str, change: Change) -> u128 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let stream = self.streams.get_mut(arn).expect("stream");
        let sh = stream
            .shards
            .iter_mut()
            .find(|s| s.id == shard)
            .expect("shard");
        assert!(sh.ending.is_none(), "shard {shard} is closed");
        let mut body = json!({
            "ApproximateCreationDateTime": change.created,
            "Keys": change.keys,
            "SequenceNumber": seq.to_string(),
            "SizeBytes": change.size,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        });
        if let Some(new) = change.new {
            body["NewImage"] = new;
        }
        if let Some(old) = change.old {
            body["OldImage"] = old;
        }
        let record = json!({
            "eventID": format!("{seq:x}"),
            "eventName": change.event,
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-1",
            "dynamodb": body,
        });
        sh.records.push((seq, record));
        seq
    }

    /// The open shard that takes writes for a partition-key hash. As in
    /// DynamoDB, shards own ranges of the hash space by lineage: the first
    /// shards split it evenly, a rotation's child takes its parent's range
    /// and a split's children share it. So a key's changes always follow
    /// its shard's lineage, parent before child, which is what keeps them
    /// in order for a reader.
    ///
    /// # Panics
    /// When the stream has no open shard.
    pub(crate) fn shard_for(&self, arn: &str, hash: u64) -> String {
        let stream = self.streams.get(arn).expect("stream");
        let open: Vec<&Shard> = stream
            .shards
            .iter()
            .filter(|s| s.listed && s.ending.is_none())
            .collect();
        assert!(!open.is_empty(), "stream {arn} has no open shard");
        let hash = u128::from(hash);
        open.iter()
            .find(|s| range_of(stream, &s.id).is_some_and(|(lo, hi)| lo <= hash && hash < hi))
            .map_or_else(
                // A lineage the simulator cannot follow: spread evenly.
                || {
                    let at = super::keys::segment_of(hash as u64, open.len() as u64) as usize;
                    open[at].id.clone()
                },
                |s| s.id.clone(),
            )
    }

    /// A table by name or ARN (the DynamoDB API takes either).
    pub(crate) fn table(&self, name_or_arn: &str) -> Option<&Table> {
        self.tables
            .get(name_or_arn)
            .or_else(|| self.tables.values().find(|t| t.arn == name_or_arn))
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
        if let Some(table) = self.table(name) {
            return Ok(table.describe());
        }
        let stream = self
            .streams
            .values()
            .find(|s| s.table == name)
            .ok_or_else(|| table::not_found(name))?;
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
            "KeySchema": self.tables.get(&stream.table).map_or_else(
                || json!([{"AttributeName": "pk", "KeyType": "HASH"}]),
                Table::key_schema,
            ),
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

/// The part of the hash space `[0, 2^64)` a shard owns: the first shards
/// (without a parent) share it evenly, and children share their parent's.
fn range_of(stream: &StreamState, shard: &str) -> Option<(u128, u128)> {
    let me = stream.shards.iter().find(|s| s.id == shard)?;
    let siblings: Vec<&Shard> = stream
        .shards
        .iter()
        .filter(|s| s.parent == me.parent)
        .collect();
    let at = siblings.iter().position(|s| s.id == shard)? as u128;
    let (lo, hi) = match &me.parent {
        None => (0, 1u128 << 64),
        Some(parent) => range_of(stream, parent)?,
    };
    let n = siblings.len() as u128;
    let width = hi - lo;
    Some((lo + width * at / n, lo + width * (at + 1) / n))
}
