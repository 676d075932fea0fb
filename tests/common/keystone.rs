//! A mock Keystone (identity API v3) on a loopback port: issues service tokens to
//! glance's own user and validates user tokens it has been told about.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use glance_operator::conf::Config;
use glance_operator::keystone::AuthToken;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// glance's password in the mock.
pub const PASSWORD: &str = "Sup3r-Secret-Pw";

/// The user of tokens added with [`Mock::add_user`].
pub const DEFAULT_USER: &str = "user-1";

/// The project of tokens added with [`Mock::add_user`].
pub const DEFAULT_PROJECT: &str = "proj-1";

/// An hour.
pub const HOUR: Duration = Duration::from_secs(3600);

/// An ISO 8601 UTC time as Keystone writes it.
pub fn iso(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// A user token the mock knows.
pub struct UserToken {
    /// `token.user.id`.
    pub user_id: String,
    /// `token.project.id`; None for a token scoped to the domain instead.
    pub project_id: Option<String>,
    /// Role names.
    pub roles: Vec<&'static str>,
    /// `token.expires_at`.
    pub expires_at: SystemTime,
}

/// What the mock knows and has seen.
#[derive(Default)]
pub struct State {
    /// POST /v3/auth/tokens answered.
    pub issued: usize,
    /// Every request received, failed ones included.
    pub requests: usize,
    /// GET /v3/auth/tokens answered.
    pub validations: usize,
    /// Paths of the validations.
    pub paths: Vec<String>,
    /// Valid service tokens and their expiry.
    pub service_tokens: HashMap<String, SystemTime>,
    /// Lifetime of an issued service token.
    pub service_ttl: Duration,
    /// Known user tokens.
    pub users: HashMap<String, UserToken>,
    /// Any token with this prefix is valid (role `member`).
    pub accept_prefix: Option<String>,
    /// Answer every request with this status.
    pub fail_with: Option<u16>,
    /// A catalog to put in issued service tokens.
    pub catalog: Option<Value>,
    /// Passwords of the POSTs seen, for the secrets check.
    pub seen_passwords: Vec<String>,
}

/// The mock Keystone, serving until [`Mock::stop`].
#[derive(Clone)]
pub struct Mock {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<watch::Sender<bool>>,
}

impl Mock {
    /// A mock on a free loopback port.
    pub async fn start() -> Mock {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            service_ttl: HOUR,
            ..State::default()
        }));
        let (stop, stopping) = watch::channel(false);
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            loop {
                let mut until_stop = stopping.clone();
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = until_stop.wait_for(|stopped| *stopped) => return,
                };
                let (stream, _) = accepted.unwrap();
                let state = Arc::clone(&shared);
                let mut until_stop = stopping.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(Arc::clone(&state), req));
                    let connection = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service);
                    // A stop drops open connections too: nothing answers any more.
                    tokio::select! {
                        _ = connection => {}
                        _ = until_stop.wait_for(|stopped| *stopped) => {}
                    }
                });
            }
        });
        Mock {
            addr,
            state,
            stop: Arc::new(stop),
        }
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its state, to read or change.
    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// A user token of [`DEFAULT_USER`] in [`DEFAULT_PROJECT`] with `roles`, valid for
    /// `life`.
    pub fn add_user(&self, token: &str, roles: Vec<&'static str>, life: Duration) {
        self.add_user_in(token, DEFAULT_USER, DEFAULT_PROJECT, roles, life);
    }

    /// A user token of `user_id` in `project_id` with `roles`, valid for `life`.
    pub fn add_user_in(
        &self,
        token: &str,
        user_id: &str,
        project_id: &str,
        roles: Vec<&'static str>,
        life: Duration,
    ) {
        self.insert_user(token, user_id, Some(project_id), roles, life);
    }

    /// A user token of `user_id` scoped to the `Default` domain (no project) with
    /// `roles`, valid for `life`.
    pub fn add_domain_user(
        &self,
        token: &str,
        user_id: &str,
        roles: Vec<&'static str>,
        life: Duration,
    ) {
        self.insert_user(token, user_id, None, roles, life);
    }

    fn insert_user(
        &self,
        token: &str,
        user_id: &str,
        project_id: Option<&str>,
        roles: Vec<&'static str>,
        life: Duration,
    ) {
        self.state().users.insert(
            token.to_owned(),
            UserToken {
                user_id: user_id.to_owned(),
                project_id: project_id.map(str::to_owned),
                roles,
                expires_at: SystemTime::now() + life,
            },
        );
    }

    /// Revokes a user token: its validation is 404 from now on.
    pub fn revoke(&self, token: &str) {
        assert!(
            self.state().users.remove(token).is_some(),
            "no token {token:?} to revoke"
        );
    }

    /// Answers every request with `status` (None: answers normally again).
    pub fn fail_with(&self, status: Option<u16>) {
        self.state().fail_with = status;
    }

    /// Stops listening and closes every open connection: connections are refused.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// (service tokens issued, user tokens validated).
    /// Every request received so far, failed ones included.
    pub fn requests(&self) -> usize {
        self.state().requests
    }

    pub fn counts(&self) -> (usize, usize) {
        let s = self.state();
        (s.issued, s.validations)
    }

    /// A `[keystone_authtoken]` section for glance's user in this mock, with
    /// `www_authenticate_uri` and the `extra` lines.
    pub fn authtoken_section(&self, www_authenticate_uri: &str, extra: &str) -> String {
        format!(
            "[keystone_authtoken]\n\
             www_authenticate_uri = {www_authenticate_uri}\n\
             auth_type = password\nauth_url = {}/v3\n\
             username = glance\npassword = {PASSWORD}\nuser_domain_name = Default\n\
             project_name = service\nproject_domain_name = Default\n{extra}",
            self.url()
        )
    }

    /// A configuration with only [`Mock::authtoken_section`] (`www_authenticate_uri` is
    /// https://keystone.example.com).
    pub fn config(&self, extra: &str) -> Config {
        let text = self.authtoken_section("https://keystone.example.com", extra);
        Config::from_str("keystone.conf", &text).unwrap()
    }

    /// An authenticator of [`Mock::config`].
    pub fn auth(&self, extra: &str) -> AuthToken {
        AuthToken::from_config(&self.config(extra)).unwrap()
    }
}

/// A JSON answer.
pub fn reply(status: u16, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("Content-Type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// Answers one request as Keystone would.
pub async fn handle(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (auth, subject) = (header("X-Auth-Token"), header("X-Subject-Token"));
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let mut s = state.lock().unwrap();
    s.requests += 1;
    if let Some(status) = s.fail_with {
        return Ok(reply(status, json!({"error": {"code": status}})));
    }
    if !path.ends_with("/v3/auth/tokens") {
        return Ok(reply(404, json!({})));
    }
    let now = SystemTime::now();
    if method == hyper::Method::POST {
        let body: Value = serde_json::from_slice(&body).unwrap();
        let user = &body["auth"]["identity"]["password"]["user"];
        let password = user["password"].as_str().unwrap_or_default().to_owned();
        s.seen_passwords.push(password.clone());
        let expected_scope = json!({"project": {"name": "service", "domain": {"name": "Default"}}});
        if password != PASSWORD
            || user["name"] != "glance"
            || user["domain"]["name"] != "Default"
            || body["auth"]["identity"]["methods"] != json!(["password"])
            || body["auth"]["scope"] != expected_scope
        {
            return Ok(reply(401, json!({"error": {"code": 401}})));
        }
        s.issued += 1;
        let token = format!("svc-token-{}", s.issued);
        let expires_at = now + s.service_ttl;
        s.service_tokens.insert(token.clone(), expires_at);
        let mut token_body = json!({
            "expires_at": iso(expires_at),
            "user": {"id": "glance-id", "name": "glance"},
            "roles": [{"name": "service"}],
        });
        if let Some(catalog) = &s.catalog {
            token_body["catalog"] = catalog.clone();
        }
        let mut response = reply(201, json!({ "token": token_body }));
        response
            .headers_mut()
            .insert("X-Subject-Token", token.parse().unwrap());
        return Ok(response);
    }
    s.validations += 1;
    s.paths.push(path);
    let service_ok = auth
        .as_ref()
        .and_then(|t| s.service_tokens.get(t))
        .is_some_and(|&expires| expires > now);
    if !service_ok {
        return Ok(reply(401, json!({"error": {"code": 401}})));
    }
    let subject = subject.unwrap_or_default();
    let (user_id, project_id, roles, expires_at) = match s.users.get(&subject) {
        Some(u) if u.expires_at > now => (
            u.user_id.clone(),
            u.project_id.clone(),
            u.roles.clone(),
            u.expires_at,
        ),
        Some(_) => return Ok(reply(404, json!({"error": {"code": 404}}))),
        None => match &s.accept_prefix {
            Some(p) if subject.starts_with(p.as_str()) => (
                DEFAULT_USER.to_owned(),
                Some(DEFAULT_PROJECT.to_owned()),
                vec!["member"],
                now + HOUR,
            ),
            _ => return Ok(reply(404, json!({"error": {"code": 404}}))),
        },
    };
    let roles: Vec<Value> = roles
        .iter()
        .map(|r| json!({"id": "x", "name": r}))
        .collect();
    let mut token = json!({
        "expires_at": iso(expires_at),
        "user": {"id": user_id, "name": "alice", "domain": {"id": "default", "name": "Default"}},
        "roles": roles,
    });
    match project_id {
        Some(id) => {
            token["project"] =
                json!({"id": id, "name": "demo", "domain": {"id": "default", "name": "Default"}})
        }
        None => token["domain"] = json!({"id": "default", "name": "Default"}),
    }
    Ok(reply(200, json!({ "token": token })))
}
