//! The Iceberg crate's file I/O on buckets, through the same object-store
//! client as the Parquet sink (credentials, endpoint, failure classes), so
//! the warehouse needs no second storage stack. A local warehouse has its
//! own ([`local`](crate::local)).
//!
//! Paths come as URLs (`s3://bucket/prefix/...`). A table may live in any
//! bucket of the warehouse's store: a REST catalog places tables itself (S3
//! Tables gives each table a bucket of its own), so [`TableBuckets`] opens
//! a client per bucket on first use, all with the warehouse's options.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use dynamo_cdc_object_store::{Buckets, Objects, StoreUrl};
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

/// The buckets tables live in, each opened on first use and kept.
pub(crate) struct TableBuckets {
    buckets: Buckets,
    open: Mutex<HashMap<String, Objects>>,
}

impl std::fmt::Debug for TableBuckets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TableBuckets({:?})", self.buckets.scheme())
    }
}

impl TableBuckets {
    pub(crate) fn new(buckets: Buckets) -> Self {
        TableBuckets {
            buckets,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// The bucket `location` (a URL) is in, and its key there. Sends
    /// nothing, so async code may call it.
    ///
    /// # Errors
    /// A reason, when `location` is not a URL of the warehouse's store.
    pub(crate) fn resolve(&self, location: &str) -> std::result::Result<(Objects, Path), String> {
        let url = StoreUrl::parse(location)?;
        if url.scheme != self.buckets.scheme() {
            return Err(format!(
                "`{location}` is not in the warehouse's kind of store ({:?})",
                self.buckets.scheme()
            ));
        }
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = url.bucket_url();
        let objects = match open.get(&bucket) {
            Some(objects) => objects.clone(),
            None => {
                let whole = StoreUrl {
                    prefix: String::new(),
                    ..url.clone()
                };
                let objects = self.buckets.open(&whole).map_err(|e| e.to_string())?;
                open.insert(bucket, objects.clone());
                objects
            }
        };
        // The key as the location names it, as every other engine reading
        // the table takes it (`Path::from` would percent-encode some
        // characters, and the file would be stored under another key).
        let key = Path::parse(&url.prefix)
            .map_err(|e| format!("`{location}` does not name an object: {e}"))?;
        Ok((objects, key))
    }
}

/// Iceberg file I/O on the tables' buckets.
#[derive(Clone, Debug)]
pub(crate) struct BucketStorage {
    buckets: Arc<TableBuckets>,
}

impl BucketStorage {
    pub(crate) fn new(buckets: Arc<TableBuckets>) -> Self {
        BucketStorage { buckets }
    }

    /// The client of `path`'s bucket and the key of `path` in it.
    fn locate(&self, path: &str) -> Result<(Arc<dyn ObjectStore>, Path)> {
        let (objects, key) = self
            .buckets
            .resolve(path)
            .map_err(|reason| Error::new(ErrorKind::DataInvalid, reason))?;
        Ok((objects.store().clone(), key))
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
        s.serialize_str(&format!("{:?}", self.buckets))
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
        let (store, key) = self.locate(path)?;
        match store.head(&key).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(failed("look up", path, e)),
        }
    }

    async fn metadata(&self, path: &str) -> Result<FileMetadata> {
        let (store, key) = self.locate(path)?;
        let meta = store
            .head(&key)
            .await
            .map_err(|e| failed("look up", path, e))?;
        Ok(FileMetadata { size: meta.size })
    }

    async fn read(&self, path: &str) -> Result<Bytes> {
        let (store, key) = self.locate(path)?;
        let got = store.get(&key).await.map_err(|e| failed("read", path, e))?;
        got.bytes().await.map_err(|e| failed("read", path, e))
    }

    async fn reader(&self, path: &str) -> Result<Box<dyn FileRead>> {
        let (store, key) = self.locate(path)?;
        Ok(Box::new(RangeReader {
            store,
            path: path.to_owned(),
            key,
        }))
    }

    async fn write(&self, path: &str, bs: Bytes) -> Result<()> {
        let (store, key) = self.locate(path)?;
        store
            .put(&key, PutPayload::from(bs))
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
        let (store, key) = self.locate(path)?;
        match store.delete(&key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(failed("delete", path, e)),
        }
    }

    async fn delete_prefix(&self, path: &str) -> Result<()> {
        let (store, prefix) = self.locate(path)?;
        let mut listed = store.list(Some(&prefix));
        while let Some(meta) = listed.next().await {
            let meta = meta.map_err(|e| failed("list", path, e))?;
            match store.delete(&meta.location).await {
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
    store: Arc<dyn ObjectStore>,
    path: String,
    key: Path,
}

#[async_trait]
impl FileRead for RangeReader {
    async fn read(&self, range: Range<u64>) -> Result<Bytes> {
        self.store
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

#[cfg(test)]
mod tests {
    use dynamo_cdc_object_store::{Scheme, StoreOptions};

    use super::*;

    fn buckets() -> TableBuckets {
        let options = StoreOptions {
            region: Some("eu-west-1".to_owned()),
            endpoint_url: Some("http://127.0.0.1:1".to_owned()),
        };
        TableBuckets::new(Buckets::new(Scheme::S3, &options))
    }

    #[test]
    fn a_location_is_resolved_to_its_own_bucket_and_key() {
        let buckets = buckets();
        let (objects, key) = buckets
            .resolve("s3://abc--table-s3/data/__source_day_ms=0/f.parquet")
            .unwrap();
        assert_eq!(objects.url().bucket, "abc--table-s3");
        assert_eq!(objects.url().prefix, "");
        assert_eq!(key.as_ref(), "data/__source_day_ms=0/f.parquet");
        // One client per bucket, made once.
        let (again, _) = buckets
            .resolve("s3://abc--table-s3/metadata/m.avro")
            .unwrap();
        assert!(Arc::ptr_eq(objects.store(), again.store()));
        let (other, key) = buckets.resolve("s3://lake/warehouse/cdc/t/x").unwrap();
        assert_eq!(other.url().bucket, "lake");
        assert_eq!(key.as_ref(), "warehouse/cdc/t/x");
        assert!(!Arc::ptr_eq(objects.store(), other.store()));
        // The key is the location's, character for character, as other
        // engines reading the table take it.
        let (_, key) = buckets
            .resolve("s3://lake/données/cdc~v2/t/x#1.parquet")
            .unwrap();
        assert_eq!(key.as_ref(), "données/cdc~v2/t/x#1.parquet");
    }

    #[test]
    fn a_location_elsewhere_is_refused_with_a_reason() {
        let buckets = buckets();
        let e = buckets.resolve("gs://lake/t/x.parquet").unwrap_err();
        assert!(e.contains("gs://lake/t/x.parquet"), "{e}");
        let e = buckets.resolve("/tmp/warehouse/t/x.parquet").unwrap_err();
        assert!(e.contains("s3://"), "{e}");
    }
}
