//! The local checkpoint file, the default [`CheckpointStore`]: each sink's
//! durable position per shard and its opaque resume state, written
//! atomically (temp file, fsync, rename, fsync of the directory).
//!
//! With a Kafka sink positions move with nearly every batch, and each write
//! is two `fsync`s: a record is written at most once per
//! [`CHECKPOINT_WRITE_INTERVAL`] (a [`WritePace`]; the first at once), and
//! what is held back when the run ends. The file holds hints, as the lease table does under
//! `[coordination]`: each sink's own storage is the truth (Parquet's
//! committed files, what a Kafka topic holds past the recorded offsets), so
//! a crash that loses the newest second of hints only means reading a
//! little more back.
//!
//! ```json
//! {"version": 2,
//!  "sinks": {
//!    "parquet": {"positions": {"orders": {"shard-1": "1000042"}}},
//!    "kafka": {"positions": {"orders": {"shard-1": "1000040"}},
//!              "state": {"offsets": {"cdc.orders": {"0": 1234}}}}},
//!  "latest_starts": {"orders": {"at_ms": 1764000000000, "closed": ["shard-0"]}},
//!  "ended": {"orders": ["shard-0"]}}
//! ```
//!
//! `latest_starts` is there only with `start = "latest"`: see
//! [`LatestStart`]. `ended` holds, per table of a stream, the shards read
//! to their end with every change in every sink: see
//! [`Recorded::ended`](dynamo_cdc_core::Recorded::ended).
//!
//! Version 1 files (positions directly under each sink, and the Kafka sink's
//! offsets in a top-level `kafka_offsets`) still load: their offsets become
//! the `kafka` sink's state.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

#[cfg(doc)]
use dynamo_cdc_core::CHECKPOINT_WRITE_INTERVAL;
use dynamo_cdc_core::{
    CheckpointStore, LatestStart, Positions, Recorded, SequenceNumber, ShardKey, SinkRecord,
    StoreError, WritePace,
};
use serde::{Deserialize, Serialize};

/// table -> shard -> sequence number
type PositionTree = BTreeMap<String, BTreeMap<String, String>>;

#[derive(Serialize, Deserialize, PartialEq)]
struct SinkEntry {
    positions: PositionTree,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    state: serde_json::Value,
}

#[derive(Serialize, Deserialize, PartialEq)]
struct FileV2 {
    version: u32,
    sinks: BTreeMap<String, SinkEntry>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    latest_starts: BTreeMap<String, LatestStart>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    ended: BTreeMap<String, std::collections::BTreeSet<String>>,
}

#[derive(Deserialize)]
struct FileV1 {
    sinks: BTreeMap<String, PositionTree>,
    #[serde(default)]
    kafka_offsets: serde_json::Value,
}

#[derive(Deserialize)]
struct VersionOnly {
    version: u32,
}

/// A checkpoint problem, naming the file.
#[derive(Debug, thiserror::Error)]
enum CheckpointError {
    #[error("cannot {action} checkpoint {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("checkpoint {path} is not a dynamo-cdc checkpoint: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("checkpoint {path}: {reason}")]
    LockLost { path: PathBuf, reason: String },
}

/// The checkpoint file.
pub struct FileCheckpoints {
    path: PathBuf,
    /// When to write and what is held back.
    pace: WritePace,
    /// The process's lock on the checkpoint, asked before every write.
    lock: Option<std::sync::Arc<crate::checkpoint_lock::CheckpointLock>>,
}

impl FileCheckpoints {
    /// A store at `path` (created on first write).
    pub fn new(path: &Path) -> Self {
        FileCheckpoints {
            path: path.to_owned(),
            pace: WritePace::default(),
            lock: None,
        }
    }

    /// Writes only while `lock` is still the lock file at its path.
    pub(crate) fn held_by(
        mut self,
        lock: std::sync::Arc<crate::checkpoint_lock::CheckpointLock>,
    ) -> Self {
        self.lock = Some(lock);
        self
    }

    fn invalid_lock(&self, reason: String) -> StoreError {
        StoreError::fatal(CheckpointError::LockLost {
            path: self.path.clone(),
            reason,
        })
    }

    fn invalid(&self, reason: impl std::fmt::Display) -> StoreError {
        StoreError::fatal(CheckpointError::Invalid {
            path: self.path.clone(),
            reason: reason.to_string(),
        })
    }

    fn io(&self, action: &'static str) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
        move |source| {
            StoreError::transient(CheckpointError::Io {
                action,
                path: self.path.clone(),
                source,
            })
        }
    }

    fn positions(&self, sink: &str, tree: PositionTree) -> Result<Positions, StoreError> {
        let mut positions = Positions::new();
        for (table, shards) in tree {
            for (shard, seq) in shards {
                let seq = SequenceNumber::parse(&seq)
                    .map_err(|e| self.invalid(format!("sink {sink}, {table}/{shard}: {e}")))?;
                positions.advance(ShardKey::new(table.as_str(), shard), seq);
            }
        }
        Ok(positions)
    }
}

fn tree(positions: &Positions) -> PositionTree {
    let mut tree = PositionTree::new();
    for (key, seq) in positions.iter() {
        tree.entry(key.table.to_string())
            .or_default()
            .insert(key.shard.to_string(), seq.to_string());
    }
    tree
}

impl CheckpointStore for FileCheckpoints {
    fn load(&mut self) -> Result<Recorded, StoreError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Recorded::default()),
            Err(e) => return Err(self.io("read")(e)),
        };
        let version: VersionOnly = serde_json::from_str(&text).map_err(|e| self.invalid(e))?;
        let mut recorded = Recorded::default();
        match version.version {
            1 => {
                let file: FileV1 = serde_json::from_str(&text).map_err(|e| self.invalid(e))?;
                for (sink, positions) in file.sinks {
                    let positions = self.positions(&sink, positions)?;
                    let state = if sink == "kafka" && !file.kafka_offsets.is_null() {
                        serde_json::json!({ "offsets": file.kafka_offsets })
                    } else {
                        serde_json::Value::Null
                    };
                    recorded.sinks.insert(sink, SinkRecord { positions, state });
                }
            }
            2 => {
                let file: FileV2 = serde_json::from_str(&text).map_err(|e| self.invalid(e))?;
                for (sink, entry) in file.sinks {
                    let positions = self.positions(&sink, entry.positions)?;
                    recorded.sinks.insert(
                        sink,
                        SinkRecord {
                            positions,
                            state: entry.state,
                        },
                    );
                }
                recorded.latest_starts = file.latest_starts;
                recorded.ended = file.ended.into();
            }
            v => {
                return Err(self.invalid(format!(
                    "version {v} is newer than this dynamo-cdc understands (1 or 2)"
                )));
            }
        }
        Ok(recorded)
    }

    fn store(&mut self, recorded: &Recorded) -> Result<(), StoreError> {
        if self.pace.hold(recorded) {
            return Ok(());
        }
        self.write(recorded)
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        match self.pace.take_held() {
            Some(recorded) => self.write(&recorded),
            None => Ok(()),
        }
    }

    fn write_due(&mut self) -> Result<(), StoreError> {
        match self.pace.take_due() {
            Some(recorded) => self.write(&recorded),
            None => Ok(()),
        }
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

impl FileCheckpoints {
    /// Writes `recorded` now; on failure it stays held, for the next
    /// store or the flush.
    fn write(&mut self, recorded: &Recorded) -> Result<(), StoreError> {
        if let Some(lock) = &self.lock {
            lock.still_held()
                .map_err(|reason| self.invalid_lock(reason))?;
        }
        let file = FileV2 {
            version: 2,
            sinks: recorded
                .sinks
                .iter()
                .map(|(id, r)| {
                    let entry = SinkEntry {
                        positions: tree(&r.positions),
                        state: r.state.clone(),
                    };
                    (id.clone(), entry)
                })
                .collect(),
            latest_starts: recorded.latest_starts.clone(),
            ended: (*recorded.ended).clone(),
        };
        let text = serde_json::to_string_pretty(&file).map_err(|e| self.invalid(e))?;
        if let Err(e) = write_atomically(&self.path, text.as_bytes()) {
            self.pace.keep(recorded.clone());
            return Err(self.io("write")(e));
        }
        self.pace.written();
        Ok(())
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    dynamo_cdc_core::durable::create_dir_durably(&dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.tmp"));
    let mut f = File::create(&temp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&temp, path)?;
    dynamo_cdc_core::durable::sync_dir(&dir)
}

#[cfg(test)]
mod tests {
    use dynamo_cdc_core::ErrorKind;

    use super::*;

    fn positions(seq: &str) -> Positions {
        [(
            ShardKey::new("orders", "s-1"),
            SequenceNumber::parse(seq).unwrap(),
        )]
        .into_iter()
        .collect()
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/checkpoint.json");
        let mut store = FileCheckpoints::new(&path);
        assert!(store.load().unwrap().sinks.is_empty());
        let mut recorded = Recorded::default();
        recorded.sinks.insert(
            "parquet".into(),
            SinkRecord {
                positions: positions("123"),
                state: serde_json::Value::Null,
            },
        );
        recorded.sinks.insert(
            "kafka".into(),
            SinkRecord {
                positions: positions("120"),
                state: serde_json::json!({"offsets": {"cdc.orders": {"2": 17}}}),
            },
        );
        recorded.latest_starts.insert(
            "orders".into(),
            LatestStart {
                at_ms: 1_764_000_000_123,
                closed: ["shard-0".to_owned()].into(),
            },
        );
        recorded
            .latest_starts
            .insert("customers".into(), LatestStart::default());
        // A table tracked with no shard ended yet stays tracked.
        let ended = std::sync::Arc::make_mut(&mut recorded.ended);
        ended.insert("orders".into(), ["s-0".to_owned()].into());
        ended.insert("customers".into(), std::collections::BTreeSet::new());
        store.store(&recorded).unwrap();
        assert_eq!(FileCheckpoints::new(&path).load().unwrap(), recorded);
        assert!(!dir.path().join("sub/.checkpoint.json.tmp").exists());
    }

    fn parquet_at(seq: &str) -> Recorded {
        let mut recorded = Recorded::default();
        recorded.sinks.insert(
            "parquet".into(),
            SinkRecord {
                positions: positions(seq),
                state: serde_json::Value::Null,
            },
        );
        recorded
    }

    #[test]
    fn the_first_record_is_written_at_once_the_next_within_a_second_at_the_flush() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.json");
        let on_disk = || FileCheckpoints::new(&path).load().unwrap();
        let mut store = FileCheckpoints::new(&path);
        store.store(&parquet_at("1")).unwrap();
        assert_eq!(on_disk(), parquet_at("1"), "the first record at once");
        store.store(&parquet_at("2")).unwrap();
        store.store(&parquet_at("3")).unwrap();
        assert_eq!(on_disk(), parquet_at("1"), "held back");
        store.flush().unwrap();
        assert_eq!(on_disk(), parquet_at("3"), "the newest, at the flush");
        store.flush().unwrap();
        assert_eq!(on_disk(), parquet_at("3"), "nothing held, nothing written");
        // Once the interval has passed, the next record is written as it comes.
        store.pace = WritePace::new(std::time::Duration::ZERO);
        store.pace.written();
        store.store(&parquet_at("4")).unwrap();
        assert_eq!(on_disk(), parquet_at("4"));
        // A record held back is written once due, with no store after it
        // (the stream went quiet): not only at the flush.
        let mut quiet = FileCheckpoints::new(&path);
        quiet.pace = WritePace::new(std::time::Duration::from_secs(3600));
        quiet.store(&parquet_at("5")).unwrap();
        quiet.store(&parquet_at("6")).unwrap();
        quiet.write_due().unwrap();
        assert_eq!(on_disk(), parquet_at("5"), "not due yet");
        quiet.pace = WritePace::new(std::time::Duration::ZERO);
        quiet.pace.written();
        quiet.pace.keep(parquet_at("6"));
        quiet.write_due().unwrap();
        assert_eq!(on_disk(), parquet_at("6"), "due");
    }

    /// A file exactly as the first format wrote it.
    const VERSION_1: &str = r#"{
  "version": 1,
  "sinks": {
    "kafka": {
      "orders": {
        "shardId-1": "000000000000000000120"
      }
    },
    "parquet": {
      "orders": {
        "shardId-1": "000000000000000000123"
      }
    }
  },
  "kafka_offsets": {
    "cdc.orders": {
      "0": 40,
      "2": 17
    }
  }
}"#;

    #[test]
    fn a_version_1_file_still_loads_with_its_kafka_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.json");
        std::fs::write(&path, VERSION_1).unwrap();
        let loaded = FileCheckpoints::new(&path).load().unwrap();
        let seq = |s: &str| SequenceNumber::parse(s).unwrap();
        let key = ShardKey::new("orders", "shardId-1");
        assert_eq!(
            loaded.sinks["parquet"].positions.get(&key),
            Some(&seq("123"))
        );
        assert!(loaded.sinks["parquet"].state.is_null());
        assert_eq!(loaded.sinks["kafka"].positions.get(&key), Some(&seq("120")));
        assert_eq!(
            loaded.sinks["kafka"].state,
            serde_json::json!({"offsets": {"cdc.orders": {"0": 40, "2": 17}}})
        );
    }

    #[test]
    fn a_file_that_is_not_a_checkpoint_is_fatal_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.json");
        for text in ["not json", r#"{"version": 9, "sinks": {}}"#] {
            std::fs::write(&path, text).unwrap();
            let e = FileCheckpoints::new(&path).load().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Fatal);
            assert!(e.to_string().contains("checkpoint.json"), "{e}");
        }
    }
}
