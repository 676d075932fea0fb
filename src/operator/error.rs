//! Errors of the reconciler.

use thiserror::Error;

/// Why a reconcile failed; every variant is retried with backoff by the error policy.
#[derive(Debug, Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),
    /// Recording an event failed.
    #[error("publishing an event failed: {0}")]
    Event(#[source] kube::Error),
}

impl Error {
    /// Short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::Event(_) => "event",
        }
    }
}
