//! The dead-letter store: what could not be delivered, kept apart from every
//! sink so that a run with any mix of sinks keeps its dead letters in one
//! place.
//!
//! - Dead letters: records a source could not parse or a sink could not
//!   encode, with where they came from, why, and the raw record.
//! - Gap records: ranges of a stream that were trimmed before delivery and
//!   skipped on request (`on_gap = "skip"`).
//!
//! The local store keeps them as JSON Lines under a root directory:
//! `<root>/_dead_letter/<table>.jsonl` and `<root>/_gaps/<table>.jsonl`.
//! The object-store one ([`ObjectDeadLetters`]) writes one object per batch
//! (object stores cannot append), see its module.
//! Every entry has an identity; one already held (from this run or an
//! earlier one) is not written again, so a rerun never repeats one. Entries
//! are fsynced before a write returns, so the pipeline may move its positions
//! past them: a record is never both skipped on restart and missing here.

mod journal;
mod objects;

use std::path::{Path, PathBuf};

use dynamo_cdc_core::{DeadLetter, Gap};

use crate::journal::Journal;
pub use crate::objects::ObjectDeadLetters;
use dynamo_cdc_core::SinkError;
use dynamo_cdc_object_store::ObjectError;

/// The dead-letter directory under the root (Parquet scans skip it).
pub const DEAD_LETTER_DIR: &str = "_dead_letter";
/// The gap-record directory under the root (Parquet scans skip it).
pub const GAPS_DIR: &str = "_gaps";

/// Why the store could not keep an entry. Nothing past the entry was made
/// durable, so retrying loses nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeadLetterError {
    /// The local disk failed (full, read-only): may pass.
    #[error("cannot {action} {path}")]
    Local {
        /// what was being done
        action: &'static str,
        /// where
        path: PathBuf,
        /// the I/O error
        #[source]
        source: std::io::Error,
    },
    /// The object store failed; its class says whether it may pass.
    #[error(transparent)]
    Object(#[from] ObjectError),
}

impl DeadLetterError {
    /// Whether waiting and starting over may help: always for the disk;
    /// for an object store, unless access is denied or the bucket missing.
    pub fn is_transient(&self) -> bool {
        match self {
            DeadLetterError::Local { .. } => true,
            DeadLetterError::Object(e) => e.is_transient(),
        }
    }
}

impl From<DeadLetterError> for SinkError {
    fn from(e: DeadLetterError) -> Self {
        if e.is_transient() {
            SinkError::transient(e)
        } else {
            SinkError::fatal(e)
        }
    }
}

/// Where undeliverable records and gaps are kept.
pub trait DeadLetterStore: Send {
    /// Keeps the letters not kept before, durably; returns how many were new.
    ///
    /// # Errors
    /// When they cannot be made durable.
    fn write(&mut self, letters: &[DeadLetter]) -> Result<u64, DeadLetterError>;

    /// Whether `letter` is kept already (by this run or an earlier one), so
    /// that writing it again is not reported as a new dead letter. A store
    /// that cannot tell answers `false`.
    fn holds(&self, letter: &DeadLetter) -> bool {
        let _ = letter;
        false
    }

    /// Keeps a gap record, durably, unless it is already held; returns
    /// whether it was new.
    ///
    /// # Errors
    /// When it cannot be made durable.
    fn record_gap(&mut self, gap: &Gap) -> Result<bool, DeadLetterError>;

    /// Dead letters held, from earlier runs and this one.
    fn known(&self) -> u64;

    /// Where dead letters are, for people.
    fn location(&self) -> String;
}

/// The store on a local disk. See the crate docs for the layout.
pub struct LocalDeadLetters {
    root: PathBuf,
    letters: Journal,
    gaps: Journal,
}

impl LocalDeadLetters {
    /// Opens the store under `root`, learning what it already holds.
    ///
    /// # Errors
    /// When an existing file cannot be read.
    pub fn open(root: &Path) -> Result<Self, DeadLetterError> {
        let failed = |dir: &str| {
            let path = root.join(dir);
            move |source| DeadLetterError::Local {
                action: "read",
                path,
                source,
            }
        };
        Ok(LocalDeadLetters {
            root: root.to_owned(),
            letters: Journal::open(root, DEAD_LETTER_DIR).map_err(failed(DEAD_LETTER_DIR))?,
            gaps: Journal::open(root, GAPS_DIR).map_err(failed(GAPS_DIR))?,
        })
    }

    fn failed(&self, dir: &str) -> impl FnOnce(std::io::Error) -> DeadLetterError {
        let path = self.root.join(dir);
        move |source| DeadLetterError::Local {
            action: "write",
            path,
            source,
        }
    }
}

impl DeadLetterStore for LocalDeadLetters {
    fn write(&mut self, letters: &[DeadLetter]) -> Result<u64, DeadLetterError> {
        let mut entries = Vec::with_capacity(letters.len());
        for letter in letters {
            let id = letter.identity();
            if self.letters.holds(&id) {
                continue;
            }
            let entry = serde_json::to_value(letter)
                .map_err(std::io::Error::other)
                .map_err(self.failed(DEAD_LETTER_DIR))?;
            entries.push((letter.table.as_deref(), id, entry));
        }
        self.letters
            .append(entries)
            .map_err(self.failed(DEAD_LETTER_DIR))
    }

    fn holds(&self, letter: &DeadLetter) -> bool {
        self.letters.holds(&letter.identity())
    }

    fn record_gap(&mut self, gap: &Gap) -> Result<bool, DeadLetterError> {
        let entry = serde_json::to_value(gap)
            .map_err(std::io::Error::other)
            .map_err(self.failed(GAPS_DIR))?;
        let new = self
            .gaps
            .append([(Some(gap.table.as_str()), gap.identity(), entry)])
            .map_err(self.failed(GAPS_DIR))?;
        Ok(new > 0)
    }

    fn known(&self) -> u64 {
        self.letters.len() as u64
    }

    fn location(&self) -> String {
        self.root.join(DEAD_LETTER_DIR).display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(seq: &str) -> DeadLetter {
        DeadLetter {
            origin: "arn:aws:dynamodb:eu-west-1:1:table/orders/stream/x".into(),
            line: None,
            record_index: Some(0),
            table: Some("orders".into()),
            shard: Some("s1".into()),
            sequence_number: Some(seq.into()),
            error: "bad".into(),
            raw: "{}".into(),
        }
    }

    fn gap() -> Gap {
        Gap {
            table: "orders".into(),
            shard: "s1".into(),
            after: Some("100".into()),
            resumed_at: Some("200".into()),
            detected_at_ms: 1,
            reason: "trimmed".into(),
        }
    }

    #[test]
    fn a_rerun_keeps_each_letter_and_gap_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LocalDeadLetters::open(dir.path()).unwrap();
        assert_eq!(store.write(&[letter("1"), letter("2")]).unwrap(), 2);
        assert!(store.record_gap(&gap()).unwrap());
        drop(store);
        let mut again = LocalDeadLetters::open(dir.path()).unwrap();
        assert_eq!(again.known(), 2);
        assert!(again.holds(&letter("2")), "kept by the first run");
        assert!(!again.holds(&letter("3")));
        assert_eq!(again.write(&[letter("2"), letter("3")]).unwrap(), 1);
        assert!(again.holds(&letter("3")));
        assert!(!again.record_gap(&gap()).unwrap());
        let text = std::fs::read_to_string(dir.path().join("_dead_letter/orders.jsonl")).unwrap();
        assert_eq!(text.lines().count(), 3);
        let gaps = std::fs::read_to_string(dir.path().join("_gaps/orders.jsonl")).unwrap();
        assert_eq!(gaps.lines().count(), 1);
    }

    /// Started over from the same position after the stream trimmed more.
    fn wider_gap() -> Gap {
        Gap {
            resumed_at: Some("300".into()),
            detected_at_ms: 2,
            ..gap()
        }
    }

    #[test]
    fn a_gap_met_again_wider_is_recorded_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LocalDeadLetters::open(dir.path()).unwrap();
        assert!(store.record_gap(&gap()).unwrap());
        drop(store);
        let mut again = LocalDeadLetters::open(dir.path()).unwrap();
        assert!(!again.record_gap(&gap()).unwrap());
        assert!(again.record_gap(&wider_gap()).unwrap());
        let gaps = std::fs::read_to_string(dir.path().join("_gaps/orders.jsonl")).unwrap();
        let resumed: Vec<serde_json::Value> = gaps
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["resumed_at"].clone())
            .collect();
        assert_eq!(resumed, ["200", "300"]);

        use dynamo_cdc_object_store::{InMemory, Objects, StoreUrl};
        let objects = Objects::with_store(
            std::sync::Arc::new(InMemory::new()),
            StoreUrl::parse("s3://lake/cdc").unwrap(),
        );
        let mut store = ObjectDeadLetters::open(objects.clone()).unwrap();
        assert!(store.record_gap(&gap()).unwrap());
        drop(store);
        let mut again = ObjectDeadLetters::open(objects).unwrap();
        assert!(!again.record_gap(&gap()).unwrap());
        assert!(again.record_gap(&wider_gap()).unwrap());
    }

    #[test]
    fn on_an_object_store_a_rerun_keeps_each_letter_and_gap_once() {
        use dynamo_cdc_object_store::{InMemory, Objects, StoreUrl};
        let objects = Objects::with_store(
            std::sync::Arc::new(InMemory::new()),
            StoreUrl::parse("s3://lake/cdc").unwrap(),
        );
        let mut store = ObjectDeadLetters::open(objects.clone()).unwrap();
        assert!(!store.holds(&letter("2")));
        assert_eq!(store.write(&[letter("1"), letter("2")]).unwrap(), 2);
        assert!(store.holds(&letter("2")));
        assert_eq!(store.write(&[letter("2")]).unwrap(), 0);
        assert!(store.record_gap(&gap()).unwrap());
        assert_eq!(store.location(), "s3://lake/cdc/_dead_letter");
        drop(store);
        let mut again = ObjectDeadLetters::open(objects.clone()).unwrap();
        assert_eq!(again.known(), 2);
        assert_eq!(again.write(&[letter("2"), letter("3")]).unwrap(), 1);
        assert!(!again.record_gap(&gap()).unwrap());
        let mut names: Vec<String> = objects
            .list("")
            .unwrap()
            .iter()
            .map(|m| m.location.to_string())
            .collect();
        names.sort();
        assert_eq!(names.len(), 3, "one object per batch: {names:?}");
        assert!(
            names[0].starts_with("cdc/_dead_letter/orders/"),
            "{names:?}"
        );
        assert!(names[2].starts_with("cdc/_gaps/orders/"), "{names:?}");
        let lines: usize = names
            .iter()
            .filter(|n| n.contains("_dead_letter"))
            .map(|n| {
                let bytes = objects.read(&n.as_str().into()).unwrap();
                bytes
                    .split(|&b| b == b'\n')
                    .filter(|l| !l.is_empty())
                    .count()
            })
            .sum();
        assert_eq!(lines, 3, "each letter once");
    }

    #[test]
    fn an_unwritable_root_is_an_error_naming_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        // Found when the store is opened: the directory cannot be listed
        // for the letters it already holds.
        let Err(e) = LocalDeadLetters::open(&file) else {
            panic!("a file for a root opened as a store");
        };
        assert!(e.to_string().contains("not-a-dir/_dead_letter"), "{e}");
    }
}
