//! The Parquet sink: partitioned, rolling files on a local disk or an object
//! store (S3, GCS, Azure), each made visible whole, at once.
//!
//! Layout: `<root>/<table>/date=YYYY-MM-DD/<shard>-<firstSeq>-<lastSeq>.parquet`
//! (zstd), the same on every store. The names of the committed files are
//! this sink's position: at start it reads the names back (a directory scan,
//! or a listing of the prefix), and drops every change it already holds. One
//! file per shard is open at a time, so the committed files of a shard
//! always cover a gap-free prefix of it.
//!
//! - Local disk: a file is written under a hidden temp name, fsynced,
//!   renamed into view and its directory fsynced. Temp files a crash left
//!   are swept at start.
//! - Object store: nothing is written under a temp name. The object's name
//!   holds the file's last sequence number, known only when the file is
//!   sealed, while an upload needs its name when it starts; so a file is
//!   encoded into an unnamed local temp file (in `TMPDIR`; it disappears
//!   with the process, so a crash leaves nothing to sweep) and uploaded
//!   under its final name on commit: one conditional PUT up to 8 MiB
//!   (`PutMode::Create`, `If-None-Match: *`), else a multipart upload sent
//!   a part at a time (memory: one part). An object is visible only once
//!   its PUT or multipart completion returns; an upload left incomplete by
//!   a crash is never listed. A name that already exists means another
//!   writer committed that range: the commit fails with a transient error
//!   naming the object, the run starts over and re-reads the positions;
//!   nothing is overwritten. object_store 0.14 completes multipart uploads
//!   unconditionally, so for files over 8 MiB the name is looked up (HEAD)
//!   just before completing: a writer completing the same name between that
//!   look-up and the completion is not detected (one writer per shard rules
//!   it out).
//! - At open on an object store the prefix is listed: a missing bucket or
//!   denied access stops the run (fatal, naming the bucket and the
//!   operation) before anything is read. Later failures (throttling, 5xx,
//!   network, expiring credentials) are transient: the run pauses and
//!   resumes from the last commit.
//!
//! A file is committed when it reaches `max_rows_per_file` or
//! `max_file_bytes`, when it is older than `max_file_age_ms`, when the row's
//! date or the table's schema changes, and on flush.

mod config;
mod events;
mod layout;
mod sink;

pub use events::{FILES_COMMITTED, describe};
pub use sink::{ParquetConfig, ParquetSink, ParquetSinkError, ParquetStats};
