//! Standing grants' rules: who may propose one and under which rule, which approved standing
//! grant covers an action, and what using one records.

use arcstr::ArcStr;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};

use super::{Step, open};
use crate::audit::EventDetail;
use crate::error::GuardError;
use crate::plan::PLAN_KIND;
use crate::policy::{Decision, Glob, Requirement};
use crate::request::{ActionRequest, Digest, Initiator, PrincipalKind};
use crate::standing::{STANDING_KIND, StandingTerms, is_reserved_kind};
use crate::store::{RequestId, RequestRecord, RequestState, Verdict};

/// How many approved standing grants of one initiator the gate reads when an action may be
/// covered by one: the newest this many. More than that at once is not a real use.
pub const STANDING_SCAN: usize = 64;

/// Whether `proposer` may propose `terms` for `initiator`, given the policy's `decision` on the
/// action the terms describe (their kind and pattern, for that initiator). Returns the rule
/// and requirement the standing grant is reviewed under: the same approvers and quorum as the
/// action itself. Refused: a proposer who is not a human (an agent never proposes one, for
/// itself or another), an initiator that is not an agent or service, terms that are empty or
/// of a reserved kind, a decision other than approval, a rule that does not allow standing
/// grants, or terms beyond the rule's limits.
pub fn propose_standing(
    terms: &StandingTerms,
    initiator: &Initiator,
    decision: Decision,
) -> Result<(Option<ArcStr>, Arc<Requirement>), GuardError> {
    let invalid = |why: String| Err(GuardError::InvalidRequest(why));
    if terms.proposed_by.kind != PrincipalKind::Human {
        return invalid(format!(
            "only a human can propose a standing grant, not the {} {:?}",
            terms.proposed_by.kind, terms.proposed_by.id
        ));
    }
    if initiator.principal.kind == PrincipalKind::Human {
        return invalid(
            "a standing grant is for an agent or a service; a human asks for each action".into(),
        );
    }
    if terms.kind.trim().is_empty() || terms.resource.trim().is_empty() {
        return invalid("a standing grant names an action kind and a resource pattern".into());
    }
    if is_reserved_kind(&terms.kind) {
        return invalid(format!(
            "{:?} is a reserved kind; a standing grant cannot cover it",
            terms.kind
        ));
    }
    if terms.uses == 0 || terms.duration.is_zero() {
        return invalid("a standing grant needs at least one use and a duration".into());
    }
    let (rule, requirement) = match decision {
        Decision::RequireApproval { rule, requirement } => (rule, requirement),
        Decision::Allow { .. } => {
            return invalid(format!(
                "the policy allows {} on {:?} without approval; no standing grant is needed",
                terms.kind, terms.resource
            ));
        }
        Decision::Deny { rule, reason } => {
            return invalid(format!(
                "the policy denies {} on {:?} (rule {rule}: {reason}); no standing grant can allow it",
                terms.kind, terms.resource
            ));
        }
    };
    let name = rule.as_deref().unwrap_or("the default");
    let Some(limit) = requirement.standing else {
        return invalid(format!(
            "rule {name} does not allow standing grants (it sets no standing_grant_max); each action is asked for"
        ));
    };
    if terms.duration > limit.max_for || terms.uses > limit.max_uses {
        return invalid(format!(
            "rule {name} allows standing grants of at most {} and {} use(s); asked for {} and {}",
            crate::policy::format_duration(limit.max_for),
            limit.max_uses,
            crate::policy::format_duration(terms.duration),
            terms.uses
        ));
    }
    Ok((rule, requirement))
}

/// The approved standing grant among `grants` that covers `request`, decided now by `rule`
/// with `requirement`: the one that ends first. A standing grant covers an action when it is
/// approved and its approval audited; its time and uses are not over; the action's kind is its
/// kind and its resource matches its pattern; the action's initiator is its initiator (the
/// same kind of principal and canonical id, never a look-alike, and the same human it acts
/// for, or none); and the rule that decides the action now is the rule it was approved under,
/// with the same requirement (so the same approvers and quorum: a changed rule asks again).
pub fn covering_standing<'a>(
    grants: &'a [RequestRecord],
    request: &ActionRequest,
    rule: Option<&str>,
    requirement: &Requirement,
    now: DateTime<Utc>,
) -> Option<&'a RequestRecord> {
    requirement.standing?;
    grants
        .iter()
        .filter(|g| covers(g, request, rule, requirement, now))
        .min_by_key(|g| g.grant_expires_at)
}

fn covers(
    grant: &RequestRecord,
    request: &ActionRequest,
    rule: Option<&str>,
    requirement: &Requirement,
    now: DateTime<Utc>,
) -> bool {
    let Some(terms) = StandingTerms::of(grant) else {
        return false;
    };
    may_approve(grant, request, rule, requirement, now)
        && grant.standing_uses < terms.uses
        && terms.kind == request.kind
        && Glob::new(&terms.resource).matches(&request.resource)
}

/// Whether `by`, an approved standing grant or plan, may approve the action `request` decided
/// now by `rule` with `requirement`, whatever its own terms say: it is in force and its
/// approval audited; the action's initiator is its initiator (the same kind of principal and
/// canonical id, never a look-alike, and the same human it acts for, or none); and the rule
/// that decides the action now is the rule it was approved under, with the same requirement
/// (so the same approvers and quorum: a changed rule asks again).
pub(super) fn may_approve(
    by: &RequestRecord,
    request: &ActionRequest,
    rule: Option<&str>,
    requirement: &Requirement,
    now: DateTime<Utc>,
) -> bool {
    in_force(by, now)
        && !by.unaudited_decisions().approval
        && by.policy_rule.as_deref() == rule
        && *by.requirement == *requirement
        && match (&by.request.initiator, &request.initiator) {
            (Some(a), Some(b)) => same_initiator(a, b),
            _ => false,
        }
}

/// Whether standing grant `grant` is in force at `now`: approved, and its time not over (its
/// uses may be). Revoked, lapsed and pending ones are not.
pub fn in_force(grant: &RequestRecord, now: DateTime<Utc>) -> bool {
    grant.state == RequestState::Approved && grant.grant_expires_at.is_some_and(|at| now < at)
}

/// The same principal (kind and canonical id) acting for the same human, or for none.
fn same_initiator(a: &Initiator, b: &Initiator) -> bool {
    a.principal.is(&b.principal)
        && match (&a.on_behalf_of, &b.on_behalf_of) {
            (None, None) => true,
            (Some(x), Some(y)) => x.is(y),
            _ => false,
        }
}

/// One use of `grant` for the action `request` (stored as `request`, with `digest`): its
/// count of uses goes up by one, and `standing_grant_used` records which action it approved.
/// The grant stays approved; once its uses are over it covers nothing more and lapses at its
/// end.
pub fn use_standing(
    grant: &RequestRecord,
    request: RequestId,
    digest: Digest,
) -> Result<Step, GuardError> {
    let terms = StandingTerms::of(grant).ok_or_else(|| {
        GuardError::InvalidRequest(format!("request {} is not a standing grant", grant.id))
    })?;
    let mut next = grant.clone();
    next.standing_uses = grant.standing_uses.saturating_add(1);
    let event = EventDetail::StandingGrantUsed {
        request,
        action_digest: digest,
        used: next.standing_uses,
        uses: terms.uses,
    };
    Ok(Step::new(next, vec![event]))
}

/// The request of an action covered by `grant`, approved as it opens: its reviews are the
/// standing grant's approvals (their channel names the grant), and its single-use grant lasts
/// `grant_ttl`, never past the standing grant's end. It runs like any approved request.
#[allow(clippy::too_many_arguments)]
pub fn open_under_standing(
    id: RequestId,
    request: ActionRequest,
    digest: Digest,
    rule: Option<ArcStr>,
    requirement: Arc<Requirement>,
    policy_version: ArcStr,
    grant: &RequestRecord,
    grant_ttl: TimeDelta,
    now: DateTime<Utc>,
) -> Result<Step, GuardError> {
    let event = EventDetail::ApprovedByStandingGrant {
        standing: grant.id,
        approvers: grant.approvers().into_iter().cloned().collect(),
    };
    let channel = format!("standing grant {}", grant.id);
    open_approved_by(
        (id, request, digest, rule, requirement, policy_version),
        grant,
        channel,
        event,
        grant_ttl,
        now,
    )
}

/// What [`open`] takes: id, request, digest, rule, requirement, policy version.
pub(super) type Opening = (
    RequestId,
    ActionRequest,
    Digest,
    Option<ArcStr>,
    Arc<Requirement>,
    ArcStr,
);

/// A request opened already approved by `by` (an approved standing grant or plan): its
/// reviews are `by`'s approvals, on `channel`; its single-use grant lasts `grant_ttl`, never
/// past `by`'s end; `event` says what approved it.
pub(super) fn open_approved_by(
    (id, request, digest, rule, requirement, policy_version): Opening,
    by: &RequestRecord,
    channel: String,
    event: EventDetail,
    grant_ttl: TimeDelta,
    now: DateTime<Utc>,
) -> Result<Step, GuardError> {
    let mut next = open(id, request, digest, rule, requirement, policy_version, now)?;
    next.state = RequestState::Approved;
    next.reviews = by
        .reviews
        .iter()
        .filter(|r| r.verdict == Verdict::Approve)
        .map(|r| {
            let mut review = r.clone();
            review.channel.clone_from(&channel);
            review
        })
        .collect();
    let ends = by.grant_expires_at.unwrap_or(now);
    next.grant_expires_at = Some((now + grant_ttl).min(ends));
    Ok(Step::new(next, vec![event]))
}

/// How long an approval of `record` lasts: a standing grant's duration, or `grant_ttl`.
pub(super) fn grant_lasts(record: &RequestRecord, grant_ttl: TimeDelta) -> TimeDelta {
    StandingTerms::of(record)
        .and_then(|t| TimeDelta::from_std(t.duration).ok())
        .unwrap_or(grant_ttl)
}

/// The refusal for running `record` itself when it is a standing grant or a plan: each
/// approves other actions and is never run, nor is a single-use grant issued for it.
pub fn not_runnable(record: &RequestRecord) -> Option<GuardError> {
    let what = match record.request.kind.as_str() {
        STANDING_KIND => "a standing grant: it approves matching actions when they are asked for",
        PLAN_KIND => "a plan: each of its actions runs when it is asked for",
        _ => return None,
    };
    Some(GuardError::InvalidRequest(format!(
        "request {} is {what}, and is never run itself",
        record.id
    )))
}
