//! Review rules: who may decide, what a decision does, and how an unaudited decision is
//! recovered.

use chrono::{DateTime, TimeDelta, Utc};

use super::{Step, decided_by};
use crate::audit::EventDetail;
use crate::error::{Component, GuardError, ReviewError};
use crate::request::{Digest, Principal, PrincipalKind};
use crate::step_up::{StepUp, StepUpProof};
use crate::store::{RequestRecord, RequestState, Resolution, ReviewRecord, Verdict};

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
    /// The digest the reviewer was shown; when set, it must match the stored request. Required
    /// for an edit, and for an approval once the action has been edited.
    pub digest: Option<Digest>,
    /// For an approval of a changed action ([`edit`](crate::edit)): what the reviewer changed.
    pub edit: Option<Box<ProposedParams>>,
    /// For an approval under a rule with `step_up`: the reviewer's proof of this request and
    /// digest ([`step_up`](crate::step_up)), already checked against their registered key.
    pub step_up: Option<Box<StepUpProof>>,
}

/// The parameters a reviewer proposes with an edit on approve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProposedParams {
    /// Every parameter, as edited (the API, in-process callers).
    Params(serde_json::Value),
    /// A form's fields, `(JSON pointer, text)`, read against the stored action when the edit
    /// is decided ([`params_from_fields`](crate::edit::params_from_fields)): a channel
    /// submits what the reviewer typed, and the gate reads it, checks it and audits a
    /// refusal like any other.
    Fields(Vec<(String, String)>),
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
            edit: None,
            step_up: None,
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

    /// Approves the action with its parameters changed to `params` (all of them, as edited),
    /// within what the policy rule lets reviewers edit ([`edit`](crate::edit)). Bind it to the
    /// digest the reviewer saw with [`for_digest`](Review::for_digest).
    pub fn edit(mut self, params: serde_json::Value) -> Self {
        self.edit = Some(Box::new(ProposedParams::Params(params)));
        self
    }

    /// Attaches the reviewer's step-up proof ([`step_up`](crate::step_up)), which a rule with
    /// `step_up` requires of every approval. Build it only from an assertion whose signature
    /// was verified against the reviewer's own registered passkey.
    pub fn step_up(mut self, proof: StepUpProof) -> Self {
        self.step_up = Some(Box::new(proof));
        self
    }

    /// [`edit`](Review::edit) with a form's fields, `(JSON pointer, text)` for each parameter
    /// the reviewer saw, read as each parameter's own type against the action as stored when
    /// the edit is decided.
    pub fn edit_fields<I, P, T>(mut self, fields: I) -> Self
    where
        I: IntoIterator<Item = (P, T)>,
        P: Into<String>,
        T: Into<String>,
    {
        let fields = fields
            .into_iter()
            .map(|(p, t)| (p.into(), t.into()))
            .collect();
        self.edit = Some(Box::new(ProposedParams::Fields(fields)));
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
pub(super) fn eligible(record: &RequestRecord, reviewer: &Principal) -> Result<(), ReviewError> {
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
/// the digest the reviewer saw (for a deny, any version the request has had), the identity, that the request is still open (pending and not
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
    // Deny wins over edits too: a deny of any version this request has had (the one asked
    // for, or one a reviewer's edit replaced) denies it; an approval counts only for the
    // current version.
    let earlier_version = |d: Digest| {
        record
            .reviews
            .iter()
            .filter_map(|r| r.edit.as_deref())
            .any(|e| e.from == d)
    };
    if let Some(presented) = review.digest
        && presented != record.digest
        && !(review.verdict == Verdict::Deny && earlier_version(presented))
    {
        return Err(ReviewError::DigestMismatch {
            id,
            stored: record.digest,
            presented,
        });
    }
    // An edit, or an approval of an edited action, must say which version the reviewer saw.
    let edited = review.edit.is_some() || record.last_edit().is_some();
    if review.digest.is_none() && review.verdict == Verdict::Approve && edited {
        return Err(ReviewError::DigestRequired {
            id,
            current: record.digest,
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
    // An editor who approved the current version may still edit it: the edit restarts the
    // count, with their approval of the edited version.
    if review.verdict == Verdict::Approve
        && review.edit.is_none()
        && record.approvers().iter().any(|p| p.same_identity(reviewer))
    {
        return Err(ReviewError::AlreadyReviewed {
            id,
            reviewer: reviewer.id.clone(),
        });
    }
    check_step_up(record, review)?;
    // Last, so a channel that has not asked for the reason yet reads `ReasonRequired` as
    // "everything else holds: ask for one" (see [`check_review_before_reason`]).
    if record.requirement.reason_required
        && review.reason.as_deref().is_none_or(|r| r.trim().is_empty())
    {
        return Err(ReviewError::ReasonRequired { id });
    }
    Ok(())
}

/// An approval under a rule with `step_up` carries a proof of this request at its current
/// digest, with a nonce no earlier review of the request used. An edit is refused by the edit
/// rules instead (a rule with `step_up` has no editable parameters), and a deny needs no
/// proof: stopping an action never needs more than the channel's sign-in.
fn check_step_up(record: &RequestRecord, review: &Review) -> Result<(), ReviewError> {
    let id = record.id;
    let Some(method) = needs_step_up(record) else {
        return Ok(());
    };
    if review.verdict != Verdict::Approve || review.edit.is_some() {
        return Ok(());
    }
    let Some(proof) = review.step_up.as_deref() else {
        return Err(ReviewError::StepUpRequired { id, method });
    };
    let refused = |why: String| ReviewError::StepUpRefused { id, why };
    if proof.method != method {
        return Err(refused(format!("this rule requires a {method} proof")));
    }
    proof
        .check_binding(id, &record.digest)
        .map_err(|e| refused(e.to_string()))?;
    let used = proof.nonce_bytes();
    let reused = record
        .reviews
        .iter()
        .filter_map(|r| r.step_up.as_deref())
        .any(|earlier| earlier.nonce_bytes() == used);
    if reused {
        return Err(refused("the proof was already used for a review".into()));
    }
    Ok(())
}

/// The step-up proof every approval of `record` must carry, if its rule has `step_up`
/// ([`check_review`] refuses an approval without one). A channel that cannot take the proof
/// (a chat button) offers no approval of such a request: it links the review console instead,
/// and keeps its deny.
pub fn needs_step_up(record: &RequestRecord) -> Option<StepUp> {
    record.requirement.step_up
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
/// (`reviewed`, then `approved` or `denied`) are recorded ([`audited`]). A review carrying an
/// edit is applied with [`propose_edit`](super::propose_edit) and
/// [`review_edited`](super::review_edited) instead, and refused here.
pub fn review(
    record: &RequestRecord,
    review: &Review,
    now: DateTime<Utc>,
    grant_ttl: TimeDelta,
) -> Result<(Step, ReviewOutcome), ReviewError> {
    if review.edit.is_some() {
        return Err(ReviewError::EditRefused {
            id: record.id,
            why: "an edit needs the policy's decision on the edited action".into(),
        });
    }
    check_review(record, review, now)?;
    let accepted = ReviewRecord {
        reviewer: review.reviewer.clone(),
        verdict: review.verdict,
        reason: review.reason.clone(),
        channel: review.channel.clone(),
        at: now,
        edit: None,
        step_up: review.step_up.clone(),
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
            approve_at_quorum(&mut next, &mut events, now, grant_ttl);
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

/// Approves `next`, whose approvals reached the quorum: a grant usable for `grant_ttl` (a
/// standing grant's own duration for one), flagged unaudited until `approved` is recorded.
pub(super) fn approve_at_quorum(
    next: &mut RequestRecord,
    events: &mut Vec<EventDetail>,
    now: DateTime<Utc>,
    grant_ttl: TimeDelta,
) {
    next.state = RequestState::Approved;
    next.mark_unaudited(Verdict::Approve);
    next.grant_expires_at = Some(now + super::standing::grant_lasts(next, grant_ttl));
    events.push(approved_event(next));
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
    if unaudited.edit {
        events.extend(super::edit::last_edit_events(record).unwrap_or_default());
        next.mark_edit_audited();
    }
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

/// The `reviewed` event of an accepted review, with the approvals counted after it.
pub(super) fn reviewed_event(review: &ReviewRecord, approvals: u32, quorum: u32) -> EventDetail {
    EventDetail::Reviewed {
        reviewer: review.reviewer.clone(),
        verdict: review.verdict,
        reason: review.reason.clone(),
        channel: review.channel.clone(),
        approvals,
        quorum,
        step_up: review.step_up.clone(),
    }
}

/// The `approved` event of a record whose approvals reached the quorum.
pub fn approved_event(record: &RequestRecord) -> EventDetail {
    EventDetail::Approved {
        approvers: record.approvers().into_iter().cloned().collect(),
    }
}
