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
//!   finished segment again;
//! - [`export`]: an export's files in DynamoDB's layout;
//! - `table`: one table's snapshot in progress (held pages, release,
//!   journaling, hand-over).
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
pub(crate) mod start;
mod table;
pub mod window;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use dynamo_cdc_core::{Op, Positions, SequenceNumber, ShardKey, SnapshotRecord, SourceBatch};
use serde::Deserialize;
use tokio::sync::{mpsc, watch};

pub use api::{
    ExportRequest, ExportState, ScanPage, ScanRequest, TableApi, TableInfo, key_of, key_text,
};
pub use export::{ExportObjects, LocalBucket, OpenBucket, ReadFailure};
pub use journal::{Journal, JournalError, Plan};

use crate::streams::api::{ApiError, StreamsApi};
use crate::streams::{ShardBoard, now_ms};
use scan::{Budget, Segment};
use table::{TableSnapshot, last_sequence};

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
    /// Where the journal lives (beside the checkpoint, or where every
    /// process sharing the tables sees it).
    pub journal: std::sync::Arc<dyn journal::JournalFiles>,
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
pub(super) const ROWS_PER_PAGE: u64 = 1_000_000;

/// Pages held at once per table before the scan is made to wait.
pub(super) const MAX_HELD_PAGES: usize = 64;

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
    /// An object the snapshot reads (an export's files) cannot be reached
    /// now: the store is down, slow or throttling. It may pass.
    #[error("snapshot of table `{table}`: {reason}")]
    Unreachable {
        /// The table.
        table: String,
        /// What could not be read, and why.
        reason: String,
    },
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
        match self {
            SnapshotError::Api { source, .. } => source.is_retryable(),
            SnapshotError::Journal(e) => e.is_transient(),
            SnapshotError::Unreachable { .. } => true,
            SnapshotError::Refused { .. } => false,
        }
    }
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
    /// handed over in this run, or held by some sink (a repair's S0).
    seen: HashMap<String, BTreeMap<String, SequenceNumber>>,
    /// Per table, the S0 of its newest snapshot, finished or not: a shard
    /// no sink has a position for is read after it, never from its start
    /// (which would hand over changes the snapshot already holds).
    s0s: HashMap<String, BTreeMap<String, String>>,
    /// Records of finished plans to be recorded again by the sinks (see
    /// [`Snapshots::announcements`]).
    finished: Vec<SnapshotRecord>,
}

impl Snapshots {
    /// Decides which tables need a snapshot: one whose plan is unfinished,
    /// or finished but not yet held by every sink, is resumed; with
    /// `initial` or `when_needed` a table no sink has a position for gets a
    /// new one, and so does `forced`. For a new one,
    /// S0 is read and the plan recorded before anything else happens.
    ///
    /// `tables` pairs each table with its stream's ARN; `resume` is the
    /// lowest position over the sinks, `delivered` the highest.
    ///
    /// # Errors
    /// When a table cannot be snapshotted (no new images in its stream),
    /// a call fails, or the journal cannot be written.
    pub async fn prepare<A: StreamsApi + TableApi>(
        api: &A,
        settings: SnapshotSettings,
        tables: &[(String, String)],
        resume: &Positions,
        delivered: &Positions,
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
            finished: Vec::new(),
        };
        for (table, stream_arn) in tables {
            let journal = Journal::of(&out.settings.journal, table);
            let existing = journal.load()?;
            let has_position = resume.iter().any(|(k, _)| *k.table == **table);
            let wanted = forced == Some(table.as_str())
                || (out.settings.mode != SnapshotMode::Never
                    && existing.is_none()
                    && !has_position);
            if let Some(plan) = &existing {
                out.s0s.insert(table.clone(), plan.s0.clone());
            }
            // Handed over to its end before a crash, not yet held by every
            // sink: its last rows are handed over again. An export goes on
            // from the first row some sink lacks, so it is unfinished again;
            // a scan's journal pages are handed over again as they are, and
            // the plan stays finished (readers may use it, and its pages
            // are the same rows).
            let export_again = existing
                .as_ref()
                .is_some_and(|p| p.finished_ms.is_some() && export_undelivered(p, resume));
            let pages_again = match &existing {
                Some(p) if p.finished_ms.is_some() && !export_again => {
                    pages_undelivered(&journal, p, resume)?
                }
                _ => false,
            };
            let resumed = match existing {
                Some(plan) if plan.finished_ms.is_none() && !wanted => Some(plan),
                Some(mut plan) if !wanted && export_again => {
                    plan.finished_ms = None;
                    Some(plan)
                }
                Some(plan) if !wanted && pages_again => Some(plan),
                _ if wanted => None,
                Some(plan) => {
                    // Finished and delivered: its record is recorded again
                    // (a crash may have come between the last commit and
                    // the record; recording is idempotent).
                    out.finished.push(plan.record());
                    continue;
                }
                None => continue,
            };
            let info = api
                .describe_table(table)
                .await
                .map_err(|source| SnapshotError::Api {
                    table: table.clone(),
                    source,
                })?;
            let plan = match resumed {
                Some(mut plan) => {
                    out.export_unasked(api, table, &info, &journal, &mut plan)
                        .await?;
                    plan
                }
                None => {
                    out.plan(api, table, stream_arn, &journal, &info, delivered)
                        .await?
                }
            };
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
        info: &TableInfo,
        delivered: &Positions,
    ) -> Result<Plan, SnapshotError> {
        let failed = |source| SnapshotError::Api {
            table: table.to_owned(),
            source,
        };
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
            Some(self.export_request(api, table, info, 0).await?)
        } else {
            None
        };
        let started_ms = now_ms();
        let mut s0 = start::stream_end(api, stream_arn).await.map_err(failed)?;
        // Shards the stream no longer lists, whose changes the sinks hold
        // (a snapshot forced on a table with a history): S0 names them, or
        // readers would count those changes as newer than the snapshot.
        for (key, seq) in delivered.iter() {
            if *key.table == *table && !journal::is_snapshot_shard(&key.shard) {
                raise(&mut s0, &key.shard, seq);
            }
        }
        let segments = match export {
            Some(_) => 1,
            None => self.settings.segments.max(1),
        };
        let s0 = s0
            .into_iter()
            .map(|(shard, seq)| (shard, seq.to_string()))
            .collect();
        let mut plan = Plan::new(
            snapshot_id(started_ms),
            table,
            self.settings.method.name(),
            segments,
            info.key_names.clone(),
            s0,
            started_ms,
        );
        // S0 is durable before the first item is read.
        journal.save(&plan)?;
        if let Some(request) = export {
            // After S0: the export shows the table at a moment after it.
            ask_for_export(api, request, journal, &mut plan).await?;
        }
        tracing::info!(table, id = %plan.id, shards = plan.s0.len(), segments, "snapshot planned: stream positions recorded");
        Ok(plan)
    }

    /// A resumed export plan whose export was never asked for, or whose
    /// answer was lost (throttled, a server error, a crash between the two
    /// saves of [`Snapshots::plan`]): asked for now, under the plan's
    /// token, so that an export DynamoDB did start is the one answered.
    /// Its S0 still holds: the export shows the table at a later moment.
    async fn export_unasked<A: TableApi>(
        &self,
        api: &A,
        table: &str,
        info: &TableInfo,
        journal: &Journal,
        plan: &mut Plan,
    ) -> Result<(), SnapshotError> {
        if plan.method != SnapshotMethod::Export.name()
            || plan.export_arn.is_some()
            || plan.finished_ms.is_some()
        {
            return Ok(());
        }
        tracing::info!(table, id = %plan.id, "the snapshot's export has no answer yet: asking for it");
        // The stream has waited since S0 already.
        let waited_s = u64::try_from((now_ms() - plan.started_ms) / 1_000).unwrap_or(0);
        let request = self.export_request(api, table, info, waited_s).await?;
        ask_for_export(api, request, journal, plan).await
    }

    /// Checks that `table` can be exported in time, the stream having
    /// waited `waited_s` since S0 already, and what to ask for.
    async fn export_request<A: TableApi>(
        &self,
        api: &A,
        table: &str,
        info: &TableInfo,
        waited_s: u64,
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
        if waited_s > 0 && waited_s + estimate > EXPORT_BUDGET_SECONDS {
            return Err(refuse(format!(
                "the export planned {} hours ago was never started, and one asked for now is \
                 expected to take about {} hours more, past what the stream keeps: take a new \
                 snapshot with `dynamo-cdc snapshot --config FILE --table {table}`",
                waited_s / 3_600,
                estimate.div_ceil(3_600)
            )));
        }
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
            // Set per plan: see `ask_for_export`.
            client_token: String::new(),
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
    /// earlier run past it are handed over again first), `delivered` the
    /// highest.
    ///
    /// # Errors
    /// When the journal's pages cannot be read.
    pub fn start<A: TableApi>(
        &mut self,
        runtime: &tokio::runtime::Handle,
        api: &Arc<A>,
        board: Arc<ShardBoard>,
        resume: &Positions,
        delivered: &Positions,
    ) -> Result<(), SnapshotError> {
        self.board = Some(board);
        if self.settings.mode == SnapshotMode::WhenNeeded {
            // A repair's S0 starts at what earlier runs delivered: left
            // empty, it would count every change they delivered as newer
            // than the repair's rows. Per shard the furthest any sink got:
            // a sink that is behind gets the changes in between again, if
            // the stream still has them, and they are older than the
            // snapshot; one that is ahead must not see them as newer (the
            // changes lost after them would be the newer ones).
            let mut from = self.stream_resume(resume);
            from.merge_max(delivered);
            for (key, seq) in from.iter() {
                if journal::is_snapshot_shard(&key.shard) {
                    continue;
                }
                let seen = self.seen.entry(key.table.to_string()).or_default();
                raise(seen, &key.shard, seq);
            }
        }
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
                t.replay.push(page);
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
        t.scanning.clear();
        let budget = Arc::new(Budget::new(budget_per_table));
        let average = match estimate {
            _ if t.plan.items > 0 => t.plan.bytes / t.plan.items,
            Some(info) if info.item_count > 0 => info.size_bytes / info.item_count,
            _ => 0,
        };
        let limit = page_limit(average, budget_per_table, t.plan.segments);
        let trouble = Arc::new(dynamo_cdc_core::SharedOutage::new());
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
                trouble: trouble.clone(),
                out: tx.clone(),
                stop: stop.clone(),
            };
            // Before the task can ask for its first page.
            t.scanning.insert(task.request.segment, now_ms());
            runtime.spawn(task.run());
        }
        tracing::info!(table = %t.table, id = %t.plan.id, segments_left = t.plan.progress.iter().filter(|p| !p.done).count(), limit, "snapshot scanning");
        Ok(())
    }

    /// The stream lost records of `table` (it fell behind its retention):
    /// with `when_needed`, a new snapshot by Scan repairs the table while
    /// the stream goes on. Its S0 is, per shard, the furthest of what this
    /// run handed over and what some sink holds: every such change is older
    /// than its reads.
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
        let plan = Plan::new(
            snapshot_id(started_ms),
            table,
            SnapshotMethod::Scan.name(),
            segments,
            info.key_names.clone(),
            s0,
            started_ms,
        );
        let journal = Journal::of(&self.settings.journal, table);
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
        self.replay_first(batch)?;
        if self.settings.mode == SnapshotMode::WhenNeeded {
            for change in batch.changes.iter().filter(|c| c.op != Op::Read) {
                let s = &change.source;
                // Names are copied only the first time a table or shard shows.
                if !self.seen.contains_key(&*s.table) {
                    self.seen.insert(s.table.to_string(), BTreeMap::new());
                }
                let Some(seen) = self.seen.get_mut(&*s.table) else {
                    continue;
                };
                raise(seen, &s.shard_id, &s.sequence_number);
            }
        }
        // A finished plan takes no more pages: nothing to note for it.
        for t in self.tables.iter_mut().filter(|t| {
            t.plan.method == SnapshotMethod::Scan.name() && t.plan.finished_ms.is_none()
        }) {
            for (key, ms) in &batch.read_through {
                if key.table == t.table {
                    let at = t.read_through.entry(key.clone()).or_insert(*ms);
                    *at = (*at).max(*ms);
                }
            }
            for change in &batch.changes {
                if change.source.table == t.table
                    && change.op != Op::Read
                    && !t.before_s0(change)
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

    /// Hands the pages an earlier run released, and some sink lacks, over
    /// again ahead of `batch`: before the stream, resumed from the sinks'
    /// positions, hands over any change made while the bridge was down.
    /// Each row is the same row in the same place, so a sink that holds it
    /// drops it and one that lacks it gets it; a change older than a row that
    /// the stream hands over again after it only repeats what the row shows.
    fn replay_first(&mut self, batch: &mut SourceBatch) -> Result<(), SnapshotError> {
        let mut front = SourceBatch::default();
        for t in &mut self.tables {
            for page in std::mem::take(&mut t.replay) {
                t.hand_over(&page, &mut front)?;
            }
        }
        if front.changes.is_empty() && front.dead_letters.is_empty() {
            return Ok(());
        }
        front.changes.append(&mut batch.changes);
        front.origins.append(&mut batch.origins);
        batch.changes = front.changes;
        batch.origins = front.origins;
        batch.dead_letters.extend(front.dead_letters);
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

    /// Plans started or finished since the last call, to be recorded by the
    /// sinks where their readers look (see [`SnapshotRecord`]).
    pub fn announcements(&mut self) -> Vec<SnapshotRecord> {
        let mut out = std::mem::take(&mut self.finished);
        for t in &mut self.tables {
            if std::mem::take(&mut t.announce) {
                out.push(t.plan.record());
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

/// Raises `shard`'s sequence number in `map` to `seq`, if that is higher;
/// the name is copied only for a shard the map does not hold yet.
fn raise(map: &mut BTreeMap<String, SequenceNumber>, shard: &str, seq: &SequenceNumber) {
    match map.get_mut(shard) {
        Some(at) if *at >= *seq => {}
        Some(at) => *at = seq.clone(),
        None => {
            map.insert(shard.to_owned(), seq.clone());
        }
    }
}

/// Whether a scan's journal still holds a page with rows some sink lacks.
/// (A page of only unreadable records is left alone: it is never covered by
/// a position, and its dead letters were made durable with its batch. A
/// page whose last row a sink rejected is never covered either: it is
/// handed over again at every start, where the sinks drop what they hold
/// and the dead letter is known.)
fn pages_undelivered(
    journal: &Journal,
    plan: &Plan,
    resume: &Positions,
) -> Result<bool, SnapshotError> {
    Ok(journal.pages(&plan.id)?.iter().any(|page| {
        let key = ShardKey::new(plan.table.as_str(), plan.shard_of(page.segment));
        !page.rows.is_empty() && !resume.covers(&key, &last_sequence(page))
    }))
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

/// Asks for `plan`'s export under the plan's token and keeps its ARN.
async fn ask_for_export<A: TableApi>(
    api: &A,
    mut request: ExportRequest,
    journal: &Journal,
    plan: &mut Plan,
) -> Result<(), SnapshotError> {
    request.client_token = export_token(&plan.table, &plan.id);
    let arn = api
        .export_table(&request)
        .await
        .map_err(|source| SnapshotError::Api {
            table: plan.table.clone(),
            source,
        })?;
    tracing::info!(table = %plan.table, export = %arn, bucket = %request.bucket, prefix = %request.prefix, "export requested");
    plan.export_arn = Some(arn);
    journal.save(plan)?;
    Ok(())
}

/// The idempotency token of a plan's export request: one per table and
/// plan, short whatever the table's name (FNV-1a of it).
fn export_token(table: &str, id: &str) -> String {
    let hash = table.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("dynamo-cdc-{id}-{hash:016x}")
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
