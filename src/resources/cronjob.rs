//! The cache CronJobs: `<name>-cache-pruner` and `<name>-cache-cleaner`.

use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::config::ConfigSecret;
use super::meta::{Component, child_meta, labels};
use super::pod::{Mounts, cache_job_affinity, glance_container, pod_spec, volumes};
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
}

/// The CronJob running `tool`, while the cache is on. It mounts the same config files as
/// the API pods, including those of the customServiceConfigSecrets Secrets (`extra`).
pub fn cache_cronjob(
    glance: &ValidGlance,
    extra: &[ConfigSecret],
    tool: CacheTool,
) -> Option<CronJob> {
    let cache = glance.cache.as_ref()?;
    let component = tool.component();
    let (volumes, mounts) = volumes(glance, extra, Mounts::CacheJob);
    let container = glance_container(glance, tool.program(), tool.program(), mounts);
    let mut pod = pod_spec(glance, container, volumes);
    pod.restart_policy = Some("OnFailure".to_owned());
    pod.affinity = cache_job_affinity(glance);
    Some(CronJob {
        metadata: child_meta(glance, component),
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
    })
}
