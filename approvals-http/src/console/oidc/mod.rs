//! OpenID Connect sign-in for the review console: the configuration ([`OidcConfig`]), the
//! discovered provider ([`OidcClient`]: metadata, signing keys, logins in progress) and the
//! checks that turn a verified ID token into a reviewer. The routes are in `routes`.
//!
//! The flow is the authorization code flow with PKCE (S256), a `state` bound to the browser
//! by a short-lived cookie and a `nonce` bound to the ID token. Every protocol check (the ID
//! token's signature against the provider's JWKS, issuer, audience, expiry, nonce) is made by
//! the `openidconnect` crate; this module adds what the crate leaves to the relying party:
//! the authorized party (`azp`), the issue time, which claim names the reviewer and where
//! their groups come from.

mod routes;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use approvals_core::{IdentityResolver, Principal, PrincipalKind};
use openidconnect::core::{
    CoreClient, CoreGenderClaim, CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm, CoreProviderMetadata,
};
use openidconnect::{
    ClientId, ClientSecret, EndpointMaybeSet, EndpointNotSet, EndpointSet, HttpRequest,
    HttpResponse, IdTokenClaims, IssuerUrl, JsonWebKeySetUrl, RedirectUrl,
};
use url::Url;

pub(in crate::console) use routes::{acting_reviewer, handle};

/// The path the provider sends the browser back to, under the server's public URL.
pub const CALLBACK_PATH: &str = "/console/oidc/callback";

/// The path that starts a sign-in.
pub const START_PATH: &str = "/console/oidc/start";

/// The channel name the identity resolver is asked under, with the identity claim's value as
/// the external id.
pub const RESOLVER_CHANNEL: &str = "oidc";

/// How long a sign-in may take between leaving for the provider and coming back.
const LOGIN_TTL: Duration = Duration::from_secs(600);

/// At most this many sign-ins in progress; the oldest is dropped beyond it.
const MAX_PENDING: usize = 10_000;

/// The signing keys are fetched again (for a key the cached set lacks) at most this often.
const JWKS_REFRESH: Duration = Duration::from_secs(60);

/// Largest answer read from the provider, in bytes.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// The signing algorithms accepted for ID tokens: asymmetric ones only (a token signed with
/// the client secret proves less, and `none` proves nothing).
const ASYMMETRIC: [CoreJwsSigningAlgorithm; 9] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EdDsa,
];

/// Where a signed-in reviewer's groups come from.
#[derive(Clone, Default)]
enum Groups {
    /// Nowhere: the reviewer has no groups (rules that name users still apply).
    #[default]
    None,
    /// A claim of the ID token (an array of strings), as it was at sign-in.
    Claim(String),
    /// The identity resolver, asked at sign-in and again before every decision.
    Resolver(Arc<dyn IdentityResolver>),
}

/// How the console signs reviewers in with an OpenID Connect provider. Give it to
/// [`OidcClient::discover`], then the client to
/// [`ReviewServerBuilder::oidc`](crate::ReviewServerBuilder::oidc).
///
/// ```
/// use std::time::Duration;
/// use approvals_http::OidcConfig;
///
/// let public_url = "https://approvals.example.com/".parse()?;
/// let config = OidcConfig::new("https://login.example.com", "approvals-console", &public_url)
///     .client_secret("…")
///     .groups_claim("groups")
///     .session_ttl(Duration::from_secs(3600))
///     .display_name("Example SSO");
/// # Ok::<(), url::ParseError>(())
/// ```
#[derive(Clone)]
pub struct OidcConfig {
    issuer_url: String,
    client_id: String,
    client_secret: Option<String>,
    public_url: Url,
    redirect_url: Option<Url>,
    scopes: Vec<String>,
    identity_claim: String,
    groups: Groups,
    allowed_clock_skew: Duration,
    session_ttl: Duration,
    display_name: Option<String>,
    token_sign_in: bool,
    timeout: Duration,
}

impl fmt::Debug for OidcConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcConfig")
            .field("issuer_url", &self.issuer_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "***"))
            .field("redirect_url", &self.callback_url().as_str().to_owned())
            .field("scopes", &self.scopes)
            .field("identity_claim", &self.identity_claim)
            .field(
                "groups",
                &match &self.groups {
                    Groups::None => "none".to_owned(),
                    Groups::Claim(c) => format!("claim {c}"),
                    Groups::Resolver(_) => "identity resolver".to_owned(),
                },
            )
            .field("allowed_clock_skew", &self.allowed_clock_skew)
            .field("session_ttl", &self.session_ttl)
            .field("token_sign_in", &self.token_sign_in)
            .finish_non_exhaustive()
    }
}

impl OidcConfig {
    /// Sign-in with the provider whose issuer identifier is `issuer_url` (its discovery
    /// document is at `{issuer_url}/.well-known/openid-configuration`), as the client
    /// `client_id` registered there, for the console served at `public_url` (the provider
    /// sends browsers back to `{public_url}console/oidc/callback`, which must be registered as
    /// a redirect URI).
    ///
    /// Defaults: no client secret (a public client; PKCE still binds the code), scopes
    /// `openid email profile`, the reviewer named by the `email` claim, no groups, 60 seconds
    /// of clock skew, one-hour sessions, API-token sign-in still offered.
    pub fn new(
        issuer_url: impl Into<String>,
        client_id: impl Into<String>,
        public_url: &Url,
    ) -> Self {
        OidcConfig {
            issuer_url: issuer_url.into(),
            client_id: client_id.into(),
            client_secret: None,
            public_url: public_url.clone(),
            redirect_url: None,
            scopes: vec!["openid".into(), "email".into(), "profile".into()],
            identity_claim: "email".into(),
            groups: Groups::None,
            allowed_clock_skew: Duration::from_secs(60),
            session_ttl: Duration::from_secs(3600),
            display_name: None,
            token_sign_in: true,
            timeout: Duration::from_secs(10),
        }
    }

    /// The client secret (a confidential client; sent with HTTP Basic authentication).
    pub fn client_secret(mut self, secret: impl Into<String>) -> Self {
        self.client_secret = Some(secret.into());
        self
    }

    /// Where the provider sends browsers back, when it is not `{public_url}console/oidc/callback`
    /// (another host name for the same server). Its path must be `/console/oidc/callback`.
    pub fn redirect_url(mut self, url: Url) -> Self {
        self.redirect_url = Some(url);
        self
    }

    /// The scopes asked for (`openid` is always asked for). Some providers emit a groups claim
    /// only for a `groups` scope (Okta).
    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// The ID token claim that names the reviewer (default `email`; `sub`,
    /// `preferred_username`, `upn` or any string claim). With `email`, a token whose
    /// `email_verified` is `false` is refused.
    pub fn identity_claim(mut self, claim: impl Into<String>) -> Self {
        self.identity_claim = claim.into();
        self
    }

    /// Reviewers' groups are the ID token's `claim` (an array of strings), as it is at
    /// sign-in; the session then ends when the ID token expires, so groups are read again at
    /// the next sign-in. Replaces [`resolver`](Self::resolver).
    pub fn groups_claim(mut self, claim: impl Into<String>) -> Self {
        self.groups = Groups::Claim(claim.into());
        self
    }

    /// Reviewers are the principals `resolver` maps the identity claim to (channel
    /// [`RESOLVER_CHANNEL`]), with their groups, asked at sign-in and again before every
    /// decision, so a reviewer removed from a group cannot decide with the session they had.
    /// Replaces [`groups_claim`](Self::groups_claim).
    pub fn resolver(mut self, resolver: impl IdentityResolver) -> Self {
        self.groups = Groups::Resolver(Arc::new(resolver));
        self
    }

    /// How far the provider's clock may be from this server's when checking the ID token's
    /// expiry and issue time (default 60 seconds).
    pub fn allowed_clock_skew(mut self, skew: Duration) -> Self {
        self.allowed_clock_skew = skew;
        self
    }

    /// How long a console session made by this sign-in lasts (default one hour). With groups
    /// from a claim, never longer than the ID token.
    pub fn session_ttl(mut self, ttl: Duration) -> Self {
        self.session_ttl = ttl;
        self
    }

    /// The provider's name on the sign-in page ("Sign in with …"; default the issuer's host).
    pub fn display_name(mut self, name: impl Into<String>) -> Self {
        self.display_name = Some(name.into());
        self
    }

    /// Whether the console still offers sign-in with a pasted API token (default `true`).
    /// With `false` the console is OpenID Connect only: the token form is gone and
    /// `POST /console/login` is refused. API tokens keep working for the `/v1` API.
    pub fn token_sign_in(mut self, allowed: bool) -> Self {
        self.token_sign_in = allowed;
        self
    }

    /// How long each call to the provider may take (default 10 seconds).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn callback_url(&self) -> Url {
        self.redirect_url.clone().unwrap_or_else(|| {
            let mut url = self.public_url.clone();
            url.set_path(CALLBACK_PATH);
            url.set_query(None);
            url.set_fragment(None);
            url
        })
    }
}

/// The console's OpenID Connect sign-in could not be set up.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum OidcError {
    /// The configuration is wrong; fix it and start again.
    #[error("OpenID Connect sign-in is misconfigured: {0}")]
    Config(String),
    /// The provider's discovery document or signing keys could not be read.
    #[error(
        "cannot read the OpenID Connect discovery document of {issuer}: {detail} (check the issuer URL and that this host can reach the provider)"
    )]
    Discovery {
        /// The issuer URL asked.
        issuer: String,
        /// What went wrong.
        detail: String,
    },
}

impl OidcError {
    /// Whether trying again later may succeed (the provider was unreachable).
    pub fn is_retryable(&self) -> bool {
        matches!(self, OidcError::Discovery { .. })
    }
}

type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
    EndpointMaybeSet,
>;

/// The claims of an ID token, every one kept (the groups claim and the identity claim may
/// have any name).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
struct AnyClaims {
    #[serde(flatten)]
    claims: serde_json::Map<String, serde_json::Value>,
}

impl openidconnect::AdditionalClaims for AnyClaims {}

type IdToken = openidconnect::IdToken<
    AnyClaims,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;

type Claims = IdTokenClaims<AnyClaims, CoreGenderClaim>;

/// A sign-in in progress: what the callback checks, by `state`.
struct PendingLogin {
    /// SHA-256 of the browser-binding cookie set when the sign-in started.
    binding: [u8; 32],
    nonce: openidconnect::Nonce,
    verifier: openidconnect::PkceCodeVerifier,
    expires: Instant,
}

struct Keys {
    set: CoreJsonWebKeySet,
    fetched: Instant,
}

struct Inner {
    config: OidcConfig,
    client: Client,
    issuer: IssuerUrl,
    jwks_url: JsonWebKeySetUrl,
    algorithms: Vec<CoreJwsSigningAlgorithm>,
    keys: RwLock<Keys>,
    http: Http,
    pending: Mutex<HashMap<String, PendingLogin>>,
    display_name: String,
}

/// An OpenID Connect provider the console signs reviewers in with: its discovered metadata
/// and signing keys, the client registration, and the sign-ins in progress. Cheap to clone.
///
/// ```no_run
/// # async fn demo(gate: approvals_core::Gate) -> Result<(), Box<dyn std::error::Error>> {
/// use approvals_http::{OidcClient, OidcConfig, ReviewServer};
///
/// let public_url: url::Url = "https://approvals.example.com/".parse()?;
/// let oidc = OidcClient::discover(
///     OidcConfig::new("https://login.example.com", "approvals-console", &public_url)
///         .client_secret(std::env::var("OIDC_CLIENT_SECRET")?)
///         .groups_claim("groups"),
/// )
/// .await?;
/// let server = ReviewServer::builder(gate).public_url(public_url).oidc(oidc).build();
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct OidcClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for OidcClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcClient")
            .field("issuer", &self.inner.issuer.as_str())
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl OidcClient {
    /// Reads the provider's discovery document and signing keys and checks `config` against
    /// them. Needs the network; do it once at start.
    pub async fn discover(config: OidcConfig) -> Result<Self, OidcError> {
        let http = Http::new(config.timeout)?;
        let issuer = IssuerUrl::new(config.issuer_url.trim().to_owned()).map_err(|e| {
            OidcError::Config(format!(
                "the issuer URL {:?} is not a URL: {e}",
                config.issuer_url
            ))
        })?;
        check(&config)?;
        // Checks that the document's `issuer` is the URL asked, and fetches the JWKS.
        let metadata = CoreProviderMetadata::discover_async(issuer.clone(), &http)
            .await
            .map_err(|e| OidcError::Discovery {
                issuer: issuer.to_string(),
                detail: error_chain(&e),
            })?;
        Self::from_metadata(config, metadata, http)
    }

    fn from_metadata(
        config: OidcConfig,
        metadata: CoreProviderMetadata,
        http: Http,
    ) -> Result<Self, OidcError> {
        let token_url = metadata.token_endpoint().cloned().ok_or_else(|| {
            OidcError::Config(
                "the provider's discovery document has no token_endpoint, so the authorization code flow cannot be used".into(),
            )
        })?;
        let redirect = RedirectUrl::from_url(config.callback_url());
        let mut algorithms: Vec<CoreJwsSigningAlgorithm> = metadata
            .id_token_signing_alg_values_supported()
            .iter()
            .filter(|a| ASYMMETRIC.contains(a))
            .cloned()
            .collect();
        if algorithms.is_empty() {
            algorithms.push(CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256);
        }
        let issuer = metadata.issuer().clone();
        let jwks_url = metadata.jwks_uri().clone();
        let keys = metadata.jwks().clone();
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(config.client_id.trim().to_owned()),
            config
                .client_secret
                .as_ref()
                .map(|s| ClientSecret::new(s.clone())),
        )
        .set_token_uri(token_url)
        .set_redirect_uri(redirect);
        let display_name = config.display_name.clone().unwrap_or_else(|| {
            issuer
                .url()
                .host_str()
                .map_or_else(|| issuer.to_string(), str::to_owned)
        });
        Ok(OidcClient {
            inner: Arc::new(Inner {
                config,
                client,
                issuer,
                jwks_url,
                algorithms,
                keys: RwLock::new(Keys {
                    set: keys,
                    fetched: Instant::now(),
                }),
                http,
                pending: Mutex::new(HashMap::new()),
                display_name,
            }),
        })
    }

    /// The provider's name on the sign-in page.
    pub fn display_name(&self) -> &str {
        &self.inner.display_name
    }

    /// The issuer identifier, as the discovery document gave it.
    pub fn issuer(&self) -> &str {
        self.inner.issuer.as_str()
    }

    /// The redirect URI to register with the provider.
    pub fn redirect_url(&self) -> Url {
        self.inner.config.callback_url()
    }

    /// Whether the console also offers sign-in with an API token.
    pub fn token_sign_in(&self) -> bool {
        self.inner.config.token_sign_in
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, PendingLogin>> {
        self.inner.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps a sign-in in progress until its callback (or [`LOGIN_TTL`]).
    fn remember(&self, state: String, login: PendingLogin) {
        let now = Instant::now();
        let mut pending = self.pending();
        pending.retain(|_, p| p.expires > now);
        if pending.len() >= MAX_PENDING
            && let Some(oldest) = pending
                .iter()
                .min_by_key(|(_, p)| p.expires)
                .map(|(k, _)| k.clone())
        {
            pending.remove(&oldest);
        }
        pending.insert(state, login);
    }

    /// The sign-in `state` names, once: it is forgotten whatever happens next.
    fn take(&self, state: &str) -> Option<PendingLogin> {
        let login = self.pending().remove(state)?;
        (login.expires > Instant::now()).then_some(login)
    }

    /// The verified claims of `token`, fetching the provider's keys again (at most once a
    /// minute) when none of those cached signed it, as after a key rotation.
    async fn verify(
        &self,
        token: &IdToken,
        nonce: &openidconnect::Nonce,
    ) -> Result<Claims, openidconnect::ClaimsVerificationError> {
        let first = self.verify_with_cached_keys(token, nonce);
        let stale = matches!(
            &first,
            Err(
                openidconnect::ClaimsVerificationError::SignatureVerification(
                    openidconnect::SignatureVerificationError::NoMatchingKey
                )
            )
        );
        let due = self
            .inner
            .keys
            .read()
            .map(|k| k.fetched.elapsed() >= JWKS_REFRESH)
            .unwrap_or(true);
        if !(stale && due) {
            return first;
        }
        match CoreJsonWebKeySet::fetch_async(&self.inner.jwks_url, &self.inner.http).await {
            Ok(set) => {
                if let Ok(mut keys) = self.inner.keys.write() {
                    *keys = Keys {
                        set,
                        fetched: Instant::now(),
                    };
                }
                self.verify_with_cached_keys(token, nonce)
            }
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "OpenID Connect: could not fetch the provider's signing keys again");
                first
            }
        }
    }

    fn verify_with_cached_keys(
        &self,
        token: &IdToken,
        nonce: &openidconnect::Nonce,
    ) -> Result<Claims, openidconnect::ClaimsVerificationError> {
        let keys = self
            .inner
            .keys
            .read()
            .map(|k| k.set.clone())
            .unwrap_or_else(|e| e.into_inner().set.clone());
        let skew = chrono::Duration::from_std(self.inner.config.allowed_clock_skew)
            .unwrap_or(chrono::Duration::zero());
        let verifier = openidconnect::core::CoreIdTokenVerifier::new_public_client(
            self.inner.client.client_id().clone(),
            self.inner.issuer.clone(),
            keys,
        )
        .set_allowed_algs(self.inner.algorithms.clone())
        // The expiry is checked against a clock set back by the allowed skew.
        .set_time_fn(move || chrono::Utc::now() - skew)
        .set_issue_time_verifier_fn(move |iat| {
            if iat > chrono::Utc::now() + skew {
                Err(format!("the ID token was issued in the future ({iat})"))
            } else {
                Ok(())
            }
        });
        token.clone().into_claims(&verifier, nonce)
    }
}

/// Refuses a configuration that cannot work, before any network call.
fn check(config: &OidcConfig) -> Result<(), OidcError> {
    let bad = |m: String| Err(OidcError::Config(m));
    if config.client_id.trim().is_empty() {
        return bad("the client id is empty".into());
    }
    if config
        .client_secret
        .as_deref()
        .is_some_and(|s| s.trim().is_empty())
    {
        return bad("the client secret is empty".into());
    }
    if config.identity_claim.trim().is_empty() {
        return bad("the identity claim is empty".into());
    }
    if let Groups::Claim(c) = &config.groups
        && c.trim().is_empty()
    {
        return bad("the groups claim is empty".into());
    }
    let redirect = config.callback_url();
    if !matches!(redirect.scheme(), "http" | "https") || redirect.host_str().is_none() {
        return bad(format!("the redirect URL {redirect} is not an http(s) URL"));
    }
    if redirect.path() != CALLBACK_PATH {
        return bad(format!(
            "the redirect URL {redirect} must have the path {CALLBACK_PATH}, where the console receives the provider's answer"
        ));
    }
    if config.session_ttl.is_zero() {
        return bad("the session lifetime is zero".into());
    }
    Ok(())
}

/// Who signed in, read from verified claims.
#[derive(Debug)]
pub(crate) struct SignedIn {
    /// The identity claim's value (the resolver's external id).
    pub(crate) external_id: String,
    /// The reviewer, in canonical form.
    pub(crate) principal: Principal,
    /// When the session must end at the latest (the ID token's expiry, with groups from a
    /// claim).
    pub(crate) until: Option<chrono::DateTime<chrono::Utc>>,
    /// Whether the resolver is asked again before each decision.
    pub(crate) recheck: bool,
}

/// Why a sign-in was refused after the provider answered.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClaimError {
    #[error(
        "the ID token has no {0:?} claim (string) to name you by; ask an administrator to check the console's identity claim"
    )]
    NoIdentity(String),
    #[error("your e-mail address is not verified by the identity provider")]
    EmailNotVerified,
    #[error(
        "the ID token was issued to {found:?} on behalf of another client (azp), not this console"
    )]
    AuthorizedParty { found: String },
    #[error("the {claim:?} claim must be an array of group names")]
    Groups { claim: String },
    #[error("your identity {0}")]
    Invalid(String),
    #[error("{0}")]
    Resolver(approvals_core::IdentityError),
    #[error("the identity resolver maps you to an agent or service; the console is for people")]
    NotHuman,
}

impl OidcClient {
    /// The reviewer the verified `claims` name, with their groups.
    async fn signed_in(&self, claims: &Claims) -> Result<SignedIn, ClaimError> {
        let config = &self.inner.config;
        // azp: when present it must be this client (several audiences would need it).
        if let Some(azp) = claims.authorized_party()
            && azp.as_str() != self.inner.client.client_id().as_str()
        {
            return Err(ClaimError::AuthorizedParty {
                found: azp.as_str().to_owned(),
            });
        }
        let all = serde_json::to_value(claims).unwrap_or_default();
        let claim = config.identity_claim.trim();
        let external_id = all
            .get(claim)
            .and_then(serde_json::Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ClaimError::NoIdentity(claim.to_owned()))?
            .to_owned();
        if claim == "email" && all.get("email_verified") == Some(&serde_json::Value::Bool(false)) {
            return Err(ClaimError::EmailNotVerified);
        }
        let name = all
            .get("name")
            .and_then(serde_json::Value::as_str)
            .filter(|n| !n.trim().is_empty());
        match &config.groups {
            Groups::Resolver(resolver) => {
                let principal = resolve(resolver.as_ref(), &external_id).await?;
                Ok(SignedIn {
                    external_id,
                    principal,
                    until: None,
                    recheck: true,
                })
            }
            groups => {
                let mut principal = Principal::human(external_id.clone());
                if let Some(name) = name {
                    principal = principal.with_name(name);
                }
                if let Groups::Claim(c) = groups {
                    let list = match all.get(c.trim()) {
                        None | Some(serde_json::Value::Null) => Vec::new(),
                        Some(serde_json::Value::Array(items)) => items
                            .iter()
                            .map(|g| g.as_str().map(str::to_owned))
                            .collect::<Option<Vec<_>>>()
                            .ok_or_else(|| ClaimError::Groups { claim: c.clone() })?,
                        Some(_) => return Err(ClaimError::Groups { claim: c.clone() }),
                    };
                    principal = principal.with_groups(list);
                }
                let principal = principal
                    .normalized()
                    .map_err(|e| ClaimError::Invalid(e.to_string()))?;
                Ok(SignedIn {
                    external_id,
                    principal,
                    until: matches!(groups, Groups::Claim(_)).then(|| claims.expiration()),
                    recheck: false,
                })
            }
        }
    }

    /// The principal the resolver maps `external_id` to now, for a decision; `None` when this
    /// sign-in takes its groups from the ID token.
    pub(crate) async fn resolve_again(
        &self,
        external_id: &str,
    ) -> Option<Result<Principal, ClaimError>> {
        match &self.inner.config.groups {
            Groups::Resolver(resolver) => Some(resolve(resolver.as_ref(), external_id).await),
            _ => None,
        }
    }
}

/// How long the identity resolver may take before the sign-in or decision is refused.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

async fn resolve(
    resolver: &dyn IdentityResolver,
    external_id: &str,
) -> Result<Principal, ClaimError> {
    let principal =
        approvals_core::resolve_reviewer(resolver, RESOLVER_CHANNEL, external_id, RESOLVE_TIMEOUT)
            .await
            .map_err(ClaimError::Resolver)?;
    if principal.kind != PrincipalKind::Human {
        return Err(ClaimError::NotHuman);
    }
    principal
        .normalized()
        .map_err(|e| ClaimError::Invalid(e.to_string()))
}

/// `e` and its sources, for messages.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

// ------------------------------------------------------------------------------------------
// The HTTP client the `openidconnect` crate calls the provider with: this crate's reqwest
// client (rustls, the platform's verifier, no redirects: a redirect could lead the token
// request elsewhere), answers bounded in size.

#[derive(Clone)]
struct Http(reqwest::Client);

/// A call to the provider failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct HttpError(String);

impl Http {
    fn new(timeout: Duration) -> Result<Self, OidcError> {
        crate::client::http_client(timeout)
            .map(Http)
            .map_err(|e| OidcError::Config(format!("cannot build the HTTP client: {e}")))
    }
}

impl<'c> openidconnect::AsyncHttpClient<'c> for Http {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let request = reqwest::Request::try_from(request)
                .map_err(|e| HttpError(format!("cannot build the request: {e}")))?;
            let url = request.url().clone();
            let mut response = self
                .0
                .execute(request)
                .await
                .map_err(|e| HttpError(format!("{url}: {}", error_chain(&e))))?;
            let mut builder = http::Response::builder().status(response.status());
            for (name, value) in response.headers() {
                builder = builder.header(name, value);
            }
            let mut body = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| HttpError(format!("{url}: {}", error_chain(&e))))?
            {
                if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Err(HttpError(format!(
                        "{url}: the answer is larger than {MAX_RESPONSE_BYTES} bytes"
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            builder
                .body(body)
                .map_err(|e| HttpError(format!("{url}: {e}")))
        })
    }
}
