//! The Job `<name>-db-sync`: `glance-manage db_sync` against the shared database, run
//! once per image and database before any replica is rolled onto them.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sha2::{Digest, Sha256};

use super::config::ConfigSecret;
use super::meta::{Component, child_meta, labels};
use super::pod::{Mounts, glance_container, pod_spec, volumes};
use crate::crd::validate::ValidGlance;

/// Annotation of the Job: a hash of the image and the database URL it migrated. A Job
/// whose hash differs is replaced by one for the current pair.
pub const DB_SYNC_HASH_ANNOTATION: &str = "glance.openstack.org/db-sync-hash";
/// Name of the Job's container.
pub const DB_SYNC_CONTAINER: &str = "db-sync";

/// What the Job migrates: the image and the database URL, as hex SHA-256. The URL holds a
/// password, which the hash does not reveal.
pub fn db_sync_hash(image: &str, connection: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(image.as_bytes());
    hasher.update([0]);
    hasher.update(connection.as_bytes());
    hex::encode(hasher.finalize())
}

/// The Job, with the config files the API pods read (`extra` are the
/// customServiceConfigSecrets Secrets); `connection` is the databaseInstance URL.
pub fn db_sync_job(glance: &ValidGlance, extra: &[ConfigSecret], connection: &str) -> Job {
    let (volumes, mounts) = volumes(glance, extra, Mounts::DbSync);
    let mut container = glance_container(glance, DB_SYNC_CONTAINER, "glance-manage", mounts);
    container.args = Some(vec!["db_sync".to_owned()]);
    let mut pod = pod_spec(glance, container, volumes);
    pod.restart_policy = Some("OnFailure".to_owned());
    let mut metadata = child_meta(glance, Component::DbSync);
    metadata.annotations = Some(BTreeMap::from([(
        DB_SYNC_HASH_ANNOTATION.to_owned(),
        db_sync_hash(&glance.image, connection),
    )]));
    Job {
        metadata,
        spec: Some(JobSpec {
            backoff_limit: Some(4),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(&glance.name, Component::DbSync)),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}
