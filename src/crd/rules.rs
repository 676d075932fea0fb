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

/// The regex of a Secret name (DNS-1123 subdomain), as a CEL string literal.
macro_rules! secret_name_regex {
    () => {
        "'^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$'"
    };
}

/// Every entry of customServiceConfigSecrets is a Secret name (DNS-1123 subdomain; the
/// length is bounded by the schema's maxLength).
pub const CONFIG_SECRET_NAMES: &str = concat!("self.all(s, s.matches(", secret_name_regex!(), "))");
/// Message of [`CONFIG_SECRET_NAMES`].
pub const CONFIG_SECRET_NAMES_MESSAGE: &str = "customServiceConfigSecrets must list Secret names: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, such as glance-s3-keys";

/// No Secret is listed twice in customServiceConfigSecrets.
pub const CONFIG_SECRETS_UNIQUE: &str = "self.all(s, self.exists_one(t, t == s))";
/// Message of [`CONFIG_SECRETS_UNIQUE`].
pub const CONFIG_SECRETS_UNIQUE_MESSAGE: &str =
    "customServiceConfigSecrets must name each Secret once: remove the repeated name";

/// Longest keystone.authUrl and keystone.wwwAuthenticateUri.
pub const KEYSTONE_URL_MAX: usize = 2048;
/// Longest keystone.projectName, userDomainName, projectDomainName and region (Keystone
/// keeps names of at most 255 characters).
pub const KEYSTONE_NAME_MAX: usize = 255;

/// An http:// or https:// URL with a host, without spaces or control characters (it is
/// written into glance-api.conf, one option per line).
pub const KEYSTONE_URL: &str =
    r"self.matches('^https?://[^\\x00-\\x20\\x7f/?#]+([/?#][^\\x00-\\x20\\x7f]*)?$')";
/// Message of [`KEYSTONE_URL`] on keystone.authUrl.
pub const KEYSTONE_AUTH_URL_MESSAGE: &str = "keystone.authUrl must be an http:// or https:// URL of the Keystone identity endpoint, such as http://keystone-public.openstack.svc:5000/v3, without spaces";
/// Message of [`KEYSTONE_URL`] on keystone.wwwAuthenticateUri.
pub const KEYSTONE_WWW_AUTHENTICATE_URI_MESSAGE: &str = "keystone.wwwAuthenticateUri must be an http:// or https:// URL of the Keystone endpoint clients are sent to, such as https://keystone.example.com/v3, without spaces; leave it out to use authUrl";

/// keystone.secret is a Secret name.
pub const KEYSTONE_SECRET: &str = concat!("self.matches(", secret_name_regex!(), ")");
/// Message of [`KEYSTONE_SECRET`].
pub const KEYSTONE_SECRET_MESSAGE: &str = "keystone.secret must be the name of a Secret in this namespace: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, such as glance-keystone";

/// A key of a Secret: letters, digits, '-', '_' and '.' (the length is bounded by the
/// schema's maxLength).
pub const SECRET_KEY: &str = "self.matches('^[-._a-zA-Z0-9]+$')";
/// Message of [`SECRET_KEY`] on keystone.usernameKey.
pub const KEYSTONE_USERNAME_KEY_MESSAGE: &str = "keystone.usernameKey must be a key of the Secret: letters, digits, '-', '_' and '.', such as username";
/// Message of [`SECRET_KEY`] on keystone.passwordKey.
pub const KEYSTONE_PASSWORD_KEY_MESSAGE: &str = "keystone.passwordKey must be a key of the Secret: letters, digits, '-', '_' and '.', such as password";

/// A value written into glance-api.conf as is: not empty, no control characters (so no
/// line break), no space at either end (the INI parser would strip it).
pub const CONFIG_VALUE: &str =
    r"self.matches('^[^ \\x00-\\x1f\\x7f]([^\\x00-\\x1f\\x7f]*[^ \\x00-\\x1f\\x7f])?$')";
/// Message of [`CONFIG_VALUE`] on keystone.projectName.
pub const KEYSTONE_PROJECT_NAME_MESSAGE: &str = "keystone.projectName must be the name of the service user's project, such as service: not empty, on one line, without spaces at either end";
/// Message of [`CONFIG_VALUE`] on keystone.userDomainName.
pub const KEYSTONE_USER_DOMAIN_NAME_MESSAGE: &str = "keystone.userDomainName must be the name of the service user's domain, such as Default: not empty, on one line, without spaces at either end";
/// Message of [`CONFIG_VALUE`] on keystone.projectDomainName.
pub const KEYSTONE_PROJECT_DOMAIN_NAME_MESSAGE: &str = "keystone.projectDomainName must be the name of the project's domain, such as Default: not empty, on one line, without spaces at either end";
/// Message of [`CONFIG_VALUE`] on keystone.region.
pub const KEYSTONE_REGION_MESSAGE: &str = "keystone.region must be a Keystone region name, such as RegionOne: not empty, on one line, without spaces at either end; leave it out for any region";
