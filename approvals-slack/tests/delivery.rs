//! Delivery: rate limits, server errors, failures that must never approve anything, and the
//! opt-in lookup of reviewers by email.

mod common;

use std::sync::Arc;

use approvals_core::{
    EventDetail, GuardError, IdentityError, IdentityResolver, Principal, RequestState, Requirement,
    StaticIdentityResolver,
};
use approvals_slack::fake::{self, Failure, FakeSlack};
use approvals_slack::{SlackEmailResolver, SlackError};
use common::*;
use serde_json::json;

#[tokio::test]
async fn rate_limits_are_honoured_and_server_errors_retried() {
    let env = Env::new(Requirement::groups(["security"])).await;
    env.fake.fail_next(
        "chat.postMessage",
        Failure::RateLimited {
            retry_after_secs: 1,
        },
    );
    env.fake.fail_next("chat.postMessage", Failure::Status(503));
    let started = std::time::Instant::now();
    let (id, _ts) = env.submit_export().await;
    // Retry-After: 1 was waited for (a lower bound only; no timing upper bound is asserted).
    assert!(started.elapsed() >= std::time::Duration::from_secs(1));
    assert_eq!(env.fake.calls_to("chat.postMessage").len(), 3);
    assert_eq!(env.record(id).await.state, RequestState::Pending);
}

#[tokio::test]
async fn a_failed_delivery_cancels_the_request_and_is_audited() {
    let env = Env::new(Requirement::groups(["security"])).await;
    env.fake
        .fail_next("chat.postMessage", Failure::Api("channel_not_found".into()));
    let err = env.gate.submit(&export()).await.expect_err("undeliverable");
    let GuardError::DeliveryFailed { id, errors } = err else {
        panic!("expected DeliveryFailed");
    };
    assert!(errors.contains("channel_not_found"), "{errors}");
    assert_eq!(env.record(id).await.state, RequestState::Cancelled);
    let failed: Vec<String> = env
        .audit
        .for_request(id)
        .into_iter()
        .filter_map(|e| match e.detail {
            EventDetail::DispatchFailed { channel, error } => Some(format!("{channel}: {error}")),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0].starts_with("slack: ") && failed[0].contains("channel_not_found"),
        "{failed:?}"
    );
    // Persistent 5xx and long rate limits fail too (after retries), never approve.
    for failure in [
        Failure::Status(500),
        Failure::RateLimited {
            retry_after_secs: 120,
        },
    ] {
        for _ in 0..4 {
            env.fake.fail_next("chat.postMessage", failure.clone());
        }
        let err = env.gate.submit(&export()).await.expect_err("undeliverable");
        let id = err.request_id().expect("id");
        assert_eq!(env.record(id).await.state, RequestState::Cancelled);
        assert!(env.record(id).await.reviews.is_empty());
    }
}

#[tokio::test]
async fn a_failed_message_update_is_audited_and_changes_no_decision() {
    let env = Env::new(Requirement::groups(["security"])).await;
    let (id, ts) = env.submit_export().await;
    for _ in 0..4 {
        env.fake.fail_next("chat.update", Failure::Status(502));
    }
    let value = env.button_value(&ts, approvals_slack::blocks::ACTION_APPROVE);
    let url = env.fake.response_url("upd");
    env.click(
        &fake::Clicker::new(SAM),
        approvals_slack::blocks::ACTION_APPROVE,
        &value,
        &ts,
        &url,
    );
    env.gate.wait(id).await.expect("approved regardless");
    eventually(
        || env.audit.for_request(id).iter().any(|e| matches!(&e.detail, EventDetail::DispatchFailed { error, .. } if error.contains("502"))),
        "dispatch_failed audited",
    )
    .await;
}

#[tokio::test]
async fn the_client_reports_slack_errors_clearly() {
    let fake = FakeSlack::start().await.expect("fake");
    let client = fake.client();
    let err = client
        .update_message(
            &approvals_slack::MessageRef {
                channel: "C1".into(),
                ts: "1.2".into(),
            },
            "x",
            &[],
        )
        .await
        .expect_err("no such message");
    assert_eq!(err.api_error(), Some("message_not_found"));
    assert!(!err.is_retryable());
    fake.fail_next("chat.postMessage", Failure::Api("missing_scope".into()));
    let err = client
        .post_message("C1", "x", &[])
        .await
        .expect_err("scope");
    assert!(matches!(err, SlackError::Api { .. }));
    // Invalid blocks are rejected by the fake as Slack does.
    let err = client
        .post_message(
            "C1",
            "x",
            &[json!({"type": "header", "text": {"type": "plain_text", "text": "x".repeat(151)}})],
        )
        .await
        .expect_err("invalid");
    assert_eq!(err.api_error(), Some("invalid_blocks"));
    // A bot token cannot open Socket Mode.
    let err = client
        .open_socket_url(&approvals_slack::Token::new(fake::BOT_TOKEN))
        .await
        .expect_err("wrong token");
    assert_eq!(err.api_error(), Some("not_allowed_token_type"));
}

#[tokio::test]
async fn email_lookup_maps_verified_addresses_only() {
    let fake = FakeSlack::start().await.expect("fake");
    fake.add_user("U0SAM", fake::TEAM_ID, Some("Sam@Example.com"));
    fake.add_user("U0NOMAIL", fake::TEAM_ID, None);
    fake.add_user("U0OTHER", "T0EVIL", Some("sam@example.com"));
    fake.add_user("U0TWIN", fake::TEAM_ID, Some("twin@example.com"));
    fake.add_user_object(json!({"id": "U0GONE", "team_id": fake::TEAM_ID, "deleted": true, "profile": {"email": "sam@example.com"}}));
    fake.add_user_object(json!({"id": "U0BOT", "team_id": fake::TEAM_ID, "is_bot": true, "profile": {"email": "sam@example.com"}}));
    fake.add_user_object(json!({"id": "U0UNCONF", "team_id": fake::TEAM_ID, "is_email_confirmed": false, "profile": {"email": "sam@example.com"}}));
    let directory = StaticIdentityResolver::new()
        .map(
            "email",
            "sam@example.com",
            Principal::human("sam@example.com").with_groups(["security"]),
        )
        .map("email", "twin@example.com", Principal::human("a"))
        .map("email", "twin@example.com", Principal::human("b"));
    let resolver = SlackEmailResolver::new(fake.client(), directory).team(fake::TEAM_ID);

    let sam = resolver.resolve("slack", "U0SAM").await.expect("sam");
    assert_eq!(sam.id, "sam@example.com");
    assert!(sam.in_group("security"));
    for user in [
        "U0NOMAIL",
        "U0OTHER",
        "U0GONE",
        "U0BOT",
        "U0UNCONF",
        "U0MISSING",
    ] {
        assert!(
            matches!(
                resolver.resolve("slack", user).await,
                Err(IdentityError::Unknown { .. })
            ),
            "{user}"
        );
    }
    assert!(matches!(
        resolver.resolve("slack", "U0TWIN").await,
        Err(IdentityError::Ambiguous { count: 2, .. })
    ));
    assert!(matches!(
        resolver.resolve("teams", "U0SAM").await,
        Err(IdentityError::Unknown { .. })
    ));
    assert_eq!(fake.calls_to("users.info")[0].body["user"], "U0SAM");
    // Slack unreachable: unavailable, not unknown, not a pass.
    for _ in 0..4 {
        fake.fail_next("users.info", Failure::Status(500));
    }
    assert!(matches!(
        resolver.resolve("slack", "U0SAM").await,
        Err(IdentityError::Unavailable(_))
    ));
}

#[tokio::test]
async fn a_redelivery_records_the_message_an_earlier_process_posted_instead_of_posting_again() {
    let env = Env::new(Requirement::groups(["security"])).await;
    let (id, ts) = env.submit_export().await;
    let (other, other_ts) = env.submit_export().await;
    assert_ne!(ts, other_ts);
    let posted = env.fake.calls_to("chat.postMessage");
    assert_eq!(posted.len(), 2);
    assert_eq!(
        posted[0].body["metadata"],
        json!({"event_type": "approval_request", "event_payload": {"request_id": id.to_string()}}),
        "each message names its request in its metadata"
    );

    // Another app in the channel posts a newer message claiming to be the request's.
    let decoy = env.fake.post_as_another_app(
        fake::CONVERSATION,
        "Approve here instead",
        json!({"event_type": "approval_request", "event_payload": {"request_id": id.to_string()}}),
    );
    assert_ne!(decoy, ts);

    // As after a process died between Slack accepting the post and the store recording it:
    // the stored request has no delivery.
    let found = redeliver(&env, id).await;
    assert_eq!(
        found.reference["ts"],
        ts.as_str(),
        "the earlier message this app posted, not the other app's"
    );
    let found_other = redeliver(&env, other).await;
    assert_eq!(
        found_other.reference["ts"],
        other_ts.as_str(),
        "each request finds its own message, not another's"
    );
    assert_eq!(
        env.fake.calls_to("chat.postMessage").len(),
        2,
        "no new post"
    );
    let lookups = env.fake.calls_to("conversations.history");
    assert_eq!(lookups.len(), 2);
    assert_eq!(env.fake.calls_to("auth.test").len(), 2, "the app's bot id");
    assert_eq!(lookups[0].body["include_all_metadata"], "true");
    assert_eq!(lookups[0].body["channel"], fake::CONVERSATION);

    // Without the history scope the look-up fails, and the request is posted again rather
    // than left without a message.
    env.fake.fail_next(
        "conversations.history",
        Failure::Api("missing_scope".into()),
    );
    let reposted = redeliver(&env, id).await;
    assert_ne!(reposted.reference["ts"], ts.as_str());
    assert_eq!(env.fake.calls_to("chat.postMessage").len(), 3);

    // A first delivery never looks (there is nothing to find).
    let (_, _) = env.submit_export().await;
    assert_eq!(env.fake.calls_to("conversations.history").len(), 3);
}

/// Delivers `id` again as a re-attaching agent would, with no delivery recorded.
async fn redeliver(env: &Env, id: approvals_core::RequestId) -> approvals_core::Delivery {
    use approvals_core::{Approver, DispatchReason};

    let mut record = env.record(id).await;
    record.deliveries.clear();
    env.approver
        .dispatch(
            &record,
            DispatchReason::Redelivery,
            Arc::new(env.gate.clone()),
        )
        .await
        .expect("redelivery")
        .expect("a delivery")
}

/// A reminder point of the timeout passes: the reviewers get a reply in the request's thread
/// (no second message to act on), with the count and the expiry and no outside text; once.
#[tokio::test]
async fn a_reminder_is_a_reply_in_the_requests_thread() {
    let env = Env::new(
        Requirement::groups(["security"])
            .timeout(std::time::Duration::from_secs(1800))
            .reminders([50]),
    )
    .await;
    let (id, ts) = env.submit_export().await;
    let posted = env.fake.calls_to("chat.postMessage").len();
    env.clock.advance(chrono::TimeDelta::minutes(15));
    assert_eq!(env.gate.sweep().await.expect("sweep").reminded, 1);
    assert_eq!(env.gate.sweep().await.expect("sweep").reminded, 0, "once");
    let calls = env.fake.calls_to("chat.postMessage");
    assert_eq!(calls.len(), posted + 1);
    let reply = &calls[posted].body;
    assert_eq!(reply["thread_ts"], json!(ts), "{reply}");
    assert_eq!(reply["channel"], json!(fake::CONVERSATION));
    assert!(
        reply.get("blocks").is_none(),
        "no buttons in a reminder: {reply}"
    );
    let text = reply["text"].as_str().expect("text");
    assert!(text.contains("Reminder 1 of 1"), "{text}");
    assert!(text.contains("0 of 1 approvals"), "{text}");
    let record = env.record(id).await;
    assert_eq!(record.state, RequestState::Pending);
    assert_eq!(
        record.deliveries.len(),
        1,
        "the reply is not a message to update"
    );
}
