//! The local checkpoint file: each sink's durable position per shard, written
//! atomically (temp file, fsync, rename, fsync of the directory).
//!
//! ```json
//! {"version": 1,
//!  "sinks": {"parquet": {"orders": {"shard-1": "1000042"}}},
//!  "kafka_offsets": {"cdc.orders": {"0": 1234}}}
//! ```
//!
//! `kafka_offsets` is the Kafka sink's next offset per topic and partition
//! when its positions were recorded: on start it reads its topics back from
//! there to find messages sent after the checkpoint.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use dynamo_cdc_core::{Positions, SequenceNumber, ShardKey};
use serde::{Deserialize, Serialize};

/// sink -> table -> shard -> sequence number
type Tree = BTreeMap<String, BTreeMap<String, BTreeMap<String, String>>>;

/// topic -> partition -> next offset
pub type KafkaOffsets = BTreeMap<String, BTreeMap<i32, i64>>;

#[derive(Serialize, Deserialize)]
struct FileFormat {
    version: u32,
    sinks: Tree,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    kafka_offsets: KafkaOffsets,
}

/// What a checkpoint file holds.
#[derive(Debug, Default)]
pub struct Recorded {
    /// Each sink's positions.
    pub positions: BTreeMap<String, Positions>,
    /// The Kafka sink's offsets recorded with its positions.
    pub kafka_offsets: KafkaOffsets,
}

/// Reads and writes the checkpoint file.
pub struct CheckpointStore {
    path: PathBuf,
    last_written: Option<(Tree, KafkaOffsets)>,
}

impl CheckpointStore {
    /// A store at `path` (created on first write).
    pub fn new(path: &Path) -> Self {
        CheckpointStore {
            path: path.to_owned(),
            last_written: None,
        }
    }

    /// What was recorded; empty when there is no file yet.
    ///
    /// # Errors
    /// When the file exists but cannot be read or is not a checkpoint.
    pub fn load(&self) -> anyhow::Result<Recorded> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Recorded::default()),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot read checkpoint {}", self.path.display()));
            }
        };
        let file: FileFormat = serde_json::from_str(&text).with_context(|| {
            format!(
                "checkpoint {} is not a dynamo-cdc checkpoint",
                self.path.display()
            )
        })?;
        let mut out = BTreeMap::new();
        for (sink, tables) in file.sinks {
            let mut positions = Positions::new();
            for (table, shards) in tables {
                for (shard, seq) in shards {
                    let seq = SequenceNumber::parse(&seq).with_context(|| {
                        format!(
                            "checkpoint {}: sink {sink}, {table}/{shard}",
                            self.path.display()
                        )
                    })?;
                    positions.advance(ShardKey::new(table.as_str(), shard), seq);
                }
            }
            out.insert(sink, positions);
        }
        Ok(Recorded {
            positions: out,
            kafka_offsets: file.kafka_offsets,
        })
    }

    /// Records the positions of every sink, unless nothing changed since the
    /// last write.
    ///
    /// # Errors
    /// When the file cannot be written, synced or renamed.
    pub fn store(
        &mut self,
        sinks: &[(&str, &Positions)],
        kafka_offsets: &KafkaOffsets,
    ) -> anyhow::Result<()> {
        let mut tree = Tree::new();
        for (name, positions) in sinks {
            let tables = tree.entry((*name).to_owned()).or_default();
            for (key, seq) in positions.iter() {
                tables
                    .entry(key.table.to_string())
                    .or_default()
                    .insert(key.shard.to_string(), seq.to_string());
            }
        }
        if self
            .last_written
            .as_ref()
            .is_some_and(|(t, o)| *t == tree && o == kafka_offsets)
        {
            return Ok(());
        }
        let text = serde_json::to_string_pretty(&FileFormat {
            version: 1,
            sinks: tree.clone(),
            kafka_offsets: kafka_offsets.clone(),
        })?;
        write_atomically(&self.path, text.as_bytes())
            .with_context(|| format!("cannot write checkpoint {}", self.path.display()))?;
        self.last_written = Some((tree, kafka_offsets.clone()));
        Ok(())
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    dynamo_cdc_sink_parquet::create_dir_durably(&dir)?;
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
    File::open(&dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/checkpoint.json");
        let mut store = CheckpointStore::new(&path);
        assert!(store.load().unwrap().positions.is_empty());
        let p: Positions = [(
            ShardKey::new("orders", "s-1"),
            SequenceNumber::parse("123").unwrap(),
        )]
        .into_iter()
        .collect();
        let offsets = KafkaOffsets::from([("cdc.orders".to_owned(), BTreeMap::from([(2, 17)]))]);
        store.store(&[("parquet", &p)], &offsets).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.positions["parquet"], p);
        assert_eq!(loaded.kafka_offsets, offsets);
        assert!(!dir.path().join("sub/.checkpoint.json.tmp").exists());
    }
}
