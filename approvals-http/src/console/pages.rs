//! The console's request pages: the pending list, the history, and one request with the
//! decision form.

use std::fmt::Write as _;

use approvals_core::lifecycle::{self, Review};
use approvals_core::preview::DiffLine;
use approvals_core::{Preview, RequestId, RequestRecord, RequestState, ReviewError, Verdict};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{Request, Response, StatusCode};

use super::Viewer;
use super::fragments::{
    env_badge, error_page, fmt_time, html_response, initiator_short, page, principal_label,
    relative, risk_badge, state_badge, unavailable,
};
use crate::html::{escape, truncate};
use crate::requests::{ListQuery, may_view};
use crate::shared::Shared;

pub(super) async fn pending_page(
    shared: &Shared,
    request: &Request<Bytes>,
    v: &Viewer,
) -> Response<Bytes> {
    let query = match ListQuery::parse(request.uri().query().unwrap_or("")) {
        Ok(q) => q,
        Err(p) => return error_page(Some(v), p.status_code(), "Bad filter", &p.detail),
    };
    let filter = approvals_core::ListFilter {
        states: vec![RequestState::Pending],
        kind: query.kind.clone(),
        environment: query.environment.clone(),
        initiator: query.initiator.clone(),
        ..Default::default()
    };
    let (records, next) =
        match crate::requests::page(&shared.gate, filter, &query, &v.principal).await {
            Ok(page) => page,
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
    if let Some(next) = next {
        // The same filters, from where this page ended.
        let mut link = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("kind", &query.kind),
            ("environment", &query.environment),
            ("initiator", &query.initiator),
        ] {
            if let Some(value) = value {
                link.append_pair(name, value);
            }
        }
        link.append_pair("limit", &query.limit.to_string());
        link.append_pair("cursor", &next.to_string());
        let _ = write!(
            body,
            r#"<p class="pager"><a rel="next" href="/console/requests?{}">Older requests →</a></p>"#,
            escape(&link.finish())
        );
    }
    html_response(StatusCode::OK, &page("Pending requests", Some(v), &body))
}

pub(super) async fn history_page(shared: &Shared, v: &Viewer) -> Response<Bytes> {
    let filter = approvals_core::ListFilter {
        // Every state a request reaches once it leaves `Pending`.
        states: approvals_core::lifecycle::ALL_STATES
            .into_iter()
            .filter(|s| *s != RequestState::Pending)
            .collect(),
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

pub(super) async fn detail_page(
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
    // A rule that requires a passkey is approved through the step-up ceremony.
    let step_up = lifecycle::needs_step_up(&record)
        .map(|_| super::passkey::step_up_button(shared, v, record.id, &record.digest));
    let body = render_detail(
        &record,
        v,
        now,
        error.as_ref().map(|(_, m)| m.as_str()),
        step_up.as_deref(),
    );
    let title = format!("{} — review", truncate(&record.request.kind, 60));
    html_response(status, &page(&title, Some(v), &body))
}

fn render_detail(
    record: &RequestRecord,
    v: &Viewer,
    now: DateTime<Utc>,
    error: Option<&str>,
    step_up: Option<&str>,
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

    b.push_str(&super::standing::terms_card(record, now));

    // The action itself (a plan's actions, each with its own digest).
    let items = super::plan::items_card(record);
    let params = if items.is_empty() {
        let params = serde_json::to_string_pretty(&req.params).unwrap_or_else(|_| "null".into());
        format!(
            r#"<h2>Exact parameters</h2><pre class="params" id="params">{}</pre>"#,
            escape(&params)
        )
    } else {
        b.push_str(&items);
        "<h2>Plan digest</h2>".to_owned()
    };
    let _ = write!(
        b,
        r#"<section class="card">{params}
<dl class="kv"><dt>Action digest</dt><dd><code class="digest" id="digest">{}</code><div class="hint">Your decision is bound to this digest: if any parameter or context changes, the approval does not apply.</div></dd></dl></section>"#,
        record.digest
    );

    b.push_str(&super::edit::edits_card(record));

    if let Some(preview) = &req.context.preview {
        preview_section(&mut b, preview);
    }

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
    b.push_str(&decision_box(record, v, now, step_up));
    if v.principal.kind == approvals_core::PrincipalKind::Human {
        b.push_str(&super::standing::propose_form(record, v));
    }
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

/// The decision form. `step_up` is the approve control of a rule that requires a passkey
/// (the gate refuses a plain approval of it with `StepUpRequired`).
fn decision_box(
    record: &RequestRecord,
    v: &Viewer,
    now: DateTime<Utc>,
    step_up: Option<&str>,
) -> String {
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
    // Deny wins: an approval whose grant is still unused can be revoked by a reviewer, and a
    // standing grant stays revocable while it is in force.
    if record.state == RequestState::Approved && deny.is_ok() {
        let (title, text) = if approvals_core::standing::StandingTerms::of(record).is_some() {
            (
                "Revoke the standing grant",
                "In force. Denying now revokes it: no further action is approved by it (actions it already approved keep their own grants).",
            )
        } else if record.request.kind == approvals_core::plan::PLAN_KIND {
            (
                "Revoke the plan",
                "Approved. Denying now revokes it: none of its actions that have not run yet will run under it (those that ran keep their own grants).",
            )
        } else {
            (
                "Revoke the approval",
                "Approved, but the agent has not used its grant yet. Denying now revokes it: the action will not run.",
            )
        };
        return format!(
            r#"<section class="card decide"><h2>{title}</h2>
<p class="muted">{text}</p>
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
    const APPROVE: &str =
        r#"<button type="submit" name="verdict" value="approve" class="approve">Approve</button>"#;
    const DENY: &str =
        r#"<button type="submit" name="verdict" value="deny" class="deny">Deny</button>"#;
    let passkey = matches!(approve, Err(ReviewError::StepUpRequired { .. }));
    let (refused, buttons) = match (&approve, &deny) {
        (Err(_), _) if passkey => (
            String::new(),
            format!(
                "{}{}",
                step_up.unwrap_or_default(),
                if deny.is_ok() { DENY } else { "" }
            ),
        ),
        (Err(refused), Err(_)) => return notice(&escape(&refused.reviewer_message())),
        (Ok(_), Ok(_)) => (String::new(), format!("{APPROVE}{DENY}")),
        (Ok(_), Err(_)) => (String::new(), APPROVE.to_owned()),
        (Err(refused), Ok(_)) => (
            format!(
                r#"<p class="muted">{}</p>"#,
                escape(&refused.reviewer_message())
            ),
            DENY.to_owned(),
        ),
    };
    let reason_required = matches!((&approve, &deny), (Ok(true), _) | (_, Ok(true)))
        || (passkey && record.requirement.reason_required);
    let edit = super::edit::edit_form(record, v, approve.is_ok(), reason_required);
    format!(
        r#"<section class="card decide"><h2>Your decision</h2>
<form method="post" action="/console/requests/{id}/decision" class="stack">
<input type="hidden" name="csrf" value="{csrf}">
<input type="hidden" name="digest" value="{digest}">
<label for="reason">Reason{req}</label>
<textarea id="reason" name="reason" rows="3" maxlength="2000" placeholder="Why you approve or deny (recorded in the audit trail)"{required}></textarea>
{refused}<div class="buttons">{buttons}</div><p id="passkey-status" class="muted" role="status"></p>
<p class="hint">Deciding as {me}. Approving lets exactly this action run once (digest <code>{short}</code>).</p>
</form></section>{edit}"#,
        id = record.id,
        csrf = escape(&v.csrf),
        digest = record.digest,
        req = if reason_required { " (required)" } else { "" },
        required = if reason_required { " required" } else { "" },
        me = principal_label(me),
        short = &record.digest.to_string().get(7..19).unwrap_or(""),
    )
}

/// The whole preview, as the requester gave it: a diff with its added, removed, hunk and
/// header lines marked, a dry run as text, rows as a table. Every piece is escaped.
fn preview_section(b: &mut String, preview: &Preview) {
    let _ = write!(
        b,
        r#"<section class="card"><h2>Preview: {} <span class="from">(from the requester)</span></h2>"#,
        escape(&preview.caption())
    );
    match preview {
        Preview::Diff { text } => {
            b.push_str(r#"<pre class="preview diff" id="preview">"#);
            for line in text.lines() {
                let class = match DiffLine::of(line) {
                    DiffLine::Header => "d-head",
                    DiffLine::Hunk => "d-hunk",
                    DiffLine::Added => "d-add",
                    DiffLine::Removed => "d-del",
                    DiffLine::Context => "d-ctx",
                };
                let _ = writeln!(b, r#"<span class="{class}">{}</span>"#, escape(line));
            }
            b.push_str("</pre>");
        }
        Preview::DryRun { text } => {
            let _ = write!(
                b,
                r#"<pre class="preview" id="preview">{}</pre>"#,
                escape(text)
            );
        }
        Preview::Rows { columns, rows, .. } => {
            b.push_str(r#"<div class="table-scroll"><table class="rows" id="preview"><thead><tr>"#);
            for c in columns {
                let _ = write!(b, "<th>{}</th>", escape(c));
            }
            b.push_str("</tr></thead><tbody>");
            for row in rows {
                b.push_str("<tr>");
                for cell in row {
                    let _ = write!(b, "<td>{}</td>", escape(cell));
                }
                b.push_str("</tr>");
            }
            b.push_str("</tbody></table></div>");
        }
    }
    b.push_str(r#"<p class="hint">The approval covers this preview: if it changes, the action needs a new approval.</p></section>"#);
}
