//! The reconcile pipeline: validate -> observe -> build -> apply -> status.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, instrument, warn};

use super::apply::{DbSyncOutcome, Owner, WorkloadOutcome, apply};
use super::context::Context;
use super::error::Error;
use super::observe::observe;
use super::status::{
    Check, applied_checks, config_secret_checks, database_checks, invalid_spec_checks, next_status,
    transitions,
};
use crate::crd::validate::{ValidGlance, validate};
use crate::crd::{Glance, GlanceStatus};
use crate::resources::build;
use crate::resources::meta::MANAGER;

/// Resync period of a healthy Glance.
pub const RESYNC: Duration = Duration::from_secs(300);
/// Retry period while a Secret the spec names (databaseInstance, customServiceConfigSecrets,
/// keystone.secret) is missing or unusable. Changes to those Secrets are also watched.
pub const DATABASE_RETRY: Duration = Duration::from_secs(30);
/// Retry period while an older workload goes away, or the db-sync Job runs, before the
/// StatefulSet is applied.
pub const REPLACE_RETRY: Duration = Duration::from_secs(5);

fn backoff_key(obj: &DeserializeGuard<Glance>) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

/// Reconciles one Glance. Objects that do not deserialize are reported, not retried.
#[instrument(skip_all, fields(namespace = obj.namespace(), name = obj.name_any()))]
pub async fn reconcile(
    obj: Arc<DeserializeGuard<Glance>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let result = match &obj.0 {
        Ok(glance) => reconcile_glance(glance, &ctx).await,
        Err(invalid) => {
            warn!(error = %invalid.error, "Glance does not match the CRD schema");
            let reference = ObjectReference {
                api_version: Some(Glance::api_version(&()).into_owned()),
                kind: Some(Glance::kind(&()).into_owned()),
                name: invalid.metadata.name.clone(),
                namespace: invalid.metadata.namespace.clone(),
                uid: invalid.metadata.uid.clone(),
                ..ObjectReference::default()
            };
            publish(
                &ctx,
                &reference,
                EventType::Warning,
                "InvalidObject",
                &invalid.error,
            )
            .await
            .map(|()| Action::await_change())
        }
    };
    ctx.metrics.observe(
        started.elapsed(),
        result.as_ref().err().map(Error::metric_label),
    );
    if result.is_ok() {
        ctx.reset_backoff(&backoff_key(&obj));
    }
    result
}

/// Requeues a failed reconcile with exponential backoff per object.
pub fn error_policy(
    obj: Arc<DeserializeGuard<Glance>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    let delay = ctx.next_backoff(&backoff_key(&obj));
    warn!(%error, namespace = obj.namespace(), name = obj.name_any(), retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

async fn reconcile_glance(glance: &Glance, ctx: &Context) -> Result<Action, Error> {
    if glance.meta().deletion_timestamp.is_some() {
        // Children carry owner references; the garbage collector removes them.
        return Ok(Action::await_change());
    }
    let valid = match validate(glance, &ctx.default_image) {
        Ok(valid) => valid,
        Err(invalid) => {
            warn!(%invalid, "invalid spec");
            let checks = invalid_spec_checks(invalid.to_string());
            write_status(ctx, glance, None, None, &checks).await?;
            return Ok(Action::await_change());
        }
    };
    let observation = observe(&ctx.client, &valid).await?;
    let database_connection = match &observation.database {
        Ok(connection) => connection.clone(),
        Err(problem) => {
            warn!(problem = %problem.0, "database Secret not usable");
            let checks = database_checks(problem.0.clone());
            write_status(ctx, glance, Some(&valid), None, &checks).await?;
            return Ok(Action::requeue(DATABASE_RETRY));
        }
    };
    let secrets = observation
        .config_secrets
        .clone()
        .and_then(|config| Ok((config, observation.keystone.clone()?)));
    let (config_secrets, keystone_credentials) = match secrets {
        Ok(secrets) => secrets,
        Err(problem) => {
            warn!(problem = %problem.0, "a Secret the spec names is not usable");
            let checks = config_secret_checks(problem.0.clone());
            write_status(ctx, glance, Some(&valid), None, &checks).await?;
            return Ok(Action::requeue(DATABASE_RETRY));
        }
    };
    let children = build(
        &valid,
        &observation.observed(
            &valid,
            database_connection,
            config_secrets,
            keystone_credentials,
        ),
    );
    let owner = Owner {
        name: &valid.name,
        uid: valid.owner.uid.as_str(),
    };
    let applied = apply(
        &ctx.client,
        &valid.namespace,
        owner,
        children,
        &observation.live,
    )
    .await?;
    if !applied.deleted.is_empty() {
        info!(deleted = ?applied.deleted, "deleted children the spec no longer names");
    }
    let checks = applied_checks(&valid, &applied, &observation.pvcs);
    write_status(ctx, glance, Some(&valid), Some(&applied), &checks).await?;
    Ok(match (&applied.db_sync, &applied.workload) {
        // Stays failed until the image or database changes or the Job is deleted, which
        // the watch on Jobs reports.
        (DbSyncOutcome::Failed(_), _) => Action::requeue(RESYNC),
        (_, WorkloadOutcome::Waiting(_)) => Action::requeue(REPLACE_RETRY),
        (_, WorkloadOutcome::Applied(_)) => Action::requeue(RESYNC),
    })
}

/// Writes the status if it changed, and publishes an event per transition.
async fn write_status(
    ctx: &Context,
    glance: &Glance,
    valid: Option<&ValidGlance>,
    applied: Option<&super::apply::Applied>,
    checks: &[Check],
) -> Result<(), Error> {
    let old = glance.status.clone().unwrap_or_default();
    let now = Timestamp::now();
    let status = next_status(&old, valid, applied, checks, glance.meta().generation, &now);
    if status == old {
        return Ok(());
    }
    let api: Api<Glance> =
        Api::namespaced(ctx.client.clone(), &glance.namespace().unwrap_or_default());
    api.patch_status(
        &glance.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(status_patch(&status)),
    )
    .await?;
    let reference = glance.object_ref(&());
    for check in transitions(&old.conditions, checks) {
        let type_ = if check.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        publish(ctx, &reference, type_, check.reason, &check.message).await?;
    }
    Ok(())
}

/// The server-side apply body of a status.
pub fn status_patch(status: &GlanceStatus) -> serde_json::Value {
    json!({
        "apiVersion": Glance::api_version(&()),
        "kind": Glance::kind(&()),
        "status": status,
    })
}

async fn publish(
    ctx: &Context,
    reference: &ObjectReference,
    type_: EventType,
    reason: &str,
    note: &str,
) -> Result<(), Error> {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note.chars().take(1000).collect()),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    ctx.recorder
        .publish(&event, reference)
        .await
        .map_err(Error::Event)
}
