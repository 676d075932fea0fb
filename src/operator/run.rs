//! Wires the controller: watches, leader election, metrics server and shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Controller;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use thiserror::Error;
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::context::Context;
use super::leader::{LEASE_DURATION, LeaseLock, RENEW_PERIOD};
use super::metrics::{Metrics, router};
use super::reconcile::{error_policy, reconcile};
use crate::crd::Glance;
use crate::resources::meta::{INSTANCE_LABEL, MANAGER};

/// Settings of the operator process.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Namespace of the leader Lease (the operator's own namespace).
    pub lease_namespace: String,
    /// Name of the leader Lease.
    pub lease_name: String,
    /// This replica's identity in the Lease (its pod name).
    pub identity: String,
    /// Default image of glance-api and the CronJobs.
    pub default_image: String,
    /// Address of the /metrics and /healthz server.
    pub metrics_addr: SocketAddr,
    /// Watch only this namespace; None = every namespace.
    pub watch_namespace: Option<String>,
}

/// Why the operator stopped.
#[derive(Debug, Error)]
pub enum RunError {
    /// Neither an in-cluster service account nor a usable kubeconfig.
    #[error(
        "cannot reach the Kubernetes API server: no in-cluster service account and no usable kubeconfig: {0}"
    )]
    NoClientConfig(#[source] kube::Error),
    /// The API server does not answer: connection refused, DNS, TLS, proxy.
    #[error("cannot reach the Kubernetes API server at {url}: {source}")]
    Unreachable {
        /// The API server's URL from the client configuration.
        url: String,
        /// Why.
        source: kube::Error,
    },
    /// The API server answers 404 for the Glances: the CRD is not installed.
    #[error(
        "the Glance CRD is not installed: the API server answers 404 for glances.glance.openstack.org (kubectl apply -k config/default): {0}"
    )]
    CrdNotInstalled(#[source] kube::Error),
    /// The API server answers, but refuses to list the Glances (RBAC, ...).
    #[error("cannot list glances.glance.openstack.org: {0}")]
    Crd(#[source] kube::Error),
    /// The metrics server could not bind.
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Leader election failed against the API server.
    #[error("leader election on Lease {0}: {1}")]
    Lease(String, #[source] kube::Error),
    /// Another replica took the lease, or renewing it failed for longer than its duration.
    #[error("lost the leader Lease; exiting so that a single replica reconciles")]
    LostLease,
}

/// Runs the operator until SIGTERM/SIGINT, or until leadership is lost.
pub async fn run(settings: Settings) -> Result<(), RunError> {
    let config = kube::Config::infer()
        .await
        .map_err(|e| RunError::NoClientConfig(kube::Error::InferConfig(e)))?;
    let url = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(|source| RunError::Unreachable {
        url: url.clone(),
        source,
    })?;
    let metrics = Arc::new(Metrics::default());
    let listener = tokio::net::TcpListener::bind(settings.metrics_addr)
        .await
        .map_err(|source| RunError::Metrics {
            addr: settings.metrics_addr,
            source,
        })?;
    let app = router(metrics.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            error!(error = %e, "metrics server stopped");
        }
    });

    let scope = settings.watch_namespace.as_deref();
    let glances: Api<DeserializeGuard<Glance>> = watched(&client, scope);
    glances
        .list(&ListParams::default().limit(1))
        .await
        .map_err(|e| crd_check_error(e, &url))?;
    metrics.set_healthy(true);

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(forward_signals(stop_tx.clone()));

    let lease_api: Api<Lease> = Api::namespaced(client.clone(), &settings.lease_namespace);
    let lock = Arc::new(LeaseLock::new(
        lease_api,
        &settings.lease_name,
        &settings.identity,
    ));
    let lease_label = format!("{}/{}", settings.lease_namespace, settings.lease_name);
    if !wait_for_lease(&lock, stop_rx.clone())
        .await
        .map_err(|e| RunError::Lease(lease_label.clone(), e))?
    {
        return Ok(());
    }
    info!(identity = %settings.identity, lease = %lease_label, "became leader");
    metrics.leader.set(1);
    let (lost_tx, mut lost_rx) = watch::channel(false);
    let renewer = tokio::spawn(renew_lease(lock.clone(), lost_tx, stop_rx.clone()));

    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: MANAGER.to_owned(),
            instance: Some(settings.identity.clone()),
        },
    );
    let ctx = Arc::new(Context::new(
        client.clone(),
        recorder,
        metrics.clone(),
        settings.default_image.clone(),
    ));
    let children_config =
        watcher::Config::default().labels("app.kubernetes.io/managed-by=glance-operator");
    let controller = Controller::new(glances, watcher::Config::default());
    let store = controller.store();
    let mut stop = stop_rx.clone();
    let shutdown = async move {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => {},
            _ = lost_rx.wait_for(|l| *l) => {},
        }
    };
    controller
        // By label, not owner: the cache volumes belong to the StatefulSet, and their
        // binding is what CacheReady waits for.
        .watches(
            Api::<PersistentVolumeClaim>::all(client.clone()),
            children_config.clone(),
            |pvc| glance_for_child(&pvc),
        )
        .owns(Api::<Service>::all(client.clone()), children_config.clone())
        .owns(
            Api::<StatefulSet>::all(client.clone()),
            children_config.clone(),
        )
        // The Deployment of an earlier release: its deletion lets the StatefulSet start.
        .owns(
            Api::<Deployment>::all(client.clone()),
            children_config.clone(),
        )
        .owns(Api::<CronJob>::all(client.clone()), children_config.clone())
        .owns(Api::<Job>::all(client.clone()), children_config)
        .watches(
            Api::<Secret>::all(client.clone()),
            watcher::Config::default(),
            move |secret| glances_for_secret(&store, &secret),
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => info!(object = %object, "reconciled"),
                Err(e) => warn!(error = %e, "reconcile error"),
            }
        })
        .await;

    renewer.abort();
    metrics.leader.set(0);
    let lost = !*stop_rx.borrow();
    if let Err(e) = lock.release().await {
        warn!(error = %e, "could not release the leader Lease");
    }
    if lost {
        Err(RunError::LostLease)
    } else {
        Ok(())
    }
}

/// What a failed first list of the Glances means: only a 404 from the API server says
/// the CRD is missing; an error without an answer says the server at `url` cannot be
/// reached.
pub fn crd_check_error(error: kube::Error, url: &str) -> RunError {
    match &error {
        kube::Error::Api(status) if status.code == 404 => RunError::CrdNotInstalled(error),
        // The server answered, or the request could not be built: it is reachable.
        kube::Error::Api(_)
        | kube::Error::SerdeError(_)
        | kube::Error::FromUtf8(_)
        | kube::Error::BuildRequest(_) => RunError::Crd(error),
        _ => RunError::Unreachable {
            url: url.to_owned(),
            source: error,
        },
    }
}

/// An Api over one namespace, or over all of them.
fn watched<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The Glance a labelled child belongs to: its `app.kubernetes.io/instance`.
pub fn glance_for_child<K: Resource>(child: &K) -> Option<ObjectRef<DeserializeGuard<Glance>>> {
    let instance = child.labels().get(INSTANCE_LABEL)?;
    Some(ObjectRef::new(instance).within(&child.namespace()?))
}

/// Glances to reconcile when `secret` changes: its owner (the config Secret) and every
/// Glance naming it as databaseInstance, in customServiceConfigSecrets or as keystone.secret.
pub fn glances_for_secret(
    store: &Store<DeserializeGuard<Glance>>,
    secret: &Secret,
) -> Vec<ObjectRef<DeserializeGuard<Glance>>> {
    let namespace = secret.namespace().unwrap_or_default();
    let secret_name = secret.name_any();
    let api_version = Glance::api_version(&());
    let mut refs: Vec<_> = secret
        .owner_references()
        .iter()
        .filter(|o| o.kind == "Glance" && o.api_version == api_version)
        .map(|o| ObjectRef::new(&o.name).within(&namespace))
        .collect();
    refs.extend(
        store
            .state()
            .iter()
            .filter(|g| g.namespace().as_deref() == Some(namespace.as_str()))
            .filter(|g| match &g.0 {
                Ok(glance) => {
                    glance.spec.database_instance.as_deref() == Some(secret_name.as_str())
                        || glance
                            .spec
                            .custom_service_config_secrets
                            .contains(&secret_name)
                        || glance
                            .spec
                            .keystone
                            .as_ref()
                            .is_some_and(|k| k.secret == secret_name)
                }
                Err(_) => false,
            })
            .map(|g| ObjectRef::new(&g.name_any()).within(&namespace)),
    );
    refs
}

async fn forward_signals(stop: watch::Sender<bool>) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = terminate => {},
    }
    info!("shutting down");
    let _ = stop.send(true);
}

/// Waits until this replica holds the lease. Returns false if asked to stop first.
async fn wait_for_lease(
    lock: &LeaseLock,
    mut stop: watch::Receiver<bool>,
) -> Result<bool, kube::Error> {
    loop {
        if lock.try_acquire(Timestamp::now()).await? {
            return Ok(true);
        }
        info!("another replica holds the leader Lease; waiting");
        tokio::select! {
            _ = tokio::time::sleep(RENEW_PERIOD) => {},
            _ = stop.wait_for(|s| *s) => return Ok(false),
        }
    }
}

/// Renews the lease every RENEW_PERIOD; signals `lost` when another replica holds it or
/// renewal has failed for a whole lease duration.
async fn renew_lease(lock: Arc<LeaseLock>, lost: watch::Sender<bool>, stop: watch::Receiver<bool>) {
    let mut last_renewed = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(RENEW_PERIOD).await;
        if *stop.borrow() {
            return;
        }
        match lock.try_acquire(Timestamp::now()).await {
            Ok(true) => last_renewed = tokio::time::Instant::now(),
            Ok(false) => {
                error!("another replica took the leader Lease");
                let _ = lost.send(true);
                return;
            }
            Err(e) => {
                warn!(error = %e, "renewing the leader Lease failed");
                if last_renewed.elapsed() >= LEASE_DURATION - Duration::from_secs(1) {
                    let _ = lost.send(true);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    const URL: &str = "https://10.96.0.1/";

    #[test]
    fn only_a_404_says_the_crd_is_not_installed() {
        let not_found = kube::Error::Api(
            Status::failure(
                "the server could not find the requested resource",
                "NotFound",
            )
            .with_code(404)
            .boxed(),
        );
        let e = crd_check_error(not_found, URL);
        assert!(matches!(e, RunError::CrdNotInstalled(_)), "{e:?}");
        assert!(e.to_string().contains("CRD is not installed"), "{e}");

        let forbidden = kube::Error::Api(
            Status::failure("forbidden", "Forbidden")
                .with_code(403)
                .boxed(),
        );
        let e = crd_check_error(forbidden, URL);
        assert!(matches!(e, RunError::Crd(_)), "{e:?}");
        let text = e.to_string();
        assert!(
            !text.contains("not installed") && !text.contains("cannot reach"),
            "{text}"
        );
    }

    #[test]
    fn an_error_without_an_answer_says_the_api_server_cannot_be_reached() {
        let refused = kube::Error::Service(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        )));
        let e = crd_check_error(refused, URL);
        assert!(matches!(e, RunError::Unreachable { .. }), "{e:?}");
        let text = e.to_string();
        assert!(
            text.starts_with("cannot reach the Kubernetes API server at https://10.96.0.1/: "),
            "{text}"
        );
        assert!(!text.contains("CRD"), "{text}");
        assert!(
            RunError::NoClientConfig(kube::Error::TlsRequired)
                .to_string()
                .starts_with("cannot reach the Kubernetes API server: ")
        );
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable_not_a_missing_crd() {
        // A port nobody listens on: bind one, then free it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let url = format!("http://127.0.0.1:{port}/");
        let config = kube::Config::new(url.parse().expect("uri"));
        let client = Client::try_from(config).expect("client");
        let glances: Api<DeserializeGuard<Glance>> = Api::all(client);
        let error = glances
            .list(&ListParams::default().limit(1))
            .await
            .expect_err("nothing listens");
        let e = crd_check_error(error, &url);
        assert!(matches!(e, RunError::Unreachable { .. }), "{e:?}");
        assert!(
            e.to_string()
                .starts_with(&format!("cannot reach the Kubernetes API server at {url}")),
            "{e}"
        );
    }
}
