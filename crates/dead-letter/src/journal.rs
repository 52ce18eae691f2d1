//! Append-only JSON Lines files beside the data: `<root>/<dir>/<table>.jsonl`.
//!
//! Used for dead letters and gaps. Every entry has an `id`; an entry whose id
//! the directory already holds (from this run or an earlier one) is not
//! written again, so a rerun never repeats one. Entries are fsynced before
//! `append` returns, so the pipeline may move its positions past them.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read as _, Seek as _, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// One directory of JSON Lines files, one per table.
pub(crate) struct Journal {
    dir: PathBuf,
    seen: HashSet<String>,
}

impl Journal {
    /// Opens `<root>/<dir>/`, learning the ids it already holds and cutting
    /// lines a crash left half written.
    pub(crate) fn open(root: &Path, dir: &str) -> std::io::Result<Self> {
        let dir = root.join(dir);
        let mut seen = HashSet::new();
        // Missing: none kept yet. Unreadable is not the same as empty: the
        // ids it holds would be written again.
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => Some(entries),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        if let Some(entries) = entries {
            for entry in entries {
                let path = entry?.path();
                if path.extension().is_some_and(|e| e == "jsonl") {
                    let mut file = OpenOptions::new().read(true).write(true).open(&path)?;
                    // Workers sharing the dataset append to the same files:
                    // a last line without its end may be one being written,
                    // and a line appended while the ids are read would be
                    // missed (and written again).
                    file.lock()?;
                    drop_torn_tail(&mut file, &path)?;
                    file.seek(SeekFrom::Start(0))?;
                    for line in BufReader::new(&file).lines() {
                        if let Ok(serde_json::Value::Object(o)) = serde_json::from_str(&line?)
                            && let Some(serde_json::Value::String(id)) = o.get("id")
                        {
                            seen.insert(id.clone());
                        }
                    }
                    file.unlock()?;
                }
            }
        }
        Ok(Journal { dir, seen })
    }

    /// Whether an entry with this id is already held.
    pub(crate) fn holds(&self, id: &str) -> bool {
        self.seen.contains(id)
    }

    /// Appends the entries whose ids are new, each as `entry` plus its `id`,
    /// to the file of its table, and fsyncs; returns how many were new.
    pub(crate) fn append<'a>(
        &mut self,
        entries: impl IntoIterator<Item = (Option<&'a str>, String, serde_json::Value)>,
    ) -> std::io::Result<u64> {
        let mut by_file: Vec<(String, Vec<u8>)> = Vec::new();
        // Held only once on disk: an append that failed leaves them new,
        // and the same entries given again are written, not taken as held.
        let mut ids: HashSet<String> = HashSet::new();
        for (table, id, mut entry) in entries {
            if self.seen.contains(&id) || !ids.insert(id.clone()) {
                continue;
            }
            entry["id"] = serde_json::Value::String(id);
            let mut line = serde_json::to_vec(&entry).map_err(std::io::Error::other)?;
            line.push(b'\n');
            let file = file_name(table);
            match by_file.iter_mut().find(|(f, _)| *f == file) {
                Some((_, buf)) => buf.extend_from_slice(&line),
                None => by_file.push((file, line)),
            }
        }
        if by_file.is_empty() {
            return Ok(0);
        }
        dynamo_cdc_core::durable::create_dir_durably(&self.dir)?;
        for (name, bytes) in by_file {
            let path = self.dir.join(name);
            let mut f = OpenOptions::new()
                .create(true)
                .read(true)
                .append(true)
                .open(&path)?;
            // One writer at a time (other processes may share the file),
            // so lines never interleave, and a torn line found while
            // holding the lock is a crashed writer's: it is cut, or the
            // next line would be glued to it and lost with it.
            f.lock()?;
            drop_torn_tail(&mut f, &path)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            f.unlock()?;
        }
        dynamo_cdc_core::durable::sync_dir(&self.dir)?;
        let new = ids.len() as u64;
        self.seen.extend(ids);
        Ok(new)
    }

    /// Entries held, from earlier runs and this one.
    pub(crate) fn len(&self) -> usize {
        self.seen.len()
    }
}

/// Cuts a last line that a crash left half written from `file` (at
/// `path`, open for reading and writing, and locked). Its entry was not yet
/// past the position, so it is found and written again whole.
fn drop_torn_tail(file: &mut File, path: &Path) -> std::io::Result<()> {
    // Only the end is read: a table's dead letters may run to gigabytes,
    // and every pass opens the store.
    let len = file.metadata()?.len();
    let mut last = [0u8];
    if len == 0 || {
        file.seek(SeekFrom::Start(len - 1))?;
        file.read_exact(&mut last)?;
        last[0] == b'\n'
    } {
        return Ok(());
    }
    // Back a block at a time to the last whole line's end.
    let mut block = vec![0u8; 64 * 1024];
    let mut end = len;
    let mut keep = 0;
    while end > 0 {
        let start = end.saturating_sub(block.len() as u64);
        let part = &mut block[..usize::try_from(end - start).unwrap_or(0)];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(part)?;
        if let Some(at) = part.iter().rposition(|&b| b == b'\n') {
            keep = start + at as u64 + 1;
            break;
        }
        end = start;
    }
    tracing::warn!(path = %path.display(), "removing a line cut short by a crash");
    file.set_len(keep)?;
    file.sync_all()
}

fn file_name(table: Option<&str>) -> String {
    format!("{}.jsonl", file_stem(table))
}

/// A table's name made safe for a file or object name.
pub(crate) fn file_stem(table: Option<&str>) -> String {
    table
        .unwrap_or("_unknown_table")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line cut short by a crash is removed, however far back the last
    /// whole line ends; whole files are left as they are.
    #[test]
    fn a_torn_last_line_is_cut_back_to_the_last_whole_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let whole = "{\"id\":\"a\"}\n".repeat(10_000);
        let torn = "x".repeat(200_000); // longer than a block
        for (text, kept) in [
            (format!("{whole}{torn}"), whole.as_str()),
            (torn.clone(), ""),
            (whole.clone(), whole.as_str()),
            (String::new(), ""),
        ] {
            std::fs::write(&path, &text).unwrap();
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .unwrap();
            drop_torn_tail(&mut file, &path).unwrap();
            assert_eq!(std::fs::read_to_string(&path).unwrap(), kept);
        }
    }

    /// Another process appending (holding the file's lock, its line not
    /// ended yet) is waited for: its line is neither cut as torn nor glued
    /// to ours. A torn line left by a crashed writer is cut before ours.
    #[test]
    fn appends_wait_for_another_writer_and_cut_only_a_crashed_ones_line() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("gaps/orders.jsonl");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut other = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        other.lock().unwrap();
        other.write_all(b"{\"id\":\"theirs\"").unwrap();

        let (tx, rx) = std::sync::mpsc::channel();
        let dir = root.path().to_owned();
        let ours = std::thread::spawn(move || {
            let mut journal = Journal::open(&dir, "gaps").unwrap();
            let appended =
                journal.append([(Some("orders"), "ours".to_owned(), serde_json::json!({}))]);
            tx.send(()).unwrap();
            (journal.holds("theirs"), appended.unwrap())
        });
        // While the other writer holds the file, ours waits.
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(300))
                .is_err()
        );
        other.write_all(b"}\n").unwrap();
        other.unlock().unwrap();
        let (saw_theirs, appended) = ours.join().unwrap();
        assert!(saw_theirs, "their whole line was read, not cut");
        assert_eq!(appended, 1);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"id\":\"theirs\"}\n{\"id\":\"ours\"}\n"
        );

        // A crashed writer's torn line (no lock held) goes before ours.
        other.write_all(b"{\"id\":\"crash").unwrap();
        drop(other);
        let mut journal = Journal {
            dir: root.path().join("gaps"),
            seen: HashSet::new(),
        };
        journal
            .append([(Some("orders"), "later".to_owned(), serde_json::json!({}))])
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"id\":\"theirs\"}\n{\"id\":\"ours\"}\n{\"id\":\"later\"}\n"
        );
    }

    #[test]
    fn a_missing_directory_holds_nothing_but_an_unreadable_one_is_an_error() {
        let root = tempfile::tempdir().unwrap();
        assert!(
            Journal::open(root.path(), "dead_letters")
                .unwrap()
                .seen
                .is_empty()
        );
        // Listed, it would hold ids not to write again: unreadable (here a
        // file where the directory should be), it must not read as empty.
        std::fs::write(root.path().join("gaps"), b"x").unwrap();
        assert!(Journal::open(root.path(), "gaps").is_err());
    }

    #[test]
    fn an_entry_whose_append_failed_is_not_held() {
        let root = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(root.path(), "gaps").unwrap();
        let entry = || [(Some("orders"), "g1".to_owned(), serde_json::json!({"n": 1}))];
        // A file where the directory goes: the append fails.
        std::fs::write(root.path().join("gaps"), b"x").unwrap();
        assert!(journal.append(entry()).is_err());
        assert!(!journal.holds("g1"), "not on disk, so not held");
        std::fs::remove_file(root.path().join("gaps")).unwrap();
        assert_eq!(journal.append(entry()).unwrap(), 1);
        assert!(journal.holds("g1"));
        assert_eq!(journal.append(entry()).unwrap(), 0);
        let text = std::fs::read_to_string(root.path().join("gaps/orders.jsonl")).unwrap();
        assert_eq!(text.lines().count(), 1);
    }
}
