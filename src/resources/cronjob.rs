//! The cache CronJobs, one pair per replica: `<name>-cache-pruner-<i>` and
//! `<name>-cache-cleaner-<i>`, each on replica i's cache volume and node.

use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{EnvVar, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::config::ConfigSecret;
use super::meta::{Component, child_meta, labels};
use super::pod::{Mounts, glance_container, pod_spec, replica_affinity, volumes};
use super::service::pod_url;
use super::statefulset::{SELF_REFERENCE_ENV, pod_name};
use crate::crd::validate::{CacheSettings, ValidGlance};

/// One of the two cache tools run on a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheTool {
    /// glance-cache-pruner.
    Pruner,
    /// glance-cache-cleaner.
    Cleaner,
}

impl CacheTool {
    /// Both tools, in the order they are applied.
    pub const ALL: [Self; 2] = [Self::Pruner, Self::Cleaner];

    fn component(self) -> Component {
        match self {
            Self::Pruner => Component::CachePruner,
            Self::Cleaner => Component::CacheCleaner,
        }
    }

    /// The program in the image, which is also the container name.
    pub fn program(self) -> &'static str {
        match self {
            Self::Pruner => "glance-cache-pruner",
            Self::Cleaner => "glance-cache-cleaner",
        }
    }

    fn schedule(self, cache: &CacheSettings) -> &str {
        match self {
            Self::Pruner => &cache.pruner_schedule,
            Self::Cleaner => &cache.cleaner_schedule,
        }
    }

    /// The CronJob name for replica `ordinal`.
    pub fn cronjob_name(self, glance: &str, ordinal: i32) -> String {
        self.component().replica_child_name(glance, ordinal)
    }
}

/// The CronJob running `tool` on replica `ordinal`'s cache volume, on that replica's node.
/// It mounts the same config files as the API pods, including those of the
/// customServiceConfigSecrets Secrets (`extra`).
pub fn cache_cronjob(
    glance: &ValidGlance,
    cache: &CacheSettings,
    extra: &[ConfigSecret],
    tool: CacheTool,
    ordinal: i32,
) -> CronJob {
    let component = tool.component();
    let (volumes, mounts) = volumes(glance, extra, Mounts::CacheJob(ordinal));
    let mut container = glance_container(glance, tool.program(), tool.program(), mounts);
    // The replica's own URL: the centralized_db driver keys its rows by it.
    container.env = Some(vec![EnvVar {
        name: SELF_REFERENCE_ENV.to_owned(),
        value: Some(pod_url(glance, &pod_name(&glance.name, ordinal))),
        value_from: None,
    }]);
    let mut pod = pod_spec(glance, container, volumes);
    pod.restart_policy = Some("OnFailure".to_owned());
    pod.affinity = Some(replica_affinity(glance, ordinal));
    CronJob {
        metadata: ObjectMeta {
            name: Some(tool.cronjob_name(&glance.name, ordinal)),
            ..child_meta(glance, component)
        },
        spec: CronJobSpec {
            schedule: tool.schedule(cache).to_owned(),
            concurrency_policy: Some("Forbid".to_owned()),
            successful_jobs_history_limit: Some(1),
            failed_jobs_history_limit: Some(2),
            starting_deadline_seconds: Some(300),
            job_template: JobTemplateSpec {
                metadata: None,
                spec: Some(JobSpec {
                    backoff_limit: Some(2),
                    template: PodTemplateSpec {
                        metadata: Some(ObjectMeta {
                            labels: Some(labels(&glance.name, component)),
                            ..ObjectMeta::default()
                        }),
                        spec: Some(pod),
                    },
                    ..JobSpec::default()
                }),
            },
            ..CronJobSpec::default()
        },
        status: None,
    }
}
