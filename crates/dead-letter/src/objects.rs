//! The dead-letter store on an object store: one object per batch, since
//! objects cannot be appended to.
//!
//! `<root>/_dead_letter/<table>/<ms>-<writer>-<n>.jsonl` and
//! `<root>/_gaps/<table>/<ms>-<writer>-<n>.jsonl`: `<ms>` is the time of
//! writing in milliseconds (zero-padded to 13 digits, so names sort by
//! time), `<writer>` tells this store apart from any other run (process id
//! and start time) and `<n>` counts its objects, so two names never
//! collide; each object is created only if absent all the same. Each line
//! is an entry with its `id`. At open every object is read to learn the ids
//! held, so a rerun never writes the same dead letter twice. An object is
//! visible whole or not at all: no torn lines to repair.

use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

use dynamo_cdc_core::{DeadLetter, Gap};
use dynamo_cdc_object_store::{ObjectError, Objects};

use crate::{DEAD_LETTER_DIR, DeadLetterError, DeadLetterStore, GAPS_DIR};

/// Dead letters and gaps in a bucket. See the module docs.
pub struct ObjectDeadLetters {
    objects: Objects,
    letters: HashSet<String>,
    gaps: HashSet<String>,
    writer: String,
    written: u64,
}

impl ObjectDeadLetters {
    /// Opens the store below `objects`' prefix, reading the ids it holds.
    ///
    /// # Errors
    /// When the prefix cannot be listed or an object read.
    pub fn open(objects: Objects) -> Result<Self, DeadLetterError> {
        let letters = held_ids(&objects, DEAD_LETTER_DIR)?;
        let gaps = held_ids(&objects, GAPS_DIR)?;
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        Ok(ObjectDeadLetters {
            objects,
            letters,
            gaps,
            writer: format!("{}x{started:x}", std::process::id()),
            written: 0,
        })
    }

    /// Writes the new entries of each table as one object; marks their ids
    /// held only once the object exists.
    fn put<'a>(
        &mut self,
        dir: &str,
        entries: impl IntoIterator<Item = (Option<&'a str>, String, serde_json::Value)>,
        gaps: bool,
    ) -> Result<u64, DeadLetterError> {
        let held = if gaps { &self.gaps } else { &self.letters };
        let mut by_table: Vec<(String, Vec<u8>, Vec<String>)> = Vec::new();
        for (table, id, mut entry) in entries {
            if held.contains(&id) || by_table.iter().any(|(_, _, ids)| ids.contains(&id)) {
                continue;
            }
            entry["id"] = serde_json::Value::String(id.clone());
            let mut line = serde_json::to_vec(&entry).expect("JSON values serialize");
            line.push(b'\n');
            let table = crate::journal::file_stem(table);
            match by_table.iter_mut().find(|(t, _, _)| *t == table) {
                Some((_, bytes, ids)) => {
                    bytes.extend_from_slice(&line);
                    ids.push(id);
                }
                None => by_table.push((table, line, vec![id])),
            }
        }
        let mut new = 0;
        for (table, bytes, ids) in by_table {
            let ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis();
            self.written += 1;
            let name = format!(
                "{dir}/{table}/{ms:013}-{}-{}.jsonl",
                self.writer, self.written
            );
            self.objects
                .create(&self.objects.path(&name), bytes.into())?;
            new += ids.len() as u64;
            let held = if gaps {
                &mut self.gaps
            } else {
                &mut self.letters
            };
            held.extend(ids);
        }
        Ok(new)
    }
}

/// The ids of every entry below `<prefix>/<dir>/`.
fn held_ids(objects: &Objects, dir: &str) -> Result<HashSet<String>, ObjectError> {
    let mut ids = HashSet::new();
    for meta in objects.list(dir)? {
        if !meta.location.as_ref().ends_with(".jsonl") {
            continue;
        }
        let bytes = objects.read(&meta.location)?;
        for line in bytes.split(|&b| b == b'\n') {
            if let Ok(serde_json::Value::Object(o)) = serde_json::from_slice(line)
                && let Some(serde_json::Value::String(id)) = o.get("id")
            {
                ids.insert(id.clone());
            }
        }
    }
    Ok(ids)
}

impl DeadLetterStore for ObjectDeadLetters {
    fn write(&mut self, letters: &[DeadLetter]) -> Result<u64, DeadLetterError> {
        let entries: Vec<_> = letters
            .iter()
            .map(|l| {
                let entry = serde_json::to_value(l).expect("dead letters serialize");
                (l.table.as_deref(), l.identity(), entry)
            })
            .collect();
        self.put(DEAD_LETTER_DIR, entries, false)
    }

    fn holds(&self, letter: &DeadLetter) -> bool {
        self.letters.contains(&letter.identity())
    }

    fn record_gap(&mut self, gap: &Gap) -> Result<bool, DeadLetterError> {
        let entry = serde_json::to_value(gap).expect("gaps serialize");
        let new = self.put(
            GAPS_DIR,
            [(Some(gap.table.as_str()), gap.identity(), entry)],
            true,
        )?;
        Ok(new > 0)
    }

    fn known(&self) -> u64 {
        self.letters.len() as u64
    }

    fn location(&self) -> String {
        self.objects.join(DEAD_LETTER_DIR).url().to_string()
    }
}
