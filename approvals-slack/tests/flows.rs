//! End-to-end approve and deny flows through the signed HTTP handler and the fake Slack.

mod common;

use approvals_core::{GuardError, RequestState, Requirement};
use approvals_slack::blocks::{ACTION_APPROVE, ACTION_DENY, REASON_CALLBACK_ID};
use approvals_slack::fake::Clicker;
use common::*;

#[tokio::test]
async fn approve_flow_posts_decides_and_updates_the_message() {
    let env = Env::new(Requirement::groups(["security"])).await;
    let (id, ts) = env.submit_export().await;

    // The posted message: header, context, buttons bound to id and digest.
    let posted = env.fake.calls_to("chat.postMessage");
    assert_eq!(posted.len(), 1);
    assert_eq!(
        posted[0].token.as_deref(),
        Some(approvals_slack::fake::BOT_TOKEN)
    );
    assert_eq!(
        posted[0].body["channel"],
        approvals_slack::fake::CONVERSATION
    );
    assert_eq!(posted[0].body["unfurl_links"], false);
    let message = env.message(&ts);
    assert!(
        header(&message).contains("Approval needed: data.export"),
        "{message}"
    );
    let record = env.record(id).await;
    let value = env.button_value(&ts, ACTION_APPROVE);
    assert_eq!(value, format!("{id} {}", record.digest));
    let text = message.to_string();
    for expected in [
        "db://prod/customers",
        "production",
        "billing-agent",
        "claude-opus-4",
        "dana@example.com",
        "Quarterly report for finance",
        "\\\"rows\\\": 5000",
    ] {
        assert!(text.contains(expected), "{expected} missing from {text}");
    }
    assert!(text.contains(&record.digest.to_string()));
    assert!(text.contains(&id.to_string()));

    let url = env.fake.response_url("approve-1");
    let response = env.click(&Clicker::new(SAM), ACTION_APPROVE, &value, &ts, &url);
    assert_eq!(response.status(), 200);
    assert!(response.body().is_empty());

    let grant = env.gate.wait(id).await.expect("approved");
    assert_eq!(grant.approvers()[0].id, "sam@example.com");
    let replies = env.replies(&url, 1).await;
    assert!(
        replies[0].contains("You approved data.export"),
        "{replies:?}"
    );

    // The message no longer offers buttons and says who approved.
    eventually(
        || header(&env.message(&ts)).contains("Approved"),
        "message updated",
    )
    .await;
    let updated = env.message(&ts);
    assert!(
        status(&updated).contains("Approved* by Sam Reviewer (1 of 1)"),
        "{updated}"
    );
    assert_eq!(approvals_slack::blocks::ACTION_APPROVE, "approvals.approve");
    assert!(find_button(&updated["blocks"], ACTION_APPROVE).is_none());

    // Executing it updates the message again.
    let n: Result<u32, GuardError> = env.gate.execute(grant, &export(), || async { Ok(7) }).await;
    assert_eq!(n.expect("ran"), 7);
    eventually(
        || header(&env.message(&ts)).contains("Executed"),
        "executed shown",
    )
    .await;
    assert!(status(&env.message(&ts)).contains("executed* successfully"));
}

#[tokio::test]
async fn deny_flow_asks_for_a_reason_in_a_modal() {
    let env = Env::new(Requirement::groups(["security"])).await;
    let (id, ts) = env.submit_export().await;
    let url = env.fake.response_url("deny-1");
    let open = env
        .open_modal(&Clicker::new(ALEX), ACTION_DENY, &ts, &url)
        .await;
    assert!(open["trigger_id"].as_str().is_some_and(|t| !t.is_empty()));
    let view = &open["view"];
    assert_eq!(view["type"], "modal");
    assert_eq!(view["callback_id"], REASON_CALLBACK_ID);
    assert_eq!(view["submit"]["text"], "Deny");
    let input = view["blocks"]
        .as_array()
        .and_then(|b| b.iter().find(|b| b["type"] == "input"))
        .cloned()
        .expect("input");
    assert_eq!(input["optional"], false);
    // Nothing is decided by opening the modal.
    assert_eq!(env.record(id).await.state, RequestState::Pending);

    let meta = view["private_metadata"].as_str().expect("metadata");
    let submission = Clicker::new(ALEX).view_submission(
        REASON_CALLBACK_ID,
        meta,
        Some("  Not during the freeze <!channel>  "),
    );
    let response = env.post(&submission);
    assert_eq!(response.status(), 200);
    assert!(response.body().is_empty(), "an empty 200 closes the modal");

    let err = env.gate.wait(id).await.expect_err("denied");
    match err {
        GuardError::Denied { by, reason, .. } => {
            assert_eq!(by, "Alex Lead");
            assert_eq!(reason.as_deref(), Some("Not during the freeze <!channel>"));
        }
        other => panic!("{other}"),
    }
    let replies = env.replies(&url, 1).await;
    assert!(replies[0].contains("You denied"), "{replies:?}");
    eventually(
        || header(&env.message(&ts)).contains("Denied"),
        "message updated",
    )
    .await;
    let s = status(&env.message(&ts));
    assert!(s.contains("Denied* by Alex Lead"), "{s}");
    assert!(
        s.contains("Not during the freeze &lt;!channel&gt;"),
        "reason escaped: {s}"
    );
}

#[tokio::test]
async fn a_two_of_two_quorum_stays_pending_after_the_first_click() {
    let env = Env::new(Requirement::groups(["security"]).quorum(2)).await;
    let (id, ts) = env.submit_export().await;
    let value = env.button_value(&ts, ACTION_APPROVE);

    let url1 = env.fake.response_url("q-1");
    assert_eq!(
        env.click(&Clicker::new(SAM), ACTION_APPROVE, &value, &ts, &url1)
            .status(),
        200
    );
    let replies = env.replies(&url1, 1).await;
    assert!(replies[0].contains("1 of 2 approvals"), "{replies:?}");
    let record = env.record(id).await;
    assert_eq!(record.state, RequestState::Pending);
    assert_eq!(record.approvers().len(), 1);
    // The message shows the progress and still has its buttons.
    eventually(
        || status(&env.message(&ts)).contains("1 of 2 approvals"),
        "progress shown",
    )
    .await;
    assert!(find_button(&env.message(&ts)["blocks"], ACTION_APPROVE).is_some());

    let url2 = env.fake.response_url("q-2");
    assert_eq!(
        env.click(&Clicker::new(ALEX), ACTION_APPROVE, &value, &ts, &url2)
            .status(),
        200
    );
    let grant = env.gate.wait(id).await.expect("approved");
    assert_eq!(grant.approvers().len(), 2);
    eventually(
        || status(&env.message(&ts)).contains("(2 of 2)"),
        "approved shown",
    )
    .await;
}

#[tokio::test]
async fn approve_with_a_required_reason_opens_a_modal_and_refuses_an_empty_reason() {
    let env = Env::new(Requirement::groups(["security"]).reason_required(true)).await;
    let (id, ts) = env.submit_export().await;
    let url = env.fake.response_url("reason-1");
    let open = env
        .open_modal(&Clicker::new(SAM), ACTION_APPROVE, &ts, &url)
        .await;
    let meta = open["view"]["private_metadata"]
        .as_str()
        .expect("metadata")
        .to_owned();
    assert_eq!(open["view"]["submit"]["text"], "Approve");

    // Empty reason: the modal shows an error and nothing is decided.
    let response =
        env.post(&Clicker::new(SAM).view_submission(REASON_CALLBACK_ID, &meta, Some("   ")));
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = serde_json::from_slice(response.body()).expect("json");
    assert_eq!(body["response_action"], "errors");
    assert!(
        body["errors"]["approvals.reason"]
            .as_str()
            .is_some_and(|e| e.contains("required"))
    );
    settle().await;
    assert_eq!(env.record(id).await.state, RequestState::Pending);

    let response = env.post(&Clicker::new(SAM).view_submission(
        REASON_CALLBACK_ID,
        &meta,
        Some("Checked with finance"),
    ));
    assert_eq!(response.status(), 200);
    env.gate.wait(id).await.expect("approved");
    let record = env.record(id).await;
    assert_eq!(
        record.reviews[0].reason.as_deref(),
        Some("Checked with finance")
    );
    assert_eq!(record.reviews[0].channel, "slack");
}

#[tokio::test]
async fn the_tower_service_and_the_axum_router_serve_the_same_handler() {
    use tower::ServiceExt as _;
    let env = Env::new(Requirement::groups(["security"])).await;
    let (id, ts) = env.submit_export().await;
    let value = env.button_value(&ts, ACTION_APPROVE);
    let url = env.fake.response_url("svc");

    // tower::Service: unsigned is refused.
    let unsigned = http::Request::post("/")
        .body(bytes::Bytes::from_static(b"payload=%7B%7D"))
        .expect("req");
    let response = env
        .interactions
        .clone()
        .oneshot(unsigned)
        .await
        .expect("infallible");
    assert_eq!(response.status(), 401);

    // axum Router: a signed click goes through.
    let payload = Clicker::new(SAM).block_actions(ACTION_APPROVE, &value, &ts, &url);
    let signed = approvals_slack::fake::signed_request(
        &env.secret,
        approvals_slack::fake::now(),
        approvals_slack::fake::form_body(&payload),
    );
    let (parts, body) = signed.into_parts();
    let mut request = http::Request::from_parts(parts, axum::body::Body::from(body));
    *request.uri_mut() = "/slack/interactivity".parse().expect("uri");
    let response = env
        .interactions
        .router("/slack/interactivity")
        .oneshot(request)
        .await
        .expect("infallible");
    assert_eq!(response.status(), 200);
    env.gate
        .wait(id)
        .await
        .expect("approved through the router");

    // Other methods are refused.
    let get = http::Request::get("/")
        .body(bytes::Bytes::new())
        .expect("req");
    assert_eq!(env.interactions.handle(get).status(), 405);
}
