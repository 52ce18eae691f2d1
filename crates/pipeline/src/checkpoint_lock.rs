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
    _file: File,
}

/// The lock file of the checkpoint at `checkpoint`.
fn lock_path(checkpoint: &Path) -> PathBuf {
    let mut name = checkpoint.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
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
        let path = lock_path(checkpoint);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| {
                anyhow::anyhow!("cannot open the checkpoint lock {}: {e}", path.display())
            })?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut who = String::new();
                let _ = file.read_to_string(&mut who);
                let who = who.trim();
                anyhow::bail!(
                    "checkpoint {} is in use by {}: only one process may run on a checkpoint. \
                     Stop that process first, give this one another `[checkpoint] path`, or \
                     share the tables between processes with `[coordination]`",
                    checkpoint.display(),
                    if who.is_empty() {
                        "another dynamo-cdc process"
                    } else {
                        who
                    }
                );
            }
            Err(TryLockError::Error(e)) => {
                anyhow::bail!("cannot lock the checkpoint lock {}: {e}", path.display())
            }
        }
        // Who holds it, for the next one's message; best effort.
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = file.write_all(holder().as_bytes());
        let _ = file.sync_data();
        Ok(CheckpointLock { _file: file })
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
}
