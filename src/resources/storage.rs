//! The PVCs: `<name>-storage` for image files and SQLite, `<name>-image-cache` for the cache.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::meta::{Component, child_meta};
use crate::crd::validate::{Size, ValidGlance};

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

/// `<name>-storage`: ReadWriteOnce, or ReadWriteMany when several replicas share it.
pub fn storage_pvc(glance: &ValidGlance, current: Option<&Size>) -> PersistentVolumeClaim {
    let mode = if glance.replicas > 1 {
        "ReadWriteMany"
    } else {
        "ReadWriteOnce"
    };
    let request = effective_request(&glance.storage, current).quantity.clone();
    pvc(glance, Component::Storage, mode, request)
}

/// `<name>-image-cache`, while the cache is on.
pub fn cache_pvc(glance: &ValidGlance, current: Option<&Size>) -> Option<PersistentVolumeClaim> {
    let cache = glance.cache.as_ref()?;
    let request = effective_request(&cache.size, current).quantity.clone();
    Some(pvc(
        glance,
        Component::ImageCache,
        cache.access_mode.as_str(),
        request,
    ))
}
