//! Plan approval: an agent submits a plan of actions as one request; reviewers see every
//! action with its own digest and approve or deny the whole plan; each action then runs once,
//! with its own single-use grant bound to its own digest.
//!
//! A plan is a request of its own, of the reserved kind [`PLAN_KIND`], whose parameters are
//! its [`PlanTerms`]: each item is an action as the gate admitted it, with the digest it will
//! have when the agent asks for it. It goes through the same lifecycle as any request (pending,
//! reviewed on every channel, approved by the quorum of the rule that decides its items,
//! denied, expired), so stores and channels need nothing new. Once approved, an action that
//! names the plan ([`ActionRequest::plan`]) and whose digest is one of its items not yet used
//! is stored as its own request, approved under the plan, and audited on both
//! (`plan_item_used` on the plan, `approved_by_plan` on the action). An action whose digest is
//! not in the plan (other parameters, another resource, another initiator) is asked for like
//! any other. The rules are in [`lifecycle`](crate::lifecycle) (`open_plan`, `covering_item`,
//! `use_plan_item`).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::request::{ActionRequest, Digest, Initiator};
use crate::store::RequestRecord;

/// The kind of a plan's request (reserved: see
/// [`is_reserved_kind`](crate::standing::is_reserved_kind)).
pub const PLAN_KIND: &str = "approvals.plan";

/// The most actions one plan may hold.
pub const MAX_PLAN_ITEMS: usize = 100;

/// One action of a plan: as admitted (its initiator is the plan's, so it is not repeated),
/// and the digest it has when its initiator asks for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanItem {
    /// The action.
    pub action: ActionRequest,
    /// Its digest: what an approval of the plan lets run, exactly.
    pub digest: Digest,
}

/// What a plan holds: its actions, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanTerms {
    /// The actions.
    pub items: Vec<PlanItem>,
}

impl PlanTerms {
    /// The terms of `record`, when it is a plan.
    pub fn of(record: &RequestRecord) -> Option<PlanTerms> {
        Self::of_request(&record.request)
    }

    /// The terms of `request`, when it is a plan's.
    pub fn of_request(request: &ActionRequest) -> Option<PlanTerms> {
        if request.kind != PLAN_KIND {
            return None;
        }
        serde_json::from_value((*request.params).clone()).ok()
    }

    /// The plan's request for `initiator`: its kind is [`PLAN_KIND`], its parameters these
    /// terms (so its digest binds every item and its digest), its summary names the actions.
    pub fn to_request(
        &self,
        initiator: Arc<Initiator>,
        justification: Option<String>,
    ) -> ActionRequest {
        let params = serde_json::to_value(self).unwrap_or_default();
        let n = self.items.len();
        let mut request = ActionRequest::new(PLAN_KIND, format!("plan of {n} action(s)"));
        request.params = Arc::new(params);
        const NAMED: usize = 3;
        let mut named: Vec<String> = self
            .items
            .iter()
            .take(NAMED)
            .map(|i| format!("{} on {}", i.action.kind, i.action.resource))
            .collect();
        if n > NAMED {
            named.push(format!("and {} more", n - NAMED));
        }
        request.summary = Some(format!(
            "Plan of {n} action(s), each run once as shown: {}",
            named.join("; ")
        ));
        request.justification = justification;
        request.initiator = Some(initiator);
        request
    }
}

/// A plan as shown to people: its items and which of them have run under it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanStatus {
    /// The actions.
    pub items: Vec<PlanItem>,
    /// The positions (from 0) of the items an approval of the plan was used for.
    pub used: Vec<u32>,
}

impl PlanStatus {
    /// The status of `record`, when it is a plan.
    pub fn of(record: &RequestRecord) -> Option<PlanStatus> {
        let terms = PlanTerms::of(record)?;
        Some(PlanStatus {
            items: terms.items,
            used: record.plan_used.clone(),
        })
    }
}
