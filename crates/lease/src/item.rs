//! What the lease table holds: one item per lease (a source table's
//! stream), one per position (table, sink, shard), one per sink's resume
//! state (table, sink) and, with `start = "latest"`, one per table's first
//! start. Every item has the string key `key`; its other
//! attributes depend on its kind.

use std::fmt;

/// The key attribute of every item.
pub const KEY: &str = "key";

/// The lease on one source table: whoever owns it reads the table's stream
/// and writes its changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The source table.
    pub table: String,
    /// The worker holding it; `None` when free.
    pub owner: Option<String>,
    /// Which run of the owner wrote it: a random token each process draws
    /// at start. It tells a restarted worker's old leases (token not its
    /// own, counter standing still) from a second live process configured
    /// with the same `worker_id` (token not its own, counter moving).
    /// `None` when free, and on items written by earlier versions.
    pub incarnation: Option<String>,
    /// Bumped on every write (renewal, take, claim, release): observers
    /// judge expiry by how long it stays unchanged.
    pub counter: u64,
    /// Bumped on every change of owner: the fencing token.
    pub epoch: u64,
    /// The worker that asked the owner to hand the lease over (a steal),
    /// if any.
    pub claim: Option<String>,
    /// Wall-clock time of the last write, for operators only: expiry never
    /// compares wall clocks of different hosts.
    pub renewed_ms: i64,
    /// The writer's lease duration in milliseconds (0: unknown, written by
    /// an earlier version or never held). Observers judge expiry by the
    /// longer of theirs and this: workers configured with different
    /// durations (a rolling change of `lease_duration_ms`) would otherwise
    /// take a lease its holder still trusts.
    pub duration_ms: u64,
    /// How long the writer's last writes may still land after it stops
    /// (its Kafka produce timeout), in milliseconds (0: unknown or none):
    /// a worker taking the lease from it once expired waits the longer of
    /// its own and this.
    pub settle_ms: u64,
    /// What the writer's pipeline writes to (its sinks' destinations, see
    /// [`crate::Coordinator::pipeline`]); `None` when free since created,
    /// or written by an earlier version. Two pipelines sharing a lease
    /// table would take each other's tables, and with a sink of the same
    /// kind adopt each other's positions: a worker that meets another's
    /// stops instead.
    pub pipeline: Option<String>,
}

impl Lease {
    /// A free lease, as first created.
    pub fn free(table: &str) -> Self {
        Lease {
            table: table.to_owned(),
            owner: None,
            incarnation: None,
            counter: 0,
            epoch: 0,
            claim: None,
            renewed_ms: 0,
            duration_ms: 0,
            settle_ms: 0,
            pipeline: None,
        }
    }
}

/// The last position a sink recorded for one shard (a hint: the sink's
/// own storage stays the truth).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PositionItem {
    /// Source table.
    pub table: String,
    /// Sink id.
    pub sink: String,
    /// Shard id.
    pub shard: String,
    /// Sequence number, as text.
    pub seq: String,
    /// The epoch of the lease it was written under.
    pub epoch: u64,
    /// Wall-clock time of the write, for operators only.
    pub updated_ms: i64,
}

/// A sink's opaque resume state, as recorded by the owner of `table`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateItem {
    /// Source table.
    pub table: String,
    /// Sink id.
    pub sink: String,
    /// The state as JSON text.
    pub state: String,
    /// The epoch of the lease it was written under.
    pub epoch: u64,
}

/// Where `start = "latest"` first took a table's stream at its end (see
/// `dynamo_cdc_core::LatestStart`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartItem {
    /// Source table.
    pub table: String,
    /// When, in epoch milliseconds.
    pub at_ms: i64,
    /// The shards closed then.
    pub closed: std::collections::BTreeSet<String>,
    /// The epoch of the lease it was written under.
    pub epoch: u64,
}

/// A shard of `table` read to its end with every change of it in every
/// sink (see `dynamo_cdc_core::Recorded::ended`); with no shard, the mark
/// that the table's ended shards are kept at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndedItem {
    /// Source table.
    pub table: String,
    /// The shard; `None` for the table's mark.
    pub shard: Option<String>,
    /// The epoch of the lease it was written under.
    pub epoch: u64,
}

/// Any item of the lease table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// A lease.
    Lease(Lease),
    /// A position.
    Position(PositionItem),
    /// A resume state.
    State(StateItem),
    /// A table's latest start.
    Start(StartItem),
    /// A shard read to its end, or a table's mark that they are kept.
    Ended(EndedItem),
}

/// The key of `table`'s lease item.
pub(crate) fn lease_key(table: &str) -> String {
    format!("lease/{table}")
}

impl Item {
    /// The item's key: `lease/<table>`, `position/<table>/<sink>/<shard>`,
    /// `state/<table>/<sink>`, `start/<table>`, `ended/<table>[/<shard>]`.
    /// Table names, sink ids and shard ids hold no `/`.
    pub fn key(&self) -> String {
        match self {
            Item::Lease(l) => lease_key(&l.table),
            Item::Position(p) => format!("position/{}/{}/{}", p.table, p.sink, p.shard),
            Item::State(s) => format!("state/{}/{}", s.table, s.sink),
            Item::Start(s) => format!("start/{}", s.table),
            Item::Ended(e) => match &e.shard {
                Some(shard) => format!("ended/{}/{shard}", e.table),
                None => format!("ended/{}", e.table),
            },
        }
    }

    /// The lease epoch the item was written under (a lease's own epoch).
    pub fn epoch(&self) -> u64 {
        match self {
            Item::Lease(l) => l.epoch,
            Item::Position(p) => p.epoch,
            Item::State(s) => s.epoch,
            Item::Start(s) => s.epoch,
            Item::Ended(e) => e.epoch,
        }
    }

    /// The table the item is about.
    pub fn table(&self) -> &str {
        match self {
            Item::Lease(l) => &l.table,
            Item::Position(p) => &p.table,
            Item::State(s) => &s.table,
            Item::Start(s) => &s.table,
            Item::Ended(e) => &e.table,
        }
    }
}

/// What a conditional write requires of the item it replaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    /// Nothing.
    Always,
    /// No item with this key exists.
    Absent,
    /// The item exists and its `counter` is this (compare-and-set).
    Counter(u64),
    /// No item exists, or its `epoch` is at most this: a writer never
    /// overwrites what a later owner recorded.
    EpochAtMost(u64),
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Condition::Always => write!(f, "always"),
            Condition::Absent => write!(f, "absent"),
            Condition::Counter(c) => write!(f, "counter = {c}"),
            Condition::EpochAtMost(e) => write!(f, "epoch <= {e}"),
        }
    }
}
