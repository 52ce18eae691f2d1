//! The Iceberg crate's file I/O on a bucket, through the same object-store
//! client as the Parquet sink (credentials, endpoint, failure classes), so
//! the warehouse needs no second storage stack. A local warehouse uses the
//! Iceberg crate's own local file system storage.
//!
//! Paths come as URLs (`s3://bucket/prefix/...`); the bucket is the one the
//! client was built for.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::stream::BoxStream;
use iceberg::io::{
    FileMetadata, FileRead, FileWrite, InputFile, OutputFile, Storage, StorageConfig,
    StorageFactory,
};
use iceberg::{Error, ErrorKind, Result};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Iceberg file I/O on one bucket.
#[derive(Clone)]
pub(crate) struct BucketStorage {
    store: Arc<dyn ObjectStore>,
    /// `s3://bucket`, without a trailing slash.
    bucket_url: String,
}

impl std::fmt::Debug for BucketStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BucketStorage({})", self.bucket_url)
    }
}

impl BucketStorage {
    pub(crate) fn new(store: Arc<dyn ObjectStore>, bucket_url: String) -> Self {
        BucketStorage { store, bucket_url }
    }

    fn key(&self, path: &str) -> Result<Path> {
        let rest = path
            .strip_prefix(&self.bucket_url)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::DataInvalid,
                    format!(
                        "{path} is not in the warehouse's bucket {}",
                        self.bucket_url
                    ),
                )
            })?;
        Ok(Path::from(rest))
    }
}

/// An object-store failure as an Iceberg error; throttling, 5xx and network
/// failures are marked retryable, which the sink reads as transient.
fn failed(operation: &str, path: &str, e: object_store::Error) -> Error {
    let class = dynamo_cdc_object_store::classify(&e);
    let retryable = matches!(class, dynamo_cdc_object_store::FailureClass::Passing);
    Error::new(ErrorKind::Unexpected, format!("cannot {operation} {path}"))
        .with_source(e)
        .with_retryable(retryable)
}

// The storage is built in-process from the sink's config, never sent
// elsewhere; the Iceberg crate only needs the traits to be serializable.
impl Serialize for BucketStorage {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.bucket_url)
    }
}

impl<'de> Deserialize<'de> for BucketStorage {
    fn deserialize<D: Deserializer<'de>>(_: D) -> std::result::Result<Self, D::Error> {
        Err(serde::de::Error::custom(
            "a bucket storage holds a live client and cannot be deserialized",
        ))
    }
}

#[async_trait]
#[typetag::serde]
impl Storage for BucketStorage {
    async fn exists(&self, path: &str) -> Result<bool> {
        match self.store.head(&self.key(path)?).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(failed("look up", path, e)),
        }
    }

    async fn metadata(&self, path: &str) -> Result<FileMetadata> {
        let meta = self
            .store
            .head(&self.key(path)?)
            .await
            .map_err(|e| failed("look up", path, e))?;
        Ok(FileMetadata { size: meta.size })
    }

    async fn read(&self, path: &str) -> Result<Bytes> {
        let got = self
            .store
            .get(&self.key(path)?)
            .await
            .map_err(|e| failed("read", path, e))?;
        got.bytes().await.map_err(|e| failed("read", path, e))
    }

    async fn reader(&self, path: &str) -> Result<Box<dyn FileRead>> {
        Ok(Box::new(RangeReader {
            storage: self.clone(),
            path: path.to_owned(),
            key: self.key(path)?,
        }))
    }

    async fn write(&self, path: &str, bs: Bytes) -> Result<()> {
        self.store
            .put(&self.key(path)?, PutPayload::from(bs))
            .await
            .map(drop)
            .map_err(|e| failed("write", path, e))
    }

    async fn writer(&self, path: &str) -> Result<Box<dyn FileWrite>> {
        Ok(Box::new(BufferedWriter {
            storage: self.clone(),
            path: path.to_owned(),
            buffer: Vec::new(),
            closed: false,
        }))
    }

    async fn delete(&self, path: &str) -> Result<()> {
        match self.store.delete(&self.key(path)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(failed("delete", path, e)),
        }
    }

    async fn delete_prefix(&self, path: &str) -> Result<()> {
        let prefix = self.key(path)?;
        let mut listed = self.store.list(Some(&prefix));
        while let Some(meta) = listed.next().await {
            let meta = meta.map_err(|e| failed("list", path, e))?;
            match self.store.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(failed("delete", path, e)),
            }
        }
        Ok(())
    }

    async fn delete_stream(&self, mut paths: BoxStream<'static, String>) -> Result<()> {
        while let Some(path) = paths.next().await {
            self.delete(&path).await?;
        }
        Ok(())
    }

    fn new_input(&self, path: &str) -> Result<InputFile> {
        Ok(InputFile::new(Arc::new(self.clone()), path.to_owned()))
    }

    fn new_output(&self, path: &str) -> Result<OutputFile> {
        Ok(OutputFile::new(Arc::new(self.clone()), path.to_owned()))
    }
}

/// Reads ranges of one object.
struct RangeReader {
    storage: BucketStorage,
    path: String,
    key: Path,
}

#[async_trait]
impl FileRead for RangeReader {
    async fn read(&self, range: Range<u64>) -> Result<Bytes> {
        self.storage
            .store
            .get_range(&self.key, range)
            .await
            .map_err(|e| failed("read", &self.path, e))
    }
}

/// Collects what the Iceberg crate writes through a writer (manifests,
/// manifest lists: small) and puts it as one object on close.
struct BufferedWriter {
    storage: BucketStorage,
    path: String,
    buffer: Vec<u8>,
    closed: bool,
}

#[async_trait]
impl FileWrite for BufferedWriter {
    async fn write(&mut self, bs: Bytes) -> Result<()> {
        self.buffer.extend_from_slice(&bs);
        Ok(())
    }

    async fn close(&mut self) -> Result<()> {
        if self.closed {
            return Err(Error::new(ErrorKind::DataInvalid, "file already closed"));
        }
        self.closed = true;
        let bytes = Bytes::from(std::mem::take(&mut self.buffer));
        self.storage.write(&self.path, bytes).await
    }
}

/// Hands the one [`BucketStorage`] to the catalog.
#[derive(Clone, Debug)]
pub(crate) struct BucketStorageFactory(pub(crate) BucketStorage);

impl Serialize for BucketStorageFactory {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for BucketStorageFactory {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        BucketStorage::deserialize(d).map(BucketStorageFactory)
    }
}

#[typetag::serde]
impl StorageFactory for BucketStorageFactory {
    fn build(&self, _config: &StorageConfig) -> Result<Arc<dyn Storage>> {
        Ok(Arc::new(self.0.clone()))
    }
}
