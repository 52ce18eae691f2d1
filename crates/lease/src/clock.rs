//! Lease time: a clock that keeps counting while the host is suspended.
//!
//! A lease is judged expired on the observer's own clock: a worker that
//! last saw a lease's counter change more than a lease duration ago may
//! take it, and its holder stops writing a third of a duration before
//! that (see [`crate::coordinator`]). Both sides must count the same
//! seconds. `std::time::Instant` is `CLOCK_MONOTONIC` on Linux, which
//! stops while the host is suspended: a holder suspended for an hour would
//! wake with its lease still valid on its own clock, and write for up to a
//! third of a lease after another worker took the table. `CLOCK_BOOTTIME`
//! counts the suspension, so the holder wakes fenced.

use std::ops::Add;
use std::time::Duration;

/// A moment on the lease clock: the time since the host started, its
/// suspensions included (Linux `CLOCK_BOOTTIME`; elsewhere the time since
/// this process first read the clock, on `Instant`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Moment(Duration);

impl Moment {
    /// Now, on the lease clock.
    #[must_use]
    pub fn now() -> Self {
        Moment(since_boot())
    }

    /// The moment `since` after the clock's origin (for clocks in tests).
    #[must_use]
    pub const fn from_origin(since: Duration) -> Self {
        Moment(since)
    }

    /// The time from `earlier` to this moment, zero when `earlier` is later.
    #[must_use]
    pub fn saturating_since(self, earlier: Moment) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

impl Add<Duration> for Moment {
    type Output = Moment;

    fn add(self, d: Duration) -> Moment {
        Moment(self.0 + d)
    }
}

/// Where time comes from (a fake clock in tests).
pub trait Clock {
    /// Now, on the lease clock.
    fn now(&self) -> Moment;
}

/// The host's lease clock ([`Moment::now`]).
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Moment {
        Moment::now()
    }
}

#[cfg(target_os = "linux")]
fn since_boot() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &raw mut ts) };
    // CLOCK_BOOTTIME exists since Linux 2.6.39; with a valid pointer the
    // call cannot fail.
    assert_eq!(rc, 0, "clock_gettime(CLOCK_BOOTTIME) failed");
    let secs = u64::try_from(ts.tv_sec).expect("the boot clock is not negative");
    let nanos = u32::try_from(ts.tv_nsec).expect("nanoseconds below a second");
    Duration::new(secs, nanos)
}

#[cfg(not(target_os = "linux"))]
fn since_boot() -> Duration {
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    ORIGIN.get_or_init(std::time::Instant::now).elapsed()
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn the_lease_clock_advances_with_the_monotonic_clock() {
        // Read around the monotonic clock's readings: the lease clock's
        // interval holds the monotonic one's (they tick at the same rate,
        // and a test run is not suspended).
        let m0 = Moment::now();
        let i0 = Instant::now();
        let mut last = m0;
        while i0.elapsed() < Duration::from_millis(20) {
            let m = Moment::now();
            assert!(m >= last, "the lease clock went back: {last:?} -> {m:?}");
            last = m;
        }
        let on_monotonic = i0.elapsed();
        let on_lease = Moment::now().saturating_since(m0);
        assert!(
            on_lease + Duration::from_millis(1) >= on_monotonic,
            "{on_lease:?} on the lease clock, {on_monotonic:?} on the monotonic one"
        );
        assert!(
            on_lease <= on_monotonic + Duration::from_secs(1),
            "{on_lease:?} on the lease clock, {on_monotonic:?} on the monotonic one"
        );
    }

    #[test]
    fn moments_add_and_measure() {
        let m = Moment::from_origin(Duration::from_secs(10));
        assert_eq!(
            (m + Duration::from_secs(5)).saturating_since(m),
            Duration::from_secs(5)
        );
        assert_eq!(
            m.saturating_since(m + Duration::from_secs(1)),
            Duration::ZERO
        );
        assert!(m < m + Duration::from_nanos(1));
    }
}
