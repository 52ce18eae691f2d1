//! The snapshot journal where every process sharing the tables sees it:
//! with `[coordination]`, a table's snapshot resumes where it stopped
//! whichever process holds the table next. It lives beside the dead
//! letters (`[dead_letter] path`, else the Parquet dataset, else the
//! checkpoint's directory), below `_snapshot_journal/`, a name dataset
//! readers skip.

use std::sync::Arc;

use dynamo_cdc_object_store::{Location, Objects};
use dynamo_cdc_source::snapshot::journal::{JournalFiles, LocalJournalFiles};

/// The directory below the shared location.
const DIR: &str = "_snapshot_journal";

/// The journal's files at `location` (the shared one).
///
/// # Errors
/// When the object store cannot be reached.
pub(crate) fn at(location: &Location) -> anyhow::Result<Arc<dyn JournalFiles>> {
    Ok(match location.join(DIR) {
        Location::Local(root) => LocalJournalFiles::at(&root),
        Location::Remote { url, options } => Arc::new(ObjectJournalFiles {
            objects: Some(Objects::connect(&url, &options)?),
        }),
    })
}

/// Journal files in a bucket. An object is replaced whole, so a plan is
/// the old one or the new one, as a rename gives on disk.
struct ObjectJournalFiles {
    /// Always `Some` until dropped.
    objects: Option<Objects>,
}

impl ObjectJournalFiles {
    fn objects(&self) -> &Objects {
        self.objects.as_ref().expect("taken only when dropped")
    }
}

impl Drop for ObjectJournalFiles {
    /// The client's runtime may not be dropped where the journal's last
    /// owner lets go of it (within the stream source's runtime): it is
    /// dropped on a thread of its own.
    fn drop(&mut self) {
        if let Some(objects) = self.objects.take() {
            off_runtime(move || drop(objects));
        }
    }
}

impl std::fmt::Debug for ObjectJournalFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ObjectJournalFiles({})", self.objects().url())
    }
}

/// Runs `f` on a thread of its own: the journal is called from within the
/// stream source's runtime, where the object-store client's own runtime
/// may not be entered.
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// The store's failure as an I/O error the journal can classify: one that
/// may pass (an outage, throttling) is `TimedOut`, the kind the journal
/// takes for passing; the rest (denied, no bucket) is `Other`.
fn io(e: dynamo_cdc_object_store::ObjectError) -> std::io::Error {
    let kind = if e.is_transient() {
        std::io::ErrorKind::TimedOut
    } else {
        std::io::ErrorKind::Other
    };
    std::io::Error::new(kind, e.to_string())
}

impl JournalFiles for ObjectJournalFiles {
    fn read(&self, path: &str) -> std::io::Result<Option<Vec<u8>>> {
        off_runtime(|| {
            self.objects()
                .read_if_exists(&self.objects().path(path))
                .map(|b| b.map(|b| b.to_vec()))
                .map_err(io)
        })
    }

    fn write(&self, path: &str, bytes: &[u8]) -> std::io::Result<()> {
        let bytes = bytes::Bytes::copy_from_slice(bytes);
        off_runtime(|| {
            self.objects()
                .put(&self.objects().path(path), bytes)
                .map_err(io)
        })
    }

    fn list(&self, dir: &str) -> std::io::Result<Vec<String>> {
        off_runtime(|| {
            let prefix = format!("{dir}/");
            let metas = self.objects().list(dir).map_err(io)?;
            Ok(metas
                .iter()
                .filter_map(|m| self.objects().relative(&m.location))
                .filter_map(|rel| rel.strip_prefix(&prefix).map(str::to_owned))
                .filter(|name| !name.contains('/'))
                .collect())
        })
    }

    fn remove(&self, path: &str) -> std::io::Result<()> {
        off_runtime(|| {
            self.objects()
                .delete(&self.objects().path(path))
                .map_err(io)
        })
    }

    fn describe(&self, path: &str) -> String {
        self.objects().describe(&self.objects().path(path))
    }
}
