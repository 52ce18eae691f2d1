//! The coordinator on its own thread: a tick every third of the lease
//! duration, and what it holds published for the pipeline, which reads it
//! between batches and checks the [`Fence`] before every write.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dynamo_cdc_core::{Outage, OutageLine};

use crate::clock::{Moment, SystemClock};
use crate::coordinator::{Coordinator, Grant, Happened};

/// Gauge: tables whose lease this process holds.
pub const LEASES_HELD: &str = "dynamo_cdc_leases_held";
/// Counter, by `event`: `took`, `lost`, `self_fenced`, `claimed`,
/// `released`.
pub const LEASE_EVENTS: &str = "dynamo_cdc_lease_events_total";

/// Registers the help text of the lease metrics.
pub fn describe() {
    metrics::describe_gauge!(LEASES_HELD, "Tables whose lease this process holds.");
    metrics::describe_counter!(
        LEASE_EVENTS,
        "Lease events: took, lost (another worker took it), self_fenced (not renewed in time), claimed, released."
    );
}
use crate::store::{LeaseStore, StoreFailure};

/// What the worker holds, as last published.
#[derive(Clone, Debug, Default)]
pub struct Assignment {
    /// Bumped whenever the set of tables, an epoch or a claim changes
    /// (not on a mere renewal).
    pub version: u64,
    /// Table -> how it is held.
    pub grants: BTreeMap<String, Grant>,
    /// The lease table failed in a way waiting does not fix.
    pub failure: Option<String>,
}

impl Assignment {
    /// Tables another worker asked for: finish them and release.
    pub fn claimed(&self) -> BTreeSet<String> {
        self.grants
            .iter()
            .filter(|(_, g)| g.claimed)
            .map(|(t, _)| t.clone())
            .collect()
    }
}

enum Command {
    Release(Vec<String>),
    /// Stop ticking; release everything held when `release`.
    Stop {
        release: bool,
    },
}

struct Shared {
    assignment: Mutex<Assignment>,
    published: Condvar,
    commands: Mutex<Vec<Command>>,
    wake: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The lease worker thread; see the module docs.
pub struct Worker {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts ticking `coordinator` on a thread of its own.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn start<S: LeaseStore + 'static>(coordinator: Coordinator<S>) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            assignment: Mutex::new(Assignment::default()),
            published: Condvar::new(),
            commands: Mutex::new(Vec::new()),
            wake: Condvar::new(),
        });
        let inner = shared.clone();
        let thread = std::thread::Builder::new()
            .name("dynamo-cdc-leases".into())
            .spawn(move || run(coordinator, &inner))?;
        Ok(Worker {
            shared,
            thread: Some(thread),
        })
    }

    /// What is held now.
    pub fn assignment(&self) -> Assignment {
        lock(&self.shared.assignment).clone()
    }

    /// Waits until the assignment's version differs from `version`, or
    /// `timeout` passes; returns the assignment either way.
    pub fn wait_change(&self, version: u64, timeout: Duration) -> Assignment {
        let guard = lock(&self.shared.assignment);
        let (guard, _) = self
            .shared
            .published
            .wait_timeout_while(guard, timeout, |a| a.version == version)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        guard.clone()
    }

    /// A fence for the tables a pass writes, at their current epochs.
    pub fn fence(&self, tables: &BTreeMap<String, u64>) -> Fence {
        Fence {
            shared: self.shared.clone(),
            tables: tables.clone(),
        }
    }

    /// Hands `tables` over (their writes are committed and recorded).
    pub fn release(&self, tables: Vec<String>) {
        if tables.is_empty() {
            return;
        }
        lock(&self.shared.commands).push(Command::Release(tables));
        self.shared.wake.notify_all();
    }

    /// Releases everything held and stops the thread (after a graceful
    /// stop: everything is committed and recorded, nothing is in flight).
    /// A lease still settling (see `Coordinator::settling`) is left to run
    /// out instead.
    pub fn stop(mut self) {
        self.stop_thread(true);
    }

    /// Stops the thread without releasing: the leases run out and peers
    /// take them as from a crashed worker (after a failure, when writes may
    /// still be in flight).
    pub fn abandon(mut self) {
        self.stop_thread(false);
    }

    /// The assignment's version, cheaply.
    pub fn version(&self) -> u64 {
        lock(&self.shared.assignment).version
    }

    fn stop_thread(&mut self, release: bool) {
        lock(&self.shared.commands).push(Command::Stop { release });
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Worker {
    /// Dropped without [`Worker::stop`]: abandoned (see
    /// [`Worker::abandon`]).
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop_thread(false);
        }
    }
}

/// Whether a pass may still write its tables: each must still be held, at
/// the epoch the pass started with, and within its time.
#[derive(Clone)]
pub struct Fence {
    shared: Arc<Shared>,
    tables: BTreeMap<String, u64>,
}

impl Fence {
    /// `Err` names the first table this worker may no longer write.
    ///
    /// # Errors
    /// When a table's lease was lost, taken at another epoch, or not
    /// renewed in time.
    pub fn check(&self) -> Result<(), String> {
        let now = Moment::now();
        let a = lock(&self.shared.assignment);
        for (table, epoch) in &self.tables {
            match a.grants.get(table) {
                Some(g) if g.epoch == *epoch && now < g.valid_until => {}
                Some(g) if g.epoch == *epoch => {
                    return Err(format!(
                        "the lease on table {table} was not renewed in time: writing stops \
                         before any other worker can judge it expired"
                    ));
                }
                _ => {
                    return Err(format!(
                        "the lease on table {table} (epoch {epoch}) is no longer held"
                    ));
                }
            }
        }
        Ok(())
    }
}

fn run<S: LeaseStore>(mut c: Coordinator<S>, shared: &Shared) {
    let mut outage = Outage::new();
    let mut stopping: Option<bool> = None;
    loop {
        let commands = std::mem::take(&mut *lock(&shared.commands));
        let mut happened = Vec::new();
        for command in commands {
            match command {
                Command::Release(tables) => {
                    for t in tables {
                        match c.release(&t, &SystemClock) {
                            Ok(h) => happened.extend(h),
                            Err(e) => {
                                tracing::warn!(table = %t, error = %e, "cannot release the lease")
                            }
                        }
                    }
                }
                Command::Stop { release } => stopping = Some(release),
            }
        }
        if let Some(release) = stopping {
            c.drain();
            if release {
                let held: Vec<String> = c.grants().into_keys().collect();
                for t in held {
                    if let Ok(Some(h)) = c.release(&t, &SystemClock) {
                        happened.push(h);
                    }
                }
            }
            report(&happened);
            publish(shared, &c, None);
            return;
        }
        // Ticks start an interval apart, however long one took: a slow
        // call must not push the next renewal past the lease's validity.
        let started = Instant::now();
        let failure = match c.tick(&SystemClock) {
            Ok(h) => {
                if let Some(OutageLine::Back(after)) = outage.succeeded(Instant::now()) {
                    tracing::info!(down_s = after.as_secs(), "the lease table answers again");
                }
                happened.extend(h);
                None
            }
            Err(StoreFailure::Fatal(e)) => Some(e),
            Err(e) => {
                match outage.failed(Instant::now()) {
                    Some(OutageLine::Down) => {
                        tracing::warn!(error = %e, "the lease table does not answer; leases run down and are fenced when their time is up");
                    }
                    Some(OutageLine::StillDown(d)) => {
                        tracing::warn!(error = %e, down_s = d.as_secs(), "the lease table still does not answer");
                    }
                    _ => {}
                }
                None
            }
        };
        report(&happened);
        publish(shared, &c, failure);
        let commands = lock(&shared.commands);
        if commands.is_empty() {
            let _ = shared
                .wake
                .wait_timeout(commands, c.interval().saturating_sub(started.elapsed()))
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }
}

fn publish<S: LeaseStore>(shared: &Shared, c: &Coordinator<S>, failure: Option<String>) {
    let grants = c.grants();
    let mut a = lock(&shared.assignment);
    let same = a.failure == failure
        && a.grants.len() == grants.len()
        && a.grants.iter().zip(&grants).all(|((t1, g1), (t2, g2))| {
            t1 == t2 && g1.epoch == g2.epoch && g1.claimed == g2.claimed
        });
    metrics::gauge!(LEASES_HELD).set(grants.len() as f64);
    a.grants = grants;
    if !same {
        a.version += 1;
        a.failure = failure;
    }
    drop(a);
    shared.published.notify_all();
}

fn report(happened: &[Happened]) {
    for h in happened {
        let event = match h {
            Happened::Took { table, epoch, from } => {
                tracing::info!(table = %table, epoch, from = from.as_deref().unwrap_or("(free)"), "lease taken");
                "took"
            }
            Happened::Lost { table } => {
                tracing::warn!(table = %table, "lease lost to another worker: writing the table stopped");
                "lost"
            }
            Happened::SelfFenced { table } => {
                tracing::warn!(table = %table, "lease not renewed in time: writing the table stopped (self-fence)");
                "self_fenced"
            }
            Happened::Claimed { table, owner } => {
                tracing::info!(table = %table, owner = %owner, "asked a busier worker to hand a lease over");
                "claimed"
            }
            Happened::Released { table } => {
                tracing::info!(table = %table, "lease handed over");
                "released"
            }
        };
        metrics::counter!(LEASE_EVENTS, "event" => event).increment(1);
    }
}
