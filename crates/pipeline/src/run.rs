//! Wiring: source -> sinks -> checkpoint, with dead letters on the side.
//!
//! The source reads on its own thread and hands batches over a bounded
//! channel, so a slow sink slows the reader and memory does not grow with the
//! backlog. For each batch: the sinks write what they can, the records they
//! or the source rejected are made durable in the dead-letter store, and only
//! then may the sinks commit and the checkpoint record the new positions.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use dynamo_cdc_core::{
    CheckpointStore, DeadLetter, ErrorKind, Outage, OutageLine, Positions, SinkError, SourceBatch,
};
use dynamo_cdc_dead_letter::{DEAD_LETTER_DIR, DeadLetterStore, LocalDeadLetters};
use dynamo_cdc_source::record::render_record;
use dynamo_cdc_transform::DeclaredSchema;

use crate::checkpoint::FileCheckpoints;
use crate::config::{Config, SourceKind};
use crate::events::{ChangesRead, DeadLettered, GapRecorded, SinkBack, SinkPaused};
use crate::feed::Feed;
use crate::observe::watch::Watch;
use crate::progress::Progress;
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
}

/// Runs the configured pipeline to the end of its input, until idle, or
/// until asked to stop.
///
/// A sink, the dead-letter store or the checkpoint that cannot write for a
/// reason that may pass (a full disk, a broker or registry down) does not
/// end the run: everything after the last commit is dropped, the run waits
/// (1 s doubling to 30 s) and starts over from the committed positions,
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
    let declared = load_declared(config.transform.schemas_dir.as_deref())?;
    let mut summary = RunSummary {
        dead_letter_path: dead_letter_root(config)
            .join(DEAD_LETTER_DIR)
            .display()
            .to_string(),
        ..RunSummary::default()
    };
    let watch = Watch::start(options.metrics_listen.or(config.metrics.listen))?;
    let mut pauses = Pauses::default();
    loop {
        let mut checkpoint = FileCheckpoints::new(&config.checkpoint.path);
        let outcome = run_once(
            config,
            options,
            &declared,
            &mut checkpoint,
            &mut summary,
            &mut pauses,
            &watch,
        );
        watch.set_board(None);
        match outcome {
            Ok(()) => break,
            Err(Stop::Fatal(e) | Stop::Source(e)) => return Err(e),
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

impl From<SinkFailure> for Stop {
    fn from(f: SinkFailure) -> Stop {
        Stop::of(&f.sink, f.error)
    }
}

/// The outages of the sinks and stores, and the growing wait between tries.
#[derive(Default)]
struct Pauses {
    outages: BTreeMap<String, Outage>,
    failures: u32,
}

impl Pauses {
    /// Logs the failure as the outage rule says and waits; false when a stop
    /// was requested meanwhile.
    fn wait(&mut self, who: &str, error: &SinkError, stop: &AtomicBool, watch: &Watch) -> bool {
        self.failures += 1;
        let wait = Duration::from_secs(1u64 << self.failures.min(5).saturating_sub(1));
        let line = self
            .outages
            .entry(who.to_owned())
            .or_default()
            .failed(Instant::now());
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

    /// Everything wrote again: ends every outage.
    fn recovered(&mut self) {
        if self.failures == 0 {
            return;
        }
        self.failures = 0;
        let now = Instant::now();
        for (who, outage) in &mut self.outages {
            if let Some(OutageLine::Back(after)) = outage.succeeded(now) {
                SinkBack { sink: who, after }.emit();
            }
        }
    }
}

/// Where dead letters and gap records go: beside the Parquet data, else
/// beside the checkpoint file.
fn dead_letter_root(config: &Config) -> PathBuf {
    match &config.sinks.parquet {
        Some(pq) => pq.root.clone(),
        None => config
            .checkpoint
            .path
            .parent()
            .map_or_else(|| PathBuf::from("."), PathBuf::from),
    }
}

/// The tables known before anything is read, so the sinks can get ready
/// for them (create topics) and fail before the run starts.
fn known_tables(config: &Config) -> Vec<String> {
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

/// One pass: open the sinks at their committed positions, read, write,
/// commit, until the input ends, the source stops, or something fails.
fn run_once(
    config: &Config,
    options: &RunOptions,
    declared: &HashMap<String, DeclaredSchema>,
    checkpoint: &mut dyn CheckpointStore,
    summary: &mut RunSummary,
    pauses: &mut Pauses,
    watch: &Watch,
) -> Result<(), Stop> {
    watch.health.beat();
    let mut sinks = sinks::open(config, declared)?;
    let mut dead_letters = LocalDeadLetters::open(&dead_letter_root(config))
        .map_err(|e| Stop::of("dead letters", SinkError::transient(e)))?;
    let recorded = checkpoint.load().map_err(|e| Stop::of("checkpoint", e))?;
    sinks.adopt(&recorded);
    watch.health.set_positions_loaded();
    sinks.prepare(&known_tables(config))?;
    watch.health.set_sinks_open();
    let resume = sinks.resume_point();
    tracing::info!(shards = resume.len(), "resuming");

    let mut feed = Feed::start(config, resume.clone(), options.until_idle).map_err(Stop::Fatal)?;
    watch.set_board(feed.board());
    if feed.board().is_none() {
        watch.health.set_streams_answered();
    }
    let mut progress = (feed.board().is_none() && options.progress).then(|| Progress::stderr(true));
    let outcome = pump(
        options,
        &mut feed,
        &mut Loop {
            sinks: &mut sinks,
            dead_letters: &mut dead_letters,
            checkpoint,
            summary,
            pauses,
            watch,
            delivered: resume,
            progress: progress.as_mut(),
        },
    );
    if let Some(p) = progress.as_mut() {
        p.finish();
    }
    let stats = match outcome {
        Err(Stop::Source(e)) => {
            let _ = feed.finish();
            sinks.flush()?;
            checkpoint
                .store(&sinks.recorded())
                .map_err(|e| Stop::of("checkpoint", e))?;
            return Err(Stop::Fatal(e));
        }
        // A sink failure commits nothing more; the feed just stops.
        Err(stop) => {
            let _ = feed.finish();
            return Err(stop);
        }
        Ok(()) => feed.finish().map_err(Stop::Fatal)?,
    };
    if options.stop.load(Ordering::Relaxed) {
        tracing::info!("stop requested: committing what was read");
        summary.stopped_on_request = true;
    }
    sinks.flush()?;
    checkpoint
        .store(&sinks.recorded())
        .map_err(|e| Stop::of("checkpoint", e))?;
    watch.checkpoint_stored();
    pauses.recovered();
    summary.add_sinks(&sinks.stats());
    summary.already_delivered += stats.already_delivered;
    summary.duplicates_in_capture += stats.duplicates;
    summary.dead_letters_total = dead_letters.known();
    Ok(())
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
    progress: Option<&'a mut Progress>,
}

/// The batch loop: for each batch, gaps, write, dead letters (durable before
/// any commit moves past them), commit, checkpoint.
fn pump(options: &RunOptions, feed: &mut dyn Batches, l: &mut Loop<'_>) -> Result<(), Stop> {
    let store_failed = |e| Stop::of("dead letters", SinkError::transient(e));
    while !options.stop.load(Ordering::Relaxed) {
        l.watch.health.beat();
        let mut batch = match feed.next() {
            Ok(Some(batch)) => batch,
            Ok(None) => break,
            Err(e) => return Err(Stop::Source(e)),
        };
        // Gaps first: they precede the batch's changes in their shards.
        for gap in &batch.gaps {
            if l.dead_letters.record_gap(gap).map_err(store_failed)? {
                GapRecorded(gap).emit();
            }
            l.sinks.record_gap(gap)?;
        }
        l.summary.gaps += batch.gaps.len() as u64;
        count_read(&batch, l.summary);
        let rejected = l.sinks.write(&batch.changes)?;
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
            let new = l.dead_letters.write(&letters).map_err(store_failed)?;
            l.summary.dead_lettered += new;
            if new > 0 {
                letters.iter().for_each(|d| DeadLettered(d).emit());
            }
        }
        l.sinks.poll()?;
        l.checkpoint
            .store(&l.sinks.recorded())
            .map_err(|e| Stop::of("checkpoint", e))?;
        l.watch.checkpoint_stored();
        l.pauses.recovered();
        report_delivered(l);
        if let Some(p) = l.progress.as_deref_mut() {
            let (read, total) = feed.bytes();
            p.update(l.summary.changes_read(), read, total);
        }
        feed.recycle(batch);
    }
    Ok(())
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
