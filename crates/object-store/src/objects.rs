//! [`Objects`]: a synchronous handle on one bucket and prefix, and
//! [`Buckets`], which opens handles on any bucket of one store.
//!
//! The sinks and the dead-letter store are synchronous (they run on the
//! pipeline's thread), so each handle owns a small current-thread tokio
//! runtime and blocks on every request. Requests from one handle are
//! sequential; that keeps memory bounded (one part in flight) and the code
//! simple, and the pipeline commits a file at a time anyway.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt as _;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt as _, PutMode, PutOptions};

use crate::aws_chain::Chain;
use crate::connect::{StoreOptions, build};
use crate::failure::{FailureClass, ObjectError, classify};
use crate::url::{Scheme, StoreUrl};

/// One bucket and prefix, with blocking calls. Clones share the client and
/// the runtime.
#[derive(Clone)]
pub struct Objects {
    store: Arc<dyn ObjectStore>,
    runtime: Arc<tokio::runtime::Runtime>,
    url: StoreUrl,
}

impl std::fmt::Debug for Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Objects({})", self.url)
    }
}

/// How often a thread waiting on the store says it is alive: well within
/// `/healthz`'s 30 s.
const SIGN_OF_LIFE_EVERY: Duration = Duration::from_secs(5);

/// Runs `future` on `runtime` to completion, giving `sign` of life every
/// `every` while it waits and once when it is done: for calls that may wait
/// out an outage (a store's retries, a catalog), which `/healthz` must not
/// take for a hang.
pub fn block_on_saying<F: std::future::Future>(
    runtime: &tokio::runtime::Runtime,
    future: F,
    every: Duration,
    sign: fn(),
) -> F::Output {
    let output = runtime.block_on(async {
        let mut future = std::pin::pin!(future);
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                output = &mut future => break output,
                _ = tick.tick() => sign(),
            }
        }
    });
    sign();
    output
}

/// The runtime a handle blocks on.
///
/// # Panics
/// When the runtime cannot be created (no threads or file descriptors left
/// to the process).
fn new_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread tokio runtime")
}

/// Any bucket of one kind of store, reached with one set of options and one
/// credential chain: for data whose place a catalog chooses (an Iceberg
/// REST catalog may put each table in a bucket of its own, as S3 Tables
/// does). Clones share the chain and the runtime.
#[derive(Clone)]
pub struct Buckets {
    scheme: Scheme,
    options: StoreOptions,
    chain: Option<Chain>,
    runtime: Arc<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for Buckets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Buckets({:?}, {:?})", self.scheme, self.options)
    }
}

impl Buckets {
    /// Prepares clients for `scheme` with `options`; for S3 it loads the
    /// AWS SDK's credential chain (which sends nothing until credentials are
    /// first needed).
    ///
    /// # Panics
    /// When called on an async runtime's thread (it blocks), or when the
    /// runtime cannot be created.
    pub fn new(scheme: Scheme, options: &StoreOptions) -> Buckets {
        let runtime = Arc::new(new_runtime());
        let chain = (scheme == Scheme::S3)
            .then(|| runtime.block_on(crate::aws_chain::load(options.region.as_deref())));
        Buckets {
            scheme,
            options: options.clone(),
            chain,
            runtime,
        }
    }

    /// The kind of store these buckets are in.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// A handle on the bucket and prefix `url` names. Nothing is sent: a
    /// missing bucket or denied access shows at the first request. Safe to
    /// call from async code.
    ///
    /// # Errors
    /// A fatal [`ObjectError`] when `url` is in another kind of store, or
    /// when object_store refuses the settings.
    pub fn open(&self, url: &StoreUrl) -> Result<Objects, ObjectError> {
        let refused = |source| ObjectError {
            class: FailureClass::Settings,
            operation: "configure a client for",
            object: url.to_string(),
            bucket: url.bucket_url(),
            source: Box::new(source),
        };
        if url.scheme != self.scheme {
            return Err(refused(object_store::Error::NotSupported {
                source: format!(
                    "the client is configured for {:?} buckets, not {:?}",
                    self.scheme, url.scheme
                )
                .into(),
            }));
        }
        let store = build(url, &self.options, self.chain.clone()).map_err(refused)?;
        Ok(Objects {
            store,
            runtime: self.runtime.clone(),
            url: url.clone(),
        })
    }
}

impl Objects {
    /// Connects to the store `url` names and checks, by listing the prefix,
    /// that the bucket exists and may be read, so that a missing bucket or
    /// denied access stops the run before anything is read.
    ///
    /// # Errors
    /// A fatal [`ObjectError`] for a missing bucket or denied access (naming
    /// both), a transient one when the store cannot be reached.
    pub fn connect(url: &StoreUrl, options: &StoreOptions) -> Result<Objects, ObjectError> {
        let objects = Buckets::new(url.scheme, options).open(url)?;
        objects.check_access()?;
        Ok(objects)
    }

    /// A handle on a store already built (tests use object_store's
    /// `InMemory`). Nothing is checked.
    ///
    /// # Panics
    /// When the runtime cannot be created (no threads or file descriptors
    /// left to the process).
    pub fn with_store(store: Arc<dyn ObjectStore>, url: StoreUrl) -> Objects {
        Objects {
            store,
            runtime: Arc::new(new_runtime()),
            url,
        }
    }

    /// The URL of this handle's prefix.
    pub fn url(&self) -> &StoreUrl {
        &self.url
    }

    /// A handle on `segment` below this prefix, sharing client and runtime.
    pub fn join(&self, segment: &str) -> Objects {
        Objects {
            url: self.url.join(segment),
            ..self.clone()
        }
    }

    /// The key of `relative` (`a/b.parquet`) under the prefix.
    pub fn path(&self, relative: &str) -> Path {
        let full = if self.url.prefix.is_empty() {
            relative.to_owned()
        } else {
            format!("{}/{relative}", self.url.prefix)
        };
        Path::from(full)
    }

    /// `key` relative to the prefix, as it was given to [`Objects::path`],
    /// or `None` when it is not below the prefix.
    ///
    /// A key holds each segment percent-encoded (`a#1` is stored as
    /// `a%231`): the segments are decoded, so that a name read back from a
    /// listing is the name written.
    pub fn relative(&self, key: &Path) -> Option<String> {
        let segments = key.prefix_match(&Path::from(self.url.prefix.as_str()))?;
        let decoded: Vec<String> = segments
            .map(|s| {
                percent_encoding::percent_decode_str(s.as_ref())
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .collect();
        Some(decoded.join("/"))
    }

    /// `key` as a URL, for messages.
    pub fn describe(&self, key: &Path) -> String {
        format!("{}/{key}", self.url.bucket_url())
    }

    pub(crate) fn fail(
        &self,
        operation: &'static str,
        key: &Path,
    ) -> impl FnOnce(object_store::Error) -> ObjectError {
        let object = self.describe(key);
        let bucket = self.url.bucket_url();
        move |source| ObjectError {
            class: classify(&source),
            operation,
            object,
            bucket,
            source: Box::new(source),
        }
    }

    /// Runs a future of this handle's store to completion.
    pub(crate) fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.block_on_ticking(
            future,
            SIGN_OF_LIFE_EVERY,
            dynamo_cdc_core::alive::still_waiting,
        )
    }

    /// [`Objects::block_on`], giving `sign` of life every `every` while
    /// the future waits, and once it is done.
    fn block_on_ticking<F: std::future::Future>(
        &self,
        future: F,
        every: Duration,
        sign: fn(),
    ) -> F::Output {
        // One request may wait minutes inside the store's own retries (30 s
        // a try, up to three minutes in all) when a bucket stops answering:
        // waiting on an answer is not a hang, so `/healthz` hears from this
        // thread meanwhile, and a probe does not restart a process that is
        // riding out an outage. An answer is progress too: a start that
        // lists a large dataset or reads many objects is alive while it does.
        block_on_saying(&self.runtime, future, every, sign)
    }

    /// The async client, for code that runs on its own runtime (the
    /// Iceberg sink's file I/O).
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Lists the prefix once (one page is enough to prove access), so that
    /// a missing bucket or denied access shows before anything is written.
    ///
    /// # Errors
    /// A fatal [`ObjectError`] for a missing bucket or denied access, a
    /// transient one when the store cannot be reached.
    pub fn check_access(&self) -> Result<(), ObjectError> {
        let prefix = self.path("");
        let prefix = (!prefix.as_ref().is_empty()).then_some(prefix);
        let key = prefix.clone().unwrap_or_default();
        self.block_on(self.store.list_with_delimiter(prefix.as_ref()))
            .map(drop)
            .map_err(self.fail("list", &key))
    }

    /// Removes `key`; a key that is not there is not an error.
    ///
    /// # Errors
    /// When the store refuses or cannot be reached.
    pub fn delete(&self, key: &Path) -> Result<(), ObjectError> {
        match self.block_on(self.store.delete(key)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.fail("delete", key)(e)),
        }
    }

    /// Every object below `relative` (recursively).
    ///
    /// # Errors
    /// When the store cannot be listed.
    pub fn list(&self, relative: &str) -> Result<Vec<ObjectMeta>, ObjectError> {
        let prefix = self.path(relative);
        let prefix = (!prefix.as_ref().is_empty()).then_some(prefix);
        let key = prefix.clone().unwrap_or_default();
        self.block_on(self.store.list(prefix.as_ref()).try_collect())
            .map_err(self.fail("list", &key))
    }

    /// Creates `key` with `bytes` if no object has that name; the object is
    /// visible whole or not at all.
    ///
    /// # Errors
    /// A collision ([`FailureClass::Collision`]) when the name exists, or
    /// the store's failure.
    pub fn create(&self, key: &Path, bytes: Bytes) -> Result<(), ObjectError> {
        let options = PutOptions::from(PutMode::Create);
        self.block_on(self.store.put_opts(key, bytes.into(), options))
            .map(drop)
            .map_err(self.fail("create", key))
    }

    /// Writes `key` with `bytes`, replacing what is there; readers see the
    /// old object or the new one, whole.
    ///
    /// # Errors
    /// The store's failure.
    pub fn put(&self, key: &Path, bytes: Bytes) -> Result<(), ObjectError> {
        self.block_on(self.store.put(key, bytes.into()))
            .map(drop)
            .map_err(self.fail("put", key))
    }

    /// Whether `key` exists.
    ///
    /// # Errors
    /// When the store cannot answer.
    pub fn exists(&self, key: &Path) -> Result<bool, ObjectError> {
        match self.block_on(self.store.head(key)) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.fail("look up", key)(e)),
        }
    }

    /// Whether `key` holds exactly the `size` bytes `reader` gives, read
    /// and compared a part at a time. A create-if-absent that was applied
    /// but whose answer was lost is retried by the client and refused as
    /// a collision; this tells that from another writer's object.
    ///
    /// # Errors
    /// When the store cannot answer, or `reader` fails (as an I/O error).
    pub fn holds(
        &self,
        key: &Path,
        reader: &mut impl std::io::Read,
        size: u64,
    ) -> Result<bool, ObjectError> {
        const PART: u64 = 8 << 20;
        match self.block_on(self.store.head(key)) {
            Ok(meta) if meta.size == size => {}
            Ok(_) | Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(self.fail("look up", key)(e)),
        }
        let mut ours = vec![0u8; usize::try_from(PART.min(size)).unwrap_or(0)];
        let mut at = 0;
        while at < size {
            let end = (at + PART).min(size);
            let theirs = self.read_range(key, at..end)?;
            let ours = &mut ours[..theirs.len()];
            reader.read_exact(ours).map_err(|e| {
                self.fail("compare", key)(object_store::Error::Generic {
                    store: "local",
                    source: Box::new(e),
                })
            })?;
            if *ours != theirs[..] {
                return Ok(false);
            }
            at = end;
        }
        Ok(true)
    }

    /// The whole object.
    ///
    /// # Errors
    /// When it cannot be read.
    pub fn read(&self, key: &Path) -> Result<Bytes, ObjectError> {
        self.block_on(async { self.store.get(key).await?.bytes().await })
            .map_err(self.fail("read", key))
    }

    /// The whole object, or `None` when there is no such object.
    ///
    /// # Errors
    /// When it cannot be read.
    pub fn read_if_exists(&self, key: &Path) -> Result<Option<Bytes>, ObjectError> {
        match self.block_on(async { self.store.get(key).await?.bytes().await }) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.fail("read", key)(e)),
        }
    }

    /// The bytes `range` of the object.
    ///
    /// # Errors
    /// When they cannot be read.
    pub fn read_range(
        &self,
        key: &Path,
        range: std::ops::Range<u64>,
    ) -> Result<Bytes, ObjectError> {
        self.block_on(self.store.get_range(key, range))
            .map_err(self.fail("read", key))
    }

    /// The bytes of each `(key, range)`, in order, read up to
    /// [`CONCURRENT_READS`] at a time: a start reads one footer per shard
    /// the dataset ever had, which one at a time took minutes on a long
    /// history.
    pub fn read_ranges(
        &self,
        ranges: &[(Path, std::ops::Range<u64>)],
    ) -> Vec<Result<Bytes, ObjectError>> {
        use futures_util::StreamExt as _;
        let reads = futures_util::stream::iter(ranges.iter().map(|(key, range)| async move {
            self.store
                .get_range(key, range.clone())
                .await
                .map_err(self.fail("read", key))
        }))
        .buffered(CONCURRENT_READS)
        .collect::<Vec<_>>();
        self.block_on(reads)
    }
}

/// How many reads [`Objects::read_ranges`] keeps in flight.
const CONCURRENT_READS: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    /// Ranges are read several at a time, and come back in order.
    #[test]
    fn ranges_are_read_together_and_returned_in_order() {
        let store = Arc::new(slow::Slow::default());
        let objects = Objects::with_store(store.clone(), StoreUrl::parse("s3://lake/cdc").unwrap());
        let ranges: Vec<(Path, std::ops::Range<u64>)> = (0..40)
            .map(|i| {
                let key = objects.path(&format!("t/{i}"));
                objects
                    .create(&key, format!("object {i:02}").into())
                    .unwrap();
                (key, 7..9)
            })
            .collect();
        let read: Vec<String> = objects
            .read_ranges(&ranges)
            .into_iter()
            .map(|r| String::from_utf8(r.unwrap().to_vec()).unwrap())
            .collect();
        let want: Vec<String> = (0..40).map(|i| format!("{i:02}")).collect();
        assert_eq!(read, want);
        let most = store.most.load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            (2..=CONCURRENT_READS).contains(&most),
            "{most} reads in flight at most"
        );
        // A read that fails is its own error, the others read.
        let mut ranges = ranges;
        ranges[3].0 = objects.path("t/missing");
        let read = objects.read_ranges(&ranges);
        assert!(read[3].is_err() && read.iter().filter(|r| r.is_ok()).count() == 39);
    }

    /// A store whose ranged reads take a while, counting those in flight.
    mod slow {
        use std::sync::atomic::{AtomicUsize, Ordering};

        use futures_util::stream::BoxStream;
        use object_store::memory::InMemory;
        use object_store::path::Path;
        use object_store::{
            CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta,
            ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
        };

        #[derive(Debug, Default)]
        pub(super) struct Slow {
            inner: InMemory,
            now: AtomicUsize,
            pub(super) most: AtomicUsize,
        }

        impl std::fmt::Display for Slow {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "Slow")
            }
        }

        #[async_trait::async_trait]
        impl ObjectStore for Slow {
            async fn put_opts(
                &self,
                location: &Path,
                payload: PutPayload,
                opts: PutOptions,
            ) -> Result<PutResult> {
                self.inner.put_opts(location, payload, opts).await
            }
            async fn put_multipart_opts(
                &self,
                location: &Path,
                opts: PutMultipartOptions,
            ) -> Result<Box<dyn MultipartUpload>> {
                self.inner.put_multipart_opts(location, opts).await
            }
            async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
                if options.range.is_some() {
                    let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
                    self.most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    self.now.fetch_sub(1, Ordering::SeqCst);
                }
                self.inner.get_opts(location, options).await
            }
            fn delete_stream(
                &self,
                locations: BoxStream<'static, Result<Path>>,
            ) -> BoxStream<'static, Result<Path>> {
                self.inner.delete_stream(locations)
            }
            fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
                self.inner.list(prefix)
            }
            async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
                self.inner.list_with_delimiter(prefix).await
            }
            async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
                self.inner.copy_opts(from, to, options).await
            }
        }
    }

    /// A client that cannot be built is a settings problem, fatal, and not
    /// put down to credentials.
    #[test]
    fn a_client_that_cannot_be_built_is_a_settings_failure() {
        let buckets = Buckets::new(Scheme::Gcs, &StoreOptions::default());
        let url = StoreUrl::parse("s3://lake/cdc").unwrap();
        let e = buckets
            .open(&url)
            .expect_err("a GCS client for an s3:// URL");
        assert_eq!(e.class, FailureClass::Settings);
        assert!(!e.is_transient());
        let text = e.to_string();
        assert!(
            text.starts_with("cannot configure a client for s3://lake/cdc"),
            "{text}"
        );
        assert!(!text.contains("credentials"), "{text}");
    }

    /// A thread waiting on a slow answer says it is alive while it waits,
    /// not only once the answer comes.
    #[test]
    fn a_slow_answer_is_waited_for_with_signs_of_life() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static SIGNS: AtomicUsize = AtomicUsize::new(0);
        fn sign() {
            SIGNS.fetch_add(1, Ordering::SeqCst);
        }
        let objects = Objects::with_store(
            Arc::new(object_store::memory::InMemory::new()),
            StoreUrl::parse("s3://lake/cdc").unwrap(),
        );
        objects.block_on_ticking(
            async { tokio::time::sleep(Duration::from_millis(600)).await },
            Duration::from_millis(50),
            sign,
        );
        // A tick at the start and every 50 ms, then one for the answer;
        // without ticks there would be that last one only.
        let signs = SIGNS.load(Ordering::SeqCst);
        assert!(signs >= 6, "{signs} signs of life in a 600 ms wait");
    }
}
