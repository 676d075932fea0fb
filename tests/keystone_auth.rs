//! `glance_operator::keystone` against a mock Keystone on a loopback port.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use glance_operator::conf::Config;
use glance_operator::keystone::cache::TokenCache;
use glance_operator::keystone::{AuthError, AuthToken, AuthTokenOptions};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

const PASSWORD: &str = "Sup3r-Secret-Pw";

/// An ISO 8601 UTC time as Keystone writes it.
fn iso(t: SystemTime) -> String {
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

struct UserToken {
    roles: Vec<&'static str>,
    expires_at: SystemTime,
}

#[derive(Default)]
struct State {
    /// POST /v3/auth/tokens answered.
    issued: usize,
    /// GET /v3/auth/tokens answered.
    validations: usize,
    /// Paths of the validations.
    paths: Vec<String>,
    /// Valid service tokens and their expiry.
    service_tokens: HashMap<String, SystemTime>,
    /// Lifetime of an issued service token.
    service_ttl: Duration,
    /// Known user tokens.
    users: HashMap<String, UserToken>,
    /// Any token with this prefix is valid (role `member`).
    accept_prefix: Option<String>,
    /// Answer every request with this status.
    fail_with: Option<u16>,
    /// A catalog to put in issued service tokens.
    catalog: Option<Value>,
    /// Request bodies of POSTs and all request headers seen, for the secrets check.
    seen_passwords: Vec<String>,
}

#[derive(Clone)]
struct Mock {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl Mock {
    async fn start() -> Mock {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            service_ttl: Duration::from_secs(3600),
            ..State::default()
        }));
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(Arc::clone(&state), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Mock { addr, state }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    fn add_user(&self, token: &str, roles: Vec<&'static str>, life: Duration) {
        self.state().users.insert(
            token.to_owned(),
            UserToken {
                roles,
                expires_at: SystemTime::now() + life,
            },
        );
    }

    fn counts(&self) -> (usize, usize) {
        let s = self.state();
        (s.issued, s.validations)
    }

    fn config(&self, extra: &str) -> Config {
        let text = format!(
            "[keystone_authtoken]\n\
             www_authenticate_uri = https://keystone.example.com\n\
             auth_type = password\nauth_url = {}/v3\n\
             username = glance\npassword = {PASSWORD}\nuser_domain_name = Default\n\
             project_name = service\nproject_domain_name = Default\n{extra}",
            self.url()
        );
        Config::from_str("keystone.conf", &text).unwrap()
    }

    fn auth(&self, extra: &str) -> AuthToken {
        AuthToken::from_config(&self.config(extra)).unwrap()
    }
}

fn reply(status: u16, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("Content-Type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

async fn handle(
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
    let (roles, expires_at) = match s.users.get(&subject) {
        Some(u) if u.expires_at > now => (u.roles.clone(), u.expires_at),
        Some(_) => return Ok(reply(404, json!({"error": {"code": 404}}))),
        None => match &s.accept_prefix {
            Some(p) if subject.starts_with(p.as_str()) => {
                (vec!["member"], now + Duration::from_secs(3600))
            }
            _ => return Ok(reply(404, json!({"error": {"code": 404}}))),
        },
    };
    let roles: Vec<Value> = roles
        .iter()
        .map(|r| json!({"id": "x", "name": r}))
        .collect();
    Ok(reply(
        200,
        json!({"token": {
            "expires_at": iso(expires_at),
            "user": {"id": "user-1", "name": "alice", "domain": {"id": "default", "name": "Default"}},
            "project": {"id": "proj-1", "name": "demo", "domain": {"id": "default", "name": "Default"}},
            "roles": roles,
        }}),
    ))
}

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn service_token_is_issued_once_and_reused() {
    let mock = Mock::start().await;
    mock.add_user("tok-a", vec!["member"], HOUR);
    mock.add_user("tok-b", vec!["member"], HOUR);
    let auth = mock.auth("");
    assert_eq!(
        mock.counts(),
        (0, 0),
        "nothing asked before the first token"
    );
    auth.authenticate(Some("tok-a")).await.unwrap();
    auth.authenticate(Some("tok-b")).await.unwrap();
    assert_eq!(mock.counts(), (1, 2));
}

#[tokio::test]
async fn concurrent_first_requests_share_one_service_token() {
    let mock = Mock::start().await;
    mock.state().accept_prefix = Some("ok-".into());
    let auth = Arc::new(mock.auth(""));
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let auth = Arc::clone(&auth);
            tokio::spawn(async move { auth.authenticate(Some(&format!("ok-{i}"))).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(mock.counts(), (1, 8));
}

#[tokio::test]
async fn valid_token_gives_the_context() {
    let mock = Mock::start().await;
    mock.add_user("tok-admin", vec!["Member", "Admin", "READER"], HOUR);
    mock.add_user("tok-user", vec!["Member"], HOUR);
    let auth = mock.auth("");
    let ctx = auth.authenticate(Some(" tok-admin ")).await.unwrap();
    assert_eq!(ctx.user_id, "user-1");
    assert_eq!(ctx.user_name.as_deref(), Some("alice"));
    assert_eq!(ctx.project_id.as_deref(), Some("proj-1"));
    assert_eq!(ctx.project_name.as_deref(), Some("demo"));
    assert_eq!(ctx.project_domain_id.as_deref(), Some("default"));
    assert_eq!(ctx.roles, vec!["member", "admin", "reader"]);
    assert!(ctx.is_admin);
    assert!(ctx.expires_at > SystemTime::now() + Duration::from_secs(3500));
    let ctx = auth.authenticate(Some("tok-user")).await.unwrap();
    assert!(!ctx.is_admin);
    assert_eq!(ctx.roles, vec!["member"]);
}

#[tokio::test]
async fn invalid_and_missing_tokens_are_refused() {
    let mock = Mock::start().await;
    let auth = mock.auth("");
    assert_eq!(
        auth.authenticate(Some("no-such-token")).await,
        Err(AuthError::Invalid)
    );
    assert_eq!(auth.authenticate(None).await, Err(AuthError::Missing));
    assert_eq!(auth.authenticate(Some("")).await, Err(AuthError::Missing));
    // Invalid tokens are not cached (keystonemiddleware 13 caches only valid ones).
    assert_eq!(
        auth.authenticate(Some("no-such-token")).await,
        Err(AuthError::Invalid)
    );
    assert_eq!(mock.counts(), (1, 2));
    assert_eq!(auth.cache_len(), 0);
    assert_eq!(
        auth.www_authenticate(),
        "Keystone uri=\"https://keystone.example.com\""
    );
}

#[tokio::test]
async fn second_validation_comes_from_the_cache() {
    let mock = Mock::start().await;
    mock.add_user("tok-a", vec!["member"], HOUR);
    let auth = mock.auth("");
    let first = auth.authenticate(Some("tok-a")).await.unwrap();
    let second = auth.authenticate(Some("tok-a")).await.unwrap();
    assert_eq!(first, second);
    assert_eq!(mock.counts(), (1, 1));
    assert_eq!(auth.cache_len(), 1);
}

#[tokio::test]
async fn revoked_token_is_accepted_from_the_cache_until_token_cache_time() {
    let mock = Mock::start().await;
    mock.add_user("tok-a", vec!["member"], HOUR);
    let auth = mock.auth("token_cache_time = 1\n");
    auth.authenticate(Some("tok-a")).await.unwrap();
    mock.state().users.remove("tok-a"); // revoked
    auth.authenticate(Some("tok-a")).await.unwrap();
    assert_eq!(mock.counts(), (1, 1), "answered from the cache");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        auth.authenticate(Some("tok-a")).await,
        Err(AuthError::Invalid)
    );
    assert_eq!(mock.counts(), (1, 2));
}

#[tokio::test]
async fn cached_token_is_refused_once_it_expires() {
    let mock = Mock::start().await;
    mock.add_user("tok-short", vec!["member"], Duration::from_millis(1500));
    let auth = mock.auth("");
    auth.authenticate(Some("tok-short")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(
        auth.authenticate(Some("tok-short")).await,
        Err(AuthError::Invalid)
    );
}

#[tokio::test]
async fn service_token_is_renewed_before_it_expires_and_after_a_401() {
    let mock = Mock::start().await;
    mock.state().service_ttl = Duration::from_secs(2);
    mock.state().accept_prefix = Some("ok-".into());
    let auth = mock.auth("");
    auth.authenticate(Some("ok-1")).await.unwrap();
    auth.authenticate(Some("ok-2")).await.unwrap();
    assert_eq!(mock.counts(), (1, 2), "reused while fresh");
    // Renewed half-way through a life shorter than 240 s, before Keystone refuses it.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    auth.authenticate(Some("ok-3")).await.unwrap();
    assert_eq!(mock.counts(), (2, 3));
    // Keystone forgets the service token (e.g. restarted with new keys): one 401,
    // then a new token and a retry.
    mock.state().service_ttl = HOUR;
    mock.state().service_tokens.clear();
    auth.authenticate(Some("ok-4")).await.unwrap();
    assert_eq!(mock.counts(), (3, 5));
}

#[tokio::test]
async fn wrong_service_credentials_make_keystone_unavailable() {
    let mock = Mock::start().await;
    let text = format!(
        "[keystone_authtoken]\nauth_type = password\nauth_url = {}\nusername = glance\n\
         password = wrong-{PASSWORD}\nuser_domain_name = Default\nproject_name = service\n\
         project_domain_name = Default\n",
        mock.url()
    );
    let auth = AuthToken::from_config(&Config::from_str("k.conf", &text).unwrap()).unwrap();
    let err = auth.authenticate(Some("tok")).await.unwrap_err();
    assert!(matches!(err, AuthError::Unavailable(_)), "{err:?}");
    assert_eq!(err.status(), 503);
    assert!(!err.to_string().contains(PASSWORD), "{err}");
}

#[tokio::test]
async fn keystone_down_is_unavailable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener); // nothing listens there now
    let text = format!(
        "[keystone_authtoken]\nauth_type = password\nauth_url = http://{addr}\n\
         username = glance\npassword = {PASSWORD}\nuser_domain_id = default\n\
         http_request_max_retries = 1\nhttp_connect_timeout = 2\n"
    );
    let auth = AuthToken::from_config(&Config::from_str("k.conf", &text).unwrap()).unwrap();
    let started = std::time::Instant::now();
    let err = auth.authenticate(Some("tok")).await.unwrap_err();
    assert!(matches!(err, AuthError::Unavailable(_)), "{err:?}");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
    // One retry after 0.5 s.
    assert!(started.elapsed() >= Duration::from_millis(450));
}

#[tokio::test]
async fn keystone_answering_500_is_unavailable() {
    let mock = Mock::start().await;
    mock.add_user("tok-a", vec!["member"], HOUR);
    let auth = mock.auth("");
    // Service token can't be issued.
    mock.state().fail_with = Some(500);
    let err = auth.authenticate(Some("tok-a")).await.unwrap_err();
    assert!(matches!(err, AuthError::Unavailable(_)), "{err:?}");
    // Issued, then validation fails.
    mock.state().fail_with = None;
    mock.add_user("tok-b", vec!["member"], HOUR);
    auth.authenticate(Some("tok-b")).await.unwrap();
    mock.state().fail_with = Some(500);
    let err = auth.authenticate(Some("tok-a")).await.unwrap_err();
    assert!(matches!(err, AuthError::Unavailable(_)), "{err:?}");
    assert!(err.to_string().contains("HTTP 500"), "{err}");
    mock.state().fail_with = Some(503);
    assert!(matches!(
        auth.authenticate(Some("tok-c")).await,
        Err(AuthError::Unavailable(_))
    ));
}

#[tokio::test]
async fn validations_go_to_the_catalog_endpoint_of_the_interface() {
    let mock = Mock::start().await;
    let base = mock.url();
    mock.state().catalog = Some(json!([
        {"type": "image", "endpoints": [{"interface": "internal", "url": "http://glance"}]},
        {"type": "identity", "endpoints": [
            {"interface": "public", "region_id": "RegionOne", "url": format!("{base}/public")},
            {"interface": "internal", "region_id": "RegionTwo", "url": format!("{base}/other/v3")},
            {"interface": "internal", "region_id": "RegionOne", "url": format!("{base}/internal/v3/")},
        ]}
    ]));
    mock.add_user("tok-a", vec!["member"], HOUR);
    mock.add_user("tok-b", vec!["member"], HOUR);
    let auth = mock.auth("region_name = RegionOne\n");
    auth.authenticate(Some("tok-a")).await.unwrap();
    let auth = mock.auth("interface = public\n");
    auth.authenticate(Some("tok-b")).await.unwrap();
    assert_eq!(
        mock.state().paths,
        vec!["/internal/v3/auth/tokens", "/public/v3/auth/tokens"]
    );
}

#[tokio::test]
async fn many_distinct_tokens_keep_the_cache_at_its_cap() {
    let mock = Mock::start().await;
    mock.state().accept_prefix = Some("ok-".into());
    let auth = mock.auth("").with_cache_capacity(50);
    for i in 0..300 {
        auth.authenticate(Some(&format!("ok-{i}"))).await.unwrap();
        assert!(auth.cache_len() <= 50);
    }
    assert_eq!(auth.cache_len(), 50);
    // Bogus tokens are not cached at all.
    for i in 0..300 {
        let _ = auth.authenticate(Some(&format!("bogus-{i}"))).await;
    }
    assert_eq!(auth.cache_len(), 50);
}

#[test]
fn a_hundred_thousand_bogus_tokens_keep_the_cache_at_its_cap() {
    let cache = TokenCache::new(Duration::from_secs(300), 10_000);
    for i in 0..100_000u32 {
        cache.insert(&format!("bogus-token-{i}"), i, None);
    }
    assert_eq!(cache.len(), 10_000);
    assert_eq!(cache.get("bogus-token-99999"), Some(99_999));
    assert_eq!(cache.get("bogus-token-0"), None);
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn secrets_never_reach_logs_errors_or_debug() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mock = Mock::start().await;
    mock.add_user("user-tok-valid-1234", vec!["admin"], HOUR);
    let config = mock.config("");
    let options = AuthTokenOptions::from_config(&config).unwrap();
    let auth = AuthToken::new(options.clone()).unwrap();
    auth.authenticate(Some("user-tok-valid-1234"))
        .await
        .unwrap();
    auth.authenticate(Some("user-tok-valid-1234"))
        .await
        .unwrap();
    let invalid = auth
        .authenticate(Some("user-tok-bogus-5678"))
        .await
        .unwrap_err();
    mock.state().fail_with = Some(500);
    let unavailable = auth
        .authenticate(Some("user-tok-other-9999"))
        .await
        .unwrap_err();
    mock.state().fail_with = None;

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("Unable to validate token"),
        "capture works: {logs}"
    );
    assert!(logs.contains("invalid user token"), "{logs}");
    let texts = [
        logs,
        invalid.to_string(),
        format!("{invalid:?}"),
        unavailable.to_string(),
        format!("{unavailable:?}"),
        format!("{options:?}"),
        format!("{auth:?}"),
    ];
    let secrets = [
        PASSWORD,
        "user-tok-valid-1234",
        "user-tok-bogus-5678",
        "user-tok-other-9999",
        "svc-token-",
    ];
    for text in &texts {
        for secret in secrets {
            assert!(!text.contains(secret), "{secret:?} in {text}");
        }
    }
    assert!(format!("{options:?}").contains("password: ***"));
    assert_eq!(mock.state().seen_passwords, vec![PASSWORD]);
}
