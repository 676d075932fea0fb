//! glance-api's settings, read from glance-api.conf with upstream option names.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

use super::import_settings::ImportSettings;
use crate::conf::{CacheOptions, ConfError, Config, DEFAULT_SECTION};
use crate::db::{DbError, DbOptions};
use crate::keystone::AuthTokenOptions;
use crate::policy::{Policy, PolicyError};
use crate::store::StoreConfig;

/// Configuration used when glance-api is started without --config-file/--config-dir:
/// everything under ./glance-data, the cache on, listening on localhost.
pub const EMBEDDED_DEFAULTS: &str = "\
[DEFAULT]
bind_host = 127.0.0.1
bind_port = 9292
enabled_backends = default_backend:file
image_cache_dir = glance-data/image-cache
image_cache_max_size = 10737418240

[glance_store]
default_backend = default_backend

[default_backend]
filesystem_store_datadir = glance-data/images

[os_glance_staging_store]
filesystem_store_datadir = glance-data/staging

[database]
connection = sqlite:///glance-data/glance.sqlite

[paste_deploy]
flavor = cachemanagement
";

/// `[DEFAULT] client_socket_timeout`, upstream Glance's option: seconds a client may send
/// or read nothing before its connection is closed; 0 waits for ever.
pub const CLIENT_SOCKET_TIMEOUT: &str = "client_socket_timeout";
/// Upstream's default of [`CLIENT_SOCKET_TIMEOUT`].
pub const CLIENT_SOCKET_TIMEOUT_DEFAULT: u64 = 900;
/// `[DEFAULT] graceful_shutdown_timeout`, oslo.service's option (upstream Glance has
/// none): seconds a stop lets the requests in flight finish before the connections still
/// busy are closed; 0 waits for every one of them.
pub const GRACEFUL_SHUTDOWN_TIMEOUT: &str = "graceful_shutdown_timeout";
/// oslo.service's default of [`GRACEFUL_SHUTDOWN_TIMEOUT`].
pub const GRACEFUL_SHUTDOWN_TIMEOUT_DEFAULT: u64 = 60;

/// [`GRACEFUL_SHUTDOWN_TIMEOUT`] in seconds, 0 for no limit. The operator reads it too,
/// to give the pods a longer grace period.
pub fn graceful_shutdown_timeout(config: &Config) -> Result<u64, ConfError> {
    config.get_u64(
        DEFAULT_SECTION,
        GRACEFUL_SHUTDOWN_TIMEOUT,
        GRACEFUL_SHUTDOWN_TIMEOUT_DEFAULT,
    )
}

/// A timeout option in seconds, 0 meaning none.
fn timeout(config: &Config, option: &str, default: u64) -> Result<Option<Duration>, ConfError> {
    let seconds = config.get_u64(DEFAULT_SECTION, option, default)?;
    Ok((seconds > 0).then(|| Duration::from_secs(seconds)))
}

/// Settings that make glance-api refuse to start.
#[derive(Debug, Error)]
pub enum SettingsError {
    /// A malformed option.
    #[error(transparent)]
    Conf(#[from] ConfError),
    /// A malformed `[database]` option.
    #[error(transparent)]
    Database(#[from] DbError),
    /// bind_host is not an IP address.
    #[error("[DEFAULT] bind_host = {0:?} is not an IP address")]
    BindHost(String),
    /// bind_port out of range.
    #[error("[DEFAULT] bind_port = {0} is not a TCP port")]
    BindPort(u64),
    /// `[oslo_policy] policy_file`.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// An unknown flavor.
    #[error(
        "[paste_deploy] flavor = {0:?} is unknown (use keystone, keystone+caching, keystone+cachemanagement, or without Keystone on a trusted network cachemanagement, caching, or leave it empty)"
    )]
    Flavor(String),
    /// An upstream option whose feature this glance-api does not provide.
    #[error("{0}")]
    Unsupported(String),
}

/// What a `[paste_deploy] flavor` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flavor {
    /// Keystone's auth_token in front (`keystone`, `keystone+…`).
    pub keystone: bool,
    /// The transparent cache (`…caching`, `…cachemanagement`).
    pub caching: bool,
    /// The cache management API (`…cachemanagement`).
    pub cache_management: bool,
}

impl Flavor {
    /// `keystone[+caching|+cachemanagement]`, or without Keystone `caching`,
    /// `cachemanagement` or empty; None for any other flavor.
    pub fn parse(flavor: &str) -> Option<Flavor> {
        let flavor = flavor.trim();
        let (keystone, pipeline) = match flavor.strip_prefix("keystone+") {
            Some(rest) if !rest.is_empty() => (true, rest),
            Some(_) => return None,
            None if flavor == "keystone" => (true, ""),
            None => (false, flavor),
        };
        let (caching, cache_management) = match pipeline {
            "" => (false, false),
            "caching" => (true, false),
            "cachemanagement" => (true, true),
            _ => return None,
        };
        Some(Flavor {
            keystone,
            caching,
            cache_management,
        })
    }
}

/// What glance-api runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiSettings {
    /// Where to listen.
    pub bind: SocketAddr,
    /// `[database]`: the connection URL and oslo.db's pool options.
    pub database: DbOptions,
    /// The image stores (`enabled_backends`, or `[glance_store]`'s single store).
    pub stores: StoreConfig,
    /// The transparent cache, when image_cache_dir is set and the flavor caches.
    pub cache: Option<CacheOptions>,
    /// Serve the cache management API (flavor cachemanagement).
    pub cache_management: bool,
    /// Default page size of image lists (limit_param_default).
    pub limit_default: usize,
    /// Largest page size (api_limit_max).
    pub limit_max: usize,
    /// `[keystone_authtoken]`, with a keystone flavor: every request but the version
    /// documents and the health check needs a valid token. None serves everyone as an
    /// administrator, as upstream's unauthenticated flavors do.
    pub keystone: Option<AuthTokenOptions>,
    /// The policies: Glance's defaults and `[oslo_policy] policy_file`.
    pub policy: Policy,
    /// `image_member_quota`: members an image may have (negative: unlimited).
    pub image_member_quota: i64,
    /// `image_size_cap`: the most bytes an image may have (upstream's default, 1 TiB).
    pub image_size_cap: u64,
    /// `image_property_quota`: properties an image may have (negative: unlimited).
    pub image_property_quota: i64,
    /// `image_tag_quota`: tags an image may have (negative: unlimited).
    pub image_tag_quota: i64,
    /// `image_location_quota`: locations an image may have (negative: unlimited).
    pub image_location_quota: i64,
    /// `client_socket_timeout`: how long a client may send or read nothing (a request
    /// head or body it does not send, an answer it does not read, a kept-alive connection
    /// without a next request); None (0) for no limit.
    pub client_socket_timeout: Option<Duration>,
    /// `graceful_shutdown_timeout`: how long a stop lets the requests in flight finish;
    /// None (0) for no limit.
    pub graceful_shutdown_timeout: Option<Duration>,
    /// Interoperable image import.
    pub import: ImportSettings,
    /// `show_multiple_locations`: images show their `locations`.
    pub show_multiple_locations: bool,
    /// `show_image_direct_url`: images show their first location as `direct_url`.
    pub show_image_direct_url: bool,
    /// `do_secure_hash`: the location API hashes a new location's data.
    pub do_secure_hash: bool,
    /// This replica's URL for the others (`worker_self_reference_url`, else
    /// `public_endpoint`): where an image staged here is imported from.
    pub self_url: Option<String>,
}

impl ApiSettings {
    /// Reads the settings from `config`.
    pub fn from_config(config: &Config) -> Result<Self, SettingsError> {
        let host = config.get_str(DEFAULT_SECTION, "bind_host", "0.0.0.0");
        let ip: IpAddr = host
            .parse()
            .map_err(|_| SettingsError::BindHost(host.to_owned()))?;
        let port = config.get_u64(DEFAULT_SECTION, "bind_port", 9292)?;
        let port = u16::try_from(port).map_err(|_| SettingsError::BindPort(port))?;

        let flavor = config
            .get_str("paste_deploy", "flavor", "")
            .trim()
            .to_owned();
        let Flavor {
            keystone,
            caching,
            cache_management,
        } = Flavor::parse(&flavor).ok_or_else(|| SettingsError::Flavor(flavor.clone()))?;
        let keystone = if keystone {
            Some(AuthTokenOptions::from_config(config)?)
        } else {
            None
        };
        // Keystone's unified limits would be ignored without a word: refused instead.
        if config.get_bool(DEFAULT_SECTION, "use_keystone_limits", false)? {
            return Err(SettingsError::Unsupported(
                "[DEFAULT] use_keystone_limits = True: this glance-api does not enforce \
                 Keystone's unified limits; leave it False (upstream's default)"
                    .to_owned(),
            ));
        }
        let cache_options = CacheOptions::from_config(config)?;
        let cache = (caching && cache_options.image_cache_dir.is_some()).then_some(cache_options);

        Ok(Self {
            bind: SocketAddr::new(ip, port),
            database: DbOptions::from_config(config, "sqlite:////var/lib/glance/glance.sqlite")?,
            stores: StoreConfig::from_config(config)?,
            cache_management: cache_management && cache.is_some(),
            cache,
            limit_default: usize::try_from(config.get_u64(
                DEFAULT_SECTION,
                "limit_param_default",
                25,
            )?)
            .unwrap_or(25)
            .max(1),
            limit_max: usize::try_from(config.get_u64(DEFAULT_SECTION, "api_limit_max", 1000)?)
                .unwrap_or(1000)
                .max(1),
            keystone,
            policy: Policy::from_config(config)?,
            image_member_quota: quota(config, "image_member_quota")?,
            image_size_cap: config.get_u64(DEFAULT_SECTION, "image_size_cap", 1 << 40)?,
            image_property_quota: quota(config, "image_property_quota")?,
            image_tag_quota: quota(config, "image_tag_quota")?,
            image_location_quota: quota(config, "image_location_quota")?,
            show_multiple_locations: config.get_bool(
                DEFAULT_SECTION,
                "show_multiple_locations",
                false,
            )?,
            show_image_direct_url: config.get_bool(
                DEFAULT_SECTION,
                "show_image_direct_url",
                false,
            )?,
            do_secure_hash: config.get_bool(DEFAULT_SECTION, "do_secure_hash", true)?,
            self_url: ["worker_self_reference_url", "public_endpoint"]
                .iter()
                .filter_map(|key| config.get(DEFAULT_SECTION, key))
                .map(str::trim)
                .find(|url| !url.is_empty())
                .map(|url| url.trim_end_matches('/').to_owned()),
            client_socket_timeout: timeout(
                config,
                CLIENT_SOCKET_TIMEOUT,
                CLIENT_SOCKET_TIMEOUT_DEFAULT,
            )?,
            graceful_shutdown_timeout: timeout(
                config,
                GRACEFUL_SHUTDOWN_TIMEOUT,
                GRACEFUL_SHUTDOWN_TIMEOUT_DEFAULT,
            )?,
            import: ImportSettings::from_config(config)?,
        })
    }
}

/// One of upstream's image quotas: `image_member_quota`, `image_property_quota` and
/// `image_tag_quota` (default 128) or `image_location_quota` (default 10); negative for no
/// limit.
fn quota(config: &Config, option: &'static str) -> Result<i64, ConfError> {
    let default = if option == "image_location_quota" {
        "10"
    } else {
        "128"
    };
    let raw = config.get_str(DEFAULT_SECTION, option, default);
    raw.trim().parse().map_err(|_| {
        config.invalid(
            DEFAULT_SECTION,
            option,
            "expected an integer (negative for no limit)",
        )
    })
}

/// The default backend's name: `[glance_store] default_backend` with multiple stores,
/// else `file` (the store's type, as upstream names single-store locations).
pub fn default_backend(config: &Config) -> &str {
    config
        .get("glance_store", "default_backend")
        .filter(|_| config.get(DEFAULT_SECTION, "enabled_backends").is_some())
        .unwrap_or("file")
}

/// filesystem_store_datadir of the default backend (multi-store), else of [glance_store].
pub fn store_dir(config: &Config) -> PathBuf {
    let backend = config
        .get("glance_store", "default_backend")
        .filter(|_| config.get(DEFAULT_SECTION, "enabled_backends").is_some());
    let dir = backend
        .and_then(|b| config.get(b, "filesystem_store_datadir"))
        .or_else(|| config.get("glance_store", "filesystem_store_datadir"))
        .unwrap_or("/var/lib/glance/images/");
    crate::conf::absolute(dir)
}
