//! The Iceberg sink: one changelog table per DynamoDB table, committed
//! through a catalog (SQL on sqlite or Postgres, or REST), each commit
//! carrying the positions of the changes it adds.
//!
//! - **Rows**: the same flat rows as the Parquet sink (attributes, then the
//!   `__` columns), one row per change; deletes are rows with `__op = 'd'`,
//!   never Iceberg delete files. Tables are partitioned by the UTC day of
//!   `__source_ts_ms` (`truncate(86400000)`, as milliseconds of midnight:
//!   Iceberg's `day` transform does not take a long).
//! - **Files**: written with the project's own Parquet writer under Iceberg
//!   field ids; the `iceberg` crate receives only their metadata (its Arrow
//!   version is not ours, and no Arrow value crosses over). All shards of a
//!   table share its open file per day, so a commit adds a few large files.
//!   Each file's manifest entry carries its column sizes, value and null
//!   counts, and bounds from the footer's statistics
//!   ([`metrics`](crate::metrics)), so engines skip files a filter excludes.
//! - **Exactly once**: a commit's snapshot summary holds the last sequence
//!   number of each shard it covers ([`summary`](crate::summary)); the
//!   table's position is the highest per shard over the current snapshot's
//!   ancestry, read when the table is loaded. A commit is made only on top
//!   of the snapshot the sink checked; when another writer got there first
//!   with any of the same changes, the data files are dropped and the run
//!   resumes from the table's position (a transient error).
//! - **Schema**: new attributes become new nullable fields. Numbers without
//!   a declared type are exact decimal strings (Iceberg cannot promote
//!   `long` to `string`). A field's form never changes: a column that turns
//!   into DynamoDB JSON gets a second field `<name>__json` (see
//!   [`columns`](crate::columns)).
//! - **Snapshots**: snapshot rows carry their id, read time and marker in
//!   three optional columns (null on the stream's changes); each snapshot's
//!   S0 is a table property ([`snapshots`](crate::snapshots)), set before
//!   its first row, so a reader can rebuild the table's latest state exactly.
//! - **Durability**: a local warehouse's files and directories are synced
//!   before a commit names them ([`local`](crate::local)).
//! - **Failures**: an unreachable catalog or bucket is transient (the run
//!   pauses and resumes from the last commit); a table this sink cannot
//!   continue, denied access or a missing bucket stops it.
//! - **AWS catalogs**: REST catalogs that want SigV4 (Glue, S3 Tables) are
//!   reached through a signing proxy on loopback (see
//!   [`sigv4`](crate::sigv4)).

mod catalog;
mod columns;
mod config;
mod error;
mod events;
mod file;
mod local;
mod metrics;
mod sigv4;
mod sink;
mod snapshots;
mod storage;
mod summary;

pub use config::{CatalogKind, IcebergConfig};
pub use error::IcebergSinkError;
pub use events::{COMMITS, CONFLICTS, FILES_COMMITTED, describe};
pub use sink::{IcebergSink, IcebergStats};
