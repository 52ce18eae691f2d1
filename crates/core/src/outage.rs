//! How an outage is logged: once when it starts, at most every 30 s while
//! it lasts (with how long), and once when it ends. Never a line per retry.
//!
//! Pure bookkeeping: the caller says what happened and when, and writes the
//! line this returns, so the rule is tested without clocks or logs.

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
            return Some(OutageLine::Down);
        };
        let last = self.last_line.unwrap_or(since);
        if now.saturating_duration_since(last) >= STILL_DOWN_EVERY {
            self.last_line = Some(now);
            return Some(OutageLine::StillDown(now.saturating_duration_since(since)));
        }
        None
    }

    /// A success at `now`; returns the line to log when it ends an outage.
    pub fn succeeded(&mut self, now: Instant) -> Option<OutageLine> {
        let since = self.since.take()?;
        self.last_line = None;
        Some(OutageLine::Back(now.saturating_duration_since(since)))
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
}
