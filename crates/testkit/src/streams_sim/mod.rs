//! A DynamoDB Streams simulator: an HTTP server on a loopback port that
//! speaks the service's JSON protocol (`X-Amz-Target:
//! DynamoDBStreams_20120810.<Op>`, plus a few `DynamoDB_20120810` calls),
//! so the real SDK client, its retries and its error parsing are exercised.
//!
//! What moto does not model is scripted here: shard rotation and splits,
//! incomplete lineage, iterator expiry, retention trimming, throttling, 5xx
//! bursts and slow answers. Sequence numbers grow across all shards, so a
//! child's records always follow its parent's.
//!
//! A stream can also belong to a simulated table ([`StreamSim::create_table`]):
//! item writes then append their own records, and the table answers
//! `DescribeTable`, `Scan` (segments, paging, capacity),
//! `DescribeContinuousBackups`, `ExportTableToPointInTime` and
//! `DescribeExport`, the export writing DynamoDB's S3 layout into a local
//! directory ([`export`]). Table writes and timestamps use the wall clock.
//!
//! Clients can also create *plain* tables through `CreateTable` (one string
//! hash key, no stream) and use them with `GetItem`, conditional `PutItem`
//! and `DeleteItem`, and `Scan`: a lease table several processes coordinate
//! through. Every call is applied whole under one lock, so concurrent
//! conditional writes are linearizable ([`StreamSim::plain_items`] reads
//! one back). [`Fault::AnswerLost`] applies a write and then loses its
//! answer, for testing what a client does when it cannot know.
//!
//! ```no_run
//! use dynamo_cdc_testkit::streams_sim::{Fault, Op, StreamSim};
//! let sim = StreamSim::start();
//! let arn = sim.create_stream("orders");
//! let shard = sim.open_shards(&arn)[0].clone();
//! sim.put_json(&arn, &shard, "INSERT", serde_json::json!({"pk": {"S": "a"}}), None);
//! sim.fail_next(Op::GetRecords, 3, Fault::Throttle);
//!
//! let stream = sim.create_table("users", "pk", Some("sk"));
//! sim.put_item("users", serde_json::json!({"pk": {"S": "u1"}, "sk": {"N": "1"}}));
//! sim.set_pitr("users", true);
//! sim.set_export_root(std::path::Path::new("/tmp/s3"));
//!
//! // A client created "leases" with CreateTable; its next PutItem is
//! // applied but answered with a 500.
//! sim.fail_next(Op::PutItem, 1, Fault::AnswerLost);
//! ```

mod attr;
mod clock;
mod condition;
pub mod export;
mod keys;
mod pitr;
mod plain;
mod plain_items;
mod scan;
mod server;
mod state;
mod table;
mod table_api;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub use export::{ExportFiles, write_export};
use serde_json::{Value, json};
use server::{Answer, Server};
use state::{Change, Shard, State, StreamState};

/// The operations, for scripting faults and counting calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// `DescribeStream`.
    DescribeStream,
    /// `GetShardIterator`.
    GetShardIterator,
    /// `GetRecords`.
    GetRecords,
    /// `DescribeTable` (the DynamoDB API).
    DescribeTable,
    /// `Scan` (the DynamoDB API).
    Scan,
    /// `ExportTableToPointInTime` (the DynamoDB API).
    ExportTableToPointInTime,
    /// `DescribeExport` (the DynamoDB API).
    DescribeExport,
    /// `DescribeContinuousBackups` (the DynamoDB API).
    DescribeContinuousBackups,
    /// `CreateTable` (the DynamoDB API; plain tables).
    CreateTable,
    /// `GetItem` (the DynamoDB API; plain tables).
    GetItem,
    /// `PutItem` (the DynamoDB API; plain tables).
    PutItem,
    /// `DeleteItem` (the DynamoDB API; plain tables).
    DeleteItem,
}

impl Op {
    fn from_target(target: &str) -> Option<Op> {
        Some(match target {
            "DynamoDBStreams_20120810.DescribeStream" => Op::DescribeStream,
            "DynamoDBStreams_20120810.GetShardIterator" => Op::GetShardIterator,
            "DynamoDBStreams_20120810.GetRecords" => Op::GetRecords,
            "DynamoDB_20120810.DescribeTable" => Op::DescribeTable,
            "DynamoDB_20120810.Scan" => Op::Scan,
            "DynamoDB_20120810.ExportTableToPointInTime" => Op::ExportTableToPointInTime,
            "DynamoDB_20120810.DescribeExport" => Op::DescribeExport,
            "DynamoDB_20120810.DescribeContinuousBackups" => Op::DescribeContinuousBackups,
            "DynamoDB_20120810.CreateTable" => Op::CreateTable,
            "DynamoDB_20120810.GetItem" => Op::GetItem,
            "DynamoDB_20120810.PutItem" => Op::PutItem,
            "DynamoDB_20120810.DeleteItem" => Op::DeleteItem,
            _ => return None,
        })
    }
}

/// A scripted failure for the next calls of an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// HTTP 400 `LimitExceededException`.
    Throttle,
    /// HTTP 500 `InternalServerError`.
    ServerError,
    /// HTTP 503 with a body that is not JSON (a load balancer's page).
    Unavailable,
    /// Answer correctly, but only after this long.
    Slow(Duration),
    /// Apply the call, then answer HTTP 500 `InternalServerError` as if the
    /// answer were lost on the way: the client cannot tell a write that
    /// happened from one that did not (and the SDK retries it).
    AnswerLost,
    /// GetRecords: no records, and the same iterator back, as the service
    /// may answer over a part of a shard short of its records ("it might
    /// take multiple calls to get to a portion of the shard that contains
    /// stream records").
    EmptyPage,
    /// GetRecords: HTTP 400 `ExpiredIteratorException`, whatever the
    /// iterator's age (a service that keeps answering so).
    ExpiredIterator,
    /// DescribeStream: the page asked for, naming as the next page's start
    /// the start it was asked with (a paginator going round in circles); a
    /// first page is answered as it is.
    RepeatCursor,
}

struct Scripted {
    op: Op,
    remaining: usize,
    fault: Fault,
}

#[derive(Default)]
struct Faults {
    scripted: Vec<Scripted>,
    calls: Vec<(Op, usize)>,
}

struct Shared {
    state: Mutex<State>,
    faults: Mutex<Faults>,
}

/// The running simulator; stops when dropped.
pub struct StreamSim {
    shared: Arc<Shared>,
    server: Server,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl StreamSim {
    /// Starts a server on a free loopback port.
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub fn start() -> StreamSim {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new()),
            faults: Mutex::new(Faults::default()),
        });
        let serving = shared.clone();
        // A thread per connection, so a scripted slow answer holds up no
        // other call.
        let server = Server::start(Arc::new(move |request: &server::Request| {
            let target = request.header("X-Amz-Target").unwrap_or_default();
            let text = String::from_utf8_lossy(&request.body);
            let (status, body) = answer(&serving, target, &text);
            let content_type = if status == 503 {
                "text/html"
            } else {
                "application/x-amz-json-1.0"
            };
            Answer {
                status,
                content_type,
                body,
            }
        }));
        StreamSim { shared, server }
    }

    /// `http://127.0.0.1:PORT`, for `endpoint_url`.
    pub fn endpoint_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.port())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.shared.state)
    }

    /// Creates a table's stream with one open shard; returns the stream ARN.
    pub fn create_stream(&self, table: &str) -> String {
        add_stream(&mut self.state(), table)
    }

    /// The listed shards that are still open.
    pub fn open_shards(&self, arn: &str) -> Vec<String> {
        self.with_stream(arn, |s| {
            s.shards
                .iter()
                .filter(|sh| sh.listed && sh.ending.is_none())
                .map(|sh| sh.id.clone())
                .collect()
        })
    }

    /// Every listed shard as `(id, parent, closed)`.
    pub fn shards(&self, arn: &str) -> Vec<(String, Option<String>, bool)> {
        self.with_stream(arn, |s| {
            s.shards
                .iter()
                .filter(|sh| sh.listed)
                .map(|sh| (sh.id.clone(), sh.parent.clone(), sh.ending.is_some()))
                .collect()
        })
    }

    fn with_stream<T>(&self, arn: &str, f: impl FnOnce(&mut StreamState) -> T) -> T {
        let mut st = self.state();
        let stream = st
            .streams
            .get_mut(arn)
            .unwrap_or_else(|| panic!("no stream {arn}"));
        f(stream)
    }

    /// Appends a change to `shard`: `keys` and the images are DynamoDB-JSON
    /// maps (`{"pk": {"S": "a"}}`), taken as they are so that awkward and
    /// invalid values reach the reader. Returns the sequence number.
    ///
    /// # Panics
    /// When the stream or shard does not exist or the shard is closed.
    pub fn put_json(
        &self,
        arn: &str,
        shard: &str,
        op: &str,
        keys: Value,
        images: Option<(Option<Value>, Option<Value>)>,
    ) -> u128 {
        // The wall clock, as the service's: a latest start compares it.
        self.put_json_created(arn, shard, op, keys, images, clock::now_secs())
    }

    /// As [`Self::put_json`], created at `created` (epoch seconds) instead
    /// of now: a change made before something the test starts.
    ///
    /// # Panics
    /// When the stream or shard does not exist or the shard is closed.
    pub fn put_json_created(
        &self,
        arn: &str,
        shard: &str,
        op: &str,
        keys: Value,
        images: Option<(Option<Value>, Option<Value>)>,
        created: f64,
    ) -> u128 {
        let mut st = self.state();
        let (old, new) = images.unwrap_or((None, None));
        let new = new
            .or_else(|| (op != "REMOVE").then(|| keys.clone()))
            .filter(|_| op != "REMOVE");
        let old = old
            .or_else(|| (op != "INSERT").then(|| keys.clone()))
            .filter(|_| op != "INSERT");
        let change = Change {
            event: op.to_owned(),
            keys,
            old,
            new,
            created,
            size: 100,
        };
        st.append(arn, shard, change)
    }

    /// Every record written so far (trimmed ones included), as
    /// `(shard, sequence number, eventName, Keys JSON)`, per shard in order.
    pub fn records(&self, arn: &str) -> Vec<(String, u128, String, String)> {
        self.with_stream(arn, |s| {
            s.shards
                .iter()
                .flat_map(|sh| {
                    sh.records.iter().map(|(seq, r)| {
                        (
                            sh.id.clone(),
                            *seq,
                            r["eventName"].as_str().unwrap_or_default().to_owned(),
                            r["dynamodb"]["Keys"].to_string(),
                        )
                    })
                })
                .collect()
        })
    }

    /// Closes `shard` and opens one child: a rotation. Returns the child.
    pub fn rotate(&self, arn: &str, shard: &str) -> String {
        self.split_into(arn, shard, 1, true).remove(0)
    }

    /// Closes `shard` and opens two children: a split. Returns them.
    pub fn split(&self, arn: &str, shard: &str) -> (String, String) {
        let mut kids = self.split_into(arn, shard, 2, true);
        let b = kids.pop().expect("two children");
        (kids.pop().expect("two children"), b)
    }

    /// Opens children of `shard` while it stays open and is listed as such:
    /// lineage reported before the parent closes.
    pub fn add_children_early(&self, arn: &str, shard: &str, n: usize) -> Vec<String> {
        self.split_into(arn, shard, n, false)
    }

    /// Closes a shard that was opened early with [`Self::add_children_early`].
    pub fn close(&self, arn: &str, shard: &str) {
        let mut st = self.state();
        let last = st.next_seq.saturating_sub(1);
        let stream = st.streams.get_mut(arn).expect("stream");
        let sh = stream
            .shards
            .iter_mut()
            .find(|s| s.id == shard)
            .expect("shard");
        sh.ending = Some(sh.records.last().map_or(last, |(s, _)| *s));
    }

    fn split_into(&self, arn: &str, shard: &str, n: usize, close: bool) -> Vec<String> {
        let mut st = self.state();
        let ids: Vec<String> = (0..n).map(|_| st.new_shard_id()).collect();
        let starting = st.next_seq;
        let stream = st.streams.get_mut(arn).expect("stream");
        let parent = stream
            .shards
            .iter_mut()
            .find(|s| s.id == shard)
            .expect("shard");
        if close {
            parent.ending = Some(parent.records.last().map_or(starting - 1, |(s, _)| *s));
        }
        for id in &ids {
            stream
                .shards
                .push(new_shard(id.clone(), Some(shard.to_owned()), starting));
        }
        ids
    }

    /// Hides `shard`'s parent id from listings: incomplete lineage.
    pub fn hide_parent(&self, arn: &str, shard: &str) {
        self.with_stream(arn, |s| {
            if let Some(sh) = s.shards.iter_mut().find(|sh| sh.id == shard) {
                sh.show_parent = false;
            }
        });
    }

    /// Retention: drops the oldest `n` records of `shard`.
    pub fn trim(&self, arn: &str, shard: &str, n: usize) {
        self.with_stream(arn, |s| {
            let sh = s
                .shards
                .iter_mut()
                .find(|sh| sh.id == shard)
                .expect("shard");
            sh.trimmed = (sh.trimmed + n).min(sh.records.len());
        });
    }

    /// Retention: the whole shard is gone from listings and calls.
    pub fn remove_shard(&self, arn: &str, shard: &str) {
        self.with_stream(arn, |s| {
            if let Some(sh) = s.shards.iter_mut().find(|sh| sh.id == shard) {
                sh.listed = false;
            }
        });
    }

    /// Iterators older than this are answered with `ExpiredIteratorException`
    /// (the service: 15 minutes).
    pub fn set_iterator_ttl(&self, ttl: Duration) {
        self.state().iterator_ttl = ttl;
    }

    /// At most this many shards per DescribeStream page.
    pub fn set_describe_page_size(&self, n: usize) {
        self.state().describe_page_size = n.max(1);
    }

    /// The next `n` calls of `op` meet `fault`.
    pub fn fail_next(&self, op: Op, n: usize, fault: Fault) {
        lock(&self.shared.faults).scripted.push(Scripted {
            op,
            remaining: n,
            fault,
        });
    }

    /// Drops every scripted fault not yet met.
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).scripted.clear();
    }

    /// How many calls of `op` arrived (faulted ones included).
    pub fn calls(&self, op: Op) -> usize {
        lock(&self.shared.faults)
            .calls
            .iter()
            .find(|(o, _)| *o == op)
            .map_or(0, |(_, n)| *n)
    }
}

fn add_stream(st: &mut State, table: &str) -> String {
    let arn = format!(
        "arn:aws:dynamodb:us-east-1:123456789012:table/{table}/stream/2026-01-01T00:00:00.000"
    );
    let id = st.new_shard_id();
    let starting = st.next_seq;
    st.streams.insert(
        arn.clone(),
        StreamState {
            arn: arn.clone(),
            table: table.to_owned(),
            shards: vec![new_shard(id, None, starting)],
        },
    );
    arn
}

fn new_shard(id: String, parent: Option<String>, starting: u128) -> Shard {
    Shard {
        id,
        parent,
        show_parent: true,
        records: Vec::new(),
        trimmed: 0,
        starting,
        ending: None,
        listed: true,
    }
}

fn answer(shared: &Shared, target: &str, text: &str) -> (u16, String) {
    let Some(op) = Op::from_target(target) else {
        return error(
            400,
            "UnknownOperationException",
            &format!("unknown target {target}"),
        );
    };
    let fault = {
        let mut faults = lock(&shared.faults);
        match faults.calls.iter_mut().find(|(o, _)| *o == op) {
            Some((_, n)) => *n += 1,
            None => faults.calls.push((op, 1)),
        }
        let fault = faults
            .scripted
            .iter_mut()
            .find(|s| s.op == op && s.remaining > 0)
            .map(|s| {
                s.remaining -= 1;
                s.fault
            });
        faults.scripted.retain(|s| s.remaining > 0);
        fault
    };
    match fault {
        Some(Fault::Throttle) => {
            return error(400, "LimitExceededException", "Rate exceeded for shard");
        }
        Some(Fault::ServerError) => {
            return error(500, "InternalServerError", "Internal server error");
        }
        Some(Fault::Unavailable) => {
            return (503, "<html><body>Service Unavailable</body></html>".into());
        }
        Some(Fault::ExpiredIterator) => {
            return error(
                400,
                "ExpiredIteratorException",
                "Iterator expired. The iterator was created more than 15 minutes ago",
            );
        }
        Some(Fault::Slow(d)) => std::thread::sleep(d),
        Some(Fault::EmptyPage) => {
            let body: Value = serde_json::from_str(text).unwrap_or(Value::Null);
            return (
                200,
                json!({"Records": [], "NextShardIterator": body["ShardIterator"]}).to_string(),
            );
        }
        Some(Fault::AnswerLost | Fault::RepeatCursor) | None => {}
    }
    let body: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    // The whole call runs under this one lock: what makes plain tables'
    // conditional writes linearizable.
    let mut st = lock(&shared.state);
    let result = match op {
        Op::DescribeStream => st.describe_stream(&body),
        Op::GetShardIterator => st.get_shard_iterator(&body),
        Op::GetRecords => st.get_records(&body),
        // A plain table by that name answers, else the scripted ones.
        Op::DescribeTable => match plain::find(&st, &body) {
            Some(t) => Ok(json!({ "Table": t.describe() })),
            None => st.describe_table(&body),
        },
        Op::Scan => match plain::find(&st, &body) {
            Some(t) => plain_items::scan(t, &body),
            None => scan::scan(&st, &body),
        },
        Op::ExportTableToPointInTime => pitr::export_table(&mut st, &body),
        Op::DescribeExport => pitr::describe_export(&mut st, &body),
        Op::DescribeContinuousBackups => pitr::describe_continuous_backups(&st, &body),
        Op::CreateTable => plain::create_table(&mut st, &body),
        Op::GetItem => plain_items::get_item(&st, &body),
        Op::PutItem => plain_items::put_item(&mut st, &body),
        Op::DeleteItem => plain_items::delete_item(&mut st, &body),
    };
    drop(st);
    if fault == Some(Fault::AnswerLost) {
        return error(500, "InternalServerError", "Internal server error");
    }
    match result {
        Ok(mut v) => {
            // A first page has no start to repeat: answered as it is.
            if fault == Some(Fault::RepeatCursor) && body["ExclusiveStartShardId"].is_string() {
                v["StreamDescription"]["LastEvaluatedShardId"] =
                    body["ExclusiveStartShardId"].clone();
            }
            (200, v.to_string())
        }
        Err(f) => error(f.status, f.code, &f.message),
    }
}

fn error(status: u16, code: &str, message: &str) -> (u16, String) {
    // A code that names its own namespace keeps it.
    let kind = if code.contains('#') {
        code.to_owned()
    } else {
        format!("com.amazonaws.dynamodb.v20120810#{code}")
    };
    (
        status,
        json!({"__type": kind, "message": message}).to_string(),
    )
}
