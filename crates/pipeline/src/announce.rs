//! Where readers of the Parquet data find a snapshot's S0:
//! `<path>/_snapshots/<table>/<id>.json`, written when the snapshot starts
//! and again when its last row is released.
//!
//! With S0 a reader rebuilds a key's latest state exactly: the newest
//! change after S0 (a shard's change whose sequence number is above the
//! shard's S0, or any change of a shard S0 does not name), else the
//! snapshot row.

use bytes::Bytes;
use dynamo_cdc_object_store::{Location, Objects};
use dynamo_cdc_source::snapshot::Plan;

use dynamo_cdc_sink_parquet::ParquetConfig;

/// The folder, below the Parquet dataset's root.
pub(crate) const SNAPSHOTS_DIR: &str = "_snapshots";

/// What `<id>.json` holds.
#[derive(serde::Serialize)]
struct Announced<'a> {
    id: &'a str,
    table: &'a str,
    method: &'a str,
    /// Shard id -> the last sequence number before the snapshot.
    s0: &'a std::collections::BTreeMap<String, String>,
    started_ms: i64,
    finished_ms: Option<i64>,
    segments: u32,
    items: u64,
}

/// Writes the plan's file beside the Parquet data, when there is a Parquet
/// sink.
///
/// # Errors
/// When the file cannot be written.
pub(crate) fn announce(parquet: Option<&ParquetConfig>, plan: &Plan) -> anyhow::Result<()> {
    let Some(pq) = parquet else {
        return Ok(());
    };
    let body = serde_json::to_vec_pretty(&Announced {
        id: &plan.id,
        table: &plan.table,
        method: &plan.method,
        s0: &plan.s0,
        started_ms: plan.started_ms,
        finished_ms: plan.finished_ms,
        segments: plan.segments,
        items: plan.items,
    })?;
    let relative = format!("{SNAPSHOTS_DIR}/{}/{}.json", plan.table, plan.id);
    match pq.location()? {
        Location::Local(root) => {
            let path = root.join(&relative);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let temp = path.with_extension("json.tmp");
            std::fs::write(&temp, &body)?;
            std::fs::File::open(&temp)?.sync_all()?;
            std::fs::rename(&temp, &path)?;
        }
        Location::Remote { url, options } => {
            let objects = Objects::connect(&url, &options)?;
            objects.put(&objects.path(&relative), Bytes::from(body))?;
        }
    }
    tracing::info!(table = %plan.table, id = %plan.id, file = %relative, "snapshot recorded beside the Parquet data");
    Ok(())
}
