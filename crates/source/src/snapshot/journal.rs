//! What a snapshot keeps between runs: its plan (id, S0, each segment's
//! progress) and the pages it released that not every sink has committed
//! yet. The files are in a [`JournalFiles`]: a local directory beside the
//! checkpoint by default ([`LocalJournalFiles`]), or a place every process
//! sharing the tables sees, so a snapshot survives a change of owner.
//!
//! Layout, below the journal's root:
//! - `<table>/plan.json`: the table's newest snapshot;
//! - `<table>/<id>/seg-<segment>-<page>.json`: a released page.
//!
//! A page is written (and synced) before its rows reach any sink, and the
//! plan records it right after. After a crash the pages past the sinks'
//! positions are handed over again exactly as they were (same rows, same
//! positions), so every sink drops what it already holds and gets what it
//! lacks, and the scan resumes after the newest released page: a finished
//! segment is never scanned again. A page every sink has committed is
//! deleted.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dynamo_cdc_core::{Item, SnapshotRecord, parse_item};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A snapshot's plan, as `plan.json` holds it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    /// The snapshot's id.
    pub id: String,
    /// The table.
    pub table: String,
    /// `scan` or `export`.
    pub method: String,
    /// Scan segments (1 for an export).
    pub segments: u32,
    /// The table's key attributes.
    pub key_names: Vec<String>,
    /// S0: per shard, the last sequence number before the snapshot
    /// started. The stream is read after it.
    pub s0: BTreeMap<String, String>,
    /// When the snapshot started (epoch milliseconds).
    pub started_ms: i64,
    /// When its last row was released.
    pub finished_ms: Option<i64>,
    /// Whether the `first` row was released.
    pub first_released: bool,
    /// Per segment.
    pub progress: Vec<SegmentProgress>,
    /// Items released so far (rows kept plus rows dropped for the stream).
    pub items: u64,
    /// Bytes of item JSON read so far.
    pub bytes: u64,
    /// Capacity units consumed so far.
    pub consumed: f64,
    /// The export's ARN, once requested.
    #[serde(default)]
    pub export_arn: Option<String>,
    /// The bucket the export was written to, once it completed.
    #[serde(default)]
    pub export_bucket: Option<String>,
    /// The export's data files, once it completed.
    #[serde(default)]
    pub export_files: Option<Vec<crate::snapshot::export::ExportFile>>,
}

impl Plan {
    /// What readers of the sinks need to know of the plan.
    pub fn record(&self) -> SnapshotRecord {
        SnapshotRecord {
            id: self.id.clone(),
            table: self.table.clone(),
            method: self.method.clone(),
            s0: self.s0.clone(),
            started_ms: self.started_ms,
            finished_ms: self.finished_ms,
            segments: self.segments,
            items: self.items,
        }
    }

    /// A plan nothing of which was read yet.
    pub fn new(
        id: String,
        table: &str,
        method: &str,
        segments: u32,
        key_names: Vec<String>,
        s0: BTreeMap<String, String>,
        started_ms: i64,
    ) -> Plan {
        Plan {
            id,
            table: table.to_owned(),
            method: method.to_owned(),
            segments,
            key_names,
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
        }
    }

    /// True once every segment is done.
    pub fn all_done(&self) -> bool {
        self.progress.iter().all(|s| s.done)
    }

    /// Segments done.
    pub fn segments_done(&self) -> usize {
        self.progress.iter().filter(|s| s.done).count()
    }

    /// The pseudo shard id under which the sinks keep the position of a
    /// segment's rows.
    pub fn shard_of(&self, segment: u32) -> String {
        shard_of(&self.id, segment)
    }
}

/// Whether `shard` names a snapshot's segment (see [`shard_of`]) rather
/// than a shard of a stream.
pub fn is_snapshot_shard(shard: &str) -> bool {
    shard.starts_with("snapshot-")
}

/// `snapshot-<id>-<segment>`: the shard id of a segment's rows.
pub fn shard_of(id: &str, segment: u32) -> String {
    format!("snapshot-{id}-{segment:04}")
}

/// One segment's progress.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SegmentProgress {
    /// Pages released (the next page's number is this plus one).
    pub pages: u64,
    /// Where the next page starts, as DynamoDB JSON; `None` at the start
    /// or once done.
    pub next_key: Option<Box<RawValue>>,
    /// Read to its end.
    pub done: bool,
}

/// A released page, as its file holds it.
#[derive(Debug, Serialize, Deserialize)]
pub struct SpooledPage {
    /// Segment.
    pub segment: u32,
    /// Page number within the segment, from 1.
    pub page: u64,
    /// When the Scan call was made (epoch milliseconds).
    pub asked_ms: i64,
    /// When it was answered.
    pub answered_ms: i64,
    /// `LastEvaluatedKey` of the page; `None` on the segment's last page.
    pub last_key: Option<Box<RawValue>>,
    /// The rows kept, in scan order.
    pub rows: Vec<SpooledRow>,
    /// Items that could not be read: JSON and reason.
    pub unreadable: Vec<(String, String)>,
}

/// One row of a released page.
#[derive(Debug, Serialize, Deserialize)]
pub struct SpooledRow {
    /// The row's place in its page, which its sequence number is made of
    /// (rows dropped on a replay leave their places empty).
    #[serde(default)]
    pub index: Option<u64>,
    /// When the item was read.
    pub read_ms: i64,
    /// `first`, `true` or `last`.
    pub marker: String,
    /// The item, DynamoDB JSON.
    pub item: Box<RawValue>,
}

impl SpooledRow {
    /// The row's item.
    ///
    /// # Errors
    /// When the file was altered.
    pub fn item(&self) -> Result<Item, serde_json::Error> {
        parse_item(self.item.get(), "item")
    }
}

/// An item as stored JSON.
pub fn raw_item(item: &Item) -> Box<RawValue> {
    serde_json::value::to_raw_value(item).expect("an item always serializes")
}

/// Where a journal's files are kept. Paths are `/`-separated and relative
/// to the journal's root.
pub trait JournalFiles: Send + Sync + std::fmt::Debug {
    /// A file's bytes; `None` when there is no such file.
    ///
    /// # Errors
    /// When it cannot be read.
    fn read(&self, path: &str) -> std::io::Result<Option<Vec<u8>>>;
    /// Writes a file so that a crash leaves the old one or the new one,
    /// never a part: durable when this returns.
    ///
    /// # Errors
    /// When it cannot be made durable.
    fn write(&self, path: &str, bytes: &[u8]) -> std::io::Result<()>;
    /// The names of the files directly in `dir` (none when it is missing).
    ///
    /// # Errors
    /// When it cannot be listed.
    fn list(&self, dir: &str) -> std::io::Result<Vec<String>>;
    /// Removes a file; one that is not there is fine.
    ///
    /// # Errors
    /// When it cannot be removed.
    fn remove(&self, path: &str) -> std::io::Result<()>;
    /// Where `path` is, for messages.
    fn describe(&self, path: &str) -> String;
}

/// Journal files in a local directory: written to a synced temp file,
/// renamed over the old one, the directory synced.
#[derive(Debug, Clone)]
pub struct LocalJournalFiles {
    root: PathBuf,
}

impl LocalJournalFiles {
    /// Files below `root` (created on first write).
    pub fn at(root: &Path) -> Arc<dyn JournalFiles> {
        Arc::new(LocalJournalFiles {
            root: root.to_owned(),
        })
    }

    fn path(&self, path: &str) -> PathBuf {
        path.split('/')
            .fold(self.root.clone(), |p, part| p.join(part))
    }
}

impl JournalFiles for LocalJournalFiles {
    fn read(&self, path: &str) -> std::io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.path(path)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn write(&self, path: &str, bytes: &[u8]) -> std::io::Result<()> {
        let path = self.path(path);
        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        std::fs::create_dir_all(dir)?;
        let temp = path.with_extension("json.tmp");
        let mut f = File::create(&temp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&temp, &path)?;
        File::open(dir).and_then(|d| d.sync_all())
    }

    fn list(&self, dir: &str) -> std::io::Result<Vec<String>> {
        let entries = match std::fs::read_dir(self.path(dir)) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut names = Vec::new();
        for entry in entries {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }

    fn remove(&self, path: &str) -> std::io::Result<()> {
        match std::fs::remove_file(self.path(path)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn describe(&self, path: &str) -> String {
        self.path(path).display().to_string()
    }
}

/// The journal of one table's snapshots.
#[derive(Clone, Debug)]
pub struct Journal {
    files: Arc<dyn JournalFiles>,
    table: String,
}

/// A journal file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("snapshot journal {path}: {what}")]
pub struct JournalError {
    path: String,
    what: String,
    passing: bool,
}

impl JournalError {
    /// True when waiting may help: the disk or store timed out, was busy or
    /// full, or the connection broke (an outage, throttling), not a file
    /// that cannot be read as a journal or access denied.
    pub fn is_transient(&self) -> bool {
        self.passing
    }
}

/// Whether an I/O failure of the journal's files may pass by waiting.
fn passes(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::TimedOut
            | K::Interrupted
            | K::WouldBlock
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::ConnectionRefused
            | K::NotConnected
            | K::BrokenPipe
            | K::StorageFull
            | K::ResourceBusy
    )
}

impl Journal {
    /// The journal of `table` in `files`.
    pub fn of(files: &Arc<dyn JournalFiles>, table: &str) -> Journal {
        Journal {
            files: files.clone(),
            table: table.to_owned(),
        }
    }

    fn failed(&self, path: &str, what: impl std::fmt::Display) -> JournalError {
        JournalError {
            path: self.files.describe(path),
            what: what.to_string(),
            passing: false,
        }
    }

    /// A failure of the journal's files (classified; see [`passes`]).
    fn io_failed(&self, path: &str, e: &std::io::Error) -> JournalError {
        JournalError {
            passing: passes(e),
            ..self.failed(path, e)
        }
    }

    fn plan_path(&self) -> String {
        format!("{}/plan.json", self.table)
    }

    fn pages_dir(&self, id: &str) -> String {
        format!("{}/{id}", self.table)
    }

    fn page_path(&self, id: &str, segment: u32, page: u64) -> String {
        format!("{}/seg-{segment:04}-{page:012}.json", self.pages_dir(id))
    }

    /// The table's newest plan, with pages written after the plan's last
    /// save (a crash in between) taken into it; `None` when the table was
    /// never snapshotted.
    ///
    /// # Errors
    /// When the files cannot be read or are not a journal's.
    pub fn load(&self) -> Result<Option<Plan>, JournalError> {
        let path = self.plan_path();
        let Some(text) = self
            .files
            .read(&path)
            .map_err(|e| self.io_failed(&path, &e))?
        else {
            return Ok(None);
        };
        let mut plan: Plan = serde_json::from_slice(&text).map_err(|e| self.failed(&path, e))?;
        let mut adopted = false;
        for page in self.pages(&plan.id)? {
            // The `first` row went out with a page the plan never recorded.
            if !plan.first_released && page.rows.iter().any(|r| r.marker == "first") {
                plan.first_released = true;
                adopted = true;
            }
            let Some(progress) = plan.progress.get_mut(page.segment as usize) else {
                continue;
            };
            if page.page > progress.pages {
                progress.pages = page.page;
                progress.done = page.last_key.is_none();
                progress.next_key = page.last_key;
                adopted = true;
            }
        }
        if adopted {
            // Recorded now: once every sink holds the page, its file goes,
            // and the plan must not forget the page was released.
            self.save(&plan)?;
        }
        Ok(Some(plan))
    }

    /// Records the plan.
    ///
    /// # Errors
    /// When it cannot be made durable.
    pub fn save(&self, plan: &Plan) -> Result<(), JournalError> {
        let path = self.plan_path();
        let text = serde_json::to_vec_pretty(plan).map_err(|e| self.failed(&path, e))?;
        self.files
            .write(&path, &text)
            .map_err(|e| self.io_failed(&path, &e))
    }

    /// Records a released page, before its rows go anywhere.
    ///
    /// # Errors
    /// When it cannot be made durable.
    pub fn write_page(&self, id: &str, page: &SpooledPage) -> Result<(), JournalError> {
        let path = self.page_path(id, page.segment, page.page);
        let text = serde_json::to_vec(page).map_err(|e| self.failed(&path, e))?;
        self.files
            .write(&path, &text)
            .map_err(|e| self.io_failed(&path, &e))
    }

    /// The released pages still kept, by segment and page.
    ///
    /// # Errors
    /// When a page file cannot be read.
    pub fn pages(&self, id: &str) -> Result<Vec<SpooledPage>, JournalError> {
        let dir = self.pages_dir(id);
        let names = self
            .files
            .list(&dir)
            .map_err(|e| self.io_failed(&dir, &e))?;
        let mut pages = Vec::new();
        for name in names {
            if !(name.starts_with("seg-") && name.ends_with(".json")) {
                continue;
            }
            let path = format!("{dir}/{name}");
            // Removed since it was listed: committed by every sink.
            let Some(bytes) = self
                .files
                .read(&path)
                .map_err(|e| self.io_failed(&path, &e))?
            else {
                continue;
            };
            let page: SpooledPage =
                serde_json::from_slice(&bytes).map_err(|e| self.failed(&path, e))?;
            pages.push(page);
        }
        pages.sort_by_key(|p| (p.segment, p.page));
        Ok(pages)
    }

    /// Deletes a page every sink has committed.
    ///
    /// # Errors
    /// When it cannot be removed.
    pub fn remove_page(&self, id: &str, segment: u32, page: u64) -> Result<(), JournalError> {
        let path = self.page_path(id, segment, page);
        self.files
            .remove(&path)
            .map_err(|e| self.io_failed(&path, &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Files whose every call fails with `kind`.
    #[derive(Debug)]
    struct Failing(std::io::ErrorKind);

    impl JournalFiles for Failing {
        fn read(&self, _: &str) -> std::io::Result<Option<Vec<u8>>> {
            Err(self.0.into())
        }
        fn write(&self, _: &str, _: &[u8]) -> std::io::Result<()> {
            Err(self.0.into())
        }
        fn list(&self, _: &str) -> std::io::Result<Vec<String>> {
            Err(self.0.into())
        }
        fn remove(&self, _: &str) -> std::io::Result<()> {
            Err(self.0.into())
        }
        fn describe(&self, path: &str) -> String {
            path.to_owned()
        }
    }

    #[test]
    fn a_store_that_timed_out_passes_and_one_that_denies_does_not() {
        use std::io::ErrorKind as K;
        for (kind, passing) in [
            (K::TimedOut, true),
            (K::StorageFull, true),
            (K::PermissionDenied, false),
            (K::Other, false),
        ] {
            let files: Arc<dyn JournalFiles> = Arc::new(Failing(kind));
            let journal = Journal::of(&files, "orders");
            let e = journal.remove_page("id", 0, 1).unwrap_err();
            assert_eq!(e.is_transient(), passing, "{kind:?}: {e}");
            assert_eq!(journal.save(&plan()).unwrap_err().is_transient(), passing);
            assert_eq!(journal.load().unwrap_err().is_transient(), passing);
        }
    }

    fn plan() -> Plan {
        Plan::new(
            "20261202T010000000Z".into(),
            "orders",
            "scan",
            2,
            vec!["pk".into()],
            BTreeMap::from([("shardId-1".into(), "100".into())]),
            1,
        )
    }

    fn page(segment: u32, page: u64, last: Option<&str>) -> SpooledPage {
        SpooledPage {
            segment,
            page,
            asked_ms: 1,
            answered_ms: 2,
            last_key: last.map(|k| RawValue::from_string(k.to_owned()).unwrap()),
            rows: vec![SpooledRow {
                index: Some(0),
                read_ms: 5,
                marker: "true".into(),
                item: RawValue::from_string(r#"{"pk":{"S":"a"}}"#.into()).unwrap(),
            }],
            unreadable: Vec::new(),
        }
    }

    #[test]
    fn a_page_written_after_the_last_plan_save_moves_the_segment_on() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::of(&LocalJournalFiles::at(dir.path()), "orders");
        assert!(j.load().unwrap().is_none());
        let p = plan();
        j.save(&p).unwrap();
        j.write_page(&p.id, &page(1, 1, Some(r#"{"pk":{"S":"a"}}"#)))
            .unwrap();
        j.write_page(&p.id, &page(0, 1, None)).unwrap();
        // The crash came before the plan recorded the pages.
        let loaded = j.load().unwrap().unwrap();
        assert!(loaded.progress[0].done);
        assert_eq!(loaded.progress[1].pages, 1);
        assert!(!loaded.progress[1].done);
        assert_eq!(
            loaded.progress[1].next_key.as_ref().unwrap().get(),
            r#"{"pk":{"S":"a"}}"#
        );
        let pages = j.pages(&p.id).unwrap();
        assert_eq!(pages.len(), 2);
        assert_eq!(pages[0].rows[0].item().unwrap().len(), 1);
        j.remove_page(&p.id, 0, 1).unwrap();
        j.remove_page(&p.id, 0, 1).unwrap();
        assert_eq!(j.pages(&p.id).unwrap().len(), 1);
        // A `first` row in a page the plan did not record is remembered.
        let mut first = page(0, 2, None);
        first.rows[0].marker = "first".into();
        j.write_page(&p.id, &first).unwrap();
        assert!(j.load().unwrap().unwrap().first_released);
        // Loading recorded them: the pages may go, the progress stays.
        std::fs::remove_dir_all(dir.path().join("orders").join(&p.id)).unwrap();
        let reloaded = j.load().unwrap().unwrap();
        assert_eq!(reloaded.progress[1].pages, 1);
        assert!(reloaded.progress[0].done);
    }
}
