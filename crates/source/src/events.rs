//! The source's internal events. Each event is the one place that writes
//! its log line and counts its metric, so the two never drift apart.
//!
//! Metrics go through the `metrics` facade; the binary installs the
//! exporter. Labels are bounded (the call, how it ended): never shard ids or
//! sequence numbers. [`describe`] registers the help texts.

use std::time::{Duration, Instant};

use dynamo_cdc_core::{OutageLine, SharedOutage};

use crate::streams::api::{ApiError, ApiErrorKind};

/// Calls made to DynamoDB Streams and DynamoDB, by `api` (`DescribeStream`,
/// `GetShardIterator`, `GetRecords`, `DescribeTable`) and `result` (`ok`,
/// `throttled`, `error`).
pub const REQUESTS_TOTAL: &str = "dynamo_cdc_source_requests_total";

/// Failed calls retried after a backoff (throttling, 5xx, timeouts), by `api`.
pub const RETRIES_TOTAL: &str = "dynamo_cdc_source_retries_total";

/// Items a snapshot read, by `table` (rows kept and rows the stream made
/// redundant alike).
pub const SNAPSHOT_ITEMS_TOTAL: &str = "dynamo_cdc_snapshot_items_total";

/// A snapshot's Scan segments, by `table` and `state` (`pending`, `done`).
pub const SNAPSHOT_SEGMENTS: &str = "dynamo_cdc_snapshot_segments";

/// Read capacity units a snapshot's Scan consumed so far, by `table` (a
/// gauge: the units come in fractions, and a resumed snapshot goes on from
/// its recorded total).
pub const SNAPSHOT_CONSUMED_RCU: &str = "dynamo_cdc_snapshot_consumed_rcu";

/// Registers the help text of every metric this crate writes. Call once,
/// after installing the recorder.
pub fn describe() {
    metrics::describe_counter!(
        REQUESTS_TOTAL,
        "Calls to DynamoDB Streams and DynamoDB by api (DescribeStream, GetShardIterator, \
         GetRecords, DescribeTable) and result (ok, throttled, error)"
    );
    metrics::describe_counter!(
        RETRIES_TOTAL,
        "Failed calls retried after a backoff (throttling, server errors, timeouts), by api"
    );
    metrics::describe_counter!(
        SNAPSHOT_ITEMS_TOTAL,
        "Items a snapshot read, by table (rows delivered and rows the stream already covered)"
    );
    metrics::describe_gauge!(
        SNAPSHOT_SEGMENTS,
        "A snapshot's Scan segments by table and state (pending, done)"
    );
    metrics::describe_gauge!(
        SNAPSHOT_CONSUMED_RCU,
        "Read capacity units a snapshot's Scan consumed so far, by table"
    );
}

/// A snapshot released a page: counted per table.
pub(crate) struct SnapshotPageReleased<'a> {
    pub(crate) table: &'a str,
    pub(crate) items: u64,
    pub(crate) consumed_so_far: f64,
    pub(crate) segments_done: usize,
    pub(crate) segments: usize,
}

impl SnapshotPageReleased<'_> {
    pub(crate) fn emit(&self) {
        let table = self.table.to_owned();
        metrics::counter!(SNAPSHOT_ITEMS_TOTAL, "table" => table.clone()).increment(self.items);
        metrics::gauge!(SNAPSHOT_CONSUMED_RCU, "table" => table.clone()).set(self.consumed_so_far);
        let done = self.segments_done as f64;
        metrics::gauge!(SNAPSHOT_SEGMENTS, "table" => table.clone(), "state" => "done").set(done);
        metrics::gauge!(SNAPSHOT_SEGMENTS, "table" => table, "state" => "pending")
            .set(self.segments as f64 - done);
    }
}

/// A call the source makes: the `api` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Request {
    DescribeStream,
    GetShardIterator,
    GetRecords,
    DescribeTable,
    Scan,
    DescribeContinuousBackups,
    ExportTableToPointInTime,
    DescribeExport,
}

impl Request {
    /// The API's name, as AWS spells it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Request::DescribeStream => "DescribeStream",
            Request::GetShardIterator => "GetShardIterator",
            Request::GetRecords => "GetRecords",
            Request::DescribeTable => "DescribeTable",
            Request::Scan => "Scan",
            Request::DescribeContinuousBackups => "DescribeContinuousBackups",
            Request::ExportTableToPointInTime => "ExportTableToPointInTime",
            Request::DescribeExport => "DescribeExport",
        }
    }
}

/// How a call ended: the `result` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CallResult {
    Ok,
    Throttled,
    Error,
}

impl CallResult {
    pub(crate) fn of<T>(result: &Result<T, ApiError>) -> Self {
        match result {
            Ok(_) => CallResult::Ok,
            Err(e) if e.kind == ApiErrorKind::Throttled => CallResult::Throttled,
            Err(_) => CallResult::Error,
        }
    }

    fn label(self) -> &'static str {
        match self {
            CallResult::Ok => "ok",
            CallResult::Throttled => "throttled",
            CallResult::Error => "error",
        }
    }
}

/// A call came back, well or not. Counted, not logged: what a failure
/// means is for the caller to say (see [`ShardCallRetried`]).
pub(crate) struct RequestAnswered {
    pub(crate) request: Request,
    pub(crate) result: CallResult,
}

impl RequestAnswered {
    pub(crate) fn emit(&self) {
        metrics::counter!(
            REQUESTS_TOTAL,
            "api" => self.request.name(),
            "result" => self.result.label()
        )
        .increment(1);
    }
}

/// A shard's call (GetShardIterator, GetRecords) failed in a way that may
/// pass; the reader backs off and tries again.
pub(crate) struct ShardCallRetried<'a> {
    pub(crate) table: &'a str,
    pub(crate) shard: &'a str,
    pub(crate) error: &'a ApiError,
}

impl ShardCallRetried<'_> {
    /// Counts the retry; the line is for debugging (what operators see is
    /// the outage, once: see [`Service`]).
    pub(crate) fn emit(&self) {
        tracing::debug!(table = %self.table, shard = %self.shard, error = %self.error, "retrying");
        metrics::counter!(RETRIES_TOTAL, "api" => self.error.operation).increment(1);
    }
}

/// A DescribeStream call failed in a way that may pass; the listing backs
/// off and tries again.
pub(crate) struct ListingRetried<'a> {
    pub(crate) stream: &'a str,
    pub(crate) error: &'a ApiError,
}

impl ListingRetried<'_> {
    pub(crate) fn emit(&self) {
        tracing::debug!(stream = %self.stream, error = %self.error, "retrying DescribeStream");
        metrics::counter!(RETRIES_TOTAL, "api" => self.error.operation).increment(1);
    }
}

/// A service whose failing calls are logged as one outage for all its
/// callers (`core::SharedOutage`): when the first call fails, at most every
/// 30 s while any caller is still retrying, and when the last one is
/// answered. A line per retry would be one per shard (or Scan segment)
/// every few seconds.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Service {
    /// DynamoDB Streams, for the stream source's readers and listings.
    Streams,
    /// DynamoDB's Scan, for a snapshot's segments.
    Scan,
}

impl Service {
    /// A caller's call failed at `now` and will be retried; logs the
    /// outage's line when one is due (`at` says where) and returns it.
    pub(crate) fn failed(
        self,
        outage: &SharedOutage,
        caller: &mut bool,
        now: Instant,
        error: &ApiError,
        at: impl FnOnce() -> String,
    ) -> Option<OutageLine> {
        let line = outage.failed(caller, now)?;
        self.log(line, &at(), Some(error), outage.failing());
        Some(line)
    }

    /// A caller got an answer at `now`; logs the outage's end when it was
    /// the last caller failing, and returns that line.
    pub(crate) fn answered(
        self,
        outage: &SharedOutage,
        caller: &mut bool,
        now: Instant,
    ) -> Option<OutageLine> {
        let line = outage.answered(caller, now)?;
        self.log(line, "", None, 0);
        Some(line)
    }

    fn log(self, line: OutageLine, at: &str, error: Option<&ApiError>, retrying: usize) {
        let (what, verb) = match self {
            Service::Streams => ("DynamoDB Streams calls", "are"),
            Service::Scan => ("the snapshot's Scan", "is"),
        };
        let error = error.map(ToString::to_string).unwrap_or_default();
        match line {
            OutageLine::Down => tracing::warn!(
                at,
                error = %error,
                "{what} {verb} failing; retrying with backoff (logged again every 30 s while it lasts)"
            ),
            OutageLine::StillDown(d) => tracing::warn!(
                failing_for_s = d.as_secs(),
                retrying,
                at,
                error = %error,
                "{what} still failing; retrying"
            ),
            // At the level of the line that said it started.
            OutageLine::Back(d) => {
                tracing::warn!(failed_for_s = secs(d), "{what} answered again");
            }
        }
    }
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use dynamo_cdc_testkit::metrics::Counters;

    fn failure(kind: ApiErrorKind) -> ApiError {
        ApiError {
            kind,
            operation: Request::GetRecords.name(),
            message: "LimitExceededException: slow down".into(),
        }
    }

    #[test]
    fn answers_are_counted_by_api_and_result() {
        let counters = Counters::default();
        metrics::with_local_recorder(&counters, || {
            for result in [
                Ok(()),
                Ok(()),
                Err(failure(ApiErrorKind::Throttled)),
                Err(failure(ApiErrorKind::ExpiredIterator)),
            ] {
                RequestAnswered {
                    request: Request::GetRecords,
                    result: CallResult::of(&result),
                }
                .emit();
            }
            let error = failure(ApiErrorKind::Throttled);
            ShardCallRetried {
                table: "orders",
                shard: "shardId-1",
                error: &error,
            }
            .emit();
        });
        let requests = |result: &str| {
            counters.get(&format!(
                "{REQUESTS_TOTAL}{{api=GetRecords,result={result}}}"
            ))
        };
        assert_eq!(requests("ok"), 2);
        assert_eq!(requests("throttled"), 1);
        assert_eq!(requests("error"), 1);
        assert_eq!(
            counters.get(&format!("{RETRIES_TOTAL}{{api=GetRecords}}")),
            1
        );
    }

    #[test]
    fn every_metric_has_help() {
        let counters = Counters::default();
        metrics::with_local_recorder(&counters, describe);
        for name in [REQUESTS_TOTAL, RETRIES_TOTAL] {
            assert!(counters.help(name).is_some_and(|h| !h.is_empty()), "{name}");
        }
    }
}
