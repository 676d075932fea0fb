//! Pure builders: a validated Glance (plus what was read from the cluster) in, every child
//! object out. Nothing here talks to the API server.

pub mod config;
pub mod cronjob;
pub mod dbsync;
pub mod meta;
pub mod pod;
pub mod service;
pub mod statefulset;
pub mod storage;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret, Service};
use kube::{Resource, ResourceExt};

use crate::crd::validate::{CacheSettings, Size, ValidGlance};
use config::ConfigSecret;
use cronjob::CacheTool;

/// What the builders need from the cluster besides the Glance itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Key `connection` of the databaseInstance Secret; None = SQLite.
    pub database_connection: Option<String>,
    /// The spec.customServiceConfigSecrets Secrets, in list order.
    pub config_secrets: Vec<ConfigSecret>,
    /// The user name and password keys of the spec.keystone Secret; None without
    /// spec.keystone. Only hashed: the pods read them from the Secret itself.
    pub keystone_credentials: Option<ConfigSecret>,
    /// Current request of `<name>-storage`, if it exists.
    pub storage_request: Option<Size>,
    /// Access modes of `<name>-storage`, if it exists: they cannot change.
    pub storage_access_modes: Option<Vec<String>>,
    /// Request of the live StatefulSet's cache claim template, if it has one.
    pub cache_template_request: Option<Size>,
    /// The replicas' live cache volumes: name and current request.
    pub cache_volumes: BTreeMap<String, Size>,
}

/// The children that exist only while the cache is on.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheChildren {
    /// `<name>-cache-pruner-<i>` and `<name>-cache-cleaner-<i>`, replica by replica.
    pub cronjobs: Vec<CronJob>,
    /// `image-cache-<name>-api-<i>`: the replicas' cache volumes, which the StatefulSet
    /// makes from its claim template.
    pub volumes: Vec<String>,
    /// Live cache volumes smaller than the claim template, each with the request that
    /// grows it to the template's.
    pub resizes: Vec<PersistentVolumeClaim>,
    /// The claim template's request: imageCacheSize, or the live template's when larger.
    pub request: Size,
}

/// Every child object of one Glance.
#[derive(Debug, Clone, PartialEq)]
pub struct Children {
    /// `<name>-config`.
    pub config: Secret,
    /// `<name>-storage`.
    pub storage: PersistentVolumeClaim,
    /// The cache CronJobs and volumes; None while the cache is off.
    pub cache: Option<CacheChildren>,
    /// `<name>-api` Service.
    pub service: Service,
    /// `<name>-api-headless` Service.
    pub headless_service: Service,
    /// `<name>-db-sync`, with a databaseInstance; None for SQLite, which an init container
    /// of the one pod migrates.
    pub db_sync: Option<Job>,
    /// `<name>-api` StatefulSet.
    pub statefulset: StatefulSet,
}

impl Children {
    /// Every object the children stand for, as (kind, name), cache volumes included: what
    /// the orphan sweep keeps.
    pub fn names(&self) -> BTreeSet<(String, String)> {
        fn named<K: Resource<DynamicType = ()>>(object: &K) -> (String, String) {
            (K::kind(&()).into_owned(), object.name_any())
        }
        let mut names = BTreeSet::from([
            named(&self.config),
            named(&self.storage),
            named(&self.service),
            named(&self.headless_service),
            named(&self.statefulset),
        ]);
        names.extend(self.db_sync.iter().map(named));
        if let Some(cache) = &self.cache {
            names.extend(cache.cronjobs.iter().map(named));
            let pvc = PersistentVolumeClaim::kind(&()).into_owned();
            names.extend(cache.volumes.iter().map(|v| (pvc.clone(), v.clone())));
        }
        names
    }
}

/// The cache children of every replica, and the claim template their volumes come from.
fn cache_children(
    glance: &ValidGlance,
    cache: &CacheSettings,
    observed: &Observed,
) -> (PersistentVolumeClaim, CacheChildren) {
    let template =
        storage::cache_claim_template(glance, cache, observed.cache_template_request.as_ref());
    let template_request =
        storage::effective_request(&cache.size, observed.cache_template_request.as_ref());
    let extra = observed.config_secrets.as_slice();
    let replicas = 0..glance.replicas;
    let cronjobs = replicas
        .clone()
        .flat_map(|i| {
            CacheTool::ALL.map(|tool| cronjob::cache_cronjob(glance, cache, extra, tool, i))
        })
        .collect();
    let volumes: Vec<String> = replicas
        .map(|i| storage::cache_pvc_name(&glance.name, i))
        .collect();
    let resizes = volumes
        .iter()
        .filter(|name| {
            observed
                .cache_volumes
                .get(*name)
                .is_some_and(|live| live.bytes < template_request.bytes)
        })
        .map(|name| storage::cache_pvc_resize(glance, name, &template_request.quantity))
        .collect();
    let children = CacheChildren {
        cronjobs,
        volumes,
        resizes,
        request: template_request.clone(),
    };
    (template, children)
}

/// Builds every child of `glance`.
pub fn build(glance: &ValidGlance, observed: &Observed) -> Children {
    let config = config::config_secret(glance, observed.database_connection.as_deref());
    let extra = observed.config_secrets.as_slice();
    let hash = config::config_hash_with_secrets(
        &config,
        extra.iter().chain(&observed.keystone_credentials),
    );
    // Decided once: the template and the cache children exist together or not at all.
    let (template, cache) = glance
        .cache
        .as_ref()
        .map(|settings| cache_children(glance, settings, observed))
        .unzip();
    let db_sync = observed
        .database_connection
        .as_deref()
        .map(|connection| dbsync::db_sync_job(glance, extra, connection));
    Children {
        storage: storage::storage_pvc(
            glance,
            observed.storage_request.as_ref(),
            observed.storage_access_modes.as_deref(),
        ),
        cache,
        service: service::service(glance),
        headless_service: service::headless_service(glance),
        statefulset: statefulset::statefulset(glance, extra, &hash, template, db_sync.is_none()),
        db_sync,
        config,
    }
}
