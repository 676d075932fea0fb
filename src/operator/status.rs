//! Status: one check per concern, folded into conditions whose lastTransitionTime moves
//! only when their status flips, so a steady state produces an identical status.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::apply::{Applied, CacheApplied, DbSyncOutcome, PvcOutcome, WorkloadOutcome};
use super::observe::pvc_request;
use crate::api::settings::Flavor;
use crate::crd::GlanceStatus;
use crate::crd::validate::{Size, StorageUse, ValidGlance, effective_config};
use crate::resources::service::api_endpoint;

/// Condition types, in the order they appear in status.
pub const READY: &str = "Ready";
/// The configuration Secret could be rendered.
pub const CONFIG_READY: &str = "ConfigReady";
/// The storage PVC is bound.
pub const STORAGE_READY: &str = "StorageReady";
/// Every replica's cache volume is bound and its CronJobs exist, or the cache is off.
pub const CACHE_READY: &str = "CacheReady";
/// The StatefulSet has all replicas ready and updated.
pub const API_READY: &str = "APIReady";
/// The database schema is current for the image: the db-sync Job completed, or SQLite.
pub const DATABASE_READY: &str = "DatabaseReady";
/// The Image API asks Keystone for a token (spec.keystone), or serves without
/// authentication. It says what is configured, so it does not count towards Ready.
pub const AUTHENTICATED: &str = "Authenticated";
/// Condition types of earlier releases, dropped from the status.
const RETIRED: &[&str] = &["DeploymentReady"];

/// The state of one concern, before it becomes a Condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Condition type.
    pub type_: &'static str,
    /// True or False.
    pub ok: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// Human readable message.
    pub message: String,
    /// Announce a transition into this state as a Warning event.
    pub warning: bool,
}

impl Check {
    fn ok(type_: &'static str, reason: &'static str, message: String) -> Self {
        Self {
            type_,
            ok: true,
            reason,
            message,
            warning: false,
        }
    }

    fn waiting(type_: &'static str, reason: &'static str, message: String) -> Self {
        Self {
            type_,
            ok: false,
            reason,
            message,
            warning: false,
        }
    }

    fn failed(type_: &'static str, reason: &'static str, message: String) -> Self {
        Self {
            type_,
            ok: false,
            reason,
            message,
            warning: true,
        }
    }
}

/// Checks for a spec that failed validation.
pub fn invalid_spec_checks(message: String) -> Vec<Check> {
    with_ready(vec![Check::failed(CONFIG_READY, "InvalidSpec", message)])
}

/// Checks for a databaseInstance Secret that cannot be used.
pub fn database_checks(message: String) -> Vec<Check> {
    with_ready(vec![Check::failed(
        CONFIG_READY,
        "DatabaseSecretNotReady",
        message,
    )])
}

/// Checks for a customServiceConfigSecrets Secret or the spec.keystone Secret that cannot
/// be used.
pub fn config_secret_checks(message: String) -> Vec<Check> {
    with_ready(vec![Check::failed(
        CONFIG_READY,
        "ConfigSecretNotReady",
        message,
    )])
}

/// Checks after every child was applied. `pvcs` are the labelled PVCs read before the
/// apply, in which the replicas' cache volumes are looked up. Ready covers every check
/// but [`AUTHENTICATED`], which comes last.
pub fn applied_checks(
    glance: &ValidGlance,
    applied: &Applied,
    pvcs: &[PersistentVolumeClaim],
) -> Vec<Check> {
    let config = match &glance.cache {
        Some(cache) => format!(
            "rendered with image_cache_max_size = {} bytes",
            cache.size.bytes
        ),
        None => "rendered with the image cache off".to_owned(),
    };
    let storage = storage_check(glance, &applied.storage);
    let cache = match (&applied.cache, &glance.cache) {
        (Some(applied), Some(cache)) => cache_check(&cache.size, applied, pvcs),
        _ => Check::ok(
            CACHE_READY,
            "CacheDisabled",
            "image cache is off".to_owned(),
        ),
    };
    let mut checks = with_ready(vec![
        Check::ok(CONFIG_READY, "Rendered", config),
        storage,
        cache,
        workload_check(glance.replicas, &applied.workload),
        database_check(&applied.db_sync),
    ]);
    checks.push(authentication_check(glance));
    checks
}

/// Whether the Image API authenticates requests, from the flavor glance-api will read
/// (customServiceConfig may override the rendered one): True (reason `Keystone`) with
/// spec.keystone, naming the endpoint tokens are checked with; False (reason
/// `Unauthenticated`) without it. When customServiceConfig's flavor says otherwise than
/// spec.keystone, that flavor wins: False with reason `FlavorOverridden`, or True with
/// reason `CustomConfig`. Never a warning: each is what the spec asks for.
pub fn authentication_check(glance: &ValidGlance) -> Check {
    let flavor = effective_config(glance)
        .map(|c| c.get_str("paste_deploy", "flavor", "").trim().to_owned())
        .unwrap_or_default();
    // A flavor glance-api refuses serves nothing at all; only one it accepts counts.
    let keystone_flavor = Flavor::parse(&flavor).is_some_and(|f| f.keystone);
    match (&glance.keystone, keystone_flavor) {
        (Some(keystone), true) => Check::ok(
            AUTHENTICATED,
            "Keystone",
            format!(
                "Image API requests need a Keystone token, checked with {} (keystone.authUrl)",
                keystone.auth_url
            ),
        ),
        (Some(_), false) => Check::waiting(
            AUTHENTICATED,
            "FlavorOverridden",
            format!(
                "customServiceConfig sets [paste_deploy] flavor = {flavor:?}: the Image API serves every request without authentication although spec.keystone is set"
            ),
        ),
        (None, true) => Check::ok(
            AUTHENTICATED,
            "CustomConfig",
            format!(
                "customServiceConfig sets [paste_deploy] flavor = {flavor:?}: Image API requests need a Keystone token, checked as its [keystone_authtoken] says"
            ),
        ),
        (None, false) => Check::waiting(
            AUTHENTICATED,
            "Unauthenticated",
            "spec.keystone is not set: the Image API serves every request without authentication"
                .to_owned(),
        ),
    }
}

fn database_check(db_sync: &DbSyncOutcome) -> Check {
    match db_sync {
        DbSyncOutcome::NotNeeded => Check::ok(
            DATABASE_READY,
            "SQLite",
            "SQLite on the storage volume, migrated by the pod's db-sync init container".to_owned(),
        ),
        DbSyncOutcome::Running(why) => Check::waiting(DATABASE_READY, "Migrating", why.clone()),
        DbSyncOutcome::Succeeded(why) => Check::ok(DATABASE_READY, "Migrated", why.clone()),
        DbSyncOutcome::Failed(why) => Check::failed(DATABASE_READY, "MigrationFailed", why.clone()),
    }
}

/// The cache volumes: a refused resize first, then volumes not made or not bound yet,
/// then a shrink that the volumes cannot follow.
fn cache_check(desired: &Size, applied: &CacheApplied, pvcs: &[PersistentVolumeClaim]) -> Check {
    if let Some(refused) = applied.refused.first() {
        return Check::failed(CACHE_READY, "ResizeRejected", refused.clone());
    }
    let waiting: Vec<&str> = applied
        .volumes
        .iter()
        .filter(|name| {
            !pvcs
                .iter()
                .any(|pvc| pvc.name_any() == **name && is_bound(pvc))
        })
        .map(String::as_str)
        .collect();
    let total = applied.volumes.len();
    if !waiting.is_empty() {
        return Check::waiting(
            CACHE_READY,
            "Pending",
            format!(
                "{} of {total} cache volumes bound; waiting for {}",
                total - waiting.len(),
                waiting.join(", ")
            ),
        );
    }
    if applied.request.bytes > desired.bytes {
        return Check {
            warning: true,
            ..Check::ok(
                CACHE_READY,
                "ShrinkIgnored",
                format!(
                    "imageCacheSize {} is smaller than the cache volumes ({}); a volume cannot shrink, so they keep their size and image_cache_max_size is lowered to {} bytes",
                    desired.quantity, applied.request.quantity, desired.bytes
                ),
            )
        };
    }
    Check::ok(
        CACHE_READY,
        "Bound",
        format!("{total} of {total} cache volumes bound"),
    )
}

/// The storage volume: bound and large enough, and ReadWriteMany when replicas share it.
fn storage_check(glance: &ValidGlance, outcome: &PvcOutcome) -> Check {
    if let (StorageUse::Shared, PvcOutcome::Applied(pvc)) = (glance.storage_use, outcome) {
        let modes = pvc
            .spec
            .as_ref()
            .and_then(|s| s.access_modes.clone())
            .unwrap_or_default();
        if !modes.iter().any(|m| m == "ReadWriteMany") {
            return Check::failed(
                STORAGE_READY,
                "NotShared",
                format!(
                    "PVC {} is {}, and its access modes cannot change, but {} replicas share the file store on it: pods on other nodes cannot mount it. Set glanceAPI.replicas to 1, or move the images to a ReadWriteMany volume or a remote store",
                    pvc.name_any(),
                    modes.join(", "),
                    glance.replicas
                ),
            );
        }
    }
    pvc_check(STORAGE_READY, &glance.storage, "storageRequest", outcome)
}

fn pvc_check(type_: &'static str, desired: &Size, field: &str, outcome: &PvcOutcome) -> Check {
    let pvc = match outcome {
        PvcOutcome::Rejected(message) => {
            return Check::failed(type_, "ResizeRejected", message.clone());
        }
        PvcOutcome::Applied(pvc) => pvc,
    };
    let name = pvc.name_any();
    if !is_bound(pvc) {
        return Check::waiting(type_, "Pending", format!("PVC {name} is not bound yet"));
    }
    match pvc_request(pvc) {
        Some(kept) if kept.bytes > desired.bytes => Check {
            warning: true,
            ..Check::ok(
                type_,
                "ShrinkIgnored",
                format!(
                    "{field} {} is smaller than PVC {name} ({}); a PVC cannot shrink, so it keeps its size",
                    desired.quantity, kept.quantity,
                ),
            )
        },
        _ => Check::ok(type_, "Bound", format!("PVC {name} is bound")),
    }
}

fn is_bound(pvc: &PersistentVolumeClaim) -> bool {
    pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
}

fn workload_check(replicas: i32, workload: &WorkloadOutcome) -> Check {
    let statefulset = match workload {
        WorkloadOutcome::Waiting(why) => {
            return Check::waiting(API_READY, "Replacing", why.clone());
        }
        WorkloadOutcome::Applied(statefulset) => statefulset,
    };
    let status = statefulset.status.as_ref();
    let ready = ready_replicas(statefulset);
    let updated = status.and_then(|s| s.updated_replicas).unwrap_or(0);
    let current = status.and_then(|s| s.observed_generation) >= statefulset.metadata.generation;
    let message = format!("{ready}/{replicas} replicas ready");
    if current && ready >= replicas && updated >= replicas {
        Check::ok(API_READY, "Available", message)
    } else {
        Check::waiting(API_READY, "Progressing", message)
    }
}

fn ready_replicas(statefulset: &StatefulSet) -> i32 {
    statefulset
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
}

/// Prepends the Ready condition: true when every other check is.
fn with_ready(mut checks: Vec<Check>) -> Vec<Check> {
    let ready = match checks.iter().find(|c| !c.ok) {
        None => Check::ok(READY, "Ready", "glance-api is ready".to_owned()),
        Some(first) => Check::waiting(
            READY,
            first.reason,
            format!("{}: {}", first.type_, first.message),
        ),
    };
    checks.insert(0, ready);
    checks
}

fn status_string(ok: bool) -> String {
    if ok { "True" } else { "False" }.to_owned()
}

/// Folds checks into `old` conditions: a condition keeps its lastTransitionTime unless its
/// status flips; conditions of types not checked now are kept as they are, but for retired types.
pub fn merge_conditions(
    old: &[Condition],
    checks: &[Check],
    generation: Option<i64>,
    now: &Timestamp,
) -> Vec<Condition> {
    let mut merged: Vec<Condition> = checks
        .iter()
        .map(|check| {
            let status = status_string(check.ok);
            let previous = old.iter().find(|c| c.type_ == check.type_);
            let last_transition_time = match previous {
                Some(p) if p.status == status => p.last_transition_time.clone(),
                _ => Time(*now),
            };
            Condition {
                type_: check.type_.to_owned(),
                status,
                reason: check.reason.to_owned(),
                message: check.message.clone(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect();
    merged.extend(
        old.iter()
            .filter(|c| !checks.iter().any(|k| k.type_ == c.type_))
            .filter(|c| !RETIRED.contains(&c.type_.as_str()))
            .cloned(),
    );
    merged
}

/// Checks whose state is new compared with `old` and worth an event: every warning, and
/// every change of a condition that existed before. Ready is left out, it only repeats.
pub fn transitions<'a>(old: &[Condition], checks: &'a [Check]) -> Vec<&'a Check> {
    checks
        .iter()
        .filter(|check| check.type_ != READY)
        .filter(|check| {
            let previous = old.iter().find(|c| c.type_ == check.type_);
            let changed = previous
                .is_none_or(|p| p.status != status_string(check.ok) || p.reason != check.reason);
            changed && (check.warning || previous.is_some())
        })
        .collect()
}

/// The next status of a Glance.
pub fn next_status(
    old: &GlanceStatus,
    glance: Option<&ValidGlance>,
    applied: Option<&Applied>,
    checks: &[Check],
    generation: Option<i64>,
    now: &Timestamp,
) -> GlanceStatus {
    GlanceStatus {
        observed_generation: generation,
        conditions: merge_conditions(&old.conditions, checks, generation, now),
        ready_replicas: match applied.map(|a| &a.workload) {
            Some(WorkloadOutcome::Applied(statefulset)) => Some(ready_replicas(statefulset)),
            _ => old.ready_replicas,
        },
        image_cache_max_size: match glance {
            Some(g) => g
                .cache
                .as_ref()
                .and_then(|c| i64::try_from(c.size.bytes).ok()),
            None => old.image_cache_max_size,
        },
        api_endpoint: match glance {
            Some(g) => Some(api_endpoint(g)),
            None => old.api_endpoint.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn check(ok: bool, reason: &'static str, warning: bool) -> Check {
        Check {
            type_: CACHE_READY,
            ok,
            reason,
            message: format!("{reason} message"),
            warning,
        }
    }

    #[test]
    fn transition_time_moves_only_when_the_status_flips() {
        let t0 = at("2026-11-01T00:00:00Z");
        let t1 = at("2026-11-02T00:00:00Z");
        let first = merge_conditions(&[], &[check(true, "Bound", false)], Some(1), &t0);
        assert_eq!(first[0].last_transition_time, Time(t0));
        // Same status, new reason and generation: the time stays.
        let same = merge_conditions(&first, &[check(true, "ShrinkIgnored", true)], Some(2), &t1);
        assert_eq!(same[0].last_transition_time, Time(t0));
        assert_eq!(same[0].reason, "ShrinkIgnored");
        assert_eq!(same[0].observed_generation, Some(2));
        // A flip moves it.
        let flipped =
            merge_conditions(&same, &[check(false, "ResizeRejected", true)], Some(2), &t1);
        assert_eq!(flipped[0].last_transition_time, Time(t1));
        assert_eq!(flipped[0].status, "False");
    }

    #[test]
    fn unchecked_conditions_are_kept() {
        let t0 = at("2026-11-01T00:00:00Z");
        let old = merge_conditions(&[], &[check(true, "Bound", false)], Some(1), &t0);
        let merged = merge_conditions(&old, &database_checks("gone".into()), Some(1), &t0);
        let types: Vec<&str> = merged.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, vec![READY, CONFIG_READY, CACHE_READY]);
    }

    #[test]
    fn events_for_warnings_and_for_changes_of_known_conditions() {
        let t0 = at("2026-11-01T00:00:00Z");
        // First appearance: only warnings are announced.
        let fresh = [check(false, "Pending", false)];
        assert!(transitions(&[], &fresh).is_empty());
        let warn = [check(false, "ResizeRejected", true)];
        assert_eq!(transitions(&[], &warn).len(), 1);
        // A known condition changing reason is announced; staying put is not.
        let old = merge_conditions(&[], &fresh, Some(1), &t0);
        assert!(transitions(&old, &fresh).is_empty());
        let bound = [check(true, "Bound", false)];
        assert_eq!(transitions(&old, &bound).len(), 1);
        // Ready is never announced on its own.
        let with_ready_only = with_ready(vec![]);
        assert!(transitions(&[], &with_ready_only).is_empty());
    }
}
