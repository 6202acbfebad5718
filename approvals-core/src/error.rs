//! Typed errors for callers (`GuardError`) and reviewers (`ReviewError`).

use std::fmt;

use crate::audit::RejectCause;
use crate::request::{ActionRequest, Digest, PrincipalKind};
use crate::store::{RequestId, RequestState};

/// The part of the system that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Component {
    /// The policy.
    Policy,
    /// The request store.
    Store,
    /// The audit sink.
    Audit,
    /// A review channel.
    Approver,
    /// The credential broker.
    CredentialBroker,
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Component::Policy => "policy",
            Component::Store => "approval store",
            Component::Audit => "audit sink",
            Component::Approver => "review channel",
            Component::CredentialBroker => "credential broker",
        })
    }
}

/// Why `guard()` did not return a grant, or a grant could not be used. The action must not
/// run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GuardError {
    /// A policy rule refuses this action outright.
    #[error("{kind} on {resource} is denied by policy rule {rule:?}: {reason}")]
    PolicyDenied {
        /// Action kind.
        kind: String,
        /// Action resource.
        resource: String,
        /// The rule.
        rule: String,
        /// The rule's reason.
        reason: String,
    },
    /// A reviewer denied the request.
    #[error("request {id} was denied by {by}{}", reason_suffix(.reason))]
    Denied {
        /// The request.
        id: RequestId,
        /// Who denied it.
        by: String,
        /// Their reason.
        reason: Option<String>,
    },
    /// A reviewer denied this same action recently, and the rule refuses asking again for a
    /// while (`cooldown_after_denial`). Nobody was asked; `id` is the earlier request.
    #[error(
        "this action was denied by {by} in request {id}{}; it is not asked again before {until}",
        reason_suffix(.reason)
    )]
    DeniedRecently {
        /// The earlier, denied request.
        id: RequestId,
        /// Who denied it.
        by: String,
        /// Their reason.
        reason: Option<String>,
        /// Until when the same action is refused.
        until: chrono::DateTime<chrono::Utc>,
    },
    /// Nobody approved in time.
    #[error(
        "request {id} expired with {approvals} of {quorum} approvals; ask reviewers sooner, or raise the policy timeout"
    )]
    Expired {
        /// The request.
        id: RequestId,
        /// Approvals received.
        approvals: u32,
        /// Approvals needed.
        quorum: u32,
    },
    /// The request was withdrawn.
    #[error("request {id} was cancelled{}{}", by.as_ref().map(|b| format!(" by {b}")).unwrap_or_default(), reason_suffix(.reason))]
    Cancelled {
        /// The request.
        id: RequestId,
        /// Who cancelled it.
        by: Option<String>,
        /// Why.
        reason: Option<String>,
    },
    /// No review channel could deliver the request, so nobody could approve it.
    #[error(
        "request {id} could not be delivered to any reviewer ({errors}); it was cancelled. Check the channel configuration and try again"
    )]
    DeliveryFailed {
        /// The request (now cancelled).
        id: RequestId,
        /// Each channel's error.
        errors: String,
    },
    /// The grant was approved for a different action than the one presented.
    #[error(
        "the grant for request {id} was approved for {approved}, but the action presented has digest {presented}; a changed action needs a new approval"
    )]
    DigestMismatch {
        /// The request the grant came from.
        id: RequestId,
        /// The approved digest.
        approved: Digest,
        /// The digest of the action presented.
        presented: Digest,
    },
    /// Reviewers approved a changed version of the action ([`edit`](crate::edit)), and the
    /// action presented is the one asked for. Run the edited action instead:
    /// [`Grant::edited_action`](crate::Grant::edited_action), or
    /// [`Gate::run_approved`](crate::Gate::run_approved), which runs whichever was approved.
    #[error(
        "reviewers approved request {id} with changes (digest {approved}); the action as asked for no longer runs: run the edited action (Grant::edited_action, or run_approved)"
    )]
    Edited {
        /// The request.
        id: RequestId,
        /// The edited action's digest, the one approved.
        approved: Digest,
        /// The edited action.
        action: Box<ActionRequest>,
    },
    /// The grant was already used.
    #[error(
        "the grant for request {id} was already used ({state}); request approval again to run the action again"
    )]
    GrantUsed {
        /// The request.
        id: RequestId,
        /// Its state.
        state: RequestState,
    },
    /// The grant was not used before it expired.
    #[error("the grant for request {id} lapsed before it was used; request approval again")]
    GrantLapsed {
        /// The request.
        id: RequestId,
    },
    /// The idempotency key belongs to a request for a different action.
    #[error(
        "idempotency key {key:?} is already used by request {existing} for a different action; use a new key for a new action"
    )]
    IdempotencyConflict {
        /// The key.
        key: String,
        /// The request that has it.
        existing: RequestId,
    },
    /// The request itself is unusable.
    #[error("invalid action request: {0}")]
    InvalidRequest(String),
    /// The action named an initiator other than the authenticated one: another agent or
    /// service, a missing or changed `on_behalf_of` human, or another model. The initiator
    /// comes from the gate (in process) or the caller's credential (over HTTP); an action may
    /// only add a session or prompt reference. Audited as `request_refused`.
    #[error(
        "the action claims to come from {claimed}, but this gate acts for {authenticated}; an action cannot choose its initiator (it may add only a session or prompt reference)"
    )]
    InitiatorMismatch {
        /// The authenticated initiator.
        authenticated: String,
        /// What the action claimed.
        claimed: String,
    },
    /// Nobody is authenticated to submit actions through this gate.
    #[error(
        "this gate has no initiator: set the agent's identity with Gate::builder().initiator(..), or submit through a door that authenticates the caller (Gate::submit_as)"
    )]
    NoInitiator,
    /// The action is larger than reviewers can be shown. Audited as `request_refused` with
    /// its size and digest, not its body.
    #[error(
        "the action is {size} bytes; reviewers are shown at most {limit}. Pass a reference to large data (a URL, an object key, a digest) instead"
    )]
    TooLarge {
        /// Its canonical size in bytes.
        size: usize,
        /// The limit (`MAX_REQUEST_BYTES`).
        limit: usize,
    },
    /// A component failed; the action was refused (fail closed). May succeed later.
    #[error("{component} unavailable, so the action was refused: {message}")]
    Unavailable {
        /// What failed.
        component: Component,
        /// Its error.
        message: String,
    },
    /// The free function `guard()` was called before `set_default_gate`.
    #[error(
        "no default gate is set: call approvals_core::set_default_gate(gate) at startup, or use gate.guard(..)"
    )]
    NoDefaultGate,
}

fn reason_suffix(reason: &Option<String>) -> String {
    reason
        .as_ref()
        .map(|r| format!(": {r}"))
        .unwrap_or_default()
}

impl GuardError {
    /// Whether trying again later may succeed (a component was unavailable).
    pub fn is_retryable(&self) -> bool {
        matches!(self, GuardError::Unavailable { .. })
    }

    /// The request this error is about, when there is one.
    pub fn request_id(&self) -> Option<RequestId> {
        match self {
            GuardError::Denied { id, .. }
            | GuardError::DeniedRecently { id, .. }
            | GuardError::Expired { id, .. }
            | GuardError::Cancelled { id, .. }
            | GuardError::DeliveryFailed { id, .. }
            | GuardError::DigestMismatch { id, .. }
            | GuardError::Edited { id, .. }
            | GuardError::GrantUsed { id, .. }
            | GuardError::GrantLapsed { id } => Some(*id),
            GuardError::IdempotencyConflict { existing, .. } => Some(*existing),
            _ => None,
        }
    }

    pub(crate) fn unavailable(component: Component, message: impl fmt::Display) -> Self {
        GuardError::Unavailable {
            component,
            message: message.to_string(),
        }
    }
}

/// Why a review was refused. Nothing changed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ReviewError {
    /// No such request.
    #[error("no approval request {0}")]
    NotFound(RequestId),
    /// Someone already decided.
    #[error("request {id} is already {state}{}", by.as_ref().map(|b| format!(" by {b}")).unwrap_or_default())]
    AlreadyDecided {
        /// The request.
        id: RequestId,
        /// Its state.
        state: RequestState,
        /// Who decided, when a person did.
        by: Option<String>,
    },
    /// The request expired before this review.
    #[error("request {id} expired before this review arrived")]
    Expired {
        /// The request.
        id: RequestId,
    },
    /// The reviewer asked for this action, or it was asked on their behalf.
    #[error("{reviewer} cannot review request {id}: it was requested by them or on their behalf")]
    SelfApproval {
        /// The request.
        id: RequestId,
        /// The reviewer's id.
        reviewer: String,
    },
    /// Agents and services cannot review.
    #[error("{reviewer} is not a human (it is registered as {kind}); only humans can review")]
    NotHuman {
        /// The reviewer's id.
        reviewer: String,
        /// Its kind.
        kind: PrincipalKind,
    },
    /// The reviewer is not among the allowed users or groups.
    #[error(
        "{reviewer} is not allowed to review request {id}; the policy names other users or groups"
    )]
    NotAuthorized {
        /// The request.
        id: RequestId,
        /// The reviewer's id.
        reviewer: String,
    },
    /// The policy requires a reason.
    #[error("a reason is required to review request {id}")]
    ReasonRequired {
        /// The request.
        id: RequestId,
    },
    /// This reviewer already approved; one person counts once.
    #[error("{reviewer} already approved request {id}; one person counts once toward the quorum")]
    AlreadyReviewed {
        /// The request.
        id: RequestId,
        /// The reviewer's id.
        reviewer: String,
    },
    /// The reviewer's id or one of its groups cannot be compared safely (invisible,
    /// bidi-control or mixed-script characters, spaces, symbols; see
    /// [`identity`](crate::identity)). Checked before every other rule except the digest, so
    /// a spelling trick never reaches the self-approval or quorum checks.
    #[error(
        "the review of request {id} was refused: {error}. Fix the reviewer's identity where it is mapped (the identity resolver or token file)"
    )]
    InvalidIdentity {
        /// The request.
        id: RequestId,
        /// Why the identity is refused; it names the character and shows the id safely.
        error: crate::identity::InvalidIdentity,
    },
    /// The reviewer saw a different action than the one stored.
    #[error("the review is for action digest {presented}, but request {id} has {stored}")]
    DigestMismatch {
        /// The request.
        id: RequestId,
        /// The stored digest.
        stored: Digest,
        /// The digest in the review.
        presented: Digest,
    },
    /// A standing grant was to be revoked, but the request is not one.
    #[error("request {0} is not a standing grant; to end it, deny it")]
    NotStanding(RequestId),
    /// An edit on approve was refused ([`edit`](crate::edit)): nothing was decided.
    #[error("the edit of request {id} is refused: {why}")]
    EditRefused {
        /// The request.
        id: RequestId,
        /// Why, and what to do instead.
        why: String,
    },
    /// The action was edited since it was sent, and this approval does not say which version
    /// the reviewer saw. Approvals of an edited action must name its digest.
    #[error(
        "request {id} was edited after it was sent; approve it naming the edited action's digest {current}, after looking at it"
    )]
    DigestRequired {
        /// The request.
        id: RequestId,
        /// The edited action's digest.
        current: Digest,
    },
    /// The rule requires a step-up proof of each approval ([`step_up`](crate::step_up)) and
    /// this approval carries none: approve in the console, where the proof is made.
    #[error(
        "request {id} needs a {method} step-up for each approval; approve it in the review console"
    )]
    StepUpRequired {
        /// The request.
        id: RequestId,
        /// What the rule requires.
        method: crate::step_up::StepUp,
    },
    /// The approval's step-up proof is refused; nothing was decided.
    #[error("the step-up proof for request {id} is refused: {why}")]
    StepUpRefused {
        /// The request.
        id: RequestId,
        /// Why.
        why: String,
    },
    /// A component failed; nothing was decided. May succeed later.
    #[error("{component} unavailable, nothing was decided: {message}")]
    Unavailable {
        /// What failed.
        component: Component,
        /// Its error.
        message: String,
    },
}

impl ReviewError {
    /// The audit cause for this refusal.
    pub fn cause(&self) -> Option<RejectCause> {
        Some(match self {
            ReviewError::AlreadyDecided { .. } => RejectCause::AlreadyDecided,
            ReviewError::Expired { .. } => RejectCause::Expired,
            ReviewError::SelfApproval { .. } => RejectCause::SelfApproval,
            ReviewError::NotHuman { .. } => RejectCause::NotHuman,
            ReviewError::NotAuthorized { .. } => RejectCause::NotAuthorized,
            ReviewError::ReasonRequired { .. } => RejectCause::ReasonRequired,
            ReviewError::AlreadyReviewed { .. } => RejectCause::DuplicateReview,
            ReviewError::DigestMismatch { .. } | ReviewError::DigestRequired { .. } => {
                RejectCause::DigestMismatch
            }
            ReviewError::EditRefused { .. } => RejectCause::EditRefused,
            ReviewError::StepUpRequired { .. } => RejectCause::StepUpRequired,
            ReviewError::StepUpRefused { .. } => RejectCause::StepUpInvalid,
            ReviewError::InvalidIdentity { .. } => RejectCause::InvalidIdentity,
            ReviewError::NotFound(_)
            | ReviewError::NotStanding(_)
            | ReviewError::Unavailable { .. } => return None,
        })
    }

    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ReviewError::Unavailable { .. })
    }

    /// One short sentence for the person whose click, form or reply was refused, the same in
    /// every channel (each channel escapes it for its own format). Names come from the record
    /// and are cut to a bounded length; the full cause is in the `Display` text and the audit
    /// trail.
    pub fn reviewer_message(&self) -> String {
        let bounded = |s: &str| crate::text::truncate(s, 120).into_owned();
        match self {
            ReviewError::NotFound(id) => format!("Request {id} does not exist (any more)."),
            ReviewError::NotStanding(id) => format!("Request {id} is not a standing grant."),
            ReviewError::AlreadyDecided {
                id,
                state,
                by: Some(by),
            } => format!("Request {id} was already {state} by {}.", bounded(by)),
            ReviewError::AlreadyDecided { id, state, by: None } => {
                format!("Request {id} is already {state}.")
            }
            ReviewError::Expired { id } => {
                format!("Request {id} expired before your decision arrived.")
            }
            ReviewError::SelfApproval { .. } => {
                "You cannot review your own request (it was made by you or on your behalf)."
                    .to_owned()
            }
            ReviewError::NotHuman { kind, .. } => {
                format!("Only people can review requests; your account is registered as {kind}.")
            }
            ReviewError::NotAuthorized { .. } => {
                "You are not one of the reviewers this request needs.".to_owned()
            }
            ReviewError::ReasonRequired { .. } => {
                "A reason is required for this request; give one and decide again.".to_owned()
            }
            ReviewError::AlreadyReviewed { .. } => {
                "You already approved this request; one person counts once.".to_owned()
            }
            ReviewError::InvalidIdentity { .. } => {
                "Your account's identity cannot be compared safely; ask an administrator to fix its mapping.".to_owned()
            }
            ReviewError::DigestMismatch { .. } | ReviewError::DigestRequired { .. } => {
                "The action changed since it was shown to you; look at it again before deciding."
                    .to_owned()
            }
            ReviewError::EditRefused { why, .. } => {
                format!("Your edit was refused: {}.", bounded(why).trim_end_matches('.'))
            }
            ReviewError::StepUpRequired { .. } => {
                "This request needs a passkey confirmation for each approval: approve it in the review console.".to_owned()
            }
            ReviewError::StepUpRefused { why, .. } => {
                format!("Your passkey confirmation was refused: {}.", bounded(why).trim_end_matches('.'))
            }
            ReviewError::Unavailable { .. } => {
                "The approval service is unavailable and nothing was decided; try again in a moment."
                    .to_owned()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Digest;

    /// Every variant has one short sentence that names no internal detail.
    #[test]
    fn reviewer_message_covers_every_variant() {
        let id = RequestId::new();
        let reviewer = "sam@example.com".to_owned();
        let invalid = crate::request::Principal::human("s\u{200B}am")
            .validate()
            .expect_err("a zero-width space is refused");
        let cases = [
            (ReviewError::NotFound(id), format!("Request {id} does not exist (any more).")),
            (
                ReviewError::AlreadyDecided {
                    id,
                    state: RequestState::Approved,
                    by: Some("Sam".into()),
                },
                format!("Request {id} was already approved by Sam."),
            ),
            (
                ReviewError::AlreadyDecided {
                    id,
                    state: RequestState::Expired,
                    by: None,
                },
                format!("Request {id} is already expired."),
            ),
            (
                ReviewError::Expired { id },
                format!("Request {id} expired before your decision arrived."),
            ),
            (
                ReviewError::SelfApproval {
                    id,
                    reviewer: reviewer.clone(),
                },
                "You cannot review your own request (it was made by you or on your behalf).".into(),
            ),
            (
                ReviewError::NotHuman {
                    reviewer: reviewer.clone(),
                    kind: PrincipalKind::Agent,
                },
                "Only people can review requests; your account is registered as agent.".into(),
            ),
            (
                ReviewError::NotAuthorized {
                    id,
                    reviewer: reviewer.clone(),
                },
                "You are not one of the reviewers this request needs.".into(),
            ),
            (
                ReviewError::ReasonRequired { id },
                "A reason is required for this request; give one and decide again.".into(),
            ),
            (
                ReviewError::AlreadyReviewed {
                    id,
                    reviewer: reviewer.clone(),
                },
                "You already approved this request; one person counts once.".into(),
            ),
            (
                ReviewError::InvalidIdentity { id, error: invalid },
                "Your account's identity cannot be compared safely; ask an administrator to fix its mapping.".into(),
            ),
            (
                ReviewError::DigestMismatch {
                    id,
                    stored: Digest([1; 32]),
                    presented: Digest([2; 32]),
                },
                "The action changed since it was shown to you; look at it again before deciding."
                    .into(),
            ),
            (
                ReviewError::DigestRequired {
                    id,
                    current: Digest([1; 32]),
                },
                "The action changed since it was shown to you; look at it again before deciding."
                    .into(),
            ),
            (
                ReviewError::EditRefused {
                    id,
                    why: "/table may not be changed; reviewers may change only /rows".into(),
                },
                "Your edit was refused: /table may not be changed; reviewers may change only /rows."
                    .into(),
            ),
            (
                ReviewError::Unavailable {
                    component: Component::Store,
                    message: "connection refused to 10.0.0.7".into(),
                },
                "The approval service is unavailable and nothing was decided; try again in a moment."
                    .into(),
            ),
        ];
        for (error, expected) in cases {
            let message = error.reviewer_message();
            assert_eq!(message, expected, "{error:?}");
            assert!(message.ends_with('.') && !message.contains('\n'));
            assert!(
                !message.contains(&reviewer),
                "names no reviewer id: {message}"
            );
        }
        // A long name is cut.
        let long = ReviewError::AlreadyDecided {
            id,
            state: RequestState::Denied,
            by: Some("x".repeat(1000)),
        };
        assert!(long.reviewer_message().chars().count() < 250);
    }
}
