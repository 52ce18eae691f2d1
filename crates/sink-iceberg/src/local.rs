//! A local warehouse's file I/O: the Iceberg crate's local storage, with
//! every file it writes made durable before it returns.
//!
//! The catalog's commit (a SQL row, durable on its own) names the table's
//! new metadata file, which names manifest lists, manifests and data files.
//! The crate's local storage writes metadata files without `fsync`, and
//! syncs no directory, so after a power loss the catalog could name a file
//! that is empty or gone, and the table could not be read. Here each file
//! is synced, and so is its directory and every directory created for it,
//! before the write returns. Reads and deletes are the crate's own.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use dynamo_cdc_core::durable::{create_dir_durably, sync_dir};
use futures_util::stream::BoxStream;
use iceberg::io::{
    FileMetadata, FileRead, FileWrite, InputFile, LocalFsStorage, OutputFile, Storage,
    StorageConfig, StorageFactory,
};
use iceberg::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};

/// Local files, written durably.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct DurableLocalStorage;

/// The file system path of a location (`file:///x`, `file:/x` or `/x`).
fn local_path(location: &str) -> PathBuf {
    let path = location
        .strip_prefix("file://")
        .or_else(|| location.strip_prefix("file:"))
        .unwrap_or(location);
    if path.starts_with('/') || !location.starts_with("file:") {
        PathBuf::from(path)
    } else {
        PathBuf::from(format!("/{path}"))
    }
}

fn failed(operation: &str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let message = format!("cannot {operation} {}", path.display());
    move |e| Error::new(ErrorKind::Unexpected, message).with_source(e)
}

fn closed_already(path: &Path) -> Error {
    Error::new(
        ErrorKind::DataInvalid,
        format!("{} is closed already", path.display()),
    )
}

/// Creates the file at `path`, with its directory and any missing parents
/// made durable first.
fn create(path: &Path) -> Result<File> {
    if let Some(dir) = path.parent() {
        create_dir_durably(dir).map_err(failed("create the directory", dir))?;
    }
    File::create(path).map_err(failed("create", path))
}

/// Syncs a written file, then its directory: only then does its name
/// survive a power loss.
fn make_durable(file: &File, path: &Path) -> Result<()> {
    file.sync_all().map_err(failed("fsync", path))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir).map_err(failed("fsync the directory of", path))?;
    }
    Ok(())
}

#[async_trait]
#[typetag::serde]
impl Storage for DurableLocalStorage {
    async fn exists(&self, path: &str) -> Result<bool> {
        LocalFsStorage::new().exists(path).await
    }

    async fn metadata(&self, path: &str) -> Result<FileMetadata> {
        LocalFsStorage::new().metadata(path).await
    }

    async fn read(&self, path: &str) -> Result<Bytes> {
        LocalFsStorage::new().read(path).await
    }

    async fn reader(&self, path: &str) -> Result<Box<dyn FileRead>> {
        LocalFsStorage::new().reader(path).await
    }

    async fn write(&self, path: &str, bs: Bytes) -> Result<()> {
        let path = local_path(path);
        let mut file = create(&path)?;
        file.write_all(&bs).map_err(failed("write", &path))?;
        make_durable(&file, &path)
    }

    async fn writer(&self, path: &str) -> Result<Box<dyn FileWrite>> {
        let path = local_path(path);
        let file = create(&path)?;
        Ok(Box::new(DurableWriter {
            file: Some(file),
            path,
        }))
    }

    async fn delete(&self, path: &str) -> Result<()> {
        LocalFsStorage::new().delete(path).await
    }

    async fn delete_prefix(&self, path: &str) -> Result<()> {
        LocalFsStorage::new().delete_prefix(path).await
    }

    async fn delete_stream(&self, paths: BoxStream<'static, String>) -> Result<()> {
        LocalFsStorage::new().delete_stream(paths).await
    }

    fn new_input(&self, path: &str) -> Result<InputFile> {
        Ok(InputFile::new(Arc::new(self.clone()), path.to_owned()))
    }

    fn new_output(&self, path: &str) -> Result<OutputFile> {
        Ok(OutputFile::new(Arc::new(self.clone()), path.to_owned()))
    }
}

/// A file written in parts, made durable when closed.
#[derive(Debug)]
struct DurableWriter {
    /// `None` once closed.
    file: Option<File>,
    path: PathBuf,
}

#[async_trait]
impl FileWrite for DurableWriter {
    async fn write(&mut self, bs: Bytes) -> Result<()> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| closed_already(&self.path))?;
        file.write_all(&bs).map_err(failed("write", &self.path))
    }

    async fn close(&mut self) -> Result<()> {
        let file = self.file.take().ok_or_else(|| closed_already(&self.path))?;
        make_durable(&file, &self.path)
    }
}

/// Hands [`DurableLocalStorage`] to the catalog.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct DurableLocalStorageFactory;

#[typetag::serde]
impl StorageFactory for DurableLocalStorageFactory {
    fn build(&self, _config: &StorageConfig) -> Result<Arc<dyn Storage>> {
        Ok(Arc::new(DurableLocalStorage))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_become_paths() {
        assert_eq!(local_path("file:///w/t/a.json"), Path::new("/w/t/a.json"));
        assert_eq!(local_path("file:/w/t/a.json"), Path::new("/w/t/a.json"));
        assert_eq!(local_path("file:w/a.json"), Path::new("/w/a.json"));
        assert_eq!(local_path("/w/t/a.json"), Path::new("/w/t/a.json"));
        assert_eq!(local_path("w/a.json"), Path::new("w/a.json"));
    }

    #[test]
    fn files_written_whole_or_in_parts_land_in_new_directories_and_read_back() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(written_and_read_back());
    }

    async fn written_and_read_back() {
        let root = tempfile::tempdir().unwrap();
        let storage = DurableLocalStorage;
        let whole = root.path().join("db/t/metadata/00001.metadata.json");
        let whole = format!("file://{}", whole.display());
        storage
            .write(&whole, Bytes::from_static(b"{\"v\":1}"))
            .await
            .unwrap();
        assert_eq!(&storage.read(&whole).await.unwrap()[..], b"{\"v\":1}");

        let parts = root.path().join("db/t/data/day=2024-01-01/f.parquet");
        let parts = parts.display().to_string();
        let mut writer = storage.writer(&parts).await.unwrap();
        writer.write(Bytes::from_static(b"PAR1")).await.unwrap();
        writer.write(Bytes::from_static(b"...")).await.unwrap();
        writer.close().await.unwrap();
        let e = writer.write(Bytes::from_static(b"x")).await.unwrap_err();
        assert!(e.to_string().contains("closed already"), "{e}");
        assert_eq!(storage.metadata(&parts).await.unwrap().size, 7);
        assert!(storage.exists(&parts).await.unwrap());
        storage.delete(&parts).await.unwrap();
        assert!(!storage.exists(&parts).await.unwrap());

        // A directory where a file would go names the path that failed.
        std::fs::write(root.path().join("flat"), b"").unwrap();
        let under_a_file = root.path().join("flat/x.json").display().to_string();
        let e = storage
            .write(&under_a_file, Bytes::from_static(b"{}"))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("flat"), "{e}");
    }
}
