//! Reads what the builders need from the cluster: the database Secret, the Secrets of
//! spec.customServiceConfigSecrets, the PVCs (their current sizes), and the workloads that
//! decide how the StatefulSet is brought in.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use super::apply::{Live, children_selector};
use super::error::Error;
use crate::crd::validate::{Size, ValidGlance};
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

/// Why a customServiceConfigSecrets Secret cannot be used. The message names the Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSecretProblem(pub String);

/// What was read from the cluster.
#[derive(Debug, Clone)]
pub struct Observation {
    /// The database URL (None = SQLite), or why it could not be read.
    pub database: Result<Option<String>, DatabaseProblem>,
    /// The customServiceConfigSecrets Secrets in list order, or why one cannot be used.
    pub config_secrets: Result<Vec<ConfigSecret>, ConfigSecretProblem>,
    /// Every PVC carrying the children's labels: `<name>-storage` and the cache volumes.
    pub pvcs: Vec<PersistentVolumeClaim>,
    /// The workloads named `<name>-api`.
    pub live: Live,
}

impl Observation {
    /// The builders' input, once the database URL and the config Secrets are known.
    pub fn observed(
        &self,
        glance: &ValidGlance,
        database_connection: Option<String>,
        config_secrets: Vec<ConfigSecret>,
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
/// customServiceConfigSecrets Secret in list order, then the labelled PVCs, the
/// StatefulSet and a Deployment of an earlier release.
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
    let api = Component::Api.child_name(&glance.name);
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), &glance.namespace);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &glance.namespace);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &glance.namespace);
    Ok(Observation {
        database,
        config_secrets: config_secrets(&found),
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
