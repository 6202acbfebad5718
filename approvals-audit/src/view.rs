//! Read-only accessors over audit events (schema v1) as JSON, shared by the SIEM export and
//! the evidence report. Events are read as JSON rather than `AuditEvent` so that events with
//! fields or kinds added later (within schema v1) are still exported.

use chrono::{DateTime, Utc};
use serde_json::Value;

/// One audit event as JSON.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EventView<'a>(pub(crate) &'a Value);

/// Who did something, as far as the audit event says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The principal id (`approvals-gate` for the gate itself).
    pub id: String,
    /// `human`, `agent`, `service` or `system`.
    pub kind: String,
    /// The name shown to people, when recorded.
    pub display_name: Option<String>,
}

impl Actor {
    fn system() -> Self {
        Actor {
            id: "approvals-gate".into(),
            kind: "system".into(),
            display_name: None,
        }
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
        })
    }
}

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

    /// The initiator of a `requested` event.
    pub(crate) fn initiator(&self) -> Option<&'a Value> {
        self.get("request")?.get("initiator")
    }

    /// Who acted in this event: the reviewer, the denier or canceller, the initiator of a
    /// request, or the gate itself.
    pub(crate) fn actor(&self) -> Actor {
        let principal = match self.name() {
            "requested" => self.initiator().and_then(|i| i.get("principal")),
            "reviewed" | "review_rejected" => self.get("reviewer"),
            "denied" | "cancelled" => self.get("by"),
            _ => None,
        };
        principal
            .and_then(Actor::from_principal)
            .unwrap_or_else(Actor::system)
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

    /// Whether the operation the event records succeeded (`false` for refusals and errors).
    pub(crate) fn succeeded(&self) -> bool {
        match self.name() {
            "review_rejected" | "grant_rejected" | "dispatch_failed" => false,
            "executed" => self.get("ok").and_then(Value::as_bool).unwrap_or(false),
            _ => true,
        }
    }

    /// A reason, cause or error text, when the event has one.
    pub(crate) fn reason(&self) -> Option<String> {
        match self.name() {
            "review_rejected" | "grant_rejected" => Some(format!(
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
                Some("forged" | "self_approval" | "not_human") => 4,
                _ => 3,
            },
            "grant_rejected" => 4,
            "denied" | "dispatch_failed" | "expired" | "lapsed" => 2,
            "executed" if !self.succeeded() => 2,
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
                "{} reviewed {what}: {}",
                actor.id,
                self.str("verdict").unwrap_or("unknown")
            ),
            "review_rejected" => format!(
                "review by {} refused ({}) for {what}",
                actor.id,
                self.str("cause").unwrap_or("unknown")
            ),
            "approved" => format!("{what} approved by {}", self.approvers().join(", ")),
            "denied" => format!("{what} denied by {}", actor.id),
            "executed" if self.succeeded() => format!("{what} executed"),
            "executed" => format!("{what} failed"),
            other => format!("{what}: {other}"),
        }
    }
}
