//! Reads what the builders need from the cluster: the database Secret and the current
//! size of the PVCs.

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use kube::{Api, Client};

use super::error::Error;
use crate::crd::validate::{Size, ValidGlance};
use crate::quantity;
use crate::resources::Observed;
use crate::resources::meta::Component;

/// Key of the database URL in the databaseInstance Secret.
pub const CONNECTION_KEY: &str = "connection";

/// Why the databaseInstance Secret cannot be used. The message names the Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseProblem(pub String);

/// What was read from the cluster.
#[derive(Debug, Clone)]
pub struct Observation {
    /// The database URL (None = SQLite), or why it could not be read.
    pub database: Result<Option<String>, DatabaseProblem>,
    /// `<name>-storage`, if it exists.
    pub storage_pvc: Option<PersistentVolumeClaim>,
    /// `<name>-image-cache`, if it exists.
    pub cache_pvc: Option<PersistentVolumeClaim>,
}

impl Observation {
    /// The builders' input, once the database URL is known.
    pub fn observed(&self, database_connection: Option<String>) -> Observed {
        Observed {
            database_connection,
            storage_request: self.storage_pvc.as_ref().and_then(pvc_request),
            cache_request: self.cache_pvc.as_ref().and_then(pvc_request),
        }
    }

    /// True when the cache PVC exists and is not already being deleted.
    pub fn cache_pvc_live(&self) -> bool {
        self.cache_pvc
            .as_ref()
            .is_some_and(|pvc| pvc.metadata.deletion_timestamp.is_none())
    }
}

/// The storage request of a PVC, if it has a well-formed one.
pub fn pvc_request(pvc: &PersistentVolumeClaim) -> Option<Size> {
    let request = pvc
        .spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")?;
    let bytes = quantity::parse_bytes(&request.0).ok()?;
    Some(Size {
        quantity: request.0.clone(),
        bytes,
    })
}

/// Reads the Secret and PVCs of `glance`.
pub async fn observe(client: &Client, glance: &ValidGlance) -> Result<Observation, Error> {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &glance.namespace);
    let database = match &glance.database_instance {
        None => Ok(None),
        Some(name) => {
            let secrets: Api<Secret> = Api::namespaced(client.clone(), &glance.namespace);
            database_connection(name, secrets.get_opt(name).await?.as_ref())
        }
    };
    Ok(Observation {
        database,
        storage_pvc: pvcs
            .get_opt(&Component::Storage.child_name(&glance.name))
            .await?,
        cache_pvc: pvcs
            .get_opt(&Component::ImageCache.child_name(&glance.name))
            .await?,
    })
}

/// The URL under key `connection` of the Secret `name`.
pub fn database_connection(
    name: &str,
    secret: Option<&Secret>,
) -> Result<Option<String>, DatabaseProblem> {
    let secret = secret.ok_or_else(|| {
        DatabaseProblem(format!(
            "databaseInstance Secret {name:?} not found in this namespace"
        ))
    })?;
    let value = secret
        .data
        .as_ref()
        .and_then(|d| d.get(CONNECTION_KEY))
        .ok_or_else(|| {
            DatabaseProblem(format!(
                "databaseInstance Secret {name:?} has no key {CONNECTION_KEY:?}"
            ))
        })?;
    let url = String::from_utf8(value.0.clone()).map_err(|_| {
        DatabaseProblem(format!(
            "databaseInstance Secret {name:?}: key {CONNECTION_KEY:?} is not UTF-8"
        ))
    })?;
    let url = url.trim();
    if url.is_empty() || url.contains('\n') {
        return Err(DatabaseProblem(format!(
            "databaseInstance Secret {name:?}: key {CONNECTION_KEY:?} must hold one database URL on one line"
        )));
    }
    Ok(Some(url.to_owned()))
}
