//! Errors as RFC 9457 problem details (`application/problem+json`).

use approvals_core::{GuardError, ReviewError};
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde::{Deserialize, Serialize};

/// The media type of problem documents.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem document. `type` is `urn:approvals:problem:<code>`; `code` repeats
/// the last part so scripts can switch on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// `urn:approvals:problem:<code>`.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// Short, fixed summary of the problem type.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What happened in this case and what to do.
    pub detail: String,
    /// The machine-readable code (`unauthenticated`, `already_decided`, ...).
    pub code: String,
    /// The request state, for `already_decided`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Who decided, for `already_decided`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// The policy rule, for `policy_denied`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The policy's (or reviewer's) reason, for `policy_denied`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Problem {
    /// A problem with the given status, code, title and detail.
    pub fn new(status: StatusCode, code: &str, title: &str, detail: impl Into<String>) -> Problem {
        Problem {
            type_uri: format!("urn:approvals:problem:{code}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            code: code.to_owned(),
            state: None,
            decided_by: None,
            rule: None,
            reason: None,
        }
    }

    /// The same problem under another code (its `type` follows).
    pub fn with_code(mut self, code: &str) -> Problem {
        self.type_uri = format!("urn:approvals:problem:{code}");
        self.code = code.to_owned();
        self
    }

    /// 409: the request is not in a state that allows this.
    pub fn conflict(code: &str, detail: impl Into<String>) -> Problem {
        Self::new(StatusCode::CONFLICT, code, "Conflict", detail)
    }

    /// 400: the request is malformed.
    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Self::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "The request is malformed",
            detail,
        )
    }

    /// 401: no valid bearer token.
    pub fn unauthenticated(detail: impl Into<String>) -> Problem {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "Authentication required",
            detail,
        )
    }

    /// 403: authenticated, but not allowed.
    pub fn forbidden(code: &str, detail: impl Into<String>) -> Problem {
        Self::new(StatusCode::FORBIDDEN, code, "Not allowed", detail)
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Problem {
        Self::new(StatusCode::NOT_FOUND, "not_found", "Not found", detail)
    }

    /// 503: a component is down; nothing changed.
    pub fn unavailable(detail: impl Into<String>) -> Problem {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Temporarily unavailable",
            detail,
        )
    }

    /// The HTTP status.
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The problem as an HTTP response.
    pub fn into_response(self) -> Response<Bytes> {
        let status = self.status_code();
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = Response::new(Bytes::from(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match status {
            StatusCode::UNAUTHORIZED => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"approvals\""),
                );
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
        response
    }
}

impl From<ReviewError> for Problem {
    fn from(e: ReviewError) -> Problem {
        let detail = e.to_string();
        match e {
            ReviewError::NotFound(_) => Problem::not_found(detail),
            ReviewError::AlreadyDecided { state, by, .. } => {
                let mut p = Problem::new(
                    StatusCode::CONFLICT,
                    "already_decided",
                    "Already decided",
                    detail,
                );
                p.state = Some(state.to_string());
                p.decided_by = by;
                p
            }
            ReviewError::Expired { .. } => {
                let mut p = Problem::new(StatusCode::CONFLICT, "expired", "Expired", detail);
                p.state = Some("expired".into());
                p
            }
            ReviewError::SelfApproval { .. } => Problem::forbidden("self_approval", detail),
            ReviewError::NotHuman { .. } => Problem::forbidden("not_human", detail),
            ReviewError::NotAuthorized { .. } => Problem::forbidden("not_authorized", detail),
            ReviewError::ReasonRequired { .. } => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "reason_required",
                "A reason is required",
                detail,
            ),
            ReviewError::AlreadyReviewed { .. } => Problem::new(
                StatusCode::CONFLICT,
                "already_reviewed",
                "Already reviewed",
                detail,
            ),
            ReviewError::DigestMismatch { .. } => Problem::new(
                StatusCode::CONFLICT,
                "digest_mismatch",
                "The action changed",
                detail,
            ),
            ReviewError::DigestRequired { .. } => Problem::new(
                StatusCode::CONFLICT,
                "digest_required",
                "Say which version you reviewed",
                detail,
            ),
            ReviewError::EditRefused { .. } => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "edit_refused",
                "The edit is refused",
                detail,
            ),
            ReviewError::StepUpRequired { id, .. } => Problem::new(
                StatusCode::FORBIDDEN,
                "step_up_required",
                "A passkey is required",
                format!(
                    "{detail}: open {} in a browser and approve with your passkey",
                    id.console_path()
                ),
            ),
            ReviewError::StepUpRefused { .. } => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "step_up_refused",
                "The passkey confirmation is refused",
                detail,
            ),
            ReviewError::NotStanding(_) => Problem::new(
                StatusCode::CONFLICT,
                "not_standing",
                "Not a standing grant",
                detail,
            ),
            ReviewError::Unavailable { .. } => Problem::unavailable(detail),
            _ => Problem::unavailable(detail),
        }
    }
}

impl From<GuardError> for Problem {
    /// The agent API's answer for a refusal from the gate: what happened and what to do.
    fn from(e: GuardError) -> Problem {
        let detail = e.to_string();
        let with_state = |mut p: Problem, state: &str| {
            p.state = Some(state.to_owned());
            p
        };
        match e {
            GuardError::PolicyDenied { rule, reason, .. } => {
                let mut p = Problem::new(
                    StatusCode::FORBIDDEN,
                    "policy_denied",
                    "Refused by policy",
                    detail,
                );
                p.rule = Some(rule);
                p.reason = Some(reason);
                p
            }
            GuardError::Denied { by, reason, .. } => {
                let mut p = Problem::conflict("denied", detail);
                p.state = Some("denied".into());
                p.decided_by = Some(by);
                p.reason = reason;
                p
            }
            // A reviewer denied this same action in an earlier request; nobody was asked.
            GuardError::DeniedRecently { by, reason, .. } => {
                let mut p = Problem::conflict("denied_recently", detail);
                p.state = Some("denied".into());
                p.decided_by = Some(by);
                p.reason = reason;
                p
            }
            GuardError::Expired { .. } => {
                with_state(Problem::conflict("expired", detail), "expired")
            }
            GuardError::Cancelled { .. } | GuardError::DeliveryFailed { .. } => {
                with_state(Problem::conflict("cancelled", detail), "cancelled")
            }
            GuardError::DigestMismatch { .. } => Problem::conflict("digest_mismatch", detail),
            GuardError::Edited { .. } => Problem::conflict("edited", detail),
            GuardError::GrantUsed { state, .. } => {
                with_state(Problem::conflict("grant_used", detail), &state.to_string())
            }
            GuardError::GrantLapsed { .. } => {
                with_state(Problem::conflict("grant_lapsed", detail), "lapsed")
            }
            // The existing request's id is left out: it may be another caller's.
            GuardError::IdempotencyConflict { key, .. } => Problem::conflict(
                "idempotency_conflict",
                format!(
                    "idempotency key {:?} is already used for a different action; use a new key for a new action",
                    crate::html::truncate(&key, 80)
                ),
            ),
            GuardError::InitiatorMismatch { .. } | GuardError::NoInitiator => {
                Problem::forbidden("initiator_mismatch", detail)
            }
            GuardError::TooLarge { .. } => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "Request body too large",
                detail,
            ),
            GuardError::InvalidRequest(_) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                "The action is not valid",
                detail,
            ),
            _ => Problem::unavailable(detail),
        }
    }
}
