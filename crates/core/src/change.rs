//! One change of one item, as read from a stream.

use std::sync::Arc;

use crate::item::Item;
use crate::position::SequenceNumber;

/// What happened to the item (Debezium's `op` letters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// `c`: INSERT.
    Insert,
    /// `u`: MODIFY.
    Modify,
    /// `d`: REMOVE (including TTL expiry).
    Remove,
    /// `r`: a snapshot read of an existing item.
    Read,
}

impl Op {
    /// The one-letter code used in outputs.
    pub fn code(self) -> &'static str {
        match self {
            Op::Insert => "c",
            Op::Modify => "u",
            Op::Remove => "d",
            Op::Read => "r",
        }
    }

    /// Maps a stream record's `eventName`.
    pub fn from_event_name(name: &str) -> Option<Op> {
        match name {
            "INSERT" => Some(Op::Insert),
            "MODIFY" => Some(Op::Modify),
            "REMOVE" => Some(Op::Remove),
            _ => None,
        }
    }
}

/// Where a change came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceInfo {
    /// Table name.
    pub table: Arc<str>,
    /// The stream's ARN, when known.
    pub stream_arn: Option<Arc<str>>,
    /// Shard id (for replayed captures, the capture file's name).
    pub shard_id: Arc<str>,
    /// The record's sequence number within the shard.
    pub sequence_number: SequenceNumber,
    /// The stream record's `eventID`.
    pub event_id: String,
    /// `ApproximateCreationDateTime` in milliseconds since the epoch.
    pub approx_creation_ms: Option<i64>,
    /// True when DynamoDB's TTL process deleted the item.
    pub ttl_delete: bool,
    /// Set on snapshot rows ([`Op::Read`]): which snapshot read the item.
    pub snapshot: Option<SnapshotRead>,
}

/// Which snapshot read an item, when, and where the row stands in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotRead {
    /// The snapshot's id; with the item's key, the row's identity.
    pub id: Arc<str>,
    /// When the item was read, in milliseconds since the epoch.
    pub read_ms: i64,
    /// The row's place in the snapshot.
    pub marker: SnapshotMarker,
}

/// A snapshot row's place, as Debezium's `source.snapshot` says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotMarker {
    /// The snapshot's first row.
    First,
    /// A row in between.
    Row,
    /// The snapshot's last row.
    Last,
}

impl SnapshotMarker {
    /// `first`, `true` or `last`.
    pub fn code(self) -> &'static str {
        match self {
            SnapshotMarker::First => "first",
            SnapshotMarker::Row => "true",
            SnapshotMarker::Last => "last",
        }
    }

    /// Reads [`SnapshotMarker::code`] back.
    pub fn from_code(code: &str) -> Option<SnapshotMarker> {
        Some(match code {
            "first" => SnapshotMarker::First,
            "true" => SnapshotMarker::Row,
            "last" => SnapshotMarker::Last,
            _ => return None,
        })
    }
}

/// One change: keys, images and position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// What happened.
    pub op: Op,
    /// The primary key attributes.
    pub keys: Item,
    /// The item before the change (MODIFY, REMOVE with OLD_IMAGE views).
    pub old_image: Option<Item>,
    /// A MODIFY's old image as the stream sent it (DynamoDB JSON, checked
    /// only as JSON), when the source was told that no sink reads the old
    /// image of a modify; `old_image` is then `None`. Reading it into an
    /// item is a third of the parse on a typical stream, for nothing when
    /// every sink writes rows of the new image. Dead letters write it back.
    pub unread_old_image: Option<Box<str>>,
    /// The item after the change (INSERT, MODIFY with NEW_IMAGE views).
    pub new_image: Option<Item>,
    /// Position and provenance.
    pub source: SourceInfo,
}

impl Change {
    /// The item state a flat row shows: the new image, or for deletes the old
    /// one; the keys alone when the stream carries no image.
    pub fn row_image(&self) -> &Item {
        let image = match self.op {
            Op::Remove => self.old_image.as_ref(),
            _ => self.new_image.as_ref(),
        };
        image.unwrap_or(&self.keys)
    }
}
