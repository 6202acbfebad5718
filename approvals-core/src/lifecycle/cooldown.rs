//! No asking again after a denial: while a rule's `cooldown_after_denial` runs, the same action
//! is refused at once with the earlier reviewer's reason, and nobody is asked.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::audit::EventDetail;
use crate::error::GuardError;
use crate::request::Digest;
use crate::store::{ListFilter, RequestRecord};

/// How many of the newest denials of one action a submit reads to find one that still
/// refuses it. Identical requests are refused while one denial's cool-down runs, so more
/// than a few denials of one action in a cool-down means requests that were open together.
pub const COOLDOWN_SCAN: usize = 32;

/// An earlier denial that refuses asking again for the same action.
#[derive(Debug, Clone, PartialEq)]
pub struct DeniedBefore {
    /// The denied request.
    pub earlier: crate::store::RequestId,
    /// Who denied it.
    pub by: crate::request::Principal,
    /// Their reason.
    pub reason: Option<String>,
    /// Until when the same action is refused.
    pub until: DateTime<Utc>,
}

impl DeniedBefore {
    /// The `resubmission_refused` event recorded for the refused request.
    pub fn event(&self) -> EventDetail {
        EventDetail::ResubmissionRefused {
            earlier: self.earlier,
            by: self.by.clone(),
            reason: self.reason.clone(),
            until: self.until,
        }
    }

    /// The caller's refusal.
    pub fn error(&self) -> GuardError {
        GuardError::DeniedRecently {
            id: self.earlier,
            by: self.by.id.clone(),
            reason: self.reason.clone(),
            until: self.until,
        }
    }
}

/// The denial among `denied` that refuses asking for the action with `action_key` at `now`,
/// given the deciding rule's `cooldown`. Only a reviewer's denial of the same action counts,
/// measured from when it was accepted; of several, the one that refuses longest. `denied` is
/// what the store listed for [`ListFilter::denied_action`]; each record is checked against
/// that filter here again, so a store that lists too much refuses nothing wrongly.
pub fn refusing_denial(
    denied: &[RequestRecord],
    action_key: Digest,
    cooldown: Duration,
    now: DateTime<Utc>,
) -> Option<DeniedBefore> {
    let cooldown = TimeDelta::from_std(cooldown).ok()?;
    let same_action = ListFilter {
        denied_action: Some(action_key),
        ..ListFilter::default()
    };
    denied
        .iter()
        .filter(|r| same_action.matches(r))
        .filter_map(|r| {
            let review = r.denial()?;
            let until = review.at.checked_add_signed(cooldown)?;
            (now < until).then(|| DeniedBefore {
                earlier: r.id,
                by: review.reviewer.clone(),
                reason: review.reason.clone(),
                until,
            })
        })
        .max_by_key(|d| d.until)
}
