//! OpenID Connect sign-in for the review console: the discovered provider ([`OidcClient`]:
//! metadata, signing keys, sign-ins in progress) and the ID token's verification. `config`
//! holds [`OidcConfig`], `claims` turns verified claims into a reviewer, `routes` serves
//! `/console/oidc/...`, `transport` calls the provider.
//!
//! The flow is the authorization code flow with PKCE (S256), a `state` bound to the browser
//! by a short-lived cookie and a `nonce` bound to the ID token. Every protocol check (the ID
//! token's signature against the provider's JWKS, issuer, audience, expiry, nonce) is made by
//! the `openidconnect` crate; this module adds what the crate leaves to the relying party:
//! the authorized party (`azp`), the issue time, which claim names the reviewer and where
//! their groups come from.

mod claims;
mod config;
mod routes;
mod transport;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreClient, CoreGenderClaim, CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
};
use openidconnect::{
    ClientId, ClientSecret, EndpointMaybeSet, EndpointNotSet, EndpointSet, IdTokenClaims,
    IssuerUrl, JsonWebKeySetUrl, ProviderMetadataWithLogout, RedirectUrl,
};
use url::Url;

pub(crate) use claims::ClaimError;
use config::{Groups, check};
pub use config::{OidcConfig, OidcError};
pub(in crate::console) use routes::{acting_reviewer, handle, signed_out};
use transport::Http;

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
    /// Where the reviewer goes once signed in ([`crate::console::return_path`]).
    next: String,
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
    /// Where the provider signs its own session out (RP-initiated logout), when it says.
    end_session: Option<openidconnect::EndSessionUrl>,
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
        let metadata = ProviderMetadataWithLogout::discover_async(issuer.clone(), &http)
            .await
            .map_err(|e| OidcError::Discovery {
                issuer: issuer.to_string(),
                detail: error_chain(&e),
            })?;
        Self::from_metadata(config, metadata, http)
    }

    fn from_metadata(
        config: OidcConfig,
        metadata: ProviderMetadataWithLogout,
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
        let end_session = metadata.additional_metadata().end_session_endpoint.clone();
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
                end_session,
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

    /// The provider's end-session address for the session `id_token` began (RP-initiated
    /// logout, with the ID token as hint), when its discovery document names one.
    fn end_session_url(&self, id_token: &str) -> Option<Url> {
        let endpoint = self.inner.end_session.clone()?;
        let token: IdToken = id_token.parse().ok()?;
        Some(
            openidconnect::LogoutRequest::from(endpoint)
                .set_client_id(self.inner.client.client_id().clone())
                .set_id_token_hint(&token)
                .http_get_url(),
        )
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
