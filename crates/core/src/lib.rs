//! The change model shared by every part of dynamo-cdc.
//!
//! - [`AttributeValue`] and [`Item`]: DynamoDB values without loss, parsed
//!   from and written as DynamoDB JSON, with DynamoDB's own limits checked.
//! - [`Number`]: exact decimals in canonical form (never a float).
//! - [`Change`], [`Op`], [`SourceInfo`]: one stream record, typed.
//! - [`SequenceNumber`], [`ShardKey`], [`Positions`]: how far each sink got.
//! - [`Source`], [`Sink`], [`CheckpointStore`], [`DeadLetter`]: the seams the
//!   pipeline drives, with [`SinkError`]'s [`ErrorKind`] to branch on.
//! - [`ConfigError`]: what every component's config check returns.
//! - [`durable`]: what a local file needs to survive a power loss.

pub mod alive;
mod attribute;
mod base64_decode;
mod change;
mod config;
pub mod durable;
mod item;
mod json_scan;
mod nested;
mod number;
mod outage;
mod position;
mod refused;
mod seam;
mod tag;
mod text;
mod write_pace;

pub use attribute::{
    AttributeValue, ItemSeed, MAX_NESTING, PathName, PathStack, parse_item, write_json_string,
};
pub use base64_decode::decode_base64;
pub use change::{Change, Op, SnapshotMarker, SnapshotRead, SourceInfo};
pub use config::{ConfigError, Secret, check_aws_endpoint};
pub use item::{Item, Iter as ItemIter};
pub use json_scan::{copy_plain, json_special_position, special_mask};
pub use nested::NestedText;
pub use number::{MAX_SIGNIFICANT_DIGITS, Number, NumberError};
pub use outage::{Outage, OutageLine, STILL_DOWN_EVERY, SharedOutage};
pub use position::{BadSequenceNumber, Positions, SequenceNumber, ShardKey};
pub use refused::Refused;
pub use seam::{
    CheckpointStore, DeadLetter, ErrorKind, Gap, LatestStart, MemoryCheckpoints, Origin, Recorded,
    Rejected, ShardEnded, Sink, SinkError, SinkRecord, SinkStats, SnapshotRecord, Source,
    SourceBatch, StoreError, TABLE_STATES, WriteGuard, stable_hash,
};
pub use tag::writer_tag;
pub use text::Text;
pub use write_pace::{CHECKPOINT_WRITE_INTERVAL, WritePace};
