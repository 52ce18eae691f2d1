//! Durability on a local disk: what a file needs beyond its own `fsync`
//! to survive a power loss. A file's name lives in its directory, so a new
//! file is durable only once its directory is synced, and a new directory
//! only once its parent is.

use std::fs::File;
use std::path::Path;

/// Creates `dir` and any missing parents, and fsyncs the parent of each one
/// created: a file renamed into a new directory survives a power loss only
/// if the directory's own entry does.
///
/// # Errors
/// When a directory cannot be created or synced.
pub fn create_dir_durably(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut p = dir;
    while !p.as_os_str().is_empty() && !p.exists() {
        missing.push(p.to_owned());
        match p.parent() {
            Some(parent) => p = parent,
            None => break,
        }
    }
    std::fs::create_dir_all(dir)?;
    for created in missing.iter().rev() {
        let parent = match created.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        sync_dir(parent)?;
    }
    Ok(())
}

/// Syncs `dir` itself: the names of the files created in it, or renamed
/// into it, since it was last synced.
///
/// # Errors
/// When the directory cannot be opened or synced.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_parents_are_created_and_an_existing_directory_is_left_alone() {
        let root = tempfile::tempdir().unwrap();
        let deep = root.path().join("a/b/c");
        create_dir_durably(&deep).unwrap();
        assert!(deep.is_dir());
        create_dir_durably(&deep).unwrap();
        sync_dir(&deep).unwrap();
        std::fs::write(root.path().join("a/file"), b"x").unwrap();
        let e = create_dir_durably(&root.path().join("a/file/d")).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotADirectory, "{e}");
        assert!(sync_dir(&root.path().join("missing")).is_err());
    }
}
