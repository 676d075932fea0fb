//! Which stores glance-api uses, read with glance_store's option names: `enabled_backends`
//! (`name:type, …`) with a section per backend and `[glance_store] default_backend`, or
//! the single store of `[glance_store]` (`default_store`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::FileStore;
use crate::conf::{ConfError, Config, DEFAULT_SECTION, absolute};

/// One MiB: glance_store's S3 sizes are given in MB and meant as MiB (`units.Mi`).
const MIB: u64 = 1 << 20;

/// The stores, in the order `enabled_backends` names them.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreConfig {
    /// Each backend.
    pub backends: Vec<BackendConfig>,
    /// The name of the backend new images go to.
    pub default: String,
    /// `enabled_backends` is set (locations then record their store's name, and
    /// `/v2/info/stores` answers).
    pub multi: bool,
}

/// One backend.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendConfig {
    /// Its name in `enabled_backends` (the store type in single-store mode).
    pub name: String,
    /// `store_description`.
    pub description: Option<String>,
    /// `weight`: locations in heavier stores are listed, and read, first.
    pub weight: i64,
    /// What it is.
    pub kind: BackendKind,
}

/// A backend's type and options.
#[derive(Debug, Clone, PartialEq)]
pub enum BackendKind {
    /// glance_store's `file` store.
    File {
        /// `filesystem_store_datadir`.
        dir: PathBuf,
    },
    /// glance_store's `s3` store.
    S3(Box<S3Options>),
    /// glance_store's read-only `http` store: it reads http(s) locations.
    Http,
}

/// `s3_store_bucket_url_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlFormat {
    /// The S3 endpoint rules decide: virtual-hosted for a DNS-compatible bucket on a named
    /// host, path-style on an IP address (as botocore does).
    Auto,
    /// `https://bucket.host/key`.
    Virtual,
    /// `https://host/bucket/key`.
    Path,
}

/// A secret option: compared and cloned, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// The options of an `s3` backend.
#[derive(Debug, Clone, PartialEq)]
pub struct S3Options {
    /// `s3_store_host` as written.
    pub host: String,
    /// The endpoint URL: the host with `http://` added when it has no scheme.
    pub endpoint: String,
    /// `s3_store_access_key`.
    pub access_key: String,
    /// `s3_store_secret_key`.
    pub secret_key: Secret,
    /// `s3_store_bucket`.
    pub bucket: String,
    /// `s3_store_create_bucket_on_put`.
    pub create_bucket_on_put: bool,
    /// `s3_store_bucket_url_format`.
    pub url_format: UrlFormat,
    /// `s3_store_region_name` (empty: none given).
    pub region: String,
    /// `s3_store_large_object_size`, in bytes: images at least this large are always
    /// written with a multipart upload.
    pub large_object_size: u64,
    /// `s3_store_large_object_chunk_size`, in bytes: the part size.
    pub chunk_size: u64,
    /// `s3_store_thread_pools`: parts uploaded at once (within the memory budget).
    pub thread_pools: usize,
    /// `s3_store_cacert`: a CA bundle to trust instead of the system's.
    pub cacert: Option<PathBuf>,
    /// `s3_store_connect_timeout` (seconds, default 10).
    pub connect_timeout: Duration,
    /// `s3_store_read_timeout` (seconds, default 60): the longest wait for any read.
    pub read_timeout: Duration,
    /// `s3_store_max_retries` (default 3): retries of a failed idempotent request, with
    /// exponential backoff.
    pub max_retries: u32,
}

impl S3Options {
    /// The prefix of this store's locations: `s3://host/bucket` (`s3+https://` for
    /// HTTPS), as glance_store's s3 driver records them.
    pub fn location_prefix(&self) -> String {
        let (scheme, host) = match self.host.strip_prefix("https://") {
            Some(host) => ("s3+https", host),
            None => (
                "s3",
                self.host.strip_prefix("http://").unwrap_or(&self.host),
            ),
        };
        format!("{scheme}://{}/{}", host.trim_matches('/'), self.bucket)
    }

    fn from_config(config: &Config, section: &str) -> Result<Self, ConfError> {
        let required = |key: &str| -> Result<String, ConfError> {
            match config.get(section, key).map(str::trim) {
                Some(v) if !v.is_empty() => Ok(v.to_owned()),
                _ => Err(ConfError::Missing {
                    section: section.to_owned(),
                    key: key.to_owned(),
                    why: "the s3 store needs it".to_owned(),
                }),
            }
        };
        let host = required("s3_store_host")?;
        let endpoint = if host.starts_with("http://") || host.starts_with("https://") {
            host.trim_end_matches('/').to_owned()
        } else {
            format!("http://{}", host.trim_end_matches('/'))
        };
        let bucket = required("s3_store_bucket")?;
        let url_format = match config.get_str(section, "s3_store_bucket_url_format", "auto") {
            "auto" => UrlFormat::Auto,
            "virtual" => UrlFormat::Virtual,
            "path" => UrlFormat::Path,
            _ => {
                return Err(config.invalid(
                    section,
                    "s3_store_bucket_url_format",
                    "expected auto, virtual or path",
                ));
            }
        };
        if url_format == UrlFormat::Virtual && !dns_compatible(&bucket) {
            return Err(config.invalid(
                section,
                "s3_store_bucket",
                "with s3_store_bucket_url_format = virtual the bucket must be a DNS name (3-63 lowercase letters, digits, '-' and '.')",
            ));
        }
        let chunk_mb = config.get_u64(section, "s3_store_large_object_chunk_size", 10)?;
        if chunk_mb < 5 {
            return Err(config.invalid(
                section,
                "s3_store_large_object_chunk_size",
                "must be at least 5 (MB): S3 parts other than the last are at least 5 MiB",
            ));
        }
        let thread_pools = config.get_u64(section, "s3_store_thread_pools", 10)?;
        if thread_pools == 0 {
            return Err(config.invalid(
                section,
                "s3_store_thread_pools",
                "must be a positive integer",
            ));
        }
        let seconds = |key: &str, default: u64| -> Result<Duration, ConfError> {
            match config.get_u64(section, key, default)? {
                0 => Err(config.invalid(section, key, "must be at least 1 (second)")),
                n => Ok(Duration::from_secs(n)),
            }
        };
        Ok(Self {
            endpoint,
            host,
            access_key: required("s3_store_access_key")?,
            secret_key: Secret(required("s3_store_secret_key")?),
            bucket,
            create_bucket_on_put: config.get_bool(
                section,
                "s3_store_create_bucket_on_put",
                false,
            )?,
            url_format,
            region: config
                .get_str(section, "s3_store_region_name", "")
                .trim()
                .to_owned(),
            large_object_size: config
                .get_u64(section, "s3_store_large_object_size", 100)?
                .saturating_mul(MIB),
            chunk_size: chunk_mb.saturating_mul(MIB),
            thread_pools: usize::try_from(thread_pools).unwrap_or(usize::MAX),
            cacert: config
                .get(section, "s3_store_cacert")
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            connect_timeout: seconds("s3_store_connect_timeout", 10)?,
            read_timeout: seconds("s3_store_read_timeout", 60)?,
            max_retries: u32::try_from(config.get_u64(section, "s3_store_max_retries", 3)?)
                .unwrap_or(u32::MAX),
        })
    }
}

/// Whether `bucket` can be a host name label (virtual-hosted addressing).
fn dns_compatible(bucket: &str) -> bool {
    (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !bucket.starts_with(['-', '.'])
        && !bucket.ends_with(['-', '.'])
        && !bucket.contains("..")
}

impl StoreConfig {
    /// Reads the stores from `config`.
    pub fn from_config(config: &Config) -> Result<Self, ConfError> {
        match config.get(DEFAULT_SECTION, "enabled_backends") {
            Some(list) => Self::multi(config, list),
            None => Self::single(config),
        }
    }

    fn multi(config: &Config, list: &str) -> Result<Self, ConfError> {
        let mut backends: Vec<BackendConfig> = Vec::new();
        for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let Some((name, kind)) = item.split_once(':') else {
                return Err(config.invalid(
                    DEFAULT_SECTION,
                    "enabled_backends",
                    "expected name:type pairs separated by commas, e.g. fast:file, ceph:s3",
                ));
            };
            let (name, kind) = (name.trim(), kind.trim());
            if backends.iter().any(|b| b.name == name) {
                return Err(config.invalid(
                    DEFAULT_SECTION,
                    "enabled_backends",
                    &format!("the backend name {name:?} is given twice"),
                ));
            }
            let kind = backend_kind(config, name, kind).ok_or_else(|| {
                config.invalid(
                    DEFAULT_SECTION,
                    "enabled_backends",
                    &format!(
                        "backend {name:?} has store type {kind:?}; this glance-api provides file, s3 and http (read-only)"
                    ),
                )
            })??;
            let weight = match config.get(name, "weight").map(str::trim) {
                None | Some("") => 0,
                Some(w) => w
                    .parse()
                    .map_err(|_| config.invalid(name, "weight", "expected a whole number"))?,
            };
            backends.push(BackendConfig {
                name: name.to_owned(),
                description: config
                    .get(name, "store_description")
                    .map(str::to_owned)
                    .filter(|d| !d.is_empty()),
                weight,
                kind,
            });
        }
        if backends.is_empty() {
            return Err(config.invalid(DEFAULT_SECTION, "enabled_backends", "names no backend"));
        }
        let default = config
            .get("glance_store", "default_backend")
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .ok_or_else(|| ConfError::Missing {
                section: "glance_store".to_owned(),
                key: "default_backend".to_owned(),
                why: "enabled_backends is set, so one of its names must be the default".to_owned(),
            })?;
        match backends.iter().find(|b| b.name == default) {
            None => {
                return Err(config.invalid(
                    "glance_store",
                    "default_backend",
                    "must be one of the names in [DEFAULT] enabled_backends",
                ));
            }
            Some(b) if b.kind == BackendKind::Http => {
                return Err(config.invalid(
                    "glance_store",
                    "default_backend",
                    "names an http store, which is read-only: new images need a file or s3 store",
                ));
            }
            Some(_) => {}
        }
        Ok(Self {
            default: default.to_owned(),
            backends,
            multi: true,
        })
    }

    fn single(config: &Config) -> Result<Self, ConfError> {
        let kind = config
            .get_str("glance_store", "default_store", "file")
            .trim();
        let backend = backend_kind(config, "glance_store", kind)
            .filter(|b| !matches!(b, Ok(BackendKind::Http)))
            .ok_or_else(|| {
                config.invalid(
                    "glance_store",
                    "default_store",
                    "new images need the file or the s3 store",
                )
            })??;
        Ok(Self {
            default: kind.to_owned(),
            backends: vec![BackendConfig {
                name: kind.to_owned(),
                description: None,
                weight: 0,
                kind: backend,
            }],
            multi: false,
        })
    }

    /// The backend new images go to.
    pub fn default_backend(&self) -> Option<&BackendConfig> {
        self.backends.iter().find(|b| b.name == self.default)
    }

    /// The default backend when it is a file store, else the first file store: where an
    /// image catalogue from 0.1.0 kept its data.
    pub fn legacy_store(&self) -> FileStore {
        let file = |b: &BackendConfig| match &b.kind {
            BackendKind::File { dir } => Some(FileStore::new(dir, &b.name)),
            BackendKind::S3(_) | BackendKind::Http => None,
        };
        self.default_backend()
            .and_then(file)
            .or_else(|| self.backends.iter().find_map(file))
            .unwrap_or_else(|| FileStore::new(Path::new(DEFAULT_DATADIR), "file"))
    }
}

/// Where the file stores keep their image files: every `name:file` backend of
/// `enabled_backends`, or the default store when it is `file` without it. Reads only the
/// backend names and their datadirs, so it also serves a configuration whose credentials
/// live elsewhere, as the operator sees it. Items it cannot read are skipped: glance-api
/// refuses them at start, naming the option.
pub fn file_store_dirs(config: &Config) -> Vec<PathBuf> {
    let datadir = |section: &str| {
        absolute(config.get_str(section, "filesystem_store_datadir", DEFAULT_DATADIR))
    };
    match config.get(DEFAULT_SECTION, "enabled_backends") {
        Some(list) => list
            .split(',')
            .filter_map(|item| item.split_once(':'))
            .filter(|(_, kind)| kind.trim() == "file")
            .map(|(name, _)| datadir(name.trim()))
            .collect(),
        None => {
            let kind = config
                .get_str("glance_store", "default_store", "file")
                .trim();
            if kind == "file" {
                vec![datadir("glance_store")]
            } else {
                Vec::new()
            }
        }
    }
}

/// glance_store's default `filesystem_store_datadir`.
const DEFAULT_DATADIR: &str = "/var/lib/glance/images/";

/// The options of a backend of type `kind` in `section`; None for a type this
/// glance-api does not provide.
fn backend_kind(
    config: &Config,
    section: &str,
    kind: &str,
) -> Option<Result<BackendKind, ConfError>> {
    match kind {
        "file" => Some(Ok(BackendKind::File {
            dir: absolute(config.get_str(section, "filesystem_store_datadir", DEFAULT_DATADIR)),
        })),
        "s3" => Some(
            S3Options::from_config(config, section)
                .map(|options| BackendKind::S3(Box::new(options))),
        ),
        "http" => Some(Ok(BackendKind::Http)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> crate::cache::ImageId {
        crate::cache::ImageId::parse("6a4bb5a2-4e08-4d7e-a1f3-0f1f4e1f2a3b").unwrap()
    }

    fn parse(text: &str) -> Result<StoreConfig, ConfError> {
        StoreConfig::from_config(&Config::from_str("glance-api.conf", text)?)
    }

    const TWO: &str = "[DEFAULT]\nenabled_backends = fast:file, ceph:s3\n\
        [glance_store]\ndefault_backend = ceph\n\
        [fast]\nfilesystem_store_datadir = /data/images\nstore_description = Local disk\n\
        [ceph]\ns3_store_host = rgw.ceph.svc:8080\ns3_store_access_key = AK\n\
        s3_store_secret_key = SK\ns3_store_bucket = glance\n";

    #[test]
    fn two_backends_with_upstream_defaults() {
        let c = parse(TWO).unwrap();
        assert!(c.multi);
        assert_eq!(c.default, "ceph");
        assert_eq!(c.backends[0].name, "fast");
        assert_eq!(c.backends[0].description.as_deref(), Some("Local disk"));
        assert_eq!(
            c.backends[0].kind,
            BackendKind::File {
                dir: "/data/images".into()
            }
        );
        let BackendKind::S3(s3) = &c.backends[1].kind else {
            panic!("not s3: {:?}", c.backends[1]);
        };
        assert_eq!(s3.endpoint, "http://rgw.ceph.svc:8080");
        assert_eq!(s3.location_prefix(), "s3://rgw.ceph.svc:8080/glance");
        assert_eq!(s3.large_object_size, 100 * MIB);
        assert_eq!(s3.chunk_size, 10 * MIB);
        assert_eq!(s3.thread_pools, 10);
        assert_eq!(s3.url_format, UrlFormat::Auto);
        assert!(!s3.create_bucket_on_put);
        assert_eq!(s3.region, "");
        assert_eq!(s3.cacert, None);
        assert!(
            !format!("{s3:?}").contains("SK"),
            "the secret key is printed"
        );
    }

    #[test]
    fn https_hosts_are_recorded_as_s3_https() {
        let c = parse(&TWO.replace("rgw.ceph.svc:8080", "https://s3.example.org/")).unwrap();
        let BackendKind::S3(s3) = &c.backends[1].kind else {
            panic!()
        };
        assert_eq!(s3.endpoint, "https://s3.example.org");
        assert_eq!(s3.location_prefix(), "s3+https://s3.example.org/glance");
    }

    #[test]
    fn errors_name_the_option() {
        let cases = [
            (
                TWO.replace("s3_store_bucket = glance\n", ""),
                "[ceph] s3_store_bucket is not set",
            ),
            (
                TWO.replace("s3_store_secret_key = SK\n", ""),
                "[ceph] s3_store_secret_key is not set",
            ),
            (
                TWO.replace("ceph:s3", "ceph:rbd"),
                "[DEFAULT] enabled_backends",
            ),
            (
                TWO.replace("default_backend = ceph", "default_backend = other"),
                "[glance_store] default_backend",
            ),
            (
                TWO.replace("default_backend = ceph\n", ""),
                "[glance_store] default_backend is not set",
            ),
            (
                format!("{TWO}s3_store_large_object_chunk_size = 4\n"),
                "[ceph] s3_store_large_object_chunk_size = \"4\"",
            ),
            (
                format!("{TWO}s3_store_thread_pools = 0\n"),
                "[ceph] s3_store_thread_pools",
            ),
            (
                format!("{TWO}s3_store_bucket_url_format = dns\n"),
                "[ceph] s3_store_bucket_url_format",
            ),
            (
                format!("{TWO}s3_store_read_timeout = 0\n"),
                "[ceph] s3_store_read_timeout",
            ),
            (
                format!(
                    "{}s3_store_bucket_url_format = virtual\n",
                    TWO.replace("= glance\n", "= Glance_Images\n")
                ),
                "[ceph] s3_store_bucket",
            ),
        ];
        for (text, expected) in cases {
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains(expected), "{e:?} does not contain {expected:?}");
            assert!(!e.contains("SK\""), "{e}");
        }
    }

    #[test]
    fn file_store_dirs_are_found_without_the_stores_credentials() {
        let dirs = |text: &str| file_store_dirs(&Config::from_str("t", text).unwrap());
        // The s3 backend has no keys here: they come from a Secret the operator cannot see.
        let both = "[DEFAULT]\nenabled_backends = fast:file, ceph:s3\n[fast]\nfilesystem_store_datadir = /data\n";
        assert_eq!(
            dirs(&format!("{both}[glance_store]\ndefault_backend = ceph\n")),
            [PathBuf::from("/data")],
            "a file backend beside the default counts too"
        );
        assert!(dirs("[DEFAULT]\nenabled_backends = ceph:s3\n").is_empty());
        assert_eq!(
            dirs(
                "[DEFAULT]\nenabled_backends = a:file, b:file\n[a]\nfilesystem_store_datadir = /a\n"
            ),
            [PathBuf::from("/a"), PathBuf::from(DEFAULT_DATADIR)]
        );
        assert_eq!(
            dirs("[glance_store]\ndefault_store = file\n"),
            [PathBuf::from(DEFAULT_DATADIR)]
        );
        assert!(dirs("[glance_store]\ndefault_store = s3\n").is_empty());
        assert_eq!(dirs(""), [PathBuf::from(DEFAULT_DATADIR)]);
    }

    #[test]
    fn single_store_mode() {
        let c = parse("[glance_store]\nfilesystem_store_datadir = /x\n").unwrap();
        assert!(!c.multi);
        assert_eq!(c.default, "file");
        assert_eq!(
            c.legacy_store().path(&id()),
            PathBuf::from("/x").join(id().as_str())
        );
        let c = parse(
            "[glance_store]\ndefault_store = s3\ns3_store_host = h\ns3_store_access_key = a\n\
             s3_store_secret_key = s\ns3_store_bucket = b\n",
        )
        .unwrap();
        assert_eq!(c.default, "s3");
        assert_eq!(c.legacy_store().backend(), "file");
    }
}
