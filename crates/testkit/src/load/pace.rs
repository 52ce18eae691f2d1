//! When to write: a deadline schedule per lane, and backoff after errors.
//!
//! Each write has a due time fixed in advance (`base + n × period`), so the
//! time a write takes does not push later writes back: sleeping a period
//! after each write would drift below the asked rate by the endpoint's
//! latency. A lane that falls far behind (an outage, a slow endpoint)
//! starts a new schedule from now instead of sending every missed write in
//! one burst when the endpoint recovers.

use std::time::{Duration, Instant};

use rand::Rng;
use rand::rngs::StdRng;

/// How late a lane may run before it gives up the missed writes.
const MAX_LAG: Duration = Duration::from_secs(1);

/// Due times `base + n × period`.
#[derive(Debug)]
pub(crate) struct Schedule {
    base: Instant,
    period: Duration,
    n: u32,
}

impl Schedule {
    pub(crate) fn new(first: Instant, period: Duration) -> Self {
        Schedule {
            base: first,
            period,
            n: 0,
        }
    }

    /// The due time of the next write, given the time now.
    pub(crate) fn next_due(&mut self, now: Instant) -> Instant {
        let mut due = self.base + self.period.saturating_mul(self.n);
        if now > due + MAX_LAG {
            self.base = now;
            self.n = 0;
            due = now;
        }
        self.n = self.n.saturating_add(1);
        due
    }
}

/// Exponential backoff with jitter: 100 ms doubling up to 5 s, each wait
/// drawn between half and all of the current step so lanes that failed
/// together do not retry together.
#[derive(Debug)]
pub(crate) struct Backoff {
    step: Duration,
}

const FIRST_STEP: Duration = Duration::from_millis(100);
const MAX_STEP: Duration = Duration::from_secs(5);

impl Backoff {
    pub(crate) fn new() -> Self {
        Backoff { step: FIRST_STEP }
    }

    pub(crate) fn next(&mut self, rng: &mut StdRng) -> Duration {
        let wait = self.step.mul_f64(rng.random_range(0.5..=1.0));
        self.step = (self.step * 2).min(MAX_STEP);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn due_times_do_not_drift_with_write_latency() {
        let start = Instant::now();
        let period = Duration::from_millis(20);
        let mut s = Schedule::new(start, period);
        // Each write takes 15 ms: the schedule still advances by 20 ms.
        let mut now = start;
        for n in 0..50 {
            let due = s.next_due(now);
            assert_eq!(due, start + period * n);
            now = due.max(now) + Duration::from_millis(15);
        }
    }

    #[test]
    fn a_lane_far_behind_starts_over_instead_of_bursting() {
        let start = Instant::now();
        let mut s = Schedule::new(start, Duration::from_millis(100));
        assert_eq!(s.next_due(start), start);
        // Slightly late: catch up on schedule.
        let late = start + Duration::from_millis(500);
        assert_eq!(s.next_due(late), start + Duration::from_millis(100));
        // An outage of 10 s: the next write is now, then one per period.
        let later = start + Duration::from_secs(10);
        assert_eq!(s.next_due(later), later);
        assert_eq!(s.next_due(later), later + Duration::from_millis(100));
    }

    #[test]
    fn backoff_grows_to_a_cap() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut b = Backoff::new();
        let waits: Vec<Duration> = (0..10).map(|_| b.next(&mut rng)).collect();
        assert!(waits[0] >= Duration::from_millis(50) && waits[0] <= FIRST_STEP);
        assert!(waits.iter().all(|w| *w <= MAX_STEP));
        assert!(waits[9] >= MAX_STEP / 2);
    }
}
