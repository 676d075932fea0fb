//! The `Glance` custom resource (glance.openstack.org/v1beta1).
//!
//! Field names, defaults and admission rules follow DESIGN.md. Every admission rule is a
//! constant in [`rules`], so the tests can pin the exact CEL text the API server compiles,
//! and `validate` in [`crate::crd::validate`] enforces the same rules again in Rust.

pub mod rules;
pub mod validate;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Default `spec.storageRequest`.
pub const DEFAULT_STORAGE_REQUEST: &str = "10G";
/// Default `spec.imageCache.prunerSchedule`.
pub const DEFAULT_PRUNER_SCHEDULE: &str = "*/15 * * * *";
/// Default `spec.imageCache.cleanerSchedule`.
pub const DEFAULT_CLEANER_SCHEDULE: &str = "*/30 * * * *";
/// Default `spec.imageCache.stallTime` (upstream `image_cache_stall_time`).
pub const DEFAULT_STALL_TIME: i64 = 86400;
/// Default `spec.keystone.usernameKey`.
pub const DEFAULT_USERNAME_KEY: &str = "username";
/// Default `spec.keystone.passwordKey`.
pub const DEFAULT_PASSWORD_KEY: &str = "password";
/// Default `spec.keystone.projectName`.
pub const DEFAULT_PROJECT_NAME: &str = "service";
/// Default `spec.keystone.userDomainName` and `projectDomainName`.
pub const DEFAULT_DOMAIN_NAME: &str = "Default";

/// Desired state of a Glance API with an optional local image cache.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "glance.openstack.org",
    version = "v1beta1",
    kind = "Glance",
    plural = "glances",
    namespaced,
    status = "GlanceStatus",
    derive = "PartialEq",
    category = "openstack",
    doc = "Glance runs an OpenStack Image API (glance-api) with an optional local image cache, kept within imageCacheSize by pruner and cleaner CronJobs.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Cache", type_ = "string", json_path = ".spec.imageCacheSize"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new(rules::NAME_LENGTH).message(rules::NAME_LENGTH_MESSAGE),
    validation = Rule::new(rules::NAME_FORMAT).message(rules::NAME_FORMAT_MESSAGE),
    cel
)]
#[x_kube(validation = Rule::new(rules::REPLICAS_NEED_DATABASE).message(rules::REPLICAS_NEED_DATABASE_MESSAGE))]
#[serde(rename_all = "camelCase")]
pub struct GlanceSpec {
    /// Size of the local image cache, as a Kubernetes quantity (for example 10G or 10Gi).
    /// It is both the cache PVC's request and glance-api's image_cache_max_size in bytes.
    /// Absent or "" turns the cache off and removes the cache PVC and CronJobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(rules::CACHE_SIZE).message(rules::CACHE_SIZE_MESSAGE))]
    pub image_cache_size: Option<Quantity>,

    /// Settings of the image cache and of its pruner and cleaner CronJobs.
    #[serde(default)]
    pub image_cache: ImageCacheSpec,

    /// StorageClass of the storage and cache PVCs. Absent or "" uses the cluster default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,

    /// Size of the storage PVC mounted at /var/lib/glance, which holds image files and,
    /// without a databaseInstance, the SQLite metadata database.
    #[serde(default = "default_storage_request")]
    #[x_kube(validation = Rule::new(rules::STORAGE_REQUEST).message(rules::STORAGE_REQUEST_MESSAGE))]
    pub storage_request: Quantity,

    /// Extra glance-api.conf options in INI form. Rendered verbatim as 01-custom.conf, which
    /// glance-api reads after the operator's 00-config.conf, so it overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_service_config: Option<String>,

    /// Names of Secrets in this namespace whose keys are more glance-api.conf files, for
    /// options that must not be written into the Glance itself, such as s3_store_access_key
    /// and s3_store_secret_key. Every key of the i-th Secret (counting from 0) is mounted in
    /// the config directory as <NN>-<secret>-<key>.conf with NN = i + 2 (a key that already
    /// ends in .conf keeps a single .conf). So they are read after 01-custom.conf and override
    /// customServiceConfig, and a later Secret overrides an earlier one. At most 16 Secrets.
    /// A change to one of them rolls the glance-api pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = rules::CONFIG_SECRETS_MAX), inner(length(max = rules::SECRET_NAME_MAX)))]
    #[x_kube(validation = Rule::new(rules::CONFIG_SECRET_NAMES).message(rules::CONFIG_SECRET_NAMES_MESSAGE))]
    #[x_kube(validation = Rule::new(rules::CONFIG_SECRETS_UNIQUE).message(rules::CONFIG_SECRETS_UNIQUE_MESSAGE))]
    pub custom_service_config_secrets: Vec<String>,

    /// Name of a Secret in this namespace whose key `connection` holds the database URL.
    /// Absent or "" keeps the metadata in SQLite on the storage PVC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_instance: Option<String>,

    /// The glance-api StatefulSet.
    #[serde(default, rename = "glanceAPI")]
    pub glance_api: GlanceApiSpec,

    /// Keystone authentication of the Image API. When set, glance-api checks the token of
    /// every request with Keystone (the keystone paste flavor and a `[keystone_authtoken]`
    /// section in glance-api.conf), with the service user whose name and password are read
    /// from a Secret. When absent, the Image API serves every request without authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keystone: Option<KeystoneSpec>,
}

/// How glance-api authenticates requests with Keystone: keystonemiddleware's
/// `[keystone_authtoken]` options with the password auth type. The service user's name and
/// password stay in a Secret; glance-api gets them as environment variables.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KeystoneSpec {
    /// The Keystone identity endpoint glance-api validates tokens with (auth_url), an
    /// http:// or https:// URL such as `http://keystone-public.openstack.svc:5000/v3`.
    #[schemars(length(max = rules::KEYSTONE_URL_MAX))]
    #[x_kube(validation = Rule::new(rules::KEYSTONE_URL).message(rules::KEYSTONE_AUTH_URL_MESSAGE))]
    pub auth_url: String,

    /// The Keystone endpoint that clients without a valid token are sent to, in the
    /// WWW-Authenticate header of a 401 (www_authenticate_uri). Absent: authUrl.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = rules::KEYSTONE_URL_MAX))]
    #[x_kube(validation = Rule::new(rules::KEYSTONE_URL).message(rules::KEYSTONE_WWW_AUTHENTICATE_URI_MESSAGE))]
    pub www_authenticate_uri: Option<String>,

    /// Name of a Secret in this namespace holding the service user's name and password,
    /// under usernameKey and passwordKey. They are passed to glance-api as environment
    /// variables, never written into the Glance or the rendered configuration. A change
    /// to them rolls the glance-api pods.
    #[schemars(length(max = rules::SECRET_NAME_MAX))]
    #[x_kube(validation = Rule::new(rules::KEYSTONE_SECRET).message(rules::KEYSTONE_SECRET_MESSAGE))]
    pub secret: String,

    /// Key of the Secret holding the service user's name (username).
    #[serde(default = "default_username_key")]
    #[schemars(length(max = rules::SECRET_NAME_MAX))]
    #[x_kube(validation = Rule::new(rules::SECRET_KEY).message(rules::KEYSTONE_USERNAME_KEY_MESSAGE))]
    pub username_key: String,

    /// Key of the Secret holding the service user's password (password).
    #[serde(default = "default_password_key")]
    #[schemars(length(max = rules::SECRET_NAME_MAX))]
    #[x_kube(validation = Rule::new(rules::SECRET_KEY).message(rules::KEYSTONE_PASSWORD_KEY_MESSAGE))]
    pub password_key: String,

    /// Project the service user's token is scoped to (project_name).
    #[serde(default = "default_project_name")]
    #[schemars(length(max = rules::KEYSTONE_NAME_MAX))]
    #[x_kube(validation = Rule::new(rules::CONFIG_VALUE).message(rules::KEYSTONE_PROJECT_NAME_MESSAGE))]
    pub project_name: String,

    /// Domain of the service user (user_domain_name).
    #[serde(default = "default_domain_name")]
    #[schemars(length(max = rules::KEYSTONE_NAME_MAX))]
    #[x_kube(validation = Rule::new(rules::CONFIG_VALUE).message(rules::KEYSTONE_USER_DOMAIN_NAME_MESSAGE))]
    pub user_domain_name: String,

    /// Domain of the project (project_domain_name).
    #[serde(default = "default_domain_name")]
    #[schemars(length(max = rules::KEYSTONE_NAME_MAX))]
    #[x_kube(validation = Rule::new(rules::CONFIG_VALUE).message(rules::KEYSTONE_PROJECT_DOMAIN_NAME_MESSAGE))]
    pub project_domain_name: String,

    /// Region whose identity endpoint is taken from the service catalog (region_name).
    /// Absent: any region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = rules::KEYSTONE_NAME_MAX))]
    #[x_kube(validation = Rule::new(rules::CONFIG_VALUE).message(rules::KEYSTONE_REGION_MESSAGE))]
    pub region: Option<String>,

    /// Which identity endpoint of the service catalog tokens are validated with
    /// (interface): public, internal or admin. Absent: internal, keystonemiddleware's
    /// default.
    // The schema takes the description of KeystoneInterface, which says the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<KeystoneInterface>,
}

/// Which identity endpoint of the service catalog tokens are validated with
/// (keystonemiddleware's interface): public, internal or admin. Absent: internal,
/// keystonemiddleware's default.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum KeystoneInterface {
    /// The public endpoint.
    Public,
    /// The internal endpoint.
    Internal,
    /// The admin endpoint.
    Admin,
}

impl KeystoneInterface {
    /// The value of `interface`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Internal => "internal",
            Self::Admin => "admin",
        }
    }
}

/// Image cache settings (upstream glance-api.conf image_cache_* options).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageCacheSpec {
    /// Cron schedule of the glance-cache-pruner CronJob, which evicts least recently used
    /// images until the cache fits imageCacheSize.
    #[serde(default = "default_pruner_schedule")]
    #[x_kube(validation = Rule::new(rules::SCHEDULE).message(rules::SCHEDULE_MESSAGE))]
    pub pruner_schedule: String,

    /// Cron schedule of the glance-cache-cleaner CronJob, which removes invalid and stalled
    /// partial cache files.
    #[serde(default = "default_cleaner_schedule")]
    #[x_kube(validation = Rule::new(rules::SCHEDULE).message(rules::SCHEDULE_MESSAGE))]
    pub cleaner_schedule: String,

    /// Seconds after which an incomplete cache file counts as stalled (image_cache_stall_time).
    #[serde(default = "default_stall_time")]
    #[schemars(range(min = 1))]
    pub stall_time: i64,

    /// Access mode of each replica's cache volume. Every replica has its own, so
    /// ReadWriteOnce (the default) serves any number of replicas.
    #[serde(default)]
    pub access_mode: CacheAccessMode,

    /// Cache metadata driver (image_cache_driver).
    #[serde(default)]
    pub driver: CacheDriver,
}

impl Default for ImageCacheSpec {
    fn default() -> Self {
        Self {
            pruner_schedule: default_pruner_schedule(),
            cleaner_schedule: default_cleaner_schedule(),
            stall_time: DEFAULT_STALL_TIME,
            access_mode: CacheAccessMode::default(),
            driver: CacheDriver::default(),
        }
    }
}

/// Access mode of the replicas' cache volumes.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CacheAccessMode {
    /// One node mounts each cache volume; its CronJobs follow its replica to that node.
    #[default]
    ReadWriteOnce,
    /// Every node may mount the cache.
    ReadWriteMany,
}

impl CacheAccessMode {
    /// The PVC access mode string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReadWriteOnce => "ReadWriteOnce",
            Self::ReadWriteMany => "ReadWriteMany",
        }
    }
}

/// Image cache metadata driver, as upstream's image_cache_driver.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum CacheDriver {
    /// Metadata in cache.db inside the cache directory.
    #[default]
    Sqlite,
    /// Metadata in extended attributes of the cached files.
    Xattr,
    /// Metadata in the catalogue database, one row set per replica keyed by its
    /// worker_self_reference_url, so that any replica can tell which replicas hold an
    /// image (GET /v2/cache/nodes/{image_id}). Upstream Glance's default since 2024.1.
    #[serde(rename = "centralized_db")]
    CentralizedDb,
}

impl CacheDriver {
    /// The value of image_cache_driver.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Xattr => "xattr",
            Self::CentralizedDb => "centralized_db",
        }
    }
}

/// The glance-api StatefulSet and the pods of the cache CronJobs.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GlanceApiSpec {
    /// Number of glance-api pods, each with its own cache volume, at most 32. More than one
    /// needs a databaseInstance with a MariaDB/MySQL or PostgreSQL URL, and image data on a
    /// shared store: the file store on the storage volume (then ReadWriteMany), or a
    /// default backend of another type in customServiceConfig.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = rules::REPLICAS_MAX))]
    pub replicas: i32,

    /// Container image of glance-api and the cache CronJobs. Absent or "" uses the image
    /// the operator was deployed with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_image: Option<String>,

    /// Compute resources of the glance-api container and the cache job containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Node selector of the glance-api and cache job pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Tolerations of the glance-api and cache job pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
}

impl Default for GlanceApiSpec {
    fn default() -> Self {
        Self {
            replicas: default_replicas(),
            container_image: None,
            resources: None,
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
        }
    }
}

/// Observed state of a Glance.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct GlanceStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready, plus ConfigReady, StorageReady, CacheReady, APIReady and DatabaseReady, and
    /// Authenticated, which says whether the Image API asks Keystone for a token (it does
    /// not count towards Ready).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,

    /// glance-api pods that are ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,

    /// image_cache_max_size in bytes, as rendered into glance-api.conf; absent while the cache is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_cache_max_size: Option<i64>,

    /// In-cluster URL of the Image API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_endpoint: Option<String>,
}

fn default_storage_request() -> Quantity {
    Quantity(DEFAULT_STORAGE_REQUEST.to_owned())
}

fn default_pruner_schedule() -> String {
    DEFAULT_PRUNER_SCHEDULE.to_owned()
}

fn default_cleaner_schedule() -> String {
    DEFAULT_CLEANER_SCHEDULE.to_owned()
}

fn default_stall_time() -> i64 {
    DEFAULT_STALL_TIME
}

fn default_replicas() -> i32 {
    1
}

fn default_username_key() -> String {
    DEFAULT_USERNAME_KEY.to_owned()
}

fn default_password_key() -> String {
    DEFAULT_PASSWORD_KEY.to_owned()
}

fn default_project_name() -> String {
    DEFAULT_PROJECT_NAME.to_owned()
}

fn default_domain_name() -> String {
    DEFAULT_DOMAIN_NAME.to_owned()
}
