//! Running an approved action: consuming its grant once, and recording how it ended.

use chrono::{DateTime, Utc};

use super::{NotApplicable, Step, refusal};
use crate::audit::EventDetail;
use crate::error::{Component, GuardError};
use crate::request::{Digest, Initiator};
use crate::store::{Execution, RequestRecord, RequestState};

/// What [`consume`] found instead of a usable grant.
#[derive(Debug)]
pub enum Unusable {
    /// The grant's time is over: lapse the request, then refuse.
    Lapsed,
    /// Refuse with this error; when an event is given, audit it first.
    Refused(Box<GuardError>, Option<Box<EventDetail>>),
}

/// Approved → Executing: the grant for `digest` is consumed, exactly once. Refused for another
/// digest, a grant already used, a decision not yet audited, a denied, cancelled or lapsed
/// request, or a grant whose time is over.
pub fn consume(
    record: &RequestRecord,
    digest: Digest,
    now: DateTime<Utc>,
) -> Result<Step, Unusable> {
    if let Some(refused) = super::not_runnable(record) {
        return Err(Unusable::Refused(Box::new(refused), None));
    }
    if record.digest != digest {
        return Err(Unusable::Refused(
            Box::new(GuardError::DigestMismatch {
                id: record.id,
                approved: record.digest,
                presented: digest,
            }),
            None,
        ));
    }
    match record.state {
        RequestState::Approved if record.unaudited_decisions().approval => {
            return Err(Unusable::Refused(
                Box::new(GuardError::unavailable(
                    Component::Audit,
                    "the approval is not yet recorded in the audit trail",
                )),
                None,
            ));
        }
        RequestState::Approved => {}
        RequestState::Pending
        | RequestState::Denied
        | RequestState::Cancelled
        | RequestState::Expired
        | RequestState::Lapsed => return Err(Unusable::Refused(Box::new(refusal(record)), None)),
        state @ (RequestState::Executing | RequestState::Executed | RequestState::Failed) => {
            let event = EventDetail::GrantRejected {
                cause: crate::audit::RejectCause::AlreadyUsed,
                detail: format!("request is {state}"),
            };
            return Err(Unusable::Refused(
                Box::new(GuardError::GrantUsed {
                    id: record.id,
                    state,
                }),
                Some(Box::new(event)),
            ));
        }
    }
    if record.grant_expires_at.is_none_or(|t| now >= t) {
        return Err(Unusable::Lapsed);
    }
    let mut next = record.clone();
    next.state = RequestState::Executing;
    next.execution = Some(Box::new(Execution {
        started_at: now,
        finished_at: None,
        error: None,
        credential: None,
    }));
    Ok(Step::new(next, Vec::new()))
}

/// Executing → Executed (no error) or Failed. The `executed` event is recorded by the caller
/// before this, as soon as the action returns.
pub fn finish(
    record: &RequestRecord,
    error: Option<String>,
    now: DateTime<Utc>,
) -> Result<Step, NotApplicable> {
    if record.state != RequestState::Executing {
        return Err(NotApplicable::WrongState(record.state));
    }
    let mut next = record.clone();
    next.state = if error.is_some() {
        RequestState::Failed
    } else {
        RequestState::Executed
    };
    let started_at = record.execution.as_ref().map_or(now, |e| e.started_at);
    let credential = record.execution.as_ref().and_then(|e| e.credential.clone());
    next.execution = Some(Box::new(Execution {
        started_at,
        finished_at: Some(now),
        error,
        credential,
    }));
    Ok(Step::new(next, Vec::new()))
}

/// Whether `caller` may run (consume the grant of, and report the outcome of) `record`: only
/// its initiator, the agent or service that asked, of the same kind and the same canonical id
/// ([`identity::same_canonical`](crate::identity::same_canonical): any spelling of it, never a
/// look-alike). The human it acts for does not run actions; another agent never does. A
/// refusal carries the `grant_rejected` event to audit.
pub fn check_executor(record: &RequestRecord, caller: &Initiator) -> Result<(), Unusable> {
    let ok = record
        .request
        .initiator
        .as_ref()
        .is_some_and(|i| i.principal.is(&caller.principal));
    if ok {
        return Ok(());
    }
    let presented_by = format!(
        "{} {:?}",
        caller.principal.kind,
        crate::text::truncate(&caller.principal.id, 128)
    );
    let event = EventDetail::GrantRejected {
        cause: crate::audit::RejectCause::Forged,
        detail: format!("presented by {presented_by}, who is not the request's initiator"),
    };
    Err(Unusable::Refused(
        Box::new(GuardError::InitiatorMismatch {
            authenticated: presented_by,
            claimed: record.request.initiator.as_ref().map_or_else(
                || "no initiator".to_owned(),
                |i| format!("{} {:?}", i.principal.kind, i.principal.id),
            ),
        }),
        Some(Box::new(event)),
    ))
}
