//! The commit rules of an upload, on object_store's in-memory store: an
//! object is visible only when complete, small or multipart, and a name that
//! exists is never overwritten.

use std::io::Write as _;
use std::sync::Arc;

use dynamo_cdc_object_store::{FailureClass, InMemory, Objects, StoreUrl, Upload};

fn objects() -> Objects {
    Objects::with_store(
        Arc::new(InMemory::new()),
        StoreUrl::parse("s3://lake/cdc").unwrap(),
    )
}

/// Every object below the prefix, the staging area included.
fn names(objects: &Objects) -> Vec<String> {
    let mut names: Vec<String> = objects
        .list("")
        .unwrap()
        .into_iter()
        .map(|m| m.location.to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn a_small_file_is_one_conditional_put_made_on_finish() {
    let objects = objects();
    let mut upload = Upload::new(&objects, objects.path("t/a.parquet"));
    upload.write_all(b"hello").unwrap();
    assert!(names(&objects).is_empty(), "nothing visible before finish");
    assert_eq!(upload.finish().unwrap(), 5);
    assert_eq!(names(&objects), ["cdc/t/a.parquet"]);
    assert_eq!(
        &objects.read(&objects.path("t/a.parquet")).unwrap()[..],
        b"hello"
    );
}

#[test]
fn a_large_file_streams_in_parts_and_appears_only_when_complete() {
    let objects = objects();
    let key = objects.path("t/big.parquet");
    let mut upload = Upload::with_part_bytes(&objects, key.clone(), 4);
    upload.write_all(b"0123456789").unwrap();
    assert!(names(&objects).is_empty(), "parts sent, object not visible");
    assert_eq!(upload.finish().unwrap(), 10);
    assert_eq!(&objects.read(&key).unwrap()[..], b"0123456789");
    assert_eq!(&objects.read_range(&key, 8..10).unwrap()[..], b"89");
}

#[test]
fn an_upload_dropped_unfinished_leaves_nothing() {
    let objects = objects();
    let mut upload = Upload::with_part_bytes(&objects, objects.path("t/x.parquet"), 4);
    upload.write_all(b"0123456789").unwrap();
    drop(upload);
    assert!(names(&objects).is_empty());
}

#[test]
fn an_existing_name_is_a_collision_naming_the_object_and_is_never_overwritten() {
    let objects = objects();
    for part_bytes in [1 << 20, 4] {
        let key = objects.path(&format!("t/{part_bytes}.parquet"));
        objects.create(&key, "first".into()).unwrap();
        let mut upload = Upload::with_part_bytes(&objects, key.clone(), part_bytes);
        upload.write_all(b"second writer").unwrap();
        let e = upload.finish().unwrap_err();
        assert_eq!(e.class, FailureClass::Collision);
        assert!(e.is_transient());
        let text = e.to_string();
        assert!(
            text.contains(&format!("s3://lake/cdc/t/{part_bytes}.parquet"))
                && text.contains("another writer committed it"),
            "{text}"
        );
        assert_eq!(&objects.read(&key).unwrap()[..], b"first");
    }
}

#[test]
fn keys_are_relative_to_the_prefix() {
    let objects = objects();
    let key = objects.path("t/date=2024-05-01/s1-1-2.parquet");
    assert_eq!(key.as_ref(), "cdc/t/date=2024-05-01/s1-1-2.parquet");
    assert_eq!(
        objects.relative(&key).as_deref(),
        Some("t/date=2024-05-01/s1-1-2.parquet")
    );
    // A name with characters a key holds percent-encoded reads back as
    // written (a replay shard is named after its capture file).
    let odd = objects.path("t/date=2024-05-01/orders#1 [é]_5.parquet");
    assert_eq!(
        odd.as_ref(),
        "cdc/t/date=2024-05-01/orders%231 %5B%C3%A9%5D_5.parquet"
    );
    assert_eq!(
        objects.relative(&odd).as_deref(),
        Some("t/date=2024-05-01/orders#1 [é]_5.parquet")
    );
    assert_eq!(
        objects.describe(&key),
        "s3://lake/cdc/t/date=2024-05-01/s1-1-2.parquet"
    );
    let other = dynamo_cdc_object_store::ObjectPath::from("cdcx/t");
    assert_eq!(
        objects
            .relative(&dynamo_cdc_object_store::ObjectPath::from("cdc"))
            .as_deref(),
        Some("")
    );
    assert_eq!(objects.relative(&other), None);
    assert_eq!(objects.join("_gaps").path("t").as_ref(), "cdc/_gaps/t");
}

#[test]
fn a_fenced_large_file_is_staged_then_copied_to_its_name_and_the_staging_object_removed() {
    let objects = objects();
    let key = objects.path("t/date=2024-05-01/big.parquet");
    let mut upload = Upload::with_part_bytes(&objects, key.clone(), 4).fenced();
    upload.write_all(b"0123456789").unwrap();
    assert!(names(&objects).is_empty(), "parts sent, nothing visible");
    assert_eq!(upload.finish().unwrap(), 10);
    assert_eq!(&objects.read(&key).unwrap()[..], b"0123456789");
    assert_eq!(names(&objects), ["cdc/t/date=2024-05-01/big.parquet"]);
}

#[test]
fn a_fenced_small_file_is_one_conditional_put() {
    let objects = objects();
    let key = objects.path("t/a.parquet");
    let mut upload = Upload::new(&objects, key.clone()).fenced();
    upload.write_all(b"hello").unwrap();
    assert_eq!(upload.finish().unwrap(), 5);
    assert_eq!(names(&objects), ["cdc/t/a.parquet"]);
}

#[test]
fn a_fenced_upload_over_an_existing_name_collides_and_leaves_no_staging_object() {
    let objects = objects();
    let key = objects.path("t/big.parquet");
    objects.create(&key, "first".into()).unwrap();
    let mut upload = Upload::with_part_bytes(&objects, key.clone(), 4).fenced();
    upload.write_all(b"second writer").unwrap();
    let e = upload.finish().unwrap_err();
    assert_eq!(e.class, FailureClass::Collision);
    assert!(
        e.to_string()
            .contains("s3://lake/cdc/t/big.parquet: it already exists"),
        "{e}"
    );
    assert_eq!(&objects.read(&key).unwrap()[..], b"first");
    assert_eq!(names(&objects), ["cdc/t/big.parquet"]);
}

/// Another writer commits the name at the last moment: while this upload's
/// parts are being completed, after any look-up could have been made.
/// The fenced commit still refuses to replace it.
#[test]
fn a_fenced_commit_refuses_a_name_committed_while_its_upload_completes() {
    let inner = Arc::new(InMemory::new());
    let rival = object_store::path::Path::from("cdc/t/big.parquet");
    let store = Arc::new(rival_store::RivalAtCompletion {
        inner: inner.clone(),
        rival: rival.clone(),
    });
    let objects = Objects::with_store(store, StoreUrl::parse("s3://lake/cdc").unwrap());
    let mut upload = Upload::with_part_bytes(&objects, rival.clone(), 4).fenced();
    upload.write_all(b"zombie's late file").unwrap();
    let e = upload.finish().unwrap_err();
    assert_eq!(e.class, FailureClass::Collision, "{e}");
    assert_eq!(&objects.read(&rival).unwrap()[..], b"the new owner's file");
    assert_eq!(names(&objects), ["cdc/t/big.parquet"]);
}

/// A store whose multipart uploads, when completed, first let a rival
/// writer create `rival`.
mod rival_store {
    use std::sync::Arc;

    use futures_util::stream::BoxStream;
    use object_store::memory::InMemory;
    use object_store::path::Path;
    use object_store::{
        CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
        PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result, UploadPart,
    };

    #[derive(Debug)]
    pub(super) struct RivalAtCompletion {
        pub(super) inner: Arc<InMemory>,
        pub(super) rival: Path,
    }

    impl std::fmt::Display for RivalAtCompletion {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "RivalAtCompletion({})", self.inner)
        }
    }

    #[derive(Debug)]
    struct Completing {
        upload: Box<dyn MultipartUpload>,
        inner: Arc<InMemory>,
        rival: Path,
    }

    #[async_trait::async_trait]
    impl MultipartUpload for Completing {
        fn put_part(&mut self, data: PutPayload) -> UploadPart {
            self.upload.put_part(data)
        }
        async fn complete(&mut self) -> Result<PutResult> {
            self.inner
                .put_opts(
                    &self.rival,
                    "the new owner's file".into(),
                    PutOptions::from(PutMode::Create),
                )
                .await?;
            self.upload.complete().await
        }
        async fn abort(&mut self) -> Result<()> {
            self.upload.abort().await
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for RivalAtCompletion {
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
            Ok(Box::new(Completing {
                upload: self.inner.put_multipart_opts(location, opts).await?,
                inner: self.inner.clone(),
                rival: self.rival.clone(),
            }))
        }
        async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
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

/// A multipart upload that fails (a part, the look-up before completing, the
/// completion) is aborted before the failure is returned: its parts are
/// invisible, but billed until aborted, and each retry of an outage would
/// leave another file's worth.
#[test]
fn a_multipart_upload_that_fails_is_aborted() {
    use failing_store::{Failing, Step};
    for (step, via_copy) in [
        (Step::Part(2), true),
        (Step::Part(3), false),
        (Step::Head, false),
        (Step::Complete, false),
    ] {
        let store = Failing::new(step);
        let aborts = store.aborts.clone();
        let objects =
            Objects::with_store(Arc::new(store), StoreUrl::parse("s3://lake/cdc").unwrap());
        let mut upload = Upload::with_part_bytes(&objects, objects.path("t/a.parquet"), 4);
        // Ten bytes in parts of four: two parts while writing, the last on
        // finish.
        let failed = if via_copy {
            upload.copy_from(&mut &b"0123456789"[..]).is_err()
        } else {
            upload.write_all(b"0123456789").unwrap();
            upload.finish().is_err()
        };
        assert!(failed, "{step:?}");
        assert_eq!(
            aborts.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "{step:?}: aborted once"
        );
        assert!(names(&objects).is_empty(), "{step:?}");
    }
    // The spooled file it copies fails to read after two parts: aborted
    // too, though the store never failed.
    let store = Failing::new(Step::Part(usize::MAX));
    let aborts = store.aborts.clone();
    let objects = Objects::with_store(Arc::new(store), StoreUrl::parse("s3://lake/cdc").unwrap());
    let mut upload = Upload::with_part_bytes(&objects, objects.path("t/a.parquet"), 4);
    let mut spool =
        std::io::Read::chain(&b"01234567"[..], FailingRead(std::io::Error::other("EIO")));
    assert!(upload.copy_from(&mut spool).is_err());
    assert_eq!(aborts.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(upload.finish().is_err(), "a file without its end");
    assert!(names(&objects).is_empty());
    // Finishing an upload that lost a part is refused: it would be the
    // file without that part.
    let store = Failing::new(Step::Part(1));
    let objects = Objects::with_store(Arc::new(store), StoreUrl::parse("s3://lake/cdc").unwrap());
    let mut upload = Upload::with_part_bytes(&objects, objects.path("t/a.parquet"), 4);
    assert!(upload.write_all(b"0123456789").is_err());
    assert!(upload.write_all(b"89").is_err(), "nothing more is taken");
    let e = upload.finish().unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(names(&objects).is_empty());
}

/// A store that answers a copy before it is done (Azure's Copy Blob may):
/// the name holds the first bytes at once, and the rest only once the
/// object has been looked up twice more, copied then from the source,
/// which must still be there. The upload waits for it, and removes the
/// staging object only after.
#[test]
fn a_fenced_commit_waits_for_a_copy_the_store_answered_before_it_was_done() {
    let store = slow_copy::SlowCopy::new(4);
    let objects = Objects::with_store(Arc::new(store), StoreUrl::parse("az://lake/cdc").unwrap());
    let key = objects.path("t/big.parquet");
    let mut upload = Upload::with_part_bytes(&objects, key.clone(), 4).fenced();
    upload.write_all(b"0123456789").unwrap();
    assert_eq!(upload.finish().unwrap(), 10);
    assert_eq!(&objects.read(&key).unwrap()[..], b"0123456789");
    assert_eq!(
        names(&objects),
        ["cdc/t/big.parquet"],
        "staging object removed"
    );
}

/// See [`a_fenced_commit_waits_for_a_copy_the_store_answered_before_it_was_done`].
mod slow_copy {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures_util::stream::BoxStream;
    use object_store::memory::InMemory;
    use object_store::path::Path;
    use object_store::{
        CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
        ObjectStoreExt as _, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
    };

    #[derive(Debug)]
    pub(super) struct SlowCopy {
        inner: InMemory,
        /// Look-ups left before the copy is done.
        heads_left: AtomicUsize,
        /// The copy under way: from, to.
        copying: Mutex<Option<(Path, Path)>>,
    }

    impl SlowCopy {
        pub(super) fn new(heads: usize) -> SlowCopy {
            SlowCopy {
                inner: InMemory::new(),
                heads_left: AtomicUsize::new(heads),
                copying: Mutex::new(None),
            }
        }
    }

    impl std::fmt::Display for SlowCopy {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "SlowCopy")
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for SlowCopy {
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
            let done = options.head
                && self.heads_left.load(Ordering::SeqCst) > 0
                && self.heads_left.fetch_sub(1, Ordering::SeqCst) == 1;
            let copying = self.copying.lock().unwrap().clone();
            if let Some((from, to)) = copying.filter(|(_, to)| done && to == location) {
                // Copied from the source now: gone, the copy stays cut.
                if let Ok(all) = self.inner.get(&from).await {
                    let bytes = all.bytes().await?;
                    self.inner.put(&to, bytes.into()).await?;
                }
                *self.copying.lock().unwrap() = None;
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
            // The first bytes now, the rest later.
            let head = self.inner.get(from).await?.bytes().await?.slice(0..3);
            self.inner
                .put_opts(
                    to,
                    head.into(),
                    PutOptions::from(object_store::PutMode::Create),
                )
                .await?;
            let _ = options;
            *self.copying.lock().unwrap() = Some((from.clone(), to.clone()));
            Ok(())
        }
    }
}

/// A reader that fails with its error.
struct FailingRead(std::io::Error);

impl std::io::Read for FailingRead {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        Err(std::io::Error::new(self.0.kind(), self.0.to_string()))
    }
}

/// A store whose multipart uploads fail at one step, counting aborts.
mod failing_store {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures_util::stream::BoxStream;
    use object_store::memory::InMemory;
    use object_store::path::Path;
    use object_store::{
        CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
        PutMultipartOptions, PutOptions, PutPayload, PutResult, Result, UploadPart,
    };

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(super) enum Step {
        /// The n-th part (1-based) fails.
        Part(usize),
        /// Looking the name up fails.
        Head,
        /// Completing fails.
        Complete,
    }

    fn down() -> object_store::Error {
        object_store::Error::Generic {
            store: "test",
            source: "503 Service Unavailable".into(),
        }
    }

    #[derive(Debug)]
    pub(super) struct Failing {
        inner: Arc<InMemory>,
        step: Step,
        pub(super) aborts: Arc<AtomicUsize>,
    }

    impl Failing {
        pub(super) fn new(step: Step) -> Failing {
            Failing {
                inner: Arc::new(InMemory::new()),
                step,
                aborts: Arc::new(AtomicUsize::new(0)),
            }
        }
    }

    impl std::fmt::Display for Failing {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "Failing({:?})", self.step)
        }
    }

    #[derive(Debug)]
    struct Uploading {
        upload: Box<dyn MultipartUpload>,
        step: Step,
        parts: usize,
        aborts: Arc<AtomicUsize>,
    }

    #[async_trait::async_trait]
    impl MultipartUpload for Uploading {
        fn put_part(&mut self, data: PutPayload) -> UploadPart {
            self.parts += 1;
            if self.step == Step::Part(self.parts) {
                return Box::pin(futures_util::future::ready(Err(down())));
            }
            self.upload.put_part(data)
        }
        async fn complete(&mut self) -> Result<PutResult> {
            if self.step == Step::Complete {
                return Err(down());
            }
            self.upload.complete().await
        }
        async fn abort(&mut self) -> Result<()> {
            self.aborts.fetch_add(1, Ordering::SeqCst);
            self.upload.abort().await
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for Failing {
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
            Ok(Box::new(Uploading {
                upload: self.inner.put_multipart_opts(location, opts).await?,
                step: self.step,
                parts: 0,
                aborts: self.aborts.clone(),
            }))
        }
        async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
            if options.head && self.step == Step::Head {
                return Err(down());
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

/// `holds` tells an object holding exactly some bytes (a create whose
/// answer was lost, found by its retry) from anything else under the name.
#[test]
fn holds_compares_an_object_with_bytes_part_by_part() {
    let objects = objects();
    let key = objects.path("t/a.parquet");
    let bytes: Vec<u8> = (0..20_000_000u32).map(|i| (i % 251) as u8).collect();
    let size = bytes.len() as u64;
    assert!(
        !objects.holds(&key, &mut &bytes[..], size).unwrap(),
        "no object"
    );
    objects.create(&key, bytes.clone().into()).unwrap();
    assert!(objects.holds(&key, &mut &bytes[..], size).unwrap());
    let mut other = bytes.clone();
    other[17_000_000] ^= 1; // in the third part of eight MiB
    assert!(!objects.holds(&key, &mut &other[..], size).unwrap());
    assert!(
        !objects.holds(&key, &mut &bytes[..10], 10).unwrap(),
        "another size"
    );
}
