//! Server-side apply of the children, and removal of the ones the spec no longer wants.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::info;

use super::error::Error;
use crate::resources::meta::{Component, MANAGER};
use crate::resources::{CacheChildren, Children};

/// The result of applying a PVC.
#[derive(Debug, Clone)]
pub enum PvcOutcome {
    /// The server accepted it; this is the object it returned.
    Applied(Box<PersistentVolumeClaim>),
    /// The server refused a change that only the user can fix (resize of an unbound
    /// claim, a class without expansion, an immutable field). Not retried in a loop.
    Rejected(String),
}

/// What happened to the cache children.
#[derive(Debug, Clone)]
pub enum CacheOutcome {
    /// The cache is on; the CronJobs were applied, and this is the PVC's outcome.
    On(PvcOutcome),
    /// The cache is off and nothing of it existed.
    Off,
    /// The cache is off, and its CronJobs and PVC were deleted in this reconcile.
    Removed,
}

/// What the API server answered to the apply.
#[derive(Debug, Clone)]
pub struct Applied {
    /// Outcome of `<name>-storage`.
    pub storage: PvcOutcome,
    /// Outcome of the cache children.
    pub cache: CacheOutcome,
    /// The Deployment as the server returned it (with status).
    pub deployment: Deployment,
}

/// Applies every child. `cache_pvc_live` says whether the cache PVC exists now; with the
/// cache off it decides whether there is anything to delete, so a steady state with the
/// cache off sends no requests for it.
pub async fn apply(
    client: &Client,
    namespace: &str,
    glance_name: &str,
    children: Children,
    cache_pvc_live: bool,
) -> Result<Applied, Error> {
    // Destructured without `..`: a new child must be handled here or this fails to compile.
    let Children {
        config,
        storage,
        cache,
        service,
        deployment,
    } = children;
    apply_one(client, namespace, &config).await?;
    let storage = apply_pvc(client, namespace, &storage).await?;
    let cache = match cache {
        Some(CacheChildren {
            pvc,
            pruner,
            cleaner,
        }) => {
            let pvc = apply_pvc(client, namespace, &pvc).await?;
            apply_one(client, namespace, &pruner).await?;
            apply_one(client, namespace, &cleaner).await?;
            CacheOutcome::On(pvc)
        }
        None if cache_pvc_live => {
            remove_cache(client, namespace, glance_name).await?;
            CacheOutcome::Removed
        }
        None => CacheOutcome::Off,
    };
    apply_one(client, namespace, &service).await?;
    let deployment = apply_one(client, namespace, &deployment).await?;
    Ok(Applied {
        storage,
        cache,
        deployment,
    })
}

/// Server-side apply with the operator's field manager, forcing ownership.
pub async fn apply_one<K>(client: &Client, namespace: &str, object: &K) -> Result<K, kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Serialize
        + DeserializeOwned
        + Clone
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let params = PatchParams::apply(MANAGER).force();
    api.patch(&object.name_any(), &params, &Patch::Apply(object))
        .await
}

async fn apply_pvc(
    client: &Client,
    namespace: &str,
    pvc: &PersistentVolumeClaim,
) -> Result<PvcOutcome, Error> {
    match apply_one(client, namespace, pvc).await {
        Ok(applied) => Ok(PvcOutcome::Applied(Box::new(applied))),
        Err(kube::Error::Api(status)) if is_terminal_pvc_error(status.code, &status.message) => Ok(
            PvcOutcome::Rejected(format!("PVC {}: {}", pvc.name_any(), status.message)),
        ),
        Err(e) => Err(e.into()),
    }
}

/// Answers to a PVC change that retrying cannot fix: 422 (immutable field, or a resize
/// of an unbound claim), 403 (class without volume expansion), and "can not be less than
/// status.capacity".
pub fn is_terminal_pvc_error(code: u16, message: &str) -> bool {
    code == 422 || code == 403 || message.contains("can not be less than")
}

/// Deletes the CronJobs first and the PVC last, so a PVC that is gone implies the
/// CronJobs are gone too. A child that is already gone is fine.
async fn remove_cache(client: &Client, namespace: &str, glance_name: &str) -> Result<(), Error> {
    let cronjobs: Api<CronJob> = Api::namespaced(client.clone(), namespace);
    for component in [Component::CachePruner, Component::CacheCleaner] {
        delete_if_present(&cronjobs, &component.child_name(glance_name)).await?;
    }
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    delete_if_present(&pvcs, &Component::ImageCache.child_name(glance_name)).await?;
    Ok(())
}

async fn delete_if_present<K>(api: &Api<K>, name: &str) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => {
            info!(name, "deleted");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(e) => Err(e.into()),
    }
}
