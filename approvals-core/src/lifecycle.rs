//! The lifecycle rulebook: for each operation on a request, a pure function from the record,
//! the input and the time to the next record and the audit events to write, or a typed
//! refusal. No I/O, no async, no clock of its own.
//!
//! The gate executes what these functions return (load, rule, compare-and-set, audit, wake);
//! stores refuse what [`may_replace`] refuses; channels ask [`check_review`] before they open a
//! dialog. A rule is written here once and nowhere else.
//!
//! ```text
//!              review (quorum)            consume           finish
//!   Pending ───────────────────▶ Approved ───────▶ Executing ───────▶ Executed | Failed
//!     │  review (deny)               │ review (deny: deny wins)
//!     ├─────────────────▶ Denied ◀───┘
//!     ├── expire ───────▶ Expired     Approved ── lapse ──▶ Lapsed
//!     └── cancel ───────▶ Cancelled   (escalate: Pending stays Pending, more reviewers)
//! ```

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};

use crate::audit::EventDetail;
use crate::error::{Component, GuardError, ReviewError};
use crate::policy::Requirement;
use crate::request::{ActionRequest, Digest, Principal, PrincipalKind};
use crate::store::{
    Execution, RequestId, RequestRecord, RequestState, Resolution, ReviewRecord, Unaudited, Verdict,
};

/// A reviewer's verdict on one request, as submitted by a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Review {
    /// Who, as resolved by the channel's identity resolver at decision time.
    pub reviewer: Principal,
    /// Approve or deny.
    pub verdict: Verdict,
    /// Why.
    pub reason: Option<String>,
    /// The channel name.
    pub channel: String,
    /// The digest the reviewer was shown; when set, it must match the stored request.
    pub digest: Option<Digest>,
}

impl Review {
    /// A review by `reviewer` through the `api` channel (set another with [`via`](Review::via)).
    pub fn new(reviewer: Principal, verdict: Verdict) -> Self {
        Review {
            reviewer,
            verdict,
            reason: None,
            channel: "api".into(),
            digest: None,
        }
    }

    /// An approval by `reviewer`.
    pub fn approve(reviewer: Principal) -> Self {
        Self::new(reviewer, Verdict::Approve)
    }

    /// A denial by `reviewer`.
    pub fn deny(reviewer: Principal) -> Self {
        Self::new(reviewer, Verdict::Deny)
    }

    /// Sets the reason.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// Sets the channel name.
    pub fn via(mut self, channel: impl Into<String>) -> Self {
        self.channel = channel.into();
        self
    }

    /// Binds the review to the digest the reviewer saw.
    pub fn for_digest(mut self, digest: Digest) -> Self {
        self.digest = Some(digest);
        self
    }
}

/// The state of a request after an accepted review.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReviewOutcome {
    /// `Pending` (more approvals needed), `Approved` or `Denied`.
    pub state: RequestState,
    /// Distinct approvals so far.
    pub approvals: u32,
    /// Approvals needed.
    pub quorum: u32,
}

/// A transition: the record to store (its `version` still the one it replaces; the store
/// increments it) and the audit events that record it, in order.
#[derive(Debug, Clone)]
pub struct Step {
    /// The record after the transition.
    pub next: RequestRecord,
    /// What to audit, in order.
    pub events: Vec<EventDetail>,
}

impl Step {
    fn new(next: RequestRecord, events: Vec<EventDetail>) -> Self {
        Step { next, events }
    }
}

/// Why a maintenance transition (expire, escalate, lapse, cancel, finish) does not apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NotApplicable {
    /// The request is not in a state this transition starts from.
    #[error("the request is {0}")]
    WrongState(RequestState),
    /// Its time has not come.
    #[error("the transition is not due yet")]
    NotDue,
    /// The requirement has no escalation.
    #[error("the requirement has no escalation")]
    NoEscalation,
}

/// What is due for a record now: the one transition to make, or the time to look again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// A pending request's deadline passed.
    Expire,
    /// A pending request's escalation time passed.
    Escalate,
    /// An approved grant was not used in time.
    Lapse,
    /// A decision's audit events were not recorded by its reviewer within the recovery delay.
    Recover,
    /// Nothing now; look again by this time (`None`: nothing will fall due by itself).
    Nothing(Option<DateTime<Utc>>),
}

/// What is due for `record` at `now`. `recovery_after` is how long a decision may stay
/// unaudited before someone other than its reviewer records it.
pub fn due(record: &RequestRecord, now: DateTime<Utc>, recovery_after: TimeDelta) -> Due {
    let recover_at = recover_at(record, recovery_after);
    if record.audit_pending && now >= recover_at {
        return Due::Recover;
    }
    match record.state {
        RequestState::Pending => {
            if now >= record.expires_at {
                return Due::Expire;
            }
            let escalate_at = escalates_at(record);
            if escalate_at.is_some_and(|at| now >= at) {
                return Due::Escalate;
            }
            Due::Nothing(Some(
                escalate_at.map_or(record.expires_at, |at| at.min(record.expires_at)),
            ))
        }
        // An approval is recorded before anything else happens to it, lapsing included.
        RequestState::Approved if record.unaudited_decisions().approval => {
            Due::Nothing(Some(recover_at))
        }
        RequestState::Approved => match record.grant_expires_at {
            Some(at) if now < at => Due::Nothing(Some(at)),
            _ => Due::Lapse,
        },
        _ if record.audit_pending => Due::Nothing(Some(recover_at)),
        _ => Due::Nothing(None),
    }
}

/// When a decision still flagged unaudited is recorded by someone other than its reviewer:
/// `recovery_after` past the last review.
pub fn recover_at(record: &RequestRecord, recovery_after: TimeDelta) -> DateTime<Utc> {
    let decided_at = record.reviews.last().map_or(record.created_at, |r| r.at);
    decided_at + recovery_after
}

fn escalates_at(record: &RequestRecord) -> Option<DateTime<Utc>> {
    record
        .escalate_at
        .filter(|_| !record.escalated && record.requirement.escalation.is_some())
}

/// The submit outcome for an action the policy sends to review: the pending record, open
/// until `requirement.timeout` from `now`, escalating after the escalation's delay. No events:
/// `requested` and `policy_decided` are recorded before. Refused (fail closed) for a
/// requirement that no one could ever meet.
pub fn open(
    id: RequestId,
    request: ActionRequest,
    digest: Digest,
    rule: Option<String>,
    requirement: Arc<Requirement>,
    policy_version: Arc<str>,
    now: DateTime<Utc>,
) -> Result<RequestRecord, GuardError> {
    if requirement.quorum == 0 {
        return Err(GuardError::unavailable(
            Component::Policy,
            "the policy asked for approval with quorum 0; fix the policy (quorum must be at least 1)",
        ));
    }
    let after = |d: std::time::Duration| now + TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX);
    Ok(RequestRecord {
        id,
        version: 1,
        request,
        digest,
        expires_at: after(requirement.timeout),
        escalate_at: requirement.escalation.as_ref().map(|e| after(e.after)),
        requirement,
        policy_rule: rule,
        policy_version,
        state: RequestState::Pending,
        created_at: now,
        escalated: false,
        reviews: Vec::new(),
        resolution: None,
        audit_pending: false,
        unaudited: Unaudited::default(),
        grant_expires_at: None,
        deliveries: Vec::new(),
        execution: None,
    })
}

/// Whether `reviewer` may review `record` at all: an identity that compares safely, a human,
/// neither the initiator nor the human it acts for (under any alias), and allowed by the
/// requirement now (groups as they are at decision time). Independent of the verdict, the
/// state and the time.
pub fn may_review(record: &RequestRecord, reviewer: &Principal) -> Result<(), ReviewError> {
    valid_identity(record, reviewer)?;
    eligible(record, reviewer)
}

/// A spelling that cannot be compared safely never reaches the identity checks of
/// [`eligible`].
fn valid_identity(record: &RequestRecord, reviewer: &Principal) -> Result<(), ReviewError> {
    reviewer
        .validate()
        .map_err(|error| ReviewError::InvalidIdentity {
            id: record.id,
            error,
        })
}

/// [`may_review`] for an identity already validated: a human, not the initiator or the human
/// it acts for, allowed by the requirement now.
fn eligible(record: &RequestRecord, reviewer: &Principal) -> Result<(), ReviewError> {
    let id = record.id;
    if reviewer.kind != PrincipalKind::Human {
        return Err(ReviewError::NotHuman {
            reviewer: reviewer.id.clone(),
            kind: reviewer.kind,
        });
    }
    if record
        .request
        .initiator
        .as_ref()
        .is_none_or(|i| i.is_self(reviewer))
    {
        return Err(ReviewError::SelfApproval {
            id,
            reviewer: reviewer.id.clone(),
        });
    }
    if !record.requirement.authorizes(reviewer, record.escalated) {
        return Err(ReviewError::NotAuthorized {
            id,
            reviewer: reviewer.id.clone(),
        });
    }
    Ok(())
}

/// Whether `review` would be accepted on `record` at `now`, in the order the gate checks:
/// the digest the reviewer saw, the identity, that the request is still open (pending and not
/// expired, or approved and the verdict a deny: deny wins), [`may_review`], that this person
/// has not already approved, and last a reason where one is required. A channel calls it (through
/// `Gate::check_review`) before it opens a reason dialog; [`review`] applies the same checks.
pub fn check_review(
    record: &RequestRecord,
    review: &Review,
    now: DateTime<Utc>,
) -> Result<(), ReviewError> {
    let id = record.id;
    let reviewer = &review.reviewer;
    if let Some(presented) = review.digest
        && presented != record.digest
    {
        return Err(ReviewError::DigestMismatch {
            id,
            stored: record.digest,
            presented,
        });
    }
    valid_identity(record, reviewer)?;
    // Deny wins: an authorized deny also revokes an approval whose grant is not yet used.
    let revoking = record.state == RequestState::Approved && review.verdict == Verdict::Deny;
    if record.state != RequestState::Pending && !revoking {
        return Err(ReviewError::AlreadyDecided {
            id,
            state: record.state,
            by: decided_by(record),
        });
    }
    if !revoking && now >= record.expires_at {
        return Err(ReviewError::Expired { id });
    }
    eligible(record, reviewer)?;
    if review.verdict == Verdict::Approve
        && record.approvers().iter().any(|p| p.same_identity(reviewer))
    {
        return Err(ReviewError::AlreadyReviewed {
            id,
            reviewer: reviewer.id.clone(),
        });
    }
    // Last, so a channel that has not asked for the reason yet reads `ReasonRequired` as
    // "everything else holds: ask for one" (see [`check_review_before_reason`]).
    if record.requirement.reason_required
        && review.reason.as_deref().is_none_or(|r| r.trim().is_empty())
    {
        return Err(ReviewError::ReasonRequired { id });
    }
    Ok(())
}

/// [`check_review`] for a channel that asks for the reason after this check (a dialog, a
/// form): a missing reason is not a refusal yet, every other rule is applied. Returns whether
/// a reason will be required.
pub fn check_review_before_reason(
    record: &RequestRecord,
    review: &Review,
    now: DateTime<Utc>,
) -> Result<bool, ReviewError> {
    match check_review(record, review, now) {
        Ok(()) => Ok(record.requirement.reason_required),
        Err(ReviewError::ReasonRequired { .. }) => Ok(true),
        Err(refused) => Err(refused),
    }
}

/// Applies `review`: the accepted review is stored; a deny ends the request (and revokes an
/// unused approval); an approval that reaches the quorum of distinct humans approves it, with
/// a grant usable for `grant_ttl`. The decision is flagged unaudited until its events
/// (`reviewed`, then `approved` or `denied`) are recorded ([`audited`]).
pub fn review(
    record: &RequestRecord,
    review: &Review,
    now: DateTime<Utc>,
    grant_ttl: TimeDelta,
) -> Result<(Step, ReviewOutcome), ReviewError> {
    check_review(record, review, now)?;
    let accepted = ReviewRecord {
        reviewer: review.reviewer.clone(),
        verdict: review.verdict,
        reason: review.reason.clone(),
        channel: review.channel.clone(),
        at: now,
    };
    let mut next = record.clone();
    next.reviews.push(accepted.clone());
    let approvals = next.approvers().len() as u32;
    let quorum = next.requirement.quorum;
    let mut events = vec![reviewed_event(&accepted, approvals, quorum)];
    match review.verdict {
        Verdict::Deny => {
            next.state = RequestState::Denied;
            next.mark_unaudited(Verdict::Deny);
            next.grant_expires_at = None;
            next.resolution = Some(Box::new(Resolution {
                by: Some(review.reviewer.clone()),
                reason: review.reason.clone(),
                at: now,
            }));
            events.push(EventDetail::Denied {
                by: review.reviewer.clone(),
                reason: review.reason.clone(),
            });
        }
        Verdict::Approve if approvals >= quorum => {
            next.state = RequestState::Approved;
            next.mark_unaudited(Verdict::Approve);
            next.grant_expires_at = Some(now + grant_ttl);
            events.push(approved_event(&next));
        }
        Verdict::Approve => {}
    }
    let outcome = ReviewOutcome {
        state: next.state,
        approvals,
        quorum,
    };
    Ok((Step::new(next, events), outcome))
}

/// The record once the events of `decision` are recorded: that decision's flag cleared,
/// another decision's left as it is (an approval recorded late never clears the flag of the
/// deny that revoked it). `None` when it was not flagged.
pub fn audited(record: &RequestRecord, decision: Verdict) -> Option<RequestRecord> {
    let mut next = record.clone();
    next.mark_audited(decision).then_some(next)
}

/// The events of every decision of `record` still flagged unaudited (its reviewer's
/// `decide()` failed or died after persisting it), and the record with those flags cleared.
/// `None` when nothing is flagged. The events may duplicate ones the reviewer recorded just
/// before dying; they are never missing.
pub fn recover(record: &RequestRecord) -> Result<Option<(Step, Vec<Verdict>)>, GuardError> {
    let unaudited = record.unaudited_decisions();
    if unaudited.is_empty() {
        return Ok(None);
    }
    let mut next = record.clone();
    let mut events = Vec::new();
    let mut recovered = Vec::new();
    if unaudited.approval {
        events.push(approved_event(record));
        recovered.push(Verdict::Approve);
    }
    if unaudited.denial {
        let denial = record.denial().ok_or_else(|| {
            GuardError::unavailable(
                Component::Store,
                format!(
                    "request {} is flagged denied but holds no denial",
                    record.id
                ),
            )
        })?;
        events.push(reviewed_event(
            denial,
            record.approvers().len() as u32,
            record.requirement.quorum,
        ));
        events.push(EventDetail::Denied {
            by: denial.reviewer.clone(),
            reason: denial.reason.clone(),
        });
        recovered.push(Verdict::Deny);
    }
    for decision in &recovered {
        next.mark_audited(*decision);
    }
    Ok(Some((Step::new(next, events), recovered)))
}

/// Pending → Expired, once `now` reaches the deadline.
pub fn expire(record: &RequestRecord, now: DateTime<Utc>) -> Result<Step, NotApplicable> {
    if record.state != RequestState::Pending {
        return Err(NotApplicable::WrongState(record.state));
    }
    if now < record.expires_at {
        return Err(NotApplicable::NotDue);
    }
    let mut next = record.clone();
    next.state = RequestState::Expired;
    next.resolution = Some(Box::new(Resolution {
        by: None,
        reason: Some("no decision before the deadline".into()),
        at: now,
    }));
    Ok(Step::new(next, vec![EventDetail::Expired {}]))
}

/// Marks a pending request escalated once its escalation time passed: the escalation's
/// reviewers may review from now on. The state stays `Pending`.
pub fn escalate(record: &RequestRecord, now: DateTime<Utc>) -> Result<Step, NotApplicable> {
    if record.state != RequestState::Pending {
        return Err(NotApplicable::WrongState(record.state));
    }
    let escalation = record
        .requirement
        .escalation
        .as_ref()
        .ok_or(NotApplicable::NoEscalation)?;
    if escalates_at(record).is_none_or(|at| now < at) {
        return Err(NotApplicable::NotDue);
    }
    let mut next = record.clone();
    next.escalated = true;
    let event = EventDetail::Escalated {
        users: escalation.users.clone(),
        groups: escalation.groups.clone(),
    };
    Ok(Step::new(next, vec![event]))
}

/// Approved → Lapsed, once the grant's time is over.
pub fn lapse(record: &RequestRecord, now: DateTime<Utc>) -> Result<Step, NotApplicable> {
    if record.state != RequestState::Approved {
        return Err(NotApplicable::WrongState(record.state));
    }
    if record.grant_expires_at.is_some_and(|at| now < at) {
        return Err(NotApplicable::NotDue);
    }
    let mut next = record.clone();
    next.state = RequestState::Lapsed;
    Ok(Step::new(next, vec![EventDetail::Lapsed {}]))
}

/// Pending → Cancelled (withdrawn, or undeliverable). `by` is recorded; who may cancel is the
/// caller's decision.
pub fn cancel(
    record: &RequestRecord,
    by: Option<Principal>,
    reason: Option<String>,
    now: DateTime<Utc>,
) -> Result<Step, NotApplicable> {
    if record.state != RequestState::Pending {
        return Err(NotApplicable::WrongState(record.state));
    }
    let mut next = record.clone();
    next.state = RequestState::Cancelled;
    next.resolution = Some(Box::new(Resolution {
        by: by.clone(),
        reason: reason.clone(),
        at: now,
    }));
    Ok(Step::new(next, vec![EventDetail::Cancelled { by, reason }]))
}

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
    next.execution = Some(Box::new(Execution {
        started_at,
        finished_at: Some(now),
        error,
    }));
    Ok(Step::new(next, Vec::new()))
}

/// Whether a store may replace `current` with `next` (same request, same version): the same
/// state (bookkeeping changes: deliveries, audit flags), or a lifecycle step
/// ([`RequestState::can_become`]). A terminal state never changes. Every store refuses what
/// this refuses: the memory store by calling it, the SQL stores by putting [`may_become`] in
/// their compare-and-set's `WHERE` clause.
pub fn may_replace(current: &RequestRecord, next: &RequestRecord) -> Result<(), IllegalStep> {
    if may_become(next.state).any(|s| s == current.state) {
        Ok(())
    } else {
        Err(IllegalStep {
            from: current.state,
            to: next.state,
        })
    }
}

/// The states a stored record may be in for a compare-and-set to move it to `next`: `next`
/// itself and every state that can become it. What SQL stores put in their `WHERE` clause.
pub fn may_become(next: RequestState) -> impl Iterator<Item = RequestState> {
    ALL_STATES
        .into_iter()
        .filter(move |s| *s == next || s.can_become(next))
}

/// Every state, in lifecycle order.
pub const ALL_STATES: [RequestState; 9] = [
    RequestState::Pending,
    RequestState::Approved,
    RequestState::Denied,
    RequestState::Expired,
    RequestState::Cancelled,
    RequestState::Executing,
    RequestState::Executed,
    RequestState::Failed,
    RequestState::Lapsed,
];

/// A store was asked to replace a record with one that is not a lifecycle step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "refused to change a request from {from} to {to}: that is not a lifecycle step, and terminal states never change"
)]
pub struct IllegalStep {
    /// The stored state.
    pub from: RequestState,
    /// The state asked for.
    pub to: RequestState,
}

/// Who decided, for "already decided by X": the denier or canceller, or the approvers.
pub fn decided_by(record: &RequestRecord) -> Option<String> {
    match record.state {
        RequestState::Denied | RequestState::Cancelled => record
            .resolution
            .as_ref()
            .and_then(|r| r.by.as_ref())
            .map(|p| p.label().to_owned()),
        RequestState::Pending | RequestState::Expired | RequestState::Lapsed => None,
        _ => {
            let names: Vec<&str> = record.approvers().iter().map(|p| p.label()).collect();
            (!names.is_empty()).then(|| names.join(", "))
        }
    }
}

/// The caller-facing error for a request that ended without a grant.
pub fn refusal(record: &RequestRecord) -> GuardError {
    let id = record.id;
    let resolution = record.resolution.as_ref();
    match record.state {
        RequestState::Denied => {
            let denial = record.denial();
            GuardError::Denied {
                id,
                by: denial.map_or_else(
                    || "a reviewer".to_owned(),
                    |d| d.reviewer.label().to_owned(),
                ),
                reason: denial.and_then(|d| d.reason.clone()),
            }
        }
        RequestState::Expired => GuardError::Expired {
            id,
            approvals: record.approvers().len() as u32,
            quorum: record.requirement.quorum,
        },
        RequestState::Cancelled => GuardError::Cancelled {
            id,
            by: resolution
                .and_then(|r| r.by.as_ref())
                .map(|p| p.label().to_owned()),
            reason: resolution.and_then(|r| r.reason.clone()),
        },
        RequestState::Lapsed => GuardError::GrantLapsed { id },
        state => GuardError::GrantUsed { id, state },
    }
}

/// The `reviewed` event of an accepted review, with the approvals counted after it.
fn reviewed_event(review: &ReviewRecord, approvals: u32, quorum: u32) -> EventDetail {
    EventDetail::Reviewed {
        reviewer: review.reviewer.clone(),
        verdict: review.verdict,
        reason: review.reason.clone(),
        channel: review.channel.clone(),
        approvals,
        quorum,
    }
}

/// The `approved` event of a record whose approvals reached the quorum.
pub fn approved_event(record: &RequestRecord) -> EventDetail {
    EventDetail::Approved {
        approvers: record.approvers().into_iter().cloned().collect(),
    }
}
