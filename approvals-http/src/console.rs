//! The review console under `/console/`: server-rendered HTML, no JavaScript.
//!
//! Sign-in exchanges an API token (human principals only) for a random session id kept in
//! an `HttpOnly`, `SameSite=Strict` cookie (`Secure` and `__Host-` prefixed over https). Every
//! form post must carry the session's CSRF token and come from this server's origin. All
//! untrusted text is escaped with [`crate::html::escape`]; the Content-Security-Policy allows
//! no script at all.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use approvals_core::lifecycle::{self, Review};
use approvals_core::{
    Digest, Principal, PrincipalKind, RejectCause, RequestId, RequestRecord, RequestState, Verdict,
};
use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use rand::RngCore;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

use crate::api::{check_reason, may_view};
use crate::auth::TokenHash;
use crate::html::{escape, truncate};
use crate::problem::Problem;
use crate::server::{Shared, only, redirect};

/// Channel name recorded for decisions made in the console.
pub const CONSOLE_CHANNEL: &str = "web";

/// The Content-Security-Policy of every console page: no script, no frames, styles and
/// forms from this origin only.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const STYLE_CSS: &str = include_str!("console.css");
const MAX_SESSIONS: usize = 10_000;

// ------------------------------------------------------------------------------------------
// Sessions.

struct Session {
    token: TokenHash,
    csrf: String,
    expires: Instant,
}

/// Server-side console sessions, keyed by the SHA-256 of the cookie value.
pub(crate) struct Sessions {
    ttl: Duration,
    map: Mutex<HashMap<[u8; 32], Session>>,
}

impl Sessions {
    pub(crate) fn new(ttl: Duration) -> Self {
        Sessions {
            ttl,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new session; returns the cookie value.
    fn create(&self, token: TokenHash) -> String {
        let cookie = random_token();
        let now = Instant::now();
        let mut map = self.lock();
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS {
            // Drop the session closest to expiry rather than refuse sign-ins.
            if let Some(oldest) = map.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k) {
                map.remove(&oldest);
            }
        }
        map.insert(
            key(&cookie),
            Session {
                token,
                csrf: random_token(),
                expires: now + self.ttl,
            },
        );
        cookie
    }

    fn get(&self, cookie: &str) -> Option<(TokenHash, String)> {
        let mut map = self.lock();
        let k = key(cookie);
        match map.get(&k) {
            Some(s) if s.expires > Instant::now() => Some((s.token, s.csrf.clone())),
            Some(_) => {
                map.remove(&k);
                None
            }
            None => None,
        }
    }

    fn remove(&self, cookie: &str) {
        self.lock().remove(&key(cookie));
    }
}

fn key(cookie: &str) -> [u8; 32] {
    Sha256::digest(cookie.as_bytes()).into()
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

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
}

fn viewer(shared: &Shared, request: &Request<Bytes>) -> Option<Viewer> {
    let cookie = session_cookie(request, cookie_name(shared))?;
    let (token, csrf) = shared.sessions.get(&cookie)?;
    // Looked up on every request, so a revoked token ends its sessions.
    let principal = shared.tokens.principal_by_hash(&token)?.clone();
    (principal.kind == PrincipalKind::Human).then_some(Viewer {
        principal,
        csrf,
        cookie,
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
        ["login"] => match *request.method() {
            Method::GET | Method::HEAD => login_page(shared, request, StatusCode::OK, None),
            Method::POST => login(shared, request),
            _ => method_page(),
        },
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
                None => redirect("/console/login"),
            },
            Err(_) => method_page(),
        },
        ["requests", id, "decision"] => match *request.method() {
            Method::POST => decision(shared, request, id).await,
            _ => method_page(),
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

fn csrf_ok(expected: &str, fields: &HashMap<String, String>) -> bool {
    fields
        .get("csrf")
        .is_some_and(|given| bool::from(given.as_bytes().ct_eq(expected.as_bytes())))
}

// ------------------------------------------------------------------------------------------
// Sign-in.

fn login_page(
    shared: &Shared,
    request: &Request<Bytes>,
    status: StatusCode,
    error: Option<&str>,
) -> Response<Bytes> {
    if status == StatusCode::OK && viewer(shared, request).is_some() {
        return redirect("/console/");
    }
    let mut body = String::new();
    body.push_str(r#"<section class="card narrow"><h1>Sign in to review</h1>"#);
    if let Some(error) = error {
        let _ = write!(
            body,
            r#"<p class="alert error" role="alert">{}</p>"#,
            escape(error)
        );
    }
    body.push_str(
        r#"<p class="muted">Paste your personal API token. It is checked against the server's token list and never stored in the browser; you get a session cookie instead.</p>
<form method="post" action="/console/login" class="stack">
<label for="token">API token</label>
<input id="token" name="token" type="password" autocomplete="off" required spellcheck="false">
<button type="submit" class="primary">Sign in</button>
</form></section>"#,
    );
    html_response(status, &page("Sign in", None, &body))
}

fn login(shared: &Shared, request: &Request<Bytes>) -> Response<Bytes> {
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
    let cookie = shared.sessions.create(hash);
    let mut response = redirect("/console/");
    let attributes = if secure(shared) { "; Secure" } else { "" };
    let set = format!(
        "{}={cookie}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{attributes}",
        cookie_name(shared),
        shared.sessions.ttl.as_secs()
    );
    if let Ok(value) = HeaderValue::from_str(&set) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

fn logout(shared: &Shared, request: &Request<Bytes>) -> Response<Bytes> {
    let Some(v) = viewer(shared, request) else {
        return redirect("/console/login");
    };
    let ok = same_origin(shared, request) && form(request).is_ok_and(|f| csrf_ok(&v.csrf, &f));
    if !ok {
        return error_page(
            Some(&v),
            StatusCode::FORBIDDEN,
            "Sign-out refused",
            "The form did not carry this session's security token. Reload the page and try again.",
        );
    }
    shared.sessions.remove(&v.cookie);
    let mut response = redirect("/console/login");
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
    let fields = form(request);
    let trusted =
        same_origin(shared, request) && fields.as_ref().is_ok_and(|f| csrf_ok(&v.csrf, f));
    if !trusted {
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
    }
    let fields = fields.unwrap_or_default();
    let verdict = match fields.get("verdict").map(String::as_str) {
        Some("approve") => Verdict::Approve,
        Some("deny") => Verdict::Deny,
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
    let mut review = Review::new(v.principal.clone(), verdict)
        .via(CONSOLE_CHANNEL)
        .for_digest(digest);
    if let Some(reason) = reason {
        review = review.reason(reason);
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

// ------------------------------------------------------------------------------------------
// Pages.

async fn pending_page(shared: &Shared, request: &Request<Bytes>, v: &Viewer) -> Response<Bytes> {
    let query = match crate::api::ListQuery::parse(request.uri().query().unwrap_or("")) {
        Ok(q) => q,
        Err(p) => return error_page(Some(v), p.status_code(), "Bad filter", &p.detail),
    };
    let filter = approvals_core::ListFilter {
        states: vec![RequestState::Pending],
        kind: query.kind.clone(),
        environment: query.environment.clone(),
        initiator: query.initiator.clone(),
        limit: Some(query.limit),
        ..Default::default()
    };
    let records = match shared.gate.store().list(&filter).await {
        Ok(r) => r,
        Err(e) => return unavailable(v, &e.to_string()),
    };
    let now = shared.gate.now();
    let mut body = String::new();
    let _ = write!(
        body,
        r#"<div class="titlebar"><h1>Pending requests <span class="count">{}</span></h1></div>"#,
        records.len()
    );
    let field = |name: &str, label: &str, value: &Option<String>| {
        format!(
            r#"<label>{label}<input name="{name}" value="{}" spellcheck="false"></label>"#,
            escape(value.as_deref().unwrap_or(""))
        )
    };
    let _ = write!(
        body,
        r#"<form method="get" action="/console/requests" class="filters">{}{}{}<button type="submit">Filter</button> <a href="/console/requests">Clear</a></form>"#,
        field("kind", "Kind", &query.kind),
        field("environment", "Environment", &query.environment),
        field("initiator", "Initiator", &query.initiator)
    );
    if records.is_empty() {
        body.push_str(r#"<p class="empty">Nothing is waiting for review.</p>"#);
    } else {
        body.push_str(r#"<table class="list"><thead><tr><th>Action</th><th>Environment</th><th>Requested by</th><th>Risk</th><th>Approvals</th><th>Expires</th></tr></thead><tbody>"#);
        for r in &records {
            let req = &r.request;
            let _ = write!(
                body,
                r#"<tr><td><a class="kind" href="/console/requests/{id}">{kind}</a><div class="resource">{resource}</div>{summary}</td><td>{env}</td><td>{initiator}</td><td>{risk}</td><td>{approvals} of {quorum}</td><td title="{exp_abs}">{exp_rel}</td></tr>"#,
                id = r.id,
                kind = escape(&truncate(&req.kind, 120)),
                resource = escape(&truncate(&req.resource, 160)),
                summary = req
                    .summary
                    .as_deref()
                    .map(|s| format!(
                        r#"<div class="summary">{}</div>"#,
                        escape(&truncate(s, 200))
                    ))
                    .unwrap_or_default(),
                env = env_badge(req.context.environment.as_deref()),
                initiator = initiator_short(r),
                risk = risk_badge(r),
                approvals = r.approvers().len(),
                quorum = r.requirement.quorum,
                exp_abs = fmt_time(r.expires_at),
                exp_rel = relative(now, r.expires_at),
            );
        }
        body.push_str("</tbody></table>");
    }
    html_response(StatusCode::OK, &page("Pending requests", Some(v), &body))
}

async fn history_page(shared: &Shared, v: &Viewer) -> Response<Bytes> {
    let filter = approvals_core::ListFilter {
        states: vec![
            RequestState::Approved,
            RequestState::Denied,
            RequestState::Expired,
            RequestState::Cancelled,
            RequestState::Executing,
            RequestState::Executed,
            RequestState::Failed,
            RequestState::Lapsed,
        ],
        limit: Some(200),
        ..Default::default()
    };
    let records = match shared.gate.store().list(&filter).await {
        Ok(r) => r,
        Err(e) => return unavailable(v, &e.to_string()),
    };
    let mut body = String::from(
        r#"<div class="titlebar"><h1>History</h1><p class="muted">The 200 most recent resolved requests.</p></div>"#,
    );
    if records.is_empty() {
        body.push_str(r#"<p class="empty">No request has been resolved yet.</p>"#);
    } else {
        body.push_str(r#"<table class="list"><thead><tr><th>Outcome</th><th>Action</th><th>Requested by</th><th>Decided by</th><th>Reason</th><th>Requested</th></tr></thead><tbody>"#);
        for r in &records {
            let view = crate::view::RequestView::of(r);
            let reason = r
                .resolution
                .as_ref()
                .and_then(|res| res.reason.clone())
                .or_else(|| r.reviews.last().and_then(|rv| rv.reason.clone()));
            let _ = write!(
                body,
                r#"<tr><td>{state}</td><td><a class="kind" href="/console/requests/{id}">{kind}</a><div class="resource">{resource}</div></td><td>{initiator}</td><td>{by}</td><td class="reason">{reason}</td><td>{at}</td></tr>"#,
                state = state_badge(r.state),
                id = r.id,
                kind = escape(&truncate(&r.request.kind, 120)),
                resource = escape(&truncate(&r.request.resource, 160)),
                initiator = initiator_short(r),
                by = view
                    .decided_by()
                    .map(|b| escape(&truncate(&b, 120)))
                    .unwrap_or_else(|| r#"<span class="muted">—</span>"#.into()),
                reason = reason
                    .map(|s| escape(&truncate(&s, 200)))
                    .unwrap_or_default(),
                at = fmt_time(r.created_at),
            );
        }
        body.push_str("</tbody></table>");
    }
    html_response(StatusCode::OK, &page("History", Some(v), &body))
}

async fn detail_page(
    shared: &Shared,
    v: &Viewer,
    id: RequestId,
    error: Option<(StatusCode, String)>,
) -> Response<Bytes> {
    let record = match shared.gate.get(id).await {
        Ok(Some(r)) if may_view(&r, &v.principal) => r,
        Ok(_) => {
            return error_page(
                Some(v),
                StatusCode::NOT_FOUND,
                "No such request",
                &format!("There is no approval request {id}."),
            );
        }
        Err(e) => return unavailable(v, &e.to_string()),
    };
    let now = shared.gate.now();
    let status = error.as_ref().map_or(StatusCode::OK, |(s, _)| *s);
    let body = render_detail(&record, v, now, error.as_ref().map(|(_, m)| m.as_str()));
    let title = format!("{} — review", truncate(&record.request.kind, 60));
    html_response(status, &page(&title, Some(v), &body))
}

fn render_detail(
    record: &RequestRecord,
    v: &Viewer,
    now: DateTime<Utc>,
    error: Option<&str>,
) -> String {
    let req = &record.request;
    let mut b = String::new();
    let _ = write!(
        b,
        r#"<p class="crumbs"><a href="/console/requests">Pending</a> / request <code>{id}</code></p>
<div class="titlebar"><h1><span class="kind">{kind}</span> {state}</h1><div class="resource big">{resource}</div>{summary}</div>"#,
        id = record.id,
        kind = escape(&req.kind),
        state = state_badge(record.state),
        resource = escape(&req.resource),
        summary = req
            .summary
            .as_deref()
            .map(|s| format!(r#"<p class="summary">{}</p>"#, escape(s)))
            .unwrap_or_default(),
    );
    if let Some(error) = error {
        let _ = write!(
            b,
            r#"<p class="alert error" role="alert"><strong>Nothing was decided.</strong> {}</p>"#,
            escape(error)
        );
    }
    if let Some(mine) = record
        .reviews
        .iter()
        .rev()
        .find(|r| r.reviewer.same_identity(&v.principal))
    {
        let _ = write!(
            b,
            r#"<p class="alert ok" role="status">You {} this request at {}.</p>"#,
            if mine.verdict == Verdict::Approve {
                "approved"
            } else {
                "denied"
            },
            fmt_time(mine.at)
        );
    }

    b.push_str(r#"<div class="grid"><div class="main">"#);

    // The action itself.
    let params = serde_json::to_string_pretty(&req.params).unwrap_or_else(|_| "null".into());
    let _ = write!(
        b,
        r#"<section class="card"><h2>Exact parameters</h2><pre class="params" id="params">{}</pre>
<dl class="kv"><dt>Action digest</dt><dd><code class="digest" id="digest">{}</code><div class="hint">Your decision is bound to this digest: if any parameter or context changes, the approval does not apply.</div></dd></dl></section>"#,
        escape(&params),
        record.digest
    );

    if let Some(why) = &req.justification {
        let _ = write!(
            b,
            r#"<section class="card"><h2>Justification <span class="from">(from the requester)</span></h2><p class="quote">{}</p></section>"#,
            escape(why)
        );
    }

    // Context.
    let ctx = &req.context;
    let mut kv = String::new();
    let mut row = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            let _ = write!(kv, "<dt>{k}</dt><dd>{v}</dd>");
        }
    };
    row(
        "Environment",
        ctx.environment.as_deref().map(|e| env_badge(Some(e))),
    );
    row("Risk", ctx.risk.map(|_| risk_badge(record)));
    row("Ticket", ctx.ticket.as_deref().map(escape));
    row(
        "Commit",
        ctx.commit
            .as_deref()
            .map(|c| format!("<code>{}</code>", escape(c))),
    );
    row("Impact", ctx.impact.as_deref().map(escape));
    row(
        "Prompt excerpt",
        ctx.prompt_excerpt
            .as_deref()
            .map(|p| format!(r#"<blockquote>{}</blockquote>"#, escape(p))),
    );
    for link in &ctx.links {
        // Shown as text, never as a live link: the requester chose the URL.
        row(
            &format!("Link: {}", escape(&truncate(&link.label, 60))),
            Some(format!("<code>{}</code>", escape(&link.url))),
        );
    }
    for (k, val) in &ctx.labels {
        row(
            &format!("Label: {}", escape(&truncate(k, 60))),
            Some(escape(val)),
        );
    }
    if !kv.is_empty() {
        let _ = write!(
            b,
            r#"<section class="card"><h2>Context</h2><dl class="kv">{kv}</dl></section>"#
        );
    }

    // Reviews.
    b.push_str(r#"<section class="card"><h2>Decision trail</h2>"#);
    if record.reviews.is_empty() && record.resolution.is_none() {
        b.push_str(r#"<p class="muted">No reviews yet.</p>"#);
    } else {
        b.push_str(r#"<ol class="trail">"#);
        for r in &record.reviews {
            let _ = write!(
                b,
                r#"<li><span class="who">{who}</span> {verdict} <span class="muted">via {channel}, {at}</span>{reason}</li>"#,
                who = principal_label(&r.reviewer),
                verdict = if r.verdict == Verdict::Approve {
                    r#"<span class="badge approved">approved</span>"#
                } else {
                    r#"<span class="badge denied">denied</span>"#
                },
                channel = escape(&r.channel),
                at = fmt_time(r.at),
                reason = r
                    .reason
                    .as_deref()
                    .map(|s| format!(r#"<div class="reason">“{}”</div>"#, escape(s)))
                    .unwrap_or_default(),
            );
        }
        if let Some(res) = &record.resolution
            && matches!(
                record.state,
                RequestState::Cancelled | RequestState::Expired
            )
        {
            let _ = write!(
                b,
                r#"<li>{state} {by} <span class="muted">{at}</span>{reason}</li>"#,
                state = state_badge(record.state),
                by = res
                    .by
                    .as_ref()
                    .map(|p| format!("by {}", principal_label(p)))
                    .unwrap_or_default(),
                at = fmt_time(res.at),
                reason = res
                    .reason
                    .as_deref()
                    .map(|s| format!(r#"<div class="reason">“{}”</div>"#, escape(s)))
                    .unwrap_or_default(),
            );
        }
        if let Some(exec) = &record.execution {
            let _ = write!(
                b,
                r#"<li>grant used <span class="muted">{}</span>{}</li>"#,
                fmt_time(exec.started_at),
                exec.error
                    .as_deref()
                    .map(|e| format!(r#"<div class="reason">error: {}</div>"#, escape(e)))
                    .unwrap_or_default()
            );
        }
        b.push_str("</ol>");
    }
    b.push_str("</section></div>");

    // Side column: who asked, who may approve, the decision form.
    b.push_str(r#"<aside class="side">"#);
    b.push_str(&decision_box(record, v, now));
    let mut who = String::new();
    if let Some(init) = &req.initiator {
        let _ = write!(
            who,
            "<dt>Initiator</dt><dd>{}</dd>",
            principal_label(&init.principal)
        );
        if let Some(h) = &init.on_behalf_of {
            let _ = write!(who, "<dt>On behalf of</dt><dd>{}</dd>", principal_label(h));
        }
        for (k, val) in [
            ("Model", &init.model),
            ("Session", &init.session),
            ("Prompt ref", &init.prompt_ref),
        ] {
            if let Some(val) = val {
                let _ = write!(who, "<dt>{k}</dt><dd><code>{}</code></dd>", escape(val));
            }
        }
    } else {
        who.push_str("<dt>Initiator</dt><dd>unknown</dd>");
    }
    let _ = write!(
        b,
        r#"<section class="card"><h2>Requested by</h2><dl class="kv">{who}<dt>Requested</dt><dd>{}</dd></dl></section>"#,
        fmt_time(record.created_at)
    );
    let reqm = &record.requirement;
    let grant_until = record
        .grant_expires_at
        .filter(|_| record.state == RequestState::Approved);
    let mut allowed: Vec<String> = reqm
        .groups
        .iter()
        .map(|g| format!("group <code>{}</code>", escape(g)))
        .collect();
    allowed.extend(reqm.users.iter().map(|u| escape(u)));
    if let Some(esc) = &reqm.escalation {
        let extra: Vec<String> = esc
            .groups
            .iter()
            .map(|g| format!("group <code>{}</code>", escape(g)))
            .chain(esc.users.iter().map(|u| escape(u)))
            .collect();
        if !extra.is_empty() {
            allowed.push(format!(
                "after escalation{}: {}",
                if record.escalated { " (escalated)" } else { "" },
                extra.join(", ")
            ));
        }
    }
    let _ = write!(
        b,
        r#"<section class="card"><h2>Approval rule</h2><dl class="kv"><dt>Who may approve</dt><dd>{allowed}</dd><dt>Approvals</dt><dd>{n} of {q}{reason}</dd><dt>{exp_label}</dt><dd>{exp} <span class="muted">({rel})</span></dd><dt>Policy</dt><dd>{rule}<div class="muted small">version <code>{version}</code></div></dd></dl></section>"#,
        allowed = if allowed.is_empty() {
            "nobody".into()
        } else {
            allowed.join("<br>")
        },
        n = record.approvers().len(),
        q = reqm.quorum,
        reason = if reqm.reason_required {
            ", reason required"
        } else {
            ""
        },
        exp_label = if grant_until.is_some() {
            "Grant valid until"
        } else {
            "Expires"
        },
        exp = fmt_time(grant_until.unwrap_or(record.expires_at)),
        rel = relative(now, grant_until.unwrap_or(record.expires_at)),
        rule = record
            .policy_rule
            .as_deref()
            .map(|r| format!("rule <code>{}</code>", escape(r)))
            .unwrap_or_else(|| "unnamed rule".into()),
        version = escape(&truncate(&record.policy_version, 24)),
    );
    b.push_str("</aside></div>");
    b
}

fn decision_box(record: &RequestRecord, v: &Viewer, now: DateTime<Utc>) -> String {
    let me = &v.principal;
    let notice = |text: &str| {
        format!(
            r#"<section class="card decide"><h2>Your decision</h2><p class="muted">{text}</p></section>"#
        )
    };
    // The gate's rules, run dry for each verdict (the reason is asked for in the form); the
    // gate checks again when the form is posted.
    let check = |verdict| {
        lifecycle::check_review_before_reason(
            record,
            &Review::new(me.clone(), verdict).for_digest(record.digest),
            now,
        )
    };
    let (approve, deny) = (check(Verdict::Approve), check(Verdict::Deny));
    // Deny wins: an approval whose grant is still unused can be revoked by a reviewer.
    if record.state == RequestState::Approved && deny.is_ok() {
        return format!(
            r#"<section class="card decide"><h2>Revoke the approval</h2>
<p class="muted">Approved, but the agent has not used its grant yet. Denying now revokes it: the action will not run.</p>
<form method="post" action="/console/requests/{id}/decision" class="stack">
<input type="hidden" name="csrf" value="{csrf}">
<input type="hidden" name="digest" value="{digest}">
<label for="reason">Reason</label>
<textarea id="reason" name="reason" rows="3" maxlength="2000" placeholder="Why you revoke it (recorded in the audit trail)"></textarea>
<div class="buttons"><button type="submit" name="verdict" value="deny" class="deny">Revoke (deny)</button></div>
</form></section>"#,
            id = record.id,
            csrf = escape(&v.csrf),
            digest = record.digest,
        );
    }
    let (refused, buttons) = match (&approve, &deny) {
        (Err(refused), Err(_)) => return notice(&escape(&refused.reviewer_message())),
        (Ok(_), Ok(_)) => (
            String::new(),
            r#"<button type="submit" name="verdict" value="approve" class="approve">Approve</button><button type="submit" name="verdict" value="deny" class="deny">Deny</button>"#,
        ),
        (Ok(_), Err(_)) => (
            String::new(),
            r#"<button type="submit" name="verdict" value="approve" class="approve">Approve</button>"#,
        ),
        (Err(refused), Ok(_)) => (
            format!(
                r#"<p class="muted">{}</p>"#,
                escape(&refused.reviewer_message())
            ),
            r#"<button type="submit" name="verdict" value="deny" class="deny">Deny</button>"#,
        ),
    };
    let reason_required = matches!((&approve, &deny), (Ok(true), _) | (_, Ok(true)));
    format!(
        r#"<section class="card decide"><h2>Your decision</h2>
<form method="post" action="/console/requests/{id}/decision" class="stack">
<input type="hidden" name="csrf" value="{csrf}">
<input type="hidden" name="digest" value="{digest}">
<label for="reason">Reason{req}</label>
<textarea id="reason" name="reason" rows="3" maxlength="2000" placeholder="Why you approve or deny (recorded in the audit trail)"{required}></textarea>
{refused}<div class="buttons">{buttons}</div>
<p class="hint">Deciding as {me}. Approving lets exactly this action run once (digest <code>{short}</code>).</p>
</form></section>"#,
        id = record.id,
        csrf = escape(&v.csrf),
        digest = record.digest,
        req = if reason_required { " (required)" } else { "" },
        required = if reason_required { " required" } else { "" },
        me = principal_label(me),
        short = &record.digest.to_string().get(7..19).unwrap_or(""),
    )
}

// ------------------------------------------------------------------------------------------
// Fragments.

fn page(title: &str, viewer: Option<&Viewer>, body: &str) -> String {
    let nav = match viewer {
        Some(v) => format!(
            r#"<nav><a href="/console/requests">Pending</a><a href="/console/history">History</a></nav>
<div class="user"><span title="{id}">{name}</span>{groups}<form method="post" action="/console/logout"><input type="hidden" name="csrf" value="{csrf}"><button type="submit" class="link">Sign out</button></form></div>"#,
            id = escape(&v.principal.id),
            name = escape(v.principal.label()),
            groups = if v.principal.groups.is_empty() {
                String::new()
            } else {
                format!(
                    r#"<span class="groups">{}</span>"#,
                    escape(&truncate(&v.principal.groups.join(", "), 80))
                )
            },
            csrf = escape(&v.csrf),
        ),
        None => String::new(),
    };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="same-origin">
<title>{title} · Approvals</title><link rel="stylesheet" href="/console/style.css"></head>
<body><header class="top"><a class="brand" href="/console/"><span class="logo">✓</span> Approvals <span class="sub">review console</span></a>{nav}</header>
<main>{body}</main>
<footer>Every decision is recorded in the audit trail with your identity, reason and the action digest.</footer>
</body></html>"#,
        title = escape(title),
    )
}

fn html_response(status: StatusCode, html: &str) -> Response<Bytes> {
    let mut r = Response::new(Bytes::from(html.to_owned()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

fn error_page(
    viewer: Option<&Viewer>,
    status: StatusCode,
    title: &str,
    text: &str,
) -> Response<Bytes> {
    let body = format!(
        r#"<section class="card narrow"><h1>{}</h1><p>{}</p><p><a href="/console/">Back to the console</a></p></section>"#,
        escape(title),
        escape(text)
    );
    html_response(status, &page(title, viewer, &body))
}

fn unavailable(v: &Viewer, detail: &str) -> Response<Bytes> {
    let p = Problem::unavailable(detail);
    error_page(
        Some(v),
        p.status_code(),
        "Temporarily unavailable",
        &format!("{} Try again shortly.", p.detail),
    )
}

fn principal_label(p: &Principal) -> String {
    let kind = match p.kind {
        PrincipalKind::Human => "",
        PrincipalKind::Agent => r#"<span class="badge kindtag">agent</span> "#,
        PrincipalKind::Service => r#"<span class="badge kindtag">service</span> "#,
    };
    match &p.display_name {
        Some(name) if name != &p.id => format!(
            r#"{kind}{} <span class="muted">&lt;{}&gt;</span>"#,
            escape(&truncate(name, 120)),
            escape(&truncate(&p.id, 200))
        ),
        _ => format!("{kind}{}", escape(&truncate(&p.id, 200))),
    }
}

fn initiator_short(r: &RequestRecord) -> String {
    match &r.request.initiator {
        Some(i) => {
            let mut s = principal_label(&i.principal);
            if let Some(h) = &i.on_behalf_of {
                let _ = write!(
                    s,
                    r#"<div class="muted small">for {}</div>"#,
                    escape(&truncate(h.label(), 120))
                );
            }
            s
        }
        None => "unknown".into(),
    }
}

fn state_badge(state: RequestState) -> String {
    format!(r#"<span class="badge {s}">{s}</span>"#, s = state.as_str())
}

fn env_badge(env: Option<&str>) -> String {
    match env {
        Some(e) => {
            let class = match e.to_ascii_lowercase().as_str() {
                "production" | "prod" => "env prod",
                _ => "env",
            };
            format!(
                r#"<span class="badge {class}">{}</span>"#,
                escape(&truncate(e, 40))
            )
        }
        None => r#"<span class="muted">—</span>"#.into(),
    }
}

fn risk_badge(r: &RequestRecord) -> String {
    match r.request.context.risk {
        Some(risk) => {
            let name = serde_json::to_value(risk)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            format!(r#"<span class="badge risk-{name}">{name}</span>"#)
        }
        None => r#"<span class="muted">—</span>"#.into(),
    }
}

fn fmt_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn relative(now: DateTime<Utc>, t: DateTime<Utc>) -> String {
    let secs = (t - now).num_seconds();
    let (abs, future) = (secs.unsigned_abs(), secs >= 0);
    let text = if abs < 90 {
        format!("{abs} s")
    } else if abs < 90 * 60 {
        format!("{} min", abs / 60)
    } else if abs < 36 * 3600 {
        format!("{} h", abs / 3600)
    } else {
        format!("{} days", abs / 86400)
    };
    if future {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}
