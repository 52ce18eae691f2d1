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
    written: u64,
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
        Ok(DeadLetterWriter {
            dir,
            seen,
            written: 0,
        })
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
        std::fs::create_dir_all(&self.dir)?;
        for (name, bytes) in by_file {
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join(name))?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        File::open(&self.dir)?.sync_all()?;
        self.written += new;
        Ok(new)
    }

    /// Letters written by this writer.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Letters already present from earlier runs or this one.
    pub fn known(&self) -> usize {
        self.seen.len()
    }
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
