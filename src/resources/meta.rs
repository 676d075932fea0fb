//! Names, labels and metadata shared by every child object.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::crd::validate::ValidGlance;

/// Value of app.kubernetes.io/name.
pub const APP_NAME: &str = "glance";
/// Value of app.kubernetes.io/managed-by, and the server-side apply field manager.
pub const MANAGER: &str = "glance-operator";

/// The component a child belongs to (app.kubernetes.io/component).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// The rendered configuration Secret.
    Config,
    /// The storage PVC.
    Storage,
    /// The image cache PVC.
    ImageCache,
    /// The glance-api StatefulSet and Service.
    Api,
    /// The headless Service giving each glance-api pod a DNS name.
    ApiHeadless,
    /// The Job migrating the shared database.
    DbSync,
    /// The cache pruner CronJob.
    CachePruner,
    /// The cache cleaner CronJob.
    CacheCleaner,
}

impl Component {
    /// Label value, and the suffix of the child's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::Storage => "storage",
            Self::ImageCache => "image-cache",
            Self::Api => "api",
            Self::ApiHeadless => "api-headless",
            Self::DbSync => "db-sync",
            Self::CachePruner => "cache-pruner",
            Self::CacheCleaner => "cache-cleaner",
        }
    }

    /// The child's name: `<glance>-<component>`.
    pub fn child_name(self, glance: &str) -> String {
        format!("{glance}-{}", self.as_str())
    }

    /// The name of a child that exists once per replica: `<glance>-<component>-<ordinal>`.
    pub fn replica_child_name(self, glance: &str, ordinal: i32) -> String {
        format!("{glance}-{}-{ordinal}", self.as_str())
    }
}

/// The label naming the Glance a child belongs to.
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";

/// Labels that select the children of one Glance and component.
pub fn selector_labels(glance: &str, component: Component) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), APP_NAME.to_owned()),
        (INSTANCE_LABEL.to_owned(), glance.to_owned()),
        (
            "app.kubernetes.io/component".to_owned(),
            component.as_str().to_owned(),
        ),
    ])
}

/// Full label set of a child: the selector labels plus managed-by.
pub fn labels(glance: &str, component: Component) -> BTreeMap<String, String> {
    let mut labels = selector_labels(glance, component);
    labels.insert(
        "app.kubernetes.io/managed-by".to_owned(),
        MANAGER.to_owned(),
    );
    labels
}

/// Metadata of a child: name, namespace, labels and the controller owner reference.
pub fn child_meta(glance: &ValidGlance, component: Component) -> ObjectMeta {
    ObjectMeta {
        name: Some(component.child_name(&glance.name)),
        namespace: Some(glance.namespace.clone()),
        labels: Some(labels(&glance.name, component)),
        owner_references: Some(vec![glance.owner.clone()]),
        ..ObjectMeta::default()
    }
}
