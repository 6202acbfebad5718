//! The approver conformance suite (`approvals_testkit::approver_suite`) against the Teams
//! channel: the real `TeamsApprover` posting Adaptive Cards through the fake Bot Connector,
//! and decisions sent as Teams sends them: `adaptiveCard/action` invoke activities
//! (`Action.Execute`, the reason typed into the card's input merged into `data`) with a Bot
//! Framework JWT from the fake OpenID/JWKS endpoint, to `TeamsInteractions::handle`. The
//! approver reads the channel through (fake) Microsoft Graph, as it must to find a card it
//! posted before a crash.

use std::sync::Arc;
use std::time::Duration;

use approvals_core::{Approver, Gate, RequestId, StaticIdentityResolver, StaticPolicy, Verdict};
use approvals_teams::activity::{ADAPTIVE_CARD_CONTENT_TYPE, MESSAGE_RESPONSE_TYPE};
use approvals_teams::auth::{AuthConfig, BotAuthenticator};
use approvals_teams::card::{VERB_APPROVE, VERB_DENY};
use approvals_teams::connector::{ConnectorClient, RetryPolicy};
use approvals_teams::fake::{FakeConnector, FakeOpenId, FakeTokenEndpoint, Signer, TokenSpec};
use approvals_teams::graph::{ConversationHistory, GraphConversation};
use approvals_teams::token::{ClientSecret, TokenConfig, TokenProvider};
use approvals_teams::{TeamsApprover, TeamsInteractions, external_id};
use approvals_testkit::approver_suite::{self, ChannelHarness, Person, Setup};
use bytes::Bytes;
use serde_json::{Value, json};

const APP_ID: &str = "5b0e6d2a-0000-4000-8000-00000000a5e7";
const SECRET: &str = "suite~s3cr3t";
const TENANT: &str = "0d9c3f5e-2b71-4c8a-9e4f-6a1b2c3d4e5f";
const TEAM: &str = "3f6a2c1e-0000-4000-8000-00000000team";
const CONVERSATION: &str = "19:approvals-suite@thread.tacv2";

/// The Microsoft Entra object id each of the suite's people clicks with.
fn aad(who: Person) -> &'static str {
    match who {
        Person::Reviewer => "6d4c8b1a-0000-4000-8000-0000000000a1",
        Person::Requester => "6d4c8b1a-0000-4000-8000-0000000000a2",
        Person::Outsider => "6d4c8b1a-0000-4000-8000-0000000000a3",
    }
}

struct TeamsHarness {
    idp: FakeOpenId,
    bot: FakeConnector,
    _tokens: FakeTokenEndpoint,
    gate: Gate,
    approver: TeamsApprover,
    handler: TeamsInteractions,
}

/// An `adaptiveCard/action` invoke for a click by `who` on `verb` of the card posted as
/// `activity_id`, with `data` as Teams merges it (the button's data and the card's inputs).
fn invoke(service_url: &str, who: Person, activity_id: &str, verb: &str, data: Value) -> Value {
    let aad = aad(who);
    json!({
        "type": "invoke",
        "name": "adaptiveCard/action",
        "id": "f:suite",
        "channelId": "msteams",
        "serviceUrl": service_url,
        "from": {"id": format!("29:{aad}"), "name": format!("{who:?}"), "aadObjectId": aad},
        "recipient": {"id": format!("28:{APP_ID}"), "name": "Approvals"},
        "conversation": {
            "id": format!("{CONVERSATION};messageid={activity_id}"),
            "conversationType": "channel",
            "tenantId": TENANT,
        },
        "channelData": {"tenant": {"id": TENANT}},
        "replyToId": activity_id,
        "value": {
            "action": {"type": "Action.Execute", "verb": verb, "data": data},
            "trigger": "manual",
        },
    })
}

/// Every text a reader sees on a card: text blocks and runs, fact titles and values, button
/// titles, input labels.
fn card_text(card: &Value) -> String {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for key in ["text", "title", "value", "label"] {
                    if let Some(s) = map.get(key).and_then(Value::as_str) {
                        out.push(s.to_owned());
                    }
                }
                for (key, child) in map {
                    if key != "data" {
                        walk(child, out);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(card, &mut out);
    out.join("\n")
}

/// The Adaptive Cards of a message.
fn cards(activity: &Value) -> impl Iterator<Item = &Value> {
    activity["attachments"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["contentType"] == ADAPTIVE_CARD_CONTENT_TYPE)
        .map(|a| &a["content"])
}

/// Whether a card is about `id` (its "Request" fact).
fn about(card: &Value, id: &str) -> bool {
    card["body"].as_array().into_iter().flatten().any(|item| {
        item["facts"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|f| f["title"] == "Request" && f["value"] == id)
    })
}

/// What an invoke response tells the clicker: the notice on the card it returns, or its
/// message.
fn told(response: &Value) -> Option<String> {
    let kind = response["type"].as_str().unwrap_or_default();
    if kind == ADAPTIVE_CARD_CONTENT_TYPE {
        let first = &response["value"]["body"][0];
        (first["type"] == "Container").then(|| card_text(first))
    } else if kind == MESSAGE_RESPONSE_TYPE {
        response["value"].as_str().map(str::to_owned)
    } else {
        Some(card_text(&response["value"]))
    }
}

impl TeamsHarness {
    fn token(&self) -> String {
        self.idp
            .mint(&TokenSpec::valid(APP_ID, &self.bot.service_url()))
    }

    async fn send(&self, token: &str, body: &Value) -> http::Response<Bytes> {
        let request = http::Request::builder()
            .method(http::Method::POST)
            .uri("/api/messages")
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Bytes::from(body.to_string()))
            .expect("request builds");
        self.handler.handle(request).await
    }

    /// The card the request was posted as (its first recorded delivery), as the conversation
    /// shows it now, with its activity id.
    async fn posted_card(&self, id: RequestId) -> (String, Value) {
        let record = self
            .gate
            .get(id)
            .await
            .expect("store")
            .expect("the request exists");
        let activity_id = TeamsApprover::cards(&record)
            .into_iter()
            .find_map(|c| c.activity_id)
            .unwrap_or_else(|| panic!("no Teams card recorded for {id}"));
        let held = self
            .bot
            .activities()
            .into_iter()
            .find(|a| a.id == activity_id)
            .unwrap_or_else(|| panic!("the fake holds no activity {activity_id}"));
        let card = cards(&held.activity)
            .next()
            .cloned()
            .unwrap_or_else(|| panic!("activity {activity_id} has no card"));
        (activity_id, card)
    }

    /// The `data` of the card's button with `verb`.
    fn button_data(card: &Value, verb: &str) -> Value {
        card["actions"]
            .as_array()
            .and_then(|a| a.iter().find(|b| b["verb"] == verb))
            .map(|b| b["data"].clone())
            .unwrap_or_else(|| panic!("no {verb} button on {card}"))
    }
}

impl ChannelHarness for TeamsHarness {
    async fn start(setup: Setup) -> Self {
        let idp = FakeOpenId::start().await.expect("openid fake starts");
        let bot = FakeConnector::start().await.expect("connector fake starts");
        let tokens_ep = FakeTokenEndpoint::start(APP_ID, SECRET)
            .await
            .expect("token fake starts");
        let tokens = TokenProvider::new(
            TokenConfig::new(APP_ID, ClientSecret::new(SECRET))
                .with_token_url(tokens_ep.token_url()),
        )
        .expect("token provider builds");
        let connector = ConnectorClient::new(tokens)
            .expect("connector builds")
            .with_retry_policy(RetryPolicy::new(2, Duration::from_millis(5)));
        // The channel's messages, read with the bot's credentials and the resource-specific
        // permission its installation in the team granted.
        bot.set_bot_app_id(APP_ID);
        bot.add_team_channel(TEAM, CONVERSATION);
        let graph_tokens = TokenProvider::new(
            ConversationHistory::token_config(APP_ID, ClientSecret::new(SECRET), TENANT)
                .with_token_url(tokens_ep.tenant_token_url(TENANT)),
        )
        .expect("graph token provider builds");
        let history = ConversationHistory::new(
            graph_tokens,
            GraphConversation::Channel {
                team_id: TEAM.into(),
                channel_id: CONVERSATION.into(),
            },
        )
        .and_then(|h| h.with_base_url(&bot.graph_url()))
        .expect("history builds");
        let approver =
            TeamsApprover::new(connector, bot.service_url(), CONVERSATION).with_history(history);
        let gate = Gate::builder()
            .policy(StaticPolicy::require(setup.requirement))
            .audit_shared(setup.audit)
            .clock(setup.clock)
            .initiator(setup.initiator)
            .approver(approver.clone())
            .build()
            .expect("gate builds");
        let identities = Person::ALL
            .into_iter()
            .fold(StaticIdentityResolver::new(), |ids, who| {
                let external = external_id(TENANT, aad(who)).expect("a valid Teams identity");
                ids.map("teams", external, who.principal())
            });
        let auth = BotAuthenticator::new(
            AuthConfig::new(APP_ID).with_openid_metadata_url(idp.metadata_url()),
        )
        .expect("authenticator builds");
        let handler = TeamsInteractions::builder(gate.clone(), identities)
            .authenticator(auth)
            .allow_tenant(TENANT)
            .approver(approver.clone())
            .build()
            .expect("handler builds");
        TeamsHarness {
            idp,
            bot,
            _tokens: tokens_ep,
            gate,
            approver,
            handler,
        }
    }

    fn gate(&self) -> &Gate {
        &self.gate
    }

    fn approver(&self) -> Option<Arc<dyn Approver>> {
        Some(Arc::new(self.approver.clone()))
    }

    async fn decide(
        &self,
        id: RequestId,
        who: Person,
        verdict: Verdict,
        reason: Option<&str>,
    ) -> Option<String> {
        let (activity_id, card) = self.posted_card(id).await;
        let verb = match verdict {
            Verdict::Approve => VERB_APPROVE,
            Verdict::Deny => VERB_DENY,
        };
        // The card's reason input, as Teams merges it into the action's data.
        let mut data = Self::button_data(&card, verb);
        data["reason"] = json!(reason.unwrap_or_default());
        let body = invoke(&self.bot.service_url(), who, &activity_id, verb, data);
        let response = self.send(&self.token(), &body).await;
        assert_eq!(response.status(), 200, "{:?}", response.body());
        let answer: Value =
            serde_json::from_slice(response.body()).expect("the invoke response is JSON");
        told(&answer)
    }

    async fn forge(&self, id: RequestId, who: Person) {
        let (activity_id, card) = self.posted_card(id).await;
        let data = Self::button_data(&card, VERB_APPROVE);
        let body = invoke(
            &self.bot.service_url(),
            who,
            &activity_id,
            VERB_APPROVE,
            data,
        );
        // Everything as the Bot Connector would send it, but signed by a key it never
        // published.
        let forged = self.idp.mint(
            &TokenSpec::valid(APP_ID, &self.bot.service_url()).signed_with(Signer::UnpublishedKey),
        );
        let response = self.send(&forged, &body).await;
        assert_eq!(response.status(), 401, "{:?}", response.body());
    }

    async fn shown(&self, id: RequestId) -> Vec<String> {
        let id = id.to_string();
        self.bot
            .activities()
            .iter()
            .filter(|held| held.conversation_id == CONVERSATION)
            .flat_map(|held| cards(&held.activity).cloned().collect::<Vec<_>>())
            .filter(|card| about(card, &id))
            .map(|card| card_text(&card))
            .collect()
    }
}

#[tokio::test]
async fn delivers_the_exact_action() {
    approver_suite::delivers_the_exact_action::<TeamsHarness>().await;
}

#[tokio::test]
async fn shows_every_resolution() {
    approver_suite::shows_every_resolution::<TeamsHarness>().await;
}

#[tokio::test]
async fn refuses_self_approval() {
    approver_suite::refuses_self_approval::<TeamsHarness>().await;
}

#[tokio::test]
async fn refuses_an_outsider() {
    approver_suite::refuses_an_outsider::<TeamsHarness>().await;
}

#[tokio::test]
async fn refuses_a_forged_decision() {
    approver_suite::refuses_a_forged_decision::<TeamsHarness>().await;
}

#[tokio::test]
async fn requires_a_reason_when_the_policy_does() {
    approver_suite::requires_a_reason_when_the_policy_does::<TeamsHarness>().await;
}

#[tokio::test]
async fn redelivery_shows_no_second_message() {
    approver_suite::redelivery_shows_no_second_message::<TeamsHarness>().await;
}
