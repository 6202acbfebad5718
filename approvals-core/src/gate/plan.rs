//! Plans at the gate: submitting one, waiting for its decision, and approving an action that
//! is one of its items. The rules are in [`lifecycle`] (`plan_decision`, `covering_item`,
//! `use_plan_item`, `open_under_plan`); this executes them.

use arcstr::ArcStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tracing::Instrument;

use super::io::to_delta;
use super::submit::{Evaluated, Required};
use super::wait::ForDecision;
use super::{Gate, Submission};
use crate::error::{Component, GuardError};
use crate::lifecycle::{self, RecordRef};
use crate::observe;
use crate::plan::{PLAN_KIND, PlanItem, PlanTerms};
use crate::policy::Decision;
use crate::request::{ActionRequest, Digest, Initiator};
use crate::store::RequestId;

impl Gate {
    /// Submits a plan of `actions` for the gate's own initiator, as one request: reviewers see
    /// every action with its own digest and approve or deny the whole plan ([`plan`]). Wait
    /// for the decision with [`wait_plan`](Gate::wait_plan); then ask for each action as usual
    /// (`guard`, `submit`), naming the plan with [`ActionRequest::in_plan`]: an action whose
    /// digest is one of the plan's items runs once without asking again, and any other action
    /// is asked for on its own.
    ///
    /// Refused: any action the gate would refuse on its own (reserved kinds, so no plan holds
    /// a plan or a standing grant; sizes; initiator claims), an empty plan, more than
    /// [`MAX_PLAN_ITEMS`](crate::plan::MAX_PLAN_ITEMS) actions, actions that need approval
    /// under different rules, or a plan in which nothing needs approval. A plan with an action
    /// the policy denies is denied ([`GuardError::PolicyDenied`], naming the item).
    ///
    /// [`plan`]: crate::plan
    pub async fn submit_plan(
        &self,
        actions: &[ActionRequest],
        justification: Option<String>,
    ) -> Result<RequestId, GuardError> {
        let initiator = self
            .inner
            .initiator
            .clone()
            .ok_or(GuardError::NoInitiator)?;
        self.submit_plan_bound(initiator, actions, justification)
            .instrument(observe::request_span())
            .await
    }

    /// [`submit_plan`](Gate::submit_plan) for a caller a door has authenticated (see
    /// [`submit_as`](Gate::submit_as)).
    pub async fn submit_plan_as(
        &self,
        caller: &Initiator,
        actions: &[ActionRequest],
        justification: Option<String>,
    ) -> Result<RequestId, GuardError> {
        caller.validate().map_err(|e| {
            GuardError::InvalidRequest(format!("the caller's identity is refused: {e}"))
        })?;
        self.submit_plan_bound(Arc::new(caller.clone()), actions, justification)
            .instrument(observe::request_span())
            .await
    }

    async fn submit_plan_bound(
        &self,
        initiator: Arc<Initiator>,
        actions: &[ActionRequest],
        justification: Option<String>,
    ) -> Result<RequestId, GuardError> {
        lifecycle::check_plan_len(actions.len())?;
        let id = RequestId::new();
        // Each item is admitted as it will be when asked for, so its digest is the one the
        // agent's action will have; a refusal is recorded under the plan's id.
        let mut admitted = Vec::with_capacity(actions.len());
        for action in actions {
            let mut action = action.clone();
            action.plan = None;
            admitted.push(self.admit(id, action, &initiator).await?);
        }
        let requests: Vec<ActionRequest> = admitted.iter().map(|(r, _)| r.clone()).collect();
        let (decisions, policy_version) = self.evaluate_items(&requests)?;
        let decision = lifecycle::plan_decision(&requests, decisions.clone())?;

        let items = admitted
            .into_iter()
            .map(|(mut action, digest)| {
                // The item's initiator is the plan's.
                action.initiator = None;
                PlanItem { action, digest }
            })
            .collect();
        let request = PlanTerms { items }.to_request(initiator.clone(), justification);
        let (now, subject, request) = self
            .open_reserved(
                id,
                request,
                &initiator,
                decision.clone(),
                policy_version.clone(),
            )
            .await?;
        match decision {
            Decision::RequireApproval { rule, requirement } => {
                // No re-asking after a denial, in a plan either: the same plan, or any of its
                // actions, denied within its rule's cool-down refuses the plan at once.
                let mut earlier = Box::pin(self.denied_before(&request, &requirement, now)).await?;
                for (item, decision) in requests.iter().zip(&decisions) {
                    if earlier.is_some() {
                        break;
                    }
                    if let Decision::RequireApproval { requirement, .. } = decision {
                        earlier = Box::pin(self.denied_before(item, requirement, now)).await?;
                    }
                }
                if let Some(denied) = earlier {
                    observe::submitted(observe::Submitted::DeniedRecently);
                    self.audit(subject.event(now, denied.event())).await?;
                    self.barrier().await?;
                    return Err(denied.error());
                }
                let required = Required {
                    rule,
                    requirement,
                    policy_version,
                };
                self.create_pending(id, now, request, subject.digest, required)
                    .await?;
                self.barrier().await?;
                observe::submitted(observe::Submitted::Pending);
                Ok(id)
            }
            Decision::Deny { rule, reason } => {
                self.barrier().await?;
                observe::submitted(observe::Submitted::DeniedByPolicy);
                Err(GuardError::PolicyDenied {
                    kind: PLAN_KIND.into(),
                    resource: request.resource.to_string(),
                    rule: rule.to_string(),
                    reason,
                })
            }
            Decision::Allow { .. } => Err(GuardError::InvalidRequest(
                "nothing in this plan needs approval".into(),
            )),
        }
    }

    /// Waits for plan `id` to be decided: `Ok` once approved (its actions may then be asked
    /// for, naming it), or the refusal (denied, expired, cancelled). Refused for a request
    /// that is not a plan.
    pub async fn wait_plan(&self, id: RequestId) -> Result<(), GuardError> {
        // The read is boxed and its record dropped at once, so the waiting future keeps
        // room for neither.
        let is_plan = Box::pin(self.store_call(self.inner.store.get(id)))
            .await?
            .ok_or_else(|| GuardError::InvalidRequest(format!("no approval request {id}")))?
            .request
            .kind
            == PLAN_KIND;
        if !is_plan {
            return Err(GuardError::InvalidRequest(format!(
                "request {id} is not a plan"
            )));
        }
        let span = observe::request_span();
        span.record("request", tracing::field::display(id));
        // A plan's approval issues no grant (`None`); its kind was checked above.
        self.wait_for::<ForDecision>(id)
            .instrument(span)
            .await
            .map(|_| ())
    }

    /// Approves the action `request` (not yet stored, as `id`) as an item of the approved plan
    /// it names ([`lifecycle::covering_item`]), if it is one: the item is marked used by
    /// compare-and-set (so racing actions never run one item twice) and audited as
    /// `plan_item_used`, then the action is stored already approved and audited as
    /// `approved_by_plan`. `None` when it is not one of the unused items of `plan_id`, the
    /// plan it names.
    pub(super) async fn approve_by_plan(
        &self,
        plan_id: RequestId,
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
        let (plan, item) = loop {
            let Some(record) = self.store_call(self.inner.store.get(plan_id)).await? else {
                return Ok(None);
            };
            let Some(plan) = RecordRef::of(&record) else {
                return Ok(None);
            };
            let Some(item) =
                lifecycle::covering_item(&plan, request, digest, rule.as_deref(), requirement, now)
            else {
                return Ok(None);
            };
            let step = lifecycle::use_plan_item(&plan, item, id, digest);
            // Another action ran an item first: look again.
            if let Some(used) = self.commit(&record, step).await? {
                break (used, item);
            }
        };
        let step = lifecycle::open_under_plan(
            id,
            (**request).clone(),
            digest,
            rule.clone(),
            requirement.clone(),
            policy_version.clone(),
            &plan,
            item,
            to_delta(self.inner.grant_ttl),
            now,
        )?;
        self.store_covered(step, digest).await.map(Some)
    }

    /// The policy's decisions on a plan's items, all made by one version of the rules. A
    /// reload between two items shows as versions that differ, and the items are asked again;
    /// a policy that changes on every ask refuses the plan (`Unavailable`, component policy)
    /// rather than record decisions of several versions under one.
    fn evaluate_items(
        &self,
        items: &[ActionRequest],
    ) -> Result<(Vec<Decision>, ArcStr), GuardError> {
        const ASKS: usize = 3;
        for _ in 0..ASKS {
            let evaluated = items
                .iter()
                .map(|item| self.evaluate(item))
                .collect::<Result<Vec<Evaluated>, GuardError>>()?;
            let Some(first) = evaluated.first() else {
                return Err(GuardError::InvalidRequest("a plan needs an action".into()));
            };
            let version = first.policy_version.clone();
            if evaluated.iter().all(|e| e.policy_version == version) {
                return Ok((evaluated.into_iter().map(|e| e.decision).collect(), version));
            }
        }
        Err(GuardError::unavailable(
            Component::Policy,
            format!("the policy changed while the plan's items were asked, {ASKS} times"),
        ))
    }
}
