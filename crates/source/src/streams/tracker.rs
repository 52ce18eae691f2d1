//! Shard lineage: which shards of a stream may be read now.
//!
//! A child shard holds changes made after its parent's, so it is read only
//! once its parent is drained (GetRecords answered without a next iterator).
//! Lineage comes from DescribeStream and may be incomplete: a child's parent
//! may be missing (trimmed after 24 hours, or never listed), or an open parent
//! may already list children. A missing parent does not block its child; a
//! listed parent does, until drained, whether it is open or closed.
//!
//! Pure bookkeeping, no I/O: the stream reader calls it with each listing and
//! with what its shard readers report.

use std::collections::BTreeMap;

/// One shard as DescribeStream lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardInfo {
    /// Shard id.
    pub id: String,
    /// The parent shard id, when the service reports one.
    pub parent: Option<String>,
    /// True when the shard has an ending sequence number: no more records
    /// will be added to it.
    pub closed: bool,
}

/// Where a shard is in its life, as far as this process knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// Not started: waiting for its parent, or for a reader slot.
    Waiting,
    /// A reader is reading it.
    Reading,
    /// Read to its end, or not to be read (see [`Tracker::skip`]).
    Drained,
}

#[derive(Debug)]
struct Tracked {
    info: ShardInfo,
    state: State,
    /// Seen in the latest listing.
    listed: bool,
}

/// The shards of one stream and their states.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    shards: BTreeMap<String, Tracked>,
    listings: u64,
}

/// What a new listing changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ListingChange {
    /// Shards seen for the first time.
    pub added: Vec<String>,
    /// Shards no longer listed that were not drained: their unread records,
    /// if any, are gone.
    pub vanished_unread: Vec<String>,
}

impl Tracker {
    /// Applies a complete DescribeStream listing. Drained shards that are no
    /// longer listed are forgotten; listed ones are kept, so that their
    /// children know they are done.
    pub(crate) fn update(&mut self, listing: Vec<ShardInfo>) -> ListingChange {
        self.listings += 1;
        let mut change = ListingChange::default();
        for shard in self.shards.values_mut() {
            shard.listed = false;
        }
        for info in listing {
            match self.shards.get_mut(&info.id) {
                Some(t) => {
                    t.listed = true;
                    t.info = info;
                }
                None => {
                    change.added.push(info.id.clone());
                    self.shards.insert(
                        info.id.clone(),
                        Tracked {
                            info,
                            state: State::Waiting,
                            listed: true,
                        },
                    );
                }
            }
        }
        self.shards.retain(|id, t| {
            // A shard being read stays until its reader says how it ended.
            if t.listed || t.state == State::Reading {
                return true;
            }
            if t.state != State::Drained {
                change.vanished_unread.push(id.clone());
            }
            false
        });
        change
    }

    /// How many listings were applied.
    pub(crate) fn listings(&self) -> u64 {
        self.listings
    }

    /// Shards that may be started now, parents first.
    pub(crate) fn ready(&self) -> Vec<String> {
        self.shards
            .values()
            .filter(|t| t.state == State::Waiting && self.parent_done(&t.info))
            .map(|t| t.info.id.clone())
            .collect()
    }

    fn parent_done(&self, info: &ShardInfo) -> bool {
        match info.parent.as_deref().and_then(|p| self.shards.get(p)) {
            // Not listed: trimmed, or lineage the service did not report.
            None => true,
            Some(parent) => parent.state == State::Drained,
        }
    }

    /// The shard's state, if it is tracked.
    #[cfg(test)]
    pub(crate) fn state(&self, id: &str) -> Option<State> {
        self.shards.get(id).map(|t| t.state)
    }

    /// The shard's listing, if it is tracked.
    pub(crate) fn info(&self, id: &str) -> Option<&ShardInfo> {
        self.shards.get(id).map(|t| &t.info)
    }

    /// A reader took the shard.
    pub(crate) fn started(&mut self, id: &str) {
        self.set(id, State::Reading);
    }

    /// The reader read the shard to its end.
    pub(crate) fn drained(&mut self, id: &str) {
        self.set(id, State::Drained);
    }

    /// The shard is not to be read (a closed shard when starting at the
    /// latest position): its children may start.
    pub(crate) fn skip(&mut self, id: &str) {
        self.set(id, State::Drained);
    }

    fn set(&mut self, id: &str, state: State) {
        if let Some(t) = self.shards.get_mut(id) {
            t.state = state;
        }
    }

    /// Shards being read or waiting to be.
    #[cfg(test)]
    pub(crate) fn unfinished(&self) -> usize {
        self.shards
            .values()
            .filter(|t| t.state != State::Drained)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str, parent: Option<&str>, closed: bool) -> ShardInfo {
        ShardInfo {
            id: id.into(),
            parent: parent.map(Into::into),
            closed,
        }
    }

    #[test]
    fn a_child_waits_for_its_parent_to_drain() {
        let mut t = Tracker::default();
        t.update(vec![shard("p", None, true), shard("c", Some("p"), false)]);
        assert_eq!(t.ready(), ["p"]);
        t.started("p");
        assert!(t.ready().is_empty(), "c waits while p is read");
        t.drained("p");
        assert_eq!(t.ready(), ["c"]);
    }

    #[test]
    fn a_split_releases_both_children_and_an_open_parent_still_blocks() {
        let mut t = Tracker::default();
        // An open parent that already lists children: lineage reported early.
        t.update(vec![
            shard("p", None, false),
            shard("a", Some("p"), false),
            shard("b", Some("p"), false),
        ]);
        assert_eq!(t.ready(), ["p"]);
        t.started("p");
        t.drained("p");
        assert_eq!(t.ready(), ["a", "b"]);
    }

    #[test]
    fn a_missing_parent_does_not_block() {
        let mut t = Tracker::default();
        t.update(vec![shard("c", Some("trimmed-long-ago"), false)]);
        assert_eq!(t.ready(), ["c"]);
    }

    #[test]
    fn vanished_shards_are_reported_unless_drained_and_then_forgotten() {
        let mut t = Tracker::default();
        t.update(vec![
            shard("a", None, true),
            shard("b", None, true),
            shard("r", None, true),
        ]);
        t.started("a");
        t.drained("a");
        t.started("r");
        let change = t.update(vec![shard("c", Some("a"), false)]);
        assert_eq!(change.added, ["c"]);
        assert_eq!(change.vanished_unread, ["b"]);
        assert_eq!(
            t.state("a"),
            None,
            "a drained shard no longer listed is forgotten"
        );
        assert_eq!(
            t.state("r"),
            Some(State::Reading),
            "a shard being read stays until its reader ends"
        );
        assert_eq!(t.ready(), ["c"], "its child no longer waits for it");
    }

    #[test]
    fn a_skipped_shard_releases_its_children() {
        let mut t = Tracker::default();
        t.update(vec![
            shard("old", None, true),
            shard("new", Some("old"), false),
        ]);
        t.skip("old");
        assert_eq!(t.ready(), ["new"]);
        assert_eq!(t.unfinished(), 1);
    }
}
