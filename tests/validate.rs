//! `validate`: the same rules as the CEL, in Rust, with errors that name the field.

mod common;

use common::{DEFAULT_IMAGE, glance};
use glance_operator::crd::validate::validate;
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
            Box::new(|g| g.spec.glance_api.replicas = 2),
            "spec.imageCache.accessMode: glanceAPI.replicas is 2",
        ),
        (
            Box::new(|g| g.metadata.name = Some("a".repeat(39))),
            "metadata.name: \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\" is 39 characters; at most 38",
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
