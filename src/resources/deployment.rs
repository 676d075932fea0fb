//! The glance-api Deployment.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{ContainerPort, HTTPGetAction, PodSpec, PodTemplateSpec, Probe};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::config::{API_PORT, ConfigSecret};
use super::meta::{Component, child_meta, labels, selector_labels};
use super::pod::{Mounts, glance_container, pod_spec, volumes};
use crate::crd::CacheAccessMode;
use crate::crd::validate::ValidGlance;

/// Pod template annotation carrying the hash of the configuration Secret and of the
/// customServiceConfigSecrets Secrets.
pub const CONFIG_HASH_ANNOTATION: &str = "glance.openstack.org/config-hash";
/// Name of the API container and of its port.
pub const API_CONTAINER: &str = "glance-api";
/// Name of the init container that brings the database schema up to date.
pub const DB_SYNC_CONTAINER: &str = "db-sync";
const HTTP_PORT_NAME: &str = "http";

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

/// True when a ReadWriteOnce volume is mounted, so old and new pods must not overlap.
fn mounts_read_write_once(glance: &ValidGlance) -> bool {
    let storage_rwo = glance.replicas <= 1;
    let cache_rwo = glance
        .cache
        .as_ref()
        .is_some_and(|c| c.access_mode == CacheAccessMode::ReadWriteOnce);
    storage_rwo || cache_rwo
}

/// `<name>-api`, rolled by a change of `config_hash`. `extra` are the customServiceConfigSecrets
/// Secrets, mounted beside the config Secret in both containers.
pub fn deployment(glance: &ValidGlance, extra: &[ConfigSecret], config_hash: &str) -> Deployment {
    let (volumes, mounts) = volumes(glance, extra, Mounts::Api);
    // `glance-manage db_sync` before glance-api: it creates upstream Glance's schema, or
    // finds it current, so the API never starts on a database without its tables.
    let mut db_sync = glance_container(glance, DB_SYNC_CONTAINER, "glance-manage", mounts.clone());
    db_sync.args = Some(vec!["db_sync".to_owned()]);
    let mut container = glance_container(glance, API_CONTAINER, "glance-api", mounts);
    container.ports = Some(vec![ContainerPort {
        name: Some(HTTP_PORT_NAME.to_owned()),
        container_port: API_PORT,
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }]);
    container.readiness_probe = Some(healthcheck_probe(10, 3));
    container.liveness_probe = Some(healthcheck_probe(20, 3));
    container.startup_probe = Some(healthcheck_probe(5, 60));

    let strategy = if mounts_read_write_once(glance) {
        "Recreate"
    } else {
        "RollingUpdate"
    };
    Deployment {
        metadata: child_meta(glance, Component::Api),
        spec: Some(DeploymentSpec {
            replicas: Some(glance.replicas),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&glance.name, Component::Api)),
                match_expressions: None,
            },
            strategy: Some(DeploymentStrategy {
                type_: Some(strategy.to_owned()),
                rolling_update: None,
            }),
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
                    init_containers: Some(vec![db_sync]),
                    ..pod_spec(glance, container, volumes)
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}
