//! Who acted, in OCSF 1.3.0 terms: `actor`, `observables` and `unmapped.actors` of an event.
//!
//! | event | `actor.user` | `actor.app_name` / `app_uid` |
//! |---|---|---|
//! | `requested`, `grant_issued`, `grant_rejected`, `grant_consumed`, `executed`, `request_refused` | the human the initiator acts for, else the initiator itself | the initiator (agent or service) |
//! | `reviewed`, `review_rejected` | the reviewer, with the groups recorded at decision time (the gate when unknown) | |
//! | `approved`, `approved_by_standing_grant`, `approved_by_plan` | the first approver; all of them in `observables` and `unmapped.actors` | |
//! | `denied`, `cancelled` | the person who denied or cancelled (the gate when none did) | |
//! | `policy_decided`, `dispatched`, `dispatch_failed`, `escalated`, `expired`, `lapsed` | the gate (`approvals-gate`, type System) | |
//!
//! Why: OCSF 1.3.0's API Activity has one `actor` with one `user`, defined as "the user that
//! initiated the activity or the user context from which the activity was initiated", and
//! `actor.app_name` as "the client application or service that initiated the activity ... in
//! conjunction with the user". An agent acting for a person is exactly that: the person is the
//! user context, the agent the client application. A quorum of several approvers cannot be
//! several `actor.user`s, and one record per approver would break "one log entry, one record"
//! (`metadata.uid` is `<origin>/<seq>`) and double count approvals. So the first approver is
//! `actor.user`, and every approver is listed twice more: as an `observables` entry of type
//! User Name (type_id 4) — the attribute SIEMs index for pivoting on an entity, so a search by
//! any approver finds the approval — and in full (groups included) in `unmapped.actors`.

use serde_json::{Value, json};

use crate::view::{Actor, EventView};

/// OCSF `user.type_id` and `type` of a principal kind.
fn user_type(kind: &str) -> (u8, &'static str) {
    match kind {
        "human" => (1, "User"),
        "system" => (3, "System"),
        _ => (99, "Other"),
    }
}

/// An OCSF User object.
pub(crate) fn user(actor: &Actor) -> Value {
    let (type_id, type_name) = user_type(&actor.kind);
    let mut user = json!({
        "uid": actor.id,
        "name": actor.display_name.as_deref().unwrap_or(&actor.id),
        "type_id": type_id,
        "type": type_name,
    });
    if !actor.groups.is_empty() {
        user["groups"] = actor
            .groups
            .iter()
            .map(|g| json!({"name": g}))
            .collect::<Vec<_>>()
            .into();
    }
    user
}

/// The principal (non-gate) actors of an event as an `unmapped` list: `uid`, `kind`, `name`,
/// `groups`, and `role` (`initiator`, `on_behalf_of`, `reviewer`, `approver`, `by`).
fn listed(v: &EventView<'_>, actors: &[Actor]) -> Vec<Value> {
    actors
        .iter()
        .enumerate()
        .filter(|(_, a)| !a.is_system())
        .map(|(i, a)| {
            let role = match v.name() {
                _ if v.acted_by_initiator() => {
                    if i == 0 {
                        "initiator"
                    } else {
                        "on_behalf_of"
                    }
                }
                "approved" | "approved_by_standing_grant" | "approved_by_plan" => "approver",
                "reviewed" | "review_rejected" | "edited" => "reviewer",
                _ => "by",
            };
            let mut out = json!({
                "uid": a.id,
                "kind": a.kind,
                "name": a.display_name.as_deref().unwrap_or(&a.id),
                "role": role,
            });
            if !a.groups.is_empty() {
                out["groups"] = json!(a.groups);
            }
            out
        })
        .collect()
}

/// `(actor, observables, unmapped actors)` of an event.
pub(crate) fn actor(v: &EventView<'_>) -> (Value, Vec<Value>, Vec<Value>) {
    let actors = v.actors();
    let observable = |name: &str, value: &str| json!({"name": name, "type_id": 4, "type": "User Name", "value": value});
    let mut observables = Vec::new();
    let first = actors.first().cloned().unwrap_or_else(Actor::system);
    let actor = if v.acted_by_initiator() && !first.is_system() {
        let app = &first;
        let person = v.on_behalf_of();
        let user_actor = person.as_ref().unwrap_or(app);
        let mut actor = json!({
            "user": user(user_actor),
            "app_name": app.display_name.as_deref().unwrap_or(&app.id),
            "app_uid": app.id,
        });
        if let Some(session) = v
            .initiator()
            .and_then(|i| i.get("session"))
            .and_then(Value::as_str)
        {
            actor["session"] = json!({"uid": session});
        }
        observables.push(observable("actor.user.uid", &user_actor.id));
        if person.is_some() {
            observables.push(observable("actor.app_uid", &app.id));
        }
        actor
    } else {
        if !first.is_system() {
            for (i, a) in actors.iter().enumerate() {
                observables.push(observable(
                    if i == 0 {
                        "actor.user.uid"
                    } else {
                        "unmapped.actors.uid"
                    },
                    &a.id,
                ));
            }
        }
        json!({"user": user(&first)})
    };
    (actor, observables, listed(v, &actors))
}
