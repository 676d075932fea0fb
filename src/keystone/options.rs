//! The `[keystone_authtoken]` options, with keystonemiddleware 13's names and defaults
//! (`auth_token/_opts.py`) and those of keystoneauth's `password` plugin.
//!
//! Options of keystonemiddleware that this implementation does not honour are refused
//! when they are set to anything but their default (`delay_auth_decision = true`,
//! `certfile`, `keyfile`, `auth_section`) rather than silently ignored; the memcache
//! options are ignored (the cache is in memory, per process).

use std::fmt;
use std::path::PathBuf;

use crate::conf::{ConfError, Config};

/// The section the options are read from.
pub const SECTION: &str = "keystone_authtoken";

/// A secret (password or token). Its `Debug` and `Display` print `***`, so it cannot
/// reach a log line or an error message by accident; [`Secret::expose`] gives the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The endpoint interface (`interface`) used to pick the identity endpoint from the
/// service token's catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interface {
    /// `public`.
    Public,
    /// `internal` (keystonemiddleware's default).
    Internal,
    /// `admin`.
    Admin,
}

impl Interface {
    /// The name as the catalog spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Interface::Public => "public",
            Interface::Internal => "internal",
            Interface::Admin => "admin",
        }
    }
}

/// A domain, by ID or by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainRef {
    /// `*_domain_id`.
    Id(String),
    /// `*_domain_name`.
    Name(String),
}

/// A user or a project as keystoneauth's `password` plugin names it: `<kind>_id`, or
/// `<kind>name` in `<kind>_domain_id`/`<kind>_domain_name` (or the default domain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedRef {
    /// `user_id` / `project_id`.
    Id(String),
    /// `username` / `project_name`, in its domain.
    Name {
        /// The name.
        name: String,
        /// Its domain.
        domain: DomainRef,
    },
}

/// The parsed `[keystone_authtoken]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthTokenOptions {
    /// `www_authenticate_uri`: sent to clients in `WWW-Authenticate`; no default
    /// (keystonemiddleware then falls back to the auth endpoint, `auth_url`).
    pub www_authenticate_uri: Option<String>,
    /// `auth_url`: the identity endpoint the service authenticates against.
    pub auth_url: String,
    /// The user (`user_id`, or `username` with its domain).
    pub user: NamedRef,
    /// `password`.
    pub password: Secret,
    /// The project scope (`project_id`, or `project_name` with its domain); none gives
    /// an unscoped service token.
    pub project: Option<NamedRef>,
    /// `interface`; default `internal`.
    pub interface: Interface,
    /// `region_name`; no default.
    pub region_name: Option<String>,
    /// `service_token_roles`; default `service`. Applies to an `X-Service-Token`.
    pub service_token_roles: Vec<String>,
    /// `service_token_roles_required`; default true in keystonemiddleware 13.
    pub service_token_roles_required: bool,
    /// `token_cache_time` in seconds; default 300; 0 disables the cache.
    pub token_cache_time: u64,
    /// `cafile`: PEM CA bundle for HTTPS to Keystone; default: Mozilla's roots.
    pub cafile: Option<PathBuf>,
    /// `insecure`: do not verify Keystone's certificate; default false.
    pub insecure: bool,
    /// `http_connect_timeout` in seconds: the timeout of a whole request to Keystone;
    /// no default (then only connecting is bounded, by 30 s).
    pub http_connect_timeout: Option<u64>,
    /// `http_request_max_retries`: retries after a failed connection; default 3.
    pub http_request_max_retries: u64,
}

fn non_empty<'a>(c: &'a Config, key: &str) -> Option<&'a str> {
    c.get(SECTION, key).map(str::trim).filter(|v| !v.is_empty())
}

fn missing(key: &str, why: &str) -> ConfError {
    ConfError::Missing {
        section: SECTION.to_owned(),
        key: key.to_owned(),
        why: why.to_owned(),
    }
}

/// `<prefix>_domain_id`, else `<prefix>_domain_name`, else `default_domain_id`, else
/// `default_domain_name` (keystoneauth's fallbacks).
fn domain(c: &Config, prefix: &str) -> Option<DomainRef> {
    let id = |k: &str| non_empty(c, k).map(|v| DomainRef::Id(v.to_owned()));
    let name = |k: &str| non_empty(c, k).map(|v| DomainRef::Name(v.to_owned()));
    id(&format!("{prefix}_domain_id"))
        .or_else(|| name(&format!("{prefix}_domain_name")))
        .or_else(|| id("default_domain_id"))
        .or_else(|| name("default_domain_name"))
}

/// The user or project `kind` names: `<kind>_id`, or the `name_key` option with its
/// domain (a name without any domain is an error naming `<kind>_domain_name`); None when
/// neither is set.
fn named(c: &Config, kind: &str, name_key: &str) -> Result<Option<NamedRef>, ConfError> {
    if let Some(id) = non_empty(c, &format!("{kind}_id")) {
        return Ok(Some(NamedRef::Id(id.to_owned())));
    }
    let Some(name) = non_empty(c, name_key) else {
        return Ok(None);
    };
    let domain = domain(c, kind).ok_or_else(|| {
        missing(
            &format!("{kind}_domain_name"),
            &format!("a {kind} given by {name_key} needs {kind}_domain_name or {kind}_domain_id"),
        )
    })?;
    Ok(Some(NamedRef::Name {
        name: name.to_owned(),
        domain,
    }))
}

impl AuthTokenOptions {
    /// Reads `[keystone_authtoken]`; an error names the section and the option.
    pub fn from_config(c: &Config) -> Result<Self, ConfError> {
        const S: &str = SECTION;
        match non_empty(c, "auth_type") {
            Some("password" | "v3password") => {}
            Some(_) => {
                return Err(c.invalid(
                    S,
                    "auth_type",
                    "expected password (the only auth plugin supported)",
                ));
            }
            None => {
                return Err(missing(
                    "auth_type",
                    "the auth_token middleware needs an auth plugin to validate tokens \
                     (set auth_type = password)",
                ));
            }
        }
        if c.get_bool(S, "delay_auth_decision", false)? {
            return Err(c.invalid(
                S,
                "delay_auth_decision",
                "expected false (deferring the decision is not supported)",
            ));
        }
        for key in ["certfile", "keyfile", "auth_section"] {
            if non_empty(c, key).is_some() {
                return Err(c.invalid(S, key, "not supported; leave it unset"));
            }
        }
        let auth_url = non_empty(c, "auth_url")
            .ok_or_else(|| missing("auth_url", "the password plugin needs the identity URL"))?;
        if !(auth_url.starts_with("http://") || auth_url.starts_with("https://")) {
            return Err(c.invalid(S, "auth_url", "expected an http:// or https:// URL"));
        }
        let user = named(c, "user", "username")?.ok_or_else(|| {
            missing(
                "username",
                "the password plugin needs username (or user_id)",
            )
        })?;
        // Never passed to `invalid`, which would print the value.
        let password = c
            .get(S, "password")
            .filter(|p| !p.is_empty())
            .map(Secret::new)
            .ok_or_else(|| missing("password", "the password plugin needs a password"))?;
        let project = named(c, "project", "project_name")?;
        let interface = match c.get(S, "interface").map(str::trim) {
            None | Some("internal") => Interface::Internal,
            Some("public") => Interface::Public,
            Some("admin") => Interface::Admin,
            Some(_) => {
                return Err(c.invalid(S, "interface", "expected public, internal or admin"));
            }
        };
        let service_token_roles = match c.get(S, "service_token_roles") {
            None => vec!["service".to_owned()],
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(str::to_owned)
                .collect(),
        };
        let http_connect_timeout = match c.get(S, "http_connect_timeout") {
            None => None,
            Some(_) => Some(c.get_u64(S, "http_connect_timeout", 0)?),
        };
        Ok(AuthTokenOptions {
            www_authenticate_uri: non_empty(c, "www_authenticate_uri").map(str::to_owned),
            auth_url: auth_url.to_owned(),
            user,
            password,
            project,
            interface,
            region_name: non_empty(c, "region_name").map(str::to_owned),
            service_token_roles,
            service_token_roles_required: c.get_bool(S, "service_token_roles_required", true)?,
            token_cache_time: c.get_u64(S, "token_cache_time", 300)?,
            cafile: non_empty(c, "cafile").map(PathBuf::from),
            insecure: c.get_bool(S, "insecure", false)?,
            http_connect_timeout,
            http_request_max_retries: c.get_u64(S, "http_request_max_retries", 3)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AuthTokenOptions, ConfError> {
        AuthTokenOptions::from_config(&Config::from_str("test.conf", text).unwrap())
    }

    const BASE: &str = "[keystone_authtoken]\nauth_type = password\n\
        auth_url = http://keystone:5000\nusername = glance\npassword = s3cr3t-pw\n\
        user_domain_name = Default\nproject_name = service\nproject_domain_id = default\n";

    #[test]
    fn defaults_follow_keystonemiddleware() {
        let o = parse(BASE).unwrap();
        assert_eq!(o.interface, Interface::Internal);
        assert_eq!(o.token_cache_time, 300);
        assert_eq!(o.service_token_roles, vec!["service".to_owned()]);
        assert!(o.service_token_roles_required);
        assert!(!o.insecure);
        assert_eq!(o.http_connect_timeout, None);
        assert_eq!(o.http_request_max_retries, 3);
        assert_eq!(o.www_authenticate_uri, None);
        assert_eq!(
            o.user,
            NamedRef::Name {
                name: "glance".into(),
                domain: DomainRef::Name("Default".into())
            }
        );
        assert_eq!(
            o.project,
            Some(NamedRef::Name {
                name: "service".into(),
                domain: DomainRef::Id("default".into())
            })
        );
    }

    #[test]
    fn other_auth_types_are_refused_naming_the_option() {
        let e = parse(&BASE.replace("auth_type = password", "auth_type = v3token"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("[keystone_authtoken] auth_type"), "{e}");
        let e = parse(&BASE.replace("auth_type = password\n", ""))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("[keystone_authtoken] auth_type is not set"),
            "{e}"
        );
    }

    #[test]
    fn missing_and_invalid_options_are_named() {
        let e = parse(&BASE.replace("password = s3cr3t-pw\n", ""))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("[keystone_authtoken] password is not set"),
            "{e}"
        );
        let e = parse(&format!("{BASE}interface = internalURL\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("[keystone_authtoken] interface"), "{e}");
        let e = parse(&format!("{BASE}token_cache_time = soon\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("[keystone_authtoken] token_cache_time"), "{e}");
        let e = parse(&BASE.replace("user_domain_name = Default\n", ""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("user_domain_name"), "{e}");
    }

    #[test]
    fn password_never_printed() {
        let o = parse(BASE).unwrap();
        let debug = format!("{o:?}");
        assert!(!debug.contains("s3cr3t-pw"), "{debug}");
        assert!(debug.contains("***"));
        assert_eq!(o.password.to_string(), "***");
        assert_eq!(o.password.expose(), "s3cr3t-pw");
    }
}
