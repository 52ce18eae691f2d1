//! Running under leases (`[coordination]`): this process shares the source
//! tables with others through the lease table, and runs passes over the
//! tables it holds.
//!
//! - A pass is the ordinary run loop over the held tables only, with the
//!   positions in the lease table ([`LeaseCheckpoints`]) and a guard: it
//!   ends the graceful way (flush, commit, record) when the held set
//!   changes (a lease taken, or claimed by a peer), and stops at once,
//!   committing nothing more, when a lease is lost or runs out.
//! - Between passes, claimed tables are released: everything of them is
//!   committed and nothing is in flight.
//! - A table taken from an owner whose lease expired waits out the Kafka
//!   produce timeout first, so the old owner's last messages have landed
//!   (or failed) before the read-back looks for them.
//! - A stop request ends the pass the graceful way, then hands every lease
//!   over, so peers take them at once (one still settling runs out
//!   instead, so that its next taker waits too).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use dynamo_cdc_lease::{
    CoordinationConfig, Coordinator, DynamoLeaseStore, Fence, LeaseCheckpoints, LeaseStore,
    StoreFailure, Worker,
};
use dynamo_cdc_object_store::Location;
use dynamo_cdc_sink_kafka::{PRODUCE_TIMEOUTS, PropertyValue};
use dynamo_cdc_source::record::table_from_arn;
use dynamo_cdc_source::streams::sdk::{Endpoint, sdk_config};
use dynamo_cdc_transform::DeclaredSchema;

use crate::config::Config;
use crate::run::{Carried, Pass, PassGuard, RunOptions, Stop, known_tables, run_once};

/// Runs passes over the held tables until stopped; see the module docs.
pub(crate) fn run(
    config: &Config,
    coordination: &CoordinationConfig,
    options: &RunOptions,
    declared: &HashMap<String, DeclaredSchema>,
    carried: Carried<'_>,
) -> anyhow::Result<()> {
    let Carried {
        summary,
        pauses,
        watch,
        snapshot_now,
        unreported,
    } = carried;
    let (mut config, produce_timeout) = with_produce_timeout(config, coordination);
    // A pass fails as late as its oldest message expires.
    pauses.fail_within(produce_timeout);
    if let Some(parquet) = config.sinks.parquet.as_mut() {
        // Other live workers write the same dataset: their temp files are
        // not leftovers.
        parquet.exclusive = false;
    }
    if let Some(warning) = host_local_state(&config)? {
        tracing::warn!("{warning}");
    }
    let store = Arc::new(connect(&config, coordination)?);
    if !ensure_table(store.as_ref(), options)? {
        summary.stopped_on_request = true;
        return Ok(());
    }
    let me = coordination.worker_id();
    let tables = known_tables(&config);
    tracing::info!(
        worker = %me,
        lease_table = %coordination.lease_table,
        tables = tables.len(),
        "sharing the tables with other workers through leases"
    );
    let worker = Worker::start(
        Coordinator::new(store.clone(), &me, coordination.lease_duration(), &tables)
            .settling(produce_timeout)
            .pipeline(&pipeline_identity(&config)),
    )
    .context("cannot start the lease thread")?;
    // Grants already waited out, by table and epoch.
    let mut settled: BTreeMap<String, u64> = BTreeMap::new();
    // When the last pass that failed ended: its producer's last messages
    // may land until the produce timeout has passed since.
    let mut failed_at: Option<Instant> = None;
    let mut idle_since = Instant::now();
    loop {
        watch.health.beat();
        if options.stop.load(Ordering::Relaxed) {
            summary.stopped_on_request = true;
            break;
        }
        let assignment = worker.assignment();
        watch.reading(assignment.grants.keys());
        if let Some(failure) = &assignment.failure {
            worker.abandon();
            anyhow::bail!("{}: {failure}", store.describe());
        }
        // No pass runs now: claimed tables are committed and recorded.
        let claimed = assignment.claimed();
        if !claimed.is_empty() {
            // The worker taking a released lease does not wait: what a
            // failed pass left in flight must have landed or failed first.
            if let Some(left) = settling_left(failed_at, Instant::now(), produce_timeout) {
                tracing::info!(
                    tables = ?claimed,
                    wait_s = left.as_secs_f64(),
                    "handing claimed tables over once a failed pass's last Kafka messages cannot land"
                );
                if !sleep_unless_stopped(left, &options.stop) {
                    continue;
                }
            }
            worker.release(claimed.into_iter().collect());
            worker.wait_change(assignment.version, Duration::from_secs(1));
            continue;
        }
        if assignment.grants.is_empty() {
            if options
                .until_idle
                .is_some_and(|limit| idle_since.elapsed() >= limit)
            {
                tracing::info!("no table to read; stopping");
                break;
            }
            worker.wait_change(assignment.version, Duration::from_millis(500));
            continue;
        }
        let unsettled: Vec<(&String, Duration)> = assignment
            .grants
            .iter()
            .filter(|(t, g)| g.settle && settled.get(*t) != Some(&g.epoch))
            .map(|(t, g)| (t, g.settle_for))
            .collect();
        // The longest of ours and what the expired owners wrote on their
        // leases (their own produce timeouts, when configured otherwise).
        let wait = unsettled
            .iter()
            .map(|(_, d)| *d)
            .fold(produce_timeout, Duration::max);
        if !unsettled.is_empty() && !wait.is_zero() {
            tracing::info!(
                tables = ?unsettled.iter().map(|(t, _)| t).collect::<Vec<_>>(),
                wait_s = wait.as_secs_f64(),
                "taken from a worker whose lease expired: waiting out its last Kafka messages"
            );
            if !sleep_unless_stopped(wait, &options.stop) {
                continue;
            }
        }
        settled.extend(assignment.grants.iter().map(|(t, g)| (t.clone(), g.epoch)));
        let epochs: BTreeMap<String, u64> = assignment
            .grants
            .iter()
            .map(|(t, g)| (t.clone(), g.epoch))
            .collect();
        let pass_config = restricted(&config, &epochs);
        let mut checkpoint = LeaseCheckpoints::new(store.clone(), epochs.clone());
        let guard = LeaseGuard {
            worker: &worker,
            version: assignment.version,
            fence: worker.fence(&epochs),
            epochs: epochs.clone(),
        };
        // A snapshot asked for on the command line waits for its table.
        let mut snapshot_for_pass = snapshot_now.clone().filter(|t| epochs.contains_key(t));
        let asked = snapshot_for_pass.is_some();
        let outcome = run_once(
            Pass {
                config: &pass_config,
                checkpoint: &mut checkpoint,
                guard: Some(&guard),
            },
            options,
            declared,
            Carried {
                summary: &mut *summary,
                pauses: &mut *pauses,
                watch,
                snapshot_now: &mut snapshot_for_pass,
                unreported: &mut *unreported,
            },
        );
        if asked && snapshot_for_pass.is_none() {
            *snapshot_now = None;
        }
        watch.set_board(None);
        idle_since = Instant::now();
        match outcome {
            Ok(()) => {
                if options.stop.load(Ordering::Relaxed) {
                    summary.stopped_on_request = true;
                    break;
                }
                if !guard.should_end() && options.until_idle.is_some() {
                    // The feed ended by itself: idle.
                    break;
                }
            }
            Err(Stop::Fenced(why)) => {
                failed_at = Some(Instant::now());
                tracing::warn!("{why}; nothing more of it was committed here");
                if options.stop.load(Ordering::Relaxed) {
                    // The pass ended part way: what it had in flight is
                    // not known to be done, so its other leases run out
                    // rather than being handed over.
                    summary.stopped_on_request = true;
                    worker.abandon();
                    return Ok(());
                }
                // Until the lease thread drops the grant (or a second),
                // rather than a new pass opening the sinks only to be
                // fenced again at once.
                worker.wait_change(assignment.version, Duration::from_secs(1));
            }
            Err(Stop::Transient { who, error }) => {
                failed_at = Some(Instant::now());
                summary.sink_retries += 1;
                if !pauses.wait(&who, &error, &options.stop, watch) {
                    summary.stopped_on_request = true;
                    // Nothing in flight is known to be done: let the leases
                    // run out rather than hand them over.
                    worker.abandon();
                    return Ok(());
                }
            }
            Err(Stop::Fatal(e) | Stop::Source(e)) => {
                worker.abandon();
                return Err(e);
            }
        }
    }
    // Everything is committed and recorded: hand every lease over, unless
    // a failed pass's messages may still land (then they run out, and
    // their takers wait).
    if settling_left(failed_at, Instant::now(), produce_timeout).is_some() {
        worker.abandon();
    } else {
        worker.stop();
    }
    Ok(())
}

/// What a pipeline writes to, the same for every worker of it and written
/// on its leases: its sinks' destinations (Parquet path, Kafka topic
/// template, Iceberg namespace and warehouse), without brokers, endpoints
/// or credentials, which may differ between workers or be secret.
fn pipeline_identity(config: &Config) -> String {
    let sinks = &config.sinks;
    let mut parts = Vec::new();
    if let Some(p) = &sinks.parquet {
        parts.push(format!("parquet {}", p.path));
    }
    if let Some(k) = &sinks.kafka {
        parts.push(format!("kafka {}", k.topic));
    }
    if let Some(i) = &sinks.iceberg {
        parts.push(format!("iceberg {} in {}", i.namespace, i.warehouse));
    }
    parts.join("; ")
}

/// How long messages a pass that failed at `failed_at` left with the
/// producer may still land after `now` (`timeout`: the produce timeout;
/// zero without Kafka), if at all.
fn settling_left(failed_at: Option<Instant>, now: Instant, timeout: Duration) -> Option<Duration> {
    let until = failed_at? + timeout;
    (until > now).then(|| until - now)
}

/// Ends a pass when the held set changes; refuses writes once a lease is
/// gone or overdue.
struct LeaseGuard<'a> {
    worker: &'a Worker,
    version: u64,
    fence: Fence,
    epochs: BTreeMap<String, u64>,
}

impl PassGuard for LeaseGuard<'_> {
    fn should_end(&self) -> bool {
        self.worker.version() != self.version
    }

    fn epochs(&self) -> &BTreeMap<String, u64> {
        &self.epochs
    }

    fn check(&self) -> Result<(), String> {
        self.fence.check().inspect_err(|_| {
            metrics::counter!(crate::events::FENCED_PASSES).increment(1);
        })
    }

    fn write_guard(&self) -> dynamo_cdc_core::WriteGuard {
        let fence = self.fence.clone();
        std::sync::Arc::new(move || fence.check())
    }
}

/// The configuration of a pass: only the tables held.
fn restricted(config: &Config, held: &BTreeMap<String, u64>) -> Config {
    let mut c = config.clone();
    c.source.tables.retain(|t| held.contains_key(t));
    c.source
        .stream_arns
        .retain(|arn| table_from_arn(arn).is_some_and(|t| held.contains_key(t)));
    c
}

/// The configuration with a finite Kafka produce timeout, and that
/// timeout (zero without a Kafka sink). A message older than it is failed
/// by the producer, never sent: this is what a new owner waits out. The
/// timeouts set were checked by `Config::validate` (positive, and the two
/// names agreeing).
fn with_produce_timeout(config: &Config, coordination: &CoordinationConfig) -> (Config, Duration) {
    let mut config = config.clone();
    let Some(kafka) = config.sinks.kafka.as_mut() else {
        return (config, Duration::ZERO);
    };
    let timeout = match kafka.produce_timeouts().iter().map(|(_, ms)| *ms).min() {
        Some(ms) => Duration::from_millis(ms),
        None => {
            // A third of the lease: a crashed owner's table moves within
            // about one and a half lease durations.
            let ms = coordination.lease_duration_ms / 3;
            kafka.properties.insert(
                PRODUCE_TIMEOUTS[0].to_owned(),
                PropertyValue::Integer(i64::try_from(ms).unwrap_or(i64::MAX)),
            );
            Duration::from_millis(ms)
        }
    };
    // Plus a second for the producer's own timer granularity.
    (config, timeout + Duration::from_secs(1))
}

/// What `dynamo-cdc leases` prints: per table, its lease and, per sink,
/// how many shard positions are recorded and when the newest was written.
///
/// # Errors
/// When the configuration has no `[coordination]` or the table cannot be
/// read.
pub fn leases_report(config: &Config) -> anyhow::Result<String> {
    use dynamo_cdc_lease::Item;
    let coordination = config.coordination.as_ref().context(
        "this configuration has no [coordination] section: without it the process runs alone \
         and keeps positions in its checkpoint file",
    )?;
    let store = connect(config, coordination)?;
    let items = store
        .scan()
        .map_err(|e| anyhow::anyhow!("{}: {e}", store.describe()))?;
    let now = dynamo_cdc_lease::coordinator::wall_ms();
    let ago = |ms: i64| {
        if ms <= 0 {
            "-".to_owned()
        } else {
            format!("{:.1}s ago", (now - ms).max(0) as f64 / 1000.0)
        }
    };
    // table -> sink -> (shards, newest write)
    let mut positions: BTreeMap<String, BTreeMap<String, (usize, i64)>> = BTreeMap::new();
    let mut leases = Vec::new();
    for item in items {
        match item {
            Item::Lease(l) => leases.push(l),
            Item::Position(p) => {
                let e = positions
                    .entry(p.table)
                    .or_default()
                    .entry(p.sink)
                    .or_default();
                e.0 += 1;
                e.1 = e.1.max(p.updated_ms);
            }
            Item::State(_) | Item::Start(_) | Item::Ended(_) => {}
        }
    }
    leases.sort_by(|a, b| a.table.cmp(&b.table));
    let mut rows = vec![[
        "TABLE".to_owned(),
        "OWNER".to_owned(),
        "EPOCH".to_owned(),
        "RENEWED".to_owned(),
        "POSITIONS".to_owned(),
    ]];
    for l in &leases {
        let owner = match (&l.owner, &l.claim) {
            (Some(o), Some(c)) => format!("{o} (claimed by {c})"),
            (Some(o), None) => o.clone(),
            (None, _) => "(free)".to_owned(),
        };
        let recorded = positions.get(&l.table).map_or_else(
            || "none yet".to_owned(),
            |sinks| {
                sinks
                    .iter()
                    .map(|(sink, (n, at))| format!("{sink}: {n} shards, newest {}", ago(*at)))
                    .collect::<Vec<_>>()
                    .join("; ")
            },
        );
        rows.push([
            l.table.clone(),
            owner,
            l.epoch.to_string(),
            ago(l.renewed_ms),
            recorded,
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = format!("{}: {} leases\n", store.describe(), leases.len());
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    Ok(out)
}

/// The lease table's client: the source's region and endpoint unless
/// `[coordination]` names others; calls bounded well inside the lease.
fn connect(config: &Config, c: &CoordinationConfig) -> anyhow::Result<DynamoLeaseStore> {
    let endpoint = Endpoint {
        region: c.region.clone().or_else(|| config.source.region.clone()),
        endpoint_url: c
            .endpoint_url
            .clone()
            .or_else(|| config.source.endpoint_url.clone()),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("dynamo-cdc-lease-io")
        .enable_all()
        .build()
        .context("cannot start the lease table's runtime")?;
    let sdk = runtime.block_on(sdk_config(&endpoint, None));
    let call = c.lease_duration() / 6;
    let conf = aws_sdk_dynamodb::config::Builder::from(&sdk)
        .timeout_config(
            aws_sdk_dynamodb::config::timeout::TimeoutConfig::builder()
                .connect_timeout(call)
                .operation_attempt_timeout(call)
                .operation_timeout(c.lease_duration() / 3)
                .build(),
        )
        .build();
    let client = aws_sdk_dynamodb::Client::from_conf(conf);
    Ok(DynamoLeaseStore::with_runtime(
        runtime,
        client,
        &c.lease_table,
    ))
}

/// What is wrong with keeping dead letters, gap records and snapshot
/// journals where `config` keeps them, when processes share the tables:
/// on a local disk, the other processes see none of it unless the disk is
/// shared, and a snapshot whose table moves to another host is not resumed
/// there (nor are dead letters kept once across hosts).
fn host_local_state(config: &Config) -> anyhow::Result<Option<String>> {
    match crate::run::dead_letter_location(config)? {
        Location::Local(path) => Ok(Some(format!(
            "with [coordination], dead letters, gap records and snapshot journals are kept in {} \
             on this host: a process on another host that takes a table over does not see them, \
             and does not resume a snapshot this one started; unless every process shares that \
             directory, set [dead_letter] path to a bucket",
            path.display()
        ))),
        Location::Remote { .. } => Ok(None),
    }
}

/// Makes sure the lease table exists, waiting out an outage; false when a
/// stop was asked for meanwhile.
fn ensure_table(store: &DynamoLeaseStore, options: &RunOptions) -> anyhow::Result<bool> {
    let mut outage = dynamo_cdc_core::Outage::new();
    loop {
        match store.ensure_table() {
            Ok(()) => return Ok(true),
            Err(e @ StoreFailure::Fatal(_)) => {
                return Err(anyhow::anyhow!("{}: {e}", store.describe()));
            }
            Err(e) => {
                if let Some(line) = outage.failed(Instant::now()) {
                    tracing::warn!(error = %e, ?line, "{} cannot be reached yet; retrying", store.describe());
                }
                if !sleep_unless_stopped(Duration::from_secs(2), &options.stop) {
                    return Ok(false);
                }
            }
        }
    }
}

/// Sleeps `d`; false when a stop was asked for meanwhile. A wait on
/// purpose (a settle, an outage) is a sign of life for `/healthz`: a
/// settle may last longer than the liveness probe allows, and a probe
/// that restarted the process would only start the wait over.
fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        dynamo_cdc_core::alive::still_waiting();
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        config_of("tables = [\"aaa\", \"bbb\"]", extra)
    }

    fn config_of(tables: &str, extra: &str) -> Config {
        let c = Config::parse(&config_text(tables, extra)).unwrap();
        c.validate().unwrap();
        c
    }

    fn config_text(tables: &str, extra: &str) -> String {
        format!(
            r#"
[source]
kind = "dynamodb"
{tables}
[sinks.kafka]
brokers = "localhost:9092"
format = "json"
{extra}
[checkpoint]
path = "x.json"
[coordination]
lease_duration_ms = 30000
"#
        )
    }

    #[test]
    fn state_kept_on_a_local_disk_is_warned_about_and_in_a_bucket_is_not() {
        let warning = host_local_state(&config(""))
            .unwrap()
            .expect("a local directory");
        assert!(warning.contains("[dead_letter] path"), "{warning}");
        let c = config("[dead_letter]\npath = \"s3://lake/cdc\"");
        assert_eq!(host_local_state(&c).unwrap(), None);
    }

    #[test]
    fn a_wait_on_purpose_is_a_sign_of_life() {
        let stop = AtomicBool::new(false);
        let waiting = Instant::now();
        assert!(sleep_unless_stopped(Duration::from_millis(120), &stop));
        let waited = u64::try_from(waiting.elapsed().as_millis()).unwrap();
        let sign = dynamo_cdc_core::alive::since_last_sign_ms().expect("a sign was given");
        assert!(
            sign < waited,
            "the last sign was {sign} ms ago, the wait {waited} ms long"
        );
        stop.store(true, Ordering::Relaxed);
        assert!(!sleep_unless_stopped(Duration::from_secs(60), &stop));
    }

    #[test]
    fn a_pass_reads_only_the_held_tables() {
        let c = config("");
        let held = BTreeMap::from([("bbb".to_owned(), 1), ("ccc".to_owned(), 4)]);
        assert_eq!(restricted(&c, &held).source.tables, ["bbb"]);
        assert_eq!(known_tables(&c), ["aaa", "bbb"]);
        let c = config_of(
            "stream_arns = [\"arn:aws:dynamodb:us-east-1:1:table/ccc/stream/2024-01-01T00:00:00.000\", \
             \"arn:aws:dynamodb:us-east-1:1:table/ddd/stream/2024-01-01T00:00:00.000\"]",
            "",
        );
        let r = restricted(&c, &held);
        assert_eq!(known_tables(&r), ["ccc"]);
    }

    #[test]
    fn a_pipeline_is_known_by_its_sinks_destinations_not_its_brokers() {
        let parse = |sinks: &str| {
            Config::parse(&format!(
                "[source]\nkind = \"dynamodb\"\ntables = [\"orders\"]\n{sinks}\n\
                 [checkpoint]\npath = \"out/checkpoint.json\"\n[coordination]\n"
            ))
            .unwrap()
        };
        let a = parse(
            "[sinks.kafka]\nbrokers = \"b1:9092\"\ntopic = \"cdc.{table}\"\n\
             [sinks.parquet]\npath = \"s3://lake/cdc\"",
        );
        assert_eq!(
            pipeline_identity(&a),
            "parquet s3://lake/cdc; kafka cdc.{table}"
        );
        let other_brokers = parse(
            "[sinks.kafka]\nbrokers = \"b2:9092,b1:9092\"\ntopic = \"cdc.{table}\"\n\
             [sinks.parquet]\npath = \"s3://lake/cdc\"",
        );
        assert_eq!(pipeline_identity(&a), pipeline_identity(&other_brokers));
        let other_lake = parse("[sinks.parquet]\npath = \"s3://other/cdc\"");
        assert_ne!(pipeline_identity(&a), pipeline_identity(&other_lake));
    }

    #[test]
    fn tables_are_handed_over_once_a_failed_passs_messages_cannot_land() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(11);
        assert_eq!(settling_left(None, t0, timeout), None, "nothing failed");
        assert_eq!(
            settling_left(Some(t0), t0 + Duration::from_secs(4), timeout),
            Some(Duration::from_secs(7))
        );
        assert_eq!(settling_left(Some(t0), t0 + timeout, timeout), None);
        assert_eq!(
            settling_left(Some(t0), t0, Duration::ZERO),
            None,
            "no Kafka sink: nothing in flight"
        );
    }

    #[test]
    fn the_kafka_produce_timeout_is_made_finite_and_waited_out() {
        let c = config("");
        let coordination = c.coordination.clone().unwrap();
        let (with, wait) = with_produce_timeout(&c, &coordination);
        assert_eq!(wait, Duration::from_millis(11_000));
        let props = &with.sinks.kafka.unwrap().properties;
        assert!(matches!(
            props.get("message.timeout.ms"),
            Some(PropertyValue::Integer(10_000))
        ));
        let c = config("properties = { \"delivery.timeout.ms\" = 5000 }");
        let (_, wait) = with_produce_timeout(&c, &coordination);
        assert_eq!(wait, Duration::from_millis(6_000));
        let c = config(
            "properties = { \"delivery.timeout.ms\" = 5000, \"message.timeout.ms\" = 5000 }",
        );
        let (_, wait) = with_produce_timeout(&c, &coordination);
        assert_eq!(wait, Duration::from_millis(6_000));
        // librdkafka takes a global setting with its `topic.` prefix too.
        let c = config("properties = { \"topic.message.timeout.ms\" = 60000 }");
        let (_, wait) = with_produce_timeout(&c, &coordination);
        assert_eq!(wait, Duration::from_millis(61_000));
    }

    /// What `with_produce_timeout` relies on is refused by `validate`, so
    /// that `dynamo-cdc validate` finds it (exit 2) rather than the run.
    #[test]
    fn a_produce_timeout_the_lease_cannot_wait_out_is_a_config_error() {
        let invalid = |extra: &str| {
            Config::parse(&config_text("tables = [\"aaa\"]", extra))
                .unwrap()
                .validate()
                .unwrap_err()
        };
        let e = invalid("properties = { \"message.timeout.ms\" = 0 }");
        assert_eq!(e.key, "sinks.kafka.properties.message.timeout.ms", "{e}");
        assert!(e.reason.contains("positive number of milliseconds"), "{e}");
        // Aliases: librdkafka applies one of them, whichever it meets last.
        let e = invalid(
            "properties = { \"delivery.timeout.ms\" = 5000, \"message.timeout.ms\" = 60000 }",
        );
        assert_eq!(e.key, "sinks.kafka.properties.message.timeout.ms", "{e}");
        assert!(
            e.reason.contains(
                "60000 ms, while `properties.delivery.timeout.ms` is 5000 ms: the two are names \
                 of one librdkafka setting"
            ),
            "{e}"
        );
        // A retry limit ends within the timeout, which a new owner waits
        // out: allowed under leases.
        Config::parse(&config_text(
            "tables = [\"aaa\"]",
            "properties = { retries = 5 }",
        ))
        .unwrap()
        .validate()
        .unwrap();
    }
}
