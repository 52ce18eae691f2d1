//! Changes a sink refused, and when its position may move over them.
//!
//! A change a sink refuses (it does not fit a declared schema) goes to the
//! dead letters, which the pipeline makes durable between `Sink::write` and
//! the next `poll` or `flush`. From then on the change is dealt with, and
//! the sink's position should pass it like a written one. Otherwise a shard
//! whose last change was refused keeps a position below it for good: its
//! lag never reaches zero, the change is read and refused again at every
//! start, and a snapshot page ending with it is never released.
//!
//! A sink whose position is the last row it committed (a file's, a table
//! snapshot's) cannot move it over a refused change the moment it sees
//! one: rows of the shard before it may still be waiting for their commit.
//! [`Refused`] keeps, per shard, the newest refused change and moves the
//! position over it once the sink holds nothing uncommitted before it.

use std::collections::BTreeMap;

use crate::{Change, Positions, Rejected, SequenceNumber, ShardKey};

/// The newest refused change per shard, not yet passed by the sink's
/// position.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Refused {
    by_shard: BTreeMap<ShardKey, SequenceNumber>,
}

impl Refused {
    /// Nothing refused.
    pub fn new() -> Self {
        Self::default()
    }

    /// Notes that the sink refused `seq` of `key` in a write.
    pub fn note(&mut self, key: &ShardKey, seq: &SequenceNumber) {
        match self.by_shard.get_mut(key) {
            Some(newest) if *newest >= *seq => {}
            Some(newest) => newest.clone_from(seq),
            None => {
                self.by_shard.insert(key.clone(), seq.clone());
            }
        }
    }

    /// Notes every change of `changes` that a write refused (`rejected`
    /// indexes into them).
    pub fn note_rejected(&mut self, changes: &[Change], rejected: &[Rejected]) {
        for r in rejected {
            let source = &changes[r.index].source;
            let key = ShardKey::new(source.table.clone(), source.shard_id.clone());
            self.note(&key, &source.sequence_number);
        }
    }

    /// Forgets every refused change, for a sink whose commit failed: the
    /// rows it dropped may have come before them, and the pass ends anyway.
    /// (The changes are read and refused again after the restart; their
    /// dead letters are kept once.)
    pub fn clear(&mut self) {
        self.by_shard.clear();
    }

    /// Whether no refused change waits for the position.
    pub fn is_empty(&self) -> bool {
        self.by_shard.is_empty()
    }

    /// Moves `durable` over the refused changes that nothing uncommitted
    /// precedes, and forgets them (and those `durable` already passed).
    /// `first_pending` gives the first sequence number of a shard the sink
    /// holds but has not committed, if any.
    ///
    /// Call it only where the sink commits (`poll`, `flush`): by then the
    /// pipeline has made the refused changes' dead letters durable.
    pub fn settle(
        &mut self,
        durable: &mut Positions,
        first_pending: impl Fn(&ShardKey) -> Option<SequenceNumber>,
    ) {
        self.by_shard.retain(|key, refused| {
            if durable.covers(key, refused) {
                return false;
            }
            if first_pending(key).is_some_and(|first| first < *refused) {
                // Rows before it wait for their commit; so does it.
                return true;
            }
            durable.advance(key.clone(), refused.clone());
            false
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(n: u64) -> SequenceNumber {
        SequenceNumber::parse(&n.to_string()).unwrap()
    }

    fn key() -> ShardKey {
        ShardKey::new("orders", "s1")
    }

    #[test]
    fn with_nothing_pending_the_position_moves_over_the_refused_change() {
        let mut refused = Refused::new();
        let mut durable: Positions = [(key(), seq(4))].into_iter().collect();
        refused.note(&key(), &seq(5));
        refused.settle(&mut durable, |_| None);
        assert_eq!(durable.get(&key()), Some(&seq(5)));
        assert!(refused.is_empty());
    }

    #[test]
    fn a_shard_without_a_position_gets_one() {
        let mut refused = Refused::new();
        let mut durable = Positions::new();
        refused.note(&key(), &seq(1));
        refused.settle(&mut durable, |_| None);
        assert_eq!(durable.get(&key()), Some(&seq(1)));
    }

    #[test]
    fn rows_pending_before_it_hold_it_until_they_are_committed() {
        let mut refused = Refused::new();
        let mut durable: Positions = [(key(), seq(2))].into_iter().collect();
        refused.note(&key(), &seq(5));
        // Rows 3 and 4 are written but not committed.
        refused.settle(&mut durable, |_| Some(seq(3)));
        assert_eq!(durable.get(&key()), Some(&seq(2)));
        assert!(!refused.is_empty());
        // Committed: the position is 4, then passes 5.
        durable.advance(key(), seq(4));
        refused.settle(&mut durable, |_| None);
        assert_eq!(durable.get(&key()), Some(&seq(5)));
        assert!(refused.is_empty());
    }

    #[test]
    fn rows_pending_after_it_do_not_hold_it() {
        let mut refused = Refused::new();
        let mut durable: Positions = [(key(), seq(4))].into_iter().collect();
        refused.note(&key(), &seq(5));
        refused.settle(&mut durable, |_| Some(seq(6)));
        assert_eq!(durable.get(&key()), Some(&seq(5)));
    }

    #[test]
    fn a_commit_past_it_makes_it_moot() {
        let mut refused = Refused::new();
        let mut durable = Positions::new();
        refused.note(&key(), &seq(5));
        durable.advance(key(), seq(9));
        refused.settle(&mut durable, |_| Some(seq(10)));
        assert_eq!(durable.get(&key()), Some(&seq(9)));
        assert!(refused.is_empty());
    }

    #[test]
    fn the_newest_refused_change_of_a_shard_is_kept() {
        let mut refused = Refused::new();
        let mut durable = Positions::new();
        refused.note(&key(), &seq(7));
        refused.note(&key(), &seq(5));
        refused.settle(&mut durable, |_| None);
        assert_eq!(durable.get(&key()), Some(&seq(7)));
    }

    #[test]
    fn shards_settle_each_on_their_own() {
        let other = ShardKey::new("orders", "s2");
        let mut refused = Refused::new();
        let mut durable = Positions::new();
        refused.note(&key(), &seq(5));
        refused.note(&other, &seq(8));
        refused.settle(&mut durable, |k| (*k == other).then(|| seq(3)));
        assert_eq!(durable.get(&key()), Some(&seq(5)));
        assert_eq!(durable.get(&other), None);
    }
}
