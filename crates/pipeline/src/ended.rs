//! Which closed shards of each table were read to their end with every
//! change of them in every sink ([`Recorded::ended`]): the stream source
//! tells when it reads one to its end ([`ShardEnded`]); the checkpoint keeps
//! it once the sinks hold its last change, so that a restart after the shard
//! expired knows it was read whole, and takes any other expired shard it
//! holds a position of for the loss it is.
//!
//! A table is tracked from the first start whose checkpoint kept nothing of
//! it: the source then takes the shards it can no longer find for ended (as
//! earlier versions did) and says so, with the table, in one batch.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use dynamo_cdc_core::{Positions, Recorded, ShardEnded};

/// The ended shards recorded, and those told but not yet held by every
/// sink.
#[derive(Debug, Default)]
pub(crate) struct EndedShards {
    /// Shared with the records made of it until it changes.
    recorded: Arc<BTreeMap<String, BTreeSet<String>>>,
    /// Ended shards whose last change the sinks may not all hold yet.
    pending: Vec<ShardEnded>,
    /// Tables to track from the next record on.
    tracking: Vec<String>,
}

impl EndedShards {
    /// What the checkpoint recorded.
    pub(crate) fn adopt(&mut self, recorded: &Recorded) {
        self.recorded.clone_from(&recorded.ended);
        self.pending.clear();
        self.tracking.clear();
    }

    /// The tracked tables' ended shards, for the stream source.
    pub(crate) fn tracked(&self) -> HashMap<String, BTreeSet<String>> {
        self.recorded
            .iter()
            .map(|(t, s)| (t.clone(), s.clone()))
            .collect()
    }

    /// Takes a batch's news.
    pub(crate) fn note(&mut self, ended: Vec<ShardEnded>, tracking: Vec<String>) {
        self.pending.extend(ended);
        self.tracking.extend(tracking);
    }

    /// Whether there is news to record once the sinks hold it.
    pub(crate) fn has_news(&self) -> bool {
        !self.pending.is_empty() || !self.tracking.is_empty()
    }

    /// Records the tables now tracked and the ended shards whose last
    /// change every sink holds (`held`: the lowest position over the
    /// sinks); true when that changed what is recorded.
    pub(crate) fn promote(&mut self, held: &Positions) -> bool {
        let mut changed = false;
        for table in self.tracking.drain(..) {
            if !self.recorded.contains_key(&table) {
                Arc::make_mut(&mut self.recorded).insert(table, BTreeSet::new());
                changed = true;
            }
        }
        let recorded = &mut self.recorded;
        self.pending.retain(|end| {
            let held_all = end
                .last
                .as_ref()
                .is_none_or(|last| held.covers(&end.key, last));
            // Only a tracked table's: one not tracked (its batch of assumed
            // ends not recorded yet) would look tracked with only this
            // shard ended.
            let new = recorded
                .get(&*end.key.table)
                .is_some_and(|shards| !shards.contains(&*end.key.shard));
            if held_all && new {
                if let Some(shards) = Arc::make_mut(recorded).get_mut(&*end.key.table) {
                    shards.insert(end.key.shard.to_string());
                }
                changed = true;
            }
            !held_all
        });
        changed
    }

    /// What the checkpoint records.
    pub(crate) fn recorded(&self) -> &Arc<BTreeMap<String, BTreeSet<String>>> {
        &self.recorded
    }
}

#[cfg(test)]
mod tests {
    use dynamo_cdc_core::{SequenceNumber, ShardKey};

    use super::*;

    fn end(shard: &str, last: Option<&str>) -> ShardEnded {
        ShardEnded {
            key: ShardKey::new("orders", shard),
            last: last.map(|s| SequenceNumber::parse(s).unwrap()),
        }
    }

    fn held(pairs: &[(&str, &str)]) -> Positions {
        let mut p = Positions::new();
        for (shard, seq) in pairs {
            p.advance(
                ShardKey::new("orders", *shard),
                SequenceNumber::parse(seq).unwrap(),
            );
        }
        p
    }

    fn shards(e: &EndedShards) -> Vec<&str> {
        e.recorded()
            .get("orders")
            .map(|s| s.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }

    /// A shard is recorded as ended only once every sink holds its last
    /// change; one that had none in this run at once.
    #[test]
    fn an_ended_shard_is_recorded_once_the_sinks_hold_its_last_change() {
        let mut e = EndedShards::default();
        e.adopt(&Recorded {
            ended: BTreeMap::from([("orders".to_owned(), BTreeSet::new())]).into(),
            ..Recorded::default()
        });
        e.note(vec![end("a", Some("20")), end("b", None)], Vec::new());
        assert!(e.promote(&held(&[("a", "19")])));
        assert_eq!(shards(&e), ["b"]);
        assert!(!e.promote(&held(&[("a", "19")])), "nothing new");
        assert!(e.promote(&held(&[("a", "20")])));
        assert_eq!(shards(&e), ["a", "b"]);
        assert!(!e.has_news());
    }

    /// A table starts being tracked with the shards taken for ended then,
    /// in one record; an end told for a table not tracked is not recorded
    /// (the table would look tracked with its other shards missing).
    #[test]
    fn a_table_is_tracked_from_one_record_on_with_its_assumed_ends() {
        let mut e = EndedShards::default();
        e.adopt(&Recorded::default());
        e.note(vec![end("old", None)], Vec::new());
        assert!(!e.promote(&Positions::new()));
        assert!(e.recorded().is_empty(), "not tracked yet");
        e.note(vec![end("old", None)], vec!["orders".to_owned()]);
        assert!(e.promote(&Positions::new()));
        assert_eq!(shards(&e), ["old"]);
        assert_eq!(e.tracked()["orders"].len(), 1);
    }
}
