//! Shared setup for the Slack channel tests: a gate with the Slack approver, the fake Slack,
//! an identity map, and helpers to click and wait.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use approvals_core::{
    ActionRequest, AuditEvent, EventDetail, Gate, Initiator, ManualClock, MemorySink, Principal,
    RejectCause, RequestId, RequestRecord, Requirement, StaticIdentityResolver, StaticPolicy,
    Submission,
};
use approvals_slack::fake::{self, Clicker, FakeSlack};
use approvals_slack::{SigningSecret, SlackApprover, SlackInteractions};
use bytes::Bytes;
use serde_json::{Value, json};

pub const SECRET: &str = "e2b6c3f1d7a94b0c8e5f1a2b3c4d5e6f";

pub const SAM: &str = "U0SAM00001"; // security
pub const ALEX: &str = "U0ALEX0001"; // security
pub const DANA: &str = "U0DANA0001"; // the human the agent acts for, also in security
pub const EVE: &str = "U0EVE00001"; // mapped, but in no allowed group
pub const TWIN: &str = "U0TWIN0001"; // mapped twice: ambiguous
pub const NOBODY: &str = "U0NOBODY01"; // not mapped

pub struct Env {
    pub fake: FakeSlack,
    pub gate: Gate,
    pub audit: Arc<MemorySink>,
    pub clock: Arc<ManualClock>,
    pub interactions: SlackInteractions,
    pub secret: SigningSecret,
    pub approver: SlackApprover,
}

pub fn identities() -> StaticIdentityResolver {
    StaticIdentityResolver::new()
        .map(
            "slack",
            SAM,
            Principal::human("sam@example.com")
                .with_name("Sam Reviewer")
                .with_groups(["security"]),
        )
        .map(
            "slack",
            ALEX,
            Principal::human("alex@example.com")
                .with_name("Alex Lead")
                .with_groups(["security"]),
        )
        .map(
            "slack",
            DANA,
            Principal::human("dana@example.com")
                .with_name("Dana")
                .with_groups(["security"]),
        )
        .map(
            "slack",
            EVE,
            Principal::human("eve@example.com").with_groups(["marketing"]),
        )
        .map(
            "slack",
            TWIN,
            Principal::human("twin-a@example.com").with_groups(["security"]),
        )
        .map(
            "slack",
            TWIN,
            Principal::human("twin-b@example.com").with_groups(["security"]),
        )
}

pub fn initiator() -> Initiator {
    Initiator::agent("billing-agent")
        .model("claude-opus-4")
        .on_behalf_of(Principal::human("dana@example.com"))
}

impl Env {
    pub async fn new(requirement: Requirement) -> Env {
        Self::with(requirement, |b| b).await
    }

    pub async fn with(
        requirement: Requirement,
        configure: impl FnOnce(
            approvals_slack::SlackInteractionsBuilder,
        ) -> approvals_slack::SlackInteractionsBuilder,
    ) -> Env {
        Self::with_policy(StaticPolicy::require(requirement), configure).await
    }

    /// An environment whose gate asks `policy`.
    pub async fn with_policy(
        policy: impl approvals_core::Policy,
        configure: impl FnOnce(
            approvals_slack::SlackInteractionsBuilder,
        ) -> approvals_slack::SlackInteractionsBuilder,
    ) -> Env {
        Self::with_console(policy, None, configure).await
    }

    /// An environment whose gate asks `policy`, and whose messages link the review console
    /// served at `console`, if any.
    pub async fn with_console(
        policy: impl approvals_core::Policy,
        console: Option<url::Url>,
        configure: impl FnOnce(
            approvals_slack::SlackInteractionsBuilder,
        ) -> approvals_slack::SlackInteractionsBuilder,
    ) -> Env {
        let fake = FakeSlack::start().await.expect("fake slack");
        let audit = Arc::new(MemorySink::new());
        let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
        let mut approver = SlackApprover::new(fake.client(), fake::CONVERSATION);
        if let Some(console) = console {
            approver = approver.console_url(console);
        }
        let gate = Gate::builder()
            .policy(policy)
            .audit(audit.clone())
            .clock(clock.clone())
            .approver(approver.clone())
            .initiator(initiator())
            .build()
            .expect("gate");
        let secret = SigningSecret::new(SECRET).expect("secret");
        let builder = SlackInteractions::builder(gate.clone(), fake.client(), secret.clone())
            .team_id(fake::TEAM_ID)
            .app_id(fake::APP_ID)
            .identities(identities())
            .approver(approver.clone());
        let interactions = configure(builder).build().expect("interactions");
        Env {
            fake,
            gate,
            audit,
            clock,
            interactions,
            secret,
            approver,
        }
    }

    /// Submits an export and returns its id and the posted message's ts.
    pub async fn submit(&self, request: ActionRequest) -> (RequestId, String) {
        let Submission::Pending(id) = self.gate.submit(&request).await.expect("submit") else {
            panic!("expected a pending request");
        };
        let record = self.record(id).await;
        let refs = SlackApprover::messages(&record);
        assert_eq!(refs.len(), 1, "one Slack message recorded");
        (id, refs[0].ts.clone())
    }

    pub async fn submit_export(&self) -> (RequestId, String) {
        self.submit(export()).await
    }

    pub async fn record(&self, id: RequestId) -> RequestRecord {
        self.gate.get(id).await.expect("store").expect("record")
    }

    /// The button value on the posted message (as Slack would send it back).
    pub fn button_value(&self, ts: &str, action_id: &str) -> String {
        let message = self.message(ts);
        find_button(&message["blocks"], action_id)
            .unwrap_or_else(|| panic!("no {action_id} button on {message}"))
    }

    pub fn message(&self, ts: &str) -> Value {
        self.fake
            .messages()
            .into_iter()
            .find(|m| m["ts"] == ts)
            .unwrap_or_else(|| panic!("no message {ts}"))
    }

    /// Sends a signed click and returns the HTTP response.
    pub fn click(
        &self,
        who: &Clicker,
        action_id: &str,
        value: &str,
        ts: &str,
        response_url: &str,
    ) -> http::Response<Bytes> {
        let payload = who.block_actions(action_id, value, ts, response_url);
        self.post(&payload)
    }

    pub fn post(&self, payload: &Value) -> http::Response<Bytes> {
        let request = fake::signed_request(&self.secret, fake::now(), fake::form_body(payload));
        self.interactions.handle(request)
    }

    /// Waits (bounded) for the ephemeral replies to `response_url`.
    pub async fn replies(&self, response_url: &str, n: usize) -> Vec<String> {
        eventually(
            || self.fake.responses_to(response_url).len() >= n,
            "ephemeral replies",
        )
        .await;
        self.fake
            .responses_to(response_url)
            .into_iter()
            .map(|v| {
                assert_eq!(v["response_type"], "ephemeral", "{v}");
                assert_eq!(v["replace_original"], false, "{v}");
                v["text"].as_str().unwrap_or("").to_owned()
            })
            .collect()
    }

    pub fn rejections(&self, id: RequestId) -> Vec<(RejectCause, String)> {
        self.audit
            .for_request(id)
            .into_iter()
            .filter_map(|e: AuditEvent| match e.detail {
                EventDetail::ReviewRejected { cause, detail, .. } => Some((cause, detail)),
                _ => None,
            })
            .collect()
    }

    /// Opens the reason modal by clicking `action_id` and returns its private_metadata.
    pub async fn open_modal(
        &self,
        who: &Clicker,
        action_id: &str,
        ts: &str,
        response_url: &str,
    ) -> Value {
        let before = self.fake.calls_to("views.open").len();
        let value = self.button_value(ts, action_id);
        let response = self.click(who, action_id, &value, ts, response_url);
        assert_eq!(response.status(), 200);
        eventually(
            || self.fake.calls_to("views.open").len() > before,
            "views.open",
        )
        .await;
        self.fake.calls_to("views.open")[before].body.clone()
    }
}

pub fn find_button(blocks: &Value, action_id: &str) -> Option<String> {
    blocks.as_array()?.iter().find_map(|b| {
        b["elements"].as_array()?.iter().find_map(|e| {
            (e["action_id"] == action_id).then(|| e["value"].as_str().unwrap_or("").to_owned())
        })
    })
}

pub fn header(message: &Value) -> String {
    message["blocks"][0]["text"]["text"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

pub fn status(message: &Value) -> String {
    message["blocks"][1]["text"]["text"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

pub fn export() -> ActionRequest {
    ActionRequest::new("data.export", "db://prod/customers")
        .params(json!({"rows": 5000, "format": "csv"}))
        .justification("Quarterly report for finance")
        .environment("production")
}

/// Polls `cond` every 10 ms for up to 10 s; the background work is in spawned tasks.
pub async fn eventually(mut cond: impl FnMut() -> bool, what: &str) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Lets spawned tasks that should do nothing observable run, so that a later assertion that
/// nothing happened is meaningful.
pub async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
