//! The approver conformance suite (`approvals_testkit::approver_suite`) against the Slack
//! channel: the real `SlackApprover` posting to the fake Slack Web API, and decisions sent as
//! Slack sends them: signed `application/x-www-form-urlencoded` `payload=` posts (`v0` HMAC
//! in `X-Slack-Signature`, `X-Slack-Request-Timestamp`) to `SlackInteractions::handle`, with
//! the reason typed into the modal (`view_submission`) where the channel opens one.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use approvals_core::{Approver, Gate, RequestId, StaticIdentityResolver, StaticPolicy, Verdict};
use approvals_slack::blocks::{ACTION_APPROVE, ACTION_DENY, REASON_CALLBACK_ID};
use approvals_slack::fake::{self, Clicker, FakeSlack};
use approvals_slack::{SigningSecret, SlackApprover, SlackInteractions};
use approvals_testkit::approver_suite::{self, ChannelHarness, Person, Setup};
use serde_json::Value;

const SECRET: &str = "8f14e45fceea167a5a36dedd4bea2543";

/// The Slack user each of the suite's people clicks as.
fn slack_user(who: Person) -> &'static str {
    match who {
        Person::Reviewer => "U0REVIEWER",
        Person::Requester => "U0REQUESTR",
        Person::Outsider => "U0OUTSIDER",
    }
}

struct SlackHarness {
    fake: FakeSlack,
    gate: Gate,
    approver: SlackApprover,
    interactions: SlackInteractions,
    secret: SigningSecret,
    clicks: AtomicUsize,
}

impl SlackHarness {
    /// Sends a payload as Slack does: form-encoded, signed now with `secret`.
    fn post(&self, secret: &SigningSecret, payload: &Value) -> http::Response<bytes::Bytes> {
        let request = fake::signed_request(secret, fake::now(), fake::form_body(payload));
        self.interactions.handle(request)
    }

    /// The message the request was posted as (its first recorded delivery) as the fake holds
    /// it now.
    async fn posted_message(&self, id: RequestId) -> Value {
        let record = self
            .gate
            .get(id)
            .await
            .expect("store")
            .expect("the request exists");
        let target = SlackApprover::messages(&record)
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no Slack message recorded for {id}"));
        self.fake
            .messages()
            .into_iter()
            .find(|m| m["ts"] == target.ts.as_str() && m["channel"] == target.channel.as_str())
            .unwrap_or_else(|| panic!("the fake holds no message {}", target.ts))
    }

    /// Waits (bounded) until `probe` yields something.
    async fn until<T>(&self, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
        for _ in 0..1000 {
            if let Some(found) = probe() {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    fn first_reply(&self, url: &str) -> Option<String> {
        self.fake.responses_to(url).first().map(|v| {
            assert_eq!(v["response_type"], "ephemeral", "{v}");
            v["text"].as_str().unwrap_or_default().to_owned()
        })
    }
}

/// The value of the button `action_id` on a message, as Slack sends it back on a click.
fn button_value(message: &Value, action_id: &str) -> Option<String> {
    message["blocks"].as_array()?.iter().find_map(|block| {
        block["elements"].as_array()?.iter().find_map(|e| {
            (e["action_id"] == action_id).then(|| e["value"].as_str().unwrap_or("").to_owned())
        })
    })
}

/// Everything a reader sees of a message: the notification text and every text of its
/// blocks (sections, fields, context, rich text runs, link targets), in order.
fn visible_text(message: &Value) -> String {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for key in ["text", "url"] {
                    if let Some(s) = map.get(key).and_then(Value::as_str) {
                        out.push(s.to_owned());
                    }
                }
                for (key, child) in map {
                    if !matches!(key.as_str(), "value" | "action_id" | "block_id") {
                        walk(child, out);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Some(text) = message["text"].as_str() {
        out.push(text.to_owned());
    }
    walk(&message["blocks"], &mut out);
    out.join("\n")
}

impl ChannelHarness for SlackHarness {
    async fn start(setup: Setup) -> Self {
        let fake = FakeSlack::start().await.expect("the fake Slack starts");
        let approver = SlackApprover::new(fake.client(), fake::CONVERSATION);
        let gate = Gate::builder()
            .policy(StaticPolicy::require(setup.requirement))
            .audit_shared(setup.audit)
            .clock(setup.clock)
            .initiator(setup.initiator)
            .approver(approver.clone())
            .build()
            .expect("gate");
        let identities = Person::ALL
            .into_iter()
            .fold(StaticIdentityResolver::new(), |ids, who| {
                ids.map("slack", slack_user(who), who.principal())
            });
        let secret = SigningSecret::new(SECRET).expect("secret");
        let interactions = SlackInteractions::builder(gate.clone(), fake.client(), secret.clone())
            .team_id(fake::TEAM_ID)
            .app_id(fake::APP_ID)
            .identities(identities)
            .approver(approver.clone())
            .build()
            .expect("interactions");
        SlackHarness {
            fake,
            gate,
            approver,
            interactions,
            secret,
            clicks: AtomicUsize::new(0),
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
        let clicker = Clicker::new(slack_user(who));
        let message = self.posted_message(id).await;
        let ts = message["ts"].as_str().unwrap_or_default().to_owned();
        let action_id = match verdict {
            Verdict::Approve => ACTION_APPROVE,
            Verdict::Deny => ACTION_DENY,
        };
        let value = button_value(&message, action_id)
            .unwrap_or_else(|| panic!("no {action_id} button on {message}"));
        let n = self.clicks.fetch_add(1, Ordering::Relaxed);
        let url = self.fake.response_url(&format!("click-{n}"));
        let modals = self.fake.calls_to("views.open").len();
        let response = self.post(
            &self.secret,
            &clicker.block_actions(action_id, &value, &ts, &url),
        );
        assert_eq!(response.status(), 200, "{:?}", response.body());

        // Either the channel answers the click (applied or refused), or it opens the reason
        // modal.
        let modal = self
            .until("an answer to the click or the reason modal", || {
                if let Some(reply) = self.first_reply(&url) {
                    return Some(Err(reply));
                }
                let opened = self.fake.calls_to("views.open");
                opened.get(modals).map(|call| Ok(call.body.clone()))
            })
            .await;
        let view = match modal {
            Err(reply) => return Some(reply),
            Ok(opened) => opened["view"].clone(),
        };
        let metadata = view["private_metadata"].as_str().unwrap_or_default();
        let response = self.post(
            &self.secret,
            &clicker.view_submission(REASON_CALLBACK_ID, metadata, reason),
        );
        assert_eq!(response.status(), 200, "{:?}", response.body());
        if !response.body().is_empty() {
            // The modal stays open with what to correct.
            let answer: Value =
                serde_json::from_slice(response.body()).expect("a modal answer is JSON");
            assert_eq!(answer["response_action"], "errors", "{answer}");
            let errors = answer["errors"]
                .as_object()
                .map(|e| {
                    e.values()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            return Some(format!("Not applied: {errors}"));
        }
        Some(
            self.until("the answer to the reason", || self.first_reply(&url))
                .await,
        )
    }

    async fn forge(&self, id: RequestId, who: Person) {
        let message = self.posted_message(id).await;
        let ts = message["ts"].as_str().unwrap_or_default().to_owned();
        let value = button_value(&message, ACTION_APPROVE).expect("an Approve button");
        let url = self.fake.response_url("forged");
        let payload =
            Clicker::new(slack_user(who)).block_actions(ACTION_APPROVE, &value, &ts, &url);
        let wrong = SigningSecret::new("0000not-the-signing-secret-0000").expect("secret");
        let response = self.post(&wrong, &payload);
        assert_eq!(response.status(), 401, "{:?}", response.body());
    }

    async fn shown(&self, id: RequestId) -> Vec<String> {
        let id = id.to_string();
        self.fake
            .messages()
            .iter()
            .filter(|m| m["metadata"]["event_payload"]["request_id"] == id.as_str())
            .map(visible_text)
            .collect()
    }
}

#[tokio::test]
async fn delivers_the_exact_action() {
    approver_suite::delivers_the_exact_action::<SlackHarness>().await;
}

#[tokio::test]
async fn shows_every_resolution() {
    approver_suite::shows_every_resolution::<SlackHarness>().await;
}

#[tokio::test]
async fn refuses_self_approval() {
    approver_suite::refuses_self_approval::<SlackHarness>().await;
}

#[tokio::test]
async fn refuses_an_outsider() {
    approver_suite::refuses_an_outsider::<SlackHarness>().await;
}

#[tokio::test]
async fn refuses_a_forged_decision() {
    approver_suite::refuses_a_forged_decision::<SlackHarness>().await;
}

#[tokio::test]
async fn requires_a_reason_when_the_policy_does() {
    approver_suite::requires_a_reason_when_the_policy_does::<SlackHarness>().await;
}

#[tokio::test]
async fn redelivery_shows_no_second_message() {
    approver_suite::redelivery_shows_no_second_message::<SlackHarness>().await;
}
