//! Where batches come from: the replay reader on its own thread, or the
//! stream source on its own runtime. Either way the pipeline pulls batches
//! one at a time over a bounded channel, and gets an empty batch at least
//! every heartbeat so it can commit files by age and notice a stop request.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context as _, bail};
use dynamo_cdc_core::{Positions, SnapshotRecord, Source, SourceBatch};
use dynamo_cdc_object_store::{ObjectPath, Objects, StoreOptions, StoreUrl};
use dynamo_cdc_source::record::table_from_arn;
use dynamo_cdc_source::snapshot::{
    ExportObjects, ReadFailure, SnapshotMode, SnapshotProgress, Snapshots,
};
use dynamo_cdc_source::streams::ShardBoard;
use dynamo_cdc_source::streams::latest::LatestFrom;
use dynamo_cdc_source::streams::sdk::Endpoint;
use dynamo_cdc_source::streams::sdk::SdkStreams;
use dynamo_cdc_source::{ImageReading, OnGap};
use dynamo_cdc_source::{
    ReplayError, ReplayProgress, ReplaySource, ReplayStats, StreamsConfig, StreamsSource,
};

use crate::config::{Config, SourceKind};

/// Where snapshots keep their journal: beside the checkpoint file
/// (`checkpoint.json` -> `checkpoint.snapshots/`) when this process runs
/// alone; with `[coordination]`, where every process sees it (see
/// `shared_journal`).
fn snapshot_journal(
    config: &Config,
) -> anyhow::Result<std::sync::Arc<dyn dynamo_cdc_source::snapshot::journal::JournalFiles>> {
    if config.coordination.is_some() {
        return crate::shared_journal::at(&crate::run::dead_letter_location(config)?);
    }
    Ok(dynamo_cdc_source::snapshot::journal::LocalJournalFiles::at(
        &local_journal_dir(&config.checkpoint.path),
    ))
}

/// The snapshot journal of a process running alone, beside its checkpoint.
pub(crate) fn local_journal_dir(checkpoint: &std::path::Path) -> std::path::PathBuf {
    checkpoint.with_extension("snapshots")
}

/// How long the pipeline waits for a batch before it looks around.
const HEARTBEAT: Duration = Duration::from_millis(200);

/// A running source.
pub(crate) enum Feed {
    Replay {
        reader: ReplayReader,
        progress: ReplayProgress,
    },
    Streams {
        /// The stream source; `None` while an export is handed over (the
        /// stream follows it from S0).
        source: Option<Box<StreamsSource>>,
        /// What starts the stream source once the export is handed over.
        pending: Option<Box<PendingStream>>,
        /// The tables being snapshotted, when any.
        snapshots: Option<Box<Snapshots>>,
        /// Snapshot records made before the first batch, handed over with
        /// it (the sinks record them before any snapshot row).
        announced: Vec<SnapshotRecord>,
        /// The lowest position over the sinks at the start.
        resume: Positions,
        /// Where the AWS SDK and S3 connect.
        endpoint: Endpoint,
        /// The stream reader's runtime and clients, for snapshots that
        /// start mid-run (`when_needed`).
        handle: tokio::runtime::Handle,
        api: Arc<SdkStreams>,
    },
}

/// The stream source, ready to start.
pub(crate) struct PendingStream {
    runtime: tokio::runtime::Runtime,
    api: Arc<SdkStreams>,
    streams: StreamsConfig,
    resume: Positions,
    /// Per shard, the highest position over the sinks (a repair's S0
    /// starts there).
    delivered: Positions,
}

impl PendingStream {
    fn start(
        self,
        snapshots: Option<&mut Snapshots>,
        resume: &Positions,
    ) -> anyhow::Result<StreamsSource> {
        let handle = self.runtime.handle().clone();
        let source =
            StreamsSource::start_on(self.runtime, self.api.clone(), &self.streams, &self.resume)?;
        if let Some(snapshots) = snapshots {
            snapshots.start(&handle, &self.api, source.board(), resume, &self.delivered)?;
        }
        Ok(source)
    }
}

/// An export's bucket, read through the object-store crate.
struct BucketObjects(Objects);

impl ExportObjects for BucketObjects {
    fn get(&self, key: &str) -> Result<Vec<u8>, ReadFailure> {
        self.0
            .read(&ObjectPath::from(key))
            .map(|b| b.to_vec())
            .map_err(|e| ReadFailure {
                message: e.to_string(),
                passing: e.is_transient(),
            })
    }
}

/// Opens an export's bucket with the source's region and endpoint.
fn open_bucket(endpoint: &Endpoint, bucket: &str) -> Result<Box<dyn ExportObjects>, String> {
    let url = StoreUrl::parse(&format!("s3://{bucket}"))?;
    let options = StoreOptions {
        region: endpoint.region.clone(),
        endpoint_url: endpoint.endpoint_url.clone(),
    };
    let objects = Objects::connect(&url, &options).map_err(|e| e.to_string())?;
    Ok(Box::new(BucketObjects(objects)))
}

/// What the checkpoint recorded for a stream source besides positions.
pub(crate) struct Recalled {
    /// Each table's latest start (`start = "latest"`).
    pub latest: HashMap<String, LatestFrom>,
    /// Each tracked table's shards read to their end.
    pub ended: HashMap<String, std::collections::BTreeSet<String>>,
    /// Every shard some sink holds a position of, at the lowest.
    pub held: Positions,
}

impl Feed {
    /// Starts the configured source at `resume` (per shard, the lowest
    /// position over the sinks; `delivered` is the highest), reading
    /// images as `reading` says (the sinks decide:
    /// [`Sinks::image_reading`](crate::sinks::Sinks::image_reading)).
    ///
    /// # Errors
    /// When the capture cannot be opened, or a table's stream cannot be
    /// found.
    pub(crate) fn start(
        config: &Config,
        resume: Positions,
        delivered: Positions,
        recalled: Recalled,
        until_idle: Option<Duration>,
        snapshot_now: Option<&str>,
        reading: ImageReading,
    ) -> anyhow::Result<Feed> {
        match config.source.kind {
            SourceKind::Replay => Self::replay(config, resume, reading),
            SourceKind::Dynamodb => Self::streams(
                config,
                &resume,
                delivered,
                recalled,
                until_idle,
                snapshot_now,
                reading,
            ),
        }
    }

    fn replay(config: &Config, resume: Positions, reading: ImageReading) -> anyhow::Result<Feed> {
        let mut replay = config
            .source
            .replay_config()
            .map_err(|e| e.within("source"))?;
        replay.reading = reading;
        let source = ReplaySource::open(&replay, resume)?;
        let progress = source.progress();
        if dynamo_cdc_source::one_cpu() {
            tracing::debug!("one CPU: the capture is read in the pipeline's thread");
            return Ok(Feed::Replay {
                reader: ReplayReader::Inline(Box::new(source)),
                progress,
            });
        }
        // A rendezvous: the reader parses the next batch while the pipeline
        // delivers this one, and then waits for it to be taken. Batches
        // queued beyond that bought no overlap, only memory that is cold
        // again by the time the allocator hands it out for the next page:
        // with two queued (as before), F1 into Kafka took a sixth more CPU
        // and into Parquet a tenth more (medians of alternating runs).
        let (tx, rx) = sync_channel(0);
        let (spent_tx, spent_rx) = std::sync::mpsc::channel::<SourceBatch>();
        let reader = std::thread::Builder::new()
            .name("replay-reader".into())
            .spawn(move || read_all(source, &tx, &spent_rx))?;
        Ok(Feed::Replay {
            reader: ReplayReader::Thread {
                batches: rx,
                spent: spent_tx,
                reader: Some(reader),
            },
            progress,
        })
    }

    fn streams(
        config: &Config,
        resume: &Positions,
        delivered: Positions,
        recalled: Recalled,
        until_idle: Option<Duration>,
        snapshot_now: Option<&str>,
        reading: ImageReading,
    ) -> anyhow::Result<Feed> {
        let s = &config.source;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            // On one CPU a second worker could only take turns with the first.
            .worker_threads(if dynamo_cdc_source::one_cpu() { 1 } else { 2 })
            .thread_name("stream-reader")
            .enable_all()
            .build()
            .context("cannot start the stream reader runtime")?;
        let mut streams = s.streams_config(until_idle, HEARTBEAT);
        streams.latest = recalled.latest;
        streams.ended = recalled.ended;
        streams.held = recalled.held;
        streams.tables_read = delivered.iter().map(|(k, _)| k.table.to_string()).collect();
        streams.reading = reading;
        // Outside the runtime: an object-store journal has a runtime of its
        // own, which may not be started from within another.
        let journal = snapshot_journal(config)?;
        let (api, snapshots) = runtime.block_on(async {
            let api = SdkStreams::connect(&s.endpoint()).await;
            let mut pairs = Vec::new();
            for table in &s.tables {
                let arn = api
                    .stream_of_table(table)
                    .await
                    .with_context(|| format!("config key `source.tables`: table `{table}`"))?;
                tracing::info!(table = %table, stream = %arn, "found the table's stream");
                streams.stream_arns.push(arn.clone());
                pairs.push((table.clone(), arn));
            }
            for arn in &s.stream_arns {
                if let Some(table) = table_from_arn(arn) {
                    pairs.push((table.to_owned(), arn.clone()));
                }
            }
            if let Some(table) = snapshot_now
                && !pairs.iter().any(|(t, _)| t == table)
            {
                bail!("cannot snapshot table `{table}`: it is not one of the source's tables");
            }
            // Always: an earlier snapshot's S0 still says where the stream
            // starts, and one a crash interrupted resumes.
            let settings = s.snapshot_settings(journal);
            let snapshots =
                Snapshots::prepare(&api, settings, &pairs, resume, &delivered, snapshot_now)
                    .await?;
            // `when_needed` keeps watching for gaps even with nothing to
            // snapshot now.
            let snapshots = (!snapshots.is_empty() || s.snapshot == SnapshotMode::WhenNeeded)
                .then(|| Box::new(snapshots));
            anyhow::Ok((std::sync::Arc::new(api), snapshots))
        })?;
        let mut snapshots = snapshots;
        if s.snapshot == SnapshotMode::WhenNeeded {
            // A gap is repaired by a snapshot, so the stream goes on past it
            // (the gap is still recorded).
            streams.on_gap = OnGap::Skip;
        }
        let stream_resume = match &snapshots {
            Some(snapshots) => {
                // Only while a snapshot may need it: every idle poll of
                // every shard becomes a batch.
                streams.report_read_through =
                    snapshots.busy() || s.snapshot == SnapshotMode::WhenNeeded;
                snapshots.stream_resume(resume)
            }
            None => resume.clone(),
        };
        let handle = runtime.handle().clone();
        let pending = PendingStream {
            runtime,
            api: api.clone(),
            streams,
            resume: stream_resume,
            delivered,
        };
        let announced = snapshots
            .as_mut()
            .map(|s| s.announcements())
            .unwrap_or_default();
        let exporting = snapshots.as_ref().is_some_and(|s| s.exporting());
        let (source, pending) = if exporting {
            (None, Some(Box::new(pending)))
        } else {
            let source = pending.start(snapshots.as_deref_mut(), resume)?;
            (Some(Box::new(source)), None)
        };
        Ok(Feed::Streams {
            source,
            pending,
            snapshots,
            announced,
            resume: resume.clone(),
            endpoint: s.endpoint(),
            handle,
            api,
        })
    }

    /// The next batch (possibly empty: a heartbeat), or `None` at the end.
    ///
    /// # Errors
    /// When the source failed as a whole.
    pub(crate) fn next(&mut self) -> anyhow::Result<Option<SourceBatch>> {
        match self {
            Feed::Replay { reader, .. } => reader.next(),
            Feed::Streams {
                source,
                pending,
                snapshots,
                announced,
                resume,
                endpoint,
                handle,
                api,
            } => {
                let Some(live) = source else {
                    // An export first: the stream waits for it.
                    let (Some(snapshots), Some(waiting)) = (snapshots.as_mut(), pending.as_ref())
                    else {
                        bail!("internal error: a stream source neither started nor pending");
                    };
                    let open = |bucket: &str| open_bucket(endpoint, bucket);
                    let mut batch = waiting.runtime.block_on(snapshots.export_step(
                        &*waiting.api,
                        &open,
                        resume,
                    ))?;
                    batch.snapshots = std::mem::take(announced);
                    batch.snapshots.extend(snapshots.announcements());
                    if !snapshots.exporting()
                        && let Some(waiting) = pending.take()
                    {
                        *source = Some(Box::new(waiting.start(Some(snapshots), resume)?));
                    } else if batch.is_empty() {
                        // DynamoDB is still writing the export.
                        std::thread::sleep(HEARTBEAT);
                    }
                    return Ok(Some(batch));
                };
                let Some(mut batch) = live.next_batch()? else {
                    return Ok(None);
                };
                batch.snapshots = std::mem::take(announced);
                if let Some(snapshots) = snapshots {
                    let mut lost: Vec<&str> = batch.gaps.iter().map(|g| g.table.as_str()).collect();
                    lost.sort_unstable();
                    lost.dedup();
                    for table in lost {
                        snapshots.repair(handle, api, table)?;
                    }
                    snapshots.merge(&mut batch)?;
                    batch.snapshots.extend(snapshots.announcements());
                    if snapshots.busy() {
                        // Not idle while a snapshot still has rows to hand over.
                        live.busy();
                    }
                }
                Ok(Some(batch))
            }
        }
    }

    /// Every sink has made `positions` durable (the lowest over the sinks).
    ///
    /// # Errors
    /// When the snapshot journal cannot be tidied.
    pub(crate) fn delivered(&mut self, positions: &Positions) -> anyhow::Result<()> {
        if let Feed::Streams {
            snapshots: Some(snapshots),
            ..
        } = self
        {
            snapshots.delivered(positions)?;
        }
        Ok(())
    }

    /// Where each snapshot stands (none for a replay).
    pub(crate) fn snapshot_progress(&self) -> Vec<SnapshotProgress> {
        match self {
            Feed::Streams {
                snapshots: Some(snapshots),
                ..
            } => snapshots.progress(),
            _ => Vec::new(),
        }
    }

    /// The stream source's shard board (lag, time to data loss, answers).
    pub(crate) fn board(&self) -> Option<std::sync::Arc<ShardBoard>> {
        match self {
            Feed::Streams { source, .. } => source.as_ref().map(|s| s.board()),
            Feed::Replay { .. } => None,
        }
    }

    /// Bytes of the capture read so far and in all (replay; zeros for a
    /// stream).
    pub(crate) fn bytes(&self) -> (u64, u64) {
        match self {
            Feed::Replay { progress, .. } => (progress.bytes_read(), progress.bytes_total()),
            Feed::Streams { .. } => (0, 0),
        }
    }

    /// Hands a processed batch back, to be freed where it was made.
    pub(crate) fn recycle(&mut self, batch: SourceBatch) {
        match self {
            Feed::Replay { reader, .. } => reader.recycle(batch),
            Feed::Streams {
                source: Some(source),
                ..
            } => source.recycle(batch),
            Feed::Streams { source: None, .. } => drop(batch),
        }
    }

    /// Stops reading and returns the replay reader's statistics.
    ///
    /// # Errors
    /// When the replay reader thread panicked.
    pub(crate) fn finish(self) -> anyhow::Result<ReplayStats> {
        match self {
            Feed::Replay { reader, .. } => reader.finish(),
            Feed::Streams { source, .. } => {
                if let Some(source) = source {
                    source.stop();
                }
                Ok(ReplayStats::default())
            }
        }
    }
}

/// Where the replay source is read.
pub(crate) enum ReplayReader {
    /// On a thread of its own, which parses the next batch while the
    /// pipeline delivers this one.
    Thread {
        batches: Receiver<Result<SourceBatch, ReplayError>>,
        /// Spent batches go back to the reader to be freed on the thread
        /// that allocated them: cross-thread frees are the allocator's slow
        /// path. The channel needs no bound: the reader empties it before
        /// every batch it reads, so it never holds more than the few
        /// batches in flight.
        spent: Sender<SourceBatch>,
        reader: Option<JoinHandle<ReplayStats>>,
    },
    /// In the pipeline's thread, when the process may run on one CPU only:
    /// there the two threads cannot overlap, and handing each batch from
    /// one to the other only switches between them, each evicting the
    /// other's working set from the caches.
    Inline(Box<ReplaySource>),
}

impl ReplayReader {
    /// [`Feed::next`] for a replay: an empty batch when the reader thread
    /// has none ready within a heartbeat.
    fn next(&mut self) -> anyhow::Result<Option<SourceBatch>> {
        match self {
            ReplayReader::Thread { batches, .. } => match batches.recv_timeout(HEARTBEAT) {
                Ok(batch) => Ok(Some(batch?)),
                Err(RecvTimeoutError::Timeout) => Ok(Some(SourceBatch::default())),
                Err(RecvTimeoutError::Disconnected) => Ok(None),
            },
            ReplayReader::Inline(source) => Ok(source.next_batch()?),
        }
    }

    /// Frees a spent batch where it was made.
    fn recycle(&mut self, batch: SourceBatch) {
        match self {
            // At the end the reader is gone and the batch is dropped here.
            ReplayReader::Thread { spent, .. } => {
                let _ = spent.send(batch);
            }
            ReplayReader::Inline(_) => drop(batch),
        }
    }

    /// Stops reading and returns the reader's statistics.
    fn finish(self) -> anyhow::Result<ReplayStats> {
        match self {
            ReplayReader::Thread {
                batches,
                mut reader,
                ..
            } => {
                // Dropping the receiver ends a reader blocked on a full channel.
                drop(batches);
                match reader.take().map(JoinHandle::join) {
                    Some(Ok(stats)) => Ok(stats),
                    Some(Err(_)) => bail!("the replay reader thread panicked"),
                    None => Ok(ReplayStats::default()),
                }
            }
            ReplayReader::Inline(source) => Ok(source.stats().clone()),
        }
    }
}

fn read_all(
    mut source: ReplaySource,
    tx: &SyncSender<Result<SourceBatch, ReplayError>>,
    spent: &Receiver<SourceBatch>,
) -> ReplayStats {
    loop {
        while let Ok(batch) = spent.try_recv() {
            drop(batch);
        }
        match source.next_batch() {
            Ok(Some(batch)) => {
                if tx.send(Ok(batch)).is_err() {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                let _ = tx.send(Err(e));
                break;
            }
        }
    }
    source.stats().clone()
}
