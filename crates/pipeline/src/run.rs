//! Wiring: source -> sinks -> checkpoint, with dead letters on the side.
//!
//! The source reads on its own thread and hands batches over a bounded
//! channel, so a slow sink slows the reader and memory does not grow with the
//! backlog. For each batch: the sink writes what it can, the records it or the
//! source rejected are made durable in the dead-letter path, and only then
//! may the sink commit files and the checkpoint record the new positions.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use dynamo_cdc_core::DeadLetter;
use dynamo_cdc_sink_parquet::DeadLetterWriter;
use dynamo_cdc_source::record::render_record;
use dynamo_cdc_transform::DeclaredSchema;

use crate::checkpoint::CheckpointStore;
use crate::config::{Config, SourceKind};
use crate::feed::Feed;
use crate::sinks::Sinks;
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
/// A sink that cannot write for a reason that may pass (a full disk, a
/// read-only or vanished directory) does not end the run: everything after
/// the last commit is dropped, the run waits (1 s doubling to 30 s) and
/// starts over from the committed positions, exactly as a restart after a
/// crash would. Temp files never become visible on the way.
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
        dead_letter_path: Sinks::dead_letter_dir(config).display().to_string(),
        ..RunSummary::default()
    };
    let mut failures = 0u32;
    'passes: loop {
        match run_once(config, options, &declared, &mut summary) {
            Ok(()) => break,
            Err(e) if e.downcast_ref::<SinkTrouble>().is_some() => {
                failures += 1;
                summary.sink_retries += 1;
                let wait = Duration::from_secs(1u64 << failures.min(5).saturating_sub(1));
                tracing::error!(
                    error = %format!("{e:#}"),
                    retry_in_s = wait.as_secs(),
                    "a sink cannot write; nothing after the last commit is kept; starting over from it"
                );
                let until = Instant::now() + wait;
                while Instant::now() < until {
                    if options.stop.load(Ordering::Relaxed) {
                        // Nothing is lost: the positions are those of the
                        // last commit, and nothing after it was kept.
                        tracing::warn!(
                            "stopped while waiting to retry a sink; positions are those of its last commit"
                        );
                        summary.stopped_on_request = true;
                        break 'passes;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            Err(e) => return Err(e),
        }
    }
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// A sink failure that may pass (disk full, read-only, I/O error): the run
/// starts over from the committed positions after a pause.
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
struct SinkTrouble(anyhow::Error);

/// Marks `e` as [`SinkTrouble`] when waiting may fix it.
fn sink_error(e: anyhow::Error) -> anyhow::Error {
    let passing = e.chain().any(|cause| {
        cause
            .downcast_ref::<dynamo_cdc_sink_parquet::ParquetSinkError>()
            .is_some_and(dynamo_cdc_sink_parquet::ParquetSinkError::is_retryable)
            || cause.downcast_ref::<std::io::Error>().is_some()
    });
    if passing { SinkTrouble(e).into() } else { e }
}

/// One pass: open the sinks at their committed positions, read, write,
/// commit, until the input ends, the source stops, or something fails.
fn run_once(
    config: &Config,
    options: &RunOptions,
    declared: &HashMap<String, DeclaredSchema>,
    summary: &mut RunSummary,
) -> anyhow::Result<()> {
    let mut sinks = Sinks::open(config, declared).map_err(sink_error)?;
    let mut dead_letters = DeadLetterWriter::open(&Sinks::dead_letter_root(config))
        .with_context(|| format!("cannot open {}", Sinks::dead_letter_dir(config).display()))
        .map_err(sink_error)?;
    let mut checkpoint = CheckpointStore::new(&config.checkpoint.path);
    sinks.adopt(checkpoint.load()?);
    let resume = sinks.resume_point();
    tracing::info!(shards = resume.len(), "resuming");
    summary.temp_files_swept += sinks.swept();

    let mut feed = Feed::start(config, resume, options.until_idle)?;
    let outcome = pump(
        options,
        &mut feed,
        &mut sinks,
        &mut dead_letters,
        &mut checkpoint,
        summary,
    );
    let stats = match outcome {
        // A sink failure commits nothing more; the feed just stops.
        Err(Pumped::Sink(e)) => {
            let _ = feed.finish();
            return Err(sink_error(e));
        }
        Err(Pumped::Source(e)) => {
            // What was delivered before the source failed is committed, so
            // a restart does not read it again.
            let _ = feed.finish();
            sinks.flush().map_err(sink_error)?;
            sinks.store(&mut checkpoint).map_err(sink_error)?;
            return Err(e);
        }
        Ok(()) => feed.finish()?,
    };
    if options.stop.load(Ordering::Relaxed) {
        tracing::info!("stop requested: committing what was read");
        summary.stopped_on_request = true;
    }
    sinks.flush().map_err(sink_error)?;
    sinks.store(&mut checkpoint).map_err(sink_error)?;
    let already_held = sinks.summarize(summary);
    summary.already_delivered += stats.already_delivered + already_held;
    summary.duplicates_in_capture += stats.duplicates;
    summary.dead_letters_total = dead_letters.known() as u64;
    Ok(())
}

/// Why the batch loop ended early.
enum Pumped {
    Source(anyhow::Error),
    Sink(anyhow::Error),
}

/// The batch loop: for each batch, gaps, write, dead letters (durable before
/// any commit moves past them), commit, checkpoint.
fn pump(
    options: &RunOptions,
    feed: &mut Feed,
    sinks: &mut Sinks,
    dead_letters: &mut DeadLetterWriter,
    checkpoint: &mut CheckpointStore,
    summary: &mut RunSummary,
) -> Result<(), Pumped> {
    let sink = Pumped::Sink;
    while !options.stop.load(Ordering::Relaxed) {
        let mut batch = match feed.next() {
            Ok(Some(batch)) => batch,
            Ok(None) => break,
            Err(e) => return Err(Pumped::Source(e)),
        };
        // Gaps first: they precede the batch's changes in their shards.
        for gap in &batch.gaps {
            sinks.record_gap(gap).map_err(sink)?;
        }
        summary.gaps += batch.gaps.len() as u64;
        for c in &batch.changes {
            summary.count_read(&c.source.table, c.op.code());
        }
        let rejected = sinks.write(&batch.changes).map_err(sink)?;
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
        summary.dead_lettered += dead_letters
            .write(&letters)
            .context("cannot write dead letters")
            .map_err(sink)?;
        sinks.poll().map_err(sink)?;
        sinks.store(checkpoint).map_err(sink)?;
        feed.recycle(batch);
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
