//! Pieces of every console page: the page frame, error pages, badges, names and times.

use std::fmt::Write as _;

use approvals_core::{Principal, PrincipalKind, RequestRecord, RequestState};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{HeaderValue, Response, StatusCode, header};

use super::Viewer;
use crate::html::{escape, truncate};
use crate::problem::Problem;

pub(super) fn page(title: &str, viewer: Option<&Viewer>, body: &str) -> String {
    let nav = match viewer {
        Some(v) => format!(
            r#"<nav><a href="/console/requests">Pending</a><a href="/console/history">History</a><a href="/console/standing">Standing grants</a><a href="/console/passkeys">Passkeys</a></nav>
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

pub(super) fn html_response(status: StatusCode, html: &str) -> Response<Bytes> {
    let mut r = Response::new(Bytes::from(html.to_owned()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

pub(super) fn error_page(
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

pub(super) fn unavailable(v: &Viewer, detail: &str) -> Response<Bytes> {
    let p = Problem::unavailable(detail);
    error_page(
        Some(v),
        p.status_code(),
        "Temporarily unavailable",
        &format!("{} Try again shortly.", p.detail),
    )
}

pub(super) fn principal_label(p: &Principal) -> String {
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

pub(super) fn initiator_short(r: &RequestRecord) -> String {
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

pub(super) fn state_badge(state: RequestState) -> String {
    format!(r#"<span class="badge {s}">{s}</span>"#, s = state.as_str())
}

pub(super) fn env_badge(env: Option<&str>) -> String {
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

pub(super) fn risk_badge(r: &RequestRecord) -> String {
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

pub(super) fn fmt_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

pub(super) fn relative(now: DateTime<Utc>, t: DateTime<Utc>) -> String {
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
