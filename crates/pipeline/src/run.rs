//! Wiring: source -> sinks -> checkpoint, with dead letters on the side.
//!
//! The source reads on its own thread and hands batches over a bounded
//! channel, so a slow sink slows the reader and memory does not grow with the
//! backlog. For each batch: the sinks write what they can, the records they
//! or the source rejected are made durable in the dead-letter store, and only
//! then may the sinks commit and the checkpoint record the new positions.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use dynamo_cdc_core::{
    CheckpointStore, DeadLetter, ErrorKind, Outage, OutageLine, Positions, Recorded, SinkError,
    SnapshotRecord, SourceBatch,
};
use dynamo_cdc_dead_letter::{
    DEAD_LETTER_DIR, DeadLetterError, DeadLetterStore, LocalDeadLetters, ObjectDeadLetters,
};
use dynamo_cdc_object_store::{Location, Objects};
use dynamo_cdc_source::record::render_record;
use dynamo_cdc_source::snapshot::{SnapshotError, SnapshotProgress};
use dynamo_cdc_source::streams::{ApiError, ShardBoard};
use dynamo_cdc_transform::DeclaredSchema;

use crate::checkpoint::FileCheckpoints;
use crate::checkpoint_lock::CheckpointLock;
use crate::config::{Config, SourceKind};
use crate::events::{ChangesRead, DeadLettered, GapRecorded, SinkBack, SinkPaused};
use crate::feed::{Feed, Recalled};
use crate::latest;
use crate::observe::watch::Watch;
use crate::progress::{Progress, snapshot_line};
use crate::sinks::{self, SinkFailure, Sinks};
use crate::summary::RunSummary;

/// How a run ends besides the end of its input.
#[derive(Debug, Default)]
pub struct RunOptions {
    /// Stop once no shard has returned new records for this long (stream
    /// source).
    pub until_idle: Option<Duration>,
    /// Set (by a signal handler) to stop gracefully: stop reading, commit,
    /// record positions, return.
    pub stop: std::sync::Arc<AtomicBool>,
    /// Serve `/metrics`, `/healthz` and `/readyz` here (overrides
    /// `[metrics] listen`).
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Show a replay's progress on standard error (when it is a terminal).
    pub progress: bool,
    /// Start a snapshot of this table now, whatever the positions say
    /// (`dynamo-cdc snapshot --table`).
    pub snapshot_table: Option<String>,
}

/// Runs the configured pipeline to the end of its input, until idle, or
/// until asked to stop.
///
/// A sink, the dead-letter store or the checkpoint that cannot write for a
/// reason that may pass (a full disk, a broker or registry down) does not
/// end the run: everything after the last commit is dropped, the run waits
/// (1 s doubling to 16 s) and starts over from the committed positions,
/// exactly as a restart after a crash would.
///
/// # Errors
/// When a schema, the source, a sink or the checkpoint fails in a way that
/// waiting does not fix. Bad records are not errors: they are dead-lettered
/// and counted.
pub fn run(config: &Config, options: &RunOptions) -> anyhow::Result<RunSummary> {
    let started = Instant::now();
    config.validate()?;
    if config.source.kind == SourceKind::Replay {
        // Fail on a missing capture before the sink touches anything.
        let capture = config
            .source
            .path
            .clone()
            .context("source.path is required")?;
        std::fs::metadata(&capture).with_context(|| {
            format!(
                "config key `source.path`: cannot read {}",
                capture.display()
            )
        })?;
    }
    if let Some(table) = &options.snapshot_table
        && config.source.kind != SourceKind::Dynamodb
    {
        anyhow::bail!(
            "cannot snapshot table `{table}`: snapshots read a DynamoDB table, and this \
             configuration's source is `kind = \"replay\"`"
        );
    }
    let declared = load_declared(config.transform.schemas_dir.as_deref())?;
    let mut summary = RunSummary {
        dead_letter_path: dead_letter_location(config)?
            .join(DEAD_LETTER_DIR)
            .describe(),
        ..RunSummary::default()
    };
    let watch = Watch::start(options.metrics_listen.or(config.metrics.listen))?;
    let mut pauses = Pauses::default();
    if let Some(coordination) = &config.coordination {
        crate::coordinated::run(
            config,
            coordination,
            options,
            &declared,
            Carried {
                summary: &mut summary,
                pauses: &mut pauses,
                watch: &watch,
                snapshot_now: &mut options.snapshot_table.clone(),
                unreported: &mut HashSet::new(),
            },
        )?;
        summary.elapsed = started.elapsed();
        return Ok(summary);
    }
    // Held until the run ends: a second process on this checkpoint stops
    // here, naming this one.
    let lock = std::sync::Arc::new(CheckpointLock::acquire(&config.checkpoint.path)?);
    // Only a stream's tables are snapshotted.
    let _journal_lock = (config.source.kind == SourceKind::Dynamodb)
        .then(|| {
            CheckpointLock::acquire_journal(
                &crate::feed::local_journal_dir(&config.checkpoint.path),
                &config.checkpoint.path,
            )
        })
        .transpose()?;
    // Asked for once: a retry after an outage resumes the snapshot the
    // first pass planned instead of starting another.
    let mut snapshot_now = options.snapshot_table.clone();
    let mut unreported = HashSet::new();
    loop {
        let mut checkpoint = FileCheckpoints::new(&config.checkpoint.path).held_by(lock.clone());
        let outcome = run_once(
            Pass {
                config,
                checkpoint: &mut checkpoint,
                guard: None,
            },
            options,
            &declared,
            Carried {
                summary: &mut summary,
                pauses: &mut pauses,
                watch: &watch,
                snapshot_now: &mut snapshot_now,
                unreported: &mut unreported,
            },
        );
        watch.set_board(None);
        match outcome {
            Ok(()) => break,
            Err(Stop::Fatal(e) | Stop::Source(e)) => return Err(e),
            // Only a pass under leases is fenced.
            Err(Stop::Fenced(why)) => anyhow::bail!("{why}"),
            Err(Stop::Transient { who, error }) => {
                summary.sink_retries += 1;
                if !pauses.wait(&who, &error, &options.stop, &watch) {
                    // Nothing is lost: the positions are those of the last
                    // commit, and nothing after it was kept.
                    tracing::warn!(
                        "stopped while waiting to retry; positions are those of the last commit"
                    );
                    summary.stopped_on_request = true;
                    break;
                }
            }
        }
    }
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// Why a pass ended early.
pub(crate) enum Stop {
    /// Something that may pass: wait, then start over from the last commit.
    Transient { who: String, error: SinkError },
    /// Waiting does not fix it.
    Fatal(anyhow::Error),
    /// The source failed as a whole: what was delivered before is still
    /// committed, so a restart does not read it again.
    Source(anyhow::Error),
    /// This process may no longer write a table (its lease was lost or
    /// ran out): nothing more is committed; another owner goes on from the
    /// committed positions.
    Fenced(String),
}

impl Stop {
    fn of(who: &str, error: SinkError) -> Stop {
        match error.kind() {
            ErrorKind::Transient => Stop::Transient {
                who: who.to_owned(),
                error,
            },
            _ => Stop::Fatal(anyhow::Error::new(error).context(format!("sink `{who}`"))),
        }
    }
}

/// `Err(Stop::Fenced)` once a pass under leases may no longer write.
fn allowed(guard: Option<&dyn PassGuard>) -> Result<(), Stop> {
    guard.map_or(Ok(()), |g| g.check().map_err(Stop::Fenced))
}

/// A sink's transient stop while the lease is gone is the fence (a sink
/// refused a hand-over, or failed because of what ended the lease), not an
/// outage of that sink.
fn fenced_or(guard: Option<&dyn PassGuard>, stop: Stop) -> Stop {
    match (&stop, guard.map(PassGuard::check)) {
        (Stop::Transient { .. }, Some(Err(why))) => Stop::Fenced(why),
        _ => stop,
    }
}

/// What a pass run under leases checks between batches.
pub(crate) trait PassGuard {
    /// The pass should end the graceful way (commit, record) now: the
    /// tables it may write changed.
    fn should_end(&self) -> bool;
    /// `Err` (naming the table) once the pass may no longer write: checked
    /// before every write and every commit.
    fn check(&self) -> Result<(), String>;
    /// The lease epoch of each table the pass writes.
    fn epochs(&self) -> &BTreeMap<String, u64>;
    /// [`PassGuard::check`] for the sinks, which ask it right before a
    /// hand-over that nothing downstream would refuse.
    fn write_guard(&self) -> dynamo_cdc_core::WriteGuard;
}

/// How one pass is run: the configuration it reads (under leases, only
/// the tables held), where it records positions, and what it checks.
pub(crate) struct Pass<'a> {
    pub config: &'a Config,
    pub checkpoint: &'a mut dyn CheckpointStore,
    pub guard: Option<&'a dyn PassGuard>,
}

impl From<SinkFailure> for Stop {
    fn from(f: SinkFailure) -> Stop {
        Stop::of(&f.sink, f.error)
    }
}

/// The outages of the sinks and stores, and the growing wait between tries.
#[derive(Default)]
pub(crate) struct Pauses {
    outages: BTreeMap<String, Outage>,
    failures: u32,
    /// When the last failure was, and when the pass after it started.
    last_failure: Option<(Instant, Instant)>,
    /// How long a pass may take to fail by itself beyond what
    /// [`QUIET_RECOVERY`] allows: the Kafka produce timeout under leases.
    slowest_failure: Duration,
}

/// A pass that has run this long without failing had its sinks back,
/// though it may have committed nothing to prove it (a quiet table): the
/// next failure starts a new outage, with a short wait again, instead of
/// being logged as the old one still going on. Long enough that a pass
/// failing slowly (a stalled commit, retried requests) is not taken for a
/// recovery; a longer produce timeout is added ([`Pauses::fail_within`]).
const QUIET_RECOVERY: Duration = Duration::from_secs(300);

impl Pauses {
    /// A pass may take up to `slowest` to fail (a message expires after
    /// the produce timeout): quiet counts only past it.
    pub(crate) fn fail_within(&mut self, slowest: Duration) {
        self.slowest_failure = slowest;
    }

    /// Logs the failure as the outage rule says and waits; false when a stop
    /// was requested meanwhile.
    pub(crate) fn wait(
        &mut self,
        who: &str,
        error: &SinkError,
        stop: &AtomicBool,
        watch: &Watch,
    ) -> bool {
        let (line, wait) = self.failed(who, Instant::now());
        SinkPaused {
            sink: who,
            error,
            line,
            retry_in: wait,
        }
        .emit();
        let until = Instant::now() + wait;
        while Instant::now() < until {
            watch.health.beat();
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    }

    /// A failure of `who` at `now`: the line to log, if one is due, and
    /// how long to wait before starting over (doubling up to 16 s).
    fn failed(&mut self, who: &str, now: Instant) -> (Option<OutageLine>, Duration) {
        if let Some((failed, restarted)) = self.last_failure
            && now.saturating_duration_since(restarted) >= QUIET_RECOVERY + self.slowest_failure
        {
            // Ended no later than it last failed.
            self.recovered_at(failed);
        }
        self.failures += 1;
        let wait = Duration::from_secs(1u64 << self.failures.min(5).saturating_sub(1));
        self.last_failure = Some((now, now + wait));
        let line = self.outages.entry(who.to_owned()).or_default().failed(now);
        (line, wait)
    }

    /// Everything wrote again: ends every outage.
    fn recovered(&mut self) {
        self.recovered_at(Instant::now());
    }

    fn recovered_at(&mut self, now: Instant) {
        if self.failures == 0 {
            return;
        }
        self.failures = 0;
        for (who, outage) in &mut self.outages {
            if let Some(OutageLine::Back(after)) = outage.succeeded(now) {
                SinkBack { sink: who, after }.emit();
            }
        }
    }
}

/// Where dead letters and gap records go: `[dead_letter] path`, else beside
/// the Parquet data (on its disk or in its bucket), else beside the
/// checkpoint file.
pub(crate) fn dead_letter_location(config: &Config) -> anyhow::Result<Location> {
    if let Some(location) = config.dead_letter.location()? {
        return Ok(location);
    }
    if let Some(pq) = &config.sinks.parquet {
        return Ok(pq.location()?);
    }
    Ok(Location::Local(
        config
            .checkpoint
            .path
            .parent()
            .map_or_else(|| PathBuf::from("."), PathBuf::from),
    ))
}

/// Opens the dead-letter store at its location; on an object store the
/// prefix is listed first, so a missing bucket or denied access stops the
/// run before anything is read.
fn open_dead_letters(config: &Config) -> Result<Box<dyn DeadLetterStore>, Stop> {
    let failed = |e: DeadLetterError| Stop::of("dead letters", e.into());
    let location = dead_letter_location(config).map_err(Stop::Fatal)?;
    Ok(match location {
        Location::Local(root) => Box::new(LocalDeadLetters::open(&root).map_err(failed)?),
        Location::Remote { url, options } => {
            let objects =
                Objects::connect(&url, &options).map_err(|e| failed(DeadLetterError::Object(e)))?;
            Box::new(ObjectDeadLetters::open(objects).map_err(failed)?)
        }
    })
}

/// The tables known before anything is read, so the sinks can get ready
/// for them (create topics) and fail before the run starts.
pub(crate) fn known_tables(config: &Config) -> Vec<String> {
    let s = &config.source;
    let mut tables: Vec<String> = s.tables.clone();
    tables.extend(
        s.stream_arns
            .iter()
            .filter_map(|arn| dynamo_cdc_source::record::table_from_arn(arn))
            .map(str::to_owned),
    );
    tables.extend(s.table.clone());
    tables.sort();
    tables.dedup();
    tables
}

/// What carries over from one pass to the next.
pub(crate) struct Carried<'a> {
    pub summary: &'a mut RunSummary,
    pub pauses: &'a mut Pauses,
    pub watch: &'a Watch,
    /// A snapshot asked for on the command line and not started yet.
    pub snapshot_now: &'a mut Option<String>,
    /// The identities of dead letters and gaps a failed pass tried to keep
    /// and did not report: the store may hold them all the same (a write
    /// that failed after some of them were durable), and the next pass,
    /// finding them held, reports them then rather than never.
    pub unreported: &'a mut HashSet<String>,
}

/// One pass: open the sinks at their committed positions, read, write,
/// commit, until the input ends, the source stops, or something fails.
pub(crate) fn run_once(
    pass: Pass<'_>,
    options: &RunOptions,
    declared: &HashMap<String, DeclaredSchema>,
    carried: Carried<'_>,
) -> Result<(), Stop> {
    let Pass {
        config,
        checkpoint,
        guard,
    } = pass;
    let Carried {
        summary,
        pauses,
        watch,
        snapshot_now,
        unreported,
    } = carried;
    watch.health.beat();
    let mut sinks = sinks::open(config, declared)?;
    let mut dead_letters = open_dead_letters(config)?;
    let recorded = checkpoint.load().map_err(|e| Stop::of("checkpoint", e))?;
    sinks.adopt(&recorded);
    if let Some(g) = guard {
        sinks.lease_epochs(g.epochs());
        sinks.write_guard(&g.write_guard());
    }
    sinks.stop_flag(&options.stop);
    watch.health.set_positions_loaded();
    sinks.prepare(&known_tables(config))?;
    watch.health.set_sinks_open();
    let resume = sinks.resume_point();
    tracing::info!(shards = resume.len(), "resuming");

    // Recorded before any stream is read at its end: see `latest`.
    let delivered = sinks.furthest();
    let fresh = latest::take_missing(config, sinks.latest_starts(), &delivered)
        .map_err(source_unavailable)?;
    if !fresh.is_empty() {
        sinks.add_latest_starts(&fresh);
        allowed(guard)?;
        record_now(checkpoint, &mut sinks)?;
    }
    let latest = latest::for_source(config, sinks.latest_starts(), &fresh);
    let mut feed = Feed::start(
        config,
        resume.clone(),
        delivered,
        Recalled {
            latest,
            ended: sinks.ended_shards(),
            held: sinks.lowest_held(),
        },
        options.until_idle,
        snapshot_now.as_deref(),
        sinks.image_reading(),
    )
    .map_err(source_unavailable)?;
    *snapshot_now = None;
    watch.set_board(feed.board());
    if feed.board().is_none() {
        watch.health.set_streams_answered();
    }
    // A replay shows how far it read; a stream, how far its snapshots are.
    let snapshots = feed.snapshot_progress();
    let mut progress = (options.progress && (feed.board().is_none() || !snapshots.is_empty()))
        .then(|| Progress::stderr(true));
    let snapshot_items_before = snapshots.iter().map(|p| p.items).sum();
    // A replay that fails is read again from its start by the next pass:
    // its reads are not counted twice (see `RunSummary::read`).
    let read_before = summary.read.clone();
    let outcome = pump(
        options,
        &mut feed,
        &mut Loop {
            sinks: &mut sinks,
            dead_letters: dead_letters.as_mut(),
            checkpoint,
            summary,
            pauses,
            watch,
            delivered: resume,
            delivered_stamps: Vec::new(),
            recorded: None,
            recorded_moved: false,
            progress: progress.as_mut(),
            snapshot_items_before,
            guard,
            unreported,
        },
    );
    if let Some(p) = progress.as_mut() {
        p.finish();
    }
    let committed = match outcome {
        Err(Stop::Source(e)) => {
            let _ = feed.finish();
            allowed(guard)?;
            sinks.flush().map_err(|f| fenced_or(guard, f.into()))?;
            record_now(checkpoint, &mut sinks)?;
            return Err(Stop::Fatal(e));
        }
        // A sink failure commits nothing more; the feed just stops.
        Err(stop) => {
            let _ = feed.finish();
            Err(fenced_or(guard, stop))
        }
        Ok(()) => {
            let stats = feed.finish().map_err(Stop::Fatal)?;
            if options.stop.load(Ordering::Relaxed) {
                tracing::info!("stop requested: committing what was read");
                summary.stopped_on_request = true;
            }
            allowed(guard)
                .and_then(|()| sinks.flush().map_err(|f| fenced_or(guard, f.into())))
                .and_then(|()| record_now(checkpoint, &mut sinks))
                .map(|()| stats)
        }
    };
    summary.dead_letters_total = dead_letters.known();
    match committed {
        Ok(stats) => {
            watch.checkpoint_stored();
            pauses.recovered();
            summary.add_sinks(&sinks.stats());
            summary.already_delivered += stats.already_delivered;
            summary.duplicates_in_capture += stats.duplicates;
            Ok(())
        }
        // What the sinks committed before the failure stays in the summary.
        Err(stop) => {
            if config.source.kind == SourceKind::Replay {
                summary.read = read_before;
            }
            summary.add_committed(&sinks.stats());
            Err(stop)
        }
    }
}

/// Records what the sinks hold now, writing anything the store held back.
fn record_now(checkpoint: &mut dyn CheckpointStore, sinks: &mut Sinks) -> Result<(), Stop> {
    sinks.promote_ended();
    checkpoint
        .store(&sinks.recorded())
        .and_then(|()| checkpoint.flush())
        .map_err(|e| Stop::of("checkpoint", e))
}

/// A source that cannot start because AWS cannot be reached (throttled,
/// 5xx, no network) is an outage to wait out like a sink's; anything else
/// (a missing table, no stream, no permission) stops the run.
fn source_unavailable(e: anyhow::Error) -> Stop {
    let passing = e.chain().any(|cause| {
        cause
            .downcast_ref::<ApiError>()
            .is_some_and(ApiError::is_retryable)
    });
    if passing {
        Stop::Transient {
            who: "source".to_owned(),
            error: SinkError::transient(e),
        }
    } else {
        Stop::Fatal(e)
    }
}

/// How a failure of the source ends the pass: a snapshot's failure that may
/// pass (its journal's disk or store timed out, is full or is down; a
/// call still throttled after its retries) pauses the run like a sink's
/// outage (what is committed stays so, the journal's plan is taken up
/// again, and pages left in it are dropped as held when read again);
/// anything else stops it.
fn source_stop(e: anyhow::Error) -> Stop {
    match e.downcast_ref::<SnapshotError>() {
        Some(s) if s.is_transient() => {
            let who = match s {
                SnapshotError::Journal(_) => "snapshot journal",
                SnapshotError::Unreachable { .. } => "snapshot export bucket",
                _ => "snapshot",
            };
            Stop::Transient {
                who: who.to_owned(),
                error: SinkError::transient(e),
            }
        }
        _ => Stop::Source(e),
    }
}

/// Where batches come from, as the batch loop sees it.
pub(crate) trait Batches {
    /// The next batch (possibly empty), or `None` at the end.
    fn next(&mut self) -> anyhow::Result<Option<SourceBatch>>;
    /// Hands a processed batch back.
    fn recycle(&mut self, batch: SourceBatch);
    /// Bytes of input read so far and in all (0 when unknown).
    fn bytes(&self) -> (u64, u64) {
        (0, 0)
    }
    /// Every sink has made `positions` durable.
    fn delivered(&mut self, positions: &Positions) -> anyhow::Result<()> {
        let _ = positions;
        Ok(())
    }
    /// Where each snapshot stands.
    fn snapshot_progress(&self) -> Vec<SnapshotProgress> {
        Vec::new()
    }
    /// The stream source's shard board, once the stream runs.
    fn board(&self) -> Option<std::sync::Arc<ShardBoard>> {
        None
    }
}

impl Batches for Feed {
    fn next(&mut self) -> anyhow::Result<Option<SourceBatch>> {
        Feed::next(self)
    }
    fn recycle(&mut self, batch: SourceBatch) {
        Feed::recycle(self, batch);
    }
    fn bytes(&self) -> (u64, u64) {
        Feed::bytes(self)
    }
    fn delivered(&mut self, positions: &Positions) -> anyhow::Result<()> {
        Feed::delivered(self, positions)
    }
    fn snapshot_progress(&self) -> Vec<SnapshotProgress> {
        Feed::snapshot_progress(self)
    }
    fn board(&self) -> Option<std::sync::Arc<ShardBoard>> {
        Feed::board(self)
    }
}

/// What the batch loop works with.
struct Loop<'a> {
    sinks: &'a mut Sinks,
    dead_letters: &'a mut dyn DeadLetterStore,
    checkpoint: &'a mut dyn CheckpointStore,
    summary: &'a mut RunSummary,
    pauses: &'a mut Pauses,
    watch: &'a Watch,
    /// The resume point last reported to the stream source's board.
    delivered: Positions,
    /// The sinks' position stamps when `delivered` was worked out.
    delivered_stamps: Vec<u64>,
    /// What the checkpoint last recorded (`None` before the first batch).
    recorded: Option<Recorded>,
    /// The checkpoint moved since the source was last told.
    recorded_moved: bool,
    progress: Option<&'a mut Progress>,
    /// Items the snapshots had read before this pass (for their rate).
    snapshot_items_before: u64,
    /// Under leases: when to end, and whether writing is still allowed.
    guard: Option<&'a dyn PassGuard>,
    /// See [`Carried::unreported`].
    unreported: &'a mut HashSet<String>,
}

/// The batch loop: for each batch, gaps, snapshot records, write, dead letters (durable before
/// any commit moves past them), commit, checkpoint.
fn pump(options: &RunOptions, feed: &mut dyn Batches, l: &mut Loop<'_>) -> Result<(), Stop> {
    let store_failed = |e: DeadLetterError| Stop::of("dead letters", e.into());
    while !options.stop.load(Ordering::Relaxed) {
        l.watch.health.beat();
        if l.guard.is_some_and(|g| g.should_end()) {
            break;
        }
        let mut batch = match feed.next() {
            Ok(Some(batch)) => batch,
            Ok(None) => break,
            Err(e) => return Err(source_stop(e)),
        };
        allowed(l.guard)?;
        // Gaps first: they precede the batch's changes in their shards.
        for gap in &batch.gaps {
            // Met again by a pass started over: neither logged nor
            // counted twice, unless that pass failed before reporting it.
            let id = gap.identity();
            let new = match l.dead_letters.record_gap(gap) {
                Ok(new) => new,
                Err(e) => {
                    l.unreported.insert(id);
                    return Err(store_failed(e));
                }
            };
            if l.unreported.remove(&id) || new {
                GapRecorded(gap).emit();
                l.summary.gaps += 1;
            }
            l.sinks.record_gap(gap)?;
        }

        // Then snapshot records: before any row of their snapshots. A
        // finished snapshot's record waits for the commit of its last rows
        // (below); when rows of it are in this batch, its S0 goes first.
        let finished = record_snapshots(&batch, l.sinks)?;
        count_read(&batch, l.summary);
        let rejected = l.sinks.write(&batch.changes)?;
        l.sinks.note_ended(&mut batch);
        let mut letters = std::mem::take(&mut batch.dead_letters);
        for r in rejected {
            let change = &batch.changes[r.index];
            let origin = batch.origins.get(r.index);
            letters.push(DeadLetter {
                origin: origin.map_or_else(String::new, |o| o.origin.to_string()),
                line: origin.and_then(|o| o.line),
                record_index: origin.and_then(|o| o.record_index),
                table: Some(change.source.table.to_string()),
                shard: Some(change.source.shard_id.to_string()),
                sequence_number: Some(change.source.sequence_number.to_string()),
                error: r.error,
                raw: render_record(change),
            });
        }
        if !letters.is_empty() {
            // A pass started again after an outage meets the letters it
            // kept before: they are not reported (logged, counted) twice,
            // but those a failed pass kept without reporting are.
            let mut ids = HashSet::new();
            let fresh: Vec<Option<String>> = letters
                .iter()
                .map(|d| {
                    let id = d.identity();
                    let report = !l.dead_letters.holds(d) || l.unreported.contains(&id);
                    (report && ids.insert(id.clone())).then_some(id)
                })
                .collect();
            if let Err(e) = l.dead_letters.write(&letters) {
                l.unreported.extend(fresh.into_iter().flatten());
                return Err(store_failed(e));
            }
            for (d, id) in letters.iter().zip(fresh) {
                if let Some(id) = id {
                    l.unreported.remove(&id);
                    l.summary.dead_lettered += 1;
                    DeadLettered(d).emit();
                }
            }
        }
        allowed(l.guard)?;
        if !finished.is_empty() {
            // Readers take a finished snapshot as whole: every sink
            // commits what it was given before the record says so.
            l.sinks.flush()?;
            for snapshot in &finished {
                l.sinks.record_snapshot(snapshot)?;
            }
        }
        l.sinks.poll()?;
        // Most batches move no position: the checkpoint is written only
        // when one moved.
        if let Some(recorded) = l.sinks.recorded_if_moved(l.recorded.as_ref()) {
            l.checkpoint
                .store(&recorded)
                .map_err(|e| Stop::of("checkpoint", e))?;
            // An outage is over once something was committed after it: an
            // accepted write alone proves nothing (a full disk fails at
            // commit).
            if l.recorded.is_some() {
                l.pauses.recovered();
            }
            l.recorded = Some(recorded);
            l.recorded_moved = true;
        } else {
            // A record held back by the store's pace, once it may write.
            l.checkpoint
                .write_due()
                .map_err(|e| Stop::of("checkpoint", e))?;
        }
        // What the checkpoint holds is current as of now.
        l.watch.checkpoint_stored();
        if l.watch.board().is_none()
            && let Some(board) = feed.board()
        {
            // The stream started after an export was handed over.
            l.watch.set_board(Some(board));
        }
        report_delivered(l);
        if l.recorded_moved {
            l.recorded_moved = false;
            feed.delivered(&l.delivered).map_err(source_stop)?;
        }
        if let Some(p) = l.progress.as_deref_mut() {
            let snapshots = feed.snapshot_progress();
            if snapshots.is_empty() {
                let (read, total) = feed.bytes();
                p.update(l.summary.changes_read(), read, total);
            } else {
                p.draw(|elapsed| snapshot_line(&snapshots, l.snapshot_items_before, elapsed));
            }
        }
        feed.recycle(batch);
    }
    Ok(())
}

/// Has every sink record the batch's snapshot records that can go before
/// its changes, and returns the ones that must wait for the commit of
/// those changes: the finished ones. A finished snapshot whose rows the
/// batch holds (a small table read at once, or pages handed over again
/// after a crash) is first recorded as running, for its S0, by the sinks
/// that hold no record of it yet.
fn record_snapshots(batch: &SourceBatch, sinks: &mut Sinks) -> Result<Vec<SnapshotRecord>, Stop> {
    let mut finished = Vec::new();
    for snapshot in &batch.snapshots {
        if snapshot.finished_ms.is_none() {
            sinks.record_snapshot(snapshot)?;
            continue;
        }
        let has_rows = batch.changes.iter().any(|c| {
            c.source
                .snapshot
                .as_ref()
                .is_some_and(|s| *s.id == *snapshot.id)
        });
        if has_rows {
            // Not over a record a sink already holds: it says the same S0.
            sinks.record_snapshot_start(&SnapshotRecord {
                finished_ms: None,
                ..snapshot.clone()
            })?;
        }
        finished.push(snapshot.clone());
    }
    Ok(finished)
}

/// Tells the stream source's board how far every sink has delivered, for
/// the lag and time-to-data-loss gauges.
fn report_delivered(l: &mut Loop<'_>) {
    let Some(board) = l.watch.board() else {
        return;
    };
    if board.all_streams_answered() {
        l.watch.health.set_streams_answered();
    }
    if l.sinks.stamps().eq(l.delivered_stamps.iter().copied()) {
        return; // no position moved
    }
    l.delivered_stamps.clear();
    l.delivered_stamps.extend(l.sinks.stamps());
    let now = l.sinks.resume_point();
    for (key, seq) in now.iter() {
        if l.delivered.get(key) != Some(seq) {
            board.delivered(key, seq);
        }
    }
    l.delivered = now;
}

/// Counts the batch's changes per table and op, for the summary and the
/// metrics (one metric update per table and op, not per change).
fn count_read(batch: &SourceBatch, summary: &mut RunSummary) {
    let mut counts: Vec<(&str, &'static str, u64)> = Vec::new();
    for c in &batch.changes {
        let (table, op) = (&*c.source.table, c.op.code());
        summary.count_read(table, op);
        match counts.iter_mut().find(|(t, o, _)| *t == table && *o == op) {
            Some((_, _, n)) => *n += 1,
            None => counts.push((table, op, 1)),
        }
    }
    for (table, op, count) in counts {
        ChangesRead { table, op, count }.emit();
    }
}

/// Reads and checks the declared schemas (`transform.schemas_dir`), as a
/// run does at its start, so that `validate` and the configuration errors
/// of `run` (exit 2) cover them; warns of a schema named for a table a
/// `dynamodb` source does not read (its values would be inferred).
///
/// # Errors
/// The first schema that cannot be read or parsed, naming its file.
pub fn check_schemas(config: &Config) -> anyhow::Result<()> {
    let declared = load_declared(config.transform.schemas_dir.as_deref())?;
    if config.source.kind == SourceKind::Dynamodb {
        let tables = known_tables(config);
        let mut unread: Vec<&String> = declared.keys().filter(|t| !tables.contains(t)).collect();
        unread.sort();
        for table in unread {
            tracing::warn!(
                table = %table,
                schema = %format!("{table}.avsc"),
                "a declared schema names a table the source does not read: it is not used"
            );
        }
    }
    Ok(())
}

/// Reads every `<table>.avsc` in `dir`.
fn load_declared(dir: Option<&Path>) -> anyhow::Result<HashMap<String, DeclaredSchema>> {
    let mut out = HashMap::new();
    let Some(dir) = dir else { return Ok(out) };
    let entries = std::fs::read_dir(dir).with_context(|| {
        format!(
            "config key `transform.schemas_dir`: cannot read {}",
            dir.display()
        )
    })?;
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "avsc") {
            continue;
        }
        let Some(table) = path.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
            continue;
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let schema = DeclaredSchema::parse_avsc(&text)
            .map_err(|e| anyhow::anyhow!("schema {}: {e}", path.display()))?;
        out.insert(table, schema);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    //! The ordering rule of the batch loop: a batch's dead letters are
    //! durable before any sink commits past them, and the checkpoint is
    //! written only after the commit.

    use std::sync::{Arc, Mutex};

    use dynamo_cdc_core::{
        Change, Gap, Item, MemoryCheckpoints, Op, Positions, Recorded, Rejected, SequenceNumber,
        ShardKey, Sink, SinkStats, SnapshotRecord, SourceInfo,
    };

    use super::*;

    type Log = Arc<Mutex<Vec<String>>>;

    fn note(log: &Log, what: &str) {
        log.lock().unwrap().push(what.to_owned());
    }

    /// A sink that rejects odd sequence numbers and commits on poll.
    struct Recording {
        log: Log,
        accepted: Vec<(ShardKey, SequenceNumber)>,
        durable: Positions,
    }

    impl Sink for Recording {
        fn id(&self) -> &str {
            "recording"
        }
        fn adopt(&mut self, _: &Positions, _: &serde_json::Value) {}
        fn durable_positions(&self) -> &Positions {
            &self.durable
        }
        fn write(&mut self, changes: &[Change]) -> Result<Vec<Rejected>, SinkError> {
            note(&self.log, "sink write");
            let mut rejected = Vec::new();
            for (index, c) in changes.iter().enumerate() {
                let key = ShardKey::new(&*c.source.table, &*c.source.shard_id);
                self.accepted.push((key, c.source.sequence_number.clone()));
                if c.source
                    .sequence_number
                    .to_string()
                    .ends_with(['1', '3', '5', '7', '9'])
                {
                    rejected.push(Rejected {
                        index,
                        error: "odd".into(),
                    });
                }
            }
            Ok(rejected)
        }
        fn record_gap(&mut self, _: &Gap) -> Result<(), SinkError> {
            note(&self.log, "sink gap");
            Ok(())
        }
        fn record_snapshot(&mut self, snapshot: &SnapshotRecord) -> Result<(), SinkError> {
            let finished = if snapshot.finished_ms.is_some() {
                " finished"
            } else {
                ""
            };
            note(
                &self.log,
                &format!("sink snapshot {}{finished}", snapshot.id),
            );
            Ok(())
        }
        fn poll(&mut self) -> Result<(), SinkError> {
            note(&self.log, "sink commit");
            for (key, seq) in self.accepted.drain(..) {
                self.durable.advance(key, seq);
            }
            Ok(())
        }
        fn flush(&mut self) -> Result<(), SinkError> {
            self.poll()
        }
        fn stats(&self) -> SinkStats {
            SinkStats::default()
        }
    }

    /// How a [`Letters`] store fails.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Fail {
        Never,
        /// Every write fails, keeping nothing.
        Always,
        /// Writes of letters keep them, then fail (a later file or the
        /// directory's sync failed).
        AfterKeeping,
        /// The same for gaps.
        GapAfterKeeping,
    }

    /// A dead-letter store that can be made to fail.
    struct Letters {
        log: Log,
        fail: Fail,
        kept: u64,
        /// Identities of the letters kept.
        held: HashSet<String>,
        /// Identities of the gaps kept.
        gaps: HashSet<String>,
    }

    impl Letters {
        fn new(log: &Log, fail: Fail) -> Self {
            Letters {
                log: log.clone(),
                fail,
                kept: 0,
                held: HashSet::new(),
                gaps: HashSet::new(),
            }
        }
    }

    /// A real store's error: its root is a file, which cannot be opened as
    /// a store, let alone written.
    fn store_error() -> DeadLetterError {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("a-file");
        std::fs::write(&root, b"").unwrap();
        let Err(e) = LocalDeadLetters::open(&root) else {
            unreachable!("a file opened as a dead-letter store")
        };
        e
    }

    impl DeadLetterStore for Letters {
        fn write(&mut self, letters: &[DeadLetter]) -> Result<u64, DeadLetterError> {
            if self.fail == Fail::Always {
                note(&self.log, "dead letters failed");
                return Err(store_error());
            }
            let new = letters
                .iter()
                .filter(|d| self.held.insert(d.identity()))
                .count() as u64;
            if self.fail == Fail::AfterKeeping {
                return Err(store_error());
            }
            note(
                &self.log,
                &format!("dead letters durable ({})", letters.len()),
            );
            self.kept += new;
            Ok(new)
        }
        fn holds(&self, letter: &DeadLetter) -> bool {
            self.held.contains(&letter.identity())
        }
        fn record_gap(&mut self, gap: &Gap) -> Result<bool, DeadLetterError> {
            let new = self.gaps.insert(gap.identity());
            if self.fail == Fail::GapAfterKeeping {
                return Err(store_error());
            }
            note(&self.log, "gap durable");
            Ok(new)
        }
        fn known(&self) -> u64 {
            self.kept
        }
        fn location(&self) -> String {
            "test".into()
        }
    }

    /// Records when the checkpoint is written.
    struct Checkpoints {
        log: Log,
        inner: MemoryCheckpoints,
    }

    impl CheckpointStore for Checkpoints {
        fn load(&mut self) -> Result<Recorded, SinkError> {
            self.inner.load()
        }
        fn store(&mut self, recorded: &Recorded) -> Result<(), SinkError> {
            note(&self.log, "checkpoint");
            self.inner.store(recorded)
        }
        fn describe(&self) -> String {
            "test".into()
        }
    }

    #[test]
    fn a_failure_long_after_the_last_starts_a_new_outage() {
        let t0 = Instant::now();
        let mut pauses = Pauses::default();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(
            pauses.failed("kafka", at(0)),
            (Some(OutageLine::Down), Duration::from_secs(1))
        );
        assert_eq!(
            pauses.failed("kafka", at(1)),
            (None, Duration::from_secs(2))
        );
        assert_eq!(
            pauses.failed("kafka", at(3)),
            (None, Duration::from_secs(4))
        );
        // Still failing after 30 s: said so.
        assert!(matches!(
            pauses.failed("kafka", at(31)),
            (Some(OutageLine::StillDown(_)), _)
        ));
        // A pass that fails slowly, four minutes after it started, is the
        // same outage.
        let wait = Duration::from_secs(16);
        assert!(matches!(
            pauses.failed("kafka", at(39 + 240)),
            (Some(OutageLine::StillDown(d)), w) if d == Duration::from_secs(279) && w == wait
        ));
        // Then a quiet table: nothing committed, nothing failed, for an
        // hour. The next failure is a new outage, waited out from 1 s.
        assert_eq!(
            pauses.failed("kafka", at(3_631)),
            (Some(OutageLine::Down), Duration::from_secs(1))
        );
        assert!(pauses.outages["kafka"].is_down());

        // Under leases with a long produce timeout, a pass that fails when
        // its messages expire is the same outage.
        let mut pauses = Pauses::default();
        pauses.fail_within(Duration::from_secs(400));
        pauses.failed("kafka", at(0));
        assert!(matches!(
            pauses.failed("kafka", at(1 + 401)),
            (Some(OutageLine::StillDown(_)), _)
        ));
    }

    /// A lease guard that holds (`None`) or says why it is gone.
    struct Lease {
        gone: Option<String>,
        epochs: BTreeMap<String, u64>,
    }

    impl Lease {
        fn new(gone: Option<&str>) -> Self {
            Lease {
                gone: gone.map(str::to_owned),
                epochs: BTreeMap::new(),
            }
        }
    }

    impl PassGuard for Lease {
        fn should_end(&self) -> bool {
            false
        }
        fn check(&self) -> Result<(), String> {
            self.gone.clone().map_or(Ok(()), Err)
        }
        fn epochs(&self) -> &BTreeMap<String, u64> {
            &self.epochs
        }
        fn write_guard(&self) -> dynamo_cdc_core::WriteGuard {
            let gone = self.gone.clone();
            Arc::new(move || gone.clone().map_or(Ok(()), Err))
        }
    }

    #[test]
    fn a_sink_that_stops_while_the_lease_is_gone_is_fenced_not_down() {
        // A Kafka sink refusing a hand-over once the lease ended reports a
        // transient error: the pass ends as fenced, not as a sink outage.
        let refused = || Stop::Transient {
            who: "kafka".into(),
            error: SinkError::transient("not handed to Kafka: the lease ran out"),
        };
        let gone = Lease::new(Some("the lease on table t (epoch 3) is no longer held"));
        assert!(
            matches!(fenced_or(Some(&gone), refused()), Stop::Fenced(why) if why.contains("epoch 3"))
        );
        let held = Lease::new(None);
        assert!(matches!(
            fenced_or(Some(&held), refused()),
            Stop::Transient { .. }
        ));
        assert!(matches!(fenced_or(None, refused()), Stop::Transient { .. }));
        let fatal = Stop::Fatal(anyhow::anyhow!("bad topic"));
        assert!(matches!(fenced_or(Some(&gone), fatal), Stop::Fatal(_)));
    }

    #[test]
    fn a_journal_that_may_come_back_pauses_the_run_and_one_that_cannot_stops_it() {
        use dynamo_cdc_source::streams::ApiErrorKind;
        let api = |kind| SnapshotError::Api {
            table: "t".into(),
            source: ApiError {
                kind,
                operation: "Scan",
                message: "x".into(),
            },
        };
        // The pause names what is down, for the outage's log lines.
        let stop = source_stop(anyhow::Error::new(api(ApiErrorKind::Throttled)));
        assert!(matches!(stop, Stop::Transient { who, .. } if who == "snapshot"));
        let bucket_down = SnapshotError::Unreachable {
            table: "t".into(),
            reason: "export data file: 503".into(),
        };
        let stop = source_stop(anyhow::Error::new(bucket_down));
        assert!(matches!(stop, Stop::Transient { who, .. } if who == "snapshot export bucket"));
        let stop = source_stop(anyhow::Error::new(api(ApiErrorKind::Fatal)));
        assert!(matches!(stop, Stop::Source(_)));
        assert!(matches!(
            source_stop(anyhow::anyhow!("something else")),
            Stop::Source(_)
        ));
    }

    struct Batches1(Vec<SourceBatch>);

    impl Batches for Batches1 {
        fn next(&mut self) -> anyhow::Result<Option<SourceBatch>> {
            Ok(self.0.pop())
        }
        fn recycle(&mut self, _: SourceBatch) {}
    }

    fn change(seq: u64) -> Change {
        let keys: Item = [(
            "id",
            dynamo_cdc_core::AttributeValue::S(seq.to_string().into()),
        )]
        .into();
        Change {
            op: Op::Insert,
            keys: keys.clone(),
            old_image: None,
            unread_old_image: None,
            new_image: Some(keys),
            source: SourceInfo {
                table: "orders".into(),
                stream_arn: None,
                shard_id: "s1".into(),
                sequence_number: SequenceNumber::parse(&seq.to_string()).unwrap(),
                event_id: String::new(),
                approx_creation_ms: None,
                ttl_delete: false,
                snapshot: None,
            },
        }
    }

    fn batch() -> SourceBatch {
        let gap = Gap {
            table: "orders".into(),
            shard: "s1".into(),
            after: None,
            resumed_at: Some("100".into()),
            detected_at_ms: 0,
            reason: "trimmed".into(),
        };
        SourceBatch {
            changes: (100..104).map(change).collect(),
            origins: Vec::new(),
            dead_letters: Vec::new(),
            gaps: vec![gap],
            read_through: Vec::new(),
            snapshots: vec![SnapshotRecord {
                id: "snap-1".into(),
                table: "orders".into(),
                method: "scan".into(),
                s0: [("s1".to_owned(), "99".to_owned())].into(),
                started_ms: 0,
                finished_ms: None,
                segments: 1,
                items: 0,
            }],
            ..SourceBatch::default()
        }
    }

    /// The batch of [`batch`] whose snapshot record says the snapshot
    /// finished; with `rows`, its changes are that snapshot's rows.
    fn finishing_batch(rows: bool) -> SourceBatch {
        let mut batch = batch();
        batch.snapshots[0].finished_ms = Some(1);
        if rows {
            for c in &mut batch.changes {
                c.source.snapshot = Some(dynamo_cdc_core::SnapshotRead {
                    id: "snap-1".into(),
                    read_ms: 0,
                    marker: dynamo_cdc_core::SnapshotMarker::Row,
                });
            }
        }
        batch
    }

    fn pump_one(fail_letters: bool) -> (Result<(), Stop>, Vec<String>, MemoryCheckpoints) {
        pump_batch(fail_letters, batch())
    }

    fn pump_batch(
        fail_letters: bool,
        batch: SourceBatch,
    ) -> (Result<(), Stop>, Vec<String>, MemoryCheckpoints) {
        let (outcome, log, memory, _) = pump_batches(fail_letters, vec![batch]);
        (outcome, log, memory)
    }

    /// Pumps `batches` in order, as one pass; returns its summary too.
    fn pump_batches(
        fail_letters: bool,
        batches: Vec<SourceBatch>,
    ) -> (Result<(), Stop>, Vec<String>, MemoryCheckpoints, RunSummary) {
        let log: Log = Arc::default();
        let mut letters = Letters::new(
            &log,
            if fail_letters {
                Fail::Always
            } else {
                Fail::Never
            },
        );
        let mut summary = RunSummary::default();
        let (outcome, memory) = pump_pass(
            &log,
            &mut letters,
            &mut summary,
            &mut HashSet::new(),
            batches,
        );
        let log = log.lock().unwrap().clone();
        (outcome, log, memory, summary)
    }

    /// One pass over `batches`, with the store, summary and unreported
    /// identities given (kept across passes, as a run keeps them).
    fn pump_pass(
        log: &Log,
        letters: &mut Letters,
        summary: &mut RunSummary,
        unreported: &mut HashSet<String>,
        mut batches: Vec<SourceBatch>,
    ) -> (Result<(), Stop>, MemoryCheckpoints) {
        let mut sinks = Sinks::new(vec![Box::new(Recording {
            log: log.clone(),
            accepted: Vec::new(),
            durable: Positions::new(),
        })]);
        let memory = MemoryCheckpoints::new();
        let mut checkpoint = Checkpoints {
            log: log.clone(),
            inner: memory.clone(),
        };
        let mut pauses = Pauses::default();
        let watch = Watch::start(None).unwrap();
        let outcome = pump(
            &RunOptions::default(),
            &mut Batches1({
                // Taken from the back.
                batches.reverse();
                batches
            }),
            &mut Loop {
                sinks: &mut sinks,
                dead_letters: letters,
                checkpoint: &mut checkpoint,
                summary,
                pauses: &mut pauses,
                watch: &watch,
                delivered: Positions::new(),
                delivered_stamps: Vec::new(),
                recorded: None,
                recorded_moved: false,
                progress: None,
                snapshot_items_before: 0,
                guard: None,
                unreported,
            },
        );
        (outcome, memory)
    }

    /// Dead letters and a gap a failed pass kept without reporting (its
    /// store failed after making them durable) are reported by the next
    /// pass, which finds them held; those reported are not again.
    #[test]
    fn letters_kept_by_a_failed_pass_are_reported_by_the_next_once() {
        let log: Log = Arc::default();
        let mut unreported = HashSet::new();
        let pass = |letters: &mut Letters, summary: &mut RunSummary, unreported: &mut _| {
            pump_pass(&log, letters, summary, unreported, vec![batch()]).0
        };
        let mut letters = Letters::new(&log, Fail::AfterKeeping);
        let mut summary = RunSummary::default();
        assert!(pass(&mut letters, &mut summary, &mut unreported).is_err());
        assert_eq!(summary.dead_lettered, 0, "not reported: the pass failed");
        assert_eq!(letters.held.len(), 2, "but kept");
        letters.fail = Fail::Never;
        for _ in 0..2 {
            assert!(pass(&mut letters, &mut summary, &mut unreported).is_ok());
            assert_eq!(summary.dead_lettered, 2, "reported once");
            assert_eq!(summary.gaps, 1);
            assert!(unreported.is_empty());
        }
        let mut letters = Letters::new(&log, Fail::GapAfterKeeping);
        let mut summary = RunSummary::default();
        assert!(pass(&mut letters, &mut summary, &mut unreported).is_err());
        assert_eq!((summary.gaps, letters.gaps.len()), (0, 1));
        letters.fail = Fail::Never;
        assert!(pass(&mut letters, &mut summary, &mut unreported).is_ok());
        assert_eq!((summary.gaps, summary.dead_lettered), (1, 2));
    }

    #[test]
    fn a_gap_met_again_is_not_counted_again() {
        // A pass started over after an outage meets the gap it kept before:
        // the summary counts the gaps this run recorded, as the metric does.
        let (outcome, _, _, summary) = pump_batches(false, vec![batch(), batch()]);
        assert!(outcome.is_ok());
        assert_eq!(summary.gaps, 1);
    }

    #[test]
    fn gaps_and_snapshots_come_before_changes_and_dead_letters_before_any_commit() {
        let (outcome, log, memory) = pump_one(false);
        assert!(outcome.is_ok());
        assert_eq!(
            log,
            [
                "gap durable",
                "sink gap",
                "sink snapshot snap-1",
                "sink write",
                "dead letters durable (2)",
                "sink commit",
                "checkpoint"
            ]
        );
        let key = ShardKey::new("orders", "s1");
        assert_eq!(
            memory.recorded().sinks["recording"].positions.get(&key),
            Some(&SequenceNumber::parse("103").unwrap())
        );
    }

    #[test]
    fn a_finished_snapshot_is_recorded_only_after_every_sink_committed_what_came_before() {
        // Stream changes in the batch: the record waits for their commit.
        let (outcome, log, _) = pump_batch(false, finishing_batch(false));
        assert!(outcome.is_ok());
        assert_eq!(
            log,
            [
                "gap durable",
                "sink gap",
                "sink write",
                "dead letters durable (2)",
                "sink commit",
                "sink snapshot snap-1 finished",
                "sink commit",
                "checkpoint"
            ]
        );
        // Its own last rows in the batch: S0 first, as for a running one.
        let (outcome, log, _) = pump_batch(false, finishing_batch(true));
        assert!(outcome.is_ok());
        assert_eq!(
            log,
            [
                "gap durable",
                "sink gap",
                "sink snapshot snap-1",
                "sink write",
                "dead letters durable (2)",
                "sink commit",
                "sink snapshot snap-1 finished",
                "sink commit",
                "checkpoint"
            ]
        );
    }

    #[test]
    fn a_finished_snapshot_whose_last_rows_cannot_be_dead_lettered_is_not_recorded() {
        let (outcome, log, _) = pump_batch(true, finishing_batch(true));
        assert!(outcome.is_err());
        assert!(!log.iter().any(|l| l.ends_with("finished")), "{log:?}");
    }

    #[test]
    fn when_dead_letters_cannot_be_kept_nothing_is_committed_or_recorded() {
        let (outcome, log, memory) = pump_one(true);
        match outcome {
            Err(Stop::Transient { who, .. }) => assert_eq!(who, "dead letters"),
            _ => panic!("a dead-letter store that cannot write pauses the run"),
        }
        assert_eq!(log.last().map(String::as_str), Some("dead letters failed"));
        assert!(!log.iter().any(|l| l == "sink commit" || l == "checkpoint"));
        assert_eq!(memory.stores(), 0);
    }
}
