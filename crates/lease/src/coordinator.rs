//! The lease rules, run once per tick against a [`LeaseStore`].
//!
//! - **Expiry** is judged on this worker's own clock ([`crate::clock`],
//!   which counts a suspension of the host): a lease whose
//!   counter stayed the same for the lease duration, since this worker first
//!   saw that counter, has expired. Wall clocks of different hosts are never
//!   compared.
//! - **Renewal**: every held lease is written again (counter + 1) on every
//!   tick, a third of the duration apart. A renewal sent at `t` keeps the
//!   lease valid *here* until `t + duration - margin`: nobody can have
//!   judged it expired before `t + duration`, since the write applied after
//!   `t`. Past that instant the worker stops writing the table
//!   (self-fence), whether or not the table answered.
//! - **Taking**: a free lease, or an expired one, is taken with a
//!   compare-and-set on the counter; the epoch is bumped (the fencing
//!   token). A lease taken from an expired owner may still see that owner's
//!   last writes land: the grant says so (`settle`).
//! - **Balance**: each worker aims at `ceil(leases / workers)`, the
//!   workers being the owners of live leases plus itself. Free and expired
//!   leases first; when still short and the busiest worker holds at least
//!   two more, one of its leases is claimed: the owner sees the claim, hands
//!   the lease over (flush, commit, record, release) and the claimant takes
//!   it free.
//! - **One process per name**: each process marks what it writes with a
//!   token of its own (`incarnation`). A lease under this worker's name
//!   but another token is an earlier run's: it is taken like any expired
//!   lease, once its counter stood still for the duration. If instead the
//!   counter moves, a second live process was given the same `worker_id`:
//!   that is an error, since balance and hand-overs go by name.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use rand::seq::SliceRandom as _;

use crate::clock::{Clock, Moment};
use crate::item::{Condition, Item, Lease};
use crate::store::{LeaseStore, StoreFailure};

/// What a worker holds a table by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The lease's epoch when taken: positions are written under it.
    pub epoch: u64,
    /// Taken from an owner whose lease expired: that owner's in-flight
    /// writes may still land for a while (see the Kafka sink's produce
    /// timeout), so wait them out before reading back what the sinks hold.
    pub settle: bool,
    /// Stop writing the table at this instant unless renewed by then.
    pub valid_until: Moment,
    /// Another worker asked for the lease: hand it over.
    pub claimed: bool,
    /// With `settle`, how long to wait: the longer of this worker's
    /// settling time and the one the expired owner wrote on the lease.
    pub settle_for: Duration,
}

/// Something the coordinator did, for logs and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Happened {
    /// A lease was taken.
    Took {
        /// Table.
        table: String,
        /// New epoch.
        epoch: u64,
        /// Previous owner (expired), if any.
        from: Option<String>,
    },
    /// Another worker took a lease this one held.
    Lost {
        /// Table.
        table: String,
    },
    /// The lease could not be renewed in time: writing stopped.
    SelfFenced {
        /// Table.
        table: String,
    },
    /// A lease of a busier worker was claimed.
    Claimed {
        /// Table.
        table: String,
        /// Its owner.
        owner: String,
    },
    /// A lease was handed over (released).
    Released {
        /// Table.
        table: String,
    },
}

struct Seen {
    counter: u64,
    owner: Option<String>,
    incarnation: Option<String>,
    claim: Option<String>,
    since: Moment,
}

struct Held {
    epoch: u64,
    counter: u64,
    valid_until: Moment,
    settle: bool,
    /// How long the settling lasts (see [`Grant::settle_for`]).
    settle_for: Duration,
    /// Not handed over before this (see [`Coordinator::settling`]).
    settled_at: Moment,
    claimed: bool,
}

impl Held {
    /// Taken from an expired owner whose last writes may still land: not
    /// to be handed over yet.
    fn settling(&self, now: Moment) -> bool {
        self.settle && now < self.settled_at
    }
}

/// One worker's view of the leases; see the module docs.
pub struct Coordinator<S> {
    store: S,
    me: String,
    /// This process's token on the leases it writes.
    incarnation: String,
    duration: Duration,
    margin: Duration,
    tables: BTreeSet<String>,
    seen: HashMap<String, Seen>,
    held: BTreeMap<String, Held>,
    /// The lease this worker claimed and has not got yet.
    claim: Option<String>,
    /// No new leases: the worker is stopping.
    draining: bool,
    /// Who claimed each held lease, as last seen.
    last_claims: HashMap<String, String>,
    /// How long a lease taken from an expired owner is kept before it is
    /// handed over (see [`Coordinator::settling`]).
    settle_for: Duration,
    /// What this worker's pipeline writes to (see [`Coordinator::pipeline`]).
    pipeline: Option<String>,
}

impl<S: LeaseStore> Coordinator<S> {
    /// A worker named `me` sharing `tables` with others through `store`.
    pub fn new(store: S, me: &str, duration: Duration, tables: &[String]) -> Self {
        Coordinator {
            store,
            me: me.to_owned(),
            incarnation: format!("{:016x}", rand::random::<u64>()),
            duration,
            // Renewals are a third of the duration apart: one failed
            // renewal still leaves the lease valid; two in a row do not
            // reach the margin; three do.
            margin: duration / 5,
            tables: tables.iter().cloned().collect(),
            seen: HashMap::new(),
            held: BTreeMap::new(),
            claim: None,
            draining: false,
            last_claims: HashMap::new(),
            settle_for: Duration::ZERO,
            pipeline: None,
        }
    }

    /// Marks the leases this worker writes with `pipeline`, a description
    /// of what its pipeline writes to, the same for every worker of one
    /// pipeline; a worker that finds a lease marked by another pipeline
    /// (one sharing the lease table by mistake) stops with an error.
    #[must_use]
    pub fn pipeline(mut self, pipeline: &str) -> Self {
        self.pipeline = Some(pipeline.to_owned());
        self
    }

    /// Keeps a lease taken from an expired owner for at least `wait`
    /// after the take before handing it over: the time that owner's last
    /// writes may still land in (the Kafka sink's produce timeout). The
    /// worker that takes a released lease does not wait (the releaser's
    /// writes are done), so a lease released before then would let that
    /// worker read back what the sinks hold while the expired owner's
    /// writes still land. Such a lease stays held instead (and, on a stop,
    /// runs out, so that its next taker waits).
    #[must_use]
    pub fn settling(mut self, wait: Duration) -> Self {
        self.settle_for = wait;
        self
    }

    /// The time between ticks.
    pub fn interval(&self) -> Duration {
        self.duration / 3
    }

    /// What this worker holds now.
    pub fn grants(&self) -> BTreeMap<String, Grant> {
        self.held
            .iter()
            .map(|(t, h)| {
                (
                    t.clone(),
                    Grant {
                        epoch: h.epoch,
                        settle: h.settle,
                        valid_until: h.valid_until,
                        claimed: h.claimed,
                        settle_for: h.settle_for,
                    },
                )
            })
            .collect()
    }

    /// Takes no new lease from now on (before a graceful stop).
    pub fn drain(&mut self) {
        self.draining = true;
        self.claim = None;
    }

    /// One round: read the leases, renew, fence, take, balance.
    ///
    /// # Errors
    /// A fatal store failure, or another live process under this worker's
    /// name; an outage is not an error (the leases held stay valid until
    /// their time runs out, then are fenced).
    pub fn tick(&mut self, clock: &dyn Clock) -> Result<Vec<Happened>, StoreFailure> {
        let mut happened = Vec::new();
        let tables: Vec<String> = self.tables.iter().cloned().collect();
        let items = match self.store.leases(&tables) {
            Ok(items) => items,
            Err(StoreFailure::Fatal(e)) => return Err(StoreFailure::Fatal(e)),
            Err(e) => {
                self.fence_overdue(clock.now(), &mut happened);
                return Err(e);
            }
        };
        let now = clock.now();
        let mut leases: BTreeMap<String, Lease> =
            items.into_iter().map(|l| (l.table.clone(), l)).collect();
        self.create_missing(&mut leases)?;
        self.observe(&leases, now)?;
        self.check_held(&leases, now, &mut happened);
        self.renew(&mut leases, clock)?;
        self.fence_overdue(clock.now(), &mut happened);
        if !self.draining {
            self.balance(&leases, clock, &mut happened)?;
        }
        Ok(happened)
    }

    /// Hands `table` over: its writes are committed and recorded. A lease
    /// taken from an expired owner less than the settle time ago (see
    /// [`Coordinator::settling`]) is kept: `None`, as for a table not held.
    ///
    /// # Errors
    /// A fatal store failure. A conflict or outage leaves the lease to
    /// expire, which peers judge the same way.
    pub fn release(
        &mut self,
        table: &str,
        clock: &dyn Clock,
    ) -> Result<Option<Happened>, StoreFailure> {
        if self
            .held
            .get(table)
            .is_some_and(|h| h.settling(clock.now()))
        {
            tracing::debug!(
                table,
                "not handed over yet: its expired owner's last writes may still land"
            );
            return Ok(None);
        }
        let Some(h) = self.held.remove(table) else {
            return Ok(None);
        };
        // The claim stays on the free lease: the claimant gets a duration
        // to take it before others (this worker included) may.
        let claim = self.last_claims.remove(table);
        let lease = Lease {
            table: table.to_owned(),
            owner: None,
            incarnation: None,
            counter: h.counter + 1,
            epoch: h.epoch,
            claim,
            renewed_ms: wall_ms(),
            duration_ms: self.duration_ms(),
            settle_ms: self.settle_ms(),
            pipeline: self.pipeline.clone(),
        };
        match self
            .store
            .put(&Item::Lease(lease), Condition::Counter(h.counter))
        {
            Ok(()) | Err(StoreFailure::Conflict | StoreFailure::Unavailable(_)) => {}
            Err(e) => return Err(e),
        }
        Ok(Some(Happened::Released {
            table: table.to_owned(),
        }))
    }

    /// Creates the leases of this worker's tables that have none. A lease
    /// deleted (by an operator, to unstick it) while its table's positions
    /// were written under epoch `n` is created again at `n`: created at 0,
    /// its next owners' epochs would be below those positions', and no
    /// position of the table could be recorded again.
    fn create_missing(&self, leases: &mut BTreeMap<String, Lease>) -> Result<(), StoreFailure> {
        let missing: Vec<&String> = self
            .tables
            .iter()
            .filter(|t| !leases.contains_key(*t))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        // Rare (a first start, or a deleted lease): one scan for them all.
        let items = match self.store.scan() {
            Ok(items) => items,
            Err(StoreFailure::Conflict | StoreFailure::Unavailable(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        for table in missing {
            // One above: an owner that took the lease and wrote nothing
            // yet under its epoch is passed too.
            let epoch = items
                .iter()
                .filter(|i| i.table() == table.as_str())
                .map(Item::epoch)
                .max()
                .map_or(0, |e| e + 1);
            if epoch > 0 {
                tracing::warn!(
                    table = %table,
                    epoch,
                    "the table's lease item is missing but its positions are not (deleted?): \
                     creating it again above their epoch"
                );
            }
            let lease = Lease {
                epoch,
                pipeline: self.pipeline.clone(),
                ..Lease::free(table)
            };
            match self
                .store
                .put(&Item::Lease(lease.clone()), Condition::Absent)
            {
                Ok(()) => {
                    leases.insert(table.clone(), lease);
                }
                // Another worker created it, or the answer was lost: the
                // next scan shows it.
                Err(StoreFailure::Conflict | StoreFailure::Unavailable(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Notes when each lease last changed (expiry counts from there).
    ///
    /// # Errors
    /// When another live process runs under this worker's name.
    fn observe(
        &mut self,
        leases: &BTreeMap<String, Lease>,
        now: Moment,
    ) -> Result<(), StoreFailure> {
        for (table, l) in leases {
            if let (Some(theirs), Some(ours)) = (&l.pipeline, &self.pipeline)
                && theirs != ours
            {
                return Err(StoreFailure::Fatal(format!(
                    "the lease of table {table:?} was written by a pipeline that writes to \
                     {theirs:?} (worker {}), and this one writes to {ours:?}: pipelines sharing a \
                     lease table take each other's tables and positions; give each pipeline its \
                     own `lease_table` under [coordination] (or, if the sinks changed, stop every \
                     worker of the old configuration first)",
                    l.owner.as_deref().unwrap_or("none now")
                )));
            }
            let mut since = now;
            if let Some(before) = self.seen.get(table) {
                if before.counter == l.counter && before.owner == l.owner {
                    continue;
                }
                if Self::claimed_only(before, l) {
                    // A claim is no sign of the owner's life: the lease
                    // still expires a duration after its last renewal.
                    since = before.since;
                } else if self.renewed_by_namesake(before, l) {
                    return Err(StoreFailure::Fatal(format!(
                        "another process is running as worker {:?}: it renewed the lease on table {table:?} \
                         (its token {}, this process's {}); give every process its own `worker_id` \
                         (if the other is this worker's previous run, still stopping, start this one after it exits)",
                        self.me,
                        l.incarnation
                            .as_deref()
                            .unwrap_or("none, an earlier version"),
                        self.incarnation,
                    )));
                }
            }
            self.seen.insert(
                table.clone(),
                Seen {
                    counter: l.counter,
                    owner: l.owner.clone(),
                    incarnation: l.incarnation.clone(),
                    claim: l.claim.clone(),
                    since,
                },
            );
        }
        Ok(())
    }

    /// A lease whose only write since `before` was a claim (one write, that
    /// set `claim` and left owner and token as they were): the owner did
    /// not write it, so it says nothing of whether the owner is alive.
    fn claimed_only(before: &Seen, now: &Lease) -> bool {
        before.claim.is_none()
            && now.claim.is_some()
            && now.claim != now.owner
            && before.owner == now.owner
            && before.incarnation == now.incarnation
            && now.counter == before.counter + 1
    }

    /// A lease under this worker's name that the same other process (a
    /// token not ours) wrote again, leaving owner and claim as they were:
    /// a renewal, so that process is alive. Other writers change a field:
    /// a claim sets `claim`, a release or take `owner` or the token, and an
    /// earlier run that is gone writes nothing.
    fn renewed_by_namesake(&self, before: &Seen, now: &Lease) -> bool {
        now.owner.as_deref() == Some(self.me.as_str())
            && now.incarnation.as_deref() != Some(self.incarnation.as_str())
            && before.owner == now.owner
            && before.incarnation == now.incarnation
            && before.claim == now.claim
            && now.counter > before.counter
    }

    /// An owned lease counts as expired once its counter stood still, as
    /// this worker saw it, for the longer of this worker's duration and
    /// the one its writer trusts its renewals by.
    fn expired(&self, l: &Lease, now: Moment) -> bool {
        l.owner.is_some()
            && self
                .seen
                .get(&l.table)
                .is_some_and(|s| now.saturating_since(s.since) >= self.duration_of(l))
    }

    /// The duration `l` is judged by: the longer of ours and its writer's.
    fn duration_of(&self, l: &Lease) -> Duration {
        self.duration.max(Duration::from_millis(l.duration_ms))
    }

    /// How long a lease taken from `l`'s expired owner settles: the longer
    /// of ours and the owner's.
    fn settle_wait(&self, l: &Lease) -> Duration {
        self.settle_for.max(Duration::from_millis(l.settle_ms))
    }

    fn duration_ms(&self) -> u64 {
        u64::try_from(self.duration.as_millis()).unwrap_or(u64::MAX)
    }

    fn settle_ms(&self) -> u64 {
        u64::try_from(self.settle_for.as_millis()).unwrap_or(u64::MAX)
    }

    /// A free lease released to the worker that claimed it is theirs to
    /// take for one duration; after that (the claimant may be gone) anyone's.
    fn reserved_for_another(&self, l: &Lease, now: Moment) -> bool {
        l.owner.is_none()
            && l.claim.as_ref().is_some_and(|c| *c != self.me)
            && self
                .seen
                .get(&l.table)
                .is_some_and(|s| now.saturating_since(s.since) < self.duration_of(l))
    }

    fn check_held(
        &mut self,
        leases: &BTreeMap<String, Lease>,
        now: Moment,
        happened: &mut Vec<Happened>,
    ) {
        let me = self.me.clone();
        // Ours in the table, with our token, but not held here: a take
        // whose answer was lost. Adopted, but valid only from its next
        // renewal (this tick), and settled like a take from an unknown
        // owner. Under our name with another token, it is an earlier run's
        // (or a namesake's, see `observe`): left to expire.
        if !self.draining {
            for (table, l) in leases {
                if l.owner.as_deref() == Some(me.as_str())
                    && l.incarnation.as_deref() == Some(self.incarnation.as_str())
                    && !self.held.contains_key(table)
                {
                    let seen = self.seen.get(table).map_or(now, |s| s.since);
                    self.held.insert(
                        table.clone(),
                        Held {
                            epoch: l.epoch,
                            counter: l.counter,
                            valid_until: seen,
                            settle: true,
                            settle_for: self.settle_wait(l),
                            settled_at: seen + self.settle_wait(l),
                            claimed: false,
                        },
                    );
                    happened.push(Happened::Took {
                        table: table.clone(),
                        epoch: l.epoch,
                        from: Some(me.clone()),
                    });
                }
            }
        }
        let last_claims = &mut self.last_claims;
        let incarnation = self.incarnation.as_str();
        self.held.retain(|table, h| match leases.get(table) {
            // No token: an earlier version's claim rewrote the item (it
            // does not know the attribute); the next renewal puts it back.
            Some(l)
                if l.owner.as_deref() == Some(me.as_str())
                    && l.epoch == h.epoch
                    && l.incarnation.as_deref().is_none_or(|t| t == incarnation) =>
            {
                // A renewal whose answer was lost, or a claim: the item moved
                // on while still ours.
                h.counter = l.counter;
                // A claim shows once the lease may be handed over (see
                // `settling`): until then the passes go on undisturbed.
                h.claimed = l.claim.as_ref().is_some_and(|c| *c != me) && !h.settling(now);
                match &l.claim {
                    Some(c) if *c != me => {
                        last_claims.insert(table.clone(), c.clone());
                    }
                    _ => {
                        last_claims.remove(table);
                    }
                }
                true
            }
            _ => {
                happened.push(Happened::Lost {
                    table: table.clone(),
                });
                false
            }
        });
    }

    fn renew(
        &mut self,
        leases: &mut BTreeMap<String, Lease>,
        clock: &dyn Clock,
    ) -> Result<(), StoreFailure> {
        let (duration_ms, settle_ms) = (self.duration_ms(), self.settle_ms());
        for (table, h) in &mut self.held {
            let claim = leases.get(table).and_then(|l| l.claim.clone());
            let lease = Lease {
                table: table.clone(),
                owner: Some(self.me.clone()),
                incarnation: Some(self.incarnation.clone()),
                counter: h.counter + 1,
                epoch: h.epoch,
                claim,
                renewed_ms: wall_ms(),
                duration_ms,
                settle_ms,
                pipeline: self.pipeline.clone(),
            };
            let sent = clock.now();
            match self
                .store
                .put(&Item::Lease(lease.clone()), Condition::Counter(h.counter))
            {
                Ok(()) => {
                    h.counter += 1;
                    h.valid_until = sent + (self.duration - self.margin);
                    leases.insert(table.clone(), lease);
                }
                // Lost to a taker or a claim, or no answer: the next scan
                // tells which; meanwhile the time left runs down.
                Err(StoreFailure::Conflict | StoreFailure::Unavailable(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn fence_overdue(&mut self, now: Moment, happened: &mut Vec<Happened>) {
        self.held.retain(|table, h| {
            if now < h.valid_until {
                return true;
            }
            happened.push(Happened::SelfFenced {
                table: table.clone(),
            });
            false
        });
    }

    fn balance(
        &mut self,
        leases: &BTreeMap<String, Lease>,
        clock: &dyn Clock,
        happened: &mut Vec<Happened>,
    ) -> Result<(), StoreFailure> {
        let now = clock.now();
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for l in leases.values() {
            if let Some(owner) = l.owner.as_deref()
                && owner != self.me
                && !self.expired(l, now)
            {
                *counts.entry(owner).or_default() += 1;
            }
        }
        let workers = counts.len() + 1;
        let target = leases.len().div_ceil(workers);
        let mut mine = self.held.len();
        // Claimed for this worker first, then free, then expired; random
        // within each, so new workers do not all race for the same lease.
        let mut candidates: Vec<&Lease> = leases
            .values()
            .filter(|l| !self.held.contains_key(&l.table))
            .filter(|l| l.owner.is_none() || self.expired(l, now))
            .filter(|l| !self.reserved_for_another(l, now))
            .collect();
        candidates.shuffle(&mut rand::rng());
        candidates.sort_by_key(|l| {
            (
                l.claim.as_deref() != Some(self.me.as_str()),
                l.owner.is_some(),
            )
        });
        for l in candidates {
            if mine >= target {
                break;
            }
            if self.take(l, clock, happened)? {
                mine += 1;
            }
        }
        // Done with the claim once the lease is ours, free, or no longer
        // carries it (a third worker took it from its expired owner).
        if self.claim.as_ref().is_some_and(|t| {
            self.held.contains_key(t)
                || leases.get(t).is_none_or(|l| {
                    l.owner.is_none() || l.claim.as_deref() != Some(self.me.as_str())
                })
        }) {
            self.claim = None;
        }
        if mine >= target || self.claim.is_some() {
            return Ok(());
        }
        let Some((&busiest, &most)) = counts
            .iter()
            .max_by_key(|(o, n)| (**n, std::cmp::Reverse(**o)))
        else {
            return Ok(());
        };
        if most < mine + 2 {
            return Ok(());
        }
        let Some(victim) = leases
            .values()
            .find(|l| l.owner.as_deref() == Some(busiest) && l.claim.is_none())
        else {
            return Ok(());
        };
        let claimed = Lease {
            counter: victim.counter + 1,
            claim: Some(self.me.clone()),
            ..victim.clone()
        };
        match self
            .store
            .put(&Item::Lease(claimed), Condition::Counter(victim.counter))
        {
            Ok(()) => {
                self.claim = Some(victim.table.clone());
                happened.push(Happened::Claimed {
                    table: victim.table.clone(),
                    owner: busiest.to_owned(),
                });
            }
            Err(StoreFailure::Conflict | StoreFailure::Unavailable(_)) => {}
            Err(e) => return Err(e),
        }
        Ok(())
    }

    fn take(
        &mut self,
        l: &Lease,
        clock: &dyn Clock,
        happened: &mut Vec<Happened>,
    ) -> Result<bool, StoreFailure> {
        let taken = Lease {
            table: l.table.clone(),
            owner: Some(self.me.clone()),
            incarnation: Some(self.incarnation.clone()),
            counter: l.counter + 1,
            epoch: l.epoch + 1,
            claim: None,
            renewed_ms: wall_ms(),
            duration_ms: self.duration_ms(),
            // Until renewed: the longer of ours and the expired owner's, so
            // that a take whose answer is lost, adopted on the next round,
            // still waits out the owner's last writes.
            settle_ms: self.settle_ms().max(l.settle_ms),
            pipeline: self.pipeline.clone(),
        };
        let sent = clock.now();
        match self
            .store
            .put(&Item::Lease(taken), Condition::Counter(l.counter))
        {
            Ok(()) => {
                self.held.insert(
                    l.table.clone(),
                    Held {
                        epoch: l.epoch + 1,
                        counter: l.counter + 1,
                        valid_until: sent + (self.duration - self.margin),
                        settle: l.owner.is_some(),
                        settle_for: self.settle_wait(l),
                        settled_at: sent + self.settle_wait(l),
                        claimed: false,
                    },
                );
                happened.push(Happened::Took {
                    table: l.table.clone(),
                    epoch: l.epoch + 1,
                    from: l.owner.clone(),
                });
                Ok(true)
            }
            // Someone else was faster, or the answer was lost (then the
            // next scan shows the lease under our name and token, and
            // `check_held` adopts it).
            Err(StoreFailure::Conflict | StoreFailure::Unavailable(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// The wall clock in epoch milliseconds, for operators only.
pub fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
