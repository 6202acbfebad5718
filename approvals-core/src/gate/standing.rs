//! Standing grants at the gate: proposing one, approving an action under one, listing and
//! revoking them. The rules are in [`lifecycle`] (`propose_standing`, `covering_standing`,
//! `use_standing`, `open_under_standing`); this executes them.

use arcstr::ArcStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::io::{EventSubject, to_delta};
use super::submit::{Evaluated, Required};
use super::{Gate, Submission};
use crate::admission;
use crate::audit::EventDetail;
use crate::error::{Component, GuardError, ReviewError};
use crate::lifecycle::{self, Review};
use crate::policy::Decision;
use crate::request::{ActionRequest, Digest, Initiator, Principal};
use crate::standing::{STANDING_KIND, StandingTerms};
use crate::store::{Inserted, ListFilter, RequestId, RequestRecord, RequestState, Verdict};

/// A human's proposal of a standing grant: let `initiator` run `kind` on resources matching
/// `resource` for up to `duration` and `uses` actions, without asking each time.
#[derive(Debug, Clone)]
pub struct StandingProposal {
    /// The action kind, exactly.
    pub kind: String,
    /// The resources, as a glob.
    pub resource: String,
    /// The agent or service it is for (with the human it acts for, if any).
    pub initiator: Initiator,
    /// How long it lasts once approved.
    pub duration: Duration,
    /// How many actions it may approve.
    pub uses: u32,
    /// Why, for the reviewers.
    pub justification: String,
    /// The environment the covered actions run in, when the deciding rule names one (the
    /// policy is asked about the grant's actions in this environment; the gate's default
    /// context applies when `None`).
    pub environment: Option<String>,
}

impl Gate {
    /// Proposes a standing grant, proposed by the human `by`: it is checked against the policy
    /// (the rule deciding `kind` on the `resource` pattern for that initiator must allow
    /// standing grants, within its limits), then stored and delivered to the rule's reviewers
    /// like any request. Returns its request id; it takes effect once the rule's quorum
    /// approves it ([`standing`](crate::standing)). Refused with
    /// [`GuardError::InvalidRequest`] when `by` is not a human (an agent never creates one,
    /// for itself or anyone), or the policy does not allow it.
    pub async fn propose_standing(
        &self,
        proposal: StandingProposal,
        by: Principal,
    ) -> Result<RequestId, GuardError> {
        by.validate()
            .map_err(|e| GuardError::InvalidRequest(format!("the proposer is refused: {e}")))?;
        let initiator = Arc::new(proposal.initiator);
        initiator.validate().map_err(|e| {
            GuardError::InvalidRequest(format!("the standing grant's initiator is refused: {e}"))
        })?;
        let terms = StandingTerms {
            kind: proposal.kind,
            resource: proposal.resource,
            duration: proposal.duration,
            uses: proposal.uses,
            proposed_by: by,
        };
        // What the policy says of the actions the grant would cover, for that initiator.
        let mut probe = ActionRequest::new(terms.kind.clone(), terms.resource.clone());
        if let Some(environment) = proposal.environment {
            probe = probe.environment(environment);
        }
        let probe = admission::admit(probe, &initiator, &self.inner.context)
            .map_err(|refused| refused.error)?;
        let Evaluated {
            decision,
            policy_version,
        } = self.evaluate(&probe.request)?;
        let (rule, requirement) =
            lifecycle::propose_standing(&terms, &initiator, decision.clone())?;

        let id = RequestId::new();
        let request = terms.to_request(initiator.clone(), proposal.justification);
        let (now, subject, request) = self
            .open_reserved(id, request, &initiator, decision, policy_version.clone())
            .await?;
        let required = Required {
            rule,
            requirement,
            policy_version,
        };
        self.create_pending(id, now, request, subject.digest, required)
            .await?;
        self.barrier().await?;
        Ok(id)
    }

    /// Admits `request`, a request of a reserved kind the gate built (a standing grant's or a
    /// plan's) for `initiator`, and records it as `id`: `requested`, then `policy_decided`
    /// with `decision` and the `policy_version` that made it. Returns the time, the events'
    /// subject (with its digest) and the request.
    pub(super) async fn open_reserved(
        &self,
        id: RequestId,
        request: ActionRequest,
        initiator: &Arc<Initiator>,
        decision: Decision,
        policy_version: ArcStr,
    ) -> Result<(DateTime<Utc>, EventSubject, Arc<ActionRequest>), GuardError> {
        let admitted = admission::admit_reserved(request, initiator, &self.inner.context)
            .map_err(|refused| refused.error)?;
        let now = self.now();
        let subject = EventSubject {
            id,
            kind: admitted.request.kind.clone(),
            resource: admitted.request.resource.clone(),
            digest: admitted.digest,
        };
        let request = Arc::new(admitted.request);
        self.audit(subject.event(
            now,
            EventDetail::Requested {
                request: request.clone(),
            },
        ))
        .await?;
        self.audit(subject.event(
            now,
            EventDetail::PolicyDecided {
                decision,
                policy_version,
            },
        ))
        .await?;
        Ok((now, subject, request))
    }

    /// Approves the action `request` (not yet stored, as `id`) under an approved standing grant
    /// that covers it ([`lifecycle::covering_standing`]), if there is one: one of the grant's
    /// uses is taken by compare-and-set (so concurrent actions never take more uses than it
    /// has) and audited as `standing_grant_used`, then the action is stored already approved
    /// and audited as `approved_by_standing_grant`. `None` when no standing grant covers it.
    pub(super) async fn approve_by_standing(
        &self,
        id: RequestId,
        now: DateTime<Utc>,
        request: &Arc<ActionRequest>,
        digest: Digest,
        required: &Required,
    ) -> Result<Option<Submission>, GuardError> {
        let Required {
            rule,
            requirement,
            policy_version,
        } = required;
        let Some(initiator) = &request.initiator else {
            return Ok(None);
        };
        let filter = ListFilter {
            states: vec![RequestState::Approved],
            kind: Some(STANDING_KIND.into()),
            initiator: Some(initiator.principal.id.clone()),
            limit: Some(lifecycle::STANDING_SCAN),
            ..ListFilter::default()
        };
        let grant = loop {
            let grants = self.store_call(self.inner.store.list(&filter)).await?;
            let Some(grant) =
                lifecycle::covering_standing(&grants, request, rule.as_deref(), requirement, now)
            else {
                return Ok(None);
            };
            let step = lifecycle::use_standing(grant, id, digest)?;
            // Another action took a use first: look again.
            if let Some(used) = self.commit(grant, step).await? {
                break used;
            }
        };
        let step = lifecycle::open_under_standing(
            id,
            (**request).clone(),
            digest,
            rule.clone(),
            requirement.clone(),
            policy_version.clone(),
            &grant,
            to_delta(self.inner.grant_ttl),
            now,
        )?;
        self.store_covered(step, digest).await.map(Some)
    }

    /// Records and stores an action opened already approved (by a standing grant or a plan):
    /// its events first, then its record, then a barrier, so nobody is told of it before it is
    /// on disk. An action stored first under the same idempotency key by another task is
    /// re-attached to instead (the use taken for this one stays taken).
    pub(super) async fn store_covered(
        &self,
        step: lifecycle::Step,
        digest: Digest,
    ) -> Result<Submission, GuardError> {
        for event in step.events {
            self.audit(self.event(&step.next, event)).await?;
        }
        match self.store_call(self.inner.store.insert(&step.next)).await? {
            Inserted::Created => {}
            Inserted::Existing(existing) => {
                let key = step
                    .next
                    .request
                    .idempotency_key
                    .clone()
                    .unwrap_or_default();
                return self.reattach(&existing, &key, digest);
            }
        }
        self.barrier().await?;
        Ok(Submission::Pending(step.next.id))
    }

    /// The approved standing grants whose time is not over, newest first (each with its
    /// uses in [`RequestRecord::standing_uses`]; see
    /// [`StandingStatus`](crate::standing::StandingStatus)).
    pub async fn standing_grants(&self) -> Result<Vec<RequestRecord>, GuardError> {
        let now = self.now();
        let grants = self
            .store_call(self.inner.store.list(&ListFilter {
                states: vec![RequestState::Approved],
                kind: Some(STANDING_KIND.into()),
                ..ListFilter::default()
            }))
            .await?;
        Ok(grants
            .into_iter()
            .filter(|g| lifecycle::in_force(g, now))
            .collect())
    }

    /// Revokes standing grant `id` with `review`, a deny (deny wins over the approval), so it
    /// covers no action from now on. Who may revoke is who may review it, checked as for any
    /// review: the rule's approvers, never its initiator or the human it acts for. Refused for
    /// a request that is not a standing grant.
    pub async fn revoke_standing(
        &self,
        id: RequestId,
        mut review: Review,
    ) -> Result<(), ReviewError> {
        let record = self
            .get(id)
            .await
            .map_err(|e| ReviewError::Unavailable {
                component: Component::Store,
                message: e.to_string(),
            })?
            .ok_or(ReviewError::NotFound(id))?;
        if StandingTerms::of(&record).is_none() {
            return Err(ReviewError::NotStanding(id));
        }
        review.verdict = Verdict::Deny;
        self.decide(id, review).await.map(|_| ())
    }
}
