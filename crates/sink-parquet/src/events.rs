//! What the sink reports: each event writes its log line and moves its
//! metrics, so the two never disagree.

/// Files committed (made visible) by the Parquet sink.
pub const FILES_COMMITTED: &str = "dynamo_cdc_parquet_files_committed_total";
/// Commits that found their name taken by another writer, per sink.
pub const FENCE_COLLISIONS: &str = "dynamo_cdc_fence_collisions_total";
/// Changes made durable, per sink and table (shared with every sink).
pub(crate) const CHANGES_DELIVERED: &str = "dynamo_cdc_changes_delivered_total";

/// Registers the help text of this crate's metrics.
pub fn describe() {
    metrics::describe_counter!(FILES_COMMITTED, "Parquet files committed (made visible).");
    metrics::describe_counter!(
        FENCE_COLLISIONS,
        "Commits refused because another writer committed the same range first."
    );
}

/// A file became visible: its rows are durable.
pub(crate) struct FileCommitted<'a> {
    /// The file or object, for people.
    pub file: &'a str,
    pub table: &'a str,
    pub rows: u64,
    pub bytes: u64,
}

impl FileCommitted<'_> {
    pub(crate) fn emit(self) {
        tracing::debug!(
            file = self.file,
            rows = self.rows,
            bytes = self.bytes,
            "committed"
        );
        metrics::counter!(FILES_COMMITTED).increment(1);
        metrics::counter!(CHANGES_DELIVERED, "sink" => "parquet", "table" => self.table.to_owned())
            .increment(self.rows);
    }
}

/// A commit found its name taken: another writer continued the shard from
/// the same position and committed first. This sink's files of the shard
/// are dropped; the run starts over from the committed positions.
pub(crate) struct CommitCollided<'a> {
    /// The file or object, for people.
    pub file: &'a str,
    pub table: &'a str,
    pub shard: &'a str,
}

impl CommitCollided<'_> {
    pub(crate) fn emit(self) {
        tracing::warn!(
            file = self.file,
            table = self.table,
            shard = self.shard,
            "another writer committed this range first; dropping this shard's files"
        );
        metrics::counter!(FENCE_COLLISIONS, "sink" => "parquet").increment(1);
    }
}
