//! `start = "latest"` that survives a restart.
//!
//! A `LATEST` iterator carries no position: until a shard's first change
//! is committed, nothing says where its reading began. So before any shard
//! is read at its end, the first start is recorded ([`take`], then the
//! pipeline's checkpoint): the time, and the shards already closed. Every
//! later run reads a shard that still has no position from its first
//! record and leaves out what was created before that time (less
//! [`CLOCK_SLACK_MS`]), and leaves the recorded closed shards unread.
//! Nothing made after the start is lost to a crash or a restarted pass
//! before the first commit, and a shard that stays quiet for hours is
//! not read back into changes from before the start.
//!
//! The shard's pages before the start are still read (GetRecords has no
//! iterator at a time), but a shard open at the start holds at most its own
//! lifetime of them (shards are replaced about every four hours).

use std::collections::BTreeSet;

use dynamo_cdc_core::LatestStart;

use crate::snapshot::start::list_shards;
use crate::streams::api::{ApiError, StreamsApi};
use crate::streams::now_ms;

/// How much earlier than the recorded start a change may be created and
/// still be kept. `ApproximateCreationDateTime` is rounded down to the
/// second, and the service's clock is not this host's: a change made just
/// after the start may carry an earlier time. Keeping a minute of older
/// changes on a recovery is the safe side of that uncertainty.
pub const CLOCK_SLACK_MS: i64 = 60_000;

/// A table's latest start, as the source is told it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LatestFrom {
    /// What was recorded.
    pub start: LatestStart,
    /// Recorded by this run just before it started reading: open shards
    /// of the first listing are read at their end (`LATEST`). Otherwise
    /// shards without a position are read from their first record.
    pub fresh: bool,
}

impl LatestFrom {
    /// The oldest creation time kept when a shard is read from its first
    /// record, in epoch milliseconds.
    pub(crate) fn created_since(&self) -> i64 {
        self.start.at_ms.saturating_sub(CLOCK_SLACK_MS)
    }

    /// Whether `shard` was closed at the start (and is left unread).
    pub(crate) fn closed_at_start(&self, shard: &str) -> bool {
        self.start.closed.contains(shard)
    }
}

/// Takes a latest start of `stream_arn`: the shards a complete listing
/// shows closed, then the local clock. Every shard counted closed closed
/// before that time, so leaving it unread loses nothing made after it.
///
/// # Errors
/// When the stream cannot be listed, after retries.
pub async fn take<A: StreamsApi>(api: &A, stream_arn: &str) -> Result<LatestStart, ApiError> {
    let shards = list_shards(api, stream_arn).await?;
    let at_ms = now_ms();
    let closed: BTreeSet<String> = shards
        .into_iter()
        .filter(|s| s.closed)
        .map(|s| s.id)
        .collect();
    Ok(LatestStart { at_ms, closed })
}
