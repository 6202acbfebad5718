//! The console's OpenID Connect routes: `GET /console/oidc/start` (off to the provider) and
//! `GET /console/oidc/callback` (back with a code: exchange, verify, sign in), and the
//! reviewer a signed-in session acts as, resolved again before each decision.

use std::collections::HashMap;

use approvals_core::{IdentityError, Principal, RejectCause, RequestId};
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use openidconnect::core::CoreAuthenticationFlow;
use openidconnect::{
    AuthorizationCode, CsrfToken, Nonce, PkceCodeChallenge, RequestTokenError, Scope,
    TokenResponse as _,
};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

use super::{ClaimError, IdToken, LOGIN_TTL, OidcClient, PendingLogin, error_chain};
use crate::console::fragments::{error_page, html_response};
use crate::console::{CONSOLE_CHANNEL, Viewer, method_page, secure, session_cookie, viewer};
use crate::html::escape;
use crate::session::Holder;
use crate::shared::{Shared, redirect};

/// `GET /console/oidc/...`.
pub(in crate::console) async fn handle(
    shared: &Shared,
    request: &Request<Bytes>,
    rest: &[&str],
) -> Response<Bytes> {
    let Some(oidc) = &shared.oidc else {
        return error_page(
            None,
            StatusCode::NOT_FOUND,
            "Not found",
            "This console does not sign in with OpenID Connect.",
        );
    };
    match (rest, request.method()) {
        (["start"], &Method::GET) => start(shared, oidc, request),
        (["callback"], &Method::GET) => match callback(shared, oidc, request).await {
            Ok(response) => response,
            Err(e) => {
                tracing::warn!(error = %e, "console sign-in with OpenID Connect refused");
                let mut response = error_page(None, e.status(), "Sign-in failed", &e.to_string());
                clear_binding(shared, &mut response);
                response
            }
        },
        (["start" | "callback"], _) => method_page(),
        _ => error_page(
            None,
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no console page here.",
        ),
    }
}

/// The cookie that ties a sign-in to the browser that started it.
fn binding_cookie(shared: &Shared) -> &'static str {
    if secure(shared) {
        "__Host-approvals_oidc"
    } else {
        "approvals_oidc"
    }
}

fn set_cookie(response: &mut Response<Bytes>, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

fn clear_binding(shared: &Shared, response: &mut Response<Bytes>) {
    set_cookie(
        response,
        &format!(
            "{}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{}",
            binding_cookie(shared),
            if secure(shared) { "; Secure" } else { "" }
        ),
    );
}

/// `GET /console/oidc/start`: a new `state`, `nonce` and PKCE verifier, kept here for ten
/// minutes; the browser is bound to the state by a cookie and sent to the provider.
fn start(shared: &Shared, oidc: &OidcClient, request: &Request<Bytes>) -> Response<Bytes> {
    if viewer(shared, request).is_some() {
        return redirect(&crate::console::return_path(
            crate::console::query_next(request).as_deref(),
        ));
    }
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let scopes = oidc
        .inner
        .config
        .scopes
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty() && *s != "openid")
        .map(|s| Scope::new(s.to_owned()));
    let (url, state, nonce) = oidc
        .inner
        .client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scopes(scopes)
        .set_pkce_challenge(challenge)
        .url();
    let binding = crate::session::random_token();
    oidc.remember(
        state.secret().clone(),
        PendingLogin {
            binding: Sha256::digest(binding.as_bytes()).into(),
            nonce,
            verifier,
            next: crate::console::return_path(crate::console::query_next(request).as_deref()),
            expires: std::time::Instant::now() + LOGIN_TTL,
        },
    );
    let mut response = redirect(url.as_str());
    set_cookie(
        &mut response,
        &format!(
            "{}={binding}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{}",
            binding_cookie(shared),
            LOGIN_TTL.as_secs(),
            if secure(shared) { "; Secure" } else { "" }
        ),
    );
    response
}

/// Why a sign-in was refused; each says what to do next.
#[derive(Debug, thiserror::Error)]
enum SignInError {
    #[error("The answer from the identity provider is malformed: {0}. Start the sign-in again.")]
    Malformed(&'static str),
    #[error(
        "This sign-in was already completed, has expired (sign-ins last 10 minutes) or was never started here. Start the sign-in again."
    )]
    UnknownState,
    #[error(
        "This sign-in was started in another browser (or this browser lost its sign-in cookie), so it was refused. Start the sign-in again from this browser."
    )]
    OtherBrowser,
    #[error("The identity provider did not sign you in: {0}")]
    Provider(String),
    #[error(
        "The answer names another identity provider ({0}) than the one this sign-in went to, so it was refused. Start the sign-in again."
    )]
    OtherIssuer(String),
    #[error("The identity provider did not accept the sign-in ({0}). Start the sign-in again.")]
    Exchange(String),
    #[error("The identity provider could not be reached ({0}). Try again shortly.")]
    Unavailable(String),
    #[error(
        "The identity provider's answer has no ID token; check that the client asks for the openid scope."
    )]
    NoIdToken,
    #[error("The ID token was refused: {0}. Nobody was signed in.")]
    Token(String),
    #[error("You cannot review here: {0}.")]
    Claims(#[from] ClaimError),
}

impl SignInError {
    fn status(&self) -> StatusCode {
        match self {
            SignInError::Malformed(_) | SignInError::UnknownState => StatusCode::BAD_REQUEST,
            SignInError::OtherBrowser | SignInError::Claims(ClaimError::NotHuman) => {
                StatusCode::FORBIDDEN
            }
            SignInError::Claims(ClaimError::Resolver(IdentityError::Unavailable(_)))
            | SignInError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            SignInError::NoIdToken => StatusCode::BAD_GATEWAY,
            SignInError::Provider(_)
            | SignInError::OtherIssuer(_)
            | SignInError::Exchange(_)
            | SignInError::Token(_)
            | SignInError::Claims(_) => StatusCode::UNAUTHORIZED,
        }
    }
}

fn query(request: &Request<Bytes>) -> Result<HashMap<String, String>, SignInError> {
    let mut fields = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes()) {
        if fields.insert(k.into_owned(), v.into_owned()).is_some() {
            return Err(SignInError::Malformed("a parameter is repeated"));
        }
    }
    Ok(fields)
}

/// `GET /console/oidc/callback?code&state` (or `?error&state`): the state is used once and
/// must belong to this browser; an `iss` parameter must name this provider; the code is exchanged with the PKCE verifier; the ID token is
/// verified (signature, issuer, audience, authorized party, expiry, issue time, nonce); the
/// reviewer it names gets a console session.
async fn callback(
    shared: &Shared,
    oidc: &OidcClient,
    request: &Request<Bytes>,
) -> Result<Response<Bytes>, SignInError> {
    let fields = query(request)?;
    let state = fields
        .get("state")
        .ok_or(SignInError::Malformed("it has no state"))?;
    let login = oidc.take(state).ok_or(SignInError::UnknownState)?;
    let next = login.next.clone();
    let bound = session_cookie(request, binding_cookie(shared)).is_some_and(|cookie| {
        let given: [u8; 32] = Sha256::digest(cookie.as_bytes()).into();
        bool::from(given.ct_eq(&login.binding))
    });
    if !bound {
        return Err(SignInError::OtherBrowser);
    }
    // RFC 9207: a provider that names itself in its answer must be this one (mix-up attacks).
    if let Some(iss) = fields.get("iss")
        && iss != oidc.issuer()
    {
        return Err(SignInError::OtherIssuer(crate::html::truncate(iss, 200)));
    }
    if let Some(error) = fields.get("error") {
        let detail = fields
            .get("error_description")
            .map(|d| format!("{error} ({})", crate::html::truncate(d, 300)))
            .unwrap_or_else(|| error.clone());
        return Err(SignInError::Provider(crate::html::truncate(&detail, 400)));
    }
    let code = fields
        .get("code")
        .filter(|c| !c.is_empty())
        .ok_or(SignInError::Malformed("it has no authorization code"))?;
    let answer = oidc
        .inner
        .client
        .exchange_code(AuthorizationCode::new(code.clone()))
        .set_pkce_verifier(login.verifier)
        .request_async(&oidc.inner.http)
        .await
        .map_err(|e| match e {
            RequestTokenError::ServerResponse(r) => {
                SignInError::Exchange(match r.error_description() {
                    Some(d) => format!("{}: {}", r.error(), crate::html::truncate(d, 300)),
                    None => r.error().to_string(),
                })
            }
            RequestTokenError::Request(e) => SignInError::Unavailable(error_chain(&e)),
            other => SignInError::Exchange(error_chain(&other)),
        })?;
    let token: IdToken = answer
        .id_token()
        .ok_or(SignInError::NoIdToken)?
        .to_string()
        .parse()
        .map_err(|e: serde_json::Error| SignInError::Token(e.to_string()))?;
    let claims = oidc
        .verify(&token, &login.nonce)
        .await
        .map_err(|e| SignInError::Token(error_chain(&e)))?;
    let signed_in = oidc.signed_in(&claims).await?;

    let config = &oidc.inner.config;
    // The token counts as valid until its expiry plus the allowed skew, and so does a session
    // that takes its groups from it.
    let ttl = match signed_in.until {
        Some(until) => chrono::Duration::from_std(config.allowed_clock_skew)
            .ok()
            .and_then(|skew| (until + skew - chrono::Utc::now()).to_std().ok())
            .unwrap_or_default()
            .min(config.session_ttl),
        None => config.session_ttl,
    };
    if ttl.as_secs() == 0 {
        return Err(SignInError::Token("it expires now".into()));
    }
    tracing::info!(
        reviewer = %signed_in.principal.id,
        issuer = %oidc.issuer(),
        "console sign-in with OpenID Connect"
    );
    let cookie = shared.sessions.create(
        Holder::Oidc {
            principal: signed_in.principal,
            external_id: signed_in.external_id,
            recheck: signed_in.recheck,
            id_token: token.to_string(),
        },
        ttl,
    );
    let mut response = crate::console::signed_in(shared, &cookie, ttl, continue_page(&next));
    clear_binding(shared, &mut response);
    Ok(response)
}

/// The page a successful callback answers with, which moves on to the console at once. Not a
/// redirect: the callback is reached from the provider's site, and browsers withhold
/// `SameSite=Strict` cookies from every request of a redirect chain that began on another
/// site, so the console would look signed out until the next click. The refresh is a
/// navigation from this site, which carries the new session cookie. (No script: the
/// Content-Security-Policy allows none.)
fn continue_page(next: &str) -> Response<Bytes> {
    let next = crate::html::escape(next);
    html_response(
        StatusCode::OK,
        &format!(
            r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="0;url={next}">
<title>Signed in · Approvals</title><link rel="stylesheet" href="/console/style.css"></head>
<body><main><section class="card narrow"><h1>Signed in</h1><p><a href="{next}" id="continue">Continue to the console</a></p></section></main></body></html>"#
        ),
    )
}

/// The reviewer `v` acts as for a decision on request `id`: the session's principal, or,
/// when the session's groups come from the identity resolver, the principal it maps the
/// reviewer to now. `Err` is the page to answer with; nothing was decided.
pub(in crate::console) async fn acting_reviewer(
    shared: &Shared,
    v: &Viewer,
    id: RequestId,
) -> Result<Principal, Response<Bytes>> {
    let Some(external_id) = &v.recheck else {
        return Ok(v.principal.clone());
    };
    let resolved = match &shared.oidc {
        Some(oidc) => oidc.resolve_again(external_id).await,
        None => Some(Err(ClaimError::Resolver(IdentityError::Unavailable(
            "OpenID Connect sign-in is no longer configured".into(),
        )))),
    };
    match resolved {
        None => Ok(v.principal.clone()),
        Some(Ok(principal)) => Ok(principal),
        Some(Err(e)) => {
            let unavailable = matches!(e, ClaimError::Resolver(IdentityError::Unavailable(_)));
            let cause = match e {
                ClaimError::NotHuman => RejectCause::NotHuman,
                ClaimError::Invalid(_) => RejectCause::InvalidIdentity,
                _ => RejectCause::UnknownReviewer,
            };
            if !unavailable {
                let _ = shared
                    .gate
                    .record_rejected_callback(
                        id,
                        Some(v.principal.clone()),
                        CONSOLE_CHANNEL,
                        cause,
                        &e.to_string(),
                    )
                    .await;
            }
            let status = if unavailable {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::FORBIDDEN
            };
            Err(error_page(
                Some(v),
                status,
                "Nothing was decided",
                &format!("Your reviewer identity could not be confirmed: {e}."),
            ))
        }
    }
}

/// After signing out of a session begun with the provider, the page that says so and offers
/// to sign out of the provider too (when its discovery document names an end-session
/// endpoint); `None` for any other session, which goes back to the sign-in page.
pub(in crate::console) fn signed_out(
    shared: &Shared,
    holder: Option<&Holder>,
) -> Option<Response<Bytes>> {
    let (Some(oidc), Some(Holder::Oidc { id_token, .. })) = (&shared.oidc, holder) else {
        return None;
    };
    let url = oidc.end_session_url(id_token)?;
    let body = format!(
        r#"<section class="card narrow"><h1>Signed out</h1><p>You are signed out of the console. Your session with {name} is still open in this browser.</p><p><a class="button primary" id="end-session" href="{url}">Sign out of {name} too</a></p><p><a href="/console/login">Sign in again</a></p></section>"#,
        name = escape(oidc.display_name()),
        url = escape(url.as_str()),
    );
    Some(html_response(
        StatusCode::OK,
        &crate::console::fragments::page("Signed out", None, &body),
    ))
}
