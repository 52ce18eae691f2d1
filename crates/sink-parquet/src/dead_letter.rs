//! The dead-letter path: `<root>/_dead_letter/<table>.jsonl`, one JSON object
//! per rejected record with where it came from, why, and the raw record.
//!
//! Entries are fsynced before the pipeline moves on, so a record is never both
//! skipped on restart and missing here. A record already dead-lettered by an
//! earlier run (same identity) is not written again.

use std::path::Path;

use dynamo_cdc_core::DeadLetter;

use crate::journal::Journal;
use crate::layout::DEAD_LETTER_DIR;

/// Appends dead letters under a Parquet root.
pub struct DeadLetterWriter {
    journal: Journal,
}

impl DeadLetterWriter {
    /// Opens `<root>/_dead_letter/`, learning which records it already holds.
    ///
    /// # Errors
    /// When the directory or an existing file cannot be read.
    pub fn open(root: &Path) -> std::io::Result<Self> {
        Ok(DeadLetterWriter {
            journal: Journal::open(root, DEAD_LETTER_DIR)?,
        })
    }

    /// Writes the letters not written before and fsyncs them; returns how many
    /// were new.
    ///
    /// # Errors
    /// When a file cannot be written or synced.
    pub fn write(&mut self, letters: &[DeadLetter]) -> std::io::Result<u64> {
        let mut entries = Vec::with_capacity(letters.len());
        for letter in letters {
            let id = letter.identity();
            if self.journal.holds(&id) {
                continue;
            }
            tracing::warn!(
                origin = %letter.origin,
                line = letter.line,
                record = letter.record_index,
                error = %letter.error,
                "dead-lettered"
            );
            let entry = serde_json::to_value(letter).map_err(std::io::Error::other)?;
            entries.push((letter.table.as_deref(), id, entry));
        }
        self.journal.append(entries)
    }

    /// Letters already present from earlier runs or this one.
    pub fn known(&self) -> usize {
        self.journal.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(raw: &str) -> DeadLetter {
        DeadLetter {
            origin: "cap.jsonl".into(),
            line: Some(1),
            record_index: None,
            table: Some("orders".into()),
            shard: Some("s".into()),
            sequence_number: None,
            error: "bad".into(),
            raw: raw.into(),
        }
    }

    #[test]
    fn a_torn_last_line_is_cut_and_written_again() {
        let root = tempfile::tempdir().unwrap();
        let mut w = DeadLetterWriter::open(root.path()).unwrap();
        assert_eq!(w.write(&[letter("one"), letter("two")]).unwrap(), 2);
        assert_eq!(
            w.write(&[letter("one")]).unwrap(),
            0,
            "known letters are not repeated"
        );
        let path = root.path().join(DEAD_LETTER_DIR).join("orders.jsonl");
        let text = std::fs::read_to_string(&path).unwrap();
        let torn = &text[..text.len() - 10];
        std::fs::write(&path, torn).unwrap();
        let mut w = DeadLetterWriter::open(root.path()).unwrap();
        assert_eq!(w.write(&[letter("one"), letter("two")]).unwrap(), 1);
        let lines: Vec<String> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(lines.len(), 2);
        for l in lines {
            serde_json::from_str::<serde_json::Value>(&l).unwrap();
        }
    }
}
