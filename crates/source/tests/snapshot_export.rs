//! The export path of a snapshot against the stream simulator, through the
//! AWS SDK: point-in-time recovery checked, S0 recorded before the export
//! is asked for, the export waited for, its files read in DynamoDB's real
//! layout (manifest summary, files manifest, gzipped data files), rows
//! numbered by file and line so that a restart hands over exactly what the
//! sinks lack.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use dynamo_cdc_core::{Change, Positions, SequenceNumber, ShardKey, SnapshotMarker};
use dynamo_cdc_source::snapshot::{
    ExportObjects, LocalBucket, ReadFailure, SnapshotError, SnapshotMethod, SnapshotMode,
    SnapshotSettings, Snapshots,
};
use dynamo_cdc_source::streams::sdk::{Endpoint, SdkStreams};
use dynamo_cdc_testkit::streams_sim::StreamSim;
use serde_json::json;

const TABLE: &str = "orders";

fn settings(journal: &Path) -> SnapshotSettings {
    SnapshotSettings {
        mode: SnapshotMode::Initial,
        method: SnapshotMethod::Export,
        segments: 8,
        max_rcu: 100.0,
        journal: dynamo_cdc_source::snapshot::journal::LocalJournalFiles::at(journal),
        margin_ms: 3_000,
        export_bucket: Some("s3://exports/cdc/orders".into()),
        export_poll: Duration::from_millis(10),
    }
}

fn table(sim: &StreamSim, items: usize) -> String {
    let arn = sim.create_table(TABLE, "pk", None);
    for i in 0..items {
        sim.put_item(
            TABLE,
            json!({"pk": {"S": format!("k{i}")}, "n": {"N": format!("{i}.25")},
                   "s": {"S": "\"quoted\"\nline ✓"}, "m": {"M": {"l": {"L": [{"NULL": true}]}}}}),
        );
    }
    arn
}

/// Hands over the export's rows until it is done, `limit` rows at most.
fn hand_over(
    runtime: &tokio::runtime::Runtime,
    api: &SdkStreams,
    snapshots: &mut Snapshots,
    root: &Path,
    resume: &Positions,
    limit: usize,
) -> Vec<Change> {
    let open = |bucket: &str| -> Result<Box<dyn ExportObjects>, String> {
        Ok(Box::new(LocalBucket {
            dir: root.join(bucket),
        }))
    };
    let mut rows = Vec::new();
    for _ in 0..10_000 {
        if !snapshots.exporting() || rows.len() >= limit {
            break;
        }
        let batch = runtime
            .block_on(snapshots.export_step(api, &open, resume))
            .unwrap();
        assert!(batch.dead_letters.is_empty(), "{:?}", batch.dead_letters);
        rows.extend(batch.changes);
        std::thread::sleep(Duration::from_millis(5));
    }
    rows
}

fn sdk(runtime: &tokio::runtime::Runtime, sim: &StreamSim) -> SdkStreams {
    let endpoint = Endpoint {
        region: Some("us-east-1".into()),
        endpoint_url: Some(sim.endpoint_url()),
    };
    runtime.block_on(SdkStreams::connect_static(&endpoint, "test", "test"))
}

#[test]
fn an_export_is_read_in_its_real_layout_once_and_resumes_after_what_sinks_hold() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let sim = StreamSim::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s3");
    sim.set_export_root(&root);
    let arn = table(&sim, 250);
    sim.set_pitr(TABLE, true);
    let api = sdk(&runtime, &sim);
    let journal = dir.path().join("journal");
    let tables = [(TABLE.to_owned(), arn.clone())];

    let mut first = runtime
        .block_on(Snapshots::prepare(
            &api,
            settings(&journal),
            &tables,
            &Positions::new(),
            &Positions::new(),
            None,
        ))
        .unwrap();
    assert!(first.exporting());
    // S0 covers the 250 inserts: the stream is read after them.
    let resume = first.stream_resume(&Positions::new());
    assert_eq!(resume.len(), 1, "{resume:?}");
    let (shard, s0) = resume.iter().next().unwrap();
    let newest = sim.records(&arn).iter().map(|r| r.1).max().unwrap();
    assert_eq!(s0.as_str(), newest.to_string(), "{shard}");

    // A crash after 100 rows, of which the sinks hold the first 60.
    let early = hand_over(&runtime, &api, &mut first, &root, &Positions::new(), 100);
    assert!(early.len() >= 100);
    drop(first);
    let held = &early[59];
    let mut positions = Positions::new();
    positions.advance(
        ShardKey::new(TABLE, held.source.shard_id.to_string()),
        held.source.sequence_number.clone(),
    );
    let mut again = runtime
        .block_on(Snapshots::prepare(
            &api,
            settings(&journal),
            &tables,
            &positions,
            &positions,
            None,
        ))
        .unwrap();
    assert!(again.exporting(), "the unfinished export resumes");
    let rest = hand_over(&runtime, &api, &mut again, &root, &positions, usize::MAX);
    assert!(!again.exporting());
    assert_eq!(
        rest.first().map(|c| c.source.sequence_number.clone()),
        early.get(60).map(|c| c.source.sequence_number.clone()),
        "the restart hands over from the first row the sinks lack"
    );
    assert_eq!(
        &early[60..],
        &rest[..early.len() - 60],
        "the same rows with the same positions"
    );

    let rows: Vec<&Change> = early[..60].iter().chain(&rest).collect();
    assert_eq!(rows.len(), 250);
    let seqs: Vec<&SequenceNumber> = rows.iter().map(|c| &c.source.sequence_number).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    let by_key: BTreeMap<String, &Change> =
        rows.iter().map(|c| (format!("{:?}", c.keys), *c)).collect();
    assert_eq!(by_key.len(), 250, "each item once");
    let markers: Vec<SnapshotMarker> = rows
        .iter()
        .map(|c| c.source.snapshot.as_ref().unwrap().marker)
        .collect();
    assert_eq!(markers[0], SnapshotMarker::First);
    assert_eq!(markers[249], SnapshotMarker::Last);
    assert!(markers[1..249].iter().all(|m| *m == SnapshotMarker::Row));
    let want: BTreeMap<String, String> = sim
        .items(TABLE)
        .into_iter()
        .map(|v| (v["pk"]["S"].as_str().unwrap().to_owned(), v.to_string()))
        .collect();
    for c in &rows {
        let item = c.new_image.as_ref().unwrap();
        let key = match item.get("pk") {
            Some(dynamo_cdc_core::AttributeValue::S(s)) => s.to_string(),
            other => panic!("{other:?}"),
        };
        let got: serde_json::Value = serde_json::to_value(item).unwrap();
        let expected: serde_json::Value = serde_json::from_str(&want[&key]).unwrap();
        assert_eq!(got, expected, "{key}");
    }
}

#[test]
fn an_export_without_point_in_time_recovery_is_refused_with_the_fix() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let sim = StreamSim::start();
    let dir = tempfile::tempdir().unwrap();
    sim.set_export_root(dir.path());
    let arn = table(&sim, 3);
    let api = sdk(&runtime, &sim);
    let outcome = runtime.block_on(Snapshots::prepare(
        &api,
        settings(dir.path()),
        &[(TABLE.to_owned(), arn)],
        &Positions::new(),
        &Positions::new(),
        None,
    ));
    let Err(e @ SnapshotError::Refused { .. }) = outcome else {
        panic!("not refused");
    };
    let text = e.to_string();
    assert!(
        text.contains("point-in-time recovery is off")
            && text.contains("snapshot_method = \"scan\""),
        "{text}"
    );
}

/// An export request whose answers were all lost (the service started the
/// export; the client saw server errors) fails the start as an outage, and
/// the next start asks again under the plan's token: DynamoDB answers with
/// the export it started, so there is one export, read once, and the
/// snapshot does not stop for good on "no export".
#[test]
fn an_export_whose_answer_was_lost_is_asked_for_again_and_started_once() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let sim = StreamSim::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s3");
    sim.set_export_root(&root);
    let arn = table(&sim, 20);
    sim.set_pitr(TABLE, true);
    let api = sdk(&runtime, &sim);
    let journal = dir.path().join("journal");
    let tables = [(TABLE.to_owned(), arn)];
    let prepare = || {
        runtime.block_on(Snapshots::prepare(
            &api,
            settings(&journal),
            &tables,
            &Positions::new(),
            &Positions::new(),
            None,
        ))
    };

    // Every attempt the SDK makes is applied, and its answer lost.
    sim.fail_next(
        dynamo_cdc_testkit::streams_sim::Op::ExportTableToPointInTime,
        10,
        dynamo_cdc_testkit::streams_sim::Fault::AnswerLost,
    );
    let Err(e) = prepare() else {
        panic!("every answer was lost, yet the export was planned");
    };
    assert!(e.is_transient(), "an outage, not a stop: {e}");
    sim.clear_faults();
    assert_eq!(sim.exports_started(), 1, "the SDK's retries share a token");

    // Asked again so late that the export would end past what the stream
    // keeps since S0: refused, saying what to do, and nothing is started.
    let plan_file = journal.join(TABLE).join("plan.json");
    let text = std::fs::read_to_string(&plan_file).unwrap();
    let mut plan: serde_json::Value = serde_json::from_str(&text).unwrap();
    let started = plan["started_ms"].as_i64().unwrap();
    plan["started_ms"] = json!(started - 21 * 3_600_000);
    std::fs::write(&plan_file, plan.to_string()).unwrap();
    let Err(e) = prepare() else {
        panic!("an export asked for 21 hours after S0 was started");
    };
    assert!(!e.is_transient(), "{e}");
    assert!(e.to_string().contains("dynamo-cdc snapshot"), "{e}");
    assert_eq!(sim.exports_started(), 1);
    std::fs::write(&plan_file, text).unwrap();

    let mut again = prepare().unwrap();
    assert!(again.exporting());
    let rows = hand_over(
        &runtime,
        &api,
        &mut again,
        &root,
        &Positions::new(),
        usize::MAX,
    );
    assert_eq!(rows.len(), 20);
    assert!(!again.exporting());
    assert_eq!(sim.exports_started(), 1, "asked again, not started again");
}

/// A bucket whose reads numbered in `down` (1-based, over all reads) find
/// the store unreachable.
struct Flaky {
    inner: LocalBucket,
    reads: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    down: &'static [usize],
}

impl ExportObjects for Flaky {
    fn get(&self, key: &str) -> Result<Vec<u8>, ReadFailure> {
        let n = self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if self.down.contains(&n) {
            return Err(ReadFailure {
                message: format!("{key}: 503 Service Unavailable"),
                passing: true,
            });
        }
        self.inner.get(key)
    }
}

/// A bucket that is down while the export's manifests or data files are
/// read pauses the snapshot (a transient error naming the object); the
/// next pass, started as the pipeline starts it (from what the sinks
/// hold), reads the export whole, each row once.
#[test]
fn an_export_bucket_that_is_down_pauses_the_snapshot() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let sim = StreamSim::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s3");
    sim.set_export_root(&root);
    let arn = table(&sim, 20);
    sim.set_pitr(TABLE, true);
    let api = sdk(&runtime, &sim);
    let journal = dir.path().join("journal");
    let tables = [(TABLE.to_owned(), arn)];
    let prepare = |held: &Positions| {
        runtime
            .block_on(Snapshots::prepare(
                &api,
                settings(&journal),
                &tables,
                held,
                held,
                None,
            ))
            .unwrap()
    };
    // The first read (the manifest summary) fails, and later the fourth:
    // after the summary and the files manifest, the first data file.
    let reads = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let open = |bucket: &str| -> Result<Box<dyn ExportObjects>, String> {
        Ok(Box::new(Flaky {
            inner: LocalBucket {
                dir: root.join(bucket),
            },
            reads: reads.clone(),
            down: &[1, 4],
        }))
    };
    let mut held = Positions::new();
    let mut snapshots = prepare(&held);
    let mut rows = Vec::new();
    let mut pauses = Vec::new();
    for _ in 0..10_000 {
        if !snapshots.exporting() {
            break;
        }
        match runtime.block_on(snapshots.export_step(&api, &open, &held)) {
            Ok(batch) => {
                for c in &batch.changes {
                    held.advance(
                        ShardKey::new(TABLE, c.source.shard_id.to_string()),
                        c.source.sequence_number.clone(),
                    );
                }
                rows.extend(batch.changes);
            }
            Err(e) => {
                assert!(e.is_transient(), "a bucket that is down stops the run: {e}");
                pauses.push(e.to_string());
                // The pass ends; the next one starts from what is held.
                snapshots = prepare(&held);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(pauses.len(), 2, "{pauses:?}");
    assert!(
        pauses[0].contains("manifest-summary") && pauses[1].contains(".json.gz"),
        "{pauses:?}"
    );
    assert!(pauses.iter().all(|p| p.contains("503 Service Unavailable")));
    assert_eq!(rows.len(), 20);
    let keys: std::collections::BTreeSet<String> =
        rows.iter().map(|c| format!("{:?}", c.keys)).collect();
    assert_eq!(keys.len(), 20, "each row once");
}
