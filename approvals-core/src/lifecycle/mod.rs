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
//!     └── cancel ───────▶ Cancelled   (escalate: Pending stays Pending, more reviewers;
//!                                      remind: Pending stays Pending, reviewers nudged)
//! ```
//!
//! Before a request opens, [`refusing_denial`] decides whether a recent denial of the same
//! action refuses it without asking anyone (a rule's `cooldown_after_denial`).
//!
//! A standing grant ([`standing`](crate::standing)) is a request like any other; once
//! approved it stays Approved while actions use it ([`use_standing`]: each opens already
//! approved, [`open_under_standing`]) until it lapses at its end or a reviewer denies it.
//!
//! A plan ([`plan`](crate::plan)) is a request like any other too; once approved, each of
//! its items opens already approved when asked for ([`covering_item`], [`use_plan_item`],
//! [`open_under_plan`]), once, until the plan lapses or a reviewer denies it.
//!
//! A run with a credential broker adds a credential to Executing: planned with the grant's
//! consumption ([`consume_with_credential`]), issued ([`credential_issued`]) and revoked
//! ([`credential_revoked`]), by the run or, once due ([`Due::Revoke`]), by a sweep.

use arcstr::ArcStr;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};

use crate::audit::EventDetail;
use crate::error::{Component, GuardError};
use crate::policy::Requirement;
use crate::request::{ActionRequest, Digest, Principal};
use crate::store::{RequestId, RequestRecord, RequestState, Resolution, ThinVec, Unaudited};

mod cooldown;
mod credential;
mod edit;
mod plan;
mod review;
mod run;
mod standing;

pub use cooldown::{COOLDOWN_SCAN, DeniedBefore, refusing_denial};
pub use credential::{
    CredentialRefused, MAX_SCOPE_CHARS, check_lease, consume_with_credential, credential_issued,
    credential_revoked, outstanding, revoke_at,
};

pub use edit::{ProposedEdit, edit_audited, propose_edit, review_edited};
pub use plan::{
    RecordRef, check_plan_len, covering_item, open_under_plan, plan_decision, use_plan_item,
};
pub use review::{
    ProposedParams, Review, ReviewOutcome, approved_event, audited, check_review,
    check_review_before_reason, may_review, needs_step_up, recover, review,
};
pub use run::{Unusable, check_executor, consume, finish};
pub use standing::{
    STANDING_SCAN, covering_standing, in_force, not_runnable, open_under_standing,
    propose_standing, use_standing,
};
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
    /// A pending request passed a reminder point.
    Remind,
    /// An approved grant was not used in time.
    Lapse,
    /// A decision's audit events were not recorded by its reviewer within the recovery delay.
    Recover,
    /// A run's credential is still outstanding after the run ended, or after its expiry
    /// ([`revoke_at`]): revoke it.
    Revoke,
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
            let remind_at = reminds_at(record);
            if remind_at.is_some_and(|at| now >= at) {
                return Due::Remind;
            }
            Due::Nothing(Some(pending_due(record)))
        }
        // An approval is recorded before anything else happens to it, lapsing included.
        RequestState::Approved if record.unaudited_decisions().approval => {
            Due::Nothing(Some(recover_at))
        }
        RequestState::Approved => match record.grant_expires_at {
            Some(at) if now < at => Due::Nothing(Some(at)),
            _ => Due::Lapse,
        },
        _ => {
            let revoke_at = revoke_at(record);
            if revoke_at.is_some_and(|at| now >= at) {
                return Due::Revoke;
            }
            let recover_at = record.audit_pending.then_some(recover_at);
            Due::Nothing(revoke_at.into_iter().chain(recover_at).min())
        }
    }
}

/// The earliest time at which [`due`] could return anything but [`Due::Nothing`] for
/// `record`, whatever the recovery delay: when a sweep has to look at it again. `None` when
/// nothing will ever fall due by itself (a terminal, audited request).
///
/// Stores index it ([`ListFilter::due_by`](crate::ListFilter::due_by)), so a sweep reads only
/// what is due instead of every open request. It never comes later than the time [`due`]
/// would act: an unaudited decision is counted from its decision, as if the recovery delay
/// were zero, and the sweep's call to [`due`] then waits out the real delay.
pub fn next_due(record: &RequestRecord) -> Option<DateTime<Utc>> {
    let recovery = record
        .audit_pending
        .then(|| recover_at(record, TimeDelta::zero()));
    let by_state = match record.state {
        RequestState::Pending => Some(pending_due(record)),
        // No grant expiry: lapsing is due at once (the Unix epoch: earlier than any real
        // time, and a time every store can hold).
        RequestState::Approved => Some(record.grant_expires_at.unwrap_or(DateTime::UNIX_EPOCH)),
        _ => revoke_at(record),
    };
    recovery.into_iter().chain(by_state).min()
}

/// When a decision still flagged unaudited is recorded by someone other than its reviewer:
/// `recovery_after` past the last review.
pub fn recover_at(record: &RequestRecord, recovery_after: TimeDelta) -> DateTime<Utc> {
    let decided_at = record.reviews.last().map_or(record.created_at, |r| r.at);
    decided_at + recovery_after
}

/// The next time something is due for a pending request: its expiry, escalation or next
/// reminder, whichever comes first.
fn pending_due(record: &RequestRecord) -> DateTime<Utc> {
    [escalates_at(record), reminds_at(record)]
        .into_iter()
        .flatten()
        .fold(record.expires_at, DateTime::min)
}

/// When each reminder of a pending request falls, earliest first: each point's share of the
/// time between its creation and its expiry. Points outside 1 to 99 percent, or given twice,
/// or out of order (a requirement built by hand), count as the policy file would have them.
fn reminder_times(record: &RequestRecord) -> Vec<DateTime<Utc>> {
    let mut points: Vec<u8> = record
        .requirement
        .reminders
        .iter()
        .copied()
        .filter(|p| (1..=99).contains(p))
        .collect();
    points.sort_unstable();
    points.dedup();
    let open = (record.expires_at - record.created_at).num_microseconds();
    points
        .into_iter()
        .filter_map(|percent| {
            let after = open?.checked_mul(i64::from(percent))? / 100;
            record
                .created_at
                .checked_add_signed(TimeDelta::microseconds(after))
        })
        .collect()
}

/// When the next reminder of a pending request is due; `None` when every one was sent.
fn reminds_at(record: &RequestRecord) -> Option<DateTime<Utc>> {
    let sent = usize::try_from(record.reminded).ok()?;
    reminder_times(record).get(sent).copied()
}

/// Where a request's reminders stand: what the `reminded` event records and what channels
/// show in a reminder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReminderStatus {
    /// Reminders sent so far, the one being sent included (a late sweep skips ahead).
    pub reminder: u32,
    /// How many the requirement has.
    pub of: u32,
    /// Approvals so far.
    pub approvals: u32,
    /// Approvals needed.
    pub quorum: u32,
    /// When the request expires.
    pub expires_at: DateTime<Utc>,
}

/// The [`ReminderStatus`] of `record`.
pub fn reminder_status(record: &RequestRecord) -> ReminderStatus {
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    ReminderStatus {
        reminder: record.reminded,
        of: count(reminder_times(record).len()),
        approvals: count(record.approvers().len()),
        quorum: record.requirement.quorum,
        expires_at: record.expires_at,
    }
}

/// How many reminders went to the reviewers of `record` while nobody has reviewed it: its
/// `reminded` count while it is pending with no review, otherwise 0. What a waiting requester
/// is told ("nobody has reviewed it yet; reviewers were reminded"): a channel cannot say
/// whether anyone read a message, so no review at a reminder point is the sign.
pub fn unanswered_reminders(record: &RequestRecord) -> u32 {
    if record.state == RequestState::Pending && record.reviews.is_empty() {
        record.reminded
    } else {
        0
    }
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
    rule: Option<ArcStr>,
    requirement: Arc<Requirement>,
    policy_version: ArcStr,
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
        reminded: 0,
        standing_uses: 0,
        plan_used: ThinVec::new(),
        reviews: ThinVec::new(),
        resolution: None,
        audit_pending: false,
        unaudited: Unaudited::default(),
        grant_expires_at: None,
        deliveries: ThinVec::new(),
        execution: None,
    })
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

/// Reminds the reviewers of a pending request once a reminder point passed: records how many
/// points have passed by `now` (a late sweep sends one reminder for all it passed). The state
/// stays `Pending`.
pub fn remind(record: &RequestRecord, now: DateTime<Utc>) -> Result<Step, NotApplicable> {
    if record.state != RequestState::Pending {
        return Err(NotApplicable::WrongState(record.state));
    }
    if now >= record.expires_at || reminds_at(record).is_none_or(|at| now < at) {
        return Err(NotApplicable::NotDue);
    }
    let passed = reminder_times(record)
        .into_iter()
        .take_while(|at| *at <= now)
        .count();
    let mut next = record.clone();
    next.reminded = u32::try_from(passed).unwrap_or(u32::MAX);
    let status = reminder_status(&next);
    let event = EventDetail::Reminded {
        reminder: status.reminder,
        of: status.of,
        approvals: status.approvals,
        quorum: status.quorum,
        expires_at: status.expires_at,
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
