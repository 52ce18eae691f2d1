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
//! `PutMultipartOptions` has no mode, and `If-None-Match` on completion is
//! used only inside its copy-if-not-exists). So before completing, the name
//! is looked up: if it exists the upload is aborted and the commit fails as
//! a collision. A writer that completes the same name between that look-up
//! and the completion is not detected; one writer per shard (the lease)
//! rules that out, and both would hold the same changes of the same shard.

use bytes::Bytes;
use object_store::MultipartUpload;
use object_store::path::Path;

use crate::failure::{FailureClass, ObjectError};
use crate::objects::Objects;

/// Bytes of a multipart part (S3 takes 5 MiB to 5 GiB per part, except the
/// last).
pub const PART_BYTES: usize = 8 << 20;

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
        }
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
            let started = objects
                .block_on(
                    objects
                        .store()
                        .put_multipart_opts(&self.key, Default::default()),
                )
                .map_err(objects.fail("start an upload of", &self.key))?;
            self.multipart = Some(started);
        }
        let upload = self.multipart.as_mut().expect("started above");
        objects
            .block_on(upload.put_part(part.into()))
            .map_err(objects.fail("upload a part of", &self.key))
    }

    /// Writes everything `reader` holds (a spooled file), part by part.
    ///
    /// # Errors
    /// [`CopyError::Read`] when the reader fails, [`CopyError::Object`]
    /// when the store does.
    pub fn copy_from(&mut self, reader: &mut impl std::io::Read) -> Result<u64, CopyError> {
        std::io::copy(reader, self).map_err(|e| {
            // The upload's own failures travel inside the I/O error.
            if e.get_ref().is_some_and(|inner| inner.is::<ObjectError>()) {
                let inner = e.into_inner().expect("checked above");
                CopyError::Object(*inner.downcast::<ObjectError>().expect("checked above"))
            } else {
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
        let Some(mut upload) = self.multipart.take() else {
            let bytes = Bytes::from(std::mem::take(&mut self.buffer));
            objects.create(&self.key, bytes).map_err(|e| ObjectError {
                operation: "commit",
                ..e
            })?;
            return Ok(self.written);
        };
        if !self.buffer.is_empty() {
            let part = Bytes::from(std::mem::take(&mut self.buffer));
            objects
                .block_on(upload.put_part(part.into()))
                .map_err(objects.fail("upload a part of", &self.key))?;
        }
        if objects.exists(&self.key)? {
            // Best effort: an upload left behind is invisible and the
            // lifecycle rule removes it.
            let _ = objects.block_on(upload.abort());
            return Err(ObjectError {
                class: FailureClass::Collision,
                operation: "commit",
                object: objects.describe(&self.key),
                bucket: objects.url().bucket_url(),
                source: Box::new(object_store::Error::AlreadyExists {
                    path: self.key.to_string(),
                    source: "found before completing the multipart upload".into(),
                }),
            });
        }
        objects
            .block_on(upload.complete())
            .map_err(objects.fail("complete the upload of", &self.key))?;
        Ok(self.written)
    }
}

impl std::io::Write for Upload {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
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
