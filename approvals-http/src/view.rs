//! The JSON shape of a request as the API, the webhooks and the CLI show it.

use approvals_core::{
    Digest, Initiator, Principal, RequestContext, RequestId, RequestRecord, RequestState,
    Resolution, ReviewRecord,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One approval request with its full context and digest (the `Request` schema of the
/// OpenAPI document).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestView {
    /// The request id.
    pub id: RequestId,
    /// Lifecycle state.
    pub state: RequestState,
    /// Action kind.
    pub kind: String,
    /// Target resource.
    pub resource: String,
    /// The exact parameters.
    pub params: Value,
    /// One-line summary from the requester.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Why the requester wants it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
    /// Who asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initiator: Option<Initiator>,
    /// Environment, ticket, commit, impact, risk, links, labels.
    pub context: RequestContext,
    /// The SHA-256 digest an approval is bound to.
    pub digest: Digest,
    /// Who may approve and how many must.
    pub requirement: RequirementView,
    /// Distinct approvals so far.
    pub approvals: u32,
    /// The policy rule that asked for approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_rule: Option<String>,
    /// The policy version.
    pub policy_version: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it expires if still pending.
    pub expires_at: DateTime<Utc>,
    /// Whether it escalated to further reviewers.
    pub escalated: bool,
    /// Accepted reviews, in order: who decided what, why, through which channel.
    pub reviews: Vec<ReviewRecord>,
    /// Who ended it (deny, cancel, expiry) and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
    /// Until when the grant may be used, once approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_expires_at: Option<DateTime<Utc>>,
}

/// Who may approve (the `Requirement` schema).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequirementView {
    /// Allowed reviewers by id.
    pub users: Vec<String>,
    /// Allowed reviewer groups.
    pub groups: Vec<String>,
    /// Distinct approvals needed.
    pub quorum: u32,
    /// Whether each review needs a reason.
    pub reason_required: bool,
    /// Further reviewers allowed after escalation, by id.
    pub escalation_users: Vec<String>,
    /// Further reviewer groups allowed after escalation.
    pub escalation_groups: Vec<String>,
}

impl RequestView {
    /// The view of a stored record.
    pub fn of(record: &RequestRecord) -> Self {
        let req = &record.request;
        let r = &record.requirement;
        RequestView {
            id: record.id,
            state: record.state,
            kind: req.kind.clone(),
            resource: req.resource.clone(),
            params: (*req.params).clone(),
            summary: req.summary.clone(),
            justification: req.justification.clone(),
            initiator: req.initiator.as_deref().cloned(),
            context: (*req.context).clone(),
            digest: record.digest,
            requirement: RequirementView {
                users: r.users.clone(),
                groups: r.groups.clone(),
                quorum: r.quorum,
                reason_required: r.reason_required,
                escalation_users: r
                    .escalation
                    .as_ref()
                    .map(|e| e.users.clone())
                    .unwrap_or_default(),
                escalation_groups: r
                    .escalation
                    .as_ref()
                    .map(|e| e.groups.clone())
                    .unwrap_or_default(),
            },
            approvals: record.approvers().len() as u32,
            policy_rule: record.policy_rule.clone(),
            policy_version: record.policy_version.to_string(),
            created_at: record.created_at,
            expires_at: record.expires_at,
            escalated: record.escalated,
            reviews: record.reviews.clone(),
            resolution: record.resolution.as_deref().cloned(),
            grant_expires_at: record.grant_expires_at,
        }
    }

    /// Who ended the request, as a label: the deciding reviewer(s), or whoever cancelled.
    pub fn decided_by(&self) -> Option<String> {
        match self.state {
            RequestState::Pending | RequestState::Expired | RequestState::Lapsed => None,
            RequestState::Denied | RequestState::Cancelled => self
                .resolution
                .as_ref()
                .and_then(|r| r.by.as_ref())
                .map(|p| p.label().to_owned()),
            _ => {
                let mut names: Vec<&Principal> = Vec::new();
                for r in &self.reviews {
                    if r.verdict == approvals_core::Verdict::Approve
                        && !names.iter().any(|p| p.same_identity(&r.reviewer))
                    {
                        names.push(&r.reviewer);
                    }
                }
                let names: Vec<&str> = names.iter().map(|p| p.label()).collect();
                (!names.is_empty()).then(|| names.join(", "))
            }
        }
    }
}

/// The response of `GET /v1/requests`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestList {
    /// Matching requests, newest first.
    pub requests: Vec<RequestView>,
}

/// The response of `GET /v1/me`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Me {
    /// The principal the token stands for.
    pub principal: Principal,
    /// Whether this principal may ever review (humans only).
    pub can_review: bool,
}
