//! Authorization as upstream Glance does it: oslo.policy's rule language, Glance 33's
//! default rules, and an operator's `policy.yaml` layered over them.
//!
//! # Rules in effect
//!
//! [`Policy::defaults`] holds every rule Glance 33.0.0 registers for images, members,
//! locations, the cache API, tasks and store discovery (see `defaults.rs` for the
//! table). They are the new ("secure RBAC") check strings: oslo.policy only ORs in the
//! deprecated ones while `[oslo_policy] enforce_new_defaults` is false, and that option
//! is true by default in oslo.policy 6 (what Glance 33 requires); Glance does not change
//! it, and this server does not read it. So, by default, images are readable by a
//! `reader` of the owning project (or of any project for public, community and shared
//! images), writable by a `member` of the owning project, and the cache API is for
//! `admin` only; the `default` rule is `""` (always passes).
//!
//! oslo.policy 6 also always enforces a rule's `scope_types` (the `enforce_scope`
//! option is gone): Glance's rules are `project`-scoped, so oslo refuses
//! system- and domain-scoped tokens for them. [`Credentials`] carry no scope, so every
//! caller counts as project-scoped; the caller decides what to do with other tokens.
//!
//! # Policy files
//!
//! [`Policy::from_config`] reads `[oslo_policy] policy_file` (default `policy.yaml`) and
//! then every file of `[oslo_policy] policy_dirs` (default `policy.d`; hidden files
//! skipped, in name order). A relative name is looked for in the directories of the
//! configuration files read, last read first, as oslo.config's `find_file` does (there
//! is no search of `~/.glance`, `/etc/glance` or `/etc`, as there is none for the
//! configuration files themselves). Each file is a YAML (or JSON) mapping of rule name to
//! rule; a rule it names replaces that rule, the others keep their values.
//! `[oslo_policy] policy_default_rule` (default `default`) names the rule that stands for
//! actions (and `rule:` references) that are not defined.
//!
//! Where oslo logs and carries on, this module refuses to start, with an error naming
//! the option, the file and the rule: a rule that does not parse (oslo treats it as
//! `!`), an empty (`null`) or non-string rule value (oslo treats `null` as "always"),
//! rules that refer to each other in a cycle, and a `policy_file` that is set but does
//! not exist (oslo ignores it). A missing `policy_file` at the default name, or a missing
//! `policy_dirs` directory, means the defaults only, as in oslo. Rules that refer to
//! undefined rules are logged, as by oslo. The YAML is read as YAML 1.2 (unquoted
//! `yes`/`no` are strings) and a rule named twice in one file is an error.
//!
//! # Credentials
//!
//! A generic check reads `user_id`, `project_id`, `roles` and `is_admin` (`True` or
//! `False`) from the [`Credentials`]; every other credential is absent. Upstream's
//! credentials (`RequestContext.to_policy_values()`) hold no `is_admin`, so there
//! `is_admin:True` never passes; here it tests [`Credentials::is_admin`]. A credential
//! or target value that is absent makes its check fail (oslo compares Python's `None`
//! as the text `"None"`).

mod defaults;
mod parse;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde_yaml::Value;
use thiserror::Error;
use tracing::{debug, info, warn};

use crate::conf::Config;
use parse::{Check, ListItem, RuleSet};

/// The configuration section of the policy options.
const SECTION: &str = "oslo_policy";
/// oslo.policy's default `[oslo_policy] policy_file`.
pub const DEFAULT_POLICY_FILE: &str = "policy.yaml";
/// oslo.policy's default `[oslo_policy] policy_dirs`.
const DEFAULT_POLICY_DIRS: &str = "policy.d";
/// oslo.policy's default `[oslo_policy] policy_default_rule`.
const DEFAULT_RULE: &str = "default";
/// Where the built-in rules come from, in errors and logs.
const DEFAULTS_ORIGIN: &str = "Glance 33 defaults";
/// The rule [`Policy::is_admin`] evaluates.
const CONTEXT_IS_ADMIN: &str = "context_is_admin";

/// Who asks: from the validated Keystone token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credentials<'a> {
    /// The user's id.
    pub user_id: Option<&'a str>,
    /// The project the token is scoped to.
    pub project_id: Option<&'a str>,
    /// Role names, lower-cased.
    pub roles: &'a [String],
    /// Glance's `context.is_admin`, computed with [`Policy::is_admin`].
    pub is_admin: bool,
}

/// What is acted on: string values keyed by oslo's target names (`project_id`, `owner`,
/// `visibility`, `member_id`, ...). A key that is absent fails every check that uses it.
pub type Target = BTreeMap<String, String>;

/// What a rule's `%(key)s` reads: a [`Target`], or anything that answers by key without
/// building one (an image's attributes, looked up as a check asks for them).
pub trait Lookup {
    /// The value of `key`, None when absent.
    fn value(&self, key: &str) -> Option<Cow<'_, str>>;
}

impl Lookup for Target {
    fn value(&self, key: &str) -> Option<Cow<'_, str>> {
        self.get(key).map(|v| Cow::Borrowed(v.as_str()))
    }
}

/// A policy refusal, with Glance's message for it (`glance.common.exception.Forbidden`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("You are not authorized to complete {action} action.")]
pub struct Forbidden {
    /// The rule (action) that refused.
    pub action: String,
}

/// Policy rules that cannot be loaded.
#[derive(Debug, Error)]
pub enum PolicyError {
    /// A rule is not in the policy language.
    #[error("{origin}: policy rule {rule:?} = {text:?} does not parse: {reason}")]
    InvalidRule {
        /// Where the rule comes from (a file and the option naming it).
        origin: String,
        /// The rule's name.
        rule: String,
        /// The rule as written.
        text: String,
        /// What is wrong.
        reason: String,
    },
    /// The text is not a mapping of rule names to rules.
    #[error(
        "{origin}: not a policy file (a YAML or JSON mapping of rule names to rules): {reason}"
    )]
    InvalidFile {
        /// Where the text comes from.
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// Rules refer to each other in a cycle (an undefined rule stands for the default).
    #[error("policy rules refer to each other in a cycle: {chain}")]
    Cycle {
        /// The rules, the first repeated at the end.
        rules: Vec<String>,
        /// The rules with where each comes from.
        chain: String,
    },
    /// A policy file set in the configuration does not exist.
    #[error("[oslo_policy] {option} = {value:?} (from {set_at}): no such file ({searched})")]
    NotFound {
        /// The option.
        option: String,
        /// Its value.
        value: String,
        /// `file:line` where it is set.
        set_at: String,
        /// Where it was looked for.
        searched: String,
    },
    /// A policy file or directory cannot be read.
    #[error("[oslo_policy] {option}: cannot read {}: {source}", .path.display())]
    Read {
        /// The option naming it.
        option: String,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// `policy_dirs` names something that is not a directory.
    #[error("[oslo_policy] {option}: {} is not a directory", .path.display())]
    NotADirectory {
        /// The option.
        option: String,
        /// What it names.
        path: PathBuf,
    },
}

/// One rule and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    text: String,
    check: Check,
    origin: String,
}

/// A set of policy rules: Glance's defaults, maybe with an operator's overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    rules: BTreeMap<String, Rule>,
    default_rule: String,
}

impl Policy {
    /// Glance 33's defaults only.
    pub fn defaults() -> Policy {
        let rules = defaults::RULES
            .iter()
            .map(|default| {
                // Invariant: upstream's default strings parse (a unit test parses each).
                let check = parse::parse_text(default.rule).expect("Glance's defaults parse");
                let rule = Rule {
                    text: default.rule.to_owned(),
                    check,
                    origin: DEFAULTS_ORIGIN.to_owned(),
                };
                (default.name.to_owned(), rule)
            })
            .collect();
        Policy {
            rules,
            default_rule: DEFAULT_RULE.to_owned(),
        }
    }

    /// `[oslo_policy] policy_file` (default `policy.yaml`) and `policy_dirs` (default
    /// `policy.d`) layered over the defaults; see the module docs for where they are
    /// looked for and what is an error.
    pub fn from_config(config: &Config) -> Result<Policy, PolicyError> {
        let mut policy = Policy::defaults();
        if let Some(name) = option(config, "policy_default_rule") {
            policy.default_rule = name.to_owned();
        }
        let dirs = search_dirs(config);
        let policy = policy
            .layer_policy_file(config, &dirs)?
            .layer_policy_dirs(config, &dirs)?;
        policy.validate()?;
        let overridden = policy
            .rules
            .values()
            .filter(|rule| rule.origin != DEFAULTS_ORIGIN)
            .count();
        info!(
            rules = policy.rules.len(),
            overridden,
            default_rule = %policy.default_rule,
            "policy rules loaded"
        );
        Ok(policy)
    }

    /// Overrides from policy.yaml / policy.json text (a YAML mapping of rule name to rule
    /// string; JSON is YAML). `source` names the text in errors and logs.
    pub fn with_overrides(self, text: &str, source: &str) -> Result<Policy, PolicyError> {
        let policy = self.layer(text, source)?;
        policy.validate()?;
        Ok(policy)
    }

    /// oslo's `enforce()`: whether `action`'s rule passes for `creds` acting on `target`.
    /// An undefined action uses the default rule; without one it is refused.
    pub fn enforce(&self, action: &str, creds: &Credentials<'_>, target: &dyn Lookup) -> bool {
        let Some((name, rule)) = self.lookup(action) else {
            debug!(action, "no such policy rule and no default rule: refused");
            return false;
        };
        let allowed = rule.check.evaluate(self, creds, target);
        debug!(action, rule = name, allowed, "policy check");
        allowed
    }

    /// [`Policy::enforce`], with Glance's refusal.
    pub fn authorize(
        &self,
        action: &str,
        creds: &Credentials<'_>,
        target: &dyn Lookup,
    ) -> Result<(), Forbidden> {
        if self.enforce(action, creds, target) {
            Ok(())
        } else {
            Err(Forbidden {
                action: action.to_owned(),
            })
        }
    }

    /// Glance's `context.is_admin`: the `context_is_admin` rule for these credentials,
    /// with the request context (`user`, `project_id`, `project`, `is_admin` = `False`)
    /// as the target, as Glance's `check_is_admin` does.
    pub fn is_admin(
        &self,
        user_id: Option<&str>,
        project_id: Option<&str>,
        roles: &[String],
    ) -> bool {
        let creds = Credentials {
            user_id,
            project_id,
            roles,
            is_admin: false,
        };
        self.enforce(CONTEXT_IS_ADMIN, &creds, &context_target(&creds))
    }

    /// The rule `name` as written (in the defaults or an override), if it is defined.
    pub fn rule(&self, name: &str) -> Option<&str> {
        self.rules.get(name).map(|rule| rule.text.as_str())
    }

    /// The rule for `name`, or the default rule, with the name of the one found.
    fn lookup(&self, name: &str) -> Option<(&str, &Rule)> {
        self.rules
            .get_key_value(name)
            .or_else(|| self.rules.get_key_value(&self.default_rule))
            .map(|(name, rule)| (name.as_str(), rule))
    }

    /// The rules of `text` replace those of the same names; nothing is validated yet.
    fn layer(mut self, text: &str, origin: &str) -> Result<Policy, PolicyError> {
        let mut redundant = Vec::new();
        for (name, rule) in parse_document(text, origin)? {
            if defaults::RULES
                .iter()
                .any(|d| d.name == name && d.rule == rule.text)
            {
                redundant.push(name.clone());
            }
            self.rules.insert(name, rule);
        }
        if !redundant.is_empty() {
            warn!(
                origin,
                rules = ?redundant,
                "policy rules in this file are the same as Glance's defaults; they can be removed"
            );
        }
        Ok(self)
    }

    /// `[oslo_policy] policy_file`, if it exists (or must).
    fn layer_policy_file(self, config: &Config, dirs: &[PathBuf]) -> Result<Policy, PolicyError> {
        let explicit = option(config, "policy_file");
        let name = explicit.unwrap_or(DEFAULT_POLICY_FILE);
        match (find_file(name, dirs), explicit) {
            (Some(path), _) => self.layer_file(&path, "policy_file"),
            (None, None) => {
                debug!(file = name, "no policy file; Glance's default rules apply");
                Ok(self)
            }
            (None, Some(_)) => Err(PolicyError::NotFound {
                option: "policy_file".to_owned(),
                value: name.to_owned(),
                set_at: config.source_of(SECTION, "policy_file").unwrap_or_default(),
                searched: describe_search(name, dirs),
            }),
        }
    }

    /// Every file of `[oslo_policy] policy_dirs`, if the directory exists.
    fn layer_policy_dirs(
        mut self,
        config: &Config,
        dirs: &[PathBuf],
    ) -> Result<Policy, PolicyError> {
        let name = option(config, "policy_dirs").unwrap_or(DEFAULT_POLICY_DIRS);
        let Some(dir) = find_file(name, dirs) else {
            debug!(dir = name, "no policy directory");
            return Ok(self);
        };
        for path in policy_dir_files(&dir)? {
            self = self.layer_file(&path, "policy_dirs")?;
        }
        Ok(self)
    }

    fn layer_file(self, path: &Path, option: &str) -> Result<Policy, PolicyError> {
        let text = fs::read_to_string(path).map_err(|source| PolicyError::Read {
            option: option.to_owned(),
            path: path.to_path_buf(),
            source,
        })?;
        let origin = format!("{} ([{SECTION}] {option})", path.display());
        let policy = self.layer(&text, &origin)?;
        info!(file = %path.display(), "policy file loaded");
        Ok(policy)
    }

    /// Refuses cycles; logs references to undefined rules.
    fn validate(&self) -> Result<(), PolicyError> {
        if let Some(cycle) = self.find_cycle() {
            let chain = cycle
                .iter()
                .map(|name| match self.rules.get(name) {
                    Some(rule) => format!("{name:?} = {:?} (from {})", rule.text, rule.origin),
                    None => format!("{name:?}"),
                })
                .collect::<Vec<_>>()
                .join(" -> ");
            return Err(PolicyError::Cycle {
                rules: cycle,
                chain,
            });
        }
        self.warn_undefined();
        Ok(())
    }

    fn warn_undefined(&self) {
        let referring: Vec<&str> = self
            .rules
            .iter()
            .filter(|(_, rule)| {
                rule.check
                    .references()
                    .iter()
                    .any(|name| !self.rules.contains_key(*name))
            })
            .map(|(name, _)| name.as_str())
            .collect();
        if !referring.is_empty() {
            warn!(
                rules = ?referring,
                default_rule = %self.default_rule,
                "policy rules refer to rules that are not defined; such a reference \
                 stands for the default rule (and fails without one)"
            );
        }
    }

    /// The first cycle of `rule:` references, as rule names with the first repeated.
    fn find_cycle(&self) -> Option<Vec<String>> {
        let mut done = BTreeSet::new();
        self.rules.keys().find_map(|name| {
            let mut path = Vec::new();
            self.visit(name, &mut path, &mut done)
        })
    }

    /// Depth-first search from `name`; `path` holds the rules being visited.
    fn visit<'a>(
        &'a self,
        name: &'a str,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| *n == name) {
            let mut cycle: Vec<String> = path[at..].iter().map(|n| (*n).to_owned()).collect();
            cycle.push(name.to_owned());
            return Some(cycle);
        }
        if done.contains(name) {
            return None;
        }
        let (_, rule) = self.lookup(name)?;
        path.push(name);
        for reference in rule.check.references() {
            let Some((next, _)) = self.lookup(reference) else {
                continue;
            };
            if let Some(cycle) = self.visit(next, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(name);
        None
    }
}

impl RuleSet for Policy {
    fn resolve(&self, name: &str) -> Option<&Check> {
        self.lookup(name).map(|(_, rule)| &rule.check)
    }
}

/// A `[oslo_policy]` option; an empty value counts as unset.
fn option<'a>(config: &'a Config, key: &str) -> Option<&'a str> {
    config.get(SECTION, key).filter(|value| !value.is_empty())
}

/// The directories of the configuration files read, last read first.
fn search_dirs(config: &Config) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for file in config.files().iter().rev() {
        let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs
}

/// `name` if absolute and existing, else the first of `dirs` holding it.
fn find_file(name: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    let path = Path::new(name);
    if path.is_absolute() {
        return path.exists().then(|| path.to_path_buf());
    }
    dirs.iter().map(|dir| dir.join(path)).find(|p| p.exists())
}

fn describe_search(name: &str, dirs: &[PathBuf]) -> String {
    if Path::new(name).is_absolute() {
        return "absolute path".to_owned();
    }
    if dirs.is_empty() {
        return "no configuration file was read, so a relative path has nowhere to be \
                looked for"
            .to_owned();
    }
    let dirs: Vec<String> = dirs
        .iter()
        .map(|dir| match dir.as_os_str().is_empty() {
            true => ".".to_owned(),
            false => dir.display().to_string(),
        })
        .collect();
    format!("looked in {}", dirs.join(", "))
}

/// The files directly in `dir` that oslo reads: not hidden, not directories, by name.
fn policy_dir_files(dir: &Path) -> Result<Vec<PathBuf>, PolicyError> {
    if !dir.is_dir() {
        return Err(PolicyError::NotADirectory {
            option: "policy_dirs".to_owned(),
            path: dir.to_path_buf(),
        });
    }
    crate::conf::files_in(dir, |_| true).map_err(|source| PolicyError::Read {
        option: "policy_dirs".to_owned(),
        path: dir.to_path_buf(),
        source,
    })
}

/// Glance's `context.to_dict()`, the target of `context_is_admin`, as far as
/// [`Credentials`] know it.
fn context_target(creds: &Credentials<'_>) -> Target {
    let mut target = Target::new();
    if let Some(user) = creds.user_id {
        target.insert("user".to_owned(), user.to_owned());
    }
    if let Some(project) = creds.project_id {
        target.insert("project_id".to_owned(), project.to_owned());
        target.insert("project".to_owned(), project.to_owned());
    }
    let is_admin = if creds.is_admin { "True" } else { "False" };
    target.insert("is_admin".to_owned(), is_admin.to_owned());
    target
}

/// The rules of a policy file, in file order.
fn parse_document(text: &str, origin: &str) -> Result<Vec<(String, Rule)>, PolicyError> {
    let invalid = |reason: String| PolicyError::InvalidFile {
        origin: origin.to_owned(),
        reason,
    };
    let document: Value = serde_yaml::from_str(text).map_err(|e| invalid(e.to_string()))?;
    let mapping = match document {
        Value::Null => return Ok(Vec::new()),
        Value::Mapping(mapping) => mapping,
        other => return Err(invalid(format!("the document is {}", render(&other)))),
    };
    mapping
        .into_iter()
        .map(|(key, value)| match key {
            Value::String(name) => {
                let rule = parse_rule(&name, &value, origin)?;
                Ok((name, rule))
            }
            other => Err(invalid(format!(
                "rule name {} is not a string",
                render(&other)
            ))),
        })
        .collect()
}

/// One rule's value: a string, or the list-of-lists form.
fn parse_rule(name: &str, value: &Value, origin: &str) -> Result<Rule, PolicyError> {
    let invalid = |text: String, reason: String| PolicyError::InvalidRule {
        origin: origin.to_owned(),
        rule: name.to_owned(),
        text,
        reason,
    };
    let (text, parsed) = match value {
        Value::String(text) => (text.clone(), parse::parse_text(text)),
        Value::Sequence(items) => {
            let text = render(value);
            let items = list_items(items).map_err(|reason| invalid(text.clone(), reason))?;
            (text, parse::parse_list(&items))
        }
        Value::Null => {
            let reason = "the value is empty; write \"\" for a rule that always passes, \
                          \"!\" for one that never does";
            return Err(invalid(String::new(), reason.to_owned()));
        }
        other => {
            let reason = "a rule is a string (or a list of lists of strings)";
            return Err(invalid(render(other), reason.to_owned()));
        }
    };
    let check = parsed.map_err(|reason| invalid(text.clone(), reason))?;
    Ok(Rule {
        text,
        check,
        origin: origin.to_owned(),
    })
}

fn list_items(items: &[Value]) -> Result<Vec<ListItem>, String> {
    items
        .iter()
        .map(|item| match item {
            Value::String(text) => Ok(ListItem::One(text.clone())),
            Value::Sequence(inner) => inner
                .iter()
                .map(|value| match value {
                    Value::String(text) => Ok(text.clone()),
                    other => Err(format!("{} in a rule list is not a string", render(other))),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(ListItem::All),
            other => Err(format!(
                "{} in a rule list is neither a string nor a list of strings",
                render(other)
            )),
        })
        .collect()
}

/// A YAML value for a message.
fn render(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| format!("{value:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write as _;

    fn roles(names: &[&str]) -> Vec<String> {
        names.iter().map(|r| r.to_string()).collect()
    }

    fn target(pairs: &[(&str, &str)]) -> Target {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// A caller in `project` with `roles`, `is_admin` as Glance computes it.
    fn check(policy: &Policy, action: &str, project: &str, roles: &[String], t: &Target) -> bool {
        let creds = Credentials {
            user_id: Some("user-1"),
            project_id: Some(project),
            roles,
            is_admin: policy.is_admin(Some("user-1"), Some(project), roles),
        };
        policy.enforce(action, &creds, t)
    }

    /// An image's target as Glance's `ImageTarget` gives it (`member_id` only for a
    /// shared image seen by a project other than the owner).
    fn image(owner: &str, visibility: &str) -> Target {
        target(&[
            ("project_id", owner),
            ("owner", owner),
            ("visibility", visibility),
        ])
    }

    #[test]
    fn policy_is_send_sync_clone_debug() {
        fn assert_traits<T: Send + Sync + Clone + std::fmt::Debug>() {}
        assert_traits::<Policy>();
    }

    #[test]
    fn only_admins_manage_the_cache() {
        let policy = Policy::defaults();
        let member = roles(&["member", "reader"]);
        let admin = roles(&["admin"]);
        let none = Target::new();
        for action in [
            "cache_list",
            "cache_image",
            "cache_delete",
            "cache_clean",
            "cache_prune",
            "manage_image_cache",
            "list_cached_nodes",
        ] {
            assert!(
                !check(&policy, action, "project-a", &member, &none),
                "{action}"
            );
            assert!(
                check(&policy, action, "project-a", &admin, &none),
                "{action}"
            );
        }
    }

    #[test]
    fn get_image_follows_owner_and_visibility() {
        let policy = Policy::defaults();
        let reader = roles(&["reader"]);
        let mine = image("project-a", "private");
        let theirs = image("project-b", "private");
        assert!(check(&policy, "get_image", "project-a", &reader, &mine));
        assert!(!check(&policy, "get_image", "project-a", &reader, &theirs));
        for visibility in ["public", "community", "shared"] {
            let t = image("project-b", visibility);
            assert!(
                check(&policy, "get_image", "project-a", &reader, &t),
                "{visibility}"
            );
        }
        let no_role = roles(&["observer"]);
        let public = image("project-b", "public");
        assert!(!check(&policy, "get_image", "project-a", &no_role, &public));
        assert!(check(
            &policy,
            "get_image",
            "project-a",
            &roles(&["admin"]),
            &theirs
        ));
    }

    #[test]
    fn writes_need_a_member_of_the_owning_project() {
        let policy = Policy::defaults();
        let member = roles(&["member", "reader"]);
        let reader = roles(&["reader"]);
        let mine = image("project-a", "private");
        let public = image("project-b", "public");
        for action in ["modify_image", "delete_image", "upload_image", "deactivate"] {
            assert!(
                check(&policy, action, "project-a", &member, &mine),
                "{action}"
            );
            assert!(
                !check(&policy, action, "project-a", &reader, &mine),
                "{action}"
            );
            assert!(
                !check(&policy, action, "project-a", &member, &public),
                "{action}"
            );
        }
        assert!(check(
            &policy,
            "download_image",
            "project-a",
            &member,
            &public
        ));
        assert!(!check(
            &policy,
            "download_image",
            "project-a",
            &reader,
            &public
        ));
        assert!(!check(
            &policy,
            "publicize_image",
            "project-a",
            &member,
            &mine
        ));
        assert!(check(
            &policy,
            "communitize_image",
            "project-a",
            &member,
            &mine
        ));
    }

    #[test]
    fn add_image_needs_the_caller_to_own_it() {
        let policy = Policy::defaults();
        let member = roles(&["member"]);
        let own = image("project-a", "private");
        let other = target(&[("project_id", "project-a"), ("owner", "project-b")]);
        assert!(check(&policy, "add_image", "project-a", &member, &own));
        assert!(!check(&policy, "add_image", "project-a", &member, &other));
    }

    #[test]
    fn modify_member_is_for_the_member_project_only() {
        let policy = Policy::defaults();
        let member = roles(&["member", "reader"]);
        // Project B sees A's shared image as a member: member_id is B.
        let as_member = target(&[
            ("project_id", "project-a"),
            ("visibility", "shared"),
            ("member_id", "project-b"),
        ]);
        assert!(check(
            &policy,
            "modify_member",
            "project-b",
            &member,
            &as_member
        ));
        assert!(!check(
            &policy,
            "modify_member",
            "project-c",
            &member,
            &as_member
        ));
        // The owner has no member_id in the target: it cannot accept for others.
        let as_owner = image("project-a", "shared");
        assert!(!check(
            &policy,
            "modify_member",
            "project-a",
            &member,
            &as_owner
        ));
        assert!(check(
            &policy,
            "add_member",
            "project-a",
            &member,
            &as_owner
        ));
        assert!(!check(
            &policy,
            "add_member",
            "project-b",
            &member,
            &as_member
        ));
        assert!(check(
            &policy,
            "get_members",
            "project-b",
            &roles(&["reader"]),
            &as_member
        ));
        let admin = roles(&["admin"]);
        assert!(check(
            &policy,
            "modify_member",
            "project-z",
            &admin,
            &as_owner
        ));
    }

    #[test]
    fn authorize_refuses_with_glances_message() {
        let policy = Policy::defaults();
        let member = roles(&["member"]);
        let creds = Credentials {
            user_id: None,
            project_id: Some("p"),
            roles: &member,
            is_admin: false,
        };
        let err = policy
            .authorize("cache_list", &creds, &Target::new())
            .unwrap_err();
        assert_eq!(err.action, "cache_list");
        assert_eq!(
            err.to_string(),
            "You are not authorized to complete cache_list action."
        );
        let mine = image("p", "private");
        assert_eq!(policy.authorize("modify_image", &creds, &mine), Ok(()));
    }

    #[test]
    fn is_admin_uses_context_is_admin() {
        let policy = Policy::defaults();
        assert!(policy.is_admin(None, Some("p"), &roles(&["admin"])));
        assert!(!policy.is_admin(None, Some("p"), &roles(&["member"])));

        let text = "context_is_admin: \"role:cloud-admin or 'ops':%(project_id)s\"\n";
        let policy = Policy::defaults().with_overrides(text, "test").unwrap();
        assert!(!policy.is_admin(Some("u"), Some("p"), &roles(&["admin"])));
        assert!(policy.is_admin(Some("u"), Some("p"), &roles(&["cloud-admin"])));
        assert!(policy.is_admin(Some("u"), Some("ops"), &roles(&[])));
        // Every rule built on context_is_admin follows.
        let t = Target::new();
        assert!(check(
            &policy,
            "cache_list",
            "p",
            &roles(&["cloud-admin"]),
            &t
        ));
        assert!(!check(&policy, "cache_list", "p", &roles(&["admin"]), &t));
    }

    #[test]
    fn an_override_replaces_one_rule_and_keeps_the_others() {
        let text = "cache_list: \"role:member\"\n";
        let policy = Policy::defaults().with_overrides(text, "test").unwrap();
        assert_eq!(policy.rule("cache_list"), Some("role:member"));
        assert_eq!(policy.rule("cache_image"), Some("rule:context_is_admin"));
        let member = roles(&["member"]);
        let t = Target::new();
        assert!(check(&policy, "cache_list", "p", &member, &t));
        assert!(!check(&policy, "cache_image", "p", &member, &t));
        // A later layer replaces the earlier one.
        let policy = policy
            .with_overrides("{\"cache_list\": \"!\"}", "json")
            .unwrap();
        assert!(!check(&policy, "cache_list", "p", &roles(&["admin"]), &t));
    }

    #[test]
    fn undefined_actions_use_the_default_rule() {
        let policy = Policy::defaults();
        let nobody = roles(&[]);
        let t = Target::new();
        assert!(check(&policy, "no_such_action", "p", &nobody, &t));
        let policy = policy.with_overrides("default: '!'", "test").unwrap();
        assert!(!check(&policy, "no_such_action", "p", &nobody, &t));
        let policy = policy
            .with_overrides("x: rule:undefined or role:reader", "test")
            .unwrap();
        assert!(!check(&policy, "x", "p", &nobody, &t));
        assert!(check(&policy, "x", "p", &roles(&["reader"]), &t));
    }

    #[test]
    fn cycles_are_refused_naming_the_rules() {
        let text = "a: rule:b\nb: role:x or rule:a\n";
        let err = Policy::defaults()
            .with_overrides(text, "cyclic.yaml")
            .unwrap_err();
        let PolicyError::Cycle { rules, .. } = &err else {
            panic!("{err}");
        };
        assert_eq!(rules, &["a", "b", "a"]);
        let message = err.to_string();
        assert!(
            message.contains("\"a\" = \"rule:b\" (from cyclic.yaml)"),
            "{message}"
        );

        let err = Policy::defaults()
            .with_overrides("selfish: not rule:selfish", "t")
            .unwrap_err();
        assert!(matches!(err, PolicyError::Cycle { .. }), "{err}");
        // An undefined rule stands for the default rule, which can close a cycle.
        let err = Policy::defaults()
            .with_overrides("default: rule:nowhere", "t")
            .unwrap_err();
        assert!(matches!(err, PolicyError::Cycle { .. }), "{err}");
        // Shared references are not cycles.
        let diamond = "top: rule:l and rule:r\nl: rule:base\nr: rule:base\nbase: '@'\n";
        assert!(Policy::defaults().with_overrides(diamond, "t").is_ok());
    }

    #[test]
    fn bad_rules_and_files_are_errors_naming_them() {
        let err = Policy::defaults()
            .with_overrides("get_image: \"(role:reader\"\n", "policy.yaml")
            .unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with("policy.yaml: policy rule \"get_image\""),
            "{message}"
        );
        assert!(message.contains("(role:reader"), "{message}");

        let http = "get_image: \"http://example.com/check\"\n";
        assert!(Policy::defaults().with_overrides(http, "t").is_err());
        for text in ["get_image:\n", "get_image: 3\n", "get_image: [[1]]\n"] {
            let err = Policy::defaults().with_overrides(text, "t").unwrap_err();
            assert!(
                matches!(err, PolicyError::InvalidRule { .. }),
                "{text:?}: {err}"
            );
        }
        for text in ["- a\n- b\n", "just text", "{1: role:x}", "a: '@'\na: '!'\n"] {
            let err = Policy::defaults().with_overrides(text, "t").unwrap_err();
            assert!(
                matches!(err, PolicyError::InvalidFile { .. }),
                "{text:?}: {err}"
            );
        }
    }

    #[test]
    fn empty_documents_and_the_list_form_are_read() {
        let policy = Policy::defaults().with_overrides("", "t").unwrap();
        assert_eq!(
            policy.rule("get_image"),
            Policy::defaults().rule("get_image")
        );
        let text = "{\n\t\"cache_list\": [[\"role:member\", \"role:reader\"], [\"role:admin\"]],\n\t\"cache_image\": []\n}";
        let policy = Policy::defaults().with_overrides(text, "t").unwrap();
        let t = Target::new();
        assert!(check(
            &policy,
            "cache_list",
            "p",
            &roles(&["member", "reader"]),
            &t
        ));
        assert!(!check(&policy, "cache_list", "p", &roles(&["member"]), &t));
        assert!(check(&policy, "cache_image", "p", &roles(&[]), &t));
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, text).unwrap();
        path
    }

    fn config(dir: &Path, oslo_policy: &str) -> Config {
        let mut text = String::from("[DEFAULT]\nbind_port = 9292\n");
        if !oslo_policy.is_empty() {
            writeln!(text, "[oslo_policy]\n{oslo_policy}").unwrap();
        }
        Config::from_file(&write(dir, "glance-api.conf", &text)).unwrap()
    }

    #[test]
    fn from_config_without_a_policy_file_uses_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let policy = Policy::from_config(&config(dir.path(), "")).unwrap();
        assert_eq!(policy.rule("cache_list"), Some("rule:context_is_admin"));
        let policy = Policy::from_config(&Config::default()).unwrap();
        assert_eq!(policy.rule("default"), Some(""));
    }

    #[test]
    fn from_config_finds_policy_yaml_beside_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "policy.yaml", "cache_list: role:member\n");
        let policy = Policy::from_config(&config(dir.path(), "")).unwrap();
        assert_eq!(policy.rule("cache_list"), Some("role:member"));
        assert_eq!(policy.rule("cache_image"), Some("rule:context_is_admin"));
    }

    #[test]
    fn from_config_reads_a_named_file_and_policy_d() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "rules.json",
            "{\"cache_list\": \"role:member\"}",
        );
        fs::create_dir(dir.path().join("extra.d")).unwrap();
        let extra = dir.path().join("extra.d");
        write(
            &extra,
            "10-cache.yaml",
            "cache_list: role:reader\ncache_image: '@'\n",
        );
        write(&extra, "20-more.yaml", "cache_image: role:member\n");
        write(&extra, ".hidden.yaml", "cache_image: ']'\n");
        let conf = config(
            dir.path(),
            "policy_file = rules.json\npolicy_dirs = extra.d",
        );
        let policy = Policy::from_config(&conf).unwrap();
        assert_eq!(policy.rule("cache_list"), Some("role:reader"));
        assert_eq!(policy.rule("cache_image"), Some("role:member"));
    }

    #[test]
    fn from_config_refuses_a_missing_named_file() {
        let dir = tempfile::tempdir().unwrap();
        let conf = config(dir.path(), "policy_file = nowhere.yaml");
        let message = Policy::from_config(&conf).unwrap_err().to_string();
        assert!(
            message.starts_with("[oslo_policy] policy_file = \"nowhere.yaml\""),
            "{message}"
        );
        assert!(message.contains("glance-api.conf:"), "{message}");
        let absolute = format!("policy_file = {}", dir.path().join("gone.yaml").display());
        let conf = config(dir.path(), &absolute);
        assert!(matches!(
            Policy::from_config(&conf),
            Err(PolicyError::NotFound { .. })
        ));
    }

    #[test]
    fn from_config_names_option_file_and_rule_of_a_bad_rule() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            dir.path(),
            "policy.yaml",
            "get_image: \"role:reader and\"\n",
        );
        let message = Policy::from_config(&config(dir.path(), ""))
            .unwrap_err()
            .to_string();
        let expected = format!(
            "{} ([oslo_policy] policy_file): policy rule \"get_image\" = \"role:reader and\"",
            file.display()
        );
        assert!(message.starts_with(&expected), "{message}");
    }

    #[test]
    fn from_config_honours_policy_default_rule() {
        let dir = tempfile::tempdir().unwrap();
        let conf = config(dir.path(), "policy_default_rule = context_is_admin");
        let policy = Policy::from_config(&conf).unwrap();
        let t = Target::new();
        assert!(!check(&policy, "unknown", "p", &roles(&["member"]), &t));
        assert!(check(&policy, "unknown", "p", &roles(&["admin"]), &t));
    }
}
