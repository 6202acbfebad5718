//! How the console signs reviewers in with an OpenID Connect provider ([`OidcConfig`]), the
//! errors of setting it up ([`OidcError`]) and the checks made before any network call.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use approvals_core::IdentityResolver;
use url::Url;

use super::CALLBACK_PATH;

/// Where a signed-in reviewer's groups come from.
#[derive(Clone, Default)]
pub(super) enum Groups {
    /// Nowhere: the reviewer has no groups (rules that name users still apply).
    #[default]
    None,
    /// A claim of the ID token (an array of strings), as it was at sign-in.
    Claim(String),
    /// The identity resolver, asked at sign-in and again before every decision.
    Resolver(Arc<dyn IdentityResolver>),
}

/// How the console signs reviewers in with an OpenID Connect provider. Give it to
/// [`OidcClient::discover`](super::OidcClient::discover), then the client to
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
    pub(super) issuer_url: String,
    pub(super) client_id: String,
    pub(super) client_secret: Option<String>,
    pub(super) public_url: Url,
    pub(super) redirect_url: Option<Url>,
    pub(super) scopes: Vec<String>,
    pub(super) identity_claim: String,
    pub(super) groups: Groups,
    pub(super) allowed_clock_skew: Duration,
    pub(super) session_ttl: Duration,
    pub(super) display_name: Option<String>,
    pub(super) token_sign_in: bool,
    pub(super) timeout: Duration,
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
    /// [`RESOLVER_CHANNEL`](super::RESOLVER_CHANNEL)), with their groups, asked at sign-in
    /// and again before every decision, so a reviewer removed from a group cannot decide
    /// with the session they had. Replaces [`groups_claim`](Self::groups_claim).
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

    pub(super) fn callback_url(&self) -> Url {
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

/// Refuses a configuration that cannot work, before any network call.
pub(super) fn check(config: &OidcConfig) -> Result<(), OidcError> {
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
