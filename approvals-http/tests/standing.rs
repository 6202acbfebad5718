//! Standing grants over HTTP: only a human's token proposes one (from a request, or named in
//! full), the rule's reviewers approve it through the usual review routes, the agent's next
//! matching actions are approved without asking, it is listed with its uses left, and a
//! revocation through the API ends it; the console shows it and proposes one from a request.

mod common;

use std::time::Duration;

use approvals_core::{RequestId, RequestState, Requirement, Store};
use common::{BOT, EVE, OTHER_BOT, SAM, SVC, call, conforms, fixture_with};
use http::Method;
use serde_json::{Value, json};

fn requirement() -> Requirement {
    Requirement::groups(["security"]).standing(Duration::from_secs(4 * 3600), 10)
}

fn id_of(body: &Value) -> RequestId {
    body["id"]
        .as_str()
        .and_then(|s| RequestId::parse(s).ok())
        .unwrap_or_else(|| panic!("no id in {body}"))
}

async fn agent_asks(server: &approvals_http::ReviewServer, table: &str) -> Value {
    let r = call(
        server,
        Method::POST,
        "/v1/requests",
        Some(BOT),
        Some(json!({"kind": "data.export", "resource": format!("db://prod/{table}")})),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    r.json()
}

#[tokio::test]
async fn a_standing_grant_is_proposed_approved_used_listed_and_revoked_over_the_api() {
    let f = fixture_with(requirement());
    let first = agent_asks(&f.server, "customers").await;
    let first = id_of(&first);
    let proposal = json!({
        "from_request": first.to_string(),
        "resource": "db://prod/*",
        "for": "2h",
        "uses": 3,
        "justification": "month-end exports",
    });

    // No agent or service token proposes one, for itself or for another.
    for token in [BOT, OTHER_BOT, SVC] {
        call(
            &f.server,
            Method::POST,
            "/v1/standing-grants",
            Some(token),
            Some(proposal.clone()),
        )
        .await
        .problem(403, "not_allowed");
    }
    // Malformed proposals change nothing.
    for (body, what) in [
        (
            json!({"for": "2h", "uses": 3, "justification": "x"}),
            "no action named",
        ),
        (
            json!({"from_request": first.to_string(), "kind": "iam.role.grant", "for": "2h", "uses": 3, "justification": "x"}),
            "a kind besides from_request",
        ),
        (
            json!({"from_request": first.to_string(), "for": "soon", "uses": 3, "justification": "x"}),
            "a bad duration",
        ),
        (
            json!({"from_request": first.to_string(), "for": "2h", "uses": 3, "justification": "x", "admin": true}),
            "an unknown field",
        ),
    ] {
        let r = call(
            &f.server,
            Method::POST,
            "/v1/standing-grants",
            Some(SAM),
            Some(body),
        )
        .await;
        assert_eq!(r.status, 400, "{what}: {}", r.text());
    }
    call(
        &f.server,
        Method::POST,
        "/v1/standing-grants",
        Some(SAM),
        Some(json!({"from_request": first.to_string(), "for": "5h", "uses": 3, "justification": "x"})),
    )
    .await
    .problem(422, "invalid_request");
    assert_eq!(
        f.store.list(&Default::default()).await.expect("list").len(),
        1
    );

    // Eve proposes; she is not a reviewer, and cannot approve it.
    let r = call(
        &f.server,
        Method::POST,
        "/v1/standing-grants",
        Some(EVE),
        Some(proposal.clone()),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let grant = id_of(&r.json());
    assert_eq!(r.json()["state"], "pending");
    assert_eq!(r.json()["standing"]["terms"]["resource"], "db://prod/*");
    assert_eq!(
        r.json()["standing"]["terms"]["proposed_by"]["id"],
        "eve@example.com"
    );
    assert_eq!(r.json()["initiator"]["principal"]["id"], "billing-agent");
    let doc = call(&f.server, Method::GET, "/openapi.json", None, None)
        .await
        .json();
    for (path, method) in [
        ("/v1/standing-grants", "get"),
        ("/v1/standing-grants", "post"),
        ("/v1/standing-grants/{id}/revoke", "post"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path}");
    }
    conforms(&doc, "Request", &r.json());
    conforms(&doc, "StandingStatus", &r.json()["standing"]);
    conforms(&doc, "StandingTerms", &r.json()["standing"]["terms"]);
    conforms(&doc, "StandingProposal", &proposal);

    // Not in force yet.
    let pending = agent_asks(&f.server, "orders").await;
    assert_eq!(pending["state"], "pending", "{pending}");
    call(
        &f.server,
        Method::POST,
        &format!("/v1/requests/{grant}/approve"),
        Some(EVE),
        Some(json!({})),
    )
    .await
    .problem(403, "not_authorized");
    let r = call(
        &f.server,
        Method::POST,
        &format!("/v1/requests/{grant}/approve"),
        Some(SAM),
        Some(json!({})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // Covered: approved at once, and the agent's wait returns a grant token.
    let covered = agent_asks(&f.server, "invoices").await;
    assert_eq!(covered["state"], "approved", "{covered}");
    let covered = id_of(&covered);
    let r = call(
        &f.server,
        Method::GET,
        &format!("/v1/requests/{covered}/wait?timeout=1"),
        Some(BOT),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["grant_token"].is_string(), "{}", r.text());
    // The grant itself is never waited for or run by the agent.
    call(
        &f.server,
        Method::GET,
        &format!("/v1/requests/{grant}/wait?timeout=1"),
        Some(BOT),
        None,
    )
    .await
    .problem(422, "invalid_request");

    // Listed with what is left, for reviewers and for the agent it is for; not for another.
    for token in [SAM, BOT] {
        let r = call(
            &f.server,
            Method::GET,
            "/v1/standing-grants",
            Some(token),
            None,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let list = r.json();
        assert_eq!(
            list["standing_grants"].as_array().map(Vec::len),
            Some(1),
            "{list}"
        );
        assert_eq!(list["standing_grants"][0]["standing"]["uses_left"], 2);
        assert_eq!(list["standing_grants"][0]["standing"]["used"], 1);
    }
    let r = call(
        &f.server,
        Method::GET,
        "/v1/standing-grants",
        Some(OTHER_BOT),
        None,
    )
    .await;
    assert_eq!(r.json()["standing_grants"], json!([]));

    // Revoked: not by the agent (an agent never reviews), not through this route for an
    // ordinary request, then by Sam.
    call(
        &f.server,
        Method::POST,
        &format!("/v1/standing-grants/{grant}/revoke"),
        Some(BOT),
        Some(json!({})),
    )
    .await
    .problem(403, "not_human");
    call(
        &f.server,
        Method::POST,
        &format!("/v1/standing-grants/{first}/revoke"),
        Some(SAM),
        Some(json!({})),
    )
    .await
    .problem(409, "not_standing");
    let r = call(
        &f.server,
        Method::POST,
        &format!("/v1/standing-grants/{grant}/revoke"),
        Some(SAM),
        Some(json!({"reason": "exports done"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["state"], "denied");
    let after = agent_asks(&f.server, "refunds").await;
    assert_eq!(after["state"], "pending", "use after revoke is asked for");
    let stored = f.store.get(grant).await.expect("get").expect("stored");
    assert_eq!(stored.state, RequestState::Denied);
    assert_eq!(stored.standing_uses, 1);
    let r = call(
        &f.server,
        Method::GET,
        "/v1/standing-grants",
        Some(SAM),
        None,
    )
    .await;
    assert_eq!(r.json()["standing_grants"], json!([]));
}
