//! Positions in the lease table: a [`CheckpointStore`] over the tables one
//! pass holds, one item per (table, sink, shard), one resume state per
//! (table, sink) and one latest start per table. Each is written under the
//! lease's epoch and never over what a later owner wrote. They stay hints,
//! as the local file is: each sink's own storage is the truth.
//!
//! Positions move with nearly every batch, and each item written is a
//! billed write: what changed is written at most once per
//! [`CHECKPOINT_WRITE_INTERVAL`] (a [`WritePace`]), and whatever is held
//! back when the pass ends (the pipeline's `flush`). A crash loses at most that interval of hints,
//! which only means reading a little more back.

use std::collections::BTreeMap;

#[cfg(doc)]
use dynamo_cdc_core::CHECKPOINT_WRITE_INTERVAL;
use dynamo_cdc_core::{
    CheckpointStore, Recorded, SequenceNumber, ShardKey, SinkError, SinkRecord, StoreError,
    TABLE_STATES, WritePace,
};

use crate::coordinator::wall_ms;
use crate::item::{Condition, EndedItem, Item, PositionItem, StartItem, StateItem};
use crate::store::{LeaseStore, StoreFailure};

/// The lease table as the checkpoint of a pass; see the module docs.
pub struct LeaseCheckpoints<S> {
    store: S,
    /// Table -> the epoch its lease is held at.
    epochs: BTreeMap<String, u64>,
    /// What was last written or read, by item key, to write only changes.
    written: BTreeMap<String, String>,
    /// When to write and what is held back.
    pace: WritePace,
}

impl<S: LeaseStore> LeaseCheckpoints<S> {
    /// The checkpoint of a pass writing `epochs`' tables.
    pub fn new(store: S, epochs: BTreeMap<String, u64>) -> Self {
        LeaseCheckpoints {
            store,
            epochs,
            written: BTreeMap::new(),
            pace: WritePace::default(),
        }
    }

    fn put(&mut self, item: Item, value: String, epoch: u64) -> Result<(), StoreError> {
        let key = item.key();
        if self.written.get(&key) == Some(&value) {
            return Ok(());
        }
        match self.store.put(&item, Condition::EpochAtMost(epoch)) {
            Ok(()) => {
                self.written.insert(key, value);
                Ok(())
            }
            Err(StoreFailure::Conflict) => Err(SinkError::transient(format!(
                "table {}: a later owner of its lease recorded positions; this worker no longer \
                 writes it",
                item.table()
            ))),
            Err(e @ StoreFailure::Unavailable(_)) => Err(SinkError::transient(e)),
            Err(e) => Err(SinkError::fatal(e)),
        }
    }
}

impl<S: LeaseStore> CheckpointStore for LeaseCheckpoints<S> {
    fn load(&mut self) -> Result<Recorded, StoreError> {
        let items = self.store.scan().map_err(|e| match e {
            StoreFailure::Fatal(_) => SinkError::fatal(e),
            _ => SinkError::transient(e),
        })?;
        let mut recorded = Recorded::default();
        let mut states: BTreeMap<String, Vec<(String, serde_json::Value)>> = BTreeMap::new();
        let mut ended_shards: BTreeMap<String, std::collections::BTreeSet<String>> =
            BTreeMap::new();
        let mut marked: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        for item in items {
            if !self.epochs.contains_key(item.table()) {
                continue;
            }
            let key = item.key();
            match item {
                Item::Position(p) => {
                    let Ok(seq) = SequenceNumber::parse(&p.seq) else {
                        tracing::warn!(key = %key, seq = %p.seq, "ignoring a position that is not a sequence number");
                        continue;
                    };
                    self.written.insert(key, p.seq.clone());
                    recorded
                        .sinks
                        .entry(p.sink)
                        .or_default()
                        .positions
                        .advance(ShardKey::new(p.table.as_str(), p.shard.as_str()), seq);
                }
                Item::State(s) => {
                    self.written.insert(key.clone(), s.state.clone());
                    match serde_json::from_str(&s.state) {
                        Ok(v) => states.entry(s.sink).or_default().push((s.table, v)),
                        Err(e) => {
                            tracing::warn!(key = %key, error = %e, "ignoring an unreadable resume state")
                        }
                    }
                }
                Item::Start(s) => {
                    self.written.insert(key, start_value(s.at_ms, &s.closed));
                    let start = dynamo_cdc_core::LatestStart {
                        at_ms: s.at_ms,
                        closed: s.closed,
                    };
                    recorded.latest_starts.insert(s.table, start);
                }
                Item::Ended(e) => {
                    self.written.insert(key, String::new());
                    match e.shard {
                        Some(shard) => {
                            ended_shards.entry(e.table).or_default().insert(shard);
                        }
                        None => {
                            marked.insert(e.table);
                        }
                    }
                }
                Item::Lease(_) => {}
            }
        }
        for (sink, values) in states {
            recorded.sinks.entry(sink).or_default().state = merge_states(values, &self.epochs);
        }
        // Tracked only once marked: the mark is written after the shards,
        // so a table whose first record of them was cut short (a crash, a
        // throttled write) is not taken for tracked with some missing.
        let mut ended: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
        for table in marked {
            let shards = ended_shards.remove(&table).unwrap_or_default();
            ended.insert(table, shards);
        }
        recorded.ended = ended.into();
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
        self.store.describe()
    }
}

impl<S: LeaseStore> LeaseCheckpoints<S> {
    /// Writes what changed in `recorded`.
    fn write(&mut self, recorded: &Recorded) -> Result<(), StoreError> {
        self.pace.written();
        for (table, start) in &recorded.latest_starts {
            let Some(&epoch) = self.epochs.get(table) else {
                continue;
            };
            let value = start_value(start.at_ms, &start.closed);
            let item = Item::Start(StartItem {
                table: table.clone(),
                at_ms: start.at_ms,
                closed: start.closed.clone(),
                epoch,
            });
            self.put(item, value, epoch)?;
        }
        for (table, shards) in recorded.ended.iter() {
            let Some(&epoch) = self.epochs.get(table) else {
                continue;
            };
            // The shards first: a table marked as kept must have them all.
            let ended = |shard: Option<&String>| {
                Item::Ended(EndedItem {
                    table: table.clone(),
                    shard: shard.cloned(),
                    epoch,
                })
            };
            for shard in shards {
                self.put(ended(Some(shard)), String::new(), epoch)?;
            }
            self.put(ended(None), String::new(), epoch)?;
        }
        for (sink, SinkRecord { positions, state }) in &recorded.sinks {
            for (key, seq) in positions.iter() {
                let Some(&epoch) = self.epochs.get(&*key.table) else {
                    continue;
                };
                let item = Item::Position(PositionItem {
                    table: key.table.to_string(),
                    sink: sink.clone(),
                    shard: key.shard.to_string(),
                    seq: seq.to_string(),
                    epoch,
                    updated_ms: wall_ms(),
                });
                self.put(item, seq.to_string(), epoch)?;
            }
            if state.is_null() {
                continue;
            }
            let tables: Vec<(String, u64)> =
                self.epochs.iter().map(|(t, e)| (t.clone(), *e)).collect();
            for (table, epoch) in tables {
                let text = for_table(state, &table).to_string();
                let item = Item::State(StateItem {
                    table,
                    sink: sink.clone(),
                    state: text.clone(),
                    epoch,
                });
                self.put(item, text, epoch)?;
            }
        }
        Ok(())
    }
}

/// What a start item holds, to tell whether it changed.
fn start_value(at_ms: i64, closed: &std::collections::BTreeSet<String>) -> String {
    let closed: Vec<&str> = closed.iter().map(String::as_str).collect();
    format!("{at_ms} {}", closed.join(" "))
}

/// What of `state` is recorded with `table`: all of it, but of its parts
/// by table ([`TABLE_STATES`]) only `table`'s own.
fn for_table(state: &serde_json::Value, table: &str) -> serde_json::Value {
    use serde_json::Value;
    let Value::Object(fields) = state else {
        return state.clone();
    };
    // The other tables' parts are left out, not copied and dropped.
    let own = |parts: &serde_json::Map<String, Value>| -> Value {
        Value::Object(
            parts
                .get_key_value(table)
                .map(|(t, part)| (t.clone(), part.clone()))
                .into_iter()
                .collect(),
        )
    };
    Value::Object(
        fields
            .iter()
            .map(|(k, v)| match v {
                Value::Object(parts) if k == TABLE_STATES => (k.clone(), own(parts)),
                v => (k.clone(), v.clone()),
            })
            .collect(),
    )
}

/// The states recorded with each held table (`epochs`' keys), made one for
/// the sink: their parts by table ([`TABLE_STATES`]), each from its own
/// table's item, `null` for a held table without one; the rest as
/// [`lowest_common`] makes it. States without parts by table (written by
/// earlier versions) get none.
fn merge_states(
    values: Vec<(String, serde_json::Value)>,
    epochs: &BTreeMap<String, u64>,
) -> serde_json::Value {
    use serde_json::Value;
    let mut parts = serde_json::Map::new();
    let mut any_parts = false;
    let mut rest = Vec::with_capacity(values.len());
    for (table, mut value) in values {
        if let Some(Value::Object(mut by_table)) =
            value.as_object_mut().and_then(|o| o.remove(TABLE_STATES))
        {
            any_parts = true;
            if let Some(part) = by_table.remove(&table) {
                parts.insert(table, part);
            }
        }
        rest.push(value);
    }
    let mut merged = lowest_common(&rest);
    if any_parts {
        for table in epochs.keys() {
            parts.entry(table.clone()).or_insert(Value::Null);
        }
        if let Value::Object(o) = &mut merged {
            o.insert(TABLE_STATES.to_owned(), Value::Object(parts));
        } else {
            merged = serde_json::json!({ TABLE_STATES: parts });
        }
    }
    merged
}

/// Resume states recorded by different owners, made one: where they agree,
/// the value; where numbers differ, the lowest; anything present in only
/// some of them, or of different shapes, is dropped. Resume states are
/// hints whose numbers say where to start reading back (Kafka offsets), so
/// the lowest is the safe one and a dropped entry means "from the start".
pub fn lowest_common(values: &[serde_json::Value]) -> serde_json::Value {
    use serde_json::Value;
    let Some((first, rest)) = values.split_first() else {
        return Value::Null;
    };
    rest.iter().fold(first.clone(), |acc, v| match (acc, v) {
        (Value::Object(a), Value::Object(b)) => Value::Object(
            a.into_iter()
                .filter_map(|(k, av)| {
                    let merged = lowest_common(&[av, b.get(&k)?.clone()]);
                    (!merged.is_null()).then_some((k, merged))
                })
                .collect(),
        ),
        (Value::Number(a), Value::Number(b)) => match (a.as_i64(), b.as_i64()) {
            (Some(x), Some(y)) => Value::from(x.min(y)),
            _ if a == *b => Value::Number(a),
            _ => Value::Null,
        },
        (a, b) if a == *b => a,
        _ => Value::Null,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryLeaseStore;
    use serde_json::json;

    fn recorded(seq: &str, state: serde_json::Value) -> Recorded {
        let mut r = Recorded::default();
        let e = r.sinks.entry("kafka".into()).or_default();
        e.positions.advance(
            ShardKey::new("orders", "s1"),
            SequenceNumber::parse(seq).unwrap(),
        );
        e.positions.advance(
            ShardKey::new("other", "s1"),
            SequenceNumber::parse(seq).unwrap(),
        );
        e.state = state;
        r
    }

    #[test]
    fn positions_of_held_tables_round_trip_and_others_are_not_written() {
        let store = MemoryLeaseStore::new();
        let mut a = LeaseCheckpoints::new(store.clone(), BTreeMap::from([("orders".into(), 1)]));
        a.store(&recorded(
            "10",
            json!({"offsets": {"cdc.orders": {"0": 5}}}),
        ))
        .unwrap();
        let calls = store.calls();
        a.store(&recorded(
            "10",
            json!({"offsets": {"cdc.orders": {"0": 5}}}),
        ))
        .unwrap();
        assert_eq!(
            store.calls(),
            calls,
            "unchanged positions are not written again"
        );
        let mut b = LeaseCheckpoints::new(store.clone(), BTreeMap::from([("orders".into(), 1)]));
        let loaded = b.load().unwrap();
        let kafka = &loaded.sinks["kafka"];
        assert_eq!(kafka.positions.len(), 1);
        assert_eq!(
            kafka
                .positions
                .get(&ShardKey::new("orders", "s1"))
                .unwrap()
                .as_str(),
            "10"
        );
        assert_eq!(kafka.state, json!({"offsets": {"cdc.orders": {"0": 5}}}));
    }

    /// Parts by table are recorded with their own table and come back
    /// from whichever owner recorded them: a worker taking over tables that
    /// others recorded gets each one's part, not only what all agree on
    /// (which was nothing, and every topic was read back from its start).
    #[test]
    fn parts_by_table_come_back_from_each_tables_own_owner() {
        let store = MemoryLeaseStore::new();
        let state = |table: &str, other: &str, offset: u64| {
            json!({
                "offsets": {format!("cdc.{table}"): {"0": offset}, format!("cdc.{other}"): {"0": 1}},
                "tables": {
                    table: {"offsets": {format!("cdc.{table}"): {"0": offset}}},
                    other: {"offsets": {format!("cdc.{other}"): {"0": 1}}},
                },
            })
        };
        // One owner held `orders` (and wrote a topic of a table it no
        // longer holds), another `other`.
        LeaseCheckpoints::new(store.clone(), BTreeMap::from([("orders".into(), 1)]))
            .store(&recorded("10", state("orders", "gone", 500)))
            .unwrap();
        LeaseCheckpoints::new(store.clone(), BTreeMap::from([("other".into(), 1)]))
            .store(&recorded("10", state("other", "gone", 700)))
            .unwrap();
        let item = store
            .items()
            .into_iter()
            .find_map(|i| match i {
                Item::State(s) if s.table == "orders" => Some(s.state),
                _ => None,
            })
            .unwrap();
        assert!(!item.contains(r#""gone":"#), "only its own part: {item}");

        let epochs = BTreeMap::from([("orders".into(), 2), ("other".into(), 2), ("new".into(), 1)]);
        let loaded = LeaseCheckpoints::new(store.clone(), epochs).load().unwrap();
        assert_eq!(
            loaded.sinks["kafka"].state["tables"],
            json!({
                "orders": {"offsets": {"cdc.orders": {"0": 500}}},
                "other": {"offsets": {"cdc.other": {"0": 700}}},
                "new": null,
            })
        );
        // The rest is still what all agree on.
        assert_eq!(
            loaded.sinks["kafka"].state["offsets"],
            json!({"cdc.gone": {"0": 1}})
        );
    }

    #[test]
    fn positions_are_written_at_most_once_an_interval_and_flushed_at_the_end() {
        let store = MemoryLeaseStore::new();
        let mut c = LeaseCheckpoints::new(store.clone(), BTreeMap::from([("orders".into(), 1)]));
        c.store(&recorded("10", serde_json::Value::Null)).unwrap();
        let after_first = store.calls();
        c.store(&recorded("11", serde_json::Value::Null)).unwrap();
        c.store(&recorded("12", serde_json::Value::Null)).unwrap();
        assert_eq!(store.calls(), after_first, "held back within the interval");
        c.flush().unwrap();
        let mut fresh =
            LeaseCheckpoints::new(store.clone(), BTreeMap::from([("orders".into(), 1)]));
        let loaded = fresh.load().unwrap();
        assert_eq!(
            loaded.sinks["kafka"]
                .positions
                .get(&ShardKey::new("orders", "s1"))
                .unwrap()
                .as_str(),
            "12",
            "the newest record, not an intermediate one"
        );
        let calls = store.calls();
        c.flush().unwrap();
        assert_eq!(store.calls(), calls, "nothing held, nothing written");
    }

    #[test]
    fn latest_starts_of_held_tables_round_trip() {
        let store = MemoryLeaseStore::new();
        let mut a = LeaseCheckpoints::new(store.clone(), BTreeMap::from([("orders".into(), 1)]));
        let mut r = recorded("10", serde_json::Value::Null);
        let start = dynamo_cdc_core::LatestStart {
            at_ms: 1_764_000_000_123,
            closed: ["s0".to_owned()].into(),
        };
        r.latest_starts.insert("orders".into(), start.clone());
        r.latest_starts.insert("other".into(), start.clone());
        a.store(&r).unwrap();
        let calls = store.calls();
        a.store(&r).unwrap();
        a.flush().unwrap();
        assert_eq!(
            store.calls(),
            calls,
            "an unchanged start is not written again"
        );
        let mut everything = LeaseCheckpoints::new(
            store.clone(),
            BTreeMap::from([("orders".into(), 1), ("other".into(), 1)]),
        );
        let loaded = everything.load().unwrap();
        assert_eq!(
            loaded.latest_starts,
            BTreeMap::from([("orders".to_owned(), start)]),
            "only the held table's start is written"
        );
    }

    /// Each held table's ended shards come back as recorded, a tracked
    /// table with none too (it stays tracked); an unchanged shard is not
    /// written again.
    #[test]
    fn ended_shards_of_held_tables_round_trip() {
        let store = MemoryLeaseStore::new();
        let held = BTreeMap::from([("orders".into(), 1), ("quiet".into(), 1)]);
        let mut a = LeaseCheckpoints::new(store.clone(), held.clone());
        let mut r = recorded("10", serde_json::Value::Null);
        let ended = std::sync::Arc::make_mut(&mut r.ended);
        ended.insert("orders".into(), ["s0".to_owned()].into());
        ended.insert("quiet".into(), Default::default());
        ended.insert("other".into(), ["x".to_owned()].into());
        a.store(&r).unwrap();
        std::sync::Arc::make_mut(&mut r.ended)
            .get_mut("orders")
            .unwrap()
            .insert("s1".to_owned());
        a.flush().unwrap();
        a.store(&r).unwrap();
        a.flush().unwrap();
        let calls = store.calls();
        a.store(&r).unwrap();
        a.flush().unwrap();
        assert_eq!(store.calls(), calls, "nothing new, nothing written");
        // A first record cut short before the table's mark: not tracked.
        store
            .put(
                &Item::Ended(EndedItem {
                    table: "partial".into(),
                    shard: Some("s9".into()),
                    epoch: 1,
                }),
                Condition::Always,
            )
            .unwrap();
        let mut held = held;
        held.insert("partial".into(), 1);
        let loaded = LeaseCheckpoints::new(store.clone(), held).load().unwrap();
        assert_eq!(
            *loaded.ended,
            BTreeMap::from([
                (
                    "orders".to_owned(),
                    ["s0".to_owned(), "s1".to_owned()].into()
                ),
                ("quiet".to_owned(), Default::default()),
            ]),
            "only the held tables'"
        );
    }

    #[test]
    fn a_stale_owner_cannot_overwrite_a_later_epoch() {
        let store = MemoryLeaseStore::new();
        let mut new = LeaseCheckpoints::new(store.clone(), BTreeMap::from([("orders".into(), 2)]));
        new.store(&recorded("20", serde_json::Value::Null)).unwrap();
        let mut old = LeaseCheckpoints::new(store.clone(), BTreeMap::from([("orders".into(), 1)]));
        let e = old
            .store(&recorded("30", serde_json::Value::Null))
            .unwrap_err();
        assert!(e.to_string().contains("later owner"), "{e}");
    }

    #[test]
    fn merged_states_keep_the_lowest_common_numbers() {
        let a = json!({"offsets": {"t1": {"0": 5, "1": 9}, "t2": {"0": 1}}});
        let b = json!({"offsets": {"t1": {"0": 7, "1": 3}, "t3": {"0": 1}}});
        assert_eq!(
            lowest_common(&[a.clone(), b]),
            json!({"offsets": {"t1": {"0": 5, "1": 3}}})
        );
        assert_eq!(lowest_common(std::slice::from_ref(&a)), a);
        assert_eq!(lowest_common(&[]), serde_json::Value::Null);
    }
}
