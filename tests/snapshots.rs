//! What the snapshot tests share: reading `_snapshots/<table>/<id>.json`,
//! items as the Kafka sink's plain JSON shows them, and waiting for a child
//! with a deadline.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use dynamo_cdc_core::{AttributeValue, Item};
use serde_json::Value;

/// One `_snapshots/<table>/<id>.json`: its id, S0 (shard to sequence
/// number) and the whole file.
pub type Announced = (String, BTreeMap<String, u128>, Value);

/// Every snapshot announced for `table` below the Parquet root (none when
/// the folder is missing).
///
/// # Panics
/// When a file is not an announcement.
pub fn announced(parquet: &Path, table: &str) -> Vec<Announced> {
    let dir = parquet.join("_snapshots").join(table);
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return out;
    };
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        let v: Value = serde_json::from_slice(&std::fs::read(&path).expect("readable"))
            .expect("an announcement is JSON");
        let s0 = v["s0"]
            .as_object()
            .expect("an S0 object")
            .iter()
            .map(|(k, s)| {
                let seq = s
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .expect("a sequence number");
                (k.clone(), seq)
            })
            .collect();
        out.push((v["id"].as_str().expect("an id").to_owned(), s0, v));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The string key attribute `name` of `item`.
///
/// # Panics
/// When the item has no such string attribute.
pub fn string_key(item: &Item, name: &str) -> String {
    match item.get(name) {
        Some(AttributeValue::S(s)) => s.to_string(),
        other => panic!("no string `{name}`: {other:?}"),
    }
}

/// A value as the Kafka sink's plain JSON shows it (numbers compared as
/// JSON numbers).
///
/// # Panics
/// Never for values the core types hold.
pub fn plain(v: &AttributeValue) -> Value {
    let b64 = |b: &[u8]| Value::String(base64::engine::general_purpose::STANDARD.encode(b));
    let number = |n: &str| serde_json::from_str::<Value>(n).expect("a number is JSON");
    match v {
        AttributeValue::S(s) => Value::String(s.to_string()),
        AttributeValue::N(n) => number(n.as_str()),
        AttributeValue::B(b) => b64(b),
        AttributeValue::Bool(b) => Value::Bool(*b),
        AttributeValue::Null => Value::Null,
        AttributeValue::Ss(v) => v.iter().map(|s| Value::String(s.clone())).collect(),
        AttributeValue::Ns(v) => v.iter().map(|n| number(n.as_str())).collect(),
        AttributeValue::Bs(v) => v.iter().map(|b| b64(b)).collect(),
        AttributeValue::L(v) => v.iter().map(plain).collect(),
        AttributeValue::M(m) => plain_item(m),
        AttributeValue::Nested(text) => plain(&text.tree()),
    }
}

/// An item as the Kafka sink's plain JSON shows it.
pub fn plain_item(item: &Item) -> Value {
    Value::Object(
        item.iter()
            .map(|(k, v)| (k.to_string(), plain(v)))
            .collect(),
    )
}

/// The child's exit status, or `None` (and the child killed) after `limit`.
///
/// # Panics
/// When the child cannot be waited for.
pub fn wait_at_most(
    child: &mut std::process::Child,
    limit: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// A table's latest state rebuilt from the Parquet rows by docs/snapshots.md's
/// rule, for snapshot `id` with its `s0`: per key the newest change after
/// S0, else the snapshot's row; a delete removes the key.
pub struct Rebuilt {
    /// Key to item.
    pub state: BTreeMap<String, Item>,
    /// Key to the snapshot's row of it.
    pub snapshot_rows: BTreeMap<String, Item>,
}

/// Rebuilds with the rule above; rows of other snapshots are left out.
///
/// # Errors
/// The key of a row the snapshot holds twice.
///
/// # Panics
/// When a change's sequence number is not a number.
pub fn rebuild(
    rows: &[crate::Row],
    id: &str,
    s0: &BTreeMap<String, u128>,
    key_of: impl Fn(&Item) -> String,
) -> Result<Rebuilt, String> {
    let ours = format!("snapshot-{id}-");
    let mut latest: BTreeMap<String, (u128, &crate::Row)> = BTreeMap::new();
    let mut snapshot_rows = BTreeMap::new();
    for row in rows {
        let key = key_of(&row.item);
        if row.op == "r" {
            if row.shard.starts_with(&ours)
                && snapshot_rows
                    .insert(key.clone(), row.item.clone())
                    .is_some()
            {
                return Err(key);
            }
            continue;
        }
        let seq: u128 = row.seq.parse().expect("a sequence number");
        // Changes up to S0 are in the table the snapshot read.
        if s0.get(&row.shard).is_some_and(|&s| seq <= s) {
            continue;
        }
        if latest.get(&key).is_none_or(|(s, _)| *s < seq) {
            latest.insert(key, (seq, row));
        }
    }
    let mut state = BTreeMap::new();
    for key in latest.keys().chain(snapshot_rows.keys()) {
        let item = match latest.get(key) {
            Some((_, row)) if row.op == "d" => None,
            Some((_, row)) => Some(row.item.clone()),
            None => snapshot_rows.get(key).cloned(),
        };
        if let Some(item) = item {
            state.insert(key.clone(), item);
        }
    }
    Ok(Rebuilt {
        state,
        snapshot_rows,
    })
}
