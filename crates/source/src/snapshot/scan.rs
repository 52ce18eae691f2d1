//! The parallel Scan: one task per segment, each paging from where its
//! segment stands, all sharing one budget of read capacity per second.
//!
//! The budget is charged what each answer says it consumed
//! (`ReturnConsumedCapacity`), not a count of items: a page of large items
//! costs more than a page of small ones, and it is the table's capacity
//! that other readers and writers share.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dynamo_cdc_core::{Item, SharedOutage};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::events::Service;
use crate::snapshot::api::{ScanPage, ScanRequest, TableApi};
use crate::streams::api::ApiError;
use crate::streams::now_ms;

/// Read capacity per second, shared by every segment of a table.
#[derive(Debug)]
pub(crate) struct Budget {
    per_second: f64,
    next_free: Mutex<Instant>,
}

impl Budget {
    pub(crate) fn new(per_second: f64) -> Self {
        Budget {
            per_second: per_second.max(0.001),
            next_free: Mutex::new(Instant::now()),
        }
    }

    fn next_free(&self) -> Instant {
        *self
            .next_free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until the capacity spent so far is paid off.
    async fn wait(&self) {
        loop {
            let at = self.next_free();
            if at <= Instant::now() {
                return;
            }
            tokio::time::sleep_until(at).await;
        }
    }

    /// Charges `units`: the next call waits `units / per_second` longer.
    fn spend(&self, units: f64) {
        let mut at = self
            .next_free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        let cost = Duration::from_secs_f64((units / self.per_second).clamp(0.0, 3_600.0));
        *at = (*at).max(now) + cost;
    }
}

/// What a segment task sends.
#[derive(Debug)]
pub(crate) enum Scanned {
    /// A page, with when it was asked for and answered.
    Page {
        segment: u32,
        asked_ms: i64,
        answered_ms: i64,
        page: ScanPage,
    },
    /// A call failed in a way waiting does not fix.
    Failed(ApiError),
}

/// One segment's task.
pub(crate) struct Segment<A> {
    pub(crate) api: Arc<A>,
    pub(crate) request: ScanRequest,
    pub(crate) budget: Arc<Budget>,
    /// The Scan's outage, shared by the table's segments (logged once).
    pub(crate) trouble: Arc<SharedOutage>,
    pub(crate) out: mpsc::Sender<Scanned>,
    pub(crate) stop: watch::Receiver<bool>,
}

impl<A: TableApi> Segment<A> {
    /// Pages through the segment from `request.exclusive_start` to its end.
    pub(crate) async fn run(mut self) {
        let mut attempt = 0u32;
        let mut troubled = false;
        loop {
            tokio::select! {
                () = self.budget.wait() => {}
                _ = self.stop.changed() => return,
            }
            if *self.stop.borrow() {
                return;
            }
            let asked_ms = now_ms();
            let answer = tokio::select! {
                a = self.api.scan(&self.request) => a,
                _ = self.stop.changed() => return,
            };
            match answer {
                Ok(page) => {
                    attempt = 0;
                    Service::Scan.answered(&self.trouble, &mut troubled, std::time::Instant::now());
                    self.budget.spend(page.consumed);
                    let next: Option<Item> = page.last_key.clone();
                    let sent = self.out.send(Scanned::Page {
                        segment: self.request.segment,
                        asked_ms,
                        answered_ms: now_ms(),
                        page,
                    });
                    if sent.await.is_err() {
                        return;
                    }
                    match next {
                        Some(key) => self.request.exclusive_start = Some(key),
                        None => return,
                    }
                }
                Err(e) if e.is_retryable() => {
                    tracing::debug!(table = %self.request.table, segment = self.request.segment, error = %e, "Scan failed; retrying");
                    let table = &self.request.table;
                    Service::Scan.failed(
                        &self.trouble,
                        &mut troubled,
                        std::time::Instant::now(),
                        &e,
                        || format!("table {table}"),
                    );
                    let wait = Duration::from_millis(100u64 << attempt.min(6));
                    attempt += 1;
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        _ = self.stop.changed() => return,
                    }
                }
                Err(e) => {
                    let _ = self.out.send(Scanned::Failed(e)).await;
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_charges_consumed_capacity() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let budget = Budget::new(1_000.0);
            // Nothing spent yet: the first call goes at once.
            assert!(budget.next_free() <= Instant::now());
            budget.spend(100.0);
            let charged = budget.next_free() - Instant::now();
            assert!(charged > Duration::from_millis(90) && charged <= Duration::from_millis(100));
            let start = Instant::now();
            budget.wait().await;
            assert!(Instant::now() - start >= Duration::from_millis(90));
            budget.spend(100.0);
            budget.spend(100.0);
            assert!(budget.next_free() - Instant::now() > Duration::from_millis(190));
        });
    }
}
