//! The lease rules, on a linearizable in-memory table and a clock the test
//! moves: each test reads as one rule of `coordinator.rs`.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::time::Duration;

use dynamo_cdc_lease::{
    Clock, Condition, Coordinator, Fault, Happened, Item, Lease, LeaseStore as _, MemoryLeaseStore,
    Moment, StoreFailure,
};
use proptest::prelude::*;

const D: Duration = Duration::from_secs(30);

struct Manual(Cell<Moment>);

impl Manual {
    fn new() -> Self {
        Manual(Cell::new(Moment::from_origin(Duration::from_secs(1000))))
    }
    fn advance(&self, by: Duration) {
        self.0.set(self.0.get() + by);
    }
}

impl Clock for Manual {
    fn now(&self) -> Moment {
        self.0.get()
    }
}

fn tables(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("t{i}")).collect()
}

fn worker(store: &MemoryLeaseStore, name: &str, n: usize) -> Coordinator<MemoryLeaseStore> {
    Coordinator::new(store.clone(), name, D, &tables(n))
}

fn held(c: &Coordinator<MemoryLeaseStore>) -> Vec<String> {
    c.grants().into_keys().collect()
}

fn lease_claims(store: &MemoryLeaseStore) -> usize {
    store
        .items()
        .into_iter()
        .filter(|i| matches!(i, Item::Lease(l) if l.claim.is_some()))
        .count()
}

fn lease(store: &MemoryLeaseStore, table: &str) -> Lease {
    store
        .items()
        .into_iter()
        .find_map(|i| match i {
            Item::Lease(l) if l.table == table => Some(l),
            _ => None,
        })
        .expect("lease item")
}

#[test]
fn a_lone_worker_creates_and_takes_every_lease() {
    let store = MemoryLeaseStore::new();
    let clock = Manual::new();
    let mut a = worker(&store, "a", 3);
    a.tick(&clock).unwrap();
    assert_eq!(held(&a), tables(3));
    let l = lease(&store, "t0");
    assert_eq!((l.owner.as_deref(), l.epoch), (Some("a"), 1));
    assert!(
        a.grants().values().all(|g| !g.settle),
        "free leases need no settling"
    );
}

/// Positions are recorded beside the leases, one item per shard and sink,
/// and only grow; a round reads the leases of the worker's tables alone, so
/// its cost does not grow with them (nor with other workers' tables).
#[test]
fn a_round_reads_the_leases_not_the_positions_beside_them() {
    let store = MemoryLeaseStore::new();
    let clock = Manual::new();
    let mut w = worker(&store, "w1", 3);
    w.tick(&clock).unwrap();
    assert_eq!(held(&w), tables(3));
    for shard in 0..1_000 {
        let position = Item::Position(dynamo_cdc_lease::PositionItem {
            table: "t0".into(),
            sink: "parquet".into(),
            shard: format!("shardId-{shard:05}"),
            seq: "100".into(),
            epoch: 1,
            updated_ms: 0,
        });
        store.put(&position, Condition::Always).unwrap();
    }
    store
        .put(&Item::Lease(Lease::free("elsewhere")), Condition::Absent)
        .unwrap();
    let before = store.items_read();
    clock.advance(D / 3);
    w.tick(&clock).unwrap();
    assert_eq!(held(&w), tables(3), "renewed");
    assert_eq!(store.items_read() - before, 3);
}

#[test]
fn renewals_keep_a_lease_and_move_its_validity() {
    let store = MemoryLeaseStore::new();
    let clock = Manual::new();
    let mut a = worker(&store, "a", 1);
    a.tick(&clock).unwrap();
    let first = a.grants()["t0"].valid_until;
    assert_eq!(first, clock.now() + (D - D / 5));
    clock.advance(a.interval());
    a.tick(&clock).unwrap();
    assert_eq!(a.grants()["t0"].valid_until, first + a.interval());
    assert_eq!(lease(&store, "t0").epoch, 1, "renewal keeps the epoch");
}

#[test]
fn expiry_is_judged_from_when_the_observer_first_saw_the_counter() {
    let store = MemoryLeaseStore::new();
    let clock = Manual::new();
    let mut a = worker(&store, "a", 1);
    a.tick(&clock).unwrap();
    // `a` dies. `b` starts later and must wait a whole duration from its
    // own first look, however old the lease's wall-clock time is.
    clock.advance(D * 10);
    let mut b = worker(&store, "b", 1);
    b.tick(&clock).unwrap();
    assert!(held(&b).is_empty());
    clock.advance(D - Duration::from_millis(1));
    b.tick(&clock).unwrap();
    assert!(held(&b).is_empty(), "not a whole duration yet");
    clock.advance(Duration::from_millis(1));
    let happened = b.tick(&clock).unwrap();
    assert_eq!(held(&b), ["t0"]);
    assert!(happened.contains(&Happened::Took {
        table: "t0".into(),
        epoch: 2,
        from: Some("a".into())
    }));
    assert!(
        b.grants()["t0"].settle,
        "the dead owner's writes may still land"
    );
}

#[test]
fn a_worker_that_cannot_renew_fences_itself_before_anyone_can_take_over() {
    let store = MemoryLeaseStore::new();
    let clock = Manual::new();
    let mut a = worker(&store, "a", 1);
    let mut b = worker(&store, "b", 1);
    a.tick(&clock).unwrap();
    b.tick(&clock).unwrap();
    let valid_until = a.grants()["t0"].valid_until;
    // From now on every call of `a` fails; `b` keeps looking.
    let mut a_fenced_at = None;
    let mut b_took_at = None;
    for _ in 0..40 {
        clock.advance(Duration::from_secs(1));
        store.inject(&[Fault::Unavailable]);
        let happened = a.tick(&clock).unwrap_or_default();
        if a_fenced_at.is_none()
            && (held(&a).is_empty()
                || happened
                    .iter()
                    .any(|h| matches!(h, Happened::SelfFenced { .. })))
        {
            a_fenced_at = Some(clock.now());
        }
        b.tick(&clock).unwrap();
        if b_took_at.is_none() && !held(&b).is_empty() {
            b_took_at = Some(clock.now());
        }
    }
    let (fenced, took) = (a_fenced_at.unwrap(), b_took_at.unwrap());
    assert!(
        fenced >= valid_until && fenced < took,
        "fenced {fenced:?} before taken {took:?}"
    );
}

#[test]
fn a_renewal_that_applied_but_whose_answer_was_lost_keeps_the_lease() {
    let store = MemoryLeaseStore::new();
    let clock = Manual::new();
    let mut a = worker(&store, "a", 1);
    a.tick(&clock).unwrap();
    clock.advance(a.interval());
    // The tick's scan passes; its renewal applies, but the answer is lost.
    store.inject(&[Fault::Pass, Fault::LostReply]);
    a.tick(&clock).unwrap();
    assert_eq!(held(&a), ["t0"]);
    clock.advance(a.interval());
    let happened = a.tick(&clock).unwrap();
    assert!(happened.is_empty(), "{happened:?}");
    assert_eq!(held(&a), ["t0"]);
    let l = lease(&store, "t0");
    assert_eq!((l.owner.as_deref(), l.epoch, l.counter), (Some("a"), 1, 3));
}

#[test]
fn a_take_whose_answer_was_lost_is_adopted_and_settled() {
    let store = MemoryLeaseStore::new();
    let clock = Manual::new();
    let mut a = worker(&store, "a", 1);
    // The read, the scan for the missing lease's table, the creation, then
    // the take applies with its answer lost.
    store.inject(&[Fault::Pass, Fault::Pass, Fault::Pass, Fault::LostReply]);
    a.tick(&clock).unwrap();
    assert!(held(&a).is_empty());
    clock.advance(a.interval());
    a.tick(&clock).unwrap();
    assert_eq!(held(&a), ["t0"]);
    assert!(a.grants()["t0"].settle);
    assert!(a.grants()["t0"].valid_until > clock.now());
}

#[test]
fn throttled_ticks_keep_leases_while_time_is_left() {
    let store = MemoryLeaseStore::new();
    let clock = Manual::new();
    let mut a = worker(&store, "a", 2);
    a.tick(&clock).unwrap();
    clock.advance(a.interval());
    store.inject(&[Fault::Unavailable]);
    assert!(a.tick(&clock).is_err());
    assert_eq!(held(&a).len(), 2);
    clock.advance(a.interval());
    a.tick(&clock).unwrap();
    assert_eq!(held(&a).len(), 2);
}

#[test]
fn a_released_lease_is_taken_at_once_without_settling() {
    let store = MemoryLeaseStore::new();
    let clock = Manual::new();
    let mut a = worker(&store, "a", 1);
    let mut b = worker(&store, "b", 1);
    a.tick(&clock).unwrap();
    b.tick(&clock).unwrap();
    assert!(held(&b).is_empty());
    a.drain();
    assert_eq!(
        a.release("t0", &clock).unwrap(),
        Some(Happened::Released { table: "t0".into() })
    );
    b.tick(&clock).unwrap();
    assert_eq!(held(&b), ["t0"]);
    assert!(!b.grants()["t0"].settle);
    assert_eq!(lease(&store, "t0").epoch, 2);
}

/// A lease taken from an expired owner is not handed over until that
/// owner's last writes have landed or failed: its next taker finds it
/// released, not expired, and would not wait for them.
#[test]
fn a_lease_taken_from_an_expired_owner_is_handed_over_only_once_settled() {
    const SETTLE: Duration = Duration::from_secs(11);
    let store = MemoryLeaseStore::new();
    let clock = Manual::new();
    let mut a = worker(&store, "a", 1);
    a.tick(&clock).unwrap();
    // `a` dies; `b` takes the lease a duration after its first look.
    let mut b = worker(&store, "b", 1).settling(SETTLE);
    b.tick(&clock).unwrap();
    clock.advance(D);
    b.tick(&clock).unwrap();
    assert!(b.grants()["t0"].settle);
    // Asked to hand it over (a claim, or a stop) before the settle time:
    // kept, and no other worker can take it.
    clock.advance(SETTLE - Duration::from_millis(1));
    assert_eq!(b.release("t0", &clock).unwrap(), None);
    assert_eq!(held(&b), ["t0"]);
    assert_eq!(lease(&store, "t0").owner.as_deref(), Some("b"));
    let mut c = worker(&store, "c", 1);
    c.tick(&clock).unwrap();
    assert!(held(&c).is_empty());
    // Once settled, it goes.
    clock.advance(Duration::from_millis(1));
    assert_eq!(
        b.release("t0", &clock).unwrap(),
        Some(Happened::Released { table: "t0".into() })
    );
    c.tick(&clock).unwrap();
    assert_eq!(held(&c), ["t0"]);
    assert!(!c.grants()["t0"].settle);
    // A lease freed or taken without an expired owner is handed over at
    // once.
    let mut d = worker(&store, "d", 1).settling(SETTLE);
    assert_eq!(
        c.release("t0", &clock).unwrap(),
        Some(Happened::Released { table: "t0".into() })
    );
    d.tick(&clock).unwrap();
    assert_eq!(
        d.release("t0", &clock).unwrap(),
        Some(Happened::Released { table: "t0".into() })
    );
}

/// A claim on a lease still settling shows only once it may be handed
/// over: the holder's passes go on meanwhile.
#[test]
fn a_claim_on_a_lease_still_settling_shows_once_settled() {
    const SETTLE: Duration = Duration::from_secs(100);
    let store = MemoryLeaseStore::new();
    let clock = Manual::new();
    let mut a = worker(&store, "a", 2);
    a.tick(&clock).unwrap();
    // `a` dies; `b` takes both leases as they expire.
    let mut b = worker(&store, "b", 2).settling(SETTLE);
    for _ in 0..10 {
        b.tick(&clock).unwrap();
        if held(&b).len() == 2 {
            break;
        }
        clock.advance(b.interval());
    }
    assert_eq!(held(&b).len(), 2);
    let mut c = worker(&store, "c", 2);
    let happened = c.tick(&clock).unwrap();
    assert!(
        happened
            .iter()
            .any(|h| matches!(h, Happened::Claimed { .. })),
        "{happened:?}"
    );
    clock.advance(Duration::from_secs(1));
    b.tick(&clock).unwrap();
    assert!(
        b.grants().values().all(|g| !g.claimed),
        "not while settling"
    );
    clock.advance(SETTLE);
    b.tick(&clock).unwrap();
    assert_eq!(b.grants().values().filter(|g| g.claimed).count(), 1);
}

#[test]
fn a_restarted_worker_takes_its_earlier_runs_leases_once_they_expire() {
    let store = MemoryLeaseStore::new();
    let clock = Manual::new();
    let mut first = worker(&store, "a", 2);
    first.tick(&clock).unwrap();
    drop(first); // killed: its leases stay under "a"
    let mut again = worker(&store, "a", 2);
    again.tick(&clock).unwrap();
    assert!(
        held(&again).is_empty(),
        "the earlier run may still be writing: not adopted"
    );
    clock.advance(D);
    let happened = again.tick(&clock).unwrap();
    assert_eq!(held(&again), tables(2));
    assert!(happened.contains(&Happened::Took {
        table: "t0".into(),
        epoch: 2,
        from: Some("a".into()),
    }));
    assert!(again.grants().values().all(|g| g.settle));
}

#[test]
fn a_second_live_process_under_the_same_name_is_an_error() {
    let store = MemoryLeaseStore::new();
    let clock = Manual::new();
    let mut a = worker(&store, "a", 2);
    a.tick(&clock).unwrap();
    let mut namesake = worker(&store, "a", 2);
    namesake.tick(&clock).unwrap();
    assert!(held(&namesake).is_empty());
    clock.advance(a.interval());
    a.tick(&clock).unwrap();
    let err = namesake.tick(&clock).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, StoreFailure::Fatal(_))
            && text.contains("another process is running as worker \"a\""),
        "{text}"
    );
    assert!(held(&namesake).is_empty(), "it never wrote a lease of `a`");
    clock.advance(a.interval());
    a.tick(&clock).unwrap();
    assert_eq!(held(&a), tables(2), "the first process keeps its leases");
}

#[test]
fn a_claim_by_an_earlier_version_that_drops_the_token_keeps_the_lease() {
    let store = MemoryLeaseStore::new();
    let clock = Manual::new();
    let mut a = worker(&store, "a", 1);
    a.tick(&clock).unwrap();
    // A worker of an earlier version claims the lease by writing the item
    // as it knows it: without the owner's token.
    let l = lease(&store, "t0");
    let claimed = Lease {
        counter: l.counter + 1,
        claim: Some("old".into()),
        incarnation: None,
        ..l.clone()
    };
    store
        .put(&Item::Lease(claimed), Condition::Counter(l.counter))
        .unwrap();
    clock.advance(a.interval());
    let happened = a.tick(&clock).unwrap();
    assert!(
        !happened.contains(&Happened::Lost { table: "t0".into() }),
        "{happened:?}"
    );
    assert!(a.grants()["t0"].claimed, "asked to hand it over");
    assert!(
        lease(&store, "t0").incarnation.is_some(),
        "the renewal writes the token back"
    );
}

#[test]
fn a_claim_on_an_earlier_runs_lease_is_not_taken_for_a_namesake() {
    let store = MemoryLeaseStore::new();
    let clock = Manual::new();
    let mut first = worker(&store, "a", 4);
    first.tick(&clock).unwrap();
    drop(first);
    let mut again = worker(&store, "a", 4);
    let mut b = worker(&store, "b", 4);
    again.tick(&clock).unwrap();
    // `b` sees four live leases of `a` and claims one: the counter moves
    // under "a" and the earlier run's token, but the claim changed.
    let happened = b.tick(&clock).unwrap();
    assert!(
        happened
            .iter()
            .any(|h| matches!(h, Happened::Claimed { .. })),
        "{happened:?}"
    );
    clock.advance(again.interval());
    assert!(
        again.tick(&clock).is_ok(),
        "a claim is not a namesake's renewal"
    );
    assert!(held(&again).is_empty());
    // The earlier run never answers the claim: its leases expire and the
    // restarted process takes them all.
    clock.advance(D);
    let happened = again.tick(&clock).unwrap();
    assert_eq!(held(&again), tables(4), "{happened:?}");
}

#[test]
fn a_new_worker_claims_one_lease_of_the_busiest_and_gets_it_when_handed_over() {
    let store = MemoryLeaseStore::new();
    let clock = Manual::new();
    let mut a = worker(&store, "a", 4);
    a.tick(&clock).unwrap();
    assert_eq!(held(&a).len(), 4);
    let mut b = worker(&store, "b", 4);
    let happened = b.tick(&clock).unwrap();
    let claims: Vec<_> = happened
        .iter()
        .filter(|h| matches!(h, Happened::Claimed { .. }))
        .collect();
    assert_eq!(claims.len(), 1, "one steal at a time: {happened:?}");
    // A second tick of `b` claims nothing more while its claim is open.
    clock.advance(b.interval());
    assert!(
        !b.tick(&clock)
            .unwrap()
            .iter()
            .any(|h| matches!(h, Happened::Claimed { .. }))
    );
    a.tick(&clock).unwrap();
    let claimed: Vec<String> = a
        .grants()
        .into_iter()
        .filter(|(_, g)| g.claimed)
        .map(|(t, _)| t)
        .collect();
    assert_eq!(claimed.len(), 1);
    // The pipeline finished the table; `a` hands it over.
    a.release(&claimed[0], &clock).unwrap();
    // `a` does not take back what it handed over.
    a.tick(&clock).unwrap();
    assert_eq!(held(&a).len(), 3);
    clock.advance(b.interval());
    b.tick(&clock).unwrap();
    assert_eq!(held(&b), claimed);
    // 3 and 1: the spread still exceeds one, so `b` claims another.
    assert!(lease_claims(&store) == 1, "one open claim");
}

#[test]
fn balanced_workers_do_not_steal() {
    let store = MemoryLeaseStore::new();
    let clock = Manual::new();
    let mut a = worker(&store, "a", 3);
    let mut b = worker(&store, "b", 3);
    a.tick(&clock).unwrap();
    // 3 and 0: b claims one; a hands it over.
    b.tick(&clock).unwrap();
    a.tick(&clock).unwrap();
    let claimed: Vec<String> = a
        .grants()
        .into_iter()
        .filter(|(_, g)| g.claimed)
        .map(|(t, _)| t)
        .collect();
    a.release(&claimed[0], &clock).unwrap();
    for _ in 0..6 {
        clock.advance(a.interval());
        a.tick(&clock).unwrap();
        let happened = b.tick(&clock).unwrap();
        assert!(
            !happened
                .iter()
                .any(|h| matches!(h, Happened::Claimed { .. })),
            "2 and 1 is balanced: {happened:?}"
        );
    }
    assert_eq!((held(&a).len(), held(&b).len()), (2, 1));
}

/// A claim ends when a third worker takes the claimed lease from its
/// expired owner: the claimant may claim again.
#[test]
fn a_claim_on_a_lease_someone_else_took_does_not_stop_balancing() {
    let store = MemoryLeaseStore::new();
    let clock = Manual::new();
    let mut a = worker(&store, "a", 4);
    a.tick(&clock).unwrap();
    let mut b = worker(&store, "b", 4);
    let happened = b.tick(&clock).unwrap();
    let Some(Happened::Claimed { table: claimed, .. }) = happened
        .into_iter()
        .find(|h| matches!(h, Happened::Claimed { .. }))
    else {
        panic!("b claims one of a's leases");
    };
    // `a` dies before handing it over. `c` looks while `b` does not: a's
    // leases expire, and `c` takes them all.
    let mut c = worker(&store, "c", 4);
    for _ in 0..10 {
        c.tick(&clock).unwrap();
        clock.advance(c.interval());
    }
    assert_eq!(held(&c).len(), 4, "c took every lease");
    assert_eq!(lease(&store, &claimed).owner.as_deref(), Some("c"));
    // `b` holds nothing and `c` four: `b` claims again.
    clock.advance(b.interval());
    let happened = b.tick(&clock).unwrap();
    assert!(
        happened
            .iter()
            .any(|h| matches!(h, Happened::Claimed { .. })),
        "{happened:?}"
    );
}

#[derive(Clone, Debug)]
enum Step {
    Tick(usize),
    Advance(u64),
    Fail(Fault),
    Crash(usize),
    Restart(usize),
    Release(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..4usize).prop_map(Step::Tick),
        3 => (1..15_000u64).prop_map(Step::Advance),
        1 => prop_oneof![Just(Fault::Unavailable), Just(Fault::LostReply)].prop_map(Step::Fail),
        1 => (0..4usize).prop_map(Step::Crash),
        1 => (0..4usize).prop_map(Step::Restart),
        1 => (0..4usize).prop_map(Step::Release),
    ]
}

proptest! {
    /// Whatever the schedule (ticks, time, lost answers, outages, crashes,
    /// restarts under the same name, handovers), at no instant do two
    /// workers both hold a valid grant on one table, and each new grant has
    /// a higher epoch. The fourth process is misconfigured with the first
    /// one's name; a process whose tick fails fatally stops taking and
    /// renewing, as the bridge does, but may go on writing under the grants
    /// it has until they run out, so those still count.
    #[test]
    fn at_most_one_worker_may_write_a_table_at_any_instant(steps in proptest::collection::vec(step(), 1..200)) {
        let store = MemoryLeaseStore::new();
        let clock = Manual::new();
        let names = ["a", "b", "c", "a"];
        let mut workers: Vec<Option<Coordinator<MemoryLeaseStore>>> =
            names.iter().map(|w| Some(worker(&store, w, 4))).collect();
        let mut stopped: Vec<Coordinator<MemoryLeaseStore>> = Vec::new();
        let mut last_epoch: BTreeMap<String, u64> = BTreeMap::new();
        for s in steps {
            match s {
                Step::Tick(w) => {
                    if let Some(c) = workers[w].as_mut()
                        && let Err(StoreFailure::Fatal(_)) = c.tick(&clock)
                    {
                        stopped.extend(workers[w].take());
                    }
                }
                Step::Advance(ms) => clock.advance(Duration::from_millis(ms)),
                Step::Fail(f) => store.inject(&[f]),
                Step::Crash(w) => workers[w] = None,
                Step::Restart(w) => workers[w] = Some(worker(&store, names[w], 4)),
                Step::Release(w) => {
                    if let Some(c) = workers[w].as_mut()
                        && let Some(t) = c.grants().into_keys().next()
                    {
                        let _ = c.release(&t, &clock);
                    }
                }
            }
            let now = clock.now();
            let mut writers: BTreeMap<String, Vec<u64>> = BTreeMap::new();
            for c in workers.iter().flatten().chain(&stopped) {
                for (t, g) in c.grants() {
                    if g.valid_until > now {
                        writers.entry(t).or_default().push(g.epoch);
                    }
                }
            }
            for (t, epochs) in writers {
                prop_assert!(epochs.len() <= 1, "table {} writable by {} workers at once", t, epochs.len());
                let e = epochs[0];
                let last = last_epoch.entry(t.clone()).or_insert(e);
                prop_assert!(e >= *last, "table {} went back from epoch {} to {}", t, last, e);
                *last = e;
            }
        }
    }
}

/// Workers configured with different lease durations (a rolling change of
/// `lease_duration_ms`): the shorter one judges a lease by its holder's
/// longer duration, written on the lease, so it never takes one the holder
/// still trusts; and it waits out the holder's longer settling time.
#[test]
fn a_worker_with_a_shorter_duration_waits_for_the_holders_before_taking() {
    let store = MemoryLeaseStore::new();
    let clock = Manual::new();
    let long = Duration::from_secs(60);
    let short = Duration::from_secs(10);
    let mut h =
        Coordinator::new(store.clone(), "h", long, &tables(1)).settling(Duration::from_secs(21));
    let mut o =
        Coordinator::new(store.clone(), "o", short, &tables(1)).settling(Duration::from_secs(4));
    h.tick(&clock).unwrap();
    assert_eq!(lease(&store, "t0").duration_ms, 60_000);
    o.tick(&clock).unwrap();
    // H renews every 20 s, trusting each renewal for 48 s; O ticks often.
    for _ in 0..30 {
        clock.advance(Duration::from_secs(1));
        o.tick(&clock).unwrap();
        let now = clock.now();
        let both = h.grants().get("t0").is_some_and(|g| g.valid_until > now)
            && o.grants().get("t0").is_some_and(|g| g.valid_until > now);
        assert!(!both, "two writers at {now:?}");
    }
    assert!(held(&o).is_empty(), "taken from a live holder");
    // H is gone: O takes the lease after H's duration, and settles for
    // H's produce timeout, not its own.
    for _ in 0..61 {
        clock.advance(Duration::from_secs(1));
        o.tick(&clock).unwrap();
    }
    let grant = o.grants()["t0"].clone();
    assert!(grant.settle);
    assert_eq!(grant.settle_for, Duration::from_secs(21));
}

/// A lease item deleted while its table's positions were written under a
/// later epoch is created again at that epoch: its next owner's epoch is
/// above every item of the table, so its positions can be recorded again.
#[test]
fn a_deleted_lease_is_created_again_above_its_tables_positions() {
    use dynamo_cdc_core::CheckpointStore as _;
    let store = MemoryLeaseStore::new();
    let clock = Manual::new();
    let position = |epoch: u64, seq: &str| {
        Item::Position(dynamo_cdc_lease::PositionItem {
            table: "t0".into(),
            sink: "parquet".into(),
            shard: "shardId-1".into(),
            seq: seq.into(),
            epoch,
            updated_ms: 0,
        })
    };
    store.put(&position(7, "100"), Condition::Always).unwrap();
    let mut a = worker(&store, "a", 1);
    a.tick(&clock).unwrap();
    let epoch = a.grants()["t0"].epoch;
    assert_eq!(epoch, 9, "above the positions' epoch");

    let mut recorded = dynamo_cdc_core::Recorded::default();
    recorded
        .sinks
        .entry("parquet".into())
        .or_default()
        .positions
        .advance(
            dynamo_cdc_core::ShardKey::new("t0", "shardId-1"),
            dynamo_cdc_core::SequenceNumber::parse("200").unwrap(),
        );
    let mut checkpoints = dynamo_cdc_lease::LeaseCheckpoints::new(
        store.clone(),
        BTreeMap::from([("t0".into(), epoch)]),
    );
    checkpoints.store(&recorded).unwrap();
    checkpoints.flush().unwrap();
    assert!(
        store
            .items()
            .iter()
            .any(|i| matches!(i, Item::Position(p) if p.seq == "200" && p.epoch == 9)),
        "the new owner's position is recorded"
    );
}

/// A claim on a dead owner's lease is no sign of the owner's life: the
/// lease expires a duration after the owner's last renewal, as its other
/// leases do, not a duration after the claim.
#[test]
fn a_claim_does_not_put_off_the_expiry_of_a_dead_owners_lease() {
    let store = MemoryLeaseStore::new();
    let clock = Manual::new();
    let mut a = worker(&store, "a", 4);
    a.tick(&clock).unwrap();
    assert_eq!(held(&a).len(), 4);
    // `a` dies now. `c` sees its leases, and, short of its share, claims one.
    let mut c = worker(&store, "c", 4);
    c.tick(&clock).unwrap();
    clock.advance(D / 2);
    c.tick(&clock).unwrap();
    assert_eq!(lease_claims(&store), 1, "claimed one of a's leases");
    let claimed = store
        .items()
        .into_iter()
        .find_map(|i| match i {
            Item::Lease(l) if l.claim.is_some() => Some(l.table),
            _ => None,
        })
        .unwrap();
    // A duration after c first saw them, every lease of a's has expired,
    // the claimed one included.
    clock.advance(D / 2);
    c.tick(&clock).unwrap();
    assert!(held(&c).contains(&claimed), "{:?}", held(&c));
}

/// A take whose answer was lost is adopted on the next round with the
/// expired owner's settling time, when longer than the taker's: the take
/// wrote the longer one on the lease.
#[test]
fn an_adopted_take_settles_for_the_expired_owners_time() {
    let store = MemoryLeaseStore::new();
    let clock = Manual::new();
    let mut h = worker(&store, "h", 1).settling(Duration::from_secs(21));
    h.tick(&clock).unwrap();
    // `h` dies; `o` sees the lease stand still for a duration.
    let mut o = worker(&store, "o", 1).settling(Duration::from_secs(4));
    o.tick(&clock).unwrap();
    clock.advance(D);
    // The read, then the take applies with its answer lost.
    store.inject(&[Fault::Pass, Fault::LostReply]);
    o.tick(&clock).unwrap();
    assert!(held(&o).is_empty());
    clock.advance(o.interval());
    o.tick(&clock).unwrap();
    let grant = o.grants()["t0"].clone();
    assert!(grant.settle);
    assert_eq!(grant.settle_for, Duration::from_secs(21));
}

/// Two pipelines sharing a lease table (the default name, by mistake) would
/// take each other's tables and positions: a worker that meets a lease
/// written by another pipeline stops, naming both. Leases of earlier
/// versions (unmarked) and of its own pipeline are fine.
#[test]
fn a_lease_of_another_pipeline_stops_the_worker() {
    let store = MemoryLeaseStore::new();
    let clock = Manual::new();
    let mut a = worker(&store, "a", 1).pipeline("kafka topic cdc.{table}");
    a.tick(&clock).unwrap();
    assert_eq!(
        lease(&store, "t0").pipeline.as_deref(),
        Some("kafka topic cdc.{table}")
    );
    let mut same = worker(&store, "b", 1).pipeline("kafka topic cdc.{table}");
    same.tick(&clock).unwrap();
    let mut unmarked = worker(&store, "c", 1);
    unmarked.tick(&clock).unwrap();
    let mut other = worker(&store, "d", 1).pipeline("parquet s3://lake/cdc");
    let Err(StoreFailure::Fatal(e)) = other.tick(&clock) else {
        panic!("another pipeline's lease was taken for its own");
    };
    assert!(
        e.contains("t0") && e.contains("cdc.{table}") && e.contains("s3://lake/cdc"),
        "{e}"
    );
    assert!(e.contains("lease_table"), "{e}");
    assert!(held(&other).is_empty());
}
