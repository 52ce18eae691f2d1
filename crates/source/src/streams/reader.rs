//! One shard, read from its start position to its end: iterators, paging,
//! expiry, throttling and trimmed data.

use std::sync::Arc;
use std::time::Duration;

use dynamo_cdc_core::{DeadLetter, Gap, Origin, SequenceNumber, SourceBatch};
use rand::Rng as _;
use tokio::sync::{mpsc, watch};

use crate::record::{RecordContext, parse_record};
use crate::streams::api::{ApiError, ApiErrorKind, IteratorStart, StreamsApi};
use crate::streams::{Event, OnGap, Settings, StreamsError};

/// How a shard reader ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Read to its end: GetRecords gave no next iterator.
    Drained,
    /// The shard no longer exists and nothing of it was lost that this
    /// process was asked to keep.
    Gone,
    /// Stopped early (shutdown, or the pipeline went away).
    Stopped,
}

/// Everything a shard reader needs.
pub(crate) struct ShardJob<A> {
    pub api: Arc<A>,
    pub settings: Arc<Settings>,
    pub stream_arn: Arc<str>,
    pub table: Arc<str>,
    pub shard: Arc<str>,
    /// Where to start: after the resume position, or per `start`.
    pub start: IteratorStart,
    pub events: mpsc::Sender<Event>,
    pub stop: watch::Receiver<bool>,
    /// True while retrying a failed call (see `Activity::trouble`).
    pub troubled: bool,
}

/// Backoff with full jitter: up to 100 ms doubled per attempt, capped at
/// 5 s, so many readers throttled together do not retry together.
fn backoff(attempt: u32) -> Duration {
    let cap = 100u64.saturating_mul(1 << attempt.min(6)).min(5_000);
    Duration::from_millis(rand::rng().random_range(cap / 4..=cap))
}

impl<A: StreamsApi> ShardJob<A> {
    /// Reads the shard until it ends, the pipeline stops, or a failure that
    /// must stop the pipeline (sent as an event before returning).
    pub(crate) async fn run(mut self) -> Outcome {
        let outcome = self.read().await;
        // A reader that ends is in trouble no more.
        self.settings.activity.trouble(&mut self.troubled, false);
        match outcome {
            Ok(outcome) => outcome,
            Err(e) => {
                // The pipeline stops on this; if it is already gone, so are we.
                let _ = self.events.send(Event::Failed(e)).await;
                Outcome::Stopped
            }
        }
    }

    async fn read(&mut self) -> Result<Outcome, StreamsError> {
        let mut last_read: Option<String> = match &self.start {
            IteratorStart::After(seq) => Some(seq.clone()),
            _ => None,
        };
        let mut pending_gap: Option<Gap> = None;
        let mut iterator = match self.acquire(&mut last_read, &mut pending_gap).await? {
            Some(it) => it,
            None => return Ok(self.ended_early()),
        };
        let mut ctx = RecordContext::new(self.shard.clone(), Some(self.table.clone()));
        let origin: Arc<str> = self.stream_arn.clone();
        let mut attempt = 0;
        loop {
            if self.stopping() {
                return Ok(Outcome::Stopped);
            }
            let page = match self
                .api
                .get_records(&iterator, self.settings.records_per_call)
                .await
            {
                Ok(page) => {
                    attempt = 0;
                    self.settings.activity.trouble(&mut self.troubled, false);
                    page
                }
                Err(e) if e.is_retryable() => {
                    tracing::warn!(table = %self.table, shard = %self.shard, error = %e, "retrying");
                    // Trouble is not quiet: `until_idle` waits it out.
                    self.settings.activity.trouble(&mut self.troubled, true);
                    if !self.pause(backoff(attempt)).await {
                        return Ok(Outcome::Stopped);
                    }
                    attempt += 1;
                    continue;
                }
                Err(e) if e.kind == ApiErrorKind::ExpiredIterator => {
                    tracing::info!(table = %self.table, shard = %self.shard, "iterator expired; getting a new one");
                    if let Some(seq) = &last_read {
                        self.start = IteratorStart::After(seq.clone());
                    }
                    match self.acquire(&mut last_read, &mut pending_gap).await? {
                        Some(it) => iterator = it,
                        None => return Ok(self.ended_early()),
                    }
                    continue;
                }
                Err(e) if e.kind == ApiErrorKind::TrimmedData => {
                    self.on_gap(last_read.as_deref(), &e, &mut pending_gap)
                        .await?;
                    self.start = IteratorStart::TrimHorizon;
                    match self.acquire(&mut last_read, &mut pending_gap).await? {
                        Some(it) => iterator = it,
                        None => return Ok(self.ended_early()),
                    }
                    continue;
                }
                Err(e) if e.kind == ApiErrorKind::NotFound => {
                    return self.vanished(last_read.as_deref(), &e).await;
                }
                Err(e) => return Err(StreamsError::Api(e)),
            };
            let mut batch = SourceBatch::default();
            if let Some(mut gap) = pending_gap.take() {
                gap.resumed_at = page
                    .records
                    .first()
                    .and_then(|r| parse_record(r, &mut ctx).ok())
                    .map(|c| c.source.sequence_number.to_string());
                tracing::error!(
                    table = %gap.table,
                    shard = %gap.shard,
                    after = gap.after.as_deref().unwrap_or("the start"),
                    resumed_at = gap.resumed_at.as_deref().unwrap_or("(no record yet)"),
                    "records were trimmed before delivery; going on from the oldest record (on_gap = \"skip\")"
                );
                batch.gaps.push(gap);
            }
            for (index, raw) in page.records.iter().enumerate() {
                let at = Origin {
                    origin: origin.clone(),
                    line: None,
                    record_index: Some(index),
                };
                match parse_record(raw, &mut ctx) {
                    Ok(change) => {
                        let seq = change.source.sequence_number.to_string();
                        if last_read
                            .as_deref()
                            .is_some_and(|last| !is_after(&seq, last))
                        {
                            continue; // already read (a re-acquired iterator)
                        }
                        last_read = Some(seq);
                        batch.changes.push(change);
                        batch.origins.push(at);
                    }
                    Err((error, hints)) => {
                        if let Some(seq) = &hints.sequence_number {
                            if last_read
                                .as_deref()
                                .is_some_and(|last| !is_after(seq, last))
                            {
                                continue;
                            }
                            last_read = Some(seq.clone());
                        }
                        batch.dead_letters.push(DeadLetter {
                            origin: origin.to_string(),
                            line: None,
                            record_index: Some(index),
                            table: hints.table.or_else(|| Some(self.table.to_string())),
                            shard: Some(self.shard.to_string()),
                            sequence_number: hints.sequence_number,
                            error: error.0,
                            raw: raw.clone(),
                        });
                    }
                }
            }
            let had_records = !page.records.is_empty();
            if had_records {
                self.settings.activity.touch();
            }
            if !batch.is_empty() && self.events.send(Event::Batch(batch)).await.is_err() {
                return Ok(Outcome::Stopped);
            }
            match page.next_iterator {
                None => return Ok(Outcome::Drained),
                Some(next) => iterator = next,
            }
            let wait = if had_records {
                self.settings.poll_interval
            } else {
                self.settings.idle_poll_interval
            };
            if !self.pause(wait).await {
                return Ok(Outcome::Stopped);
            }
        }
    }

    /// An iterator at `self.start`, retrying what may pass. `None` when the
    /// shard no longer exists (after handling what that means).
    async fn acquire(
        &mut self,
        last_read: &mut Option<String>,
        pending_gap: &mut Option<Gap>,
    ) -> Result<Option<String>, StreamsError> {
        let mut attempt = 0;
        loop {
            if self.stopping() {
                return Ok(None);
            }
            match self
                .api
                .get_shard_iterator(&self.stream_arn, &self.shard, &self.start)
                .await
            {
                Ok(it) => {
                    self.settings.activity.trouble(&mut self.troubled, false);
                    return Ok(Some(it));
                }
                Err(e) if e.is_retryable() => {
                    tracing::warn!(table = %self.table, shard = %self.shard, error = %e, "retrying");
                    // Trouble is not quiet: `until_idle` waits it out.
                    self.settings.activity.trouble(&mut self.troubled, true);
                    if !self.pause(backoff(attempt)).await {
                        return Ok(None);
                    }
                    attempt += 1;
                }
                Err(e) if e.kind == ApiErrorKind::TrimmedData => {
                    self.on_gap(last_read.as_deref(), &e, pending_gap).await?;
                    self.start = IteratorStart::TrimHorizon;
                }
                Err(e) if e.kind == ApiErrorKind::NotFound => {
                    self.vanished(last_read.as_deref(), &e).await?;
                    return Ok(None);
                }
                Err(e) => return Err(StreamsError::Api(e)),
            }
        }
    }

    fn ended_early(&self) -> Outcome {
        if self.stopping() {
            Outcome::Stopped
        } else {
            Outcome::Gone
        }
    }

    /// Records after `after` were trimmed: fail, or note the gap and go on.
    async fn on_gap(
        &self,
        after: Option<&str>,
        error: &ApiError,
        pending: &mut Option<Gap>,
    ) -> Result<(), StreamsError> {
        match self.settings.on_gap {
            OnGap::Fail => Err(StreamsError::Gap {
                table: self.table.to_string(),
                shard: self.shard.to_string(),
                after: after.map(str::to_owned),
                oldest: self.oldest_held().await,
                reason: error.message.clone(),
            }),
            OnGap::Skip => {
                if pending.is_none() {
                    *pending = Some(Gap {
                        table: self.table.to_string(),
                        shard: self.shard.to_string(),
                        after: after.map(str::to_owned),
                        resumed_at: None,
                        detected_at_ms: now_ms(),
                        reason: error.to_string(),
                    });
                }
                Ok(())
            }
        }
    }

    /// The shard is gone. If this process had delivered part of it, the
    /// rest may be lost: that is a gap.
    async fn vanished(
        &self,
        after: Option<&str>,
        error: &ApiError,
    ) -> Result<Outcome, StreamsError> {
        let Some(after) = after else {
            tracing::warn!(table = %self.table, shard = %self.shard, error = %error, "shard no longer exists; nothing of it was read");
            return Ok(Outcome::Gone);
        };
        let mut pending = None;
        self.on_gap(Some(after), error, &mut pending).await?;
        if let Some(gap) = pending {
            tracing::error!(
                table = %gap.table,
                shard = %gap.shard,
                after = %after,
                "shard no longer exists before it was read to its end; its unread records are lost (on_gap = \"skip\")"
            );
            let batch = SourceBatch {
                gaps: vec![gap],
                ..SourceBatch::default()
            };
            if self.events.send(Event::Batch(batch)).await.is_err() {
                return Ok(Outcome::Stopped);
            }
        }
        Ok(Outcome::Gone)
    }

    /// The oldest sequence number the shard still holds, for error messages.
    async fn oldest_held(&self) -> Option<String> {
        let it = self
            .api
            .get_shard_iterator(&self.stream_arn, &self.shard, &IteratorStart::TrimHorizon)
            .await
            .ok()?;
        let page = self.api.get_records(&it, 1).await.ok()?;
        let mut ctx = RecordContext::new(self.shard.clone(), Some(self.table.clone()));
        let first = page.records.first()?;
        match parse_record(first, &mut ctx) {
            Ok(c) => Some(c.source.sequence_number.to_string()),
            Err((_, hints)) => hints.sequence_number,
        }
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Sleeps, waking early on shutdown; false when stopping.
    async fn pause(&mut self, wait: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(wait) => !self.stopping(),
            _ = self.stop.changed() => false,
        }
    }
}

/// `a > b` for sequence numbers (numeric order), as text: unparsable ones
/// count as new, so nothing is dropped on their account.
fn is_after(a: &str, b: &str) -> bool {
    match (SequenceNumber::parse(a), SequenceNumber::parse(b)) {
        (Ok(a), Ok(b)) => a > b,
        _ => true,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempt in 0..20 {
            let d = backoff(attempt);
            assert!(d <= Duration::from_secs(5), "{attempt}: {d:?}");
        }
        assert!(backoff(0) <= Duration::from_millis(100));
    }

    #[test]
    fn sequence_numbers_compare_as_numbers() {
        assert!(is_after("100", "99"));
        assert!(!is_after("99", "100"));
        assert!(!is_after("100", "100"));
    }
}
