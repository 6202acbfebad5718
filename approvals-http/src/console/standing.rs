//! The console's standing grants: the list of those in force, what one allows and has left,
//! and the form that proposes one from a request its rule lets be covered.

use std::fmt::Write as _;

use approvals_core::lifecycle;
use approvals_core::standing::StandingStatus;
use approvals_core::{RequestId, RequestRecord, RequestState};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{Request, Response, StatusCode};

use super::fragments::{error_page, fmt_time, html_response, page, principal_label, relative};
use super::{Viewer, trusted_form, viewer};
use crate::html::{escape, truncate};
use crate::problem::Problem;
use crate::requests::may_view;
use crate::shared::{Shared, redirect};
use crate::standing::{ProposeBody, proposal};

/// `GET /console/standing`: every standing grant in force, with its uses and time left.
pub(super) async fn standing_page(shared: &Shared, v: &Viewer) -> Response<Bytes> {
    let grants = match shared.gate.standing_grants().await {
        Ok(g) => g,
        Err(e) => return super::fragments::unavailable(v, &e.to_string()),
    };
    let now = shared.gate.now();
    let mut body = String::from(
        r#"<div class="titlebar"><h1>Standing grants</h1><p class="muted">Approved permissions that let one agent run one kind of action on matching resources without asking, until their uses or time run out. Open one to revoke it.</p></div>"#,
    );
    if grants.is_empty() {
        body.push_str(r#"<p class="empty" id="no-standing">No standing grant is in force.</p>"#);
    } else {
        body.push_str(r#"<table class="list" id="standing"><thead><tr><th>Lets</th><th>Run</th><th>On</th><th>Uses left</th><th>Until</th><th>Approved by</th></tr></thead><tbody>"#);
        for record in grants.iter().filter(|g| may_view(g, &v.principal)) {
            let Some(status) = StandingStatus::of(record) else {
                continue;
            };
            let approvers: Vec<String> = record
                .approvers()
                .into_iter()
                .map(principal_label)
                .collect();
            let _ = write!(
                body,
                r#"<tr><td>{who}</td><td><a class="kind" href="/console/requests/{id}">{kind}</a></td><td class="resource">{resource}</td><td class="uses">{left} of {uses}</td><td>{until}</td><td>{approvers}</td></tr>"#,
                who = super::fragments::initiator_short(record),
                id = record.id,
                kind = escape(&truncate(&status.terms.kind, 120)),
                resource = escape(&truncate(&status.terms.resource, 160)),
                left = status.uses_left,
                uses = status.terms.uses,
                until = status
                    .expires_at
                    .map(|t| format!("{} ({})", fmt_time(t), relative(now, t)))
                    .unwrap_or_default(),
                approvers = approvers.join(", "),
            );
        }
        body.push_str("</tbody></table>");
    }
    html_response(StatusCode::OK, &page("Standing grants", Some(v), &body))
}

/// What a standing grant's request page shows above its trail: what it allows, and what is
/// left of it once approved.
pub(super) fn terms_card(record: &RequestRecord, now: DateTime<Utc>) -> String {
    let Some(status) = StandingStatus::of(record) else {
        return String::new();
    };
    let state = match (record.state, status.expires_at) {
        (_, Some(until)) if lifecycle::in_force(record, now) => format!(
            r#"<dt>Uses left</dt><dd id="uses-left">{} of {}</dd><dt>In force until</dt><dd>{} <span class="muted">({})</span></dd>"#,
            status.uses_left,
            status.terms.uses,
            fmt_time(until),
            relative(now, until)
        ),
        (RequestState::Pending, _) => {
            r#"<dt>In force</dt><dd>once approved by the rule's reviewers</dd>"#.to_owned()
        }
        _ => format!(
            r#"<dt>In force</dt><dd>no longer ({} of {} uses taken)</dd>"#,
            status.used, status.terms.uses
        ),
    };
    format!(
        r#"<section class="card standing"><h2>Standing grant</h2><dl class="kv"><dt>Lets</dt><dd>{who}</dd><dt>Run</dt><dd><code>{kind}</code></dd><dt>On resources matching</dt><dd><code>{resource}</code></dd><dt>For</dt><dd>{duration} from its approval, at most {uses} action(s)</dd><dt>Proposed by</dt><dd>{by}</dd>{state}</dl><p class="hint">Every action it covers is stored as its own request, approved by this grant and recorded in the audit trail as one of its uses.</p></section>"#,
        who = super::fragments::initiator_short(record),
        kind = escape(&status.terms.kind),
        resource = escape(&status.terms.resource),
        duration = approvals_core::policy::format_duration(status.terms.duration),
        uses = status.terms.uses,
        by = principal_label(&status.terms.proposed_by),
    )
}

/// The form that proposes a standing grant for the initiator of `record`, shown when its rule
/// allows standing grants (`standing_grant_max`). The gate checks everything again.
pub(super) fn propose_form(record: &RequestRecord, v: &Viewer) -> String {
    let Some(limit) = record.requirement.standing else {
        return String::new();
    };
    // Not for a request the gate made (a standing grant, a plan): a standing grant covers
    // one kind of action, and those kinds are reserved.
    if approvals_core::standing::is_reserved_kind(&record.request.kind)
        || record.request.initiator.is_none()
    {
        return String::new();
    }
    format!(
        r#"<section class="card"><h2>Allow for a while</h2>
<p class="muted">Propose a standing grant: this agent may run <code>{kind}</code> on matching resources without asking, for up to {max} and {max_uses} actions. The rule's reviewers approve it like any request.</p>
<form method="post" action="/console/requests/{id}/standing" class="stack">
<input type="hidden" name="csrf" value="{csrf}">
<label for="standing-resource">Resources (a pattern: <code>*</code> matches any run)</label>
<input id="standing-resource" name="resource" value="{resource}" required maxlength="512">
<label for="standing-for">For</label>
<input id="standing-for" name="for" value="1h" required maxlength="16">
<label for="standing-uses">Uses</label>
<input id="standing-uses" name="uses" type="number" min="1" max="{max_uses}" value="10" required>
<label for="standing-why">Why</label>
<textarea id="standing-why" name="justification" rows="2" maxlength="2000" required></textarea>
<div class="buttons"><button type="submit" class="primary">Propose</button></div>
</form></section>"#,
        id = record.id,
        csrf = escape(&v.csrf),
        kind = escape(&record.request.kind),
        resource = escape(&record.request.resource),
        max = approvals_core::policy::format_duration(limit.max_for),
        max_uses = limit.max_uses,
    )
}

/// `POST /console/requests/{id}/standing`: proposes the standing grant the form describes,
/// for the request's initiator, and shows the new request.
pub(super) async fn propose(
    shared: &Shared,
    request: &Request<Bytes>,
    raw_id: &str,
) -> Response<Bytes> {
    let Some(v) = viewer(shared, request) else {
        return redirect("/console/login");
    };
    let Ok(id) = RequestId::parse(raw_id) else {
        return error_page(
            Some(&v),
            StatusCode::NOT_FOUND,
            "No such request",
            "That is not a request id.",
        );
    };
    let Some(fields) = trusted_form(shared, request, &v) else {
        return error_page(
            Some(&v),
            StatusCode::FORBIDDEN,
            "Proposal refused",
            "The form did not come from this console, so nothing was proposed. Open the request in the console and try again.",
        );
    };
    let field = |name: &str| fields.get(name).cloned().unwrap_or_default();
    let refused = |status: StatusCode, why: &str| {
        error_page(
            Some(&v),
            status,
            "Nothing was proposed",
            &format!("{why} Go back to the request and try again."),
        )
    };
    let Ok(uses) = field("uses").trim().parse::<u32>() else {
        return refused(StatusCode::BAD_REQUEST, "Uses must be a whole number.");
    };
    let record = match shared.gate.get(id).await {
        Ok(Some(r)) if may_view(&r, &v.principal) => r,
        Ok(_) => return refused(StatusCode::NOT_FOUND, "There is no such request."),
        Err(e) => return super::fragments::unavailable(&v, &e.to_string()),
    };
    let body = ProposeBody {
        from_request: Some(id),
        resource: Some(field("resource").trim().to_owned()),
        duration: field("for").trim().to_owned(),
        uses,
        justification: field("justification"),
        ..ProposeBody::default()
    };
    let proposer = match super::oidc::acting_reviewer(shared, &v, id).await {
        Ok(p) => p,
        Err(page) => return page,
    };
    let proposed = match proposal(body, Some(&record)) {
        Ok(p) => shared
            .gate
            .propose_standing(p, proposer)
            .await
            .map_err(Problem::from),
        Err(problem) => Err(problem),
    };
    match proposed {
        Ok(new) => redirect(&format!("/console/requests/{new}")),
        Err(problem) => refused(problem.status_code(), &problem.detail),
    }
}
