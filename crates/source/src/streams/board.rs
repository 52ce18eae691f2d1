//! Where each shard stands, for the two figures operators page on (DESIGN,
//! section 9): how far behind the delivered changes are (lag), and how long
//! until records not yet delivered are trimmed by the stream's 24-hour
//! retention (time to data loss).
//!
//! The stream source reports into the board as it lists and reads shards;
//! the pipeline reports what every sink has made durable
//! ([`ShardBoard::delivered`]) and reads the figures from another thread
//! ([`ShardBoard::snapshot`]). Pure bookkeeping behind one lock that is held
//! for a map lookup or one pass over the shards; the clock is passed in.
//!
//! Per shard:
//! - **lag** is now minus the creation time of the newest record delivered.
//!   It is 0 once the shard is caught up (an empty page after data: the
//!   reader is at the stream's tip) and everything read is delivered. Before
//!   anything is delivered in this run it is at least the age of the oldest
//!   page read and not yet delivered; a shard not started, or started with
//!   nothing read yet, has no figure (its parent's counts).
//! - **time to data loss** is 24 hours minus the age of the oldest record
//!   not yet delivered, estimated from below: 24 hours minus the lag once
//!   something was delivered (everything unread is newer than that), else 24
//!   hours minus the shard's age (nothing in a shard is older than the
//!   shard), which covers a shard waiting for its parent or a reader slot.
//!
//! A table takes the largest lag and the smallest time to data loss over its
//! shards; with every shard caught up and delivered it reads 0 and 24 hours.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use dynamo_cdc_core::{SequenceNumber, ShardKey};

/// How long a stream keeps a record: 24 hours.
pub const RETENTION_SECONDS: f64 = 86_400.0;

/// The largest lag reported. Only a bad timestamp gets near it, and a
/// gauge that reads decades helps no one.
const MAX_LAG_SECONDS: f64 = 365.0 * 86_400.0;

/// Pages queued per shard until they are delivered. The pipeline's channel
/// bounds what is read ahead, but sinks commit by size and age, so a slow
/// commit lets pages pile up: past this many, the newest entry absorbs the
/// next page (its delivery is then seen a little later, never earlier).
const MAX_PAGES_QUEUED: usize = 1024;

/// DynamoDB Streams started in 2014: a shard id's number before that is a
/// counter (simulators, moto), not a creation time.
const EARLIEST_SHARD_MS: i64 = 1_388_534_400_000; // 2014-01-01

/// A shard created this far ahead of the local clock is not believed.
const CLOCK_SLACK_MS: i64 = 86_400_000;

/// One table's figures.
#[derive(Clone, Debug, PartialEq)]
pub struct TableHealth {
    /// The table.
    pub table: String,
    /// Now minus the creation time of the newest record delivered, largest
    /// over the table's shards; 0 when every shard is caught up.
    pub lag_seconds: f64,
    /// Seconds until a record not yet delivered may be trimmed, smallest
    /// over the table's shards; 86400 when every shard is caught up.
    pub time_to_data_loss_seconds: f64,
}

/// What the reader tells the board about a page it handed to the pipeline.
#[derive(Clone, Debug, Default)]
pub(crate) struct PageReport {
    /// Records in the page (changes, dead letters and repeats alike).
    pub(crate) records: usize,
    /// The last change's sequence number, when the page has changes: once
    /// the sinks hold it, the page is delivered.
    pub(crate) last: Option<SequenceNumber>,
    /// The newest `ApproximateCreationDateTime` among the page's changes.
    pub(crate) newest_ms: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Known, not started: waiting for its parent or a reader slot.
    Waiting,
    Reading,
    /// Read to its end or gone; kept until its pages are delivered.
    Finished,
}

#[derive(Debug)]
struct Shard {
    phase: Phase,
    /// From the shard id, or when the board first saw the shard.
    created_ms: i64,
    /// Pages handed over and not yet delivered: the last change's sequence
    /// number and the newest creation time, oldest page first.
    undelivered: VecDeque<(SequenceNumber, Option<i64>)>,
    /// Something was delivered in this run.
    delivered_any: bool,
    /// Creation time of the newest record delivered in this run.
    delivered_ms: Option<i64>,
    /// A page with records was read, or the reader started at a position
    /// already read: an empty page now means the tip.
    after_data: bool,
    /// The last page was empty and came after data.
    caught_up: bool,
}

impl Shard {
    fn new(id: &str, now_ms: i64) -> Self {
        Shard {
            phase: Phase::Waiting,
            created_ms: creation_in_id(id, now_ms).unwrap_or(now_ms),
            undelivered: VecDeque::new(),
            delivered_any: false,
            delivered_ms: None,
            after_data: false,
            caught_up: false,
        }
    }

    /// Lag (when the shard has a figure) and time to data loss, in seconds.
    fn health(&self, now_ms: i64) -> (Option<f64>, f64) {
        let age = |ms: i64| (now_ms.saturating_sub(ms)) as f64 / 1000.0;
        if self.undelivered.is_empty() && (self.caught_up || self.phase == Phase::Finished) {
            return (Some(0.0), RETENTION_SECONDS);
        }
        let by_shard_age = RETENTION_SECONDS - age(self.created_ms);
        if self.phase == Phase::Waiting {
            return (None, by_shard_age);
        }
        match self.delivered_ms {
            Some(ms) if self.delivered_any => {
                let lag = age(ms);
                (Some(lag), RETENTION_SECONDS - lag)
            }
            // Nothing delivered yet: whatever was delivered before this run
            // is older than the first page waiting.
            _ => (
                self.undelivered.front().and_then(|p| p.1).map(age),
                by_shard_age,
            ),
        }
    }
}

/// The shards of every stream the source reads; see the module docs.
#[derive(Debug)]
pub struct ShardBoard {
    streams: usize,
    answered: AtomicUsize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    shards: HashMap<ShardKey, Shard>,
    /// Per table, when the newest complete shard listing was asked for.
    listed_ms: HashMap<Arc<str>, i64>,
    /// Every table seen, so that one whose shards are all done still
    /// reports (as caught up) instead of vanishing.
    tables: BTreeMap<Arc<str>, ()>,
}

impl ShardBoard {
    /// A board for a source reading `streams` streams.
    pub fn new(streams: usize) -> Self {
        ShardBoard {
            streams,
            answered: AtomicUsize::new(0),
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state stays consistent at every step, so a panic elsewhere
        // while it was held leaves nothing half-done.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many streams have answered their first DescribeStream.
    pub fn streams_answered(&self) -> usize {
        self.answered.load(Ordering::Relaxed)
    }

    /// True once every configured stream has answered a DescribeStream (a
    /// readiness condition).
    pub fn all_streams_answered(&self) -> bool {
        self.streams_answered() >= self.streams
    }

    /// A stream answered its first DescribeStream.
    pub(crate) fn stream_answered(&self) {
        self.answered.fetch_add(1, Ordering::Relaxed);
    }

    /// A complete listing of the table's shards, asked for at `asked_ms`,
    /// is on the board.
    pub(crate) fn listed(&self, table: &Arc<str>, asked_ms: i64) {
        let mut state = self.state();
        state.tables.insert(table.clone(), ());
        let at = state.listed_ms.entry(table.clone()).or_insert(asked_ms);
        *at = (*at).max(asked_ms);
    }

    /// The table's shards as of the newest listing: when that listing was
    /// asked for, and the shards still being read or waiting to be (true
    /// when waiting). `None` before the first listing. Finished shards are
    /// left out: everything they held has been handed over.
    pub fn unfinished_shards(&self, table: &str) -> Option<(i64, Vec<(ShardKey, bool)>)> {
        let state = self.state();
        let listed = *state.listed_ms.get(table)?;
        let shards = state
            .shards
            .iter()
            .filter(|(k, s)| &*k.table == table && s.phase != Phase::Finished)
            .map(|(k, s)| (k.clone(), s.phase == Phase::Waiting))
            .collect();
        Some((listed, shards))
    }

    /// A shard is known and not started yet (it waits for its parent or for
    /// a reader slot).
    pub(crate) fn waiting(&self, key: &ShardKey, now_ms: i64) {
        let mut state = self.state();
        state.tables.insert(key.table.clone(), ());
        state
            .shards
            .entry(key.clone())
            .or_insert_with(|| Shard::new(&key.shard, now_ms));
    }

    /// A reader started on the shard; `at_position` when it starts after a
    /// record already read (a resume position) or at the tip (`LATEST`), so
    /// that an empty first page means it is caught up.
    pub(crate) fn started(&self, key: &ShardKey, now_ms: i64, at_position: bool) {
        let mut state = self.state();
        state.tables.insert(key.table.clone(), ());
        let shard = state
            .shards
            .entry(key.clone())
            .or_insert_with(|| Shard::new(&key.shard, now_ms));
        shard.phase = Phase::Reading;
        shard.after_data |= at_position;
    }

    /// The reader is handing a page to the pipeline.
    pub(crate) fn page(&self, key: &ShardKey, page: PageReport) {
        let mut state = self.state();
        let Some(shard) = state.shards.get_mut(key) else {
            return;
        };
        if page.records == 0 {
            shard.caught_up = shard.after_data;
        } else {
            shard.after_data = true;
            shard.caught_up = false;
        }
        let Some(last) = page.last else {
            return;
        };
        if shard.undelivered.len() >= MAX_PAGES_QUEUED
            && let Some(newest) = shard.undelivered.back_mut()
        {
            newest.0 = last;
            newest.1 = newest.1.max(page.newest_ms);
        } else {
            shard.undelivered.push_back((last, page.newest_ms));
        }
    }

    /// The shard is done: read to its end, or gone. It leaves the board
    /// once what was read from it is delivered.
    pub(crate) fn finished(&self, key: &ShardKey) {
        let mut state = self.state();
        let Some(shard) = state.shards.get_mut(key) else {
            return;
        };
        shard.phase = Phase::Finished;
        if shard.undelivered.is_empty() {
            state.shards.remove(key);
        }
    }

    /// Every sink has made the shard's changes up to `seq` durable. Call it
    /// with the shard's position (the lowest over the sinks) whenever that
    /// may have moved; positions already told change nothing, and shards
    /// the board does not know are ignored.
    pub fn delivered(&self, key: &ShardKey, seq: &SequenceNumber) {
        let mut state = self.state();
        let Some(shard) = state.shards.get_mut(key) else {
            return;
        };
        while let Some((last, newest_ms)) = shard.undelivered.front() {
            if last > seq {
                break;
            }
            shard.delivered_any = true;
            shard.delivered_ms = shard.delivered_ms.max(*newest_ms);
            shard.undelivered.pop_front();
        }
        if shard.phase == Phase::Finished && shard.undelivered.is_empty() {
            state.shards.remove(key);
        }
    }

    /// Each table's lag and time to data loss at `now_ms` (epoch
    /// milliseconds), in table order.
    pub fn snapshot(&self, now_ms: i64) -> Vec<TableHealth> {
        // Figures are gathered under the lock; names are copied after it.
        let figures: Vec<(Arc<str>, f64, f64)> = {
            let state = self.state();
            let mut by_table: BTreeMap<Arc<str>, (f64, f64)> = state
                .tables
                .keys()
                .map(|t| (t.clone(), (0.0, RETENTION_SECONDS)))
                .collect();
            for (key, shard) in &state.shards {
                let (lag, ttdl) = shard.health(now_ms);
                if let Some(figures) = by_table.get_mut(&key.table) {
                    figures.0 = figures.0.max(lag.unwrap_or(0.0));
                    figures.1 = figures.1.min(ttdl);
                }
            }
            by_table.into_iter().map(|(t, (l, d))| (t, l, d)).collect()
        };
        figures
            .into_iter()
            .map(|(table, lag, ttdl)| TableHealth {
                table: table.to_string(),
                lag_seconds: lag.clamp(0.0, MAX_LAG_SECONDS),
                time_to_data_loss_seconds: ttdl.clamp(0.0, RETENTION_SECONDS),
            })
            .collect()
    }
}

/// The creation time in a shard id: `shardId-00000001414576573621-f55eea83`
/// holds epoch milliseconds in its 20 digits. `None` when the id has no
/// such number, or one that is not a plausible time (a counter).
fn creation_in_id(id: &str, now_ms: i64) -> Option<i64> {
    let digits = id.strip_prefix("shardId-")?.split('-').next()?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ms: i64 = digits.parse().ok()?;
    (EARLIEST_SHARD_MS..=now_ms.saturating_add(CLOCK_SLACK_MS))
        .contains(&ms)
        .then_some(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2024-11-14T22:13:20Z, and a shard id created then.
    const NOW: i64 = 1_731_622_400_000;
    const HOUR: i64 = 3_600_000;

    fn key(shard: &str) -> ShardKey {
        ShardKey::new("orders", shard)
    }

    /// A shard id that says it was created at `ms`.
    fn id_at(ms: i64) -> String {
        format!("shardId-{ms:020}-f55eea83")
    }

    fn seq(n: u64) -> SequenceNumber {
        SequenceNumber::parse(&n.to_string()).unwrap()
    }

    fn page(records: usize, last: Option<u64>, newest_ms: Option<i64>) -> PageReport {
        PageReport {
            records,
            last: last.map(seq),
            newest_ms,
        }
    }

    fn orders(board: &ShardBoard, now_ms: i64) -> (f64, f64) {
        let all = board.snapshot(now_ms);
        let t = all.iter().find(|t| t.table == "orders").expect("orders");
        (t.lag_seconds, t.time_to_data_loss_seconds)
    }

    #[test]
    fn the_creation_time_is_read_from_the_shard_id_when_it_is_one() {
        assert_eq!(
            creation_in_id("shardId-00000001414576573621-f55eea83", NOW),
            Some(1_414_576_573_621)
        );
        // Simulators and moto number their shards.
        assert_eq!(
            creation_in_id("shardId-00000000000000000001-9e3779b9", NOW),
            None
        );
        assert_eq!(creation_in_id(&id_at(NOW + 2 * 86_400_000), NOW), None);
        assert_eq!(creation_in_id("shard-7", NOW), None);
        assert_eq!(creation_in_id("shardId-0001414576573621-f5", NOW), None);
    }

    #[test]
    fn streams_answered_counts_towards_the_configured_number() {
        let board = ShardBoard::new(2);
        assert!(!board.all_streams_answered());
        board.stream_answered();
        assert_eq!(board.streams_answered(), 1);
        assert!(!board.all_streams_answered());
        board.stream_answered();
        assert!(board.all_streams_answered());
        assert!(ShardBoard::new(0).all_streams_answered());
    }

    #[test]
    fn a_waiting_shard_counts_its_age_against_retention_and_has_no_lag() {
        let board = ShardBoard::new(1);
        board.waiting(&key(&id_at(NOW - 4 * HOUR)), NOW);
        let (lag, ttdl) = orders(&board, NOW);
        assert_eq!(lag, 0.0);
        assert_eq!(ttdl, 20.0 * 3600.0);
    }

    #[test]
    fn a_shard_without_a_time_in_its_id_is_as_old_as_the_board_has_known_it() {
        let board = ShardBoard::new(1);
        board.waiting(&key("shardId-00000000000000000001-9e3779b9"), NOW);
        let (_, ttdl) = orders(&board, NOW + HOUR);
        assert_eq!(ttdl, 23.0 * 3600.0);
    }

    #[test]
    fn lag_is_the_age_of_the_newest_record_delivered() {
        let board = ShardBoard::new(1);
        let k = key(&id_at(NOW - 6 * HOUR));
        board.started(&k, NOW, false);
        board.page(&k, page(2, Some(10), Some(NOW - 3 * HOUR)));
        board.page(&k, page(2, Some(20), Some(NOW - 2 * HOUR)));
        board.delivered(&k, &seq(10));
        let (lag, ttdl) = orders(&board, NOW);
        assert_eq!(lag, 3.0 * 3600.0);
        assert_eq!(ttdl, 21.0 * 3600.0, "24 hours minus the lag");
        board.delivered(&k, &seq(25));
        assert_eq!(orders(&board, NOW).0, 2.0 * 3600.0);
    }

    #[test]
    fn a_started_shard_with_nothing_delivered_counts_its_age_and_a_lower_bound_of_lag() {
        let board = ShardBoard::new(1);
        let k = key(&id_at(NOW - 5 * HOUR));
        board.started(&k, NOW, false);
        assert_eq!(
            orders(&board, NOW),
            (0.0, 19.0 * 3600.0),
            "nothing read yet: no lag figure"
        );
        board.page(&k, page(3, Some(7), Some(NOW - 4 * HOUR)));
        board.page(&k, page(3, Some(9), Some(NOW - HOUR)));
        assert_eq!(
            orders(&board, NOW),
            (4.0 * 3600.0, 19.0 * 3600.0),
            "whatever was delivered is older than the first page waiting"
        );
    }

    #[test]
    fn an_empty_page_after_data_with_everything_delivered_is_caught_up() {
        let board = ShardBoard::new(1);
        let k = key(&id_at(NOW - 5 * HOUR));
        board.started(&k, NOW, false);
        board.page(&k, page(1, Some(7), Some(NOW - HOUR)));
        board.page(&k, page(0, None, None));
        assert_eq!(
            orders(&board, NOW).0,
            3600.0,
            "caught up, but not delivered yet"
        );
        board.delivered(&k, &seq(7));
        assert_eq!(orders(&board, NOW), (0.0, RETENTION_SECONDS));
        board.page(&k, page(1, Some(8), Some(NOW - 60_000)));
        assert_eq!(
            orders(&board, NOW),
            (3600.0, 23.0 * 3600.0),
            "new data: behind again until it is delivered"
        );
    }

    #[test]
    fn an_empty_first_page_is_not_the_tip_unless_the_reader_started_at_a_position() {
        let board = ShardBoard::new(1);
        // From the oldest record: empty pages may come before the data.
        let fresh = key(&id_at(NOW - 2 * HOUR));
        board.started(&fresh, NOW, false);
        board.page(&fresh, page(0, None, None));
        assert_eq!(orders(&board, NOW), (0.0, 22.0 * 3600.0));
        // After a resume position: an empty page is the tip.
        let board = ShardBoard::new(1);
        let resumed = key(&id_at(NOW - 2 * HOUR));
        board.started(&resumed, NOW, true);
        board.page(&resumed, page(0, None, None));
        assert_eq!(orders(&board, NOW), (0.0, RETENTION_SECONDS));
    }

    #[test]
    fn a_child_waiting_for_its_parent_and_the_parent_both_count() {
        let board = ShardBoard::new(1);
        let parent = key(&id_at(NOW - 8 * HOUR));
        let child = key(&id_at(NOW - 4 * HOUR));
        board.waiting(&parent, NOW);
        board.waiting(&child, NOW);
        board.started(&parent, NOW, false);
        board.page(&parent, page(5, Some(50), Some(NOW - 6 * HOUR)));
        board.delivered(&parent, &seq(50));
        // Parent: lag 6 h, 18 h left. Child: 20 h left by its age.
        assert_eq!(orders(&board, NOW), (6.0 * 3600.0, 18.0 * 3600.0));
        // The parent drains: its last page goes out, then it is done.
        board.page(&parent, page(1, Some(51), Some(NOW - 5 * HOUR)));
        board.finished(&parent);
        assert_eq!(
            orders(&board, NOW).0,
            6.0 * 3600.0,
            "a finished shard counts until its pages are delivered"
        );
        board.delivered(&parent, &seq(51));
        assert_eq!(
            orders(&board, NOW),
            (0.0, 20.0 * 3600.0),
            "the parent left; the waiting child's age remains"
        );
    }

    #[test]
    fn a_table_takes_the_worst_shard_and_tables_are_apart() {
        let board = ShardBoard::new(2);
        let a = key(&id_at(NOW - HOUR));
        let b = key(&id_at(NOW - 3 * HOUR));
        let other = ShardKey::new("customers", id_at(NOW - 2 * HOUR));
        for k in [&a, &b, &other] {
            board.started(k, NOW, true);
        }
        board.page(&a, page(1, Some(1), Some(NOW - 10_000)));
        board.delivered(&a, &seq(1));
        board.page(&b, page(0, None, None));
        let all = board.snapshot(NOW);
        assert_eq!(
            all,
            [
                TableHealth {
                    table: "customers".into(),
                    lag_seconds: 0.0,
                    time_to_data_loss_seconds: 22.0 * 3600.0,
                },
                TableHealth {
                    table: "orders".into(),
                    lag_seconds: 10.0,
                    time_to_data_loss_seconds: RETENTION_SECONDS - 10.0,
                },
            ]
        );
    }

    #[test]
    fn a_table_whose_shards_are_all_done_reads_caught_up() {
        let board = ShardBoard::new(1);
        let k = key(&id_at(NOW - HOUR));
        board.started(&k, NOW, false);
        board.page(&k, page(1, Some(3), Some(NOW - 1000)));
        board.finished(&k);
        board.delivered(&k, &seq(3));
        assert_eq!(orders(&board, NOW), (0.0, RETENTION_SECONDS));
        let gone = key("shardId-gone");
        board.waiting(&gone, NOW);
        board.finished(&gone);
        assert_eq!(orders(&board, NOW), (0.0, RETENTION_SECONDS));
    }

    #[test]
    fn figures_are_clamped() {
        let board = ShardBoard::new(1);
        let old = key(&id_at(NOW - 30 * HOUR));
        board.waiting(&old, NOW);
        assert_eq!(orders(&board, NOW).1, 0.0, "never below zero");
        let board = ShardBoard::new(1);
        let k = key(&id_at(NOW - HOUR));
        board.started(&k, NOW, false);
        // A clock behind the records' times.
        board.page(&k, page(1, Some(1), Some(NOW + 60_000)));
        board.delivered(&k, &seq(1));
        assert_eq!(orders(&board, NOW), (0.0, RETENTION_SECONDS));
        // A nonsense timestamp.
        let board = ShardBoard::new(1);
        board.started(&k, NOW, false);
        board.page(&k, page(1, Some(2), Some(0)));
        board.delivered(&k, &seq(2));
        assert_eq!(orders(&board, NOW), (MAX_LAG_SECONDS, 0.0));
    }

    #[test]
    fn the_queue_of_pages_is_bounded_and_errs_late_not_early() {
        let board = ShardBoard::new(1);
        let k = key(&id_at(NOW - HOUR));
        board.started(&k, NOW, false);
        let pages = MAX_PAGES_QUEUED as u64 + 10;
        for n in 1..=pages {
            board.page(&k, page(1, Some(n), Some(NOW - 1000 * (pages - n) as i64)));
        }
        let queued = board.state().shards[&k].undelivered.len();
        assert_eq!(queued, MAX_PAGES_QUEUED);
        // The last entry absorbed the overflow: delivering the page it
        // started at does not count it delivered.
        board.delivered(&k, &seq(MAX_PAGES_QUEUED as u64));
        assert_eq!(board.state().shards[&k].undelivered.len(), 1);
        board.delivered(&k, &seq(pages));
        assert!(board.state().shards[&k].undelivered.is_empty());
        assert_eq!(orders(&board, NOW).0, 0.0);
    }

    #[test]
    fn deliveries_of_unknown_shards_and_old_positions_change_nothing() {
        let board = ShardBoard::new(1);
        board.delivered(&key("shardId-unknown"), &seq(5));
        assert!(board.snapshot(NOW).is_empty());
        let k = key(&id_at(NOW - HOUR));
        board.started(&k, NOW, false);
        board.page(&k, page(1, Some(9), Some(NOW - 5000)));
        board.delivered(&k, &seq(4)); // a resume position, re-reported
        assert_eq!(orders(&board, NOW), (5.0, 23.0 * 3600.0));
    }
}
