//! [`StreamsApi`]: the three DynamoDB Streams calls the reader needs, and
//! nothing else, so tests and other back ends can stand in for the SDK.

use std::future::Future;

use dynamo_cdc_core::SequenceNumber;

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
    After(SequenceNumber),
}

/// One GetRecords answer, as the service sent it.
///
/// The body is kept whole (`{"Records": [...], "NextShardIterator": ...}`)
/// and read by the page parser the replay source uses, in one pass and off
/// the async runtime, instead of record by record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordsPage {
    /// The response body: GetRecords JSON. `NextShardIterator` is absent
    /// or null once a closed shard is read to its end.
    pub body: Vec<u8>,
}

impl RecordsPage {
    /// A page of `records` (each stream-record JSON, the GetRecords wire
    /// shape) followed by `next_iterator`: for implementations that build
    /// the answer themselves.
    pub fn from_records(records: &[String], next_iterator: Option<&str>) -> Self {
        let mut body = String::from(r#"{"Records":["#);
        for (i, record) in records.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(record);
        }
        body.push(']');
        if let Some(next) = next_iterator {
            body.push_str(r#","NextShardIterator":"#);
            body.push_str(&serde_json::Value::from(next).to_string());
        }
        body.push('}');
        RecordsPage {
            body: body.into_bytes(),
        }
    }

    /// The page's records, each as its JSON text, and the next iterator:
    /// for callers that look at records one at a time (tools, tests). The
    /// reader itself parses the body whole.
    ///
    /// # Errors
    /// When the body is not a GetRecords answer.
    pub fn split(&self) -> Result<(Vec<String>, Option<String>), String> {
        #[derive(serde::Deserialize)]
        struct Split<'a> {
            #[serde(rename = "Records", borrow, default)]
            records: Vec<&'a serde_json::value::RawValue>,
            #[serde(rename = "NextShardIterator", default)]
            next_iterator: Option<String>,
        }
        let page: Split<'_> = serde_json::from_slice(&self.body)
            .map_err(|e| format!("GetRecords answered with a body that is not a page: {e}"))?;
        Ok((
            page.records.iter().map(|r| r.get().to_owned()).collect(),
            page.next_iterator,
        ))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_built_from_records_splits_back_into_them() {
        let records = [
            r#"{"eventID":"1","dynamodb":{"Keys":{"k":{"S":"a\"b"}}}}"#.to_owned(),
            r#"{"eventID":"2"}"#.to_owned(),
        ];
        let page = RecordsPage::from_records(&records, Some("it\"s"));
        let (split, next) = page.split().unwrap();
        assert_eq!(split, records);
        assert_eq!(next.as_deref(), Some("it\"s"));
        let (split, next) = RecordsPage::from_records(&[], None).split().unwrap();
        assert!(split.is_empty() && next.is_none());
        let html = RecordsPage {
            body: b"<html>".to_vec(),
        };
        assert!(html.split().unwrap_err().contains("not a page"));
    }
}
