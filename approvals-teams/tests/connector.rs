//! Bot Connector client against the loopback fakes: sends and updates, bearer token, retries on
//! 429/5xx with bounded backoff, one token refresh on 401, and errors that say what to do.

use std::time::Duration;

use approvals_teams::activity::{ADAPTIVE_CARD_CONTENT_TYPE, OutgoingActivity};
use approvals_teams::connector::{ConnectorClient, ConnectorError, RetryPolicy};
use approvals_teams::fake::{FakeConnector, FakeTokenEndpoint};
use approvals_teams::token::{ClientSecret, TokenConfig, TokenProvider};
use serde_json::json;

const APP_ID: &str = "8c1f0d3e-0000-4000-8000-00000000b07a";
const SECRET: &str = "s3cr3t~value";
const CONVERSATION: &str = "19:f00dcafe@thread.tacv2;messageid=1700000000000";

struct Env {
    idp: FakeTokenEndpoint,
    bot: FakeConnector,
    client: ConnectorClient,
}

async fn setup(max_attempts: u32) -> Env {
    let idp = FakeTokenEndpoint::start(APP_ID, SECRET)
        .await
        .expect("token fake starts");
    let bot = FakeConnector::start().await.expect("connector fake starts");
    let tokens = TokenProvider::new(
        TokenConfig::new(APP_ID, ClientSecret::new(SECRET)).with_token_url(idp.token_url()),
    )
    .expect("provider builds");
    let client = ConnectorClient::new(tokens)
        .expect("client builds")
        .with_retry_policy(RetryPolicy::new(max_attempts, Duration::from_millis(5)));
    Env { idp, bot, client }
}

fn card() -> OutgoingActivity {
    OutgoingActivity::adaptive_card(json!({
        "type": "AdaptiveCard", "version": "1.5",
        "body": [{"type": "TextBlock", "text": "Rotate kms://prod/payments-key?"}]
    }))
}

/// Fails the test instead of hanging if a wait is not bounded.
async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("call finished within its bounded retries")
}

#[tokio::test]
async fn sends_and_updates_a_card_with_the_bearer_token() {
    let env = setup(3).await;
    let service_url = env.bot.service_url();
    let sent = env
        .client
        .send_to_conversation(&service_url, CONVERSATION, &card())
        .await
        .expect("card sent");
    let id = sent.id.expect("Teams returns the activity id");
    assert_eq!(id, "activity-1");

    let posted = env.bot.posted();
    assert_eq!(posted.len(), 1);
    assert_eq!(
        posted[0].conversation_id, CONVERSATION,
        "conversation id survives the path"
    );
    assert_eq!(
        posted[0].authorization.as_deref(),
        Some("Bearer fake-access-token-1")
    );
    assert_eq!(posted[0].body["type"], "message");
    assert_eq!(
        posted[0].body["attachments"][0]["contentType"],
        ADAPTIVE_CARD_CONTENT_TYPE
    );

    let updated = env
        .client
        .update_activity(&service_url, CONVERSATION, &id, &card().with_id(&id))
        .await
        .expect("card updated");
    assert_eq!(updated.id.as_deref(), Some("activity-1"));
    let puts = env.bot.updated();
    assert_eq!(puts.len(), 1);
    assert_eq!(puts[0].activity_id.as_deref(), Some("activity-1"));
    assert_eq!(puts[0].body["id"], "activity-1");
    // One token served both calls.
    assert_eq!(env.idp.requests(), 1);
}

#[tokio::test]
async fn ids_with_slashes_stay_one_path_segment() {
    let env = setup(3).await;
    env.client
        .update_activity(
            &env.bot.service_url(),
            "a:1/../../x",
            "id/with?odd#chars",
            &card(),
        )
        .await
        .expect("update sent");
    let puts = env.bot.updated();
    assert_eq!(puts.len(), 1);
    assert_eq!(puts[0].conversation_id, "a:1/../../x");
    assert_eq!(puts[0].activity_id.as_deref(), Some("id/with?odd#chars"));
}

#[tokio::test]
async fn retries_429_honouring_retry_after() {
    let env = setup(4).await;
    env.bot.fail_next(429, 2, Some("0"));
    bounded(
        env.client
            .send_to_conversation(&env.bot.service_url(), CONVERSATION, &card()),
    )
    .await
    .expect("sent after throttling");
    let statuses: Vec<u16> = env.bot.calls().iter().map(|c| c.status).collect();
    assert_eq!(statuses, vec![429, 429, 201]);
    assert_eq!(env.bot.posted().len(), 1);
}

#[tokio::test]
async fn retry_after_is_capped() {
    let env = setup(3).await;
    let mut policy = RetryPolicy::new(3, Duration::from_millis(5));
    policy.max_retry_after = Duration::from_millis(20);
    let client = env.client.clone().with_retry_policy(policy);
    // An hour-long Retry-After must not stall the caller for an hour.
    env.bot.fail_next(429, 1, Some("3600"));
    bounded(client.send_to_conversation(&env.bot.service_url(), CONVERSATION, &card()))
        .await
        .expect("sent after a capped wait");
    assert_eq!(env.bot.calls().len(), 2);
}

#[tokio::test]
async fn retries_server_errors_then_succeeds() {
    let env = setup(4).await;
    env.bot.fail_next(500, 1, None);
    env.bot.fail_next(503, 1, None);
    env.bot.fail_next(502, 1, None);
    bounded(
        env.client
            .send_to_conversation(&env.bot.service_url(), CONVERSATION, &card()),
    )
    .await
    .expect("sent on the fourth attempt");
    let statuses: Vec<u16> = env.bot.calls().iter().map(|c| c.status).collect();
    assert_eq!(statuses, vec![500, 503, 502, 201]);
}

#[tokio::test]
async fn gives_up_after_max_attempts() {
    let env = setup(3).await;
    env.bot.fail_next(500, 3, None);
    let err = bounded(env.client.send_to_conversation(
        &env.bot.service_url(),
        CONVERSATION,
        &card(),
    ))
    .await
    .expect_err("still failing");
    assert!(
        matches!(
            err,
            ConnectorError::Unavailable {
                status: 500,
                attempts: 3
            }
        ),
        "{err}"
    );
    assert!(err.is_retryable());
    assert_eq!(env.bot.calls().len(), 3, "exactly max_attempts requests");

    env.bot.fail_next(429, 3, Some("0"));
    let err = bounded(env.client.send_to_conversation(
        &env.bot.service_url(),
        CONVERSATION,
        &card(),
    ))
    .await
    .expect_err("still throttled");
    assert!(
        matches!(err, ConnectorError::Throttled { attempts: 3, .. }),
        "{err}"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn refreshes_the_token_once_on_401() {
    let env = setup(3).await;
    env.bot.revoke_token("fake-access-token-1");
    env.client
        .send_to_conversation(&env.bot.service_url(), CONVERSATION, &card())
        .await
        .expect("sent with a fresh token");
    let auths: Vec<Option<String>> = env
        .bot
        .calls()
        .into_iter()
        .map(|c| c.authorization)
        .collect();
    assert_eq!(
        auths,
        vec![
            Some("Bearer fake-access-token-1".to_owned()),
            Some("Bearer fake-access-token-2".to_owned())
        ]
    );
    assert_eq!(env.idp.requests(), 2);
}

#[tokio::test]
async fn a_second_401_is_reported_not_looped() {
    let env = setup(3).await;
    env.bot.revoke_token("fake-access-token-1");
    env.bot.revoke_token("fake-access-token-2");
    env.bot.revoke_token("fake-access-token-3");
    let err = env
        .client
        .send_to_conversation(&env.bot.service_url(), CONVERSATION, &card())
        .await
        .expect_err("token rejected twice");
    assert!(matches!(err, ConnectorError::Unauthorized), "{err}");
    assert!(err.to_string().contains("app id and secret"), "{err}");
    assert_eq!(env.bot.calls().len(), 2);
    assert_eq!(env.idp.requests(), 2);
}

#[tokio::test]
async fn client_errors_are_not_retried_and_say_what_to_do() {
    let env = setup(4).await;
    let url = env.bot.service_url();

    env.bot.fail_next(403, 1, None);
    let err = env
        .client
        .send_to_conversation(&url, CONVERSATION, &card())
        .await
        .expect_err("403");
    assert!(matches!(err, ConnectorError::Forbidden { .. }), "{err}");
    assert!(err.to_string().contains("installed"), "{err}");
    assert!(!err.is_retryable());

    env.bot.fail_next(404, 1, None);
    let err = env
        .client
        .update_activity(&url, CONVERSATION, "gone", &card())
        .await
        .expect_err("404");
    assert!(matches!(err, ConnectorError::NotFound { .. }), "{err}");

    env.bot.fail_next(400, 1, None);
    let err = env
        .client
        .send_to_conversation(&url, CONVERSATION, &card())
        .await
        .expect_err("400");
    assert!(
        matches!(err, ConnectorError::Rejected { status: 400, .. }),
        "{err}"
    );

    assert_eq!(env.bot.calls().len(), 3, "no retries for 4xx");
}

#[tokio::test]
async fn refuses_to_send_the_token_over_plain_http_to_a_remote_host() {
    let env = setup(3).await;
    for url in ["http://evil.example/amer/", "ftp://x.example/", "not a url"] {
        let err = env
            .client
            .send_to_conversation(url, CONVERSATION, &card())
            .await
            .expect_err("refused");
        assert!(matches!(err, ConnectorError::Config(_)), "{url}: {err}");
    }
    let err = env
        .client
        .send_to_conversation(&env.bot.service_url(), "", &card())
        .await
        .expect_err("empty conversation id refused");
    assert!(matches!(err, ConnectorError::Config(_)), "{err}");
    assert_eq!(env.idp.requests(), 0, "no token was even fetched");
    assert!(env.bot.calls().is_empty());
}

#[tokio::test]
async fn unreachable_connector_is_retried_then_reported() {
    let env = setup(3).await;
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let err = bounded(env.client.send_to_conversation(
        &format!("http://127.0.0.1:{port}/amer/"),
        CONVERSATION,
        &card(),
    ))
    .await
    .expect_err("nothing listens");
    assert!(matches!(err, ConnectorError::Transport { .. }), "{err}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn token_failures_surface_as_token_errors() {
    let env = setup(3).await;
    env.idp.fail_next(503, 1);
    let err = env
        .client
        .send_to_conversation(&env.bot.service_url(), CONVERSATION, &card())
        .await
        .expect_err("no token");
    assert!(matches!(err, ConnectorError::Token(_)), "{err}");
    assert!(err.is_retryable());
    assert!(env.bot.calls().is_empty());
}
