//! What a run shows while it runs: the recorder, the health flags and the
//! endpoint, plus the gauges computed at scrape time (checkpoint age, lag,
//! time to data loss). The run loop only stores to atomics here.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use dynamo_cdc_source::streams::{RETENTION_SECONDS, ShardBoard, TableHealth};

use super::recorder::{self, Handle};
use super::server::{self, Health, MetricsServer};
use crate::events::{CHECKPOINT_AGE, SOURCE_LAG, TIME_TO_DATA_LOSS};

/// The live view of a run.
pub(crate) struct Watch {
    pub(crate) health: Arc<Health>,
    /// Unix milliseconds of the last checkpoint written (or of the start).
    checkpoint_ms: Arc<AtomicU64>,
    /// The stream source's shards, while a stream source runs.
    board: Arc<Mutex<Option<Arc<ShardBoard>>>>,
    /// The tables' figures last shown (aged while no source runs).
    shown: Arc<Mutex<Shown>>,
    /// Serves until the run ends (dropped with the watch).
    _server: Option<MetricsServer>,
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Watch {
    /// Serves the endpoint on `listen`, when given; otherwise only keeps
    /// the flags (no metrics are recorded at all).
    ///
    /// # Errors
    /// When the address cannot be bound; the message names it.
    pub(crate) fn start(listen: Option<SocketAddr>) -> std::io::Result<Watch> {
        let health = Arc::new(Health::new());
        let checkpoint_ms = Arc::new(AtomicU64::new(unix_ms()));
        let board: Arc<Mutex<Option<Arc<ShardBoard>>>> = Arc::default();
        let shown: Arc<Mutex<Shown>> = Arc::default();
        let server = match listen {
            None => None,
            Some(addr) => {
                let handle = recorder::install();
                crate::events::describe();
                dynamo_cdc_source::events::describe();
                let refresh = {
                    let checkpoint_ms = checkpoint_ms.clone();
                    let board = board.clone();
                    let handle = handle.clone();
                    let shown = shown.clone();
                    Box::new(move || refresh(&checkpoint_ms, &board, &handle, &shown))
                };
                let server = server::serve(addr, handle, health.clone(), Some(refresh))?;
                tracing::info!(address = %server.local_addr(), "serving /metrics, /healthz and /readyz");
                Some(server)
            }
        };
        Ok(Watch {
            health,
            checkpoint_ms,
            board,
            shown,
            _server: server,
        })
    }

    /// The checkpoint was just written.
    pub(crate) fn checkpoint_stored(&self) {
        self.checkpoint_ms.store(unix_ms(), Ordering::Relaxed);
    }

    /// The stream source's board of this pass, if any.
    pub(crate) fn board(&self) -> Option<Arc<ShardBoard>> {
        self.board.lock().ok().and_then(|b| b.clone())
    }

    /// The tables this process reads now (under `[coordination]`, those it
    /// holds): the figures of any other, last shown while no source runs,
    /// are dropped rather than aged, since another process reads it.
    pub(crate) fn reading<'t>(&self, tables: impl IntoIterator<Item = &'t String>) {
        let tables: Vec<&String> = tables.into_iter().collect();
        let mut shown = self.shown.lock().unwrap_or_else(|e| e.into_inner());
        shown.tables.retain(|t| tables.contains(&&t.table));
    }

    /// The stream source of this pass (`None` when it ended).
    pub(crate) fn set_board(&self, board: Option<Arc<ShardBoard>>) {
        if let Ok(mut slot) = self.board.lock() {
            *slot = board;
        }
    }
}

/// The tables' lag and time to data loss last shown, and when.
#[derive(Default)]
struct Shown {
    at_ms: u64,
    tables: Vec<TableHealth>,
}

/// Sets the gauges that depend on the time of the scrape.
fn refresh(
    checkpoint_ms: &AtomicU64,
    board: &Mutex<Option<Arc<ShardBoard>>>,
    handle: &Handle,
    shown: &Mutex<Shown>,
) {
    let now = unix_ms();
    let age = now.saturating_sub(checkpoint_ms.load(Ordering::Relaxed));
    metrics::gauge!(CHECKPOINT_AGE).set(age as f64 / 1000.0);
    let board = board.lock().ok().and_then(|b| b.clone());
    let mut shown = shown.lock().unwrap_or_else(|e| e.into_inner());
    let tables = match board {
        Some(board) => board.snapshot(i64::try_from(now).unwrap_or(i64::MAX)),
        None => aged(&shown.tables, now.saturating_sub(shown.at_ms)),
    };
    // A table no longer read here (its lease moved to another process)
    // shows no figures, rather than its last ones for ever.
    for name in [SOURCE_LAG, TIME_TO_DATA_LOSS] {
        handle.forget_gauges(name, "table", |t| tables.iter().any(|h| h.table == t));
    }
    for t in &tables {
        metrics::gauge!(SOURCE_LAG, "table" => t.table.clone()).set(t.lag_seconds);
        metrics::gauge!(TIME_TO_DATA_LOSS, "table" => t.table.clone())
            .set(t.time_to_data_loss_seconds);
    }
    *shown = Shown { at_ms: now, tables };
}

/// The figures `elapsed_ms` after `tables` were seen, with nothing read
/// meanwhile (no source runs: between passes, or while a failure is waited
/// out): the lag grows and the time to data loss shrinks by that much,
/// rather than staying where they were while retention runs out.
fn aged(tables: &[TableHealth], elapsed_ms: u64) -> Vec<TableHealth> {
    let elapsed = elapsed_ms as f64 / 1000.0;
    tables
        .iter()
        .map(|t| TableHealth {
            table: t.table.clone(),
            lag_seconds: t.lag_seconds + elapsed,
            time_to_data_loss_seconds: (t.time_to_data_loss_seconds - elapsed)
                .clamp(0.0, RETENTION_SECONDS),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(table: &str) -> TableHealth {
        TableHealth {
            table: table.into(),
            lag_seconds: 10.0,
            time_to_data_loss_seconds: 100.0,
        }
    }

    #[test]
    fn a_table_no_longer_read_here_drops_out_instead_of_aging() {
        let recorder = recorder::PrometheusRecorder::new();
        let handle = recorder.handle();
        let watch = Watch::start(None).unwrap();
        *watch.shown.lock().unwrap() = Shown {
            at_ms: unix_ms(),
            tables: vec![health("items"), health("orders")],
        };
        let scrape = || {
            metrics::with_local_recorder(&recorder, || {
                refresh(&watch.checkpoint_ms, &watch.board, &handle, &watch.shown);
            });
            handle.render()
        };
        let text = scrape();
        assert!(
            text.contains(r#"time_to_data_loss_seconds{table="orders"}"#),
            "{text}"
        );
        // Its lease moved to another process: no pass, no board.
        watch.reading(&["items".to_owned()]);
        let text = scrape();
        assert!(!text.contains(r#"table="orders""#), "{text}");
        assert!(
            text.contains(r#"time_to_data_loss_seconds{table="items"}"#),
            "{text}"
        );
        watch.reading(&[]);
        assert!(!scrape().contains("table="));
    }

    #[test]
    fn with_no_source_running_lag_grows_and_time_to_data_loss_shrinks() {
        let seen = [TableHealth {
            table: "orders".into(),
            lag_seconds: 10.0,
            time_to_data_loss_seconds: 100.0,
        }];
        let later = aged(&seen, 30_000);
        assert_eq!(later[0].table, "orders");
        assert_eq!(later[0].lag_seconds, 40.0);
        assert_eq!(later[0].time_to_data_loss_seconds, 70.0);
        assert_eq!(aged(&later, 500_000)[0].time_to_data_loss_seconds, 0.0);
    }
}
