//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod cache;
pub mod db;
pub mod keystone;
pub mod mock;
pub mod process;
pub mod proxy;
pub mod schema;
pub mod server;
pub mod web;

use std::path::{Path, PathBuf};

use glance_operator::crd::Glance;
use glance_operator::crd::validate::{ValidGlance, validate};

/// Image the tests pass as the operator's default image.
pub const DEFAULT_IMAGE: &str = "registry.test/glance-operator:1.0";

/// Path of a file under tests/fixtures.
pub fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A Glance from a YAML fixture, with the namespace, uid and generation the API server
/// would have set.
pub fn glance(name: &str) -> Glance {
    let text = std::fs::read_to_string(fixture_path(name)).expect("fixture readable");
    let mut glance: Glance = serde_yaml::from_str(&text).expect("fixture is a Glance");
    glance.metadata.namespace = Some("openstack".to_owned());
    glance.metadata.uid = Some("6f7e1c1e-3b0a-4c55-9d3e-1b2f7c1a0001".to_owned());
    glance.metadata.generation = Some(1);
    glance
}

/// The validated form of a fixture.
pub fn valid(name: &str) -> ValidGlance {
    validate(&glance(name), DEFAULT_IMAGE).expect("fixture is valid")
}

/// A fixture with its spec.imageCacheSize replaced.
pub fn with_cache_size(name: &str, size: &str) -> ValidGlance {
    let mut g = glance(name);
    g.spec.image_cache_size = Some(k8s_openapi::apimachinery::pkg::api::resource::Quantity(
        size.to_owned(),
    ));
    validate(&g, DEFAULT_IMAGE).expect("valid size")
}
