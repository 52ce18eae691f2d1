//! One process per local checkpoint: two processes writing one checkpoint
//! file would each move positions past the other's changes. The first
//! holds an exclusive lock on `<checkpoint>.lock` for its whole run (the
//! operating system drops it when the process ends, however it ends) and
//! writes who it is into the file; a second one stops before reading
//! anything, naming the holder.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};

/// The lock, held while this value lives.
#[derive(Debug)]
pub(crate) struct CheckpointLock {
    file: File,
    path: PathBuf,
}

/// The lock file of the checkpoint at `checkpoint`.
fn lock_path(checkpoint: &Path) -> PathBuf {
    let mut name = checkpoint.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// `target` with its symlinks resolved (its directory's, while it does not
/// exist yet), so that two paths to one checkpoint (a symlink to it, or to
/// its directory) share one lock: with a lock per path, a run on each would
/// write the same checkpoint.
fn resolved(target: &Path) -> PathBuf {
    if let Ok(path) = std::fs::canonicalize(target) {
        return path;
    }
    let Some(name) = target.file_name() else {
        return target.to_owned();
    };
    let dir = match target.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => std::fs::canonicalize(dir),
        None => std::env::current_dir(),
    };
    dir.map_or_else(|_| target.to_owned(), |dir| dir.join(name))
}

/// Who this process is, as written into the lock file.
fn holder() -> String {
    let host = dynamo_cdc_lease::config::host_name().unwrap_or_else(|| "this host".to_owned());
    let since = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
    format!(
        "process {} on {host}, running since {since}",
        std::process::id()
    )
}

impl CheckpointLock {
    /// Takes the lock of the checkpoint at `checkpoint` (creating its
    /// directory and lock file when missing).
    ///
    /// # Errors
    /// When another process holds it (naming that process), or the lock
    /// file cannot be opened.
    pub(crate) fn acquire(checkpoint: &Path) -> anyhow::Result<Self> {
        Self::acquire_for(
            checkpoint,
            "checkpoint",
            "only one process may run on a checkpoint. Stop that process first, give this one \
             another `[checkpoint] path`, or share the tables between processes with \
             `[coordination]`",
        )
    }

    /// Takes the lock of the snapshot journal beside the checkpoint
    /// (`x.json` -> `x.snapshots/`), which checkpoints whose names differ
    /// only in their extension (`x.json`, `x.state`) would share.
    ///
    /// # Errors
    /// As [`CheckpointLock::acquire`].
    pub(crate) fn acquire_journal(journal: &Path, checkpoint: &Path) -> anyhow::Result<Self> {
        Self::acquire_for(
            journal,
            "snapshot journal",
            &format!(
                "it is beside checkpoint {} too, and two runs may not share one: give this one \
                 a `[checkpoint] path` whose name differs before its extension",
                checkpoint.display()
            ),
        )
    }

    fn acquire_for(target: &Path, what: &str, why: &str) -> anyhow::Result<Self> {
        if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        }
        let path = lock_path(&resolved(target));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| anyhow::anyhow!("cannot open the {what} lock {}: {e}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut who = String::new();
                let _ = file.read_to_string(&mut who);
                let who = who.trim();
                anyhow::bail!(
                    "{what} {} is in use by {}: {why}",
                    target.display(),
                    if who.is_empty() {
                        "another dynamo-cdc process"
                    } else {
                        who
                    }
                );
            }
            Err(TryLockError::Error(e)) => {
                anyhow::bail!("cannot lock the {what} lock {}: {e}", path.display())
            }
        }
        // Who holds it, for the next one's message; best effort.
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = file.write_all(holder().as_bytes());
        let _ = file.sync_data();
        Ok(CheckpointLock { file, path })
    }

    /// `Err` when the lock file this process holds is no longer the one at
    /// its path (removed, or replaced): a process started since would have
    /// locked a new file and be running on the checkpoint too. A lock
    /// holds a file, not a name, so this is looked at before every write.
    ///
    /// # Errors
    /// Saying what happened to the lock file.
    pub(crate) fn still_held(&self) -> Result<(), String> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt as _;
            let lost = |what: &str| {
                Err(format!(
                    "the checkpoint lock {} was {what} while this process held it: another \
                     process may be running on the checkpoint now; stopping rather than \
                     writing it",
                    self.path.display()
                ))
            };
            let ours = self.file.metadata().map_err(|e| e.to_string())?;
            match std::fs::metadata(&self.path) {
                Ok(now) if (now.dev(), now.ino()) == (ours.dev(), ours.ino()) => Ok(()),
                Ok(_) => lost("replaced"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => lost("removed"),
                // Cannot tell (a disk error): the write itself will say.
                Err(_) => Ok(()),
            }
        }
        #[cfg(not(unix))]
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_name() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = dir.path().join("state/checkpoint.json");
        let first = CheckpointLock::acquire(&checkpoint).unwrap();
        let e = CheckpointLock::acquire(&checkpoint)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("process {}", std::process::id())),
            "{e}"
        );
        assert!(e.contains("checkpoint.json is in use"), "{e}");
        drop(first);
        CheckpointLock::acquire(&checkpoint).unwrap();
    }

    /// Two paths to one checkpoint (a symlink to the file, or to its
    /// directory) share its lock: the second run is refused.
    #[cfg(unix)]
    #[test]
    fn a_checkpoint_reached_through_a_symlink_shares_its_lock() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("state/checkpoint.json");
        let _first = CheckpointLock::acquire(&real).unwrap();
        // Not written yet: its directory is resolved.
        std::os::unix::fs::symlink(dir.path().join("state"), dir.path().join("alias")).unwrap();
        let through_dir = dir.path().join("alias/checkpoint.json");
        let e = CheckpointLock::acquire(&through_dir)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is in use by process"), "{e}");
        // Written: the file's own symlink is resolved.
        std::fs::write(&real, b"{}").unwrap();
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = CheckpointLock::acquire(&link).unwrap_err().to_string();
        assert!(e.contains("link.json is in use by process"), "{e}");
    }

    /// Checkpoints whose names differ only in their extension share a
    /// snapshot journal: the second run is refused, saying so.
    #[test]
    fn checkpoints_sharing_a_snapshot_journal_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (json, state) = (dir.path().join("x.json"), dir.path().join("x.state"));
        let journal = json.with_extension("snapshots");
        let _first = CheckpointLock::acquire_journal(&journal, &json).unwrap();
        let e = CheckpointLock::acquire_journal(&state.with_extension("snapshots"), &state)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!(
                "snapshot journal {} is in use by process",
                journal.display()
            )) && e.contains("x.state"),
            "{e}"
        );
    }

    /// A lock file removed while held lets a second process lock a new
    /// one: the first finds out before its next write.
    #[test]
    fn a_lock_file_removed_while_held_is_found_out() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = dir.path().join("checkpoint.json");
        let first = std::sync::Arc::new(CheckpointLock::acquire(&checkpoint).unwrap());
        first.still_held().unwrap();
        std::fs::remove_file(&first.path).unwrap();
        let e = first.still_held().unwrap_err();
        assert!(e.contains("was removed"), "{e}");
        let _second = CheckpointLock::acquire(&checkpoint).unwrap();
        let e = first.still_held().unwrap_err();
        assert!(e.contains("was replaced"), "{e}");
        // The first process's checkpoint store stops rather than write.
        use dynamo_cdc_core::CheckpointStore as _;
        let mut store = crate::checkpoint::FileCheckpoints::new(&checkpoint).held_by(first);
        store
            .store(&dynamo_cdc_core::Recorded::default())
            .and_then(|()| store.flush())
            .unwrap_err();
        assert!(!checkpoint.exists(), "nothing written");
    }
}
