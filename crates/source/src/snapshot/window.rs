//! The rule that puts each snapshot row in its place among the key's
//! changes while the stream keeps flowing.
//!
//! A scan page asked for at `asked` and answered at `answered` shows each
//! item as it was at some moment in between. The page is held until every
//! shard of the table has been read through `answered + margin`: by then
//! every change made before the read has been handed over, ahead of the
//! page. A change the stream handed over whose creation time is at or after
//! `asked - margin` may be newer than the read, so its key is dropped from
//! the page: the stream already carries that key's newer state (the stream
//! has new images, checked before a snapshot starts). What is left is
//! exact: each row follows every change older than it and precedes every
//! change newer than it. The margin absorbs the granularity of
//! `ApproximateCreationDateTime` and the skew between the local clock and
//! DynamoDB's.
//!
//! Pure bookkeeping: times are passed in, nothing is read or written.

use std::collections::HashMap;

/// Keys the stream touched recently, and the release rule.
#[derive(Debug, Default)]
pub struct Window {
    margin_ms: i64,
    /// Key text -> the newest creation time of a change handed over.
    touched: HashMap<String, i64>,
}

impl Window {
    /// A window with the given margin.
    pub fn new(margin_ms: i64) -> Self {
        Window {
            margin_ms,
            touched: HashMap::new(),
        }
    }

    /// The margin.
    pub fn margin(&self) -> i64 {
        self.margin_ms
    }

    /// The stream handed over a change of `key` created at `created_ms`
    /// (`None`: unknown, taken as newer than any read).
    pub fn touched(&mut self, key: String, created_ms: Option<i64>) {
        let ms = created_ms.unwrap_or(i64::MAX);
        let at = self.touched.entry(key).or_insert(ms);
        *at = (*at).max(ms);
    }

    /// True once a page answered at `answered_ms` may go: the stream is read
    /// through `read_through_ms` on every shard.
    pub fn ready(&self, answered_ms: i64, read_through_ms: i64) -> bool {
        read_through_ms >= answered_ms.saturating_add(self.margin_ms)
    }

    /// True when the row of `key` from a page asked for at `asked_ms` is
    /// kept: no change of the key handed over so far may be newer.
    pub fn keeps(&self, key: &str, asked_ms: i64) -> bool {
        self.touched
            .get(key)
            .is_none_or(|&ms| ms < asked_ms.saturating_sub(self.margin_ms))
    }

    /// Forgets changes that can no longer drop anything: those older than
    /// `oldest_ask_ms` (the oldest page held or being read) minus the margin.
    pub fn forget_before(&mut self, oldest_ask_ms: i64) {
        let limit = oldest_ask_ms.saturating_sub(self.margin_ms);
        self.touched.retain(|_, ms| *ms >= limit);
    }

    /// How many keys are remembered.
    pub fn remembered(&self) -> usize {
        self.touched.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARGIN: i64 = 3_000;

    #[test]
    fn a_page_waits_until_the_stream_is_read_past_its_answer_plus_the_margin() {
        let w = Window::new(MARGIN);
        assert!(!w.ready(10_000, 12_999));
        assert!(w.ready(10_000, 13_000));
    }

    #[test]
    fn a_key_changed_around_or_after_the_read_is_dropped() {
        let mut w = Window::new(MARGIN);
        w.touched("before".into(), Some(1_000));
        w.touched("around".into(), Some(9_000));
        w.touched("after".into(), Some(20_000));
        w.touched("unknown".into(), None);
        // Asked at 10 s: a change at 1 s is older than the read, 9 s may
        // not be (clock skew), 20 s is newer.
        assert!(w.keeps("before", 10_000));
        assert!(!w.keeps("around", 10_000));
        assert!(!w.keeps("after", 10_000));
        assert!(!w.keeps("unknown", 10_000));
        assert!(w.keeps("untouched", 10_000));
    }

    #[test]
    fn the_newest_change_of_a_key_counts() {
        let mut w = Window::new(MARGIN);
        w.touched("k".into(), Some(20_000));
        w.touched("k".into(), Some(1_000));
        assert!(!w.keeps("k", 10_000));
    }

    #[test]
    fn forgetting_keeps_what_can_still_drop_a_row() {
        let mut w = Window::new(MARGIN);
        w.touched("old".into(), Some(1_000));
        w.touched("recent".into(), Some(8_000));
        w.forget_before(10_000);
        assert_eq!(w.remembered(), 1);
        assert!(!w.keeps("recent", 10_000));
    }
}
