//! The review console under `/console/`: server-rendered HTML, no JavaScript.
//!
//! Sign-in, with an OpenID Connect provider ([`oidc`]) or a pasted API token (human principals
//! only), gives a random session id kept in an `HttpOnly`, `SameSite=Strict` cookie (`Secure`
//! and `__Host-` prefixed over https). Every form post must carry the session's CSRF token
//! and come from this server's origin. All
//! untrusted text is escaped with [`crate::html::escape`]; the Content-Security-Policy allows
//! no script at all.
//!
//! This module routes and handles sign-in, sign-out and decision posts; `pages` renders the
//! request pages and `fragments` the pieces every page shares. Sessions are kept by
//! `crate::session`.

mod edit;
mod fragments;
pub mod oidc;
mod pages;
pub mod passkey;
mod plan;
mod standing;

use std::collections::HashMap;
use std::fmt::Write as _;

use approvals_core::lifecycle::Review;
use approvals_core::{Digest, Principal, PrincipalKind, RejectCause, RequestId, Verdict};
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use subtle::ConstantTimeEq;

use crate::auth::TokenHash;
use crate::html::escape;
use crate::problem::Problem;
use crate::requests::check_reason;
use crate::session::Holder;
use crate::shared::{Shared, only, redirect};
use fragments::{error_page, html_response, page};
use pages::{detail_page, history_page, pending_page};

/// Channel name recorded for decisions made in the console.
pub const CONSOLE_CHANNEL: &str = "web";

/// The Content-Security-Policy of every console page: scripts (only the passkey ceremony's,
/// `/console/passkey.js`), styles, fetches and forms from this origin only; no inline script,
/// no frames.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const STYLE_CSS: &str = include_str!("../console.css");

// ------------------------------------------------------------------------------------------
// The signed-in reviewer.

fn secure(shared: &Shared) -> bool {
    shared
        .public_url
        .as_ref()
        .is_some_and(|u| u.scheme() == "https")
}

fn cookie_name(shared: &Shared) -> &'static str {
    if secure(shared) {
        "__Host-approvals_session"
    } else {
        "approvals_session"
    }
}

fn session_cookie(request: &Request<Bytes>, name: &str) -> Option<String> {
    request
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// The signed-in reviewer.
struct Viewer {
    principal: Principal,
    csrf: String,
    cookie: String,
    /// The OpenID Connect identity to resolve again before each decision (see
    /// [`oidc::acting_reviewer`]), when the identity resolver gives this reviewer's groups.
    recheck: Option<String>,
}

fn viewer(shared: &Shared, request: &Request<Bytes>) -> Option<Viewer> {
    let cookie = session_cookie(request, cookie_name(shared))?;
    let (holder, csrf) = shared.sessions.get(&cookie)?;
    let (principal, recheck) = match holder {
        // Looked up on every request, so a revoked token ends its sessions.
        Holder::Token(token) => (shared.tokens.principal_by_hash(&token)?.clone(), None),
        Holder::Oidc {
            principal,
            external_id,
            recheck,
            ..
        } => (principal, recheck.then_some(external_id)),
    };
    (principal.kind == PrincipalKind::Human).then_some(Viewer {
        principal,
        csrf,
        cookie,
        recheck,
    })
}

// ------------------------------------------------------------------------------------------
// Routing.

pub(crate) async fn handle(
    shared: &Shared,
    request: &Request<Bytes>,
    segments: &[&str],
) -> Response<Bytes> {
    let mut response = match segments {
        ["style.css"] => match only(request, &[Method::GET, Method::HEAD]) {
            Ok(()) => {
                let mut r = Response::new(Bytes::from_static(STYLE_CSS.as_bytes()));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/css; charset=utf-8"),
                );
                r.headers_mut().insert(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=3600"),
                );
                r
            }
            Err(r) => r,
        },
        ["passkey.js"] => match only(request, &[Method::GET, Method::HEAD]) {
            Ok(()) => {
                let mut r = Response::new(Bytes::from_static(passkey::PASSKEY_JS.as_bytes()));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/javascript; charset=utf-8"),
                );
                r
            }
            Err(r) => r,
        },
        ["passkeys"] => match only(request, &[Method::GET, Method::HEAD]) {
            Ok(()) => match viewer(shared, request) {
                Some(v) => passkey::passkeys_page(shared, &v),
                None => redirect("/console/login"),
            },
            Err(_) => method_page(),
        },
        ["passkeys", "register", "options"] => match *request.method() {
            Method::POST => passkey::register_options(shared, request).await,
            _ => method_page(),
        },
        ["passkeys", "register"] => match *request.method() {
            Method::POST => passkey::register(shared, request).await,
            _ => method_page(),
        },
        ["requests", id, "step-up", rest @ ..] if rest.len() <= 1 => {
            match (request.method(), RequestId::parse(id), rest) {
                (&Method::POST, Ok(id), ["options"]) => {
                    passkey::step_up_options(shared, request, id).await
                }
                (&Method::POST, Ok(id), []) => passkey::step_up(shared, request, id).await,
                (&Method::POST, Err(_), _) => error_page(
                    None,
                    StatusCode::NOT_FOUND,
                    "No such request",
                    "That is not a request id.",
                ),
                _ => method_page(),
            }
        }
        ["login"] => match *request.method() {
            Method::GET | Method::HEAD => login_page(shared, request, StatusCode::OK, None),
            Method::POST => login(shared, request),
            _ => method_page(),
        },
        ["oidc", rest @ ..] => oidc::handle(shared, request, rest).await,
        ["logout"] => match *request.method() {
            Method::POST => logout(shared, request),
            _ => method_page(),
        },
        [] | ["requests"] => match only(request, &[Method::GET, Method::HEAD]) {
            Ok(()) => match viewer(shared, request) {
                Some(v) => pending_page(shared, request, &v).await,
                None => redirect("/console/login"),
            },
            Err(_) => method_page(),
        },
        ["history"] => match only(request, &[Method::GET, Method::HEAD]) {
            Ok(()) => match viewer(shared, request) {
                Some(v) => history_page(shared, &v).await,
                None => redirect("/console/login"),
            },
            Err(_) => method_page(),
        },
        ["requests", id] => match only(request, &[Method::GET, Method::HEAD]) {
            Ok(()) => match viewer(shared, request) {
                Some(v) => match RequestId::parse(id) {
                    Ok(id) => detail_page(shared, &v, id, None).await,
                    Err(_) => error_page(
                        Some(&v),
                        StatusCode::NOT_FOUND,
                        "No such request",
                        "That is not a request id.",
                    ),
                },
                // Back to this request once signed in (a chat link to it lands here).
                None => match RequestId::parse(id) {
                    Ok(id) => redirect(&format!("/console/login?next=/console/requests/{id}")),
                    Err(_) => redirect("/console/login"),
                },
            },
            Err(_) => method_page(),
        },
        ["requests", id, "decision"] => match *request.method() {
            Method::POST => decision(shared, request, id).await,
            _ => method_page(),
        },
        ["requests", id, "standing"] => match *request.method() {
            Method::POST => standing::propose(shared, request, id).await,
            _ => method_page(),
        },
        ["standing"] => match only(request, &[Method::GET, Method::HEAD]) {
            Ok(()) => match viewer(shared, request) {
                Some(v) => standing::standing_page(shared, &v).await,
                None => redirect("/console/login"),
            },
            Err(_) => method_page(),
        },
        _ => error_page(
            viewer(shared, request).as_ref(),
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no console page here.",
        ),
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers
        .entry(header::CONTENT_TYPE)
        .or_insert(HeaderValue::from_static("text/html; charset=utf-8"));
    response
}

fn method_page() -> Response<Bytes> {
    error_page(
        None,
        StatusCode::METHOD_NOT_ALLOWED,
        "Method not allowed",
        "This page does not accept that method.",
    )
}

// ------------------------------------------------------------------------------------------
// CSRF and forms.

/// The origin form posts must come from.
fn expected_origin(shared: &Shared, request: &Request<Bytes>) -> Option<String> {
    if let Some(url) = &shared.public_url {
        return Some(url.origin().ascii_serialization());
    }
    let host = request.headers().get(header::HOST)?.to_str().ok()?;
    let valid = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c));
    valid.then(|| format!("http://{}", host.to_ascii_lowercase()))
}

/// Whether the post came from a page of this server: `Origin` (or, failing that, `Referer`)
/// must name this server's origin. Browsers send `Origin` on every form post.
fn same_origin(shared: &Shared, request: &Request<Bytes>) -> bool {
    let Some(expected) = expected_origin(shared, request) else {
        return false;
    };
    let header_str = |name| {
        request
            .headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    match header_str(header::ORIGIN) {
        Some(origin) => origin.eq_ignore_ascii_case(&expected),
        None => header_str(header::REFERER)
            .is_some_and(|r| r.starts_with(&format!("{expected}/")) || r == expected),
    }
}

fn form(request: &Request<Bytes>) -> Result<HashMap<String, String>, &'static str> {
    let media = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    if media.as_deref() != Some("application/x-www-form-urlencoded") {
        return Err("The form was not sent as a form.");
    }
    let mut fields = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(request.body()) {
        if fields.insert(k.into_owned(), v.into_owned()).is_some() {
            return Err("A form field was sent twice.");
        }
    }
    Ok(fields)
}

/// The fields of a form posted from a page of this console in `v`'s session: same origin,
/// sent as a form, carrying the session's CSRF token. `None` otherwise.
fn trusted_form(
    shared: &Shared,
    request: &Request<Bytes>,
    v: &Viewer,
) -> Option<HashMap<String, String>> {
    if !same_origin(shared, request) {
        return None;
    }
    form(request).ok().filter(|f| csrf_ok(&v.csrf, f))
}

fn csrf_ok(expected: &str, fields: &HashMap<String, String>) -> bool {
    fields
        .get("csrf")
        .is_some_and(|given| bool::from(given.as_bytes().ct_eq(expected.as_bytes())))
}

// ------------------------------------------------------------------------------------------
// Sign-in.

/// Where a sign-in returns to: the request page `next` names (only `/console/requests/<id>`,
/// so a crafted link cannot send a reviewer anywhere else after signing in), or the pending
/// list.
pub(crate) fn return_path(next: Option<&str>) -> String {
    next.and_then(|n| n.strip_prefix("/console/requests/"))
        .and_then(|id| RequestId::parse(id).ok())
        .map_or_else(
            || "/console/".to_owned(),
            |id| format!("/console/requests/{id}"),
        )
}

/// The `next` query parameter of `request`.
pub(crate) fn query_next(request: &Request<Bytes>) -> Option<String> {
    url::form_urlencoded::parse(request.uri().query()?.as_bytes())
        .find(|(k, _)| k == "next")
        .map(|(_, v)| v.into_owned())
}

fn login_page(
    shared: &Shared,
    request: &Request<Bytes>,
    status: StatusCode,
    error: Option<&str>,
) -> Response<Bytes> {
    // From the link that brought the reviewer here, or the form they posted.
    let next = return_path(
        query_next(request)
            .or_else(|| form(request).ok()?.remove("next"))
            .as_deref(),
    );
    if status == StatusCode::OK && viewer(shared, request).is_some() {
        return redirect(&next);
    }
    let next_query = if next == "/console/" {
        String::new()
    } else {
        format!("?next={next}")
    };
    let mut body = String::new();
    body.push_str(r#"<section class="card narrow"><h1>Sign in to review</h1>"#);
    if let Some(error) = error {
        let _ = write!(
            body,
            r#"<p class="alert error" role="alert">{}</p>"#,
            escape(error)
        );
    }
    if let Some(oidc) = &shared.oidc {
        let _ = write!(
            body,
            r#"<p><a class="button primary" id="oidc-sign-in" href="{}{}">Sign in with {}</a></p>"#,
            oidc::START_PATH,
            escape(&next_query),
            escape(oidc.display_name())
        );
    }
    if token_sign_in(shared) {
        body.push_str(
            r#"<p class="muted">Paste your personal API token. It is checked against the server's token list and never stored in the browser; you get a session cookie instead.</p>
<form method="post" action="/console/login" class="stack">"#,
        );
        let _ = write!(
            body,
            r#"<input type="hidden" name="next" value="{}">"#,
            escape(&next)
        );
        body.push_str(
            r#"<label for="token">API token</label>
<input id="token" name="token" type="password" autocomplete="off" required spellcheck="false">
<button type="submit" class="primary">Sign in</button>
</form>"#,
        );
    }
    body.push_str("</section>");
    html_response(status, &page("Sign in", None, &body))
}

/// Whether the console offers sign-in with an API token (turned off for OpenID Connect only).
fn token_sign_in(shared: &Shared) -> bool {
    shared
        .oidc
        .as_ref()
        .is_none_or(oidc::OidcClient::token_sign_in)
}

/// `response` (the answer to a successful sign-in) with the new session's cookie, lasting
/// `ttl`.
fn signed_in(
    shared: &Shared,
    cookie: &str,
    ttl: std::time::Duration,
    mut response: Response<Bytes>,
) -> Response<Bytes> {
    let attributes = if secure(shared) { "; Secure" } else { "" };
    let set = format!(
        "{}={cookie}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{attributes}",
        cookie_name(shared),
        ttl.as_secs()
    );
    if let Ok(value) = HeaderValue::from_str(&set) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

fn login(shared: &Shared, request: &Request<Bytes>) -> Response<Bytes> {
    if !token_sign_in(shared) {
        return login_page(
            shared,
            request,
            StatusCode::FORBIDDEN,
            Some("Sign-in with an API token is turned off on this console; use the sign-in link."),
        );
    }
    if !same_origin(shared, request) {
        return login_page(
            shared,
            request,
            StatusCode::FORBIDDEN,
            Some(
                "This sign-in did not come from this server's own page. Open the console address directly and try again.",
            ),
        );
    }
    let fields = match form(request) {
        Ok(f) => f,
        Err(e) => return login_page(shared, request, StatusCode::BAD_REQUEST, Some(e)),
    };
    let token = fields.get("token").map(|t| t.trim()).unwrap_or("");
    let hash = TokenHash::of(token);
    let principal = match shared.tokens.principal_by_hash(&hash) {
        Some(p) if !token.is_empty() => p,
        _ => {
            return login_page(
                shared,
                request,
                StatusCode::UNAUTHORIZED,
                Some("That token is not valid. Check it, or ask an administrator for a new one."),
            );
        }
    };
    if principal.kind != PrincipalKind::Human {
        return login_page(
            shared,
            request,
            StatusCode::FORBIDDEN,
            Some(
                "That token belongs to an agent or service. The console is for human reviewers; agents use the API.",
            ),
        );
    }
    let ttl = shared.sessions.ttl();
    let cookie = shared.sessions.create(Holder::Token(hash), ttl);
    let next = return_path(fields.get("next").map(String::as_str));
    signed_in(shared, &cookie, ttl, redirect(&next))
}

fn logout(shared: &Shared, request: &Request<Bytes>) -> Response<Bytes> {
    let Some(v) = viewer(shared, request) else {
        return redirect("/console/login");
    };
    if trusted_form(shared, request, &v).is_none() {
        return error_page(
            Some(&v),
            StatusCode::FORBIDDEN,
            "Sign-out refused",
            "The form did not carry this session's security token. Reload the page and try again.",
        );
    }
    let holder = shared.sessions.get(&v.cookie).map(|(holder, _)| holder);
    shared.sessions.remove(&v.cookie);
    let mut response =
        oidc::signed_out(shared, holder.as_ref()).unwrap_or_else(|| redirect("/console/login"));
    let clear = format!(
        "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        cookie_name(shared),
        if secure(shared) { "; Secure" } else { "" }
    );
    if let Ok(value) = HeaderValue::from_str(&clear) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

// ------------------------------------------------------------------------------------------
// Decisions.

async fn decision(shared: &Shared, request: &Request<Bytes>, raw_id: &str) -> Response<Bytes> {
    let Ok(id) = RequestId::parse(raw_id) else {
        return error_page(
            None,
            StatusCode::NOT_FOUND,
            "No such request",
            "That is not a request id.",
        );
    };
    let Some(v) = viewer(shared, request) else {
        let _ = shared
            .gate
            .record_rejected_callback(
                id,
                None,
                CONSOLE_CHANNEL,
                RejectCause::Forged,
                "console decision without a valid session",
            )
            .await;
        return error_page(
            None,
            StatusCode::UNAUTHORIZED,
            "Signed out",
            "Your session has ended, so nothing was decided. Sign in again and review the request.",
        );
    };
    let Some(fields) = trusted_form(shared, request, &v) else {
        let _ = shared
            .gate
            .record_rejected_callback(
                id,
                Some(v.principal.clone()),
                CONSOLE_CHANNEL,
                RejectCause::Forged,
                "console decision failed the CSRF check (wrong origin or missing form token)",
            )
            .await;
        return error_page(
            Some(&v),
            StatusCode::FORBIDDEN,
            "Decision refused",
            "The form did not come from this console (its security token or origin did not match), so nothing was decided. Open the request in the console and decide there.",
        );
    };
    let (verdict, edited) = match fields.get("verdict").map(String::as_str) {
        Some("approve") => (Verdict::Approve, false),
        Some("approve_edited") => (Verdict::Approve, true),
        Some("deny") => (Verdict::Deny, false),
        _ => {
            return detail_page(
                shared,
                &v,
                id,
                Some((StatusCode::BAD_REQUEST, "Choose Approve or Deny.".into())),
            )
            .await;
        }
    };
    // The console always binds the decision to the digest of the action it showed.
    let Some(digest) = fields.get("digest").and_then(|d| Digest::parse(d).ok()) else {
        return detail_page(
            shared,
            &v,
            id,
            Some((
                StatusCode::BAD_REQUEST,
                "The form did not say which version of the action you reviewed. Reload the page and decide again.".into(),
            )),
        )
        .await;
    };
    let reason = match check_reason(fields.get("reason").cloned()) {
        Ok(r) => r,
        Err(p) => return detail_page(shared, &v, id, Some((p.status_code(), p.detail))).await,
    };
    let reviewer = match oidc::acting_reviewer(shared, &v, id).await {
        Ok(p) => p,
        Err(page) => return page,
    };
    let mut review = Review::new(reviewer, verdict)
        .via(CONSOLE_CHANNEL)
        .for_digest(digest);
    if let Some(reason) = reason {
        review = review.reason(reason);
    }
    if edited {
        // What the reviewer typed; the gate reads it against the stored action.
        review = review.edit_fields(edit::form_fields(&fields));
    }
    // The gate applies (and audits) every rule; the reviewer reads its one-sentence refusal.
    match shared.gate.decide(id, review).await {
        Ok(_) => redirect(&format!("/console/requests/{id}")),
        Err(refused) => {
            let status = Problem::from(refused.clone()).status_code();
            detail_page(shared, &v, id, Some((status, refused.reviewer_message()))).await
        }
    }
}
