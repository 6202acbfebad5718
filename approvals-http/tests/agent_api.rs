//! The agent API (`POST /v1/requests`, `/wait`, `/executions`, `/executions/outcome`): the
//! whole flow, the initiator taken from the token only, and every refusal changing nothing.

mod common;

use std::sync::Arc;
use std::time::Duration;

use approvals_audit::grant::{GrantClaims, sign_claims, verify_grant};
use approvals_audit::note::Signer;
use approvals_core::{
    Gate, Initiator, MemorySink, MemoryStore, Principal, RequestId, RequestState, RulePolicy, Store,
};
use approvals_http::{ApiClient, ReviewServer, SubmitStatus, Tokens};
use common::{Reply, call, conforms};
use http::Method;
use serde_json::{Value, json};

const AGENT: &str = "tok-agent-billing";
const OTHER_AGENT: &str = "tok-agent-other";
const SERVICE: &str = "tok-service-deploy";
const SAM: &str = "tok-human-sam";
const DANA: &str = "tok-human-dana";

const POLICY: &str = r#"
version = 1
default = "deny"

[[rules]]
name = "reads"
kind = "*.read"
effect = "allow"

[[rules]]
name = "no-iam"
kind = "iam.*"
effect = "deny"
reason = "IAM changes go through the access portal"

[[rules]]
name = "exports"
kind = "data.export"
effect = "require_approval"
approvers = { groups = ["security"] }
timeout = "15m"

[[rules]]
name = "deletes"
kind = "data.delete"
effect = "require_approval"
approvers = { groups = ["security"] }
timeout = "15m"
cooldown_after_denial = "1h"

[[rules]]
name = "archives"
kind = "data.archive"
effect = "require_approval"
approvers = { groups = ["security"] }
quorum = 2
timeout = "20s"
remind_at = ["5%"]
"#;

struct Agents {
    gate: Gate,
    store: Arc<MemoryStore>,
    audit: Arc<MemorySink>,
    server: ReviewServer,
    signer: Signer,
}

fn tokens() -> Tokens {
    Tokens::new()
        .with_initiator(
            AGENT,
            Initiator::agent("billing-agent")
                .on_behalf_of(Principal::human("dana@example.com"))
                .model("claude-opus-4"),
        )
        .with_initiator(OTHER_AGENT, Initiator::agent("other-agent"))
        .with_initiator(SERVICE, Initiator::service("deploy-pipeline"))
        .with_token(
            SAM,
            Principal::human("sam@example.com").with_groups(["security"]),
        )
        .with_token(
            DANA,
            Principal::human("dana@example.com").with_groups(["security"]),
        )
}

/// A server-mode gate: no initiator of its own, so every action comes through a door.
fn agents() -> Agents {
    let store = Arc::new(MemoryStore::new());
    let audit = Arc::new(MemorySink::new());
    let gate = Gate::builder()
        .policy(RulePolicy::from_toml(POLICY).expect("policy"))
        .store_shared(store.clone())
        .audit_shared(audit.clone())
        .poll_interval(Duration::from_millis(50))
        .build()
        .expect("gate");
    let signer = Signer::generate("grants.test").expect("signer");
    let server = ReviewServer::builder(gate.clone())
        .tokens(tokens())
        .grant_signer(signer.clone())
        .build();
    Agents {
        gate,
        store,
        audit,
        server,
        signer,
    }
}

fn export() -> Value {
    json!({
        "kind": "data.export",
        "resource": "db://prod/customers",
        "params": {"rows": 5000, "format": "csv"},
        "justification": "quarterly report",
        "environment": "production"
    })
}

impl Agents {
    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        call(&self.server, Method::POST, path, token, Some(body)).await
    }
    async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        call(&self.server, Method::GET, path, token, None).await
    }
    async fn submit_pending(&self) -> RequestId {
        let r = self.post("/v1/requests", Some(AGENT), export()).await;
        assert_eq!(r.status, 202, "{}", r.text());
        r.json()["id"]
            .as_str()
            .and_then(|s| RequestId::parse(s).ok())
            .expect("id")
    }
    async fn stored(&self) -> usize {
        self.store
            .list(&approvals_core::ListFilter::default())
            .await
            .expect("list")
            .len()
    }
    fn events(&self, id: RequestId) -> Vec<&'static str> {
        self.audit
            .for_request(id)
            .iter()
            .map(|e| e.detail.name())
            .collect()
    }
    fn count(&self, id: RequestId, name: &str) -> usize {
        self.events(id).iter().filter(|n| **n == name).count()
    }
}

#[tokio::test]
async fn pending_approved_executed_once_with_a_verifiable_grant_token() {
    let a = agents();
    let r = a
        .post(
            "/v1/requests",
            Some(AGENT),
            json!({"kind": "data.export", "resource": "db://prod/customers", "params": {"rows": 5000}, "session": "run-7"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let body = r.json();
    assert_eq!(body["status"], "pending");
    assert_eq!(body["state"], "pending");
    assert_eq!(body["policy_rule"], "exports");
    let id = RequestId::parse(body["id"].as_str().expect("id")).expect("uuid");
    assert!(
        body["digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:"))
    );
    assert!(body["expires_at"].is_string());
    assert_eq!(
        r.header("location"),
        Some(format!("/v1/requests/{id}").as_str())
    );

    // The initiator is the token's: agent, human, model; the session is the caller's own.
    let record = a.gate.get(id).await.expect("store").expect("record");
    let initiator = record.request.initiator.as_deref().expect("initiator");
    assert_eq!(initiator.principal.id, "billing-agent");
    assert_eq!(
        initiator.on_behalf_of.as_ref().map(|h| h.id.as_str()),
        Some("dana@example.com")
    );
    assert_eq!(initiator.model.as_deref(), Some("claude-opus-4"));
    assert_eq!(initiator.session.as_deref(), Some("run-7"));

    // A wait that runs out answers "still pending", not an error.
    let r = a
        .get(&format!("/v1/requests/{id}/wait?timeout=0"), Some(AGENT))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["state"], "pending");
    assert!(r.json()["grant_token"].is_null());

    // The human it acts for cannot approve; a reviewer can, while the agent waits.
    a.post(&format!("/v1/requests/{id}/approve"), Some(DANA), json!({}))
        .await
        .problem(403, "self_approval");
    let waiter = {
        let server = a.server.clone();
        tokio::spawn(async move {
            call(
                &server,
                Method::GET,
                &format!("/v1/requests/{id}/wait?timeout=30"),
                Some(AGENT),
                None,
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = a
        .post(
            &format!("/v1/requests/{id}/approve"),
            Some(SAM),
            json!({"reason": "ok for Q3"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let waited = waiter.await.expect("waiter");
    assert_eq!(waited.status, 200, "{}", waited.text());
    let waited = waited.json();
    assert_eq!(waited["state"], "approved");
    assert_eq!(waited["decided_by"], "sam@example.com");
    let token = waited["grant_token"]
        .as_str()
        .expect("grant token")
        .to_owned();

    // The token verifies with the server's public key alone, for this exact action.
    let claims = verify_grant(
        &token,
        &[a.server.grant_verifier()],
        &record.digest,
        chrono::Utc::now(),
    )
    .expect("verifies");
    assert_eq!(claims.request_id, id);
    assert_eq!(claims.approvers, ["sam@example.com"]);
    assert!(claims.human_approved);
    let key = a.get("/v1/grant-key", None).await;
    assert_eq!(key.text().trim(), a.server.grant_verifier().to_string());

    // Consumed once; a replay is refused, audited, and changes nothing.
    let path = format!("/v1/requests/{id}/executions");
    let r = a
        .post(&path, Some(AGENT), json!({"grant_token": token}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["state"], "executing");
    a.post(&path, Some(AGENT), json!({"grant_token": token}))
        .await
        .problem(409, "grant_used");
    assert_eq!(a.count(id, "grant_consumed"), 1);
    assert_eq!(a.count(id, "grant_rejected"), 1);

    let outcome = format!("/v1/requests/{id}/executions/outcome");
    let r = a.post(&outcome, Some(AGENT), json!({"ok": true})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["state"], "executed");
    a.post(
        &outcome,
        Some(AGENT),
        json!({"ok": false, "error": "again"}),
    )
    .await
    .problem(409, "grant_used");
    assert_eq!(a.count(id, "executed"), 1);
    let record = a.gate.get(id).await.expect("store").expect("record");
    assert_eq!(record.state, RequestState::Executed);
}

#[tokio::test]
async fn denied_answers_the_reviewers_reason_and_no_grant() {
    let a = agents();
    let id = a.submit_pending().await;
    a.post(
        &format!("/v1/requests/{id}/deny"),
        Some(SAM),
        json!({"reason": "use the anonymised view"}),
    )
    .await;
    let r = a
        .get(&format!("/v1/requests/{id}/wait?timeout=5"), Some(AGENT))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["state"], "denied");
    assert_eq!(body["reason"], "use the anonymised view");
    assert_eq!(body["decided_by"], "sam@example.com");
    assert!(body["grant_token"].is_null());

    // Cancelled likewise.
    let id = a.submit_pending().await;
    a.post(
        &format!("/v1/requests/{id}/cancel"),
        Some(AGENT),
        json!({"reason": "not needed"}),
    )
    .await;
    let body = a
        .get(&format!("/v1/requests/{id}/wait"), Some(AGENT))
        .await
        .json();
    assert_eq!(body["state"], "cancelled");
    assert_eq!(body["reason"], "not needed");
}

#[tokio::test]
async fn allowed_runs_with_its_grant_and_the_outcome_is_recorded() {
    let a = agents();
    let r = a
        .post(
            "/v1/requests",
            Some(SERVICE),
            json!({"kind": "db.read", "resource": "db://analytics/events"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["status"], "allowed");
    assert_eq!(body["policy_rule"], "reads");
    let id = RequestId::parse(body["id"].as_str().expect("id")).expect("uuid");
    let token = body["grant_token"].as_str().expect("token").to_owned();
    assert_eq!(a.stored().await, 0, "allowed actions are not stored");

    // Another agent cannot use it.
    a.post(
        &format!("/v1/requests/{id}/executions"),
        Some(OTHER_AGENT),
        json!({"grant_token": token}),
    )
    .await
    .problem(404, "not_found");
    let r = a
        .post(
            &format!("/v1/requests/{id}/executions"),
            Some(SERVICE),
            json!({"grant_token": token}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    a.post(
        &format!("/v1/requests/{id}/executions"),
        Some(SERVICE),
        json!({"grant_token": token}),
    )
    .await
    .problem(409, "grant_used");
    let r = a
        .post(
            &format!("/v1/requests/{id}/executions/outcome"),
            Some(SERVICE),
            json!({"ok": false, "error": "timeout reading events"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["state"], "failed");
    assert_eq!(a.count(id, "grant_consumed"), 1);
    let executed: Vec<Value> = a
        .audit
        .for_request(id)
        .iter()
        .filter(|e| e.detail.name() == "executed")
        .map(|e| serde_json::to_value(e).expect("event"))
        .collect();
    assert_eq!(executed.len(), 1);
    assert_eq!(executed[0]["ok"], false);
    assert_eq!(executed[0]["error"], "timeout reading events");
    a.post(
        &format!("/v1/requests/{id}/executions/outcome"),
        Some(SERVICE),
        json!({"ok": true}),
    )
    .await
    .problem(404, "not_found");
}

/// After a reviewer's denial under a rule with `cooldown_after_denial`, the same action from
/// the same agent, reworded, is a 409 `denied_recently` with the reviewer and reason: nothing
/// stored, nobody asked. Another agent asking for it is asked about.
#[tokio::test]
async fn asking_again_after_a_denial_is_a_409_with_the_reviewers_reason() {
    let a = agents();
    let delete = |why: &str| {
        json!({
            "kind": "data.delete",
            "resource": "db://prod/customers",
            "params": {"where": "inactive > 365"},
            "justification": why,
            "environment": "production"
        })
    };
    let r = a.post("/v1/requests", Some(AGENT), delete("cleanup")).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["id"].as_str().expect("id").to_owned();
    let r = a
        .post(
            &format!("/v1/requests/{id}/deny"),
            Some(SAM),
            json!({"reason": "legal hold on these rows"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let stored = a.stored().await;
    for why in ["cleanup", "cleanup, approved by legal"] {
        let r = a.post("/v1/requests", Some(AGENT), delete(why)).await;
        let p = r.problem(409, "denied_recently");
        assert_eq!(p["state"], "denied");
        assert_eq!(p["decided_by"], "sam@example.com");
        assert_eq!(p["reason"], "legal hold on these rows");
        assert!(p["detail"].as_str().is_some_and(|d| d.contains(&id)), "{p}");
        let doc = a.get("/openapi.json", None).await.json();
        conforms(&doc, "Problem", &p);
        assert!(
            doc["components"]["schemas"]["Problem"]["properties"]["code"]["examples"]
                .as_array()
                .is_some_and(|codes| codes.contains(&json!("denied_recently")))
        );
    }
    assert_eq!(a.stored().await, stored, "a refusal stores nothing");
    let r = a
        .post("/v1/requests", Some(OTHER_AGENT), delete("cleanup"))
        .await;
    assert_eq!(
        r.status,
        202,
        "another agent's request is asked about: {}",
        r.text()
    );
}

/// A preview goes through the agent API as the core type: shown in the request's view as sent,
/// documented in the OpenAPI document, bound to the digest; a malformed one is a 400 and
/// stores nothing.
#[tokio::test]
async fn a_preview_is_shown_as_sent_bound_and_checked() {
    let a = agents();
    let doc = a.get("/openapi.json", None).await.json();
    let with_preview = |preview: Value| {
        let mut body = export();
        body["context"] = json!({ "preview": preview });
        body
    };
    let rows = json!({
        "type": "rows",
        "columns": ["id", "email"],
        "rows": [["1", "ann@example.com"], ["2", "bob@example.com"]],
        "total": 15204
    });
    let variants = doc["components"]["schemas"]["Context"]["properties"]["preview"]["oneOf"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut digests = Vec::new();
    for preview in [
        rows.clone(),
        json!({"type": "diff", "text": "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-1\n+2\n"}),
        json!({"type": "dry_run", "text": "Plan: 1 to change."}),
    ] {
        // The OpenAPI document describes each form.
        let documented = variants
            .iter()
            .find(|v| v["properties"]["type"]["enum"][0] == preview["type"]);
        conforms(&doc, "Context", &json!({ "preview": preview }));
        let variant = documented.unwrap_or_else(|| panic!("{preview} is not documented"));
        for key in preview.as_object().expect("object").keys() {
            assert!(variant["properties"][key].is_object(), "{key} of {preview}");
        }
        let r = a
            .post("/v1/requests", Some(AGENT), with_preview(preview.clone()))
            .await;
        assert_eq!(r.status, 202, "{}", r.text());
        let id = r.json()["id"].as_str().expect("id").to_owned();
        let view = a.get(&format!("/v1/requests/{id}"), Some(SAM)).await.json();
        assert_eq!(view["context"]["preview"], preview, "shown as sent");
        digests.push(view["digest"].clone());
    }
    let plain = a.submit_pending().await;
    let view = a
        .get(&format!("/v1/requests/{plain}"), Some(SAM))
        .await
        .json();
    digests.push(view["digest"].clone());
    digests.sort_by_key(Value::to_string);
    digests.dedup();
    assert_eq!(
        digests.len(),
        4,
        "each preview is its own action to approve"
    );

    let stored = a.stored().await;
    // Not a preview at all: a 400. Well-formed JSON that breaks a rule of rows: a 422.
    for (bad, status) in [
        (json!({"type": "screenshot", "text": "x"}), 400),
        (json!({"type": "diff"}), 400),
        (json!({"type": "diff", "text": "x", "hidden": "y"}), 400),
        (json!("--- a/x"), 400),
        (
            json!({"type": "rows", "columns": ["a", "b"], "rows": [["1"]]}),
            422,
        ),
        (json!({"type": "rows", "columns": [], "rows": []}), 422),
        (
            json!({"type": "rows", "columns": ["a"], "rows": [["1"], ["2"]], "total": 1}),
            422,
        ),
    ] {
        let r = a
            .post("/v1/requests", Some(AGENT), with_preview(bad.clone()))
            .await;
        let code = if status == 400 {
            "bad_request"
        } else {
            "invalid_request"
        };
        let p = r.problem(status, code);
        assert!(
            p["detail"].as_str().is_some_and(|d| d.contains("preview")),
            "{bad}: {p}"
        );
    }
    assert_eq!(
        a.stored().await,
        stored,
        "a malformed preview stores nothing"
    );
}

/// A waiting agent is told through its wait answer that reviewers were reminded and nobody has
/// reviewed its request yet; once anyone has, it is not.
#[tokio::test]
async fn a_wait_says_when_nobody_has_reviewed_at_a_reminder() {
    let a = agents();
    let r = a
        .post(
            "/v1/requests",
            Some(AGENT),
            json!({"kind": "data.archive", "resource": "db://prod/orders"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["id"].as_str().expect("id").to_owned();
    let wait = format!("/v1/requests/{id}/wait?timeout=0");
    let doc = a.get("/openapi.json", None).await.json();
    let waited = a.get(&wait, Some(AGENT)).await.json();
    conforms(&doc, "WaitResult", &waited);
    assert_eq!(waited["unanswered_reminders"], 0, "no reminder is due yet");
    // 5% of 20 s: the reminder is due after one second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(a.gate.sweep().await.expect("sweep").reminded, 1);
    let waited = a.get(&wait, Some(AGENT)).await.json();
    assert_eq!(waited["state"], "pending");
    assert_eq!(waited["unanswered_reminders"], 1, "{waited}");
    a.post(&format!("/v1/requests/{id}/approve"), Some(SAM), json!({}))
        .await;
    let waited = a.get(&wait, Some(AGENT)).await.json();
    assert_eq!(waited["state"], "pending", "one approval of two");
    assert_eq!(
        waited["unanswered_reminders"], 0,
        "somebody has reviewed it"
    );
}

#[tokio::test]
async fn a_policy_refusal_is_a_403_with_rule_and_reason() {
    let a = agents();
    let r = a
        .post(
            "/v1/requests",
            Some(AGENT),
            json!({"kind": "iam.role.grant", "resource": "aws://iam/role/admin"}),
        )
        .await;
    let p = r.problem(403, "policy_denied");
    assert_eq!(p["rule"], "no-iam");
    assert_eq!(p["reason"], "IAM changes go through the access portal");
    assert_eq!(a.stored().await, 0);
}

#[tokio::test]
async fn only_agent_and_service_tokens_submit() {
    let a = agents();
    a.post("/v1/requests", None, export())
        .await
        .problem(401, "unauthenticated");
    a.post("/v1/requests", Some("tok-unknown"), export())
        .await
        .problem(401, "unauthenticated");
    for human in [SAM, DANA] {
        a.post("/v1/requests", Some(human), export())
            .await
            .problem(403, "agents_only");
    }
    assert_eq!(a.stored().await, 0);
    assert!(a.audit.events().is_empty(), "nothing reached the gate");
}

#[tokio::test]
async fn an_initiator_in_the_body_is_refused_under_every_alias_and_changes_nothing() {
    let a = agents();
    let forged_agent = json!({"kind": "agent", "id": "other-agent"});
    let mut refused = Vec::new();
    for (field, value) in [
        (
            "initiator",
            json!({"principal": forged_agent, "on_behalf_of": null}),
        ),
        (
            "initiator",
            json!({"principal": {"kind": "agent", "id": "BILLING-AGENT"}}),
        ),
        (
            "initiator",
            json!({"principal": {"kind": "agent", "id": "ｂｉｌｌｉｎｇ-agent"}}),
        ),
        ("Initiator", json!("other-agent")),
        ("INITIATOR", json!("other-agent")),
        ("ｉｎｉｔｉａｔｏｒ", json!("other-agent")),
        (
            "on_behalf_of",
            json!({"kind": "human", "id": "ceo@example.com"}),
        ),
        ("onBehalfOf", json!("ceo@example.com")),
        ("On-Behalf-Of", json!("ceo@example.com")),
        ("on_behalf_of", json!(null)),
        ("agent", json!("other-agent")),
        ("agent_id", json!("other-agent")),
        ("principal", json!(forged_agent)),
        ("model", json!("gpt-5")),
        ("requested_by", json!("ceo@example.com")),
        ("user", json!("ceo@example.com")),
        ("actor", json!("ceo@example.com")),
        ("caller", json!("ceo@example.com")),
        ("run_as", json!("root")),
        ("ini\u{200B}tiator", json!("other-agent")),
    ] {
        let mut body = export();
        body[field] = value;
        let r = a.post("/v1/requests", Some(AGENT), body).await;
        assert_eq!(r.status, 400, "{field}: {}", r.text());
        refused.push(r.json()["code"].as_str().unwrap_or_default().to_owned());
    }
    // Named as what they are wherever the spelling is recognisable.
    assert!(
        refused.iter().filter(|c| *c == "initiator_in_body").count() >= 17,
        "{refused:?}"
    );
    for (context, code) in [
        (json!({"initiator": "ceo@example.com"}), "initiator_in_body"),
        (
            json!({"labels": {"on-behalf-of": "ceo@example.com"}}),
            "initiator_in_body",
        ),
        (
            json!({"labels": {"Requested By": "ceo@example.com"}}),
            "initiator_in_body",
        ),
        (json!({"unknown": 1}), "bad_request"),
    ] {
        let mut body = export();
        body["context"] = context.clone();
        a.post("/v1/requests", Some(AGENT), body)
            .await
            .problem(400, code);
    }
    assert_eq!(a.stored().await, 0, "every refusal changes nothing");
    assert!(a.audit.events().is_empty());

    // Parameters are the action's own data, shown as parameters; they never make an initiator.
    let mut body = export();
    body["params"] = json!({"on_behalf_of": "ceo@example.com", "initiator": "other-agent"});
    let r = a.post("/v1/requests", Some(AGENT), body).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let id = RequestId::parse(r.json()["id"].as_str().expect("id")).expect("uuid");
    let record = a.gate.get(id).await.expect("store").expect("record");
    let initiator = record.request.initiator.as_deref().expect("initiator");
    assert_eq!(initiator.principal.id, "billing-agent");
    assert_eq!(
        initiator.on_behalf_of.as_ref().map(|h| h.id.as_str()),
        Some("dana@example.com")
    );
    // And so the human the token names still cannot approve it.
    a.post(&format!("/v1/requests/{id}/approve"), Some(DANA), json!({}))
        .await
        .problem(403, "self_approval");
}

#[tokio::test]
async fn only_the_initiator_waits_and_timeouts_are_bounded() {
    let a = agents();
    let id = a.submit_pending().await;
    let wait = format!("/v1/requests/{id}/wait?timeout=0");
    a.get(&wait, Some(OTHER_AGENT))
        .await
        .problem(404, "not_found");
    a.get(&wait, Some(SERVICE)).await.problem(404, "not_found");
    a.get(&wait, Some(SAM)).await.problem(403, "agents_only");
    a.get(&wait, None).await.problem(401, "unauthenticated");
    for bad in [
        "timeout=-1",
        "timeout=61",
        "timeout=1e3",
        "timeout=abc",
        "timeout=",
        "timeout=30&timeout=30",
        "timeout=18446744073709551616",
        "timeout=+5",
        "wait=5",
    ] {
        a.get(&format!("/v1/requests/{id}/wait?{bad}"), Some(AGENT))
            .await
            .problem(400, "bad_request");
    }
    for good in ["timeout=0", "timeout=0s", "timeout=1"] {
        let r = a
            .get(&format!("/v1/requests/{id}/wait?{good}"), Some(AGENT))
            .await;
        assert_eq!(r.json()["state"], "pending", "{good}");
    }
    a.get("/v1/requests/not-an-id/wait", Some(AGENT))
        .await
        .problem(400, "bad_request");
    a.get(
        &format!("/v1/requests/{}/wait", RequestId::new()),
        Some(AGENT),
    )
    .await
    .problem(404, "not_found");
    let record = a.gate.get(id).await.expect("store").expect("record");
    assert_eq!(record.state, RequestState::Pending);
}

#[tokio::test]
async fn another_requests_grant_a_forged_or_expired_token_is_refused_audited_and_changes_nothing() {
    let a = agents();
    let first = a.submit_pending().await;
    let mut second_body = export();
    second_body["params"] = json!({"rows": 10});
    let r = a.post("/v1/requests", Some(AGENT), second_body).await;
    let second = RequestId::parse(r.json()["id"].as_str().expect("id")).expect("uuid");
    for id in [first, second] {
        a.post(&format!("/v1/requests/{id}/approve"), Some(SAM), json!({}))
            .await;
    }
    let token_of = |r: Reply| r.json()["grant_token"].as_str().expect("token").to_owned();
    let first_token = token_of(
        a.get(&format!("/v1/requests/{first}/wait"), Some(AGENT))
            .await,
    );

    let path = format!("/v1/requests/{second}/executions");
    // The first request's grant, presented for the second.
    a.post(&path, Some(AGENT), json!({"grant_token": first_token}))
        .await
        .problem(403, "grant_mismatch");
    // Signed by a key the server does not trust.
    let digest = a
        .gate
        .get(second)
        .await
        .expect("store")
        .expect("record")
        .digest;
    let now = chrono::Utc::now();
    let claims = || GrantClaims::builder(second, digest, now, now + chrono::Duration::minutes(5));
    let stranger = Signer::generate("grants.test").expect("signer");
    let forged = sign_claims(claims().issuer("approvals"), &stranger).expect("signs");
    a.post(&path, Some(AGENT), json!({"grant_token": forged}))
        .await
        .problem(403, "grant_invalid");
    // Tampered: the first token's claims, re-labelled.
    let tampered = first_token.replacen('.', ".e", 1);
    a.post(&path, Some(AGENT), json!({"grant_token": tampered}))
        .await
        .problem(403, "grant_invalid");
    // The server's own key, but expired.
    let expired = sign_claims(
        GrantClaims::builder(
            second,
            digest,
            now - chrono::Duration::hours(2),
            now - chrono::Duration::hours(1),
        )
        .issuer("approvals"),
        &a.signer,
    )
    .expect("signs");
    a.post(&path, Some(AGENT), json!({"grant_token": expired}))
        .await
        .problem(409, "grant_lapsed");
    // Garbage and missing tokens.
    for body in [
        json!({"grant_token": "apg1.x.y"}),
        json!({"grant_token": ""}),
        json!({}),
        json!({"grant_token": 5}),
    ] {
        let r = a.post(&path, Some(AGENT), body).await;
        assert!(matches!(r.status.as_u16(), 400 | 403), "{}", r.text());
    }
    // The right token in someone else's hands.
    let second_token = token_of(
        a.get(&format!("/v1/requests/{second}/wait"), Some(AGENT))
            .await,
    );
    a.post(
        &path,
        Some(OTHER_AGENT),
        json!({"grant_token": second_token}),
    )
    .await
    .problem(404, "not_found");
    a.post(&path, Some(SAM), json!({"grant_token": second_token}))
        .await
        .problem(403, "agents_only");

    for id in [first, second] {
        let record = a.gate.get(id).await.expect("store").expect("record");
        assert_eq!(record.state, RequestState::Approved, "nothing changed");
        assert_eq!(a.count(id, "grant_consumed"), 0);
    }
    assert!(
        a.count(second, "grant_rejected") >= 4,
        "{:?}",
        a.events(second)
    );
    // Still usable by its owner.
    let r = a
        .post(&path, Some(AGENT), json!({"grant_token": second_token}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
}

#[tokio::test]
async fn idempotency_keys_reattach_or_conflict() {
    let a = agents();
    let mut body = export();
    body["idempotency_key"] = json!("job-42");
    let first = a.post("/v1/requests", Some(AGENT), body.clone()).await;
    let again = a.post("/v1/requests", Some(AGENT), body.clone()).await;
    assert_eq!(first.status, 202);
    assert_eq!(again.status, 202);
    assert_eq!(first.json()["id"], again.json()["id"]);

    // The header works alike, and must agree with the field.
    let header = http::Request::builder()
        .method(Method::POST)
        .uri("/v1/requests")
        .header("authorization", format!("Bearer {AGENT}"))
        .header("content-type", "application/json")
        .header("idempotency-key", "job-42")
        .body(bytes::Bytes::from(export().to_string()))
        .expect("request");
    let r = a.server.handle(header).await;
    assert_eq!(r.status(), 202);
    let header_id = serde_json::from_slice::<Value>(r.body()).expect("json")["id"].clone();
    assert_eq!(header_id, first.json()["id"]);
    let disagree = http::Request::builder()
        .method(Method::POST)
        .uri("/v1/requests")
        .header("authorization", format!("Bearer {AGENT}"))
        .header("content-type", "application/json")
        .header("idempotency-key", "job-43")
        .body(bytes::Bytes::from(body.to_string()))
        .expect("request");
    assert_eq!(a.server.handle(disagree).await.status(), 400);

    let mut changed = body.clone();
    changed["params"] = json!({"rows": 999_999});
    let p = a
        .post("/v1/requests", Some(AGENT), changed)
        .await
        .problem(409, "idempotency_conflict");
    assert!(
        !p["detail"]
            .as_str()
            .unwrap_or_default()
            .contains(first.json()["id"].as_str().unwrap_or("-"))
    );
    // Another agent's key never re-attaches to this agent's request.
    a.post("/v1/requests", Some(OTHER_AGENT), body)
        .await
        .problem(409, "idempotency_conflict");
    assert_eq!(a.stored().await, 1);
}

#[tokio::test]
async fn oversized_and_malformed_bodies_are_refused_and_change_nothing() {
    let a = agents();
    // Larger than reviewers are shown: the gate refuses it (and records only its size).
    let mut big = export();
    big["params"] = json!({"blob": "x".repeat(300 * 1024)});
    a.post("/v1/requests", Some(AGENT), big.clone())
        .await
        .problem(413, "payload_too_large");
    // Over HTTP the body limit answers first.
    let base = common::spawn(a.server.clone()).await;
    let r = approvals_http::client::http_client(Duration::from_secs(10))
        .expect("client")
        .post(format!("{base}/v1/requests"))
        .bearer_auth(AGENT)
        .json(&big)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 413);
    for body in [
        json!([1, 2]),
        json!({"resource": "db://x"}),
        json!({"kind": 5, "resource": "db://x"}),
        json!({"kind": "data.export", "resource": "db://x", "context": "prod"}),
        json!({"kind": "data.export", "resource": "db://x", "summary": ["a"]}),
        json!({"kind": "", "resource": "db://x"}),
    ] {
        let r = a.post("/v1/requests", Some(AGENT), body.clone()).await;
        assert!(
            matches!(r.status.as_u16(), 400 | 422),
            "{body}: {}",
            r.text()
        );
    }
    let text = http::Request::builder()
        .method(Method::POST)
        .uri("/v1/requests")
        .header("authorization", format!("Bearer {AGENT}"))
        .header("content-type", "text/plain")
        .body(bytes::Bytes::from(export().to_string()))
        .expect("request");
    assert_eq!(a.server.handle(text).await.status(), 415);
    assert_eq!(a.stored().await, 0);
    let id = a.submit_pending().await;
    let outcome = format!("/v1/requests/{id}/executions/outcome");
    a.post(&outcome, Some(AGENT), json!({"ok": true}))
        .await
        .problem(409, "not_executing");
    for body in [
        json!({}),
        json!({"ok": "yes"}),
        json!({"ok": true, "error": "x"}),
        json!({"ok": false, "error": "e".repeat(5000)}),
        json!({"ok": false, "result": "x"}),
    ] {
        a.post(&outcome, Some(AGENT), body)
            .await
            .problem(400, "bad_request");
    }
    let record = a.gate.get(id).await.expect("store").expect("record");
    assert_eq!(record.state, RequestState::Pending);
}

#[tokio::test]
async fn the_client_submits_waits_and_runs_over_http() {
    let a = agents();
    let base = common::spawn(a.server.clone()).await;
    let url: url::Url = format!("{base}/").parse().expect("url");
    let agent = ApiClient::http(url.clone(), Some(AGENT.into())).expect("client");
    let reviewer = ApiClient::http(url, Some(SAM.into())).expect("client");

    let action = approvals_core::ActionRequest::new("data.export", "db://prod/customers")
        .params(json!({"rows": 5000}))
        .idempotency_key("client-1");
    let submitted = agent.submit(&action).await.expect("submit");
    assert_eq!(submitted.status, SubmitStatus::Pending);
    assert!(
        submitted
            .review_url
            .as_deref()
            .is_some_and(|u| u.ends_with(&format!("/console/requests/{}", submitted.id)))
    );
    let id = submitted.id;
    let waited = agent.wait(id, Duration::from_secs(0)).await.expect("wait");
    assert_eq!(waited.state, RequestState::Pending);
    reviewer
        .decide(id, true, None, None)
        .await
        .expect("approve");
    let waited = agent.wait(id, Duration::from_secs(5)).await.expect("wait");
    assert_eq!(waited.state, RequestState::Approved);
    let token = waited.grant_token.expect("token");
    let started = agent.start_execution(id, &token).await.expect("start");
    assert_eq!(started.state, RequestState::Executing);
    let err = agent.start_execution(id, &token).await.expect_err("replay");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(409));
    let done = agent
        .finish_execution(id, Err("exit status 3"))
        .await
        .expect("finish");
    assert_eq!(done.state, RequestState::Failed);
    assert_eq!(done.error.as_deref(), Some("exit status 3"));

    let refused = agent
        .submit(&approvals_core::ActionRequest::new(
            "iam.role.grant",
            "aws://iam/role/x",
        ))
        .await
        .expect_err("refused");
    match refused {
        approvals_http::ClientError::Problem(p) => {
            assert_eq!(p.code, "policy_denied");
            assert_eq!(p.rule.as_deref(), Some("no-iam"));
        }
        other => panic!("expected a problem, got {other:?}"),
    }
    // Humans' tokens are refused by the agent calls.
    let err = reviewer.submit(&action).await.expect_err("human");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(403));
}

/// Every key of `body` is a property of the schema, and every required one is there.
#[tokio::test]
async fn the_openapi_document_describes_the_agent_api_as_served() {
    let a = agents();
    let doc = a.get("/openapi.json", None).await.json();
    for (path, method, statuses) in [
        (
            "/v1/requests",
            "post",
            &["200", "202", "400", "401", "403", "409", "413"][..],
        ),
        (
            "/v1/requests/{id}/wait",
            "get",
            &["200", "400", "401", "403", "404"][..],
        ),
        (
            "/v1/requests/{id}/executions",
            "post",
            &["201", "403", "404", "409"][..],
        ),
        (
            "/v1/requests/{id}/executions/outcome",
            "post",
            &["200", "400", "409"][..],
        ),
        ("/v1/grant-key", "get", &["200"][..]),
    ] {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} documented");
        for status in statuses {
            assert!(
                op["responses"][status].is_object(),
                "{method} {path} {status}"
            );
        }
    }
    let submitted = a.post("/v1/requests", Some(AGENT), export()).await.json();
    conforms(&doc, "Submitted", &submitted);
    let id = submitted["id"].as_str().expect("id").to_owned();
    let allowed = a
        .post(
            "/v1/requests",
            Some(AGENT),
            json!({"kind": "db.read", "resource": "db://x"}),
        )
        .await
        .json();
    conforms(&doc, "Submitted", &allowed);
    a.post(&format!("/v1/requests/{id}/approve"), Some(SAM), json!({}))
        .await;
    let waited = a
        .get(&format!("/v1/requests/{id}/wait"), Some(AGENT))
        .await
        .json();
    conforms(&doc, "WaitResult", &waited);
    let started = a
        .post(
            &format!("/v1/requests/{id}/executions"),
            Some(AGENT),
            json!({"grant_token": waited["grant_token"]}),
        )
        .await
        .json();
    conforms(&doc, "Execution", &started);
    let done = a
        .post(
            &format!("/v1/requests/{id}/executions/outcome"),
            Some(AGENT),
            json!({"ok": true}),
        )
        .await
        .json();
    conforms(&doc, "Execution", &done);
    let refused = a
        .post(
            "/v1/requests",
            Some(AGENT),
            json!({"kind": "iam.x", "resource": "aws://x"}),
        )
        .await
        .json();
    conforms(&doc, "Problem", &refused);
}

/// Serves `server` on its own runtime in its own thread until `stop` completes, then drops
/// that runtime, as a process that exits when `serve` returns does: whatever `serve` left
/// running is gone.
fn serve_until(
    server: ReviewServer,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> (url::Url, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let url = format!("http://{}/", listener.local_addr().expect("addr"))
        .parse()
        .expect("url");
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            approvals_http::serve(listener, server, stop)
                .await
                .expect("serve");
        });
    });
    (url, thread)
}

/// A request being answered when the server is told to stop is answered before `serve`
/// returns (here a long poll, held until its timeout), and no connection is taken after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_is_answered_when_the_server_stops() {
    let a = agents();
    let id = a.submit_pending().await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (url, thread) = serve_until(a.server.clone(), async {
        let _ = stopped.await;
    });
    let agent = ApiClient::http(url, Some(AGENT.into())).expect("client");
    let waiting = {
        let agent = agent.clone();
        tokio::spawn(async move { agent.wait(id, Duration::from_secs(2)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.send(()).expect("stop");
    let waited = waiting
        .await
        .expect("task")
        .expect("the long poll is answered");
    assert_eq!(waited.state, RequestState::Pending);
    tokio::task::spawn_blocking(move || thread.join())
        .await
        .expect("join")
        .expect("serve returned");
    assert!(agent.get(id).await.is_err(), "no connection after stopping");
}

/// The MCP gateway's review server stops once its client leaves, and a client may leave as
/// soon as a decision answers its last call: the reviewer who made that decision is still
/// told it was recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_that_stops_the_server_is_still_answered() {
    for round in 0..5 {
        let a = agents();
        let id = a.submit_pending().await;
        let gate = a.gate.clone();
        let (url, thread) = serve_until(a.server.clone(), async move {
            let _ = gate.wait(id).await;
        });
        let reviewer = ApiClient::http(url, Some(SAM.into())).expect("client");
        let view = reviewer
            .decide(id, false, Some("not now"), None)
            .await
            .unwrap_or_else(|e| panic!("round {round}: the deny is answered: {e:?}"));
        assert_eq!(view.state, RequestState::Denied);
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .expect("join")
            .expect("serve returned");
    }
}
