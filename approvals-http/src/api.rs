//! The JSON REST API under `/v1`: list, show, approve, deny, cancel; the agent's calls
//! (submit, wait, executions) are in [`agent`](crate::agent).
//!
//! Authentication is `Authorization: Bearer <token>` only (never the console's cookie, so a
//! cross-site page cannot drive the API). Humans may list and view every request and review
//! any; agents and services may list and view only requests they initiated, may cancel
//! them, and can never review.

use approvals_core::{
    Digest, ListFilter, Principal, PrincipalKind, RejectCause, RequestId, RequestRecord, Review,
    Verdict,
};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use serde::Deserialize;

use crate::problem::Problem;
pub use crate::requests::MAX_LIST_LIMIT;
use crate::requests::{ListQuery, check_reason, may_view};
use crate::shared::{Shared, authenticate, json_object, json_response, only, parse_id};
use crate::view::{Me, RequestList, RequestView};

/// Channel name recorded for decisions made through the API.
pub const API_CHANNEL: &str = "http";

pub(crate) async fn handle(
    shared: &Shared,
    request: &Request<Bytes>,
    segments: &[&str],
) -> Response<Bytes> {
    match route(shared, request, segments).await {
        Ok(response) => response,
        Err(problem) => problem.into_response(),
    }
}

async fn route(
    shared: &Shared,
    request: &Request<Bytes>,
    segments: &[&str],
) -> Result<Response<Bytes>, Problem> {
    if let Some(answer) = crate::agent::route(shared, request, segments).await {
        return answer;
    }
    if let Some(answer) = crate::standing::route(shared, request, segments).await {
        return answer;
    }
    match segments {
        ["me"] => {
            if let Err(r) = only(request, &[Method::GET, Method::HEAD]) {
                return Ok(r);
            }
            let principal = authenticate(shared, request)?;
            Ok(json_response(
                StatusCode::OK,
                &Me {
                    can_review: principal.kind == PrincipalKind::Human,
                    principal,
                },
            ))
        }
        ["requests"] => {
            if let Err(r) = only(request, &[Method::GET, Method::HEAD, Method::POST]) {
                return Ok(r);
            }
            let principal = authenticate(shared, request)?;
            list(shared, request, &principal).await
        }
        ["requests", id] => {
            if let Err(r) = only(request, &[Method::GET, Method::HEAD]) {
                return Ok(r);
            }
            let principal = authenticate(shared, request)?;
            let id = parse_id(id)?;
            let record = visible_record(shared, id, &principal).await?;
            Ok(json_response(StatusCode::OK, &RequestView::of(&record)))
        }
        ["requests", id, action @ ("approve" | "deny" | "cancel")] => {
            if let Err(r) = only(request, &[Method::POST]) {
                return Ok(r);
            }
            let id = parse_id(id)?;
            let principal = match authenticate(shared, request) {
                Ok(p) => p,
                Err(problem) => {
                    // Evidence of a forged or stale-token decision attempt on a real request.
                    let _ = shared
                        .gate
                        .record_rejected_callback(
                            id,
                            None,
                            API_CHANNEL,
                            RejectCause::Forged,
                            &format!("{action} refused: {}", problem.detail),
                        )
                        .await;
                    return Err(problem);
                }
            };
            let body: ActionBody = parse_body(request)?;
            let reason = check_reason(body.reason)?;
            if body.params.is_some() && *action != "approve" {
                return Err(Problem::bad_request(
                    "params (the edited parameters) go only with approve",
                ));
            }
            if *action == "cancel" {
                if body.digest.is_some() {
                    return Err(Problem::bad_request(
                        "cancel takes only a reason; digest applies to approve and deny",
                    ));
                }
                return cancel(shared, id, principal, reason).await;
            }
            let digest = body
                .digest
                .as_deref()
                .map(|d| {
                    Digest::parse(d).map_err(|_| {
                        Problem::bad_request(
                            "digest must look like sha256:<64 hex digits>, as shown by GET /v1/requests/{id}",
                        )
                    })
                })
                .transpose()?;
            let verdict = if *action == "approve" {
                Verdict::Approve
            } else {
                Verdict::Deny
            };
            let review = Review::new(principal, verdict);
            let review = match body.params {
                Some(params) => review.edit(params),
                None => review,
            };
            decide(shared, id, review, reason, digest, API_CHANNEL).await?;
            let record = crate::shared::load(&shared.gate, id).await?;
            Ok(json_response(StatusCode::OK, &RequestView::of(&record)))
        }
        _ => Err(Problem::not_found(
            "no such API resource; see /openapi.json for the routes",
        )),
    }
}

/// Applies `review` (a verdict, and for an approval perhaps edited parameters) through the
/// gate with its reason and the digest the reviewer saw. The gate applies (and audits) every
/// rule, agents and services included.
pub(crate) async fn decide(
    shared: &Shared,
    id: RequestId,
    review: Review,
    reason: Option<String>,
    digest: Option<Digest>,
    channel: &str,
) -> Result<approvals_core::ReviewOutcome, Problem> {
    let mut review = review.via(channel);
    if let Some(reason) = reason {
        review = review.reason(reason);
    }
    if let Some(digest) = digest {
        review = review.for_digest(digest);
    }
    shared.gate.decide(id, review).await.map_err(Problem::from)
}

/// Cancels a request for the initiator, the human it acts for, or an administrator.
pub(crate) async fn cancel(
    shared: &Shared,
    id: RequestId,
    principal: Principal,
    reason: Option<String>,
) -> Result<Response<Bytes>, Problem> {
    let record = visible_record(shared, id, &principal).await?;
    if !may_cancel(shared, &record, &principal) {
        return Err(Problem::forbidden(
            "not_allowed",
            format!(
                "{} may not cancel request {id}: only its initiator, the human it acts for, or a member of an admin group can",
                principal.id
            ),
        ));
    }
    shared
        .gate
        .cancel(id, Some(principal), reason)
        .await
        .map_err(Problem::from)?;
    let record = crate::shared::load(&shared.gate, id).await?;
    Ok(json_response(StatusCode::OK, &RequestView::of(&record)))
}

pub(crate) fn may_cancel(shared: &Shared, record: &RequestRecord, principal: &Principal) -> bool {
    let admin = principal.kind == PrincipalKind::Human
        && shared.admin_groups.iter().any(|g| principal.in_group(g));
    own_request(record, principal) || admin
}

/// Whether `principal` initiated `record`, or it was initiated on their behalf. This grants
/// (cancelling, seeing), so ids are compared canonically
/// ([`identity::same_canonical`](approvals_core::identity::same_canonical)): any spelling of
/// the initiator, never a look-alike of it such as `bi11ing-agent` for `billing-agent`.
fn own_request(record: &RequestRecord, principal: &Principal) -> bool {
    let same = |p: &Principal| approvals_core::identity::same_canonical(&p.id, &principal.id);
    record
        .request
        .initiator
        .as_ref()
        .is_some_and(|i| same(&i.principal) || i.on_behalf_of.as_ref().is_some_and(same))
}

async fn visible_record(
    shared: &Shared,
    id: RequestId,
    principal: &Principal,
) -> Result<RequestRecord, Problem> {
    let not_found = || Problem::not_found(format!("no approval request {id}"));
    let record = shared
        .gate
        .get(id)
        .await
        .map_err(|e| Problem::unavailable(e.to_string()))?
        .ok_or_else(not_found)?;
    // Not 403: an agent must not learn which other requests exist.
    if may_view(&record, principal) {
        Ok(record)
    } else {
        Err(not_found())
    }
}

async fn list(
    shared: &Shared,
    request: &Request<Bytes>,
    principal: &Principal,
) -> Result<Response<Bytes>, Problem> {
    let query = ListQuery::parse(request.uri().query().unwrap_or(""))?;
    let filter = ListFilter {
        states: query.states.clone(),
        kind: query.kind.clone(),
        environment: query.environment.clone(),
        initiator: query.initiator.clone(),
        ..Default::default()
    };
    let (records, next) = crate::requests::page(&shared.gate, filter, &query, principal)
        .await
        .map_err(|e| Problem::unavailable(e.to_string()))?;
    let requests = records.iter().map(RequestView::of).collect();
    let next_cursor = next.map(|c| c.to_string());
    Ok(json_response(
        StatusCode::OK,
        &RequestList {
            requests,
            next_cursor,
        },
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    digest: Option<String>,
    /// For an approval of a changed action: every parameter, as edited.
    #[serde(default)]
    params: Option<serde_json::Value>,
}

pub(crate) fn parse_body<T: serde::de::DeserializeOwned + Default>(
    request: &Request<Bytes>,
) -> Result<T, Problem> {
    if request.body().iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let fields = json_object(request)?;
    // Every field is text, except an approval's edited parameters.
    if let Some((name, _)) = fields
        .iter()
        .find(|(name, v)| !(v.is_string() || (*name == "params" && v.is_object())))
    {
        return Err(Problem::bad_request(format!(
            "{:?} must be a string; leave it out instead of sending null",
            crate::html::truncate(name, 40)
        )));
    }
    serde_json::from_value(serde_json::Value::Object(fields)).map_err(|e| {
        Problem::bad_request(format!(
            "the body is not valid for this call: {}",
            crate::html::truncate(&e.to_string(), 300)
        ))
    })
}

#[cfg(test)]
mod tests {
    use approvals_core::{Initiator, Principal};
    use approvals_testkit::fixtures::{epoch, export_request, pending_record};

    use super::*;

    fn record() -> RequestRecord {
        let initiator =
            Initiator::agent("billing-agent").on_behalf_of(Principal::human("dana@example.com"));
        pending_record(export_request().initiator(initiator), epoch())
    }

    #[test]
    fn own_requests_are_the_initiators_and_its_humans_by_canonical_id() {
        let record = record();
        for own in ["billing-agent", "Dana@Example.com", "ｄａｎａ@example.com."] {
            assert!(own_request(&record, &Principal::human(own)), "{own:?}");
        }
        for other in [
            "d\u{0430}na@example.com",
            "bi11ing-agent",
            "sam@example.com",
        ] {
            assert!(!own_request(&record, &Principal::human(other)), "{other:?}");
        }
    }
}
