//! The live DynamoDB Streams source.
//!
//! - [`api`]: the narrow [`StreamsApi`] seam (three calls);
//! - [`sdk`]: its AWS SDK implementation, and DescribeTable for `tables`;
//! - `tracker`: shard lineage (parents before children);
//! - `reader`: one shard, from its start position to its end;
//! - `page_batch`: a GetRecords answer to a batch, parsed off the runtime;
//! - `coordinator`: one stream: listings, readers, the reader limit;
//! - `expired`: shards a sink holds a position of that are no longer
//!   listed: read whole, or lost (a gap);
//! - [`latest`]: `start = "latest"` recorded, so a restart loses nothing;
//! - [`board`]: where each shard stands, for lag and time to data loss.
//!
//! [`StreamsSource`] runs all of it on its own tokio runtime and hands
//! batches (one GetRecords page each) to the synchronous pipeline over a
//! bounded channel, so a slow sink slows the readers. See `design.md` beside
//! this file for the rules the pieces keep.

pub mod api;
pub mod board;
mod coordinator;
mod expired;
pub mod latest;
mod pace;
mod page_batch;
pub(crate) mod raw_records;
mod reader;
pub mod sdk;
mod tracker;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dynamo_cdc_core::{OutageLine, Positions, SequenceNumber, SharedOutage, Source, SourceBatch};
use tokio::sync::{mpsc, watch};

use crate::events::Service;
use crate::record::ImageReading;
pub use api::{ApiError, ApiErrorKind, IteratorStart, RecordsPage, ShardPage, StreamsApi};
pub use board::{RETENTION_SECONDS, ShardBoard, TableHealth};
pub use tracker::ShardInfo;

/// Where a stream with no recorded position is first read (`start =
/// "trim_horizon"` or `"latest"` in the configuration).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    /// The oldest record each shard holds.
    #[default]
    TrimHorizon,
    /// Only what is written after the first start: open shards at their
    /// newest record, closed ones not at all. Shards that appear later
    /// (children of rotations and splits) are read from their start.
    Latest,
}

/// What to do when records were trimmed before they were delivered
/// (`on_gap = "fail"` or `"skip"` in the configuration).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnGap {
    /// Stop with [`StreamsError::Gap`].
    #[default]
    Fail,
    /// Hand a gap record to the sinks, log an error, and go on from the
    /// oldest record the shard holds.
    Skip,
}

/// How the source reads.
#[derive(Clone, Debug)]
pub struct StreamsConfig {
    /// The streams to read.
    pub stream_arns: Vec<String>,
    /// Where a stream with no recorded position is first read.
    pub start: StartAt,
    /// With `start = Latest`: each table's recorded latest start, by table
    /// name. A table without one starts as if none were ever needed (open
    /// shards at their end when no shard has a position).
    pub latest: HashMap<String, latest::LatestFrom>,
    /// Tables some sink holds a position for. `start` never applies to
    /// them, even when the resume point (the lowest position over the
    /// sinks) holds none of their shards, as after a sink is added: read
    /// at their end, the sinks that were there would miss what came since.
    pub tables_read: HashSet<String>,
    /// Each tracked table's shards read to their end (see
    /// `dynamo_cdc_core::Recorded::ended`), by table name. A shard the
    /// stream no longer lists whose position some sink holds is a gap
    /// unless ended here; for a table not here, such shards are taken for
    /// ended, and the table tracked from then on
    /// ([`SourceBatch::tracking`](dynamo_cdc_core::SourceBatch::tracking)).
    pub ended: HashMap<String, BTreeSet<String>>,
    /// Every shard some sink holds a position of, at the lowest such
    /// position: what the shards the stream no longer lists are checked
    /// against, with the resume point (which leaves out a shard one sink
    /// holds no position of).
    pub held: Positions,
    /// Trimmed records: fail or skip.
    pub on_gap: OnGap,
    /// Wait after a page with records.
    pub poll_interval: Duration,
    /// Wait after an empty page.
    pub idle_poll_interval: Duration,
    /// How often DescribeStream lists the shards again.
    pub shard_refresh_interval: Duration,
    /// Most shards read at once.
    pub max_concurrent_shards: usize,
    /// GetRecords `Limit`.
    pub records_per_call: u32,
    /// Hand over every page, empty ones too, with the time each shard is
    /// read through ([`SourceBatch::read_through`]): a snapshot needs it to
    /// hold its pages until the stream caught up with them.
    pub report_read_through: bool,
    /// Stop once no shard has returned a record for this long.
    pub until_idle: Option<Duration>,
    /// Longest wait in [`Source::next_batch`] before it returns an empty
    /// batch, so the pipeline can commit files by age and notice signals.
    pub heartbeat: Duration,
    /// What is read of each image; set by the pipeline from what its
    /// sinks read.
    pub reading: ImageReading,
}

impl Default for StreamsConfig {
    /// The defaults of `[source]` (see [`crate::config::defaults`]).
    fn default() -> Self {
        use crate::config::defaults;
        StreamsConfig {
            stream_arns: Vec::new(),
            start: StartAt::default(),
            latest: HashMap::new(),
            tables_read: HashSet::new(),
            ended: HashMap::new(),
            held: Positions::new(),
            on_gap: OnGap::default(),
            poll_interval: Duration::from_millis(defaults::POLL_INTERVAL_MS),
            idle_poll_interval: Duration::from_millis(defaults::IDLE_POLL_INTERVAL_MS),
            shard_refresh_interval: Duration::from_millis(defaults::SHARD_REFRESH_INTERVAL_MS),
            max_concurrent_shards: defaults::MAX_CONCURRENT_SHARDS,
            records_per_call: defaults::RECORDS_PER_CALL,
            report_read_through: false,
            until_idle: None,
            heartbeat: Duration::from_millis(200),
            reading: ImageReading::default(),
        }
    }
}

/// What the readers share.
pub(crate) struct Settings {
    pub on_gap: OnGap,
    pub poll_interval: Duration,
    pub idle_poll_interval: Duration,
    pub shard_refresh_interval: Duration,
    pub records_per_call: u32,
    pub report_read_through: bool,
    pub start: StartAt,
    /// Recorded latest starts, by table (only with `start = Latest`).
    pub latest: HashMap<String, latest::LatestFrom>,
    /// See [`StreamsConfig::tables_read`].
    pub tables_read: HashSet<String>,
    /// See [`StreamsConfig::ended`].
    pub ended: HashMap<String, BTreeSet<String>>,
    /// See [`StreamsConfig::held`].
    pub held: Positions,
    pub max_concurrent_shards: usize,
    /// Open shards of every stream, against `max_concurrent_shards`.
    pub open_shards: OpenShards,
    pub activity: Activity,
    /// Every stream's DescribeStream calls, paced together.
    pub describe_pace: pace::Pace,
    pub readers: Arc<tokio::sync::Semaphore>,
    /// The parse thread every reader hands its pages to.
    pub parser: page_batch::Parser,
}

/// Open shards of each stream at its last listing. The readers are shared
/// by every stream, so the limit covers them all together.
#[derive(Default)]
pub(crate) struct OpenShards {
    counts: Mutex<HashMap<String, usize>>,
    warned: std::sync::atomic::AtomicBool,
}

impl OpenShards {
    /// Notes a stream's open shards at its listing; the total over every
    /// stream the first time it exceeds `limit` (to be said once: some
    /// shards then wait until others close), else `None`.
    pub(crate) fn note(&self, arn: &str, open: usize, limit: usize) -> Option<usize> {
        let total: usize = {
            let mut counts = self.counts.lock().ok()?;
            counts.insert(arn.to_owned(), open);
            counts.values().sum()
        };
        (total > limit && !self.warned.swap(true, std::sync::atomic::Ordering::Relaxed))
            .then_some(total)
    }
}

/// When a shard last returned records, when each reader (and the shard
/// listing) last got an answer, and how many readers are in trouble
/// (retrying a failed call): the source is idle only when no reader is in
/// trouble and every reader has kept getting answers without records for a
/// while. A throttled, failing or slow shard has not "returned no records";
/// it has not answered. (On a loaded endpoint, a first GetRecords slower
/// than `until_idle` once ended a run before it had read anything.)
pub(crate) struct Activity {
    last_records: Mutex<Instant>,
    /// The listing's last answer: what counts when no reader is running.
    last_listing: Mutex<Instant>,
    /// Per running reader, its last answer (`None` before the first).
    readers: Mutex<HashMap<u64, Option<Instant>>>,
    next_reader: std::sync::atomic::AtomicU64,
    /// The stream API's outage, as logged: from the first caller in
    /// trouble to the last one answered; its count of failing callers is
    /// the readers (and listings) in trouble.
    outage: SharedOutage,
}

impl Activity {
    fn new() -> Self {
        let now = Instant::now();
        Activity {
            last_records: Mutex::new(now),
            last_listing: Mutex::new(now),
            readers: Mutex::new(HashMap::new()),
            next_reader: std::sync::atomic::AtomicU64::new(0),
            outage: SharedOutage::new(),
        }
    }

    /// Records arrived (or other progress was made): quiet starts again.
    pub(crate) fn touch(&self) {
        if let Ok(mut t) = self.last_records.lock() {
            *t = Instant::now();
        }
    }

    /// The shard listing answered.
    pub(crate) fn listed(&self) {
        if let Ok(mut t) = self.last_listing.lock() {
            *t = Instant::now();
        }
    }

    /// A reader starts: it is not quiet until it has been answered.
    pub(crate) fn reader_started(&self) -> u64 {
        let id = self
            .next_reader
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut readers) = self.readers.lock() {
            readers.insert(id, None);
        }
        id
    }

    /// Reader `id`'s call was answered, with or without records.
    pub(crate) fn reader_answered(&self, id: u64) {
        if let Ok(mut readers) = self.readers.lock()
            && let Some(at) = readers.get_mut(&id)
        {
            *at = Some(Instant::now());
        }
    }

    /// Reader `id` ended.
    pub(crate) fn reader_ended(&self, id: u64) {
        if let Ok(mut readers) = self.readers.lock() {
            readers.remove(&id);
        }
    }

    /// A call failed and will be retried: the caller (whose own flag is
    /// `state`) is in trouble; logs the outage's line due at `now`, if any
    /// (`at` says where), and returns it.
    pub(crate) fn failed(
        &self,
        state: &mut bool,
        now: Instant,
        error: &ApiError,
        at: impl FnOnce() -> String,
    ) -> Option<OutageLine> {
        Service::Streams.failed(&self.outage, state, now, error, at)
    }

    /// A caller got an answer: out of trouble. When no caller is left in
    /// trouble, an outage going on ended; logs that and returns it.
    pub(crate) fn answered(&self, state: &mut bool, now: Instant) -> Option<OutageLine> {
        if *state {
            // Quiet is counted from the first answer after the trouble.
            self.touch();
        }
        Service::Streams.answered(&self.outage, state, now)
    }

    /// A reader or listing started retrying (`true`) or stopped, answered
    /// or ended (`false`), without an outage line; `state` is the caller's
    /// own flag.
    pub(crate) fn trouble(&self, state: &mut bool, now: bool) {
        if self.outage.mark(state, now) {
            // Quiet is counted from the first answer after the trouble.
            self.touch();
        }
    }

    /// How long every reader has been answered without records: from the
    /// last records to the reader's last answer, not to now, so that time
    /// spent waiting for an answer is never quiet. With no reader running
    /// (every shard read, or none listed yet), the listing's answers count.
    fn quiet_for(&self) -> Duration {
        if self.outage.failing() > 0 {
            return Duration::ZERO;
        }
        let (Ok(records), Ok(listing), Ok(readers)) = (
            self.last_records.lock(),
            self.last_listing.lock(),
            self.readers.lock(),
        ) else {
            return Duration::ZERO;
        };
        if readers.is_empty() {
            return listing.saturating_duration_since(*records);
        }
        readers
            .values()
            .map(|answer| answer.map_or(Duration::ZERO, |a| a.saturating_duration_since(*records)))
            .min()
            .unwrap_or(Duration::ZERO)
    }
}

/// Empty pages in a row taken for the tip of an open shard. GetRecords may
/// answer an empty page short of the tip ("it might take multiple calls to
/// get to a portion of the shard that contains stream records"), most
/// often over the part of a shard whose records were trimmed. A snapshot's
/// S0 stops at the first such run, and a reader counts as read through the
/// time the oldest of the last this many empty pages was asked for.
pub(crate) const EMPTY_PAGES_AT_TIP: usize = 3;

/// The wall clock in epoch milliseconds (0 before 1970).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// What the readers send the pipeline.
#[derive(Debug)]
pub(crate) enum Event {
    Batch(SourceBatch),
    Failed(StreamsError),
}

/// Why the stream source stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamsError {
    /// A call failed in a way retrying does not fix.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// Records were trimmed before delivery and `on_gap = "fail"`.
    #[error(
        "table {table}, shard {shard}: records after sequence number {} were trimmed before they \
         were delivered ({reason}); the oldest record the shard still holds is {}. \
         Nothing after the last delivered record was written. To go on without the lost \
         records, set `on_gap = \"skip\"` (a gap record is written to every sink)",
        after.as_ref().map_or("(none: nothing of the shard was delivered yet)", SequenceNumber::as_str),
        oldest.as_ref().map_or("unknown", SequenceNumber::as_str)
    )]
    Gap {
        /// Table of the stream.
        table: String,
        /// The shard.
        shard: String,
        /// The last sequence number delivered.
        after: Option<SequenceNumber>,
        /// The oldest sequence number still held, when it could be read.
        oldest: Option<SequenceNumber>,
        /// What the service said.
        reason: String,
    },
    /// The parse thread could not be started.
    #[error("cannot start the page parser thread")]
    Thread(#[source] std::io::Error),
}

/// Reads DynamoDB Streams on its own runtime; see the module docs.
pub struct StreamsSource {
    runtime: tokio::runtime::Runtime,
    events: mpsc::Receiver<Event>,
    stop: watch::Sender<bool>,
    settings: Arc<Settings>,
    board: Arc<ShardBoard>,
    until_idle: Option<Duration>,
    heartbeat: Duration,
    /// When the pipeline last asked for a batch.
    last_asked: Option<Instant>,
}

impl StreamsSource {
    /// Starts reading every stream of `config` on `runtime` (which the
    /// caller built, and may already have used, e.g. to build the SDK
    /// clients), each shard after its position in `resume` (the lowest
    /// durable position over the sinks).
    ///
    /// # Errors
    /// When the parse thread cannot be started.
    pub fn start_on<A: StreamsApi>(
        runtime: tokio::runtime::Runtime,
        api: Arc<A>,
        config: &StreamsConfig,
        resume: &Positions,
    ) -> Result<Self, StreamsError> {
        let parser = page_batch::Parser::start(config.reading).map_err(StreamsError::Thread)?;
        // A page per shard in flight, a few queued: memory stays bounded.
        let (tx, rx) = mpsc::channel(8);
        let (stop_tx, stop_rx) = watch::channel(false);
        let settings = Arc::new(Settings {
            on_gap: config.on_gap,
            poll_interval: config.poll_interval,
            idle_poll_interval: config.idle_poll_interval,
            shard_refresh_interval: config.shard_refresh_interval,
            records_per_call: config.records_per_call.clamp(1, 1000),
            report_read_through: config.report_read_through,
            start: config.start,
            latest: if config.start == StartAt::Latest {
                config.latest.clone()
            } else {
                HashMap::new()
            },
            tables_read: config.tables_read.clone(),
            ended: config.ended.clone(),
            held: config.held.clone(),
            max_concurrent_shards: config.max_concurrent_shards.max(1),
            open_shards: OpenShards::default(),
            activity: Activity::new(),
            describe_pace: pace::Pace::per_second(pace::DESCRIBE_STREAM_PER_SECOND),
            readers: Arc::new(tokio::sync::Semaphore::new(
                config.max_concurrent_shards.max(1),
            )),
            parser,
        });
        let board = Arc::new(ShardBoard::new(config.stream_arns.len()));
        for arn in &config.stream_arns {
            let stream = coordinator::Stream::new(
                api.clone(),
                settings.clone(),
                arn.clone(),
                resume,
                tx.clone(),
                stop_rx.clone(),
                board.clone(),
            );
            runtime.spawn(stream.run());
        }
        Ok(StreamsSource {
            runtime,
            events: rx,
            stop: stop_tx,
            settings,
            board,
            until_idle: config.until_idle,
            heartbeat: config.heartbeat,
            last_asked: None,
        })
    }

    /// Hands a batch the pipeline is done with back to the parse thread
    /// that made it, to be freed there (see `page_batch`).
    pub fn recycle(&self, batch: SourceBatch) {
        self.settings.parser.free(batch);
    }

    /// Where each shard stands: the source keeps it up to date; the
    /// pipeline reports deliveries into it and reads lag and time to data
    /// loss from it, from any thread.
    pub fn board(&self) -> Arc<ShardBoard> {
        self.board.clone()
    }

    /// Counts as activity for `until_idle`: something besides the stream
    /// (a snapshot) is still busy.
    pub fn busy(&self) {
        self.settings.activity.touch();
    }

    /// Asks every reader to stop; batches already sent may still arrive.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

impl StreamsSource {
    /// What an event from the readers means for `next_batch` (`None`:
    /// every reader is gone).
    fn take(&mut self, event: Option<Event>) -> Result<Option<SourceBatch>, StreamsError> {
        match event {
            Some(Event::Batch(batch)) => Ok(Some(batch)),
            Some(Event::Failed(e)) => {
                self.stop();
                Err(e)
            }
            None => Ok(None),
        }
    }
}

impl Source for StreamsSource {
    type Error = StreamsError;

    /// The next page, an empty batch when nothing came within the heartbeat,
    /// or `None` once stopped (idle for `until_idle`, or every stream ended).
    fn next_batch(&mut self) -> Result<Option<SourceBatch>, StreamsError> {
        // Time the pipeline spent away (a sink waiting out a broker) is not
        // quiet: the readers were held back, not idle. Quiet is counted
        // again from now.
        let now = Instant::now();
        if self
            .last_asked
            .is_some_and(|t| now.duration_since(t) > self.heartbeat * 5)
        {
            self.settings.activity.touch();
        }
        self.last_asked = Some(now);
        if let Some(limit) = self.until_idle
            && self.settings.activity.quiet_for() >= limit
        {
            // Quiet counts from when a reader last got records, not from
            // when the pipeline took them: pages still waiting in the
            // channel are handed over before stopping.
            match self.events.try_recv() {
                Ok(event) => return self.take(Some(event)),
                Err(mpsc::error::TryRecvError::Disconnected) => return Ok(None),
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            tracing::info!(idle_s = limit.as_secs_f64(), "no new records; stopping");
            self.stop();
            return Ok(None);
        }
        let wait = self.heartbeat;
        let events = &mut self.events;
        match self
            .runtime
            .block_on(async { tokio::time::timeout(wait, events.recv()).await })
        {
            Ok(event) => self.take(event),
            Err(_) => Ok(Some(SourceBatch::default())),
        }
    }
}

impl Drop for StreamsSource {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The limit covers every stream's open shards together, and going
    /// over it is said once.
    #[test]
    fn open_shards_count_over_every_stream_against_the_limit() {
        let open = OpenShards::default();
        assert_eq!(open.note("stream-a", 3, 4), None);
        assert_eq!(open.note("stream-b", 3, 4), Some(6), "3 + 3 over 4");
        assert_eq!(open.note("stream-b", 4, 4), None, "said once");
        // A stream's new listing replaces its count, not adds to it.
        let again = OpenShards::default();
        assert_eq!(again.note("stream-a", 3, 4), None);
        assert_eq!(again.note("stream-a", 4, 4), None);
    }

    /// The readers share one outage (its rule is tested in core): a reader
    /// that leaves in trouble lets the next answer end it, and nobody in
    /// trouble is quiet.
    #[test]
    fn readers_share_one_outage_and_trouble_is_never_quiet() {
        let activity = Activity::new();
        let t0 = Instant::now();
        let error = ApiError {
            operation: "GetRecords",
            kind: ApiErrorKind::Transient,
            message: "HTTP 500".into(),
        };
        let (mut a, mut b) = (false, false);
        let at = || "shard a".to_owned();
        assert_eq!(
            activity.failed(&mut a, t0, &error, at),
            Some(OutageLine::Down)
        );
        assert_eq!(activity.failed(&mut b, t0, &error, at), None);
        assert_eq!(activity.quiet_for(), Duration::ZERO);
        activity.trouble(&mut a, false);
        assert_eq!(activity.outage.failing(), 1);
        assert_eq!(
            activity.answered(&mut b, t0 + Duration::from_secs(3)),
            Some(OutageLine::Back(Duration::from_secs(3)))
        );
        assert_eq!(activity.outage.failing(), 0);
    }
}
