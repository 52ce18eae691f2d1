//! What the sink reports: each event writes its log line and moves its
//! metrics, so the two never disagree.

use std::collections::BTreeMap;

/// Snapshots committed by the Iceberg sink.
pub const COMMITS: &str = "dynamo_cdc_iceberg_commits_total";
/// Data files added by those snapshots.
pub const FILES_COMMITTED: &str = "dynamo_cdc_iceberg_files_committed_total";
/// Commits that found another writer had committed first.
pub const CONFLICTS: &str = "dynamo_cdc_iceberg_commit_conflicts_total";
/// Changes made durable, per sink and table (shared with every sink).
const CHANGES_DELIVERED: &str = "dynamo_cdc_changes_delivered_total";

/// Registers the help text of this crate's metrics.
pub fn describe() {
    metrics::describe_counter!(COMMITS, "Iceberg snapshots committed.");
    metrics::describe_counter!(FILES_COMMITTED, "Data files added to Iceberg tables.");
    metrics::describe_counter!(
        CONFLICTS,
        "Iceberg commits that found another writer had committed first."
    );
}

/// What this process last said of each thing it announces (a table ready
/// at a snapshot, a signing proxy's endpoint). A pass that fails is retried
/// with a new sink; saying the same again on every retry of an outage
/// would bury the outage's own lines.
static SAID: std::sync::Mutex<BTreeMap<String, String>> = std::sync::Mutex::new(BTreeMap::new());

/// Whether `state` is news for `what`: the first time this process says
/// it, or it changed since. Remembers it.
pub(crate) fn is_news(what: &str, state: String) -> bool {
    let mut said = SAID
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if said.get(what) == Some(&state) {
        return false;
    }
    said.insert(what.to_owned(), state);
    true
}

/// A table was loaded (or created) and its position read.
pub(crate) struct Ready<'a> {
    pub table: &'a str,
    /// Shards with a position in the table.
    pub shards: usize,
    pub snapshot: Option<i64>,
}

impl Ready<'_> {
    pub(crate) fn emit(self) {
        let state = format!("{:?} {}", self.snapshot, self.shards);
        if is_news(&format!("table {}", self.table), state) {
            tracing::info!(
                table = self.table,
                shards = self.shards,
                snapshot = self.snapshot,
                "Iceberg table ready"
            );
        } else {
            tracing::debug!(
                table = self.table,
                shards = self.shards,
                snapshot = self.snapshot,
                "Iceberg table ready (unchanged)"
            );
        }
    }
}

/// A snapshot was committed: its rows are durable.
pub(crate) struct Committed<'a> {
    /// The Iceberg table.
    pub table: &'a str,
    /// The DynamoDB table.
    pub source_table: &'a str,
    pub snapshot: Option<i64>,
    pub files: u64,
    pub rows: u64,
    pub bytes: u64,
}

impl Committed<'_> {
    pub(crate) fn emit(self) {
        tracing::info!(
            table = self.table,
            snapshot = self.snapshot,
            files = self.files,
            rows = self.rows,
            bytes = self.bytes,
            "committed to Iceberg"
        );
        metrics::counter!(COMMITS).increment(1);
        metrics::counter!(FILES_COMMITTED).increment(self.files);
        metrics::counter!(CHANGES_DELIVERED, "sink" => "iceberg", "table" => self.source_table.to_owned())
            .increment(self.rows);
    }
}

/// Another writer committed first.
pub(crate) struct Conflict<'a> {
    pub table: &'a str,
    /// Whether its positions covered changes this sink was committing.
    pub overlapped: bool,
}

impl Conflict<'_> {
    pub(crate) fn emit(self) {
        if self.overlapped {
            tracing::warn!(
                table = self.table,
                "another writer committed the same changes first: dropping the uncommitted data files"
            );
        } else {
            tracing::info!(
                table = self.table,
                "another writer committed other shards meanwhile: committing on top"
            );
        }
        metrics::counter!(CONFLICTS).increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retried_pass_does_not_say_again_what_an_earlier_one_said() {
        assert!(is_news("table test.news", "Some(1) 2".into()));
        assert!(!is_news("table test.news", "Some(1) 2".into()));
        assert!(is_news("table test.news", "Some(2) 2".into()));
        assert!(is_news("table test.other", "Some(2) 2".into()));
        assert!(!is_news("table test.news", "Some(2) 2".into()));
    }
}
