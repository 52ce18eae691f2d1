//! The dead-letter path: `<root>/_dead_letter/<table>.jsonl`, one JSON object
//! per rejected record with where it came from, why, and the raw record.
//!
//! Entries are fsynced before the pipeline moves on, so a record is never both
//! skipped on restart and missing here. A record already dead-lettered by an
//! earlier run (same identity) is not written again.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use dynamo_cdc_core::DeadLetter;

use crate::layout::DEAD_LETTER_DIR;

/// Appends dead letters under a Parquet root.
pub struct DeadLetterWriter {
    dir: PathBuf,
    seen: HashSet<String>,
}

impl DeadLetterWriter {
    /// Opens `<root>/_dead_letter/`, learning which records it already holds.
    ///
    /// # Errors
    /// When the directory or an existing file cannot be read.
    pub fn open(root: &Path) -> std::io::Result<Self> {
        let dir = root.join(DEAD_LETTER_DIR);
        let mut seen = HashSet::new();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries {
                let path = entry?.path();
                if path.extension().is_some_and(|e| e == "jsonl") {
                    drop_torn_tail(&path)?;
                    for line in BufReader::new(File::open(&path)?).lines() {
                        if let Ok(serde_json::Value::Object(o)) = serde_json::from_str(&line?)
                            && let Some(serde_json::Value::String(id)) = o.get("id")
                        {
                            seen.insert(id.clone());
                        }
                    }
                }
            }
        }
        Ok(DeadLetterWriter { dir, seen })
    }

    /// Writes the letters not written before and fsyncs them; returns how many
    /// were new.
    ///
    /// # Errors
    /// When a file cannot be written or synced.
    pub fn write(&mut self, letters: &[DeadLetter]) -> std::io::Result<u64> {
        let mut by_file: Vec<(String, Vec<u8>)> = Vec::new();
        let mut new = 0;
        for letter in letters {
            let id = letter.identity();
            if !self.seen.insert(id.clone()) {
                continue;
            }
            new += 1;
            tracing::warn!(
                origin = %letter.origin,
                line = letter.line,
                record = letter.record_index,
                error = %letter.error,
                "dead-lettered"
            );
            let file = file_name(letter.table.as_deref());
            let mut entry = serde_json::to_value(letter).map_err(std::io::Error::other)?;
            entry["id"] = serde_json::Value::String(id);
            let mut line = serde_json::to_vec(&entry).map_err(std::io::Error::other)?;
            line.push(b'\n');
            match by_file.iter_mut().find(|(f, _)| *f == file) {
                Some((_, buf)) => buf.extend_from_slice(&line),
                None => by_file.push((file, line)),
            }
        }
        if by_file.is_empty() {
            return Ok(0);
        }
        crate::layout::create_dir_durably(&self.dir)?;
        for (name, bytes) in by_file {
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join(name))?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        File::open(&self.dir)?.sync_all()?;
        Ok(new)
    }

    /// Letters already present from earlier runs or this one.
    pub fn known(&self) -> usize {
        self.seen.len()
    }
}

/// Cuts a last line that a crash left half written. Its record was not yet
/// past the position, so it is read and dead-lettered again whole.
fn drop_torn_tail(path: &Path) -> std::io::Result<()> {
    let bytes = std::fs::read(path)?;
    if bytes.is_empty() || bytes.ends_with(b"\n") {
        return Ok(());
    }
    let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    tracing::warn!(path = %path.display(), "removing a dead-letter line cut short by a crash");
    let f = OpenOptions::new().write(true).open(path)?;
    f.set_len(keep as u64)?;
    f.sync_all()
}

fn file_name(table: Option<&str>) -> String {
    let stem: String = table
        .unwrap_or("_unknown_table")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{stem}.jsonl")
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
