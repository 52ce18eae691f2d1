//! The `dynamo-cdc` binary reading the stream simulator: exactly once in
//! Parquet across reruns, graceful stops on SIGTERM, restarts after SIGKILL
//! at any point, gaps, and tables found by DescribeTable.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use dynamo_cdc_testkit::streams_sim::StreamSim;
use dynamo_cdc_tests::{Scratch, on_one_cpu, read_rows, run_command};
use serde_json::json;

/// A config for the simulator's streams with `extra` lines in `[source]`.
fn config(s: &Scratch, sim: &StreamSim, source: &str, parquet: &str) -> PathBuf {
    let text = format!(
        "[source]\nkind = \"dynamodb\"\nregion = \"us-east-1\"\nendpoint_url = {:?}\n\
         poll_interval_ms = 20\nidle_poll_interval_ms = 50\nshard_refresh_interval_ms = 200\n{source}\n\n\
         [sinks.parquet]\npath = {:?}\n{parquet}\n\n[checkpoint]\npath = {:?}\n",
        sim.endpoint_url(),
        s.parquet(),
        s.path().join("out/checkpoint.json"),
    );
    let path = s.path().join("streams.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn command(s: &Scratch, config: &Path, until_idle: Option<&str>) -> Command {
    run_command(s.path(), config, until_idle)
}

fn run_until_idle(s: &Scratch, config: &Path) -> Output {
    command(s, config, Some("1.5")).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn put(sim: &StreamSim, arn: &str, shard: &str, id: &str, version: u32) -> u128 {
    sim.put_json(
        arn,
        shard,
        if version == 0 { "INSERT" } else { "MODIFY" },
        json!({"id": {"S": id}}),
        Some((
            None,
            Some(json!({"id": {"S": id}, "version": {"N": version.to_string()}, "price": {"N": "0.10"}})),
        )),
    )
}

/// Sequence numbers in the Parquet output, per shard, in file order.
fn delivered(root: &Path) -> BTreeMap<String, Vec<u128>> {
    let mut out: BTreeMap<String, Vec<u128>> = BTreeMap::new();
    for row in read_rows(root) {
        out.entry(row.shard)
            .or_default()
            .push(row.seq.parse().unwrap());
    }
    for seqs in out.values_mut() {
        seqs.sort_unstable();
    }
    out
}

fn assert_exactly_once(root: &Path, expected: &BTreeMap<String, Vec<u128>>) {
    let got = delivered(root);
    for (shard, seqs) in &got {
        let mut unique = seqs.clone();
        unique.dedup();
        assert_eq!(&unique, seqs, "shard {shard} has a change twice");
    }
    assert_eq!(&got, expected, "every change exactly once");
}

#[test]
fn a_stream_lands_in_parquet_exactly_once_across_reruns() {
    let sim = StreamSim::start();
    let arn = sim.create_stream("orders");
    let root = sim.open_shards(&arn)[0].clone();
    let mut expected: BTreeMap<String, Vec<u128>> = BTreeMap::new();
    for i in 0..30 {
        expected
            .entry(root.clone())
            .or_default()
            .push(put(&sim, &arn, &root, &format!("o{i}"), 0));
    }
    let child = sim.rotate(&arn, &root);
    for i in 0..10 {
        expected.entry(child.clone()).or_default().push(put(
            &sim,
            &arn,
            &child,
            &format!("o{i}"),
            1,
        ));
    }
    let s = Scratch::new();
    let cfg = config(&s, &sim, &format!("stream_arns = [{arn:?}]"), "");
    let out = run_until_idle(&s, &cfg);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_exactly_once(&s.parquet(), &expected);
    // Values arrive typed and exact.
    let rows = read_rows(&s.parquet());
    let row = rows
        .iter()
        .find(|r| r.seq == expected[&child][0].to_string())
        .unwrap();
    assert_eq!(row.op, "u");
    assert_eq!(
        serde_json::to_value(&row.item["price"]).unwrap(),
        json!({"N": "0.1"})
    );

    // A rerun writes nothing; new changes are picked up after the position.
    let before = dynamo_cdc_tests::parquet_files(&s.parquet()).len();
    let out = run_until_idle(&s, &cfg);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(dynamo_cdc_tests::parquet_files(&s.parquet()).len(), before);
    for i in 0..5 {
        expected
            .get_mut(&child)
            .unwrap()
            .push(put(&sim, &arn, &child, &format!("n{i}"), 2));
    }
    let out = run_until_idle(&s, &cfg);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_exactly_once(&s.parquet(), &expected);
}

/// On one CPU the stream is read by one runtime thread, which parses each
/// page itself: the changes land exactly once all the same, and a modify's
/// old image, which Parquet does not read, costs nothing and loses nothing.
#[test]
fn a_stream_read_on_one_cpu_lands_exactly_once() {
    let sim = StreamSim::start();
    let arn = sim.create_stream("orders");
    let root = sim.open_shards(&arn)[0].clone();
    let mut expected: BTreeMap<String, Vec<u128>> = BTreeMap::new();
    for i in 0..20 {
        let seq = put(&sim, &arn, &root, &format!("o{i}"), 0);
        expected.entry(root.clone()).or_default().push(seq);
    }
    let child = sim.rotate(&arn, &root);
    for i in 0..20 {
        let id = format!("o{i}");
        let seq = sim.put_json(
            &arn,
            &child,
            "MODIFY",
            json!({"id": {"S": id}}),
            Some((
                Some(json!({"id": {"S": id}, "version": {"N": "0"}})),
                Some(json!({"id": {"S": id}, "version": {"N": "1"}, "price": {"N": "0.10"}})),
            )),
        );
        expected.entry(child.clone()).or_default().push(seq);
    }
    let s = Scratch::new();
    let cfg = config(&s, &sim, &format!("stream_arns = [{arn:?}]"), "");
    let out = on_one_cpu(&command(&s, &cfg, Some("1.5")))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("each page is parsed by the task that read it"),
        "{}",
        stderr(&out)
    );
    assert_exactly_once(&s.parquet(), &expected);
    let rows = read_rows(&s.parquet());
    let modified = rows.iter().filter(|r| r.op == "u").count();
    assert_eq!(modified, 20);
}

#[test]
fn tables_are_found_by_describe_table() {
    let sim = StreamSim::start();
    let arn = sim.create_stream("customers");
    let shard = sim.open_shards(&arn)[0].clone();
    let seq = put(&sim, &arn, &shard, "c1", 0);
    let s = Scratch::new();
    let cfg = config(&s, &sim, "tables = [\"customers\"]", "");
    let out = run_until_idle(&s, &cfg);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_exactly_once(&s.parquet(), &BTreeMap::from([(shard, vec![seq])]));

    let cfg = config(&s, &sim, "tables = [\"nope\"]", "");
    let out = run_until_idle(&s, &cfg);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("table `nope`"), "{}", stderr(&out));
}

#[test]
fn aws_unreachable_at_start_is_waited_out_not_a_crash() {
    let sim = StreamSim::start();
    let arn = sim.create_stream("customers");
    let shard = sim.open_shards(&arn)[0].clone();
    let seq = put(&sim, &arn, &shard, "c1", 0);
    // DescribeTable answers 500 more times than the SDK retries one call.
    sim.fail_next(
        dynamo_cdc_testkit::streams_sim::Op::DescribeTable,
        5,
        dynamo_cdc_testkit::streams_sim::Fault::ServerError,
    );
    let s = Scratch::new();
    let cfg = config(&s, &sim, "tables = [\"customers\"]", "");
    let out = run_until_idle(&s, &cfg);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(
        err.matches("cannot read the source; pausing").count(),
        1,
        "{err}"
    );
    assert!(err.contains("reads again"), "{err}");
    assert_exactly_once(&s.parquet(), &BTreeMap::from([(shard, vec![seq])]));
}

/// Writes to the stream from another thread while the binary runs.
struct Writer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<Vec<u128>>>,
}

impl Writer {
    fn start(sim: &std::sync::Arc<StreamSim>, arn: &str, shard: &str) -> Writer {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (sim, arn, shard, flag) = (sim.clone(), arn.to_owned(), shard.to_owned(), stop.clone());
        let handle = std::thread::spawn(move || {
            let mut seqs = Vec::new();
            let mut i = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                seqs.push(put(&sim, &arn, &shard, &format!("w{}", i % 17), i));
                i += 1;
                std::thread::sleep(Duration::from_millis(3));
            }
            seqs
        });
        Writer {
            stop,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> Vec<u128> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap()
    }
}

fn wait_for_rows(root: &Path, at_least: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while read_rows(root).len() < at_least {
        assert!(Instant::now() < deadline, "no rows were committed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn sigterm_stops_gracefully_and_sigkill_at_any_point_loses_and_repeats_nothing() {
    let sim = std::sync::Arc::new(StreamSim::start());
    let arn = sim.create_stream("orders");
    let shard = sim.open_shards(&arn)[0].clone();
    let s = Scratch::new();
    // Small files committed often, so kills land between and inside commits.
    let cfg = config(
        &s,
        &sim,
        &format!("stream_arns = [{arn:?}]"),
        "max_file_age_ms = 100\nmax_rows_per_file = 40",
    );
    let writer = Writer::start(&sim, &arn, &shard);

    // SIGTERM: exit 0 within a bounded time, positions recorded.
    let mut child = command(&s, &cfg, None)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_rows(&s.parquet(), 20);
    signal(&child, "TERM");
    let asked = Instant::now();
    let out = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(10),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(out.code(), Some(0), "graceful stop exits 0");
    assert!(s.path().join("out/checkpoint.json").exists());

    // SIGKILL a few times at different moments.
    for round in 0..4u64 {
        let mut child = command(&s, &cfg, None)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(150 + 170 * round));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let written = writer.finish();
    let out = run_until_idle(&s, &cfg);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_exactly_once(&s.parquet(), &BTreeMap::from([(shard, written)]));
}

#[test]
fn trimmed_records_fail_by_default_and_leave_a_gap_record_with_skip() {
    let sim = StreamSim::start();
    let arn = sim.create_stream("orders");
    let shard = sim.open_shards(&arn)[0].clone();
    let first = put(&sim, &arn, &shard, "a", 0);
    let s = Scratch::new();
    let cfg = config(&s, &sim, &format!("stream_arns = [{arn:?}]"), "");
    let out = run_until_idle(&s, &cfg);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Written and trimmed while the bridge was down.
    let lost = put(&sim, &arn, &shard, "b", 0);
    let kept = put(&sim, &arn, &shard, "c", 0);
    sim.trim(&arn, &shard, 2);

    let out = run_until_idle(&s, &cfg);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("table orders"), "{err}");
    assert!(err.contains(&shard), "{err}");
    assert!(err.contains(&first.to_string()), "{err}");
    assert!(
        err.contains(&kept.to_string()),
        "the oldest record held: {err}"
    );
    assert!(!s.parquet().join("_gaps").exists());

    let cfg = config(
        &s,
        &sim,
        &format!("stream_arns = [{arn:?}]\non_gap = \"skip\""),
        "",
    );
    let out = run_until_idle(&s, &cfg);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("trimmed"),
        "an error-level line: {}",
        stderr(&out)
    );
    assert_exactly_once(
        &s.parquet(),
        &BTreeMap::from([(shard.clone(), vec![first, kept])]),
    );
    let gap = first_gap(&s);
    assert_eq!(gap["shard"], json!(shard));
    assert_eq!(gap["after"], json!(first.to_string()));
    assert_eq!(gap["resumed_at"], json!(kept.to_string()));
    assert!(lost < kept);
    // Recorded once, even when a rerun meets it again.
    let out = run_until_idle(&s, &cfg);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(s.parquet().join("_gaps/orders.jsonl"))
            .unwrap()
            .lines()
            .count(),
        1
    );
}

/// The checkpoint keeps the shards read to their end. After the bridge was
/// down long enough for a shard to expire (24 hours after it closed), one
/// read to its end is no loss; one that still held records after the
/// recorded position stops the run, naming it, where a child read from its
/// first record would have hidden the loss.
#[test]
fn a_shard_that_expired_unread_while_the_bridge_was_down_stops_the_run() {
    let sim = StreamSim::start();
    let arn = sim.create_stream("orders");
    let a = sim.open_shards(&arn)[0].clone();
    put(&sim, &arn, &a, "a", 0);
    let b = sim.rotate(&arn, &a);
    let read = put(&sim, &arn, &b, "b", 0);
    let s = Scratch::new();
    let cfg = config(&s, &sim, &format!("stream_arns = [{arn:?}]"), "");
    let out = run_until_idle(&s, &cfg);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(checkpoint(&s)["ended"], json!({"orders": [a]}));

    // Down: `b` gets a record and closes, and both shards expire.
    put(&sim, &arn, &b, "lost", 0);
    let c = sim.rotate(&arn, &b);
    let kept = put(&sim, &arn, &c, "c", 0);
    sim.remove_shard(&arn, &a);
    sim.remove_shard(&arn, &b);
    let out = run_until_idle(&s, &cfg);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&b) && err.contains(&read.to_string()) && err.contains("expired"),
        "{err}"
    );
    assert!(
        !err.contains(&format!("shard {a}")),
        "{a} was read to its end: {err}"
    );
    assert!(
        !delivered(&s.parquet()).contains_key(&c),
        "nothing after the loss"
    );

    // With `skip`: a gap record for `b`, and `c` read.
    let cfg = config(
        &s,
        &sim,
        &format!("stream_arns = [{arn:?}]\non_gap = \"skip\""),
        "",
    );
    let out = run_until_idle(&s, &cfg);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let gap = first_gap(&s);
    assert_eq!(
        (&gap["shard"], &gap["after"]),
        (&json!(b), &json!(read.to_string()))
    );
    assert_eq!(delivered(&s.parquet())[&c], [kept]);
}

#[test]
fn a_second_process_on_the_same_checkpoint_refuses_to_start_naming_the_first() {
    let sim = StreamSim::start();
    let arn = sim.create_stream("orders");
    let shard = sim.open_shards(&arn)[0].clone();
    put(&sim, &arn, &shard, "o1", 0);
    let s = Scratch::new();
    let cfg = config(
        &s,
        &sim,
        &format!("stream_arns = [{arn:?}]"),
        "max_file_age_ms = 100",
    );
    let mut first = command(&s, &cfg, None)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Running: its change is committed.
    wait_for_rows(&s.parquet(), 1);
    let second = run_until_idle(&s, &cfg);
    let text = stderr(&second);
    assert_eq!(second.status.code(), Some(1), "{text}");
    assert!(
        text.contains("checkpoint.json is in use by process")
            && text.contains(&first.id().to_string()),
        "names the first process: {text}"
    );
    // Nothing of the second got written: still one row.
    assert_eq!(read_rows(&s.parquet()).len(), 1);
    signal(&first, "TERM");
    assert!(first.wait().unwrap().success());
    // Once the first is gone, the checkpoint is free again.
    let third = run_until_idle(&s, &cfg);
    assert_eq!(third.status.code(), Some(0), "{}", stderr(&third));
}

/// Several shards failing at once (a regional outage) are one outage in
/// the log: a line when it starts and one when it ends, not one per shard
/// per retry; nothing is lost or repeated.
#[test]
fn failing_stream_calls_are_logged_once_per_outage() {
    let sim = StreamSim::start();
    let arn = sim.create_stream("customers");
    let first = sim.open_shards(&arn)[0].clone();
    let mut expected = BTreeMap::new();
    expected.insert(first.clone(), vec![put(&sim, &arn, &first, "c0", 0)]);
    let (left, right) = sim.split(&arn, &first);
    for (i, shard) in [&left, &right].into_iter().enumerate() {
        let seq = put(&sim, &arn, shard, &format!("c{}", i + 1), 0);
        expected.insert(shard.clone(), vec![seq]);
    }
    // Enough failures for several retries of the reader (each of them
    // after the SDK's own three attempts).
    sim.fail_next(
        dynamo_cdc_testkit::streams_sim::Op::GetRecords,
        15,
        dynamo_cdc_testkit::streams_sim::Fault::ServerError,
    );
    let s = Scratch::new();
    let cfg = config(&s, &sim, "tables = [\"customers\"]", "");
    // The source's retries at debug, to count them.
    let out = command(&s, &cfg, Some("1.5"))
        .args(["--log", "warn,dynamo_cdc_source=debug"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let retries = err
        .matches("DEBUG dynamo_cdc_source::events: retrying")
        .count();
    assert!(retries >= 3, "{retries} retries: {err}");
    assert_eq!(
        err.matches("DynamoDB Streams calls are failing").count(),
        1,
        "{err}"
    );
    assert_eq!(
        err.matches("DynamoDB Streams calls answered again").count(),
        1,
        "{err}"
    );
    assert!(
        !err.contains("retrying\n") && !err.contains("WARN retrying"),
        "{err}"
    );
    assert_exactly_once(&s.parquet(), &expected);
}

/// A throttled call that passes on its retry is routine back-pressure, not
/// an outage: counted, and logged at debug only.
#[test]
fn a_passing_throttle_is_not_logged_as_an_outage() {
    let sim = StreamSim::start();
    let arn = sim.create_stream("customers");
    let shard = sim.open_shards(&arn)[0].clone();
    let seq = put(&sim, &arn, &shard, "c1", 0);
    sim.fail_next(
        dynamo_cdc_testkit::streams_sim::Op::GetRecords,
        2,
        dynamo_cdc_testkit::streams_sim::Fault::Throttle,
    );
    let s = Scratch::new();
    let cfg = config(&s, &sim, "tables = [\"customers\"]", "");
    let out = run_until_idle(&s, &cfg);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("DynamoDB Streams calls"), "{err}");
    assert_exactly_once(&s.parquet(), &BTreeMap::from([(shard, vec![seq])]));
}

/// Reads the checkpoint file, or `null` before it exists.
/// The first gap record of table `orders` in the Parquet dataset.
fn first_gap(s: &Scratch) -> serde_json::Value {
    let gaps = std::fs::read_to_string(s.parquet().join("_gaps/orders.jsonl")).unwrap();
    serde_json::from_str(gaps.lines().next().unwrap()).unwrap()
}

fn checkpoint(s: &Scratch) -> serde_json::Value {
    std::fs::read_to_string(s.path().join("out/checkpoint.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

#[test]
fn start_latest_loses_nothing_to_a_kill_before_the_first_commit() {
    use dynamo_cdc_testkit::streams_sim::Op;
    let sim = StreamSim::start();
    let arn = sim.create_stream("orders");
    let root = sim.open_shards(&arn)[0].clone();
    let an_hour_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        - 3600.0;
    let old = |shard: &str, id: &str| {
        sim.put_json_created(
            &arn,
            shard,
            "INSERT",
            json!({"id": {"S": id}}),
            None,
            an_hour_ago,
        )
    };
    old(&root, "old-in-closed");
    let open = sim.rotate(&arn, &root);
    old(&open, "old-in-open");
    let s = Scratch::new();
    // Nothing is committed by age or size in the first run.
    let cfg = config(
        &s,
        &sim,
        &format!("stream_arns = [{arn:?}]\nstart = \"latest\""),
        "max_file_age_ms = 600000",
    );
    let mut child = command(&s, &cfg, None)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    // The start is recorded before the shard is read at its end.
    while checkpoint(&s)["latest_starts"]["orders"].is_null() || sim.calls(Op::GetRecords) == 0 {
        assert!(Instant::now() < deadline, "the stream was never read");
        std::thread::sleep(Duration::from_millis(10));
    }
    let recorded = &checkpoint(&s)["latest_starts"]["orders"];
    assert_eq!(recorded["closed"], json!([root]), "{recorded}");
    let after: Vec<u128> = (0..5)
        .map(|i| put(&sim, &arn, &open, &format!("new{i}"), 0))
        .collect();
    // Read, not committed, and then the process dies.
    let calls = sim.calls(Op::GetRecords);
    while sim.calls(Op::GetRecords) < calls + 2 {
        assert!(Instant::now() < deadline, "the shard was not polled again");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(read_rows(&s.parquet()).is_empty(), "nothing was committed");

    let out = command(&s, &cfg, Some("1.5"))
        .args(["--log", "info"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("leaving out changes created before the start"),
        "{}",
        stderr(&out)
    );
    assert_exactly_once(&s.parquet(), &BTreeMap::from([(open, after)]));
}
