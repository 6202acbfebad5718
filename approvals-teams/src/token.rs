//! Outbound authentication: the bot's client-credentials access token for the Bot Connector,
//! fetched from the Microsoft identity platform and cached until shortly before it expires.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use approvals_teams::token::{ClientSecret, TokenConfig, TokenProvider};
//!
//! let tokens = TokenProvider::new(TokenConfig::new("app-id", ClientSecret::new("secret")))?;
//! let token = tokens.token().await?; // cached on later calls
//! assert!(!token.secret().is_empty());
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Mutex;
use url::Url;

use crate::transport::{self, DEFAULT_HTTP_TIMEOUT, TransportError};

/// Token endpoint for multi-tenant bots in the public Azure cloud.
pub const BOT_FRAMEWORK_TOKEN_URL: &str =
    "https://login.microsoftonline.com/botframework.com/oauth2/v2.0/token";

/// Scope of tokens for the Bot Connector.
pub const BOT_FRAMEWORK_SCOPE: &str = "https://api.botframework.com/.default";

const MAX_TOKEN_RESPONSE_LEN: usize = 64 * 1024;

/// A client secret. Its `Debug` output is redacted.
#[derive(Clone)]
pub struct ClientSecret(String);

impl ClientSecret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientSecret(<redacted>)")
    }
}

/// Settings for [`TokenProvider`]. Build with [`TokenConfig::new`], then adjust fields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TokenConfig {
    /// The bot's Microsoft App ID (`client_id`).
    pub app_id: String,
    /// The bot's client secret.
    pub app_secret: ClientSecret,
    /// Token endpoint (default [`BOT_FRAMEWORK_TOKEN_URL`]; single-tenant bots use
    /// `https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token`). Must be https, or
    /// http to a loopback address (tests).
    pub token_url: String,
    /// Requested scope (default [`BOT_FRAMEWORK_SCOPE`]).
    pub scope: String,
    /// A cached token is replaced this long before it expires (default 5 minutes).
    pub refresh_margin: Duration,
    /// Timeout of each token request (default 10 s).
    pub http_timeout: Duration,
}

impl TokenConfig {
    /// Settings for a multi-tenant bot in the public Azure cloud.
    pub fn new(app_id: impl Into<String>, app_secret: ClientSecret) -> Self {
        Self {
            app_id: app_id.into(),
            app_secret,
            token_url: BOT_FRAMEWORK_TOKEN_URL.to_owned(),
            scope: BOT_FRAMEWORK_SCOPE.to_owned(),
            refresh_margin: Duration::from_secs(5 * 60),
            http_timeout: DEFAULT_HTTP_TIMEOUT,
        }
    }

    /// Replaces the token endpoint URL.
    pub fn with_token_url(mut self, url: impl Into<String>) -> Self {
        self.token_url = url.into();
        self
    }

    /// Replaces the refresh margin.
    pub fn with_refresh_margin(mut self, margin: Duration) -> Self {
        self.refresh_margin = margin;
        self
    }
}

/// An access token for the Bot Connector. Its `Debug` output is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken {
    value: Arc<str>,
    refresh_at: Instant,
}

impl AccessToken {
    /// The bearer token, for the `Authorization: Bearer` header.
    pub fn secret(&self) -> &str {
        &self.value
    }

    /// When the provider will stop handing this token out (its expiry minus the margin).
    pub fn refresh_at(&self) -> Instant {
        self.refresh_at
    }
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("value", &"<redacted>")
            .field("refresh_at", &self.refresh_at)
            .finish()
    }
}

/// Getting an access token failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The configuration is unusable (bad token URL, TLS setup).
    #[error("token provider misconfigured: {0}")]
    Config(#[from] TransportError),
    /// The identity endpoint could not be reached or the request timed out. Retryable.
    #[error(
        "token request to {url} failed: {source}; check outbound access to the identity endpoint"
    )]
    Transport {
        /// The token endpoint.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The identity endpoint refused the credentials or the request (4xx).
    #[error(
        "the identity endpoint refused the token request ({status}): {error}: {description}; \
         check the bot's app id and client secret, and for a single-tenant bot use the \
         tenant's token URL"
    )]
    Rejected {
        /// HTTP status.
        status: u16,
        /// OAuth `error` code (e.g. `invalid_client`), or empty.
        error: String,
        /// OAuth `error_description`, or empty.
        description: String,
    },
    /// The identity endpoint failed (5xx or 429). Retryable.
    #[error("the identity endpoint is unavailable ({status}); retry later")]
    Unavailable {
        /// HTTP status.
        status: u16,
    },
    /// The response was not a token response.
    #[error("the identity endpoint answered with an unexpected body: {0}")]
    MalformedResponse(String),
}

impl TokenError {
    /// Whether retrying later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            TokenError::Transport { .. } | TokenError::Unavailable { .. }
        )
    }
}

/// Fetches and caches the bot's access token. Cheap to clone; clones share the cache, and
/// concurrent callers wait for a single fetch.
#[derive(Clone)]
pub struct TokenProvider {
    inner: Arc<TokenInner>,
}

impl std::fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenProvider")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

struct TokenInner {
    config: TokenConfig,
    url: Url,
    http: reqwest::Client,
    cached: Mutex<Option<AccessToken>>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    expires_in: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
struct OAuthError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

impl TokenProvider {
    /// Creates a provider with its own HTTP client. No request is made until the first
    /// [`token`](Self::token) call.
    pub fn new(config: TokenConfig) -> Result<Self, TokenError> {
        let http = transport::build_http_client(config.http_timeout)?;
        Self::with_http_client(config, http)
    }

    /// Creates a provider that uses the given HTTP client.
    pub fn with_http_client(
        config: TokenConfig,
        http: reqwest::Client,
    ) -> Result<Self, TokenError> {
        let url = transport::endpoint_url("token endpoint", &config.token_url)?;
        Ok(Self {
            inner: Arc::new(TokenInner {
                config,
                url,
                http,
                cached: Mutex::new(None),
            }),
        })
    }

    /// The settings in use.
    pub fn config(&self) -> &TokenConfig {
        &self.inner.config
    }

    /// Returns the cached token, or fetches a new one when there is none or it is within the
    /// refresh margin of its expiry.
    pub async fn token(&self) -> Result<AccessToken, TokenError> {
        let mut cached = self.inner.cached.lock().await;
        if let Some(token) = cached.as_ref()
            && Instant::now() < token.refresh_at
        {
            return Ok(token.clone());
        }
        let token = self.fetch().await?;
        *cached = Some(token.clone());
        Ok(token)
    }

    /// Drops `rejected` from the cache (after the Bot Connector answered 401 to it), so the
    /// next [`token`](Self::token) call fetches a new one. A token fetched since by another
    /// task is kept.
    pub async fn invalidate(&self, rejected: &AccessToken) {
        let mut cached = self.inner.cached.lock().await;
        if cached.as_ref().is_some_and(|t| t.value == rejected.value) {
            *cached = None;
        }
    }

    async fn fetch(&self) -> Result<AccessToken, TokenError> {
        let config = &self.inner.config;
        let url = self.inner.url.clone();
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", config.app_id.as_str()),
            ("client_secret", config.app_secret.expose()),
            ("scope", config.scope.as_str()),
        ];
        let started = Instant::now();
        let transport_err = |source| TokenError::Transport {
            url: url.to_string(),
            source,
        };
        let response = self
            .inner
            .http
            .post(url.clone())
            .header(http::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(transport_err)?;
        let status = response.status();
        let body = transport::read_capped(response, MAX_TOKEN_RESPONSE_LEN)
            .await
            .map_err(|e| match e {
                transport::ReadError::Transport(source) => transport_err(source),
                other => TokenError::MalformedResponse(other.to_string()),
            })?;
        if status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS {
            return Err(TokenError::Unavailable {
                status: status.as_u16(),
            });
        }
        if !status.is_success() {
            let oauth: OAuthError = serde_json::from_slice(&body).unwrap_or_default();
            return Err(TokenError::Rejected {
                status: status.as_u16(),
                error: oauth.error,
                description: oauth.error_description,
            });
        }
        let parsed: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| TokenError::MalformedResponse(format!("not a token response: {e}")))?;
        let value = parsed
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| TokenError::MalformedResponse("no access_token".to_owned()))?;
        let expires_in = parsed
            .expires_in
            .as_ref()
            .and_then(|v| match v {
                serde_json::Value::Number(n) => n.as_u64(),
                // The v1 endpoint sends it as a string.
                serde_json::Value::String(s) => s.parse().ok(),
                _ => None,
            })
            .ok_or_else(|| TokenError::MalformedResponse("no valid expires_in".to_owned()))?;
        let lifetime = Duration::from_secs(expires_in).saturating_sub(config.refresh_margin);
        tracing::debug!(expires_in, "fetched Bot Connector access token");
        Ok(AccessToken {
            value: value.into(),
            refresh_at: started + lifetime,
        })
    }
}
