//! Interoperable image import's options, with upstream's names and defaults:
//! `enabled_import_methods`, the staging directory (`[os_glance_staging_store]
//! filesystem_store_datadir`, else `node_staging_uri`), `[task] task_time_to_live`, and
//! `[import_filtering_opts]`, the filter every URL that glance-api fetches passes first.
//!
//! The filter is upstream's (allowed lists win over disallowed ones; a port given in the
//! URL must pass the port lists), and then stricter where upstream is weak: the host's
//! addresses are resolved and every one must be public. Loopback, private, link-local,
//! unique-local, unspecified and multicast addresses are refused unless the host itself is
//! in `allowed_hosts`. The caller connects to the address that was checked (no second
//! resolution), and checks every redirect's target again.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use thiserror::Error;

use crate::conf::{ConfError, Config, DEFAULT_SECTION};

/// The import methods glance-api provides (upstream's defaults; its `glance-download`,
/// which needs a federation of regions, is refused at start).
pub const METHODS: &[&str] = &["glance-direct", "web-download", "copy-image"];

/// Import settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportSettings {
    /// `enabled_import_methods`.
    pub methods: Vec<String>,
    /// Where staged data is kept, one file per image.
    pub staging_dir: PathBuf,
    /// `[task] task_time_to_live`, hours.
    pub task_ttl_hours: u64,
    /// `[import_filtering_opts]`.
    pub filter: UrlFilter,
}

impl ImportSettings {
    /// Reads the options.
    pub fn from_config(config: &Config) -> Result<Self, ConfError> {
        let methods = match config.get(DEFAULT_SECTION, "enabled_import_methods") {
            None => METHODS.iter().map(|m| (*m).to_owned()).collect(),
            Some(raw) => {
                let methods = list(raw);
                if let Some(bad) = methods.iter().find(|m| !METHODS.contains(&m.as_str())) {
                    return Err(config.invalid(
                        DEFAULT_SECTION,
                        "enabled_import_methods",
                        &format!(
                            "{bad:?} is not an import method this glance-api provides ({})",
                            METHODS.join(", ")
                        ),
                    ));
                }
                methods
            }
        };
        let staging = config
            .get("os_glance_staging_store", "filesystem_store_datadir")
            .map(str::to_owned)
            .or_else(|| {
                config
                    .get(DEFAULT_SECTION, "node_staging_uri")
                    .map(|uri| uri.trim_start_matches("file://").to_owned())
            })
            .unwrap_or_else(|| "/tmp/staging/".to_owned());
        let task_ttl_hours = match config.get("task", "task_time_to_live") {
            Some(_) => config.get_u64("task", "task_time_to_live", 48)?,
            None => config.get_u64(DEFAULT_SECTION, "task_time_to_live", 48)?,
        };
        Ok(Self {
            methods,
            staging_dir: crate::conf::absolute(&staging),
            task_ttl_hours,
            filter: UrlFilter::from_config(config)?,
        })
    }

    /// Whether `method` is enabled.
    pub fn enabled(&self, method: &str) -> bool {
        self.methods.iter().any(|m| m == method)
    }
}

/// `[import_filtering_opts]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlFilter {
    allowed_schemes: Vec<String>,
    disallowed_schemes: Vec<String>,
    allowed_hosts: Vec<String>,
    disallowed_hosts: Vec<String>,
    allowed_ports: Vec<u16>,
    disallowed_ports: Vec<u16>,
}

/// Why a URL is not fetched.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum Refused {
    /// Not a URL at all.
    #[error("{0} is not a valid URL")]
    Malformed(String),
    /// The scheme lists refuse it.
    #[error("scheme not allowed for external URI: {0}")]
    Scheme(String),
    /// The host lists refuse it.
    #[error("host not allowed for external URI: {0}")]
    Host(String),
    /// The port lists refuse it.
    #[error("port not allowed for external URI: {0}")]
    Port(String),
    /// The name does not resolve.
    #[error("failed to resolve external host {0}")]
    Unresolved(String),
    /// Every address of the host is one glance-api does not fetch from.
    #[error(
        "no allowed addresses for external host: {0} (loopback, private and link-local addresses are refused unless the host is in [import_filtering_opts] allowed_hosts)"
    )]
    Address(String),
}

impl UrlFilter {
    fn from_config(config: &Config) -> Result<Self, ConfError> {
        const SECTION: &str = "import_filtering_opts";
        let strings = |key: &str, default: &[&str]| -> Vec<String> {
            config
                .get(SECTION, key)
                .map_or_else(|| default.iter().map(|s| (*s).to_owned()).collect(), list)
        };
        let ports = |key: &str, default: &[u16]| -> Result<Vec<u16>, ConfError> {
            match config.get(SECTION, key) {
                None => Ok(default.to_vec()),
                Some(raw) => list(raw)
                    .iter()
                    .map(|p| {
                        p.parse()
                            .map_err(|_| config.invalid(SECTION, key, "expected TCP port numbers"))
                    })
                    .collect(),
            }
        };
        let hosts = |key: &str| -> Vec<String> {
            strings(key, &[])
                .into_iter()
                .map(|h| normalize_host(&h))
                .collect()
        };
        Ok(Self {
            allowed_schemes: strings("allowed_schemes", &["http", "https"]),
            disallowed_schemes: strings("disallowed_schemes", &[]),
            allowed_hosts: hosts("allowed_hosts"),
            disallowed_hosts: hosts("disallowed_hosts"),
            allowed_ports: ports("allowed_ports", &[80, 443])?,
            disallowed_ports: ports("disallowed_ports", &[])?,
        })
    }

    /// Checks `url` and resolves its host: the address to connect to, or why not.
    pub fn check(&self, url: &str) -> Result<SocketAddr, Refused> {
        let parsed = url::Url::parse(url).map_err(|_| Refused::Malformed(url.to_owned()))?;
        let scheme = parsed.scheme();
        let either = |allowed: bool, refused: bool, allow_list_set: bool| {
            if allow_list_set { allowed } else { !refused }
        };
        if !either(
            self.allowed_schemes.iter().any(|s| s == scheme),
            self.disallowed_schemes.iter().any(|s| s == scheme),
            !self.allowed_schemes.is_empty(),
        ) {
            return Err(Refused::Scheme(url.to_owned()));
        }
        let host = match parsed.host() {
            Some(url::Host::Domain(d)) => normalize_host(d),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(Refused::Host(url.to_owned())),
        };
        let host_allowed = self.allowed_hosts.contains(&host);
        if !either(
            host_allowed,
            self.disallowed_hosts.contains(&host),
            !self.allowed_hosts.is_empty(),
        ) {
            return Err(Refused::Host(url.to_owned()));
        }
        if let Some(port) = parsed.port()
            && !either(
                self.allowed_ports.contains(&port),
                self.disallowed_ports.contains(&port),
                !self.allowed_ports.is_empty(),
            )
        {
            return Err(Refused::Port(url.to_owned()));
        }
        let port = parsed
            .port_or_known_default()
            .ok_or_else(|| Refused::Port(url.to_owned()))?;
        let addresses: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => (host.as_str(), port)
                .to_socket_addrs()
                .map_err(|_| Refused::Unresolved(host.clone()))?
                .collect(),
        };
        addresses
            .into_iter()
            .find(|a| host_allowed || public(a.ip()))
            .ok_or(Refused::Address(host))
    }
}

/// A host name as the lists hold it: lower case, without a trailing dot; an IP address
/// in its standard form.
fn normalize_host(host: &str) -> String {
    let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>()
        .map_or(host.clone(), |ip| ip.to_string())
}

/// An address on the public internet: not loopback, private (RFC 1918, and IPv6's
/// unique-local), link-local (cloud metadata services among them), unspecified,
/// broadcast, multicast, shared (RFC 6598) or documentation space. IPv4-mapped IPv6
/// addresses are judged by their IPv4 address.
pub fn public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || (a == 100 && (64..128).contains(&b))
                || a == 0)
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => public(IpAddr::V4(v4)),
            None => {
                let first = v6.segments()[0];
                !(v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || (first & 0xfe00) == 0xfc00
                    || (first & 0xffc0) == 0xfe80)
            }
        },
    }
}

/// An oslo.config list: comma-separated, each item trimmed, empty items dropped.
fn list(raw: &str) -> Vec<String> {
    raw.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(|s| s.trim().trim_matches(|c| c == '"' || c == '\'').to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(text: &str) -> UrlFilter {
        let config =
            Config::from_str("t.conf", &format!("[import_filtering_opts]\n{text}")).expect("conf");
        UrlFilter::from_config(&config).expect("filter")
    }

    #[test]
    fn upstreams_lists_apply_allowed_before_disallowed() {
        let default = filter("");
        assert_eq!(
            default.check("ftp://203.0.113.9/x"),
            Err(Refused::Scheme("ftp://203.0.113.9/x".into()))
        );
        assert_eq!(
            default.check("http://8.8.8.8:8080/x"),
            Err(Refused::Port("http://8.8.8.8:8080/x".into()))
        );
        assert_eq!(
            default.check("http://8.8.8.8/x").unwrap(),
            "8.8.8.8:80".parse().unwrap()
        );
        let hosts = filter("disallowed_hosts = 8.8.8.8\n");
        assert!(matches!(
            hosts.check("https://8.8.8.8/x"),
            Err(Refused::Host(_))
        ));
        let both = filter("allowed_hosts = 8.8.4.4\ndisallowed_hosts = 8.8.4.4\n");
        assert!(
            both.check("http://8.8.4.4/x").is_ok(),
            "the allowed list wins"
        );
        assert!(matches!(
            both.check("http://8.8.8.8/x"),
            Err(Refused::Host(_))
        ));
    }

    #[test]
    fn internal_addresses_are_refused_unless_their_host_is_allowed() {
        let default = filter("");
        for url in [
            "http://127.0.0.1/x",
            "http://localhost/x",
            "http://10.1.2.3/x",
            "http://192.168.0.1/x",
            "http://172.16.5.5/x",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/x",
            "http://[fd00::1]/x",
            "http://[::ffff:127.0.0.1]/x",
            "http://0.0.0.0/x",
        ] {
            assert!(
                matches!(default.check(url), Err(Refused::Address(_))),
                "{url}: {:?}",
                default.check(url)
            );
        }
        let allowed = filter("allowed_hosts = 127.0.0.1\nallowed_ports = 8080\n");
        assert_eq!(
            allowed.check("http://127.0.0.1:8080/x").unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
    }

    #[test]
    fn methods_and_staging_follow_upstreams_options() {
        let config = Config::from_str(
            "t.conf",
            "[DEFAULT]\nenabled_import_methods = [glance-direct, copy-image]\n[os_glance_staging_store]\nfilesystem_store_datadir = /srv/staging\n[task]\ntask_time_to_live = 2\n",
        )
        .expect("conf");
        let s = ImportSettings::from_config(&config).expect("settings");
        assert_eq!(s.methods, ["glance-direct", "copy-image"]);
        assert!(s.enabled("copy-image") && !s.enabled("web-download"));
        assert_eq!(s.staging_dir, PathBuf::from("/srv/staging"));
        assert_eq!(s.task_ttl_hours, 2);
        let bad = Config::from_str(
            "t.conf",
            "[DEFAULT]\nenabled_import_methods = glance-download\n",
        )
        .expect("conf");
        let err = ImportSettings::from_config(&bad).expect_err("glance-download");
        assert!(err.to_string().contains("enabled_import_methods"), "{err}");
    }
}
