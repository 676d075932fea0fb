//! Image data stores: glance_store's `file`, `s3` and read-only `http` drivers, one or
//! several at once (`enabled_backends`). [`config`] reads their options, [`file`], [`s3`]
//! and [`http`] are the drivers, and [`Stores`] picks one by name or by an image's
//! location.

pub mod config;
pub mod file;
pub mod http;
pub mod s3;

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

use bytes::Bytes;
use serde_json::{Value, json};
use thiserror::Error;
use tokio::runtime::Handle;

pub use config::{BackendConfig, BackendKind, S3Options, StoreConfig};
pub use file::FileStore;
pub use http::HttpStore;
pub use s3::S3Store;

use crate::cache::ImageId;

/// Digests and size of uploaded data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Bytes.
    pub size: u64,
    /// MD5, hex.
    pub md5: String,
    /// SHA-512, hex.
    pub sha512: String,
}

/// A byte range of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// First byte.
    pub start: u64,
    /// Bytes.
    pub len: u64,
}

/// How a remote store failed, which decides the answer's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Unreachable, timed out, cut off, or a 5xx: try again later (503).
    Unavailable,
    /// The credentials were refused.
    Denied,
    /// The bucket does not exist.
    NoBucket,
    /// The object does not exist.
    NotFound,
    /// Anything else the server answered.
    Other,
}

/// A store failure. Messages name the store and never hold a secret key.
#[derive(Debug, Error)]
pub enum StoreError {
    /// A local file operation failed.
    #[error("store {store:?}: {source}")]
    Io {
        /// The store's name.
        store: String,
        /// What failed.
        source: io::Error,
    },
    /// A request to a remote store failed.
    #[error("store {store:?} ({server}): {operation} failed: {detail}")]
    Remote {
        /// The store's name.
        store: String,
        /// The endpoint and bucket.
        server: String,
        /// The S3 operation.
        operation: &'static str,
        /// What kind of failure.
        failure: Failure,
        /// What the server or client library said.
        detail: String,
    },
    /// A store cannot be set up with its options.
    #[error("store {store:?}: {message}")]
    Config {
        /// The store's name.
        store: String,
        /// What is wrong.
        message: String,
    },
    /// The store takes no data (an `http` store).
    #[error("store {store:?} is read-only")]
    ReadOnly {
        /// The store's name.
        store: String,
    },
    /// No configured store reads a location.
    #[error("no configured store reads the location {url} (store {store:?})")]
    NoStore {
        /// The location's URL, without credentials.
        url: String,
        /// The store its metadata names.
        store: Option<String>,
    },
}

impl StoreError {
    /// Whether a client should try again later.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::Remote {
                failure: Failure::Unavailable,
                ..
            }
        )
    }
}

/// One store.
#[derive(Debug, Clone)]
pub enum Store {
    /// A directory.
    File(FileStore),
    /// An S3 bucket.
    S3(S3Store),
    /// Data at http(s) URLs, read-only.
    Http(HttpStore),
}

/// An upload in progress to one store.
pub enum Upload {
    /// Into a file of the named store.
    File(Box<file::Upload>, String),
    /// Into an S3 object.
    S3(Box<s3::S3Upload>),
}

/// The bytes of an image, from any store.
pub type Reader = Box<dyn Read + Send>;

impl Store {
    /// Its name in `enabled_backends`.
    pub fn name(&self) -> &str {
        match self {
            Store::File(store) => store.backend(),
            Store::S3(store) => store.name(),
            Store::Http(store) => store.name(),
        }
    }

    /// The location an image's data gets in this store (none in a read-only store).
    pub fn location(&self, id: &ImageId) -> String {
        match self {
            Store::File(store) => store.location(id),
            Store::S3(store) => store.location(id.as_str()),
            Store::Http(_) => String::new(),
        }
    }

    /// Whether it takes data.
    pub fn writable(&self) -> bool {
        !matches!(self, Store::Http(_))
    }

    /// Starts storing image `id`, of `size` bytes when the client said so.
    pub fn begin_upload(&self, id: &ImageId, size: Option<u64>) -> Result<Upload, StoreError> {
        match self {
            Store::File(store) => store
                .begin_upload(id)
                .map(|upload| Upload::File(Box::new(upload), store.backend().to_owned()))
                .map_err(|source| self.io(source)),
            Store::S3(store) => store
                .begin_upload(id.as_str(), size)
                .map(|upload| Upload::S3(Box::new(upload))),
            Store::Http(store) => Err(StoreError::ReadOnly {
                store: store.name().to_owned(),
            }),
        }
    }

    fn io(&self, source: io::Error) -> StoreError {
        StoreError::Io {
            store: self.name().to_owned(),
            source,
        }
    }

    /// Whether this store wrote `url`.
    fn reads(&self, url: &str) -> bool {
        match self {
            Store::File(_) => FileStore::parse_location(url).is_some(),
            Store::S3(_) => S3Store::parse_location(url).is_some(),
            Store::Http(_) => HttpStore::reads(url),
        }
    }

    fn open(&self, url: &str, span: Span) -> Result<Reader, StoreError> {
        match self {
            Store::File(_) => {
                let path = FileStore::parse_location(url).ok_or_else(|| no_store(url, None))?;
                let mut file = File::open(&path).map_err(|e| self.io(e))?;
                file.seek(SeekFrom::Start(span.start))
                    .map_err(|e| self.io(e))?;
                Ok(Box::new(file.take(span.len)))
            }
            Store::S3(store) => {
                let (bucket, key) =
                    S3Store::parse_location(url).ok_or_else(|| no_store(url, None))?;
                Ok(Box::new(store.open(&bucket, &key, span)?))
            }
            Store::Http(store) => Ok(Box::new(store.open(url, span).map_err(|e| self.io(e))?)),
        }
    }

    /// Removes what an upload of `id` whose writer died left: a partial file, or a
    /// multipart upload in progress.
    pub fn remove_partial(&self, id: &ImageId) -> Result<(), StoreError> {
        match self {
            Store::File(store) => store.remove_partial(id).map(drop).map_err(|e| self.io(e)),
            Store::S3(store) => store.abort_partial(id.as_str()),
            Store::Http(_) => Ok(()),
        }
    }

    fn delete(&self, url: &str) -> Result<(), StoreError> {
        match self {
            Store::File(_) => {
                let path = FileStore::parse_location(url).ok_or_else(|| no_store(url, None))?;
                FileStore::delete(&path).map(drop).map_err(|e| self.io(e))
            }
            Store::S3(store) => {
                let (bucket, key) =
                    S3Store::parse_location(url).ok_or_else(|| no_store(url, None))?;
                store.delete(&bucket, &key)
            }
            // As upstream's http store: the data is not glance's to delete.
            Store::Http(_) => Ok(()),
        }
    }
}

fn no_store(url: &str, store: Option<&str>) -> StoreError {
    StoreError::NoStore {
        url: url.to_owned(),
        store: store.map(str::to_owned),
    }
}

impl Upload {
    /// Takes one chunk; MD5 and SHA-512 are computed on the way.
    pub fn write(&mut self, chunk: &Bytes) -> Result<(), StoreError> {
        match self {
            Upload::File(upload, store) => upload.write(chunk).map_err(|source| StoreError::Io {
                store: store.clone(),
                source,
            }),
            Upload::S3(upload) => upload.write(chunk),
        }
    }

    /// Makes the data durable and returns its size and digests.
    pub fn finish(self) -> Result<Stored, StoreError> {
        match self {
            Upload::File(upload, store) => upload
                .finish()
                .map_err(|source| StoreError::Io { store, source }),
            Upload::S3(upload) => upload.finish(),
        }
    }

    /// Drops what was written: the partial file, or the multipart upload's parts.
    pub fn abort(self) {
        match self {
            Upload::File(upload, _) => drop(upload),
            Upload::S3(mut upload) => upload.abort(),
        }
    }
}

/// The enabled stores.
#[derive(Debug, Clone)]
pub struct Stores {
    stores: Vec<Store>,
    configs: Vec<BackendConfig>,
    default: usize,
    multi: bool,
}

impl Stores {
    /// Sets up every store of `config` (creating file stores' directories); S3 calls
    /// run on `runtime`.
    pub fn start(config: &StoreConfig, runtime: &Handle) -> Result<Self, StoreError> {
        let mut stores = Vec::new();
        for backend in &config.backends {
            stores.push(match &backend.kind {
                BackendKind::File { dir } => {
                    Store::File(FileStore::open(dir, &backend.name).map_err(|source| {
                        StoreError::Io {
                            store: backend.name.clone(),
                            source: io::Error::new(
                                source.kind(),
                                format!("filesystem_store_datadir {}: {source}", dir.display()),
                            ),
                        }
                    })?)
                }
                BackendKind::S3(options) => {
                    Store::S3(S3Store::new(&backend.name, options, runtime.clone())?)
                }
                BackendKind::Http => Store::Http(HttpStore::new(&backend.name)),
            });
        }
        let default = stores
            .iter()
            .position(|s| s.name() == config.default)
            .ok_or_else(|| StoreError::Config {
                store: config.default.clone(),
                message: "the default backend is not among the enabled backends".to_owned(),
            })?;
        Ok(Self {
            stores,
            configs: config.backends.clone(),
            default,
            multi: config.multi,
        })
    }

    /// The store new images go to.
    pub fn default_store(&self) -> &Store {
        &self.stores[self.default]
    }

    /// The first enabled `http` store, which reads http(s) locations.
    pub fn http_store(&self) -> Option<&HttpStore> {
        self.stores.iter().find_map(|s| match s {
            Store::Http(store) => Some(store),
            _ => None,
        })
    }

    /// The store called `name`.
    pub fn named(&self, name: &str) -> Option<&Store> {
        self.stores.iter().find(|s| s.name() == name)
    }

    /// The `weight` of store `name` (0 for a store not enabled).
    pub fn weight(&self, name: &str) -> i64 {
        self.configs
            .iter()
            .find(|b| b.name == name)
            .map_or(0, |b| b.weight)
    }

    /// `names` in upstream's order of locations: heavier stores first, ties as given.
    pub fn by_weight(&self, names: &[String]) -> Vec<String> {
        let mut sorted = names.to_vec();
        sorted.sort_by_key(|name| std::cmp::Reverse(self.weight(name)));
        sorted
    }

    /// The enabled stores' names, in `enabled_backends`' order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.stores.iter().map(Store::name)
    }

    /// Whether `enabled_backends` is set.
    pub fn multi(&self) -> bool {
        self.multi
    }

    /// `GET /v2/info/stores`, as upstream answers it; None without `enabled_backends`.
    pub fn info(&self) -> Option<Value> {
        self.multi.then(|| {
            let stores: Vec<Value> = self
                .configs
                .iter()
                .enumerate()
                .map(|(n, backend)| {
                    let mut entry = json!({"id": backend.name});
                    if let Some(description) = &backend.description {
                        entry["description"] = json!(description);
                    }
                    if n == self.default {
                        entry["default"] = json!("true");
                    }
                    if backend.kind == BackendKind::Http {
                        entry["read-only"] = json!("true");
                    }
                    entry
                })
                .collect();
            json!({ "stores": stores })
        })
    }

    /// `GET /v2/info/stores/detail`: each store with its type, its properties as
    /// glance_store reports them, and its weight; None without `enabled_backends`.
    pub fn detail(&self) -> Option<Value> {
        let mut info = self.info()?;
        if let Some(stores) = info["stores"].as_array_mut() {
            for (entry, backend) in stores.iter_mut().zip(&self.configs) {
                let (kind, properties) = match &backend.kind {
                    BackendKind::File { dir } => (
                        "file",
                        json!({
                            "data_dir": dir.display().to_string(),
                            "chunk_size": file::CHUNK_SIZE,
                            "thin_provisioning": false,
                        }),
                    ),
                    BackendKind::S3(options) => (
                        "s3",
                        json!({
                            "s3_store_large_object_size": options.large_object_size,
                            "s3_store_large_object_chunk_size": options.chunk_size,
                            "s3_store_thread_pools": options.thread_pools,
                        }),
                    ),
                    BackendKind::Http => ("http", json!({})),
                };
                entry["type"] = json!(kind);
                entry["properties"] = properties;
                entry["weight"] = json!(backend.weight);
            }
        }
        Some(info)
    }

    /// The store that reads `url`: the one its metadata names, else the first that
    /// reads its scheme.
    fn reader_of(&self, url: &str, store: Option<&str>) -> Result<&Store, StoreError> {
        store
            .and_then(|name| self.named(name))
            .filter(|s| s.reads(url))
            .or_else(|| self.stores.iter().find(|s| s.reads(url)))
            .ok_or_else(|| no_store(url, store))
    }

    /// Opens `span` of the data at `url` (recorded with metadata `store`).
    pub fn open(&self, url: &str, store: Option<&str>, span: Span) -> Result<Reader, StoreError> {
        tracing::debug!(
            url,
            start = span.start,
            len = span.len,
            "opening image data"
        );
        self.reader_of(url, store)?.open(url, span)
    }

    /// [`Store::remove_partial`] in every store: an upload may have gone to any.
    pub fn remove_partial(&self, id: &ImageId) -> Result<(), StoreError> {
        self.stores.iter().try_for_each(|s| s.remove_partial(id))
    }

    /// Deletes the data at `url`.
    pub fn delete(&self, url: &str, store: Option<&str>) -> Result<(), StoreError> {
        self.reader_of(url, store)?.delete(url)
    }
}
