//! Signs of life from code that waits on purpose.
//!
//! A run loop blocked while a sink waits for its broker to come back is not
//! hung: the design is to wait such outages out. Code that waits in a loop
//! calls [`still_waiting`] on each turn, and the liveness probe counts that
//! as the run loop being alive.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static LAST_SIGN_MS: AtomicU64 = AtomicU64::new(0);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Says that this thread is waiting on purpose and is not hung.
pub fn still_waiting() {
    LAST_SIGN_MS.store(now_ms(), Ordering::Relaxed);
}

/// Milliseconds since the last [`still_waiting`]; `None` when there was none.
pub fn since_last_sign_ms() -> Option<u64> {
    match LAST_SIGN_MS.load(Ordering::Relaxed) {
        0 => None,
        last => Some(now_ms().saturating_sub(last)),
    }
}
