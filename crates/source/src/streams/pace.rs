//! [`Pace`]: turns spaced evenly across every caller of the process.
//!
//! DescribeStream is limited per account (about ten calls a second), not
//! per stream: a process reading many tables lists them all through one
//! pace, so that their refreshes, however they line up, stay under it.
//! (A snapshot's S0 and a latest start each list their stream once more,
//! before the source starts, outside the pace.)

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Calls a second the stream listings of one process make at most: half
/// the account's limit, for the account's other readers (Lambda triggers,
/// another bridge).
pub(crate) const DESCRIBE_STREAM_PER_SECOND: u32 = 5;

/// Hands out turns at least `gap` apart, first come first served.
#[derive(Debug)]
pub(crate) struct Pace {
    gap: Duration,
    next: Mutex<Option<Instant>>,
}

impl Pace {
    /// Turns at most `per_second` a second.
    pub(crate) fn per_second(per_second: u32) -> Pace {
        Pace {
            gap: Duration::from_secs(1) / per_second.max(1),
            next: Mutex::new(None),
        }
    }

    /// Reserves the first free turn at or after `now`; the caller waits
    /// until it.
    pub(crate) fn reserve(&self, now: Instant) -> Instant {
        let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
        let turn = next.map_or(now, |n| n.max(now));
        *next = Some(turn + self.gap);
        turn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_together_get_turns_a_gap_apart_and_an_idle_pace_answers_at_once() {
        let pace = Pace::per_second(5);
        let t0 = Instant::now();
        let ms = |d: u64| t0 + Duration::from_millis(d);
        // Three streams list at the same moment.
        assert_eq!(pace.reserve(t0), t0);
        assert_eq!(pace.reserve(t0), ms(200));
        assert_eq!(pace.reserve(ms(50)), ms(400));
        // Later than the next free turn: at once.
        assert_eq!(pace.reserve(ms(2_000)), ms(2_000));
        assert_eq!(pace.reserve(ms(2_100)), ms(2_200));
    }
}
