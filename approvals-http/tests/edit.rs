//! Edit on approve over HTTP: a reviewer approves with `params` (the action as edited), the
//! agent's wait answers with the edited parameters and a grant token for the edited digest
//! only, and the console's form does the same. Refusals change nothing: an edit outside the
//! rule's editable parameters, a changed type, an edit on deny, an edit without the digest,
//! an approval of the old digest after an edit, an agent's token.

mod common;

use std::sync::Arc;
use std::time::Duration;

use approvals_core::{
    Gate, Initiator, MemorySink, MemoryStore, Principal, RequestId, RequestState, RulePolicy, Store,
};
use approvals_http::{ReviewServer, Tokens};
use common::console::{ORIGIN, csrf_of, login, send};
use common::{Reply, call, conforms};
use http::Method;
use serde_json::{Value, json};

const AGENT: &str = "tok-agent-export";
const SAM: &str = "tok-human-sam";
const KIM: &str = "tok-human-kim";
const DANA: &str = "tok-human-dana";

const POLICY: &str = r#"
version = 1
default = "deny"

[[rules]]
name = "huge-exports"
kind = "data.export"
when = [{ param = "rows", gt = 100000 }]
effect = "deny"
reason = "exports over 100,000 rows go through the data team"

[[rules]]
name = "exports"
kind = "data.export"
effect = "require_approval"
approvers = { groups = ["data-owners"] }
editable = ["rows", "filter.region"]

[[rules]]
name = "restarts"
kind = "deploy.restart"
effect = "require_approval"
approvers = { groups = ["data-owners"] }
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
    let owner = |id: &str| Principal::human(id).with_groups(["data-owners"]);
    let tokens = Tokens::new()
        .with_initiator(
            AGENT,
            Initiator::agent("export-bot").on_behalf_of(Principal::human("dana@example.com")),
        )
        .with_token(SAM, owner("sam@example.com"))
        .with_token(KIM, owner("kim@example.com"))
        .with_token(DANA, owner("dana@example.com"));
    let server = ReviewServer::builder(gate).tokens(tokens).build();
    Fixture {
        store,
        audit,
        server,
    }
}

fn params(rows: u64, region: &str) -> Value {
    json!({"rows": rows, "table": "customers", "filter": {"region": region}})
}

impl Fixture {
    async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        call(&self.server, Method::POST, path, Some(token), Some(body)).await
    }

    async fn get(&self, path: &str, token: &str) -> Reply {
        call(&self.server, Method::GET, path, Some(token), None).await
    }

    /// The agent asks to export `rows`; returns the request id and its digest.
    async fn ask(&self, rows: u64) -> (RequestId, String) {
        let r = self
            .post(
                "/v1/requests",
                AGENT,
                json!({"kind": "data.export", "resource": "db://prod/customers", "params": params(rows, "eu")}),
            )
            .await;
        assert_eq!(r.status, 202, "{}", r.text());
        let body = r.json();
        let id = body["id"]
            .as_str()
            .and_then(|s| RequestId::parse(s).ok())
            .expect("an id");
        (id, body["digest"].as_str().unwrap_or_default().to_owned())
    }

    async fn version(&self, id: RequestId) -> u64 {
        self.store
            .get(id)
            .await
            .expect("get")
            .expect("stored")
            .version
    }
}

#[tokio::test]
async fn a_reviewer_edits_over_the_api_and_the_agent_runs_the_edited_parameters() {
    let f = fixture();
    let doc = f.get("/openapi.json", SAM).await.json();
    let (id, asked) = f.ask(800).await;
    let view = f.get(&format!("/v1/requests/{id}"), SAM).await.json();
    conforms(&doc, "Requirement", &view["requirement"]);
    assert_eq!(
        view["requirement"]["editable"],
        json!(["/rows", "/filter/region"])
    );

    let r = f
        .post(
            &format!("/v1/requests/{id}/approve"),
            KIM,
            json!({"digest": asked, "params": params(200, "us"), "reason": "200 is enough"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let view = r.json();
    conforms(&doc, "Request", &view);
    assert_eq!(view["state"], "approved");
    assert_eq!(view["asked_digest"], json!(asked));
    assert_ne!(view["digest"], json!(asked));
    assert_eq!(view["params"], params(200, "us"));
    let edit = &view["reviews"][0]["edit"];
    conforms(&doc, "Review", &view["reviews"][0]);
    conforms(&doc, "Edit", edit);
    assert_eq!(edit["changes"].as_array().map(Vec::len), Some(2));

    let waited = f
        .get(&format!("/v1/requests/{id}/wait?timeout=5"), AGENT)
        .await
        .json();
    conforms(&doc, "WaitResult", &waited);
    conforms(&doc, "Edited", &waited["edited"]);
    assert_eq!(waited["state"], "approved");
    assert_eq!(waited["digest"], view["digest"]);
    assert_eq!(waited["edited"]["params"], params(200, "us"));
    assert_eq!(waited["edited"]["asked_digest"], json!(asked));
    assert_eq!(waited["edited"]["changes"][0]["field"], "/rows");
    let token = waited["grant_token"].as_str().expect("a grant token");
    let r = f
        .post(
            &format!("/v1/requests/{id}/executions"),
            AGENT,
            json!({"grant_token": token}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let names = f.audit.names();
    let at = names.iter().position(|n| *n == "edited").expect("edited");
    assert_eq!(&names[at..at + 3], ["edited", "reviewed", "approved"]);
}

#[tokio::test]
async fn edits_the_rules_refuse_are_answered_with_a_problem_and_change_nothing() {
    let f = fixture();
    let (id, asked) = f.ask(800).await;
    let before = f.version(id).await;
    let path = format!("/v1/requests/{id}/approve");
    for (token, body, status, code) in [
        // Outside the editable parameters, a changed type, a policy deny, no change at all.
        (
            SAM,
            json!({"digest": asked, "params": {"rows": 1, "table": "orders", "filter": {"region": "eu"}}}),
            422,
            "edit_refused",
        ),
        (
            SAM,
            json!({"digest": asked, "params": {"rows": "1", "table": "customers", "filter": {"region": "eu"}}}),
            422,
            "edit_refused",
        ),
        (
            SAM,
            json!({"digest": asked, "params": params(500_000, "eu")}),
            422,
            "edit_refused",
        ),
        (
            SAM,
            json!({"digest": asked, "params": params(800, "eu")}),
            422,
            "edit_refused",
        ),
        // No digest: which version was edited?
        (
            SAM,
            json!({"params": params(1, "eu")}),
            409,
            "digest_required",
        ),
        // Not an object.
        (
            SAM,
            json!({"digest": asked, "params": [1]}),
            400,
            "bad_request",
        ),
        // The human the agent acts for, and the agent itself.
        (
            DANA,
            json!({"digest": asked, "params": params(1, "eu")}),
            403,
            "self_approval",
        ),
        (
            AGENT,
            json!({"digest": asked, "params": params(1, "eu")}),
            403,
            "not_human",
        ),
    ] {
        let r = f.post(&path, token, body.clone()).await;
        let problem = r.problem(status, code);
        assert!(problem["detail"].is_string(), "{body}: {problem}");
    }
    // An edit on deny is not an edit.
    f.post(
        &format!("/v1/requests/{id}/deny"),
        SAM,
        json!({"digest": asked, "params": params(1, "eu")}),
    )
    .await
    .problem(400, "bad_request");
    assert_eq!(f.version(id).await, before, "nothing changed");
}

#[tokio::test]
async fn a_rule_without_editable_parameters_refuses_an_edit_and_the_old_digest_approves_nothing_but_denies()
 {
    let f = fixture();
    let r = f
        .post(
            "/v1/requests",
            AGENT,
            json!({"kind": "deploy.restart", "resource": "svc://prod/api", "params": {"n": 1}}),
        )
        .await;
    let restart = r.json();
    let rid = restart["id"].as_str().unwrap_or_default().to_owned();
    f.post(
        &format!("/v1/requests/{rid}/approve"),
        SAM,
        json!({"digest": restart["digest"], "params": {"n": 2}}),
    )
    .await
    .problem(422, "edit_refused");

    let (id, asked) = f.ask(800).await;
    let r = f
        .post(
            &format!("/v1/requests/{id}/approve"),
            SAM,
            json!({"digest": asked, "params": params(10, "eu")}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        f.store.get(id).await.expect("get").expect("stored").state,
        RequestState::Approved
    );
    // Someone still looking at the old version cannot approve it: it changed.
    f.post(
        &format!("/v1/requests/{id}/approve"),
        KIM,
        json!({"digest": asked}),
    )
    .await
    .problem(409, "digest_mismatch");
    // But a deny of the old version still denies the request: deny wins over edits.
    let r = f
        .post(
            &format!("/v1/requests/{id}/deny"),
            KIM,
            json!({"digest": asked, "reason": "no"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        f.store.get(id).await.expect("get").expect("stored").state,
        RequestState::Denied
    );
}

// ------------------------------------------------------------------------------------------
// The console.

impl Fixture {
    async fn page(&self, cookie: &str, id: RequestId) -> String {
        send(
            &self.server,
            Method::GET,
            &format!("/console/requests/{id}"),
            Some(cookie),
            None,
            None,
        )
        .await
        .text()
    }

    async fn post_form(&self, cookie: &str, id: RequestId, fields: &[(&str, &str)]) -> Reply {
        send(
            &self.server,
            Method::POST,
            &format!("/console/requests/{id}/decision"),
            Some(cookie),
            Some(ORIGIN),
            Some(fields),
        )
        .await
    }
}

#[tokio::test]
async fn the_console_edits_and_approves_and_shows_what_changed_escaped() {
    let f = fixture();
    let evil = "<script>alert(1)</script>\u{202E}";
    let r = f
        .post(
            "/v1/requests",
            AGENT,
            json!({"kind": "data.export", "resource": "db://prod/customers",
                   "params": {"rows": 800, "table": "customers", "filter": {"region": evil}}}),
        )
        .await;
    let asked = r.json();
    let id = RequestId::parse(asked["id"].as_str().unwrap_or_default()).expect("id");
    let cookie = login(&f.server, SAM).await;
    let html = f.page(&cookie, id).await;
    assert!(html.contains(r#"id="edit""#), "the edit form: {html}");
    assert!(html.contains(r#"name="edit:/rows" value="800""#), "{html}");
    assert!(
        html.contains(r#"name="edit:/filter/region" value="&lt;script&gt;"#),
        "{html}"
    );
    assert!(
        !html.contains("<script") && !html.contains('\u{202E}'),
        "escaped"
    );
    let csrf = csrf_of(&html);
    let digest = asked["digest"].as_str().unwrap_or_default();

    // Out of bounds and wrong types are refused, shown, audited, and change nothing.
    for (field, value, says) in [
        ("edit:/rows", "lots", "must be a number"),
        ("edit:/table", "orders", "may not be changed"),
    ] {
        let r = f
            .post_form(
                &cookie,
                id,
                &[
                    ("csrf", &csrf),
                    ("digest", digest),
                    ("verdict", "approve_edited"),
                    (field, value),
                ],
            )
            .await;
        assert_eq!(r.status, 422, "{}", r.text());
        assert!(r.text().contains(says), "{says}: {}", r.text());
    }
    assert_eq!(f.version(id).await, 1, "nothing changed");
    assert_eq!(
        f.audit
            .names()
            .iter()
            .filter(|n| **n == "review_rejected")
            .count(),
        2
    );

    let r = f
        .post_form(
            &cookie,
            id,
            &[
                ("csrf", &csrf),
                ("digest", digest),
                ("verdict", "approve_edited"),
                ("edit:/rows", "200"),
                ("edit:/filter/region", "eu"),
                ("reason", "200 is enough"),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.text());
    let record = f.store.get(id).await.expect("get").expect("stored");
    assert_eq!(record.state, RequestState::Approved);
    assert_eq!(*record.request.params, params(200, "eu"));
    let html = f.page(&cookie, id).await;
    assert!(html.contains(r#"id="edits""#), "{html}");
    assert!(html.contains("/rows: 800 → 200"), "{html}");
    assert!(html.contains(&record.digest.to_string()) && html.contains(digest));
    assert!(
        !html.contains("<script") && !html.contains('\u{202E}'),
        "escaped"
    );
    assert!(!html.contains(r#"id="edit""#), "no edit form once approved");
}

#[tokio::test]
async fn the_console_offers_no_edit_where_the_rule_allows_none_and_refuses_a_forged_one() {
    let f = fixture();
    let r = f
        .post(
            "/v1/requests",
            AGENT,
            json!({"kind": "deploy.restart", "resource": "svc://prod/api", "params": {"n": 1}}),
        )
        .await;
    let asked = r.json();
    let id = RequestId::parse(asked["id"].as_str().unwrap_or_default()).expect("id");
    let cookie = login(&f.server, SAM).await;
    let html = f.page(&cookie, id).await;
    assert!(!html.contains(r#"id="edit""#), "no edit form");
    let csrf = csrf_of(&html);
    let r = f
        .post_form(
            &cookie,
            id,
            &[
                ("csrf", &csrf),
                ("digest", asked["digest"].as_str().unwrap_or_default()),
                ("verdict", "approve_edited"),
                ("edit:/n", "2"),
            ],
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(f.version(id).await, 1, "nothing changed");
}
