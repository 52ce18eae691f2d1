//! The seam to the lease table: read the leases of some tables, read
//! everything, write one item under a condition. Two implementations: [`crate::DynamoLeaseStore`] (the real
//! table) and [`MemoryLeaseStore`] (linearizable, with injected faults, for
//! the coordinator's tests).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::item::{Condition, Item, Lease, lease_key};

/// Why a call to the lease table failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreFailure {
    /// The condition did not hold: someone else wrote first.
    #[error("the conditional write lost to another writer")]
    Conflict,
    /// Unreachable, throttled, timed out, or the answer was lost (the
    /// write may or may not have applied): try again later.
    #[error("the lease table is unavailable: {0}")]
    Unavailable(String),
    /// Waiting does not fix it (no permission, a table of another shape,
    /// a second live process under this worker's name).
    #[error("the lease table cannot be used: {0}")]
    Fatal(String),
}

/// Reads and conditional writes on the lease table. Every call is
/// linearizable: it applies at one instant between its start and its
/// answer, or not at all.
pub trait LeaseStore: Send + Sync {
    /// Creates the table when it is missing and waits until it is usable.
    ///
    /// # Errors
    /// When it cannot be created or described.
    fn ensure_table(&self) -> Result<(), StoreFailure>;

    /// The leases of `tables` that exist, each a strongly consistent read
    /// of its own item. This is what a coordinator reads every round: its
    /// cost follows the tables, not the positions recorded beside their
    /// leases (one item per shard and sink, which only grow).
    ///
    /// # Errors
    /// When the table cannot be read.
    fn leases(&self, tables: &[String]) -> Result<Vec<Lease>, StoreFailure>;

    /// Every item (a strongly consistent read).
    ///
    /// # Errors
    /// When the table cannot be read.
    fn scan(&self) -> Result<Vec<Item>, StoreFailure>;

    /// Writes `item` (replacing any item with its key) if `condition` holds.
    ///
    /// # Errors
    /// [`StoreFailure::Conflict`] when the condition does not hold.
    fn put(&self, item: &Item, condition: Condition) -> Result<(), StoreFailure>;

    /// Where the table is, for messages.
    fn describe(&self) -> String;
}

impl<S: LeaseStore + ?Sized> LeaseStore for Arc<S> {
    fn ensure_table(&self) -> Result<(), StoreFailure> {
        (**self).ensure_table()
    }
    fn leases(&self, tables: &[String]) -> Result<Vec<Lease>, StoreFailure> {
        (**self).leases(tables)
    }
    fn scan(&self) -> Result<Vec<Item>, StoreFailure> {
        (**self).scan()
    }
    fn put(&self, item: &Item, condition: Condition) -> Result<(), StoreFailure> {
        (**self).put(item, condition)
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
}

/// Whether `condition` holds for `current` (the item under the key, if any).
pub fn holds(condition: Condition, current: Option<&Item>) -> bool {
    match condition {
        Condition::Always => true,
        Condition::Absent => current.is_none(),
        Condition::Counter(c) => matches!(current, Some(Item::Lease(l)) if l.counter == c),
        Condition::EpochAtMost(e) => match current {
            None => true,
            Some(Item::Lease(l)) => l.epoch <= e,
            Some(Item::Position(p)) => p.epoch <= e,
            Some(Item::State(s)) => s.epoch <= e,
            Some(Item::Start(s)) => s.epoch <= e,
            Some(Item::Ended(x)) => x.epoch <= e,
        },
    }
}

/// A fault the memory store injects into the next calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// No fault: the call goes through (to place a fault on a later call).
    Pass,
    /// The call fails before reaching the table (unreachable, throttled).
    Unavailable,
    /// The write applies, but its answer is lost: the caller sees
    /// [`StoreFailure::Unavailable`].
    LostReply,
}

/// A linearizable lease table in memory: every call applies under one lock.
/// Clones share the table, so a test can run several coordinators on it.
#[derive(Clone, Default)]
pub struct MemoryLeaseStore {
    inner: Arc<Mutex<Memory>>,
}

#[derive(Default)]
struct Memory {
    items: BTreeMap<String, Item>,
    faults: VecDeque<Fault>,
    calls: u64,
    items_read: u64,
}

impl MemoryLeaseStore {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next calls (in order, one fault each) fail this way.
    pub fn inject(&self, faults: &[Fault]) {
        self.lock().faults.extend(faults.iter().copied());
    }

    /// Calls made so far.
    pub fn calls(&self) -> u64 {
        self.lock().calls
    }

    /// Items read so far, by every kind of read.
    pub fn items_read(&self) -> u64 {
        self.lock().items_read
    }

    /// The items, without faults or counting (for assertions).
    pub fn items(&self) -> Vec<Item> {
        self.lock().items.values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Memory> {
        // A panicking test thread must not hide the table from the others.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Memory {
    /// Counts a read call and fails it if a fault is due.
    fn read(&mut self) -> Result<(), StoreFailure> {
        self.calls += 1;
        match self.faults.pop_front().filter(|f| *f != Fault::Pass) {
            // A read has no effect to lose: both faults just fail it.
            Some(fault) => Err(StoreFailure::Unavailable(format!("injected {fault:?}"))),
            None => Ok(()),
        }
    }
}

impl LeaseStore for MemoryLeaseStore {
    fn ensure_table(&self) -> Result<(), StoreFailure> {
        Ok(())
    }

    /// One call, under the lock like the others (the real store's reads
    /// of several leases are each consistent, but not one snapshot).
    fn leases(&self, tables: &[String]) -> Result<Vec<Lease>, StoreFailure> {
        let mut m = self.lock();
        m.read()?;
        let leases: Vec<Lease> = tables
            .iter()
            .filter_map(|t| match m.items.get(&lease_key(t)) {
                Some(Item::Lease(l)) => Some(l.clone()),
                _ => None,
            })
            .collect();
        m.items_read += leases.len() as u64;
        Ok(leases)
    }

    fn scan(&self) -> Result<Vec<Item>, StoreFailure> {
        let mut m = self.lock();
        m.read()?;
        m.items_read += m.items.len() as u64;
        Ok(m.items.values().cloned().collect())
    }

    fn put(&self, item: &Item, condition: Condition) -> Result<(), StoreFailure> {
        let mut m = self.lock();
        m.calls += 1;
        let fault = m.faults.pop_front();
        if fault == Some(Fault::Unavailable) {
            return Err(StoreFailure::Unavailable("injected Unavailable".into()));
        }
        let key = item.key();
        if !holds(condition, m.items.get(&key)) {
            return Err(StoreFailure::Conflict);
        }
        m.items.insert(key, item.clone());
        if fault == Some(Fault::LostReply) {
            return Err(StoreFailure::Unavailable("injected LostReply".into()));
        }
        Ok(())
    }

    fn describe(&self) -> String {
        "the in-memory lease table".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::{Lease, PositionItem};

    fn lease(counter: u64) -> Item {
        Item::Lease(Lease {
            counter,
            ..Lease::free("t")
        })
    }

    #[test]
    fn compare_and_set_on_the_counter() {
        let s = MemoryLeaseStore::new();
        assert_eq!(
            s.put(&lease(0), Condition::Counter(0)),
            Err(StoreFailure::Conflict)
        );
        s.put(&lease(0), Condition::Absent).unwrap();
        assert_eq!(
            s.put(&lease(0), Condition::Absent),
            Err(StoreFailure::Conflict)
        );
        s.put(&lease(1), Condition::Counter(0)).unwrap();
        assert_eq!(
            s.put(&lease(2), Condition::Counter(0)),
            Err(StoreFailure::Conflict)
        );
        assert_eq!(s.items(), vec![lease(1)]);
    }

    #[test]
    fn a_lost_reply_still_applies() {
        let s = MemoryLeaseStore::new();
        s.inject(&[Fault::LostReply, Fault::Unavailable]);
        assert!(matches!(
            s.put(&lease(0), Condition::Absent),
            Err(StoreFailure::Unavailable(_))
        ));
        assert_eq!(s.items(), vec![lease(0)]);
        assert!(matches!(
            s.put(&lease(1), Condition::Counter(0)),
            Err(StoreFailure::Unavailable(_))
        ));
        assert_eq!(s.items(), vec![lease(0)]);
    }

    #[test]
    fn a_later_epoch_is_never_overwritten() {
        let s = MemoryLeaseStore::new();
        let at = |epoch, seq: &str| {
            Item::Position(PositionItem {
                table: "t".into(),
                sink: "parquet".into(),
                shard: "s".into(),
                seq: seq.into(),
                epoch,
                updated_ms: 0,
            })
        };
        s.put(&at(2, "20"), Condition::EpochAtMost(2)).unwrap();
        assert_eq!(
            s.put(&at(1, "30"), Condition::EpochAtMost(1)),
            Err(StoreFailure::Conflict)
        );
        s.put(&at(3, "25"), Condition::EpochAtMost(3)).unwrap();
        assert_eq!(s.items(), vec![at(3, "25")]);
    }
}
