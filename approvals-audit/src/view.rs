//! Read-only accessors over audit events (schema v1) as JSON, shared by the SIEM export and
//! the evidence report. Events are read as JSON rather than `AuditEvent` so that events with
//! fields or kinds added later (within schema v1) are still exported.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde_json::Value;

/// The longest value of an `edited` change shown in a message, in characters.
const CHANGE_CHARS: usize = 200;

/// One audit event as JSON.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EventView<'a>(pub(crate) &'a Value);

/// Who did something, as far as the audit event says.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Actor {
    /// The principal id (`approvals-gate` for the gate itself).
    pub id: String,
    /// `human`, `agent`, `service` or `system`.
    pub kind: String,
    /// The name shown to people, when recorded.
    pub display_name: Option<String>,
    /// The principal's groups as the event recorded them (a reviewer's groups at decision
    /// time); empty when none were recorded.
    pub groups: Vec<String>,
}

impl Actor {
    pub(crate) fn system() -> Self {
        Actor {
            id: "approvals-gate".into(),
            kind: "system".into(),
            display_name: None,
            groups: Vec::new(),
        }
    }

    /// Whether this is the gate itself rather than a principal named by the event.
    pub fn is_system(&self) -> bool {
        self.kind == "system"
    }

    pub(crate) fn from_principal(p: &Value) -> Option<Self> {
        Some(Actor {
            id: p.get("id")?.as_str()?.to_owned(),
            kind: p
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .to_owned(),
            display_name: p
                .get("display_name")
                .and_then(Value::as_str)
                .map(str::to_owned),
            groups: p
                .get("groups")
                .and_then(Value::as_array)
                .map(|g| {
                    g.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
        })
    }
}

/// Events whose actor is the request's initiator (the agent or service, and the human it acts
/// for). `executed` and `request_refused` carry it; the others are completed from the
/// request's `requested` event by the exporter.
pub(crate) const INITIATOR_EVENTS: [&str; 6] = [
    "requested",
    "grant_issued",
    "grant_rejected",
    "grant_consumed",
    "executed",
    "request_refused",
];

impl<'a> EventView<'a> {
    pub(crate) fn str(&self, key: &str) -> Option<&'a str> {
        self.0.get(key).and_then(Value::as_str)
    }

    pub(crate) fn get(&self, key: &str) -> Option<&'a Value> {
        self.0.get(key)
    }

    /// The event name (`requested`, `reviewed`, ...).
    pub(crate) fn name(&self) -> &'a str {
        self.str("event").unwrap_or("unknown")
    }

    pub(crate) fn at(&self) -> Option<DateTime<Utc>> {
        self.str("at")
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
    }

    pub(crate) fn request_id(&self) -> &'a str {
        self.str("request_id").unwrap_or("")
    }

    pub(crate) fn kind(&self) -> &'a str {
        self.str("kind").unwrap_or("")
    }

    pub(crate) fn resource(&self) -> &'a str {
        self.str("resource").unwrap_or("")
    }

    pub(crate) fn digest(&self) -> &'a str {
        self.str("digest").unwrap_or("")
    }

    /// The initiator an event names: a `requested` event's `request.initiator`, or the
    /// `initiator` of `executed` and `request_refused` events (and of events the exporter
    /// completed from the request's `requested` event).
    pub(crate) fn initiator(&self) -> Option<&'a Value> {
        self.get("request")
            .and_then(|r| r.get("initiator"))
            .or_else(|| self.get("initiator"))
            .filter(|i| i.is_object())
    }

    /// Whether the event's actor is the request's initiator.
    pub(crate) fn acted_by_initiator(&self) -> bool {
        INITIATOR_EVENTS.contains(&self.name())
    }

    /// Everyone who acted in this event, the principal actor first:
    ///
    /// - `requested`, `grant_issued`, `grant_rejected`, `grant_consumed`, `executed`,
    ///   `request_refused`: the initiator (agent or service), then the human it acts for;
    /// - `reviewed`, `review_rejected`: the reviewer (when known); `edited`: the reviewer who edited;
    /// - `approved`, `approved_by_standing_grant`, `approved_by_plan`: every approver (of the
    ///   request, or of the standing grant or plan that approved it), in the order recorded;
    /// - `denied`, `cancelled`: the person who denied or cancelled (when a person did);
    /// - `resubmission_refused`: the reviewer whose earlier denial refused it;
    /// - `policy_decided`, `dispatched`, `dispatch_failed`, `escalated`, `reminded`, `expired`, `lapsed`,
    ///   `standing_grant_used`, `plan_item_used` and anything unknown: the gate itself
    ///   (`approvals-gate`, kind `system`).
    ///
    /// Falls back to the gate when the event does not name the principal it should.
    pub(crate) fn actors(&self) -> Vec<Actor> {
        let one = |p: Option<&Value>| p.and_then(Actor::from_principal).into_iter().collect();
        let actors: Vec<Actor> = match self.name() {
            name if INITIATOR_EVENTS.contains(&name) => match self.initiator() {
                Some(i) => i
                    .get("principal")
                    .and_then(Actor::from_principal)
                    .into_iter()
                    .chain(i.get("on_behalf_of").and_then(Actor::from_principal))
                    .collect(),
                None => Vec::new(),
            },
            "reviewed" | "review_rejected" => one(self.get("reviewer")),
            // The reviewer who changed the action before approving it.
            "edited" => one(self.get("by")),
            // The reviewer whose earlier denial refused the action again.
            "denied" | "cancelled" | "resubmission_refused" => one(self.get("by")),
            "approved" | "approved_by_standing_grant" | "approved_by_plan" => self
                .get("approvers")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Actor::from_principal).collect())
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        if actors.is_empty() {
            vec![Actor::system()]
        } else {
            actors
        }
    }

    /// Who acted in this event: the first of [`Self::actors`].
    pub(crate) fn actor(&self) -> Actor {
        self.actors()
            .into_iter()
            .next()
            .unwrap_or_else(Actor::system)
    }

    /// The human the initiator acted for, in events whose actor is the initiator.
    pub(crate) fn on_behalf_of(&self) -> Option<Actor> {
        if !self.acted_by_initiator() {
            return None;
        }
        self.initiator()?
            .get("on_behalf_of")
            .and_then(Actor::from_principal)
    }

    /// The changes of an `edited` event, one line each as every surface writes them
    /// ([`FieldChange::line`](approvals_core::edit::FieldChange::line)): `/rows: 800 → 200`.
    pub(crate) fn changes(&self) -> Vec<String> {
        self.get("changes")
            .and_then(Value::as_array)
            .map(|changes| {
                changes
                    .iter()
                    .filter_map(|c| {
                        serde_json::from_value::<approvals_core::edit::FieldChange>(c.clone()).ok()
                    })
                    .map(|c| c.line(CHANGE_CHARS))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Principal ids in an `approvers` array.
    pub(crate) fn approvers(&self) -> Vec<String> {
        self.get("approvers")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.get("id").and_then(Value::as_str))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The 1-based item number of a `plan_item_used` or `approved_by_plan` event (the event
    /// records it from 0).
    pub(crate) fn plan_item(&self) -> Option<u64> {
        self.get("item")
            .and_then(Value::as_u64)
            .map(|i| i.saturating_add(1))
    }

    /// Whether the operation the event records succeeded (`false` for refusals and errors).
    pub(crate) fn succeeded(&self) -> bool {
        match self.name() {
            "review_rejected"
            | "grant_rejected"
            | "dispatch_failed"
            | "request_refused"
            | "resubmission_refused" => false,
            "executed" => self.get("ok").and_then(Value::as_bool).unwrap_or(false),
            _ => true,
        }
    }

    /// A reason, cause or error text, when the event has one.
    pub(crate) fn reason(&self) -> Option<String> {
        match self.name() {
            "review_rejected" | "grant_rejected" | "request_refused" => Some(format!(
                "{}: {}",
                self.str("cause").unwrap_or("unknown"),
                self.str("detail").unwrap_or("")
            )),
            "policy_decided" => self
                .get("decision")
                .and_then(|d| d.get("reason"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            "dispatch_failed" | "executed" => self.str("error").map(str::to_owned),
            _ => self.str("reason").map(str::to_owned),
        }
    }

    /// Severity on the OCSF scale: 1 informational, 2 low, 3 medium, 4 high.
    pub(crate) fn severity(&self) -> u8 {
        match self.name() {
            "review_rejected" => match self.str("cause") {
                // A spoofed spelling of an identity is as hostile as the self-approval it hides.
                Some("forged" | "self_approval" | "not_human" | "invalid_identity") => 4,
                _ => 3,
            },
            "grant_rejected" => 4,
            // An agent claiming another identity is an attack on invariant 11; an oversized
            // action may hide its content from reviewers; a malformed one is a client bug.
            "request_refused" => match self.str("cause") {
                Some("initiator_mismatch") => 4,
                Some("oversized") => 3,
                _ => 2,
            },
            // An agent asking again for an action a person just denied.
            "denied" | "resubmission_refused" | "dispatch_failed" | "expired" | "lapsed" => 2,
            "executed" if !self.succeeded() => 2,
            // A credential that outlived its run until a sweep found it, or one minted for an
            // action that then did not run.
            "credential_revoked" => match self.str("reason") {
                Some("swept") => 3,
                Some("not_run") => 2,
                _ => 1,
            },
            "policy_decided"
                if self
                    .get("decision")
                    .and_then(|d| d.get("outcome"))
                    .and_then(Value::as_str)
                    == Some("deny") =>
            {
                2
            }
            _ => 1,
        }
    }

    /// The policy version of a `policy_decided` event.
    pub(crate) fn policy_version(&self) -> Option<&'a str> {
        self.str("policy_version")
    }

    /// One sentence for people.
    pub(crate) fn message(&self) -> String {
        let actor = self.actor();
        let what = format!("{} on {}", self.kind(), self.resource());
        match self.name() {
            "requested" => format!("{} requested {what}", actor.id),
            "policy_decided" => format!(
                "policy decided {} for {what}",
                self.get("decision")
                    .and_then(|d| d.get("outcome"))
                    .and_then(Value::as_str)
                    .unwrap_or("unknown")
            ),
            "reviewed" => format!(
                "{} reviewed {what}: {}{}",
                actor.id,
                self.str("verdict").unwrap_or("unknown"),
                match self.get("step_up") {
                    Some(_) => " with a passkey step-up",
                    None => "",
                }
            ),
            "edited" => format!(
                "{} edited {what} before approving ({}; was {})",
                actor.id,
                self.changes().join("; "),
                self.str("from_digest").unwrap_or("unknown")
            ),
            "review_rejected" => format!(
                "review by {} refused ({}) for {what}",
                actor.id,
                self.str("cause").unwrap_or("unknown")
            ),
            "approved" => format!("{what} approved by {}", self.approvers().join(", ")),
            "approved_by_standing_grant" => format!(
                "{what} approved without asking by standing grant {} (approved by {})",
                self.str("standing").unwrap_or("unknown"),
                self.approvers().join(", ")
            ),
            "standing_grant_used" => format!(
                "standing grant for {what} used ({} of {}) by request {}",
                self.get("used").and_then(Value::as_u64).unwrap_or(0),
                self.get("uses").and_then(Value::as_u64).unwrap_or(0),
                self.str("request").unwrap_or("unknown")
            ),
            "approved_by_plan" => format!(
                "{what} approved without asking again by plan {}, item {} (approved by {})",
                self.str("plan").unwrap_or("unknown"),
                self.plan_item().unwrap_or(0),
                self.approvers().join(", ")
            ),
            "plan_item_used" => format!(
                "plan for {what} used (item {} of {}) by request {}",
                self.plan_item().unwrap_or(0),
                self.get("items").and_then(Value::as_u64).unwrap_or(0),
                self.str("request").unwrap_or("unknown")
            ),
            "denied" => format!("{what} denied by {}", actor.id),
            "request_refused" => format!(
                "{} was refused {what} ({})",
                actor.id,
                self.str("cause").unwrap_or("unknown")
            ),
            "reminded" => format!(
                "reviewers of {what} reminded ({} of {})",
                self.get("reminder").and_then(Value::as_u64).unwrap_or(0),
                self.get("of").and_then(Value::as_u64).unwrap_or(0)
            ),
            "resubmission_refused" => format!(
                "{what} refused without asking: {} denied it in request {}",
                actor.id,
                self.str("earlier").unwrap_or("unknown")
            ),
            "executed" if self.succeeded() => format!("{what} executed"),
            "executed" => format!("{what} failed"),
            other => format!("{what}: {other}"),
        }
    }
}

/// The initiators of the requests seen so far in one export, so that events which do not name
/// their initiator (`grant_issued`, `grant_rejected`, `grant_consumed`, and `executed` in logs
/// written before it did) are attributed to the initiator of the request's `requested` event
/// seen earlier, not to the gate.
///
/// Bounded: a request is forgotten when it ends (`executed`, `denied`, `expired`,
/// `cancelled`, `lapsed`, `request_refused`), and the oldest are forgotten beyond
/// [`Self::CAPACITY`] open requests, so following a log for months holds no growing state.
#[derive(Debug, Default)]
pub(crate) struct InitiatorMemo {
    seen: Mutex<(HashMap<String, Value>, VecDeque<String>)>,
}

impl Clone for InitiatorMemo {
    fn clone(&self) -> Self {
        let seen = self.seen.lock().map(|s| s.clone()).unwrap_or_default();
        InitiatorMemo {
            seen: Mutex::new(seen),
        }
    }
}

impl InitiatorMemo {
    /// Most open requests remembered.
    pub(crate) const CAPACITY: usize = 1 << 16;

    /// Learns from `event` and returns a copy of it with `initiator` filled in when its actor
    /// is the initiator, it names none, and the request's `requested` event was seen.
    pub(crate) fn complete(&self, event: &Value) -> Option<Value> {
        let v = EventView(event);
        let id = v.request_id();
        let Ok(mut guard) = self.seen.lock() else {
            return None;
        };
        let (map, order) = &mut *guard;
        if v.name() == "requested" {
            if let Some(initiator) = v.initiator()
                && map.insert(id.to_owned(), initiator.clone()).is_none()
            {
                order.push_back(id.to_owned());
                while map.len() > Self::CAPACITY {
                    match order.pop_front() {
                        Some(old) => {
                            map.remove(&old);
                        }
                        None => break,
                    }
                }
                // Ended requests leave their id in `order`; drop them now and then
                // (amortized constant time per event).
                if order.len() > 2 * Self::CAPACITY {
                    order.retain(|k| map.contains_key(k));
                }
            }
            return None;
        }
        let completed = if v.acted_by_initiator() && v.initiator().is_none() {
            map.get(id).map(|initiator| {
                let mut copy = event.clone();
                copy["initiator"] = initiator.clone();
                copy
            })
        } else {
            None
        };
        if matches!(
            v.name(),
            "executed"
                | "denied"
                | "expired"
                | "cancelled"
                | "lapsed"
                | "request_refused"
                | "resubmission_refused"
        ) {
            map.remove(id);
        }
        completed
    }
}
