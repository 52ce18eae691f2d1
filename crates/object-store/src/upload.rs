//! [`Upload`]: a file written to an object store as it is produced, visible
//! only once complete, and never over an object that exists.
//!
//! Bytes gather in a buffer of one part. A file that ends within the first
//! part is committed by a single create-if-absent PUT (`PutMode::Create`,
//! `If-None-Match: *` on S3): atomic and conditional. A larger file becomes
//! a multipart upload, one part at a time, so memory stays at one part
//! whatever the file's size. Until the upload is completed nothing is
//! visible under the name; an upload left by a crash stays invisible (and
//! is cleaned up by the bucket's lifecycle rule, see docs/parquet.md).
//!
//! object_store 0.14 completes multipart uploads unconditionally (its
//! `PutMultipartOptions` has no mode). A multipart file is therefore
//! committed in one of two ways:
//!
//! - **Checked** ([`Upload::new`]): the name is looked up before the upload
//!   is completed; if it exists the upload is aborted and the commit fails
//!   as a collision. A writer that completes the same name between the
//!   look-up and the completion is not detected: enough where one process
//!   alone writes the dataset.
//! - **Fenced** ([`Upload::fenced`]), for datasets several processes write:
//!   the parts go to a staging object of this upload's own (under
//!   [`STAGING_DIR`] at the root of the prefix), which is then copied to
//!   its name by the store, create-if-absent, and deleted. The copy is the
//!   commit, and it is atomic and conditional on every store: S3 completes
//!   a one-part upload copy with `If-None-Match: *` (object_store's
//!   `S3CopyIfNotExists::Multipart`, set where the client is built), GCS
//!   and Azure copy with their own preconditions. It costs a server-side
//!   copy of the file; on S3 files up to [`MAX_FENCED_BYTES`] are committed
//!   that way (see [`Upload::fits_fenced`]). The name is also looked up
//!   before the copy, for S3-compatible stores that ignore `If-None-Match`.
use bytes::Bytes;
use dynamo_cdc_core::writer_tag;
use object_store::path::Path;
use object_store::{CopyMode, CopyOptions, MultipartUpload};

use crate::failure::{FailureClass, ObjectError};
use crate::objects::Objects;
use crate::url::Scheme;

/// Bytes of a multipart part (S3 takes 5 MiB to 5 GiB per part, except the
/// last).
pub const PART_BYTES: usize = 8 << 20;

/// Where fenced uploads stage their parts, below the prefix's root. The
/// leading `_` hides it from Spark, pyarrow and Athena, and no committed
/// file's name has four levels below the root as a staging object's does.
/// Objects left here by a crash between completion and copy are complete
/// objects, not uploads: a lifecycle rule on this prefix removes them (see
/// docs/parquet.md).
pub const STAGING_DIR: &str = "_staging";

/// The largest file a fenced upload commits on S3. `UploadPartCopy` copies
/// at most 5 GiB in one part, but the copy is one request, answered when
/// it is done, and must finish within the client's 30 s request timeout:
/// a gibibyte leaves room on a slow day.
pub const MAX_FENCED_BYTES: u64 = 1 << 30;

/// Why [`Upload::copy_from`] failed.
#[derive(Debug)]
pub enum CopyError {
    /// Reading the source failed.
    Read(std::io::Error),
    /// The store failed.
    Object(ObjectError),
}

/// One object being written. Dropping it without [`Upload::finish`] leaves
/// nothing visible.
pub struct Upload {
    objects: Objects,
    key: Path,
    part_bytes: usize,
    buffer: Vec<u8>,
    multipart: Option<Box<dyn MultipartUpload>>,
    written: u64,
    /// Where the parts go when fenced: the staging object.
    staging: Option<Path>,
    /// A part was lost (its send failed, and the upload was aborted): the
    /// object can no longer be completed whole.
    broken: bool,
}

impl Upload {
    /// Starts writing `key`; nothing is sent until a part is full.
    pub fn new(objects: &Objects, key: Path) -> Upload {
        Upload::with_part_bytes(objects, key, PART_BYTES)
    }

    /// As [`Upload::new`], with parts of `part_bytes` (tests use small
    /// parts to exercise the multipart path).
    pub fn with_part_bytes(objects: &Objects, key: Path, part_bytes: usize) -> Upload {
        Upload {
            objects: objects.clone(),
            key,
            part_bytes: part_bytes.max(1),
            buffer: Vec::new(),
            multipart: None,
            written: 0,
            staging: None,
            broken: false,
        }
    }

    /// Whether a file of `bytes` can be committed fenced in `objects`' store
    /// (S3 copies at most [`MAX_FENCED_BYTES`] in one request).
    pub fn fits_fenced(objects: &Objects, bytes: u64) -> bool {
        objects.url().scheme != Scheme::S3 || bytes <= MAX_FENCED_BYTES
    }

    /// Makes this a fenced upload (see the module docs): a multipart file is
    /// staged under [`STAGING_DIR`] and committed by a create-if-absent copy,
    /// so that no other writer can complete the same name in between.
    #[must_use]
    pub fn fenced(mut self) -> Upload {
        let relative = self
            .objects
            .relative(&self.key)
            .unwrap_or_else(|| self.key.to_string());
        self.staging = Some(
            self.objects
                .path(&format!("{STAGING_DIR}/{relative}.{}", writer_tag())),
        );
        self
    }

    /// The object's name, as a URL.
    pub fn describe(&self) -> String {
        self.objects.describe(&self.key)
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Sends the buffer as the next part, starting the multipart upload if
    /// this is the first.
    fn send_part(&mut self) -> Result<(), ObjectError> {
        let part = Bytes::from(std::mem::take(&mut self.buffer));
        let objects = self.objects.clone();
        if self.multipart.is_none() {
            let target = self.staging.as_ref().unwrap_or(&self.key);
            let started = objects
                .block_on(
                    objects
                        .store()
                        .put_multipart_opts(target, Default::default()),
                )
                .map_err(objects.fail("start an upload of", target))?;
            self.multipart = Some(started);
        }
        let target = self.staging.as_ref().unwrap_or(&self.key).clone();
        let upload = self.multipart.as_mut().expect("started above");
        let sent = objects
            .block_on(upload.put_part(part.into()))
            .map_err(objects.fail("upload a part of", &target));
        if sent.is_err() {
            self.broken = true;
            self.abort_started();
        }
        sent
    }

    /// Aborts the multipart upload if one was started, best effort. Its
    /// parts are invisible but billed until then; an abort that fails
    /// leaves them to the bucket's lifecycle rule.
    fn abort_started(&mut self) {
        if let Some(mut upload) = self.multipart.take() {
            abort(&self.objects, &mut upload);
        }
    }

    /// Writes everything `reader` holds (a spooled file), part by part.
    ///
    /// # Errors
    /// [`CopyError::Read`] when the reader fails, [`CopyError::Object`]
    /// when the store does.
    /// A reader's failure aborts the multipart upload its parts went to,
    /// as a store's failure does: the object can no longer be whole.
    pub fn copy_from(&mut self, reader: &mut impl std::io::Read) -> Result<u64, CopyError> {
        std::io::copy(reader, self).map_err(|e| {
            // The upload's own failures travel inside the I/O error.
            if e.get_ref().is_some_and(|inner| inner.is::<ObjectError>()) {
                let inner = e.into_inner().expect("checked above");
                CopyError::Object(*inner.downcast::<ObjectError>().expect("checked above"))
            } else {
                self.broken = true;
                self.abort_started();
                CopyError::Read(e)
            }
        })
    }

    /// Commits the object: visible from now on, whole; returns its size.
    ///
    /// # Errors
    /// A collision when an object of this name exists (nothing is
    /// overwritten), or the store's failure.
    pub fn finish(mut self) -> Result<u64, ObjectError> {
        let objects = self.objects.clone();
        if self.broken {
            return Err(self.lost_part());
        }
        let Some(mut upload) = self.multipart.take() else {
            let bytes = Bytes::from(std::mem::take(&mut self.buffer));
            objects.create(&self.key, bytes).map_err(|e| ObjectError {
                operation: "commit",
                ..e
            })?;
            return Ok(self.written);
        };
        // Every failure from here aborts the upload (best effort: one left
        // behind is invisible, and the lifecycle rule removes it). After a
        // completion that landed unanswered, the abort changes nothing.
        let abort = |upload: &mut Box<dyn MultipartUpload>| abort(&objects, upload);
        if !self.buffer.is_empty() {
            let part = Bytes::from(std::mem::take(&mut self.buffer));
            let target = self.staging.as_ref().unwrap_or(&self.key);
            if let Err(e) = objects.block_on(upload.put_part(part.into())) {
                abort(&mut upload);
                return Err(objects.fail("upload a part of", target)(e));
            }
        }
        if let Some(staging) = self.staging.take() {
            return self.commit_staged(upload, &staging);
        }
        match objects.exists(&self.key) {
            Ok(false) => {}
            Ok(true) => {
                abort(&mut upload);
                return Err(self.collision(object_store::Error::AlreadyExists {
                    path: self.key.to_string(),
                    source: "found before completing the multipart upload".into(),
                }));
            }
            Err(e) => {
                abort(&mut upload);
                return Err(e);
            }
        }
        if let Err(e) = objects.block_on(upload.complete()) {
            abort(&mut upload);
            return Err(objects.fail("complete the upload of", &self.key)(e));
        }
        Ok(self.written)
    }

    /// Completes the staging object, copies it to the name if absent, and
    /// removes it whatever the outcome.
    fn commit_staged(
        &self,
        mut upload: Box<dyn MultipartUpload>,
        staging: &Path,
    ) -> Result<u64, ObjectError> {
        let objects = &self.objects;
        if objects.url().scheme == Scheme::S3 && self.written > MAX_FENCED_BYTES {
            abort(objects, &mut upload);
            return Err(ObjectError {
                class: FailureClass::Settings,
                operation: "commit",
                object: objects.describe(&self.key),
                bucket: objects.url().bucket_url(),
                source: Box::new(object_store::Error::NotSupported {
                    source: format!(
                        "the file has {} bytes, and S3 commits at most {MAX_FENCED_BYTES} \
                         by a conditional copy (see Upload::fits_fenced)",
                        self.written
                    )
                    .into(),
                }),
            });
        }
        if let Err(e) = objects.block_on(upload.complete()) {
            // Best effort, both: the completion may have landed unanswered.
            abort(objects, &mut upload);
            let _ = objects.delete(staging);
            return Err(objects.fail("complete the upload of", staging)(e));
        }
        // The copy is conditional; this look-up also catches a store that
        // ignores the condition, but for a writer in between.
        let exists = objects.exists(&self.key);
        if !matches!(exists, Ok(false)) {
            let _ = objects.delete(staging);
            if exists? {
                return Err(self.collision(object_store::Error::AlreadyExists {
                    path: self.key.to_string(),
                    source: "found before copying the staged upload".into(),
                }));
            }
        }
        let copied = objects.block_on(objects.store().copy_opts(
            staging,
            &self.key,
            CopyOptions::new().with_mode(CopyMode::Create),
        ));
        if copied.is_ok() {
            // Kept until the copy is whole: an asynchronous copy (Azure's
            // Copy Blob may answer while still copying) needs its source.
            self.copy_landed()?;
        }
        if let Err(e) = objects.delete(staging) {
            tracing::warn!(
                error = %e,
                "a staging object was left behind; the lifecycle rule on {STAGING_DIR}/ removes it"
            );
        }
        match copied {
            Ok(()) => Ok(self.written),
            Err(e @ object_store::Error::AlreadyExists { .. }) => Err(self.collision(e)),
            Err(e) => Err(objects.fail("commit", &self.key)(e)),
        }
    }

    /// Waits, within [`COPY_WAIT`], until the object holds every byte
    /// written: a store may answer a copy before it is done (Azure's Copy
    /// Blob is asynchronous by its documentation), and a name that lists
    /// before its bytes are there is a broken file to readers, and to the
    /// next start reading its footer.
    ///
    /// # Errors
    /// A passing failure when the bytes did not all arrive in time (the
    /// staging object is kept: the copy may still need it), or the store's.
    fn copy_landed(&self) -> Result<(), ObjectError> {
        let objects = &self.objects;
        let deadline = std::time::Instant::now() + COPY_WAIT;
        let mut wait = std::time::Duration::from_millis(50);
        loop {
            let meta = objects
                .block_on(object_store::ObjectStoreExt::head(
                    objects.store().as_ref(),
                    &self.key,
                ))
                .map_err(objects.fail("look up the copy of", &self.key))?;
            if meta.size >= self.written {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(ObjectError {
                    class: FailureClass::Passing,
                    operation: "commit",
                    object: objects.describe(&self.key),
                    bucket: objects.url().bucket_url(),
                    source: Box::new(object_store::Error::Generic {
                        store: "upload",
                        source: format!(
                            "the store accepted the copy of the staged upload, but after {} s \
                             the object holds {} of its {} bytes",
                            COPY_WAIT.as_secs(),
                            meta.size,
                            self.written
                        )
                        .into(),
                    }),
                });
            }
            std::thread::sleep(wait);
            wait = (wait * 2).min(std::time::Duration::from_secs(2));
        }
    }

    /// A part of this upload failed earlier: what is left is not the file.
    fn lost_part(&self) -> ObjectError {
        ObjectError {
            class: FailureClass::Passing,
            operation: "commit",
            object: self.objects.describe(&self.key),
            bucket: self.objects.url().bucket_url(),
            source: Box::new(object_store::Error::Generic {
                store: "upload",
                source: "a part of this upload failed, and the upload was aborted; \
                         the file is written again from its start"
                    .into(),
            }),
        }
    }

    /// The name exists: another writer committed it.
    fn collision(&self, source: object_store::Error) -> ObjectError {
        ObjectError {
            class: FailureClass::Collision,
            operation: "commit",
            object: self.objects.describe(&self.key),
            bucket: self.objects.url().bucket_url(),
            source: Box::new(source),
        }
    }
}

/// How long a copy the store accepted may take to hold every byte (see
/// [`Upload::copy_landed`]).
const COPY_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// How long an abort may take: it is a courtesy to the bill (a bucket's
/// lifecycle rule removes what is left), and during an outage the store's
/// own retries would hold the pause back for minutes.
const ABORT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Aborts a multipart upload, best effort, within [`ABORT_WAIT`].
fn abort(objects: &Objects, upload: &mut Box<dyn MultipartUpload>) {
    let _ = objects.block_on(async { tokio::time::timeout(ABORT_WAIT, upload.abort()).await });
}

impl std::io::Write for Upload {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.broken {
            return Err(std::io::Error::other(self.lost_part()));
        }
        let room = self.part_bytes - self.buffer.len();
        let take = buf.len().min(room);
        self.buffer.extend_from_slice(&buf[..take]);
        self.written += take as u64;
        if self.buffer.len() >= self.part_bytes {
            self.send_part().map_err(std::io::Error::other)?;
        }
        Ok(take)
    }

    /// Parts are sent when full; flushing sends nothing early (a part may
    /// not be smaller than the store's minimum).
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
