//! The Services: `<name>-api` in front of every glance-api pod, and `<name>-api-headless`,
//! which gives each pod of the StatefulSet its own DNS name.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::config::API_PORT;
use super::meta::{Component, child_meta, selector_labels};
use crate::crd::validate::ValidGlance;

fn api_service(glance: &ValidGlance, component: Component, cluster_ip: Option<String>) -> Service {
    Service {
        metadata: child_meta(glance, component),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(&glance.name, Component::Api)),
            cluster_ip: cluster_ip.clone(),
            // A pod is reachable by name as soon as it runs: the cache API of a replica
            // that is not ready yet can still be asked what it holds.
            publish_not_ready_addresses: cluster_ip.is_some().then_some(true),
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

/// ClusterIP Service on port 9292 in front of the glance-api pods.
pub fn service(glance: &ValidGlance) -> Service {
    api_service(glance, Component::Api, None)
}

/// Headless Service, the StatefulSet's serviceName: `<pod>.<name>-api-headless.<ns>.svc`.
pub fn headless_service(glance: &ValidGlance) -> Service {
    api_service(glance, Component::ApiHeadless, Some("None".to_owned()))
}

/// The URL status.apiEndpoint reports.
pub fn api_endpoint(glance: &ValidGlance) -> String {
    format!(
        "http://{}.{}.svc:{API_PORT}",
        Component::Api.child_name(&glance.name),
        glance.namespace
    )
}

/// The URL of one pod through the headless Service: its `worker_self_reference_url`.
pub fn pod_url(glance: &ValidGlance, pod: &str) -> String {
    format!(
        "http://{pod}.{}.{}.svc:{API_PORT}",
        Component::ApiHeadless.child_name(&glance.name),
        glance.namespace
    )
}
