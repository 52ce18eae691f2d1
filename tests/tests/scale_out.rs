//! Scale-out end to end: worker processes share four tables of the stream
//! simulator through its lease table (a linearizable endpoint, unlike
//! moto's), writing Parquet to moto's S3 and Kafka to a tansu broker, while
//! a writer keeps changing items and the simulator rotates and splits
//! shards. One worker is SIGKILLed, one SIGSTOPped past its lease and
//! resumed (a zombie), one is added, one is stopped with SIGTERM. Then
//! every change is in Parquet and in Kafka exactly once, and in order per
//! key. The failover time after the SIGKILL is printed.
//!
//! It needs `tansu` and `moto_server`; `scripts/test.sh` installs both.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dynamo_cdc_testkit::streams_sim::StreamSim;
use dynamo_cdc_tests::kafka::read_topic;
use dynamo_cdc_tests::servers::{Storage, Tansu, create_bucket, moto_lake, start_moto};
use dynamo_cdc_tests::{Scratch, read_rows};
use serde_json::{Value, json};

const TABLES: [&str; 4] = ["sc_orders", "sc_users", "sc_carts", "sc_items"];
const PARTITIONS: i32 = 3;
const LEASE_MS: u64 = 4_000;
const KEYS: usize = 12;

/// What the writer put, per table: (shard, sequence number, key, version).
type Written = Arc<Mutex<BTreeMap<String, Vec<(String, u128, String, u64)>>>>;

struct Worker {
    name: String,
    child: Child,
}

impl Worker {
    fn pid(&self) -> u32 {
        self.child.id()
    }
    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([format!("-{sig}"), self.pid().to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.signal("CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(s: &Scratch, sim: &StreamSim, moto: &str, brokers: &str) -> PathBuf {
    let tables: Vec<String> = TABLES.iter().map(|t| format!("{t:?}")).collect();
    let text = format!(
        r#"[source]
kind = "dynamodb"
region = "us-east-1"
endpoint_url = {sim:?}
tables = [{tables}]
poll_interval_ms = 20
idle_poll_interval_ms = 50
shard_refresh_interval_ms = 200

[sinks.parquet]
path = "s3://lake/cdc"
region = "us-east-1"
endpoint_url = {moto:?}
max_file_age_ms = 500

[sinks.kafka]
brokers = {brokers:?}
format = "json"
topic_partitions = {PARTITIONS}

[checkpoint]
path = "state/checkpoint.json"

[coordination]
lease_table = "cdc-leases"
worker_id = "${{WORKER_ID}}"
lease_duration_ms = {LEASE_MS}
"#,
        sim = sim.endpoint_url(),
        tables = tables.join(", "),
    );
    let path = s.path().join("scale.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Writes `<name>.toml`: `sections` (source and sinks), then a checkpoint of
/// this process's own (`state-<name>`) and the shared lease table, as
/// `worker_id`.
fn own_checkpoint_config(s: &Scratch, name: &str, sections: &str, worker_id: &str) -> PathBuf {
    let text = format!(
        r#"{sections}
[checkpoint]
path = "state-{name}/checkpoint.json"

[coordination]
lease_table = "cdc-leases"
worker_id = "{worker_id}"
lease_duration_ms = {LEASE_MS}
"#
    );
    let path = s.path().join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn start_worker(s: &Scratch, cfg: &Path, name: &str) -> Worker {
    LOG_DIR.with(|d| *d.borrow_mut() = Some(s.path().to_owned()));
    let log = std::fs::File::create(s.path().join(format!("{name}.log"))).unwrap();
    let child = Command::new(dynamo_cdc_tests::binary())
        .args(["--log", "info", "run", "--quiet", "--config"])
        .arg(cfg)
        .current_dir(s.path())
        .env("WORKER_ID", name)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Worker {
        name: name.to_owned(),
        child,
    }
}

/// The leases as the lease table holds them: table -> (owner, epoch).
fn leases(sim: &StreamSim) -> BTreeMap<String, (String, u64)> {
    if !sim.plain_tables().iter().any(|t| t == "cdc-leases") {
        return BTreeMap::new();
    }
    sim.plain_items("cdc-leases")
        .into_iter()
        .filter(|i| i["kind"]["S"] == "lease")
        .map(|i| {
            (
                i["table"]["S"].as_str().unwrap_or_default().to_owned(),
                (
                    i["owner"]["S"].as_str().unwrap_or_default().to_owned(),
                    i["epoch"]["N"].as_str().unwrap_or("0").parse().unwrap_or(0),
                ),
            )
        })
        .collect()
}

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ok() {
        if start.elapsed() >= limit {
            panic!("timed out waiting for {what}\n{}", logs_tail());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

thread_local! {
    static LOG_DIR: std::cell::RefCell<Option<PathBuf>> = const { std::cell::RefCell::new(None) };
}

/// The last lines of every worker's log, for a failure's message.
fn logs_tail() -> String {
    let Some(dir) = LOG_DIR.with(|d| d.borrow().clone()) else {
        return String::new();
    };
    let mut out = String::new();
    let mut logs: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    logs.sort();
    for path in logs
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
    {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| {
                !l.contains("IMDS")
                    && !l.trim_start().starts_with(|c: char| c.is_ascii_digit())
                    && !l.trim_start().starts_with("at ")
            })
            .collect();
        out.push_str(&format!("--- {}\n", path.display()));
        for l in &lines[lines.len().saturating_sub(25)..] {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

fn held_by(sim: &StreamSim, worker: &str) -> BTreeSet<String> {
    leases(sim)
        .into_iter()
        .filter(|(_, (o, _))| o == worker)
        .map(|(t, _)| t)
        .collect()
}

/// Puts changes into every table, a key's changes always in its current
/// shard (moving to a child when that shard rotates or splits), so they are
/// in order per key as DynamoDB Streams keeps them.
fn writer(
    sim: Arc<StreamSim>,
    arns: Vec<(String, String)>,
    written: Written,
    stop: Arc<AtomicBool>,
) {
    let mut shard_of: BTreeMap<(String, usize), String> = BTreeMap::new();
    let mut version: BTreeMap<(String, usize), u64> = BTreeMap::new();
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        for (table, arn) in &arns {
            let open = sim.open_shards(arn);
            for k in 0..KEYS {
                let shard = shard_of
                    .entry((table.clone(), k))
                    .or_insert_with(|| open[k % open.len()].clone())
                    .clone();
                let v = version.entry((table.clone(), k)).or_default();
                *v += 1;
                let id = format!("k{k}");
                let seq = sim.put_json(
                    arn,
                    &shard,
                    if *v == 1 { "INSERT" } else { "MODIFY" },
                    json!({"id": {"S": id}}),
                    Some((
                        None,
                        Some(json!({"id": {"S": id}, "version": {"N": v.to_string()}})),
                    )),
                );
                written
                    .lock()
                    .unwrap()
                    .entry(table.clone())
                    .or_default()
                    .push((shard, seq, id, *v));
            }
            // Now and then a rotation or a split; keys follow their shard.
            if round.is_multiple_of(15) {
                let victim = open[usize::try_from(round / 15).unwrap_or(0) % open.len()].clone();
                let children: Vec<String> = if round.is_multiple_of(30) {
                    let (a, b) = sim.split(arn, &victim);
                    vec![a, b]
                } else {
                    vec![sim.rotate(arn, &victim)]
                };
                for (i, (_, shard)) in shard_of
                    .iter_mut()
                    .filter(|((t, _), s)| t == table && **s == victim)
                    .enumerate()
                {
                    *shard = children[i % children.len()].clone();
                }
            }
        }
        std::thread::sleep(Duration::from_millis(40));
    }
}

/// Every object under `s3://lake/cdc`, copied to a local directory.
fn download(moto: &str, into: &Path) -> PathBuf {
    let objects = moto_lake(moto);
    let root = into.join("downloaded");
    let _ = std::fs::remove_dir_all(&root);
    for meta in objects.list("").unwrap() {
        let rel = objects.relative(&meta.location).unwrap().to_owned();
        // Journal pages come and go while a worker runs.
        let Some(bytes) = objects.read_if_exists(&meta.location).unwrap() else {
            continue;
        };
        let path = root.join(&rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
    }
    root
}

#[test]
#[ignore = "needs tansu and moto_server; scripts/test.sh installs them and runs this"]
fn workers_share_tables_and_every_change_lands_exactly_once() {
    let s = Scratch::new();
    let sim = Arc::new(StreamSim::start());
    let (_moto, moto) = start_moto(s.path());
    create_bucket(&moto, "lake");
    let tansu = Tansu::start(s.path(), Storage::Memory);
    let arns: Vec<(String, String)> = TABLES
        .iter()
        .map(|t| ((*t).to_owned(), sim.create_stream(t)))
        .collect();
    let cfg = config(&s, &sim, &moto, &tansu.brokers());
    let written: Written = Arc::default();
    let stop_writing = Arc::new(AtomicBool::new(false));
    let writing = {
        let (sim, arns, written, stop) = (
            sim.clone(),
            arns.clone(),
            written.clone(),
            stop_writing.clone(),
        );
        std::thread::spawn(move || writer(sim, arns, written, stop))
    };
    let lease_period = Duration::from_millis(LEASE_MS);
    let mut workers: Vec<Worker> = ["w1", "w2", "w3"]
        .iter()
        .map(|n| start_worker(&s, &cfg, n))
        .collect();

    // All four tables held, spread over the three workers.
    wait_until(
        "every table held by a worker, none idle",
        Duration::from_secs(60),
        || {
            let l = leases(&sim);
            let owners: BTreeSet<&String> = l.values().map(|(o, _)| o).collect();
            l.len() == 4 && l.values().all(|(o, _)| !o.is_empty()) && owners.len() == 3
        },
    );

    // SIGKILL the busiest worker; its tables move within two lease periods.
    let busiest = workers
        .iter()
        .max_by_key(|w| held_by(&sim, &w.name).len())
        .unwrap()
        .name
        .clone();
    let orphaned = held_by(&sim, &busiest);
    let before = leases(&sim);
    let killed = workers.iter().position(|w| w.name == busiest).unwrap();
    workers[killed].signal("KILL");
    let failover = wait_until(
        "the killed worker's tables taken over",
        Duration::from_secs(60),
        || {
            let now = leases(&sim);
            orphaned
                .iter()
                .all(|t| now[t].0 != busiest && !now[t].0.is_empty() && now[t].1 > before[t].1)
        },
    );
    eprintln!(
        "failover after SIGKILL: {:.1} s for {} table(s) (lease duration {:.1} s; target at most {:.1} s)",
        failover.as_secs_f64(),
        orphaned.len(),
        lease_period.as_secs_f64(),
        2.0 * lease_period.as_secs_f64()
    );
    drop(workers.remove(killed));

    // SIGSTOP a worker past its lease: its tables move; it wakes as a zombie.
    let paused = workers
        .iter()
        .find(|w| !held_by(&sim, &w.name).is_empty())
        .unwrap()
        .name
        .clone();
    let paused_tables = held_by(&sim, &paused);
    let p = workers.iter().position(|w| w.name == paused).unwrap();
    workers[p].signal("STOP");
    wait_until(
        "the paused worker's tables taken over",
        Duration::from_secs(60),
        || {
            let now = leases(&sim);
            paused_tables
                .iter()
                .all(|t| now[t].0 != paused && !now[t].0.is_empty())
        },
    );
    workers[p].signal("CONT");

    // A new worker gets a share.
    workers.push(start_worker(&s, &cfg, "w4"));
    wait_until(
        "the new worker holding a table",
        Duration::from_secs(60),
        || !held_by(&sim, "w4").is_empty(),
    );

    // SIGTERM one: it hands its tables over and exits 0.
    let leaving = workers
        .iter()
        .position(|w| w.name != "w4" && !held_by(&sim, &w.name).is_empty())
        .unwrap_or(0);
    let leaving_name = workers[leaving].name.clone();
    workers[leaving].signal("TERM");
    let status = {
        let w = &mut workers[leaving];
        let start = Instant::now();
        loop {
            if let Some(status) = w.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{leaving_name} did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    assert!(
        status.success(),
        "{leaving_name} exited {status:?} on SIGTERM"
    );
    assert!(held_by(&sim, &leaving_name).is_empty(), "handed over");

    // Stop writing; wait until both sinks hold everything.
    stop_writing.store(true, Ordering::Relaxed);
    writing.join().unwrap();
    let written = written.lock().unwrap().clone();
    let total: usize = written.values().map(Vec::len).sum();
    let kafka_count = || {
        TABLES
            .iter()
            .map(|t| {
                read_topic(&tansu.brokers(), &format!("cdc.{t}"), PARTITIONS)
                    .iter()
                    .filter(|m| m.value.is_some())
                    .count()
            })
            .sum::<usize>()
    };
    let parquet_count = || read_rows(&download(&moto, s.path())).len();
    wait_until(
        "everything in Kafka and Parquet",
        Duration::from_secs(120),
        || kafka_count() >= total && parquet_count() >= total,
    );
    for w in &workers {
        w.signal("TERM");
    }
    for w in &mut workers {
        let _ = w.child.wait();
    }

    // Exactly once and in order per key, in both sinks.
    let root = download(&moto, s.path());
    let rows = read_rows(&root);
    let mut parquet: BTreeMap<(String, String), Vec<u128>> = BTreeMap::new();
    for r in &rows {
        parquet
            .entry((r.table.clone(), r.shard.clone()))
            .or_default()
            .push(r.seq.parse().unwrap());
    }
    let mut expected: BTreeMap<(String, String), Vec<u128>> = BTreeMap::new();
    for (table, changes) in &written {
        for (shard, seq, _, _) in changes {
            expected
                .entry((table.clone(), shard.clone()))
                .or_default()
                .push(*seq);
        }
    }
    for seqs in parquet.values_mut() {
        seqs.sort_unstable();
    }
    for seqs in expected.values_mut() {
        seqs.sort_unstable();
    }
    for (key, seqs) in &parquet {
        let mut unique = seqs.clone();
        unique.dedup();
        assert_eq!(
            seqs.len(),
            unique.len(),
            "Parquet holds a change of {key:?} twice"
        );
    }
    assert_eq!(parquet, expected, "Parquet: every change exactly once");

    for (table, changes) in &written {
        let messages = read_topic(&tansu.brokers(), &format!("cdc.{table}"), PARTITIONS);
        let mut seen: BTreeSet<u128> = BTreeSet::new();
        let mut versions: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for m in messages.iter().filter(|m| m.value.is_some()) {
            assert!(
                seen.insert(m.seq()),
                "Kafka holds change {} of {table} twice",
                m.seq()
            );
            let value: Value = serde_json::from_slice(m.value.as_ref().unwrap()).unwrap();
            let after = &value["after"];
            let id = after["id"].as_str().unwrap_or_default().to_owned();
            let v: u64 = after["version"].as_str().map_or_else(
                || after["version"].as_u64().unwrap_or(0),
                |t| t.parse().unwrap_or(0),
            );
            versions.entry(id).or_default().push(v);
            assert!(
                m.headers.contains_key("dynamo-cdc.lease_epoch"),
                "the fencing token is a header"
            );
        }
        let want: BTreeSet<u128> = changes.iter().map(|c| c.1).collect();
        assert_eq!(seen, want, "Kafka: every change of {table} exactly once");
        for (id, vs) in versions {
            assert!(
                vs.windows(2).all(|w| w[0] < w[1]),
                "{table} {id}: out of order {vs:?}"
            );
        }
    }
    let log =
        |n: &str| std::fs::read_to_string(s.path().join(format!("{n}.log"))).unwrap_or_default();
    let logs: String = ["w1", "w2", "w3", "w4"].iter().map(|n| log(n)).collect();
    assert!(logs.contains("lease taken"), "workers log their leases");
    let zombie = log(&paused);
    assert!(
        zombie.contains("self-fence") || zombie.contains("lease lost"),
        "the paused worker stopped writing its tables when it woke:\n{zombie}"
    );
    for needle in [
        "lease taken",
        "lease handed over",
        "asked a busier worker",
        "self-fence",
        "lease lost",
        "another writer committed",
        "waiting out its last Kafka messages",
    ] {
        eprintln!("{:>4} × {needle}", logs.matches(needle).count());
    }
    eprintln!("{total} changes, each once in Parquet and in Kafka");
}

/// Whether a snapshot plan of `table` is in the bucket's shared journal.
fn journaled(moto: &str, table: &str) -> bool {
    let objects = moto_lake(moto);
    objects
        .exists(&objects.path(&format!("_snapshot_journal/{table}/plan.json")))
        .unwrap()
}

#[test]
#[ignore = "needs moto_server; scripts/test.sh installs it and runs this"]
fn a_snapshot_in_progress_survives_a_change_of_owner() {
    const TABLE: &str = "sc_snap";
    const ITEMS: usize = 400;
    let s = Scratch::new();
    let sim = Arc::new(StreamSim::start());
    let (_moto, moto) = start_moto(s.path());
    create_bucket(&moto, "lake");
    sim.create_table(TABLE, "pk", None);
    let filler = "x".repeat(2_000);
    for i in 0..ITEMS {
        sim.put_item(
            TABLE,
            json!({"pk": {"S": format!("p{i:04}")}, "n": {"N": i.to_string()}, "pad": {"S": filler}}),
        );
    }
    let write = |name: &str, rcu: u32| {
        let sections = format!(
            r#"[source]
kind = "dynamodb"
region = "us-east-1"
endpoint_url = {sim:?}
tables = [{TABLE:?}]
poll_interval_ms = 20
idle_poll_interval_ms = 50
shard_refresh_interval_ms = 200
snapshot = "initial"
snapshot_segments = 2
snapshot_max_rcu = {rcu}

[sinks.parquet]
path = "s3://lake/cdc"
region = "us-east-1"
endpoint_url = {moto:?}
max_file_age_ms = 300
"#,
            sim = sim.endpoint_url(),
        );
        own_checkpoint_config(&s, name, &sections, "${WORKER_ID}")
    };
    // The first owner scans slowly; the next one quickly. Each has its own
    // checkpoint directory: only the shared journal can carry the snapshot.
    let slow = write("slow", 1);
    let fast = write("fast", 400);
    let first = start_worker(&s, &slow, "first");
    wait_until("the first owner's lease", Duration::from_secs(60), || {
        !held_by(&sim, "first").is_empty()
    });
    let second = start_worker(&s, &fast, "second");
    let snapshot_rows = || {
        read_rows(&download(&moto, s.path()))
            .iter()
            .filter(|r| r.op == "r")
            .count()
    };
    let log =
        |n: &str| std::fs::read_to_string(s.path().join(format!("{n}.log"))).unwrap_or_default();
    let started = Instant::now();
    loop {
        let n = snapshot_rows();
        assert!(
            n < ITEMS,
            "the slow scan finished before it could be interrupted:\n{}",
            log("first")
        );
        if n > 0 && journaled(&moto, TABLE) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no snapshot row after 2 minutes:\n{}",
            log("first")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    first.signal("KILL");
    wait_until("the table taken over", Duration::from_secs(60), || {
        !held_by(&sim, "second").is_empty()
    });
    wait_until(
        "every item as a snapshot row",
        Duration::from_secs(120),
        || snapshot_rows() >= ITEMS,
    );
    drop(first);
    second.signal("TERM");
    drop(second);
    let rows: Vec<_> = read_rows(&download(&moto, s.path()))
        .into_iter()
        .filter(|r| r.op == "r")
        .collect();
    let ids: BTreeSet<String> = rows
        .iter()
        .map(|r| r.shard.rsplit_once('-').map_or("", |(id, _)| id).to_owned())
        .collect();
    assert_eq!(
        ids.len(),
        1,
        "one snapshot, resumed, not a second one: {ids:?}"
    );
    let mut keys: Vec<String> = rows
        .iter()
        .map(|r| match r.item.get("pk") {
            Some(dynamo_cdc_core::AttributeValue::S(k)) => k.to_string(),
            other => panic!("a string key: {other:?}"),
        })
        .collect();
    keys.sort();
    let total = keys.len();
    keys.dedup();
    assert_eq!(
        (total, keys.len()),
        (ITEMS, ITEMS),
        "every item exactly once"
    );
}

#[test]
fn a_second_process_under_a_worker_id_in_use_stops_with_an_error() {
    const TABLE: &str = "sc_twin";
    let s = Scratch::new();
    let sim = StreamSim::start();
    sim.create_stream(TABLE);
    // The same `worker_id` in both; each process its own checkpoint (a
    // shared one would stop the second at its lock, before any lease).
    let write = |run: &str| {
        let sections = format!(
            r#"[source]
kind = "dynamodb"
region = "us-east-1"
endpoint_url = {sim:?}
tables = [{TABLE:?}]
idle_poll_interval_ms = 50

[sinks.parquet]
path = "out"
"#,
            sim = sim.endpoint_url(),
        );
        own_checkpoint_config(&s, run, &sections, "twin")
    };
    let first = start_worker(&s, &write("first"), "first");
    wait_until("the first process's lease", Duration::from_secs(60), || {
        !held_by(&sim, "twin").is_empty()
    });
    let mut second = start_worker(&s, &write("second"), "second");
    let mut status = None;
    wait_until(
        "the second process to stop",
        Duration::from_secs(60),
        || {
            status = second.child.try_wait().unwrap();
            status.is_some()
        },
    );
    let log = std::fs::read_to_string(s.path().join("second.log")).unwrap();
    assert!(!status.unwrap().success(), "{log}");
    assert!(
        log.contains(r#"another process is running as worker "twin""#)
            && log.contains("give every process its own `worker_id`"),
        "{log}"
    );
    // The first process never lost its lease: still epoch 1, still running.
    assert_eq!(leases(&sim)[TABLE], ("twin".to_owned(), 1));
    let mut first = first;
    assert!(first.child.try_wait().unwrap().is_none(), "{}", logs_tail());
}

/// `start = "latest"` under `[coordination]`: the first start is recorded in
/// the lease table before the stream is read at its end, so the worker that
/// takes over a table from one killed before its first commit reads from
/// that start, not from the stream's end again.
#[test]
fn a_latest_start_survives_a_change_of_owner_before_the_first_commit() {
    use dynamo_cdc_testkit::streams_sim::Op;
    const TABLE: &str = "sc_latest";
    let s = Scratch::new();
    let sim = StreamSim::start();
    let arn = sim.create_stream(TABLE);
    let shard = sim.open_shards(&arn)[0].clone();
    let write = |run: &str, max_file_age_ms: u64| {
        let sections = format!(
            r#"[source]
kind = "dynamodb"
region = "us-east-1"
endpoint_url = {sim:?}
tables = [{TABLE:?}]
start = "latest"
poll_interval_ms = 20
idle_poll_interval_ms = 50

[sinks.parquet]
path = "out"
max_file_age_ms = {max_file_age_ms}
"#,
            sim = sim.endpoint_url(),
        );
        own_checkpoint_config(&s, run, &sections, run)
    };
    let recorded = || {
        sim.plain_tables().iter().any(|t| t == "cdc-leases")
            && sim
                .plain_items("cdc-leases")
                .iter()
                .any(|i| i["kind"]["S"] == "start" && i["table"]["S"] == TABLE)
    };
    // Nothing is committed by age in the first worker's run.
    let first = start_worker(&s, &write("first", 600_000), "first");
    wait_until(
        "the latest start in the lease table and the first GetRecords",
        Duration::from_secs(60),
        || recorded() && sim.calls(Op::GetRecords) > 0,
    );
    let written: Vec<u128> = (0..5)
        .map(|i| {
            sim.put_json(
                &arn,
                &shard,
                "INSERT",
                json!({"id": {"S": format!("k{i}")}}),
                None,
            )
        })
        .collect();
    let calls = sim.calls(Op::GetRecords);
    wait_until("the shard read again", Duration::from_secs(30), || {
        sim.calls(Op::GetRecords) >= calls + 2
    });
    drop(first); // SIGKILL
    let out = s.path().join("out");
    assert!(read_rows(&out).is_empty(), "nothing was committed");

    let second = start_worker(&s, &write("second", 200), "second");
    wait_until("the second worker's rows", Duration::from_secs(60), || {
        read_rows(&out).len() >= written.len()
    });
    second.signal("TERM");
    let mut second = second;
    second.child.wait().unwrap();
    let mut got: Vec<u128> = read_rows(&out)
        .iter()
        .map(|r| r.seq.parse().unwrap())
        .collect();
    got.sort_unstable();
    assert_eq!(got, written, "{}", logs_tail());
    let log = std::fs::read_to_string(s.path().join("second.log")).unwrap();
    assert!(
        log.contains("no position since the latest start"),
        "the second worker read from the recorded start: {log}"
    );
}
