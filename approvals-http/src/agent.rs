//! The agent API under `/v1`: submit an action (`POST /v1/requests`), wait for its decision
//! (`GET /v1/requests/{id}/wait`), consume the grant (`POST /v1/requests/{id}/executions`)
//! and report the outcome (`POST /v1/requests/{id}/executions/outcome`); submit a plan of
//! actions for one review (`POST /v1/plans`), wait for it the same way, then submit each
//! action naming the plan.
//!
//! Only agent and service tokens are accepted. The initiator is the token's principal with the
//! `on_behalf_of` human and model configured for it ([`Tokens::initiator`](crate::Tokens)),
//! never a field of the body: a body naming anyone is refused. Every rule is the gate's
//! ([`Gate::submit_as`], [`Gate::wait`], [`Gate::start_execution`], [`Gate::finish_execution`]);
//! this module authenticates, parses, signs grant tokens and shapes answers.

use std::time::Duration;

use approvals_audit::grant::{GrantTokenError, GrantTokenVerifier, MAX_TOKEN_BYTES, sign_grant};
use approvals_core::plan::PLAN_KIND;
use approvals_core::{
    ActionRequest, Grant, GuardError, Initiator, PrincipalKind, RejectCause, RequestId,
    RequestRecord, RequestState, Submission,
};
use bytes::Bytes;
use chrono::Utc;
use http::{Method, Request, Response, StatusCode, header};
use serde_json::Value;

use crate::problem::Problem;
use crate::shared::{MAX_REASON_CHARS, Shared, json_response, load, only};
use crate::view::{ExecutionView, SubmitBody, SubmitStatus, Submitted, WaitResult};

/// Wait used by `GET /v1/requests/{id}/wait` without `timeout`, in seconds.
pub const DEFAULT_WAIT_SECS: u64 = 30;
/// Longest wait accepted by `GET /v1/requests/{id}/wait`, in seconds.
pub const MAX_WAIT_SECS: u64 = 60;
/// Longest failure text accepted by `.../executions/outcome`, in characters.
pub const MAX_OUTCOME_CHARS: usize = MAX_REASON_CHARS;
pub use crate::allowed::{MAX_ALLOWED_GRANTS, MAX_ALLOWED_RUN};

/// Top-level body fields that name who asks. They are refused with a message saying where the
/// initiator comes from (any other unknown field is refused too, with the list of fields).
const IDENTITY_WORDS: &[&str] = &[
    "initiator",
    "agent",
    "behalf",
    "principal",
    "model",
    "actor",
    "requester",
    "requestedby",
    "caller",
    "identity",
    "impersonat",
    "runas",
    "user",
    "human",
    "service",
    "owner",
];

const BODY_FIELDS: &[&str] = &[
    "kind",
    "resource",
    "params",
    "summary",
    "justification",
    "context",
    "environment",
    "idempotency_key",
    "session",
    "prompt_ref",
    "plan",
];

/// The fields of `POST /v1/plans`.
const PLAN_FIELDS: &[&str] = &["actions", "justification"];

const CONTEXT_FIELDS: &[&str] = &[
    "environment",
    "ticket",
    "commit",
    "prompt_excerpt",
    "impact",
    "risk",
    "links",
    "labels",
    "preview",
];

pub(crate) async fn route(
    shared: &Shared,
    request: &Request<Bytes>,
    segments: &[&str],
) -> Option<Result<Response<Bytes>, Problem>> {
    let answer = match segments {
        ["requests"] if request.method() == Method::POST => submit(shared, request).await,
        ["plans"] => match only(request, &[Method::POST]) {
            Ok(()) => submit_plan(shared, request).await,
            Err(r) => Ok(r),
        },
        ["requests", id, "wait"] => match only(request, &[Method::GET]) {
            Ok(()) => wait(shared, request, id).await,
            Err(r) => Ok(r),
        },
        ["requests", id, "executions"] => match only(request, &[Method::POST]) {
            Ok(()) => start(shared, request, id).await,
            Err(r) => Ok(r),
        },
        ["requests", id, "executions", "outcome"] => match only(request, &[Method::POST]) {
            Ok(()) => finish(shared, request, id).await,
            Err(r) => Ok(r),
        },
        ["grant-key"] => match only(request, &[Method::GET, Method::HEAD]) {
            Ok(()) => {
                let mut r = Response::new(Bytes::from(format!("{}\n", shared.signer.verifier())));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                Ok(r)
            }
            Err(r) => Ok(r),
        },
        _ => return None,
    };
    Some(answer)
}

/// The initiator of an agent or service token; a human's token, or none, is refused.
fn authenticate_agent(shared: &Shared, request: &Request<Bytes>) -> Result<Initiator, Problem> {
    let principal = crate::shared::authenticate(shared, request)?;
    if principal.kind == PrincipalKind::Human {
        return Err(Problem::forbidden(
            "agents_only",
            format!(
                "{} is a human: people review requests, agents and services submit and run them. Use an agent's or service's token",
                principal.id
            ),
        ));
    }
    let token = bearer(request).unwrap_or_default();
    shared
        .tokens
        .initiator(token)
        .ok_or_else(|| Problem::unauthenticated("the token is not valid (unknown or revoked)"))
}

fn bearer(request: &Request<Bytes>) -> Option<&str> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

// ------------------------------------------------------------------------------------------
// Submitting.

async fn submit(shared: &Shared, request: &Request<Bytes>) -> Result<Response<Bytes>, Problem> {
    let caller = authenticate_agent(shared, request)?;
    let body = crate::shared::json_object(request)?;
    let body = parse_submit(body)?;
    let header_key = match request.headers().get("idempotency-key") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| Problem::bad_request("the Idempotency-Key header must be ASCII"))?
                .trim()
                .to_owned(),
        ),
    };
    let key = match (header_key, body.idempotency_key.clone()) {
        (Some(h), Some(b)) if h != b => {
            return Err(Problem::bad_request(
                "the Idempotency-Key header and the idempotency_key field differ; send one, or both the same",
            ));
        }
        (Some(h), _) => Some(h),
        (None, b) => b,
    }
    .filter(|k| !k.is_empty());
    let action = to_action(body, key, &caller);
    let submission = shared
        .gate
        .submit_as(&caller, &action)
        .await
        .map_err(Problem::from)?;
    match submission {
        Submission::Allowed(grant) => allowed(shared, grant, action, caller),
        Submission::Pending(id) => stored(shared, request, id).await,
    }
}

/// The `202` answer for stored request `id` (pending, or approved at once by a standing grant
/// or a plan), with its review link and `Location`.
async fn stored(
    shared: &Shared,
    request: &Request<Bytes>,
    id: RequestId,
) -> Result<Response<Bytes>, Problem> {
    let record = load(&shared.gate, id).await?;
    let answer = Submitted {
        status: SubmitStatus::Pending,
        id,
        digest: record.digest,
        state: Some(record.state),
        review_url: shared.review_url(request, id),
        expires_at: Some(record.expires_at),
        policy_rule: record.policy_rule.as_deref().map(String::from),
        grant_token: None,
        grant_expires_at: None,
    };
    let mut response = json_response(StatusCode::ACCEPTED, &answer);
    if let Ok(location) = http::HeaderValue::from_str(&format!("/v1/requests/{id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// `POST /v1/plans`: the caller's plan of actions, stored as one request for review
/// ([`Gate::submit_plan_as`](approvals_core::Gate::submit_plan_as)). Each action is checked
/// as `POST /v1/requests` checks one (no field may name an initiator); an action may not
/// carry an idempotency key or name a plan itself.
async fn submit_plan(
    shared: &Shared,
    request: &Request<Bytes>,
) -> Result<Response<Bytes>, Problem> {
    let caller = authenticate_agent(shared, request)?;
    let mut body = crate::shared::json_object(request)?;
    refuse_unknown(&body, PLAN_FIELDS, "")?;
    let justification = match body.remove("justification") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err(Problem::bad_request("justification must be a string")),
    };
    let Some(Value::Array(items)) = body.remove("actions") else {
        return Err(Problem::bad_request(
            "actions must be an array of actions, each as for POST /v1/requests",
        ));
    };
    let mut actions = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let at = |p: Problem| {
            Problem::bad_request(format!("actions[{i}]: {}", p.detail)).with_code(&p.code)
        };
        let Value::Object(item) = item else {
            return Err(Problem::bad_request(format!(
                "actions[{i}] must be a JSON object"
            )));
        };
        let item = parse_submit(item).map_err(at)?;
        if item.idempotency_key.is_some() || item.plan.is_some() {
            return Err(Problem::bad_request(format!(
                "actions[{i}]: an action in a plan carries no idempotency_key or plan; the plan is one request"
            )));
        }
        actions.push(to_action(item, None, &caller));
    }
    let id = shared
        .gate
        .submit_plan_as(&caller, &actions, justification)
        .await
        .map_err(Problem::from)?;
    stored(shared, request, id).await
}

/// The body, with every field that could name an initiator refused (also inside `context`).
fn parse_submit(body: serde_json::Map<String, Value>) -> Result<SubmitBody, Problem> {
    refuse_unknown(&body, BODY_FIELDS, "")?;
    if let Some(context) = body.get("context") {
        let Some(context) = context.as_object() else {
            return Err(Problem::bad_request("context must be a JSON object"));
        };
        refuse_unknown(context, CONTEXT_FIELDS, "context.")?;
        if let Some(labels) = context.get("labels").and_then(Value::as_object) {
            // Labels are shown to reviewers next to the initiator; none may pose as one.
            if let Some(name) = labels.keys().find(|k| names_identity(k)) {
                return Err(initiator_in_body(&format!("context.labels.{name}")));
            }
        }
    }
    serde_path_to_error::deserialize(Value::Object(body)).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." {
            String::new()
        } else {
            format!("{path}: ")
        };
        Problem::bad_request(format!(
            "the body is not a valid action: {}{}",
            crate::html::truncate(&at, 100),
            crate::html::truncate(&e.into_inner().to_string(), 300)
        ))
    })
}

fn refuse_unknown(
    fields: &serde_json::Map<String, Value>,
    known: &[&str],
    prefix: &str,
) -> Result<(), Problem> {
    for name in fields.keys() {
        if known.contains(&name.as_str()) {
            continue;
        }
        if names_identity(name) {
            return Err(initiator_in_body(&format!("{prefix}{name}")));
        }
        return Err(Problem::bad_request(format!(
            "unknown field {:?}; the fields are {}",
            crate::html::truncate(&format!("{prefix}{name}"), 60),
            known.join(", ")
        )));
    }
    Ok(())
}

/// Whether a field name reads as naming who asks, under any case, width or separator.
fn names_identity(name: &str) -> bool {
    let folded: String = approvals_core::identity::canonical_key(name)
        .chars()
        .filter(|c| c.is_alphanumeric())
        .collect();
    IDENTITY_WORDS.iter().any(|w| folded.contains(w))
}

fn initiator_in_body(field: &str) -> Problem {
    Problem::bad_request(format!(
        "the body names who asks ({}); the initiator is the agent or service your token stands for, with the human and model configured for that token, and cannot be set in a request. Remove the field",
        crate::html::truncate(field, 60)
    ))
    .with_code("initiator_in_body")
}

fn to_action(body: SubmitBody, key: Option<String>, caller: &Initiator) -> ActionRequest {
    let mut action = ActionRequest::new(body.kind, body.resource);
    if let Some(params) = body.params {
        action = action.params(params);
    }
    if let Some(summary) = body.summary {
        action = action.summary(summary);
    }
    if let Some(why) = body.justification {
        action = action.justification(why);
    }
    if let Some(context) = body.context {
        action = action.context(context);
    }
    if let Some(env) = body.environment {
        action = action.environment(env);
    }
    if let Some(key) = key {
        action = action.idempotency_key(key);
    }
    if let Some(plan) = body.plan {
        action = action.in_plan(plan);
    }
    if body.session.is_some() || body.prompt_ref.is_some() {
        // The caller's own initiator, adding only these references (the gate binds it again).
        let mut claim = caller.clone();
        claim.session = body.session;
        claim.prompt_ref = body.prompt_ref;
        action = action.initiator(claim);
    }
    action
}

fn allowed(
    shared: &Shared,
    grant: Grant,
    action: ActionRequest,
    caller: Initiator,
) -> Result<Response<Bytes>, Problem> {
    let token = sign(shared, &grant)?;
    let answer = Submitted {
        status: SubmitStatus::Allowed,
        id: grant.request_id(),
        digest: grant.digest(),
        state: None,
        review_url: None,
        expires_at: None,
        policy_rule: grant.policy_rule().map(str::to_owned),
        grant_token: Some(token),
        grant_expires_at: Some(grant.expires_at()),
    };
    shared.allowed.insert(grant, action, caller, Utc::now())?;
    Ok(json_response(StatusCode::OK, &answer))
}

fn sign(shared: &Shared, grant: &Grant) -> Result<String, Problem> {
    sign_grant(grant, &shared.signer, &shared.issuer, "")
        .map_err(|e| Problem::unavailable(format!("the grant token could not be signed: {e}")))
}

/// The stored request `id` if `caller` initiated it; `404` otherwise (an agent must not learn
/// which other requests exist).
async fn own_record(
    shared: &Shared,
    id: RequestId,
    caller: &Initiator,
) -> Result<Option<RequestRecord>, Problem> {
    let Some(record) = shared
        .gate
        .get(id)
        .await
        .map_err(|e| Problem::unavailable(e.to_string()))?
    else {
        return Ok(None);
    };
    if approvals_core::lifecycle::check_executor(&record, caller).is_ok() {
        Ok(Some(record))
    } else {
        Err(Problem::not_found(format!("no approval request {id}")))
    }
}

// ------------------------------------------------------------------------------------------
// Waiting.

async fn wait(
    shared: &Shared,
    request: &Request<Bytes>,
    id: &str,
) -> Result<Response<Bytes>, Problem> {
    let caller = authenticate_agent(shared, request)?;
    let id = crate::shared::parse_id(id)?;
    let timeout = parse_timeout(request.uri().query().unwrap_or(""))?;
    let record = own_record(shared, id, &caller)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no approval request {id}")))?;
    // A decided request answers at once; a pending one parks on the gate's notification (no
    // thread, no polling of its own) until it is decided or the wait runs out.
    let bound = if record.state == RequestState::Pending {
        timeout
    } else {
        timeout.max(Duration::from_secs(5))
    };
    // A plan is waited for as a plan: its approval issues no grant of its own.
    let plan = record.request.kind == PLAN_KIND;
    let waited = if bound.is_zero() {
        None
    } else if plan {
        let waited = tokio::time::timeout(bound, shared.gate.wait_plan(id)).await;
        waited.ok().map(|r| r.map(|()| None))
    } else {
        let waited = tokio::time::timeout(bound, shared.gate.wait(id)).await;
        waited.ok().map(|r| r.map(Some))
    };
    let grant = match waited {
        Some(Ok(grant)) => grant,
        Some(Err(GuardError::Unavailable { component, message })) => {
            return Err(Problem::unavailable(format!(
                "{component} unavailable: {message}"
            )));
        }
        // Not a request that is waited for (a standing grant approves other actions).
        Some(Err(e @ GuardError::InvalidRequest(_))) => return Err(Problem::from(e)),
        // Refused (denied, expired, cancelled, used, lapsed) or still pending: the record says.
        Some(Err(_)) | None => None,
    };
    let record = load(&shared.gate, id).await?;
    let view = crate::view::RequestView::of(&record);
    let mut answer = WaitResult {
        id,
        state: record.state,
        digest: record.digest,
        expires_at: record.expires_at,
        grant_token: None,
        grant_expires_at: record.grant_expires_at,
        decided_by: view.decided_by(),
        reason: record.resolution.as_ref().and_then(|r| r.reason.clone()),
        review_url: shared.review_url(request, id),
        unanswered_reminders: approvals_core::lifecycle::unanswered_reminders(&record),
        edited: crate::view::EditedView::of(&record),
    };
    if let Some(grant) = grant
        && record.state == RequestState::Approved
    {
        answer.grant_token = Some(sign(shared, &grant)?);
        answer.grant_expires_at = Some(grant.expires_at());
    }
    Ok(json_response(StatusCode::OK, &answer))
}

fn parse_timeout(query: &str) -> Result<Duration, Problem> {
    let mut timeout = None;
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if key != "timeout" {
            return Err(Problem::bad_request(format!(
                "unknown query parameter {:?}; wait takes only timeout (seconds, 0 to {MAX_WAIT_SECS})",
                crate::html::truncate(&key, 40)
            )));
        }
        if timeout.is_some() {
            return Err(Problem::bad_request("timeout is given twice"));
        }
        let digits = value.strip_suffix('s').unwrap_or(&value);
        let secs = digits
            .parse::<u64>()
            .ok()
            .filter(|s| digits.bytes().all(|b| b.is_ascii_digit()) && *s <= MAX_WAIT_SECS)
            .ok_or_else(|| {
                Problem::bad_request(format!(
                    "timeout must be a whole number of seconds from 0 to {MAX_WAIT_SECS} (for example timeout=30), not {:?}",
                    crate::html::truncate(&value, 40)
                ))
            })?;
        timeout = Some(Duration::from_secs(secs));
    }
    Ok(timeout.unwrap_or(Duration::from_secs(DEFAULT_WAIT_SECS)))
}

// ------------------------------------------------------------------------------------------
// Running.

async fn start(
    shared: &Shared,
    request: &Request<Bytes>,
    id: &str,
) -> Result<Response<Bytes>, Problem> {
    let caller = authenticate_agent(shared, request)?;
    let id = crate::shared::parse_id(id)?;
    let body = crate::shared::json_object(request)?;
    refuse_unknown(&body, &["grant_token"], "")?;
    let token = body
        .get("grant_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty() && t.len() <= MAX_TOKEN_BYTES)
        .ok_or_else(|| {
            Problem::bad_request(format!(
                "send {{\"grant_token\": \"apg1....\"}}: the token from the wait (or an allowed submission), at most {MAX_TOKEN_BYTES} bytes"
            ))
        })?;
    let record = match own_record(shared, id, &caller).await {
        Ok(record) => record,
        Err(not_found) => {
            // Someone else's request: evidence of a grant presented by the wrong caller.
            let detail = format!(
                "presented by {} {:?}, who is not the request's initiator",
                caller.principal.kind,
                crate::html::truncate(&caller.principal.id, 128)
            );
            shared
                .gate
                .record_rejected_grant(id, RejectCause::Forged, &detail)
                .await;
            return Err(not_found);
        }
    };
    let verifier = GrantTokenVerifier::new(&[shared.signer.verifier()]).issuer(&shared.issuer);
    let claims = match verifier.open(token) {
        Ok(claims) => claims,
        Err(e) => {
            return Err(refuse_grant(shared, id, RejectCause::Forged, &e).await);
        }
    };
    if claims.request_id != id {
        let cause = match &record {
            Some(r) if r.digest != claims.digest => RejectCause::DigestMismatch,
            _ => RejectCause::Forged,
        };
        let detail = format!(
            "a grant token for request {} was presented",
            claims.request_id
        );
        shared.gate.record_rejected_grant(id, cause, &detail).await;
        return Err(Problem::forbidden(
            "grant_mismatch",
            format!(
                "that grant token is for another request, not {id}; present this request's own token"
            ),
        ));
    }
    if let Err(e) = verifier.verify(token, &claims.digest, Utc::now()) {
        return Err(refuse_grant(shared, id, RejectCause::Lapsed, &e).await);
    }
    let view = match record {
        Some(_) => {
            let started = shared
                .gate
                .start_execution(id, claims.digest, &caller)
                .await
                .map_err(Problem::from)?;
            ExecutionView {
                id,
                state: started.state,
                error: None,
            }
        }
        None => shared.allowed.start(&shared.gate, id, &caller).await?,
    };
    Ok(json_response(StatusCode::CREATED, &view))
}

async fn refuse_grant(
    shared: &Shared,
    id: RequestId,
    cause: RejectCause,
    error: &GrantTokenError,
) -> Problem {
    shared
        .gate
        .record_rejected_grant(id, cause, &error.to_string())
        .await;
    match error {
        GrantTokenError::Expired { .. } => {
            Problem::conflict("grant_lapsed", format!("{error}; request approval again"))
        }
        _ => Problem::forbidden(
            "grant_invalid",
            format!("the grant token is refused: {error}"),
        ),
    }
}

async fn finish(
    shared: &Shared,
    request: &Request<Bytes>,
    id: &str,
) -> Result<Response<Bytes>, Problem> {
    let caller = authenticate_agent(shared, request)?;
    let id = crate::shared::parse_id(id)?;
    let body = crate::shared::json_object(request)?;
    refuse_unknown(&body, &["ok", "error"], "")?;
    let ok = body.get("ok").and_then(Value::as_bool).ok_or_else(|| {
        Problem::bad_request(
            "send {\"ok\": true}, or {\"ok\": false, \"error\": \"what went wrong\"}",
        )
    })?;
    let error = match body.get("error") {
        None | Some(Value::Null) => None,
        Some(Value::String(e)) if e.chars().count() > MAX_OUTCOME_CHARS => {
            return Err(Problem::bad_request(format!(
                "error is longer than {MAX_OUTCOME_CHARS} characters; send a short summary"
            )));
        }
        Some(Value::String(e)) => Some(e.clone()),
        Some(_) => return Err(Problem::bad_request("error must be a string")),
    };
    let error = match (ok, error) {
        (true, Some(_)) => {
            return Err(Problem::bad_request("error goes only with \"ok\": false"));
        }
        (true, None) => None,
        (false, e) => Some(
            e.filter(|e| !e.trim().is_empty())
                .unwrap_or_else(|| "failed".into()),
        ),
    };
    let view = match own_record(shared, id, &caller).await? {
        Some(_) => {
            let finished = shared
                .gate
                .finish_execution(id, &caller, error)
                .await
                .map_err(|e| match e {
                    GuardError::InvalidRequest(detail) => {
                        Problem::conflict("not_executing", detail)
                    }
                    other => Problem::from(other),
                })?;
            ExecutionView {
                id,
                state: finished.state,
                error: finished.execution.as_ref().and_then(|e| e.error.clone()),
            }
        }
        None => shared.allowed.finish(id, &caller, error).await?,
    };
    Ok(json_response(StatusCode::OK, &view))
}
