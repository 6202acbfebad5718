//! The message follows the request through every state; malformed input is refused cleanly.

mod common;

use std::time::Duration;

use approvals_core::{Escalation, GuardError, Principal, RequestState, Requirement};
use approvals_slack::SlackApprover;
use approvals_slack::blocks::ACTION_APPROVE;
use approvals_slack::fake::{self, Clicker};
use chrono::TimeDelta;
use common::*;

#[tokio::test]
async fn cancellation_and_failure_are_shown_on_the_message() {
    let env = Env::new(Requirement::groups(["security"])).await;
    let (id, ts) = env.submit_export().await;
    env.gate
        .cancel(
            id,
            Some(Principal::human("ops@example.com")),
            Some("agent run aborted".into()),
        )
        .await
        .expect("cancelled");
    eventually(
        || header(&env.message(&ts)).contains("Cancelled"),
        "cancel shown",
    )
    .await;
    let s = status(&env.message(&ts));
    assert!(
        s.contains("by ops@example.com") && s.contains("agent run aborted"),
        "{s}"
    );
    assert!(find_button(&env.message(&ts)["blocks"], ACTION_APPROVE).is_none());

    // A failed action.
    let (id, ts) = env.submit_export().await;
    let value = env.button_value(&ts, ACTION_APPROVE);
    env.click(
        &Clicker::new(SAM),
        ACTION_APPROVE,
        &value,
        &ts,
        &env.fake.response_url("f"),
    );
    let grant = env.gate.wait(id).await.expect("approved");
    let result: Result<(), GuardError> = env
        .gate
        .execute(grant, &export(), || async {
            Err(GuardError::InvalidRequest("<!channel> disk full".into()))
        })
        .await;
    assert!(result.is_err());
    eventually(
        || header(&env.message(&ts)).contains("Failed"),
        "failure shown",
    )
    .await;
    let s = status(&env.message(&ts));
    assert!(
        s.contains("failed") && s.contains("&lt;!channel&gt; disk full"),
        "{s}"
    );
}

#[tokio::test]
async fn escalation_posts_again_and_the_resolution_updates_every_message() {
    let requirement = Requirement::users(["sam@example.com"]).escalation(Escalation {
        after: Duration::from_secs(300),
        users: vec!["alex@example.com".into()],
        groups: Vec::new(),
    });
    let env = Env::new(requirement).await;
    let (id, first_ts) = env.submit_export().await;
    // Alex may not review yet.
    let value = env.button_value(&first_ts, ACTION_APPROVE);
    let early = env.fake.response_url("early");
    env.click(
        &Clicker::new(ALEX),
        ACTION_APPROVE,
        &value,
        &first_ts,
        &early,
    );
    assert!(env.replies(&early, 1).await[0].contains("not one of the reviewers"));

    env.clock.advance(TimeDelta::minutes(6));
    let report = env.gate.sweep().await.expect("sweep");
    assert_eq!(report.escalated, 1);
    let record = env.record(id).await;
    let messages = SlackApprover::messages(&record);
    assert_eq!(messages.len(), 2, "a second message for the escalation");
    let second_ts = messages[1].ts.clone();
    assert!(header(&env.message(&second_ts)).contains("Escalated"));

    let url = env.fake.response_url("alex");
    env.click(
        &Clicker::new(ALEX),
        ACTION_APPROVE,
        &value,
        &second_ts,
        &url,
    );
    env.gate.wait(id).await.expect("approved after escalation");
    for ts in [&first_ts, &second_ts] {
        eventually(
            || header(&env.message(ts)).contains("Approved"),
            "both updated",
        )
        .await;
    }
}

#[tokio::test]
async fn malformed_requests_get_clear_errors() {
    let env = Env::with(Requirement::groups(["security"]), |b| {
        b.max_body_bytes(4096)
    })
    .await;
    let now = fake::now();
    // Oversized.
    let big = bytes::Bytes::from(vec![b'a'; 5000]);
    let response = env
        .interactions
        .handle(fake::signed_request(&env.secret, now, big));
    assert_eq!(response.status(), 413);
    // Signed, but no payload field.
    let response = env.interactions.handle(fake::signed_request(
        &env.secret,
        now,
        bytes::Bytes::from_static(b"token=x&team_id=T1"),
    ));
    assert_eq!(response.status(), 400);
    // Signed, but the payload is not an interaction.
    let response = env.interactions.handle(fake::signed_request(
        &env.secret,
        now,
        bytes::Bytes::from_static(b"payload=%7B%22nope%22%3A1%7D"),
    ));
    assert_eq!(response.status(), 400);
    assert!(String::from_utf8_lossy(response.body()).contains("not an interaction"));
    // Unknown interaction types and foreign buttons are acknowledged and ignored.
    let (id, ts) = env.submit_export().await;
    let value = env.button_value(&ts, ACTION_APPROVE);
    let url = env.fake.response_url("other");
    let response = env.click(
        &Clicker::new(SAM),
        "someone.elses.button",
        &value,
        &ts,
        &url,
    );
    assert_eq!(response.status(), 200);
    let response = env.post(&serde_json::json!({"type": "shortcut", "team": {"id": fake::TEAM_ID}, "api_app_id": fake::APP_ID}));
    assert_eq!(response.status(), 200);
    settle().await;
    assert_eq!(env.record(id).await.state, RequestState::Pending);
    assert!(env.fake.responses().is_empty());
}

#[test]
fn outside_a_runtime_the_handler_refuses_instead_of_panicking() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let env = runtime.block_on(Env::new(Requirement::groups(["security"])));
    let payload =
        Clicker::new(SAM).block_actions(ACTION_APPROVE, "x y", "1.1", "http://127.0.0.1:1/r");
    let request = fake::signed_request(&env.secret, fake::now(), fake::form_body(&payload));
    let response = env.interactions.handle(request);
    assert_eq!(response.status(), 500);
    assert!(String::from_utf8_lossy(response.body()).contains("tokio runtime"));
}
