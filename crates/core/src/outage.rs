//! How an outage is logged: once when it starts, at most every 30 s while
//! it lasts (with how long), and once when it ends. Never a line per retry,
//! nor a pair per flap: an outage that starts within 30 s of the last one
//! logged starts quietly, and ends quietly unless it lasts 30 s (then it is
//! logged as starting, late), so a dependency failing every other call
//! logs a pair of lines every 30 s at most.
//!
//! Pure bookkeeping: the caller says what happened and when, and writes the
//! line this returns, so the rule is tested without clocks or logs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The shortest time between two "still down" lines.
pub const STILL_DOWN_EVERY: Duration = Duration::from_secs(30);

/// What to log about an outage now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutageLine {
    /// It just started.
    Down,
    /// It has lasted this long.
    StillDown(Duration),
    /// It ended after this long.
    Back(Duration),
}

/// One thing that can be down (a sink, a broker).
#[derive(Clone, Debug, Default)]
pub struct Outage {
    since: Option<Instant>,
    last_line: Option<Instant>,
    /// When the last `Down` line was due.
    last_down: Option<Instant>,
    /// This outage has had no line yet (it started soon after another).
    quiet: bool,
}

impl Outage {
    /// Nothing is down.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether an outage is going on.
    pub fn is_down(&self) -> bool {
        self.since.is_some()
    }

    /// A failure at `now`; returns the line to log, if one is due.
    pub fn failed(&mut self, now: Instant) -> Option<OutageLine> {
        let Some(since) = self.since else {
            self.since = Some(now);
            self.last_line = Some(now);
            self.quiet = self
                .last_down
                .is_some_and(|down| now.saturating_duration_since(down) < STILL_DOWN_EVERY);
            if self.quiet {
                return None;
            }
            self.last_down = Some(now);
            return Some(OutageLine::Down);
        };
        let last = self.last_line.unwrap_or(since);
        if now.saturating_duration_since(last) >= STILL_DOWN_EVERY {
            self.last_line = Some(now);
            // A quiet outage that lasts is an outage: its first line says
            // so as a start would (at the level operators alert on).
            if std::mem::take(&mut self.quiet) {
                self.last_down = Some(now);
                return Some(OutageLine::Down);
            }
            return Some(OutageLine::StillDown(now.saturating_duration_since(since)));
        }
        None
    }

    /// A success at `now`; returns the line to log when it ends an outage.
    pub fn succeeded(&mut self, now: Instant) -> Option<OutageLine> {
        let since = self.since.take()?;
        self.last_line = None;
        if std::mem::take(&mut self.quiet) {
            return None;
        }
        Some(OutageLine::Back(now.saturating_duration_since(since)))
    }
}

/// One outage shared by many callers (the shard readers of a source, the
/// segments of a scan): it starts with the first caller that fails and
/// ends when none is left failing, so that a service down for all of them
/// is a handful of lines, not one per caller per retry. Each caller keeps
/// its own flag (`caller`) of whether it is failing.
#[derive(Debug, Default)]
pub struct SharedOutage {
    outage: Mutex<Outage>,
    failing: AtomicUsize,
}

impl SharedOutage {
    /// Nothing is down.
    pub fn new() -> Self {
        Self::default()
    }

    /// The caller failed at `at`; returns the line to log, if one is due.
    pub fn failed(&self, caller: &mut bool, at: Instant) -> Option<OutageLine> {
        self.mark(caller, true);
        self.outage
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .failed(at)
    }

    /// The caller got an answer at `at`. When no caller is left failing,
    /// an outage going on ended; returns the line to log.
    pub fn answered(&self, caller: &mut bool, at: Instant) -> Option<OutageLine> {
        self.mark(caller, false);
        if self.failing() > 0 {
            return None;
        }
        self.outage
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .succeeded(at)
    }

    /// Sets the caller's flag without a line: failing on something that is
    /// not (yet) an outage, or leaving. Returns whether the caller stopped
    /// failing.
    pub fn mark(&self, caller: &mut bool, failing: bool) -> bool {
        let stopped = *caller && !failing;
        if failing && !*caller {
            self.failing.fetch_add(1, Ordering::Relaxed);
        } else if stopped {
            self.failing.fetch_sub(1, Ordering::Relaxed);
        }
        *caller = failing;
        stopped
    }

    /// Callers failing now.
    pub fn failing(&self) -> usize {
        self.failing.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_logged_when_it_starts_every_30_s_and_when_it_ends() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut o = Outage::new();
        assert_eq!(o.succeeded(at(0)), None, "nothing to end");
        assert_eq!(o.failed(at(0)), Some(OutageLine::Down));
        assert!(o.is_down());
        for s in 1..30 {
            assert_eq!(o.failed(at(s)), None, "second {s}");
        }
        assert_eq!(
            o.failed(at(30)),
            Some(OutageLine::StillDown(Duration::from_secs(30)))
        );
        assert_eq!(o.failed(at(45)), None);
        assert_eq!(
            o.failed(at(61)),
            Some(OutageLine::StillDown(Duration::from_secs(61)))
        );
        assert_eq!(
            o.succeeded(at(70)),
            Some(OutageLine::Back(Duration::from_secs(70)))
        );
        assert_eq!(o.succeeded(at(71)), None, "logged once");
        assert_eq!(o.failed(at(80)), Some(OutageLine::Down), "a new outage");
    }

    #[test]
    fn a_flapping_dependency_logs_a_pair_of_lines_every_30_s_at_most() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut o = Outage::new();
        let mut lines = Vec::new();
        // Fails every other call, a call every half second, for two minutes.
        for i in 0..240u64 {
            let line = if i % 2 == 0 {
                o.failed(at(i * 500))
            } else {
                o.succeeded(at(i * 500))
            };
            lines.extend(line.map(|l| (i * 500, l)));
        }
        let downs: Vec<u64> = lines
            .iter()
            .filter(|(_, l)| *l == OutageLine::Down)
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(downs, [0, 30_000, 60_000, 90_000], "{lines:?}");
        assert_eq!(lines.len(), 8, "each Down with its Back: {lines:?}");
        // A quiet outage that lasts is logged as one starting, then as any
        // other, and ends with a line.
        let mut o = Outage::new();
        assert_eq!(o.failed(at(0)), Some(OutageLine::Down));
        assert!(o.succeeded(at(1_000)).is_some());
        assert_eq!(o.failed(at(2_000)), None, "soon after the last: quiet");
        assert_eq!(o.failed(at(32_000)), Some(OutageLine::Down));
        assert_eq!(
            o.failed(at(62_000)),
            Some(OutageLine::StillDown(Duration::from_secs(60)))
        );
        assert_eq!(
            o.succeeded(at(63_000)),
            Some(OutageLine::Back(Duration::from_secs(61)))
        );
    }

    /// Many callers failing together are one outage: a line when the first
    /// fails, none per retry, one when the last is answered.
    #[test]
    fn callers_failing_together_make_one_outage_that_ends_with_the_last_answer() {
        let shared = SharedOutage::new();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let (mut a, mut b, mut c) = (false, false, false);
        assert_eq!(shared.answered(&mut a, at(0)), None, "nothing to end");
        assert_eq!(shared.failed(&mut a, at(1)), Some(OutageLine::Down));
        for s in 1..20 {
            assert_eq!(shared.failed(&mut b, at(s)), None);
            assert_eq!(shared.failed(&mut a, at(s)), None);
            assert_eq!(shared.failed(&mut c, at(s)), None);
        }
        assert_eq!(shared.failing(), 3);
        assert_eq!(
            shared.failed(&mut b, at(31)),
            Some(OutageLine::StillDown(Duration::from_secs(30)))
        );
        assert_eq!(shared.answered(&mut a, at(40)), None, "b and c still fail");
        assert_eq!(shared.answered(&mut c, at(41)), None);
        assert_eq!(
            shared.answered(&mut b, at(42)),
            Some(OutageLine::Back(Duration::from_secs(41)))
        );
        assert_eq!(shared.failing(), 0);
        assert_eq!(shared.answered(&mut b, at(43)), None);
        // A caller that leaves while failing: the next answer ends it.
        assert_eq!(shared.failed(&mut a, at(50)), Some(OutageLine::Down));
        assert!(shared.mark(&mut a, false));
        assert_eq!(
            shared.answered(&mut b, at(52)),
            Some(OutageLine::Back(Duration::from_secs(2)))
        );
        // Marked failing without a line (back-pressure), then answered.
        assert!(!shared.mark(&mut c, true));
        assert_eq!(shared.failing(), 1);
        assert_eq!(shared.answered(&mut c, at(60)), None, "no outage began");
    }
}
