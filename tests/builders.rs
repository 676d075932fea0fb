//! Pure builder tests, starting from the YAML fixtures.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{DEFAULT_IMAGE, glance, valid, with_cache_size};
use glance_operator::conf::{Config, ConfigSources};
use glance_operator::crd::CacheAccessMode;
use glance_operator::crd::validate::{Size, ValidGlance, validate};
use glance_operator::keystone::AuthTokenOptions;
use glance_operator::keystone::options::{DomainRef, Interface, NamedRef};
use glance_operator::operator::status::authentication_check;
use glance_operator::resources::config::{
    CONFIG_DIR, CUSTOM_KEY, ConfigSecret, KEYSTONE_PASSWORD_ENV, KEYSTONE_USERNAME_ENV,
    RENDERED_KEY, config_hash, config_hash_with_secrets, config_secret, extra_config_file,
    paste_flavor,
};
use glance_operator::resources::cronjob::CacheTool;
use glance_operator::resources::statefulset::{
    CONFIG_HASH_ANNOTATION, POD_NAME_LABEL, SELF_REFERENCE_ENV, claim_templates_differ, pod_name,
};
use glance_operator::resources::storage::cache_pvc_name;
use glance_operator::resources::{Children, Observed, build};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::StatefulSet;
use pretty_assertions::assert_eq;
use serde_json::{Value, json};

const DB_URL: &str = "mysql+pymysql://glance:secret@openstack.openstack.svc/glance";

fn seed_children() -> Children {
    let observed = Observed {
        database_connection: Some(DB_URL.to_owned()),
        ..Observed::default()
    };
    build(&valid("seed.yaml"), &observed)
}

fn secret_text(children: &Children, key: &str) -> String {
    let data = children.config.data.as_ref().expect("secret has data");
    String::from_utf8(data[key].0.clone()).expect("utf-8")
}

fn to_json<T: serde::Serialize>(object: &T) -> Value {
    serde_json::to_value(object).expect("serializes")
}

/// The seed Glance with `replicas` replicas and the cache on (10G) or off.
fn seed_with(replicas: i32, cache: bool) -> ValidGlance {
    let mut g = glance("seed.yaml");
    g.spec.glance_api.replicas = replicas;
    if !cache {
        g.spec.image_cache_size = None;
    }
    validate(&g, DEFAULT_IMAGE).expect("valid")
}

fn size(quantity: &str, bytes: u64) -> Size {
    Size {
        quantity: quantity.to_owned(),
        bytes,
    }
}

/// The StatefulSet's claim template of the cache volumes.
fn cache_template(children: &Children) -> Value {
    let templates = to_json(&children.statefulset)["spec"]["volumeClaimTemplates"].clone();
    assert_eq!(
        templates.as_array().map(Vec::len),
        Some(1),
        "one claim template: {templates}"
    );
    templates[0].clone()
}

/// The labels every child of the seed Glance carries for `component`.
fn seed_labels(component: &str) -> Value {
    json!({
        "app.kubernetes.io/name": "glance",
        "app.kubernetes.io/instance": "glance",
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": "glance-operator",
    })
}

#[test]
fn seed_renders_the_exact_config() {
    let expected = "\
[DEFAULT]
bind_host = 0.0.0.0
bind_port = 9292
enabled_backends = default_backend:file
graceful_shutdown_timeout = 60
image_cache_dir = /var/lib/glance/image-cache
image_cache_max_size = 10000000000
image_cache_stall_time = 86400
image_cache_driver = sqlite

[glance_store]
default_backend = default_backend

[default_backend]
filesystem_store_datadir = /var/lib/glance/images

[os_glance_staging_store]
filesystem_store_datadir = /var/lib/glance/os_glance_staging_store

[database]
connection = mysql+pymysql://glance:secret@openstack.openstack.svc/glance

[paste_deploy]
flavor = cachemanagement
";
    assert_eq!(secret_text(&seed_children(), RENDERED_KEY), expected);
}

#[test]
fn image_cache_max_size_is_the_exact_byte_count() {
    for (size, line) in [
        ("10G", "image_cache_max_size = 10000000000"),
        ("10Gi", "image_cache_max_size = 10737418240"),
        ("1500M", "image_cache_max_size = 1500000000"),
        ("500Mi", "image_cache_max_size = 524288000"),
    ] {
        let children = build(&with_cache_size("seed.yaml", size), &Observed::default());
        let conf = secret_text(&children, RENDERED_KEY);
        let lines: Vec<&str> = conf
            .lines()
            .filter(|l| l.starts_with("image_cache_max_size"))
            .collect();
        assert_eq!(lines, vec![line], "for imageCacheSize {size}");
        // The claim template asks for the quantity as written.
        assert_eq!(
            cache_template(&children)["spec"]["resources"]["requests"]["storage"],
            json!(size)
        );
        assert_eq!(
            children.cache.as_ref().expect("cache on").request.quantity,
            size
        );
    }
}

#[test]
fn custom_config_is_kept_verbatim() {
    assert_eq!(
        secret_text(&seed_children(), CUSTOM_KEY),
        "[DEFAULT]\ndebug = true\n"
    );
    let mut g = valid("seed.yaml");
    let odd = "[DEFAULT]\n  indented = yes  \n# comment ü\r\nno_newline_at_end = 1";
    g.custom_config = odd.to_owned();
    let children = build(&g, &Observed::default());
    assert_eq!(secret_text(&children, CUSTOM_KEY), odd);
}

#[test]
fn without_database_instance_sqlite_lives_on_the_storage_volume() {
    let children = build(&valid("cache-off.yaml"), &Observed::default());
    let conf = secret_text(&children, RENDERED_KEY);
    assert!(
        conf.contains("\n[database]\nconnection = sqlite:////var/lib/glance/glance.sqlite\n"),
        "{conf}"
    );
}

#[test]
fn cache_off_renders_no_cache_options_and_no_cache_children() {
    let children = build(&valid("cache-off.yaml"), &Observed::default());
    assert!(children.cache.is_none());
    let conf = secret_text(&children, RENDERED_KEY);
    assert!(!conf.contains("image_cache"), "{conf}");
    assert!(!conf.contains("paste_deploy"), "{conf}");
    let s = to_json(&children.statefulset);
    assert!(
        s["spec"].get("volumeClaimTemplates").is_none(),
        "no claim template: {s}"
    );
    let pod = &s["spec"]["template"]["spec"];
    assert!(
        !pod.to_string().contains("image-cache"),
        "neither a volume nor a mount: {pod}"
    );
    assert_eq!(
        to_json(&children.storage)["spec"]["resources"]["requests"]["storage"],
        json!("10G")
    );
}

#[test]
fn every_child_has_its_name_labels_and_controller_owner() {
    let c = seed_children();
    let cache = c.cache.as_ref().expect("cache on");
    let mut children: Vec<(Value, &str, &str)> = vec![
        (to_json(&c.config), "glance-config", "config"),
        (to_json(&c.storage), "glance-storage", "storage"),
        (to_json(&c.service), "glance-api", "api"),
        (
            to_json(&c.headless_service),
            "glance-api-headless",
            "api-headless",
        ),
        (to_json(&c.statefulset), "glance-api", "api"),
        (
            to_json(c.db_sync.as_ref().expect("a db-sync Job")),
            "glance-db-sync",
            "db-sync",
        ),
    ];
    assert_eq!(cache.cronjobs.len(), 2);
    children.push((
        to_json(&cache.cronjobs[0]),
        "glance-cache-pruner-0",
        "cache-pruner",
    ));
    children.push((
        to_json(&cache.cronjobs[1]),
        "glance-cache-cleaner-0",
        "cache-cleaner",
    ));
    for (object, name, component) in children {
        let meta = &object["metadata"];
        assert_eq!(meta["name"], json!(name));
        assert_eq!(meta["namespace"], json!("openstack"));
        assert_eq!(meta["labels"], seed_labels(component), "{name}");
        assert_eq!(
            meta["ownerReferences"],
            json!([{
                "apiVersion": "glance.openstack.org/v1beta1",
                "kind": "Glance",
                "name": "glance",
                "uid": "6f7e1c1e-3b0a-4c55-9d3e-1b2f7c1a0001",
                "controller": true,
                "blockOwnerDeletion": true,
            }]),
            "{name}"
        );
    }
    // The claims made from the template carry its labels; their owner is the StatefulSet
    // (retention policy), and their namespace its own.
    assert_eq!(
        cache_template(&c)["metadata"],
        json!({"name": "image-cache", "labels": seed_labels("image-cache")})
    );
    assert_eq!(cache.volumes, vec!["image-cache-glance-api-0".to_owned()]);
}

#[test]
fn pvcs_follow_the_spec() {
    let c = seed_children();
    let storage = to_json(&c.storage);
    assert_eq!(
        storage["spec"],
        json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10G"}}}),
        "storageClass \"\" means the cluster default, so storageClassName is left out"
    );
    assert_eq!(
        cache_template(&c)["spec"],
        json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10G"}}})
    );

    let shared = build(&valid("shared.yaml"), &Observed::default());
    let storage = to_json(&shared.storage);
    assert_eq!(storage["spec"]["accessModes"], json!(["ReadWriteMany"]));
    assert_eq!(storage["spec"]["storageClassName"], json!("cephfs"));
    let cache = cache_template(&shared);
    assert_eq!(cache["spec"]["accessModes"], json!(["ReadWriteMany"]));
    assert_eq!(cache["spec"]["storageClassName"], json!("cephfs"));
    assert_eq!(
        cache["spec"]["resources"]["requests"]["storage"],
        json!("50Gi")
    );
    // Several replicas share the storage volume; each has its own cache volume, so
    // ReadWriteOnce serves any number of them.
    let rwo = build(&seed_with(3, true), &Observed::default());
    assert_eq!(
        to_json(&rwo.storage)["spec"]["accessModes"],
        json!(["ReadWriteMany"])
    );
    assert_eq!(
        cache_template(&rwo)["spec"]["accessModes"],
        json!(["ReadWriteOnce"])
    );
}

#[test]
fn a_pvc_never_shrinks_but_grows() {
    let g = with_cache_size("seed.yaml", "5G");
    let larger = Observed {
        cache_template_request: Some(size("10G", 10_000_000_000)),
        storage_request: Some(size("20G", 20_000_000_000)),
        ..Observed::default()
    };
    let children = build(&g, &larger);
    assert_eq!(
        cache_template(&children)["spec"]["resources"]["requests"]["storage"],
        json!("10G")
    );
    assert_eq!(
        children.cache.as_ref().expect("cache on").request,
        size("10G", 10_000_000_000)
    );
    assert_eq!(
        to_json(&children.storage)["spec"]["resources"]["requests"]["storage"],
        json!("20G")
    );
    // ... while the cache limit follows the spec.
    assert!(secret_text(&children, RENDERED_KEY).contains("image_cache_max_size = 5000000000\n"));

    let smaller = Observed {
        cache_template_request: Some(size("1G", 1_000_000_000)),
        ..Observed::default()
    };
    let children = build(&g, &smaller);
    assert_eq!(
        cache_template(&children)["spec"]["resources"]["requests"]["storage"],
        json!("5G")
    );
    assert_eq!(
        children.cache.as_ref().expect("cache on").request,
        size("5G", 5_000_000_000)
    );
}

#[test]
fn the_claim_template_request_never_shrinks_below_the_live_templates() {
    // Spec 10G; the live template asks for more, the same, or less.
    for (live, expected) in [
        (size("20G", 20_000_000_000), "20G"),
        (size("10000M", 10_000_000_000), "10G"),
        (size("9G", 9_000_000_000), "10G"),
    ] {
        for replicas in [1, 3] {
            let observed = Observed {
                database_connection: Some(DB_URL.to_owned()),
                cache_template_request: Some(live.clone()),
                ..Observed::default()
            };
            let children = build(&seed_with(replicas, true), &observed);
            assert_eq!(
                cache_template(&children)["spec"]["resources"]["requests"]["storage"],
                json!(expected),
                "live {live:?}, {replicas} replicas"
            );
            let cache = children.cache.expect("cache on");
            assert_eq!(cache.request.quantity, expected);
            assert!(cache.request.bytes >= live.bytes);
        }
    }
}

#[test]
fn resizes_grow_only_live_volumes_of_kept_replicas_smaller_than_the_template() {
    let volume = |i: i32| cache_pvc_name("glance", i);
    let observed = Observed {
        database_connection: Some(DB_URL.to_owned()),
        cache_volumes: BTreeMap::from([
            // Smaller than the template: grown.
            (volume(0), size("5G", 5_000_000_000)),
            // As large (written another way): left alone.
            (volume(1), size("10000M", 10_000_000_000)),
            // Replica 2 has no volume yet: the StatefulSet makes it from the template.
            // Larger (grown by hand): never shrunk.
            (volume(3), size("20G", 20_000_000_000)),
            // Smaller, but replica 5 is scaled away: its volume goes, it is not grown.
            (volume(5), size("1G", 1_000_000_000)),
        ]),
        ..Observed::default()
    };
    let resize = |name: &str, request: &str| {
        json!({
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": "openstack"},
            "spec": {"resources": {"requests": {"storage": request}}},
        })
    };
    let resizes = |children: &Children| -> Vec<Value> {
        children
            .cache
            .as_ref()
            .expect("cache on")
            .resizes
            .iter()
            .map(to_json)
            .collect()
    };
    let four = build(&seed_with(4, true), &observed);
    assert_eq!(resizes(&four), vec![resize(&volume(0), "10G")]);

    // A live template larger than the spec grows every smaller volume to its request.
    let grown = Observed {
        cache_template_request: Some(size("15G", 15_000_000_000)),
        ..observed.clone()
    };
    let four = build(&seed_with(4, true), &grown);
    assert_eq!(
        resizes(&four),
        vec![resize(&volume(0), "15G"), resize(&volume(1), "15G")]
    );

    // Nothing to grow without live volumes, with none smaller, or with the cache off.
    let fresh = Observed {
        database_connection: Some(DB_URL.to_owned()),
        ..Observed::default()
    };
    assert_eq!(
        resizes(&build(&seed_with(3, true), &fresh)),
        Vec::<Value>::new()
    );
    let one = build(&seed_with(1, true), &observed);
    assert_eq!(resizes(&one), vec![resize(&volume(0), "10G")]);
    let large = with_cache_size("seed.yaml", "1G");
    assert_eq!(resizes(&build(&large, &observed)), Vec::<Value>::new());
    assert!(build(&seed_with(4, false), &observed).cache.is_none());
}

/// (kind, name) pairs.
fn kinds_and_names(pairs: &[(&str, String)]) -> BTreeSet<(String, String)> {
    pairs
        .iter()
        .map(|(kind, name)| ((*kind).to_owned(), name.clone()))
        .collect()
}

#[test]
fn children_are_named_for_one_and_three_replicas_with_the_cache_on_and_off() {
    for replicas in [1, 3] {
        for cache in [true, false] {
            let observed = Observed {
                database_connection: Some(DB_URL.to_owned()),
                ..Observed::default()
            };
            let c = build(&seed_with(replicas, cache), &observed);
            let mut expected = vec![
                ("Job", "glance-db-sync".to_owned()),
                ("Secret", "glance-config".to_owned()),
                ("PersistentVolumeClaim", "glance-storage".to_owned()),
                ("Service", "glance-api".to_owned()),
                ("Service", "glance-api-headless".to_owned()),
                ("StatefulSet", "glance-api".to_owned()),
            ];
            let mut cronjobs = Vec::new();
            let mut volumes = Vec::new();
            if cache {
                for i in 0..replicas {
                    cronjobs.push(format!("glance-cache-pruner-{i}"));
                    cronjobs.push(format!("glance-cache-cleaner-{i}"));
                    volumes.push(format!("image-cache-glance-api-{i}"));
                }
            }
            expected.extend(cronjobs.iter().map(|n| ("CronJob", n.clone())));
            expected.extend(volumes.iter().map(|n| ("PersistentVolumeClaim", n.clone())));
            let what = format!("{replicas} replicas, cache {cache}");
            assert_eq!(c.names(), kinds_and_names(&expected), "{what}");
            let per_replica = if cache { 3 } else { 0 };
            assert_eq!(
                c.names().len(),
                6 + per_replica * usize::try_from(replicas).expect("replicas"),
                "{what}: two CronJobs and a volume per replica"
            );

            // The objects themselves carry those names, replica by replica.
            assert_eq!(c.config.metadata.name.as_deref(), Some("glance-config"));
            assert_eq!(c.storage.metadata.name.as_deref(), Some("glance-storage"));
            assert_eq!(c.service.metadata.name.as_deref(), Some("glance-api"));
            assert_eq!(
                c.headless_service.metadata.name.as_deref(),
                Some("glance-api-headless")
            );
            assert_eq!(c.statefulset.metadata.name.as_deref(), Some("glance-api"));
            assert_eq!(
                c.db_sync.as_ref().and_then(|j| j.metadata.name.as_deref()),
                Some("glance-db-sync")
            );
            match &c.cache {
                Some(cache) => {
                    let names: Vec<String> = cache
                        .cronjobs
                        .iter()
                        .map(|j| j.metadata.name.clone().expect("named"))
                        .collect();
                    assert_eq!(names, cronjobs, "{what}");
                    assert_eq!(cache.volumes, volumes, "{what}");
                    for i in 0..replicas {
                        assert_eq!(
                            CacheTool::ALL
                                .map(|tool| tool.cronjob_name("glance", i))
                                .to_vec(),
                            cronjobs[2 * i as usize..2 * i as usize + 2].to_vec()
                        );
                    }
                }
                None => assert!(!cache, "{what}"),
            }
        }
    }
    // SQLite needs no Job: the one pod migrates it from an init container.
    let sqlite = build(&valid("cache-off.yaml"), &Observed::default());
    assert_eq!(
        sqlite.names(),
        kinds_and_names(&[
            ("PersistentVolumeClaim", "glance-storage".to_owned()),
            ("Secret", "glance-config".to_owned()),
            ("Service", "glance-api".to_owned()),
            ("Service", "glance-api-headless".to_owned()),
            ("StatefulSet", "glance-api".to_owned()),
        ])
    );
}

#[test]
fn three_replicas_get_a_cronjob_pair_each_on_their_own_volume_and_node() {
    for access_mode in [
        CacheAccessMode::ReadWriteOnce,
        CacheAccessMode::ReadWriteMany,
    ] {
        let mut g = seed_with(3, true);
        g.cache.as_mut().expect("cache on").access_mode = access_mode;
        let c = build(&g, &Observed::default());
        let template = cache_template(&c);
        let cache = c.cache.as_ref().expect("cache on");
        let names: Vec<String> = cache
            .cronjobs
            .iter()
            .map(|j| j.metadata.name.clone().expect("named"))
            .collect();
        assert_eq!(
            names,
            [
                "glance-cache-pruner-0",
                "glance-cache-cleaner-0",
                "glance-cache-pruner-1",
                "glance-cache-cleaner-1",
                "glance-cache-pruner-2",
                "glance-cache-cleaner-2",
            ]
        );
        for (n, cronjob) in cache.cronjobs.iter().enumerate() {
            let i = i32::try_from(n / 2).expect("small");
            let pod = &to_json(cronjob)["spec"]["jobTemplate"]["spec"]["template"]["spec"];
            // The StatefulSet names the claims of its template `<template>-<pod>`.
            let claim = format!(
                "{}-{}",
                template["metadata"]["name"]
                    .as_str()
                    .expect("template name"),
                pod_name("glance", i)
            );
            assert_eq!(claim, format!("image-cache-glance-api-{i}"));
            assert_eq!(cache_pvc_name("glance", i), claim);
            let claims: Vec<&Value> = pod["volumes"]
                .as_array()
                .expect("volumes")
                .iter()
                .filter(|v| v.get("persistentVolumeClaim").is_some())
                .collect();
            assert_eq!(
                claims,
                vec![
                    &json!({"name": "image-cache", "persistentVolumeClaim": {"claimName": claim}})
                ],
                "{n}: exactly replica {i}'s cache volume"
            );
            assert_eq!(
                pod["containers"][0]["volumeMounts"][1],
                json!({"name": "image-cache", "mountPath": "/var/lib/glance/image-cache"})
            );
            // On the node of that replica, for ReadWriteOnce and ReadWriteMany alike.
            assert_eq!(POD_NAME_LABEL, "statefulset.kubernetes.io/pod-name");
            assert_eq!(
                pod["affinity"],
                json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
                    "labelSelector": {"matchLabels": {
                        "statefulset.kubernetes.io/pod-name": format!("glance-api-{i}"),
                    }},
                    "topologyKey": "kubernetes.io/hostname",
                }]}}),
                "{access_mode:?}"
            );
        }
    }
}

#[test]
fn the_statefulset_names_each_pod_through_the_headless_service() {
    for replicas in [1, 3] {
        for cache in [true, false] {
            let what = format!("{replicas} replicas, cache {cache}");
            let c = build(&seed_with(replicas, cache), &Observed::default());
            let s = to_json(&c.statefulset);
            assert_eq!(s["apiVersion"], json!("apps/v1"));
            assert_eq!(s["kind"], json!("StatefulSet"));
            let spec = &s["spec"];
            assert_eq!(spec["replicas"], json!(replicas), "{what}");
            assert_eq!(
                spec["serviceName"],
                to_json(&c.headless_service)["metadata"]["name"],
                "{what}"
            );
            assert_eq!(spec["serviceName"], json!("glance-api-headless"));
            // A replica's cache volume goes with it, and every volume with the StatefulSet.
            assert_eq!(
                spec["persistentVolumeClaimRetentionPolicy"],
                json!({"whenDeleted": "Delete", "whenScaled": "Delete"}),
                "{what}"
            );
            let pod = &spec["template"]["spec"];
            let volumes: Vec<&str> = pod["volumes"]
                .as_array()
                .expect("volumes")
                .iter()
                .filter_map(|v| v["name"].as_str())
                .collect();
            assert_eq!(volumes, ["config", "storage", "tmp"], "{what}");
            let mounts: Vec<&str> = pod["containers"][0]["volumeMounts"]
                .as_array()
                .expect("mounts")
                .iter()
                .filter_map(|m| m["name"].as_str())
                .collect();
            if cache {
                // The cache volume comes from the claim template of the same name.
                assert_eq!(
                    spec["volumeClaimTemplates"]
                        .as_array()
                        .expect("templates")
                        .iter()
                        .map(|t| t["metadata"]["name"].clone())
                        .collect::<Vec<_>>(),
                    vec![json!("image-cache")],
                    "{what}"
                );
                assert_eq!(mounts, ["config", "storage", "image-cache", "tmp"]);
            } else {
                assert!(spec.get("volumeClaimTemplates").is_none(), "{what}");
                assert_eq!(mounts, ["config", "storage", "tmp"]);
            }
            // Each pod names itself: `[DEFAULT] worker_self_reference_url` through oslo's
            // environment source, from the pod's own name.
            assert_eq!(SELF_REFERENCE_ENV, "OS_DEFAULT__WORKER_SELF_REFERENCE_URL");
            assert_eq!(
                pod["containers"][0]["env"],
                json!([
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {
                        "name": "OS_DEFAULT__WORKER_SELF_REFERENCE_URL",
                        "value": "http://$(POD_NAME).glance-api-headless.openstack.svc:9292",
                    },
                ]),
                "{what}"
            );
        }
    }
}

#[test]
fn the_headless_service_gives_every_api_pod_a_dns_name() {
    let c = seed_children();
    let h = to_json(&c.headless_service);
    assert_eq!(h["kind"], json!("Service"));
    assert_eq!(h["metadata"]["name"], json!("glance-api-headless"));
    assert_eq!(h["metadata"]["labels"], seed_labels("api-headless"));
    assert_eq!(
        h["spec"],
        json!({
            "clusterIP": "None",
            "publishNotReadyAddresses": true,
            "selector": {
                "app.kubernetes.io/name": "glance",
                "app.kubernetes.io/instance": "glance",
                "app.kubernetes.io/component": "api",
            },
            "ports": [{"name": "http", "port": 9292, "targetPort": "http", "protocol": "TCP"}],
        })
    );
    // It selects the StatefulSet's pods, as the ClusterIP Service does.
    let s = to_json(&c.statefulset);
    assert_eq!(s["spec"]["selector"]["matchLabels"], h["spec"]["selector"]);
    assert_eq!(
        to_json(&c.service)["spec"]["selector"],
        h["spec"]["selector"]
    );
}

/// `statefulset` as the API server returns it: the claim templates gain apiVersion and
/// kind, volumeMode, an empty status and a creationTimestamp; the spec gains defaults.
fn as_served(statefulset: &StatefulSet) -> StatefulSet {
    let mut live = to_json(statefulset);
    live["metadata"]["uid"] = json!("1c1e6f7e-0a3b-554c-9d3e-1b2f7c1a0002");
    live["metadata"]["resourceVersion"] = json!("4711");
    live["spec"]["podManagementPolicy"] = json!("OrderedReady");
    live["spec"]["revisionHistoryLimit"] = json!(10);
    live["spec"]["updateStrategy"]["rollingUpdate"] = json!({"partition": 0});
    if let Some(templates) = live["spec"]["volumeClaimTemplates"].as_array_mut() {
        for template in templates {
            template["apiVersion"] = json!("v1");
            template["kind"] = json!("PersistentVolumeClaim");
            template["metadata"]["creationTimestamp"] = Value::Null;
            template["spec"]["volumeMode"] = json!("Filesystem");
            template["status"] = json!({"phase": "Pending"});
        }
    }
    live["status"] = json!({"replicas": 1, "readyReplicas": 1, "availableReplicas": 1});
    serde_json::from_value(live).expect("a StatefulSet")
}

#[test]
fn claim_templates_differ_when_size_class_access_mode_or_cache_change() {
    let observed = Observed {
        database_connection: Some(DB_URL.to_owned()),
        ..Observed::default()
    };
    let statefulset = |g: &ValidGlance| build(g, &observed).statefulset;
    let seed = statefulset(&valid("seed.yaml"));
    let live = as_served(&seed);
    assert!(
        live.spec
            .as_ref()
            .is_some_and(|s| s.volume_claim_templates.as_ref().is_some_and(|t| t[0]
                .spec
                .as_ref()
                .is_some_and(|p| p.volume_mode.is_some())
                && t[0].status.is_some()))
    );

    let mut changes: Vec<(&str, ValidGlance)> = Vec::new();
    changes.push(("size", with_cache_size("seed.yaml", "20G")));
    let mut class = valid("seed.yaml");
    class.storage_class = Some("fast".to_owned());
    changes.push(("storage class", class));
    let mut mode = valid("seed.yaml");
    mode.cache.as_mut().expect("cache on").access_mode = CacheAccessMode::ReadWriteMany;
    changes.push(("access mode", mode));
    let mut off = valid("seed.yaml");
    off.cache = None;
    changes.push(("cache off", off));
    for (what, changed) in &changes {
        let built = statefulset(changed);
        assert!(claim_templates_differ(&live, &built), "{what}");
        assert!(claim_templates_differ(&seed, &built), "{what}");
        assert!(
            claim_templates_differ(&as_served(&built), &seed),
            "{what}, back"
        );
    }
    // The cache turned on again.
    let off = statefulset(&seed_with(1, false));
    assert!(claim_templates_differ(&as_served(&off), &seed), "cache on");
    assert!(
        !claim_templates_differ(&as_served(&off), &off),
        "cache stays off"
    );
}

#[test]
fn claim_templates_do_not_differ_for_an_identical_template_as_served() {
    let observed = Observed {
        database_connection: Some(DB_URL.to_owned()),
        ..Observed::default()
    };
    let seed = build(&valid("seed.yaml"), &observed).statefulset;
    assert!(!claim_templates_differ(&seed, &seed));
    assert!(!claim_templates_differ(&as_served(&seed), &seed));
    let shared = build(&valid("shared.yaml"), &observed).statefulset;
    assert!(!claim_templates_differ(&as_served(&shared), &shared));

    // Neither scaling, nor a config change, nor another image touches the template:
    // those roll the pods, they do not re-create the StatefulSet.
    let live = as_served(&seed);
    let mut other = seed_with(5, true);
    other.custom_config.push_str("verbose = true\n");
    other.image = "registry.example/glance:next".to_owned();
    let built = build(&other, &observed).statefulset;
    assert!(!claim_templates_differ(&live, &built));

    // A spec smaller than the live template keeps the live request, so no difference.
    let smaller = with_cache_size("seed.yaml", "5G");
    let keeps = Observed {
        cache_template_request: Some(size("10G", 10_000_000_000)),
        ..observed.clone()
    };
    assert!(!claim_templates_differ(
        &live,
        &build(&smaller, &keeps).statefulset
    ));
    assert!(claim_templates_differ(
        &live,
        &build(&smaller, &observed).statefulset
    ));

    // The server writes quantities in canonical form: 10240M read back as 10240M, but
    // 10240Mi as 10Gi. The same size is no difference.
    let mibs = build(&with_cache_size("seed.yaml", "10240Mi"), &observed).statefulset;
    let mut canonical = to_json(&as_served(&mibs));
    canonical["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] =
        json!("10Gi");
    let canonical: StatefulSet = serde_json::from_value(canonical).expect("StatefulSet");
    assert!(!claim_templates_differ(&canonical, &mibs));

    // Any other claim template on the live object is a difference.
    let mut extra = to_json(&live);
    let copy = extra["spec"]["volumeClaimTemplates"][0].clone();
    extra["spec"]["volumeClaimTemplates"]
        .as_array_mut()
        .expect("templates")
        .push(json!({"metadata": {"name": "scratch"}, "spec": copy["spec"]}));
    let extra: StatefulSet = serde_json::from_value(extra).expect("StatefulSet");
    assert!(claim_templates_differ(&extra, &seed));
}

#[test]
fn statefulset_is_hardened_probed_and_rolled_by_config_changes() {
    let c = seed_children();
    let d = to_json(&c.statefulset);
    let pod = &d["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(d["spec"]["replicas"], json!(1));
    assert_eq!(
        d["spec"]["updateStrategy"],
        json!({"type": "RollingUpdate"})
    );
    assert!(d["spec"].get("strategy").is_none(), "no Recreate any more");
    assert_eq!(
        d["spec"]["podManagementPolicy"],
        json!("Parallel"),
        "the db-sync Job migrates before the replicas start, so they need not wait in turn"
    );
    assert_eq!(container["image"], json!(DEFAULT_IMAGE));
    assert_eq!(
        container["command"],
        json!(["glance-api", "--config-dir", "/etc/glance/glance.conf.d"])
    );
    assert_eq!(
        container["ports"],
        json!([{"name": "http", "containerPort": 9292, "protocol": "TCP"}])
    );
    for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
        assert_eq!(
            container[probe]["httpGet"],
            json!({"path": "/healthcheck", "port": "http"}),
            "{probe}"
        );
    }
    assert_eq!(
        container["securityContext"],
        json!({
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": true,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        })
    );
    let psc = &pod["securityContext"];
    assert_eq!(psc["runAsNonRoot"], json!(true));
    assert_eq!(psc["fsGroup"], json!(42415));
    assert_eq!(psc["seccompProfile"], json!({"type": "RuntimeDefault"}));
    assert_eq!(pod["automountServiceAccountToken"], json!(false));
    assert_eq!(
        container["volumeMounts"],
        json!([
            {"name": "config", "mountPath": "/etc/glance/glance.conf.d", "readOnly": true},
            {"name": "storage", "mountPath": "/var/lib/glance"},
            {"name": "image-cache", "mountPath": "/var/lib/glance/image-cache"},
            {"name": "tmp", "mountPath": "/tmp"},
        ])
    );

    // glance-manage db_sync runs first, from the same image, with the same config and
    // hardening: the API never starts on a database without its schema. With a
    // databaseInstance that is the Job `<name>-db-sync`, not an init container.
    assert!(pod.get("initContainers").is_none(), "{pod}");
    let job = to_json(c.db_sync.as_ref().expect("a db-sync Job"));
    assert_eq!(job["metadata"]["name"], json!("glance-db-sync"));
    let job_pod = &job["spec"]["template"]["spec"];
    assert_eq!(job_pod["restartPolicy"], json!("OnFailure"));
    let sync = &job_pod["containers"][0];
    assert_eq!(sync["name"], json!("db-sync"));
    assert_eq!(
        sync["command"],
        json!(["glance-manage", "--config-dir", "/etc/glance/glance.conf.d"])
    );
    assert_eq!(sync["args"], json!(["db_sync"]));
    for same in ["image", "securityContext", "resources"] {
        assert_eq!(sync[same], container[same], "{same}");
    }
    assert_eq!(job_pod["securityContext"], pod["securityContext"]);
    // It reads the same config; it needs none of the volumes.
    assert_eq!(
        sync["volumeMounts"],
        json!([
            {"name": "config", "mountPath": "/etc/glance/glance.conf.d", "readOnly": true},
            {"name": "tmp", "mountPath": "/tmp"},
        ])
    );
    assert_eq!(job_pod["volumes"][0], pod["volumes"][0]);
    // With SQLite on the storage volume, which only the one pod mounts, it is that pod's
    // init container, with the same volumes.
    let sqlite = build(&valid("cache-off.yaml"), &Observed::default());
    assert!(sqlite.db_sync.is_none(), "SQLite: no Job");
    let sqlite = to_json(&sqlite.statefulset);
    let sqlite_pod = &sqlite["spec"]["template"]["spec"];
    let init = sqlite_pod["initContainers"]
        .as_array()
        .expect("init containers");
    assert_eq!(init.len(), 1);
    assert_eq!(init[0]["name"], json!("db-sync"));
    assert_eq!(init[0]["command"], sync["command"]);
    assert_eq!(init[0]["args"], json!(["db_sync"]));
    for same in ["image", "volumeMounts", "securityContext", "resources"] {
        assert_eq!(init[0][same], sqlite_pod["containers"][0][same], "{same}");
    }

    let hash = &d["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH_ANNOTATION];
    assert_eq!(hash, &json!(config_hash(&c.config)));
    let mut changed = valid("seed.yaml");
    changed.custom_config.push_str("verbose = true\n");
    let other = config_hash(&config_secret(&changed, Some(DB_URL)));
    assert_ne!(
        hash,
        &json!(other),
        "a config change must change the pod template"
    );
    let again = to_json(&seed_children().statefulset);
    assert_eq!(
        hash,
        &again["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH_ANNOTATION]
    );
}

#[test]
fn rolling_update_whatever_the_volumes() {
    // Each replica has its own cache volume, so pods are replaced one at a time whether the
    // volumes are ReadWriteMany or ReadWriteOnce.
    let d = to_json(&build(&valid("shared.yaml"), &Observed::default()).statefulset);
    assert_eq!(
        d["spec"]["updateStrategy"],
        json!({"type": "RollingUpdate"})
    );
    assert_eq!(d["spec"]["replicas"], json!(3));
    for fixture in ["cache-off.yaml", "seed.yaml"] {
        let one = to_json(&build(&valid(fixture), &Observed::default()).statefulset);
        assert_eq!(
            one["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate"}),
            "{fixture}: storage is ReadWriteOnce"
        );
        assert!(one["spec"].get("strategy").is_none());
    }
    let rwo = to_json(&build(&seed_with(3, true), &Observed::default()).statefulset);
    assert_eq!(
        rwo["spec"]["updateStrategy"],
        json!({"type": "RollingUpdate"})
    );
}

#[test]
fn cronjobs_run_the_cache_tools_from_the_api_image_with_the_same_volumes() {
    for (fixture, schedules) in [
        ("seed.yaml", ["*/15 * * * *", "*/30 * * * *"]),
        ("shared.yaml", ["0 * * * *", "@daily"]),
    ] {
        let g = valid(fixture);
        let c = build(&g, &Observed::default());
        let d = to_json(&c.statefulset);
        let api_pod = &d["spec"]["template"]["spec"];
        let api_volumes = api_pod["volumes"].as_array().expect("volumes").clone();
        let api_mounts = api_pod["containers"][0]["volumeMounts"]
            .as_array()
            .expect("mounts")
            .clone();
        let template = cache_template(&c);
        let cache = c.cache.as_ref().expect("cache on");
        assert_eq!(
            cache.cronjobs.len(),
            2 * usize::try_from(g.replicas).expect("replicas")
        );
        for (n, cronjob) in cache.cronjobs.iter().enumerate() {
            let ordinal = i32::try_from(n / 2).expect("small");
            let (program, schedule) = [
                ("glance-cache-pruner", schedules[0]),
                ("glance-cache-cleaner", schedules[1]),
            ][n % 2];
            let cronjob = to_json(cronjob);
            assert_eq!(
                cronjob["metadata"]["name"],
                json!(format!("{}-{}-{ordinal}", g.name, &program[7..])),
                "{fixture}"
            );
            let spec = &cronjob["spec"];
            assert_eq!(spec["schedule"], json!(schedule));
            assert_eq!(spec["concurrencyPolicy"], json!("Forbid"));
            assert_eq!(spec["successfulJobsHistoryLimit"], json!(1));
            assert_eq!(spec["failedJobsHistoryLimit"], json!(2));
            let pod = &spec["jobTemplate"]["spec"]["template"]["spec"];
            let container = &pod["containers"][0];
            assert_eq!(container["image"], api_pod["containers"][0]["image"]);
            assert_eq!(
                container["command"],
                json!([program, "--config-dir", "/etc/glance/glance.conf.d"])
            );
            assert_eq!(
                container["securityContext"],
                api_pod["containers"][0]["securityContext"]
            );
            assert_eq!(
                container["resources"],
                api_pod["containers"][0]["resources"]
            );
            assert_eq!(pod["securityContext"], api_pod["securityContext"]);
            assert_eq!(pod["nodeSelector"], api_pod["nodeSelector"]);
            assert_eq!(pod["tolerations"], api_pod["tolerations"]);
            assert_eq!(pod["restartPolicy"], json!("OnFailure"));
            // Every volume and mount of the job is the API's, byte for byte, except the
            // cache volume: the API pod has it from the claim template, the job names the
            // claim made from it for its replica. The storage volume is left out.
            let volumes = pod["volumes"].as_array().expect("volumes");
            let names: Vec<&str> = volumes.iter().filter_map(|v| v["name"].as_str()).collect();
            assert_eq!(names, vec!["config", "image-cache", "tmp"]);
            for volume in volumes {
                if volume["name"] == template["metadata"]["name"] {
                    assert_eq!(
                        volume["persistentVolumeClaim"],
                        json!({"claimName": format!("image-cache-{}-api-{ordinal}", g.name)})
                    );
                } else {
                    assert!(api_volumes.contains(volume), "{volume}");
                }
            }
            let mounts = container["volumeMounts"].as_array().expect("mounts");
            assert!(mounts.iter().all(|m| api_mounts.contains(m)), "{mounts:?}");
            // On replica `ordinal`'s node, whatever the access mode: a ReadWriteOnce volume
            // attaches there only, and the job must see what that replica cached.
            let selector = &pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                [0];
            assert_eq!(
                selector,
                &json!({
                    "labelSelector": {"matchLabels": {
                        POD_NAME_LABEL: format!("{}-api-{ordinal}", g.name),
                    }},
                    "topologyKey": "kubernetes.io/hostname",
                }),
                "{fixture}"
            );
            // ... and that is the name the StatefulSet gives its pod `ordinal`.
            assert_eq!(
                selector["labelSelector"]["matchLabels"][POD_NAME_LABEL],
                json!(format!(
                    "{}-{ordinal}",
                    d["metadata"]["name"].as_str().expect("name")
                ))
            );
        }
    }
}

#[test]
fn shared_fixture_passes_image_scheduling_and_resources_to_every_pod() {
    let c = build(&valid("shared.yaml"), &Observed::default());
    let d = to_json(&c.statefulset);
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(
        pod["containers"][0]["image"],
        json!("registry.example/glance:2026.1")
    );
    assert_eq!(
        pod["nodeSelector"],
        json!({"node-role.kubernetes.io/glance": ""})
    );
    assert_eq!(pod["tolerations"][0]["key"], json!("dedicated"));
    assert_eq!(
        pod["containers"][0]["resources"]["limits"]["memory"],
        json!("2Gi")
    );
    let conf = secret_text(&c, RENDERED_KEY);
    assert!(conf.contains("image_cache_driver = xattr\n"));
    assert!(conf.contains("image_cache_stall_time = 3600\n"));
    assert!(conf.contains("image_cache_max_size = 53687091200\n"));
}

#[test]
fn service_exposes_port_9292_of_the_api_pods() {
    let c = seed_children();
    let s = to_json(&c.service);
    assert_eq!(
        s["spec"],
        json!({
            "selector": {
                "app.kubernetes.io/name": "glance",
                "app.kubernetes.io/instance": "glance",
                "app.kubernetes.io/component": "api",
            },
            "ports": [{"name": "http", "port": 9292, "targetPort": "http", "protocol": "TCP"}],
        })
    );
    let d = to_json(&c.statefulset);
    assert_eq!(d["spec"]["selector"]["matchLabels"], s["spec"]["selector"]);
}

/// A customServiceConfigSecrets Secret as the operator reads it.
fn config_secret_of(name: &str, data: &[(&str, &str)]) -> ConfigSecret {
    ConfigSecret {
        name: name.to_owned(),
        data: data
            .iter()
            .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
            .collect(),
    }
}

const CEPH_KEYS: &str =
    "[ceph]\ns3_store_access_key = AKIA-FROM-SECRET\ns3_store_secret_key = from-secret\n";

/// The seed Glance naming two Secrets, `ceph-keys` (keys `s3.conf` and `tuning`) and
/// `overrides` (key `z.conf`), with the first carrying `keys` as its s3.conf.
fn with_config_secrets(keys: &str) -> (Children, Vec<ConfigSecret>) {
    let mut g = valid("seed.yaml");
    g.custom_config = "[DEFAULT]\ndebug = true\n[ceph]\ns3_store_access_key = from-custom\ns3_store_bucket = glance\n".to_owned();
    g.config_secrets = vec!["ceph-keys".to_owned(), "overrides".to_owned()];
    let extra = vec![
        config_secret_of(
            "ceph-keys",
            &[
                ("s3.conf", keys),
                ("tuning", "[ceph]\ns3_store_thread_pools = 4\n"),
            ],
        ),
        config_secret_of(
            "overrides",
            &[("z.conf", "[ceph]\ns3_store_thread_pools = 8\n")],
        ),
    ];
    let observed = Observed {
        database_connection: Some(DB_URL.to_owned()),
        config_secrets: extra.clone(),
        ..Observed::default()
    };
    (build(&g, &observed), extra)
}

#[test]
fn config_secret_keys_become_numbered_conf_files() {
    assert_eq!(
        extra_config_file(0, "ceph-keys", "s3.conf"),
        "02-ceph-keys-s3.conf"
    );
    assert_eq!(
        extra_config_file(0, "ceph-keys", "credentials"),
        "02-ceph-keys-credentials.conf"
    );
    assert_eq!(extra_config_file(1, "a.b", "x.ini"), "03-a.b-x.ini.conf");
    assert_eq!(extra_config_file(15, "last", "k"), "17-last-k.conf");
}

#[test]
fn config_secrets_are_projected_after_01_custom_conf_into_every_pod() {
    let (c, _) = with_config_secrets(CEPH_KEYS);
    let expected_volume = json!({
        "name": "config",
        "projected": {
            "defaultMode": 0o440,
            "sources": [
                {"secret": {"name": "glance-config"}},
                {"secret": {"name": "ceph-keys", "items": [
                    {"key": "s3.conf", "path": "02-ceph-keys-s3.conf"},
                    {"key": "tuning", "path": "02-ceph-keys-tuning.conf"},
                ]}},
                {"secret": {"name": "overrides", "items": [
                    {"key": "z.conf", "path": "03-overrides-z.conf"},
                ]}},
            ],
        },
    });
    let d = to_json(&c.statefulset);
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["volumes"][0], expected_volume);
    // One directory, mounted the same way by glance-api and by db-sync.
    let config_mount = json!({"name": "config", "mountPath": CONFIG_DIR, "readOnly": true});
    assert_eq!(pod["containers"][0]["volumeMounts"][0], config_mount);
    let job = to_json(c.db_sync.as_ref().expect("a db-sync Job"));
    let job_pod = &job["spec"]["template"]["spec"];
    assert_eq!(job_pod["volumes"][0], expected_volume);
    assert_eq!(job_pod["containers"][0]["volumeMounts"][0], config_mount);
    // The cache jobs read the very same files.
    let cache = c.cache.as_ref().expect("cache on");
    assert_eq!(cache.cronjobs.len(), 2);
    for cronjob in &cache.cronjobs {
        let job_pod = &to_json(cronjob)["spec"]["jobTemplate"]["spec"]["template"]["spec"];
        assert_eq!(job_pod["volumes"][0], expected_volume);
        assert_eq!(job_pod["containers"][0]["volumeMounts"][0], config_mount);
    }

    // Every file is a *.conf file, and name order (what --config-dir reads) is
    // 00-config.conf, 01-custom.conf, then the Secrets in list order.
    let mut files: Vec<String> = c
        .config
        .data
        .as_ref()
        .expect("data")
        .keys()
        .cloned()
        .collect();
    for source in expected_volume["projected"]["sources"]
        .as_array()
        .expect("sources")
    {
        for item in source["secret"]["items"].as_array().into_iter().flatten() {
            files.push(item["path"].as_str().expect("path").to_owned());
        }
    }
    assert!(files.iter().all(|f| f.ends_with(".conf")), "{files:?}");
    let mut sorted = files.clone();
    sorted.sort();
    assert_eq!(sorted, files);
    assert_eq!(&files[..2], [RENDERED_KEY, CUSTOM_KEY]);
}

#[test]
fn config_secret_files_override_custom_service_config_when_read_like_glance_api() {
    let (c, extra) = with_config_secrets(CEPH_KEYS);
    // Lay the projected volume out as the kubelet does, then load it with --config-dir.
    let dir = tempfile::tempdir().expect("tempdir");
    for (key, value) in c.config.data.as_ref().expect("data") {
        std::fs::write(dir.path().join(key), &value.0).expect("write");
    }
    for (position, secret) in extra.iter().enumerate() {
        for (key, value) in &secret.data {
            let file = extra_config_file(position, &secret.name, key);
            std::fs::write(dir.path().join(file), &value.0).expect("write");
        }
    }
    let conf = Config::load(&ConfigSources {
        files: vec![],
        dirs: vec![dir.path().to_path_buf()],
    })
    .expect("loads");
    assert_eq!(
        conf.get("ceph", "s3_store_access_key"),
        Some("AKIA-FROM-SECRET")
    );
    assert_eq!(conf.get("ceph", "s3_store_secret_key"), Some("from-secret"));
    assert_eq!(
        conf.get("ceph", "s3_store_bucket"),
        Some("glance"),
        "customServiceConfig still applies"
    );
    assert_eq!(
        conf.get("ceph", "s3_store_thread_pools"),
        Some("8"),
        "a later Secret wins"
    );
    assert_eq!(conf.get("DEFAULT", "debug"), Some("true"));
    assert_eq!(conf.get("DEFAULT", "bind_port"), Some("9292"));
}

#[test]
fn a_config_secret_change_changes_the_config_hash_annotation() {
    let annotation = |c: &Children| {
        to_json(&c.statefulset)["spec"]["template"]["metadata"]["annotations"]
            [CONFIG_HASH_ANNOTATION]
            .clone()
    };
    let (first, extra) = with_config_secrets(CEPH_KEYS);
    assert_eq!(
        annotation(&first),
        json!(config_hash_with_secrets(&first.config, &extra))
    );
    let (again, _) = with_config_secrets(CEPH_KEYS);
    assert_eq!(
        annotation(&first),
        annotation(&again),
        "same data, same hash"
    );
    let (rotated, _) = with_config_secrets(&CEPH_KEYS.replace("from-secret", "rotated"));
    assert_eq!(
        first.config, rotated.config,
        "the keys never reach the config Secret"
    );
    assert_ne!(
        annotation(&first),
        annotation(&rotated),
        "a rotated key rolls the pods"
    );
    // Without customServiceConfigSecrets the hash is the config Secret's alone, as before.
    let plain = seed_children();
    assert_eq!(annotation(&plain), json!(config_hash(&plain.config)));
    assert_eq!(
        config_hash_with_secrets(&plain.config, &[]),
        config_hash(&plain.config)
    );
    assert_ne!(annotation(&first), annotation(&plain));
}

#[test]
fn without_config_secrets_the_config_volume_is_the_secret_itself() {
    let d = to_json(&seed_children().statefulset);
    assert_eq!(
        d["spec"]["template"]["spec"]["volumes"][0],
        json!({"name": "config", "secret": {"secretName": "glance-config", "defaultMode": 0o440}})
    );
    // A named Secret without keys adds no source (an empty item list would mean every key).
    let mut g = valid("seed.yaml");
    g.config_secrets = vec!["empty".to_owned()];
    let observed = Observed {
        config_secrets: vec![config_secret_of("empty", &[])],
        ..Observed::default()
    };
    let d = to_json(&build(&g, &observed).statefulset);
    assert_eq!(
        d["spec"]["template"]["spec"]["volumes"][0]["projected"]["sources"],
        json!([{"secret": {"name": "glance-config"}}])
    );
}

/// The volumes of the StatefulSet's pods, as JSON.
fn pod_volumes(statefulset: &StatefulSet) -> Value {
    to_json(statefulset)["spec"]["template"]["spec"]["volumes"].clone()
}

#[test]
fn the_storage_volume_follows_what_the_replicas_share_and_keeps_its_access_modes() {
    let observed = Observed {
        database_connection: Some(DB_URL.to_owned()),
        ..Observed::default()
    };
    let mounts_storage = |c: &Children| {
        pod_volumes(&c.statefulset)
            .to_string()
            .contains("glance-storage")
    };
    // One replica: ReadWriteOnce, mounted (images, and SQLite without a database).
    let one = build(&seed_with(1, true), &observed);
    assert_eq!(
        to_json(&one.storage)["spec"]["accessModes"],
        json!(["ReadWriteOnce"])
    );
    assert!(mounts_storage(&one));
    // Three sharing the file store on it: ReadWriteMany.
    let three = build(&seed_with(3, true), &observed);
    assert_eq!(
        to_json(&three.storage)["spec"]["accessModes"],
        json!(["ReadWriteMany"])
    );
    assert!(mounts_storage(&three));
    // Three with only a remote store: nothing to share, so no pod mounts it.
    let mut s3 = glance("seed.yaml");
    s3.spec.glance_api.replicas = 3;
    s3.spec.custom_service_config = Some(
        "[DEFAULT]\nenabled_backends = ceph:s3\n[glance_store]\ndefault_backend = ceph\n".into(),
    );
    let remote = build(&validate(&s3, DEFAULT_IMAGE).expect("valid"), &observed);
    assert_eq!(
        to_json(&remote.storage)["spec"]["accessModes"],
        json!(["ReadWriteOnce"])
    );
    assert!(
        !mounts_storage(&remote),
        "{}",
        pod_volumes(&remote.statefulset)
    );
    // An existing claim keeps the access modes it was made with: they cannot change.
    let made_for_one = Observed {
        storage_access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
        ..observed.clone()
    };
    let scaled = build(&seed_with(3, true), &made_for_one);
    assert_eq!(
        to_json(&scaled.storage)["spec"]["accessModes"],
        json!(["ReadWriteOnce"])
    );
}

const KEYSTONE_USER: &str = "glance-service-user";
const KEYSTONE_PASSWORD: &str = "s3cr3t-Keystone-pw";

/// The seed Glance (cache on or off) with `keystone` as its spec.keystone.
fn seed_with_keystone(keystone: Value, cache: bool) -> ValidGlance {
    let mut g = glance("seed.yaml");
    g.spec.keystone = Some(serde_json::from_value(keystone).expect("spec.keystone"));
    if !cache {
        g.spec.image_cache_size = None;
    }
    validate(&g, DEFAULT_IMAGE).expect("valid")
}

fn minimal_keystone() -> Value {
    json!({"authUrl": "http://keystone-public.openstack.svc:5000/v3", "secret": "glance-keystone"})
}

/// What the operator reads from the spec.keystone Secret: its two keys.
fn keystone_credentials(user_key: &str, password_key: &str, password: &str) -> ConfigSecret {
    config_secret_of(
        "glance-keystone",
        &[(user_key, KEYSTONE_USER), (password_key, password)],
    )
}

/// The children of `glance` with the database URL and the Keystone credentials read.
fn keystone_children(glance: &ValidGlance, password: &str) -> Children {
    let k = glance.keystone.as_ref().expect("spec.keystone");
    let observed = Observed {
        database_connection: Some(DB_URL.to_owned()),
        keystone_credentials: Some(keystone_credentials(
            &k.username_key,
            &k.password_key,
            password,
        )),
        ..Observed::default()
    };
    build(glance, &observed)
}

#[test]
fn keystone_renders_the_authtoken_section_and_the_keystone_flavor() {
    let full = json!({
        "authUrl": "http://keystone-internal.openstack.svc:5000/v3",
        "wwwAuthenticateUri": "https://keystone.example.com/v3",
        "secret": "glance-keystone",
        "projectName": "service",
        "userDomainName": "users",
        "projectDomainName": "Default",
        "region": "RegionOne",
        "interface": "internal",
    });
    let conf = secret_text(
        &keystone_children(&seed_with_keystone(full, true), KEYSTONE_PASSWORD),
        RENDERED_KEY,
    );
    let expected_tail = "\
[database]
connection = mysql+pymysql://glance:secret@openstack.openstack.svc/glance

[keystone_authtoken]
auth_type = password
auth_url = http://keystone-internal.openstack.svc:5000/v3
www_authenticate_uri = https://keystone.example.com/v3
project_name = service
user_domain_name = users
project_domain_name = Default
region_name = RegionOne
interface = internal

[paste_deploy]
flavor = keystone+cachemanagement
";
    assert!(conf.ends_with(expected_tail), "{conf}");

    // The minimal spec.keystone: the defaults, www_authenticate_uri = auth_url, and no
    // region_name or interface (keystonemiddleware's own defaults apply).
    let minimal = seed_with_keystone(minimal_keystone(), true);
    let conf = secret_text(
        &keystone_children(&minimal, KEYSTONE_PASSWORD),
        RENDERED_KEY,
    );
    let section: Vec<&str> = conf
        .split("\n\n")
        .find(|s| s.starts_with("[keystone_authtoken]"))
        .expect("section")
        .lines()
        .collect();
    assert_eq!(
        section,
        [
            "[keystone_authtoken]",
            "auth_type = password",
            "auth_url = http://keystone-public.openstack.svc:5000/v3",
            "www_authenticate_uri = http://keystone-public.openstack.svc:5000/v3",
            "project_name = service",
            "user_domain_name = Default",
            "project_domain_name = Default",
        ]
    );

    // The flavor keeps the choice made without Keystone, prefixed: cachemanagement while
    // the cache is on, and no cache middleware while it is off.
    for (keystone, cache, flavor) in [
        (true, true, Some("keystone+cachemanagement")),
        (true, false, Some("keystone")),
        (false, true, Some("cachemanagement")),
        (false, false, None),
    ] {
        let g = if keystone {
            seed_with_keystone(minimal_keystone(), cache)
        } else {
            seed_with(1, cache)
        };
        assert_eq!(
            paste_flavor(&g),
            flavor,
            "keystone {keystone}, cache {cache}"
        );
        let conf = secret_text(&build(&g, &Observed::default()), RENDERED_KEY);
        let rendered: Vec<&str> = conf
            .lines()
            .filter_map(|l| l.strip_prefix("flavor = "))
            .collect();
        assert_eq!(rendered, flavor.into_iter().collect::<Vec<_>>());
        assert_eq!(
            conf.contains("[keystone_authtoken]"),
            keystone,
            "keystone {keystone}, cache {cache}: {conf}"
        );
    }
}

/// The glance-api container of a StatefulSet, as JSON.
fn api_container(children: &Children) -> Value {
    to_json(&children.statefulset)["spec"]["template"]["spec"]["containers"][0].clone()
}

#[test]
fn keystone_credentials_reach_glance_api_only_through_secret_key_refs() {
    let mut keystone = minimal_keystone();
    keystone["usernameKey"] = json!("user");
    keystone["passwordKey"] = json!("pass");
    let g = seed_with_keystone(keystone, true);
    let c = keystone_children(&g, KEYSTONE_PASSWORD);
    let env = api_container(&c)["env"].clone();
    assert_eq!(
        env,
        json!([
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {
                "name": "OS_DEFAULT__WORKER_SELF_REFERENCE_URL",
                "value": "http://$(POD_NAME).glance-api-headless.openstack.svc:9292",
            },
            {
                "name": "OS_KEYSTONE_AUTHTOKEN__USERNAME",
                "valueFrom": {"secretKeyRef": {"name": "glance-keystone", "key": "user"}},
            },
            {
                "name": "OS_KEYSTONE_AUTHTOKEN__PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": "glance-keystone", "key": "pass"}},
            },
        ])
    );
    assert_eq!(KEYSTONE_USERNAME_ENV, "OS_KEYSTONE_AUTHTOKEN__USERNAME");
    assert_eq!(KEYSTONE_PASSWORD_ENV, "OS_KEYSTONE_AUTHTOKEN__PASSWORD");
    // Only glance-api authenticates requests: the db-sync Job and the cache jobs get no
    // credentials.
    let job = to_json(c.db_sync.as_ref().expect("a db-sync Job"));
    assert!(!job.to_string().contains("glance-keystone"), "{job}");
    for cronjob in &c.cache.as_ref().expect("cache on").cronjobs {
        let cronjob = to_json(cronjob);
        assert!(
            !cronjob.to_string().contains("glance-keystone"),
            "{cronjob}"
        );
    }
    // With SQLite, the init container gets none either.
    let mut sqlite = seed_with_keystone(minimal_keystone(), false);
    sqlite.database_instance = None;
    let pod =
        to_json(&build(&sqlite, &Observed::default()).statefulset)["spec"]["template"]["spec"]
            .clone();
    assert_eq!(pod["initContainers"][0]["name"], json!("db-sync"));
    assert!(pod["initContainers"][0].get("env").is_none(), "{pod}");
    assert_eq!(
        pod["containers"][0]["env"].as_array().map(|e| e.len()),
        Some(4)
    );

    // Neither the user name nor the password is in any object the operator applies, in
    // plain text or base64.
    let mut objects: Vec<Value> = vec![
        to_json(&c.config),
        to_json(&c.storage),
        to_json(&c.service),
        to_json(&c.headless_service),
        to_json(&c.statefulset),
    ];
    objects.extend(c.db_sync.iter().map(to_json));
    objects.extend(
        c.cache
            .iter()
            .flat_map(|cache| cache.cronjobs.iter().map(to_json)),
    );
    for secret in [KEYSTONE_USER, KEYSTONE_PASSWORD] {
        let base64 = json!(ByteString(secret.as_bytes().to_vec()));
        let base64 = base64.as_str().expect("base64");
        for object in &objects {
            let text = object.to_string();
            assert!(
                !text.contains(secret) && !text.contains(base64),
                "{secret} leaked into {text}"
            );
        }
    }
}

#[test]
fn glance_api_reads_the_keystone_options_from_its_files_and_environment() {
    let full = json!({
        "authUrl": "http://keystone-internal.openstack.svc:5000/v3",
        "wwwAuthenticateUri": "https://keystone.example.com/v3",
        "secret": "glance-keystone",
        "usernameKey": "user",
        "region": "RegionTwo",
        "interface": "public",
    });
    let g = seed_with_keystone(full, true);
    let c = keystone_children(&g, KEYSTONE_PASSWORD);
    // The config directory as the kubelet lays it out.
    let dir = tempfile::tempdir().expect("tempdir");
    for (key, value) in c.config.data.as_ref().expect("data") {
        std::fs::write(dir.path().join(key), &value.0).expect("write");
    }
    let mut conf = Config::load(&ConfigSources {
        files: vec![],
        dirs: vec![dir.path().to_path_buf()],
    })
    .expect("loads");
    // The container's environment as the kubelet resolves it from the Secret.
    let secret = keystone_credentials("user", "password", KEYSTONE_PASSWORD);
    let env: Vec<(String, String)> = api_container(&c)["env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(|e| {
            let name = e["name"].as_str()?.to_owned();
            let reference = &e["valueFrom"]["secretKeyRef"];
            let key = reference["key"].as_str()?;
            assert_eq!(reference["name"], json!(secret.name));
            let value = String::from_utf8(secret.data[key].0.clone()).expect("utf-8");
            Some((name, value))
        })
        .collect();
    assert_eq!(env.len(), 2);
    conf.merge(Config::from_env(env));
    let options = AuthTokenOptions::from_config(&conf).expect("glance-api accepts the section");
    assert_eq!(
        options.auth_url,
        "http://keystone-internal.openstack.svc:5000/v3"
    );
    assert_eq!(
        options.www_authenticate_uri.as_deref(),
        Some("https://keystone.example.com/v3")
    );
    assert_eq!(
        options.user,
        NamedRef::Name {
            name: KEYSTONE_USER.to_owned(),
            domain: DomainRef::Name("Default".to_owned()),
        }
    );
    assert_eq!(options.password.expose(), KEYSTONE_PASSWORD);
    assert_eq!(
        options.project,
        Some(NamedRef::Name {
            name: "service".to_owned(),
            domain: DomainRef::Name("Default".to_owned()),
        })
    );
    assert_eq!(options.region_name.as_deref(), Some("RegionTwo"));
    assert_eq!(options.interface, Interface::Public);
    assert_eq!(
        conf.get("paste_deploy", "flavor"),
        Some("keystone+cachemanagement")
    );
}

#[test]
fn a_keystone_credential_change_rolls_the_pods() {
    let annotation = |c: &Children| {
        to_json(&c.statefulset)["spec"]["template"]["metadata"]["annotations"]
            [CONFIG_HASH_ANNOTATION]
            .clone()
    };
    let g = seed_with_keystone(minimal_keystone(), true);
    let first = keystone_children(&g, KEYSTONE_PASSWORD);
    let again = keystone_children(&g, KEYSTONE_PASSWORD);
    let rotated = keystone_children(&g, "rotated-pw");
    assert_eq!(
        annotation(&first),
        annotation(&again),
        "same data, same hash"
    );
    assert_eq!(
        first.config, rotated.config,
        "the password never reaches the config Secret"
    );
    assert_ne!(
        annotation(&first),
        annotation(&rotated),
        "a rotated password rolls the pods"
    );
    // The same hash function as for customServiceConfigSecrets, over the credentials.
    let credentials = keystone_credentials("username", "password", KEYSTONE_PASSWORD);
    assert_eq!(
        annotation(&first),
        json!(config_hash_with_secrets(&first.config, [&credentials]))
    );
    assert_ne!(annotation(&first), json!(config_hash(&first.config)));
}

#[test]
fn the_authenticated_condition_says_whether_requests_need_a_token() {
    let without = authentication_check(&valid("seed.yaml"));
    assert_eq!(
        (without.type_, without.ok, without.reason, without.warning),
        ("Authenticated", false, "Unauthenticated", false)
    );
    assert_eq!(
        without.message,
        "spec.keystone is not set: the Image API serves every request without authentication"
    );
    let with = authentication_check(&seed_with_keystone(minimal_keystone(), true));
    assert_eq!(
        (with.type_, with.ok, with.reason),
        ("Authenticated", true, "Keystone")
    );
    assert_eq!(
        with.message,
        "Image API requests need a Keystone token, checked with http://keystone-public.openstack.svc:5000/v3 (keystone.authUrl)"
    );
    // customServiceConfig's flavor is the one glance-api reads: the condition follows it.
    let mut overridden = seed_with_keystone(minimal_keystone(), true);
    overridden.custom_config = "[paste_deploy]\nflavor = cachemanagement\n".to_owned();
    let check = authentication_check(&overridden);
    assert_eq!(
        (check.ok, check.reason),
        (false, "FlavorOverridden"),
        "{}",
        check.message
    );
    assert!(
        check.message.contains("\"cachemanagement\""),
        "{}",
        check.message
    );
    let mut custom = valid("seed.yaml");
    custom.custom_config = "[paste_deploy]\nflavor = keystone+cachemanagement\n".to_owned();
    let check = authentication_check(&custom);
    assert_eq!(
        (check.ok, check.reason),
        (true, "CustomConfig"),
        "{}",
        check.message
    );
    // Without spec.keystone: no section, no flavor naming Keystone, no credentials.
    let c = build(&valid("seed.yaml"), &Observed::default());
    let conf = secret_text(&c, RENDERED_KEY);
    assert!(!conf.contains("keystone"), "{conf}");
    assert!(
        !to_json(&c.statefulset).to_string().contains("KEYSTONE"),
        "no credentials in the environment"
    );
}

/// The configuration glance-api reads in a pod of `children`: its config directory laid
/// out as the kubelet projects it (the config Secret, then the files of `extra`), loaded
/// with --config-dir.
fn loaded_config(children: &Children, extra: &[ConfigSecret]) -> Config {
    let dir = tempfile::tempdir().expect("tempdir");
    for (key, value) in children.config.data.as_ref().expect("data") {
        std::fs::write(dir.path().join(key), &value.0).expect("write");
    }
    for (position, secret) in extra.iter().enumerate() {
        for (key, value) in &secret.data {
            let file = extra_config_file(position, &secret.name, key);
            std::fs::write(dir.path().join(file), &value.0).expect("write");
        }
    }
    Config::load(&ConfigSources {
        files: vec![],
        dirs: vec![dir.path().to_path_buf()],
    })
    .expect("loads")
}

fn grace_period(children: &Children) -> i64 {
    to_json(&children.statefulset)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_i64()
        .expect("terminationGracePeriodSeconds is set")
}

#[test]
fn the_pods_grace_period_outlasts_the_drain_glance_api_reads() {
    use glance_operator::api::settings::{GRACEFUL_SHUTDOWN_TIMEOUT, graceful_shutdown_timeout};
    use glance_operator::resources::statefulset::{SHUTDOWN_GRACE_MARGIN, UNLIMITED_DRAIN_GRACE};

    // The rendered file states the drain, and the grace period outlasts it.
    let children = seed_children();
    let rendered = Config::from_str(RENDERED_KEY, &secret_text(&children, RENDERED_KEY))
        .expect("rendered config parses");
    let drain = rendered
        .get("DEFAULT", GRACEFUL_SHUTDOWN_TIMEOUT)
        .expect("00-config.conf sets graceful_shutdown_timeout");
    let drain: u64 = drain.parse().expect("whole seconds");
    assert_eq!(
        graceful_shutdown_timeout(&loaded_config(&children, &[])).expect("valid"),
        drain,
        "customServiceConfig of the seed leaves it"
    );
    let grace = grace_period(&children);
    assert!(
        grace > i64::try_from(drain).expect("small"),
        "terminationGracePeriodSeconds {grace} > graceful_shutdown_timeout {drain}"
    );
    assert_eq!(grace, (drain + SHUTDOWN_GRACE_MARGIN) as i64);

    // customServiceConfig and the customServiceConfigSecrets files override it: the
    // grace period follows what glance-api reads last.
    let build_with = |custom: &str, extra: Vec<ConfigSecret>| {
        let mut g = valid("seed.yaml");
        g.custom_config = custom.to_owned();
        g.config_secrets = extra.iter().map(|s| s.name.clone()).collect();
        let observed = Observed {
            config_secrets: extra.clone(),
            ..Observed::default()
        };
        let children = build(&g, &observed);
        let drain = graceful_shutdown_timeout(&loaded_config(&children, &extra)).ok();
        (drain, grace_period(&children))
    };
    let longer = "[DEFAULT]\ngraceful_shutdown_timeout = 300\n";
    assert_eq!(build_with(longer, vec![]), (Some(300), 315));
    let from_secret = vec![
        config_secret_of(
            "a",
            &[("x.conf", "[DEFAULT]\ngraceful_shutdown_timeout = 100\n")],
        ),
        config_secret_of(
            "b",
            &[("y", "[DEFAULT]\ngraceful_shutdown_timeout = 120\n")],
        ),
    ];
    assert_eq!(
        build_with(longer, from_secret),
        (Some(120), 135),
        "the last Secret wins"
    );
    // 0 waits for every request: the longest grace period the operator gives.
    let unlimited = "[DEFAULT]\ngraceful_shutdown_timeout = 0\n";
    assert_eq!(
        build_with(unlimited, vec![]),
        (Some(0), UNLIMITED_DRAIN_GRACE)
    );
    // A value glance-api refuses (it does not start) leaves the default's grace period.
    let (refused, grace) = build_with("[DEFAULT]\ngraceful_shutdown_timeout = -5\n", vec![]);
    assert_eq!(refused, None);
    assert_eq!(grace, (drain + SHUTDOWN_GRACE_MARGIN) as i64);
}

#[test]
fn imports_stage_on_the_storage_volume_or_in_the_pods_tmp_without_one() {
    use glance_operator::crd::validate::StorageUse;
    use glance_operator::resources::config::render_config;
    let mut glance = valid("seed.yaml");
    let staging = |text: &str| {
        text.lines()
            .skip_while(|l| *l != "[os_glance_staging_store]")
            .nth(1)
            .map(str::to_owned)
    };
    let mounted = render_config(&glance, Some(DB_URL));
    assert_eq!(
        staging(&mounted).as_deref(),
        Some("filesystem_store_datadir = /var/lib/glance/os_glance_staging_store")
    );
    // Several replicas on remote stores only mount no storage volume: the pod's /tmp.
    glance.storage_use = StorageUse::Unmounted;
    let unmounted = render_config(&glance, Some(DB_URL));
    assert_eq!(
        staging(&unmounted).as_deref(),
        Some("filesystem_store_datadir = /tmp/os_glance_staging_store")
    );
    let children = build(&glance, &Observed::default());
    let pod = serde_json::to_value(&children.statefulset).expect("json");
    let mounts = &pod["spec"]["template"]["spec"]["containers"][0]["volumeMounts"];
    assert!(
        mounts
            .as_array()
            .expect("mounts")
            .iter()
            .any(|m| m["mountPath"] == "/tmp"),
        "{mounts}"
    );
}
