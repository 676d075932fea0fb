//! The Identity v3 client: the service's own token and the validation of user tokens.
//!
//! HTTP goes through `ureq` (blocking) on tokio's blocking pool: the crate has no
//! async HTTP client declared (hyper's client and hyper-util's `client-legacy` are not
//! enabled in Cargo.toml), and a validation is one short request.

use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tracing::{debug, info, warn};
use ureq::Agent;

use super::options::{AuthTokenOptions, DomainRef, NamedRef, Secret};
use super::{AuthError, RequestContext};
use crate::conf::ConfError;

/// Largest Keystone response body read (a token with its catalog is a few tens of KiB).
const MAX_BODY: u64 = 4 << 20;
/// keystoneauth renews a token when less than this remains (`MIN_TOKEN_LIFE_SECONDS`).
const MIN_TOKEN_LIFE: Duration = Duration::from_secs(120);
/// Bound on connecting when `http_connect_timeout` is unset.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The service's own token.
#[derive(Debug)]
struct ServiceToken {
    token: Secret,
    /// When it is renewed: `MIN_TOKEN_LIFE` before expiry, or half-way through a
    /// shorter life.
    renew_at: SystemTime,
    /// The Identity v3 base (`…/v3`) validations go to.
    identity_v3: String,
}

/// A reply from Keystone.
struct Reply {
    status: u16,
    subject_token: Option<String>,
    body: Vec<u8>,
}

/// The Identity API client of [`super::AuthToken`].
pub(crate) struct KeystoneClient {
    agent: Agent,
    opts: Arc<AuthTokenOptions>,
    /// `auth_url` as a v3 base.
    auth_v3: String,
    /// The current service token; the lock is held while one is issued, so concurrent
    /// requests share one renewal.
    service: tokio::sync::Mutex<Option<Arc<ServiceToken>>>,
}

/// `url` as an Identity v3 base: without a trailing `/`, ending in `/v3`.
fn v3_base(url: &str) -> String {
    let url = url.trim_end_matches('/');
    if url.ends_with("/v3") {
        url.to_owned()
    } else {
        format!("{url}/v3")
    }
}

fn build_agent(opts: &AuthTokenOptions) -> Result<Agent, ConfError> {
    let mut tls = ureq::tls::TlsConfig::builder().disable_verification(opts.insecure);
    if let Some(path) = &opts.cafile {
        let pem = std::fs::read(path).map_err(|source| ConfError::ReadFile {
            path: path.clone(),
            source,
        })?;
        let mut certs = Vec::new();
        for item in ureq::tls::parse_pem(&pem) {
            if let Ok(ureq::tls::PemItem::Certificate(cert)) = item {
                certs.push(cert);
            }
        }
        if certs.is_empty() {
            return Err(ConfError::InvalidValue {
                section: super::options::SECTION.to_owned(),
                key: "cafile".to_owned(),
                value: path.display().to_string(),
                origin: String::new(),
                expected: "a PEM file with at least one CA certificate".to_owned(),
            });
        }
        tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
    }
    let timeout = opts
        .http_connect_timeout
        .filter(|&s| s > 0)
        .map(Duration::from_secs);
    Ok(Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(tls.build())
        .timeout_global(timeout)
        .timeout_connect(Some(timeout.unwrap_or(CONNECT_TIMEOUT)))
        .max_redirects(0)
        .build()
        .into())
}

/// Whether a transport error is a failure to connect, which keystoneauth retries
/// (`connect_retries`).
fn is_connect_failure(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => true,
        ureq::Error::Io(io) => matches!(
            io.kind(),
            io::ErrorKind::ConnectionRefused
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::NotConnected
        ),
        _ => false,
    }
}

/// One blocking request. `body`: a JSON POST; none: a GET. Errors name the method and
/// URL and never a header (where the tokens are).
fn call(
    agent: &Agent,
    retries: u64,
    url: &str,
    headers: &[(&'static str, String)],
    body: Option<&[u8]>,
) -> Result<Reply, String> {
    let method = if body.is_some() { "POST" } else { "GET" };
    let mut delay = Duration::from_millis(500);
    let mut attempt = 0;
    loop {
        let mut builder = ureq::http::Request::builder()
            .method(method)
            .uri(url)
            .header("Accept", "application/json")
            .header("User-Agent", "glance-api keystonemiddleware/13");
        for (name, value) in headers {
            builder = builder.header(*name, value.as_str());
        }
        let built = match body {
            Some(body) => builder
                .header("Content-Type", "application/json")
                .body(body)
                .map(|r| agent.run(r)),
            None => builder.body(()).map(|r| agent.run(r)),
        };
        let result = built.map_err(|e| format!("{method} {url}: {e}"))?;
        match result {
            Ok(mut response) => {
                let status = response.status().as_u16();
                let subject_token = response
                    .headers()
                    .get("X-Subject-Token")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let body = response
                    .body_mut()
                    .with_config()
                    .limit(MAX_BODY)
                    .read_to_vec()
                    .map_err(|e| format!("{method} {url}: reading the answer: {e}"))?;
                return Ok(Reply {
                    status,
                    subject_token,
                    body,
                });
            }
            Err(e) => {
                let message = format!("{method} {url}: {e}");
                if !is_connect_failure(&e) || attempt >= retries {
                    return Err(message);
                }
                attempt += 1;
                warn!(%message, attempt, "retrying the request to Keystone");
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(60));
            }
        }
    }
}

/// The body keystoneauth's v3 `password` plugin sends.
fn auth_body(opts: &AuthTokenOptions) -> Value {
    let domain = |d: &DomainRef| match d {
        DomainRef::Id(id) => json!({ "id": id }),
        DomainRef::Name(name) => json!({ "name": name }),
    };
    let user = match &opts.user {
        NamedRef::Id(id) => json!({ "id": id, "password": opts.password.expose() }),
        NamedRef::Name { name, domain: d } => json!({
            "name": name,
            "domain": domain(d),
            "password": opts.password.expose(),
        }),
    };
    let mut auth = json!({
        "identity": { "methods": ["password"], "password": { "user": user } }
    });
    if let Some(project) = &opts.project {
        let project = match project {
            NamedRef::Id(id) => json!({ "id": id }),
            NamedRef::Name { name, domain: d } => json!({ "name": name, "domain": domain(d) }),
        };
        auth["scope"] = json!({ "project": project });
    }
    json!({ "auth": auth })
}

/// The identity endpoint for `interface` (and `region_name`) in a token's catalog.
fn identity_endpoint(token: &Value, opts: &AuthTokenOptions) -> Option<String> {
    let catalog = token.get("catalog")?.as_array()?;
    let service = catalog
        .iter()
        .find(|s| s.get("type").and_then(Value::as_str) == Some("identity"))?;
    service
        .get("endpoints")?
        .as_array()?
        .iter()
        .filter(|e| e.get("interface").and_then(Value::as_str) == Some(opts.interface.as_str()))
        .find(|e| match &opts.region_name {
            None => true,
            Some(region) => ["region_id", "region"]
                .iter()
                .any(|k| e.get(*k).and_then(Value::as_str) == Some(region.as_str())),
        })
        .and_then(|e| e.get("url")?.as_str())
        .map(v3_base)
}

impl KeystoneClient {
    pub(crate) fn new(opts: Arc<AuthTokenOptions>) -> Result<Self, ConfError> {
        Ok(KeystoneClient {
            agent: build_agent(&opts)?,
            auth_v3: v3_base(&opts.auth_url),
            opts,
            service: tokio::sync::Mutex::new(None),
        })
    }

    async fn request(
        &self,
        url: String,
        headers: Vec<(&'static str, String)>,
        body: Option<Vec<u8>>,
    ) -> Result<Reply, AuthError> {
        let agent = self.agent.clone();
        let retries = self.opts.http_request_max_retries;
        tokio::task::spawn_blocking(move || call(&agent, retries, &url, &headers, body.as_deref()))
            .await
            .map_err(|e| AuthError::Unavailable(format!("the request to Keystone failed: {e}")))?
            .map_err(AuthError::Unavailable)
    }

    /// POST /v3/auth/tokens with the service's credentials.
    async fn issue(&self) -> Result<ServiceToken, AuthError> {
        let url = format!("{}/auth/tokens", self.auth_v3);
        let body = auth_body(&self.opts).to_string().into_bytes();
        let reply = self.request(url.clone(), Vec::new(), Some(body)).await?;
        if !(200..300).contains(&reply.status) {
            return Err(AuthError::Unavailable(format!(
                "POST {url}: HTTP {}: Keystone did not issue the service's token",
                reply.status
            )));
        }
        let bad = |what: &str| AuthError::Unavailable(format!("POST {url}: {what}"));
        let token = reply
            .subject_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| bad("no X-Subject-Token in the answer"))?;
        let body: Value =
            serde_json::from_slice(&reply.body).map_err(|_| bad("the answer is not JSON"))?;
        let token_body = &body["token"];
        let expires_at = token_body["expires_at"]
            .as_str()
            .and_then(parse_time)
            .ok_or_else(|| bad("no valid token.expires_at in the answer"))?;
        let now = SystemTime::now();
        let life = expires_at.duration_since(now).unwrap_or_default();
        let renew_at = expires_at - MIN_TOKEN_LIFE.min(life / 2);
        let identity_v3 =
            identity_endpoint(token_body, &self.opts).unwrap_or_else(|| self.auth_v3.clone());
        debug!(%identity_v3, life_secs = life.as_secs(), "issued the service token");
        Ok(ServiceToken {
            token: Secret::new(token),
            renew_at,
            identity_v3,
        })
    }

    /// The current service token, issued or renewed when needed.
    async fn service_token(&self) -> Result<Arc<ServiceToken>, AuthError> {
        let mut current = self.service.lock().await;
        if let Some(token) = current.as_ref()
            && SystemTime::now() < token.renew_at
        {
            return Ok(Arc::clone(token));
        }
        *current = None;
        let token = Arc::new(self.issue().await?);
        *current = Some(Arc::clone(&token));
        Ok(token)
    }

    /// Drops `used` if it is still the current service token.
    async fn invalidate(&self, used: &ServiceToken) {
        let mut current = self.service.lock().await;
        if current.as_ref().is_some_and(|t| t.token == used.token) {
            *current = None;
        }
    }

    /// GET /v3/auth/tokens for `user_token`: the context of a valid token, `None` for
    /// an invalid one (404, or a body that is not a valid unexpired token).
    pub(crate) async fn validate(
        &self,
        user_token: &str,
    ) -> Result<Option<RequestContext>, AuthError> {
        let mut retried = false;
        loop {
            let service = self.service_token().await?;
            let url = format!("{}/auth/tokens?nocatalog", service.identity_v3);
            let headers = vec![
                ("X-Auth-Token", service.token.expose().to_owned()),
                ("X-Subject-Token", user_token.to_owned()),
            ];
            let reply = self.request(url.clone(), headers, None).await?;
            match reply.status {
                200 => return Ok(parse_token(&reply.body)),
                404 => {
                    info!("Identity server: token not found");
                    return Ok(None);
                }
                401 if !retried => {
                    info!("Identity server rejected authorization; renewing the service token");
                    self.invalidate(&service).await;
                    retried = true;
                }
                401 => {
                    return Err(AuthError::Unavailable(format!(
                        "GET {url}: HTTP 401: Identity server rejected authorization \
                         necessary to fetch token data"
                    )));
                }
                status => {
                    return Err(AuthError::Unavailable(format!(
                        "GET {url}: HTTP {status}: Failed to fetch token data from identity \
                         server"
                    )));
                }
            }
        }
    }
}

fn str_at(v: &Value, path: &[&str]) -> Option<String> {
    let mut v = v;
    for key in path {
        v = v.get(key)?;
    }
    v.as_str().map(str::to_owned)
}

/// The context of a token from a validation answer; `None` when the body is not a
/// token or the token has expired (keystonemiddleware's `_validate_token`).
fn parse_token(body: &[u8]) -> Option<RequestContext> {
    let body: Value = serde_json::from_slice(body).ok()?;
    let token = body.get("token")?;
    let expires_at = parse_time(token.get("expires_at")?.as_str()?)?;
    if expires_at <= SystemTime::now() {
        return None;
    }
    let roles: Vec<String> = token
        .get("roles")
        .and_then(Value::as_array)
        .map(|roles| {
            roles
                .iter()
                .filter_map(|r| r.get("name")?.as_str())
                .map(str::to_lowercase)
                .collect()
        })
        .unwrap_or_default();
    Some(RequestContext {
        user_id: str_at(token, &["user", "id"])?,
        user_name: str_at(token, &["user", "name"]),
        user_domain_id: str_at(token, &["user", "domain", "id"]),
        user_domain_name: str_at(token, &["user", "domain", "name"]),
        project_id: str_at(token, &["project", "id"]),
        project_name: str_at(token, &["project", "name"]),
        project_domain_id: str_at(token, &["project", "domain", "id"]),
        project_domain_name: str_at(token, &["project", "domain", "name"]),
        is_admin: roles.iter().any(|r| r == "admin"),
        roles,
        expires_at,
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// An ISO 8601 time as Keystone writes `expires_at` (`2024-05-01T12:00:00.000000Z`;
/// `+HH:MM` offsets and no fraction accepted too).
pub(crate) fn parse_time(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        if part.iter().all(u8::is_ascii_digit) {
            std::str::from_utf8(part).ok()?.parse().ok()
        } else {
            None
        }
    };
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut nanos: u32 = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let scaled: String = frac[..digits]
            .chars()
            .chain("000000000".chars())
            .take(9)
            .collect();
        nanos = scaled.parse().ok()?;
        rest = &frac[digits..];
    }
    let offset = match rest {
        "" | "Z" | "z" => 0,
        _ => {
            let (sign, hm) = match rest.as_bytes().first()? {
                b'+' => (1, &rest[1..]),
                b'-' => (-1, &rest[1..]),
                _ => return None,
            };
            let (h, m) = hm.split_once(':').unwrap_or((hm.get(..2)?, hm.get(2..)?));
            if h.len() != 2 || m.len() != 2 {
                return None;
            }
            sign * (h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60)
        }
    };
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + min * 60 + sec - offset;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::Config;

    fn secs(t: SystemTime) -> f64 {
        t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
    }

    #[test]
    fn parses_keystone_times() {
        assert_eq!(secs(parse_time("1970-01-01T00:00:00Z").unwrap()), 0.0);
        assert_eq!(
            secs(parse_time("2024-02-29T12:30:15.500000Z").unwrap()),
            1_709_209_815.5
        );
        assert_eq!(
            secs(parse_time("2024-02-29T14:30:15+02:00").unwrap()),
            1_709_209_815.0
        );
        assert_eq!(
            secs(parse_time("2024-02-29T12:30:15").unwrap()),
            1_709_209_815.0
        );
        for bad in [
            "",
            "2024-02-29",
            "2024-13-01T00:00:00Z",
            "2024-02-29T12:30:15.Z",
            "x",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn v3_bases() {
        assert_eq!(v3_base("http://ks:5000"), "http://ks:5000/v3");
        assert_eq!(v3_base("http://ks:5000/"), "http://ks:5000/v3");
        assert_eq!(v3_base("http://ks/identity/v3/"), "http://ks/identity/v3");
    }

    #[test]
    fn password_body_as_keystoneauth_sends_it() {
        let c = Config::from_str(
            "t",
            "[keystone_authtoken]\nauth_type = password\nauth_url = http://ks\n\
             username = glance\npassword = pw\nuser_domain_name = Default\n\
             project_name = service\nproject_domain_id = default\n",
        )
        .unwrap();
        let opts = AuthTokenOptions::from_config(&c).unwrap();
        assert_eq!(
            auth_body(&opts),
            json!({"auth": {
                "identity": {"methods": ["password"], "password": {"user": {
                    "name": "glance", "domain": {"name": "Default"}, "password": "pw"}}},
                "scope": {"project": {"name": "service", "domain": {"id": "default"}}}
            }})
        );
    }

    #[test]
    fn token_bodies() {
        let body = json!({"token": {
            "expires_at": "2999-01-01T00:00:00.000000Z",
            "user": {"id": "u1", "name": "alice", "domain": {"id": "default", "name": "Default"}},
            "project": {"id": "p1", "name": "demo", "domain": {"id": "default"}},
            "roles": [{"id": "r1", "name": "Member"}, {"id": "r2", "name": "ADMIN"}]
        }});
        let ctx = parse_token(body.to_string().as_bytes()).unwrap();
        assert_eq!(ctx.roles, vec!["member", "admin"]);
        assert!(ctx.is_admin);
        assert_eq!(ctx.project_id.as_deref(), Some("p1"));
        let mut expired = body.clone();
        expired["token"]["expires_at"] = json!("2000-01-01T00:00:00Z");
        assert!(parse_token(expired.to_string().as_bytes()).is_none());
        assert!(parse_token(b"not json").is_none());
        assert!(parse_token(b"{\"token\": {}}").is_none());
    }
}
