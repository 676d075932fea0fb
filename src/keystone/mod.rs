//! Keystone token authentication, as keystonemiddleware's `auth_token` does it for
//! glance-api (keystonemiddleware 13.0.1, `[keystone_authtoken]`).
//!
//! [`AuthToken::authenticate`] takes the request's `X-Auth-Token` and answers with the
//! caller's [`RequestContext`], or an [`AuthError`]: `Missing` and `Invalid` are
//! answered 401 with a `WWW-Authenticate: Keystone uri="…"` header
//! ([`AuthToken::www_authenticate`]); `Unavailable` (Keystone unreachable, timing out,
//! or answering an error) is answered 503 — a request is never let through
//! unauthenticated.
//!
//! * The service authenticates with its own credentials (keystoneauth's `password`
//!   plugin; [`options`]) and keeps the token until shortly before it expires
//!   (120 s before, or half-way through a shorter life), renewing it once for all
//!   concurrent requests, and at once when Keystone answers 401 to it.
//! * User tokens are validated with `GET /v3/auth/tokens` on the identity endpoint of
//!   the configured `interface` in the service token's catalog (`auth_url` when the
//!   catalog has none); valid ones are cached ([`cache`]). Tokens, hashed or not, and
//!   the password never appear in a log line or an error.
//!
//! Not implemented: `X-Service-Token` (service tokens and `service_token_roles*`, which
//! are parsed but unused), `allow_expired`, access rules
//! (`OpenStack-Identity-Access-Rules`: not sent, so Keystone refuses application
//! credential tokens that carry access rules), token binding, memcache, and the
//! `X-Identity-Status` headers (the context is returned instead).

pub mod cache;
mod client;
pub mod options;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use thiserror::Error;
use tracing::{debug, error, info};

use crate::conf::{ConfError, Config};
use cache::TokenCache;
use client::KeystoneClient;
pub use options::{AuthTokenOptions, Secret};

/// Why a request is not authenticated.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum AuthError {
    /// No token in the request (401).
    #[error("The request you have made requires authentication.")]
    Missing,
    /// Keystone refused the token, or it has expired (401).
    #[error("Token authorization failed")]
    Invalid,
    /// Keystone could not be asked (503); the message says why, without secrets.
    #[error("The Keystone service is temporarily unavailable: {0}")]
    Unavailable(String),
}

impl AuthError {
    /// The HTTP status to answer: 401, or 503 for [`AuthError::Unavailable`].
    pub fn status(&self) -> u16 {
        match self {
            AuthError::Missing | AuthError::Invalid => 401,
            AuthError::Unavailable(_) => 503,
        }
    }
}

/// Who made a request, from a validated token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    /// `token.user.id`.
    pub user_id: String,
    /// `token.user.name`.
    pub user_name: Option<String>,
    /// `token.user.domain.id`.
    pub user_domain_id: Option<String>,
    /// `token.user.domain.name`.
    pub user_domain_name: Option<String>,
    /// `token.project.id`; none for a token not scoped to a project.
    pub project_id: Option<String>,
    /// `token.project.name`.
    pub project_name: Option<String>,
    /// `token.project.domain.id`.
    pub project_domain_id: Option<String>,
    /// `token.project.domain.name`.
    pub project_domain_name: Option<String>,
    /// Role names, lower-cased.
    pub roles: Vec<String>,
    /// Whether a role is `admin`.
    pub is_admin: bool,
    /// `token.expires_at`.
    pub expires_at: SystemTime,
}

/// keystonemiddleware's `auth_token`: validates user tokens against Keystone.
pub struct AuthToken {
    options: Arc<AuthTokenOptions>,
    client: KeystoneClient,
    cache: TokenCache<Arc<RequestContext>>,
    /// Tokens Keystone refused, for a short while.
    refused: TokenCache<()>,
    /// Until when Keystone is taken for unreachable, and why: [`OUTAGE_HOLD`] after a
    /// failed validation, tokens not cached are answered 503 without asking again.
    outage: std::sync::Mutex<Option<(Instant, String)>>,
}

/// How long a failed validation stands for Keystone's state: a request, or its retry on
/// another path of the same connection, does not wait through the retries again.
pub const OUTAGE_HOLD: Duration = Duration::from_secs(1);

impl AuthToken {
    /// Reads `[keystone_authtoken]` and builds the authenticator.
    pub fn from_config(c: &Config) -> Result<Self, ConfError> {
        Self::new(AuthTokenOptions::from_config(c)?)
    }

    /// An authenticator with `options` and a cache of
    /// [`cache::DEFAULT_CAPACITY`] entries. Nothing is asked of Keystone until the first
    /// token is validated. Fails when `cafile` cannot be read.
    pub fn new(options: AuthTokenOptions) -> Result<Self, ConfError> {
        let options = Arc::new(options);
        Ok(AuthToken {
            client: KeystoneClient::new(Arc::clone(&options))?,
            cache: TokenCache::new(
                Duration::from_secs(options.token_cache_time),
                cache::DEFAULT_CAPACITY,
            ),
            refused: refused_cache(&options, cache::DEFAULT_CAPACITY),
            outage: std::sync::Mutex::new(None),
            options,
        })
    }

    /// The same with a cache of at most `capacity` entries (emptying the cache).
    pub fn with_cache_capacity(mut self, capacity: usize) -> Self {
        self.cache = TokenCache::new(Duration::from_secs(self.options.token_cache_time), capacity);
        self.refused = refused_cache(&self.options, capacity);
        self
    }

    /// The options.
    pub fn options(&self) -> &AuthTokenOptions {
        &self.options
    }

    /// The number of cached validations, valid and refused.
    pub fn cache_len(&self) -> usize {
        self.cache.len() + self.refused.len()
    }

    /// The `WWW-Authenticate` value of a 401: `Keystone uri="<www_authenticate_uri>"`
    /// (`auth_url` when that is unset, as keystonemiddleware falls back to the auth
    /// endpoint).
    pub fn www_authenticate(&self) -> String {
        let uri = self
            .options
            .www_authenticate_uri
            .as_deref()
            .unwrap_or(&self.options.auth_url);
        format!("Keystone uri=\"{uri}\"")
    }

    /// Authenticates a request by its `X-Auth-Token` value (surrounding whitespace is
    /// ignored, as keystonemiddleware strips it).
    pub async fn authenticate(
        &self,
        token: Option<&str>,
    ) -> Result<Arc<RequestContext>, AuthError> {
        let Some(token) = token.map(str::trim).filter(|t| !t.is_empty()) else {
            info!("Rejecting request: no token");
            return Err(AuthError::Missing);
        };
        if http::HeaderValue::from_str(token).is_err() {
            info!("Rejecting request: the token is not a valid header value");
            return Err(AuthError::Invalid);
        }
        if self.refused.get(token).is_some() {
            info!("Rejecting request: the token was refused a moment ago");
            return Err(AuthError::Invalid);
        }
        if let Some(ctx) = self.cache.get(token) {
            if ctx.expires_at > SystemTime::now() {
                debug!(user_id = %ctx.user_id, "token validated from the cache");
                return Ok(ctx);
            }
            self.cache.remove(token);
            info!("Rejecting request: the cached token has expired");
            return Err(AuthError::Invalid);
        }
        if let Some(reason) = self.outage() {
            info!("Rejecting request: Keystone was unreachable a moment ago");
            return Err(AuthError::Unavailable(reason));
        }
        let validated = self.client.validate(token).await;
        self.set_outage(match &validated {
            Err(AuthError::Unavailable(reason)) => {
                Some((Instant::now() + OUTAGE_HOLD, reason.clone()))
            }
            _ => None,
        });
        match validated {
            Ok(Some(ctx)) => {
                let left = ctx
                    .expires_at
                    .duration_since(SystemTime::now())
                    .unwrap_or_default();
                let ctx = Arc::new(ctx);
                self.cache
                    .insert(token, Arc::clone(&ctx), Some(Instant::now() + left));
                debug!(user_id = %ctx.user_id, "token validated by Keystone");
                Ok(ctx)
            }
            Ok(None) => {
                self.refused.insert(token, (), None);
                info!("Rejecting request: invalid user token");
                Err(AuthError::Invalid)
            }
            Err(e) => {
                error!(error = %e, "Unable to validate token");
                Err(e)
            }
        }
    }
}

impl AuthToken {
    fn outage_lock(&self) -> std::sync::MutexGuard<'_, Option<(Instant, String)>> {
        // The guarded value is replaced whole, so a poisoned lock still holds a valid one.
        self.outage
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Why Keystone is taken for unreachable, while [`OUTAGE_HOLD`] lasts.
    fn outage(&self) -> Option<String> {
        let outage = self.outage_lock();
        outage
            .as_ref()
            .filter(|(until, _)| Instant::now() < *until)
            .map(|(_, reason)| reason.clone())
    }

    fn set_outage(&self, outage: Option<(Instant, String)>) {
        *self.outage_lock() = outage;
    }
}

/// The cache of refused tokens: [`cache::INVALID_TTL`], or `token_cache_time` when
/// shorter.
fn refused_cache(options: &AuthTokenOptions, capacity: usize) -> TokenCache<()> {
    let ttl = Duration::from_secs(options.token_cache_time).min(cache::INVALID_TTL);
    TokenCache::new(ttl, capacity)
}

impl std::fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthToken")
            .field("options", &self.options)
            .field("cached", &self.cache.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(extra: &str) -> AuthToken {
        let text = format!(
            "[keystone_authtoken]\nauth_type = password\nauth_url = http://127.0.0.1:9/identity\n\
             username = glance\npassword = pw-secret\nuser_domain_id = default\n{extra}"
        );
        AuthToken::from_config(&Config::from_str("t", &text).unwrap()).unwrap()
    }

    #[test]
    fn www_authenticate_as_keystonemiddleware_formats_it() {
        assert_eq!(
            auth("www_authenticate_uri = https://keystone.example.com/v3\n").www_authenticate(),
            "Keystone uri=\"https://keystone.example.com/v3\""
        );
        assert_eq!(
            auth("").www_authenticate(),
            "Keystone uri=\"http://127.0.0.1:9/identity\""
        );
    }

    #[tokio::test]
    async fn missing_or_malformed_tokens_are_refused_without_asking_keystone() {
        let a = auth("");
        assert_eq!(a.authenticate(None).await, Err(AuthError::Missing));
        assert_eq!(a.authenticate(Some("  ")).await, Err(AuthError::Missing));
        assert_eq!(
            a.authenticate(Some("abc\ndef")).await,
            Err(AuthError::Invalid)
        );
        assert!(!format!("{a:?}").contains("pw-secret"));
    }

    #[test]
    fn statuses() {
        assert_eq!(AuthError::Missing.status(), 401);
        assert_eq!(AuthError::Invalid.status(), 401);
        assert_eq!(AuthError::Unavailable("x".into()).status(), 503);
    }
}
