//! Standing grants in the API: `GET /v1/standing-grants` (the ones in force, with what is
//! left of them), `POST /v1/standing-grants` (a human proposes one; the rule's reviewers
//! approve it like any request) and `POST /v1/standing-grants/{id}/revoke` (a reviewer ends
//! one). The rules are the gate's ([`approvals_core::standing`]).

use approvals_core::{
    Initiator, Principal, PrincipalKind, RequestId, RequestRecord, Review, StandingProposal,
};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};

use crate::api::API_CHANNEL;
use crate::problem::Problem;
use crate::requests::{check_reason, may_view};
use crate::shared::{Shared, authenticate, json_object, json_response, only, parse_id};
use crate::view::RequestView;

/// `POST /v1/standing-grants` (the `StandingProposal` schema). Either `from_request` (the
/// kind and initiator are that request's, the resource pattern defaults to its resource) or
/// `kind`, `resource` and `initiator`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProposeBody {
    /// A request whose kind and initiator the standing grant takes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_request: Option<RequestId>,
    /// The action kind (exactly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The resources, as a glob (`*` any run, `?` one character).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// The agent or service it is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initiator: Option<Initiator>,
    /// How long it lasts once approved (`"30m"`, `"8h"`), within the rule's
    /// `standing_grant_max`.
    #[serde(rename = "for")]
    pub duration: String,
    /// How many actions it may approve, within the rule's `standing_grant_max_uses`.
    pub uses: u32,
    /// Why, for the reviewers.
    pub justification: String,
    /// The environment the covered actions run in, when the deciding rule names one
    /// (defaults to `from_request`'s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
}

/// `GET /v1/standing-grants`: the standing grants in force.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StandingList {
    /// Newest first.
    pub standing_grants: Vec<RequestView>,
}

pub(crate) async fn route(
    shared: &Shared,
    request: &Request<Bytes>,
    segments: &[&str],
) -> Option<Result<Response<Bytes>, Problem>> {
    let answer = match segments {
        ["standing-grants"] => match only(request, &[Method::GET, Method::HEAD, Method::POST]) {
            Err(r) => Ok(r),
            Ok(()) if request.method() == Method::POST => propose(shared, request).await,
            Ok(()) => list(shared, request).await,
        },
        ["standing-grants", id, "revoke"] => match only(request, &[Method::POST]) {
            Ok(()) => revoke(shared, request, id).await,
            Err(r) => Ok(r),
        },
        _ => return None,
    };
    Some(answer)
}

async fn list(shared: &Shared, request: &Request<Bytes>) -> Result<Response<Bytes>, Problem> {
    let principal = authenticate(shared, request)?;
    let grants = shared.gate.standing_grants().await.map_err(Problem::from)?;
    let standing_grants = grants
        .iter()
        .filter(|g| may_view(g, &principal))
        .map(RequestView::of)
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &StandingList { standing_grants },
    ))
}

async fn propose(shared: &Shared, request: &Request<Bytes>) -> Result<Response<Bytes>, Problem> {
    let principal = authenticate(shared, request)?;
    if principal.kind != PrincipalKind::Human {
        return Err(Problem::forbidden(
            "not_allowed",
            "only a human proposes a standing grant; an agent or service never creates one, for itself or another",
        ));
    }
    let body: ProposeBody =
        serde_json::from_value(serde_json::Value::Object(json_object(request)?)).map_err(|e| {
            Problem::bad_request(format!(
                "the body is not a valid standing grant proposal: {}",
                crate::html::truncate(&e.to_string(), 300)
            ))
        })?;
    let from = match body.from_request {
        Some(id) => Some(
            shared
                .gate
                .get(id)
                .await
                .map_err(|e| Problem::unavailable(e.to_string()))?
                .filter(|r| may_view(r, &principal))
                .ok_or_else(|| Problem::not_found(format!("no approval request {id}")))?,
        ),
        None => None,
    };
    let proposal = proposal(body, from.as_ref())?;
    let id = shared
        .gate
        .propose_standing(proposal, principal)
        .await
        .map_err(Problem::from)?;
    let record = crate::shared::load(&shared.gate, id).await?;
    Ok(json_response(
        StatusCode::CREATED,
        &RequestView::of(&record),
    ))
}

/// The proposal a body describes, taking the kind and initiator of `from` when given.
pub(crate) fn proposal(
    body: ProposeBody,
    from: Option<&RequestRecord>,
) -> Result<StandingProposal, Problem> {
    let duration = approvals_core::policy::parse_duration(&body.duration)
        .map_err(|e| Problem::bad_request(format!("for: {e}")))?;
    let environment = body
        .environment
        .or_else(|| from.and_then(|r| r.request.context.environment.clone()));
    let (kind, resource, initiator) = match from {
        Some(record) => {
            if body.kind.is_some() || body.initiator.is_some() {
                return Err(Problem::bad_request(
                    "with from_request, the kind and initiator are that request's; leave kind and initiator out",
                ));
            }
            let initiator = record
                .request
                .initiator
                .as_deref()
                .cloned()
                .ok_or_else(|| {
                    Problem::bad_request("that request has no initiator to grant anything to")
                })?;
            let resource = body
                .resource
                .unwrap_or_else(|| record.request.resource.to_string());
            (record.request.kind.to_string(), resource, initiator)
        }
        None => match (body.kind, body.resource, body.initiator) {
            (Some(kind), Some(resource), Some(initiator)) => (kind, resource, initiator),
            _ => {
                return Err(Problem::bad_request(
                    "give from_request, or kind, resource and initiator",
                ));
            }
        },
    };
    Ok(StandingProposal {
        kind,
        resource,
        initiator,
        duration,
        uses: body.uses,
        justification: body.justification,
        environment,
    })
}

async fn revoke(
    shared: &Shared,
    request: &Request<Bytes>,
    raw_id: &str,
) -> Result<Response<Bytes>, Problem> {
    let principal: Principal = authenticate(shared, request)?;
    let id: RequestId = parse_id(raw_id)?;
    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct RevokeBody {
        reason: Option<String>,
    }
    let body: RevokeBody = crate::api::parse_body(request)?;
    let mut review = Review::deny(principal).via(API_CHANNEL);
    if let Some(reason) = check_reason(body.reason)? {
        review = review.reason(reason);
    }
    shared
        .gate
        .revoke_standing(id, review)
        .await
        .map_err(Problem::from)?;
    let record = crate::shared::load(&shared.gate, id).await?;
    Ok(json_response(StatusCode::OK, &RequestView::of(&record)))
}
