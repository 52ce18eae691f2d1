//! Initial snapshots end to end on real servers: a moto server (DynamoDB and
//! its stream) and a tansu broker (a separate Kafka-protocol process). A
//! table pre-filled with awkward items through the AWS SDK is snapshotted
//! into Parquet and Kafka (JSON envelope) while a writer keeps putting,
//! updating and deleting items across the whole key space, and the binary
//! is killed with SIGKILL several times during the scan, the first time
//! right after it recorded a page in its journal (before the sinks had the
//! page's rows). Afterwards, against a final Scan of the table:
//!
//! - the state rebuilt from Parquet (the newest change after S0, else the
//!   snapshot row) equals the table;
//! - the state from Kafka (the last message of each key) equals the table;
//! - each key has at most one snapshot row in either sink, Kafka carries
//!   exactly one `first` marker, and no snapshot row follows, in its
//!   partition, a change of its key made after the row was read;
//! - snapshot rows are in the snapshot's own Parquet files, and the
//!   announcement `_snapshots/<table>/<id>.json` says the scan was still
//!   running after the kills and finished after the last run.
//!
//! It needs `tansu` and `moto_server`; `scripts/test.sh` installs both and
//! runs it. `DYNAMO_CDC_TANSU` and `DYNAMO_CDC_MOTO_SERVER` name the
//! binaries when they are not on the usual paths.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arrow_array::Array;
use arrow_array::cast::AsArray;
use aws_sdk_dynamodb::types::{AttributeValue as Av, PutRequest, WriteRequest};
use aws_smithy_types::Blob;
use base64::Engine as _;
use dynamo_cdc_core::{AttributeValue, Item, parse_item};
use dynamo_cdc_tests::kafka::read_topic;
use dynamo_cdc_tests::servers::{Storage, Tansu, create_table, dynamodb, start_moto};
use dynamo_cdc_tests::snapshots::{
    Rebuilt, announced, plain_item, rebuild, string_key, wait_at_most,
};
use dynamo_cdc_tests::{Scratch, parquet_files, read_file, read_rows, run_command};
use serde_json::{Value, json};

const TABLE: &str = "snap_orders";
const TOPIC: &str = "cdc.snap_orders";
const PARTITIONS: i32 = 3;
const PREFILLED: usize = 3_000;
/// Keys the writer creates beyond the pre-filled ones.
const NEW_KEYS: usize = 100;
const SEGMENTS: u32 = 4;
/// Read capacity per second for the scan in the killed runs.
///
/// On DynamoDB a Scan page costs half a unit per 4 KiB read: the table
/// below holds about 3 000 × 3.3 KB ≈ 10 MB, about 1 200 units, so one
/// unit a second would take 20 minutes. moto charges one unit
/// per page whatever its size, so here the budget counts pages. A run that
/// does not know the average item size yet (moto reports a table size of
/// 0) asks for pages of 1 000 items, which moto cuts at 1 MB (about 300 of
/// these items, three pages per segment, twelve in all): four at once,
/// then one a second from the fourth second, so its last page is asked for
/// 11 s after the scan started, and handed over 3 s after its answer at
/// the earliest (a page is held until the stream is read 3 s past it).
/// Once a page is handed over the average is known and pages shrink to
/// about one second of a segment's share, 10 items (the floor) for items
/// this large: 10 items a second.
const MAX_RCU: u32 = 1;
/// The budget of the last run: still 10-item pages (the binary sizes items
/// by their JSON, about 5.6 KB here), but 20 a second, so that it finishes
/// what the killed runs left within seconds, not minutes.
const LAST_MAX_RCU: u32 = 20;
/// How long the killed runs after the first live. The first one is killed
/// as soon as it has recorded a page in its journal, before every sink had
/// the page's rows: the crash the journal is there for. Before its first
/// read a run records S0 by reading the whole stream to its end, several
/// seconds on moto for the pre-filled items' records and the writer's. None
/// lives long enough to hand over the whole table, 14 s after the scan
/// started at the earliest (the later ones know the average item size from
/// the first one's page, and read 10 items a second).
const LATER_ROUNDS_MS: [u64; 3] = [4_000, 5_000, 6_000];
/// How long the first run may take to record S0 and a page.
const FIRST_PAGE_LIMIT: Duration = Duration::from_secs(120);

fn key(i: usize) -> String {
    format!("k{i:05} ✓")
}

/// An item with awkward values, as DynamoDB JSON: long decimals (at most
/// 38 significant digits), quotes, newlines and non-ASCII text, an empty
/// string, nested maps and lists, sets of every kind, bytes, booleans and
/// NULL. The long text makes items about 3.3 KB, so that a Scan page of a
/// segment stops at 1 MB, not at the end of the segment.
fn awkward(i: usize, version: u32) -> Value {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    json!({
        "pk": {"S": key(i)},
        "v": {"N": version.to_string()},
        "price": {"N": format!("{i}.000000000000000000000000000000{}", 1 + i % 9)},
        "big": {"N": format!("-1234567890123456789012345678901234{:04}", i % 10_000)},
        "tiny": {"N": "1E-130"},
        "huge": {"N": "9.9E+125"},
        "note": {"S": format!("line \"{i}\"\nnext\t✓ 'single' \\ back\u{1F600}")},
        "long": {"S": format!("{i}:{}", "Ωmega \"q\"\n—".repeat(180 + i % 40))},
        "empty": {"S": ""},
        "flag": {"BOOL": i.is_multiple_of(2)},
        "nested": {"M": {
            "list": {"L": [{"N": "-0.5"}, {"BOOL": true}, {"NULL": true}, {"S": ""},
                           {"L": [{"SS": ["x", "y"]}]}]},
            "deep": {"M": {"x": {"S": "é\"\n"}, "n": {"N": "0.000000000000000000000000000000000001"}}},
        }},
        "tags": {"SS": ["b", "a", format!("t{}", i % 7), "ü \"q\""]},
        "nums": {"NS": ["1", "10", "-3.25", "12345678901234567890123456789012345678"]},
        "blobs": {"BS": [b64(&[0]), b64(&[255, 0, i as u8]), b64(b"\"\n")]},
        "bytes": {"B": b64(&[0u8, 255, i as u8, (i >> 8) as u8])},
        "nothing": {"NULL": true},
    })
}

/// DynamoDB JSON to the SDK's value.
fn to_sdk(v: &Value) -> Av {
    let (tag, inner) = v.as_object().unwrap().iter().next().unwrap();
    let bytes = |s: &Value| {
        Blob::new(
            base64::engine::general_purpose::STANDARD
                .decode(s.as_str().unwrap())
                .unwrap(),
        )
    };
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    match tag.as_str() {
        "S" => Av::S(inner.as_str().unwrap().to_owned()),
        "N" => Av::N(inner.as_str().unwrap().to_owned()),
        "B" => Av::B(bytes(inner)),
        "BOOL" => Av::Bool(inner.as_bool().unwrap()),
        "NULL" => Av::Null(true),
        "SS" => Av::Ss(strings(inner)),
        "NS" => Av::Ns(strings(inner)),
        "BS" => Av::Bs(inner.as_array().unwrap().iter().map(bytes).collect()),
        "L" => Av::L(inner.as_array().unwrap().iter().map(to_sdk).collect()),
        "M" => Av::M(
            inner
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), to_sdk(v)))
                .collect(),
        ),
        other => panic!("not a DynamoDB JSON type: {other}"),
    }
}

fn to_sdk_item(item: &Value) -> std::collections::HashMap<String, Av> {
    item.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), to_sdk(v)))
        .collect()
}

/// The SDK's value as DynamoDB JSON.
fn from_sdk(v: &Av) -> Value {
    let b64 = |b: &Blob| Value::String(base64::engine::general_purpose::STANDARD.encode(b));
    match v {
        Av::S(s) => json!({"S": s}),
        Av::N(n) => json!({"N": n}),
        Av::B(b) => json!({"B": b64(b)}),
        Av::Bool(b) => json!({"BOOL": b}),
        Av::Null(_) => json!({"NULL": true}),
        Av::Ss(v) => json!({"SS": v}),
        Av::Ns(v) => json!({"NS": v}),
        Av::Bs(v) => json!({"BS": v.iter().map(b64).collect::<Vec<_>>()}),
        Av::L(v) => json!({"L": v.iter().map(from_sdk).collect::<Vec<_>>()}),
        Av::M(m) => {
            json!({"M": m.iter().map(|(k, v)| (k.clone(), from_sdk(v))).collect::<serde_json::Map<_, _>>()})
        }
        other => panic!("an attribute type this test does not write: {other:?}"),
    }
}

fn key_of(item: &Item) -> String {
    string_key(item, "pk")
}

/// Writes every pre-filled item, 25 to a BatchWriteItem call.
async fn prefill(db: &aws_sdk_dynamodb::Client) {
    let items: Vec<Value> = (0..PREFILLED).map(|i| awkward(i, 0)).collect();
    for chunk in items.chunks(25) {
        let mut requests: Vec<WriteRequest> = chunk
            .iter()
            .map(|item| {
                WriteRequest::builder()
                    .put_request(
                        PutRequest::builder()
                            .set_item(Some(to_sdk_item(item)))
                            .build()
                            .unwrap(),
                    )
                    .build()
            })
            .collect();
        // Whatever the server did not process is sent again.
        while !requests.is_empty() {
            let out = db
                .batch_write_item()
                .request_items(TABLE, requests)
                .send()
                .await
                .expect("BatchWriteItem on moto");
            requests = out
                .unprocessed_items()
                .and_then(|u| u.get(TABLE))
                .cloned()
                .unwrap_or_default();
        }
    }
}

/// Changes items every `pace` until stopped: puts of existing and new
/// keys, updates (one attribute set, another removed), deletes. The keys
/// walk the whole key space (7919 is prime to 3 000), so the changes meet
/// every segment of the scan, before and after its pages. Returns how many
/// changes it made.
async fn write_changes(db: aws_sdk_dynamodb::Client, pace: Duration, stop: Arc<AtomicBool>) -> u32 {
    let mut n = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let i = (n as usize * 7_919) % PREFILLED;
        let result = match n % 10 {
            9 => db
                .delete_item()
                .table_name(TABLE)
                .key("pk", Av::S(key(i)))
                .send()
                .await
                .map(drop)
                .map_err(|e| format!("{e:?}")),
            7 | 8 => db
                .update_item()
                .table_name(TABLE)
                .key("pk", Av::S(key(i)))
                .update_expression("SET v = :v, note = :note REMOVE tags")
                .expression_attribute_values(":v", Av::N(format!("{n}.25")))
                .expression_attribute_values(":note", Av::S(format!("updated \"{n}\"\n✓")))
                .send()
                .await
                .map(drop)
                .map_err(|e| format!("{e:?}")),
            6 => db
                .put_item()
                .table_name(TABLE)
                .set_item(Some(to_sdk_item(&awkward(
                    PREFILLED + n as usize % NEW_KEYS,
                    n,
                ))))
                .send()
                .await
                .map(drop)
                .map_err(|e| format!("{e:?}")),
            _ => db
                .put_item()
                .table_name(TABLE)
                .set_item(Some(to_sdk_item(&awkward(i, n))))
                .send()
                .await
                .map(drop)
                .map_err(|e| format!("{e:?}")),
        };
        result.expect("write to moto");
        n += 1;
        tokio::time::sleep(pace).await;
    }
    n
}

/// Every item of the table, by key (a consistent Scan).
async fn table_now(db: &aws_sdk_dynamodb::Client) -> BTreeMap<String, Item> {
    let mut out = BTreeMap::new();
    let mut start = None;
    loop {
        let page = db
            .scan()
            .table_name(TABLE)
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("Scan on moto");
        for item in page.items() {
            let json: serde_json::Map<String, Value> =
                item.iter().map(|(k, v)| (k.clone(), from_sdk(v))).collect();
            let item = parse_item(&Value::Object(json).to_string(), "item").unwrap();
            out.insert(key_of(&item), item);
        }
        match page.last_evaluated_key() {
            Some(last) => start = Some(last.clone()),
            None => return out,
        }
    }
}

/// The killed runs' log lines about the snapshot and their last lines, to
/// show where each run stood.
fn snapshot_lines(dir: &Path) -> String {
    let mut out = String::new();
    for round in 0..=LATER_ROUNDS_MS.len() {
        out.push_str(&format!("-- run {round}\n"));
        let log =
            std::fs::read_to_string(dir.join(format!("round-{round}.log"))).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines.len().saturating_sub(5);
        for (i, line) in lines.iter().enumerate() {
            if i >= tail || line.contains("snapshot") {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// How `got` differs from `want`, attribute by attribute.
fn difference(got: Option<&Item>, want: &Item) -> String {
    let Some(got) = got else {
        return "absent".to_owned();
    };
    let names: BTreeSet<String> = got
        .keys()
        .chain(want.keys())
        .map(|k| k.to_string())
        .collect();
    names
        .into_iter()
        .filter(|n| got.get(n) != want.get(n))
        .map(|n| format!("{n}: got {:?}, want {:?}", got.get(&n), want.get(&n)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Whether the journal (`<table>/<id>/seg-<segment>-<page>.json` below
/// the journal's root) holds a page.
fn journal_has_a_page(table_dir: &Path) -> bool {
    let Ok(snapshots) = std::fs::read_dir(table_dir) else {
        return false;
    };
    snapshots.flatten().any(|id| {
        std::fs::read_dir(id.path()).is_ok_and(|pages| {
            pages.flatten().any(|p| {
                let name = p.file_name().to_string_lossy().into_owned();
                name.starts_with("seg-") && name.ends_with(".json")
            })
        })
    })
}

/// Snapshot rows are in the snapshot's own files (`snapshot-<id>-...`),
/// with its id in `__snapshot_id` and a marker in `__snapshot`: one
/// `first`, at most one `last`, `true` for the rest; other files hold no
/// snapshot row.
fn check_snapshot_files(parquet: &Path, id: &str) {
    let mut snapshot_files = 0;
    let mut markers: BTreeMap<String, usize> = BTreeMap::new();
    for path in parquet_files(parquet) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let in_snapshot_file = name.starts_with("snapshot-");
        if in_snapshot_file {
            snapshot_files += 1;
            assert!(
                name.starts_with(&format!("snapshot-{id}-")),
                "{name} is not a file of snapshot {id}"
            );
        }
        for batch in read_file(&path) {
            let ops = batch
                .column_by_name("__op")
                .unwrap()
                .as_string::<i32>()
                .clone();
            for i in 0..ops.len() {
                assert_eq!(
                    ops.value(i) == "r",
                    in_snapshot_file,
                    "row {i} of {name} is a `{}`",
                    ops.value(i)
                );
            }
            if in_snapshot_file {
                let ids = batch
                    .column_by_name("__snapshot_id")
                    .unwrap_or_else(|| panic!("{name} has no __snapshot_id"))
                    .as_string::<i32>()
                    .clone();
                assert!((0..ids.len()).all(|i| ids.value(i) == id), "{name}");
                assert!(
                    batch.column_by_name("__snapshot_read_ms").is_some(),
                    "{name} has no __snapshot_read_ms"
                );
                let marks = batch
                    .column_by_name("__snapshot")
                    .unwrap_or_else(|| panic!("{name} has no __snapshot"))
                    .as_string::<i32>()
                    .clone();
                for i in 0..marks.len() {
                    *markers.entry(marks.value(i).to_owned()).or_default() += 1;
                }
            }
        }
    }
    assert_eq!(markers.get("first"), Some(&1), "{markers:?}");
    assert!(
        markers.get("last").copied().unwrap_or(0) <= 1,
        "{markers:?}"
    );
    assert!(
        markers
            .keys()
            .all(|m| ["first", "true", "last"].contains(&m.as_str())),
        "{markers:?}"
    );
    assert!(
        snapshot_files > 0,
        "no snapshot file under {}",
        parquet.display()
    );
}

#[test]
#[ignore = "needs a tansu broker and a moto server: scripts/test.sh installs both and runs it"]
fn a_snapshot_on_moto_during_writes_and_sigkills_rebuilds_the_table_in_parquet_and_tansu() {
    let s = Scratch::new();
    let tansu = Tansu::start(s.path(), Storage::Memory);
    let brokers = tansu.brokers();
    let (_moto, moto_url) = start_moto(s.path());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(dynamodb(&moto_url));
    runtime.block_on(create_table(&db, TABLE));
    runtime.block_on(prefill(&db));

    // tansu does not create topics on demand: the Kafka sink creates its
    // topic at start with the configured partitions. The killed runs scan
    // slowly; the last one may spend more (the budget is not part of the
    // snapshot's plan, so it can change between runs).
    let config_with = |name: &str, rcu: u32| {
        let path = s.path().join(name);
        std::fs::write(
            &path,
            format!(
                "[source]\nkind = \"dynamodb\"\ntables = [{TABLE:?}]\nregion = \"us-east-1\"\n\
                 endpoint_url = {moto_url:?}\npoll_interval_ms = 50\nidle_poll_interval_ms = 200\n\
                 shard_refresh_interval_ms = 500\nsnapshot = \"initial\"\n\
                 snapshot_segments = {SEGMENTS}\nsnapshot_max_rcu = {rcu}\n\n\
                 [sinks.parquet]\npath = {:?}\nmax_file_age_ms = 300\n\n\
                 [sinks.kafka]\nbrokers = {brokers:?}\nformat = \"json\"\n\
                 topic_partitions = {PARTITIONS}\ntopic_replication_factor = 1\n\n\
                 [checkpoint]\npath = {:?}\n",
                s.parquet(),
                s.path().join("out/checkpoint.json"),
            ),
        )
        .unwrap();
        path
    };
    let config = config_with("snapshot.toml", MAX_RCU);
    let last_config = config_with("last.toml", LAST_MAX_RCU);

    let stop = Arc::new(AtomicBool::new(false));
    let writer = runtime.spawn(write_changes(
        db.clone(),
        Duration::from_millis(10),
        stop.clone(),
    ));
    let journal = s.path().join("out/checkpoint.snapshots").join(TABLE);
    for round in 0..=LATER_ROUNDS_MS.len() {
        let mut child = run_command(s.path(), &config, None)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(s.path().join(format!("round-{round}.log"))).unwrap())
            // Committed files show which snapshot pages each run handed over.
            .env("RUST_LOG", "info,dynamo_cdc_sink_parquet=debug")
            .spawn()
            .unwrap();
        if round == 0 {
            let deadline = Instant::now() + FIRST_PAGE_LIMIT;
            while !journal_has_a_page(&journal) {
                let ended = child.try_wait().unwrap();
                assert!(
                    ended.is_none() && Instant::now() < deadline,
                    "the first run recorded no page ({ended:?}):\n{}",
                    snapshot_lines(s.path())
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        } else {
            std::thread::sleep(Duration::from_millis(LATER_ROUNDS_MS[round - 1]));
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let during = announced(&s.parquet(), TABLE);
    assert_eq!(
        during.len(),
        1,
        "the snapshot was planned: {during:?}\n{}",
        snapshot_lines(s.path())
    );
    assert!(
        during[0].2["finished_ms"].is_null(),
        "every kill came during the scan: {}\n{}",
        during[0].2,
        snapshot_lines(s.path())
    );
    stop.store(true, Ordering::Relaxed);
    let writes = runtime.block_on(writer).unwrap();
    assert!(writes > 200, "the writer made {writes} changes");

    // The last run finishes the snapshot, then stops once idle.
    let log = s.path().join("last-run.log");
    let started = Instant::now();
    let mut last = run_command(s.path(), &last_config, Some("3"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let status = wait_at_most(&mut last, Duration::from_secs(240));
    let log = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "the last run did not end well within 240 s (after {:?}):\n{log}",
        started.elapsed()
    );
    let want = runtime.block_on(table_now(&db));
    assert!(want.len() > PREFILLED / 2, "{} items left", want.len());

    // Parquet: the newest change after S0, else the snapshot row.
    let snapshots = announced(&s.parquet(), TABLE);
    assert_eq!(snapshots.len(), 1, "one snapshot: {snapshots:?}");
    let (id, s0, plan) = &snapshots[0];
    assert!(
        plan["finished_ms"].is_i64(),
        "the snapshot finished: {plan}"
    );
    assert_eq!(plan["method"], "scan", "{plan}");
    assert_eq!(plan["segments"], SEGMENTS, "{plan}");
    assert!(!s0.is_empty(), "S0 names the stream's shards: {plan}");
    check_snapshot_files(&s.parquet(), id);
    let rows = read_rows(&s.parquet());
    for row in rows.iter().filter(|r| r.op == "r") {
        assert!(
            row.shard.starts_with(&format!("snapshot-{id}-")),
            "{}",
            row.shard
        );
    }
    let Rebuilt {
        state: rebuilt,
        snapshot_rows,
    } = rebuild(&rows, id, s0, key_of)
        .unwrap_or_else(|key| panic!("two snapshot rows of {key} in Parquet"));
    let mut wrong = Vec::new();
    for (key, item) in &want {
        // A flat row cannot tell a top-level NULL from an absent attribute.
        let item: Item = item
            .iter()
            .filter(|(_, v)| !matches!(v, AttributeValue::Null))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if rebuilt.get(key) != Some(&item) {
            wrong.push(format!("{key}: {}", difference(rebuilt.get(key), &item)));
        }
    }
    assert!(
        wrong.is_empty(),
        "the Parquet state of {} keys differs from the table; the first ones:\n{}",
        wrong.len(),
        wrong[..wrong.len().min(5)].join("\n")
    );
    let extra: Vec<&String> = rebuilt.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(extra.is_empty(), "Parquet holds deleted keys: {extra:?}");
    assert!(
        snapshot_rows.len() > PREFILLED / 2,
        "most items came from the snapshot: {}",
        snapshot_rows.len()
    );

    // Kafka: the last message per key; no snapshot row after a newer
    // change of its key in its partition.
    let messages = read_topic(&brokers, TOPIC, PARTITIONS);
    let mut last: BTreeMap<String, Value> = BTreeMap::new();
    let mut partition_of: BTreeMap<String, i32> = BTreeMap::new();
    let mut newest_change: BTreeMap<String, i64> = BTreeMap::new();
    let mut seen_snapshot: BTreeSet<String> = BTreeSet::new();
    let mut markers: BTreeMap<String, usize> = BTreeMap::new();
    let mut late = Vec::new();
    // Each key's messages in partition order, to show in a failure.
    let mut history: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in messages.iter().filter(|m| m.value.is_some()) {
        let v: Value = serde_json::from_slice(m.value.as_ref().unwrap()).unwrap();
        let k: Value = serde_json::from_slice(&m.key).unwrap();
        let key = k["pk"].as_str().unwrap().to_owned();
        // One partition per key: the order within it is the key's order.
        assert_eq!(
            *partition_of.entry(key.clone()).or_insert(m.partition),
            m.partition,
            "{key} spans partitions"
        );
        let ts = v["ts_ms"].as_i64().unwrap();
        let marker = v["source"]["snapshot"].as_str().unwrap().to_owned();
        history.entry(key.clone()).or_default().push(format!(
            "  partition {} op {} ts_ms {ts} snapshot {marker} headers {:?}",
            m.partition, v["op"], m.headers
        ));
        if marker == "false" {
            assert!(!m.headers.contains_key("dynamodb.snapshot_id"), "{key}");
            let at = newest_change.entry(key.clone()).or_insert(ts);
            *at = (*at).max(ts);
        } else {
            assert_eq!(m.headers["dynamodb.snapshot_id"], *id, "{key}");
            assert_eq!(m.headers["dynamodb.snapshot"], marker, "{key}");
            assert_eq!(v["op"], "r", "{key}");
            assert!(
                seen_snapshot.insert(key.clone()),
                "two snapshot rows of {key} in Kafka:\n{}",
                history[&key].join("\n")
            );
            if let Some(&newer) = newest_change.get(&key)
                && newer > ts
            {
                late.push((
                    key.clone(),
                    format!("read at {ts}, after a change made at {newer}"),
                ));
            }
            *markers.entry(marker).or_default() += 1;
        }
        last.insert(key, v);
    }
    assert_eq!(markers.get("first"), Some(&1), "{markers:?}");
    assert!(
        markers.get("last").copied().unwrap_or(0) <= 1,
        "{markers:?}"
    );
    assert_eq!(
        seen_snapshot,
        snapshot_rows.keys().cloned().collect(),
        "the same keys have snapshot rows in Kafka and Parquet"
    );
    let kafka_state: BTreeMap<&String, &Value> =
        last.iter().filter(|(_, v)| v["op"] != "d").collect();
    let mut wrong = Vec::new();
    for (key, item) in &want {
        if kafka_state.get(key).map(|v| &v["after"]) != Some(&plain_item(item)) {
            wrong.push(key);
        }
    }
    // The first few keys with their messages.
    let show = |keys: Vec<&String>| {
        keys.iter()
            .take(3)
            .map(|k| {
                format!(
                    "{k}:\n{}",
                    history.get(*k).map_or(String::new(), |h| h.join("\n"))
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        late.is_empty(),
        "{} snapshot rows follow a newer change of their key in Kafka: {late:?}\n{}\n\
         (the last message of {} keys differs from the table: {wrong:?})",
        late.len(),
        show(late.iter().map(|(k, _)| k).collect()),
        wrong.len()
    );
    assert!(
        wrong.is_empty(),
        "the Kafka state of {} keys differs from the table: {wrong:?}\n{}",
        wrong.len(),
        show(wrong.clone())
    );
    let extra: Vec<&&String> = kafka_state
        .keys()
        .filter(|k| !want.contains_key(**k))
        .collect();
    assert!(extra.is_empty(), "Kafka holds deleted keys: {extra:?}");
}
