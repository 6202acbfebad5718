//! Approve an agent's action from Slack.
//!
//! With a Slack app's credentials in the environment (set up as in approvals-slack/README.md)
//! it posts a request for approval to a channel and waits for a reviewer to click Approve or
//! Deny, receiving the click over Socket Mode when `SLACK_APP_TOKEN` is set, or at
//! `http://SLACK_LISTEN/slack/interactivity` (default `127.0.0.1:3000`, behind your HTTPS
//! proxy) otherwise. A live run needs all of `SLACK_BOT_TOKEN` (`xoxb-...`),
//! `SLACK_SIGNING_SECRET`, `SLACK_APP_ID`, `SLACK_TEAM_ID`, `SLACK_CHANNEL_ID` and
//! `SLACK_REVIEWERS` (`U024BE7LH=sam@example.com:security,...`); `--live` insists on them and
//! names each one that is missing.
//!
//! With none of them set (or with `--offline`) it runs the same flow against a loopback fake
//! of Slack and simulates the reviewers' signed clicks, so you can see every step without an
//! account. Setting only some of them is an error that names the missing ones.
//!
//! ```text
//! cargo run -p approvals-examples --bin slack
//! cargo run -p approvals-examples --bin slack -- --live
//! ```

use std::process::ExitCode;
use std::time::Duration;

use approvals_core::StaticIdentityResolver;
use approvals_examples::{BoxError, Credentials, Var, rotation};
use approvals_slack::{
    SigningSecret, SlackApprover, SlackClient, SlackInteractions, SocketMode, Token,
};

/// What a run against a real workspace needs (see approvals-slack/README.md).
const CREDENTIALS: Credentials = Credentials {
    example: "slack",
    service: "a Slack workspace",
    docs: "approvals-slack/README.md",
    required: &[
        Var {
            name: "SLACK_BOT_TOKEN",
            purpose: "bot token (xoxb-...): posts and updates the messages",
        },
        Var {
            name: "SLACK_SIGNING_SECRET",
            purpose: "verifies that each click comes from Slack",
        },
        Var {
            name: "SLACK_APP_ID",
            purpose: "refuses payloads meant for another app (A0123456789)",
        },
        Var {
            name: "SLACK_TEAM_ID",
            purpose: "refuses clicks from other workspaces (T0123456789)",
        },
        Var {
            name: "SLACK_CHANNEL_ID",
            purpose: "where requests are posted (C0123456789)",
        },
        Var {
            name: "SLACK_REVIEWERS",
            purpose: "who may review: U024BE7LH=sam@example.com:security,...",
        },
    ],
    optional: &[
        Var {
            name: "SLACK_APP_TOKEN",
            purpose: "app-level token (xapp-...): receive clicks over Socket Mode",
        },
        Var {
            name: "SLACK_LISTEN",
            purpose: "otherwise, where the interactivity endpoint listens (127.0.0.1:3000)",
        },
    ],
};

fn env(name: &str) -> Result<String, BoxError> {
    CREDENTIALS.var(name)
}

/// `SLACK_REVIEWERS="U024BE7LH=sam@example.com:security,U0G9QF9C6=alex@example.com:security"`
fn reviewers(spec: &str) -> Result<StaticIdentityResolver, BoxError> {
    let mut ids = StaticIdentityResolver::new();
    for (user, principal) in rotation::reviewers("SLACK_REVIEWERS", spec)? {
        ids = ids.map("slack", user, principal);
    }
    Ok(ids)
}

#[tokio::main]
async fn main() -> ExitCode {
    CREDENTIALS.main(live(), offline_demo()).await
}

/// The flow against a real workspace.
async fn live() -> Result<(), BoxError> {
    let client = SlackClient::new(Token::new(env("SLACK_BOT_TOKEN")?))?;
    let approver = SlackApprover::new(client.clone(), env("SLACK_CHANNEL_ID")?);
    let gate = rotation::gate(approver.clone())?;
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
        rotation::run_agent(&gate).await;
        socket.shutdown().await?;
    } else {
        let listen = std::env::var("SLACK_LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());
        let listener = tokio::net::TcpListener::bind(&listen).await?;
        println!(
            "interactivity Request URL: http://{listen}/slack/interactivity (behind your HTTPS proxy)"
        );
        let router = interactions.router("/slack/interactivity");
        tokio::spawn(async move { axum::serve(listener, router).await });
        rotation::run_agent(&gate).await;
    }
    Ok(())
}

/// The same flow against the loopback fake, with a simulated reviewer.
async fn offline_demo() -> Result<(), BoxError> {
    use approvals_slack::blocks::ACTION_APPROVE;
    use approvals_slack::fake::{self, Clicker, FakeSlack};

    println!(
        "Running offline against a loopback fake of Slack, with simulated reviewers.\n{}\n",
        CREDENTIALS.summary()
    );
    let slack = FakeSlack::start().await?;
    let approver = SlackApprover::new(slack.client(), fake::CONVERSATION);
    let gate = rotation::gate(approver.clone())?;
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
        tokio::spawn(async move { rotation::run_agent(&gate).await })
    };
    // Wait for the message to be posted, as a reviewer would see it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let message = loop {
        if let Some(m) = slack.messages().into_iter().next() {
            break m;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err("the request never reached the fake Slack within 60 s".into());
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
