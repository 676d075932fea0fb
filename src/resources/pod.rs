//! The pod pieces that glance-api and the cache CronJobs share: image, volumes, mounts,
//! security context and scheduling. One function builds each, so the three workloads
//! cannot drift apart.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, EmptyDirVolumeSource, KeyToPath,
    PersistentVolumeClaimVolumeSource, PodAffinity, PodAffinityTerm, PodSecurityContext, PodSpec,
    ProjectedVolumeSource, SeccompProfile, SecretProjection, SecretVolumeSource, SecurityContext,
    Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::config::{CACHE_DIR, CONFIG_DIR, ConfigSecret, STORAGE_DIR, extra_config_file};
use super::meta::Component;
use super::statefulset::{POD_NAME_LABEL, pod_name};
use super::storage::cache_pvc_name;
use crate::crd::CacheDriver;
use crate::crd::validate::{StorageUse, ValidGlance};

/// UID and GID of the glance user in upstream Glance images, kept for compatibility with
/// volumes that an upstream image wrote.
pub const GLANCE_UID: i64 = 42415;

/// Which volumes a pod mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mounts {
    /// glance-api: configuration, storage, cache (when on) and /tmp.
    Api,
    /// A cache job on replica i's cache volume: configuration, that cache and /tmp.
    CacheJob(i32),
    /// The db-sync Job: configuration and /tmp.
    DbSync,
}

const CONFIG_VOLUME: &str = "config";
const STORAGE_VOLUME: &str = "storage";
/// Name of the cache volume, and of the StatefulSet's claim template for it.
pub const CACHE_VOLUME: &str = "image-cache";
const TMP_VOLUME: &str = "tmp";

fn pvc_volume(name: &str, claim: String) -> Volume {
    Volume {
        name: name.to_owned(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: claim,
            read_only: None,
        }),
        ..Volume::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

/// Mode of the config files: readable by the glance user and group (fsGroup), nobody else.
const CONFIG_FILE_MODE: i32 = 0o440;

/// The volume mounted at the config directory. With no customServiceConfigSecrets it is the
/// `<name>-config` Secret itself. Otherwise it is a projected volume of that Secret and of
/// every key of each extra Secret, each key renamed to its `NN-<secret>-<key>.conf` file, so
/// all of them land in the one directory glance-api reads, after `01-custom.conf`. Keys are
/// listed one by one: a Secret projected without items would keep its raw key names, which
/// may not end in `.conf` or may sort before `01-custom.conf`. A Secret without keys adds
/// nothing (an empty item list would mean "every key").
fn config_volume(glance: &ValidGlance, extra: &[ConfigSecret]) -> Volume {
    let config_secret = Component::Config.child_name(&glance.name);
    if extra.is_empty() {
        return Volume {
            name: CONFIG_VOLUME.to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(config_secret),
                default_mode: Some(CONFIG_FILE_MODE),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        };
    }
    let secret_source = |name: String, items: Option<Vec<KeyToPath>>| VolumeProjection {
        secret: Some(SecretProjection {
            name,
            items,
            optional: None,
        }),
        ..VolumeProjection::default()
    };
    let mut sources = vec![secret_source(config_secret, None)];
    for (position, secret) in extra.iter().enumerate() {
        if secret.data.is_empty() {
            continue;
        }
        let items = secret
            .data
            .keys()
            .map(|key| KeyToPath {
                key: key.clone(),
                path: extra_config_file(position, &secret.name, key),
                mode: None,
            })
            .collect();
        sources.push(secret_source(secret.name.clone(), Some(items)));
    }
    Volume {
        name: CONFIG_VOLUME.to_owned(),
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(CONFIG_FILE_MODE),
            sources: Some(sources),
        }),
        ..Volume::default()
    }
}

/// Volumes of a pod, and the container's mounts of them. `extra` are the Secrets of
/// spec.customServiceConfigSecrets as read, in list order.
pub fn volumes(
    glance: &ValidGlance,
    extra: &[ConfigSecret],
    which: Mounts,
) -> (Vec<Volume>, Vec<VolumeMount>) {
    let mut volumes = vec![config_volume(glance, extra)];
    let mut mounts = vec![mount(CONFIG_VOLUME, CONFIG_DIR, true)];
    // A cache job of the centralized_db driver writes its rows into the catalogue, which
    // without a databaseInstance is SQLite on the storage volume.
    let central_sqlite = glance.database_instance.is_none()
        && glance
            .cache
            .as_ref()
            .is_some_and(|c| c.driver == CacheDriver::CentralizedDb);
    let api_mounts = which == Mounts::Api && glance.storage_use != StorageUse::Unmounted;
    if api_mounts || (matches!(which, Mounts::CacheJob(_)) && central_sqlite) {
        volumes.push(pvc_volume(
            STORAGE_VOLUME,
            Component::Storage.child_name(&glance.name),
        ));
        mounts.push(mount(STORAGE_VOLUME, STORAGE_DIR, false));
    }
    if glance.cache.is_some() && which != Mounts::DbSync {
        // The API pods get theirs from the StatefulSet's claim template.
        if let Mounts::CacheJob(ordinal) = which {
            volumes.push(pvc_volume(
                CACHE_VOLUME,
                cache_pvc_name(&glance.name, ordinal),
            ));
        }
        mounts.push(mount(CACHE_VOLUME, CACHE_DIR, false));
    }
    volumes.push(Volume {
        name: TMP_VOLUME.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    });
    mounts.push(mount(TMP_VOLUME, "/tmp", false));
    (volumes, mounts)
}

/// The restricted container security context: non-root, read-only root filesystem,
/// no privilege escalation, no capabilities, RuntimeDefault seccomp.
pub fn container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        seccomp_profile: Some(runtime_default_seccomp()),
        ..SecurityContext::default()
    }
}

fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".to_owned(),
        localhost_profile: None,
    }
}

fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(GLANCE_UID),
        run_as_group: Some(GLANCE_UID),
        fs_group: Some(GLANCE_UID),
        fs_group_change_policy: Some("OnRootMismatch".to_owned()),
        seccomp_profile: Some(runtime_default_seccomp()),
        ..PodSecurityContext::default()
    }
}

/// A container running one of the image's programs with `--config-dir`.
pub fn glance_container(
    glance: &ValidGlance,
    name: &str,
    program: &str,
    mounts: Vec<VolumeMount>,
) -> Container {
    Container {
        name: name.to_owned(),
        image: Some(glance.image.clone()),
        command: Some(vec![
            program.to_owned(),
            "--config-dir".to_owned(),
            CONFIG_DIR.to_owned(),
        ]),
        volume_mounts: Some(mounts),
        resources: glance.resources.clone(),
        security_context: Some(container_security_context()),
        ..Container::default()
    }
}

/// A pod spec around one container, with the shared security context and scheduling.
pub fn pod_spec(glance: &ValidGlance, container: Container, volumes: Vec<Volume>) -> PodSpec {
    PodSpec {
        containers: vec![container],
        volumes: Some(volumes),
        security_context: Some(pod_security_context()),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        node_selector: (!glance.node_selector.is_empty()).then(|| glance.node_selector.clone()),
        tolerations: (!glance.tolerations.is_empty()).then(|| glance.tolerations.clone()),
        ..PodSpec::default()
    }
}

/// A required affinity that puts a pod on the node where replica `ordinal` runs, and so
/// where its cache volume is attached. It names that one pod: matching any API pod could
/// land the job beside another replica, and a ReadWriteOnce volume then fails to attach.
pub fn replica_affinity(glance: &ValidGlance, ordinal: i32) -> Affinity {
    Affinity {
        pod_affinity: Some(PodAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                label_selector: Some(LabelSelector {
                    match_labels: Some(BTreeMap::from([(
                        POD_NAME_LABEL.to_owned(),
                        pod_name(&glance.name, ordinal),
                    )])),
                    match_expressions: None,
                }),
                topology_key: "kubernetes.io/hostname".to_owned(),
                ..PodAffinityTerm::default()
            }]),
            preferred_during_scheduling_ignored_during_execution: None,
        }),
        ..Affinity::default()
    }
}
