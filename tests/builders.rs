//! Pure builder tests, starting from the YAML fixtures.

mod common;

use common::{DEFAULT_IMAGE, valid, with_cache_size};
use glance_operator::conf::{Config, ConfigSources};
use glance_operator::crd::validate::Size;
use glance_operator::resources::config::{
    CONFIG_DIR, CUSTOM_KEY, ConfigSecret, RENDERED_KEY, config_hash, config_hash_with_secrets,
    config_secret, extra_config_file,
};
use glance_operator::resources::deployment::CONFIG_HASH_ANNOTATION;
use glance_operator::resources::{Children, Observed, build};
use k8s_openapi::ByteString;
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

#[test]
fn seed_renders_the_exact_config() {
    let expected = "\
[DEFAULT]
bind_host = 0.0.0.0
bind_port = 9292
enabled_backends = default_backend:file
image_cache_dir = /var/lib/glance/image-cache
image_cache_max_size = 10000000000
image_cache_stall_time = 86400
image_cache_driver = sqlite

[glance_store]
default_backend = default_backend

[default_backend]
filesystem_store_datadir = /var/lib/glance/images

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
        // The PVC asks for the quantity as written.
        let pvc = to_json(&children.cache.as_ref().expect("cache on").pvc);
        assert_eq!(pvc["spec"]["resources"]["requests"]["storage"], json!(size));
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
    let volumes = to_json(&children.deployment)["spec"]["template"]["spec"]["volumes"].clone();
    assert!(!volumes.to_string().contains("image-cache"), "{volumes}");
    assert_eq!(
        to_json(&children.storage)["spec"]["resources"]["requests"]["storage"],
        json!("10G")
    );
}

#[test]
fn every_child_has_its_name_labels_and_controller_owner() {
    let c = seed_children();
    let cache = c.cache.as_ref().expect("cache on");
    let children: Vec<(Value, &str, &str)> = vec![
        (to_json(&c.config), "glance-config", "config"),
        (to_json(&c.storage), "glance-storage", "storage"),
        (to_json(&cache.pvc), "glance-image-cache", "image-cache"),
        (
            to_json(&cache.pruner),
            "glance-cache-pruner",
            "cache-pruner",
        ),
        (
            to_json(&cache.cleaner),
            "glance-cache-cleaner",
            "cache-cleaner",
        ),
        (to_json(&c.service), "glance-api", "api"),
        (to_json(&c.deployment), "glance-api", "api"),
    ];
    for (object, name, component) in children {
        let meta = &object["metadata"];
        assert_eq!(meta["name"], json!(name));
        assert_eq!(meta["namespace"], json!("openstack"));
        assert_eq!(
            meta["labels"],
            json!({
                "app.kubernetes.io/name": "glance",
                "app.kubernetes.io/instance": "glance",
                "app.kubernetes.io/component": component,
                "app.kubernetes.io/managed-by": "glance-operator",
            }),
            "{name}"
        );
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
    let cache = to_json(&c.cache.as_ref().expect("cache on").pvc);
    assert_eq!(
        cache["spec"],
        json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10G"}}})
    );

    let shared = build(&valid("shared.yaml"), &Observed::default());
    let storage = to_json(&shared.storage);
    assert_eq!(storage["spec"]["accessModes"], json!(["ReadWriteMany"]));
    assert_eq!(storage["spec"]["storageClassName"], json!("cephfs"));
    let cache = to_json(&shared.cache.as_ref().expect("cache on").pvc);
    assert_eq!(cache["spec"]["accessModes"], json!(["ReadWriteMany"]));
    assert_eq!(
        cache["spec"]["resources"]["requests"]["storage"],
        json!("50Gi")
    );
}

#[test]
fn a_pvc_never_shrinks_but_grows() {
    let g = with_cache_size("seed.yaml", "5G");
    let larger = Observed {
        cache_request: Some(Size {
            quantity: "10G".into(),
            bytes: 10_000_000_000,
        }),
        storage_request: Some(Size {
            quantity: "20G".into(),
            bytes: 20_000_000_000,
        }),
        ..Observed::default()
    };
    let children = build(&g, &larger);
    let cache = to_json(&children.cache.as_ref().expect("cache on").pvc);
    assert_eq!(
        cache["spec"]["resources"]["requests"]["storage"],
        json!("10G")
    );
    assert_eq!(
        to_json(&children.storage)["spec"]["resources"]["requests"]["storage"],
        json!("20G")
    );
    // ... while the cache limit follows the spec.
    assert!(secret_text(&children, RENDERED_KEY).contains("image_cache_max_size = 5000000000\n"));

    let smaller = Observed {
        cache_request: Some(Size {
            quantity: "1G".into(),
            bytes: 1_000_000_000,
        }),
        ..Observed::default()
    };
    let children = build(&g, &smaller);
    let cache = to_json(&children.cache.as_ref().expect("cache on").pvc);
    assert_eq!(
        cache["spec"]["resources"]["requests"]["storage"],
        json!("5G")
    );
}

#[test]
fn deployment_is_hardened_probed_and_rolled_by_config_changes() {
    let c = seed_children();
    let d = to_json(&c.deployment);
    let pod = &d["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(d["spec"]["replicas"], json!(1));
    assert_eq!(d["spec"]["strategy"], json!({"type": "Recreate"}));
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

    // glance-manage db_sync runs first, from the same image, with the same config,
    // volumes and hardening: the API never starts on a database without its schema.
    let init = pod["initContainers"].as_array().expect("init containers");
    assert_eq!(init.len(), 1);
    assert_eq!(init[0]["name"], json!("db-sync"));
    assert_eq!(
        init[0]["command"],
        json!(["glance-manage", "--config-dir", "/etc/glance/glance.conf.d"])
    );
    assert_eq!(init[0]["args"], json!(["db_sync"]));
    for same in ["image", "volumeMounts", "securityContext", "resources"] {
        assert_eq!(init[0][same], container[same], "{same}");
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
    let again = to_json(&seed_children().deployment);
    assert_eq!(
        hash,
        &again["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH_ANNOTATION]
    );
}

#[test]
fn rolling_update_only_when_every_volume_is_shared() {
    let d = to_json(&build(&valid("shared.yaml"), &Observed::default()).deployment);
    assert_eq!(d["spec"]["strategy"], json!({"type": "RollingUpdate"}));
    assert_eq!(d["spec"]["replicas"], json!(3));
    let off = to_json(&build(&valid("cache-off.yaml"), &Observed::default()).deployment);
    assert_eq!(
        off["spec"]["strategy"],
        json!({"type": "Recreate"}),
        "storage is ReadWriteOnce"
    );
}

#[test]
fn cronjobs_run_the_cache_tools_from_the_api_image_with_the_same_volumes() {
    for (fixture, affinity) in [("seed.yaml", true), ("shared.yaml", false)] {
        let c = build(&valid(fixture), &Observed::default());
        let d = to_json(&c.deployment);
        let api_pod = &d["spec"]["template"]["spec"];
        let api_volumes = api_pod["volumes"].as_array().expect("volumes").clone();
        let api_mounts = api_pod["containers"][0]["volumeMounts"]
            .as_array()
            .expect("mounts")
            .clone();
        let cache = c.cache.as_ref().expect("cache on");
        for (cronjob, program, schedule) in [
            (
                to_json(&cache.pruner),
                "glance-cache-pruner",
                if affinity {
                    "*/15 * * * *"
                } else {
                    "0 * * * *"
                },
            ),
            (
                to_json(&cache.cleaner),
                "glance-cache-cleaner",
                if affinity { "*/30 * * * *" } else { "@daily" },
            ),
        ] {
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
            // Every volume and mount of the job is the API's, byte for byte; the storage
            // volume is the only one the job leaves out.
            let volumes = pod["volumes"].as_array().expect("volumes");
            let names: Vec<&str> = volumes.iter().filter_map(|v| v["name"].as_str()).collect();
            assert_eq!(names, vec!["config", "image-cache", "tmp"]);
            assert!(
                volumes.iter().all(|v| api_volumes.contains(v)),
                "{volumes:?}"
            );
            let mounts = container["volumeMounts"].as_array().expect("mounts");
            assert!(mounts.iter().all(|m| api_mounts.contains(m)), "{mounts:?}");
            if affinity {
                assert_eq!(
                    pod["affinity"],
                    json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
                        "labelSelector": {"matchLabels": {
                            "app.kubernetes.io/name": "glance",
                            "app.kubernetes.io/instance": "glance",
                            "app.kubernetes.io/component": "api",
                        }},
                        "topologyKey": "kubernetes.io/hostname",
                    }]}})
                );
                // ... and those labels are the API pods' labels.
                let pod_labels = &d["spec"]["template"]["metadata"]["labels"];
                for (k, v) in
                    pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                        [0]["labelSelector"]["matchLabels"]
                        .as_object()
                        .expect("labels")
                {
                    assert_eq!(&pod_labels[k], v);
                }
            } else {
                assert!(
                    pod.get("affinity").is_none(),
                    "ReadWriteMany needs no affinity"
                );
            }
        }
    }
}

#[test]
fn shared_fixture_passes_image_scheduling_and_resources_to_every_pod() {
    let c = build(&valid("shared.yaml"), &Observed::default());
    let d = to_json(&c.deployment);
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
    let d = to_json(&c.deployment);
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
    let d = to_json(&c.deployment);
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["volumes"][0], expected_volume);
    // One directory, mounted the same way by glance-api and by db-sync.
    let config_mount = json!({"name": "config", "mountPath": CONFIG_DIR, "readOnly": true});
    assert_eq!(pod["containers"][0]["volumeMounts"][0], config_mount);
    assert_eq!(pod["initContainers"][0]["volumeMounts"][0], config_mount);
    // The cache jobs read the very same files.
    let cache = c.cache.as_ref().expect("cache on");
    for cronjob in [&cache.pruner, &cache.cleaner] {
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
        to_json(&c.deployment)["spec"]["template"]["metadata"]["annotations"]
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
    let d = to_json(&seed_children().deployment);
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
    let d = to_json(&build(&g, &observed).deployment);
    assert_eq!(
        d["spec"]["template"]["spec"]["volumes"][0]["projected"]["sources"],
        json!([{"secret": {"name": "glance-config"}}])
    );
}
