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
        request.summary = Some(arcstr::format!(
            "Plan of {n} action(s), each run once as shown: {}",
            named.join("; ")
        ));
        request.justification = justification.map(Into::into);
        request.initiator = Some(initiator);
        request
    }
}

/// How many characters of an item's parameters a surface's summary of the plan shows (on one
/// line, cut with `…`); the console shows them whole.
pub const ITEM_PARAMS_CHARS: usize = 240;

/// The items of a plan as text for a surface with limited room ([`PlanTerms::excerpt`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanExcerpt {
    /// The items shown, whole, in order.
    pub text: String,
    /// How many items are shown.
    pub shown: usize,
    /// How many items were left out (the last ones).
    pub left_out: usize,
}

impl PlanExcerpt {
    /// The standard words for the items left out: `… 7 more actions not shown. The approval
    /// covers all 10 (digest …); see every one in the console or with `approvals show <id>`.`
    /// Empty when none was.
    pub fn left_out_note(
        &self,
        id: impl std::fmt::Display,
        digest: impl std::fmt::Display,
    ) -> String {
        if self.left_out == 0 {
            return String::new();
        }
        let more = match self.left_out {
            1 => "1 more action".to_owned(),
            n => format!("{n} more actions"),
        };
        format!(
            "… {more} not shown. The approval covers all {} (digest {digest}); see every one \
             in the console or with `approvals show {id}`.",
            self.shown + self.left_out
        )
    }
}

impl PlanTerms {
    /// The items as text within `max_chars` characters: for each item, in order, its number,
    /// kind and resource, its digest, and its parameters on one line (cut at
    /// [`ITEM_PARAMS_CHARS`]); whole items only, as many as fit, and the rest counted. The first
    /// item is always shown, cut to the budget if it must be. Every surface that cannot show
    /// every item uses this, so each says the same and says what it left out.
    pub fn excerpt(&self, max_chars: usize) -> PlanExcerpt {
        let mut text = String::new();
        let mut chars = 0;
        let mut shown = 0;
        for (i, item) in self.items.iter().enumerate() {
            let block = item_text(i, item);
            let len = block.chars().count() + usize::from(shown > 0) * 2;
            if chars + len > max_chars {
                if shown == 0 {
                    text.push_str(&crate::text::truncate(&block, max_chars));
                    shown = 1;
                }
                break;
            }
            if shown > 0 {
                text.push_str("\n\n");
            }
            text.push_str(&block);
            chars += len;
            shown += 1;
        }
        PlanExcerpt {
            text,
            shown,
            left_out: self.items.len() - shown,
        }
    }
}

/// One item as text: `3. kind on resource`, its digest, its environment if any, and its
/// parameters on one line.
fn item_text(i: usize, item: &PlanItem) -> String {
    let action = &item.action;
    let mut text = format!(
        "{}. {} on {}\n   digest {}",
        i + 1,
        action.kind,
        action.resource,
        item.digest
    );
    if let Some(env) = action.context.environment.as_deref() {
        text.push_str("\n   environment ");
        text.push_str(env);
    }
    let params = serde_json::to_string(&*action.params).unwrap_or_default();
    text.push_str("\n   params ");
    text.push_str(&crate::text::truncate(&params, ITEM_PARAMS_CHARS));
    text
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
            used: record.plan_used.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(n: usize) -> PlanTerms {
        PlanTerms {
            items: (0..n)
                .map(|i| PlanItem {
                    action: ActionRequest::new("deploy.restart", format!("svc://prod/s{i}"))
                        .params(serde_json::json!({"reason": "x".repeat(500)})),
                    digest: ActionRequest::new("k", format!("{i}")).digest(),
                })
                .collect(),
        }
    }

    #[test]
    fn an_excerpt_shows_whole_items_within_its_budget_and_counts_the_rest() {
        let terms = plan(10);
        let all = terms.excerpt(usize::MAX);
        assert_eq!((all.shown, all.left_out), (10, 0));
        assert_eq!(all.left_out_note("id", "d"), "");
        for budget in [1, 50, 400, 800, 2500] {
            let some = terms.excerpt(budget);
            assert!(some.text.chars().count() <= budget, "{budget}");
            assert!(some.shown >= 1);
            assert_eq!(some.shown + some.left_out, 10);
            assert!(
                some.text
                    .starts_with(&"1. deploy.restart on svc://prod/s0"[..(budget - 1).min(34)])
            );
            if some.shown > 1 {
                assert!(
                    some.text
                        .contains(&format!("{}. deploy.restart", some.shown))
                );
                assert!(
                    !some
                        .text
                        .contains(&format!("{}. deploy.restart", some.shown + 1))
                );
            }
            let note = some.left_out_note("req", "sha256:x");
            assert!(
                note.contains(&format!("{} more action", some.left_out)),
                "{note}"
            );
            assert!(note.contains("covers all 10"), "{note}");
        }
        let cut = terms.excerpt(400);
        assert!(
            cut.text.contains("params {\"reason\":\"xxx"),
            "{}",
            cut.text
        );
        assert!(cut.text.contains('…'), "parameters are cut on their line");
    }
}
