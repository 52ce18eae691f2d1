//! The test-facing side of simulated tables: creating one with its stream,
//! writing and deleting items (each write appends its stream record under
//! the same lock, so a Scan never sees an item whose record is missing),
//! and the switches for point-in-time recovery and exports.

use std::path::Path;

use serde_json::Value;

use super::clock::now_secs;
use super::keys::item_size;
use super::state::{Change, State};
use super::table::{Table, Written};
use super::{StreamSim, add_stream};

impl StreamSim {
    /// Creates a table keyed by `hash_key` (and `range_key`), with a stream
    /// of NEW_AND_OLD_IMAGES created as [`Self::create_stream`] does; returns
    /// the stream ARN. The key attributes' types are taken from the first
    /// item written (`S` until then).
    ///
    /// # Panics
    /// When the table already exists (scripted, or plain: created through
    /// the `CreateTable` call).
    pub fn create_table(&self, table: &str, hash_key: &str, range_key: Option<&str>) -> String {
        let mut st = self.state();
        assert!(
            !st.tables.contains_key(table) && !st.plain.contains_key(table),
            "table {table} exists"
        );
        let arn = add_stream(&mut st, table);
        let t = Table::new(table, hash_key, range_key, arn.clone(), now_secs());
        st.tables.insert(table.to_owned(), t);
        arn
    }

    /// Puts a whole item (a DynamoDB-JSON map), replacing any item with its
    /// key, and appends the INSERT or MODIFY record to the open shard its
    /// partition key maps to. Returns the record's sequence number.
    ///
    /// # Panics
    /// When the table does not exist, the item's key attributes are missing
    /// or invalid, or the stream has no open shard.
    pub fn put_item(&self, table: &str, item: Value) -> u128 {
        self.write(table, |t| t.put(item).map(Some))
            .expect("a put always writes a record")
    }

    /// Deletes the item with `key`'s key attributes (others are ignored) and
    /// appends its REMOVE record; nothing happens and `None` comes back when
    /// there was no such item.
    ///
    /// # Panics
    /// As [`Self::put_item`].
    pub fn delete_item(&self, table: &str, key: Value) -> Option<u128> {
        self.write(table, |t| t.delete(&key))
    }

    fn write(
        &self,
        table: &str,
        change: impl FnOnce(&mut Table) -> Result<Option<Written>, String>,
    ) -> Option<u128> {
        let mut st = self.state();
        let t = st
            .tables
            .get_mut(table)
            .unwrap_or_else(|| panic!("no table {table}"));
        let stream = t.stream_arn.clone();
        let written = change(t).unwrap_or_else(|e| panic!("table {table}: {e}"))?;
        Some(append_written(&mut st, &stream, written))
    }

    /// The table's current items, in scan order.
    ///
    /// # Panics
    /// When the table does not exist.
    pub fn items(&self, table: &str) -> Vec<Value> {
        let st = self.state();
        let t = st
            .tables
            .get(table)
            .unwrap_or_else(|| panic!("no table {table}"));
        t.items.values().cloned().collect()
    }

    /// Turns point-in-time recovery on or off (it starts off); exports need it.
    ///
    /// # Panics
    /// When the table does not exist.
    pub fn set_pitr(&self, table: &str, enabled: bool) {
        let mut st = self.state();
        let t = st
            .tables
            .get_mut(table)
            .unwrap_or_else(|| panic!("no table {table}"));
        t.pitr_since = match (enabled, t.pitr_since) {
            (true, Some(since)) => Some(since),
            (true, None) => Some(now_secs()),
            (false, _) => None,
        };
    }

    /// The directory standing for S3: an export to bucket `b` writes under
    /// `dir/b/`.
    pub fn set_export_root(&self, dir: &Path) {
        self.state().export_root = Some(dir.to_owned());
    }

    /// How many exports were started (an export asked for again under its
    /// client token is one).
    pub fn exports_started(&self) -> usize {
        self.state().exports.len()
    }
}

fn append_written(st: &mut State, stream: &str, written: Written) -> u128 {
    let event = match (&written.old, &written.new) {
        (None, _) => "INSERT",
        (Some(_), Some(_)) => "MODIFY",
        (Some(_), None) => "REMOVE",
    };
    let size = item_size(&written.keys)
        + written.old.as_ref().map_or(0, item_size)
        + written.new.as_ref().map_or(0, item_size);
    let shard = st.shard_for(stream, written.key.hash);
    let change = Change {
        event: event.to_owned(),
        keys: written.keys,
        old: written.old,
        new: written.new,
        created: now_secs(),
        size,
    };
    st.append(stream, &shard, change)
}
