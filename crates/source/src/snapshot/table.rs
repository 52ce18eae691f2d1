//! One table's snapshot in progress: the pages its scan read and holds,
//! their release into the stream's batches (the window's rule), the
//! journal entries that make a release survive a crash, and the hand-over
//! of an export's rows.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use dynamo_cdc_core::{
    Change, DeadLetter, Op, Origin, Positions, SequenceNumber, ShardKey, SnapshotMarker,
    SnapshotRead, SourceBatch, SourceInfo,
};
use tokio::sync::mpsc;

use super::api::{ExportState, ScanPage, TableApi, key_of, key_text};
use super::export::{self, ExportObjects, OpenBucket, ReadFailure};
use super::journal::{Journal, Plan, SpooledPage, SpooledRow, raw_item};
use super::scan::Scanned;
use super::window::Window;
use super::{MAX_HELD_PAGES, ROWS_PER_PAGE, SnapshotError};
use crate::streams::{ShardBoard, now_ms};

/// A page read and not yet released.
#[derive(Debug)]
pub(super) struct Held {
    pub(super) segment: u32,
    pub(super) asked_ms: i64,
    pub(super) answered_ms: i64,
    pub(super) page: ScanPage,
}

/// One table's snapshot in progress.
pub(super) struct TableSnapshot {
    pub(super) plan: Plan,
    pub(super) journal: Journal,
    pub(super) table: Arc<str>,
    pub(super) window: Window,
    pub(super) held: VecDeque<Held>,
    pub(super) scanned: Option<mpsc::Receiver<Scanned>>,
    /// Per segment whose task still reads: no page of it that is yet to be
    /// taken in was asked for before this time. It is the answer time of
    /// the segment's last page taken in (the task asks for the next one
    /// after handing that one over), or the task's start. Pages wait in
    /// the channel, and in tasks blocked on it, for as long as the held
    /// pages wait for the stream, so this bounds what the window may
    /// forget.
    pub(super) scanning: HashMap<u32, i64>,
    /// Per shard of the table's stream, the time it is read through.
    pub(super) read_through: HashMap<ShardKey, i64>,
    /// Released pages not yet committed by every sink: (segment, page,
    /// last sequence number).
    pub(super) unconfirmed: Vec<(u32, u64, SequenceNumber)>,
    /// Set when a plan was started or finished and not yet announced.
    pub(super) announce: bool,
    /// Pages of an earlier run that some sink lacks: handed over again,
    /// as they were, ahead of the first batch of this run.
    pub(super) replay: Vec<SpooledPage>,
    /// An export being handed over.
    pub(super) export: Option<ExportCursor>,
    /// No DescribeExport before this.
    pub(super) next_poll: std::time::Instant,
    /// When the next progress line is logged.
    pub(super) next_log: std::time::Instant,
    /// A page waited long for the stream and this was logged.
    pub(super) stall_logged: bool,
    /// The plan's S0, parsed.
    s0: HashMap<String, SequenceNumber>,
}

/// Where an export's hand-over stands.
pub(super) struct ExportCursor {
    /// Reads the export's bucket.
    pub(super) objects: Box<dyn ExportObjects>,
    /// The data file (index into the plan's files) and its next row.
    pub(super) file: usize,
    pub(super) row: u64,
    /// The rows of `file`, once read.
    pub(super) rows: Option<export::DataRows>,
}

/// How often a running snapshot logs where it stands.
const PROGRESS_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// A page held this long for the stream is logged (once), with the shards
/// it waits for.
const STALL_MS: i64 = 60_000;

/// Rows of an export handed over per batch.
const EXPORT_ROWS_PER_BATCH: usize = 1_000;

impl TableSnapshot {
    pub(super) fn new(plan: Plan, journal: Journal, table: &str, margin_ms: i64) -> Self {
        let s0 = plan
            .s0
            .iter()
            .filter_map(|(shard, seq)| Some((shard.clone(), SequenceNumber::parse(seq).ok()?)))
            .collect();
        TableSnapshot {
            plan,
            journal,
            table: table.into(),
            window: Window::new(margin_ms),
            held: VecDeque::new(),
            scanned: None,
            scanning: HashMap::new(),
            read_through: HashMap::new(),
            unconfirmed: Vec::new(),
            announce: true,
            replay: Vec::new(),
            export: None,
            next_poll: std::time::Instant::now(),
            next_log: std::time::Instant::now() + PROGRESS_LOG_EVERY,
            stall_logged: false,
            s0,
        }
    }

    /// Whether `change` is at or before S0: older than the snapshot, so it
    /// says nothing of what a page read after S0 shows (such a change is
    /// handed over again for a sink that was behind).
    pub(super) fn before_s0(&self, change: &Change) -> bool {
        self.s0
            .get(&*change.source.shard_id)
            .is_some_and(|s0| change.source.sequence_number <= *s0)
    }

    /// See [`Snapshots::export_step`].
    pub(super) async fn export_step<A: TableApi>(
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
                    return Err(refuse(format!(
                        "export {arn} failed: {why}; once its cause is mended, take a new \
                         snapshot with `dynamo-cdc snapshot --config FILE --table {}`",
                        self.table
                    )));
                }
                ExportState::Completed {
                    bucket,
                    manifest_key,
                    item_count,
                } => {
                    let objects = open(&bucket).map_err(&refuse)?;
                    let files = export::data_files(objects.as_ref(), &manifest_key)
                        .map_err(|e| unread(&table, format!("export {arn}"), e))?;
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
                        .map_err(|e| unread(&table, "export data file".into(), e))?;
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
                        unread_old_image: None,
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
    /// Records the plan as finished once every segment is done and every
    /// page released and handed over.
    fn finish_if_done(&mut self) -> Result<(), SnapshotError> {
        if self.held.is_empty()
            && self.replay.is_empty()
            && self.plan.all_done()
            && self.plan.finished_ms.is_none()
        {
            self.plan.finished_ms = Some(now_ms());
            self.journal.save(&self.plan)?;
            self.announce = true;
            tracing::info!(table = %self.table, id = %self.plan.id, items = self.plan.items, "snapshot delivered to its end");
        }
        Ok(())
    }

    /// Takes the pages the segment tasks read, as long as few are held.
    pub(super) fn receive(&mut self) -> Result<(), SnapshotError> {
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
                    if page.last_key.is_some() {
                        self.scanning.insert(segment, answered_ms);
                    } else {
                        self.scanning.remove(&segment);
                    }
                    self.held.push_back(Held {
                        segment,
                        asked_ms,
                        answered_ms,
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

    /// Releases every held page the stream has caught up with, and
    /// forgets the changes no page still to come can be dropped for.
    pub(super) fn release(
        &mut self,
        board: &ShardBoard,
        batch: &mut SourceBatch,
    ) -> Result<(), SnapshotError> {
        self.release_ready(board, batch)?;
        // Also a plan whose pages were all released by an earlier run that
        // did not live to finish it (or handed over again) ends here.
        self.finish_if_done()?;
        self.window.forget_before(self.oldest_ask_ms());
        Ok(())
    }

    /// Spools and hands over the held pages the stream is read past.
    fn release_ready(
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
            let spooled = self.spool(held)?;
            self.hand_over(&spooled, batch)?;
        }
        Ok(())
    }

    /// No page still to be released was asked for before this: the held
    /// pages' ask times and the floors of the segments still scanning
    /// (`scanning`); now when there are none.
    fn oldest_ask_ms(&self) -> i64 {
        self.held
            .iter()
            .map(|h| h.asked_ms)
            .chain(self.scanning.values().copied())
            .min()
            .unwrap_or_else(now_ms)
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
    pub(super) fn hand_over(
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
                unread_old_image: None,
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

/// The sequence number of row `row` of page `page`.
pub(super) fn sequence_of(page: u64, row: usize) -> SequenceNumber {
    let n = page * ROWS_PER_PAGE + row as u64;
    SequenceNumber::parse(&n.to_string()).expect("digits")
}

/// The sequence number of a page's last row (its first place when empty).
pub(super) fn last_sequence(page: &SpooledPage) -> SequenceNumber {
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

/// An export's object that could not be read: a pause when the store may
/// come back (down, slow, throttling), a stop when it will give the same.
fn unread(table: &str, what: String, failure: ReadFailure) -> SnapshotError {
    let reason = format!("{what}: {}", failure.message);
    if failure.passing {
        SnapshotError::Unreachable {
            table: table.to_owned(),
            reason,
        }
    } else {
        SnapshotError::Refused {
            table: table.to_owned(),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::journal::LocalJournalFiles;

    fn item(id: &str) -> dynamo_cdc_core::Item {
        dynamo_cdc_core::parse_item(&format!(r#"{{"id":{{"S":"{id}"}}}}"#), "test").unwrap()
    }

    /// A page of segment 0 holding `ids`, the segment's last when not `more`.
    fn page(asked_ms: i64, ids: &[&str], more: bool) -> Scanned {
        Scanned::Page {
            segment: 0,
            asked_ms,
            answered_ms: asked_ms + 500,
            page: ScanPage {
                items: ids.iter().map(|id| item(id)).collect(),
                last_key: more.then(|| item(ids[ids.len() - 1])),
                ..ScanPage::default()
            },
        }
    }

    /// The ids of the snapshot rows a release handed over.
    fn rows(batch: &SourceBatch) -> Vec<String> {
        batch
            .changes
            .iter()
            .filter(|c| c.op == Op::Read)
            .map(|c| key_text(&c.keys, &["id".to_owned()]).unwrap())
            .collect()
    }

    /// A page answered but not yet taken in (it waits in the channel while
    /// the held pages are at their cap, or in a task blocked on sending it)
    /// may have been asked for long ago: the changes that can drop its rows
    /// are kept until it is released, however long the stream kept every
    /// page waiting.
    #[test]
    fn a_page_not_yet_taken_in_still_drops_a_key_the_stream_changed_after_its_read() {
        let dir = tempfile::tempdir().unwrap();
        let files = LocalJournalFiles::at(dir.path());
        let plan = Plan::new(
            "s1".into(),
            "t",
            "scan",
            1,
            vec!["id".into()],
            std::collections::BTreeMap::new(),
            0,
        );
        let mut t = TableSnapshot::new(plan, Journal::of(&files, "t"), "t", 3_000);
        let now = now_ms();
        let start = now - 200_000;
        let (tx, rx) = mpsc::channel(4);
        t.scanned = Some(rx);
        t.scanning.insert(0, start);
        tx.try_send(page(start, &["a"], true)).unwrap();
        t.receive().unwrap();
        // The segment's next page, read 10 s later, is not taken in yet.
        tx.try_send(page(start + 10_000, &["k", "m"], false))
            .unwrap();
        // The stream hands over a change of k made 20 s after that read.
        let k = key_text(&item("k"), &["id".to_owned()]).unwrap();
        t.window.touched(k.clone(), Some(start + 30_000));
        // The stream stalled, then is read through now: the held page goes,
        // long after k's change.
        let board = ShardBoard::new(1);
        board.listed(&Arc::from("t"), now);
        let mut batch = SourceBatch::default();
        t.release(&board, &mut batch).unwrap();
        assert_eq!(
            rows(&batch),
            [key_text(&item("a"), &["id".to_owned()]).unwrap()]
        );
        t.receive().unwrap();
        let mut batch = SourceBatch::default();
        t.release(&board, &mut batch).unwrap();
        // k's row would land after its newer change: only m's goes.
        assert_eq!(
            rows(&batch),
            [key_text(&item("m"), &["id".to_owned()]).unwrap()]
        );
        // The scan is done and every page released: nothing is remembered
        // any longer.
        assert!(t.plan.finished_ms.is_some());
        assert!(t.scanning.is_empty());
        assert_eq!(t.window.remembered(), 0);
    }

    #[test]
    fn row_numbers_grow_within_and_across_pages() {
        assert!(sequence_of(1, 999) < sequence_of(2, 0));
        assert!(sequence_of(1, 0) < sequence_of(1, 1));
        assert_eq!(sequence_of(3, 7).as_str(), "3000007");
    }
}
