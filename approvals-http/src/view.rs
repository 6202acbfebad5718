//! The JSON shape of a request as the API, the webhooks and the CLI show it.

use approvals_core::plan::PlanStatus;
use approvals_core::standing::StandingStatus;
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
    /// The SHA-256 digest an approval is bound to: the edited action's once a reviewer edited
    /// it.
    pub digest: Digest,
    /// When a reviewer edited the action: the digest it had when it was asked for (each edit,
    /// with what changed, is in `reviews`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asked_digest: Option<Digest>,
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
    /// How many reminders its reviewers were sent (the rule's `remind_at` points passed).
    #[serde(default)]
    pub reminded: u32,
    /// Accepted reviews, in order: who decided what, why, through which channel.
    pub reviews: Vec<ReviewRecord>,
    /// Who ended it (deny, cancel, expiry) and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
    /// Until when the grant may be used, once approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_expires_at: Option<DateTime<Utc>>,
    /// For a standing grant: what it allows, how many uses it has left and until when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standing: Option<StandingStatus>,
    /// For a plan: its actions, each with its digest, and which of them ran under it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanStatus>,
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
    /// The parameters (JSON pointers) a reviewer may change before approving; empty when the
    /// action is approved or denied as asked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub editable: Vec<String>,
    /// What each approval must prove beyond the reviewer's sign-in (`passkey`: approve in the
    /// console); absent when the sign-in is enough.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_up: Option<approvals_core::StepUp>,
}

impl RequestView {
    /// The view of a stored record.
    pub fn of(record: &RequestRecord) -> Self {
        let req = &record.request;
        let r = &record.requirement;
        RequestView {
            id: record.id,
            state: record.state,
            kind: req.kind.to_string(),
            resource: req.resource.to_string(),
            params: (*req.params).clone(),
            summary: req.summary.as_deref().map(String::from),
            justification: req.justification.as_deref().map(String::from),
            initiator: req.initiator.as_deref().cloned(),
            context: (*req.context).clone(),
            digest: record.digest,
            asked_digest: record.last_edit().map(|_| record.asked_digest()),
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
                editable: r.editable.clone(),
                step_up: r.step_up,
            },
            approvals: record.approvers().len() as u32,
            policy_rule: record.policy_rule.as_deref().map(String::from),
            policy_version: record.policy_version.to_string(),
            created_at: record.created_at,
            expires_at: record.expires_at,
            escalated: record.escalated,
            reminded: record.reminded,
            reviews: record.reviews.to_vec(),
            resolution: record.resolution.as_deref().cloned(),
            grant_expires_at: record.grant_expires_at,
            standing: StandingStatus::of(record),
            plan: PlanStatus::of(record),
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
    /// When more requests match: pass it as `cursor` to get the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// The response of `GET /v1/me`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Me {
    /// The principal the token stands for.
    pub principal: Principal,
    /// Whether this principal may ever review (humans only).
    pub can_review: bool,
}

/// The body of `POST /v1/requests` (the `SubmitRequest` schema): the action an agent asks
/// to run. It names no initiator: the caller's token does. Unknown fields are refused, so a
/// field meant to name someone else (`initiator`, `on_behalf_of`, `agent`, ...) is refused,
/// never ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitBody {
    /// Dotted action kind, for example `data.export`.
    pub kind: String,
    /// Target resource, for example `db://prod/customers`.
    pub resource: String,
    /// The exact parameters (any JSON; default `{}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Value>,
    /// One-line summary for reviewers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Why the agent wants it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
    /// Environment, ticket, commit, prompt excerpt, impact, risk, links, labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<RequestContext>,
    /// Shorthand for `context.environment`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Retry key: the same key and the same action answer the same request; the same key
    /// with another action is refused. Also accepted as the `Idempotency-Key` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The agent's session or run id (recorded with the initiator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// A reference to the prompt or turn that led to the action (recorded with the initiator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_ref: Option<String>,
    /// The approved plan this action is one of (`POST /v1/plans`): when its digest is one of
    /// the plan's actions not yet run, it is approved at once; otherwise it is asked for like
    /// any action. Not part of the digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<RequestId>,
}

/// The body of `POST /v1/plans` (the `SubmitPlan` schema): the actions of a plan, each as
/// for `POST /v1/requests` (without `idempotency_key` or `plan`), and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanBody {
    /// The actions, in order (1 to 100).
    pub actions: Vec<SubmitBody>,
    /// Why the agent wants the plan run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
}

impl SubmitBody {
    /// The body for `action`: its kind, resource, parameters, summary, justification,
    /// context, idempotency key, and the session and prompt reference of its initiator. The
    /// initiator itself is left out: the server takes it from the token.
    pub fn of(action: &approvals_core::ActionRequest) -> Self {
        let initiator = action.initiator.as_deref();
        SubmitBody {
            kind: action.kind.to_string(),
            resource: action.resource.to_string(),
            params: Some((*action.params).clone()),
            summary: action.summary.as_deref().map(String::from),
            justification: action.justification.as_deref().map(String::from),
            context: (!action.context.is_empty()).then(|| (*action.context).clone()),
            environment: None,
            idempotency_key: action.idempotency_key.as_deref().map(String::from),
            session: initiator.and_then(|i| i.session.clone()),
            prompt_ref: initiator.and_then(|i| i.prompt_ref.clone()),
            plan: action.plan.as_deref().copied(),
        }
    }
}

/// What `POST /v1/requests` decided (the `Submitted` schema). A policy refusal is not an
/// answer of this kind but a `403` problem document with code `policy_denied`, `rule` and
/// `reason`, so a caller that only checks for success never runs a refused action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submitted {
    /// `allowed` (run it now with `grant_token`) or `pending` (wait for reviewers).
    pub status: SubmitStatus,
    /// The request id (also for an allowed action: its events carry it).
    pub id: RequestId,
    /// The digest of the action as admitted, which reviewers approve.
    pub digest: Digest,
    /// The request's state (`pending`, or a later state when an idempotency key re-attached
    /// to an older request); absent for an allowed action, which is not stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<RequestState>,
    /// The review console page of a pending request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review_url: Option<String>,
    /// When a pending request expires unless decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// The policy rule that decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_rule: Option<String>,
    /// For an allowed action: the signed grant token to present to
    /// `POST /v1/requests/{id}/executions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_token: Option<String>,
    /// Until when the grant may be used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_expires_at: Option<DateTime<Utc>>,
}

/// [`Submitted::status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubmitStatus {
    /// The policy allowed it: run it now.
    Allowed,
    /// Reviewers must decide: wait for it.
    Pending,
}

/// The answer of `GET /v1/requests/{id}/wait` (the `WaitResult` schema): the request's state
/// when it was decided or the wait ran out, with the signed grant token once approved and who
/// ended it and why otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaitResult {
    /// The request id.
    pub id: RequestId,
    /// `pending` when the wait ran out; `approved` with `grant_token`; otherwise how it ended.
    pub state: RequestState,
    /// The digest reviewers approved (or are asked to).
    pub digest: Digest,
    /// When the request expires unless decided.
    pub expires_at: DateTime<Utc>,
    /// The signed grant token (`apg1.…`), once approved; check it with
    /// `approvals-audit grant verify`, present it to `POST /v1/requests/{id}/executions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_token: Option<String>,
    /// Until when the grant may be used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_expires_at: Option<DateTime<Utc>>,
    /// Who approved, denied or cancelled it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// The reviewer's (or canceller's) reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The review console page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review_url: Option<String>,
    /// Reminders sent to the reviewers while nobody has reviewed the request (0 once anyone
    /// has, or when none was due): the sign that nobody has looked at it yet.
    #[serde(default)]
    pub unanswered_reminders: u32,
    /// When reviewers approved a changed version of the action: that version's parameters,
    /// the only ones the grant runs (kind and resource never change), and what changed. Run
    /// the action with these parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited: Option<EditedView>,
}

/// The edited action an agent runs (the `Edited` schema).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EditedView {
    /// The digest of the action as it was asked for.
    pub asked_digest: Digest,
    /// Every parameter of the approved action.
    pub params: Value,
    /// The parameters reviewers changed, with their values before and after.
    pub changes: Vec<approvals_core::edit::FieldChange>,
}

impl EditedView {
    /// The edit of `record`, when a reviewer edited it.
    pub fn of(record: &RequestRecord) -> Option<Self> {
        record.last_edit().map(|_| EditedView {
            asked_digest: record.asked_digest(),
            params: (*record.request.params).clone(),
            changes: record.edit_changes(),
        })
    }
}

/// The answer of `POST /v1/requests/{id}/executions` and `.../executions/outcome` (the
/// `Execution` schema).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionView {
    /// The request id.
    pub id: RequestId,
    /// `executing` once the grant is consumed; `executed` or `failed` once the outcome is in.
    pub state: RequestState,
    /// The failure's text, for `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
