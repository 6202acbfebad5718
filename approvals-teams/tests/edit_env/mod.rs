//! The loopback world the edit-on-approve and step-up tests run in: a gate whose
//! `TeamsApprover` posts to the fake Bot Connector, a `TeamsInteractions` handler that
//! authenticates invokes signed by the fake OpenID/JWKS endpoint, reviewers mapped by tenant
//! and AAD object id, and helpers that fill the card's edit form the way Teams merges inputs
//! into the action data.
// Each test binary that includes this module uses part of it.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use approvals_core::{
    ActionRequest, EventDetail, Gate, Initiator, ManualClock, MemorySink, MemoryStore, Principal,
    RejectCause, RequestId, RequestRecord, RequestState, Requirement, StaticIdentityResolver,
    StaticPolicy, Submission,
};
use approvals_teams::activity::ADAPTIVE_CARD_CONTENT_TYPE;
use approvals_teams::auth::{AuthConfig, BotAuthenticator};
use approvals_teams::connector::{ConnectorClient, RetryPolicy};
use approvals_teams::edit::{EDIT_REASON_INPUT_ID, VERB_APPROVE_EDITED};
use approvals_teams::fake::{FakeConnector, FakeOpenId, FakeTokenEndpoint, TokenSpec};
use approvals_teams::token::{ClientSecret, TokenConfig, TokenProvider};
use approvals_teams::{TeamsApprover, TeamsInteractions};
use bytes::Bytes;
use serde_json::{Value, json};

pub const APP_ID: &str = "8c1f0d3e-0000-4000-8000-00000000b07a";
pub const SECRET: &str = "s3cr3t~value";
pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub const CONVERSATION: &str = "19:approvals@thread.tacv2";
pub const ANN: &str = "aad-ann";
pub const BOB: &str = "aad-bob";
pub const DANA: &str = "aad-dana";

pub struct Env {
    pub idp: FakeOpenId,
    pub bot: FakeConnector,
    pub _tokens: FakeTokenEndpoint,
    pub gate: Gate,
    pub audit: Arc<MemorySink>,
    pub handler: TeamsInteractions,
}

pub fn resolver() -> StaticIdentityResolver {
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
}

/// Exports need `quorum` approvals from `security`, who may change `/rows` and `/format`.
pub fn editable(quorum: u32) -> Requirement {
    Requirement::groups(["security"])
        .quorum(quorum)
        .editable(["/rows", "/format"])
}

pub async fn setup(requirement: Requirement) -> Env {
    setup_linked(requirement, None).await
}

/// [`setup`], with cards linking the review console served at `console`, if any.
pub async fn setup_linked(requirement: Requirement, console: Option<url::Url>) -> Env {
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
    let mut approver = TeamsApprover::new(connector, bot.service_url(), CONVERSATION);
    if let Some(console) = console {
        approver = approver.with_console_url(console);
    }
    let audit = Arc::new(MemorySink::new());
    let gate = Gate::builder()
        .policy(StaticPolicy::require(requirement))
        .store_shared(Arc::new(MemoryStore::new()))
        .audit_shared(audit.clone())
        .approver(approver.clone())
        .clock(Arc::new(ManualClock::new(chrono::Utc::now())))
        .initiator(
            Initiator::agent("billing-agent")
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
        .build()
        .expect("handler builds");
    Env {
        idp,
        bot,
        _tokens: tokens_ep,
        gate,
        audit,
        handler,
    }
}

pub fn export(rows: u64) -> ActionRequest {
    ActionRequest::new("data.export", "db://prod/customers")
        .params(json!({"table": "customers", "rows": rows, "format": "csv"}))
        .justification("Quarterly report for finance (FIN-1234).")
}

impl Env {
    pub async fn submit(&self, action: &ActionRequest) -> RequestId {
        match self.gate.submit(action).await.expect("submitted") {
            Submission::Pending(id) => id,
            Submission::Allowed(_) => panic!("expected a pending request"),
        }
    }

    pub async fn record(&self, id: RequestId) -> RequestRecord {
        self.gate
            .get(id)
            .await
            .expect("store answers")
            .expect("request exists")
    }

    /// The `n`th card the bot posted (0-based).
    pub fn posted_card(&self, n: usize) -> Value {
        let posted = self.bot.posted();
        let call = posted.get(n).expect("the card was posted");
        assert_eq!(
            call.body["attachments"][0]["contentType"],
            ADAPTIVE_CARD_CONTENT_TYPE
        );
        call.body["attachments"][0]["content"].clone()
    }

    /// Sends an `adaptiveCard/action` invoke with `verb` and `data`, signed like the Bot
    /// Connector signs it, and returns the invoke response.
    pub async fn invoke(&self, aad: &str, verb: &str, data: Value) -> Value {
        let body = json!({
            "type": "invoke",
            "name": "adaptiveCard/action",
            "id": "f:8a0b3c",
            "channelId": "msteams",
            "serviceUrl": self.bot.service_url(),
            "from": {"id": format!("29:{aad}"), "name": "Someone", "aadObjectId": aad},
            "recipient": {"id": "28:bot", "name": "Approvals"},
            "conversation": {"id": format!("{CONVERSATION};messageid=activity-1"), "conversationType": "channel", "tenantId": TENANT},
            "channelData": {"tenant": {"id": TENANT}},
            "replyToId": "activity-1",
            "value": {"action": {"type": "Action.Execute", "verb": verb, "data": data}, "trigger": "manual"},
        });
        let response = self.send(&body).await;
        let body: Value = serde_json::from_slice(response.body()).expect("invoke response is JSON");
        assert_eq!(body["statusCode"], response.status().as_u16(), "{body}");
        body
    }

    /// Sends `body` signed like the Bot Connector signs it.
    pub async fn send(&self, body: &Value) -> http::Response<Bytes> {
        let token = self
            .idp
            .mint(&TokenSpec::valid(APP_ID, &self.bot.service_url()));
        let request = http::Request::builder()
            .method(http::Method::POST)
            .uri("/api/messages")
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Bytes::from(body.to_string()))
            .expect("request builds");
        self.handler.handle(request).await
    }

    /// Submits `card`'s edit form as `aad`, with `values` typed into the inputs labelled by
    /// pointer (the others keep what the card shows), as Teams does: the inputs' values merged
    /// into the action's data.
    pub async fn submit_form(&self, card: &Value, aad: &str, values: &[(&str, &str)]) -> Value {
        let data = filled_form(card, values);
        self.invoke(aad, VERB_APPROVE_EDITED, data).await
    }

    pub fn rejections(&self, id: RequestId) -> Vec<RejectCause> {
        self.audit
            .for_request(id)
            .into_iter()
            .filter_map(|e| match e.detail {
                EventDetail::ReviewRejected { cause, .. } => Some(cause),
                _ => None,
            })
            .collect()
    }

    /// Waits (bounded) until the fake connector has received `n` card updates.
    pub async fn updates(&self, n: usize) -> Vec<Value> {
        for _ in 0..400 {
            let updated = self.bot.updated();
            if updated.len() >= n {
                return updated
                    .into_iter()
                    .map(|c| c.body["attachments"][0]["content"].clone())
                    .collect();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "expected {n} card updates, got {}",
            self.bot.updated().len()
        );
    }
}

/// The card's "Edit and approve" `Action.ShowCard`, if it has one.
pub fn edit_action(card: &Value) -> Option<Value> {
    card["actions"]
        .as_array()?
        .iter()
        .find(|a| a["type"] == "Action.ShowCard")
        .cloned()
}

/// The form's inputs as (id, label, value).
pub fn form_inputs(card: &Value) -> Vec<(String, String, String)> {
    let show = edit_action(card).expect("the card offers an edit");
    show["card"]["body"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["type"] == "Input.Text" && e["id"] != EDIT_REASON_INPUT_ID)
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (s("id"), s("label"), s("value"))
        })
        .collect()
}

/// The form's action data merged with its inputs: each shown value, or the one in `values`
/// for its pointer.
pub fn filled_form(card: &Value, values: &[(&str, &str)]) -> Value {
    let show = edit_action(card).expect("the card offers an edit");
    let execute = &show["card"]["actions"][0];
    assert_eq!(execute["type"], "Action.Execute");
    assert_eq!(execute["verb"], VERB_APPROVE_EDITED);
    let mut data = execute["data"].clone();
    for (id, label, value) in form_inputs(card) {
        let typed = values
            .iter()
            .find(|(pointer, _)| *pointer == label)
            .map_or(value, |(_, v)| (*v).to_owned());
        data[id] = json!(typed);
    }
    for (pointer, value) in values {
        if *pointer == EDIT_REASON_INPUT_ID {
            data[EDIT_REASON_INPUT_ID] = json!(value);
        }
    }
    data
}

/// Every string in the card's text runs, text blocks and facts, concatenated.
pub fn card_strings(card: &Value) -> String {
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
pub fn response_card(response: &Value) -> &Value {
    assert_eq!(response["statusCode"], 200, "{response}");
    assert_eq!(response["type"], ADAPTIVE_CARD_CONTENT_TYPE, "{response}");
    &response["value"]
}

/// The notice at the top of a response card.
pub fn notice(response: &Value) -> String {
    card_strings(&response_card(response)["body"][0])
}

/// Asserts the request is exactly as asked: same version, digest, parameters, no review.
pub async fn unchanged(env: &Env, asked: &RequestRecord) {
    let now = env.record(asked.id).await;
    assert_eq!(now.version, asked.version, "nothing changed");
    assert_eq!(now.digest, asked.digest);
    assert_eq!(now.request.params, asked.request.params);
    assert!(now.reviews.is_empty());
    assert_eq!(now.state, RequestState::Pending);
}
