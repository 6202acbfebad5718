//! End to end against loopback fakes: a gate with a `TeamsApprover` posting to the fake Bot
//! Connector, clicks signed by the fake OpenID/JWKS endpoint sent through `TeamsInteractions`,
//! and every attack on the way in.

use std::sync::Arc;
use std::time::Duration;

use approvals_core::{
    ActionRequest, AuditEvent, EventDetail, Gate, Initiator, Inserted, ListFilter, ManualClock,
    MemorySink, MemoryStore, Principal, RejectCause, RequestContext, RequestId, RequestRecord,
    RequestState, Requirement, StaticIdentityResolver, StaticPolicy, Store, StoreError, Submission,
};
use approvals_teams::activity::{ADAPTIVE_CARD_CONTENT_TYPE, MESSAGE_RESPONSE_TYPE};
use approvals_teams::auth::{AuthConfig, BotAuthenticator};
use approvals_teams::connector::{ConnectorClient, RetryPolicy};
use approvals_teams::fake::{
    DEFAULT_KID, FakeConnector, FakeOpenId, FakeTokenEndpoint, Signer, TokenSpec, now_unix,
};
use approvals_teams::token::{ClientSecret, TokenConfig, TokenProvider};
use approvals_teams::{InteractionsConfigError, TeamsApprover, TeamsInteractions};
use bytes::Bytes;
use chrono::TimeDelta;
use serde_json::{Value, json};

const APP_ID: &str = "8c1f0d3e-0000-4000-8000-00000000b07a";
const SECRET: &str = "s3cr3t~value";
const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CONVERSATION: &str = "19:approvals@thread.tacv2";
const ANN: &str = "aad-ann";
const BOB: &str = "aad-bob";
const DANA: &str = "aad-dana";
const AGENT_AAD: &str = "aad-agent";

struct Env {
    idp: FakeOpenId,
    bot: FakeConnector,
    _tokens: FakeTokenEndpoint,
    gate: Gate,
    audit: Arc<MemorySink>,
    clock: Arc<ManualClock>,
    handler: TeamsInteractions,
}

fn resolver() -> StaticIdentityResolver {
    let teams = |aad: &str| format!("{TENANT}/{aad}");
    StaticIdentityResolver::new()
        .map(
            "teams",
            teams(ANN),
            Principal::human("ann@example.com")
                .with_name("Ann")
                .with_groups(["security"]),
        )
        .map(
            "teams",
            teams(BOB),
            Principal::human("bob@example.com")
                .with_name("Bob")
                .with_groups(["security"]),
        )
        // The human the agent acts for, also in the reviewer group.
        .map(
            "teams",
            teams(DANA),
            Principal::human("dana@example.com").with_groups(["security"]),
        )
        .map(
            "teams",
            teams(AGENT_AAD),
            Principal::agent("billing-agent").with_groups(["security"]),
        )
}

async fn setup(quorum: u32) -> Env {
    setup_with(Requirement::groups(["security"]).quorum(quorum)).await
}

async fn setup_with(requirement: Requirement) -> Env {
    build_env(
        requirement,
        Arc::new(MemoryStore::new()),
        Duration::from_secs(4),
    )
    .await
}

async fn build_env(requirement: Requirement, store: Arc<dyn Store>, timeout: Duration) -> Env {
    let idp = FakeOpenId::start().await.expect("openid fake starts");
    let bot = FakeConnector::start().await.expect("connector fake starts");
    let tokens_ep = FakeTokenEndpoint::start(APP_ID, SECRET)
        .await
        .expect("token fake starts");
    let tokens = TokenProvider::new(
        TokenConfig::new(APP_ID, ClientSecret::new(SECRET)).with_token_url(tokens_ep.token_url()),
    )
    .expect("token provider builds");
    let connector = ConnectorClient::new(tokens)
        .expect("connector builds")
        .with_retry_policy(RetryPolicy::new(2, Duration::from_millis(5)));
    let approver = TeamsApprover::new(connector, bot.service_url(), CONVERSATION);
    let audit = Arc::new(MemorySink::new());
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let gate = Gate::builder()
        .policy(StaticPolicy::require(requirement))
        .store_shared(store)
        .audit_shared(audit.clone())
        .approver(approver.clone())
        .clock(clock.clone())
        .initiator(
            Initiator::agent("billing-agent")
                .model("gpt-5")
                .on_behalf_of(Principal::human("dana@example.com").with_name("Dana")),
        )
        .build()
        .expect("gate builds");
    let auth =
        BotAuthenticator::new(AuthConfig::new(APP_ID).with_openid_metadata_url(idp.metadata_url()))
            .expect("authenticator builds");
    let handler = TeamsInteractions::builder(gate.clone(), resolver())
        .authenticator(auth)
        .allow_tenant(TENANT)
        .approver(approver)
        .decision_timeout(timeout)
        .build()
        .expect("handler builds");
    Env {
        idp,
        bot,
        _tokens: tokens_ep,
        gate,
        audit,
        clock,
        handler,
    }
}

fn export() -> ActionRequest {
    ActionRequest::new("data.export", "db://prod/customers")
        .params(json!({"table": "customers", "rows": 5000, "format": "csv"}))
        .justification("Quarterly report for finance (FIN-1234).")
        .context(RequestContext {
            environment: Some("production".into()),
            ticket: Some("FIN-1234".into()),
            impact: Some("5000 customer rows leave the database.".into()),
            ..Default::default()
        })
}

impl Env {
    async fn submit(&self, action: &ActionRequest) -> RequestId {
        match self.gate.submit(action).await.expect("submitted") {
            Submission::Pending(id) => id,
            Submission::Allowed(_) => panic!("expected a pending request"),
        }
    }

    /// The card the bot posted for the request (the first POST).
    fn posted_card(&self) -> (String, Value) {
        let posted = self.bot.posted();
        let call = posted.first().expect("the card was posted");
        assert_eq!(call.conversation_id, CONVERSATION);
        let attachment = &call.body["attachments"][0];
        assert_eq!(attachment["contentType"], ADAPTIVE_CARD_CONTENT_TYPE);
        // The fake numbers activities; the first is activity-1.
        ("activity-1".to_owned(), attachment["content"].clone())
    }

    /// The `data` of the card's button with `verb`.
    fn button_data(&self, verb: &str) -> Value {
        let (_, card) = self.posted_card();
        card["actions"]
            .as_array()
            .and_then(|a| a.iter().find(|b| b["verb"] == verb))
            .map(|b| b["data"].clone())
            .expect("button present")
    }

    fn token(&self) -> String {
        self.idp
            .mint(&TokenSpec::valid(APP_ID, &self.bot.service_url()))
    }

    async fn click(&self, aad: &str, verb: &str, reason: Option<&str>) -> Value {
        let mut data = self.button_data(verb);
        if let Some(r) = reason {
            data["reason"] = json!(r);
        }
        let body = invoke(&self.bot.service_url(), TENANT, aad, verb, data, "manual");
        let response = self.send(&self.token(), &body).await;
        assert_eq!(response.status(), 200, "{:?}", response.body());
        serde_json::from_slice(response.body()).expect("invoke response is JSON")
    }

    async fn send(&self, token: &str, body: &Value) -> http::Response<Bytes> {
        self.handler.handle(request(Some(token), body)).await
    }

    async fn state(&self, id: RequestId) -> RequestState {
        self.gate
            .get(id)
            .await
            .expect("store answers")
            .expect("request exists")
            .state
    }

    fn rejections(&self, id: RequestId) -> Vec<(RejectCause, String)> {
        self.audit
            .for_request(id)
            .into_iter()
            .filter_map(|e| match e.detail {
                EventDetail::ReviewRejected { cause, detail, .. } => Some((cause, detail)),
                _ => None,
            })
            .collect()
    }

    fn reviews(&self, id: RequestId) -> Vec<AuditEvent> {
        self.audit
            .for_request(id)
            .into_iter()
            .filter(|e| e.name() == "reviewed")
            .collect()
    }

    /// Waits (bounded) until the fake connector has received `n` successful updates.
    async fn updates(&self, n: usize) -> Vec<Value> {
        for _ in 0..400 {
            let updated = self.bot.updated();
            if updated.len() >= n {
                return updated.into_iter().map(|c| c.body).collect();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "expected {n} card updates, got {}",
            self.bot.updated().len()
        );
    }
}

fn invoke(
    service_url: &str,
    tenant: &str,
    aad: &str,
    verb: &str,
    data: Value,
    trigger: &str,
) -> Value {
    json!({
        "type": "invoke",
        "name": "adaptiveCard/action",
        "id": "f:8a0b3c",
        "channelId": "msteams",
        "serviceUrl": service_url,
        "from": {"id": format!("29:{aad}"), "name": "Someone", "aadObjectId": aad},
        "recipient": {"id": "28:bot", "name": "Approvals"},
        "conversation": {"id": format!("{CONVERSATION};messageid=activity-1"), "conversationType": "channel", "tenantId": tenant},
        "channelData": {"tenant": {"id": tenant}},
        "replyToId": "activity-1",
        "value": {
            "action": {"type": "Action.Execute", "verb": verb, "data": data},
            "trigger": trigger
        }
    })
}

fn request(token: Option<&str>, body: &Value) -> http::Request<Bytes> {
    let mut builder = http::Request::builder()
        .method(http::Method::POST)
        .uri("/api/messages")
        .header(http::header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        builder = builder.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    builder
        .body(Bytes::from(body.to_string()))
        .expect("request builds")
}

/// Every string in the card's text runs, text blocks and facts, concatenated.
fn card_strings(card: &Value) -> String {
    fn walk(v: &Value, out: &mut String) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    if matches!(k.as_str(), "text" | "value" | "title")
                        && let Some(s) = v.as_str()
                    {
                        out.push_str(s);
                        out.push('\n');
                    }
                    walk(v, out);
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    let mut out = String::new();
    walk(card, &mut out);
    out
}

/// The invoke response's card (asserting it is one).
fn response_card(response: &Value) -> &Value {
    assert_eq!(response["statusCode"], 200, "{response}");
    assert_eq!(response["type"], ADAPTIVE_CARD_CONTENT_TYPE, "{response}");
    &response["value"]
}

// ------------------------------------------------------------------------------------------
// Flows.

#[tokio::test]
async fn approve_flow_posts_the_card_applies_the_click_and_replaces_the_card() {
    let env = setup(1).await;
    let id = env.submit(&export()).await;

    // The posted card: version 1.5, Action.Execute with Action.Submit fallback, reason input.
    let (_, card) = env.posted_card();
    assert_eq!(card["version"], "1.5");
    let actions = card["actions"].as_array().expect("actions");
    assert_eq!(actions.len(), 2);
    for action in actions {
        assert_eq!(action["type"], "Action.Execute");
        assert_eq!(action["fallback"]["type"], "Action.Submit");
        assert_eq!(action["data"]["request_id"], id.to_string());
        assert_eq!(action["fallback"]["data"], action["data"]);
    }
    assert!(
        card["body"]
            .as_array()
            .expect("body")
            .iter()
            .any(|e| e["type"] == "Input.Text" && e["id"] == "reason")
    );
    let shown = card_strings(&card);
    for expected in [
        "billing",
        "gpt",
        "Dana",
        "data.export",
        "db://prod/customers",
        "production",
        "FIN",
        "5000 customer rows leave the database.",
        "Quarterly report for finance (FIN-1234).",
        "\"rows\": 5000",
        &id.to_string(),
    ] {
        assert!(
            shown.contains(expected),
            "card lacks {expected:?}:\n{shown}"
        );
    }

    let response = env.click(ANN, "approve", Some("checked the ticket")).await;
    let card = response_card(&response);
    let text = card_strings(card);
    assert!(text.contains("You approved this request"), "{text}");
    assert!(text.contains("Approved"), "{text}");
    assert!(card.get("actions").is_none(), "no buttons once approved");
    assert_eq!(env.state(id).await, RequestState::Approved);

    let reviews = env.reviews(id);
    assert_eq!(reviews.len(), 1);
    match &reviews[0].detail {
        EventDetail::Reviewed {
            reviewer,
            channel,
            reason,
            ..
        } => {
            assert_eq!(reviewer.id, "ann@example.com");
            assert_eq!(channel, "teams");
            assert_eq!(reason.as_deref(), Some("checked the ticket"));
        }
        other => panic!("unexpected {other:?}"),
    }

    // Everyone's card is replaced through PUT on the posted activity.
    let updates = env.updates(1).await;
    let put = &env.bot.updated()[0];
    assert_eq!(put.activity_id.as_deref(), Some("activity-1"));
    assert_eq!(put.conversation_id, CONVERSATION);
    assert_eq!(updates[0]["id"], "activity-1");
    let updated = card_strings(&updates[0]["attachments"][0]["content"]);
    assert!(
        updated.contains("Approved") && updated.contains("Ann"),
        "{updated}"
    );

    // The agent gets its grant.
    let grant = env.gate.wait(id).await.expect("granted");
    assert_eq!(grant.approvers()[0].id, "ann@example.com");

    // One client-credentials token served the post and the update, sent as a bearer token.
    assert_eq!(env._tokens.requests(), 1);
    let issued = env._tokens.issued();
    for call in env.bot.calls() {
        assert_eq!(
            call.authorization.as_deref(),
            Some(format!("Bearer {}", issued[0]).as_str())
        );
    }
}

#[tokio::test]
async fn deny_flow_ends_the_request_with_the_reason_on_the_card() {
    let env = setup(2).await;
    let id = env.submit(&export()).await;
    let response = env.click(BOB, "deny", Some("no ticket approval yet")).await;
    let text = card_strings(response_card(&response));
    assert!(text.contains("You denied this request"), "{text}");
    assert!(text.contains("no ticket approval yet"), "{text}");
    assert_eq!(env.state(id).await, RequestState::Denied);
    let updates = env.updates(1).await;
    let updated = card_strings(&updates[0]["attachments"][0]["content"]);
    assert!(
        updated.contains("Denied") && updated.contains("Bob"),
        "{updated}"
    );
    assert!(updated.contains("no ticket approval yet"), "{updated}");
    assert!(env.gate.wait(id).await.is_err(), "denied: no grant");
}

#[tokio::test]
async fn quorum_needs_two_people_and_shows_progress_to_everyone() {
    let env = setup(2).await;
    let id = env.submit(&export()).await;

    let first = env.click(ANN, "approve", None).await;
    let text = card_strings(response_card(&first));
    assert!(text.contains("1 of 2"), "{text}");
    assert_eq!(env.state(id).await, RequestState::Pending);
    // Progress is pushed to everyone's card.
    let updates = env.updates(1).await;
    let progress = card_strings(&updates[0]["attachments"][0]["content"]);
    assert!(progress.contains("1 of 2 approvals"), "{progress}");

    // The same person again does not count twice.
    let again = env.click(ANN, "approve", None).await;
    let text = card_strings(response_card(&again));
    assert!(text.contains("Nothing was applied"), "{text}");
    assert_eq!(env.state(id).await, RequestState::Pending);
    assert!(
        env.rejections(id)
            .iter()
            .any(|(c, _)| *c == RejectCause::DuplicateReview)
    );

    let second = env.click(BOB, "approve", None).await;
    let text = card_strings(response_card(&second));
    assert!(text.contains("It is approved (2 of 2)"), "{text}");
    assert_eq!(env.state(id).await, RequestState::Approved);
    assert_eq!(env.reviews(id).len(), 2);
}

#[tokio::test]
async fn action_submit_fallback_is_applied_like_a_click() {
    let env = setup(1).await;
    let id = env.submit(&export()).await;
    let mut value = env.button_data("approve");
    value["reason"] = json!("fine");
    let body = json!({
        "type": "message",
        "id": "m:1",
        "channelId": "msteams",
        "serviceUrl": env.bot.service_url(),
        "from": {"id": "29:ann", "aadObjectId": ANN},
        "conversation": {"id": format!("{CONVERSATION};messageid=activity-1"), "tenantId": TENANT},
        "channelData": {"tenant": {"id": TENANT}},
        "replyToId": "activity-1",
        "value": value,
    });
    let response = env.send(&env.token(), &body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(env.state(id).await, RequestState::Approved);
    env.updates(1).await;

    // A fallback click by the initiator's human is refused like any other.
    let id2 = env
        .submit(&export().params(json!({"table": "orders"})))
        .await;
    let mut value = json!({
        "request_id": id2.to_string(),
        "digest": env.gate.get(id2).await.ok().flatten().map(|r| r.digest.to_string()),
        "verdict": "approve",
    });
    value["reason"] = json!("");
    let mut body = body.clone();
    body["from"] = json!({"id": "29:dana", "aadObjectId": DANA});
    body["value"] = value;
    let response = env.send(&env.token(), &body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(env.state(id2).await, RequestState::Pending);
    assert!(
        env.rejections(id2)
            .iter()
            .any(|(c, _)| *c == RejectCause::SelfApproval)
    );
    // Without an invoke response, the refusal is replied in the conversation.
    let mut replied = false;
    for _ in 0..400 {
        replied = env.bot.posted().iter().any(|c| {
            c.body["text"]
                .as_str()
                .is_some_and(|t| t.contains("cannot review your own request"))
        });
        if replied {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(replied, "refusal replied in the conversation");
}

#[tokio::test]
async fn tower_service_and_axum_router_serve_the_handler() {
    use tower::ServiceExt as _;
    let env = setup(1).await;
    let id = env.submit(&export()).await;
    let body = invoke(
        &env.bot.service_url(),
        TENANT,
        ANN,
        "refresh",
        env.button_data("approve"),
        "automatic",
    );
    let response = env
        .handler
        .clone()
        .oneshot(request(Some(&env.token()), &body))
        .await
        .expect("infallible");
    assert_eq!(response.status(), 200);

    let router = env.handler.router(approvals_teams::DEFAULT_PATH);
    let req = request(Some(&env.token()), &body).map(axum::body::Body::from);
    let response = router.clone().oneshot(req).await.expect("infallible");
    assert_eq!(response.status(), 200);
    let get = http::Request::builder()
        .method(http::Method::GET)
        .uri("/api/messages")
        .body(axum::body::Body::empty())
        .expect("request builds");
    let response = router.clone().oneshot(get).await.expect("infallible");
    assert_eq!(response.status(), 405);
    // Oversized bodies are not read past the activity limit.
    let huge = http::Request::builder()
        .method(http::Method::POST)
        .uri("/api/messages")
        .header(
            http::header::AUTHORIZATION,
            format!("Bearer {}", env.token()),
        )
        .body(axum::body::Body::from(vec![b' '; 300 * 1024]))
        .expect("request builds");
    let response = router.oneshot(huge).await.expect("infallible");
    assert_eq!(response.status(), 413);
    assert_eq!(env.state(id).await, RequestState::Pending);
}

#[tokio::test]
async fn builder_refuses_incomplete_configuration() {
    let env = setup(1).await;
    let auth = || {
        BotAuthenticator::new(
            AuthConfig::new(APP_ID).with_openid_metadata_url(env.idp.metadata_url()),
        )
        .expect("authenticator builds")
    };
    let err = TeamsInteractions::builder(env.gate.clone(), resolver())
        .authenticator(auth())
        .build()
        .expect_err("no tenant");
    assert_eq!(err, InteractionsConfigError::NoTenants);
    let err = TeamsInteractions::builder(env.gate.clone(), resolver())
        .allow_tenant(TENANT)
        .build()
        .expect_err("no authenticator");
    assert_eq!(err, InteractionsConfigError::MissingAuthenticator);
    let err = TeamsInteractions::builder(env.gate.clone(), resolver())
        .authenticator(auth())
        .allow_tenant(" ")
        .build()
        .expect_err("blank tenant");
    assert!(matches!(err, InteractionsConfigError::InvalidTenant(_)));
}

// ------------------------------------------------------------------------------------------
// Attacks on the token: each is 401, audited as forged, and changes nothing.

#[tokio::test]
async fn forged_tokens_are_refused_audited_and_change_nothing() {
    let env = setup(1).await;
    let id = env.submit(&export()).await;
    let service_url = env.bot.service_url();
    let body = invoke(
        &service_url,
        TENANT,
        ANN,
        "approve",
        env.button_data("approve"),
        "manual",
    );
    let valid = || TokenSpec::valid(APP_ID, &service_url);
    let der = env.idp.public_key_der(DEFAULT_KID).expect("published key");
    let attacks: Vec<(&str, String)> = vec![
        (
            "alg none",
            env.idp.mint(
                &valid()
                    .header("alg", json!("none"))
                    .signed_with(Signer::Unsigned),
            ),
        ),
        (
            "HS256 signed with the public key",
            env.idp.mint(
                &valid()
                    .header("alg", json!("HS256"))
                    .signed_with(Signer::Hmac(der)),
            ),
        ),
        (
            "unknown key id",
            env.idp.mint(
                &valid()
                    .header("kid", json!("attacker-key"))
                    .signed_with(Signer::UnpublishedKey),
            ),
        ),
        (
            "wrong issuer",
            env.idp
                .mint(&valid().claim("iss", json!("https://sts.windows.net/evil/"))),
        ),
        (
            "wrong audience",
            env.idp.mint(&valid().claim("aud", json!("another-bot"))),
        ),
        (
            "expired",
            env.idp.mint(
                &valid()
                    .claim("exp", json!(now_unix() - 3600))
                    .claim("nbf", json!(now_unix() - 7200)),
            ),
        ),
        (
            "serviceUrl mismatch",
            env.idp.mint(&TokenSpec::valid(
                APP_ID,
                "https://smba.trafficmanager.net/amer/",
            )),
        ),
    ];
    for (name, token) in &attacks {
        let response = env.send(token, &body).await;
        assert_eq!(response.status(), 401, "{name}");
    }
    // No token at all.
    let response = env.handler.handle(request(None, &body)).await;
    assert_eq!(response.status(), 401);

    assert_eq!(env.state(id).await, RequestState::Pending);
    assert!(env.reviews(id).is_empty());
    let forged = env
        .rejections(id)
        .into_iter()
        .filter(|(c, _)| *c == RejectCause::Forged)
        .count();
    assert_eq!(forged, attacks.len() + 1, "{:?}", env.rejections(id));
    assert!(env.bot.updated().is_empty());
}

#[tokio::test]
async fn activity_redirecting_replies_elsewhere_is_refused() {
    let env = setup(1).await;
    let id = env.submit(&export()).await;
    // A genuine token for the real serviceUrl, on a body that points elsewhere.
    let body = invoke(
        "https://evil.example/amer/",
        TENANT,
        ANN,
        "approve",
        env.button_data("approve"),
        "manual",
    );
    let response = env.send(&env.token(), &body).await;
    assert_eq!(response.status(), 401);
    assert_eq!(env.state(id).await, RequestState::Pending);
    assert_eq!(env.rejections(id)[0].0, RejectCause::Forged);
}

// ------------------------------------------------------------------------------------------
// Authenticated but refused clicks.

#[tokio::test]
async fn foreign_tenant_is_refused_without_a_card() {
    let env = setup(1).await;
    let id = env.submit(&export()).await;
    let body = invoke(
        &env.bot.service_url(),
        "00000000-0000-0000-0000-0000000e7111",
        ANN,
        "approve",
        env.button_data("approve"),
        "manual",
    );
    let response = env.send(&env.token(), &body).await;
    assert_eq!(response.status(), 403);
    let json: Value = serde_json::from_slice(response.body()).expect("json");
    assert_eq!(json["type"], "application/vnd.microsoft.error");
    assert!(!response.body().windows(11).any(|w| w == b"data.export"));
    assert_eq!(env.state(id).await, RequestState::Pending);
    let rejections = env.rejections(id);
    assert_eq!(rejections.len(), 1);
    assert_eq!(rejections[0].0, RejectCause::NotAuthorized);
    assert!(rejections[0].1.contains("tenant"));

    // A click without any tenant is refused the same way.
    let mut body = body;
    body["conversation"]
        .as_object_mut()
        .map(|c| c.remove("tenantId"));
    body.as_object_mut().map(|o| o.remove("channelData"));
    let response = env.send(&env.token(), &body).await;
    assert_eq!(response.status(), 403);
    assert_eq!(env.state(id).await, RequestState::Pending);
}

#[tokio::test]
async fn other_bot_framework_channels_are_refused() {
    let env = setup(1).await;
    // A genuine token from another Bot Framework channel (a key endorsed for Web Chat),
    // published before the authenticator first fetches the keys.
    env.idp.publish_key("webchat-key", &["webchat"]).await;
    let id = env.submit(&export()).await;
    let token = env.idp.mint(
        &TokenSpec::valid(APP_ID, &env.bot.service_url()).header("kid", json!("webchat-key")),
    );
    let mut body = invoke(
        &env.bot.service_url(),
        TENANT,
        ANN,
        "approve",
        env.button_data("approve"),
        "manual",
    );
    body["channelId"] = json!("webchat");
    let response = env.send(&token, &body).await;
    assert_eq!(response.status(), 403);
    assert_eq!(env.state(id).await, RequestState::Pending);
    assert!(env.reviews(id).is_empty());
}

#[tokio::test]
async fn automatic_trigger_with_an_approve_verb_never_decides() {
    let env = setup(1).await;
    let id = env.submit(&export()).await;
    for trigger in ["automatic", "bogus"] {
        let body = invoke(
            &env.bot.service_url(),
            TENANT,
            ANN,
            "approve",
            env.button_data("approve"),
            trigger,
        );
        let response = env.send(&env.token(), &body).await;
        assert_eq!(response.status(), 200);
        let json: Value = serde_json::from_slice(response.body()).expect("json");
        let card = response_card(&json);
        assert!(card.get("actions").is_some(), "the current, pending card");
    }
    // A click without a trigger is not a click either.
    let mut body = invoke(
        &env.bot.service_url(),
        TENANT,
        ANN,
        "approve",
        env.button_data("approve"),
        "manual",
    );
    body["value"].as_object_mut().map(|v| v.remove("trigger"));
    let response = env.send(&env.token(), &body).await;
    assert_eq!(response.status(), 200);

    assert_eq!(env.state(id).await, RequestState::Pending);
    assert!(env.reviews(id).is_empty());
    assert!(env.rejections(id).is_empty(), "nothing recorded");
}

#[tokio::test]
async fn self_approval_is_refused_for_the_clicker_only() {
    let env = setup(1).await;
    let id = env.submit(&export()).await;
    let response = env.click(DANA, "approve", None).await;
    let text = card_strings(response_card(&response));
    assert!(
        text.contains("You cannot review your own request"),
        "{text}"
    );
    assert_eq!(env.state(id).await, RequestState::Pending);
    let rejections = env.rejections(id);
    assert_eq!(rejections[0].0, RejectCause::SelfApproval);

    // An agent identity mapped in Teams cannot review either.
    let response = env.click(AGENT_AAD, "approve", None).await;
    assert!(card_strings(response_card(&response)).contains("Nothing was applied"));
    assert_eq!(env.state(id).await, RequestState::Pending);
    assert!(env.bot.updated().is_empty(), "nobody else's card changed");
}

#[tokio::test]
async fn double_click_counts_once_and_tells_who_decided() {
    let env = setup(1).await;
    let id = env.submit(&export()).await;
    env.click(ANN, "approve", None).await;
    let again = env.click(ANN, "approve", None).await;
    let text = card_strings(response_card(&again));
    assert!(text.contains("already approved by Ann"), "{text}");
    assert_eq!(env.reviews(id).len(), 1);
    assert!(
        env.rejections(id)
            .iter()
            .any(|(c, _)| *c == RejectCause::AlreadyDecided)
    );
}

#[tokio::test]
async fn click_after_expiry_is_refused_and_expires_the_request() {
    let env = setup(1).await;
    let id = env.submit(&export()).await;
    env.clock.advance(TimeDelta::hours(2));
    let response = env.click(ANN, "approve", None).await;
    let text = card_strings(response_card(&response));
    assert!(
        text.contains("expired before your decision arrived"),
        "{text}"
    );
    assert_eq!(env.state(id).await, RequestState::Expired);
    assert!(env.reviews(id).is_empty());
    assert_eq!(env.rejections(id)[0].0, RejectCause::Expired);
}

#[tokio::test]
async fn clicks_without_a_known_identity_are_refused() {
    let env = setup(1).await;
    let id = env.submit(&export()).await;
    // Not mapped.
    let response = env.click("aad-stranger", "approve", None).await;
    assert!(card_strings(response_card(&response)).contains("not mapped"));
    // No aadObjectId at all.
    let mut body = invoke(
        &env.bot.service_url(),
        TENANT,
        ANN,
        "approve",
        env.button_data("approve"),
        "manual",
    );
    body["from"]
        .as_object_mut()
        .map(|f| f.remove("aadObjectId"));
    let response = env.send(&env.token(), &body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(env.state(id).await, RequestState::Pending);
    let causes: Vec<RejectCause> = env.rejections(id).into_iter().map(|(c, _)| c).collect();
    assert_eq!(
        causes,
        vec![RejectCause::UnknownReviewer, RejectCause::UnknownReviewer]
    );
}

#[tokio::test]
async fn tampered_card_data_is_refused() {
    let env = setup(1).await;
    let id = env.submit(&export()).await;
    // A stale or altered digest: bound to what the reviewer saw.
    let mut data = env.button_data("approve");
    data["digest"] = json!(format!("sha256:{}", "ab".repeat(32)));
    let body = invoke(
        &env.bot.service_url(),
        TENANT,
        ANN,
        "approve",
        data,
        "manual",
    );
    let response = env.send(&env.token(), &body).await;
    let json: Value = serde_json::from_slice(response.body()).expect("json");
    assert!(
        card_strings(response_card(&json)).contains("The action changed since it was shown to you")
    );
    // The verb says approve, the data says deny.
    let body = invoke(
        &env.bot.service_url(),
        TENANT,
        ANN,
        "approve",
        env.button_data("deny"),
        "manual",
    );
    let response = env.send(&env.token(), &body).await;
    assert_eq!(response.status(), 400);
    // The click comes from a conversation the request was not posted to.
    let mut body = invoke(
        &env.bot.service_url(),
        TENANT,
        ANN,
        "approve",
        env.button_data("approve"),
        "manual",
    );
    body["conversation"]["id"] = json!("19:elsewhere@thread.tacv2");
    let response = env.send(&env.token(), &body).await;
    assert_eq!(response.status(), 403);
    // Junk data and an unknown verb.
    let body = invoke(
        &env.bot.service_url(),
        TENANT,
        ANN,
        "approve",
        json!({"request_id": "x"}),
        "manual",
    );
    assert_eq!(env.send(&env.token(), &body).await.status(), 400);
    let body = invoke(
        &env.bot.service_url(),
        TENANT,
        ANN,
        "launch",
        env.button_data("approve"),
        "manual",
    );
    assert_eq!(env.send(&env.token(), &body).await.status(), 400);

    assert_eq!(env.state(id).await, RequestState::Pending);
    assert!(env.reviews(id).is_empty());
    let causes: Vec<RejectCause> = env.rejections(id).into_iter().map(|(c, _)| c).collect();
    assert_eq!(
        causes,
        vec![
            RejectCause::DigestMismatch,
            RejectCause::Forged,
            RejectCause::NotAuthorized
        ]
    );
}

#[tokio::test]
async fn reason_is_required_when_the_policy_says_so() {
    let env = setup_with(Requirement::groups(["security"]).reason_required(true)).await;
    let id = env.submit(&export()).await;
    let response = env.click(ANN, "approve", Some("   ")).await;
    assert!(card_strings(response_card(&response)).contains("A reason is required"));
    assert_eq!(env.state(id).await, RequestState::Pending);
    env.click(ANN, "approve", Some("ticket FIN-1234 approved by finance"))
        .await;
    assert_eq!(env.state(id).await, RequestState::Approved);
}

// ------------------------------------------------------------------------------------------
// Hostile text.

#[tokio::test]
async fn hostile_text_cannot_spoof_the_card() {
    let env = setup(1).await;
    let spoof = "**✅ APPROVED by security**\n- [Approve here](https://evil.example/phish)\n# Done\n> quoted\n1. step\n`code` <at>everyone</at> &amp; {{DATE(2026-01-01T00:00:00Z, SHORT)}} ${secret} \u{202E}gnp.exe";
    let huge = "x".repeat(60_000);
    let action = ActionRequest::new("data.export", format!("db://prod/{spoof}"))
        .params(json!({"note": spoof, "blob": huge}))
        .summary(spoof)
        .justification(spoof)
        .context(RequestContext {
            environment: Some(spoof.into()),
            ticket: Some(spoof.into()),
            commit: Some(huge.clone()),
            impact: Some(spoof.into()),
            prompt_excerpt: Some(huge.clone()),
            ..Default::default()
        });
    let id = env.submit(&action).await;
    let (_, card) = env.posted_card();
    let record = env.gate.get(id).await.ok().flatten().expect("stored");

    // Bounded: Teams accepts about 28 KB per message.
    let size = card.to_string().len();
    assert!(size < 28 * 1024, "card is {size} bytes");
    // The digest is shown in full, and cut values point at it.
    let shown = card_strings(&card);
    assert!(shown.contains(&record.digest.to_string()));
    assert!(shown.contains("truncated"));

    // Markdown-rendering text (TextBlock, facts) carries none of the spoofing syntax.
    fn markdown_texts(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                let kind = map.get("type").and_then(Value::as_str);
                if kind == Some("TextBlock")
                    && let Some(t) = map.get("text").and_then(Value::as_str)
                {
                    out.push(t.to_owned());
                }
                if let (Some(Value::String(t)), Some(Value::String(val))) =
                    (map.get("title"), map.get("value"))
                    && kind.is_none()
                {
                    out.push(t.clone());
                    out.push(val.clone());
                }
                map.values().for_each(|v| markdown_texts(v, out));
            }
            Value::Array(items) => items.iter().for_each(|i| markdown_texts(i, out)),
            _ => {}
        }
    }
    let mut texts = Vec::new();
    markdown_texts(&card["body"], &mut texts);
    assert!(
        texts.iter().any(|t| t.contains("APPROVED")),
        "spoof text is shown, inert"
    );
    for t in &texts {
        for bad in [
            "**", "[", "](", "\n-", "\n#", "<at>", "{{", "${", "`", "\u{202E}", "&amp;",
        ] {
            assert!(!t.contains(bad), "{bad:?} survived in markdown text {t:?}");
        }
    }
    // Literal text runs keep the text but expand nothing.
    let all = card.to_string();
    assert!(!all.contains("{{DATE"), "date function survived");
    assert!(!all.contains("${secret}"), "template survived");
    assert!(!all.contains('\u{202E}'), "bidi override survived");
    // Links are never rendered as clickable labels.
    assert!(!all.contains("Action.OpenUrl"));
}

// ------------------------------------------------------------------------------------------
// A slow store, and a restart.

/// A memory store whose writes wait while `hold` has no permits.
struct SlowStore {
    inner: MemoryStore,
    hold: tokio::sync::Semaphore,
    held: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl Store for SlowStore {
    async fn insert(&self, record: &RequestRecord) -> Result<Inserted, StoreError> {
        self.inner.insert(record).await
    }
    async fn get(&self, id: RequestId) -> Result<Option<RequestRecord>, StoreError> {
        self.inner.get(id).await
    }
    async fn get_by_idempotency_key(&self, key: &str) -> Result<Option<RequestRecord>, StoreError> {
        self.inner.get_by_idempotency_key(key).await
    }
    async fn compare_and_set(
        &self,
        expected_version: u64,
        record: &RequestRecord,
    ) -> Result<bool, StoreError> {
        if self.held.load(std::sync::atomic::Ordering::SeqCst) {
            let permit = self
                .hold
                .acquire()
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            permit.forget();
        }
        self.inner.compare_and_set(expected_version, record).await
    }
    async fn list(&self, filter: &ListFilter) -> Result<Vec<RequestRecord>, StoreError> {
        self.inner.list(filter).await
    }
}

#[tokio::test]
async fn a_slow_store_gets_still_processing_and_the_decision_completes() {
    let store = Arc::new(SlowStore {
        inner: MemoryStore::new(),
        hold: tokio::sync::Semaphore::new(0),
        held: std::sync::atomic::AtomicBool::new(false),
    });
    let env = build_env(
        Requirement::groups(["security"]),
        store.clone(),
        Duration::from_millis(300),
    )
    .await;
    let id = env.submit(&export()).await;
    store.held.store(true, std::sync::atomic::Ordering::SeqCst);

    let response = env.click(ANN, "approve", None).await;
    assert_eq!(response["type"], MESSAGE_RESPONSE_TYPE, "{response}");
    assert!(
        response["value"]
            .as_str()
            .is_some_and(|m| m.contains("still being recorded")),
        "{response}"
    );
    assert_eq!(env.state(id).await, RequestState::Pending);

    // The store catches up: the decision was not abandoned.
    store.hold.add_permits(100);
    let grant = tokio::time::timeout(Duration::from_secs(20), env.gate.wait(id))
        .await
        .expect("decided in time")
        .expect("granted");
    assert_eq!(grant.approvers()[0].id, "ann@example.com");
    assert_eq!(env.reviews(id).len(), 1);
}

#[tokio::test]
async fn cards_are_replaced_after_a_restart_from_the_stored_delivery() {
    let env = setup(1).await;
    let id = env.submit(&export()).await;
    let record = env.gate.get(id).await.ok().flatten().expect("stored");
    let cards = TeamsApprover::cards(&record);
    assert_eq!(cards.len(), 1);
    assert_eq!(cards[0].activity_id.as_deref(), Some("activity-1"));
    assert_eq!(cards[0].conversation_id, CONVERSATION);

    // A new process: a fresh approver knows nothing but what the store holds.
    let tokens_ep = FakeTokenEndpoint::start(APP_ID, SECRET)
        .await
        .expect("token fake starts");
    let tokens = TokenProvider::new(
        TokenConfig::new(APP_ID, ClientSecret::new(SECRET)).with_token_url(tokens_ep.token_url()),
    )
    .expect("token provider builds");
    let fresh = TeamsApprover::new(
        ConnectorClient::new(tokens).expect("connector builds"),
        env.bot.service_url(),
        "19:some-other-conversation@thread.tacv2",
    );
    fresh.refresh(&record).await.expect("card replaced");
    let put = &env.bot.updated()[0];
    assert_eq!(put.activity_id.as_deref(), Some("activity-1"));
    assert_eq!(put.conversation_id, CONVERSATION);
}

#[tokio::test]
async fn an_undeliverable_card_refuses_the_action() {
    let env = setup(1).await;
    // The bot was removed from the team: the connector answers 403.
    env.bot.fail_next(403, 1, None);
    let err = env.gate.submit(&export()).await.expect_err("not delivered");
    assert!(
        matches!(err, approvals_core::GuardError::DeliveryFailed { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("installed"), "{err}");
    let failed: Vec<AuditEvent> = env
        .audit
        .events()
        .into_iter()
        .filter(|e| e.name() == "dispatch_failed")
        .collect();
    assert_eq!(failed.len(), 1);
    let id = failed[0].request_id;
    assert_eq!(env.state(id).await, RequestState::Cancelled);
}

#[tokio::test]
async fn a_key_outage_is_retryable_and_not_called_forgery() {
    let env = setup(1).await;
    let id = env.submit(&export()).await;
    env.idp.set_unavailable(true);
    let body = invoke(
        &env.bot.service_url(),
        TENANT,
        ANN,
        "approve",
        env.button_data("approve"),
        "manual",
    );
    let response = env.send(&env.token(), &body).await;
    assert_eq!(response.status(), 503);
    assert_eq!(env.state(id).await, RequestState::Pending);
    assert!(env.rejections(id).is_empty());
}

#[tokio::test]
async fn racing_clicks_give_one_outcome() {
    let env = setup(1).await;
    let id = env.submit(&export()).await;
    let (a, b) = tokio::join!(
        env.click(ANN, "approve", None),
        env.click(BOB, "approve", None)
    );
    let texts = [
        card_strings(response_card(&a)),
        card_strings(response_card(&b)),
    ];
    let applied = texts
        .iter()
        .filter(|t| t.contains("You approved this request"))
        .count();
    let refused = texts
        .iter()
        .filter(|t| t.contains("Nothing was applied.") && t.contains("was already approved by"))
        .count();
    assert_eq!((applied, refused), (1, 1), "{texts:?}");
    assert_eq!(env.state(id).await, RequestState::Approved);
    assert_eq!(env.reviews(id).len(), 1);
}

/// A reminder point of the timeout passes: the card already posted is updated to say it is a
/// reminder, still with its buttons and its expiry; no second card is posted.
#[tokio::test]
async fn a_reminder_updates_the_card_instead_of_posting_another() {
    let env = setup_with(
        Requirement::groups(["security"])
            .timeout(Duration::from_secs(1800))
            .reminders([50]),
    )
    .await;
    let id = env.submit(&export()).await;
    let posted = env.bot.posted().len();
    env.clock.advance(chrono::TimeDelta::minutes(15));
    assert_eq!(env.gate.sweep().await.expect("sweep").reminded, 1);
    let updates = env.updates(1).await;
    let updated = card_strings(&updates[0]["attachments"][0]["content"]);
    assert!(
        updated.contains("Reminder: approval still needed"),
        "{updated}"
    );
    assert!(updated.contains("Expires"), "{updated}");
    assert_eq!(env.bot.posted().len(), posted, "no second card");
    assert_eq!(
        env.bot.updated()[0].activity_id.as_deref(),
        Some("activity-1")
    );
    assert_eq!(env.state(id).await, RequestState::Pending);
}

/// A reminder is the recorded card updated in place: with no card recorded, nobody can be
/// reminded, so the channel refuses it (the gate then records `dispatch_failed`, never
/// `dispatched`).
#[tokio::test]
async fn a_reminder_without_a_recorded_card_reminds_nobody() {
    let env = setup_with(
        Requirement::groups(["security"])
            .timeout(Duration::from_secs(1800))
            .reminders([50]),
    )
    .await;
    let id = env.submit(&export()).await;
    let mut record = env.gate.get(id).await.expect("store").expect("record");
    assert!(
        !TeamsApprover::cards(&record).is_empty(),
        "the card was recorded"
    );
    record.deliveries.clear();
    record.reminded = 1;
    let tokens = TokenProvider::new(
        TokenConfig::new(APP_ID, ClientSecret::new(SECRET)).with_token_url(env._tokens.token_url()),
    )
    .expect("token provider builds");
    let approver = TeamsApprover::new(
        ConnectorClient::new(tokens).expect("connector builds"),
        env.bot.service_url(),
        CONVERSATION,
    );
    let updated = env.bot.updated().len();
    let err = approvals_core::Approver::dispatch(
        &approver,
        &record,
        approvals_core::DispatchReason::Reminder,
        Arc::new(env.gate.clone()),
    )
    .await
    .expect_err("nobody to remind");
    assert!(err.to_string().contains("no Teams card"), "{err}");
    assert_eq!(env.bot.updated().len(), updated, "nothing was sent");
}
