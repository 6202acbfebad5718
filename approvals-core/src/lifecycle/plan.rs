//! Plans' rules: which rule a plan is reviewed under, which item of an approved plan an action
//! is, and what using an item records.

use arcstr::ArcStr;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};

use super::Step;
use super::standing::{may_approve, open_approved_by};
use crate::audit::EventDetail;
use crate::error::GuardError;
use crate::plan::{MAX_PLAN_ITEMS, PlanTerms};
use crate::policy::{Decision, Requirement};
use crate::request::{ActionRequest, Digest};
use crate::store::{RequestId, RequestRecord};

/// The policy's decision on a plan of `items`, given its `decisions` on each (in order):
/// denied when any item is denied (the first such item's rule, its reason naming the item);
/// otherwise reviewed under the one rule, with the one requirement, that decides every item
/// needing approval, so approving the plan takes the same approvers and quorum as approving
/// each of its actions. Refused: an empty plan, one of more than [`MAX_PLAN_ITEMS`], one whose
/// items need approval under different rules or requirements (ask for each, or make one plan
/// per rule), and one in which nothing needs approval (run its actions).
pub fn plan_decision(
    items: &[ActionRequest],
    decisions: Vec<Decision>,
) -> Result<Decision, GuardError> {
    let invalid = |why: String| Err(GuardError::InvalidRequest(why));
    check_plan_len(items.len())?;
    let mut deciding: Option<(Option<ArcStr>, Arc<Requirement>)> = None;
    for (i, (item, decision)) in items.iter().zip(decisions).enumerate() {
        match decision {
            Decision::Allow { .. } => {}
            Decision::Deny { rule, reason } => {
                return Ok(Decision::Deny {
                    rule,
                    reason: format!(
                        "item {} of the plan ({} on {}): {reason}",
                        i + 1,
                        item.kind,
                        item.resource
                    ),
                });
            }
            Decision::RequireApproval { rule, requirement } => match &deciding {
                None => deciding = Some((rule, requirement)),
                Some((r, q)) if *r == rule && **q == *requirement => {}
                Some((r, _)) => {
                    return invalid(format!(
                        "item {} of the plan ({} on {}) needs approval under rule {}, the plan's \
                         earlier items under rule {}: one plan is reviewed by one rule's \
                         approvers; make one plan per rule",
                        i + 1,
                        item.kind,
                        item.resource,
                        rule.as_deref().unwrap_or("the default"),
                        r.as_deref().unwrap_or("the default"),
                    ));
                }
            },
        }
    }
    match deciding {
        Some((rule, requirement)) => Ok(Decision::RequireApproval { rule, requirement }),
        None => invalid(
            "nothing in this plan needs approval: the policy allows each of its actions".into(),
        ),
    }
}

/// Refuses a plan of `n` actions when it is empty or holds more than [`MAX_PLAN_ITEMS`].
pub fn check_plan_len(n: usize) -> Result<(), GuardError> {
    if n == 0 {
        return Err(GuardError::InvalidRequest(
            "a plan holds at least one action".into(),
        ));
    }
    if n > MAX_PLAN_ITEMS {
        return Err(GuardError::InvalidRequest(format!(
            "a plan holds at most {MAX_PLAN_ITEMS} actions, not {n}"
        )));
    }
    Ok(())
}

/// The item of approved plan `plan` that the action `request`, with `digest`, decided now by
/// `rule` with `requirement`, runs as: its position. An action runs as an item when the plan
/// is approved and its approval audited and its time is not over; the action's digest is the
/// item's and that item has not run under the plan yet (so changed parameters, another
/// resource, another context or another initiator are not in the plan, and each item runs
/// once); the action's initiator is the plan's (same principal and human, never a look-alike);
/// and the rule deciding the action now is the one the plan was approved under, with the same
/// requirement (a changed rule asks again).
pub fn covering_item(
    plan: &RecordRef<'_>,
    request: &ActionRequest,
    digest: Digest,
    rule: Option<&str>,
    requirement: &Requirement,
    now: DateTime<Utc>,
) -> Option<u32> {
    let RecordRef { record, terms } = plan;
    if !may_approve(record, request, rule, requirement, now) {
        return None;
    }
    terms
        .items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| u32::try_from(i).ok().map(|i| (i, item)))
        .find(|(i, item)| item.digest == digest && !record.plan_used.contains(i))
        .map(|(i, _)| i)
}

/// A plan's record with its terms read.
#[derive(Debug)]
pub struct RecordRef<'a> {
    /// The plan's record.
    pub record: &'a RequestRecord,
    /// Its items.
    pub terms: PlanTerms,
}

impl<'a> RecordRef<'a> {
    /// `record` with its terms, when it is a plan.
    pub fn of(record: &'a RequestRecord) -> Option<RecordRef<'a>> {
        Some(RecordRef {
            terms: PlanTerms::of(record)?,
            record,
        })
    }
}

/// Item `item` of `plan` runs as the action stored as `request`: the item is marked used, and
/// `plan_item_used` records which action it approved. The plan stays approved for its other
/// items and lapses at its end.
pub fn use_plan_item(plan: &RecordRef<'_>, item: u32, request: RequestId, digest: Digest) -> Step {
    let mut next = plan.record.clone();
    next.plan_used.push(item);
    let items = u32::try_from(plan.terms.items.len()).unwrap_or(u32::MAX);
    let event = EventDetail::PlanItemUsed {
        request,
        action_digest: digest,
        item,
        items,
    };
    Step::new(next, vec![event])
}

/// The request of an action that runs as item `item` of approved plan `plan`, approved as it
/// opens: its reviews are the plan's approvals (their channel names the plan), and its
/// single-use grant lasts `grant_ttl`, never past the plan's end. It runs like any approved
/// request.
#[allow(clippy::too_many_arguments)]
pub fn open_under_plan(
    id: RequestId,
    request: ActionRequest,
    digest: Digest,
    rule: Option<ArcStr>,
    requirement: Arc<Requirement>,
    policy_version: ArcStr,
    plan: &RequestRecord,
    item: u32,
    grant_ttl: TimeDelta,
    now: DateTime<Utc>,
) -> Result<Step, GuardError> {
    let event = EventDetail::ApprovedByPlan {
        plan: plan.id,
        item,
        approvers: plan.approvers().into_iter().cloned().collect(),
    };
    let channel = format!("plan {} item {}", plan.id, item + 1);
    open_approved_by(
        (id, request, digest, rule, requirement, policy_version),
        plan,
        channel,
        event,
        grant_ttl,
        now,
    )
}
