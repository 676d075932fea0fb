//! The PVCs: `<name>-storage` for image files and SQLite, and the claim template that gives
//! each replica its cache volume `image-cache-<name>-api-<i>`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::meta::{Component, child_meta, labels};
use super::pod::CACHE_VOLUME;
use super::statefulset::pod_name;
use crate::crd::validate::{CacheSettings, Size, StorageUse, ValidGlance};

/// The request a PVC gets: the desired size, or the size it already has when that is
/// larger, because a PVC cannot shrink.
pub fn effective_request<'a>(desired: &'a Size, current: Option<&'a Size>) -> &'a Size {
    match current {
        Some(current) if current.bytes > desired.bytes => current,
        _ => desired,
    }
}

fn pvc(
    glance: &ValidGlance,
    component: Component,
    access_mode: &str,
    request: String,
) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: child_meta(glance, component),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec![access_mode.to_owned()]),
            storage_class_name: glance.storage_class.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_owned(), Quantity(request))])),
                limits: None,
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }
}

/// `<name>-storage`: ReadWriteMany when several replicas share the file stores on it,
/// else ReadWriteOnce. An existing claim keeps its access modes, which cannot change:
/// the status says when they do not fit (see [`StorageUse::Shared`]).
pub fn storage_pvc(
    glance: &ValidGlance,
    current: Option<&Size>,
    current_modes: Option<&[String]>,
) -> PersistentVolumeClaim {
    let mode = match glance.storage_use {
        StorageUse::Shared => "ReadWriteMany",
        StorageUse::Single | StorageUse::Unmounted => "ReadWriteOnce",
    };
    let request = effective_request(&glance.storage, current).quantity.clone();
    let mut claim = pvc(glance, Component::Storage, mode, request);
    if let (Some(modes), Some(spec)) = (current_modes, claim.spec.as_mut()) {
        spec.access_modes = Some(modes.to_vec());
    }
    claim
}

/// The name of replica `ordinal`'s cache volume, as the StatefulSet controller names the
/// claims of its template: `<template>-<pod>`.
pub fn cache_pvc_name(glance: &str, ordinal: i32) -> String {
    format!("{CACHE_VOLUME}-{}", pod_name(glance, ordinal))
}

/// The claim template of the replicas' cache volumes. Its request is imageCacheSize, or the
/// one the live template has when that is larger: a volume cannot shrink.
pub fn cache_claim_template(
    glance: &ValidGlance,
    cache: &CacheSettings,
    current: Option<&Size>,
) -> PersistentVolumeClaim {
    let request = effective_request(&cache.size, current).quantity.clone();
    let mut template = pvc(
        glance,
        Component::ImageCache,
        cache.access_mode.as_str(),
        request,
    );
    // Claims made from a template carry its labels; their owner is the StatefulSet.
    template.metadata = ObjectMeta {
        name: Some(CACHE_VOLUME.to_owned()),
        labels: Some(labels(&glance.name, Component::ImageCache)),
        ..ObjectMeta::default()
    };
    template
}

/// What a live cache volume is grown with: a server-side apply of its request alone.
pub fn cache_pvc_resize(glance: &ValidGlance, name: &str, request: &str) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(glance.namespace.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity(request.to_owned()),
                )])),
                limits: None,
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }
}
