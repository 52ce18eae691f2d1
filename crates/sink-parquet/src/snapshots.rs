//! Where readers of the dataset find a snapshot's S0:
//! `<root>/_snapshots/<table>/<id>.json`, written when the snapshot starts
//! (before any of its rows) and again once every sink committed its last
//! row.
//!
//! With S0 a reader rebuilds a key's latest state exactly: the newest
//! change after S0 (a shard's change whose sequence number is above the
//! shard's S0, or any change of a shard S0 does not name), else the
//! snapshot row. The folder starts with `_`, so the dataset's scan and
//! readers globbing `<table>/*/*.parquet` pass it by.

use std::path::Path;

use bytes::Bytes;
use dynamo_cdc_core::SnapshotRecord;
use dynamo_cdc_object_store::Objects;

use crate::layout;
use crate::sink::{ParquetSinkError, io};

/// The folder, below the dataset's root.
pub(crate) const SNAPSHOTS_DIR: &str = "_snapshots";

/// The record's place below the root.
fn relative(record: &SnapshotRecord) -> String {
    format!("{SNAPSHOTS_DIR}/{}/{}.json", record.table, record.id)
}

fn body(record: &SnapshotRecord) -> Vec<u8> {
    serde_json::to_vec_pretty(record).expect("a snapshot record serializes")
}

/// Writes the record under a local root: a temp file, fsynced, renamed over
/// the record's name (a later record of the same snapshot replaces it), and
/// the folder fsynced, so the record is durable before any row after it.
pub(crate) fn record_local(root: &Path, record: &SnapshotRecord) -> Result<(), ParquetSinkError> {
    let path = root.join(relative(record));
    let dir = path.parent().expect("the record has a folder");
    layout::create_dir_durably(dir).map_err(io("cannot create", dir))?;
    let temp = path.with_extension("json.tmp");
    std::fs::write(&temp, body(record)).map_err(io("cannot write", &temp))?;
    std::fs::File::open(&temp)
        .and_then(|f| f.sync_all())
        .map_err(io("cannot sync", &temp))?;
    std::fs::rename(&temp, &path).map_err(io("cannot rename into place", &path))?;
    layout::sync_dir(dir).map_err(io("cannot fsync directory", dir))?;
    log(record);
    Ok(())
}

/// Writes the record under a bucket prefix, in one PUT (replacing an
/// earlier record of the same snapshot).
pub(crate) fn record_remote(
    objects: &Objects,
    record: &SnapshotRecord,
) -> Result<(), ParquetSinkError> {
    objects.put(&objects.path(&relative(record)), Bytes::from(body(record)))?;
    log(record);
    Ok(())
}

/// Whether a record of `record`'s snapshot is under a local root.
pub(crate) fn held_local(root: &Path, record: &SnapshotRecord) -> bool {
    root.join(relative(record)).exists()
}

/// Whether a record of `record`'s snapshot is under a bucket prefix.
pub(crate) fn held_remote(
    objects: &Objects,
    record: &SnapshotRecord,
) -> Result<bool, ParquetSinkError> {
    Ok(objects.exists(&objects.path(&relative(record)))?)
}

fn log(record: &SnapshotRecord) {
    tracing::info!(table = %record.table, id = %record.id, file = %relative(record), "snapshot recorded beside the Parquet data");
}
