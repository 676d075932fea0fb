//! `glance_operator::keystone` against a mock Keystone on a loopback port.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::keystone::{HOUR, Mock, PASSWORD};
use glance_operator::conf::Config;
use glance_operator::keystone::cache::TokenCache;
use glance_operator::keystone::{AuthError, AuthToken, AuthTokenOptions, OUTAGE_HOLD};
use serde_json::json;

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
    // A refused token is remembered for a moment: Keystone is not asked again.
    assert_eq!(
        auth.authenticate(Some("no-such-token")).await,
        Err(AuthError::Invalid)
    );
    assert_eq!(mock.counts(), (1, 1));
    assert_eq!(auth.cache_len(), 1);
    assert_eq!(
        auth.www_authenticate(),
        "Keystone uri=\"https://keystone.example.com\""
    );
}

#[tokio::test]
async fn a_refused_token_is_asked_again_after_a_while_and_never_evicts_valid_ones() {
    let mock = Mock::start().await;
    mock.add_user("tok-a", vec!["member"], HOUR);
    let auth = mock.auth("token_cache_time = 1\n").with_cache_capacity(2);
    auth.authenticate(Some("tok-a")).await.unwrap();
    for n in 0..5 {
        let bogus = format!("bogus-{n}");
        assert_eq!(
            auth.authenticate(Some(&bogus)).await,
            Err(AuthError::Invalid)
        );
    }
    assert_eq!(mock.counts(), (1, 6));
    // The valid token is still cached; the refused ones are held to their own cap.
    auth.authenticate(Some("tok-a")).await.unwrap();
    assert_eq!(mock.counts(), (1, 6));
    assert_eq!(auth.cache_len(), 3);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        auth.authenticate(Some("bogus-4")).await,
        Err(AuthError::Invalid)
    );
    assert_eq!(
        mock.counts(),
        (1, 7),
        "asked again once token_cache_time has passed"
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
    // Issued, then validation fails (once the outage is no longer held).
    tokio::time::sleep(OUTAGE_HOLD + Duration::from_millis(100)).await;
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
async fn an_outage_is_held_for_a_moment_so_no_request_waits_through_it_twice() {
    let mock = Mock::start().await;
    mock.add_user("tok-a", vec!["member"], HOUR);
    mock.add_user("tok-b", vec!["member"], HOUR);
    let auth = mock.auth("");
    auth.authenticate(Some("tok-a")).await.unwrap();
    mock.state().fail_with = Some(500);
    let asked = mock.requests();
    let err = auth.authenticate(Some("tok-b")).await.unwrap_err();
    assert!(matches!(err, AuthError::Unavailable(_)), "{err:?}");
    let after_first = mock.requests();
    assert!(after_first > asked, "Keystone was asked");
    // Within the hold: answered at once, Keystone not asked; cached tokens still work.
    let again = auth.authenticate(Some("tok-b")).await.unwrap_err();
    assert_eq!(again, err);
    assert_eq!(mock.requests(), after_first);
    auth.authenticate(Some("tok-a")).await.unwrap();
    // After it, Keystone is asked again, and once it answers the outage is over.
    tokio::time::sleep(OUTAGE_HOLD + Duration::from_millis(100)).await;
    mock.state().fail_with = None;
    auth.authenticate(Some("tok-b")).await.unwrap();
    assert!(mock.requests() > after_first);
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
    // Bogus tokens are remembered in a cache of their own, with the same cap, and do not
    // push the valid ones out.
    for i in 0..300 {
        let _ = auth.authenticate(Some(&format!("bogus-{i}"))).await;
        assert!(auth.cache_len() <= 100);
    }
    assert_eq!(auth.cache_len(), 100);
    let asked = mock.counts();
    auth.authenticate(Some("ok-299")).await.unwrap();
    assert_eq!(
        mock.counts(),
        asked,
        "the newest valid token is still cached"
    );
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
