//! `dynamo-cdc-gen load`: realistic writes to a live DynamoDB table at a
//! steady rate, for exercising a CDC pipeline end to end.
//!
//! The table is keyed by `pk` and `sk` (strings) and holds order lines,
//! customers and device events whose attributes use every DynamoDB type
//! (see [`items`]). Writes are inserts, replacing puts, updates and deletes
//! of items the run created. The run is split into lanes, each with its
//! own items and its own deadline schedule ([`pace`]), so the rate holds
//! even when one write takes longer than the gap between two. Throttling
//! and outages are retried with backoff, counted, and logged once per
//! outage ([`stats`]).
//!
//! Progress goes to the given output every 5 s, and a summary at the end
//! lists the stream records a reader should find.

mod items;
mod pace;
mod request;
mod stats;
mod writer;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::task::JoinSet;

use items::Items;
use pace::{Backoff, Schedule};
use stats::{Miss, Outage, Stats};
use writer::{Failure, Writer};

/// How to run.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadArgs {
    /// DynamoDB endpoint (DynamoDB Local, moto); AWS's own when `None`.
    pub endpoint_url: Option<String>,
    /// Table to write.
    pub table: String,
    /// Writes per second.
    pub rate: f64,
    /// Stop after this long; `None` runs until stopped.
    pub duration: Option<Duration>,
    /// Create the table when missing.
    pub create: bool,
    /// Region; the SDK's chain, else us-east-1, when `None`.
    pub region: Option<String>,
    /// Seed of every random choice: the same seed gives the same
    /// operations on the same partition keys (timestamps, and the sort keys
    /// of events, come from the clock).
    pub seed: u64,
}

/// Highest rate accepted: beyond this one process is not the right tool.
pub const MAX_RATE: f64 = 10_000.0;
/// Writes per second a lane aims at; one write in flight per lane.
const LANE_RATE: f64 = 25.0;
const MAX_LANES: usize = 256;
/// Items tracked for later updates over all lanes; bounds memory.
const MAX_TRACKED: usize = 10_000;
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Checks that `name` is a valid DynamoDB table name.
///
/// # Errors
/// What is wrong with it.
pub fn check_table_name(name: &str) -> Result<(), String> {
    let valid = (3..=255).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a DynamoDB table name: 3 to 255 characters among a-z, A-Z, 0-9, \
             `_`, `-` and `.`"
        ))
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Writes until `args.duration` has passed or `stop` is set (by a signal),
/// printing progress and the summary to `out`.
///
/// # Errors
/// A message naming what is wrong: the table is missing (without
/// `--create`), keyed differently, the endpoint unreachable at start, or a
/// write failed in a way retrying cannot fix. The summary is printed first
/// when writing had begun.
pub fn run(args: &LoadArgs, stop: Arc<AtomicBool>, out: &mut dyn Write) -> Result<(), String> {
    check_table_name(&args.table)?;
    if !(args.rate > 0.0 && args.rate <= MAX_RATE) {
        return Err(format!(
            "--rate {} is not between 0 and {MAX_RATE} writes per second",
            args.rate
        ));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(run_async(args, stop, out))
}

async fn run_async(
    args: &LoadArgs,
    stop: Arc<AtomicBool>,
    out: &mut dyn Write,
) -> Result<(), String> {
    let (client, region) =
        writer::connect(args.endpoint_url.as_deref(), args.region.as_deref()).await;
    let where_ = match &args.endpoint_url {
        Some(url) => format!("{url} (region {region})"),
        None => format!("AWS region {region}"),
    };
    let writer = Writer::new(client, &args.table);
    let stopping = || stop.load(Ordering::Relaxed);
    let table = writer.ensure_table(args.create, &where_, &stopping).await?;
    for w in &table.warnings {
        eprintln!("dynamo-cdc-gen load: warning: {w}");
    }
    let lanes = ((args.rate / LANE_RATE).ceil() as usize).clamp(1, MAX_LANES);
    let _ = writeln!(
        out,
        "dynamo-cdc-gen load: {} table `{}` at {where_}; {} writes/s {} in {lanes} lane{}, seed {}",
        if table.created {
            "created"
        } else {
            "writing to"
        },
        args.table,
        args.rate,
        args.duration.map_or_else(
            || "until stopped (Ctrl-C)".to_owned(),
            |d| format!("for {} s", d.as_secs_f64())
        ),
        if lanes == 1 { "" } else { "s" },
        args.seed,
    );
    if stopping() {
        return Ok(());
    }

    let started = Instant::now();
    let end = args.duration.map(|d| started + d);
    let writer = Arc::new(writer);
    let stats = Arc::new(Stats::default());
    let outage = Arc::new(Outage::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut set = JoinSet::new();
    for lane in 0..lanes {
        let ctx = Lane {
            first: started + Duration::from_secs_f64(lane as f64 / args.rate),
            period: Duration::from_secs_f64(lanes as f64 / args.rate),
            end,
            seed: args.seed ^ (lane as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            max_live: (MAX_TRACKED / lanes).max(50),
            writer: writer.clone(),
            stats: stats.clone(),
            outage: outage.clone(),
            stop: stop_rx.clone(),
        };
        set.spawn(ctx.run());
    }

    let mut fatal = None;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut last_report = (started, 0u64);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if stopping() {
                    let _ = stop_tx.send(true);
                }
                let now = Instant::now();
                if now.duration_since(last_report.0) >= PROGRESS_EVERY {
                    let counts = stats.snapshot();
                    let rate = (counts.total() - last_report.1) as f64
                        / now.duration_since(last_report.0).as_secs_f64();
                    let _ = writeln!(out, "{}", counts.progress_line(now - started, rate));
                    last_report = (now, counts.total());
                }
            }
            done = set.join_next() => match done {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => {
                    fatal.get_or_insert(e);
                    let _ = stop_tx.send(true);
                }
                Some(Err(e)) => {
                    fatal.get_or_insert(format!("a writer lane failed: {e}"));
                    let _ = stop_tx.send(true);
                }
            },
        }
    }
    let _ = write!(
        out,
        "{}",
        stats.snapshot().summary(&args.table, started.elapsed())
    );
    let _ = out.flush();
    fatal.map_or(Ok(()), Err)
}

/// One lane: its schedule, its items, its share of the shared state.
struct Lane {
    first: Instant,
    period: Duration,
    end: Option<Instant>,
    seed: u64,
    max_live: usize,
    writer: Arc<Writer>,
    stats: Arc<Stats>,
    outage: Arc<Outage>,
    stop: watch::Receiver<bool>,
}

impl Lane {
    async fn run(mut self) -> Result<(), String> {
        let mut schedule = Schedule::new(self.first, self.period);
        let mut items = Items::new(self.seed, self.max_live);
        loop {
            let due = schedule.next_due(Instant::now());
            if let Some(end) = self.end
                && due >= end
            {
                // The run lasts its whole duration, so the summary's rate
                // is writes over the time asked for.
                self.sleep_until(end).await;
                return Ok(());
            }
            if !self.sleep_until(due).await {
                return Ok(());
            }
            let op = items.next(now_ms());
            let mut backoff = Backoff::new();
            // A write in flight is always finished, even when stopping, so
            // the summary counts what the table holds.
            loop {
                let sent = Instant::now();
                let failure = match self.writer.apply(&op).await {
                    Ok(()) => {
                        if let Some(line) = self.outage.succeeded(Instant::now()) {
                            eprintln!("dynamo-cdc-gen load: {line}");
                        }
                        self.stats.wrote(op.kind());
                        break;
                    }
                    Err(f) => f,
                };
                let what = match failure {
                    Failure::Fatal(e) => return Err(e),
                    Failure::Skipped => {
                        self.stats.missed(Miss::Skipped);
                        items.forget(&op.keys());
                        break;
                    }
                    Failure::Rejected { code, message } => {
                        self.stats.missed(Miss::Rejected);
                        if self.outage.first_rejection(&code) {
                            eprintln!(
                                "dynamo-cdc-gen load: the endpoint refused a write ({message}); \
                                 counted as rejected, logged once per error code"
                            );
                        }
                        items.forget(&op.keys());
                        break;
                    }
                    Failure::Throttled(e) => {
                        self.stats.missed(Miss::Throttled);
                        format!("throttled: {e}")
                    }
                    Failure::Unavailable(e) => {
                        self.stats.missed(Miss::Unavailable);
                        format!("the endpoint is unavailable: {e}")
                    }
                };
                if let Some(line) = self.outage.failed(sent, Instant::now(), &what) {
                    eprintln!("dynamo-cdc-gen load: {line}");
                }
                let retry_at = Instant::now() + backoff.next(items.rng());
                if self.end.is_some_and(|end| retry_at >= end) || !self.sleep_until(retry_at).await
                {
                    return Ok(());
                }
            }
        }
    }

    /// Sleeps until `at`; false when asked to stop first.
    async fn sleep_until(&mut self, at: Instant) -> bool {
        if *self.stop.borrow() {
            return false;
        }
        tokio::select! {
            () = tokio::time::sleep_until(at.into()) => !*self.stop.borrow(),
            _ = self.stop.changed() => false,
        }
    }
}
