//! The configured sinks, driven together through the [`Sink`] trait only:
//! one position per sink, the source resuming at the lowest, each sink
//! dropping what it already holds.
//!
//! Adding a sink is one crate plus one line in [`open`].

use std::collections::{BTreeMap, HashMap};

use crate::ended::EndedShards;
use dynamo_cdc_core::{
    Change, Gap, LatestStart, Positions, Recorded, Rejected, Sink, SinkError, SinkRecord,
    SinkStats, SnapshotRecord,
};
use dynamo_cdc_sink_iceberg::IcebergSink;
use dynamo_cdc_sink_kafka::KafkaSink;
use dynamo_cdc_sink_parquet::ParquetSink;
use dynamo_cdc_source::{ImageReading, ModifyOldImages, NestedValues};
use dynamo_cdc_transform::DeclaredSchema;

use crate::config::Config;

/// A sink failed; `sink` is its id.
pub(crate) struct SinkFailure {
    pub sink: String,
    pub error: SinkError,
}

/// Opens every configured sink, in a fixed order.
///
/// # Errors
/// The first sink that cannot be opened, with its id.
pub(crate) fn open(
    config: &Config,
    declared: &HashMap<String, DeclaredSchema>,
) -> Result<Sinks, SinkFailure> {
    let mode = config.transform.numbers;
    let failed = |sink: &str| {
        let sink = sink.to_owned();
        move |error: SinkError| SinkFailure { sink, error }
    };
    let mut list: Vec<Box<dyn Sink>> = Vec::new();
    if let Some(pq) = &config.sinks.parquet {
        let sink = ParquetSink::open(pq.clone(), mode, declared.clone())
            .map_err(|e| failed("parquet")(e.into()))?;
        list.push(Box::new(sink));
    }
    if let Some(i) = &config.sinks.iceberg {
        let sink = IcebergSink::open(i.clone(), declared.clone())
            .map_err(|e| failed("iceberg")(e.into()))?;
        list.push(Box::new(sink));
    }
    if let Some(k) = &config.sinks.kafka {
        let sink = KafkaSink::open(k.runtime(), mode, declared.clone())
            .map_err(|e| failed("kafka")(e.into()))?;
        list.push(Box::new(sink));
    }
    Ok(Sinks {
        list,
        latest_starts: BTreeMap::new(),
        ended: EndedShards::default(),
    })
}

/// The open sinks, and the latest starts recorded beside their positions.
pub(crate) struct Sinks {
    list: Vec<Box<dyn Sink>>,
    /// Kept as recorded, and recorded again with every checkpoint.
    latest_starts: BTreeMap<String, LatestStart>,
    /// The shards read to their end (see [`crate::ended`]).
    ended: EndedShards,
}

impl Sinks {
    /// Drives these sinks (the configured ones come from [`open`]).
    #[cfg(test)]
    pub(crate) fn new(list: Vec<Box<dyn Sink>>) -> Sinks {
        Sinks {
            list,
            latest_starts: BTreeMap::new(),
            ended: EndedShards::default(),
        }
    }

    /// Calls `f` on every sink, stopping at the first failure.
    fn each(
        &mut self,
        mut f: impl FnMut(&mut dyn Sink) -> Result<(), SinkError>,
    ) -> Result<(), SinkFailure> {
        for sink in &mut self.list {
            f(sink.as_mut()).map_err(|error| SinkFailure {
                sink: sink.id().to_owned(),
                error,
            })?;
        }
        Ok(())
    }

    /// Takes what the checkpoint recorded for each sink.
    pub(crate) fn adopt(&mut self, recorded: &Recorded) {
        let empty = SinkRecord::default();
        for sink in &mut self.list {
            let record = recorded.sinks.get(sink.id()).unwrap_or(&empty);
            sink.adopt(&record.positions, &record.state);
        }
        self.latest_starts.clone_from(&recorded.latest_starts);
        self.ended.adopt(recorded);
    }

    /// The tracked tables' ended shards, for the stream source.
    pub(crate) fn ended_shards(
        &self,
    ) -> std::collections::HashMap<String, std::collections::BTreeSet<String>> {
        self.ended.tracked()
    }

    /// Records the ended shards every sink now holds the last change of.
    pub(crate) fn promote_ended(&mut self) {
        if self.ended.has_news() {
            let held = self.resume_point();
            self.ended.promote(&held);
        }
    }

    /// Takes a batch's ended shards and newly tracked tables.
    pub(crate) fn note_ended(&mut self, batch: &mut dynamo_cdc_core::SourceBatch) {
        if !batch.ended.is_empty() || !batch.tracking.is_empty() {
            self.ended.note(
                std::mem::take(&mut batch.ended),
                std::mem::take(&mut batch.tracking),
            );
        }
    }

    /// The latest starts recorded.
    pub(crate) fn latest_starts(&self) -> &BTreeMap<String, LatestStart> {
        &self.latest_starts
    }

    /// Adds latest starts to what is recorded.
    pub(crate) fn add_latest_starts(&mut self, starts: &BTreeMap<String, LatestStart>) {
        self.latest_starts
            .extend(starts.iter().map(|(t, s)| (t.clone(), s.clone())));
    }

    /// Tells every sink the lease epoch of each table it writes.
    pub(crate) fn lease_epochs(&mut self, epochs: &BTreeMap<String, u64>) {
        for sink in &mut self.list {
            sink.lease_epochs(epochs);
        }
    }

    /// Under leases: what each sink asks before a hand-over it cannot take
    /// back.
    pub(crate) fn write_guard(&mut self, guard: &dynamo_cdc_core::WriteGuard) {
        for sink in &mut self.list {
            sink.write_guard(guard.clone());
        }
    }

    /// The run's stop flag, for sinks that wait on destinations.
    pub(crate) fn stop_flag(&mut self, stop: &std::sync::Arc<std::sync::atomic::AtomicBool>) {
        for sink in &mut self.list {
            sink.stop_flag(stop);
        }
    }

    /// Gets every sink ready for these tables.
    pub(crate) fn prepare(&mut self, tables: &[String]) -> Result<(), SinkFailure> {
        self.each(|s| s.prepare(tables))
    }

    /// Where the source resumes: per shard, the lowest position over the
    /// sinks.
    pub(crate) fn resume_point(&self) -> Positions {
        let all: Vec<&Positions> = self.list.iter().map(|s| s.durable_positions()).collect();
        Positions::resume_point(&all)
    }

    /// Every shard some sink holds a position of, at the lowest of those
    /// positions: where a shard that expired unread lost records (the
    /// resume point leaves out a shard one sink holds no position of).
    pub(crate) fn lowest_held(&self) -> Positions {
        let all: Vec<&Positions> = self.list.iter().map(|s| s.durable_positions()).collect();
        Positions::lowest_held(&all)
    }

    /// Per shard, the highest position over the sinks: how far some sink
    /// already got.
    pub(crate) fn furthest(&self) -> Positions {
        let mut out = Positions::new();
        for sink in &self.list {
            out.merge_max(sink.durable_positions());
        }
        out
    }

    /// What the source reads of each image: MODIFY old images only when
    /// some sink does ([`Sink::reads_modify_old_images`]), maps and lists
    /// as trees only when some sink looks inside them
    /// ([`Sink::reads_nested_trees`]).
    pub(crate) fn image_reading(&self) -> ImageReading {
        ImageReading {
            modify_old_images: if self.list.iter().any(|s| s.reads_modify_old_images()) {
                ModifyOldImages::Read
            } else {
                ModifyOldImages::KeepUnread
            },
            nested_values: if self.list.iter().any(|s| s.reads_nested_trees()) {
                NestedValues::Trees
            } else {
                NestedValues::Text
            },
        }
    }

    /// Records a gap in every sink that keeps them.
    pub(crate) fn record_gap(&mut self, gap: &Gap) -> Result<(), SinkFailure> {
        self.each(|s| s.record_gap(gap))
    }

    /// Records a snapshot's start or end in every sink that keeps them.
    pub(crate) fn record_snapshot(&mut self, snapshot: &SnapshotRecord) -> Result<(), SinkFailure> {
        self.each(|s| s.record_snapshot(snapshot))
    }

    /// Has every sink that keeps snapshot records hold one of `snapshot`,
    /// recording it (running) where there is none yet.
    pub(crate) fn record_snapshot_start(
        &mut self,
        snapshot: &SnapshotRecord,
    ) -> Result<(), SinkFailure> {
        self.each(|s| s.record_snapshot_start(snapshot))
    }

    /// Writes to every sink; a change any sink rejects is returned once,
    /// with each sink's reason.
    pub(crate) fn write(&mut self, changes: &[Change]) -> Result<Vec<Rejected>, SinkFailure> {
        let mut by_index: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        let several = self.list.len() > 1;
        for sink in &mut self.list {
            let rejected = sink.write(changes).map_err(|error| SinkFailure {
                sink: sink.id().to_owned(),
                error,
            })?;
            for r in rejected {
                let reason = if several {
                    format!("{}: {}", sink.id(), r.error)
                } else {
                    r.error
                };
                by_index.entry(r.index).or_default().push(reason);
            }
        }
        Ok(by_index
            .into_iter()
            .map(|(index, errors)| Rejected {
                index,
                error: errors.join("; "),
            })
            .collect())
    }

    /// Commits what is due in every sink.
    pub(crate) fn poll(&mut self) -> Result<(), SinkFailure> {
        self.each(|s| s.poll())
    }

    /// Commits everything in every sink.
    pub(crate) fn flush(&mut self) -> Result<(), SinkFailure> {
        self.each(|s| s.flush())
    }

    /// Every sink's positions and resume state, as the checkpoint keeps them.
    pub(crate) fn recorded(&self) -> Recorded {
        Recorded {
            sinks: self
                .list
                .iter()
                .map(|s| {
                    let record = SinkRecord {
                        positions: s.durable_positions().clone(),
                        state: s.resume_state(),
                    };
                    (s.id().to_owned(), record)
                })
                .collect(),
            latest_starts: self.latest_starts.clone(),
            ended: self.ended.recorded().clone(),
        }
    }

    /// What the checkpoint should record, when it differs from `last`.
    ///
    /// Called after every batch, while most batches move no position, and
    /// positions hold every shard the streams ever had: unchanged stamps
    /// (and resume states) answer without copying or comparing them.
    pub(crate) fn recorded_if_moved(&mut self, last: Option<&Recorded>) -> Option<Recorded> {
        self.promote_ended();
        if let Some(last) = last
            && self.unmoved_since(last)
        {
            return None;
        }
        let recorded = self.recorded();
        (last != Some(&recorded)).then_some(recorded)
    }

    /// True when every sink's positions are those `last` copied and its
    /// resume state is the same.
    fn unmoved_since(&self, last: &Recorded) -> bool {
        last.latest_starts == self.latest_starts
            // Shared until it changes: one comparison of pointers.
            && std::sync::Arc::ptr_eq(&last.ended, self.ended.recorded())
            && last.sinks.len() == self.list.len()
            && self.list.iter().all(|s| {
                last.sinks.get(s.id()).is_some_and(|r| {
                    r.positions.stamp() == s.durable_positions().stamp()
                        && r.state == s.resume_state()
                })
            })
    }

    /// The stamps of the sinks' positions ([`Positions::stamp`]), in sink
    /// order: while they stay the same, no position moved.
    pub(crate) fn stamps(&self) -> impl Iterator<Item = u64> + '_ {
        self.list.iter().map(|s| s.durable_positions().stamp())
    }

    /// Each sink's counts, by id.
    pub(crate) fn stats(&self) -> Vec<(String, SinkStats)> {
        self.list
            .iter()
            .map(|s| (s.id().to_owned(), s.stats()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dynamo_cdc_core::{SequenceNumber, ShardKey};

    /// A sink whose `poll` moves its one position and whose `flush`
    /// changes its resume state.
    #[derive(Default)]
    struct Moving {
        durable: Positions,
        seq: u64,
        flushes: u64,
    }

    impl Sink for Moving {
        fn id(&self) -> &str {
            "moving"
        }
        fn adopt(&mut self, _: &Positions, _: &serde_json::Value) {}
        fn durable_positions(&self) -> &Positions {
            &self.durable
        }
        fn write(&mut self, _: &[dynamo_cdc_core::Change]) -> Result<Vec<Rejected>, SinkError> {
            Ok(Vec::new())
        }
        fn record_gap(&mut self, _: &Gap) -> Result<(), SinkError> {
            Ok(())
        }
        fn poll(&mut self) -> Result<(), SinkError> {
            self.seq += 1;
            let seq = SequenceNumber::parse(&self.seq.to_string()).unwrap();
            self.durable.advance(ShardKey::new("t", "s"), seq);
            Ok(())
        }
        fn flush(&mut self) -> Result<(), SinkError> {
            self.flushes += 1;
            Ok(())
        }
        fn resume_state(&self) -> serde_json::Value {
            serde_json::json!({ "flushes": self.flushes })
        }
        fn stats(&self) -> SinkStats {
            SinkStats::default()
        }
    }

    #[test]
    fn a_checkpoint_record_is_made_only_when_a_position_or_a_resume_state_moved() {
        let mut sinks = Sinks::new(vec![Box::new(Moving::default())]);
        let first = sinks.recorded_if_moved(None).expect("nothing recorded yet");
        assert!(sinks.recorded_if_moved(Some(&first)).is_none());
        assert!(sinks.poll().is_ok());
        let moved = sinks.recorded_if_moved(Some(&first)).expect("moved");
        let key = ShardKey::new("t", "s");
        let at = |r: &Recorded| r.sinks["moving"].positions.get(&key).cloned();
        assert_eq!(at(&moved), SequenceNumber::parse("1").ok());
        assert!(sinks.recorded_if_moved(Some(&moved)).is_none());
        assert!(sinks.flush().is_ok());
        let state = sinks.recorded_if_moved(Some(&moved)).expect("state moved");
        assert_eq!(state.sinks["moving"].state["flushes"], 1);
        // The same contents recorded elsewhere (a checkpoint loaded from its
        // file: other stamps) are no move either.
        let mut loaded = state.clone();
        let copied: Positions = state.sinks["moving"]
            .positions
            .iter()
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect();
        assert_ne!(copied.stamp(), state.sinks["moving"].positions.stamp());
        loaded.sinks.get_mut("moving").unwrap().positions = copied;
        assert!(sinks.recorded_if_moved(Some(&loaded)).is_none());
    }

    fn config(sinks: &str, dir: &std::path::Path) -> Config {
        Config::parse(&format!(
            "[source]\nkind = \"replay\"\npath = \"in\"\n{sinks}\n[checkpoint]\npath = {:?}\n",
            dir.join("checkpoint.json")
        ))
        .unwrap()
    }

    /// Parquet (like Iceberg) writes rows of the new image, maps and lists
    /// as DynamoDB JSON: with it alone a MODIFY's old image is left unread
    /// and maps and lists are kept as text; a Kafka message's `before` needs
    /// the old image read, and its encoder the trees.
    #[test]
    fn images_are_read_as_far_as_a_sink_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let parquet = format!("[sinks.parquet]\npath = {:?}\n", dir.path().join("pq"));
        let kafka = "[sinks.kafka]\nbrokers = \"127.0.0.1:9\"\n";
        let declared = HashMap::new();
        let alone = open(&config(&parquet, dir.path()), &declared).ok().unwrap();
        assert_eq!(
            alone.image_reading(),
            ImageReading {
                modify_old_images: ModifyOldImages::KeepUnread,
                nested_values: NestedValues::Text,
            }
        );
        let with_kafka = open(&config(&format!("{parquet}{kafka}"), dir.path()), &declared)
            .ok()
            .unwrap();
        assert_eq!(with_kafka.image_reading(), ImageReading::default());
        // Avro (with a registry) holds maps and lists as DynamoDB JSON, as
        // Parquet does; plain JSON messages show them as JSON.
        let avro = format!("{kafka}schema_registry_url = \"http://127.0.0.1:9\"\n");
        let with_avro = open(&config(&format!("{parquet}{avro}"), dir.path()), &declared)
            .ok()
            .unwrap();
        assert_eq!(
            with_avro.image_reading(),
            ImageReading {
                modify_old_images: ModifyOldImages::Read,
                nested_values: NestedValues::Text,
            }
        );
        assert_eq!(
            ImageReading::default(),
            ImageReading {
                modify_old_images: ModifyOldImages::Read,
                nested_values: NestedValues::Trees,
            }
        );
        // A declared record reads inside its map.
        let record = r#"{"type":"record","name":"t","fields":[
            {"name":"addr","type":{"type":"record","name":"addr","fields":[{"name":"zip","type":"string"}]}}]}"#;
        let declared = HashMap::from([(
            "orders".to_owned(),
            DeclaredSchema::parse_avsc(record).unwrap(),
        )]);
        let with_record = open(&config(&parquet, dir.path()), &declared).ok().unwrap();
        assert_eq!(
            with_record.image_reading().nested_values,
            NestedValues::Trees
        );
    }
}
