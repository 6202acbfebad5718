//! Approve an agent's action from Slack.
//!
//! With Slack credentials in the environment (see approvals-slack/README.md), it posts a
//! request for approval to `SLACK_CHANNEL_ID` and waits for a reviewer to click Approve or
//! Deny, receiving the click over Socket Mode when `SLACK_APP_TOKEN` is set, or at
//! `http://SLACK_LISTEN/slack/interactivity` (default `127.0.0.1:3000`) otherwise.
//!
//! Without credentials it runs the same flow against a loopback fake of Slack and simulates
//! the reviewer's signed click, so you can see every step offline:
//!
//! ```text
//! cargo run -p approvals-examples --bin slack
//! ```

use std::sync::Arc;
use std::time::Duration;

use approvals_core::{
    ActionRequest, Gate, GuardError, Initiator, MemorySink, Principal, Requirement,
    StaticIdentityResolver, StaticPolicy,
};
use approvals_slack::{
    SigningSecret, SlackApprover, SlackClient, SlackInteractions, SocketMode, Token,
};
use serde_json::json;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn env(name: &str) -> Result<String, BoxError> {
    std::env::var(name).map_err(|_| format!("set {name} (see approvals-slack/README.md)").into())
}

/// `SLACK_REVIEWERS="U024BE7LH=sam@example.com:security,U0G9QF9C6=alex@example.com:security"`
fn reviewers(spec: &str) -> Result<StaticIdentityResolver, BoxError> {
    let mut ids = StaticIdentityResolver::new();
    for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (user, rest) = entry
            .split_once('=')
            .ok_or_else(|| format!("SLACK_REVIEWERS entry {entry:?} is not USER=email:group"))?;
        let (email, groups) = rest.split_once(':').unwrap_or((rest, ""));
        let principal =
            Principal::human(email).with_groups(groups.split('+').filter(|g| !g.is_empty()));
        ids = ids.map("slack", user, principal);
    }
    Ok(ids)
}

fn action() -> ActionRequest {
    ActionRequest::new("secrets.rotate", "kms://prod/payments-key")
        .params(json!({"key": "payments-key", "grace_period_hours": 24}))
        .summary("Rotate the payments signing key")
        .justification("The key is 400 days old; policy SEC-12 requires rotation within 365 days")
        .environment("production")
}

fn gate(approver: SlackApprover) -> Result<Gate, BoxError> {
    Ok(Gate::builder()
        .policy(StaticPolicy::require(
            Requirement::groups(["security"]).timeout(Duration::from_secs(15 * 60)),
        ))
        .audit(Arc::new(MemorySink::new()))
        .approver(approver)
        .initiator(
            Initiator::agent("key-rotation-agent")
                .model("claude-opus-4")
                .on_behalf_of(Principal::human("dana@example.com")),
        )
        .build()?)
}

async fn run_action(gate: &Gate) {
    println!("agent: asking for approval to rotate kms://prod/payments-key ...");
    let outcome = gate
        .run(&action(), || async {
            println!("agent: approved; rotating the key now");
            Ok::<_, GuardError>("rotated")
        })
        .await;
    match outcome {
        Ok(result) => println!("agent: done ({result})"),
        Err(e) => println!("agent: not run: {e}"),
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    if std::env::var("SLACK_BOT_TOKEN").is_err() {
        return offline_demo().await;
    }
    let client = SlackClient::new(Token::new(env("SLACK_BOT_TOKEN")?))?;
    let approver = SlackApprover::new(client.clone(), env("SLACK_CHANNEL_ID")?);
    let gate = gate(approver.clone())?;
    let interactions = SlackInteractions::builder(
        gate.clone(),
        client.clone(),
        SigningSecret::new(env("SLACK_SIGNING_SECRET")?)?,
    )
    .team_id(env("SLACK_TEAM_ID")?)
    .app_id(env("SLACK_APP_ID")?)
    .identities(reviewers(&env("SLACK_REVIEWERS")?)?)
    .approver(approver)
    .build()?;
    let _sweeper = gate.spawn_sweeper(Duration::from_secs(15));

    if let Ok(app_token) = std::env::var("SLACK_APP_TOKEN") {
        let socket = SocketMode::new(client, Token::new(app_token), interactions).spawn()?;
        socket.wait_for_connections(1).await;
        println!("connected to Slack over Socket Mode");
        run_action(&gate).await;
        socket.shutdown().await?;
    } else {
        let listen = std::env::var("SLACK_LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());
        let listener = tokio::net::TcpListener::bind(&listen).await?;
        println!(
            "interactivity Request URL: http://{listen}/slack/interactivity (behind your HTTPS proxy)"
        );
        let router = interactions.router("/slack/interactivity");
        tokio::spawn(async move { axum::serve(listener, router).await });
        run_action(&gate).await;
    }
    Ok(())
}

/// The same flow against the loopback fake, with a simulated reviewer.
async fn offline_demo() -> Result<(), BoxError> {
    use approvals_slack::blocks::ACTION_APPROVE;
    use approvals_slack::fake::{self, Clicker, FakeSlack};

    println!("SLACK_BOT_TOKEN is not set: running against a loopback fake of Slack.\n");
    let slack = FakeSlack::start().await?;
    let approver = SlackApprover::new(slack.client(), fake::CONVERSATION);
    let gate = gate(approver.clone())?;
    let secret = SigningSecret::new("demo-signing-secret")?;
    let interactions = SlackInteractions::builder(gate.clone(), slack.client(), secret.clone())
        .team_id(fake::TEAM_ID)
        .app_id(fake::APP_ID)
        .identities(reviewers(
            "U0SAM00001=sam@example.com:security,U0DANA0001=dana@example.com:security",
        )?)
        .approver(approver)
        .build()?;

    let agent = {
        let gate = gate.clone();
        tokio::spawn(async move { run_action(&gate).await })
    };
    // Wait for the message to be posted, as a reviewer would see it.
    let message = loop {
        if let Some(m) = slack.messages().into_iter().next() {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!(
        "slack: posted to #approvals:\n{}\n",
        serde_json::to_string_pretty(&message["blocks"])?
    );
    let ts = message["ts"].as_str().unwrap_or_default().to_owned();
    let value = message["blocks"]
        .as_array()
        .and_then(|blocks| blocks.iter().find(|b| b["type"] == "actions"))
        .and_then(|b| b["elements"][0]["value"].as_str())
        .unwrap_or_default()
        .to_owned();

    // Dana asked for this (the agent acts for her): Slack refuses her click.
    let dana_url = slack.response_url("dana");
    let click = Clicker::new("U0DANA0001").block_actions(ACTION_APPROVE, &value, &ts, &dana_url);
    let response = interactions.handle(fake::signed_request(
        &secret,
        fake::now(),
        fake::form_body(&click),
    ));
    println!("slack: Dana clicks Approve -> HTTP {}", response.status());
    // A forged click (wrong signing secret) never gets in.
    let forged = fake::signed_request(
        &SigningSecret::new("guess")?,
        fake::now(),
        fake::form_body(&click),
    );
    println!(
        "attacker: forged click -> HTTP {}",
        interactions.handle(forged).status()
    );
    // Sam, in the security group, approves.
    let sam_url = slack.response_url("sam");
    let click = Clicker::new("U0SAM00001").block_actions(ACTION_APPROVE, &value, &ts, &sam_url);
    let response = interactions.handle(fake::signed_request(
        &secret,
        fake::now(),
        fake::form_body(&click),
    ));
    println!("slack: Sam clicks Approve -> HTTP {}", response.status());

    agent.await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (url, reply) in slack.responses() {
        let who = if url == dana_url { "Dana" } else { "Sam" };
        println!("slack: ephemeral reply to {who}: {}", reply["text"]);
    }
    let updated = slack.messages().into_iter().next().unwrap_or_default();
    println!(
        "slack: the message now reads: {} / {}",
        updated["blocks"][0]["text"]["text"], updated["blocks"][1]["text"]["text"]
    );
    Ok(())
}
