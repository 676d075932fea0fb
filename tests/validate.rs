//! `validate`: the same rules as the CEL, in Rust, with errors that name the field.

mod common;

use common::{DEFAULT_IMAGE, glance};
use glance_operator::crd::validate::{InvalidSpec, validate};
use glance_operator::crd::{CacheAccessMode, Glance};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

type Edit = Box<dyn FnOnce(&mut Glance)>;

fn error(edit: impl FnOnce(&mut Glance)) -> String {
    let mut g = glance("seed.yaml");
    edit(&mut g);
    validate(&g, DEFAULT_IMAGE)
        .expect_err("invalid")
        .to_string()
}

#[test]
fn errors_name_the_field() {
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|g| g.spec.image_cache_size = Some(Quantity("10GB".into()))),
            "spec.imageCacheSize: \"10GB\" is not a Kubernetes quantity: unknown suffix \"GB\"",
        ),
        (
            Box::new(|g| g.spec.image_cache_size = Some(Quantity(" 10G".into()))),
            "spec.imageCacheSize: \" 10G\" is not a Kubernetes quantity",
        ),
        (
            Box::new(|g| g.spec.image_cache_size = Some(Quantity("-1G".into()))),
            "spec.imageCacheSize: \"-1G\" is negative",
        ),
        (
            Box::new(|g| g.spec.image_cache_size = Some(Quantity("0".into()))),
            "spec.imageCacheSize: must be greater than zero",
        ),
        (
            Box::new(|g| g.spec.image_cache_size = Some(Quantity("1500m".into()))),
            "spec.imageCacheSize: \"1500m\" is not a whole number of bytes",
        ),
        (
            Box::new(|g| g.spec.image_cache_size = Some(Quantity("9Ei".into()))),
            "spec.imageCacheSize: 10376293541461622784 bytes is larger than",
        ),
        (
            Box::new(|g| g.spec.storage_request = Quantity("0Gi".into())),
            "spec.storageRequest: must be greater than zero",
        ),
        (
            Box::new(|g| g.spec.image_cache.pruner_schedule = "hourly".into()),
            "spec.imageCache.prunerSchedule: \"hourly\" is not a cron schedule",
        ),
        (
            Box::new(|g| g.spec.image_cache.cleaner_schedule = "* * * * * *".into()),
            "spec.imageCache.cleanerSchedule",
        ),
        (
            Box::new(|g| g.spec.image_cache.stall_time = 0),
            "spec.imageCache.stallTime: must be at least 1 second",
        ),
        (
            Box::new(|g| g.spec.glance_api.replicas = -1),
            "spec.glanceAPI.replicas: must not be negative",
        ),
        (
            Box::new(|g| {
                g.spec.glance_api.replicas = 2;
                g.spec.database_instance = None;
            }),
            "spec.databaseInstance: glanceAPI.replicas is 2",
        ),
        (
            Box::new(|g| g.spec.glance_api.replicas = 33),
            "spec.glanceAPI.replicas: at most 32 replicas, got 33",
        ),
        (
            Box::new(|g| g.metadata.name = Some("a".repeat(37))),
            "metadata.name: \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\" is 37 characters; with 1 replicas at most 36 leave room for <name>-cache-cleaner-<replica> (CronJob names are at most 52)",
        ),
        (
            Box::new(|g| {
                g.metadata.name = Some("a".repeat(37));
                g.spec.glance_api.replicas = 10;
            }),
            "metadata.name: \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\" is 37 characters; with 10 replicas at most 36",
        ),
        (
            Box::new(|g| {
                g.metadata.name = Some("a".repeat(36));
                g.spec.glance_api.replicas = 11;
            }),
            "metadata.name: \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\" is 36 characters; with 11 replicas at most 35",
        ),
        (
            Box::new(|g| {
                g.spec.glance_api.replicas = 2;
                g.spec.custom_service_config =
                    Some("[default_backend]\nfilesystem_store_datadir = /tmp/images\n".into());
            }),
            "spec.customServiceConfig: glanceAPI.replicas is 2, and a file store keeps images at /tmp/images, which is not on the shared storage volume: keep filesystem_store_datadir under /var/lib/glance (outside /var/lib/glance/image-cache), or use a remote store such as s3 for every backend",
        ),
        (
            Box::new(|g| {
                g.spec.glance_api.replicas = 3;
                g.spec.custom_service_config = Some(
                    "[default_backend]\nfilesystem_store_datadir = /var/lib/glance/image-cache/x\n"
                        .into(),
                );
            }),
            "spec.customServiceConfig: glanceAPI.replicas is 3, and a file store keeps images at /var/lib/glance/image-cache/x,",
        ),
        (
            Box::new(|g| {
                g.spec.glance_api.replicas = 3;
                g.spec.custom_service_config = Some(
                    "[DEFAULT]\nenabled_backends = fast:file, ceph:s3\n[glance_store]\ndefault_backend = fast\n[fast]\nfilesystem_store_datadir = /srv/images\n"
                        .into(),
                );
            }),
            "spec.customServiceConfig: glanceAPI.replicas is 3, and a file store keeps images at /srv/images,",
        ),
        (
            Box::new(|g| g.metadata.name = Some("Glance".into())),
            "metadata.name: \"Glance\" must start with a lowercase letter",
        ),
        (
            Box::new(|g| g.metadata.namespace = None),
            "metadata.namespace: missing",
        ),
        (
            Box::new(|g| g.spec.custom_service_config_secrets = vec!["Ceph_Keys".into()]),
            "spec.customServiceConfigSecrets[0]: \"Ceph_Keys\" is not a Secret name: set it to the name of a Secret in this namespace (lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters)",
        ),
        (
            Box::new(|g| g.spec.custom_service_config_secrets = vec!["ok".into(), String::new()]),
            "spec.customServiceConfigSecrets[1]: \"\" is not a Secret name",
        ),
        (
            Box::new(|g| g.spec.custom_service_config_secrets = vec!["-keys".into()]),
            "spec.customServiceConfigSecrets[0]: \"-keys\" is not a Secret name",
        ),
        (
            Box::new(|g| g.spec.custom_service_config_secrets = vec!["keys.".into()]),
            "spec.customServiceConfigSecrets[0]: \"keys.\" is not a Secret name",
        ),
        (
            Box::new(|g| g.spec.custom_service_config_secrets = vec!["a..b".into()]),
            "spec.customServiceConfigSecrets[0]: \"a..b\" is not a Secret name",
        ),
        (
            Box::new(|g| g.spec.custom_service_config_secrets = vec!["a".repeat(254)]),
            "spec.customServiceConfigSecrets[0]: \"aaaa",
        ),
        (
            Box::new(|g| {
                g.spec.custom_service_config_secrets =
                    vec!["keys".into(), "more".into(), "keys".into()];
            }),
            "spec.customServiceConfigSecrets[2]: Secret \"keys\" is already listed; name each Secret once",
        ),
        (
            Box::new(|g| {
                g.spec.custom_service_config_secrets = (0..17).map(|i| format!("s{i}")).collect();
            }),
            "spec.customServiceConfigSecrets: 17 Secrets listed; at most 16 are allowed",
        ),
    ];
    for (edit, expected) in cases {
        let message = error(edit);
        assert!(
            message.starts_with(expected),
            "{message:?} should start with {expected:?}"
        );
    }
}

#[test]
fn valid_specs_parse_to_exact_values() {
    let v = validate(&glance("seed.yaml"), DEFAULT_IMAGE).expect("valid");
    assert_eq!(v.cache.as_ref().map(|c| c.size.bytes), Some(10_000_000_000));
    assert_eq!(v.storage.bytes, 10_000_000_000);
    assert_eq!(v.storage_class, None, "\"\" is the cluster default");
    assert_eq!(v.database_instance.as_deref(), Some("openstack"));
    assert_eq!(v.image, DEFAULT_IMAGE);

    let mut g = glance("seed.yaml");
    g.spec.image_cache_size = Some(Quantity(String::new()));
    assert!(
        validate(&g, DEFAULT_IMAGE).expect("valid").cache.is_none(),
        "\"\" turns the cache off"
    );

    let mut g = glance("seed.yaml");
    g.spec.glance_api.replicas = 2;
    g.spec.image_cache.access_mode = CacheAccessMode::ReadWriteMany;
    g.spec.glance_api.container_image = Some(String::new());
    assert_eq!(validate(&g, DEFAULT_IMAGE).expect("valid").replicas, 2);
    // Every replica has its own cache volume, so ReadWriteOnce serves several too.
    g.spec.image_cache.access_mode = CacheAccessMode::ReadWriteOnce;
    let v = validate(&g, DEFAULT_IMAGE).expect("valid");
    assert_eq!(
        v.image, DEFAULT_IMAGE,
        "an empty containerImage means the default"
    );
}

#[test]
fn config_secret_names_are_kept_in_order() {
    let mut g = glance("seed.yaml");
    let names: Vec<String> = ["ceph-s3-keys", "a.b-c", "0", &"a".repeat(253)]
        .into_iter()
        .map(str::to_owned)
        .collect();
    g.spec.custom_service_config_secrets = names.clone();
    assert_eq!(
        validate(&g, DEFAULT_IMAGE).expect("valid").config_secrets,
        names
    );
    g.spec.custom_service_config_secrets = (0..16).map(|i| format!("s{i}")).collect();
    assert_eq!(
        validate(&g, DEFAULT_IMAGE)
            .expect("valid")
            .config_secrets
            .len(),
        16
    );
    assert!(
        validate(&glance("seed.yaml"), DEFAULT_IMAGE)
            .expect("valid")
            .config_secrets
            .is_empty(),
        "default: none"
    );
}

#[test]
fn replicas_and_the_name_are_checked_against_their_limits() {
    let with = |replicas: i32, name_len: usize| {
        let mut g = glance("seed.yaml");
        g.spec.glance_api.replicas = replicas;
        g.metadata.name = Some("a".repeat(name_len));
        validate(&g, DEFAULT_IMAGE)
    };
    for (replicas, len) in [(0, 36), (1, 36), (10, 36), (11, 35), (32, 35)] {
        let v = with(replicas, len).expect("valid");
        assert_eq!((v.replicas, v.name.len()), (replicas, len));
    }
    assert_eq!(with(33, 6), Err(InvalidSpec::TooManyReplicas(33)));
    assert_eq!(
        with(10, 37),
        Err(InvalidSpec::NameTooLong {
            name: "a".repeat(37),
            len: 37,
            replicas: 10,
            max: 36,
        })
    );
    assert_eq!(
        with(11, 36),
        Err(InvalidSpec::NameTooLong {
            name: "a".repeat(36),
            len: 36,
            replicas: 11,
            max: 35,
        })
    );
    assert!(
        with(32, 36)
            .expect_err("too long")
            .to_string()
            .starts_with("metadata.name: "),
        "the message names the field"
    );
}

/// The seed Glance with `replicas` replicas and `custom` as its customServiceConfig.
fn with_store(replicas: i32, custom: &str) -> Result<usize, InvalidSpec> {
    let mut g = glance("seed.yaml");
    g.spec.glance_api.replicas = replicas;
    g.spec.custom_service_config = Some(custom.to_owned());
    validate(&g, DEFAULT_IMAGE).map(|v| usize::try_from(v.replicas).expect("replicas"))
}

#[test]
fn several_replicas_need_image_data_on_a_shared_store() {
    // The rendered config: the file store on the storage volume, ReadWriteMany then.
    assert_eq!(with_store(3, ""), Ok(3));
    assert_eq!(with_store(3, "[DEFAULT]\ndebug = true\n"), Ok(3));
    // Elsewhere under /var/lib/glance, outside the cache, is on the shared volume too.
    assert_eq!(
        with_store(
            2,
            "[default_backend]\nfilesystem_store_datadir = /var/lib/glance/other\n"
        ),
        Ok(2)
    );
    // A remote default backend, with a file backend beside it on the shared volume.
    let ceph = "[DEFAULT]\nenabled_backends = fast:file, ceph:s3\n[glance_store]\ndefault_backend = ceph\n[fast]\nfilesystem_store_datadir = /var/lib/glance/fast\n";
    assert_eq!(with_store(3, ceph), Ok(3));
    assert_eq!(
        with_store(
            3,
            "[DEFAULT]\nenabled_backends = ceph:s3\n[glance_store]\ndefault_backend = ceph\n"
        ),
        Ok(3)
    );

    // A file store off the shared volume, or inside a replica's own cache volume.
    for (dir, custom) in [
        (
            "/tmp/images",
            "[default_backend]\nfilesystem_store_datadir = /tmp/images\n".to_owned(),
        ),
        (
            "/var/lib/glance/image-cache/x",
            "[default_backend]\nfilesystem_store_datadir = /var/lib/glance/image-cache/x\n"
                .to_owned(),
        ),
        (
            "/var/lib/glance/image-cache",
            "[default_backend]\nfilesystem_store_datadir = /var/lib/glance/image-cache\n"
                .to_owned(),
        ),
        (
            "/var/lib/glancefoo",
            "[default_backend]\nfilesystem_store_datadir = /var/lib/glancefoo\n".to_owned(),
        ),
        // Named as glance-api will use it: dots folded.
        (
            "/var/tmp",
            "[default_backend]\nfilesystem_store_datadir = /var/lib/glance/../../tmp\n".to_owned(),
        ),
        (
            "/data",
            ceph.replace("default_backend = ceph", "default_backend = fast")
                .replace("/var/lib/glance/fast", "/data"),
        ),
        // Not the default, but images uploaded to it would stay on one replica.
        (
            "/tmp/fast",
            ceph.replace("/var/lib/glance/fast", "/tmp/fast"),
        ),
    ] {
        let err = with_store(2, &custom).expect_err(dir);
        assert_eq!(
            err,
            InvalidSpec::ReplicasNeedSharedStore {
                replicas: 2,
                dir: dir.to_owned(),
            },
            "{custom}"
        );
        let message = err.to_string();
        assert!(
            message.starts_with("spec.customServiceConfig: ") && message.contains(dir),
            "{message}"
        );
        // One replica keeps its files wherever it likes.
        assert_eq!(with_store(1, &custom), Ok(1), "{custom}");
        assert_eq!(with_store(0, &custom), Ok(0), "{custom}");
    }

    // Without a database, the database is what is missing first.
    let mut g = glance("seed.yaml");
    g.spec.glance_api.replicas = 2;
    g.spec.database_instance = None;
    g.spec.custom_service_config =
        Some("[default_backend]\nfilesystem_store_datadir = /tmp/images\n".to_owned());
    assert_eq!(
        validate(&g, DEFAULT_IMAGE),
        Err(InvalidSpec::ReplicasNeedDatabase(2))
    );
}

/// Whether the local CEL validator accepts `object`.
fn cel_accepts(object: &serde_json::Value) -> bool {
    kube::core::cel::Validator::new()
        .validate(&common::schema::crd_schema(), object, None)
        .is_ok()
}

#[test]
fn keystone_fields_are_checked_as_the_cel_checks_them() {
    let values: &[(&str, &[&str])] = &[
        (
            "authUrl",
            &[
                "http://keystone:5000/v3",
                "https://id.example.com/identity/v3?x=1#f",
                "http://[fd00::1]:5000",
                "keystone:5000",
                "http://",
                "https:///v3",
                "http://#x",
                "http://ks/v3 ",
                "http://ks/\nv3",
                "http://ks/\u{7f}",
                "HTTP://ks",
                "",
            ],
        ),
        (
            "wwwAuthenticateUri",
            &[
                "https://keystone.example.com/v3",
                "ftp://x",
                "",
                "http://a b",
            ],
        ),
        (
            "secret",
            &["glance-keystone", "a.b", "Glance", "a..b", "-a", ""],
        ),
        (
            "usernameKey",
            &["username", "OS_USER.name-1", "user name", ""],
        ),
        ("passwordKey", &["password", "a/b", ""]),
        (
            "projectName",
            &[
                "service",
                "Service Project",
                "dienst-ü",
                "",
                " s",
                "s ",
                "a\nb",
                "a\tb",
            ],
        ),
        ("userDomainName", &["Default", "", "x\u{1}"]),
        ("projectDomainName", &["Default", " Default"]),
        ("region", &["RegionOne", "Region One", "", "r\r"]),
    ];
    for (field, values) in values {
        for value in *values {
            let mut keystone = serde_json::json!({"authUrl": "http://keystone:5000/v3", "secret": "glance-keystone"});
            keystone[*field] = serde_json::json!(value);
            let object = serde_json::json!({
                "apiVersion": "glance.openstack.org/v1beta1", "kind": "Glance",
                "metadata": {"name": "glance", "namespace": "openstack"},
                "spec": {"keystone": keystone},
            });
            let mut g: Glance = serde_json::from_value(object.clone()).expect("a Glance");
            g.metadata.uid = Some("u".into());
            let rust = validate(&g, DEFAULT_IMAGE);
            assert_eq!(
                rust.is_ok(),
                cel_accepts(&object),
                "{field} = {value:?}: {rust:?}"
            );
            if let Err(e) = rust {
                assert!(
                    matches!(&e, InvalidSpec::Keystone { field: f, .. } if f == field),
                    "{field} = {value:?}: {e}"
                );
                assert!(
                    e.to_string()
                        .starts_with(&format!("spec.keystone.{field}: ")),
                    "{e}"
                );
            }
        }
    }
}

#[test]
fn keystone_settings_take_the_defaults() {
    let mut g = glance("seed.yaml");
    assert_eq!(validate(&g, DEFAULT_IMAGE).expect("valid").keystone, None);
    g.spec.keystone = Some(
        serde_json::from_value(serde_json::json!({
            "authUrl": "http://keystone:5000/v3", "secret": "glance-keystone"}))
        .expect("spec.keystone"),
    );
    let k = validate(&g, DEFAULT_IMAGE)
        .expect("valid")
        .keystone
        .expect("keystone");
    assert_eq!(k.auth_url, "http://keystone:5000/v3");
    assert_eq!(
        k.www_authenticate_uri, k.auth_url,
        "wwwAuthenticateUri defaults to authUrl"
    );
    assert_eq!(
        (
            k.username_key.as_str(),
            k.password_key.as_str(),
            k.project_name.as_str(),
            k.user_domain_name.as_str(),
            k.project_domain_name.as_str()
        ),
        ("username", "password", "service", "Default", "Default")
    );
    assert_eq!((k.region, k.interface), (None, None));
    assert_eq!(
        error(|g| {
            g.spec.keystone = Some(
                serde_json::from_value(serde_json::json!({
                    "authUrl": "http://keystone:5000/v3", "secret": "glance-keystone",
                    "projectName": "a\n[DEFAULT]"}))
                .expect("spec.keystone"),
            );
        }),
        "spec.keystone.projectName: \"a\\n[DEFAULT]\" must not be empty, hold a control character or line break, or start or end with a space"
    );
}
