//! Who the SIEM records name as the actor, for every audit event type: OCSF `actor`,
//! `observables` and `unmapped.actors`, JSON lines `actor`/`actors`, CEF `suser`.

mod common;

use std::sync::Arc;

use approvals_audit::log::{LogEntry, LogVerifier, LogWriter, read_verified};
use approvals_audit::siem::{Exporter, Format, to_ocsf};
use approvals_core::{
    ActionRequest, AuditEvent, Decision, EventDetail, Initiator, Principal, RefusalCause,
    RejectCause, RequestId, Requirement, Verdict,
};
use chrono::{TimeDelta, Utc};
use common::*;
use serde_json::Value;

fn initiator() -> Initiator {
    Initiator::agent("deploy-bot")
        .on_behalf_of(Principal::human("dana@example.com"))
        .model("claude-opus-4")
        .session("sess-42")
}

fn action() -> ActionRequest {
    ActionRequest::new("iam.role.grant", "iam://prod/roles/admin").initiator(initiator())
}

fn sre(id: &str) -> Principal {
    Principal::human(id).with_groups(["sre", "change-board"])
}

fn event(id: RequestId, n: i64, detail: EventDetail) -> Value {
    let request = action();
    let e = AuditEvent {
        schema: 1,
        at: Utc::now() + TimeDelta::seconds(n),
        request_id: id,
        kind: request.kind.clone(),
        resource: request.resource.clone(),
        digest: request.digest(),
        detail,
    };
    serde_json::to_value(&e).unwrap()
}

/// One request through every event type (and a refused action), in log order; `executed`
/// written as older logs did (without `initiator`) when `old_executed`.
fn every_event(old_executed: bool) -> Vec<Value> {
    let id = RequestId::new();
    let init = Arc::new(initiator());
    let details = vec![
        EventDetail::Requested {
            request: Arc::new(action()),
        },
        EventDetail::PolicyDecided {
            decision: Decision::RequireApproval {
                rule: Some("prod".into()),
                requirement: Arc::new(Requirement::groups(["sre"])),
            },
            policy_version: "v1".into(),
        },
        EventDetail::Dispatched {
            channel: "slack".into(),
        },
        EventDetail::DispatchFailed {
            channel: "teams".into(),
            error: "timeout".into(),
        },
        EventDetail::Escalated {
            users: vec![],
            groups: vec!["dba".into()],
        },
        EventDetail::ReviewRejected {
            reviewer: Some(Principal::human("dana@example.com")),
            channel: "slack".into(),
            cause: RejectCause::SelfApproval,
            detail: "initiator".into(),
        },
        EventDetail::ReviewRejected {
            reviewer: None,
            channel: "slack".into(),
            cause: RejectCause::Forged,
            detail: "bad signature".into(),
        },
        EventDetail::Reviewed {
            reviewer: sre("sam@example.com"),
            verdict: Verdict::Approve,
            reason: Some("CHG-1234".into()),
            channel: "slack".into(),
            approvals: 1,
            quorum: 2,
            step_up: None,
        },
        EventDetail::Reviewed {
            reviewer: sre("alex@example.com"),
            verdict: Verdict::Approve,
            reason: Some("CHG-1234 second".into()),
            channel: "teams".into(),
            approvals: 2,
            quorum: 2,
            step_up: None,
        },
        EventDetail::Approved {
            approvers: vec![sre("sam@example.com"), sre("alex@example.com")],
        },
        EventDetail::GrantIssued {
            approvers: vec![sre("sam@example.com"), sre("alex@example.com")],
            expires_at: Utc::now(),
        },
        EventDetail::GrantRejected {
            cause: RejectCause::DigestMismatch,
            detail: "another action".into(),
        },
        EventDetail::GrantConsumed {},
        EventDetail::Executed {
            ok: true,
            error: None,
            initiator: (!old_executed).then(|| init.clone()),
        },
        EventDetail::Denied {
            by: sre("sam@example.com"),
            reason: Some("freeze".into()),
        },
        EventDetail::Cancelled {
            by: None,
            reason: Some("superseded".into()),
        },
        EventDetail::Expired {},
        EventDetail::Lapsed {},
    ];
    let mut events: Vec<Value> = details
        .into_iter()
        .enumerate()
        .map(|(i, d)| event(id, i as i64, d))
        .collect();
    // An action refused before it was recorded: its own request id, no `requested` event.
    events.push(event(
        RequestId::new(),
        100,
        EventDetail::RequestRefused {
            cause: RefusalCause::InitiatorMismatch,
            detail: "claimed agent other-bot".into(),
            size: 123,
            initiator: Some(init),
        },
    ));
    events
}

fn write(dir: &std::path::Path, events: &[Value]) -> Vec<(LogEntry, Value)> {
    let path = dir.join("audit.jsonl");
    let mut log = LogWriter::create(&path, config(), signer(1)).unwrap();
    for e in events {
        log.append(e).unwrap();
    }
    log.close().unwrap();
    let (report, entries) =
        read_verified(&path, &LogVerifier::new([signer(1).verifier()])).unwrap();
    assert!(report.is_ok(), "{report}");
    entries
        .into_iter()
        .map(|e| {
            let v = e.event_value().unwrap();
            (e, v)
        })
        .collect()
}

fn render(entries: &[(LogEntry, Value)], format: Format) -> Vec<String> {
    let exporter = Exporter::new(format);
    entries
        .iter()
        .map(|(e, _)| exporter.render(e, ORIGIN).unwrap())
        .collect()
}

fn json(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `(event type, actor.user.uid, actor.user.type_id, actor.app_uid)` for every record.
fn ocsf_actors(records: &[Value]) -> Vec<(String, String, u64, Option<String>)> {
    records
        .iter()
        .map(|r| {
            (
                r["unmapped"]["approvals"]["event"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                r["actor"]["user"]["uid"].as_str().unwrap().to_owned(),
                r["actor"]["user"]["type_id"].as_u64().unwrap(),
                r["actor"]["app_uid"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

fn row(
    event: &str,
    uid: &str,
    type_id: u64,
    app: Option<&str>,
) -> (String, String, u64, Option<String>) {
    (event.into(), uid.into(), type_id, app.map(str::to_owned))
}

#[test]
fn ocsf_names_the_right_actor_for_every_event_type() {
    let dir = tempfile::tempdir().unwrap();
    let entries = write(dir.path(), &every_event(false));
    let records = json(&render(&entries, Format::Ocsf));
    let agent = Some("deploy-bot");
    assert_eq!(
        ocsf_actors(&records),
        vec![
            row("requested", "dana@example.com", 1, agent),
            row("policy_decided", "approvals-gate", 3, None),
            row("dispatched", "approvals-gate", 3, None),
            row("dispatch_failed", "approvals-gate", 3, None),
            row("escalated", "approvals-gate", 3, None),
            row("review_rejected", "dana@example.com", 1, None),
            row("review_rejected", "approvals-gate", 3, None),
            row("reviewed", "sam@example.com", 1, None),
            row("reviewed", "alex@example.com", 1, None),
            row("approved", "sam@example.com", 1, None),
            row("grant_issued", "dana@example.com", 1, agent),
            row("grant_rejected", "dana@example.com", 1, agent),
            row("grant_consumed", "dana@example.com", 1, agent),
            row("executed", "dana@example.com", 1, agent),
            row("denied", "sam@example.com", 1, None),
            row("cancelled", "approvals-gate", 3, None),
            row("expired", "approvals-gate", 3, None),
            row("lapsed", "approvals-gate", 3, None),
            row("request_refused", "dana@example.com", 1, agent),
        ]
    );
    for r in &records {
        assert_eq!(r["class_uid"], 6003);
        assert_eq!(
            r["type_uid"].as_u64().unwrap(),
            600300 + r["activity_id"].as_u64().unwrap()
        );
    }
    let find = |name: &str| {
        records
            .iter()
            .find(|r| r["unmapped"]["approvals"]["event"] == name)
            .unwrap()
    };

    // Every approver can be found: the first is actor.user, all are observables and listed
    // with their groups at decision time.
    let approved = find("approved");
    assert_eq!(
        approved["actor"]["user"]["groups"],
        serde_json::json!([{"name": "sre"}, {"name": "change-board"}])
    );
    let observed: Vec<&str> = approved["observables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            assert_eq!(o["type_id"], 4);
            o["value"].as_str().unwrap()
        })
        .collect();
    assert_eq!(observed, ["sam@example.com", "alex@example.com"]);
    let listed: Vec<(&str, &str)> = approved["unmapped"]["actors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["uid"].as_str().unwrap(), a["role"].as_str().unwrap()))
        .collect();
    assert_eq!(
        listed,
        [
            ("sam@example.com", "approver"),
            ("alex@example.com", "approver")
        ]
    );

    // The initiator's events: the human in actor.user, the agent as the app, its session.
    let executed = find("executed");
    assert_eq!(executed["actor"]["app_name"], "deploy-bot");
    assert_eq!(executed["actor"]["user"]["type"], "User");
    assert_eq!(executed["actor"]["session"]["uid"], "sess-42");
    let roles: Vec<&str> = executed["unmapped"]["actors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["initiator", "on_behalf_of"]);

    let refused = find("request_refused");
    assert_eq!(refused["activity_id"], 1);
    assert_eq!(refused["status_id"], 2);
    assert_eq!(
        refused["severity_id"], 4,
        "claiming another identity is high"
    );
    assert!(
        refused["status_detail"]
            .as_str()
            .unwrap()
            .starts_with("initiator_mismatch: ")
    );
    assert_eq!(
        find("reviewed")["actor"]["user"]["groups"][0]["name"],
        "sre"
    );
}

#[test]
fn executed_without_an_initiator_falls_back_to_the_request_then_to_the_gate() {
    let dir = tempfile::tempdir().unwrap();
    let entries = write(dir.path(), &every_event(true));
    let executed = entries
        .iter()
        .position(|(_, e)| e["event"] == "executed")
        .unwrap();
    assert!(
        entries[executed].1.get("initiator").is_none(),
        "written as an old log"
    );
    // Through an exporter that saw the `requested` event: the request's initiator.
    let records = json(&render(&entries, Format::Ocsf));
    assert_eq!(
        records[executed]["actor"]["user"]["uid"],
        "dana@example.com"
    );
    assert_eq!(records[executed]["actor"]["app_uid"], "deploy-bot");
    assert_eq!(
        records[executed]["unmapped"]["approvals"], entries[executed].1,
        "the event itself is carried as logged"
    );
    // Without it (the export starts after the request): the gate.
    let (entry, event) = &entries[executed];
    let alone = to_ocsf(entry, event, ORIGIN, "0");
    assert_eq!(alone["actor"]["user"]["uid"], "approvals-gate");
    assert_eq!(alone["actor"]["user"]["type_id"], 3);
    let later = Exporter::new(Format::Ocsf);
    let record: Value = serde_json::from_str(&later.render(entry, ORIGIN).unwrap()).unwrap();
    assert_eq!(record["actor"]["user"]["uid"], "approvals-gate");
}

#[test]
fn json_lines_and_cef_name_the_same_actors() {
    let dir = tempfile::tempdir().unwrap();
    let entries = write(dir.path(), &every_event(true));
    let records = json(&render(&entries, Format::JsonLines));
    let cef = render(&entries, Format::Cef);
    let by = |name: &str| {
        let i = entries
            .iter()
            .position(|(_, e)| e["event"] == name)
            .unwrap();
        (&records[i], &cef[i])
    };
    let (approved, approved_cef) = by("approved");
    assert_eq!(approved["actor"]["id"], "sam@example.com");
    assert_eq!(approved["actor"]["groups"][1], "change-board");
    let all: Vec<&str> = approved["actors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(all, ["sam@example.com", "alex@example.com"]);
    assert!(
        approved_cef.contains(" suser=sam@example.com "),
        "{approved_cef}"
    );

    for name in [
        "executed",
        "grant_consumed",
        "grant_issued",
        "request_refused",
    ] {
        let (rec, cef) = by(name);
        assert_eq!(rec["actor"]["id"], "deploy-bot", "{name}");
        assert_eq!(rec["actor"]["kind"], "agent", "{name}");
        assert_eq!(
            rec["actor"]["on_behalf_of"]["id"], "dana@example.com",
            "{name}"
        );
        assert!(cef.contains(" suser=deploy-bot "), "{name}: {cef}");
    }
    let (refused, refused_cef) = by("request_refused");
    assert_eq!(refused["outcome"], "failure");
    assert_eq!(refused["severity"], "high");
    // CEF names the event for people: `...|request_refused|Action refused before review|8|`.
    assert!(
        refused_cef.contains("|request_refused|Action refused before review|8|"),
        "{refused_cef}"
    );
    let (expired, cef) = by("expired");
    assert_eq!(expired["actor"]["id"], "approvals-gate");
    assert!(cef.contains(" suser=approvals-gate "), "{cef}");
}

#[test]
fn a_review_refused_for_a_spoofed_identity_is_high_severity() {
    let dir = tempfile::tempdir().unwrap();
    let id = RequestId::new();
    let events = vec![
        event(
            id,
            0,
            EventDetail::Requested {
                request: Arc::new(action()),
            },
        ),
        event(
            id,
            1,
            EventDetail::ReviewRejected {
                reviewer: Some(Principal::human("dana\u{200B}@example.com")),
                channel: "slack".into(),
                cause: RejectCause::InvalidIdentity,
                detail: "U+200B".into(),
            },
        ),
    ];
    let entries = write(dir.path(), &events);
    let records = json(&render(&entries, Format::JsonLines));
    assert_eq!(records[1]["severity"], "high", "{}", records[1]);
    let cef = render(&entries, Format::Cef);
    assert!(cef[1].contains("|Review refused|8|"), "{}", cef[1]);
}

/// The gate mints and revokes credentials: OCSF Create and Delete by the gate, a sweep's
/// revocation (something outlived its run) at medium severity; the lease's id, scope and
/// expiry travel in `unmapped`, and there is no secret to leak (the event has none).
#[test]
fn credential_events_are_the_gates_create_and_delete() {
    use approvals_core::credential::{CredentialLease, RevokeReason};
    let dir = tempfile::tempdir().unwrap();
    let id = RequestId::new();
    let lease = CredentialLease {
        id: "apr_0123456789abcdef0123456789abcdef".into(),
        scope: "SELECT on public.invoices".into(),
        expires_at: Utc::now(),
    };
    let details = [
        EventDetail::CredentialIssued {
            credential: lease.clone(),
        },
        EventDetail::CredentialRevoked {
            credential: lease.clone(),
            reason: RevokeReason::Finished,
        },
        EventDetail::CredentialRevoked {
            credential: lease,
            reason: RevokeReason::Swept,
        },
    ];
    let events: Vec<Value> = details
        .into_iter()
        .enumerate()
        .map(|(i, d)| event(id, i as i64, d))
        .collect();
    let entries = write(dir.path(), &events);
    let ocsf = json(&render(&entries, Format::Ocsf));
    let fields = |r: &Value| {
        (
            r["activity_id"].as_u64().unwrap(),
            r["severity_id"].as_u64().unwrap(),
            r["actor"]["user"]["uid"].as_str().unwrap().to_owned(),
        )
    };
    assert_eq!(
        ocsf.iter().map(fields).collect::<Vec<_>>(),
        [
            (1, 1, "approvals-gate".to_owned()),
            (4, 1, "approvals-gate".to_owned()),
            (4, 3, "approvals-gate".to_owned()),
        ]
    );
    assert_eq!(
        ocsf[0]["unmapped"]["approvals"]["credential"]["scope"],
        "SELECT on public.invoices"
    );
    assert_eq!(ocsf[2]["unmapped"]["approvals"]["reason"], "swept");
    let cef = render(&entries, Format::Cef);
    assert!(
        cef[0].contains("|credential_issued|Credential issued for the action|"),
        "{}",
        cef[0]
    );
    assert!(
        cef[1].contains("|credential_revoked|Credential revoked|"),
        "{}",
        cef[1]
    );
}

/// An action refused because a reviewer denied it within the rule's cool-down: an OCSF
/// Create that failed, at low severity, whose actor is the reviewer whose denial refused it;
/// the earlier request, the reason and the end of the cool-down travel in `unmapped`.
#[test]
fn a_resubmission_refused_names_the_reviewer_who_denied_it() {
    let dir = tempfile::tempdir().unwrap();
    let earlier = RequestId::new();
    let until = Utc::now() + TimeDelta::hours(1);
    let events = [event(
        RequestId::new(),
        0,
        EventDetail::ResubmissionRefused {
            earlier,
            by: Principal::human("sam@example.com").with_groups(["data-owners"]),
            reason: Some("not this quarter".into()),
            until,
        },
    )];
    let entries = write(dir.path(), &events);
    let ocsf = json(&render(&entries, Format::Ocsf));
    assert_eq!(ocsf[0]["activity_id"], 1, "{}", ocsf[0]);
    assert_eq!(ocsf[0]["severity_id"], 2);
    assert_eq!(ocsf[0]["status_id"], 2, "a refusal is a failure");
    assert_eq!(ocsf[0]["actor"]["user"]["uid"], "sam@example.com");
    assert_eq!(
        ocsf[0]["unmapped"]["approvals"]["earlier"],
        earlier.to_string()
    );
    let lines = json(&render(&entries, Format::JsonLines));
    assert_eq!(lines[0]["outcome"], "failure", "{}", lines[0]);
    assert_eq!(lines[0]["severity"], "low");
    assert_eq!(lines[0]["actor"]["id"], "sam@example.com");
    assert_eq!(lines[0]["event"]["reason"], "not this quarter");
    let cef = render(&entries, Format::Cef);
    assert!(
        cef[0].contains("|resubmission_refused|Action refused after a recent denial|"),
        "{}",
        cef[0]
    );
    assert!(cef[0].contains("suser=sam@example.com"), "{}", cef[0]);
}

#[test]
fn a_standing_grant_use_and_the_action_it_approved_name_the_grant_and_its_approvers() {
    let dir = tempfile::tempdir().unwrap();
    let (grant, action) = (RequestId::new(), RequestId::new());
    let approvers = vec![
        Principal::human("sam@example.com").with_groups(["sre"]),
        Principal::human("kim@example.com").with_groups(["sre"]),
    ];
    let events = [
        event(
            grant,
            0,
            EventDetail::StandingGrantUsed {
                request: action,
                action_digest: approvals_core::ActionRequest::new(
                    "deploy.restart",
                    "svc://prod/api",
                )
                .digest(),
                used: 2,
                uses: 5,
            },
        ),
        event(
            action,
            1,
            EventDetail::ApprovedByStandingGrant {
                standing: grant,
                approvers,
            },
        ),
    ];
    let entries = write(dir.path(), &events);
    let lines = json(&render(&entries, Format::JsonLines));
    assert_eq!(lines[0]["actor"]["kind"], "system", "{}", lines[0]);
    assert_eq!(lines[0]["event"]["request"], action.to_string());
    assert!(
        lines[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("(2 of 5)") && m.contains(&action.to_string())),
        "{}",
        lines[0]
    );
    assert_eq!(lines[1]["actor"]["id"], "sam@example.com", "{}", lines[1]);
    assert_eq!(lines[1]["outcome"], "success");
    let ocsf = json(&render(&entries, Format::Ocsf));
    assert_eq!(ocsf[1]["actor"]["user"]["uid"], "sam@example.com");
    let roles: Vec<&str> = ocsf[1]["unmapped"]["actors"]
        .as_array()
        .expect("actors")
        .iter()
        .filter_map(|a| a["role"].as_str())
        .collect();
    assert_eq!(roles, ["approver", "approver"]);
    assert_eq!(
        ocsf[1]["unmapped"]["approvals"]["standing"],
        grant.to_string()
    );
    let cef = render(&entries, Format::Cef);
    assert!(
        cef[0].contains("|standing_grant_used|Standing grant used|"),
        "{}",
        cef[0]
    );
    assert!(
        cef[1].contains("|approved_by_standing_grant|Request approved by a standing grant|"),
        "{}",
        cef[1]
    );
    assert!(cef[1].contains("suser=sam@example.com"), "{}", cef[1]);
}

/// A plan approving one of its items: the use is the gate's (on the plan), the action's
/// approval is its approvers' (on the action), each naming the other; item numbers are 1-based
/// for people and as recorded (from 0) in the event.
#[test]
fn a_plan_item_use_and_the_action_it_approved_name_the_plan_and_its_approvers() {
    let dir = tempfile::tempdir().unwrap();
    let (plan, action) = (RequestId::new(), RequestId::new());
    let approvers = vec![
        Principal::human("sam@example.com").with_groups(["sre"]),
        Principal::human("kim@example.com").with_groups(["sre"]),
    ];
    let events = [
        event(
            plan,
            0,
            EventDetail::PlanItemUsed {
                request: action,
                action_digest: ActionRequest::new("deploy.restart", "svc://prod/api").digest(),
                item: 2,
                items: 4,
            },
        ),
        event(
            action,
            1,
            EventDetail::ApprovedByPlan {
                plan,
                item: 2,
                approvers,
            },
        ),
    ];
    let entries = write(dir.path(), &events);

    let lines = json(&render(&entries, Format::JsonLines));
    assert_eq!(lines[0]["event_type"], "plan_item_used", "{}", lines[0]);
    assert_eq!(lines[0]["actor"]["id"], "approvals-gate");
    assert_eq!(lines[0]["actor"]["kind"], "system");
    assert_eq!(lines[0]["event"]["request"], action.to_string());
    assert_eq!(lines[0]["event"]["item"], 2);
    let message = lines[0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("(item 3 of 4)") && message.contains(&action.to_string()),
        "{message}"
    );
    assert_eq!(lines[1]["event_type"], "approved_by_plan", "{}", lines[1]);
    assert_eq!(lines[1]["actor"]["id"], "sam@example.com");
    assert_eq!(lines[1]["outcome"], "success");
    let ids: Vec<&str> = lines[1]["actors"]
        .as_array()
        .expect("actors")
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect();
    assert_eq!(ids, ["sam@example.com", "kim@example.com"]);
    let message = lines[1]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("by plan {plan}, item 3 "))
            && message.contains("(approved by sam@example.com, kim@example.com)"),
        "{message}"
    );

    let ocsf = json(&render(&entries, Format::Ocsf));
    assert_eq!(
        ocsf[0]["actor"]["user"]["uid"], "approvals-gate",
        "{}",
        ocsf[0]
    );
    assert_eq!(ocsf[0]["unmapped"]["actors"], serde_json::json!([]));
    assert_eq!(
        ocsf[1]["actor"]["user"]["uid"], "sam@example.com",
        "{}",
        ocsf[1]
    );
    let roles: Vec<(&str, &str)> = ocsf[1]["unmapped"]["actors"]
        .as_array()
        .expect("actors")
        .iter()
        .filter_map(|a| Some((a["uid"].as_str()?, a["role"].as_str()?)))
        .collect();
    assert_eq!(
        roles,
        [
            ("sam@example.com", "approver"),
            ("kim@example.com", "approver")
        ]
    );
    let observed: Vec<&str> = ocsf[1]["observables"]
        .as_array()
        .expect("observables")
        .iter()
        .filter_map(|o| o["value"].as_str())
        .collect();
    assert_eq!(observed, ["sam@example.com", "kim@example.com"]);
    assert_eq!(ocsf[1]["unmapped"]["approvals"]["plan"], plan.to_string());
    assert_eq!(ocsf[1]["unmapped"]["approvals"]["item"], 2);

    let cef = render(&entries, Format::Cef);
    assert!(
        cef[0].contains("|plan_item_used|Plan item used|"),
        "{}",
        cef[0]
    );
    assert!(cef[0].contains(" suser=approvals-gate "), "{}", cef[0]);
    assert!(
        cef[1].contains("|approved_by_plan|Request approved by a plan|"),
        "{}",
        cef[1]
    );
    assert!(cef[1].contains(" suser=sam@example.com "), "{}", cef[1]);
    assert!(
        cef[1].contains(" cs3=sam@example.com,kim@example.com "),
        "{}",
        cef[1]
    );
}

#[test]
fn an_edit_names_the_reviewer_who_made_it_and_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let id = RequestId::new();
    let asked = action().digest();
    let events = [event(
        id,
        0,
        EventDetail::Edited {
            by: sre("kim@example.com"),
            from_digest: asked,
            changes: vec![approvals_core::edit::FieldChange {
                field: "/role".into(),
                before: serde_json::json!("admin"),
                after: serde_json::json!("viewer"),
            }],
            decision: Decision::RequireApproval {
                rule: Some("role-grants".into()),
                requirement: Arc::new(Requirement::groups(["sre"])),
            },
            policy_version: "sha256:p".into(),
        },
    )];
    let entries = write(dir.path(), &events);

    let lines = json(&render(&entries, Format::JsonLines));
    assert_eq!(lines[0]["event_type"], "edited", "{}", lines[0]);
    assert_eq!(lines[0]["actor"]["id"], "kim@example.com");
    assert_eq!(lines[0]["event"]["from_digest"], asked.to_string());
    let message = lines[0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("kim@example.com edited")
            && message.contains("/role: admin → viewer")
            && message.contains(&asked.to_string()),
        "{message}"
    );

    let ocsf = json(&render(&entries, Format::Ocsf));
    assert_eq!(
        ocsf[0]["actor"]["user"]["uid"], "kim@example.com",
        "{}",
        ocsf[0]
    );
    let roles: Vec<(&str, &str)> = ocsf[0]["unmapped"]["actors"]
        .as_array()
        .expect("actors")
        .iter()
        .filter_map(|a| Some((a["uid"].as_str()?, a["role"].as_str()?)))
        .collect();
    assert_eq!(roles, [("kim@example.com", "reviewer")]);

    let cef = render(&entries, Format::Cef);
    assert!(
        cef[0].contains("|edited|Action edited by a reviewer|"),
        "{}",
        cef[0]
    );
    assert!(cef[0].contains(" suser=kim@example.com "), "{}", cef[0]);
}
