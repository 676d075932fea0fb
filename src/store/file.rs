//! glance_store's `file` store at `filesystem_store_datadir`: one file per image, named
//! by its ID.
//!
//! An upload streams into `.<id>.upload` (created exclusively), is hashed with MD5 and
//! SHA-512 on two threads while it is written, then fsynced and renamed into place.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::Stored;

/// glance_store's `filesystem_store_chunk_size` default, which `/v2/info/stores/detail`
/// reports for a file store.
pub const CHUNK_SIZE: u64 = 64 << 10;
use crate::cache::ImageId;
use crate::digest::{Algorithm, BackgroundDigest};

/// Image files on a local filesystem.
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
    backend: String,
}

impl FileStore {
    /// The store `backend` (its name in `enabled_backends`) at `dir`, created if missing.
    pub fn open(dir: &Path, backend: &str) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        Ok(Self::new(dir, backend))
    }

    /// The store `backend` at `dir`, without touching the filesystem.
    pub fn new(dir: &Path, backend: &str) -> Self {
        Self {
            dir: dir.to_owned(),
            backend: backend.to_owned(),
        }
    }

    /// The store's name in `enabled_backends`, recorded in each location's `store`.
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// An image's location as glance_store's file driver records it: `file://` and the path.
    pub fn location(&self, id: &ImageId) -> String {
        format!("file://{}", self.path(id).display())
    }

    /// Where an image's data lives.
    pub fn path(&self, id: &ImageId) -> PathBuf {
        self.dir.join(id.as_str())
    }

    /// The path of a `file://` location (any path, as glance_store reads it). A relative
    /// one, as glance-api recorded from a relative `filesystem_store_datadir` before it
    /// made them absolute, is taken from the working directory, as it was written.
    pub fn parse_location(url: &str) -> Option<PathBuf> {
        let path = url.strip_prefix("file://").filter(|p| !p.is_empty())?;
        if path.starts_with('/') {
            Some(PathBuf::from(path))
        } else {
            Some(crate::conf::absolute_path(Path::new(path)))
        }
    }

    /// Deletes the file at `path`; true if it existed.
    pub fn delete(path: &Path) -> io::Result<bool> {
        match fs::remove_file(path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Where an upload of `id` in progress writes.
    fn partial(&self, id: &ImageId) -> PathBuf {
        self.dir.join(format!(".{id}.upload"))
    }

    /// Removes the partial file of an upload of `id` whose writer is gone.
    pub fn remove_partial(&self, id: &ImageId) -> io::Result<bool> {
        Self::delete(&self.partial(id))
    }

    /// Starts an upload; fails with AlreadyExists while another upload of `id` runs.
    pub fn begin_upload(&self, id: &ImageId) -> io::Result<Upload> {
        let tmp = self.partial(id);
        let file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        Ok(Upload {
            file: Some(file),
            tmp,
            target: self.path(id),
            md5: BackgroundDigest::new(Algorithm::Md5),
            sha512: BackgroundDigest::new(Algorithm::Sha512),
            size: 0,
        })
    }
}

/// An upload in progress. Dropping it without `finish` removes the partial file.
pub struct Upload {
    file: Option<File>,
    tmp: PathBuf,
    target: PathBuf,
    md5: BackgroundDigest,
    sha512: BackgroundDigest,
    size: u64,
}

impl Upload {
    /// Writes one chunk and hands it to both hashers.
    pub fn write(&mut self, chunk: &Bytes) -> io::Result<()> {
        self.md5.feed(chunk)?;
        self.sha512.feed(chunk)?;
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("upload finished"))?
            .write_all(chunk)?;
        self.size += chunk.len() as u64;
        Ok(())
    }

    /// Fsyncs and moves the data into place.
    pub fn finish(mut self) -> io::Result<Stored> {
        let md5 = self.md5.finish()?;
        let sha512 = self.sha512.finish()?;
        let file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("upload finished"))?;
        file.sync_all()?;
        fs::rename(&self.tmp, &self.target)?;
        if let Some(dir) = self.target.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(Stored {
            size: self.size,
            md5,
            sha512,
        })
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}
