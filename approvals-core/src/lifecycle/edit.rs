//! Edit rules: a reviewer's approval of a changed action ([`edit`](crate::edit)). The edited
//! action replaces the asked one, with its own digest and the policy's decision on it; the
//! editor's approval is the first toward the quorum of the new digest, and approvals of the
//! old digest no longer count.

use arcstr::ArcStr;

use chrono::{DateTime, TimeDelta, Utc};

use super::Step;
use super::review::{
    ProposedParams, Review, ReviewOutcome, approve_at_quorum, check_review, eligible,
    reviewed_event,
};
use crate::admission::MAX_REQUEST_BYTES;
use crate::audit::EventDetail;
use crate::edit::{EditRecord, FieldChange, edit_action, params_from_fields};
use crate::error::ReviewError;
use crate::policy::Decision;
use crate::request::{ActionRequest, Digest};
use crate::store::{RequestRecord, ReviewRecord, Verdict};

/// An edit that is within the rule's bounds, before the policy is asked about it.
#[derive(Debug, Clone)]
pub struct ProposedEdit {
    /// The edited action.
    pub request: ActionRequest,
    /// Its digest.
    pub digest: Digest,
    /// What changed.
    pub changes: Vec<FieldChange>,
}

/// Whether `review`, an approval carrying edited parameters, may edit `record` at `now`:
/// every rule of [`check_review`] (the digest the reviewer saw is required), then a form's
/// fields read against the stored action ([`params_from_fields`]), the rule's bounds
/// ([`edit_action`]) and the size limit every action meets. The gate asks the
/// policy about the returned action, then applies [`review_edited`].
pub fn propose_edit(
    record: &RequestRecord,
    review: &Review,
    now: DateTime<Utc>,
) -> Result<ProposedEdit, ReviewError> {
    let id = record.id;
    let refused = |why: String| ReviewError::EditRefused { id, why };
    let Some(proposed) = review.edit.as_deref() else {
        return Err(refused("the review carries no edited parameters".into()));
    };
    if review.verdict != Verdict::Approve {
        return Err(refused(
            "only an approval can carry an edit; deny without one".into(),
        ));
    }
    check_review(record, review, now)?;
    if record.requirement.step_up.is_some() {
        return Err(refused(crate::edit::EditRefusal::StepUp.to_string()));
    }
    let editable = &record.requirement.editable;
    let read;
    let params = match proposed {
        ProposedParams::Params(params) => params,
        ProposedParams::Fields(fields) => {
            let fields = fields.iter().map(|(p, t)| (p.as_str(), t.as_str()));
            read = params_from_fields(&record.request.params, editable, fields)
                .map_err(|e| refused(e.to_string()))?;
            &read
        }
    };
    let (request, changes) =
        edit_action(&record.request, editable, params).map_err(|e| refused(e.to_string()))?;
    let (digest, size) = request.digest_and_size();
    if size > MAX_REQUEST_BYTES {
        return Err(refused(format!(
            "the edited action is {size} bytes; the limit is {MAX_REQUEST_BYTES}"
        )));
    }
    Ok(ProposedEdit {
        request,
        digest,
        changes,
    })
}

/// Applies an edit [`propose_edit`] accepted, with `decision`, the policy's decision on the
/// edited action under `policy_version`:
/// - a deny refuses the edit (nothing changes);
/// - a requirement replaces the request's (its approvers, quorum and reason rule), and the
///   editor must be allowed by it;
/// - an allow keeps the request's requirement: a reviewer's edit never lowers what the
///   request needs.
///
/// The edited action and digest replace the stored ones, the editor's approval is the first
/// counted toward the quorum, and the request is approved if that is enough. The edit is
/// flagged unaudited until its events (`edited`, `reviewed`, and `approved` when approved)
/// are recorded.
pub fn review_edited(
    record: &RequestRecord,
    review: &Review,
    proposed: ProposedEdit,
    decision: Decision,
    policy_version: ArcStr,
    now: DateTime<Utc>,
    grant_ttl: TimeDelta,
) -> Result<(Step, ReviewOutcome), ReviewError> {
    check_review(record, review, now)?;
    let id = record.id;
    let mut next = record.clone();
    match &decision {
        Decision::Deny { rule, reason } => {
            return Err(ReviewError::EditRefused {
                id,
                why: format!("the policy refuses the edited action (rule {rule}): {reason}"),
            });
        }
        Decision::Allow { .. } => {}
        Decision::RequireApproval { requirement, .. } if requirement.step_up.is_some() => {
            return Err(ReviewError::EditRefused {
                id,
                why: crate::edit::EditRefusal::StepUp.to_string(),
            });
        }
        Decision::RequireApproval { rule, requirement } => {
            next.requirement = requirement.clone();
            next.policy_rule = rule.clone();
        }
    }
    next.policy_version = policy_version.clone();
    next.request = proposed.request;
    next.digest = proposed.digest;
    eligible(&next, &review.reviewer)?;
    if next.requirement.reason_required
        && review.reason.as_deref().is_none_or(|r| r.trim().is_empty())
    {
        return Err(ReviewError::ReasonRequired { id });
    }
    let edit = EditRecord {
        from: record.digest,
        to: proposed.digest,
        changes: proposed.changes,
        decision,
    };
    let mut events = vec![edited_event(&review.reviewer, &edit, policy_version)];
    let accepted = ReviewRecord {
        reviewer: review.reviewer.clone(),
        verdict: Verdict::Approve,
        reason: review.reason.clone(),
        channel: review.channel.clone(),
        at: now,
        edit: Some(Box::new(edit)),
        step_up: None,
    };
    next.reviews.push(accepted.clone());
    next.mark_edit_unaudited();
    let approvals = next.approvers().len() as u32;
    let quorum = next.requirement.quorum;
    events.push(reviewed_event(&accepted, approvals, quorum));
    if approvals >= quorum {
        approve_at_quorum(&mut next, &mut events, now, grant_ttl);
    }
    let outcome = ReviewOutcome {
        state: next.state,
        approvals,
        quorum,
    };
    Ok((Step::new(next, events), outcome))
}

/// The record once the latest edit's events are recorded, with the approval's too when the
/// edit approved it: their flags cleared. `None` when neither was flagged.
pub fn edit_audited(record: &RequestRecord, approved: bool) -> Option<RequestRecord> {
    let mut next = record.clone();
    let edit = next.mark_edit_audited();
    let approval = approved && next.mark_audited(Verdict::Approve);
    (edit || approval).then_some(next)
}

/// The events of the latest edit of `record` (`edited`, then the editor's `reviewed`), for a
/// recovery: `None` when it was never edited.
pub(super) fn last_edit_events(record: &RequestRecord) -> Option<Vec<EventDetail>> {
    let position = record.reviews.iter().rposition(|r| r.edit.is_some())?;
    let review = &record.reviews[position];
    let edit = review.edit.as_deref()?;
    // Approvals counted when the edit was made: its own, and any of the same digest before it
    // cannot exist (an edit restarts the count), so one.
    Some(vec![
        edited_event(&review.reviewer, edit, record.policy_version.clone()),
        reviewed_event(review, 1, record.requirement.quorum),
    ])
}

fn edited_event(
    by: &crate::request::Principal,
    edit: &EditRecord,
    policy_version: ArcStr,
) -> EventDetail {
    EventDetail::Edited {
        by: by.clone(),
        from_digest: edit.from,
        changes: edit.changes.clone(),
        decision: edit.decision.clone(),
        policy_version,
    }
}
