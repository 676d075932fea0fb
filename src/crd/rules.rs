//! Admission rules of the Glance CRD, as the CEL text the API server compiles.
//!
//! The quantity rules keep to the forms a v1.36 API server is known to compile
//! (`isQuantity(self)`, `quantity(self).isGreaterThan(quantity('0'))`); the method forms
//! `self.isQuantity()` and `quantity(self).sign()` are rejected there. Regexes escape their
//! backslashes inside the CEL string.

/// Most glanceAPI.replicas (as glance-operator caps them).
pub const REPLICAS_MAX: i32 = 32;
/// Kubernetes limit on CronJob names (the Job controller appends 11 characters).
pub const CRONJOB_NAME_MAX: usize = 52;
/// The longest child names are the last replica's CronJobs: `<name>-cache-cleaner-<i>`.
pub const LONGEST_CHILD_INFIX: &str = "-cache-cleaner-";

/// Longest metadata.name that leaves room for every child name of `replicas` replicas.
pub fn name_max(replicas: i32) -> usize {
    let last_ordinal = replicas.clamp(1, REPLICAS_MAX) - 1;
    CRONJOB_NAME_MAX - LONGEST_CHILD_INFIX.len() - last_ordinal.to_string().len()
}

/// metadata.name leaves room for `<name>-cache-cleaner-<replicas - 1>` within 52
/// characters: 36 characters up to 10 replicas, 35 beyond ([`name_max`]).
pub const NAME_LENGTH: &str = "self.metadata.name.size() <= (has(self.spec.glanceAPI) && has(self.spec.glanceAPI.replicas) && self.spec.glanceAPI.replicas > 10 ? 35 : 36)";
/// Message of [`NAME_LENGTH`].
pub const NAME_LENGTH_MESSAGE: &str = "metadata.name must be at most 36 characters (35 with more than 10 replicas), so that the CronJob name <name>-cache-cleaner-<replica> fits in 52";

/// metadata.name is a DNS-1035 label, because it prefixes the `<name>-api` Service.
pub const NAME_FORMAT: &str = "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')";
/// Message of [`NAME_FORMAT`].
pub const NAME_FORMAT_MESSAGE: &str = "metadata.name must start with a lowercase letter, end with a letter or digit, and contain only lowercase letters, digits and '-', because it names the <name>-api Service";

/// imageCacheSize is "" (cache off) or a positive quantity.
pub const CACHE_SIZE: &str =
    "self == '' || (isQuantity(self) && quantity(self).isGreaterThan(quantity('0')))";
/// Message of [`CACHE_SIZE`].
pub const CACHE_SIZE_MESSAGE: &str = "imageCacheSize must be a positive Kubernetes quantity such as 10G or 10Gi, or empty to turn the cache off";

/// storageRequest is a positive quantity.
pub const STORAGE_REQUEST: &str = "isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))";
/// Message of [`STORAGE_REQUEST`].
pub const STORAGE_REQUEST_MESSAGE: &str =
    "storageRequest must be a positive Kubernetes quantity such as 10G or 10Gi";

/// A cron schedule: five fields, or one of the @ macros the CronJob controller knows.
pub const SCHEDULE: &str =
    r"self.matches('^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|\\S+( +\\S+){4})$')";
/// Message of [`SCHEDULE`].
pub const SCHEDULE_MESSAGE: &str =
    "must be a cron schedule of five fields such as '*/15 * * * *', or a macro such as @hourly";

/// More than one replica needs a shared database.
pub const REPLICAS_NEED_DATABASE: &str = "!has(self.glanceAPI) || !has(self.glanceAPI.replicas) || self.glanceAPI.replicas <= 1 || (has(self.databaseInstance) && self.databaseInstance != '')";
/// Message of [`REPLICAS_NEED_DATABASE`].
pub const REPLICAS_NEED_DATABASE_MESSAGE: &str = "glanceAPI.replicas greater than 1 needs databaseInstance: set it to the name of a Secret whose key connection holds a MariaDB/MySQL or PostgreSQL URL (pods cannot share the SQLite database on the storage volume)";

/// Most Secrets spec.customServiceConfigSecrets may name; their files are numbered 02 to 17,
/// two digits, so that name order is list order.
pub const CONFIG_SECRETS_MAX: usize = 16;
/// Longest Secret name (a DNS-1123 subdomain).
pub const SECRET_NAME_MAX: usize = 253;

/// Every entry of customServiceConfigSecrets is a Secret name (DNS-1123 subdomain; the
/// length is bounded by the schema's maxLength).
pub const CONFIG_SECRET_NAMES: &str =
    "self.all(s, s.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$'))";
/// Message of [`CONFIG_SECRET_NAMES`].
pub const CONFIG_SECRET_NAMES_MESSAGE: &str = "customServiceConfigSecrets must list Secret names: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, such as glance-s3-keys";

/// No Secret is listed twice in customServiceConfigSecrets.
pub const CONFIG_SECRETS_UNIQUE: &str = "self.all(s, self.exists_one(t, t == s))";
/// Message of [`CONFIG_SECRETS_UNIQUE`].
pub const CONFIG_SECRETS_UNIQUE_MESSAGE: &str =
    "customServiceConfigSecrets must name each Secret once: remove the repeated name";
