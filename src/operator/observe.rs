//! Reads what the builders need from the cluster: the database Secret, the Secrets of
//! spec.customServiceConfigSecrets, the spec.keystone Secret, the PVCs (their current
//! sizes), and the workloads that decide how the StatefulSet is brought in.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use super::apply::{Live, children_selector};
use super::error::Error;
use crate::crd::validate::{KeystoneSettings, Size, ValidGlance};
use crate::db::{Backend, DbUrl};
use crate::quantity;
use crate::resources::Observed;
use crate::resources::config::{ConfigSecret, FILE_NAME_MAX, extra_config_file};
use crate::resources::meta::Component;
use crate::resources::pod::CACHE_VOLUME;
use crate::resources::storage::cache_pvc_name;

/// Key of the database URL in the databaseInstance Secret.
pub const CONNECTION_KEY: &str = "connection";

/// Why the databaseInstance Secret cannot be used. The message names the Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseProblem(pub String);

/// Why a customServiceConfigSecrets Secret or the spec.keystone Secret cannot be used. The
/// message names the Secret (and the key, when one is missing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSecretProblem(pub String);

/// What was read from the cluster.
#[derive(Debug, Clone)]
pub struct Observation {
    /// The database URL (None = SQLite), or why it could not be read.
    pub database: Result<Option<String>, DatabaseProblem>,
    /// The customServiceConfigSecrets Secrets in list order, or why one cannot be used.
    pub config_secrets: Result<Vec<ConfigSecret>, ConfigSecretProblem>,
    /// The spec.keystone credentials (None without spec.keystone), or why the Secret
    /// cannot be used.
    pub keystone: Result<Option<ConfigSecret>, ConfigSecretProblem>,
    /// Every PVC carrying the children's labels: `<name>-storage` and the cache volumes.
    pub pvcs: Vec<PersistentVolumeClaim>,
    /// The workloads named `<name>-api`.
    pub live: Live,
}

impl Observation {
    /// The builders' input, once the database URL, the config Secrets and the Keystone
    /// credentials are known.
    pub fn observed(
        &self,
        glance: &ValidGlance,
        database_connection: Option<String>,
        config_secrets: Vec<ConfigSecret>,
        keystone_credentials: Option<ConfigSecret>,
    ) -> Observed {
        let storage = Component::Storage.child_name(&glance.name);
        // Volumes of replicas beyond glance.replicas need no resize; they are swept.
        let replica_volumes: Vec<String> = (0..glance.replicas)
            .map(|i| cache_pvc_name(&glance.name, i))
            .collect();
        let live_volume = |pvc: &&PersistentVolumeClaim| {
            pvc.metadata.deletion_timestamp.is_none() && replica_volumes.contains(&pvc.name_any())
        };
        let storage = self.pvcs.iter().find(|pvc| pvc.name_any() == storage);
        Observed {
            database_connection,
            config_secrets,
            keystone_credentials,
            storage_request: storage.and_then(pvc_request),
            storage_access_modes: storage
                .and_then(|pvc| pvc.spec.as_ref())
                .and_then(|spec| spec.access_modes.clone()),
            cache_template_request: self
                .live
                .statefulset
                .as_ref()
                .and_then(cache_template_request),
            cache_volumes: self
                .pvcs
                .iter()
                .filter(live_volume)
                .filter_map(|pvc| Some((pvc.name_any(), pvc_request(pvc)?)))
                .collect(),
        }
    }
}

/// The request of a StatefulSet's cache claim template, if it has one.
pub fn cache_template_request(statefulset: &StatefulSet) -> Option<Size> {
    statefulset
        .spec
        .as_ref()?
        .volume_claim_templates
        .as_ref()?
        .iter()
        .find(|template| template.metadata.name.as_deref() == Some(CACHE_VOLUME))
        .and_then(pvc_request)
}

/// The storage request of a PVC, if it has a well-formed one.
pub fn pvc_request(pvc: &PersistentVolumeClaim) -> Option<Size> {
    let request = pvc
        .spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")?;
    let bytes = quantity::parse_bytes(&request.0).ok()?;
    Some(Size {
        quantity: request.0.clone(),
        bytes,
    })
}

/// Reads what `glance` needs from the cluster: the databaseInstance Secret, then each
/// customServiceConfigSecrets Secret in list order, then the spec.keystone Secret, then
/// the labelled PVCs, the StatefulSet and a Deployment of an earlier release.
pub async fn observe(client: &Client, glance: &ValidGlance) -> Result<Observation, Error> {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &glance.namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &glance.namespace);
    let database = match &glance.database_instance {
        None => Ok(None),
        Some(name) => {
            database_connection(name, secrets.get_opt(name).await?.as_ref(), glance.replicas)
        }
    };
    let mut found = Vec::with_capacity(glance.config_secrets.len());
    for name in &glance.config_secrets {
        found.push((name.as_str(), secrets.get_opt(name).await?));
    }
    let keystone = match &glance.keystone {
        None => Ok(None),
        Some(keystone) => {
            keystone_credentials(keystone, secrets.get_opt(&keystone.secret).await?.as_ref())
                .map(Some)
        }
    };
    let api = Component::Api.child_name(&glance.name);
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), &glance.namespace);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &glance.namespace);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &glance.namespace);
    Ok(Observation {
        database,
        config_secrets: config_secrets(&found),
        keystone,
        pvcs: pvcs
            .list(&ListParams::default().labels(&children_selector(&glance.name)))
            .await?
            .items,
        live: Live {
            statefulset: statefulsets.get_opt(&api).await?,
            deployment: deployments.get_opt(&api).await?,
            db_sync: jobs
                .get_opt(&Component::DbSync.child_name(&glance.name))
                .await?,
        },
    })
}

/// The URL under key `connection` of the Secret `name`, checked with glance-api's own URL
/// parser; a SQLite URL is refused when `replicas` is more than 1. No message shows the
/// password.
pub fn database_connection(
    name: &str,
    secret: Option<&Secret>,
    replicas: i32,
) -> Result<Option<String>, DatabaseProblem> {
    let secret = secret.ok_or_else(|| {
        DatabaseProblem(format!(
            "databaseInstance Secret {name:?} not found in this namespace"
        ))
    })?;
    let value = secret
        .data
        .as_ref()
        .and_then(|d| d.get(CONNECTION_KEY))
        .ok_or_else(|| {
            DatabaseProblem(format!(
                "databaseInstance Secret {name:?} has no key {CONNECTION_KEY:?}"
            ))
        })?;
    let url = String::from_utf8(value.0.clone()).map_err(|_| {
        DatabaseProblem(format!(
            "databaseInstance Secret {name:?}: key {CONNECTION_KEY:?} is not UTF-8"
        ))
    })?;
    let url = url.trim();
    if url.is_empty() || url.contains('\n') {
        return Err(DatabaseProblem(format!(
            "databaseInstance Secret {name:?}: key {CONNECTION_KEY:?} must hold one database URL on one line"
        )));
    }
    let parsed = DbUrl::parse(url).map_err(|e| {
        DatabaseProblem(format!(
            "databaseInstance Secret {name:?}: key {CONNECTION_KEY:?}: {}",
            e.reason
        ))
    })?;
    if parsed.backend == Backend::Sqlite && replicas > 1 {
        return Err(DatabaseProblem(format!(
            "databaseInstance Secret {name:?}: key {CONNECTION_KEY:?} is a SQLite URL, which only one glance-api replica can use, and glanceAPI.replicas is {replicas}: put a MariaDB/MySQL or PostgreSQL URL in the Secret (mysql+pymysql://USER:PASSWORD@HOST/glance), or set replicas to 1"
        )));
    }
    Ok(Some(url.to_owned()))
}

/// The customServiceConfigSecrets Secrets as the builders use them, from what was read
/// (name, Secret if found), in list order. Refused, naming the Secret: a missing Secret (all
/// missing ones are named at once), two keys of one Secret that map to the same file (`a` and
/// `a.conf`), and a file name longer than the filesystem allows.
pub fn config_secrets(
    found: &[(&str, Option<Secret>)],
) -> Result<Vec<ConfigSecret>, ConfigSecretProblem> {
    let missing: Vec<String> = found
        .iter()
        .filter(|(_, secret)| secret.is_none())
        .map(|(name, _)| format!("{name:?}"))
        .collect();
    match missing.as_slice() {
        [] => {}
        [one] => {
            return Err(ConfigSecretProblem(format!(
                "customServiceConfigSecrets: Secret {one} not found in this namespace: create it, or remove it from the list"
            )));
        }
        many => {
            return Err(ConfigSecretProblem(format!(
                "customServiceConfigSecrets: Secrets {} not found in this namespace: create them, or remove them from the list",
                many.join(", ")
            )));
        }
    }
    let mut secrets = Vec::with_capacity(found.len());
    for (position, (name, secret)) in found.iter().enumerate() {
        let data = secret
            .as_ref()
            .and_then(|s| s.data.clone())
            .unwrap_or_default();
        let mut files: BTreeMap<String, &str> = BTreeMap::new();
        for key in data.keys() {
            let file = extra_config_file(position, name, key);
            if file.len() > FILE_NAME_MAX {
                return Err(ConfigSecretProblem(format!(
                    "customServiceConfigSecrets: Secret {name:?}: key {key:?} would be mounted as a file name of {} characters, more than {FILE_NAME_MAX}: use a shorter key or Secret name",
                    file.len()
                )));
            }
            if let Some(other) = files.insert(file.clone(), key) {
                return Err(ConfigSecretProblem(format!(
                    "customServiceConfigSecrets: Secret {name:?}: keys {other:?} and {key:?} would both be mounted as {file}: rename one of them"
                )));
            }
        }
        secrets.push(ConfigSecret {
            name: (*name).to_owned(),
            data,
        });
    }
    Ok(secrets)
}

/// The user name and password of the spec.keystone Secret (`secret`, if found), as the
/// config hash takes them: only those two keys, so that other keys of the Secret do not
/// roll the pods. Refused, naming the Secret and the key: a missing Secret, and a key that
/// is missing or empty. No message shows a value.
pub fn keystone_credentials(
    keystone: &KeystoneSettings,
    secret: Option<&Secret>,
) -> Result<ConfigSecret, ConfigSecretProblem> {
    let name = &keystone.secret;
    let (user_key, password_key) = (&keystone.username_key, &keystone.password_key);
    let secret = secret.ok_or_else(|| {
        ConfigSecretProblem(format!(
            "keystone.secret: Secret {name:?} not found in this namespace: create it with the service user's name under key {user_key:?} and its password under key {password_key:?}"
        ))
    })?;
    let data = secret.data.as_ref();
    let mut credentials = BTreeMap::new();
    let keys = [
        (user_key, "usernameKey", "name"),
        (password_key, "passwordKey", "password"),
    ];
    for (key, field, what) in keys {
        let problem = match data.and_then(|d| d.get(key.as_str())) {
            Some(value) if !value.0.is_empty() => {
                credentials.insert(key.clone(), value.clone());
                continue;
            }
            Some(_) => "an empty key",
            None => "no key",
        };
        return Err(ConfigSecretProblem(format!(
            "keystone.secret: Secret {name:?} has {problem} {key:?} (keystone.{field}): put the service user's {what} there"
        )));
    }
    Ok(ConfigSecret {
        name: name.clone(),
        data: credentials,
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;

    use super::*;

    fn secret(url: &str) -> Secret {
        Secret {
            data: Some(BTreeMap::from([(
                CONNECTION_KEY.to_owned(),
                ByteString(url.as_bytes().to_vec()),
            )])),
            ..Secret::default()
        }
    }

    #[test]
    fn server_urls_serve_any_number_of_replicas() {
        for url in [
            "mysql+pymysql://glance:pw@openstack.openstack.svc/glance?charset=utf8",
            "postgresql://glance:pw@pg/glance",
        ] {
            assert_eq!(
                database_connection("db", Some(&secret(url)), 3),
                Ok(Some(url.to_owned()))
            );
        }
    }

    #[test]
    fn sqlite_in_the_secret_serves_one_replica_only() {
        let url = "sqlite:////var/lib/glance/glance.sqlite";
        assert_eq!(
            database_connection("db", Some(&secret(url)), 1),
            Ok(Some(url.to_owned()))
        );
        let DatabaseProblem(message) =
            database_connection("db", Some(&secret(url)), 2).expect_err("refused");
        assert!(
            message.contains("is a SQLite URL")
                && message.contains("glanceAPI.replicas is 2")
                && message.contains("MariaDB/MySQL or PostgreSQL URL"),
            "{message}"
        );
    }

    #[test]
    fn a_bad_url_is_named_without_its_password() {
        let DatabaseProblem(message) =
            database_connection("db", Some(&secret("oracle://glance:hunter2@db/glance")), 1)
                .expect_err("refused");
        assert!(
            message.starts_with(
                "databaseInstance Secret \"db\": key \"connection\": unknown database \"oracle\""
            ),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");
    }
    fn keys(name: &str, keys: &[&str]) -> Secret {
        Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.to_owned()),
                ..Default::default()
            },
            data: Some(
                keys.iter()
                    .map(|k| ((*k).to_owned(), ByteString(b"[ceph]\n".to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    #[test]
    fn config_secrets_keep_list_order_and_every_key() {
        let read = config_secrets(&[
            ("b", Some(keys("b", &["s3.conf", "tuning"]))),
            ("a", Some(keys("a", &["x"]))),
            ("empty", Some(Secret::default())),
        ])
        .expect("usable");
        let names: Vec<(&str, Vec<&str>)> = read
            .iter()
            .map(|s| (s.name.as_str(), s.data.keys().map(String::as_str).collect()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("b", vec!["s3.conf", "tuning"]),
                ("a", vec!["x"]),
                ("empty", vec![])
            ]
        );
    }

    #[test]
    fn missing_config_secrets_are_all_named() {
        let ConfigSecretProblem(one) =
            config_secrets(&[("a", Some(keys("a", &["x"]))), ("gone", None)]).expect_err("missing");
        assert_eq!(
            one,
            "customServiceConfigSecrets: Secret \"gone\" not found in this namespace: create it, or remove it from the list"
        );
        let ConfigSecretProblem(two) =
            config_secrets(&[("x", None), ("y", None)]).expect_err("missing");
        assert_eq!(
            two,
            "customServiceConfigSecrets: Secrets \"x\", \"y\" not found in this namespace: create them, or remove them from the list"
        );
    }

    fn keystone() -> KeystoneSettings {
        KeystoneSettings {
            auth_url: "http://keystone:5000/v3".to_owned(),
            www_authenticate_uri: "http://keystone:5000/v3".to_owned(),
            secret: "glance-keystone".to_owned(),
            username_key: "user".to_owned(),
            password_key: "pass".to_owned(),
            project_name: "service".to_owned(),
            user_domain_name: "Default".to_owned(),
            project_domain_name: "Default".to_owned(),
            region: None,
            interface: None,
        }
    }

    fn credentials(pairs: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    #[test]
    fn keystone_credentials_keep_only_the_two_keys() {
        let secret = credentials(&[("user", "glance"), ("pass", "pw"), ("other", "x")]);
        let read = keystone_credentials(&keystone(), Some(&secret)).expect("usable");
        assert_eq!(read.name, "glance-keystone");
        assert_eq!(
            read.data,
            BTreeMap::from([
                ("pass".to_owned(), ByteString(b"pw".to_vec())),
                ("user".to_owned(), ByteString(b"glance".to_vec())),
            ]),
            "another key of the Secret does not roll the pods"
        );
    }

    #[test]
    fn a_missing_keystone_secret_or_key_is_named_without_values() {
        let ConfigSecretProblem(missing) =
            keystone_credentials(&keystone(), None).expect_err("missing");
        assert_eq!(
            missing,
            "keystone.secret: Secret \"glance-keystone\" not found in this namespace: create it with the service user's name under key \"user\" and its password under key \"pass\""
        );
        let ConfigSecretProblem(no_password) =
            keystone_credentials(&keystone(), Some(&credentials(&[("user", "glance")])))
                .expect_err("no password");
        assert_eq!(
            no_password,
            "keystone.secret: Secret \"glance-keystone\" has no key \"pass\" (keystone.passwordKey): put the service user's password there"
        );
        let ConfigSecretProblem(no_user) = keystone_credentials(
            &keystone(),
            Some(&credentials(&[("username", "glance"), ("pass", "hunter2")])),
        )
        .expect_err("no user");
        assert_eq!(
            no_user,
            "keystone.secret: Secret \"glance-keystone\" has no key \"user\" (keystone.usernameKey): put the service user's name there"
        );
        let ConfigSecretProblem(empty) = keystone_credentials(
            &keystone(),
            Some(&credentials(&[("user", "glance"), ("pass", "")])),
        )
        .expect_err("empty password");
        assert_eq!(
            empty,
            "keystone.secret: Secret \"glance-keystone\" has an empty key \"pass\" (keystone.passwordKey): put the service user's password there"
        );
        for message in [missing, no_password, no_user, empty] {
            assert!(
                !message.contains("hunter2") && !message.contains("glance\""),
                "{message}"
            );
        }
        let ConfigSecretProblem(no_data) =
            keystone_credentials(&keystone(), Some(&Secret::default())).expect_err("no data");
        assert!(no_data.contains("has no key \"user\""), "{no_data}");
    }

    #[test]
    fn keys_that_would_share_a_file_or_overflow_a_file_name_are_refused() {
        let ConfigSecretProblem(clash) =
            config_secrets(&[("k", Some(keys("k", &["s3", "s3.conf"])))]).expect_err("clash");
        assert_eq!(
            clash,
            "customServiceConfigSecrets: Secret \"k\": keys \"s3\" and \"s3.conf\" would both be mounted as 02-k-s3.conf: rename one of them"
        );
        let long_name = "n".repeat(200);
        let long_key = "k".repeat(60);
        let ConfigSecretProblem(long) =
            config_secrets(&[(long_name.as_str(), Some(keys(&long_name, &[&long_key])))])
                .expect_err("too long");
        assert!(
            long.contains("would be mounted as a file name of 269 characters, more than 255"),
            "{long}"
        );
    }
}
