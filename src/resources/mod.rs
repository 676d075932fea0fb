//! Pure builders: a validated Glance (plus what was read from the cluster) in, every child
//! object out. Nothing here talks to the API server.

pub mod config;
pub mod cronjob;
pub mod deployment;
pub mod meta;
pub mod pod;
pub mod service;
pub mod storage;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret, Service};

use crate::crd::validate::{Size, ValidGlance};
use cronjob::CacheTool;

/// What the builders need from the cluster besides the Glance itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Key `connection` of the databaseInstance Secret; None = SQLite.
    pub database_connection: Option<String>,
    /// The spec.customServiceConfigSecrets Secrets, in list order.
    pub config_secrets: Vec<config::ConfigSecret>,
    /// Current request of `<name>-storage`, if it exists.
    pub storage_request: Option<Size>,
    /// Current request of `<name>-image-cache`, if it exists.
    pub cache_request: Option<Size>,
}

/// The children that exist only while the cache is on.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheChildren {
    /// `<name>-image-cache`.
    pub pvc: PersistentVolumeClaim,
    /// `<name>-cache-pruner`.
    pub pruner: CronJob,
    /// `<name>-cache-cleaner`.
    pub cleaner: CronJob,
}

/// Every child object of one Glance.
#[derive(Debug, Clone, PartialEq)]
pub struct Children {
    /// `<name>-config`.
    pub config: Secret,
    /// `<name>-storage`.
    pub storage: PersistentVolumeClaim,
    /// The cache PVC and CronJobs; None while the cache is off.
    pub cache: Option<CacheChildren>,
    /// `<name>-api` Service.
    pub service: Service,
    /// `<name>-api` Deployment.
    pub deployment: Deployment,
}

/// Builds every child of `glance`.
pub fn build(glance: &ValidGlance, observed: &Observed) -> Children {
    let config = config::config_secret(glance, observed.database_connection.as_deref());
    let extra = observed.config_secrets.as_slice();
    let hash = config::config_hash_with_secrets(&config, extra);
    let cache = match (
        storage::cache_pvc(glance, observed.cache_request.as_ref()),
        cronjob::cache_cronjob(glance, extra, CacheTool::Pruner),
        cronjob::cache_cronjob(glance, extra, CacheTool::Cleaner),
    ) {
        (Some(pvc), Some(pruner), Some(cleaner)) => Some(CacheChildren {
            pvc,
            pruner,
            cleaner,
        }),
        _ => None,
    };
    Children {
        storage: storage::storage_pvc(glance, observed.storage_request.as_ref()),
        cache,
        service: service::service(glance),
        deployment: deployment::deployment(glance, extra, &hash),
        config,
    }
}
