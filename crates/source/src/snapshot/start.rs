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

use crate::streams::api::{ApiError, ApiErrorKind, IteratorStart, StreamsApi};
use crate::streams::{EMPTY_PAGES_AT_TIP, ShardInfo};

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
        shard_end(api, stream_arn, &shard.id, shard.closed)
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
/// without a next iterator (the end of a closed shard) or, on an open
/// shard, until [`EMPTY_PAGES_AT_TIP`] pages in a row come back empty (its
/// tip).
async fn shard_end<A: StreamsApi>(
    api: &A,
    stream_arn: &str,
    shard: &str,
    closed: bool,
) -> Result<Option<SequenceNumber>, ApiError> {
    let mut last: Option<SequenceNumber> = None;
    let mut from = IteratorStart::TrimHorizon;
    let mut empty_pages = 0;
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
            empty_pages = if records.is_empty() {
                empty_pages + 1
            } else {
                0
            };
            match next {
                // A closed shard ends where its iterators do.
                Some(next) if closed || empty_pages < EMPTY_PAGES_AT_TIP => iterator = next,
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
        let answer = f().await;
        // Taking S0 reads every open shard to its end before the run loop
        // starts: each answer is a sign of life for `/healthz`.
        dynamo_cdc_core::alive::still_waiting();
        match answer {
            Err(e) if e.is_retryable() && attempt + 1 < ATTEMPTS => {
                tokio::time::sleep(Duration::from_millis(100 << attempt.min(5))).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streams::api::{RecordsPage, ShardPage};

    /// One shard's pages, in order: each a list of sequence numbers. Past
    /// the last page a closed shard has no next iterator and an open one
    /// answers empty pages.
    struct Pages {
        pages: Vec<Vec<u64>>,
        closed: bool,
    }

    impl StreamsApi for Pages {
        async fn describe_stream(&self, _: &str, _: Option<&str>) -> Result<ShardPage, ApiError> {
            Ok(ShardPage {
                shards: vec![ShardInfo {
                    id: "s".into(),
                    parent: None,
                    closed: self.closed,
                }],
                ..ShardPage::default()
            })
        }

        async fn get_shard_iterator(
            &self,
            _: &str,
            _: &str,
            start: &IteratorStart,
        ) -> Result<String, ApiError> {
            assert_eq!(*start, IteratorStart::TrimHorizon);
            Ok("0".into())
        }

        async fn get_records(&self, iterator: &str, _: u32) -> Result<RecordsPage, ApiError> {
            let at: usize = iterator.parse().expect("an iterator of ours");
            let records: Vec<String> = self
                .pages
                .get(at)
                .into_iter()
                .flatten()
                .map(|seq| format!(r#"{{"dynamodb":{{"SequenceNumber":"{seq}"}}}}"#))
                .collect();
            let next = (at + 1).to_string();
            let ended = self.closed && at + 1 >= self.pages.len();
            Ok(RecordsPage::from_records(
                &records,
                (!ended).then_some(&*next),
            ))
        }
    }

    fn end_of(pages: Vec<Vec<u64>>, closed: bool) -> BTreeMap<String, SequenceNumber> {
        let api = Pages { pages, closed };
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(stream_end(&api, "arn"))
            .unwrap()
    }

    fn seq(n: u64) -> SequenceNumber {
        SequenceNumber::parse(&n.to_string()).unwrap()
    }

    #[test]
    fn a_closed_shard_is_read_to_its_last_iterator_past_empty_pages() {
        let pages = vec![
            vec![],
            vec![],
            vec![10, 11],
            vec![],
            vec![],
            vec![],
            vec![12],
            vec![],
        ];
        assert_eq!(end_of(pages, true)["s"], seq(12));
    }

    #[test]
    fn an_open_shard_ends_at_a_run_of_empty_pages_not_at_the_first() {
        let pages = vec![vec![], vec![], vec![10], vec![], vec![11, 12]];
        assert_eq!(end_of(pages, false)["s"], seq(12));
        // Empty pages only, as many as taken for the tip, then records:
        // those are after the tip as far as S0 can tell.
        let mut pages = vec![vec![]; EMPTY_PAGES_AT_TIP];
        pages.push(vec![20]);
        assert!(end_of(pages, false).is_empty(), "nothing before the tip");
    }
}
