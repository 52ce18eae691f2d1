//! The seams between sources, sinks and the pipeline that drives them.

use serde::Serialize;

use crate::change::Change;
use crate::position::Positions;

/// A record that could not be delivered, kept with where it came from and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// The file the record was read from, or the stream ARN.
    pub origin: String,
    /// 1-based line in `origin`, for line-oriented captures. Every key is
    /// written, as null when unknown, so the files read as one table.
    pub line: Option<u64>,
    /// 0-based index of the record within its page, when the line held a page.
    pub record_index: Option<usize>,
    /// Table, when it could be told.
    pub table: Option<String>,
    /// Shard, when it could be told.
    pub shard: Option<String>,
    /// Sequence number, when it could be read.
    pub sequence_number: Option<String>,
    /// What was wrong.
    pub error: String,
    /// The record as it was read (possibly not JSON at all).
    pub raw: String,
}

impl DeadLetter {
    /// Identifies the record across runs, so that a rerun does not dead-letter
    /// the same record twice.
    pub fn identity(&self) -> String {
        let table = self.table.as_deref().unwrap_or("");
        match (&self.shard, &self.sequence_number) {
            (Some(shard), Some(seq)) => format!("seq:{table}/{shard}:{seq}"),
            // Without a sequence number, the place and the content tell
            // records apart (two bad documents may share a line).
            _ => format!(
                "at:{}:{}:{}:{:016x}",
                self.origin,
                self.line.unwrap_or(0),
                self.record_index
                    .map_or_else(|| "-".to_owned(), |i| i.to_string()),
                fnv1a(self.raw.as_bytes())
            ),
        }
    }
}

/// Changes that can no longer be read: a stream trimmed them (24-hour
/// retention) before they were delivered. Recorded, never silently skipped,
/// when the source is told to go on past such a gap.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Gap {
    /// Table of the stream.
    pub table: String,
    /// Shard with the lost records.
    pub shard: String,
    /// The last sequence number delivered before the gap; `None` when
    /// nothing of the shard had been delivered.
    pub after: Option<String>,
    /// The first sequence number read after the gap, when one was read.
    pub resumed_at: Option<String>,
    /// When the gap was found, in milliseconds since the Unix epoch.
    pub detected_at_ms: i64,
    /// What was found, as the service said it.
    pub reason: String,
}

impl Gap {
    /// Identifies the gap across runs, so that a restart before the position
    /// moves on does not record it twice.
    pub fn identity(&self) -> String {
        format!(
            "gap:{}/{}:{}",
            self.table,
            self.shard,
            self.after.as_deref().unwrap_or("start")
        )
    }
}

/// Where a change was read, kept beside it so that a sink's rejection can
/// still name the file and line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The file the record was read from, or the stream ARN.
    pub origin: std::sync::Arc<str>,
    /// 1-based line, for line-oriented captures.
    pub line: Option<u64>,
    /// 0-based index within the page.
    pub record_index: Option<usize>,
}

/// FNV-1a: a stable hash (the same in every run and build).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What a source hands to the pipeline: changes in stream order per shard,
/// and the records it could not read.
#[derive(Debug, Default)]
pub struct SourceBatch {
    /// Changes, in order within each shard.
    pub changes: Vec<Change>,
    /// Where each change was read (same length and order as `changes`).
    pub origins: Vec<Origin>,
    /// Records that could not be parsed.
    pub dead_letters: Vec<DeadLetter>,
    /// Ranges the source skipped because they were lost (see [`Gap`]); they
    /// precede `changes` of the same shard.
    pub gaps: Vec<Gap>,
}

impl SourceBatch {
    /// True when the batch carries nothing at all (a heartbeat).
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.dead_letters.is_empty() && self.gaps.is_empty()
    }
}

/// Reads changes, batch at a time.
pub trait Source: Send {
    /// What can go wrong while reading.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The next batch, or `None` once the source is exhausted.
    ///
    /// # Errors
    /// When reading fails as a whole (I/O, lost data); bad records are not
    /// errors but dead letters in the batch.
    fn next_batch(&mut self) -> Result<Option<SourceBatch>, Self::Error>;
}

/// A change a sink could not encode or accept; it goes to the dead-letter path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// Index of the change in the batch given to [`Sink::write`].
    pub index: usize,
    /// Why it was rejected, naming the attribute where possible.
    pub error: String,
}

/// Delivers changes somewhere durable and says how far it got.
pub trait Sink: Send {
    /// What can go wrong while writing.
    type Error: std::error::Error + Send + Sync + 'static;

    /// A short name used in logs, the summary and the checkpoint file.
    fn name(&self) -> &str;

    /// Positions that are durable in this sink. Grows only after a commit.
    fn durable_positions(&self) -> &Positions;

    /// Takes a batch. Changes this sink already holds are dropped; changes it
    /// cannot encode are returned as rejects and the rest is written.
    ///
    /// # Errors
    /// When the sink cannot write at all.
    fn write(&mut self, changes: &[Change]) -> Result<Vec<Rejected>, Self::Error>;

    /// Records a gap durably before any change after it is written.
    ///
    /// # Errors
    /// When the record cannot be made durable.
    fn record_gap(&mut self, gap: &Gap) -> Result<(), Self::Error>;

    /// Commits what is due by age; called periodically.
    ///
    /// # Errors
    /// When a commit fails.
    fn poll(&mut self) -> Result<(), Self::Error>;

    /// Commits everything buffered.
    ///
    /// # Errors
    /// When a commit fails.
    fn flush(&mut self) -> Result<(), Self::Error>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(table: &str, seq: Option<&str>, raw: &str) -> DeadLetter {
        DeadLetter {
            origin: "cap/s1.jsonl".into(),
            line: Some(3),
            record_index: None,
            table: Some(table.into()),
            shard: Some("s1".into()),
            sequence_number: seq.map(str::to_owned),
            error: "bad".into(),
            raw: raw.into(),
        }
    }

    #[test]
    fn identities_tell_tables_and_documents_apart() {
        assert_ne!(
            letter("orders", Some("100"), "x").identity(),
            letter("users", Some("100"), "x").identity()
        );
        assert_ne!(
            letter("t", None, "{bad1}").identity(),
            letter("t", None, "{bad2}").identity()
        );
        assert_eq!(
            letter("t", None, "{bad1}").identity(),
            letter("t", None, "{bad1}").identity()
        );
    }
}
