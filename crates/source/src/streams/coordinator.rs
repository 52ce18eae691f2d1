//! One stream: lists its shards, starts a reader for each shard whose
//! parent is done, and lists again when a shard ends or the refresh
//! interval passes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dynamo_cdc_core::{Gap, Positions, SequenceNumber, ShardEnded, ShardKey, SourceBatch};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::events::ListingRetried;
use crate::record::table_from_arn;
use crate::streams::api::{ApiError, ApiErrorKind, IteratorStart, StreamsApi};
use crate::streams::board::ShardBoard;
use crate::streams::expired::{self, Expired};
use crate::streams::latest::LatestFrom;
use crate::streams::reader::{Outcome, ShardJob};
use crate::streams::tracker::{ShardInfo, Tracker};
use crate::streams::{Event, OnGap, Settings, StartAt, StreamsError, now_ms};

/// A stream's shards, as DescribeStream's pages gave them.
struct Listing {
    shards: Vec<ShardInfo>,
    /// The stream's table, as the service names it.
    table: Option<String>,
    /// False when a page named its own start as the next one's: pages
    /// after it were not given.
    whole: bool,
}

/// Shortest time between two listings of a stream, even when many shards
/// end at once (a rotation of every shard lists once, not once per shard).
const LISTING_GAP: Duration = Duration::from_secs(1);

pub(crate) struct Stream<A> {
    api: Arc<A>,
    settings: Arc<Settings>,
    arn: Arc<str>,
    /// Resume positions of this stream's table, by shard.
    resume: HashMap<String, SequenceNumber>,
    /// True when no sink holds a position of this table: `start` applies.
    first_start: bool,
    /// The table's recorded latest start (`start = "latest"` only).
    latest: Option<LatestFrom>,
    events: mpsc::Sender<Event>,
    stop: watch::Receiver<bool>,
    board: Arc<ShardBoard>,
    /// The stream has answered a DescribeStream (told to the board once).
    answered: bool,
    /// The table's shards read to their end, when it is tracked (see
    /// [`StreamsConfig::ended`](crate::StreamsConfig::ended)).
    ended: Option<std::collections::BTreeSet<String>>,
}

impl<A: StreamsApi> Stream<A> {
    pub(crate) fn new(
        api: Arc<A>,
        settings: Arc<Settings>,
        arn: String,
        resume: &Positions,
        events: mpsc::Sender<Event>,
        stop: watch::Receiver<bool>,
        board: Arc<ShardBoard>,
    ) -> Self {
        let table = table_from_arn(&arn).unwrap_or_default().to_owned();
        let resume: HashMap<String, SequenceNumber> = resume
            .iter()
            .filter(|(k, _)| *k.table == *table)
            .map(|(k, seq)| (k.shard.to_string(), seq.clone()))
            .collect();
        let latest = settings.latest.get(&table).cloned();
        let ended = settings.ended.get(&table).cloned();
        Stream {
            ended,
            first_start: resume.is_empty() && !settings.tables_read.contains(&table),
            api,
            settings,
            latest,
            resume,
            arn: arn.into(),
            events,
            stop,
            board,
            answered: false,
        }
    }

    pub(crate) async fn run(mut self) {
        if let Err(e) = self.read().await {
            let _ = self.events.send(Event::Failed(e)).await;
        }
    }

    async fn read(&mut self) -> Result<(), StreamsError> {
        let mut tracker = Tracker::default();
        let mut readers: JoinSet<(String, Outcome)> = JoinSet::new();
        let mut table: Arc<str> = table_from_arn(&self.arn).unwrap_or_default().into();
        let listing_gap = LISTING_GAP.min(self.settings.shard_refresh_interval);
        let mut listed_at: Option<tokio::time::Instant> = None;
        loop {
            if *self.stop.borrow() {
                return Ok(());
            }
            if let Some(at) = listed_at {
                let wait =
                    (at + listing_gap).saturating_duration_since(tokio::time::Instant::now());
                if !wait.is_zero() && !self.pause(wait).await {
                    return Ok(());
                }
            }
            listed_at = Some(tokio::time::Instant::now());
            let listed_ms = now_ms();
            let Some(Listing {
                shards: listing,
                table: listed_table,
                whole,
            }) = self.list().await?
            else {
                return Ok(());
            };
            let open = listing.iter().filter(|s| !s.closed).count();
            let limit = self.settings.max_concurrent_shards;
            if let Some(total) = self.settings.open_shards.note(&self.arn, open, limit) {
                tracing::warn!(
                    table = %table,
                    open_shards = total,
                    max_concurrent_shards = limit,
                    "more open shards over every stream than max_concurrent_shards: some wait \
                     until others close; raise the limit"
                );
            }
            if let Some(t) = listed_table {
                table = t.into();
            }
            let first_listing = tracker.listings() == 0;
            if first_listing && whole {
                let listed: std::collections::HashSet<&str> =
                    listing.iter().map(|s| s.id.as_str()).collect();
                if !self.expired_positions(&table, &listed).await? {
                    return Ok(());
                }
            } else if first_listing {
                // Shards on the pages not given would look expired.
                tracing::warn!(
                    table = %table,
                    "DescribeStream gave a page's start as the next page's: the listing is \
                     taken as it is, and shards that expired unread are not looked for until \
                     the next start"
                );
            }
            let change = tracker.update(listing);
            let key = |id: &str| ShardKey::new(table.clone(), id);
            for id in &change.added {
                self.board.waiting(&key(id), now_ms());
            }
            // Every shard that existed when the listing was asked for is
            // on the board now.
            self.board.listed(&table, listed_ms);
            for id in &change.vanished_unread {
                tracing::warn!(table = %table, shard = %id, "shard no longer listed before it was read");
                self.board.finished(&key(id));
            }
            for id in &change.added {
                if self.closed_before_start(id, first_listing, &tracker) {
                    tracker.skip(id);
                    self.board.finished(&key(id));
                }
            }
            for id in tracker.ready() {
                let (start, created_since) = self.start_of(&id, first_listing, &tracker);
                if let (Some(since), Some(latest)) = (created_since, &self.latest)
                    && !latest.fresh
                {
                    tracing::info!(
                        table = %table,
                        shard = %id,
                        created_since_ms = since,
                        "no position since the latest start: reading the shard from its first \
                         record, leaving out changes created before the start"
                    );
                }
                tracker.started(&id);
                let mut job = ShardJob {
                    api: self.api.clone(),
                    settings: self.settings.clone(),
                    stream_arn: self.arn.clone(),
                    key: key(&id),
                    start,
                    created_since,
                    events: self.events.clone(),
                    stop: self.stop.clone(),
                    board: self.board.clone(),
                    troubled: false,
                    watch: None,
                };
                let permits = self.settings.readers.clone();
                let queued_ms = now_ms();
                tracing::debug!(table = %table, shard = %id, "reading shard");
                readers.spawn(async move {
                    // At most `max_concurrent_shards` read at once; until
                    // then the shard is waiting on the board.
                    let _permit = match permits.clone().try_acquire_owned() {
                        Ok(permit) => permit,
                        Err(_) => {
                            let Ok(permit) = permits.acquire_owned().await else {
                                return (id, Outcome::Stopped);
                            };
                            job.waited_since(queued_ms);
                            permit
                        }
                    };
                    // An empty first page means the tip when reading starts
                    // after a record already read, or at the newest one.
                    let at_position =
                        matches!(job.start, IteratorStart::After(_) | IteratorStart::Latest);
                    job.board.started(&job.key, now_ms(), at_position);
                    let outcome = job.run().await;
                    (id, outcome)
                });
            }
            // Wait for a reader to end (its children may be ready) or for
            // the next refresh.
            let refresh = tokio::time::sleep(self.settings.shard_refresh_interval);
            tokio::select! {
                () = refresh => {}
                _ = self.stop.changed() => return Ok(()),
                Some(done) = readers.join_next(), if !readers.is_empty() => {
                    // A reader that panicked leaves its shard half read and
                    // its children waiting for ever: stop, naming it.
                    let (id, outcome) = done.map_err(|e| {
                        StreamsError::Api(ApiError {
                            kind: ApiErrorKind::Fatal,
                            operation: "GetRecords",
                            message: format!(
                                "a shard reader of table {table} ended abnormally: {e}"
                            ),
                        })
                    })?;
                    match outcome {
                        Outcome::Drained | Outcome::Gone => {
                            tracing::debug!(table = %table, shard = %id, ?outcome, "shard done");
                            tracker.drained(&id);
                            self.board.finished(&ShardKey::new(table.clone(), id.as_str()));
                            // A finished shard is progress: walking a long
                            // lineage of read shards is catching up, not
                            // idle, though none of them returns records.
                            // Its children may be listed by now.
                            self.settings.activity.touch();
                        }
                        Outcome::Stopped => return Ok(()),
                    }
                }
            }
        }
    }

    /// At the first listing: the shards some sink holds a position of that
    /// the stream no longer lists (see [`crate::streams::expired`]). A lost
    /// one is a gap, as `on_gap` says; for a table not tracked yet, they
    /// are told as ended with the table. False when stopping.
    async fn expired_positions(
        &mut self,
        table: &Arc<str>,
        listed: &std::collections::HashSet<&str>,
    ) -> Result<bool, StreamsError> {
        let held = (self.settings.held.iter())
            .filter(|(k, _)| *k.table == **table)
            .map(|(k, seq)| (&*k.shard, seq));
        let resume = self.resume.iter().map(|(id, seq)| (id.as_str(), seq));
        let positioned = expired::lowest(held, resume);
        let key = |id: &str| ShardKey::new(table.clone(), id);
        let end = |id: &str| ShardEnded {
            key: key(id),
            last: None,
        };
        let mut batch = SourceBatch::default();
        match expired::expired(&positioned, listed, self.ended.as_ref()) {
            Expired::Assumed(shards) => {
                batch.tracking.push(table.to_string());
                batch.ended = shards.into_iter().map(end).collect();
            }
            Expired::Lost(lost) => {
                for (id, after) in lost {
                    let reason = "the stream no longer lists the shard: it expired (records are \
                                  kept 24 hours) before it was read to its end"
                        .to_owned();
                    if self.settings.on_gap == OnGap::Fail {
                        return Err(StreamsError::Gap {
                            table: table.to_string(),
                            shard: id.to_owned(),
                            after: Some(after.clone()),
                            oldest: None,
                            reason,
                        });
                    }
                    tracing::error!(
                        table = %table,
                        shard = %id,
                        after = %after,
                        "a shard expired before it was read to its end: its records after the \
                         position are lost (on_gap = \"skip\")"
                    );
                    batch.gaps.push(Gap {
                        table: table.to_string(),
                        shard: id.to_owned(),
                        after: Some(after.to_string()),
                        resumed_at: None,
                        detected_at_ms: now_ms(),
                        reason,
                    });
                    // Told once: the gap stands for what it lost.
                    batch.ended.push(end(id));
                }
            }
        }
        if batch.is_empty() {
            return Ok(true);
        }
        Ok(self.events.send(Event::Batch(batch)).await.is_ok())
    }

    /// Whether a shard without a position holds only changes from before
    /// a latest start, and is left unread: one recorded closed at the
    /// start; without a recorded start, a closed one in the first listing
    /// of a first start.
    fn closed_before_start(&self, id: &str, first_listing: bool, tracker: &Tracker) -> bool {
        if self.resume.contains_key(id) {
            return false;
        }
        match &self.latest {
            Some(latest) => latest.closed_at_start(id),
            None => {
                self.settings.start == StartAt::Latest
                    && self.first_start
                    && first_listing
                    && tracker.info(id).is_some_and(|s| s.closed)
            }
        }
    }

    /// Where a shard starts, and the oldest creation time kept from it:
    /// after its resume position; at the end (`LATEST`) for open shards of
    /// the first listing of a first start with `start = "latest"`; else
    /// from its first record, leaving out what precedes a recorded latest
    /// start.
    fn start_of(
        &self,
        id: &str,
        first_listing: bool,
        tracker: &Tracker,
    ) -> (IteratorStart, Option<i64>) {
        if let Some(seq) = self.resume.get(id) {
            return (IteratorStart::After(seq.clone()), None);
        }
        let open_at_first =
            first_listing && tracker.info(id).is_some_and(|s: &ShardInfo| !s.closed);
        match &self.latest {
            Some(latest) if latest.fresh && open_at_first => (IteratorStart::Latest, None),
            Some(latest) => (IteratorStart::TrimHorizon, Some(latest.created_since())),
            None if self.settings.start == StartAt::Latest && self.first_start && open_at_first => {
                (IteratorStart::Latest, None)
            }
            None => (IteratorStart::TrimHorizon, None),
        }
    }

    /// A complete listing (all DescribeStream pages), retrying what may
    /// pass; `None` when stopping.
    async fn list(&mut self) -> Result<Option<Listing>, StreamsError> {
        let mut shards = Vec::new();
        let mut table = None;
        let mut start: Option<String> = None;
        let mut attempt = 0u32;
        let mut troubled = false;
        loop {
            // DescribeStream is limited per account: every page of every
            // stream takes a turn of the process's pace.
            let turn = self.settings.describe_pace.reserve(Instant::now());
            let wait = turn.saturating_duration_since(Instant::now());
            if !wait.is_zero() && !self.pause(wait).await {
                return Ok(None);
            }
            let answer = self.api.describe_stream(&self.arn, start.as_deref()).await;
            if answer.is_ok() {
                self.settings.activity.listed();
                self.settings
                    .activity
                    .answered(&mut troubled, Instant::now());
                if !std::mem::replace(&mut self.answered, true) {
                    self.board.stream_answered();
                }
            }
            match answer {
                Ok(page) => {
                    attempt = 0;
                    shards.extend(page.shards);
                    table = table.or(page.table);
                    match page.last_evaluated {
                        // A page that repeats its start would loop forever.
                        Some(next) if Some(&next) != start.as_ref() => start = Some(next),
                        repeated => {
                            return Ok(Some(Listing {
                                shards,
                                table,
                                whole: repeated.is_none(),
                            }));
                        }
                    }
                }
                Err(e) if e.is_retryable() => {
                    ListingRetried {
                        stream: &self.arn,
                        error: &e,
                    }
                    .emit();
                    let arn = &self.arn;
                    self.settings
                        .activity
                        .failed(&mut troubled, Instant::now(), &e, || {
                            format!("DescribeStream of {arn}")
                        });
                    let wait = Duration::from_millis(200u64 << attempt.min(5));
                    if !self.pause(wait).await {
                        return Ok(None);
                    }
                    attempt += 1;
                }
                Err(e) if e.kind == ApiErrorKind::NotFound => {
                    return Err(StreamsError::Api(e));
                }
                Err(e) => return Err(StreamsError::Api(e)),
            }
        }
    }

    async fn pause(&mut self, wait: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(wait) => !*self.stop.borrow(),
            _ = self.stop.changed() => false,
        }
    }
}
