//! Plans over HTTP: an agent's token submits a plan of actions (`POST /v1/plans`), the rule's
//! reviewers approve it through the usual review routes, the agent waits for it like any
//! request (no grant token), then each action naming the plan is approved at once and runs
//! once with its own grant. Refusals change nothing: human tokens, malformed plans, a field
//! naming who asks, denied or mixed actions; an action changed, repeated or asked by another
//! agent is asked for on its own.

mod common;

use std::sync::Arc;
use std::time::Duration;

use approvals_core::{
    Gate, Initiator, ListFilter, MemorySink, MemoryStore, Principal, RequestId, RequestState,
    RulePolicy, Store,
};
use approvals_http::{ReviewServer, Tokens};
use common::{Reply, call, conforms};
use http::Method;
use serde_json::{Value, json};

const AGENT: &str = "tok-agent-deploy";
const OTHER_AGENT: &str = "tok-agent-other";
const SAM: &str = "tok-human-sam";
const DANA: &str = "tok-human-dana";

const POLICY: &str = r#"
version = 1
default = "deny"

[[rules]]
name = "restarts"
kind = "deploy.restart"
effect = "require_approval"
approvers = { groups = ["sre"] }
timeout = "30m"

[[rules]]
name = "migrations"
kind = "db.migrate"
effect = "require_approval"
approvers = { groups = ["sre"] }

[[rules]]
name = "deletes"
kind = "data.delete"
effect = "require_approval"
approvers = { groups = ["sre"] }
cooldown_after_denial = "1h"

[[rules]]
name = "reads"
kind = "*.read"
effect = "allow"

[[rules]]
name = "no-drops"
kind = "db.drop"
effect = "deny"
reason = "never"
"#;

struct Fixture {
    store: Arc<MemoryStore>,
    audit: Arc<MemorySink>,
    server: ReviewServer,
}

fn fixture() -> Fixture {
    let store = Arc::new(MemoryStore::new());
    let audit = Arc::new(MemorySink::new());
    let gate = Gate::builder()
        .policy(RulePolicy::from_toml(POLICY).expect("policy"))
        .store_shared(store.clone())
        .audit_shared(audit.clone())
        .poll_interval(Duration::from_millis(50))
        .build()
        .expect("gate");
    let tokens = Tokens::new()
        .with_initiator(
            AGENT,
            Initiator::agent("deploy-bot").on_behalf_of(Principal::human("dana@example.com")),
        )
        .with_initiator(OTHER_AGENT, Initiator::agent("other-bot"))
        .with_token(
            SAM,
            Principal::human("sam@example.com").with_groups(["sre"]),
        )
        .with_token(
            DANA,
            Principal::human("dana@example.com").with_groups(["sre"]),
        );
    let server = ReviewServer::builder(gate).tokens(tokens).build();
    Fixture {
        store,
        audit,
        server,
    }
}

fn restart(service: &str) -> Value {
    json!({
        "kind": "deploy.restart",
        "resource": format!("svc://prod/{service}"),
        "params": {"reason": "memory leak"},
        "environment": "production",
    })
}

fn id_of(body: &Value) -> RequestId {
    body["id"]
        .as_str()
        .and_then(|s| RequestId::parse(s).ok())
        .unwrap_or_else(|| panic!("no id in {body}"))
}

impl Fixture {
    async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        call(&self.server, Method::POST, path, Some(token), Some(body)).await
    }

    async fn get(&self, path: &str, token: &str) -> Reply {
        call(&self.server, Method::GET, path, Some(token), None).await
    }

    async fn stored(&self) -> usize {
        self.store
            .list(&ListFilter::default())
            .await
            .expect("list")
            .len()
    }

    /// Asks for `action` as `token`, naming `plan`; returns the answer's state.
    async fn ask(&self, token: &str, mut action: Value, plan: RequestId) -> String {
        action["plan"] = json!(plan.to_string());
        let r = self.post("/v1/requests", token, action).await;
        assert_eq!(r.status, 202, "{}", r.text());
        r.json()["state"].as_str().unwrap_or_default().to_owned()
    }
}

#[tokio::test]
async fn a_plan_is_submitted_approved_waited_for_and_each_action_runs_once() {
    let f = fixture();
    let doc = f.get("/openapi.json", SAM).await.json();
    let r = f
        .post(
            "/v1/plans",
            AGENT,
            json!({"actions": [restart("api"), restart("worker")], "justification": "roll the fleet"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let submitted = r.json();
    conforms(&doc, "Submitted", &submitted);
    let plan = id_of(&submitted);
    assert_eq!(submitted["state"], "pending");
    assert_eq!(submitted["policy_rule"], "restarts");

    let view = f.get(&format!("/v1/requests/{plan}"), SAM).await.json();
    conforms(&doc, "Request", &view);
    conforms(&doc, "PlanStatus", &view["plan"]);
    assert_eq!(view["kind"], "approvals.plan");
    let items = view["plan"]["items"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(items.len(), 2);
    for item in &items {
        conforms(&doc, "PlanItem", item);
    }

    let waited = f
        .get(&format!("/v1/requests/{plan}/wait?timeout=0"), AGENT)
        .await;
    assert_eq!(waited.json()["state"], "pending", "{}", waited.text());
    // The human the agent acts for may not approve its plan.
    let r = f
        .post(&format!("/v1/requests/{plan}/approve"), DANA, json!({}))
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = f
        .post(&format!("/v1/requests/{plan}/approve"), SAM, json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let waited = f
        .get(&format!("/v1/requests/{plan}/wait?timeout=5"), AGENT)
        .await
        .json();
    assert_eq!(waited["state"], "approved");
    assert!(
        waited.get("grant_token").is_none(),
        "a plan has no grant: {waited}"
    );
    conforms(&doc, "WaitResult", &waited);

    // Each action, exactly as planned, runs once with its own grant.
    assert_eq!(f.ask(AGENT, restart("worker"), plan).await, "approved");
    let r = f
        .post("/v1/requests", AGENT, {
            let mut a = restart("api");
            a["plan"] = json!(plan.to_string());
            a
        })
        .await;
    let api = id_of(&r.json());
    assert_eq!(r.json()["state"], "approved");
    let waited = f
        .get(&format!("/v1/requests/{api}/wait?timeout=5"), AGENT)
        .await
        .json();
    let token = waited["grant_token"].as_str().expect("the action's grant");
    let started = f
        .post(
            &format!("/v1/requests/{api}/executions"),
            AGENT,
            json!({"grant_token": token}),
        )
        .await;
    assert_eq!(started.status, 201, "{}", started.text());

    // Again, changed, or by another agent: asked for on its own.
    assert_eq!(f.ask(AGENT, restart("api"), plan).await, "pending");
    let mut changed = restart("worker");
    changed["params"] = json!({"reason": "memory leak", "force": true});
    assert_eq!(f.ask(AGENT, changed, plan).await, "pending");
    let mut other_env = restart("worker");
    other_env["environment"] = json!("staging");
    assert_eq!(f.ask(AGENT, other_env, plan).await, "pending");
    assert_eq!(f.ask(OTHER_AGENT, restart("worker"), plan).await, "pending");

    let used = f.get(&format!("/v1/requests/{plan}"), SAM).await.json();
    assert_eq!(used["plan"]["used"], json!([1, 0]));
    let names = f.audit.names();
    assert_eq!(names.iter().filter(|n| **n == "plan_item_used").count(), 2);
    assert_eq!(
        names.iter().filter(|n| **n == "approved_by_plan").count(),
        2
    );
}

#[tokio::test]
async fn refused_plans_store_nothing() {
    let f = fixture();
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        ("actions missing", json!({}), 400, "bad_request"),
        (
            "actions not an array",
            json!({"actions": {}}),
            400,
            "bad_request",
        ),
        ("empty", json!({"actions": []}), 422, "invalid_request"),
        (
            "an unknown field",
            json!({"actions": [restart("a")], "priority": 1}),
            400,
            "bad_request",
        ),
        (
            "a field naming who asks",
            json!({"actions": [restart("a")], "on_behalf_of": "ceo@example.com"}),
            400,
            "initiator_in_body",
        ),
        (
            "an action naming who asks",
            json!({"actions": [{"kind": "deploy.restart", "resource": "svc://x", "agent": "root"}]}),
            400,
            "initiator_in_body",
        ),
        (
            "an action with an idempotency key",
            json!({"actions": [{"kind": "deploy.restart", "resource": "svc://x", "idempotency_key": "k"}]}),
            400,
            "bad_request",
        ),
        (
            "an action naming a plan",
            json!({"actions": [{"kind": "deploy.restart", "resource": "svc://x", "plan": RequestId::new().to_string()}]}),
            400,
            "bad_request",
        ),
        (
            "actions under different rules",
            json!({"actions": [restart("a"), {"kind": "db.migrate", "resource": "db://prod"}]}),
            422,
            "invalid_request",
        ),
        (
            "nothing needing approval",
            json!({"actions": [{"kind": "logs.read", "resource": "svc://prod/api"}]}),
            422,
            "invalid_request",
        ),
        (
            "a reserved kind",
            json!({"actions": [restart("a"), {"kind": "approvals.plan", "resource": "x"}]}),
            422,
            "invalid_request",
        ),
        (
            "a denied action",
            json!({"actions": [restart("a"), {"kind": "db.drop", "resource": "db://prod/users"}]}),
            403,
            "policy_denied",
        ),
    ];
    for (what, body, status, code) in cases {
        let r = f.post("/v1/plans", AGENT, body).await;
        let problem = r.problem(status, code);
        assert!(problem["detail"].is_string(), "{what}: {problem}");
    }
    let too_many: Vec<Value> = (0..101).map(|i| restart(&format!("s{i}"))).collect();
    f.post("/v1/plans", AGENT, json!({"actions": too_many}))
        .await
        .problem(422, "invalid_request");
    // People review plans; they do not submit them.
    f.post("/v1/plans", SAM, json!({"actions": [restart("a")]}))
        .await
        .problem(403, "agents_only");
    let r = call(&f.server, Method::GET, "/v1/plans", Some(AGENT), None).await;
    assert_eq!(r.status, 405, "{}", r.text());
    assert_eq!(f.stored().await, 0, "nothing stored");
}

#[tokio::test]
async fn the_client_submits_a_plan_and_runs_its_actions_over_http() {
    let f = fixture();
    let base = common::spawn(f.server.clone()).await;
    let url: url::Url = format!("{base}/").parse().expect("url");
    let agent = approvals_http::ApiClient::http(url.clone(), Some(AGENT.into())).expect("client");
    let reviewer = approvals_http::ApiClient::http(url, Some(SAM.into())).expect("client");
    let action = |service: &str| {
        approvals_core::ActionRequest::new("deploy.restart", format!("svc://prod/{service}"))
            .params(json!({"reason": "memory leak"}))
    };
    let plan = agent
        .submit_plan(&[action("a"), action("b")], Some("roll the fleet"))
        .await
        .expect("submitted");
    reviewer
        .decide(plan.id, true, None, None)
        .await
        .expect("approved");
    let waited = agent
        .wait(plan.id, Duration::from_secs(5))
        .await
        .expect("wait");
    assert_eq!(waited.state, RequestState::Approved);
    assert!(waited.grant_token.is_none());
    let ran = agent
        .submit(&action("b").in_plan(plan.id))
        .await
        .expect("submitted");
    assert_eq!(ran.state, Some(RequestState::Approved));
    let waited = agent
        .wait(ran.id, Duration::from_secs(5))
        .await
        .expect("wait");
    let token = waited.grant_token.expect("the action's grant");
    agent
        .start_execution(ran.id, &token)
        .await
        .expect("runs once");
    let again = agent
        .submit(&action("b").in_plan(plan.id))
        .await
        .expect("submitted");
    assert_eq!(again.state, Some(RequestState::Pending));
}

#[tokio::test]
async fn a_plan_holding_a_recently_denied_action_is_a_409_with_the_reviewers_reason() {
    let f = fixture();
    let delete =
        |table: &str| json!({"kind": "data.delete", "resource": format!("db://prod/{table}")});
    let r = f.post("/v1/requests", AGENT, delete("x")).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let denied = id_of(&r.json());
    let r = f
        .post(
            &format!("/v1/requests/{denied}/deny"),
            SAM,
            json!({"reason": "keep x"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let stored = f.stored().await;
    let problem = f
        .post(
            "/v1/plans",
            AGENT,
            json!({"actions": [delete("y"), delete("x")]}),
        )
        .await
        .problem(409, "denied_recently");
    assert_eq!(problem["decided_by"], "sam@example.com", "{problem}");
    assert_eq!(problem["reason"], "keep x", "{problem}");
    assert_eq!(f.stored().await, stored, "nothing stored");
}
