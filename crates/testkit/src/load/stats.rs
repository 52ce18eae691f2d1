//! What `load` has written, and the reports it prints.
//!
//! Writes are counted when the endpoint acknowledged them, so the summary
//! says which stream records a reader should find: an INSERT per insert, a
//! MODIFY per replace or update, a REMOVE per delete. Errors are counted
//! apart. An outage is logged when it starts and when writes succeed
//! again, never once per failed write.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::items::Kind;

/// Counters shared by every lane.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    writes: [AtomicU64; 4],
    throttled: AtomicU64,
    unavailable: AtomicU64,
    rejected: AtomicU64,
    skipped: AtomicU64,
}

/// Why a write did not go through (yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Miss {
    /// The endpoint asked to slow down; retried.
    Throttled,
    /// No answer, a timeout or a server error; retried.
    Unavailable,
    /// Refused as invalid; not retried.
    Rejected,
    /// The condition failed (the item changed or is gone); not retried.
    Skipped,
}

fn index(kind: Kind) -> usize {
    match kind {
        Kind::Insert => 0,
        Kind::Replace => 1,
        Kind::Update => 2,
        Kind::Delete => 3,
    }
}

impl Stats {
    pub(crate) fn wrote(&self, kind: Kind) {
        self.writes[index(kind)].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn missed(&self, miss: Miss) {
        let counter = match miss {
            Miss::Throttled => &self.throttled,
            Miss::Unavailable => &self.unavailable,
            Miss::Rejected => &self.rejected,
            Miss::Skipped => &self.skipped,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Counts {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Counts {
            writes: self.writes.each_ref().map(get),
            throttled: get(&self.throttled),
            unavailable: get(&self.unavailable),
            rejected: get(&self.rejected),
            skipped: get(&self.skipped),
        }
    }
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    writes: [u64; 4],
    throttled: u64,
    unavailable: u64,
    rejected: u64,
    skipped: u64,
}

impl Counts {
    pub(crate) fn total(&self) -> u64 {
        self.writes.iter().sum()
    }

    pub(crate) fn of(&self, kind: Kind) -> u64 {
        self.writes[index(kind)]
    }

    fn by_kind(&self) -> String {
        Kind::ALL
            .iter()
            .map(|k| format!("{} {}", self.of(*k), k.plural()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn errors(&self) -> String {
        format!(
            "{} throttled and {} unavailable (retried), {} rejected, {} skipped (condition failed)",
            self.throttled, self.unavailable, self.rejected, self.skipped
        )
    }

    fn any_error(&self) -> bool {
        self.throttled + self.unavailable + self.rejected + self.skipped > 0
    }

    /// `[  10 s] 500 writes: …; 50.0/s now`, with errors when there are any.
    pub(crate) fn progress_line(&self, elapsed: Duration, rate_now: f64) -> String {
        let mut line = format!(
            "[{:>5.0} s] {} writes: {}; {rate_now:.1}/s now",
            elapsed.as_secs_f64(),
            self.total(),
            self.by_kind(),
        );
        if self.any_error() {
            line.push_str("; errors: ");
            line.push_str(&self.errors());
        }
        line
    }

    /// The summary: writes by kind, the stream records they make, errors.
    pub(crate) fn summary(&self, table: &str, elapsed: Duration) -> String {
        let secs = elapsed.as_secs_f64();
        let rate = if secs > 0.0 {
            self.total() as f64 / secs
        } else {
            0.0
        };
        format!(
            "summary: {} writes to `{table}` in {secs:.1} s ({rate:.1}/s): {}\n  \
             stream records to expect: {} INSERT, {} MODIFY, {} REMOVE\n  \
             errors: {}\n",
            self.total(),
            self.by_kind(),
            self.of(Kind::Insert),
            self.of(Kind::Replace) + self.of(Kind::Update),
            self.of(Kind::Delete),
            self.errors(),
        )
    }
}

/// Logs outages once: when the first write fails and when writes succeed
/// again after a quiet second (lanes failing and succeeding in turn under
/// throttling are one outage, not many).
#[derive(Debug, Default)]
pub(crate) struct Outage {
    state: Mutex<OutageState>,
    /// Error codes of rejected writes already logged.
    rejected: Mutex<BTreeSet<String>>,
}

#[derive(Debug, Default)]
struct OutageState {
    since: Option<Instant>,
    last_failure: Option<Instant>,
    failures: u64,
}

/// Successes within this long of a failure do not end an outage.
const QUIET: Duration = Duration::from_secs(1);

impl Outage {
    /// A retryable failure of a write sent at `sent`, seen at `now`;
    /// returns the line to log when an outage starts. The outage counts
    /// from `sent`: a timeout is seen long after the endpoint stopped.
    pub(crate) fn failed(&self, sent: Instant, now: Instant, what: &str) -> Option<String> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.failures += 1;
        st.last_failure = Some(now);
        if st.since.is_some() {
            return None;
        }
        st.since = Some(sent);
        Some(format!(
            "{what}; retrying with backoff (logged again once writes succeed)"
        ))
    }

    /// A successful write; returns the line to log when an outage ends.
    pub(crate) fn succeeded(&self, now: Instant) -> Option<String> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let since = st.since?;
        if st
            .last_failure
            .is_some_and(|t| now.saturating_duration_since(t) < QUIET)
        {
            return None;
        }
        let failures = std::mem::take(&mut st.failures);
        st.since = None;
        Some(format!(
            "writes succeed again after {:.1} s ({failures} failed attempts)",
            now.saturating_duration_since(since).as_secs_f64()
        ))
    }

    /// A rejected write; true the first time this error code is seen.
    pub(crate) fn first_rejection(&self, code: &str) -> bool {
        let mut seen = self.rejected.lock().unwrap_or_else(|e| e.into_inner());
        seen.insert(code.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_log_line_per_outage() {
        let o = Outage::default();
        let t0 = Instant::now();
        assert!(o.failed(t0, t0, "down").is_some());
        for i in 1..100 {
            let t = t0 + Duration::from_millis(i);
            assert_eq!(o.failed(t, t, "down"), None);
        }
        // A success right after a failure (another lane) does not end it.
        assert_eq!(o.succeeded(t0 + Duration::from_millis(200)), None);
        let back = o.succeeded(t0 + Duration::from_secs(3)).unwrap();
        assert!(back.contains("100 failed attempts"), "{back}");
        assert_eq!(o.succeeded(t0 + Duration::from_secs(4)), None);
        let t5 = t0 + Duration::from_secs(5);
        let line = o.failed(t5 - Duration::from_secs(2), t5, "down").unwrap();
        assert!(line.starts_with("down; retrying"), "{line}");
        let back = o.succeeded(t0 + Duration::from_secs(7)).unwrap();
        assert!(back.contains("after 4.0 s"), "{back}");
    }

    #[test]
    fn summary_names_the_stream_records() {
        let s = Stats::default();
        for k in [Kind::Insert, Kind::Insert, Kind::Replace, Kind::Update] {
            s.wrote(k);
        }
        s.wrote(Kind::Delete);
        s.missed(Miss::Throttled);
        let text = s.snapshot().summary("t", Duration::from_secs(2));
        assert!(
            text.starts_with(
                "summary: 5 writes to `t` in 2.0 s (2.5/s): 2 inserts, 1 replaces, 1 updates, 1 deletes\n"
            ),
            "{text}"
        );
        assert!(text.contains("2 INSERT, 2 MODIFY, 1 REMOVE"), "{text}");
        assert!(text.contains("1 throttled"), "{text}");
        let line = s.snapshot().progress_line(Duration::from_secs(5), 1.0);
        assert!(line.starts_with("[    5 s] 5 writes: 2 inserts"), "{line}");
    }
}
