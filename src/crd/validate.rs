//! `validate`: the first step of the reconcile pipeline.
//!
//! It enforces the same rules as the CRD's CEL (an object may predate a rule, or reach us
//! from a server that skipped it) and turns the spec into [`ValidGlance`], whose fields are
//! already parsed, so the builders never see an unchecked value.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};
use thiserror::Error;

use super::rules::{
    CONFIG_SECRETS_MAX, KEYSTONE_NAME_MAX, KEYSTONE_URL_MAX, REPLICAS_MAX, SECRET_NAME_MAX,
    name_max,
};
use super::{CacheAccessMode, CacheDriver, Glance, KeystoneInterface, KeystoneSpec};
use crate::conf::Config;
use crate::quantity::{self, QuantityError};
use crate::resources::config::{CACHE_DIR, STORAGE_DIR, render_config};
use crate::store::config::file_store_dirs;

/// A spec that breaks a rule. The message names the field.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum InvalidSpec {
    /// A quantity field does not parse or is not a positive whole number of bytes.
    #[error("spec.{field}: {source}")]
    Quantity {
        /// Path of the field under spec.
        field: &'static str,
        /// What is wrong with it.
        source: QuantityError,
    },
    /// A quantity is zero.
    #[error("spec.{field}: must be greater than zero")]
    Zero {
        /// Path of the field under spec.
        field: &'static str,
    },
    /// A byte count does not fit the status field (int64).
    #[error("spec.{field}: {bytes} bytes is larger than the largest supported size (2^63-1)")]
    TooLarge {
        /// Path of the field under spec.
        field: &'static str,
        /// The parsed size.
        bytes: u64,
    },
    /// A cron schedule is malformed.
    #[error(
        "spec.imageCache.{field}: {value:?} is not a cron schedule of five fields or an @ macro"
    )]
    Schedule {
        /// Field name under spec.imageCache.
        field: &'static str,
        /// The value given.
        value: String,
    },
    /// image_cache_stall_time must be positive.
    #[error("spec.imageCache.stallTime: must be at least 1 second, got {0}")]
    StallTime(i64),
    /// Negative replicas.
    #[error("spec.glanceAPI.replicas: must not be negative, got {0}")]
    Replicas(i32),
    /// Several replicas cannot share SQLite.
    #[error(
        "spec.databaseInstance: glanceAPI.replicas is {0}, and more than 1 replica needs databaseInstance: the name of a Secret whose key connection holds a MariaDB/MySQL or PostgreSQL URL"
    )]
    ReplicasNeedDatabase(i32),
    /// More replicas than the cap.
    #[error("spec.glanceAPI.replicas: at most {REPLICAS_MAX} replicas, got {0}")]
    TooManyReplicas(i32),
    /// Several replicas need image data on a shared store: every file store on the
    /// storage volume.
    #[error(
        "spec.customServiceConfig: glanceAPI.replicas is {replicas}, and a file store keeps images at {dir}, which is not on the shared storage volume: keep filesystem_store_datadir under {STORAGE_DIR} (outside {CACHE_DIR}), or use a remote store such as s3 for every backend"
    )]
    ReplicasNeedSharedStore {
        /// The replicas asked for.
        replicas: i32,
        /// The file store's directory.
        dir: String,
    },
    /// The name does not leave room for the child names.
    #[error(
        "metadata.name: {name:?} is {len} characters; with {replicas} replicas at most {max} leave room for <name>-cache-cleaner-<replica> (CronJob names are at most 52)"
    )]
    NameTooLong {
        /// The name.
        name: String,
        /// Its length.
        len: usize,
        /// glanceAPI.replicas.
        replicas: i32,
        /// The longest name allowed with that many replicas.
        max: usize,
    },
    /// The name is not a DNS-1035 label.
    #[error(
        "metadata.name: {0:?} must start with a lowercase letter, end with a letter or digit, and hold only lowercase letters, digits and '-'"
    )]
    NameFormat(String),
    /// An entry of customServiceConfigSecrets is not a Secret name.
    #[error(
        "spec.customServiceConfigSecrets[{index}]: {name:?} is not a Secret name: set it to the name of a Secret in this namespace (lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, at most {SECRET_NAME_MAX} characters)"
    )]
    ConfigSecretName {
        /// Position in the list.
        index: usize,
        /// The entry.
        name: String,
    },
    /// A Secret is listed twice in customServiceConfigSecrets.
    #[error(
        "spec.customServiceConfigSecrets[{index}]: Secret {name:?} is already listed; name each Secret once"
    )]
    ConfigSecretRepeated {
        /// Position of the repetition.
        index: usize,
        /// The Secret name.
        name: String,
    },
    /// customServiceConfigSecrets is too long.
    #[error(
        "spec.customServiceConfigSecrets: {0} Secrets listed; at most {CONFIG_SECRETS_MAX} are allowed: put several files into one Secret, one key each"
    )]
    TooManyConfigSecrets(usize),
    /// A spec.keystone field breaks its rule.
    #[error("spec.keystone.{field}: {value:?} {expected}")]
    Keystone {
        /// Field name under spec.keystone.
        field: &'static str,
        /// The value given.
        value: String,
        /// What it must be.
        expected: &'static str,
    },
    /// The object has no namespace or uid (it did not come from the API server).
    #[error("metadata.{0}: missing")]
    Metadata(&'static str),
}

/// A size given as a quantity, with its exact byte count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Size {
    /// The quantity as the user wrote it (used for PVC requests).
    pub quantity: String,
    /// Its exact value in bytes.
    pub bytes: u64,
}

/// The image cache, when it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    /// imageCacheSize.
    pub size: Size,
    /// Pruner CronJob schedule.
    pub pruner_schedule: String,
    /// Cleaner CronJob schedule.
    pub cleaner_schedule: String,
    /// image_cache_stall_time in seconds.
    pub stall_time: i64,
    /// Cache PVC access mode.
    pub access_mode: CacheAccessMode,
    /// image_cache_driver.
    pub driver: CacheDriver,
}

/// Keystone authentication, when spec.keystone is set: the `[keystone_authtoken]` options
/// and where the service user's credentials are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeystoneSettings {
    /// auth_url.
    pub auth_url: String,
    /// www_authenticate_uri: wwwAuthenticateUri, else auth_url.
    pub www_authenticate_uri: String,
    /// The Secret holding the service user's name and password.
    pub secret: String,
    /// Its key holding the user name.
    pub username_key: String,
    /// Its key holding the password.
    pub password_key: String,
    /// project_name.
    pub project_name: String,
    /// user_domain_name.
    pub user_domain_name: String,
    /// project_domain_name.
    pub project_domain_name: String,
    /// region_name; None = not set.
    pub region: Option<String>,
    /// interface; None = not set (keystonemiddleware's default, internal).
    pub interface: Option<KeystoneInterface>,
}

/// A Glance whose spec passed every rule, ready for the pure builders.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidGlance {
    /// metadata.name.
    pub name: String,
    /// metadata.namespace.
    pub namespace: String,
    /// Controller owner reference to the Glance, set on every child.
    pub owner: OwnerReference,
    /// Storage PVC size.
    pub storage: Size,
    /// How the replicas use the storage volume.
    pub storage_use: StorageUse,
    /// StorageClass of both PVCs; None = cluster default.
    pub storage_class: Option<String>,
    /// The cache; None = off.
    pub cache: Option<CacheSettings>,
    /// Secret holding the database URL; None = SQLite on the storage PVC.
    pub database_instance: Option<String>,
    /// 01-custom.conf, verbatim.
    pub custom_config: String,
    /// Secrets whose keys are mounted as more config files after 01-custom.conf, in order.
    pub config_secrets: Vec<String>,
    /// Keystone authentication; None = the API serves without authentication.
    pub keystone: Option<KeystoneSettings>,
    /// StatefulSet replicas.
    pub replicas: i32,
    /// Image of the API and the CronJobs.
    pub image: String,
    /// Container resources.
    pub resources: Option<ResourceRequirements>,
    /// Pod node selector.
    pub node_selector: BTreeMap<String, String>,
    /// Pod tolerations.
    pub tolerations: Vec<Toleration>,
}

/// Checks a Glance and parses its spec. `default_image` is used when
/// spec.glanceAPI.containerImage is absent or empty.
pub fn validate(glance: &Glance, default_image: &str) -> Result<ValidGlance, InvalidSpec> {
    let name = glance.name_any();
    check_name(&name, glance.spec.glance_api.replicas)?;
    let namespace = glance
        .namespace()
        .ok_or(InvalidSpec::Metadata("namespace"))?;
    let mut owner = glance
        .controller_owner_ref(&())
        .ok_or(InvalidSpec::Metadata("uid"))?;
    // Foreground deletion of a Glance waits for its children.
    owner.block_owner_deletion = Some(true);
    let spec = &glance.spec;

    let storage = positive_size("storageRequest", &spec.storage_request.0)?;
    let cache = match spec.image_cache_size.as_ref().map(|q| q.0.as_str()) {
        None | Some("") => None,
        Some(size) => {
            let c = &spec.image_cache;
            check_schedule("prunerSchedule", &c.pruner_schedule)?;
            check_schedule("cleanerSchedule", &c.cleaner_schedule)?;
            if c.stall_time < 1 {
                return Err(InvalidSpec::StallTime(c.stall_time));
            }
            Some(CacheSettings {
                size: positive_size("imageCacheSize", size)?,
                pruner_schedule: c.pruner_schedule.clone(),
                cleaner_schedule: c.cleaner_schedule.clone(),
                stall_time: c.stall_time,
                access_mode: c.access_mode,
                driver: c.driver,
            })
        }
    };

    check_config_secrets(&spec.custom_service_config_secrets)?;
    let keystone = spec.keystone.as_ref().map(keystone_settings).transpose()?;

    let api = &spec.glance_api;
    let database_instance = non_empty(&spec.database_instance);
    if api.replicas < 0 {
        return Err(InvalidSpec::Replicas(api.replicas));
    }
    if api.replicas > REPLICAS_MAX {
        return Err(InvalidSpec::TooManyReplicas(api.replicas));
    }
    if api.replicas > 1 && database_instance.is_none() {
        return Err(InvalidSpec::ReplicasNeedDatabase(api.replicas));
    }

    let mut valid = ValidGlance {
        name,
        namespace,
        owner,
        storage,
        storage_use: StorageUse::Single,
        storage_class: non_empty(&spec.storage_class),
        cache,
        database_instance,
        custom_config: spec.custom_service_config.clone().unwrap_or_default(),
        config_secrets: spec.custom_service_config_secrets.clone(),
        keystone,
        replicas: api.replicas,
        image: non_empty(&api.container_image).unwrap_or_else(|| default_image.to_owned()),
        resources: api.resources.clone(),
        node_selector: api.node_selector.clone(),
        tolerations: api.tolerations.clone(),
    };
    valid.storage_use = storage_use(&valid)?;
    Ok(valid)
}

/// How the replicas use the storage volume `<name>-storage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageUse {
    /// One replica: images of the file stores and, without a databaseInstance, SQLite.
    Single,
    /// Several replicas sharing the file stores on it: it must be ReadWriteMany.
    Shared,
    /// Several replicas and no file store: no pod mounts it (and it keeps what it holds).
    Unmounted,
}

/// With several replicas, image data must be where every replica finds it: every file
/// store on the storage volume, which is then ReadWriteMany, or only remote stores. The
/// configuration is read as glance-api reads it, with the rendered file first and
/// customServiceConfig over it. Its Secrets are not seen here, so only
/// customServiceConfig can change the stores.
fn storage_use(glance: &ValidGlance) -> Result<StorageUse, InvalidSpec> {
    if glance.replicas <= 1 {
        return Ok(StorageUse::Single);
    }
    let Some(config) = effective_config(glance) else {
        return Ok(StorageUse::Shared);
    };
    let outside = |dir: &std::path::Path| {
        let climbs = dir
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir));
        climbs || !dir.starts_with(STORAGE_DIR) || dir.starts_with(CACHE_DIR)
    };
    let dirs = file_store_dirs(&config);
    if let Some(dir) = dirs.iter().find(|dir| outside(dir)) {
        return Err(InvalidSpec::ReplicasNeedSharedStore {
            replicas: glance.replicas,
            dir: dir.display().to_string(),
        });
    }
    Ok(if dirs.is_empty() {
        StorageUse::Unmounted
    } else {
        StorageUse::Shared
    })
}

/// The configuration as glance-api reads it, as far as the operator sees it: the
/// rendered file, with customServiceConfig over it (its Secrets are not seen here). A
/// malformed customServiceConfig is left out, for glance-api to refuse naming the line.
pub fn effective_config(glance: &ValidGlance) -> Option<Config> {
    // The rendered file has no syntax errors.
    let mut config = Config::from_str("00-config.conf", &render_config(glance, None)).ok()?;
    if let Ok(custom) = Config::from_str("01-custom.conf", &glance.custom_config) {
        config.merge(custom);
    }
    Some(config)
}

fn non_empty(value: &Option<String>) -> Option<String> {
    value.as_ref().filter(|v| !v.is_empty()).cloned()
}

fn positive_size(field: &'static str, value: &str) -> Result<Size, InvalidSpec> {
    let bytes =
        quantity::parse_bytes(value).map_err(|source| InvalidSpec::Quantity { field, source })?;
    if bytes == 0 {
        return Err(InvalidSpec::Zero { field });
    }
    if i64::try_from(bytes).is_err() {
        return Err(InvalidSpec::TooLarge { field, bytes });
    }
    Ok(Size {
        quantity: value.to_owned(),
        bytes,
    })
}

fn check_name(name: &str, replicas: i32) -> Result<(), InvalidSpec> {
    let max = name_max(replicas);
    if name.len() > max {
        return Err(InvalidSpec::NameTooLong {
            name: name.to_owned(),
            len: name.len(),
            replicas,
            max,
        });
    }
    let bytes = name.as_bytes();
    let allowed = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
    let ok = bytes.first().is_some_and(u8::is_ascii_lowercase)
        && bytes.last().is_some_and(|b| *b != b'-')
        && bytes.iter().all(allowed);
    if ok {
        Ok(())
    } else {
        Err(InvalidSpec::NameFormat(name.to_owned()))
    }
}

/// True for a DNS-1123 subdomain: what Kubernetes accepts as a Secret name.
pub fn is_dns1123_subdomain(name: &str) -> bool {
    let label_ok = |label: &str| {
        let bytes = label.as_bytes();
        bytes
            .first()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && bytes
                .last()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
    };
    name.len() <= SECRET_NAME_MAX && name.split('.').all(label_ok)
}

/// Same rules as the CEL and the schema: at most CONFIG_SECRETS_MAX entries, each a Secret
/// name, none repeated.
fn check_config_secrets(names: &[String]) -> Result<(), InvalidSpec> {
    if names.len() > CONFIG_SECRETS_MAX {
        return Err(InvalidSpec::TooManyConfigSecrets(names.len()));
    }
    for (index, name) in names.iter().enumerate() {
        if !is_dns1123_subdomain(name) {
            return Err(InvalidSpec::ConfigSecretName {
                index,
                name: name.clone(),
            });
        }
        if names[..index].contains(name) {
            return Err(InvalidSpec::ConfigSecretRepeated {
                index,
                name: name.clone(),
            });
        }
    }
    Ok(())
}

/// Same rules as the CEL on spec.keystone and its schema's lengths; wwwAuthenticateUri
/// defaults to authUrl.
fn keystone_settings(spec: &KeystoneSpec) -> Result<KeystoneSettings, InvalidSpec> {
    fn check(
        field: &'static str,
        value: &str,
        ok: bool,
        expected: &'static str,
    ) -> Result<String, InvalidSpec> {
        if ok {
            Ok(value.to_owned())
        } else {
            Err(InvalidSpec::Keystone {
                field,
                value: value.to_owned(),
                expected,
            })
        }
    }
    const URL: &str = "is not an http:// or https:// URL with a host and without spaces";
    const NAME: &str =
        "must not be empty, hold a control character or line break, or start or end with a space";
    const KEY: &str = "is not a Secret key: letters, digits, '-', '_' and '.'";
    let url = |field, value: &str| {
        let ok = value.chars().count() <= KEYSTONE_URL_MAX && is_http_url(value);
        check(field, value, ok, URL)
    };
    let name = |field, value: &str| {
        let ok = value.chars().count() <= KEYSTONE_NAME_MAX && is_config_value(value);
        check(field, value, ok, NAME)
    };
    let key = |field, value: &str| {
        let ok = value.len() <= SECRET_NAME_MAX && is_secret_key(value);
        check(field, value, ok, KEY)
    };
    let auth_url = url("authUrl", &spec.auth_url)?;
    let www_authenticate_uri = match &spec.www_authenticate_uri {
        Some(uri) => url("wwwAuthenticateUri", uri)?,
        None => auth_url.clone(),
    };
    Ok(KeystoneSettings {
        auth_url,
        www_authenticate_uri,
        secret: check(
            "secret",
            &spec.secret,
            is_dns1123_subdomain(&spec.secret),
            "is not a Secret name: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit",
        )?,
        username_key: key("usernameKey", &spec.username_key)?,
        password_key: key("passwordKey", &spec.password_key)?,
        project_name: name("projectName", &spec.project_name)?,
        user_domain_name: name("userDomainName", &spec.user_domain_name)?,
        project_domain_name: name("projectDomainName", &spec.project_domain_name)?,
        region: spec
            .region
            .as_deref()
            .map(|region| name("region", region))
            .transpose()?,
        interface: spec.interface,
    })
}

/// A control character (what the CEL rules write as `\x00-\x1f` and `\x7f`).
fn is_control(c: char) -> bool {
    c <= '\u{1f}' || c == '\u{7f}'
}

/// Same as [`rules::KEYSTONE_URL`](super::rules::KEYSTONE_URL): `http://` or `https://`, a
/// host (up to the first `/`, `?` or `#`) that is not empty, and no space or control
/// character anywhere.
pub fn is_http_url(value: &str) -> bool {
    let Some(rest) = value
        .strip_prefix("http://")
        .or_else(|| value.strip_prefix("https://"))
    else {
        return false;
    };
    !rest.is_empty()
        && !rest.starts_with(['/', '?', '#'])
        && !rest.chars().any(|c| c == ' ' || is_control(c))
}

/// Same as [`rules::CONFIG_VALUE`](super::rules::CONFIG_VALUE): not empty, no control
/// character, no space at either end.
pub fn is_config_value(value: &str) -> bool {
    !value.is_empty()
        && !value.starts_with(' ')
        && !value.ends_with(' ')
        && !value.chars().any(is_control)
}

/// Same as [`rules::SECRET_KEY`](super::rules::SECRET_KEY): a key of a Secret's data.
pub fn is_secret_key(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

const CRON_MACROS: [&str; 7] = [
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
];

fn check_schedule(field: &'static str, value: &str) -> Result<(), InvalidSpec> {
    // Same shape as the CEL rule: an @ macro, or five fields separated by spaces.
    let five_fields = !value.starts_with(' ')
        && !value.ends_with(' ')
        && !value.contains(['\t', '\n', '\r'])
        && value.split(' ').filter(|f| !f.is_empty()).count() == 5;
    if CRON_MACROS.contains(&value) || five_fields {
        Ok(())
    } else {
        Err(InvalidSpec::Schedule {
            field,
            value: value.to_owned(),
        })
    }
}
