//! Which Glances a Secret change wakes: the owner of a config Secret, and every Glance
//! naming the Secret as its databaseInstance, in its customServiceConfigSecrets or as its
//! keystone.secret.

mod common;

use common::glance;
use glance_operator::operator::run::{glance_for_child, glances_for_secret};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::watcher;
use serde_json::json;

#[test]
fn a_secret_wakes_its_owner_and_the_glances_that_read_it() {
    let (store, mut writer) = reflector::store::<DeserializeGuard<kube_glance::Glance>>();
    let mut a = glance("seed.yaml"); // databaseInstance: openstack
    a.metadata.name = Some("a".into());
    let mut b = glance("cache-off.yaml"); // no databaseInstance
    b.metadata.name = Some("b".into());
    let mut elsewhere = glance("seed.yaml");
    elsewhere.metadata.name = Some("c".into());
    elsewhere.metadata.namespace = Some("other".into());
    for g in [a, b, elsewhere] {
        writer.apply_watcher_event(&watcher::Event::Apply(DeserializeGuard(Ok(g))));
    }

    let db: Secret = serde_json::from_value(
        json!({"metadata": {"name": "openstack", "namespace": "openstack"}}),
    )
    .expect("secret");
    assert_eq!(
        glances_for_secret(&store, &db),
        vec![ObjectRef::new("a").within("openstack")]
    );

    let config: Secret = serde_json::from_value(json!({"metadata": {
        "name": "b-config", "namespace": "openstack",
        "ownerReferences": [{"apiVersion": "glance.openstack.org/v1beta1", "kind": "Glance", "name": "b", "uid": "u"}],
    }}))
    .expect("secret");
    assert_eq!(
        glances_for_secret(&store, &config),
        vec![ObjectRef::new("b").within("openstack")]
    );

    let unrelated: Secret =
        serde_json::from_value(json!({"metadata": {"name": "x", "namespace": "openstack"}}))
            .expect("secret");
    assert!(glances_for_secret(&store, &unrelated).is_empty());
}

#[test]
fn a_cache_volume_wakes_the_glance_its_labels_name() {
    // Made by the StatefulSet from its claim template: labelled, owned by the StatefulSet.
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "image-cache-glance-api-1", "namespace": "openstack",
                     "labels": {"app.kubernetes.io/instance": "glance",
                                "app.kubernetes.io/managed-by": "glance-operator"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet",
                                          "name": "glance-api", "uid": "s1"}]}
    }))
    .expect("pvc");
    assert_eq!(
        glance_for_child(&pvc),
        Some(
            ObjectRef::<DeserializeGuard<glance_operator::crd::Glance>>::new("glance")
                .within("openstack")
        )
    );
    let unlabelled: PersistentVolumeClaim =
        serde_json::from_value(json!({"metadata": {"name": "other", "namespace": "openstack"}}))
            .expect("pvc");
    assert_eq!(glance_for_child(&unlabelled), None);
}

#[test]
fn a_config_secret_wakes_the_glances_that_name_it() {
    let (store, mut writer) = reflector::store::<DeserializeGuard<kube_glance::Glance>>();
    let mut a = glance("cache-off.yaml");
    a.metadata.name = Some("a".into());
    a.spec.custom_service_config_secrets = vec!["ceph-keys".into(), "tuning".into()];
    let mut b = glance("cache-off.yaml");
    b.metadata.name = Some("b".into());
    b.spec.custom_service_config_secrets = vec!["tuning".into()];
    let mut elsewhere = a.clone();
    elsewhere.metadata.name = Some("c".into());
    elsewhere.metadata.namespace = Some("other".into());
    for g in [a, b, elsewhere] {
        writer.apply_watcher_event(&watcher::Event::Apply(DeserializeGuard(Ok(g))));
    }
    let secret = |name: &str| -> Secret {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "openstack"}}))
            .expect("secret")
    };
    assert_eq!(
        glances_for_secret(&store, &secret("ceph-keys")),
        vec![ObjectRef::new("a").within("openstack")]
    );
    let mut woken = glances_for_secret(&store, &secret("tuning"));
    woken.sort_by_key(|r| r.name.clone());
    assert_eq!(
        woken,
        vec![
            ObjectRef::new("a").within("openstack"),
            ObjectRef::new("b").within("openstack")
        ]
    );
    assert!(glances_for_secret(&store, &secret("ceph")).is_empty());
}

#[test]
fn a_keystone_secret_wakes_the_glances_that_name_it() {
    let (store, mut writer) = reflector::store::<DeserializeGuard<kube_glance::Glance>>();
    let mut a = glance("cache-off.yaml");
    a.metadata.name = Some("a".into());
    a.spec.keystone = Some(
        serde_json::from_value(
            json!({"authUrl": "http://keystone:5000/v3", "secret": "glance-keystone"}),
        )
        .expect("spec.keystone"),
    );
    let mut b = glance("cache-off.yaml");
    b.metadata.name = Some("b".into());
    for g in [a, b] {
        writer.apply_watcher_event(&watcher::Event::Apply(DeserializeGuard(Ok(g))));
    }
    let secret = |name: &str| -> Secret {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "openstack"}}))
            .expect("secret")
    };
    assert_eq!(
        glances_for_secret(&store, &secret("glance-keystone")),
        vec![ObjectRef::new("a").within("openstack")]
    );
    assert!(glances_for_secret(&store, &secret("keystone")).is_empty());
}

mod kube_glance {
    pub use glance_operator::crd::Glance;
}
