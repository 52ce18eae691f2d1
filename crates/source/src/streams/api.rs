//! [`StreamsApi`]: the three DynamoDB Streams calls the reader needs, and
//! nothing else, so tests and other back ends can stand in for the SDK.

use std::future::Future;

use crate::streams::tracker::ShardInfo;

/// One page of a DescribeStream listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardPage {
    /// The shards on this page.
    pub shards: Vec<ShardInfo>,
    /// Where the next page starts (`ExclusiveStartShardId`); `None` on the
    /// last page.
    pub last_evaluated: Option<String>,
    /// The table the stream belongs to.
    pub table: Option<String>,
}

/// Where a shard iterator starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IteratorStart {
    /// The oldest record the shard still holds.
    TrimHorizon,
    /// Just after the newest record.
    Latest,
    /// Just after the record with this sequence number.
    After(String),
}

/// One GetRecords answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordsPage {
    /// Each record as stream-record JSON (the GetRecords wire shape), so
    /// that every source parses records the same way.
    pub records: Vec<String>,
    /// The iterator for the next call; `None` once a closed shard is read
    /// to its end.
    pub next_iterator: Option<String>,
}

/// What kind of failure a call met: the reader's next step depends on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApiErrorKind {
    /// The iterator is older than 15 minutes: get a new one.
    ExpiredIterator,
    /// The records asked for were trimmed (24-hour retention): a gap.
    TrimmedData,
    /// The stream or shard does not exist (any more).
    NotFound,
    /// Throttled (`LimitExceededException` and the like): back off, retry.
    Throttled,
    /// A server error, timeout or connection failure: back off, retry.
    Transient,
    /// Anything else (credentials, permissions, a malformed answer).
    Fatal,
}

/// A failed call.
#[derive(Debug, thiserror::Error)]
#[error("{operation}: {message}")]
pub struct ApiError {
    /// How the reader should react.
    pub kind: ApiErrorKind,
    /// The call, e.g. `GetRecords`.
    pub operation: &'static str,
    /// The service's error code and message, or what went wrong locally.
    pub message: String,
}

impl ApiError {
    /// True when the same call may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind, ApiErrorKind::Throttled | ApiErrorKind::Transient)
    }
}

/// The DynamoDB Streams calls the reader makes.
pub trait StreamsApi: Send + Sync + 'static {
    /// One page of the stream's shards, starting after `exclusive_start`.
    fn describe_stream(
        &self,
        stream_arn: &str,
        exclusive_start: Option<&str>,
    ) -> impl Future<Output = Result<ShardPage, ApiError>> + Send;

    /// An iterator for `shard`.
    fn get_shard_iterator(
        &self,
        stream_arn: &str,
        shard: &str,
        start: &IteratorStart,
    ) -> impl Future<Output = Result<String, ApiError>> + Send;

    /// Up to `limit` records from `iterator`.
    fn get_records(
        &self,
        iterator: &str,
        limit: u32,
    ) -> impl Future<Output = Result<RecordsPage, ApiError>> + Send;
}
