//! One shard, read from its start position to its end: iterators, paging,
//! expiry, throttling and trimmed data.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dynamo_cdc_core::{Gap, SequenceNumber, ShardEnded, ShardKey, SourceBatch};
use rand::Rng as _;
use tokio::sync::{mpsc, watch};

use crate::events::ShardCallRetried;
use crate::streams::api::{ApiError, ApiErrorKind, IteratorStart, StreamsApi};
use crate::streams::board::ShardBoard;
use crate::streams::latest::CLOCK_SLACK_MS;
use crate::streams::page_batch::Keep;
use crate::streams::{EMPTY_PAGES_AT_TIP, Event, OnGap, Settings, StreamsError, now_ms};

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
    /// The table and shard.
    pub key: ShardKey,
    /// Where to start: after the resume position, or per `start`.
    pub start: IteratorStart,
    /// Changes created before this (epoch milliseconds) are left out: the
    /// shard is read from its first record after a latest start.
    pub created_since: Option<i64>,
    pub events: mpsc::Sender<Event>,
    pub stop: watch::Receiver<bool>,
    pub board: Arc<ShardBoard>,
    /// True while retrying a failed call (see `Activity::trouble`).
    pub troubled: bool,
    /// This reader's entry in `Activity` while it runs.
    pub watch: Option<u64>,
}

/// Throttled calls in a row (a second or so of backoff) before throttling
/// is logged as an outage.
const THROTTLES_BEFORE_OUTAGE: u32 = 2;

/// Backoff with full jitter: up to 100 ms doubled per attempt, capped at
/// 5 s, so many readers throttled together do not retry together.
fn backoff(attempt: u32) -> Duration {
    let cap = 100u64.saturating_mul(1 << attempt.min(6)).min(5_000);
    Duration::from_millis(rand::rng().random_range(cap / 4..=cap))
}

impl<A: StreamsApi> ShardJob<A> {
    /// The job waited for a reader slot since `queued_ms`: a start at the
    /// tip now would pass over what was written meanwhile. It reads from
    /// the shard's first record instead, leaving out what was made before
    /// it was queued (as after an iterator that expired unused).
    pub(crate) fn waited_since(&mut self, queued_ms: i64) {
        if self.start == IteratorStart::Latest {
            self.start = IteratorStart::TrimHorizon;
            self.created_since = Some(queued_ms.saturating_sub(CLOCK_SLACK_MS));
        }
    }

    /// Reads the shard until it ends, the pipeline stops, or a failure that
    /// must stop the pipeline (sent as an event before returning).
    pub(crate) async fn run(mut self) -> Outcome {
        self.watch = Some(self.settings.activity.reader_started());
        let outcome = self.read().await;
        if let Some(id) = self.watch.take() {
            self.settings.activity.reader_ended(id);
        }
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
        let mut last_read: Option<SequenceNumber> = match &self.start {
            IteratorStart::After(seq) => Some(seq.clone()),
            _ => None,
        };
        let mut pending_gap: Option<Gap> = None;
        // The position of the last gap: until a record is read past it, the
        // shard is read from its oldest record, not sought after it again
        // (which would find the same gap).
        let mut gap_after: Option<SequenceNumber> = None;
        // When the last empty pages in a row were asked for (at most
        // `EMPTY_PAGES_AT_TIP`).
        let mut empty_asks: std::collections::VecDeque<i64> =
            std::collections::VecDeque::with_capacity(EMPTY_PAGES_AT_TIP);
        // When reading starts at the tip: no record before this is owed.
        let latest_asked_ms = (self.start == IteratorStart::Latest).then(now_ms);
        let mut iterator = match self
            .acquire(last_read.as_ref(), None, &mut pending_gap)
            .await?
        {
            Some(it) => it,
            None => return Ok(self.ended_early()),
        };
        let mut attempt = 0;
        // New iterators in a row, without a page (see `pause_before_renewal`).
        let mut renewals: u32 = 0;
        // The last change handed over from this shard in this run.
        let mut last_change: Option<SequenceNumber> = None;
        loop {
            if self.stopping() {
                return Ok(Outcome::Stopped);
            }
            if pending_gap.is_some() {
                gap_after.clone_from(&last_read);
            }
            let asked_ms = now_ms();
            let answer = self
                .api
                .get_records(&iterator, self.settings.records_per_call)
                .await;
            let read = match answer {
                Ok(page) => {
                    self.settings
                        .parser
                        .read(
                            page.body,
                            &self.key,
                            &self.stream_arn,
                            self.keep(&last_read),
                        )
                        .await
                }
                Err(e) => Err(e),
            };
            let page = match read {
                Ok(page) => {
                    attempt = 0;
                    renewals = 0;
                    self.answered();
                    page
                }
                Err(e) if e.is_retryable() => {
                    self.retry_later(&e, attempt);
                    if !self.pause(backoff(attempt)).await {
                        return Ok(Outcome::Stopped);
                    }
                    attempt += 1;
                    continue;
                }
                Err(e) if e.kind == ApiErrorKind::ExpiredIterator => {
                    if renewals == 0 {
                        tracing::info!(table = %self.key.table, shard = %self.key.shard, "iterator expired; getting a new one");
                    } else {
                        tracing::debug!(table = %self.key.table, shard = %self.key.shard, renewals, "iterator expired again; getting a new one");
                    }
                    if !self.pause_before_renewal(&mut renewals).await {
                        return Ok(Outcome::Stopped);
                    }
                    if let Some(seq) = &last_read
                        && gap_after.as_ref() != Some(seq)
                    {
                        self.start = IteratorStart::After(seq.clone());
                    } else if let Some(asked) = latest_asked_ms
                        && self.start == IteratorStart::Latest
                    {
                        // Nothing read yet from the tip: a new `LATEST`
                        // would pass over what was written while this
                        // iterator was held (an outage can outlast it).
                        // Read from the first record instead, leaving out
                        // what was made before the tip was first asked for.
                        self.start = IteratorStart::TrimHorizon;
                        self.created_since = Some(asked.saturating_sub(CLOCK_SLACK_MS));
                    }
                    // A new iterator's first pages may be short of its
                    // records again: empty pages so far count no more.
                    empty_asks.clear();
                    match self
                        .acquire(last_read.as_ref(), last_change.as_ref(), &mut pending_gap)
                        .await?
                    {
                        Some(it) => iterator = it,
                        None => return Ok(self.ended_early()),
                    }
                    continue;
                }
                Err(e) if e.kind == ApiErrorKind::TrimmedData => {
                    self.on_gap(last_read.as_ref(), &e, &mut pending_gap)
                        .await?;
                    if !self.pause_before_renewal(&mut renewals).await {
                        return Ok(Outcome::Stopped);
                    }
                    self.start = IteratorStart::TrimHorizon;
                    // A new iterator's first pages may be short of its
                    // records again: empty pages so far count no more.
                    empty_asks.clear();
                    match self
                        .acquire(last_read.as_ref(), last_change.as_ref(), &mut pending_gap)
                        .await?
                    {
                        Some(it) => iterator = it,
                        None => return Ok(self.ended_early()),
                    }
                    continue;
                }
                Err(e) if e.kind == ApiErrorKind::NotFound => {
                    return self
                        .vanished(last_read.as_ref(), last_change.as_ref(), &e)
                        .await;
                }
                Err(e) => return Err(StreamsError::Api(e)),
            };
            last_read = page.last_read;
            let mut batch = page.batch;
            if let Some(mut gap) = pending_gap.take() {
                gap.resumed_at = first_sequence_number(&batch);
                tracing::error!(
                    table = %gap.table,
                    shard = %gap.shard,
                    after = gap.after.as_deref().unwrap_or("the start"),
                    resumed_at = gap.resumed_at.as_deref().unwrap_or("(no record yet)"),
                    "records were trimmed before delivery; going on from the oldest record (on_gap = \"skip\")"
                );
                batch.gaps.push(gap);
            }
            let had_records = page.report.records > 0;
            if had_records {
                empty_asks.clear();
            } else {
                if empty_asks.len() == EMPTY_PAGES_AT_TIP {
                    empty_asks.pop_front();
                }
                empty_asks.push_back(asked_ms);
            }
            if self.settings.report_read_through {
                // Up to the newest record of a page with records (records
                // of a shard come in creation order). An empty page may
                // come from a part of the shard short of its tip ("it might
                // take multiple calls to get to a portion of the shard that
                // contains stream records"): only several in a row say that
                // everything created before the first of them was read, and
                // on a quiet shard, the oldest of the last few.
                let through = if had_records {
                    page.report.newest_ms
                } else if empty_asks.len() == EMPTY_PAGES_AT_TIP {
                    empty_asks.front().copied()
                } else {
                    None
                };
                if let Some(ms) = through {
                    batch.read_through.push((self.key.clone(), ms));
                }
            }
            if had_records {
                self.settings.activity.touch();
            }
            if let Some(change) = batch.changes.last() {
                last_change = Some(change.source.sequence_number.clone());
            }
            if page.next_iterator.is_none() {
                // The shard's last page: it was read to its end, which the
                // checkpoint keeps once the sinks hold its last change.
                batch.ended.push(ShardEnded {
                    key: self.key.clone(),
                    last: last_change.clone(),
                });
            }
            // Told before the pipeline has the page, so that its delivery
            // always finds the page on the board.
            self.board.page(&self.key, page.report);
            let worth_sending = !batch.is_empty() || !batch.read_through.is_empty();
            if worth_sending && self.events.send(Event::Batch(batch)).await.is_err() {
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

    /// The shard answered a call: out of trouble, and not waiting.
    fn answered(&mut self) {
        if let Some(id) = self.watch {
            self.settings.activity.reader_answered(id);
        }
        self.settings
            .activity
            .answered(&mut self.troubled, Instant::now());
    }

    /// A call failed in a way that may pass (`attempt` failures in a row
    /// before it): count it, count as in trouble (not quiet: `until_idle`
    /// waits it out), and log the outage when due. Throttling is routine
    /// back-pressure: it makes an outage only from the third in a row.
    fn retry_later(&mut self, error: &ApiError, attempt: u32) {
        ShardCallRetried {
            table: &self.key.table,
            shard: &self.key.shard,
            error,
        }
        .emit();
        let activity = &self.settings.activity;
        if error.kind == ApiErrorKind::Throttled && attempt < THROTTLES_BEFORE_OUTAGE {
            activity.trouble(&mut self.troubled, true);
            return;
        }
        let key = &self.key;
        activity.failed(&mut self.troubled, Instant::now(), error, || {
            format!("table {}, shard {}", key.table, key.shard)
        });
    }

    /// An iterator at `self.start`, retrying what may pass. `None` when the
    /// shard no longer exists (after handling what that means).
    async fn acquire(
        &mut self,
        last_read: Option<&SequenceNumber>,
        last_change: Option<&SequenceNumber>,
        pending_gap: &mut Option<Gap>,
    ) -> Result<Option<String>, StreamsError> {
        let mut attempt = 0;
        loop {
            if self.stopping() {
                return Ok(None);
            }
            match self
                .api
                .get_shard_iterator(&self.stream_arn, &self.key.shard, &self.start)
                .await
            {
                Ok(it) => {
                    self.answered();
                    return Ok(Some(it));
                }
                Err(e) if e.is_retryable() => {
                    self.retry_later(&e, attempt);
                    if !self.pause(backoff(attempt)).await {
                        return Ok(None);
                    }
                    attempt += 1;
                }
                Err(e) if e.kind == ApiErrorKind::TrimmedData => {
                    self.on_gap(last_read, &e, pending_gap).await?;
                    self.start = IteratorStart::TrimHorizon;
                }
                Err(e) if e.kind == ApiErrorKind::NotFound => {
                    self.vanished(last_read, last_change, &e).await?;
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
        after: Option<&SequenceNumber>,
        error: &ApiError,
        pending: &mut Option<Gap>,
    ) -> Result<(), StreamsError> {
        match self.settings.on_gap {
            OnGap::Fail => Err(StreamsError::Gap {
                table: self.key.table.to_string(),
                shard: self.key.shard.to_string(),
                after: after.cloned(),
                oldest: self.oldest_held().await,
                reason: error.message.clone(),
            }),
            OnGap::Skip => {
                if pending.is_none() {
                    *pending = Some(Gap {
                        table: self.key.table.to_string(),
                        shard: self.key.shard.to_string(),
                        after: after.map(SequenceNumber::to_string),
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
    /// rest may be lost: that is a gap. Recorded with the gap, the shard
    /// counts as ended (once the sinks hold `last_change`, the last change
    /// handed over from it): a later start that cannot find it does not
    /// take it for another gap.
    async fn vanished(
        &self,
        after: Option<&SequenceNumber>,
        last_change: Option<&SequenceNumber>,
        error: &ApiError,
    ) -> Result<Outcome, StreamsError> {
        let Some(after) = after else {
            tracing::warn!(table = %self.key.table, shard = %self.key.shard, error = %error, "shard no longer exists; nothing of it was read");
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
                ended: vec![ShardEnded {
                    key: self.key.clone(),
                    last: last_change.cloned(),
                }],
                ..SourceBatch::default()
            };
            if self.events.send(Event::Batch(batch)).await.is_err() {
                return Ok(Outcome::Stopped);
            }
        }
        Ok(Outcome::Gone)
    }

    /// The oldest sequence number the shard still holds, for error messages.
    async fn oldest_held(&self) -> Option<SequenceNumber> {
        let it = self
            .api
            .get_shard_iterator(
                &self.stream_arn,
                &self.key.shard,
                &IteratorStart::TrimHorizon,
            )
            .await
            .ok()?;
        let page = self.api.get_records(&it, 1).await.ok()?;
        let page = self
            .settings
            .parser
            .read(page.body, &self.key, &self.stream_arn, Keep::default())
            .await
            .ok()?;
        page.last_read
    }

    fn keep(&self, last_read: &Option<SequenceNumber>) -> Keep {
        Keep {
            after: last_read.clone(),
            created_since: self.created_since,
        }
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Sleeps, waking early on shutdown; false when stopping.
    /// Before a new iterator replaces one the service refused (expired, or
    /// pointing at trimmed records): no wait the first time, then a growing
    /// one for each refusal in a row without a page in between, so a shard
    /// at the edge of retention, or a service that keeps refusing, is not
    /// asked twice per round trip. False when a stop came meanwhile.
    async fn pause_before_renewal(&mut self, renewals: &mut u32) -> bool {
        let waited = *renewals == 0 || self.pause(backoff(*renewals - 1)).await;
        *renewals += 1;
        waited
    }

    async fn pause(&mut self, wait: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(wait) => !self.stopping(),
            _ = self.stop.changed() => false,
        }
    }
}

/// The first record's sequence number in a batch: where reading went on
/// after a gap.
fn first_sequence_number(batch: &SourceBatch) -> Option<String> {
    let change = batch
        .changes
        .first()
        .map(|c| c.source.sequence_number.clone());
    let letter = batch
        .dead_letters
        .iter()
        .filter_map(|d| SequenceNumber::parse(d.sequence_number.as_deref()?).ok())
        .min();
    change
        .into_iter()
        .chain(letter)
        .min()
        .map(|s| s.to_string())
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
}
