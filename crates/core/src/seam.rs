//! The seams between sources, sinks and the pipeline that drives them.

use serde::Serialize;

use crate::change::Change;
use crate::position::{Positions, ShardKey};

/// A record that could not be delivered, kept with where it came from and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// The file the record was read from, or the stream ARN.
    pub origin: String,
    /// 1-based line in `origin`, for line-oriented captures. Every key is
    /// written, as null when unknown, so the files read as one table.
    pub line: Option<u64>,
    /// 0-based index of the record within its page, when the line held a page.
    pub record_index: Option<usize>,
    /// Table, when it could be told.
    pub table: Option<String>,
    /// Shard, when it could be told.
    pub shard: Option<String>,
    /// Sequence number, when it could be read.
    pub sequence_number: Option<String>,
    /// What was wrong.
    pub error: String,
    /// The record as it was read (possibly not JSON at all).
    pub raw: String,
}

impl DeadLetter {
    /// Identifies the record across runs, so that a rerun does not dead-letter
    /// the same record twice.
    pub fn identity(&self) -> String {
        let table = self.table.as_deref().unwrap_or("");
        match (&self.shard, &self.sequence_number) {
            (Some(shard), Some(seq)) => format!("seq:{table}/{shard}:{seq}"),
            // Without a sequence number, the place and the content tell
            // records apart (two bad documents may share a line).
            _ => format!(
                "at:{}:{}:{}:{:016x}",
                self.origin,
                self.line.unwrap_or(0),
                self.record_index
                    .map_or_else(|| "-".to_owned(), |i| i.to_string()),
                stable_hash(self.raw.as_bytes())
            ),
        }
    }
}

/// Changes that can no longer be read: a stream trimmed them (24-hour
/// retention) before they were delivered. Recorded, never silently skipped,
/// when the source is told to go on past such a gap.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Gap {
    /// Table of the stream.
    pub table: String,
    /// Shard with the lost records.
    pub shard: String,
    /// The last sequence number delivered before the gap; `None` when
    /// nothing of the shard had been delivered.
    pub after: Option<String>,
    /// The first sequence number read after the gap, when one was read.
    pub resumed_at: Option<String>,
    /// When the gap was found, in milliseconds since the Unix epoch.
    pub detected_at_ms: i64,
    /// What was found, as the service said it.
    pub reason: String,
}

impl Gap {
    /// Identifies the gap across runs, so that a restart before the position
    /// moves on does not record it twice. Where reading resumed is part of
    /// it: a pass started over from the same position after the stream
    /// trimmed more finds a wider gap, a loss of its own to record.
    pub fn identity(&self) -> String {
        format!(
            "gap:{}/{}:{}:{}",
            self.table,
            self.shard,
            self.after.as_deref().unwrap_or("start"),
            self.resumed_at.as_deref().unwrap_or("-")
        )
    }
}

/// A snapshot of a table, as its readers need it to rebuild the table's
/// latest state exactly: per key, the newest change after S0, else the
/// snapshot's row. Handed to the sinks when the snapshot starts (before any
/// of its rows) and again, with `finished_ms`, once every sink committed
/// its last row (the run loop commits every sink first); each sink records
/// it where its readers look, if it has such a place.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SnapshotRecord {
    /// The snapshot's id (the snapshot rows' `snapshot_id`).
    pub id: String,
    /// The table.
    pub table: String,
    /// `scan` or `export`.
    pub method: String,
    /// S0: shard id -> the last sequence number before the snapshot. A
    /// change is newer than the snapshot when its sequence number is above
    /// its shard's S0, or its shard is not named here.
    pub s0: std::collections::BTreeMap<String, String>,
    /// When the snapshot started, in epoch milliseconds.
    pub started_ms: i64,
    /// When its last row was handed over; `None` until then.
    pub finished_ms: Option<i64>,
    /// Scan segments (1 for an export).
    pub segments: u32,
    /// Items read so far.
    pub items: u64,
}

/// Where a change was read, kept beside it so that a sink's rejection can
/// still name the file and line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The file the record was read from, or the stream ARN.
    pub origin: std::sync::Arc<str>,
    /// 1-based line, for line-oriented captures.
    pub line: Option<u64>,
    /// 0-based index within the page.
    pub record_index: Option<usize>,
}

/// 64-bit FNV-1a: a stable hash (the same in every run, build and
/// platform), for names and identities that must not change.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What a source hands to the pipeline: changes in stream order per shard,
/// and the records it could not read.
#[derive(Debug, Default)]
pub struct SourceBatch {
    /// Changes, in order within each shard.
    pub changes: Vec<Change>,
    /// Where each change was read (same length and order as `changes`).
    pub origins: Vec<Origin>,
    /// Records that could not be parsed.
    pub dead_letters: Vec<DeadLetter>,
    /// Ranges the source skipped because they were lost (see [`Gap`]); they
    /// precede `changes` of the same shard.
    pub gaps: Vec<Gap>,
    /// Per shard, a time before which every change of the shard has been
    /// handed over (in this batch or an earlier one), in epoch
    /// milliseconds. A stream source reports it when asked to, so that a
    /// snapshot can tell when the stream has caught up with a scan page.
    pub read_through: Vec<(ShardKey, i64)>,
    /// Snapshots that started or finished, to be recorded before any of
    /// the batch's changes (see [`SnapshotRecord`]).
    pub snapshots: Vec<SnapshotRecord>,
    /// Closed shards a stream source read to their end (see
    /// [`ShardEnded`]).
    pub ended: Vec<ShardEnded>,
    /// Tables whose ended shards the checkpoint keeps from now on (see
    /// [`Recorded::ended`]): told once, for a table the checkpoint kept
    /// none of yet, with the shards taken for ended then.
    pub tracking: Vec<String>,
}

impl SourceBatch {
    /// True when the batch carries nothing at all (a heartbeat).
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
            && self.dead_letters.is_empty()
            && self.gaps.is_empty()
            && self.snapshots.is_empty()
            && self.ended.is_empty()
            && self.tracking.is_empty()
    }
}

/// A closed shard a stream source read to its end: every record of it was
/// handed over, the last change being `last` (`None`: none in this run,
/// beyond the position it resumed from). Once every sink holds `last`, the
/// checkpoint keeps the shard as ended ([`Recorded::ended`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardEnded {
    /// The shard.
    pub key: ShardKey,
    /// Its last change handed over in this run.
    pub last: Option<crate::SequenceNumber>,
}

/// Reads changes, batch at a time.
pub trait Source: Send {
    /// What can go wrong while reading.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The next batch, or `None` once the source is exhausted.
    ///
    /// # Errors
    /// When reading fails as a whole (I/O, lost data); bad records are not
    /// errors but dead letters in the batch.
    fn next_batch(&mut self) -> Result<Option<SourceBatch>, Self::Error>;
}

/// A change a sink could not encode or accept; it goes to the dead-letter path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// Index of the change in the batch given to [`Sink::write`].
    pub index: usize,
    /// Why it was rejected, naming the attribute where possible.
    pub error: String,
}

/// What the driver does about a failure at a seam.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// It may pass (a broker or store unreachable, a full disk, throttling):
    /// pause, then start over from the last commit, as a restart would.
    Transient,
    /// Waiting does not fix it (bad config, an incompatible schema): stop
    /// with the reason.
    Fatal,
}

/// A failure of a sink or a checkpoint store, with the [`ErrorKind`] the
/// driver branches on. It shows as the error it wraps (message and causes),
/// so wrapping adds no text to a message.
pub struct SinkError {
    kind: ErrorKind,
    source: Box<dyn std::error::Error + Send + Sync>,
}

/// A checkpoint store fails the same way a sink does.
pub type StoreError = SinkError;

impl SinkError {
    /// A failure that may pass.
    pub fn transient(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        SinkError {
            kind: ErrorKind::Transient,
            source: source.into(),
        }
    }

    /// A failure that waiting does not fix.
    pub fn fatal(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        SinkError {
            kind: ErrorKind::Fatal,
            source: source.into(),
        }
    }

    /// Whether it may pass.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The error it wraps.
    pub fn inner(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.source
    }
}

impl std::fmt::Display for SinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.source, f)
    }
}

impl std::fmt::Debug for SinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {:?}", self.kind, self.source)
    }
}

impl std::error::Error for SinkError {
    // Transparent: the wrapped error's causes are this error's causes.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.source()
    }
}

/// What a sink has done so far, for the run summary. A sink fills the
/// fields that apply to it and leaves the others at zero.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SinkStats {
    /// Rows (Parquet) or messages (Kafka, tombstones included) made durable.
    pub delivered: u64,
    /// Files committed.
    pub files: u64,
    /// Bytes of those files.
    pub bytes: u64,
    /// Tombstones among the messages.
    pub tombstones: u64,
    /// Messages sent to a dead-letter topic.
    pub dead_lettered: u64,
    /// Changes dropped because the sink already held them.
    pub already_held: u64,
    /// Temp files of an earlier crash removed at start.
    pub temp_files_swept: u64,
}

/// The key of a resume state's parts by table (see
/// [`Sink::resume_state`]).
pub const TABLE_STATES: &str = "tables";

/// Delivers changes somewhere durable and says how far it got.
///
/// The driver calls, per batch: [`Sink::record_gap`] for the batch's gaps,
/// [`Sink::record_snapshot`] for its snapshot records, [`Sink::write`], then (once the batch's dead letters are durable)
/// [`Sink::poll`], and records [`Sink::durable_positions`] and
/// [`Sink::resume_state`] in the checkpoint. A [`ErrorKind::Transient`]
/// error makes it drop the sink and open a new one from the checkpoint.
pub trait Sink: Send {
    /// The sink's id (its config key): its namespace in the checkpoint, logs
    /// and metrics.
    fn id(&self) -> &str;

    /// Takes what the checkpoint recorded for this sink: its positions and
    /// its opaque resume state (`null` when none).
    fn adopt(&mut self, positions: &Positions, state: &serde_json::Value);

    /// Gets ready to write the given tables, before anything is read (e.g.
    /// creates missing topics), so a problem stops the run before it starts.
    /// Tables that show up later are prepared on their first write.
    ///
    /// # Errors
    /// When a table cannot be written (fatal) or the destination cannot be
    /// reached (transient).
    fn prepare(&mut self, tables: &[String]) -> Result<(), SinkError> {
        let _ = tables;
        Ok(())
    }

    /// Positions that are durable in this sink. Grows only after a commit.
    fn durable_positions(&self) -> &Positions;

    /// Whether this sink reads [`Change::old_image`] of a MODIFY (a `before`
    /// in a message). When no sink does, the source leaves those images
    /// unread ([`Change::unread_old_image`]). True unless a sink says not.
    fn reads_modify_old_images(&self) -> bool {
        true
    }

    /// Whether this sink looks inside map and list values (a declared
    /// struct or list column, a JSON message). When no sink does, the
    /// source keeps each as its DynamoDB-JSON text
    /// ([`AttributeValue::Nested`](crate::AttributeValue::Nested)), which is
    /// all a column of DynamoDB JSON needs. True unless a sink says not.
    fn reads_nested_trees(&self) -> bool {
        true
    }

    /// Takes a batch. Changes this sink already holds are dropped; changes it
    /// cannot encode are returned as rejects and the rest is accepted.
    ///
    /// # Errors
    /// When the sink cannot write at all.
    fn write(&mut self, changes: &[Change]) -> Result<Vec<Rejected>, SinkError>;

    /// Records a gap durably before any change after it is written, where
    /// the sink has a place for it (the dead-letter store always keeps one).
    ///
    /// # Errors
    /// When the record cannot be made durable.
    fn record_gap(&mut self, gap: &Gap) -> Result<(), SinkError>;

    /// Records a snapshot's start or end where this sink's readers look for
    /// it (a file beside Parquet data, an Iceberg table property), before
    /// any row of the snapshot is written. The same record may come again
    /// after a restart: recording must be idempotent. Ignored by default.
    ///
    /// # Errors
    /// When the record cannot be made durable.
    fn record_snapshot(&mut self, snapshot: &SnapshotRecord) -> Result<(), SinkError> {
        let _ = snapshot;
        Ok(())
    }

    /// Makes sure a snapshot's S0 is where readers look before rows of it
    /// are written, when its record (`snapshot`, running) may not have been
    /// recorded yet: records it unless this sink already holds a record of
    /// that snapshot, which says the same S0 and must not go back from
    /// finished to running. By default, [`Sink::record_snapshot`].
    ///
    /// # Errors
    /// When the record cannot be made durable, or the sink cannot tell
    /// whether it holds one.
    fn record_snapshot_start(&mut self, snapshot: &SnapshotRecord) -> Result<(), SinkError> {
        self.record_snapshot(snapshot)
    }

    /// Commits what is due; called after every batch and heartbeat.
    ///
    /// # Errors
    /// When a commit fails.
    fn poll(&mut self) -> Result<(), SinkError>;

    /// Commits everything accepted.
    ///
    /// # Errors
    /// When a commit fails.
    fn flush(&mut self) -> Result<(), SinkError>;

    /// Opaque state recorded beside the positions (Kafka: the offsets to
    /// read back from); `null` when the positions are enough.
    ///
    /// When the tables are shared between processes, states recorded by
    /// different owners are merged by keeping what they agree on and the
    /// lowest of differing numbers: a state must stay safe under that (a
    /// lower offset only means reading back more). Except under the key
    /// [`TABLE_STATES`], an object of parts by table: each table's part is
    /// recorded with that table alone, and [`Sink::adopt`] gets the part
    /// of every table the process holds (`null` for a table none was
    /// recorded for), however many owners recorded them.
    fn resume_state(&self) -> serde_json::Value {
        serde_json::Value::Null
    }

    /// When the tables are shared between processes: the lease epoch (the
    /// fencing token) of each table this sink writes, to be recorded with
    /// what it writes (a header, file metadata) so any write can be traced
    /// to the owner that made it. Ignored by default.
    fn lease_epochs(&mut self, epochs: &std::collections::BTreeMap<String, u64>) {
        let _ = epochs;
    }

    /// Under leases: asked right before anything is handed to a destination
    /// that cannot refuse a late writer by itself (a Kafka topic appends
    /// whatever comes). The run loop checks the lease between batches, but
    /// a sink may wait long after that check (for room in flight, say),
    /// past the lease's end. Ignored by default: files and table commits
    /// are fenced by the store (create-if-absent, commit on a known
    /// snapshot).
    fn write_guard(&mut self, guard: WriteGuard) {
        let _ = guard;
    }

    /// The run's stop flag, set when a stop is asked for (a signal): a sink
    /// that waits on a destination that does not answer (brokers down) may
    /// give up its wait then, ending the pass with a transient error; the
    /// run then stops with the positions of its last commit. Ignored by
    /// default: the other sinks' waits are bounded by their requests'.
    fn stop_flag(&mut self, stop: &std::sync::Arc<std::sync::atomic::AtomicBool>) {
        let _ = stop;
    }

    /// Counts so far.
    fn stats(&self) -> SinkStats;
}

/// Whether writes may still be handed over now; `Err` names the table that
/// may no longer be written, and why.
pub type WriteGuard = std::sync::Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// What a checkpoint holds for one sink.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SinkRecord {
    /// The sink's durable positions.
    pub positions: Positions,
    /// The sink's opaque resume state (`null` when none).
    pub state: serde_json::Value,
}

/// What a checkpoint holds: per sink id, its record, and where
/// `start = "latest"` first started each table.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recorded {
    /// Sink id -> record.
    pub sinks: std::collections::BTreeMap<String, SinkRecord>,
    /// Table -> its latest start, recorded before any of its shards was
    /// read at its end.
    pub latest_starts: std::collections::BTreeMap<String, LatestStart>,
    /// Table -> the shards of its stream read to their end, with every
    /// change of them in every sink. A shard the stream no longer lists
    /// (it expired, 24 hours after it closed) is then known to have been
    /// read whole, where one not ended lost its unread records: a gap. A
    /// table not here is not tracked yet (a checkpoint of an earlier
    /// version, or a checkpoint store that keeps none). Shared: it grows
    /// with every shard a stream ever had, and is copied into a record
    /// after every batch that moves a position.
    pub ended:
        std::sync::Arc<std::collections::BTreeMap<String, std::collections::BTreeSet<String>>>,
}

/// When a first start with `start = "latest"` took a table's stream at its
/// end, and which shards were closed then. A `LATEST` iterator carries no
/// position, so until a shard's first change is committed, this is all a
/// later run has to go on: it reads such a shard from its first record and
/// leaves out what was created before `at_ms`, and it leaves the shards
/// in `closed` unread, as the first start did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LatestStart {
    /// The local clock when the stream's end was taken, in epoch
    /// milliseconds.
    pub at_ms: i64,
    /// The shards listed as closed then: they hold only older changes.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub closed: std::collections::BTreeSet<String>,
}

/// Where positions are recorded between runs: a local file by default,
/// memory in tests.
pub trait CheckpointStore: Send {
    /// What was recorded; empty when nothing was yet.
    ///
    /// # Errors
    /// When the store cannot be read (transient) or holds something that is
    /// not a checkpoint (fatal).
    fn load(&mut self) -> Result<Recorded, StoreError>;

    /// Records `recorded` durably, replacing what was there. A store may
    /// hold a record back for a moment (to write less often) as long as
    /// [`CheckpointStore::flush`] writes it.
    ///
    /// # Errors
    /// When it cannot be made durable.
    fn store(&mut self, recorded: &Recorded) -> Result<(), StoreError>;

    /// Writes whatever `store` held back; called when a run or a pass ends
    /// the graceful way.
    ///
    /// # Errors
    /// When it cannot be made durable.
    fn flush(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Writes what `store` held back once it may write again. The run loop
    /// calls it after batches that moved no position, so that a record held
    /// back just before the stream went quiet is written within moments,
    /// not at the next change, hours later.
    ///
    /// # Errors
    /// When it cannot be made durable.
    fn write_due(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Where the store is, for messages.
    fn describe(&self) -> String;
}

/// A [`CheckpointStore`] in memory, for tests that need no disk. Clones
/// share one record, so a test can keep a handle and look.
#[derive(Clone, Debug, Default)]
pub struct MemoryCheckpoints {
    recorded: std::sync::Arc<std::sync::Mutex<Recorded>>,
    stores: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl MemoryCheckpoints {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// What is recorded now.
    pub fn recorded(&self) -> Recorded {
        self.recorded.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// How many times [`CheckpointStore::store`] was called.
    pub fn stores(&self) -> u64 {
        self.stores.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl CheckpointStore for MemoryCheckpoints {
    fn load(&mut self) -> Result<Recorded, StoreError> {
        Ok(self.recorded())
    }

    fn store(&mut self, recorded: &Recorded) -> Result<(), StoreError> {
        self.stores
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut r = self
            .recorded
            .lock()
            .map_err(|_| SinkError::fatal("the in-memory checkpoint was poisoned"))?;
        *r = recorded.clone();
        Ok(())
    }

    fn describe(&self) -> String {
        "memory".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(table: &str, seq: Option<&str>, raw: &str) -> DeadLetter {
        DeadLetter {
            origin: "cap/s1.jsonl".into(),
            line: Some(3),
            record_index: None,
            table: Some(table.into()),
            shard: Some("s1".into()),
            sequence_number: seq.map(str::to_owned),
            error: "bad".into(),
            raw: raw.into(),
        }
    }

    #[test]
    fn a_sink_error_shows_as_what_it_wraps() {
        let io = std::io::Error::other("disk full");
        let e = SinkError::transient(io);
        assert_eq!(e.kind(), ErrorKind::Transient);
        assert_eq!(e.to_string(), "disk full");
        assert_eq!(SinkError::fatal("bad schema").kind(), ErrorKind::Fatal);
    }

    #[test]
    fn identities_tell_tables_and_documents_apart() {
        assert_ne!(
            letter("orders", Some("100"), "x").identity(),
            letter("users", Some("100"), "x").identity()
        );
        assert_ne!(
            letter("t", None, "{bad1}").identity(),
            letter("t", None, "{bad2}").identity()
        );
        assert_eq!(
            letter("t", None, "{bad1}").identity(),
            letter("t", None, "{bad1}").identity()
        );
    }
}
