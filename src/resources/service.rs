//! The `<name>-api` Service.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::config::API_PORT;
use super::meta::{Component, child_meta, selector_labels};
use crate::crd::validate::ValidGlance;

/// ClusterIP Service on port 9292 in front of the glance-api pods.
pub fn service(glance: &ValidGlance) -> Service {
    Service {
        metadata: child_meta(glance, Component::Api),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(&glance.name, Component::Api)),
            ports: Some(vec![ServicePort {
                name: Some("http".to_owned()),
                port: API_PORT,
                target_port: Some(IntOrString::String("http".to_owned())),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The URL status.apiEndpoint reports.
pub fn api_endpoint(glance: &ValidGlance) -> String {
    format!(
        "http://{}.{}.svc:{API_PORT}",
        Component::Api.child_name(&glance.name),
        glance.namespace
    )
}
