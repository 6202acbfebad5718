//! Standing grants: "allow this initiator `kind` on a resource pattern, for up to T and N
//! uses", approved once by a rule's own reviewers and quorum, then used by matching actions
//! without asking again.
//!
//! A standing grant is a request of its own, of the reserved kind [`STANDING_KIND`], whose
//! parameters are its [`StandingTerms`]. It goes through the same lifecycle as any request
//! (pending, reviewed on every channel, approved by the quorum, denied, expired), so stores and
//! channels need nothing new. Only a human proposes one ([`Gate::propose_standing`]); an
//! agent's action of a reserved kind is refused where it enters. Once approved it lasts for its
//! terms' duration; each action it covers is stored as its own request, approved under the
//! standing grant and audited on both (`standing_grant_used` on the grant,
//! `approved_by_standing_grant` on the action), and then runs like any approved action. A
//! reviewer revokes it by denying it (deny wins). The rules are in
//! [`lifecycle`](crate::lifecycle) (`propose_standing`, `covering_standing`, `use_standing`).
//!
//! [`Gate::propose_standing`]: crate::Gate::propose_standing

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::policy::duration;
use crate::request::{ActionRequest, Initiator, Principal};
use crate::store::RequestRecord;

/// The kind of a standing grant's request. Kinds beginning with `approvals.` are reserved:
/// an agent's action of such a kind is refused at admission.
pub const STANDING_KIND: &str = "approvals.standing_grant";

/// Whether `kind` is in the reserved `approvals.` namespace (compared without regard to case
/// or compatibility forms, so no spelling of it gets through).
pub fn is_reserved_kind(kind: &str) -> bool {
    // Every action's kind is checked here, on the allow path too. An ASCII kind whose first
    // visible character is not an `a` cannot have a canonical form beginning with
    // `approvals.` (its canonical form drops control characters, trims spaces and lowercases),
    // so most kinds are told apart without building that form.
    if kind.is_ascii() {
        let first = kind
            .bytes()
            .find(|b| !b.is_ascii_control() && !b.is_ascii_whitespace());
        if !matches!(first, Some(b'a' | b'A')) {
            return false;
        }
    }
    reserved_canonically(kind)
}

fn reserved_canonically(kind: &str) -> bool {
    crate::identity::canonical_key(kind.trim()).starts_with("approvals.")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// The shortcut never disagrees with the canonical form, whatever the ASCII kind.
        #[test]
        fn the_shortcut_agrees_with_the_canonical_form(kind in "[ \t\x00-\x1fAaPpRrOoVvLlSs.x_]{0,16}") {
            prop_assert_eq!(is_reserved_kind(&kind), reserved_canonically(&kind));
        }
    }

    #[test]
    fn reserved_kinds_are_found_under_any_spelling() {
        for kind in [
            STANDING_KIND,
            " Approvals.x",
            "\u{1}APPROVALS.x",
            "ａｐｐｒｏｖａｌｓ.x",
        ] {
            assert!(is_reserved_kind(kind), "{kind:?}");
        }
        for kind in ["data.export", "approvals", "aws.iam", "approval.x", ""] {
            assert!(!is_reserved_kind(kind), "{kind:?}");
        }
    }
}

/// What a standing grant allows: `kind` on resources matching `resource` (a glob), for its
/// request's initiator, for `duration` from its approval, at most `uses` times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StandingTerms {
    /// The action kind, exactly.
    pub kind: String,
    /// The resources, as a glob (`*` any run, `?` one character).
    pub resource: String,
    /// How long it lasts once approved.
    #[serde(rename = "for_seconds", with = "duration::serde_secs")]
    pub duration: Duration,
    /// How many actions it may approve.
    pub uses: u32,
    /// The human who proposed it.
    pub proposed_by: Principal,
}

impl StandingTerms {
    /// The terms of `record`, when it is a standing grant.
    pub fn of(record: &RequestRecord) -> Option<StandingTerms> {
        Self::of_request(&record.request)
    }

    /// The terms of `request`, when it is a standing grant's.
    pub fn of_request(request: &ActionRequest) -> Option<StandingTerms> {
        if request.kind != STANDING_KIND {
            return None;
        }
        serde_json::from_value((*request.params).clone()).ok()
    }

    /// The standing grant's request for `initiator`: its kind is [`STANDING_KIND`], its
    /// resource the pattern, its parameters these terms (so its digest binds them).
    pub fn to_request(&self, initiator: Arc<Initiator>, justification: String) -> ActionRequest {
        let params = serde_json::to_value(self).unwrap_or_default();
        let mut request = ActionRequest::new(STANDING_KIND, self.resource.clone()).params(params);
        request.summary = Some(arcstr::format!(
            "Standing grant: let {} run {} on {} up to {} time(s) within {}, without asking each time (proposed by {})",
            initiator.principal.label(),
            self.kind,
            self.resource,
            self.uses,
            duration::format_duration(self.duration),
            self.proposed_by.label(),
        ));
        request.justification = Some(justification.into());
        request.initiator = Some(initiator);
        request
    }
}

/// A standing grant as shown to people: its terms, and what is left of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StandingStatus {
    /// What it allows.
    pub terms: StandingTerms,
    /// How many actions it approved so far.
    pub used: u32,
    /// How many it may still approve.
    pub uses_left: u32,
    /// Until when it may be used (once approved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

impl StandingStatus {
    /// The status of `record`, when it is a standing grant.
    pub fn of(record: &RequestRecord) -> Option<StandingStatus> {
        let terms = StandingTerms::of(record)?;
        Some(StandingStatus {
            used: record.standing_uses,
            uses_left: terms.uses.saturating_sub(record.standing_uses),
            expires_at: record.grant_expires_at,
            terms,
        })
    }
}
