//! [`WritePace`]: how a checkpoint store writes less often than it is
//! asked to.
//!
//! Positions move with nearly every batch into Kafka, and every write costs
//! (two `fsync`s of a local file, a billed write per changed item of the
//! lease table). A store's records are hints (each sink's own storage is
//! the truth), so a store may hold a record back and write only the newest
//! one a moment later, as long as its `flush` writes what it held.

use std::time::{Duration, Instant};

use crate::Recorded;

/// The shortest time between two writes of a checkpoint store.
pub const CHECKPOINT_WRITE_INTERVAL: Duration = Duration::from_secs(1);

/// Spaces a store's writes at least an interval apart: the first record
/// is written at once, a record offered sooner is held back (replacing the
/// one held), and the held record is for the store's `flush`.
#[derive(Debug)]
pub struct WritePace {
    interval: Duration,
    /// The newest record not written yet.
    held: Option<Recorded>,
    /// When the store last wrote.
    last_write: Option<Instant>,
}

impl Default for WritePace {
    fn default() -> Self {
        WritePace::new(CHECKPOINT_WRITE_INTERVAL)
    }
}

impl WritePace {
    /// Writes at least `interval` apart.
    pub fn new(interval: Duration) -> Self {
        WritePace {
            interval,
            held: None,
            last_write: None,
        }
    }

    /// Holds `recorded` back when the last write was less than the interval
    /// ago (true); otherwise the caller writes it now (false).
    pub fn hold(&mut self, recorded: &Recorded) -> bool {
        let soon = self.last_write.is_some_and(|t| t.elapsed() < self.interval);
        if soon {
            self.held = Some(recorded.clone());
        }
        soon
    }

    /// Holds `recorded` back whatever the time: a write of it failed, and
    /// the next store or the flush is to try again.
    pub fn keep(&mut self, recorded: Recorded) {
        self.held = Some(recorded);
    }

    /// The record held back, for the store's `flush` to write.
    pub fn take_held(&mut self) -> Option<Recorded> {
        self.held.take()
    }

    /// The record held back once the interval since the last write has
    /// passed, for the store's `write_due` to write; `None` before then.
    pub fn take_due(&mut self) -> Option<Recorded> {
        let due = self.last_write.is_none_or(|t| t.elapsed() >= self.interval);
        if due { self.held.take() } else { None }
    }

    /// The store wrote (or is writing) a record: nothing older is held,
    /// and the interval starts again.
    pub fn written(&mut self) {
        self.held = None;
        self.last_write = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_record_goes_at_once_the_next_ones_wait_and_the_newest_is_kept() {
        let mut pace = WritePace::new(Duration::from_secs(3600));
        let record = |n: u64| {
            let mut r = Recorded::default();
            r.sinks.insert(format!("sink-{n}"), Default::default());
            r
        };
        assert!(!pace.hold(&record(1)), "nothing written yet: write now");
        pace.written();
        assert!(pace.hold(&record(2)));
        assert!(pace.hold(&record(3)));
        assert_eq!(pace.take_held(), Some(record(3)), "the newest");
        assert_eq!(pace.take_held(), None);
        pace.keep(record(4));
        pace.written();
        assert_eq!(pace.take_held(), None, "a write drops what was held");
        let mut at_once = WritePace::new(Duration::ZERO);
        at_once.written();
        assert!(!at_once.hold(&record(5)), "the interval has passed");
    }

    #[test]
    fn a_held_record_is_due_once_the_interval_has_passed() {
        let mut r = Recorded::default();
        r.sinks.insert("s".into(), Default::default());
        let mut slow = WritePace::new(Duration::from_secs(3600));
        slow.written();
        assert!(slow.hold(&r));
        assert_eq!(slow.take_due(), None, "not yet");
        assert_eq!(slow.take_held(), Some(r.clone()), "still held");
        let mut quick = WritePace::new(Duration::ZERO);
        quick.written();
        quick.keep(r.clone());
        assert_eq!(quick.take_due(), Some(r), "due");
        assert_eq!(quick.take_due(), None, "taken");
    }
}
