//! Redelivery after a crash: the Bot Connector cannot list a conversation's messages, so the
//! approver finds the card an earlier process posted through Microsoft Graph (the fake
//! connector serves Graph's channel and chat message lists over the messages it holds).

use std::sync::Arc;
use std::time::Duration;

use approvals_core::{
    ActionRequest, Approver, DispatchReason, Gate, Initiator, MemorySink, Principal, RequestId,
    RequestRecord, Requirement, StaticPolicy, Submission,
};
use approvals_teams::connector::{ConnectorClient, RetryPolicy};
use approvals_teams::fake::{FakeConnector, FakeTokenEndpoint};
use approvals_teams::graph::{ConversationHistory, GraphConversation};
use approvals_teams::token::{ClientSecret, TokenConfig, TokenProvider};
use approvals_teams::{CardRef, TeamsApprover};
use serde_json::json;

const APP_ID: &str = "5b0e6d2a-0000-4000-8000-0000000re0de";
const SECRET: &str = "redelivery~s3cr3t";
const TENANT: &str = "0d9c3f5e-2b71-4c8a-9e4f-6a1b2c3d4e5f";
const TEAM: &str = "3f6a2c1e-0000-4000-8000-0000000000aa";
const CHANNEL: &str = "19:approvals@thread.tacv2";
const CHAT: &str = "19:approvers-chat@thread.v2";

struct Env {
    bot: FakeConnector,
    _tokens: FakeTokenEndpoint,
    gate: Gate,
    approver: TeamsApprover,
}

/// How the approver reads its conversation.
enum Reads {
    Nothing,
    Channel,
    Chat,
    /// A team the channel does not belong to: every look-up fails (404).
    WrongTeam,
}

async fn env(reads: Reads) -> Env {
    let bot = FakeConnector::start().await.expect("connector fake starts");
    let tokens_ep = FakeTokenEndpoint::start(APP_ID, SECRET)
        .await
        .expect("token fake starts");
    bot.set_bot_app_id(APP_ID);
    bot.add_team_channel(TEAM, CHANNEL);
    let tokens = TokenProvider::new(
        TokenConfig::new(APP_ID, ClientSecret::new(SECRET)).with_token_url(tokens_ep.token_url()),
    )
    .expect("token provider builds");
    let connector = ConnectorClient::new(tokens)
        .expect("connector builds")
        .with_retry_policy(RetryPolicy::new(2, Duration::from_millis(5)));
    let graph = |conversation| {
        let tokens = TokenProvider::new(
            ConversationHistory::token_config(APP_ID, ClientSecret::new(SECRET), TENANT)
                .with_token_url(tokens_ep.tenant_token_url(TENANT)),
        )
        .expect("graph token provider builds");
        ConversationHistory::new(tokens, conversation)
            .and_then(|h| h.with_base_url(&bot.graph_url()))
            .expect("history builds")
    };
    let channel = |team: &str| GraphConversation::Channel {
        team_id: team.into(),
        channel_id: CHANNEL.into(),
    };
    let approver = match reads {
        Reads::Nothing => TeamsApprover::new(connector, bot.service_url(), CHANNEL),
        Reads::Channel => TeamsApprover::new(connector, bot.service_url(), CHANNEL)
            .with_history(graph(channel(TEAM))),
        Reads::WrongTeam => TeamsApprover::new(connector, bot.service_url(), CHANNEL)
            .with_history(graph(channel("another-team"))),
        Reads::Chat => TeamsApprover::new(connector, bot.service_url(), CHAT).with_history(graph(
            GraphConversation::Chat {
                chat_id: CHAT.into(),
            },
        )),
    };
    let gate = Gate::builder()
        .policy(StaticPolicy::require(Requirement::groups(["security"])))
        .audit(MemorySink::new())
        .approver(approver.clone())
        .initiator(
            Initiator::agent("billing-agent").on_behalf_of(Principal::human("dana@example.com")),
        )
        .build()
        .expect("gate builds");
    Env {
        bot,
        _tokens: tokens_ep,
        gate,
        approver,
    }
}

impl Env {
    async fn submit(&self, rows: u32) -> RequestId {
        let action =
            ActionRequest::new("data.export", "db://prod/customers").params(json!({"rows": rows}));
        match self.gate.submit(&action).await.expect("submitted") {
            Submission::Pending(id) => id,
            Submission::Allowed(_) => panic!("expected a pending request"),
        }
    }

    async fn record(&self, id: RequestId) -> RequestRecord {
        self.gate
            .get(id)
            .await
            .expect("store answers")
            .expect("request exists")
    }

    /// Delivers `id` again as after a crash that lost the recorded delivery; returns the
    /// card the new delivery names.
    async fn redeliver(&self, id: RequestId) -> CardRef {
        let mut record = self.record(id).await;
        record.deliveries.clear();
        let delivery = self
            .approver
            .dispatch(
                &record,
                DispatchReason::Redelivery,
                Arc::new(self.gate.clone()),
            )
            .await
            .expect("redelivered")
            .expect("a delivery");
        serde_json::from_value(delivery.reference).expect("a card reference")
    }

    fn posts(&self) -> usize {
        self.bot.posted().len()
    }
}

fn first_card(record: &RequestRecord) -> CardRef {
    TeamsApprover::cards(record)
        .into_iter()
        .next()
        .expect("a card recorded")
}

#[tokio::test]
async fn a_redelivery_records_the_card_found_in_the_channel_instead_of_posting_again() {
    let env = env(Reads::Channel).await;
    let id = env.submit(1).await;
    let posted = first_card(&env.record(id).await);
    // Later requests' cards fill more than one page of 50 messages above it.
    for rows in 2..60 {
        env.submit(rows).await;
    }
    let posts = env.posts();
    let found = env.redeliver(id).await;
    assert_eq!(found, posted, "the earlier card, not a new one");
    assert_eq!(env.posts(), posts, "nothing posted");
    assert!(env.bot.graph_requests() >= 2, "read past the first page");
}

#[tokio::test]
async fn a_redelivery_in_a_group_chat_finds_its_card_too() {
    let env = env(Reads::Chat).await;
    let id = env.submit(1).await;
    let posted = first_card(&env.record(id).await);
    assert_eq!(posted.conversation_id, CHAT);
    let posts = env.posts();
    assert_eq!(env.redeliver(id).await, posted);
    assert_eq!(env.posts(), posts);
}

#[tokio::test]
async fn another_apps_copy_of_the_card_is_never_taken_for_the_bots() {
    let env = env(Reads::Channel).await;
    let id = env.submit(1).await;
    let posted = first_card(&env.record(id).await);
    // Another app in the channel posts a copy of the card, newer than the bot's.
    let copy = env.bot.activities()[0].activity.clone();
    let other = env.bot.post_as_another_app(CHANNEL, "another-app-id", copy);
    let found = env.redeliver(id).await;
    assert_ne!(found.activity_id.as_deref(), Some(other.as_str()));
    assert_eq!(found, posted, "the bot's own card");
}

#[tokio::test]
async fn without_a_history_or_when_graph_fails_the_card_is_posted_again() {
    for reads in [Reads::Nothing, Reads::WrongTeam] {
        let env = env(reads).await;
        let id = env.submit(1).await;
        let posted = first_card(&env.record(id).await);
        let posts = env.posts();
        let again = env.redeliver(id).await;
        assert_ne!(again, posted, "a second card is better than none");
        assert_eq!(env.posts(), posts + 1);
    }
}

#[tokio::test]
async fn first_deliveries_never_read_the_history() {
    let env = env(Reads::Channel).await;
    env.submit(1).await;
    assert_eq!(env.posts(), 1);
    assert_eq!(env.bot.graph_requests(), 0);
}
