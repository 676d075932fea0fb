//! The configuration Secret: `00-config.conf` rendered from the spec with upstream Glance's
//! option names, and `01-custom.conf` holding spec.customServiceConfig verbatim; the names
//! under which the keys of the spec.customServiceConfigSecrets Secrets join them; and the
//! environment variables that carry the spec.keystone credentials.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use sha2::{Digest, Sha256};

use super::meta::{Component, child_meta};
use crate::api::settings::{GRACEFUL_SHUTDOWN_TIMEOUT, GRACEFUL_SHUTDOWN_TIMEOUT_DEFAULT};
use crate::crd::validate::{KeystoneSettings, StorageUse, ValidGlance};
use crate::keystone::options::SECTION as KEYSTONE_SECTION;

/// Key of the rendered configuration.
pub const RENDERED_KEY: &str = "00-config.conf";
/// Key of spec.customServiceConfig.
pub const CUSTOM_KEY: &str = "01-custom.conf";
/// Where the Secret is mounted; glance-api runs with `--config-dir` on it.
pub const CONFIG_DIR: &str = "/etc/glance/glance.conf.d";
/// Mount point of the storage PVC.
pub const STORAGE_DIR: &str = "/var/lib/glance";
/// image_cache_dir, the mount point of the cache PVC.
pub const CACHE_DIR: &str = "/var/lib/glance/image-cache";
/// filesystem_store_datadir.
pub const IMAGES_DIR: &str = "/var/lib/glance/images";
/// The import staging directory (`[os_glance_staging_store]`), on the storage volume: an
/// image staged through one replica is imported by any of them.
pub const STAGING_DIR: &str = "/var/lib/glance/os_glance_staging_store";
/// The staging directory of pods that mount no storage volume (several replicas on
/// remote stores only): their own `/tmp` (an emptyDir).
pub const POD_STAGING_DIR: &str = "/tmp/os_glance_staging_store";
/// glance-api's port.
pub const API_PORT: i32 = 9292;
/// Name of the file store backend in enabled_backends.
pub const BACKEND: &str = "default_backend";

/// `[keystone_authtoken] username` through oslo.config's environment source, from the
/// spec.keystone Secret.
pub const KEYSTONE_USERNAME_ENV: &str = "OS_KEYSTONE_AUTHTOKEN__USERNAME";
/// `[keystone_authtoken] password` through oslo.config's environment source, from the
/// spec.keystone Secret.
pub const KEYSTONE_PASSWORD_ENV: &str = "OS_KEYSTONE_AUTHTOKEN__PASSWORD";

/// Database URL used when spec.databaseInstance is empty: SQLite on the storage PVC.
pub fn sqlite_connection() -> String {
    format!("sqlite:///{STORAGE_DIR}/glance.sqlite")
}

/// Renders `00-config.conf`. `database_connection` is the URL read from the
/// databaseInstance Secret, or None for SQLite on the storage PVC.
pub fn render_config(glance: &ValidGlance, database_connection: Option<&str>) -> String {
    let connection = database_connection.map_or_else(sqlite_connection, str::to_owned);
    let mut lines = vec![
        "[DEFAULT]".to_owned(),
        "bind_host = 0.0.0.0".to_owned(),
        format!("bind_port = {API_PORT}"),
        format!("enabled_backends = {BACKEND}:file"),
        // Written out, so that the pods' grace period visibly outlasts it; see
        // `super::statefulset::termination_grace_period`.
        format!("{GRACEFUL_SHUTDOWN_TIMEOUT} = {GRACEFUL_SHUTDOWN_TIMEOUT_DEFAULT}"),
    ];
    if let Some(cache) = &glance.cache {
        lines.extend([
            format!("image_cache_dir = {CACHE_DIR}"),
            format!("image_cache_max_size = {}", cache.size.bytes),
            format!("image_cache_stall_time = {}", cache.stall_time),
            format!("image_cache_driver = {}", cache.driver.as_str()),
        ]);
    }
    lines.extend([
        String::new(),
        "[glance_store]".to_owned(),
        format!("default_backend = {BACKEND}"),
        String::new(),
        format!("[{BACKEND}]"),
        format!("filesystem_store_datadir = {IMAGES_DIR}"),
        String::new(),
        "[os_glance_staging_store]".to_owned(),
        format!(
            "filesystem_store_datadir = {}",
            if glance.storage_use == StorageUse::Unmounted {
                POD_STAGING_DIR
            } else {
                STAGING_DIR
            }
        ),
        String::new(),
        "[database]".to_owned(),
        format!("connection = {connection}"),
    ]);
    if let Some(keystone) = &glance.keystone {
        lines.push(String::new());
        lines.extend(keystone_authtoken(keystone));
    }
    if let Some(flavor) = paste_flavor(glance) {
        lines.extend([
            String::new(),
            "[paste_deploy]".to_owned(),
            format!("flavor = {flavor}"),
        ]);
    }
    lines.push(String::new());
    lines.join("\n")
}

/// `[paste_deploy] flavor`: `cachemanagement` while the cache is on, none (no caching)
/// while it is off; with spec.keystone, prefixed by `keystone+` (`keystone` alone when
/// the cache is off).
pub fn paste_flavor(glance: &ValidGlance) -> Option<&'static str> {
    match (glance.keystone.is_some(), glance.cache.is_some()) {
        (false, false) => None,
        (false, true) => Some("cachemanagement"),
        (true, false) => Some("keystone"),
        (true, true) => Some("keystone+cachemanagement"),
    }
}

/// The `[keystone_authtoken]` section, without the user name and password: glance-api
/// reads those from the environment ([`KEYSTONE_USERNAME_ENV`], [`KEYSTONE_PASSWORD_ENV`]).
fn keystone_authtoken(keystone: &KeystoneSettings) -> Vec<String> {
    let mut lines = vec![
        format!("[{KEYSTONE_SECTION}]"),
        "auth_type = password".to_owned(),
        format!("auth_url = {}", keystone.auth_url),
        format!("www_authenticate_uri = {}", keystone.www_authenticate_uri),
        format!("project_name = {}", keystone.project_name),
        format!("user_domain_name = {}", keystone.user_domain_name),
        format!("project_domain_name = {}", keystone.project_domain_name),
    ];
    if let Some(region) = &keystone.region {
        lines.push(format!("region_name = {region}"));
    }
    if let Some(interface) = keystone.interface {
        lines.push(format!("interface = {}", interface.as_str()));
    }
    lines
}

/// The Secret `<name>-config` holding both files.
pub fn config_secret(glance: &ValidGlance, database_connection: Option<&str>) -> Secret {
    let data = BTreeMap::from([
        (
            RENDERED_KEY.to_owned(),
            ByteString(render_config(glance, database_connection).into_bytes()),
        ),
        (
            CUSTOM_KEY.to_owned(),
            ByteString(glance.custom_config.clone().into_bytes()),
        ),
    ]);
    Secret {
        metadata: child_meta(glance, Component::Config),
        data: Some(data),
        type_: Some("Opaque".to_owned()),
        ..Secret::default()
    }
}

/// A Secret the spec names, as read from the cluster: one of spec.customServiceConfigSecrets
/// (each key becomes one config file), or the spec.keystone Secret (only the user name and
/// password keys, which glance-api reads from its environment).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigSecret {
    /// The Secret's name.
    pub name: String,
    /// Its data, or the part of it glance-api uses.
    pub data: BTreeMap<String, ByteString>,
}

/// The file in the config directory that key `key` of the Secret `secret`, listed at
/// `position` (from 0) in spec.customServiceConfigSecrets, is mounted as:
/// `<NN>-<secret>-<key>.conf` with NN = position + 2 in two digits, and a key that already
/// ends in `.conf` keeping a single `.conf`. glance-api reads the `*.conf` files of its
/// `--config-dir` in name order, so these come after `01-custom.conf` and in list order.
pub fn extra_config_file(position: usize, secret: &str, key: &str) -> String {
    let stem = key.strip_suffix(".conf").unwrap_or(key);
    format!("{:02}-{secret}-{stem}.conf", position + 2)
}

/// Longest file name most filesystems allow (NAME_MAX).
pub const FILE_NAME_MAX: usize = 255;

/// SHA-256 over the Secret's keys and values, as hex. A pod template annotated with it
/// rolls whenever the configuration changes.
pub fn config_hash(secret: &Secret) -> String {
    config_hash_with_secrets(secret, &[])
}

/// [`config_hash`] extended over the Secrets glance-api reads besides the config Secret:
/// the customServiceConfigSecrets Secrets in list order, then the spec.keystone Secret's
/// user name and password; their names, keys and values. With no such Secret it equals
/// [`config_hash`], so a Glance that names none keeps its pod template.
pub fn config_hash_with_secrets<'a>(
    secret: &Secret,
    extra: impl IntoIterator<Item = &'a ConfigSecret>,
) -> String {
    fn field(hasher: &mut Sha256, bytes: &[u8]) {
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(bytes);
    }
    let mut hasher = Sha256::new();
    for (key, value) in secret.data.iter().flatten() {
        field(&mut hasher, key.as_bytes());
        field(&mut hasher, &value.0);
    }
    for config_secret in extra {
        field(&mut hasher, config_secret.name.as_bytes());
        hasher.update((config_secret.data.len() as u64).to_be_bytes());
        for (key, value) in &config_secret.data {
            field(&mut hasher, key.as_bytes());
            field(&mut hasher, &value.0);
        }
    }
    hex::encode(hasher.finalize())
}
