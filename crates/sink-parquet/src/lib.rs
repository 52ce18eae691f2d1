//! The Parquet sink: partitioned, rolling files on a local disk or an object
//! store (S3, GCS, Azure), each made visible whole, at once.
//!
//! Layout: `<root>/<table>/date=YYYY-MM-DD/<shard>_<firstSeq>.parquet`
//! (zstd), the same on every store. A file is named after the first
//! sequence number written after the shard's previous position; its last
//! sequence number is in its footer (key-value metadata
//! `dynamo_cdc.first_sequence_number` and `dynamo_cdc.last_sequence_number`).
//! Files named `<shard>-<firstSeq>-<lastSeq>.parquet` by earlier versions are
//! still read. The committed files are this sink's position: at start it
//! lists them (a directory scan, or a listing of the prefix), takes the last
//! sequence number of each shard from the newest file (its footer, or an
//! old name), and drops every change it already holds. One file per shard is
//! open at a time, so the committed files of a shard always cover a gap-free
//! prefix of it.
//!
//! A commit creates its name only if absent. Since the name depends on the
//! previous position only, a process paused past its lease that wakes up and
//! commits late collides with the file of the process that took the shard
//! over, instead of landing beside it with an overlapping range. The commit
//! then fails with [`ParquetSinkError::Collision`] (transient: the run starts
//! over from the committed positions, which include the other file), the
//! shard's open and sealed files are dropped, and
//! `dynamo_cdc_fence_collisions_total{sink}` counts it.
//!
//! - Local disk: a file is written under a hidden temp name unique to its
//!   writer (created exclusively), fsynced, hard-linked under its final
//!   name (which fails if the name exists, where a rename would replace
//!   it), its temp name removed and its directory fsynced. At start, temp
//!   files are swept: all of them when the sink is alone on the dataset
//!   ([`ParquetConfig::exclusive`], the default); when processes share it,
//!   only those a committed file already covers. A sink dropped before
//!   committing removes its own.
//! - Object store: nothing is written under a temp name. A file is encoded
//!   into an unnamed local temp file (in `TMPDIR`; it disappears with the
//!   process, so a crash leaves nothing to sweep) and uploaded under its
//!   final name on commit: one conditional PUT up to 8 MiB
//!   (`PutMode::Create`, `If-None-Match: *`), else a multipart upload sent
//!   a part at a time (memory: one part). An object is visible only once
//!   its PUT or multipart completion returns; an upload left incomplete by
//!   a crash is never listed. object_store 0.14 completes multipart uploads
//!   unconditionally, so for files over 8 MiB the name is looked up (HEAD)
//!   just before completing: a writer completing the same name between that
//!   look-up and the completion is not detected.
//! - At open on an object store the prefix is listed: a missing bucket or
//!   denied access stops the run (fatal, naming the bucket and the
//!   operation) before anything is read. Later failures (throttling, 5xx,
//!   network, expiring credentials) are transient: the run pauses and
//!   resumes from the last commit.
//!
//! Each snapshot's S0, which readers need to rebuild a table's latest state
//! exactly, is written beside the data as `<root>/_snapshots/<table>/<id>.json`
//! before any of its rows (see [`Sink::record_snapshot`](dynamo_cdc_core::Sink::record_snapshot)).
//!
//! A file is committed when it reaches `max_rows_per_file` or
//! `max_file_bytes`, when it is older than `max_file_age_ms`, when the row's
//! date or the table's schema changes, and on flush.

mod config;
mod events;
mod layout;
mod sink;
mod snapshots;
mod statistics;

pub use events::{FENCE_COLLISIONS, FILES_COMMITTED, describe};
pub use layout::LEASE_EPOCH_KEY;
pub use sink::{ParquetConfig, ParquetSink, ParquetSinkError, ParquetStats};
