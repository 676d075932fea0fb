//! State shared by every reconcile.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;
use kube::runtime::events::Recorder;

use super::metrics::Metrics;

/// First retry delay after a failed reconcile; it doubles per consecutive failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(5);
/// Longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Client, event recorder, metrics and settings of the reconciler.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Publishes events on Glance objects.
    pub recorder: Recorder,
    /// Reconciler metrics.
    pub metrics: Arc<Metrics>,
    /// Image used when spec.glanceAPI.containerImage is empty (RELATED_IMAGE_GLANCE_API).
    pub default_image: String,
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// A context around `client`.
    pub fn new(
        client: Client,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        default_image: String,
    ) -> Self {
        Self {
            client,
            recorder,
            metrics,
            default_image,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one more consecutive failure of `key` and returns the delay before the retry.
    pub fn next_backoff(&self, key: &str) -> Duration {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = failures.entry(key.to_owned()).or_insert(0);
        let delay = backoff_delay(*count);
        *count = count.saturating_add(1);
        delay
    }

    /// Forgets the failures of `key` after a successful reconcile.
    pub fn reset_backoff(&self, key: &str) {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        failures.remove(key);
    }
}

/// Delay after `failures` earlier consecutive failures: 5s, 10s, 20s, ... up to 5 minutes.
pub fn backoff_delay(failures: u32) -> Duration {
    BACKOFF_BASE
        .checked_mul(1u32.checked_shl(failures).unwrap_or(u32::MAX))
        .map_or(BACKOFF_MAX, |d| d.min(BACKOFF_MAX))
}
