//! Socket Mode against the fake: hello, envelope acknowledgement, the approve flow without a
//! public URL, de-duplication, disconnects and reconnects.

mod common;

use std::time::Duration;

use approvals_core::{RequestState, Requirement};
use approvals_slack::blocks::{ACTION_APPROVE, ACTION_DENY, REASON_CALLBACK_ID};
use approvals_slack::fake::{self, Clicker};
use approvals_slack::{SocketMode, SocketModeError, SocketModeHandle, Token};
use common::*;

fn start(env: &Env) -> SocketModeHandle {
    SocketMode::new(
        env.fake.client(),
        Token::new(fake::APP_TOKEN),
        env.interactions.clone(),
    )
    .backoff(Duration::from_millis(10), Duration::from_millis(50))
    .spawn()
    .expect("socket mode")
}

async fn acked(env: &Env, envelope: &str) -> serde_json::Value {
    eventually(
        || {
            env.fake
                .socket_received()
                .iter()
                .any(|m| m["envelope_id"] == envelope)
        },
        "ack",
    )
    .await;
    env.fake
        .socket_received()
        .into_iter()
        .find(|m| m["envelope_id"] == envelope)
        .expect("ack")
}

#[tokio::test]
async fn approve_and_deny_over_socket_mode() {
    let env = Env::new(Requirement::groups(["security"])).await;
    let socket = start(&env);
    socket.wait_for_connections(1).await;
    assert_eq!(env.fake.socket_opens(), 1);

    let (id, ts) = env.submit_export().await;
    let value = env.button_value(&ts, ACTION_APPROVE);
    let url = env.fake.response_url("sm-approve");
    assert!(env.fake.socket_send_interactive(
        "env-1",
        Clicker::new(SAM).block_actions(ACTION_APPROVE, &value, &ts, &url)
    ));
    let ack = acked(&env, "env-1").await;
    assert_eq!(ack, serde_json::json!({"envelope_id": "env-1"}));
    env.gate.wait(id).await.expect("approved over Socket Mode");
    let replies = env.replies(&url, 1).await;
    assert!(replies[0].contains("You approved"));

    // Deny with a reason through the modal, all over the socket.
    let (id2, ts2) = env.submit_export().await;
    let value2 = env.button_value(&ts2, ACTION_DENY);
    let url2 = env.fake.response_url("sm-deny");
    env.fake.socket_send_interactive(
        "env-2",
        Clicker::new(ALEX).block_actions(ACTION_DENY, &value2, &ts2, &url2),
    );
    eventually(|| !env.fake.calls_to("views.open").is_empty(), "modal").await;
    let meta = env.fake.calls_to("views.open")[0].body["view"]["private_metadata"]
        .as_str()
        .expect("meta")
        .to_owned();
    // An empty reason gets the error in the acknowledgement payload.
    env.fake.socket_send_interactive(
        "env-3",
        Clicker::new(ALEX).view_submission(REASON_CALLBACK_ID, &meta, None),
    );
    let ack = acked(&env, "env-3").await;
    assert_eq!(ack["payload"]["response_action"], "errors", "{ack}");
    env.fake.socket_send_interactive(
        "env-4",
        Clicker::new(ALEX).view_submission(REASON_CALLBACK_ID, &meta, Some("too risky")),
    );
    acked(&env, "env-4").await;
    let err = env.gate.wait(id2).await.expect_err("denied");
    assert!(err.to_string().contains("too risky"), "{err}");

    socket.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn redelivered_envelopes_are_acknowledged_but_processed_once() {
    let env = Env::new(Requirement::groups(["security"]).quorum(2)).await;
    let socket = start(&env);
    socket.wait_for_connections(1).await;
    let (id, ts) = env.submit_export().await;
    let value = env.button_value(&ts, ACTION_APPROVE);
    let url = env.fake.response_url("sm-dup");
    let payload = Clicker::new(SAM).block_actions(ACTION_APPROVE, &value, &ts, &url);
    env.fake.socket_send_interactive("env-dup", payload.clone());
    env.fake.socket_send_interactive("env-dup", payload);
    eventually(
        || {
            env.fake
                .socket_received()
                .iter()
                .filter(|m| m["envelope_id"] == "env-dup")
                .count()
                == 2
        },
        "both acked",
    )
    .await;
    env.replies(&url, 1).await;
    settle().await;
    assert_eq!(env.fake.responses_to(&url).len(), 1, "processed once");
    assert_eq!(env.record(id).await.reviews.len(), 1);
    socket.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn foreign_workspaces_are_refused_over_socket_mode_too() {
    let env = Env::new(Requirement::groups(["security"])).await;
    let socket = start(&env);
    socket.wait_for_connections(1).await;
    let (id, ts) = env.submit_export().await;
    let value = env.button_value(&ts, ACTION_APPROVE);
    let url = env.fake.response_url("sm-foreign");
    let mut intruder = Clicker::new(SAM);
    intruder.team_id = "T0EVIL0001".into();
    intruder.user_team_id = "T0EVIL0001".into();
    env.fake.socket_send_interactive(
        "env-f",
        intruder.block_actions(ACTION_APPROVE, &value, &ts, &url),
    );
    acked(&env, "env-f").await;
    let replies = env.replies(&url, 1).await;
    assert!(replies[0].contains("not allowed"), "{replies:?}");
    assert_eq!(env.record(id).await.state, RequestState::Pending);
    socket.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn disconnects_reconnect_and_link_disabled_stops() {
    let env = Env::new(Requirement::groups(["security"])).await;
    let socket = start(&env);
    socket.wait_for_connections(1).await;

    // Slack asks for a refresh: a new URL and connection.
    assert!(env.fake.socket_disconnect("refresh_requested"));
    socket.wait_for_connections(2).await;
    assert_eq!(env.fake.socket_opens(), 2);

    // The connection drops without warning: reconnect with backoff.
    env.fake.socket_drop();
    socket.wait_for_connections(3).await;

    // apps.connections.open failing for a while: keep retrying.
    for _ in 0..4 {
        env.fake
            .fail_next("apps.connections.open", fake::Failure::Status(503));
    }
    env.fake.socket_drop();
    socket.wait_for_connections(4).await;

    // Socket Mode switched off: stop with a clear error.
    assert!(env.fake.socket_disconnect("link_disabled"));
    let err = socket.join().await.expect_err("stopped");
    assert!(matches!(err, SocketModeError::LinkDisabled), "{err}");
}

#[tokio::test]
async fn wrong_tokens_are_refused() {
    let env = Env::new(Requirement::groups(["security"])).await;
    let err = SocketMode::new(
        env.fake.client(),
        Token::new(fake::BOT_TOKEN),
        env.interactions.clone(),
    )
    .spawn()
    .expect_err("bot token");
    assert!(matches!(err, SocketModeError::WrongTokenType(_)), "{err}");
    let socket = SocketMode::new(
        env.fake.client(),
        Token::new("xapp-1-revoked"),
        env.interactions.clone(),
    )
    .spawn()
    .expect("starts");
    let err = socket.join().await.expect_err("refused");
    assert!(err.to_string().contains("invalid_auth"), "{err}");
}
