//! The Parquet sink: partitioned, rolling files, each made visible by an
//! atomic rename after fsync.
//!
//! Layout: `<root>/<table>/date=YYYY-MM-DD/<shard>-<firstSeq>-<lastSeq>.parquet`
//! (zstd). The names of the committed files are this sink's position: at
//! start it sweeps leftover temp files, reads the names back, and drops every
//! change it already holds. One file per shard is open at a time, so the
//! committed files of a shard always cover a gap-free prefix of it.
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
