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
}

/// Runs the configured pipeline to the end of its input, until idle, or
/// until asked to stop.
///
/// # Errors
/// When a schema, the source, the sink or the checkpoint cannot be read or
/// written. Bad records are not errors: they are dead-lettered and counted.
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
    let mut sinks = Sinks::open(config, &declared)?;
    let dead_letter_root = Sinks::dead_letter_root(config);
    let mut dead_letters = DeadLetterWriter::open(&dead_letter_root)
        .with_context(|| format!("cannot open {}", Sinks::dead_letter_dir(config).display()))?;
    let mut checkpoint = CheckpointStore::new(&config.checkpoint.path);
    sinks.adopt(checkpoint.load()?);
    let resume = sinks.resume_point();
    tracing::info!(shards = resume.len(), "resuming");

    let mut summary = RunSummary {
        dead_letter_path: Sinks::dead_letter_dir(config).display().to_string(),
        temp_files_swept: sinks.swept(),
        ..RunSummary::default()
    };
    let mut feed = Feed::start(config, resume, options.until_idle)?;
    // A source failure still commits what was delivered before it (so a
    // restart does not read it again); a sink failure commits nothing more.
    let mut source_failure = None;
    while !options.stop.load(Ordering::Relaxed) {
        let mut batch = match feed.next() {
            Ok(Some(batch)) => batch,
            Ok(None) => break,
            Err(e) => {
                source_failure = Some(e);
                break;
            }
        };
        // Gaps first: they precede the batch's changes in their shards.
        for gap in &batch.gaps {
            sinks.record_gap(gap)?;
        }
        summary.gaps += batch.gaps.len() as u64;
        for c in &batch.changes {
            summary.count_read(&c.source.table, c.op.code());
        }
        let rejected = sinks.write(&batch.changes)?;
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
        // Dead letters are durable before any commit moves past them.
        summary.dead_lettered += dead_letters
            .write(&letters)
            .context("cannot write dead letters")?;
        sinks.poll()?;
        sinks.store(&mut checkpoint)?;
        feed.recycle(batch);
    }
    if options.stop.load(Ordering::Relaxed) {
        tracing::info!("stop requested: committing what was read");
        summary.stopped_on_request = true;
    }
    let stats = feed.finish()?;
    sinks.flush()?;
    sinks.store(&mut checkpoint)?;
    if let Some(e) = source_failure {
        return Err(e);
    }

    let already_held = sinks.summarize(&mut summary);
    summary.already_delivered = stats.already_delivered + already_held;
    summary.duplicates_in_capture = stats.duplicates;
    summary.dead_letters_total = dead_letters.known() as u64;
    summary.elapsed = started.elapsed();
    Ok(summary)
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
