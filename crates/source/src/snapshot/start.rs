//! S0: where the stream stands before a snapshot reads its first item.
//!
//! Every shard is read from its oldest record to its current end without
//! delivering anything (a closed shard to its last record), and the last
//! sequence number of each is kept. The snapshot's first read comes after
//! all of it, so every change up to S0 is inside the snapshot, and the
//! stream, read after S0, carries every change after it. A `LATEST`
//! iterator would do neither: it has no position to record, and it expires.

use std::collections::BTreeMap;
use std::time::Duration;

use dynamo_cdc_core::SequenceNumber;
use futures_util::StreamExt as _;

use crate::streams::ShardInfo;
use crate::streams::api::{ApiError, ApiErrorKind, IteratorStart, StreamsApi};

/// Shards read at once.
const SHARDS_AT_ONCE: usize = 16;

/// How often a call that may pass is tried before S0 gives up.
const ATTEMPTS: u32 = 8;

/// Per shard of `stream_arn`, the last sequence number it holds now;
/// shards without records are left out (everything in them is new).
///
/// # Errors
/// When the stream cannot be listed or read, after retries.
pub(crate) async fn stream_end<A: StreamsApi>(
    api: &A,
    stream_arn: &str,
) -> Result<BTreeMap<String, SequenceNumber>, ApiError> {
    let shards = list_shards(api, stream_arn).await?;
    // Shards are read side by side: each has its own GetRecords limit, and
    // a busy stream's shards hold hours of records.
    let mut reads = futures_util::stream::iter(shards.iter().map(|shard| async move {
        shard_end(api, stream_arn, &shard.id)
            .await
            .map(|last| (shard.id.clone(), last))
    }))
    .buffer_unordered(SHARDS_AT_ONCE);
    let mut end = BTreeMap::new();
    while let Some(read) = reads.next().await {
        if let (shard, Some(last)) = read? {
            end.insert(shard, last);
        }
    }
    Ok(end)
}

/// Every shard of `stream_arn` (all DescribeStream pages), retrying what
/// may pass.
///
/// # Errors
/// When the stream cannot be listed, after retries.
pub(crate) async fn list_shards<A: StreamsApi>(
    api: &A,
    stream_arn: &str,
) -> Result<Vec<ShardInfo>, ApiError> {
    let mut shards = Vec::new();
    let mut start: Option<String> = None;
    loop {
        let page = retried(|| api.describe_stream(stream_arn, start.as_deref())).await?;
        shards.extend(page.shards);
        match page.last_evaluated {
            Some(next) if Some(&next) != start.as_ref() => start = Some(next),
            _ => return Ok(shards),
        }
    }
}

/// The last sequence number of one shard: read until a page comes back
/// empty (the tip of an open shard) or without a next iterator (the end of
/// a closed one).
async fn shard_end<A: StreamsApi>(
    api: &A,
    stream_arn: &str,
    shard: &str,
) -> Result<Option<SequenceNumber>, ApiError> {
    let mut last: Option<SequenceNumber> = None;
    let mut from = IteratorStart::TrimHorizon;
    'iterator: loop {
        let mut iterator = match retried(|| api.get_shard_iterator(stream_arn, shard, &from)).await
        {
            Ok(it) => it,
            // Gone since the listing: nothing of it can be read anyway.
            Err(e) if e.kind == ApiErrorKind::NotFound => return Ok(last),
            Err(e) => return Err(e),
        };
        loop {
            let page = match retried(|| api.get_records(&iterator, 1000)).await {
                Ok(page) => page,
                Err(e) if e.kind == ApiErrorKind::ExpiredIterator => {
                    from = last
                        .clone()
                        .map_or(IteratorStart::TrimHorizon, IteratorStart::After);
                    continue 'iterator;
                }
                // Trimmed while being read: the oldest still held is later.
                Err(e) if e.kind == ApiErrorKind::TrimmedData => {
                    from = IteratorStart::TrimHorizon;
                    continue 'iterator;
                }
                Err(e) if e.kind == ApiErrorKind::NotFound => return Ok(last),
                Err(e) => return Err(e),
            };
            let (records, next) = page.split().map_err(|message| ApiError {
                kind: ApiErrorKind::Fatal,
                operation: "GetRecords",
                message,
            })?;
            for record in &records {
                if let Some(seq) = sequence_number(record)
                    && last.as_ref().is_none_or(|l| seq > *l)
                {
                    last = Some(seq);
                }
            }
            match next {
                Some(next) if !records.is_empty() => iterator = next,
                _ => return Ok(last),
            }
        }
    }
}

fn sequence_number(record: &str) -> Option<SequenceNumber> {
    #[derive(serde::Deserialize)]
    struct Record {
        dynamodb: Body,
    }
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(rename = "SequenceNumber")]
        sequence_number: String,
    }
    let r: Record = serde_json::from_str(record).ok()?;
    SequenceNumber::parse(&r.dynamodb.sequence_number).ok()
}

/// Calls `f` until it answers or fails for a reason waiting does not fix.
async fn retried<T, F, Fut>(mut f: F) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    let mut attempt = 0;
    loop {
        match f().await {
            Err(e) if e.is_retryable() && attempt + 1 < ATTEMPTS => {
                tokio::time::sleep(Duration::from_millis(100 << attempt.min(5))).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}
