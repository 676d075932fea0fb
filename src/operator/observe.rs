//! Reads what the builders need from the cluster: the database Secret and the current
//! size of the PVCs.

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use kube::{Api, Client};

use super::error::Error;
use crate::crd::validate::{Size, ValidGlance};
use crate::db::{Backend, DbUrl};
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
            database_connection(name, secrets.get_opt(name).await?.as_ref(), glance.replicas)
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

/// The URL under key `connection` of the Secret `name`, checked with glance-api's own URL
/// parser; a SQLite URL is refused when `replicas` is more than 1. No message shows the
/// password.
pub fn database_connection(
    name: &str,
    secret: Option<&Secret>,
    replicas: i32,
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
    let parsed = DbUrl::parse(url).map_err(|e| {
        DatabaseProblem(format!(
            "databaseInstance Secret {name:?}: key {CONNECTION_KEY:?}: {}",
            e.reason
        ))
    })?;
    if parsed.backend == Backend::Sqlite && replicas > 1 {
        return Err(DatabaseProblem(format!(
            "databaseInstance Secret {name:?}: key {CONNECTION_KEY:?} is a SQLite URL, which only one glance-api replica can use, and glanceAPI.replicas is {replicas}: put a MariaDB/MySQL or PostgreSQL URL in the Secret (mysql+pymysql://USER:PASSWORD@HOST/glance), or set replicas to 1"
        )));
    }
    Ok(Some(url.to_owned()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;

    use super::*;

    fn secret(url: &str) -> Secret {
        Secret {
            data: Some(BTreeMap::from([(
                CONNECTION_KEY.to_owned(),
                ByteString(url.as_bytes().to_vec()),
            )])),
            ..Secret::default()
        }
    }

    #[test]
    fn server_urls_serve_any_number_of_replicas() {
        for url in [
            "mysql+pymysql://glance:pw@openstack.openstack.svc/glance?charset=utf8",
            "postgresql://glance:pw@pg/glance",
        ] {
            assert_eq!(
                database_connection("db", Some(&secret(url)), 3),
                Ok(Some(url.to_owned()))
            );
        }
    }

    #[test]
    fn sqlite_in_the_secret_serves_one_replica_only() {
        let url = "sqlite:////var/lib/glance/glance.sqlite";
        assert_eq!(
            database_connection("db", Some(&secret(url)), 1),
            Ok(Some(url.to_owned()))
        );
        let DatabaseProblem(message) =
            database_connection("db", Some(&secret(url)), 2).expect_err("refused");
        assert!(
            message.contains("is a SQLite URL")
                && message.contains("glanceAPI.replicas is 2")
                && message.contains("MariaDB/MySQL or PostgreSQL URL"),
            "{message}"
        );
    }

    #[test]
    fn a_bad_url_is_named_without_its_password() {
        let DatabaseProblem(message) =
            database_connection("db", Some(&secret("oracle://glance:hunter2@db/glance")), 1)
                .expect_err("refused");
        assert!(
            message.starts_with(
                "databaseInstance Secret \"db\": key \"connection\": unknown database \"oracle\""
            ),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");
    }
}
