//! What the run loop reports. Each event writes its log line and moves its
//! metrics, so the two never disagree. Metric names are stable: dashboards
//! and alerts depend on them.

use std::time::Duration;

use dynamo_cdc_core::{DeadLetter, Gap, OutageLine};

/// Changes read from the source, per table and op letter.
pub(crate) const CHANGES_READ: &str = "dynamo_cdc_changes_read_total";
/// Changes made durable, per sink and table (counted by the sinks).
pub(crate) const CHANGES_DELIVERED: &str = "dynamo_cdc_changes_delivered_total";
/// Records written to the dead-letter store, per table.
pub(crate) const DEAD_LETTERS: &str = "dynamo_cdc_dead_letters_total";
/// Gaps (trimmed ranges) recorded, per table.
pub(crate) const GAPS: &str = "dynamo_cdc_gaps_total";
/// Times a sink could not write and the run paused, per sink.
pub(crate) const SINK_PAUSES: &str = "dynamo_cdc_sink_pauses_total";
/// Seconds since positions were last recorded.
pub(crate) const CHECKPOINT_AGE: &str = "dynamo_cdc_checkpoint_age_seconds";
/// now - creation time of the newest change delivered, per table.
pub(crate) const SOURCE_LAG: &str = "dynamo_cdc_source_lag_seconds";
/// 86400 - age of the oldest unread change, per table.
pub(crate) const TIME_TO_DATA_LOSS: &str = "dynamo_cdc_time_to_data_loss_seconds";

/// Times a pass stopped writing because a lease was gone or overdue.
pub(crate) const FENCED_PASSES: &str = "dynamo_cdc_fenced_passes_total";

/// Registers the help text of every metric the binary serves.
pub(crate) fn describe() {
    metrics::describe_counter!(
        CHANGES_READ,
        "Changes read from the source, by table and op (c, u, d, r)."
    );
    metrics::describe_counter!(
        CHANGES_DELIVERED,
        "Changes made durable, by sink and table."
    );
    metrics::describe_counter!(DEAD_LETTERS, "Records written to the dead-letter store.");
    metrics::describe_counter!(
        GAPS,
        "Ranges of records trimmed before delivery (on_gap = skip)."
    );
    metrics::describe_counter!(
        SINK_PAUSES,
        "Times a sink could not write; the run paused and went on from its last commit."
    );
    metrics::describe_gauge!(
        CHECKPOINT_AGE,
        "Seconds since the positions were last recorded."
    );
    metrics::describe_gauge!(
        SOURCE_LAG,
        "Seconds between now and the creation of the newest change delivered (max over shards; 0 when caught up)."
    );
    metrics::describe_gauge!(
        TIME_TO_DATA_LOSS,
        "Seconds left before the oldest unread change falls out of the stream's 24-hour retention (min over shards)."
    );
    metrics::describe_counter!(
        FENCED_PASSES,
        "Times writing stopped because a table's lease was gone or overdue ([coordination])."
    );
    dynamo_cdc_lease::describe();
    dynamo_cdc_sink_parquet::describe();
    dynamo_cdc_sink_kafka::describe();
    dynamo_cdc_sink_iceberg::describe();
}

/// Changes of one table and op read in one batch.
pub(crate) struct ChangesRead<'a> {
    pub table: &'a str,
    pub op: &'static str,
    pub count: u64,
}

impl ChangesRead<'_> {
    pub(crate) fn emit(self) {
        metrics::counter!(CHANGES_READ, "table" => self.table.to_owned(), "op" => self.op)
            .increment(self.count);
    }
}

/// A record went to the dead-letter store.
pub(crate) struct DeadLettered<'a>(pub &'a DeadLetter);

impl DeadLettered<'_> {
    pub(crate) fn emit(self) {
        let l = self.0;
        tracing::warn!(
            origin = %l.origin,
            line = l.line,
            record = l.record_index,
            table = l.table.as_deref(),
            sequence_number = l.sequence_number.as_deref(),
            error = %l.error,
            "dead-lettered"
        );
        let table = l.table.clone().unwrap_or_default();
        metrics::counter!(DEAD_LETTERS, "table" => table).increment(1);
    }
}

/// A gap was recorded (the source logged it when it found it).
pub(crate) struct GapRecorded<'a>(pub &'a Gap);

impl GapRecorded<'_> {
    pub(crate) fn emit(self) {
        let g = self.0;
        tracing::error!(
            table = %g.table,
            shard = %g.shard,
            after = g.after.as_deref().unwrap_or("the start"),
            resumed_at = g.resumed_at.as_deref(),
            "records were lost before delivery; a gap record was kept"
        );
        metrics::counter!(GAPS, "table" => g.table.clone()).increment(1);
    }
}

/// A sink (or the checkpoint or dead-letter store) could not write; the
/// run pauses and starts over from the last commit. Logged as the outage
/// rule says: once, every 30 s, once back.
pub(crate) struct SinkPaused<'a> {
    pub sink: &'a str,
    pub error: &'a (dyn std::error::Error + 'static),
    pub line: Option<OutageLine>,
    pub retry_in: Duration,
}

impl SinkPaused<'_> {
    pub(crate) fn emit(self) {
        metrics::counter!(SINK_PAUSES, "sink" => self.sink.to_owned()).increment(1);
        let error = chain(self.error);
        match self.line {
            Some(OutageLine::Down) if self.sink == "source" => tracing::error!(
                sink = self.sink,
                error = %error,
                "cannot read the source; pausing, then starting over from the last commit"
            ),
            Some(OutageLine::Down) => tracing::error!(
                sink = self.sink,
                error = %error,
                "cannot write; pausing, then going on from the last commit (nothing after it is kept)"
            ),
            Some(OutageLine::StillDown(d)) => tracing::warn!(
                sink = self.sink,
                down_for_s = d.as_secs(),
                error = %error,
                "still cannot write; retrying"
            ),
            _ => tracing::debug!(
                sink = self.sink,
                retry_in_s = self.retry_in.as_secs(),
                error = %error,
                "cannot write; retrying"
            ),
        }
    }
}

/// A sink that could not write wrote again.
pub(crate) struct SinkBack<'a> {
    pub sink: &'a str,
    pub after: Duration,
}

impl SinkBack<'_> {
    pub(crate) fn emit(self) {
        let what = if self.sink == "source" {
            "reads again"
        } else {
            "writes again"
        };
        tracing::warn!(
            sink = self.sink,
            down_for_s = self.after.as_secs(),
            "{what}"
        );
    }
}

/// An error and its causes on one line.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}
