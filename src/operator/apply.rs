//! Server-side apply of the children, the hand-over from an older workload, and the sweep
//! of every child the spec no longer names.

use std::collections::BTreeSet;
use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::info;

use super::error::Error;
use crate::crd::validate::Size;
use crate::resources::dbsync::DB_SYNC_HASH_ANNOTATION;
use crate::resources::meta::{APP_NAME, INSTANCE_LABEL, MANAGER};
use crate::resources::statefulset::{claim_templates_added, claim_templates_differ};
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

/// What happened to the StatefulSet.
#[derive(Debug, Clone)]
pub enum WorkloadOutcome {
    /// Applied; this is the object the server returned (with status).
    Applied(Box<StatefulSet>),
    /// Not applied in this reconcile, for the reason given: an older workload is going
    /// away first. The reconcile comes back soon.
    Waiting(String),
}

/// Where the shared database's migration stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbSyncOutcome {
    /// SQLite: the pod's init container migrates it.
    NotNeeded,
    /// The Job for this image and database is running, or about to.
    Running(String),
    /// The Job for this image and database completed.
    Succeeded(String),
    /// The Job for this image and database failed; it stays until the image or the
    /// database changes, or someone deletes it.
    Failed(String),
}

/// What the cluster holds besides what is applied: read by observe, used to decide how the
/// StatefulSet is brought in.
#[derive(Debug, Clone, Default)]
pub struct Live {
    /// The `<name>-api` StatefulSet.
    pub statefulset: Option<StatefulSet>,
    /// A `<name>-api` Deployment, as earlier releases ran the API.
    pub deployment: Option<Deployment>,
    /// The `<name>-db-sync` Job.
    pub db_sync: Option<Job>,
}

/// What the API server answered to the apply.
#[derive(Debug, Clone)]
pub struct Applied {
    /// Outcome of `<name>-storage`.
    pub storage: PvcOutcome,
    /// The cache volumes (None while the cache is off).
    pub cache: Option<CacheApplied>,
    /// The migration of the shared database.
    pub db_sync: DbSyncOutcome,
    /// The StatefulSet.
    pub workload: WorkloadOutcome,
    /// Children deleted by the sweep, as `<kind>/<name>`.
    pub deleted: Vec<String>,
}

/// The cache volumes after the apply.
#[derive(Debug, Clone)]
pub struct CacheApplied {
    /// `image-cache-<name>-api-<i>` of every replica.
    pub volumes: Vec<String>,
    /// The request of the claim template: imageCacheSize, or more when it was larger.
    pub request: Size,
    /// Why the server refused to grow a volume, one message per volume.
    pub refused: Vec<String>,
}

/// The owner of the children, for the sweep: the Glance's name and uid.
#[derive(Debug, Clone)]
pub struct Owner<'a> {
    /// metadata.name of the Glance.
    pub name: &'a str,
    /// metadata.uid of the Glance.
    pub uid: &'a str,
}

/// Applies every child, then deletes every labelled child that `children` does not name.
pub async fn apply(
    client: &Client,
    namespace: &str,
    owner: Owner<'_>,
    children: Children,
    live: &Live,
) -> Result<Applied, Error> {
    let keep = children.names();
    // Destructured without `..`: a new child must be handled here or this fails to compile.
    let Children {
        config,
        storage,
        cache,
        service,
        headless_service,
        db_sync,
        statefulset,
    } = children;
    apply_one(client, namespace, &config).await?;
    let storage = apply_pvc(client, namespace, &storage).await?;
    apply_one(client, namespace, &service).await?;
    apply_one(client, namespace, &headless_service).await?;
    let mut cache_applied = None;
    if let Some(CacheChildren {
        resizes,
        volumes,
        request,
        ..
    }) = &cache
    {
        // Grown before the StatefulSet is re-created with the larger template.
        let mut refused = Vec::new();
        for resize in resizes {
            if let PvcOutcome::Rejected(message) = apply_pvc(client, namespace, resize).await? {
                refused.push(message);
            }
        }
        cache_applied = Some(CacheApplied {
            volumes: volumes.clone(),
            request: request.clone(),
            refused,
        });
    }
    let db_sync = match db_sync {
        Some(job) => run_db_sync(client, namespace, &job, live.db_sync.as_ref()).await?,
        None => DbSyncOutcome::NotNeeded,
    };
    let workload = match &db_sync {
        DbSyncOutcome::Running(why) | DbSyncOutcome::Failed(why) => {
            WorkloadOutcome::Waiting(format!("StatefulSet not rolled: {why}"))
        }
        DbSyncOutcome::NotNeeded | DbSyncOutcome::Succeeded(_) => {
            apply_statefulset(client, namespace, &owner, statefulset, live).await?
        }
    };
    // The cache jobs run the new image too: not before its schema is in place. Until
    // then the live ones stay as they are (the sweep keeps them).
    let migrated = matches!(
        db_sync,
        DbSyncOutcome::NotNeeded | DbSyncOutcome::Succeeded(_)
    );
    if let (Some(CacheChildren { cronjobs, .. }), true) = (&cache, migrated) {
        for cronjob in cronjobs {
            apply_one(client, namespace, cronjob).await?;
        }
    }
    let deleted = sweep(client, namespace, &owner, &keep).await?;
    Ok(Applied {
        storage,
        cache: cache_applied,
        db_sync,
        workload,
        deleted,
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

/// Brings the db-sync Job to the image and database of `built`: created when there is
/// none, replaced when the live one ran for another pair, else read for its result. A
/// Job's pod template is immutable, so a finished Job is never applied again.
async fn run_db_sync(
    client: &Client,
    namespace: &str,
    built: &Job,
    live: Option<&Job>,
) -> Result<DbSyncOutcome, Error> {
    let name = built.name_any();
    let hash = |job: &Job| job.annotations().get(DB_SYNC_HASH_ANNOTATION).cloned();
    let Some(live) = live else {
        apply_one(client, namespace, built).await?;
        return Ok(DbSyncOutcome::Running(format!(
            "Job {name} started glance-manage db_sync"
        )));
    };
    if live.metadata.deletion_timestamp.is_some() {
        return Ok(DbSyncOutcome::Running(format!(
            "Job {name} of an earlier image or database is being deleted"
        )));
    }
    if hash(live) != hash(built) {
        // A migration is never cut off halfway (MySQL's DDL is not transactional), and
        // two never overlap: the old Job ends, then goes with its pod, then the new starts.
        if let DbSyncOutcome::Running(_) = job_result(&name, live) {
            return Ok(DbSyncOutcome::Running(format!(
                "Job {name} for the earlier image or database is still running; it is replaced when it ends"
            )));
        }
        let api: Api<Job> = Api::namespaced(client.clone(), namespace);
        delete_if_present(&api, &name, &DeleteParams::foreground()).await?;
        return Ok(DbSyncOutcome::Running(format!(
            "Job {name} is replaced: the image or the database changed"
        )));
    }
    Ok(job_result(&name, live))
}

/// The result of a Job that ran for the current image and database.
pub fn job_result(name: &str, job: &Job) -> DbSyncOutcome {
    let status = job.status.as_ref();
    let condition = |type_: &str| {
        status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .find(|c| c.type_ == type_ && c.status == "True")
    };
    if status.and_then(|s| s.succeeded).unwrap_or(0) > 0 || condition("Complete").is_some() {
        return DbSyncOutcome::Succeeded(format!("Job {name} completed glance-manage db_sync"));
    }
    if let Some(failed) = condition("Failed") {
        return DbSyncOutcome::Failed(format!(
            "Job {name} failed ({}): see kubectl logs job/{name}, then delete the Job to run it again",
            failed
                .message
                .as_deref()
                .or(failed.reason.as_deref())
                .unwrap_or("no reason given")
        ));
    }
    DbSyncOutcome::Running(format!("Job {name} is running glance-manage db_sync"))
}

/// Applies the StatefulSet, unless something must go first:
/// - a Deployment of an earlier release: deleted in the foreground, and the StatefulSet
///   waits until it and its pods are gone, so that two workloads never mount the
///   ReadWriteOnce storage volume at once;
/// - a StatefulSet whose claim templates differ (cache on or off, grown, another class):
///   templates are immutable, so it is deleted with its pods orphaned, and the new one,
///   applied once it is gone, adopts the running pods.
async fn apply_statefulset(
    client: &Client,
    namespace: &str,
    owner: &Owner<'_>,
    built: StatefulSet,
    live: &Live,
) -> Result<WorkloadOutcome, Error> {
    let name = built.name_any();
    if let Some(deployment) = &live.deployment {
        if !owned_by(deployment.owner_references(), owner) {
            return Ok(WorkloadOutcome::Waiting(format!(
                "a Deployment {name} that this Glance does not own is in the way of StatefulSet {name}: delete it"
            )));
        }
        if deployment.metadata.deletion_timestamp.is_none() {
            let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
            delete_if_present(&api, &name, &DeleteParams::foreground()).await?;
        }
        return Ok(WorkloadOutcome::Waiting(format!(
            "Deployment {name} of an earlier release is being deleted; StatefulSet {name} starts once its pods are gone"
        )));
    }
    if let Some(current) = &live.statefulset {
        if current.metadata.deletion_timestamp.is_some() {
            return Ok(WorkloadOutcome::Waiting(format!(
                "StatefulSet {name} is being replaced"
            )));
        }
        if claim_templates_differ(current, &built) {
            let api: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
            // Adopted pods keep their volumes, and a pod's volumes cannot change: a pod
            // without the new claim's volume would never be updated. A new claim (the
            // cache turned on) so takes the pods with it; anything else keeps them.
            let (params, pods) = if claim_templates_added(current, &built) {
                (
                    DeleteParams::background(),
                    "its pods restart with the new volume",
                )
            } else {
                (DeleteParams::orphan(), "its pods keep running")
            };
            delete_if_present(&api, &name, &params).await?;
            return Ok(WorkloadOutcome::Waiting(format!(
                "StatefulSet {name} is being replaced, because its volume claim templates changed; {pods}"
            )));
        }
    }
    Ok(WorkloadOutcome::Applied(Box::new(
        apply_one(client, namespace, &built).await?,
    )))
}

fn owned_by(references: &[OwnerReference], owner: &Owner<'_>) -> bool {
    references
        .iter()
        .any(|reference| reference.uid == owner.uid)
}

/// The labels every child of one Glance carries (apart from its component).
pub fn children_selector(glance_name: &str) -> String {
    format!(
        "app.kubernetes.io/name={APP_NAME},{INSTANCE_LABEL}={glance_name},app.kubernetes.io/managed-by={MANAGER}"
    )
}

/// Lists every child kind by label and deletes what `keep` (kind, name) does not name.
/// Each kind but PVCs must also carry an owner reference to the Glance. PVCs are taken by
/// label alone: the cache volumes come from the StatefulSet's claim template, owned by the
/// StatefulSet or, after it was re-created, by nobody. Secrets are left out: the one
/// Secret child is always built, and deleting Secrets is not a right worth granting. So is
/// a Deployment of an earlier release: it goes in the foreground, before the StatefulSet
/// starts, and only once the database is migrated.
async fn sweep(
    client: &Client,
    namespace: &str,
    owner: &Owner<'_>,
    keep: &BTreeSet<(String, String)>,
) -> Result<Vec<String>, Error> {
    let mut deleted = Vec::new();
    deleted.extend(sweep_kind::<CronJob>(client, namespace, owner, keep, true).await?);
    deleted.extend(sweep_kind::<Job>(client, namespace, owner, keep, true).await?);
    deleted.extend(sweep_kind::<StatefulSet>(client, namespace, owner, keep, true).await?);
    deleted.extend(sweep_kind::<Service>(client, namespace, owner, keep, true).await?);
    deleted
        .extend(sweep_kind::<PersistentVolumeClaim>(client, namespace, owner, keep, false).await?);
    Ok(deleted)
}

async fn sweep_kind<K>(
    client: &Client,
    namespace: &str,
    owner: &Owner<'_>,
    keep: &BTreeSet<(String, String)>,
    owned_only: bool,
) -> Result<Vec<String>, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let listed = api
        .list_metadata(&ListParams::default().labels(&children_selector(owner.name)))
        .await?;
    let mut deleted = Vec::new();
    for object in listed.items {
        let name = object.name_any();
        let owned = owned_by(object.owner_references(), owner);
        let kind = K::kind(&()).into_owned();
        let orphan = !keep.contains(&(kind.clone(), name.clone()))
            && object.metadata.deletion_timestamp.is_none()
            && (owned || !owned_only);
        if orphan {
            delete_if_present(&api, &name, &DeleteParams::background()).await?;
            deleted.push(format!("{kind}/{name}"));
        }
    }
    Ok(deleted)
}

async fn delete_if_present<K>(api: &Api<K>, name: &str, params: &DeleteParams) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    match api.delete(name, params).await {
        Ok(_) => {
            info!(kind = %K::kind(&()), name, "deleted");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(e) => Err(e.into()),
    }
}
