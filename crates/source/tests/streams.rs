//! The stream source against the simulator, through the real AWS SDK: shard
//! lineage, iterator expiry, trimming, throttling and resume positions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dynamo_cdc_core::{
    Change, DeadLetter, Gap, LatestStart, Positions, SequenceNumber, ShardEnded, ShardKey, Source,
};
use dynamo_cdc_source::streams::latest::LatestFrom;
use dynamo_cdc_source::streams::sdk::{Endpoint, SdkStreams};
use dynamo_cdc_source::{
    OnGap, ShardBoard, StartAt, StreamsConfig, StreamsError, StreamsSource, TableHealth,
};
use dynamo_cdc_testkit::streams_sim::{Fault, Op, StreamSim};
use serde_json::json;

#[derive(Default)]
struct Run {
    changes: Vec<Change>,
    gaps: Vec<Gap>,
    dead: Vec<DeadLetter>,
    error: Option<StreamsError>,
    board: Option<Arc<ShardBoard>>,
    ended: Vec<ShardEnded>,
    tracking: Vec<String>,
}

impl Run {
    /// Sequence numbers read from `shard`, in order.
    fn seqs(&self, shard: &str) -> Vec<u128> {
        self.seqs_where(|c| &*c.source.shard_id == shard)
    }

    /// Sequence numbers read from `shard` of `table` (shard ids of two
    /// streams may be alike), in order.
    fn seqs_in(&self, table: &str, shard: &str) -> Vec<u128> {
        self.seqs_where(|c| &*c.source.table == table && &*c.source.shard_id == shard)
    }

    fn seqs_where(&self, keep: impl Fn(&Change) -> bool) -> Vec<u128> {
        self.changes
            .iter()
            .filter(|c| keep(c))
            .map(|c| c.source.sequence_number.as_str().parse().unwrap())
            .collect()
    }

    fn all_seqs(&self) -> Vec<u128> {
        self.seqs_where(|_| true)
    }
}

fn config(sim_arns: &[&str]) -> StreamsConfig {
    StreamsConfig {
        stream_arns: sim_arns.iter().map(|s| (*s).to_owned()).collect(),
        poll_interval: Duration::from_millis(10),
        idle_poll_interval: Duration::from_millis(40),
        shard_refresh_interval: Duration::from_millis(150),
        until_idle: Some(Duration::from_millis(1500)),
        heartbeat: Duration::from_millis(50),
        ..StreamsConfig::default()
    }
}

/// The source on the simulator, through the AWS SDK.
fn start(sim: &StreamSim, config: &StreamsConfig, resume: &Positions) -> StreamsSource {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let endpoint = Endpoint {
        region: Some("us-east-1".into()),
        endpoint_url: Some(sim.endpoint_url()),
    };
    let api = runtime.block_on(SdkStreams::connect_static(&endpoint, "test", "test"));
    StreamsSource::start_on(runtime, Arc::new(api), config, resume).unwrap()
}

/// Reads until idle (or an error), with `during` run on another thread
/// while the source reads.
fn read(
    sim: &StreamSim,
    config: &StreamsConfig,
    resume: &Positions,
    during: impl FnOnce() + Send,
) -> Run {
    let mut source = start(sim, config, resume);
    let mut run = Run {
        board: Some(source.board()),
        ..Run::default()
    };
    std::thread::scope(|s| {
        s.spawn(during);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(Instant::now() < deadline, "the source never went idle");
            match source.next_batch() {
                Ok(Some(batch)) => {
                    run.gaps.extend(batch.gaps);
                    run.dead.extend(batch.dead_letters);
                    run.changes.extend(batch.changes);
                    run.ended.extend(batch.ended);
                    run.tracking.extend(batch.tracking);
                }
                Ok(None) => break,
                Err(e) => {
                    run.error = Some(e);
                    break;
                }
            }
        }
    });
    run
}

/// Waits until the simulator has answered `n` calls of `op` (an event the
/// test needs, such as "the reader holds an iterator"), not a guessed time.
fn wait_for_calls(sim: &StreamSim, op: Op, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while sim.calls(op) < n {
        assert!(Instant::now() < deadline, "never saw {n} {op:?} calls");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn put(sim: &StreamSim, arn: &str, shard: &str, id: &str) -> u128 {
    sim.put_json(
        arn,
        shard,
        "INSERT",
        json!({"pk": {"S": id}}),
        Some((None, Some(json!({"pk": {"S": id}, "n": {"N": "1.50"}})))),
    )
}

fn positions(table: &str, at: &[(&str, u128)]) -> Positions {
    at.iter()
        .map(|(shard, seq)| {
            (
                ShardKey::new(table, *shard),
                SequenceNumber::parse(&seq.to_string()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn reads_every_record_once_in_order_and_converts_it() {
    let sim = StreamSim::start();
    let arn = sim.create_stream("orders");
    let shard = sim.open_shards(&arn)[0].clone();
    let expected: Vec<u128> = (0..25)
        .map(|i| put(&sim, &arn, &shard, &format!("k{i}")))
        .collect();
    let run = read(&sim, &config(&[&arn]), &Positions::new(), || {});
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(run.seqs(&shard), expected);
    let first = &run.changes[0];
    assert_eq!(&*first.source.table, "orders");
    assert_eq!(
        first.new_image.as_ref().unwrap()["n"],
        dynamo_cdc_core::AttributeValue::N(dynamo_cdc_core::Number::parse("1.5").unwrap())
    );
}

#[test]
fn parents_are_drained_before_children_through_rotation_split_and_early_lineage() {
    let sim = StreamSim::start();
    let arn = sim.create_stream("orders");
    let root = sim.open_shards(&arn)[0].clone();
    let mut expected = Vec::new();
    for i in 0..5 {
        expected.push(put(&sim, &arn, &root, &format!("r{i}")));
    }
    let child = sim.rotate(&arn, &root);
    for i in 0..5 {
        expected.push(put(&sim, &arn, &child, &format!("c{i}")));
    }
    let (a, b) = sim.split(&arn, &child);
    expected.push(put(&sim, &arn, &a, "a0"));
    expected.push(put(&sim, &arn, &b, "b0"));
    // `a` lists children while still open: they must wait for it.
    let early = sim.add_children_early(&arn, &a, 1);
    let (tx, rx) = std::sync::mpsc::channel();
    let run = read(&sim, &config(&[&arn]), &Positions::new(), || {
        // Once `a` is being read (the root, the child and `a`'s first
        // pages answered), write to it late.
        wait_for_calls(&sim, Op::GetRecords, 4);
        tx.send(late_writes(&sim, &arn, &a, &early[0])).unwrap();
    });
    let (a_late, kid) = rx.recv().unwrap();
    expected.push(a_late);
    assert!(run.error.is_none(), "{:?}", run.error);
    let tail = run.seqs(&early[0]);
    assert_eq!(tail, kid, "both records of the late child");
    expected.extend(kid);
    // Everything exactly once.
    let mut got = run.all_seqs();
    got.sort_unstable();
    expected.sort_unstable();
    assert_eq!(got, expected);
    // Order: no child record before the last record of its parent.
    let pos = |seq: u128| run.all_seqs().iter().position(|s| *s == seq).unwrap();
    let last_root = *run.seqs(&root).last().unwrap();
    let first_child = run.seqs(&child)[0];
    assert!(pos(last_root) < pos(first_child));
    let last_child = *run.seqs(&child).last().unwrap();
    assert!(pos(last_child) < pos(run.seqs(&a)[0]));
    assert!(pos(last_child) < pos(run.seqs(&b)[0]));
    let last_a = *run.seqs(&a).last().unwrap();
    assert!(
        pos(last_a) < pos(tail[0]),
        "the early child waited for its parent"
    );
}

/// Writes to `a` after the reader started, then to its early child, then
/// closes `a`: returns what it wrote to each.
fn late_writes(sim: &StreamSim, arn: &str, a: &str, kid: &str) -> (u128, Vec<u128>) {
    let a_late = put(sim, arn, a, "a-late");
    std::thread::sleep(Duration::from_millis(200));
    let k0 = put(sim, arn, kid, "kid-0");
    sim.close(arn, a);
    let k1 = put(sim, arn, kid, "kid-1");
    (a_late, vec![k0, k1])
}

#[test]
fn a_child_whose_parent_is_not_listed_is_read() {
    let sim = StreamSim::start();
    let arn = sim.create_stream("orders");
    let root = sim.open_shards(&arn)[0].clone();
    put(&sim, &arn, &root, "old");
    let child = sim.rotate(&arn, &root);
    let seq = put(&sim, &arn, &child, "new");
    sim.remove_shard(&arn, &root); // trimmed after 24 hours
    let run = read(&sim, &config(&[&arn]), &Positions::new(), || {});
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(run.seqs(&child), [seq]);
}

/// A shard read to its end is told, with its last change, after its last
/// page: the checkpoint keeps it as ended once the sinks hold that change.
#[test]
fn a_shard_read_to_its_end_is_told_with_its_last_change() {
    let sim = StreamSim::start();
    let arn = sim.create_stream("orders");
    let parent = sim.open_shards(&arn)[0].clone();
    let last = put(&sim, &arn, &parent, "a");
    let child = sim.rotate(&arn, &parent);
    put(&sim, &arn, &child, "b");
    let run = read(&sim, &config(&[&arn]), &Positions::new(), || {});
    assert!(run.error.is_none(), "{:?}", run.error);
    let seq = |n: u128| SequenceNumber::parse(&n.to_string()).unwrap();
    assert_eq!(
        run.ended,
        [ShardEnded {
            key: ShardKey::new("orders", parent.as_str()),
            last: Some(seq(last)),
        }],
        "the open child is not ended"
    );
    // A table the checkpoint tracked nothing of is tracked from now on.
    assert_eq!(run.tracking, ["orders"]);
}

/// A shard some sink holds a position of that the stream no longer lists
/// (it expired, 24 hours after it closed) lost what it held after that
/// position unless it was read to its end: with `on_gap = "fail"` the run
/// stops, naming it; with `"skip"` a gap record stands for it and its
/// children are read.
#[test]
fn a_shard_that_expired_before_it_was_read_to_its_end_is_a_gap() {
    let sim = StreamSim::start();
    let arn = sim.create_stream("orders");
    let parent = sim.open_shards(&arn)[0].clone();
    let delivered = put(&sim, &arn, &parent, "a");
    put(&sim, &arn, &parent, "lost");
    let child = sim.rotate(&arn, &parent);
    let kept = put(&sim, &arn, &child, "b");
    sim.remove_shard(&arn, &parent);
    let resume = positions("orders", &[(&parent, delivered)]);
    let tracked = |ended: &[&str]| {
        let mut cfg = config(&[&arn]);
        cfg.ended.insert(
            "orders".to_owned(),
            ended.iter().map(|s| (*s).to_owned()).collect(),
        );
        cfg
    };

    let run = read(&sim, &tracked(&[]), &resume, || {});
    match run.error {
        Some(StreamsError::Gap { shard, after, .. }) => {
            assert_eq!(
                (shard.as_str(), after.map(|a| a.to_string())),
                (parent.as_str(), Some(delivered.to_string()))
            );
        }
        other => panic!("{other:?}"),
    }

    let mut skip = tracked(&[]);
    skip.on_gap = OnGap::Skip;
    let run = read(&sim, &skip, &resume, || {});
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(run.gaps.len(), 1);
    assert_eq!(
        (run.gaps[0].shard.as_str(), run.gaps[0].after.as_deref()),
        (parent.as_str(), Some(delivered.to_string().as_str()))
    );
    assert_eq!(run.seqs(&child), [kept]);
    assert!(
        run.ended.iter().any(|e| *e.key.shard == *parent),
        "told once"
    );

    // A sink that holds no position of it (added later) does not hide the
    // loss from the others: the shards any sink holds are checked.
    let mut other_sink_new = tracked(&[]);
    other_sink_new.held = resume.clone();
    let run = read(&sim, &other_sink_new, &Positions::new(), || {});
    assert!(
        matches!(&run.error, Some(StreamsError::Gap { shard, .. }) if *shard == parent),
        "{:?}",
        run.error
    );

    // Read to its end before it expired: no gap.
    let run = read(&sim, &tracked(&[&parent]), &resume, || {});
    assert!(
        run.error.is_none() && run.gaps.is_empty(),
        "{:?} {:?}",
        run.error,
        run.gaps
    );
    assert_eq!(run.seqs(&child), [kept]);

    // Not tracked yet (a checkpoint of an earlier version): taken for
    // ended, as before, and the table tracked from now on.
    let run = read(&sim, &config(&[&arn]), &resume, || {});
    assert!(
        run.error.is_none() && run.gaps.is_empty(),
        "{:?} {:?}",
        run.error,
        run.gaps
    );
    assert_eq!(run.tracking, ["orders"]);
    assert_eq!(
        run.ended,
        [ShardEnded {
            key: ShardKey::new("orders", parent.as_str()),
            last: None,
        }]
    );
}

/// A listing whose pages go round in circles misses the shards on the
/// pages after: they are not taken for expired (a false gap), and are read
/// once a listing gives them.
#[test]
fn a_listing_cut_short_by_a_repeated_cursor_reports_no_expired_shard() {
    let sim = StreamSim::start();
    let arn = sim.create_stream("orders");
    let s0 = sim.open_shards(&arn)[0].clone();
    let s1 = sim.rotate(&arn, &s0);
    let s2 = sim.rotate(&arn, &s1);
    let delivered = put(&sim, &arn, &s2, "a");
    let after = put(&sim, &arn, &s2, "b");
    sim.set_describe_page_size(1);
    // The first page as it is, the second naming its own start as next.
    sim.fail_next(Op::DescribeStream, 2, Fault::RepeatCursor);
    let mut cfg = config(&[&arn]);
    cfg.ended
        .insert("orders".to_owned(), [s0.clone(), s1.clone()].into());
    let run = read(&sim, &cfg, &positions("orders", &[(&s2, delivered)]), || {});
    assert!(run.error.is_none(), "{:?}", run.error);
    assert!(run.gaps.is_empty(), "{:?}", run.gaps);
    assert_eq!(run.seqs(&s2), [after]);
}

/// A shard that vanishes while it is read (with `on_gap = "skip"`) leaves a
/// gap record, and counts as ended with it: a later start that cannot find
/// it does not report it again.
#[test]
fn a_shard_that_vanishes_while_read_is_a_gap_once() {
    let sim = StreamSim::start();
    let arn = sim.create_stream("orders");
    let shard = sim.open_shards(&arn)[0].clone();
    let first = put(&sim, &arn, &shard, "a");
    let mut cfg = config(&[&arn]);
    cfg.on_gap = OnGap::Skip;
    let run = read(&sim, &cfg, &Positions::new(), || {
        // The record read, the shard polled again: then it goes.
        wait_for_calls(&sim, Op::GetRecords, 2);
        sim.remove_shard(&arn, &shard);
    });
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(run.seqs(&shard), [first]);
    assert_eq!(run.gaps.len(), 1, "{:?}", run.gaps);
    assert_eq!(
        run.gaps[0].after.as_deref(),
        Some(first.to_string().as_str())
    );
    assert!(
        run.ended.contains(&ShardEnded {
            key: ShardKey::new("orders", shard.as_str()),
            last: Some(SequenceNumber::parse(&first.to_string()).unwrap()),
        }),
        "{:?}",
        run.ended
    );
}

#[test]
fn expired_iterators_are_renewed_after_the_last_record_read() {
    let sim = StreamSim::start();
    sim.set_iterator_ttl(Duration::from_millis(60));
    let arn = sim.create_stream("orders");
    let shard = sim.open_shards(&arn)[0].clone();
    let mut expected: Vec<u128> = (0..3)
        .map(|i| put(&sim, &arn, &shard, &format!("k{i}")))
        .collect();
    let mut cfg = config(&[&arn]);
    cfg.idle_poll_interval = Duration::from_millis(150); // longer than the TTL
    let (tx, rx) = std::sync::mpsc::channel();
    let run = read(&sim, &cfg, &Positions::new(), || {
        let mut late = Vec::new();
        for i in 0..4 {
            std::thread::sleep(Duration::from_millis(200));
            late.push(put(&sim, &arn, &shard, &format!("late{i}")));
        }
        tx.send(late).unwrap();
    });
    expected.extend(rx.recv().unwrap());
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(run.seqs(&shard), expected);
    assert!(
        sim.calls(Op::GetShardIterator) > 2,
        "iterators were renewed ({} GetShardIterator calls)",
        sim.calls(Op::GetShardIterator)
    );
}

/// A service that refuses iterator after iterator (or a shard at the edge
/// of retention, whose new iterator points at trimmed records again) is not
/// asked twice per round trip: the renewals in a row wait longer and
/// longer (backoff at least 25, 50, 100, 200 ms from the second on), and
/// reading goes on once a page comes.
#[test]
fn iterators_refused_in_a_row_are_renewed_with_a_growing_wait() {
    let sim = StreamSim::start();
    let arn = sim.create_stream("orders");
    let shard = sim.open_shards(&arn)[0].clone();
    let expected: Vec<u128> = (0..3)
        .map(|i| put(&sim, &arn, &shard, &format!("k{i}")))
        .collect();
    sim.fail_next(Op::GetRecords, 5, Fault::ExpiredIterator);
    // When the first iterator and the last renewal were asked for.
    let when = |calls: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while sim.calls(Op::GetShardIterator) < calls {
            assert!(
                Instant::now() < deadline,
                "{calls} GetShardIterator calls never came"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        Instant::now()
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let run = read(&sim, &config(&[&arn]), &Positions::new(), || {
        let first = when(1);
        tx.send(when(6) - first).unwrap();
    });
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(run.seqs(&shard), expected);
    // The first iterator, and one for each refusal.
    assert_eq!(sim.calls(Op::GetShardIterator), 6);
    let renewing = rx.recv().unwrap();
    assert!(
        renewing >= Duration::from_millis(25 + 50 + 100 + 200),
        "five refusals in a row were renewed within {renewing:?}"
    );
}

#[test]
fn throttling_server_errors_and_slow_answers_lose_nothing() {
    let sim = StreamSim::start();
    let arn = sim.create_stream("orders");
    let shard = sim.open_shards(&arn)[0].clone();
    let mut cfg = config(&[&arn]);
    cfg.records_per_call = 4;
    let expected: Vec<u128> = (0..20)
        .map(|i| put(&sim, &arn, &shard, &format!("k{i}")))
        .collect();
    sim.fail_next(Op::DescribeStream, 4, Fault::ServerError);
    sim.fail_next(Op::GetShardIterator, 3, Fault::Throttle);
    sim.fail_next(Op::GetRecords, 7, Fault::Throttle);
    sim.fail_next(Op::GetRecords, 4, Fault::Unavailable);
    sim.fail_next(Op::GetRecords, 3, Fault::ServerError);
    sim.fail_next(Op::GetRecords, 2, Fault::Slow(Duration::from_millis(300)));
    let run = read(&sim, &cfg, &Positions::new(), || {});
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(run.seqs(&shard), expected);
    assert!(
        sim.calls(Op::GetRecords) > 5 + 14,
        "faults were met and retried"
    );
}

#[test]
fn resume_positions_skip_what_was_delivered() {
    let sim = StreamSim::start();
    let arn = sim.create_stream("orders");
    let shard = sim.open_shards(&arn)[0].clone();
    let seqs: Vec<u128> = (0..6)
        .map(|i| put(&sim, &arn, &shard, &format!("k{i}")))
        .collect();
    let resume = positions("orders", &[(&shard, seqs[3])]);
    let run = read(&sim, &config(&[&arn]), &resume, || {});
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(run.seqs(&shard), seqs[4..]);
}

#[test]
fn start_latest_reads_only_new_records_and_later_shards_from_their_start() {
    let sim = StreamSim::start();
    let arn = sim.create_stream("orders");
    let root = sim.open_shards(&arn)[0].clone();
    put(&sim, &arn, &root, "before");
    let mut cfg = config(&[&arn]);
    cfg.start = StartAt::Latest;
    let (tx, rx) = std::sync::mpsc::channel();
    let run = read(&sim, &cfg, &Positions::new(), || {
        // A GetRecords answer means the LATEST iterator was taken: writes
        // from now on are after it.
        wait_for_calls(&sim, Op::GetRecords, 1);
        let after = put(&sim, &arn, &root, "after");
        let child = sim.rotate(&arn, &root);
        let in_child = put(&sim, &arn, &child, "child");
        tx.send((after, child, in_child)).unwrap();
    });
    let (after, child, in_child) = rx.recv().unwrap();
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(run.seqs(&root), [after]);
    assert_eq!(run.seqs(&child), [in_child]);
}

#[test]
fn until_idle_hands_over_the_pages_already_read_before_stopping() {
    // Quiet counts from when a reader last got records: reading on at the
    // tip, it gets empty answers while its pages wait in the channel. A
    // pipeline away for longer than `until_idle` (a busy sink) must still
    // get those pages, not a stop with them waiting.
    let sim = StreamSim::start();
    let arn = sim.create_stream("orders");
    let shard = sim.open_shards(&arn)[0].clone();
    let want: Vec<u128> = (0..3)
        .map(|i| put(&sim, &arn, &shard, &format!("k{i}")))
        .collect();
    let mut cfg = config(&[&arn]);
    cfg.records_per_call = 1; // a page each, all fitting in the channel
    cfg.until_idle = Some(Duration::from_millis(300));
    let mut source = start(&sim, &cfg, &Positions::new());
    // Three pages with records, then empty answers at the tip.
    wait_for_calls(&sim, Op::GetRecords, 5);
    // Away for longer than `until_idle` (the scenario, not a wait for an
    // event): the reader keeps getting empty answers meanwhile.
    std::thread::sleep(Duration::from_millis(600));
    let mut run = Run::default();
    while let Some(batch) = source.next_batch().unwrap() {
        run.changes.extend(batch.changes);
    }
    assert_eq!(run.all_seqs(), want);
}

#[test]
fn start_latest_does_not_apply_to_a_table_a_sink_has_read() {
    // A sink added to a running pipeline: the resume point (the lowest
    // over the sinks) holds no shard, but another sink has read the table.
    // Read at its end, that sink would miss what came since its position.
    let sim = StreamSim::start();
    let arn = sim.create_stream("orders");
    let shard = sim.open_shards(&arn)[0].clone();
    let before = put(&sim, &arn, &shard, "before");
    let mut cfg = config(&[&arn]);
    cfg.start = StartAt::Latest;
    cfg.tables_read = ["orders".to_owned()].into();
    let run = read(&sim, &cfg, &Positions::new(), || {});
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(run.seqs(&shard), [before], "read from its first record");
}

#[test]
fn an_iterator_at_the_tip_that_expires_before_a_record_is_read_loses_nothing() {
    // `start = "latest"`: the reader holds a `LATEST` iterator and reads
    // nothing yet. A write comes in, then the iterator expires (here the
    // idle poll outlasts it; in production, an outage of GetRecords does).
    // A new `LATEST` would start past that write.
    let sim = StreamSim::start();
    sim.set_iterator_ttl(Duration::from_millis(60));
    let arn = sim.create_stream("orders");
    let shard = sim.open_shards(&arn)[0].clone();
    put_created(&sim, &arn, &shard, "an hour old", now_s() - 3600.0);
    let mut cfg = config(&[&arn]);
    cfg.start = StartAt::Latest;
    cfg.idle_poll_interval = Duration::from_millis(150); // longer than the TTL
    let (tx, rx) = std::sync::mpsc::channel();
    let run = read(&sim, &cfg, &Positions::new(), || {
        wait_for_calls(&sim, Op::GetRecords, 1);
        let held = put(&sim, &arn, &shard, "while the iterator was held");
        wait_for_calls(&sim, Op::GetShardIterator, 2);
        let later = put(&sim, &arn, &shard, "after it was renewed");
        tx.send([held, later]).unwrap();
    });
    let want = rx.recv().unwrap();
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(
        run.seqs(&shard),
        want,
        "both writes after the start, and nothing from before it"
    );
}

#[test]
fn a_latest_start_waiting_for_a_reader_slot_loses_nothing_written_meanwhile() {
    // `start = "latest"` with fewer reader slots than open shards (over
    // two tables): one shard is read from its tip, the other waits for the
    // slot. What is written to it meanwhile is after the start: a `LATEST`
    // taken when the slot comes would pass over it.
    let sim = StreamSim::start();
    let orders = sim.create_stream("orders");
    let customers = sim.create_stream("customers");
    let a = sim.open_shards(&orders)[0].clone();
    let b = sim.open_shards(&customers)[0].clone();
    put_created(&sim, &orders, &a, "an hour old", now_s() - 3600.0);
    put_created(&sim, &customers, &b, "an hour old", now_s() - 3600.0);
    let mut cfg = config(&[&orders, &customers]);
    cfg.start = StartAt::Latest;
    cfg.max_concurrent_shards = 1;
    let (tx, rx) = std::sync::mpsc::channel();
    let run = read(&sim, &cfg, &Positions::new(), || {
        // Both streams were listed (each lists at most every refresh
        // interval, so four listings cover both), and one reader holds its
        // `LATEST` iterator: the other shard waits for the slot.
        wait_for_calls(&sim, Op::DescribeStream, 4);
        wait_for_calls(&sim, Op::GetRecords, 1);
        let written = [
            put(&sim, &orders, &a, "meanwhile"),
            put(&sim, &customers, &b, "meanwhile"),
        ];
        // Both shards close: the reader drains its shard and frees the
        // slot for the one waiting.
        sim.rotate(&orders, &a);
        sim.rotate(&customers, &b);
        tx.send(written).unwrap();
    });
    let written = rx.recv().unwrap();
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(
        [run.seqs_in("orders", &a), run.seqs_in("customers", &b)],
        written.map(|seq| vec![seq]),
        "each shard's write after the start, and nothing from before it"
    );
}

#[test]
fn empty_pages_short_of_the_records_do_not_count_as_read_through() {
    // A snapshot releases its rows once every shard is read through their
    // read time. An empty page may come from a part of the shard short of
    // its records: taken for "read through now", it would let a row go
    // ahead of an older change still unread.
    let sim = StreamSim::start();
    let arn = sim.create_stream("orders");
    let shard = sim.open_shards(&arn)[0].clone();
    let created_s = now_s() - 100.0;
    put_created(&sim, &arn, &shard, "a", created_s);
    sim.fail_next(Op::GetRecords, 2, Fault::EmptyPage);
    let mut cfg = config(&[&arn]);
    cfg.report_read_through = true;
    let mut source = start(&sim, &cfg, &Positions::new());
    let mut before_the_record = Vec::new();
    let mut after_it = Vec::new();
    let mut seen = false;
    while let Some(batch) = source.next_batch().unwrap() {
        if seen {
            after_it.extend(batch.read_through.iter().map(|(_, ms)| *ms));
        } else {
            before_the_record.extend(batch.read_through.iter().map(|(_, ms)| *ms));
        }
        seen |= !batch.changes.is_empty();
    }
    assert!(seen, "the record is read");
    // Nothing claims a time past the record before it is read (its own
    // page says "read through its creation").
    let created_ms = (created_s * 1000.0) as i64;
    assert!(
        before_the_record.iter().all(|ms| *ms <= created_ms + 1_000),
        "read through {before_the_record:?} claimed before the record created at {created_ms}"
    );
    // Empty pages at the tip, several in a row, move it on, and on and
    // on while the shard stays quiet (a snapshot waits for it).
    assert!(
        after_it.iter().any(|ms| *ms > created_ms + 50_000),
        "{after_it:?}"
    );
    assert!(
        after_it.windows(2).all(|w| w[0] < w[1]) && after_it.len() >= 3,
        "read through rises with every empty page past the third: {after_it:?}"
    );
}

fn put_created(sim: &StreamSim, arn: &str, shard: &str, id: &str, created_s: f64) -> u128 {
    sim.put_json_created(
        arn,
        shard,
        "INSERT",
        json!({"pk": {"S": id}}),
        None,
        created_s,
    )
}

fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// `start = Latest` with a start recorded at `at_s` (epoch seconds).
fn latest_config(arn: &str, at_s: f64, closed: &[&str], fresh: bool) -> StreamsConfig {
    let mut cfg = config(&[arn]);
    cfg.start = StartAt::Latest;
    let start = LatestStart {
        at_ms: (at_s * 1000.0) as i64,
        closed: closed.iter().map(|s| (*s).to_owned()).collect(),
    };
    cfg.latest
        .insert("orders".into(), LatestFrom { start, fresh });
    cfg
}

#[test]
fn after_a_recorded_latest_start_shards_without_a_position_are_read_from_it_on() {
    let sim = StreamSim::start();
    let arn = sim.create_stream("orders");
    let closed = sim.open_shards(&arn)[0].clone();
    let an_hour_ago = now_s() - 3600.0;
    put_created(&sim, &arn, &closed, "long-closed", an_hour_ago);
    let open = sim.rotate(&arn, &closed);
    put_created(&sim, &arn, &open, "before", an_hour_ago);
    // The start was recorded; a process read these at the end and stopped
    // before it committed them.
    let at = now_s();
    let after: Vec<u128> = (0..3)
        .map(|i| put(&sim, &arn, &open, &format!("after{i}")))
        .collect();
    let cfg = latest_config(&arn, at, &[&closed], false);
    let run = read(&sim, &cfg, &Positions::new(), || {});
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(run.seqs(&open), after, "from the start on, nothing older");
    assert_eq!(run.seqs(&closed), [], "closed at the start: not read");
    assert_eq!(
        sim.calls(Op::GetShardIterator),
        1,
        "the shard closed at the start is not even opened"
    );
}

#[test]
fn a_shard_closed_after_a_recorded_latest_start_is_read_from_it_on() {
    let sim = StreamSim::start();
    let arn = sim.create_stream("orders");
    let root = sim.open_shards(&arn)[0].clone();
    put_created(&sim, &arn, &root, "before", now_s() - 3600.0);
    let at = now_s();
    let in_root = put(&sim, &arn, &root, "after");
    let child = sim.rotate(&arn, &root);
    let in_child = put(&sim, &arn, &child, "later");
    // The root closed after the start, so it is not in the recorded set.
    let cfg = latest_config(&arn, at, &[], false);
    let run = read(&sim, &cfg, &Positions::new(), || {});
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(run.seqs(&root), [in_root]);
    assert_eq!(run.seqs(&child), [in_child]);
}

#[test]
fn a_fresh_latest_start_reads_open_shards_at_their_end_and_skips_those_recorded_closed() {
    let sim = StreamSim::start();
    let arn = sim.create_stream("orders");
    let closed = sim.open_shards(&arn)[0].clone();
    put(&sim, &arn, &closed, "closed");
    let open = sim.rotate(&arn, &closed);
    put(&sim, &arn, &open, "before");
    let cfg = latest_config(&arn, now_s(), &[&closed], true);
    let (tx, rx) = std::sync::mpsc::channel();
    let run = read(&sim, &cfg, &Positions::new(), || {
        wait_for_calls(&sim, Op::GetRecords, 1);
        tx.send(put(&sim, &arn, &open, "after")).unwrap();
    });
    let after = rx.recv().unwrap();
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(run.seqs(&open), [after]);
    assert_eq!(run.seqs(&closed), []);
}

#[test]
fn trimmed_records_fail_the_run_naming_table_shard_and_range() {
    let sim = StreamSim::start();
    let arn = sim.create_stream("orders");
    let shard = sim.open_shards(&arn)[0].clone();
    let seqs: Vec<u128> = (0..6)
        .map(|i| put(&sim, &arn, &shard, &format!("k{i}")))
        .collect();
    sim.trim(&arn, &shard, 4); // seqs[0..4] are gone
    let resume = positions("orders", &[(&shard, seqs[1])]);
    let run = read(&sim, &config(&[&arn]), &resume, || {});
    let error = run.error.expect("the gap stops the run").to_string();
    assert!(error.contains("table orders"), "{error}");
    assert!(error.contains(&shard), "{error}");
    assert!(error.contains(&seqs[1].to_string()), "{error}");
    assert!(error.contains(&seqs[4].to_string()), "oldest held: {error}");
    assert!(
        run.changes.is_empty(),
        "nothing after the gap was delivered"
    );
}

#[test]
fn trimmed_records_with_skip_leave_a_gap_record_and_go_on() {
    let sim = StreamSim::start();
    let arn = sim.create_stream("orders");
    let shard = sim.open_shards(&arn)[0].clone();
    let seqs: Vec<u128> = (0..6)
        .map(|i| put(&sim, &arn, &shard, &format!("k{i}")))
        .collect();
    sim.trim(&arn, &shard, 4);
    let resume = positions("orders", &[(&shard, seqs[1])]);
    let mut cfg = config(&[&arn]);
    cfg.on_gap = OnGap::Skip;
    let run = read(&sim, &cfg, &resume, || {});
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(run.seqs(&shard), seqs[4..]);
    assert_eq!(run.gaps.len(), 1);
    let gap = &run.gaps[0];
    assert_eq!(
        (gap.table.as_str(), gap.shard.as_str()),
        ("orders", shard.as_str())
    );
    assert_eq!(gap.after.as_deref(), Some(seqs[1].to_string().as_str()));
    assert_eq!(
        gap.resumed_at.as_deref(),
        Some(seqs[4].to_string().as_str())
    );
}

#[test]
fn a_gap_is_reported_once_when_the_iterator_after_it_expires_before_a_record() {
    // Everything after the position was trimmed and nothing new came: the
    // reader goes on from the oldest record (none), its iterator expires
    // while it waits, and it seeks after the old position again.
    let sim = StreamSim::start();
    sim.set_iterator_ttl(Duration::from_millis(60));
    let arn = sim.create_stream("orders");
    let shard = sim.open_shards(&arn)[0].clone();
    let seqs: Vec<u128> = (0..4)
        .map(|i| put(&sim, &arn, &shard, &format!("k{i}")))
        .collect();
    sim.trim(&arn, &shard, 4);
    let resume = positions("orders", &[(&shard, seqs[1])]);
    let mut cfg = config(&[&arn]);
    cfg.on_gap = OnGap::Skip;
    cfg.idle_poll_interval = Duration::from_millis(150); // longer than the TTL
    let run = read(&sim, &cfg, &resume, || {
        wait_for_calls(&sim, Op::GetShardIterator, 4);
    });
    assert!(run.error.is_none(), "{:?}", run.error);
    assert!(run.seqs(&shard).is_empty());
    assert_eq!(run.gaps.len(), 1, "{:?}", run.gaps);
    assert_eq!(
        run.gaps[0].after.as_deref(),
        Some(seqs[1].to_string().as_str())
    );
}

#[test]
fn trimming_while_reading_an_expired_position_is_a_gap_too() {
    let sim = StreamSim::start();
    let arn = sim.create_stream("orders");
    let shard = sim.open_shards(&arn)[0].clone();
    let first = put(&sim, &arn, &shard, "k0");
    let mut cfg = config(&[&arn]);
    cfg.on_gap = OnGap::Skip;
    cfg.idle_poll_interval = Duration::from_millis(300);
    let (tx, rx) = std::sync::mpsc::channel();
    let run = read(&sim, &cfg, &Positions::new(), || {
        std::thread::sleep(Duration::from_millis(150));
        // Written and trimmed between two polls: never readable.
        let lost = put(&sim, &arn, &shard, "lost");
        sim.trim(&arn, &shard, 2);
        let kept = put(&sim, &arn, &shard, "kept");
        tx.send((lost, kept)).unwrap();
    });
    let (_lost, kept) = rx.recv().unwrap();
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(run.seqs(&shard), [first, kept]);
    assert_eq!(run.gaps.len(), 1, "{:?}", run.gaps);
    assert_eq!(
        run.gaps[0].after.as_deref(),
        Some(first.to_string().as_str())
    );
}

#[test]
fn listings_are_paged_and_bad_records_are_dead_lettered_not_dropped() {
    let sim = StreamSim::start();
    sim.set_describe_page_size(1);
    let arn = sim.create_stream("orders");
    let root = sim.open_shards(&arn)[0].clone();
    let good = put(&sim, &arn, &root, "k0");
    let bad = sim.put_json(
        &arn,
        &root,
        "INSERT",
        json!({"pk": {"S": "bad"}}),
        Some((
            None,
            Some(
                json!({"pk": {"S": "bad"}, "n": {"N": "123456789012345678901234567890123456789"}}),
            ),
        )),
    );
    let (a, b) = sim.split(&arn, &root);
    let in_a = put(&sim, &arn, &a, "a");
    let in_b = put(&sim, &arn, &b, "b");
    let run = read(&sim, &config(&[&arn]), &Positions::new(), || {});
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(run.seqs(&root), [good]);
    assert_eq!(run.seqs(&a), [in_a]);
    assert_eq!(run.seqs(&b), [in_b]);
    assert_eq!(run.dead.len(), 1);
    let letter = &run.dead[0];
    assert_eq!(
        letter.sequence_number.as_deref(),
        Some(bad.to_string().as_str())
    );
    assert!(letter.error.contains("NewImage.n"), "{}", letter.error);
    assert!(letter.error.contains("38"), "{}", letter.error);
    assert!(sim.calls(Op::DescribeStream) >= 3, "one call per page");
}

#[test]
fn until_idle_waits_out_a_throttling_storm_longer_than_itself() {
    // Found by the chaos harness: a shard that is being throttled has not
    // "returned no records"; stopping then would end a batch job early.
    let sim = StreamSim::start();
    let arn = sim.create_stream("orders");
    let shard = sim.open_shards(&arn)[0].clone();
    let expected: Vec<u128> = (0..5)
        .map(|i| put(&sim, &arn, &shard, &format!("k{i}")))
        .collect();
    sim.fail_next(Op::GetRecords, 25, Fault::Throttle);
    let mut cfg = config(&[&arn]);
    cfg.until_idle = Some(Duration::from_millis(800));
    let run = read(&sim, &cfg, &Positions::new(), || {});
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(run.seqs(&shard), expected);
}

#[test]
fn until_idle_waits_for_a_first_answer_slower_than_itself() {
    // Found by the chaos harness on a loaded machine: the endpoint took
    // longer than `until_idle` to answer the first GetRecords, and the run
    // stopped as idle before it had read anything. Waiting for an answer
    // is not quiet; nor is a slow answer later on.
    let sim = StreamSim::start();
    let arn = sim.create_stream("orders");
    let shard = sim.open_shards(&arn)[0].clone();
    let expected: Vec<u128> = (0..5)
        .map(|i| put(&sim, &arn, &shard, &format!("k{i}")))
        .collect();
    sim.fail_next(Op::GetRecords, 1, Fault::Slow(Duration::from_millis(1200)));
    let mut cfg = config(&[&arn]);
    cfg.until_idle = Some(Duration::from_millis(400));
    let run = read(&sim, &cfg, &Positions::new(), || {});
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(run.seqs(&shard), expected);
}

#[test]
fn until_idle_walks_a_long_lineage_of_read_shards_before_stopping() {
    // Found by the chaos harness's long profile: after many rotations, a
    // restart walks every closed shard after its position (an iterator and
    // an empty page each, then a listing for its child) before it reaches
    // the open one. No shard returns records meanwhile, yet the source is
    // catching up, not idle: a finished shard counts as progress.
    let sim = StreamSim::start();
    let arn = sim.create_stream("orders");
    let mut shard = sim.open_shards(&arn)[0].clone();
    for _ in 0..12 {
        shard = sim.rotate(&arn, &shard);
    }
    let expected: Vec<u128> = (0..3)
        .map(|i| put(&sim, &arn, &shard, &format!("k{i}")))
        .collect();
    let mut cfg = config(&[&arn]);
    cfg.until_idle = Some(Duration::from_millis(600));
    let run = read(&sim, &cfg, &Positions::new(), || {});
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(run.seqs(&shard), expected);
}

fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(since.as_millis()).unwrap()
}

#[test]
fn the_board_shows_the_table_until_what_was_read_is_delivered() {
    let sim = StreamSim::start();
    let arn = sim.create_stream("orders");
    let root = sim.open_shards(&arn)[0].clone();
    for i in 0..3 {
        put(&sim, &arn, &root, &format!("r{i}"));
    }
    let child = sim.rotate(&arn, &root);
    put(&sim, &arn, &child, "c0");
    let run = read(&sim, &config(&[&arn]), &Positions::new(), || {});
    assert!(run.error.is_none(), "{:?}", run.error);
    let board = run.board.as_ref().unwrap();
    assert_eq!(board.streams_answered(), 1);
    assert!(board.all_streams_answered());

    // Read, not delivered: behind, and the retention clock is running.
    let [health] = board.snapshot(now_ms()).try_into().unwrap();
    assert_eq!(health.table, "orders");
    assert!(health.lag_seconds > 0.0, "{health:?}");
    assert!(health.time_to_data_loss_seconds < 86_400.0, "{health:?}");

    // The sinks made everything durable: the drained parent leaves the
    // board, and the open child, caught up, reads as such.
    for shard in [&root, &child] {
        let last = *run.seqs(shard).last().unwrap();
        let seq = SequenceNumber::parse(&last.to_string()).unwrap();
        board.delivered(&ShardKey::new("orders", shard.as_str()), &seq);
    }
    assert_eq!(
        board.snapshot(now_ms()),
        [TableHealth {
            table: "orders".into(),
            lag_seconds: 0.0,
            time_to_data_loss_seconds: 86_400.0,
        }]
    );
}

#[test]
fn time_the_pipeline_spends_away_is_not_idle() {
    // A sink waiting out a broker holds the pipeline; the readers are held
    // back by the full channel, not idle. Records written meanwhile must be
    // read before `until_idle` stops the source.
    let sim = StreamSim::start();
    let arn = sim.create_stream("orders");
    let shard = sim.open_shards(&arn)[0].clone();
    let first = put(&sim, &arn, &shard, "a");
    let mut cfg = config(&[&arn]);
    cfg.until_idle = Some(Duration::from_millis(500));
    let mut source = start(&sim, &cfg, &Positions::new());
    let mut seqs = Vec::new();
    while !seqs.contains(&first) {
        let batch = source.next_batch().unwrap().expect("not idle yet");
        seqs.extend(
            batch
                .changes
                .iter()
                .map(|c| c.source.sequence_number.as_str().parse::<u128>().unwrap()),
        );
    }
    // The pipeline is away (a sink pausing) for twice `until_idle`, and a
    // record is written meanwhile.
    let second = put(&sim, &arn, &shard, "b");
    std::thread::sleep(Duration::from_millis(1000));
    while let Some(batch) = source.next_batch().unwrap() {
        seqs.extend(
            batch
                .changes
                .iter()
                .map(|c| c.source.sequence_number.as_str().parse::<u128>().unwrap()),
        );
    }
    assert_eq!(seqs, [first, second]);
}
