//! The policy rules Glance 33.0.0 registers in code (`glance/policies/base.py`,
//! `image.py`, `cache.py`, `discovery.py`, `tasks.py` and `metadef.py`), with the check strings in
//! effect by default.
//!
//! Most rules carry a deprecated check string (mostly `rule:default`). oslo.policy ORs
//! it into the rule only while `[oslo_policy] enforce_new_defaults` is false; that
//! option defaults to true in oslo.policy 6 (which Glance 33 requires) and Glance does
//! not change it, so the new ("secure RBAC") strings below are the effective ones, and
//! `default` is `""`.
//! Every image, member, cache, task, store and metadata definition rule has
//! `scope_types = ['project']`; the base rules have none.

/// One rule registered in code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RuleDefault {
    /// The rule (action) name.
    pub(super) name: &'static str,
    /// Its check string.
    pub(super) rule: &'static str,
    /// Upstream's description.
    pub(super) description: &'static str,
}

/// `ADMIN`.
const ADMIN: &str = "rule:context_is_admin";
/// `DEFAULT`.
const DEFAULT: &str = "rule:default";
/// `SERVICE`.
const SERVICE: &str = "rule:service_api";
/// `ADMIN_OR_SERVICE_ROLE`.
const ADMIN_OR_SERVICE_ROLE: &str = "rule:context_is_admin or rule:service_api";
/// `ADMIN_OR_PROJECT_MEMBER`.
const ADMIN_OR_PROJECT_MEMBER: &str =
    "rule:context_is_admin or (role:member and project_id:%(project_id)s)";
/// `ADMIN_OR_PROJECT_READER`.
const ADMIN_OR_PROJECT_READER: &str =
    "rule:context_is_admin or (role:reader and project_id:%(project_id)s)";
/// `ADMIN_OR_PROJECT_READER_GET_IMAGE`.
const ADMIN_OR_PROJECT_READER_GET_IMAGE: &str = "rule:context_is_admin or (role:reader and \
     (project_id:%(project_id)s or project_id:%(member_id)s or 'community':%(visibility)s \
     or 'public':%(visibility)s or 'shared':%(visibility)s))";
/// `ADMIN_OR_PROJECT_MEMBER_DOWNLOAD_IMAGE`.
const ADMIN_OR_PROJECT_MEMBER_DOWNLOAD_IMAGE: &str = "rule:context_is_admin or (role:member and \
     (project_id:%(project_id)s or project_id:%(member_id)s or 'community':%(visibility)s \
     or 'public':%(visibility)s or 'shared':%(visibility)s))";
/// `ADMIN_OR_PROJECT_READER_GET_NAMESPACE`: a reader of the namespace's project, or any
/// reader for a public one.
const ADMIN_OR_PROJECT_READER_GET_NAMESPACE: &str = "rule:context_is_admin or (role:reader and \
     (project_id:%(project_id)s or 'public':%(visibility)s))";
/// `METADEF_ADMIN`.
const METADEF_ADMIN: &str = "rule:metadef_admin";
/// `ADMIN_OR_PROJECT_MEMBER_CREATE_IMAGE`.
const ADMIN_OR_PROJECT_MEMBER_CREATE_IMAGE: &str = "rule:context_is_admin or (role:member and \
     project_id:%(project_id)s and project_id:%(owner)s)";
/// `ADMIN_OR_SHARED_MEMBER`.
const ADMIN_OR_SHARED_MEMBER: &str =
    "rule:context_is_admin or (role:member and project_id:%(member_id)s)";
/// `ADMIN_OR_PROJECT_READER_OR_SHARED_MEMBER` (upstream has no parentheses around the
/// `and`; precedence gives the same meaning).
const ADMIN_OR_PROJECT_READER_OR_SHARED_MEMBER: &str = "rule:context_is_admin or role:reader and \
     (project_id:%(project_id)s or project_id:%(member_id)s)";
/// `SERVICE_OR_PROJECT_MEMBER`.
const SERVICE_OR_PROJECT_MEMBER: &str = "rule:service_api or (role:member and \
     project_id:%(project_id)s and project_id:%(owner)s)";

const fn rule(name: &'static str, rule: &'static str, description: &'static str) -> RuleDefault {
    RuleDefault {
        name,
        rule,
        description,
    }
}

/// Every rule, in upstream's registration order.
pub(super) const RULES: &[RuleDefault] = &[
    // base.py
    rule(
        "default",
        "",
        "Defines the default rule used for policies that historically had an empty \
         policy in the supplied policy.json file.",
    ),
    rule(
        "context_is_admin",
        "role:admin",
        "Defines the rule for the is_admin:True check.",
    ),
    rule(
        "service_api",
        "role:service or role:admin",
        "Default rule for the service-to-service API.",
    ),
    // image.py
    rule(
        "add_image",
        ADMIN_OR_PROJECT_MEMBER_CREATE_IMAGE,
        "Create new image",
    ),
    rule("delete_image", ADMIN_OR_PROJECT_MEMBER, "Deletes the image"),
    rule(
        "get_image",
        ADMIN_OR_PROJECT_READER_GET_IMAGE,
        "Get specified image",
    ),
    rule(
        "get_images",
        ADMIN_OR_PROJECT_READER,
        "Get all available images",
    ),
    rule(
        "modify_image",
        ADMIN_OR_PROJECT_MEMBER,
        "Updates given image",
    ),
    rule("publicize_image", ADMIN, "Publicize given image"),
    rule(
        "communitize_image",
        ADMIN_OR_PROJECT_MEMBER,
        "Communitize given image",
    ),
    rule(
        "download_image",
        ADMIN_OR_PROJECT_MEMBER_DOWNLOAD_IMAGE,
        "Downloads given image",
    ),
    rule(
        "download_from_store",
        ADMIN_OR_PROJECT_MEMBER_DOWNLOAD_IMAGE,
        "Downloads image from specific store using store selection parameters",
    ),
    rule(
        "upload_image",
        ADMIN_OR_PROJECT_MEMBER,
        "Uploads data to specified image",
    ),
    rule(
        "delete_image_location",
        ADMIN,
        "Deletes the location of given image",
    ),
    rule(
        "get_image_location",
        ADMIN_OR_PROJECT_READER,
        "Reads the location of the image",
    ),
    rule(
        "set_image_location",
        ADMIN_OR_PROJECT_MEMBER,
        "Sets location URI to given image",
    ),
    rule(
        "add_image_location",
        SERVICE_OR_PROJECT_MEMBER,
        "Add location URI to given image",
    ),
    rule(
        "fetch_image_location",
        SERVICE,
        "Show all locations associated to given image",
    ),
    rule("add_member", ADMIN_OR_PROJECT_MEMBER, "Create image member"),
    rule(
        "delete_member",
        ADMIN_OR_PROJECT_MEMBER,
        "Delete image member",
    ),
    rule(
        "get_member",
        ADMIN_OR_PROJECT_READER_OR_SHARED_MEMBER,
        "Show image member details",
    ),
    rule(
        "get_members",
        ADMIN_OR_PROJECT_READER_OR_SHARED_MEMBER,
        "List image members",
    ),
    rule(
        "modify_member",
        ADMIN_OR_SHARED_MEMBER,
        "Update image member",
    ),
    rule("manage_image_cache", ADMIN, "Manage image cache"),
    rule("deactivate", ADMIN_OR_PROJECT_MEMBER, "Deactivate image"),
    rule("reactivate", ADMIN_OR_PROJECT_MEMBER, "Reactivate image"),
    rule("copy_image", ADMIN, "Copy existing image to other stores"),
    rule(
        "list_cached_nodes",
        ADMIN,
        "Get all nodes where specified image is cached",
    ),
    // cache.py
    rule("cache_image", ADMIN, "Queue image for caching"),
    rule("cache_list", ADMIN, "List cache status"),
    rule(
        "cache_delete",
        ADMIN,
        "Delete image(s) from cache and/or queue",
    ),
    rule(
        "cache_clean",
        ADMIN,
        "Clean invalid and stalled cached images",
    ),
    rule(
        "cache_prune",
        ADMIN,
        "Prune cached images to reduce cache size",
    ),
    // discovery.py
    rule(
        "stores_info_detail",
        ADMIN_OR_SERVICE_ROLE,
        "Expose store specific information",
    ),
    // tasks.py
    rule("get_task", DEFAULT, "Get an image task."),
    rule("get_tasks", DEFAULT, "List tasks for all images."),
    rule("add_task", DEFAULT, "List tasks for all images."),
    rule("modify_task", DEFAULT, "This policy is not used."),
    rule(
        "tasks_api_access",
        ADMIN,
        "This is a generic blanket policy for protecting all task APIs.",
    ),
    // metadef.py
    rule("metadef_default", "", ""),
    rule("metadef_admin", ADMIN, ""),
    rule(
        "get_metadef_namespace",
        ADMIN_OR_PROJECT_READER_GET_NAMESPACE,
        "Get a specific namespace.",
    ),
    rule(
        "get_metadef_namespaces",
        ADMIN_OR_PROJECT_READER,
        "List namespace.",
    ),
    rule(
        "modify_metadef_namespace",
        METADEF_ADMIN,
        "Modify an existing namespace.",
    ),
    rule(
        "add_metadef_namespace",
        METADEF_ADMIN,
        "Create a namespace.",
    ),
    rule(
        "delete_metadef_namespace",
        METADEF_ADMIN,
        "Delete a namespace.",
    ),
    rule(
        "get_metadef_object",
        ADMIN_OR_PROJECT_READER_GET_NAMESPACE,
        "Get a specific object from a namespace.",
    ),
    rule(
        "get_metadef_objects",
        ADMIN_OR_PROJECT_READER_GET_NAMESPACE,
        "Get objects from a namespace.",
    ),
    rule(
        "modify_metadef_object",
        METADEF_ADMIN,
        "Update an object within a namespace.",
    ),
    rule(
        "add_metadef_object",
        METADEF_ADMIN,
        "Create an object within a namespace.",
    ),
    rule(
        "delete_metadef_object",
        METADEF_ADMIN,
        "Delete an object within a namespace.",
    ),
    rule(
        "list_metadef_resource_types",
        ADMIN_OR_PROJECT_READER_GET_NAMESPACE,
        "List meta definition resource types.",
    ),
    rule(
        "get_metadef_resource_type",
        ADMIN_OR_PROJECT_READER_GET_NAMESPACE,
        "Get meta definition resource types associations.",
    ),
    rule(
        "add_metadef_resource_type_association",
        METADEF_ADMIN,
        "Create meta definition resource types association.",
    ),
    rule(
        "remove_metadef_resource_type_association",
        METADEF_ADMIN,
        "Delete meta definition resource type association.",
    ),
    rule(
        "get_metadef_property",
        ADMIN_OR_PROJECT_READER_GET_NAMESPACE,
        "Get a specific meta definition property.",
    ),
    rule(
        "get_metadef_properties",
        ADMIN_OR_PROJECT_READER_GET_NAMESPACE,
        "List meta definition properties.",
    ),
    rule(
        "modify_metadef_property",
        METADEF_ADMIN,
        "Update meta definition property.",
    ),
    rule(
        "add_metadef_property",
        METADEF_ADMIN,
        "Create meta definition property.",
    ),
    rule(
        "remove_metadef_property",
        METADEF_ADMIN,
        "Delete meta definition property.",
    ),
    rule(
        "get_metadef_tag",
        ADMIN_OR_PROJECT_READER_GET_NAMESPACE,
        "Get tag definition.",
    ),
    rule(
        "get_metadef_tags",
        ADMIN_OR_PROJECT_READER_GET_NAMESPACE,
        "List tag definitions.",
    ),
    rule(
        "modify_metadef_tag",
        METADEF_ADMIN,
        "Update tag definition.",
    ),
    rule("add_metadef_tag", METADEF_ADMIN, "Add tag definition."),
    rule("add_metadef_tags", METADEF_ADMIN, "Create tag definitions."),
    rule(
        "delete_metadef_tag",
        METADEF_ADMIN,
        "Delete tag definition.",
    ),
    rule(
        "delete_metadef_tags",
        METADEF_ADMIN,
        "Delete tag definitions.",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse::parse_text;
    use std::collections::BTreeSet;

    #[test]
    fn every_default_parses_and_names_are_unique() {
        let mut names = BTreeSet::new();
        for default in RULES {
            assert!(names.insert(default.name), "{} twice", default.name);
            if let Err(e) = parse_text(default.rule) {
                panic!("{}: {e}", default.name);
            }
        }
    }

    #[test]
    fn referenced_rules_are_defined() {
        let names: BTreeSet<_> = RULES.iter().map(|d| d.name).collect();
        for default in RULES {
            for reference in parse_text(default.rule).unwrap().references() {
                assert!(names.contains(reference), "{} -> {reference}", default.name);
            }
        }
    }
}
