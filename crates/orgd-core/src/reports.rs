//! Where report bytes live, behind a narrow trait so an object store can replace the local
//! directory when instances stop sharing a disk (DESIGN.md, "Growing past one machine").
//! The local implementation keeps `<reports>/<organizationId>/<taskId>/<path>` and never
//! follows a symlink: every directory on the way is checked, none is trusted. Object stores
//! (orgd-providers) keep each upload under a key of its own, which the file's row points to.
//!
//! Every upload takes one flow: `put`, `write`s, `complete` (bytes stored, not yet served),
//! then `publish` inside the transaction that records the row, and `remove_object` of the
//! replaced object once that transaction committed. Dropping an upload before `publish`
//! discards what it wrote.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_core::Stream;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

use crate::executions::{ReportPath, TaskId, UPLOAD_TEMP_PREFIX};

/// One report file: its organization, execution and relative path (all validated).
#[derive(Debug, Clone, Copy)]
pub struct ReportKey<'a> {
    pub org_id: &'a str,
    pub task_id: &'a TaskId,
    pub path: &'a ReportPath,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The path cannot be used: a symlink or a file stands where a directory must be.
    #[error("{0}")]
    Refused(&'static str),
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The store did not answer, or failed: the request may succeed when retried.
    #[error("report storage unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A file's bytes, read as they are sent.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// A stored file's bytes, ready to be sent.
pub struct StoredReport {
    pub body: ByteStream,
    pub size: u64,
}

/// Where a listed file's bytes are, as its row records them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// At its path (the local directory).
    Path(String),
    /// In an object of its own, named by `key` (relative to the store's prefix), last
    /// written at `modified_at` (ms).
    Object { key: String, modified_at: i64 },
}

/// A file found by `list`, below the organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    pub task_id: String,
    pub location: Location,
    pub size: i64,
}

/// What `list` found besides the files: entries it did not count (symlinks, uploads in
/// progress, names no upload could have produced).
#[derive(Debug, Default)]
pub struct Listing {
    pub files: Vec<StoredFile>,
    pub skipped: Vec<String>,
}

#[async_trait::async_trait]
pub trait ReportStorage: Send + Sync + 'static {
    /// Starts writing a file. Nothing is served at the key until `publish`; dropping the
    /// upload discards what was written.
    async fn put(&self, key: ReportKey<'_>) -> Result<Box<dyn PendingUpload>, StorageError>;
    /// The file at `key`, or `None`; `object` is the object its row points to, if any.
    async fn get(
        &self,
        key: ReportKey<'_>,
        object: Option<&str>,
    ) -> Result<Option<StoredReport>, StorageError>;
    /// Every file of an organization with its size: a full walk, for reconciliation only.
    async fn list(&self, org_id: &str) -> Result<Listing, StorageError>;
    /// Removes every file of one execution.
    async fn delete(&self, org_id: &str, task_id: &TaskId) -> Result<(), StorageError>;
    /// Removes one object no row points to any more (a replaced file, a leftover). Stores
    /// that keep files at their path replace them in place and have none.
    async fn remove_object(&self, _object: &str) -> Result<(), StorageError> {
        Ok(())
    }
    /// Whether the store answers (`/health`).
    async fn check(&self) -> Result<(), StorageError>;
}

#[async_trait::async_trait]
pub trait PendingUpload: Send {
    async fn write(&mut self, chunk: &[u8]) -> Result<(), StorageError>;
    /// All bytes are in: stores them, not yet served at the path. Returns the object the
    /// file's row must point to, when the store keeps each upload under its own key.
    async fn complete(&mut self) -> Result<Option<String>, StorageError>;
    /// Makes the bytes the file at the key; runs inside the transaction recording it.
    async fn publish(self: Box<Self>) -> Result<(), StorageError>;
}

/// Report files in a local directory.
pub struct LocalReportStorage {
    root: PathBuf,
}

impl LocalReportStorage {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    /// The directories from the root down to the file's parent.
    fn parent_segments<'a>(key: &ReportKey<'a>) -> Vec<&'a str> {
        let mut segments = vec![key.org_id, key.task_id.as_str()];
        segments.extend(key.path.segments());
        segments.pop();
        segments
    }

    fn file_name<'a>(key: &ReportKey<'a>) -> &'a str {
        key.path.segments().next_back().unwrap_or_default()
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StorageError::Io(io::Error::other(e)))?
}

/// Walks `segments` below `root` without following symlinks; with `create`, makes missing
/// directories. `None` when a directory is missing and `create` is false.
fn confined_dir(
    root: &Path,
    segments: &[&str],
    create: bool,
) -> Result<Option<PathBuf>, StorageError> {
    if create {
        std::fs::create_dir_all(root)?;
    }
    let mut dir = root.to_path_buf();
    for segment in segments {
        dir.push(segment);
        match std::fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => continue,
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(StorageError::Refused(
                    "The report path goes through a symbolic link",
                ));
            }
            Ok(_) => {
                return Err(StorageError::Refused(
                    "A file stands where the report path needs a directory",
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            // Created meanwhile by a parallel upload: check it like any other.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if !std::fs::symlink_metadata(&dir)?.is_dir() {
                    return Err(StorageError::Refused(
                        "A file stands where the report path needs a directory",
                    ));
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Some(dir))
}

#[async_trait::async_trait]
impl ReportStorage for LocalReportStorage {
    async fn put(&self, key: ReportKey<'_>) -> Result<Box<dyn PendingUpload>, StorageError> {
        let root = self.root.clone();
        let parents: Vec<String> = Self::parent_segments(&key)
            .into_iter()
            .map(String::from)
            .collect();
        let file_name = Self::file_name(&key).to_string();
        let (file, temp, target) = blocking(move || {
            let parents: Vec<&str> = parents.iter().map(String::as_str).collect();
            let dir = confined_dir(&root, &parents, true)?.ok_or(StorageError::Refused(
                "The report directory could not be created",
            ))?;
            let target = dir.join(&file_name);
            if std::fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
                return Err(StorageError::Refused(
                    "A directory stands where the report file should be",
                ));
            }
            let temp = dir.join(format!("{UPLOAD_TEMP_PREFIX}{}", crate::ids::random_hex(8)));
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temp)?;
            Ok((file, temp, target))
        })
        .await?;
        Ok(Box::new(LocalUpload {
            file: tokio::fs::File::from_std(file),
            temp,
            target,
            published: false,
        }))
    }

    async fn get(
        &self,
        key: ReportKey<'_>,
        _object: Option<&str>,
    ) -> Result<Option<StoredReport>, StorageError> {
        let root = self.root.clone();
        let parents: Vec<String> = Self::parent_segments(&key)
            .into_iter()
            .map(String::from)
            .collect();
        let file_name = Self::file_name(&key).to_string();
        let opened = blocking(move || {
            let parents: Vec<&str> = parents.iter().map(String::as_str).collect();
            let Some(dir) = confined_dir(&root, &parents, false)? else {
                return Ok(None);
            };
            let path = dir.join(&file_name);
            match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_file() => {}
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(StorageError::Refused("The report path is a symbolic link"));
                }
                Ok(_) => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e.into()),
            }
            let file = std::fs::File::open(&path)?;
            let size = file.metadata()?.len();
            Ok(Some((file, size)))
        })
        .await?;
        Ok(opened.map(|(file, size)| StoredReport {
            body: Box::pin(FileStream::new(tokio::fs::File::from_std(file), size)),
            size,
        }))
    }

    async fn list(&self, org_id: &str) -> Result<Listing, StorageError> {
        let dir = self.root.join(org_id);
        blocking(move || {
            let mut listing = Listing::default();
            match std::fs::symlink_metadata(&dir) {
                Ok(meta) if meta.is_dir() => walk(&dir, "", &mut listing)?,
                Ok(_) => listing.skipped.push(".".into()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
            Ok(listing)
        })
        .await
    }

    async fn delete(&self, org_id: &str, task_id: &TaskId) -> Result<(), StorageError> {
        let dir = self.root.join(org_id).join(task_id.as_str());
        blocking(move || {
            match std::fs::symlink_metadata(&dir) {
                // remove_dir_all does not follow symlinks inside the directory.
                Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&dir)?,
                Ok(_) => std::fs::remove_file(&dir)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
            Ok(())
        })
        .await
    }

    async fn check(&self) -> Result<(), StorageError> {
        let meta = tokio::fs::metadata(&self.root).await?;
        if meta.is_dir() {
            Ok(())
        } else {
            Err(StorageError::Refused(
                "The reports directory is not a directory",
            ))
        }
    }
}

/// Collects regular files below `dir` as `<taskId>/<path>`; `prefix` is `dir` relative to
/// the organization's directory.
fn walk(dir: &Path, prefix: &str, listing: &mut Listing) -> Result<(), StorageError> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let relative = match (name.to_str(), prefix) {
            (Some(name), "") => name.to_string(),
            (Some(name), prefix) => format!("{prefix}/{name}"),
            (None, _) => {
                listing
                    .skipped
                    .push(format!("{prefix}/{}", name.to_string_lossy()));
                continue;
            }
        };
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            walk(&entry.path(), &relative, listing)?;
            continue;
        }
        let parsed = relative.split_once('/').and_then(|(task, path)| {
            TaskId::parse(task).and_then(|task| Some((task, ReportPath::parse(path).ok()?)))
        });
        match parsed {
            Some((task, path)) if file_type.is_file() => listing.files.push(StoredFile {
                task_id: task.as_str().to_string(),
                location: Location::Path(path.as_str().to_string()),
                size: i64::try_from(entry.metadata()?.len()).unwrap_or(i64::MAX),
            }),
            _ => listing.skipped.push(relative),
        }
    }
    Ok(())
}

struct LocalUpload {
    file: tokio::fs::File,
    temp: PathBuf,
    target: PathBuf,
    published: bool,
}

#[async_trait::async_trait]
impl PendingUpload for LocalUpload {
    async fn write(&mut self, chunk: &[u8]) -> Result<(), StorageError> {
        Ok(self.file.write_all(chunk).await?)
    }

    async fn complete(&mut self) -> Result<Option<String>, StorageError> {
        self.file.flush().await?;
        Ok(None)
    }

    async fn publish(mut self: Box<Self>) -> Result<(), StorageError> {
        // rename replaces the target atomically; a symlink there is replaced, not followed.
        tokio::fs::rename(&self.temp, &self.target).await?;
        self.published = true;
        Ok(())
    }
}

impl Drop for LocalUpload {
    fn drop(&mut self) {
        if !self.published {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Streams an open file of known size.
struct FileStream {
    file: tokio::fs::File,
    remaining: u64,
    buf: Box<[u8]>,
}

impl FileStream {
    fn new(file: tokio::fs::File, size: u64) -> Self {
        Self {
            file,
            remaining: size,
            buf: vec![0; 64 * 1024].into_boxed_slice(),
        }
    }
}

impl Stream for FileStream {
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let mut read = ReadBuf::new(&mut this.buf);
        ready!(Pin::new(&mut this.file).poll_read(cx, &mut read))?;
        let filled = read.filled();
        if filled.is_empty() {
            return Poll::Ready(Some(Err(io::ErrorKind::UnexpectedEof.into())));
        }
        let n = filled
            .len()
            .min(usize::try_from(this.remaining).unwrap_or(usize::MAX));
        this.remaining -= n as u64;
        Poll::Ready(Some(Ok(Bytes::copy_from_slice(&filled[..n]))))
    }
}
