//! Report files in an object store (DESIGN.md, "Growing past one machine"): an S3-compatible
//! bucket (`ORGD_REPORTS_URL=s3://bucket/prefix`, configured by the standard `AWS_*`
//! variables) or `object_store`'s in-memory store (`memory://`, tests).
//!
//! Each upload writes an object of its own, `{prefix}/{organizationId}/{taskId}/{uploadId}`,
//! which the file's row then points to: a small file in one PUT, a larger one streamed in
//! multipart parts, aborted on any failure. Keys are built from validated parts only, and a
//! key read back from a row is checked to lie below its organization and execution.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::{Path, PathPart};
use object_store::{
    BackoffConfig, ObjectStore, ObjectStoreExt, PutPayloadMut, RetryConfig, WriteMultipart,
};
use orgd_core::executions::TaskId;
use orgd_core::reports::{
    Listing, Location, PendingUpload, ReportKey, ReportStorage, StorageError, StoredFile,
    StoredReport,
};

pub use object_store;

/// Files up to this size go in one PUT; larger ones in parts of this size (S3's minimum
/// part is 5 MiB).
const PART_BYTES: usize = 5 * 1024 * 1024;
/// Parts of one upload in flight at once: with the part being filled, an upload holds at
/// most three parts in memory.
const PARTS_IN_FLIGHT: usize = 2;

fn unavailable(e: object_store::Error) -> StorageError {
    StorageError::Unavailable(Box::new(e))
}

/// Report files in an object store, below `prefix`.
pub struct ObjectReportStorage {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
}

impl ObjectReportStorage {
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str) -> Self {
        Self {
            store,
            prefix: Path::from(prefix),
        }
    }

    /// The bucket of `s3://bucket/prefix`, configured by the `AWS_*` variables
    /// (`AWS_ENDPOINT_URL`/`AWS_ENDPOINT`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP`, ...). A failing request is retried briefly:
    /// an upload waits seconds, not minutes, before it answers 503.
    pub fn s3(bucket: &str, prefix: &str) -> Result<Self, StorageError> {
        let store = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 3,
                retry_timeout: Duration::from_secs(10),
            })
            .build()
            .map_err(unavailable)?;
        Ok(Self::new(Arc::new(store), prefix))
    }

    /// `{prefix}/{object}`.
    fn path(&self, object: &str) -> Path {
        self.prefix
            .parts()
            .chain(Path::from(object).parts())
            .collect()
    }

    /// `{prefix}/{parts...}`.
    fn below(&self, parts: &[&str]) -> Path {
        self.prefix
            .parts()
            .chain(parts.iter().map(|p| PathPart::from(*p)))
            .collect()
    }

    /// Deletes everything below `prefix`.
    async fn delete_below(&self, prefix: &Path) -> Result<(), StorageError> {
        let paths = self
            .store
            .list(Some(prefix))
            .map_ok(|meta| meta.location)
            .boxed();
        self.store
            .delete_stream(paths)
            .try_collect::<Vec<_>>()
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

/// An upload's own object key, `{organizationId}/{taskId}/{uploadId}`.
fn new_object(key: &ReportKey<'_>) -> String {
    format!(
        "{}/{}/{}",
        key.org_id,
        key.task_id.as_str(),
        orgd_core::ids::random_hex(12)
    )
}

/// An upload id as `new_object` makes them.
fn is_upload_id(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_hexdigit())
}

#[async_trait::async_trait]
impl ReportStorage for ObjectReportStorage {
    async fn put(&self, key: ReportKey<'_>) -> Result<Box<dyn PendingUpload>, StorageError> {
        let object = new_object(&key);
        Ok(Box::new(ObjectUpload {
            store: self.store.clone(),
            path: self.path(&object),
            object,
            state: UploadState::Buffering(PutPayloadMut::new()),
        }))
    }

    async fn get(
        &self,
        key: ReportKey<'_>,
        object: Option<&str>,
    ) -> Result<Option<StoredReport>, StorageError> {
        let below = format!("{}/{}/", key.org_id, key.task_id.as_str());
        let Some(object) = object.filter(|o| o.strip_prefix(&below).is_some_and(is_upload_id))
        else {
            return Ok(None);
        };
        let found = match self.store.get(&self.path(object)).await {
            Ok(found) => found,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(unavailable(e)),
        };
        let size = found.meta.size;
        let body = found.into_stream().map_err(io::Error::other).boxed();
        Ok(Some(StoredReport { body, size }))
    }

    async fn list(&self, org_id: &str) -> Result<Listing, StorageError> {
        let below = self.below(&[org_id]);
        let objects: Vec<_> = self
            .store
            .list(Some(&below))
            .try_collect()
            .await
            .map_err(unavailable)?;
        let depth = below.parts().count();
        let mut listing = Listing::default();
        for meta in objects {
            let parts: Vec<_> = meta.location.parts().skip(depth).collect();
            let parsed = match parts.as_slice() {
                [task, upload] if is_upload_id(upload.as_ref()) => TaskId::parse(task.as_ref()),
                _ => None,
            };
            match parsed {
                Some(task) => listing.files.push(StoredFile {
                    task_id: task.as_str().to_string(),
                    location: Location::Object {
                        key: format!("{org_id}/{}/{}", task.as_str(), parts[1].as_ref()),
                        modified_at: meta.last_modified.timestamp_millis(),
                    },
                    size: i64::try_from(meta.size).unwrap_or(i64::MAX),
                }),
                None => listing.skipped.push(meta.location.to_string()),
            }
        }
        Ok(listing)
    }

    async fn delete(&self, org_id: &str, task_id: &TaskId) -> Result<(), StorageError> {
        self.delete_below(&self.below(&[org_id, task_id.as_str()]))
            .await
    }

    async fn remove_object(&self, object: &str) -> Result<(), StorageError> {
        match self.store.delete(&self.path(object)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn check(&self) -> Result<(), StorageError> {
        self.store
            .list_with_delimiter(Some(&self.prefix))
            .await
            .map(drop)
            .map_err(unavailable)
    }
}

enum UploadState {
    /// Up to one part, held until it is known whether the file fits in one PUT.
    Buffering(PutPayloadMut),
    Multipart(WriteMultipart),
    /// The object exists (or may: a failed PUT is removed too) but no row points to it.
    Stored,
    /// Recorded: the object now belongs to the file's row.
    Published,
}

struct ObjectUpload {
    store: Arc<dyn ObjectStore>,
    path: Path,
    object: String,
    state: UploadState,
}

#[async_trait::async_trait]
impl PendingUpload for ObjectUpload {
    async fn write(&mut self, chunk: &[u8]) -> Result<(), StorageError> {
        match &mut self.state {
            UploadState::Buffering(buffer)
                if buffer.content_length() + chunk.len() <= PART_BYTES =>
            {
                buffer.extend_from_slice(chunk);
            }
            UploadState::Buffering(buffer) => {
                let buffered = std::mem::take(buffer).freeze();
                let upload = self
                    .store
                    .put_multipart(&self.path)
                    .await
                    .map_err(unavailable)?;
                let mut parts = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
                buffered.into_iter().for_each(|bytes| parts.put(bytes));
                parts.write(chunk);
                self.state = UploadState::Multipart(parts);
            }
            UploadState::Multipart(parts) => {
                // Back-pressure: the body is read no faster than parts are stored.
                parts
                    .wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(unavailable)?;
                parts.write(chunk);
            }
            UploadState::Stored | UploadState::Published => {
                return Err(StorageError::Io(io::Error::other(
                    "write after the upload completed",
                )));
            }
        }
        Ok(())
    }

    async fn complete(&mut self) -> Result<Option<String>, StorageError> {
        let stored = match std::mem::replace(&mut self.state, UploadState::Stored) {
            UploadState::Buffering(buffer) => {
                self.store.put(&self.path, buffer.freeze()).await.map(drop)
            }
            // `finish` aborts the multipart upload itself when it fails.
            UploadState::Multipart(parts) => parts.finish().await.map(drop),
            UploadState::Stored | UploadState::Published => Ok(()),
        };
        stored.map_err(unavailable)?;
        Ok(Some(self.object.clone()))
    }

    async fn publish(mut self: Box<Self>) -> Result<(), StorageError> {
        self.state = UploadState::Published;
        Ok(())
    }
}

impl Drop for ObjectUpload {
    /// Not recorded: the parts or the object go (a failure here leaves a leftover that
    /// `orgd usage reconcile` removes).
    fn drop(&mut self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let path = self.path.clone();
        match std::mem::replace(&mut self.state, UploadState::Published) {
            UploadState::Multipart(parts) => {
                runtime.spawn(async move {
                    if let Err(e) = parts.abort().await {
                        tracing::warn!(error = %e, %path, "could not abort a report upload");
                    }
                });
            }
            UploadState::Stored => {
                let store = self.store.clone();
                runtime.spawn(async move {
                    if let Err(e) = store.delete(&path).await {
                        tracing::warn!(error = %e, %path, "could not remove an unrecorded report");
                    }
                });
            }
            UploadState::Buffering(_) | UploadState::Published => {}
        }
    }
}

/// Test support: an object store that fails its writes and reads on demand, as an S3
/// answering 500 would (listing, deleting and aborting keep working, so a test can see what
/// was left behind).
#[cfg(feature = "testing")]
pub mod faults {
    use std::fmt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use futures_util::stream::BoxStream;
    use object_store::path::Path;
    use object_store::{
        CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
        PutMultipartOptions, PutOptions, PutPayload, PutResult, Result, UploadPart,
    };

    /// Calls left before the store fails; `usize::MAX` never fails.
    #[derive(Debug, Clone)]
    pub struct Faults(Arc<AtomicUsize>);

    impl Faults {
        /// From now on, the write or read after the next `calls` ones fails (and every one
        /// after it).
        pub fn fail_after(&self, calls: usize) {
            self.0.store(calls, Ordering::SeqCst);
        }

        pub fn heal(&self) {
            self.0.store(usize::MAX, Ordering::SeqCst);
        }

        fn check(&self) -> Result<()> {
            let left = self
                .0
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                    (left != usize::MAX && left > 0).then(|| left - 1)
                });
            match left {
                Ok(_) => Ok(()),
                Err(usize::MAX) => Ok(()),
                Err(_) => Err(object_store::Error::Generic {
                    store: "faulty",
                    source: "injected fault: the server answered 500".into(),
                }),
            }
        }
    }

    #[derive(Debug)]
    pub struct FaultyStore {
        inner: Arc<dyn ObjectStore>,
        faults: Faults,
    }

    impl FaultyStore {
        pub fn new(inner: Arc<dyn ObjectStore>) -> (Self, Faults) {
            let faults = Faults(Arc::new(AtomicUsize::new(usize::MAX)));
            (
                Self {
                    inner,
                    faults: faults.clone(),
                },
                faults,
            )
        }
    }

    impl fmt::Display for FaultyStore {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "FaultyStore({})", self.inner)
        }
    }

    #[async_trait]
    impl ObjectStore for FaultyStore {
        async fn put_opts(
            &self,
            location: &Path,
            payload: PutPayload,
            opts: PutOptions,
        ) -> Result<PutResult> {
            self.faults.check()?;
            self.inner.put_opts(location, payload, opts).await
        }

        async fn put_multipart_opts(
            &self,
            location: &Path,
            opts: PutMultipartOptions,
        ) -> Result<Box<dyn MultipartUpload>> {
            self.faults.check()?;
            let inner = self.inner.put_multipart_opts(location, opts).await?;
            Ok(Box::new(FaultyUpload {
                inner,
                faults: self.faults.clone(),
            }))
        }

        async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
            self.faults.check()?;
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
            self.faults.check()?;
            self.inner.list_with_delimiter(prefix).await
        }

        async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
            self.faults.check()?;
            self.inner.copy_opts(from, to, options).await
        }
    }

    #[derive(Debug)]
    struct FaultyUpload {
        inner: Box<dyn MultipartUpload>,
        faults: Faults,
    }

    #[async_trait]
    impl MultipartUpload for FaultyUpload {
        fn put_part(&mut self, data: PutPayload) -> UploadPart {
            match self.faults.check() {
                Ok(()) => self.inner.put_part(data),
                Err(e) => Box::pin(async move { Err(e) }),
            }
        }

        async fn complete(&mut self) -> Result<PutResult> {
            self.faults.check()?;
            self.inner.complete().await
        }

        async fn abort(&mut self) -> Result<()> {
            self.inner.abort().await
        }
    }
}
