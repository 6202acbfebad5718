//! The framework-agnostic inbound entry point: an `adaptiveCard/action` invoke request is
//! accepted only with a valid token for its own serviceUrl and channel.

use approvals_teams::activity::InvokeTrigger;
use approvals_teams::auth::{AuthConfig, AuthError, BotAuthenticator};
use approvals_teams::fake::{FakeOpenId, TokenSpec};
use approvals_teams::inbound::{InboundError, authenticate_request};
use bytes::Bytes;
use serde_json::{Value, json};

const APP_ID: &str = "8c1f0d3e-0000-4000-8000-00000000b07a";
const SERVICE_URL: &str = "https://smba.trafficmanager.net/amer/";

fn invoke_body(service_url: &str, channel_id: &str) -> Value {
    json!({
        "type": "invoke",
        "name": "adaptiveCard/action",
        "id": "f:8a0b3c",
        "channelId": channel_id,
        "serviceUrl": service_url,
        "from": {"id": "29:1abc", "name": "Ann Reviewer", "aadObjectId": "6d4c8b1a-aad-ann"},
        "recipient": {"id": "28:" , "name": "Approvals"},
        "conversation": {"id": "19:f00d@thread.tacv2", "conversationType": "channel", "tenantId": "tenant-1"},
        "channelData": {"tenant": {"id": "tenant-1"}},
        "replyToId": "1700000000000",
        "value": {
            "action": {"type": "Action.Execute", "verb": "approve", "data": {"requestId": "req-1"}},
            "trigger": "manual"
        }
    })
}

fn request(
    method: http::Method,
    authorization: Option<&str>,
    body: &Value,
) -> http::Request<Bytes> {
    let mut builder = http::Request::builder()
        .method(method)
        .uri("/api/messages")
        .header(http::header::CONTENT_TYPE, "application/json");
    if let Some(a) = authorization {
        builder = builder.header(http::header::AUTHORIZATION, a);
    }
    builder
        .body(Bytes::from(body.to_string()))
        .expect("request builds")
}

async fn setup() -> (FakeOpenId, BotAuthenticator) {
    let idp = FakeOpenId::start().await.expect("fake starts");
    let auth =
        BotAuthenticator::new(AuthConfig::new(APP_ID).with_openid_metadata_url(idp.metadata_url()))
            .expect("authenticator builds");
    (idp, auth)
}

#[tokio::test]
async fn a_signed_card_click_is_authenticated_and_parsed() {
    let (idp, auth) = setup().await;
    let token = format!(
        "Bearer {}",
        idp.mint(&TokenSpec::valid(APP_ID, SERVICE_URL))
    );
    let req = request(
        http::Method::POST,
        Some(&token),
        &invoke_body(SERVICE_URL, "msteams"),
    );
    let inbound = authenticate_request(&auth, &req)
        .await
        .expect("authenticated");
    assert_eq!(inbound.claims.service_url, SERVICE_URL);
    let click = inbound.activity.card_action().expect("card action");
    assert_eq!(click.verb, "approve");
    assert_eq!(click.data["requestId"], "req-1");
    assert_eq!(click.trigger, Some(InvokeTrigger::Manual));
    assert_eq!(
        click.from_aad_object_id.as_deref(),
        Some("6d4c8b1a-aad-ann")
    );
    assert_eq!(click.tenant_id.as_deref(), Some("tenant-1"));
    assert_eq!(click.conversation_id, "19:f00d@thread.tacv2");
    assert_eq!(click.card_activity_id.as_deref(), Some("1700000000000"));
}

#[tokio::test]
async fn missing_token_is_401_before_anything_else() {
    let (idp, auth) = setup().await;
    for header in [None, Some(""), Some("   ")] {
        let req = request(http::Method::POST, header, &json!("not even an activity"));
        let err = authenticate_request(&auth, &req)
            .await
            .expect_err("no token");
        assert_eq!(err.status(), 401, "{err}");
        assert!(matches!(
            err,
            InboundError::Unauthenticated(AuthError::MissingToken)
        ));
    }
    assert_eq!(idp.metadata_requests(), 0);
}

#[tokio::test]
async fn activity_pointing_elsewhere_than_the_token_is_401() {
    let (idp, auth) = setup().await;
    let token = format!(
        "Bearer {}",
        idp.mint(&TokenSpec::valid(APP_ID, SERVICE_URL))
    );
    // A replayed genuine token with a body redirecting replies (and our token) elsewhere.
    let req = request(
        http::Method::POST,
        Some(&token),
        &invoke_body("https://evil.example/", "msteams"),
    );
    let err = authenticate_request(&auth, &req)
        .await
        .expect_err("redirect refused");
    assert_eq!(err.status(), 401);
    assert!(matches!(
        err,
        InboundError::Unauthenticated(AuthError::ServiceUrlMismatch { .. })
    ));
    // Same for a body without serviceUrl.
    let mut body = invoke_body(SERVICE_URL, "msteams");
    body.as_object_mut().map(|o| o.remove("serviceUrl"));
    let err = authenticate_request(&auth, &request(http::Method::POST, Some(&token), &body))
        .await
        .expect_err("no serviceUrl refused");
    assert_eq!(err.status(), 401);
}

#[tokio::test]
async fn channel_without_endorsement_is_401() {
    let (idp, auth) = setup().await;
    let token = format!(
        "Bearer {}",
        idp.mint(&TokenSpec::valid(APP_ID, SERVICE_URL))
    );
    let req = request(
        http::Method::POST,
        Some(&token),
        &invoke_body(SERVICE_URL, "webchat"),
    );
    let err = authenticate_request(&auth, &req)
        .await
        .expect_err("not endorsed");
    assert!(matches!(
        err,
        InboundError::Unauthenticated(AuthError::MissingEndorsement { .. })
    ));
}

#[tokio::test]
async fn forged_token_is_401_and_bad_body_is_400() {
    let (idp, auth) = setup().await;
    let forged = format!(
        "Bearer {}",
        idp.mint(
            &TokenSpec::valid(APP_ID, SERVICE_URL)
                .signed_with(approvals_teams::fake::Signer::UnpublishedKey)
        )
    );
    let req = request(
        http::Method::POST,
        Some(&forged),
        &invoke_body(SERVICE_URL, "msteams"),
    );
    let err = authenticate_request(&auth, &req).await.expect_err("forged");
    assert_eq!(err.status(), 401);
    assert!(!err.is_retryable());

    let token = format!(
        "Bearer {}",
        idp.mint(&TokenSpec::valid(APP_ID, SERVICE_URL))
    );
    let req = request(http::Method::POST, Some(&token), &json!([1, 2, 3]));
    let err = authenticate_request(&auth, &req)
        .await
        .expect_err("not an activity");
    assert_eq!(err.status(), 400);

    let req = request(
        http::Method::GET,
        Some(&token),
        &invoke_body(SERVICE_URL, "msteams"),
    );
    let err = authenticate_request(&auth, &req).await.expect_err("GET");
    assert_eq!(err.status(), 405);
}
