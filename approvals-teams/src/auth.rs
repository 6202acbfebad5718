//! Inbound authentication: validates the Bot Framework JWT that the Bot Connector sends with
//! every activity (OpenID metadata, JWKS key cache, RS256 signature, issuer, audience, lifetime
//! and `serviceurl` claim).
//!
//! ```no_run
//! # async fn demo(authorization: &str, activity_service_url: &str) -> Result<(), Box<dyn std::error::Error>> {
//! use approvals_teams::auth::{AuthConfig, BotAuthenticator};
//!
//! let auth = BotAuthenticator::new(AuthConfig::new("my-bot-app-id"))?;
//! let claims = auth.validate(authorization, activity_service_url).await?;
//! println!("request from {} for app {:?}", claims.issuer, claims.app_id);
//! # Ok(()) }
//! ```
//!
//! There is no switch that turns any of these checks off.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::{Mutex, RwLock};
use url::Url;

use crate::transport::{self, DEFAULT_HTTP_TIMEOUT, ReadError, TransportError};

/// Where the public Azure cloud publishes the Bot Framework OpenID metadata document.
pub const BOT_FRAMEWORK_OPENID_METADATA_URL: &str =
    "https://login.botframework.com/v1/.well-known/openidconfiguration";

/// The issuer of tokens the Bot Connector sends to bots.
pub const BOT_FRAMEWORK_ISSUER: &str = "https://api.botframework.com";

/// The only signature algorithm accepted.
pub const ACCEPTED_ALGORITHM: &str = "RS256";

/// Longest `Authorization` header value considered (larger values are refused unparsed).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Largest metadata or JWKS document read.
const MAX_DOCUMENT_LEN: usize = 1024 * 1024;

/// base64url that tolerates (but does not need) padding, as some JWKS publishers pad `n`/`e`.
const B64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Settings for [`BotAuthenticator`].
///
/// Build it with [`AuthConfig::new`] and adjust the public fields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AuthConfig {
    /// The bot's Microsoft App ID: the required `aud` claim.
    pub app_id: String,
    /// OpenID metadata document URL (default [`BOT_FRAMEWORK_OPENID_METADATA_URL`]). Must be
    /// https, or http to a loopback address (tests).
    pub openid_metadata_url: String,
    /// Accepted `iss` values (default: only [`BOT_FRAMEWORK_ISSUER`]).
    pub issuers: Vec<String>,
    /// Tolerance applied to `exp` and `nbf` (default 5 minutes).
    pub clock_skew: Duration,
    /// Minimum time between two fetches of the metadata and keys, whatever triggers them (an
    /// unknown `kid`, stale keys, an earlier failure). Bounds how hard a stream of forged
    /// tokens can make us hit the endpoint (default 5 minutes).
    pub min_refetch_interval: Duration,
    /// Keys older than this are refetched on the next request (default 24 hours). If that fetch
    /// fails the old keys stay in use, since Microsoft rotates them well ahead of time.
    pub max_key_age: Duration,
    /// Timeout of each HTTP request to the metadata and JWKS endpoints (default 10 s).
    pub http_timeout: Duration,
}

impl AuthConfig {
    /// Settings for the public Azure cloud with the given bot app id.
    pub fn new(app_id: impl Into<String>) -> Self {
        Self {
            app_id: app_id.into(),
            openid_metadata_url: BOT_FRAMEWORK_OPENID_METADATA_URL.to_owned(),
            issuers: vec![BOT_FRAMEWORK_ISSUER.to_owned()],
            clock_skew: Duration::from_secs(5 * 60),
            min_refetch_interval: Duration::from_secs(5 * 60),
            max_key_age: Duration::from_secs(24 * 60 * 60),
            http_timeout: DEFAULT_HTTP_TIMEOUT,
        }
    }

    /// Replaces the OpenID metadata URL (sovereign clouds, loopback fakes).
    pub fn with_openid_metadata_url(mut self, url: impl Into<String>) -> Self {
        self.openid_metadata_url = url.into();
        self
    }

    /// Replaces the minimum interval between key fetches.
    pub fn with_min_refetch_interval(mut self, interval: Duration) -> Self {
        self.min_refetch_interval = interval;
        self
    }
}

/// Why an inbound request was not authenticated. Every variant means "reject the request with
/// 401"; the variant says which check failed, for logs and audit.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The configuration is unusable (bad metadata URL, TLS setup).
    #[error("authenticator misconfigured: {0}")]
    Config(#[from] TransportError),
    /// No `Authorization: Bearer <token>` value was given.
    #[error("missing bearer token: the request has no `Authorization: Bearer ...` header")]
    MissingToken,
    /// The token is not a well-formed compact JWS.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The header names an algorithm other than RS256 (including `none` and HS256).
    #[error("token algorithm {0:?} is not accepted; only RS256 is")]
    UnsupportedAlgorithm(String),
    /// The header marks extensions as critical (`crit`), which we do not implement.
    #[error("token header has critical extensions (`crit`), which are not supported")]
    UnsupportedCriticalHeader,
    /// The header has no `kid`.
    #[error("token header has no key id (`kid`)")]
    MissingKeyId,
    /// No published signing key has this `kid`, even after refreshing the keys (or the refresh
    /// was suppressed by the rate limit).
    #[error(
        "no signing key with id {kid:?} is published{}",
        if *.refetch_suppressed { " (key refetch suppressed by the rate limit)" } else { "" }
    )]
    UnknownKeyId {
        /// The `kid` of the token.
        kid: String,
        /// Whether the rate limit stopped a refetch that might have found it.
        refetch_suppressed: bool,
    },
    /// The signature does not verify with the published key (forged or tampered token).
    #[error("token signature is invalid")]
    InvalidSignature,
    /// The `iss` claim is missing or not an accepted issuer.
    #[error("token issuer {found:?} is not accepted")]
    WrongIssuer {
        /// The issuer found, if any.
        found: Option<String>,
    },
    /// The `aud` claim is missing or does not name this bot.
    #[error("token audience {found:?} is not this bot's app id")]
    WrongAudience {
        /// The audiences found.
        found: Vec<String>,
    },
    /// The token has no `exp` claim.
    #[error("token has no expiry (`exp`)")]
    MissingExpiry,
    /// The token expired (beyond the allowed clock skew).
    #[error("token expired at {expired_at} (now {now}, skew allowed {skew_secs} s)")]
    Expired {
        /// `exp`, seconds since the Unix epoch.
        expired_at: i64,
        /// Our clock, seconds since the Unix epoch.
        now: i64,
        /// Allowed skew in seconds.
        skew_secs: u64,
    },
    /// The token is not valid yet (beyond the allowed clock skew).
    #[error("token not valid before {not_before} (now {now}, skew allowed {skew_secs} s)")]
    NotYetValid {
        /// `nbf`, seconds since the Unix epoch.
        not_before: i64,
        /// Our clock, seconds since the Unix epoch.
        now: i64,
        /// Allowed skew in seconds.
        skew_secs: u64,
    },
    /// The token has no `serviceurl` claim.
    #[error("token has no `serviceurl` claim")]
    MissingServiceUrl,
    /// The `serviceurl` claim differs from the activity's `serviceUrl`: the activity tries to
    /// make the bot send its credentials somewhere the token was not issued for.
    #[error("token serviceurl {claim:?} does not match the activity serviceUrl {activity:?}")]
    ServiceUrlMismatch {
        /// The claim.
        claim: String,
        /// The activity's value.
        activity: String,
    },
    /// The signing key is not endorsed for the activity's channel.
    #[error("signing key is not endorsed for channel {channel_id:?}")]
    MissingEndorsement {
        /// The activity's `channelId`.
        channel_id: String,
    },
    /// The signing keys could not be fetched and none is cached for this `kid`. Retryable.
    #[error(
        "cannot fetch Bot Framework signing keys: {0}; check outbound access to the metadata URL"
    )]
    KeysUnavailable(String),
}

impl AuthError {
    /// Whether the same request could succeed later (key fetch failures only). The request is
    /// still rejected now.
    pub fn is_retryable(&self) -> bool {
        matches!(self, AuthError::KeysUnavailable(_))
    }
}

/// The validated claims of a Bot Framework token.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Claims {
    /// `iss`.
    pub issuer: String,
    /// `aud` (one or several values; contains the bot's app id).
    pub audience: Vec<String>,
    /// `serviceurl`: where replies to this activity must go.
    pub service_url: String,
    /// `appid` or `azp`, when present: the calling application.
    pub app_id: Option<String>,
    /// `exp`, seconds since the Unix epoch.
    pub expires_at: i64,
    /// `nbf`, seconds since the Unix epoch, when present.
    pub not_before: Option<i64>,
    /// `kid` of the key that signed the token.
    pub key_id: String,
    /// Endorsements of the signing key (channel ids such as `msteams`).
    pub endorsements: Vec<String>,
    /// Every claim, as sent.
    pub raw: Map<String, Value>,
}

/// Validates inbound Bot Framework tokens. Cheap to clone; clones share the key cache.
#[derive(Clone)]
pub struct BotAuthenticator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for BotAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BotAuthenticator")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

struct Inner {
    config: AuthConfig,
    metadata_url: Url,
    http: reqwest::Client,
    keys: RwLock<KeyCache>,
    /// Held during a fetch (single flight); remembers when the last fetch started.
    fetch: Mutex<Option<Instant>>,
}

#[derive(Default)]
struct KeyCache {
    keys: HashMap<String, Arc<SigningKey>>,
    fetched_at: Option<Instant>,
}

struct SigningKey {
    public: ring::signature::RsaPublicKeyComponents<Vec<u8>>,
    endorsements: Vec<String>,
}

#[derive(Deserialize)]
struct JwsHeader {
    alg: Option<String>,
    kid: Option<String>,
    crit: Option<Value>,
}

#[derive(Deserialize)]
struct OpenIdMetadata {
    jwks_uri: String,
}

#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    kid: Option<String>,
    n: Option<String>,
    e: Option<String>,
    #[serde(default)]
    endorsements: Vec<String>,
}

impl BotAuthenticator {
    /// Creates an authenticator with its own HTTP client. No request is made until the first
    /// token is validated.
    pub fn new(config: AuthConfig) -> Result<Self, AuthError> {
        let http = transport::build_http_client(config.http_timeout)?;
        Self::with_http_client(config, http)
    }

    /// Creates an authenticator that uses the given HTTP client (see
    /// [`build_http_client`](crate::transport::build_http_client)).
    pub fn with_http_client(config: AuthConfig, http: reqwest::Client) -> Result<Self, AuthError> {
        let metadata_url = transport::endpoint_url("OpenID metadata", &config.openid_metadata_url)?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                metadata_url,
                http,
                keys: RwLock::new(KeyCache::default()),
                fetch: Mutex::new(None),
            }),
        })
    }

    /// The settings in use.
    pub fn config(&self) -> &AuthConfig {
        &self.inner.config
    }

    /// Validates the `Authorization` header value of an inbound activity request and checks
    /// that the token was issued for `activity_service_url` (the activity's `serviceUrl`).
    ///
    /// Returns the claims only if every check passes: RS256 signature by a published key,
    /// issuer, audience, `exp`/`nbf` within the clock skew, and the `serviceurl` claim.
    pub async fn validate(
        &self,
        authorization: &str,
        activity_service_url: &str,
    ) -> Result<Claims, AuthError> {
        self.validate_inner(authorization, activity_service_url, None)
            .await
    }

    /// Like [`validate`](Self::validate), and also requires the signing key to be endorsed for
    /// `channel_id` (the activity's `channelId`, `msteams` for Teams).
    pub async fn validate_for_channel(
        &self,
        authorization: &str,
        activity_service_url: &str,
        channel_id: &str,
    ) -> Result<Claims, AuthError> {
        self.validate_inner(authorization, activity_service_url, Some(channel_id))
            .await
    }

    async fn validate_inner(
        &self,
        authorization: &str,
        activity_service_url: &str,
        channel_id: Option<&str>,
    ) -> Result<Claims, AuthError> {
        let token = bearer_token(authorization)?;
        let parts = split_token(token)?;
        let header: JwsHeader = decode_json(parts.header, "header")?;
        match header.alg.as_deref() {
            Some(ACCEPTED_ALGORITHM) => {}
            Some(other) => return Err(AuthError::UnsupportedAlgorithm(other.to_owned())),
            None => return Err(AuthError::Malformed("header has no `alg`")),
        }
        if header.crit.is_some() {
            return Err(AuthError::UnsupportedCriticalHeader);
        }
        let kid = match header.kid {
            Some(kid) if !kid.is_empty() => kid,
            _ => return Err(AuthError::MissingKeyId),
        };
        let signature = general_purpose::URL_SAFE_NO_PAD
            .decode(parts.signature)
            .map_err(|_| AuthError::Malformed("signature is not base64url"))?;
        let key = self.key_for(&kid).await?;
        key.public
            .verify(
                &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                parts.signing_input.as_bytes(),
                &signature,
            )
            .map_err(|_| AuthError::InvalidSignature)?;

        let raw: Map<String, Value> = decode_json(parts.payload, "payload")?;
        let claims = self.check_claims(raw, kid, &key)?;
        check_service_url(&claims.service_url, activity_service_url)?;
        if let Some(channel_id) = channel_id
            && !claims.endorsements.iter().any(|e| e == channel_id)
        {
            return Err(AuthError::MissingEndorsement {
                channel_id: channel_id.to_owned(),
            });
        }
        Ok(claims)
    }

    fn check_claims(
        &self,
        raw: Map<String, Value>,
        kid: String,
        key: &SigningKey,
    ) -> Result<Claims, AuthError> {
        let config = &self.inner.config;
        let issuer = raw.get("iss").and_then(Value::as_str).map(str::to_owned);
        let issuer = match issuer {
            Some(iss) if config.issuers.contains(&iss) => iss,
            found => return Err(AuthError::WrongIssuer { found }),
        };
        let audience: Vec<String> = match raw.get("aud") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        if config.app_id.is_empty() || !audience.contains(&config.app_id) {
            return Err(AuthError::WrongAudience { found: audience });
        }

        let now = unix_now();
        let skew = config.clock_skew.as_secs();
        let skew_i = i64::try_from(skew).unwrap_or(i64::MAX);
        let expires_at = numeric_date(&raw, "exp")?.ok_or(AuthError::MissingExpiry)?;
        if now > expires_at.saturating_add(skew_i) {
            return Err(AuthError::Expired {
                expired_at: expires_at,
                now,
                skew_secs: skew,
            });
        }
        let not_before = numeric_date(&raw, "nbf")?;
        if let Some(nbf) = not_before
            && now.saturating_add(skew_i) < nbf
        {
            return Err(AuthError::NotYetValid {
                not_before: nbf,
                now,
                skew_secs: skew,
            });
        }

        // Bot Framework spells the claim `serviceurl`; accept `serviceUrl` too, but never two
        // different values.
        let lower = raw.get("serviceurl").and_then(Value::as_str);
        let camel = raw.get("serviceUrl").and_then(Value::as_str);
        let service_url = match (lower, camel) {
            (Some(a), Some(b)) if a != b => {
                return Err(AuthError::Malformed("conflicting serviceurl claims"));
            }
            (Some(a), _) | (None, Some(a)) => a.to_owned(),
            (None, None) => return Err(AuthError::MissingServiceUrl),
        };
        let app_id = raw
            .get("appid")
            .or_else(|| raw.get("azp"))
            .and_then(Value::as_str)
            .map(str::to_owned);

        Ok(Claims {
            issuer,
            audience,
            service_url,
            app_id,
            expires_at,
            not_before,
            key_id: kid,
            endorsements: key.endorsements.clone(),
            raw,
        })
    }

    /// Finds the key for `kid`, fetching the key set when it is unknown or stale, at most once
    /// per `min_refetch_interval`.
    async fn key_for(&self, kid: &str) -> Result<Arc<SigningKey>, AuthError> {
        let config = &self.inner.config;
        if let Some(key) = self.cached_key(kid, true).await {
            return Ok(key);
        }
        let mut last_fetch = self.inner.fetch.lock().await;
        // Another task may have refreshed while we waited for the lock.
        if let Some(key) = self.cached_key(kid, true).await {
            return Ok(key);
        }
        let allowed = last_fetch.is_none_or(|at| at.elapsed() >= config.min_refetch_interval);
        let mut fetch_error = None;
        if allowed {
            *last_fetch = Some(Instant::now());
            match self.fetch_keys().await {
                Ok(keys) => {
                    tracing::debug!(count = keys.len(), "fetched Bot Framework signing keys");
                    let mut cache = self.inner.keys.write().await;
                    cache.keys = keys;
                    cache.fetched_at = Some(Instant::now());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "fetching Bot Framework signing keys failed");
                    fetch_error = Some(e);
                }
            }
        } else {
            tracing::debug!(kid, "signing key refetch suppressed by the rate limit");
        }
        drop(last_fetch);
        // Stale keys are still better than none when the refresh failed or was suppressed.
        if let Some(key) = self.cached_key(kid, false).await {
            return Ok(key);
        }
        match fetch_error {
            Some(e) => Err(AuthError::KeysUnavailable(e)),
            None => Err(AuthError::UnknownKeyId {
                kid: kid.to_owned(),
                refetch_suppressed: !allowed,
            }),
        }
    }

    async fn cached_key(&self, kid: &str, fresh_only: bool) -> Option<Arc<SigningKey>> {
        let cache = self.inner.keys.read().await;
        let fresh = cache
            .fetched_at
            .is_some_and(|at| at.elapsed() < self.inner.config.max_key_age);
        if fresh_only && !fresh {
            return None;
        }
        cache.keys.get(kid).cloned()
    }

    async fn fetch_keys(&self) -> Result<HashMap<String, Arc<SigningKey>>, String> {
        let metadata: OpenIdMetadata = self
            .get_json(self.inner.metadata_url.clone(), "OpenID metadata")
            .await?;
        let jwks_url =
            transport::endpoint_url("jwks_uri", &metadata.jwks_uri).map_err(|e| e.to_string())?;
        let set: JwkSet = self.get_json(jwks_url, "JWKS").await?;
        let mut keys = HashMap::new();
        for jwk in set.keys {
            if let Some((kid, key)) = parse_jwk(jwk) {
                keys.insert(kid, Arc::new(key));
            }
        }
        if keys.is_empty() {
            return Err("the JWKS document has no usable RSA signing key".to_owned());
        }
        Ok(keys)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: Url,
        what: &str,
    ) -> Result<T, String> {
        let response = self
            .inner
            .http
            .get(url.clone())
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("{what} request to {url} failed: {e}"))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("{what} endpoint {url} answered {status}"));
        }
        let body = transport::read_capped(response, MAX_DOCUMENT_LEN)
            .await
            .map_err(|e: ReadError| format!("{what} from {url}: {e}"))?;
        serde_json::from_slice(&body).map_err(|e| format!("{what} from {url} is not valid: {e}"))
    }
}

fn parse_jwk(jwk: Jwk) -> Option<(String, SigningKey)> {
    if jwk.kty.as_deref() != Some("RSA") {
        return None;
    }
    if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
        return None;
    }
    let kid = jwk.kid.filter(|k| !k.is_empty())?;
    let n = B64_LENIENT.decode(jwk.n?).ok()?;
    let e = B64_LENIENT.decode(jwk.e?).ok()?;
    if n.is_empty() || e.is_empty() {
        return None;
    }
    Some((
        kid,
        SigningKey {
            public: ring::signature::RsaPublicKeyComponents { n, e },
            endorsements: jwk.endorsements,
        },
    ))
}

fn bearer_token(authorization: &str) -> Result<&str, AuthError> {
    let value = authorization.trim();
    if value.is_empty() {
        return Err(AuthError::MissingToken);
    }
    if value.len() > MAX_TOKEN_LEN {
        return Err(AuthError::Malformed("token is too long"));
    }
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::MissingToken)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::MissingToken);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::MissingToken);
    }
    Ok(token)
}

struct TokenParts<'a> {
    header: &'a str,
    payload: &'a str,
    signature: &'a str,
    signing_input: &'a str,
}

fn split_token(token: &str) -> Result<TokenParts<'_>, AuthError> {
    let mut it = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (it.next(), it.next(), it.next(), it.next())
    else {
        return Err(AuthError::Malformed(
            "a JWT has exactly three dot-separated parts",
        ));
    };
    if header.is_empty() || payload.is_empty() {
        return Err(AuthError::Malformed("empty header or payload"));
    }
    let signing_input = &token[..header.len() + 1 + payload.len()];
    Ok(TokenParts {
        header,
        payload,
        signature,
        signing_input,
    })
}

fn decode_json<T: serde::de::DeserializeOwned>(
    part: &str,
    which: &'static str,
) -> Result<T, AuthError> {
    let bytes = general_purpose::URL_SAFE_NO_PAD.decode(part).map_err(|_| {
        AuthError::Malformed(if which == "header" {
            "header is not base64url"
        } else {
            "payload is not base64url"
        })
    })?;
    serde_json::from_slice(&bytes).map_err(|_| {
        AuthError::Malformed(if which == "header" {
            "header is not a JSON object of the expected shape"
        } else {
            "payload is not a JSON object"
        })
    })
}

fn numeric_date(claims: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, AuthError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                Ok(Some(i))
            } else if let Some(f) = n.as_f64().filter(|f| f.is_finite()) {
                // Saturating float-to-int conversion; fractional seconds are dropped.
                Ok(Some(f.floor() as i64))
            } else {
                Err(AuthError::Malformed("a time claim is out of range"))
            }
        }
        Some(_) => Err(AuthError::Malformed("a time claim is not a number")),
    }
}

fn unix_now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    i64::try_from(secs).unwrap_or(i64::MAX)
}

/// Compares the claim with the activity's serviceUrl: ASCII case-insensitive, ignoring one
/// trailing slash, as the Bot Framework SDKs do.
fn check_service_url(claim: &str, activity: &str) -> Result<(), AuthError> {
    let norm = |s: &str| s.trim().trim_end_matches('/').to_ascii_lowercase();
    if activity.trim().is_empty() || norm(claim) != norm(activity) {
        return Err(AuthError::ServiceUrlMismatch {
            claim: claim.to_owned(),
            activity: activity.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        assert!(matches!(bearer_token(""), Err(AuthError::MissingToken)));
        assert!(matches!(
            bearer_token("Basic abc"),
            Err(AuthError::MissingToken)
        ));
        assert!(matches!(
            bearer_token("Bearer "),
            Err(AuthError::MissingToken)
        ));
        assert!(matches!(
            bearer_token("abc.def.ghi"),
            Err(AuthError::MissingToken)
        ));
        assert_eq!(bearer_token("bearer a.b.c").ok(), Some("a.b.c"));
        assert_eq!(bearer_token("Bearer a.b.c").ok(), Some("a.b.c"));
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_LEN));
        assert!(matches!(bearer_token(&long), Err(AuthError::Malformed(_))));
    }

    #[test]
    fn splitting() {
        assert!(split_token("a.b").is_err());
        assert!(split_token("a.b.c.d").is_err());
        assert!(split_token(".b.c").is_err());
        let parts = split_token("aa.bb.cc").ok();
        assert_eq!(parts.map(|p| p.signing_input), Some("aa.bb"));
    }

    #[test]
    fn service_url_comparison() {
        assert!(
            check_service_url(
                "https://smba.trafficmanager.net/amer/",
                "https://smba.trafficmanager.net/amer"
            )
            .is_ok()
        );
        assert!(
            check_service_url(
                "https://SMBA.trafficmanager.net/amer/",
                "https://smba.trafficmanager.net/amer/"
            )
            .is_ok()
        );
        assert!(
            check_service_url(
                "https://smba.trafficmanager.net/amer/",
                "https://evil.example/amer/"
            )
            .is_err()
        );
        assert!(check_service_url("https://smba.trafficmanager.net/amer/", "").is_err());
    }

    #[test]
    fn time_claims() {
        let mut m = Map::new();
        m.insert("exp".into(), serde_json::json!(12.9));
        m.insert("nbf".into(), serde_json::json!("soon"));
        assert_eq!(numeric_date(&m, "exp").ok().flatten(), Some(12));
        assert!(numeric_date(&m, "nbf").is_err());
        assert_eq!(numeric_date(&m, "iat").ok().flatten(), None);
    }
}
