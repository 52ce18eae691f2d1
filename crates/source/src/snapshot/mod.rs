//! The initial snapshot: a table's existing items, stitched to its stream
//! with no gap, no reordering per key, and each row delivered once.
//!
//! - [`api`]: the narrow [`TableApi`] seam (DescribeTable, Scan), and
//!   `sdk` its AWS SDK implementation;
//! - `start`: S0, the end of every shard before the first item is read;
//! - `scan`: the parallel Scan under a read-capacity budget;
//! - [`window`]: the rule that holds a page until the stream caught up with
//!   it and drops the keys the stream touched meanwhile;
//! - [`journal`]: the plan and the released pages, on local disk, so a
//!   crash neither loses nor repeats a row and a restart never scans a
//!   finished segment again.
//!
//! [`Snapshots`] runs it beside the stream source: its segment tasks run on
//! the stream source's runtime, and [`Snapshots::merge`] is called with
//! every batch the stream hands the pipeline. Snapshot rows are changes
//! with [`Op::Read`] under a shard of their own per segment
//! (`snapshot-<id>-<segment>`) and a sequence number per row (page × 10⁶ +
//! row), so the sinks keep their positions and drop what they already hold
//! exactly as they do for stream changes.

pub mod api;
pub mod export;
pub mod journal;
mod scan;
mod sdk;
mod start;
pub mod window;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

use dynamo_cdc_core::{
    Change, DeadLetter, Op, Origin, Positions, SequenceNumber, ShardKey, SnapshotMarker,
    SnapshotRead, SourceBatch, SourceInfo,
};
use serde::Deserialize;
use tokio::sync::{mpsc, watch};

pub use api::{
    ExportRequest, ExportState, ScanPage, ScanRequest, TableApi, TableInfo, key_of, key_text,
};
pub use export::{ExportObjects, LocalBucket, OpenBucket};
pub use journal::{Journal, JournalError, Plan};

use crate::streams::api::{ApiError, StreamsApi};
use crate::streams::{ShardBoard, now_ms};
use journal::{SegmentProgress, SpooledPage, SpooledRow, raw_item};
use scan::{Budget, Scanned, Segment};
use window::Window;

/// `snapshot = ...`: when a table is snapshotted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotMode {
    /// Never: only the stream is read.
    #[default]
    Never,
    /// When no sink has a position for the table yet.
    Initial,
    /// As `initial`, and again when the stream fell behind its retention.
    WhenNeeded,
}

/// `snapshot_method = ...`: how the items are read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotMethod {
    /// A parallel Scan, while the stream keeps flowing.
    #[default]
    Scan,
    /// `ExportTableToPointInTime` to S3, then the stream from S0.
    Export,
}

impl SnapshotMethod {
    /// The name in plans and messages.
    pub fn name(self) -> &'static str {
        match self {
            SnapshotMethod::Scan => "scan",
            SnapshotMethod::Export => "export",
        }
    }
}

/// How snapshots run.
#[derive(Clone, Debug)]
pub struct SnapshotSettings {
    /// When.
    pub mode: SnapshotMode,
    /// How.
    pub method: SnapshotMethod,
    /// Parallel Scan segments.
    pub segments: u32,
    /// Read capacity units per second the scan may consume, per table.
    pub max_rcu: f64,
    /// Where the journal lives (beside the checkpoint).
    pub journal_root: PathBuf,
    /// See [`window`]: how far a change's creation time may be off.
    pub margin_ms: i64,
    /// `s3://bucket/prefix` for exports.
    pub export_bucket: Option<String>,
    /// How often DescribeExport is asked while an export is written.
    pub export_poll: std::time::Duration,
}

/// How long a stream keeps records: a snapshot the stream waits for must
/// end well within it.
const RETENTION_SECONDS: u64 = 86_400;

/// Of the retention, what an export may use: the rest is a margin for the
/// estimate being wrong and for the stream to catch up.
const EXPORT_BUDGET_SECONDS: u64 = RETENTION_SECONDS - 4 * 3_600;

/// The margin of the window: ApproximateCreationDateTime has one-second
/// precision on some back ends, and clocks drift by less than a second.
pub const MARGIN_MS: i64 = 3_000;

/// Rows of a page are numbered `page * ROWS_PER_PAGE + row`: a Scan page
/// holds at most 1 MB, far fewer items than this.
const ROWS_PER_PAGE: u64 = 1_000_000;

/// Pages held at once per table before the scan is made to wait.
const MAX_HELD_PAGES: usize = 64;

/// Why a snapshot cannot go on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// A DynamoDB or Streams call failed.
    #[error("snapshot of table `{table}`: {source}")]
    Api {
        /// The table.
        table: String,
        /// The failure.
        #[source]
        source: ApiError,
    },
    /// The journal could not be read or written.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The table cannot be snapshotted as configured.
    #[error("snapshot of table `{table}`: {reason}")]
    Refused {
        /// The table.
        table: String,
        /// Why, and what to do.
        reason: String,
    },
}

impl SnapshotError {
    /// True when waiting may help (throttling, a network failure).
    pub fn is_transient(&self) -> bool {
        matches!(self, SnapshotError::Api { source, .. } if source.is_retryable())
    }
}

/// A page read and not yet released.
#[derive(Debug)]
struct Held {
    segment: u32,
    asked_ms: i64,
    answered_ms: i64,
    /// A page of an earlier run, released then: handed over again as it
    /// was, nothing dropped.
    spooled: Option<SpooledPage>,
    page: ScanPage,
}

/// One table's snapshot in progress.
struct TableSnapshot {
    plan: Plan,
    journal: Journal,
    table: Arc<str>,
    window: Window,
    held: VecDeque<Held>,
    scanned: Option<mpsc::Receiver<Scanned>>,
    /// Per shard of the table's stream, the time it is read through.
    read_through: HashMap<ShardKey, i64>,
    /// Released pages not yet committed by every sink: (segment, page,
    /// last sequence number).
    unconfirmed: Vec<(u32, u64, SequenceNumber)>,
    /// Set when a plan was started or finished and not yet announced.
    announce: bool,
    /// An export being handed over.
    export: Option<ExportCursor>,
    /// No DescribeExport before this.
    next_poll: std::time::Instant,
    /// When the next progress line is logged.
    next_log: std::time::Instant,
    /// A page waited long for the stream and this was logged.
    stall_logged: bool,
}

/// Where an export's hand-over stands.
struct ExportCursor {
    /// Reads the export's bucket.
    objects: Box<dyn ExportObjects>,
    /// The data file (index into the plan's files) and its next row.
    file: usize,
    row: u64,
    /// The rows of `file`, once read.
    rows: Option<export::DataRows>,
}

/// What a snapshot has done, for progress lines and metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotProgress {
    /// The table.
    pub table: String,
    /// The snapshot's id.
    pub id: String,
    /// Items read (kept or dropped for the stream).
    pub items: u64,
    /// Bytes of item JSON read.
    pub bytes: u64,
    /// Capacity units consumed.
    pub consumed: f64,
    /// Segments done, and in all.
    pub segments_done: usize,
    /// All segments.
    pub segments: usize,
    /// DynamoDB's estimate of the table's item count.
    pub estimated_items: u64,
    /// True once every row was released.
    pub finished: bool,
}

/// The snapshots of every table being snapshotted; see the module docs.
pub struct Snapshots {
    settings: SnapshotSettings,
    tables: Vec<TableSnapshot>,
    estimates: HashMap<String, TableInfo>,
    stop: watch::Sender<bool>,
    board: Option<Arc<ShardBoard>>,
    /// With `when_needed`: per table and shard, the last sequence number
    /// handed over (a repair's S0).
    seen: HashMap<String, BTreeMap<String, SequenceNumber>>,
    /// Per table, the S0 of its newest snapshot, finished or not: a shard
    /// no sink has a position for is read after it, never from its start
    /// (which would hand over changes the snapshot already holds).
    s0s: HashMap<String, BTreeMap<String, String>>,
}

impl Snapshots {
    /// Decides which tables need a snapshot: one whose plan is unfinished
    /// is resumed; with `initial` or `when_needed` a table no sink has a
    /// position for gets a new one, and so does `forced`. For a new one,
    /// S0 is read and the plan recorded before anything else happens.
    ///
    /// `tables` pairs each table with its stream's ARN; `resume` is the
    /// lowest position over the sinks.
    ///
    /// # Errors
    /// When a table cannot be snapshotted (no new images in its stream),
    /// a call fails, or the journal cannot be written.
    pub async fn prepare<A: StreamsApi + TableApi>(
        api: &A,
        settings: SnapshotSettings,
        tables: &[(String, String)],
        resume: &Positions,
        forced: Option<&str>,
    ) -> Result<Snapshots, SnapshotError> {
        let (stop, _) = watch::channel(false);
        let mut out = Snapshots {
            settings,
            tables: Vec::new(),
            estimates: HashMap::new(),
            stop,
            board: None,
            seen: HashMap::new(),
            s0s: HashMap::new(),
        };
        for (table, stream_arn) in tables {
            let journal = Journal::of(&out.settings.journal_root, table);
            let existing = journal.load()?;
            let has_position = resume.iter().any(|(k, _)| *k.table == **table);
            let wanted = forced == Some(table.as_str())
                || (out.settings.mode != SnapshotMode::Never
                    && existing.is_none()
                    && !has_position);
            if let Some(plan) = &existing {
                out.s0s.insert(table.clone(), plan.s0.clone());
            }
            let plan = match existing {
                Some(plan) if plan.finished_ms.is_none() && !wanted => plan,
                // Handed over before a crash, not yet held by every sink.
                Some(mut plan) if !wanted && export_undelivered(&plan, resume) => {
                    plan.finished_ms = None;
                    plan
                }
                _ if wanted => out.plan(api, table, stream_arn, &journal).await?,
                _ => continue,
            };
            let info = api
                .describe_table(table)
                .await
                .map_err(|source| SnapshotError::Api {
                    table: table.clone(),
                    source,
                })?;
            out.estimates.insert(table.clone(), info);
            out.s0s.insert(table.clone(), plan.s0.clone());
            out.tables.push(TableSnapshot::new(
                plan,
                journal,
                table,
                out.settings.margin_ms,
            ));
        }
        Ok(out)
    }

    /// Reads S0 and records a new plan for `table`.
    async fn plan<A: StreamsApi + TableApi>(
        &self,
        api: &A,
        table: &str,
        stream_arn: &str,
        journal: &Journal,
    ) -> Result<Plan, SnapshotError> {
        let failed = |source| SnapshotError::Api {
            table: table.to_owned(),
            source,
        };
        let info = api.describe_table(table).await.map_err(failed)?;
        if !info.stream_has_new_images() {
            return Err(SnapshotError::Refused {
                table: table.to_owned(),
                reason: format!(
                    "its stream's view type is {}; a snapshot needs the item after each change \
                     (NEW_IMAGE or NEW_AND_OLD_IMAGES) to stitch the stream to the scan",
                    info.stream_view.as_deref().unwrap_or("(no stream)")
                ),
            });
        }
        let export = if self.settings.method == SnapshotMethod::Export {
            Some(self.export_request(api, table, &info).await?)
        } else {
            None
        };
        let started_ms = now_ms();
        let s0 = start::stream_end(api, stream_arn).await.map_err(failed)?;
        let segments = match export {
            Some(_) => 1,
            None => self.settings.segments.max(1),
        };
        let mut plan = Plan {
            id: snapshot_id(started_ms),
            table: table.to_owned(),
            method: self.settings.method.name().to_owned(),
            segments,
            key_names: info.key_names,
            s0: s0
                .into_iter()
                .map(|(shard, seq)| (shard, seq.to_string()))
                .collect(),
            started_ms,
            finished_ms: None,
            first_released: false,
            progress: vec![SegmentProgress::default(); segments as usize],
            items: 0,
            bytes: 0,
            consumed: 0.0,
            export_arn: None,
            export_bucket: None,
            export_files: None,
        };
        // S0 is durable before the first item is read.
        journal.save(&plan)?;
        if let Some(request) = export {
            // After S0: the export shows the table at a moment after it.
            let arn = api.export_table(&request).await.map_err(failed)?;
            tracing::info!(table, export = %arn, bucket = %request.bucket, prefix = %request.prefix, "export requested");
            plan.export_arn = Some(arn);
            journal.save(&plan)?;
        }
        tracing::info!(table, id = %plan.id, shards = plan.s0.len(), segments, "snapshot planned: stream positions recorded");
        Ok(plan)
    }

    /// Checks that `table` can be exported in time, and what to ask for.
    async fn export_request<A: TableApi>(
        &self,
        api: &A,
        table: &str,
        info: &TableInfo,
    ) -> Result<ExportRequest, SnapshotError> {
        let refuse = |reason: String| SnapshotError::Refused {
            table: table.to_owned(),
            reason,
        };
        let url = self.settings.export_bucket.as_deref().ok_or_else(|| {
            refuse("snapshot_method = \"export\" needs snapshot_export_bucket".into())
        })?;
        let rest = url.strip_prefix("s3://").unwrap_or(url);
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let pitr =
            api.point_in_time_recovery(table)
                .await
                .map_err(|source| SnapshotError::Api {
                    table: table.to_owned(),
                    source,
                })?;
        if !pitr {
            return Err(refuse(
                "point-in-time recovery is off, and an export needs it: turn it on \
                 (UpdateContinuousBackups, PointInTimeRecoveryEnabled = true) or use \
                 snapshot_method = \"scan\""
                    .into(),
            ));
        }
        let estimate = export::estimated_seconds(info.size_bytes);
        if estimate > EXPORT_BUDGET_SECONDS {
            return Err(refuse(format!(
                "an export of {} bytes ({} items) is expected to take about {} hours, and \
                 the stream, which waits for it, keeps records for 24: use \
                 snapshot_method = \"scan\" (the stream flows during a scan)",
                info.size_bytes,
                info.item_count,
                estimate.div_ceil(3_600)
            )));
        }
        Ok(ExportRequest {
            table_arn: info.arn.clone(),
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
        })
    }

    /// True while an export has rows to hand over: the stream waits until
    /// it has (see [`Snapshots::export_step`]).
    pub fn exporting(&self) -> bool {
        self.tables
            .iter()
            .any(|t| t.plan.method == SnapshotMethod::Export.name() && t.plan.finished_ms.is_none())
    }

    /// One step of the first export not yet delivered: asks where the
    /// export stands (at most every `export_poll`), reads its manifests
    /// once it is written, then hands over its rows a batch at a time,
    /// after what every sink already holds (`resume`). An empty batch while
    /// DynamoDB is still writing.
    ///
    /// # Errors
    /// When the export failed, its files cannot be read, or the journal
    /// cannot be written.
    pub async fn export_step<A: TableApi>(
        &mut self,
        api: &A,
        open: &OpenBucket<'_>,
        resume: &Positions,
    ) -> Result<SourceBatch, SnapshotError> {
        let poll = self.settings.export_poll;
        let mut batch = SourceBatch::default();
        let Some(t) = self.tables.iter_mut().find(|t| {
            t.plan.method == SnapshotMethod::Export.name() && t.plan.finished_ms.is_none()
        }) else {
            return Ok(batch);
        };
        t.export_step(api, open, resume, poll, &mut batch).await?;
        Ok(batch)
    }

    /// True when no table is being snapshotted and none ever was.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty() && self.s0s.is_empty()
    }

    /// True while some snapshot has rows still to release.
    pub fn busy(&self) -> bool {
        self.tables.iter().any(|t| t.plan.finished_ms.is_none())
    }

    /// The stream's resume positions: `resume`, with S0 for every shard of
    /// a snapshotted table that no sink has a position for.
    pub fn stream_resume(&self, resume: &Positions) -> Positions {
        let mut out = resume.clone();
        for (table, s0) in &self.s0s {
            for (shard, seq) in s0 {
                let key = ShardKey::new(table.as_str(), shard.as_str());
                if out.get(&key).is_none()
                    && let Ok(seq) = SequenceNumber::parse(seq)
                {
                    out.advance(key, seq);
                }
            }
        }
        out
    }

    /// Starts the segment tasks on `runtime`; `board` is the stream
    /// source's, `resume` the lowest position over the sinks (pages of an
    /// earlier run past it are handed over again first).
    ///
    /// # Errors
    /// When the journal's pages cannot be read.
    pub fn start<A: TableApi>(
        &mut self,
        runtime: &tokio::runtime::Handle,
        api: &Arc<A>,
        board: Arc<ShardBoard>,
        resume: &Positions,
    ) -> Result<(), SnapshotError> {
        self.board = Some(board);
        for i in 0..self.tables.len() {
            let t = &mut self.tables[i];
            // Pages released before and not committed by every sink.
            for page in t.journal.pages(&t.plan.id)? {
                let key = ShardKey::new(t.table.clone(), t.plan.shard_of(page.segment));
                let last = last_sequence(&page);
                if resume.covers(&key, &last) {
                    t.journal.remove_page(&t.plan.id, page.segment, page.page)?;
                    continue;
                }
                t.held.push_back(Held {
                    segment: page.segment,
                    asked_ms: page.asked_ms,
                    answered_ms: page.answered_ms,
                    spooled: Some(page),
                    page: ScanPage::default(),
                });
            }
            self.spawn_segments(i, runtime, api)?;
        }
        Ok(())
    }

    /// Starts the scan tasks of table `i`'s unfinished segments.
    fn spawn_segments<A: TableApi>(
        &mut self,
        i: usize,
        runtime: &tokio::runtime::Handle,
        api: &Arc<A>,
    ) -> Result<(), SnapshotError> {
        let budget_per_table = self.settings.max_rcu;
        let estimate = self.estimates.get(&*self.tables[i].table).cloned();
        let stop = self.stop.subscribe();
        let t = &mut self.tables[i];
        if t.plan.all_done() || t.plan.method != SnapshotMethod::Scan.name() {
            return Ok(());
        }
        let (tx, rx) = mpsc::channel(2 * t.plan.segments as usize);
        t.scanned = Some(rx);
        let budget = Arc::new(Budget::new(budget_per_table));
        let average = match estimate {
            _ if t.plan.items > 0 => t.plan.bytes / t.plan.items,
            Some(info) if info.item_count > 0 => info.size_bytes / info.item_count,
            _ => 0,
        };
        let limit = page_limit(average, budget_per_table, t.plan.segments);
        for (segment, progress) in t.plan.progress.iter().enumerate() {
            if progress.done {
                continue;
            }
            let exclusive_start = match &progress.next_key {
                Some(raw) => Some(dynamo_cdc_core::parse_item(raw.get(), "next_key").map_err(
                    |e| SnapshotError::Refused {
                        table: t.table.to_string(),
                        reason: format!("the journal's resume key is unreadable: {e}"),
                    },
                )?),
                None => None,
            };
            let task = Segment {
                api: api.clone(),
                request: ScanRequest {
                    table: t.table.to_string(),
                    segment: u32::try_from(segment).unwrap_or(u32::MAX),
                    total_segments: t.plan.segments,
                    exclusive_start,
                    limit,
                },
                budget: budget.clone(),
                out: tx.clone(),
                stop: stop.clone(),
            };
            runtime.spawn(task.run());
        }
        tracing::info!(table = %t.table, id = %t.plan.id, segments_left = t.plan.progress.iter().filter(|p| !p.done).count(), limit, "snapshot scanning");
        Ok(())
    }

    /// The stream lost records of `table` (it fell behind its retention):
    /// with `when_needed`, a new snapshot by Scan repairs the table while
    /// the stream goes on. Its S0 is where the stream stood when the gap
    /// was found: every change handed over before is older than its reads.
    /// A snapshot of the table still running is replaced.
    ///
    /// # Errors
    /// When the table cannot be described or the journal written.
    pub fn repair<A: TableApi>(
        &mut self,
        runtime: &tokio::runtime::Handle,
        api: &Arc<A>,
        table: &str,
    ) -> Result<bool, SnapshotError> {
        if self.settings.mode != SnapshotMode::WhenNeeded {
            return Ok(false);
        }
        let failed = |source| SnapshotError::Api {
            table: table.to_owned(),
            source,
        };
        let info = runtime
            .block_on(api.describe_table(table))
            .map_err(failed)?;
        if !info.stream_has_new_images() {
            return Err(SnapshotError::Refused {
                table: table.to_owned(),
                reason: "its stream lost records, and a snapshot to repair them needs \
                         NEW_IMAGE or NEW_AND_OLD_IMAGES"
                    .into(),
            });
        }
        let started_ms = now_ms();
        let segments = self.settings.segments.max(1);
        let s0 = self
            .seen
            .get(table)
            .map(|seen| {
                seen.iter()
                    .map(|(shard, seq)| (shard.clone(), seq.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let plan = Plan {
            id: snapshot_id(started_ms),
            table: table.to_owned(),
            method: SnapshotMethod::Scan.name().to_owned(),
            segments,
            key_names: info.key_names.clone(),
            s0,
            started_ms,
            finished_ms: None,
            first_released: false,
            progress: vec![SegmentProgress::default(); segments as usize],
            items: 0,
            bytes: 0,
            consumed: 0.0,
            export_arn: None,
            export_bucket: None,
            export_files: None,
        };
        let journal = Journal::of(&self.settings.journal_root, table);
        journal.save(&plan)?;
        self.s0s.insert(table.to_owned(), plan.s0.clone());
        tracing::warn!(table, id = %plan.id, "the stream lost records: snapshotting the table again to repair them (snapshot = \"when_needed\")");
        self.estimates.insert(table.to_owned(), info);
        let fresh = TableSnapshot::new(plan, journal, table, self.settings.margin_ms);
        let i = match self.tables.iter().position(|t| &*t.table == table) {
            Some(i) => {
                self.tables[i] = fresh;
                i
            }
            None => {
                self.tables.push(fresh);
                self.tables.len() - 1
            }
        };
        self.spawn_segments(i, runtime, api)?;
        Ok(true)
    }

    /// Takes in a batch the stream handed over: notes the keys it touched
    /// and how far each shard is read, then appends the snapshot rows that
    /// may go now (after the batch's changes).
    ///
    /// # Errors
    /// When a scan failed for good or the journal cannot be written.
    pub fn merge(&mut self, batch: &mut SourceBatch) -> Result<(), SnapshotError> {
        let Some(board) = self.board.clone() else {
            return Ok(());
        };
        if self.settings.mode == SnapshotMode::WhenNeeded {
            for change in batch.changes.iter().filter(|c| c.op != Op::Read) {
                let seen = self
                    .seen
                    .entry(change.source.table.to_string())
                    .or_default();
                let seq = &change.source.sequence_number;
                match seen.get_mut(&*change.source.shard_id) {
                    Some(at) if *at >= *seq => {}
                    Some(at) => *at = seq.clone(),
                    None => {
                        seen.insert(change.source.shard_id.to_string(), seq.clone());
                    }
                }
            }
        }
        for t in self
            .tables
            .iter_mut()
            .filter(|t| t.plan.method == SnapshotMethod::Scan.name())
        {
            for (key, ms) in &batch.read_through {
                if key.table == t.table {
                    let at = t.read_through.entry(key.clone()).or_insert(*ms);
                    *at = (*at).max(*ms);
                }
            }
            for change in &batch.changes {
                if change.source.table == t.table
                    && change.op != Op::Read
                    && let Some(key) = key_text(&change.keys, &t.plan.key_names)
                {
                    t.window.touched(key, change.source.approx_creation_ms);
                }
            }
            t.receive()?;
            t.release(&board, batch)?;
        }
        Ok(())
    }

    /// Every sink has made `positions` durable: pages wholly below them are
    /// deleted from the journal.
    ///
    /// # Errors
    /// When a page cannot be deleted.
    pub fn delivered(&mut self, positions: &Positions) -> Result<(), SnapshotError> {
        for t in &mut self.tables {
            let mut kept = Vec::new();
            for (segment, page, last) in std::mem::take(&mut t.unconfirmed) {
                let key = ShardKey::new(t.table.clone(), t.plan.shard_of(segment));
                if positions.covers(&key, &last) {
                    t.journal.remove_page(&t.plan.id, segment, page)?;
                } else {
                    kept.push((segment, page, last));
                }
            }
            t.unconfirmed = kept;
        }
        Ok(())
    }

    /// Plans started or finished since the last call, to be announced where
    /// readers look (`_snapshots/<table>/<id>.json` beside the Parquet
    /// data).
    pub fn announcements(&mut self) -> Vec<Plan> {
        let mut out = Vec::new();
        for t in &mut self.tables {
            if std::mem::take(&mut t.announce) {
                out.push(t.plan.clone());
            }
        }
        out
    }

    /// Where each snapshot stands.
    pub fn progress(&self) -> Vec<SnapshotProgress> {
        self.tables
            .iter()
            .map(|t| SnapshotProgress {
                table: t.table.to_string(),
                id: t.plan.id.clone(),
                items: t.plan.items,
                bytes: t.plan.bytes,
                consumed: t.plan.consumed,
                segments_done: t.plan.segments_done(),
                segments: t.plan.progress.len(),
                estimated_items: self.estimates.get(&*t.table).map_or(0, |i| i.item_count),
                finished: t.plan.finished_ms.is_some(),
            })
            .collect()
    }
}

impl Drop for Snapshots {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// How often a running snapshot logs where it stands.
const PROGRESS_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// A page held this long for the stream is logged (once), with the shards
/// it waits for.
const STALL_MS: i64 = 60_000;

/// Rows of an export handed over per batch.
const EXPORT_ROWS_PER_BATCH: usize = 1_000;

impl TableSnapshot {
    fn new(plan: Plan, journal: Journal, table: &str, margin_ms: i64) -> Self {
        TableSnapshot {
            plan,
            journal,
            table: table.into(),
            window: Window::new(margin_ms),
            held: VecDeque::new(),
            scanned: None,
            read_through: HashMap::new(),
            unconfirmed: Vec::new(),
            announce: true,
            export: None,
            next_poll: std::time::Instant::now(),
            next_log: std::time::Instant::now() + PROGRESS_LOG_EVERY,
            stall_logged: false,
        }
    }

    /// See [`Snapshots::export_step`].
    async fn export_step<A: TableApi>(
        &mut self,
        api: &A,
        open: &OpenBucket<'_>,
        resume: &Positions,
        poll: std::time::Duration,
        batch: &mut SourceBatch,
    ) -> Result<(), SnapshotError> {
        let table = self.table.to_string();
        let refuse = |reason: String| SnapshotError::Refused {
            table: table.clone(),
            reason,
        };
        if self.plan.export_files.is_none() {
            if std::time::Instant::now() < self.next_poll {
                return Ok(());
            }
            self.next_poll = std::time::Instant::now() + poll;
            let arn = self
                .plan
                .export_arn
                .clone()
                .ok_or_else(|| refuse("the journal's plan has no export".into()))?;
            let state = api
                .describe_export(&arn)
                .await
                .map_err(|source| SnapshotError::Api {
                    table: table.clone(),
                    source,
                })?;
            match state {
                ExportState::InProgress => {
                    tracing::info!(table = %self.table, export = %arn, "export still being written");
                    return Ok(());
                }
                ExportState::Failed(why) => {
                    return Err(refuse(format!("export {arn} failed: {why}")));
                }
                ExportState::Completed {
                    bucket,
                    manifest_key,
                    item_count,
                } => {
                    let objects = open(&bucket).map_err(&refuse)?;
                    let files = export::data_files(objects.as_ref(), &manifest_key)
                        .map_err(|e| refuse(format!("export {arn}: {e}")))?;
                    tracing::info!(table = %self.table, export = %arn, items = item_count, files = files.len(), "export written; reading it");
                    self.plan.export_bucket = Some(bucket);
                    self.plan.export_files = Some(files);
                    self.journal.save(&self.plan)?;
                }
            }
        }
        let files = self.plan.export_files.clone().unwrap_or_default();
        if self.export.is_none() {
            let bucket = self.plan.export_bucket.clone().unwrap_or_default();
            let key = ShardKey::new(self.table.clone(), self.plan.shard_of(0));
            let (file, row) = export::after(resume.get(&key));
            self.export = Some(ExportCursor {
                objects: open(&bucket).map_err(&refuse)?,
                file,
                row,
                rows: None,
            });
        }
        let first_file = files.iter().position(|f| f.items > 0);
        let last_file = files.iter().rposition(|f| f.items > 0);
        let shard: Arc<str> = self.plan.shard_of(0).into();
        let id: Arc<str> = self.plan.id.as_str().into();
        let cursor = self.export.as_mut().expect("set above");
        while batch.changes.len() + batch.dead_letters.len() < EXPORT_ROWS_PER_BATCH {
            let Some(file) = files.get(cursor.file) else {
                break;
            };
            let rows = match &cursor.rows {
                Some(rows) => rows,
                None => {
                    let bytes = cursor
                        .objects
                        .get(&file.key)
                        .map_err(|e| refuse(format!("export data file: {e}")))?;
                    let rows = export::read_data_file(&bytes)
                        .map_err(|e| refuse(format!("export data file {}: {e}", file.key)))?;
                    self.plan.bytes += bytes.len() as u64;
                    cursor.rows.insert(rows)
                }
            };
            let Some(row) = usize::try_from(cursor.row).ok().and_then(|i| rows.get(i)) else {
                cursor.file += 1;
                cursor.row = 0;
                cursor.rows = None;
                continue;
            };
            let origin: Arc<str> = format!(
                "snapshot {} of table {} (export data file {})",
                self.plan.id, self.table, file.key
            )
            .into();
            let index = usize::try_from(cursor.row).unwrap_or(usize::MAX);
            match row {
                Ok(item) => {
                    let marker =
                        if Some(cursor.file) == last_file && cursor.row + 1 == rows.len() as u64 {
                            SnapshotMarker::Last
                        } else if Some(cursor.file) == first_file && cursor.row == 0 {
                            SnapshotMarker::First
                        } else {
                            SnapshotMarker::Row
                        };
                    let read_ms = self.plan.started_ms;
                    batch.changes.push(Change {
                        op: Op::Read,
                        keys: key_of(item, &self.plan.key_names),
                        old_image: None,
                        new_image: Some(item.clone()),
                        source: SourceInfo {
                            table: self.table.clone(),
                            stream_arn: None,
                            shard_id: shard.clone(),
                            sequence_number: export::sequence_of(cursor.file, cursor.row),
                            event_id: format!("{}:{}:{}", self.plan.id, cursor.file, cursor.row),
                            approx_creation_ms: Some(read_ms),
                            ttl_delete: false,
                            snapshot: Some(SnapshotRead {
                                id: id.clone(),
                                read_ms,
                                marker,
                            }),
                        },
                    });
                    batch.origins.push(Origin {
                        origin,
                        line: Some(cursor.row + 1),
                        record_index: None,
                    });
                }
                Err((raw, error)) => batch.dead_letters.push(DeadLetter {
                    origin: origin.to_string(),
                    line: Some(cursor.row + 1),
                    record_index: Some(index),
                    table: Some(self.table.to_string()),
                    shard: None,
                    sequence_number: None,
                    error: error.clone(),
                    raw: raw.clone(),
                }),
            }
            self.plan.items += 1;
            cursor.row += 1;
        }
        if cursor.file >= files.len() {
            for p in &mut self.plan.progress {
                p.done = true;
            }
            self.plan.finished_ms = Some(now_ms());
            self.journal.save(&self.plan)?;
            self.announce = true;
            tracing::info!(table = %self.table, id = %self.plan.id, items = self.plan.items, "export handed over; the stream follows from S0");
        }
        Ok(())
    }
    /// Takes the pages the segment tasks read, as long as few are held.
    fn receive(&mut self) -> Result<(), SnapshotError> {
        let Some(rx) = self.scanned.as_mut() else {
            return Ok(());
        };
        while self.held.len() < MAX_HELD_PAGES {
            match rx.try_recv() {
                Ok(Scanned::Page {
                    segment,
                    asked_ms,
                    answered_ms,
                    page,
                }) => {
                    self.held.push_back(Held {
                        segment,
                        asked_ms,
                        answered_ms,
                        spooled: None,
                        page,
                    });
                }
                Ok(Scanned::Failed(source)) => {
                    return Err(SnapshotError::Api {
                        table: self.table.to_string(),
                        source,
                    });
                }
                Err(_) => break,
            }
        }
        Ok(())
    }

    /// The time every shard of the table is read through; `None` while a
    /// shard waits to be read or has not answered yet.
    fn stream_read_through(&self, board: &ShardBoard) -> Option<i64> {
        let (listed_ms, shards) = board.unfinished_shards(&self.table)?;
        let mut through = listed_ms;
        for (key, waiting) in shards {
            if waiting {
                return None;
            }
            through = through.min(*self.read_through.get(&key)?);
        }
        Some(through)
    }

    /// Releases every held page the stream has caught up with.
    fn release(
        &mut self,
        board: &ShardBoard,
        batch: &mut SourceBatch,
    ) -> Result<(), SnapshotError> {
        if self.held.is_empty() {
            return Ok(());
        }
        self.log_progress();
        let through = self.stream_read_through(board);
        self.log_stall(board, through);
        let Some(through) = through else {
            return Ok(());
        };
        let mut i = 0;
        while i < self.held.len() {
            if !self.window.ready(self.held[i].answered_ms, through) {
                i += 1;
                continue;
            }
            let Some(held) = self.held.remove(i) else {
                break;
            };
            let spooled = match held.spooled {
                Some(page) => self.recheck(page)?,
                None => self.spool(held)?,
            };
            self.hand_over(&spooled, batch)?;
        }
        if self.held.is_empty() && self.plan.all_done() && self.plan.finished_ms.is_none() {
            self.plan.finished_ms = Some(now_ms());
            self.journal.save(&self.plan)?;
            self.announce = true;
            tracing::info!(table = %self.table, id = %self.plan.id, items = self.plan.items, "snapshot delivered to its end");
        }
        let oldest = self
            .held
            .iter()
            .map(|h| h.asked_ms)
            .min()
            .unwrap_or_else(now_ms)
            // A call in flight was asked for after the newest answer.
            .min(now_ms() - 60_000);
        self.window.forget_before(oldest);
        Ok(())
    }

    /// Logs where the snapshot stands, every [`PROGRESS_LOG_EVERY`].
    fn log_progress(&mut self) {
        let now = std::time::Instant::now();
        if now < self.next_log || self.plan.finished_ms.is_some() {
            return;
        }
        self.next_log = now + PROGRESS_LOG_EVERY;
        tracing::info!(
            table = %self.table,
            id = %self.plan.id,
            items = self.plan.items,
            bytes = self.plan.bytes,
            segments_done = self.plan.segments_done(),
            segments = self.plan.progress.len(),
            pages_held = self.held.len(),
            consumed_rcu = self.plan.consumed,
            "snapshot progress"
        );
    }

    /// A page held for a minute means the stream is not read past it: say
    /// once which shards hold it back (a shard waiting for a reader slot
    /// needs a larger `max_concurrent_shards`).
    fn log_stall(&mut self, board: &ShardBoard, through: Option<i64>) {
        let Some(oldest) = self.held.iter().map(|h| h.answered_ms).min() else {
            self.stall_logged = false;
            return;
        };
        if self.stall_logged || now_ms() - oldest < STALL_MS {
            return;
        }
        self.stall_logged = true;
        let behind: Vec<String> = board
            .unfinished_shards(&self.table)
            .map(|(_, shards)| {
                shards
                    .into_iter()
                    .filter(|(key, waiting)| {
                        *waiting
                            || self
                                .read_through
                                .get(key)
                                .is_none_or(|&ms| ms < oldest + self.window_margin())
                    })
                    .map(|(key, waiting)| {
                        format!("{}{}", key.shard, if waiting { " (waiting)" } else { "" })
                    })
                    .collect()
            })
            .unwrap_or_default();
        tracing::warn!(
            table = %self.table,
            pages_held = self.held.len(),
            read_through_ms = through,
            shards_behind = %behind.join(", "),
            "snapshot pages wait for the stream to be read past them; a shard waiting for a \
             reader needs a larger max_concurrent_shards"
        );
    }

    fn window_margin(&self) -> i64 {
        self.window.margin()
    }

    /// A page of an earlier run, handed over again: the stream, read again
    /// from the sinks' positions, may already have handed over changes newer
    /// than its reads (made while the bridge was down), so their keys are
    /// dropped as from a fresh page. The rows left keep their numbers, and
    /// the page is recorded without the dropped ones first, so that no later
    /// replay brings one back behind its newer change.
    fn recheck(&mut self, mut page: SpooledPage) -> Result<SpooledPage, SnapshotError> {
        let before = page.rows.len();
        for (i, row) in page.rows.iter_mut().enumerate() {
            row.index.get_or_insert(i as u64);
        }
        let mut unreadable = Vec::new();
        page.rows.retain(|row| match row.item() {
            Ok(item) => key_text(&item, &self.plan.key_names)
                .is_none_or(|k| self.window.keeps(&k, page.asked_ms)),
            Err(e) => {
                unreadable.push(e.to_string());
                true
            }
        });
        if let Some(e) = unreadable.first() {
            return Err(SnapshotError::Refused {
                table: self.table.to_string(),
                reason: format!("a journal page is unreadable: {e}"),
            });
        }
        if page.rows.len() < before {
            tracing::info!(table = %self.table, segment = page.segment, page = page.page, dropped = before - page.rows.len(), "a page handed over again lost rows the stream changed meanwhile");
            self.journal.write_page(&self.plan.id, &page)?;
        }
        Ok(page)
    }

    /// Drops the keys the stream touched, numbers the rest, and records the
    /// page and the plan before the rows go anywhere.
    fn spool(&mut self, held: Held) -> Result<SpooledPage, SnapshotError> {
        let progress = &self.plan.progress[held.segment as usize];
        let number = progress.pages + 1;
        let others_done = self
            .plan
            .progress
            .iter()
            .enumerate()
            .all(|(i, p)| i == held.segment as usize || p.done);
        let last_of_all = held.page.last_key.is_none()
            && others_done
            && !self.held.iter().any(|h| h.segment != held.segment);
        let mut rows: Vec<SpooledRow> = held
            .page
            .items
            .iter()
            .filter(|item| {
                key_text(item, &self.plan.key_names)
                    .is_none_or(|k| self.window.keeps(&k, held.asked_ms))
            })
            .enumerate()
            .map(|(i, item)| SpooledRow {
                index: Some(i as u64),
                read_ms: held.answered_ms,
                marker: SnapshotMarker::Row.code().to_owned(),
                item: raw_item(item),
            })
            .collect();
        if !self.plan.first_released
            && let Some(first) = rows.first_mut()
        {
            first.marker = SnapshotMarker::First.code().to_owned();
            self.plan.first_released = true;
        }
        if last_of_all && let Some(last) = rows.last_mut() {
            last.marker = SnapshotMarker::Last.code().to_owned();
        }
        let page = SpooledPage {
            segment: held.segment,
            page: number,
            asked_ms: held.asked_ms,
            answered_ms: held.answered_ms,
            last_key: held.page.last_key.as_ref().map(raw_item),
            rows,
            unreadable: held.page.unreadable,
        };
        self.journal.write_page(&self.plan.id, &page)?;
        let progress = &mut self.plan.progress[held.segment as usize];
        progress.pages = number;
        progress.next_key = page.last_key.clone();
        progress.done = page.last_key.is_none();
        self.plan.items += held.page.items.len() as u64;
        self.plan.consumed += held.page.consumed;
        self.plan.bytes += held.page.bytes;
        crate::events::SnapshotPageReleased {
            table: &self.table,
            items: held.page.items.len() as u64,
            consumed_so_far: self.plan.consumed,
            segments_done: self.plan.segments_done(),
            segments: self.plan.progress.len(),
        }
        .emit();
        self.journal.save(&self.plan)?;
        Ok(page)
    }

    /// Appends a released page's rows to the batch.
    fn hand_over(
        &mut self,
        page: &SpooledPage,
        batch: &mut SourceBatch,
    ) -> Result<(), SnapshotError> {
        let shard: Arc<str> = self.plan.shard_of(page.segment).into();
        let id: Arc<str> = self.plan.id.as_str().into();
        let origin: Arc<str> = format!(
            "snapshot {} of table {} (segment {}, page {})",
            self.plan.id, self.table, page.segment, page.page
        )
        .into();
        for (i, row) in page.rows.iter().enumerate() {
            let item = row.item().map_err(|e| SnapshotError::Refused {
                table: self.table.to_string(),
                reason: format!("a journal page is unreadable: {e}"),
            })?;
            let index = row_index(row, i);
            let seq = sequence_of(page.page, index);
            batch.changes.push(Change {
                op: Op::Read,
                keys: key_of(&item, &self.plan.key_names),
                old_image: None,
                new_image: Some(item),
                source: SourceInfo {
                    table: self.table.clone(),
                    stream_arn: None,
                    shard_id: shard.clone(),
                    sequence_number: seq,
                    event_id: format!("{}:{}:{}:{index}", self.plan.id, page.segment, page.page),
                    approx_creation_ms: Some(row.read_ms),
                    ttl_delete: false,
                    snapshot: Some(SnapshotRead {
                        id: id.clone(),
                        read_ms: row.read_ms,
                        marker: SnapshotMarker::from_code(&row.marker)
                            .unwrap_or(SnapshotMarker::Row),
                    }),
                },
            });
            batch.origins.push(Origin {
                origin: origin.clone(),
                line: None,
                record_index: Some(index),
            });
        }
        for (i, (raw, error)) in page.unreadable.iter().enumerate() {
            batch.dead_letters.push(DeadLetter {
                origin: origin.to_string(),
                line: None,
                record_index: Some(i),
                table: Some(self.table.to_string()),
                shard: None,
                sequence_number: None,
                error: error.clone(),
                raw: raw.clone(),
            });
        }
        if !page.rows.is_empty() {
            self.unconfirmed
                .push((page.segment, page.page, last_sequence(page)));
        } else if page.unreadable.is_empty() {
            // Nothing in it for a sink to hold.
            self.journal
                .remove_page(&self.plan.id, page.segment, page.page)?;
        }
        Ok(())
    }
}

/// True when some sink lacks a row of a finished export's last data file.
fn export_undelivered(plan: &Plan, resume: &Positions) -> bool {
    let Some(files) = &plan.export_files else {
        return false;
    };
    let Some((index, last)) = files.iter().enumerate().rev().find(|(_, f)| f.items > 0) else {
        return false;
    };
    let key = ShardKey::new(plan.table.as_str(), plan.shard_of(0));
    !resume.covers(&key, &export::sequence_of(index, last.items - 1))
}

/// The sequence number of row `row` of page `page`.
fn sequence_of(page: u64, row: usize) -> SequenceNumber {
    let n = page * ROWS_PER_PAGE + row as u64;
    SequenceNumber::parse(&n.to_string()).expect("digits")
}

/// The sequence number of a page's last row (its first place when empty).
fn last_sequence(page: &SpooledPage) -> SequenceNumber {
    let last = page
        .rows
        .iter()
        .enumerate()
        .map(|(i, row)| row_index(row, i))
        .max()
        .unwrap_or(0);
    sequence_of(page.page, last)
}

/// A row's place in its page: recorded, or (journals written before rows
/// recorded it) its position in the file.
fn row_index(row: &SpooledRow, position: usize) -> usize {
    row.index
        .and_then(|i| usize::try_from(i).ok())
        .unwrap_or(position)
}

/// `YYYYMMDDTHHMMSSmmmZ` of `ms`: sortable, and safe in file names.
fn snapshot_id(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y%m%dT%H%M%S%3fZ")
        .to_string()
}

/// Items per Scan page: about one second of a segment's share of the
/// budget, from the table's average item size; 1 000 when unknown. Bounded
/// so that tiny budgets still make progress and pages stay far below the
/// row numbering's limit.
fn page_limit(average_item_bytes: u64, max_rcu: f64, segments: u32) -> u32 {
    if average_item_bytes == 0 {
        return 1_000;
    }
    // An eventually consistent read costs half a unit per 4 KiB.
    let bytes_per_second = max_rcu / f64::from(segments.max(1)) * 8_192.0;
    let items = (bytes_per_second / average_item_bytes as f64) as u64;
    u32::try_from(items.clamp(10, 10_000)).unwrap_or(10_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_numbers_grow_within_and_across_pages() {
        assert!(sequence_of(1, 999) < sequence_of(2, 0));
        assert!(sequence_of(1, 0) < sequence_of(1, 1));
        assert_eq!(sequence_of(3, 7).as_str(), "3000007");
    }

    #[test]
    fn ids_sort_by_time_and_name_no_path() {
        let a = snapshot_id(1_764_637_200_000);
        let b = snapshot_id(1_764_637_200_001);
        assert!(a < b);
        assert_eq!(a, "20251202T010000000Z");
    }

    #[test]
    fn page_limits_follow_the_budget() {
        assert_eq!(page_limit(0, 500.0, 8), 1_000);
        // 100-byte items, 80 units over 8 segments: 10 units, 81 920 bytes.
        assert_eq!(page_limit(100, 80.0, 8), 819);
        assert_eq!(page_limit(100, 0.5, 8), 10);
    }
}
