//! The glance-api StatefulSet `<name>-api`: pods `<name>-api-0 … N-1`, each with its own
//! cache volume from a claim template while the cache is on.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector, PersistentVolumeClaim,
    PodSpec, PodTemplateSpec, Probe, SecretKeySelector,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::config::{
    API_PORT, ConfigSecret, KEYSTONE_PASSWORD_ENV, KEYSTONE_USERNAME_ENV, extra_config_file,
};
use super::dbsync::DB_SYNC_CONTAINER;
use super::meta::{Component, child_meta, labels, selector_labels};
use super::pod::{Mounts, glance_container, pod_spec, volumes};
use super::service::pod_url;
use crate::api::settings::{GRACEFUL_SHUTDOWN_TIMEOUT_DEFAULT, graceful_shutdown_timeout};
use crate::conf::Config;
use crate::crd::validate::{KeystoneSettings, ValidGlance, effective_config};
use crate::quantity;

/// Pod template annotation carrying the hash of the configuration Secret, of the
/// customServiceConfigSecrets Secrets and of the spec.keystone credentials.
pub const CONFIG_HASH_ANNOTATION: &str = "glance.openstack.org/config-hash";
/// Name of the API container and of its port.
pub const API_CONTAINER: &str = "glance-api";

/// Label the StatefulSet controller puts on each of its pods, with the pod's name.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// Environment variable holding the pod's own name.
const POD_NAME_ENV: &str = "POD_NAME";
/// `[DEFAULT] worker_self_reference_url` through oslo.config's environment source, so
/// that one config Secret serves every pod while each pod names itself.
pub const SELF_REFERENCE_ENV: &str = "OS_DEFAULT__WORKER_SELF_REFERENCE_URL";
const HTTP_PORT_NAME: &str = "http";

/// Seconds the pods' grace period adds to glance-api's `graceful_shutdown_timeout`: time
/// for glance-api to close the connections still busy and exit before the kubelet kills
/// it.
pub const SHUTDOWN_GRACE_MARGIN: u64 = 15;
/// The pods' grace period when `graceful_shutdown_timeout = 0` (glance-api waits for
/// every request, without limit): an hour, after which the kubelet kills it.
pub const UNLIMITED_DRAIN_GRACE: i64 = 3600;

/// `graceful_shutdown_timeout` as glance-api will read it from its config directory: the
/// rendered `00-config.conf`, then customServiceConfig, then the files of the
/// customServiceConfigSecrets Secrets (`extra`) in name order. A value glance-api would
/// refuse counts as the default (glance-api then does not start at all).
pub fn drain_seconds(glance: &ValidGlance, extra: &[ConfigSecret]) -> u64 {
    let Some(mut config) = effective_config(glance) else {
        return GRACEFUL_SHUTDOWN_TIMEOUT_DEFAULT;
    };
    let mut files: Vec<(String, &[u8])> = extra
        .iter()
        .enumerate()
        .flat_map(|(position, secret)| {
            secret.data.iter().map(move |(key, value)| {
                (
                    extra_config_file(position, &secret.name, key),
                    value.0.as_slice(),
                )
            })
        })
        .collect();
    files.sort();
    for (name, bytes) in files {
        if let Some(file) = std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| Config::from_str(&name, text).ok())
        {
            config.merge(file);
        }
    }
    graceful_shutdown_timeout(&config).unwrap_or(GRACEFUL_SHUTDOWN_TIMEOUT_DEFAULT)
}

/// The pods' terminationGracePeriodSeconds for glance-api draining for `drain` seconds
/// ([`drain_seconds`]): longer by [`SHUTDOWN_GRACE_MARGIN`], so that the kubelet's
/// SIGKILL never cuts the drain short; [`UNLIMITED_DRAIN_GRACE`] for 0 (no limit).
pub fn termination_grace_period(drain: u64) -> i64 {
    if drain == 0 {
        return UNLIMITED_DRAIN_GRACE;
    }
    i64::try_from(drain.saturating_add(SHUTDOWN_GRACE_MARGIN)).unwrap_or(i64::MAX)
}

fn healthcheck_probe(period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/healthcheck".to_owned()),
            port: IntOrString::String(HTTP_PORT_NAME.to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        timeout_seconds: Some(5),
        failure_threshold: Some(failure_threshold),
        ..Probe::default()
    }
}

/// The service user's name and password as `[keystone_authtoken]` options through
/// oslo.config's environment source, each from its key of the spec.keystone Secret, so
/// that neither is written into the Glance or the config Secret.
fn keystone_env(keystone: &KeystoneSettings) -> [EnvVar; 2] {
    let from_secret = |name: &str, key: &str| EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: keystone.secret.clone(),
                key: key.to_owned(),
                optional: None,
            }),
            ..EnvVarSource::default()
        }),
    };
    [
        from_secret(KEYSTONE_USERNAME_ENV, &keystone.username_key),
        from_secret(KEYSTONE_PASSWORD_ENV, &keystone.password_key),
    ]
}

/// The name of replica `ordinal`'s pod.
pub fn pod_name(glance: &str, ordinal: i32) -> String {
    format!("{}-{ordinal}", Component::Api.child_name(glance))
}

/// `<name>-api`, rolled by a change of `config_hash`. `extra` are the customServiceConfigSecrets
/// Secrets; `cache_template` is the claim template of the replicas' cache volumes while the
/// cache is on. `init_db_sync` adds an init container running `glance-manage db_sync`:
/// for SQLite on the storage volume, which only this one pod mounts (a shared database is
/// migrated by the db-sync Job instead).
pub fn statefulset(
    glance: &ValidGlance,
    extra: &[ConfigSecret],
    config_hash: &str,
    cache_template: Option<PersistentVolumeClaim>,
    init_db_sync: bool,
) -> StatefulSet {
    let (volumes, mounts) = volumes(glance, extra, Mounts::Api);
    let init_containers = init_db_sync.then(|| {
        let mut db_sync =
            glance_container(glance, DB_SYNC_CONTAINER, "glance-manage", mounts.clone());
        db_sync.args = Some(vec!["db_sync".to_owned()]);
        vec![db_sync]
    });
    let mut container = glance_container(glance, API_CONTAINER, "glance-api", mounts);
    container.ports = Some(vec![ContainerPort {
        name: Some(HTTP_PORT_NAME.to_owned()),
        container_port: API_PORT,
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }]);
    let mut env = vec![
        EnvVar {
            name: POD_NAME_ENV.to_owned(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    api_version: None,
                    field_path: "metadata.name".to_owned(),
                }),
                ..EnvVarSource::default()
            }),
        },
        EnvVar {
            name: SELF_REFERENCE_ENV.to_owned(),
            value: Some(pod_url(glance, &format!("$({POD_NAME_ENV})"))),
            value_from: None,
        },
    ];
    if let Some(keystone) = &glance.keystone {
        env.extend(keystone_env(keystone));
    }
    container.env = Some(env);
    container.readiness_probe = Some(healthcheck_probe(10, 3));
    container.liveness_probe = Some(healthcheck_probe(20, 3));
    container.startup_probe = Some(healthcheck_probe(5, 60));

    StatefulSet {
        metadata: child_meta(glance, Component::Api),
        spec: Some(StatefulSetSpec {
            replicas: Some(glance.replicas),
            service_name: Some(Component::ApiHeadless.child_name(&glance.name)),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&glance.name, Component::Api)),
                match_expressions: None,
            },
            // Replicas share nothing but the store and the database, which the db-sync
            // Job migrates before they roll: no need to start them one by one.
            pod_management_policy: Some("Parallel".to_owned()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: None,
            }),
            // The cache is disposable: a replica's volume goes with the replica.
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Delete".to_owned()),
                    when_scaled: Some("Delete".to_owned()),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(&glance.name, Component::Api)),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_HASH_ANNOTATION.to_owned(),
                        config_hash.to_owned(),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    init_containers,
                    termination_grace_period_seconds: Some(termination_grace_period(
                        drain_seconds(glance, extra),
                    )),
                    ..pod_spec(glance, container, volumes)
                }),
            },
            volume_claim_templates: cache_template.map(|t| vec![t]),
            ..StatefulSetSpec::default()
        }),
        status: None,
    }
}

/// What a claim template is made of, as far as the server keeps it: name, access modes,
/// class and request in bytes. The server fills in more (volumeMode, status), which is not
/// ours, and writes quantities in canonical form (10240Mi as 10Gi), so the request is
/// compared by value.
fn claim_template_shapes(statefulset: &StatefulSet) -> Vec<(Option<String>, String)> {
    statefulset
        .spec
        .as_ref()
        .and_then(|spec| spec.volume_claim_templates.as_ref())
        .into_iter()
        .flatten()
        .map(|template| {
            let spec = template.spec.as_ref();
            let requests: Option<BTreeMap<String, Option<u64>>> = spec
                .and_then(|s| s.resources.as_ref())
                .and_then(|r| r.requests.as_ref())
                .map(|requests| {
                    requests
                        .iter()
                        .map(|(name, q)| (name.clone(), quantity::parse_bytes(&q.0).ok()))
                        .collect()
                });
            let shape = serde_json::json!({
                "accessModes": spec.and_then(|s| s.access_modes.clone()),
                "storageClassName": spec.and_then(|s| s.storage_class_name.clone()),
                "requests": requests,
            });
            (template.metadata.name.clone(), shape.to_string())
        })
        .collect()
}

/// True when the live StatefulSet's claim templates differ from the built one's. They
/// are immutable, so the StatefulSet must then be re-created.
pub fn claim_templates_differ(live: &StatefulSet, built: &StatefulSet) -> bool {
    claim_template_shapes(live) != claim_template_shapes(built)
}

/// True when the built StatefulSet has a claim template (by name) that the live one lacks:
/// its adopted pods would lack that volume.
pub fn claim_templates_added(live: &StatefulSet, built: &StatefulSet) -> bool {
    let names = |statefulset: &StatefulSet| -> Vec<Option<String>> {
        claim_template_shapes(statefulset)
            .into_iter()
            .map(|(name, _)| name)
            .collect()
    };
    let live = names(live);
    names(built).iter().any(|name| !live.contains(name))
}
