//! Approve an agent's action from Microsoft Teams.
//!
//! With a bot registration in the environment (see approvals-teams/README.md: all of
//! `TEAMS_APP_ID`, `TEAMS_APP_SECRET`, `TEAMS_TENANT_ID`, `TEAMS_SERVICE_URL`,
//! `TEAMS_CONVERSATION_ID` and `TEAMS_REVIEWERS`), it posts a request for approval as an
//! Adaptive Card to the conversation, serves the bot's messaging endpoint at
//! `http://TEAMS_LISTEN/api/messages` (default `127.0.0.1:3978`; put your HTTPS ingress or
//! tunnel in front of it) and waits for a reviewer to click Approve or Deny. `--live` insists
//! on those variables and names each one that is missing.
//!
//! With none of them set (or with `--offline`) it runs the same flow offline against loopback
//! fakes of the token endpoint, the Bot Framework OpenID/JWKS endpoints and the Bot
//! Connector, and simulates the signed clicks: first the human the agent acts for (refused:
//! no self-approval), then a security reviewer (approved). Setting only some of them is an
//! error that names the missing ones.
//!
//! ```text
//! cargo run -p approvals-examples --bin teams
//! cargo run -p approvals-examples --bin teams -- --live
//! ```

use std::process::ExitCode;
use std::time::Duration;

use approvals_core::StaticIdentityResolver;
use approvals_examples::{BoxError, Credentials, Var, rotation};
use approvals_teams::fake::{FakeConnector, FakeOpenId, FakeTokenEndpoint, TokenSpec};
use approvals_teams::{
    AuthConfig, BotAuthenticator, ClientSecret, ConnectorClient, DEFAULT_PATH, TeamsApprover,
    TeamsInteractions, TokenConfig, TokenProvider, external_id,
};
use bytes::Bytes;
use serde_json::{Value, json};

/// What a run against a real tenant needs (see approvals-teams/README.md).
const CREDENTIALS: Credentials = Credentials {
    example: "teams",
    service: "a Microsoft Teams tenant",
    docs: "approvals-teams/README.md",
    required: &[
        Var {
            name: "TEAMS_APP_ID",
            purpose: "the bot's Microsoft App ID (token audience and client id)",
        },
        Var {
            name: "TEAMS_APP_SECRET",
            purpose: "the bot's client secret: gets tokens for the Bot Connector",
        },
        Var {
            name: "TEAMS_TENANT_ID",
            purpose: "the Entra tenant whose users may click",
        },
        Var {
            name: "TEAMS_SERVICE_URL",
            purpose: "the conversation's serviceUrl (https://smba.trafficmanager.net/emea/)",
        },
        Var {
            name: "TEAMS_CONVERSATION_ID",
            purpose: "where cards are posted (19:...@thread.tacv2)",
        },
        Var {
            name: "TEAMS_REVIEWERS",
            purpose: "who may review: <Entra object id>=sam@example.com:security,...",
        },
    ],
    optional: &[Var {
        name: "TEAMS_LISTEN",
        purpose: "where the messaging endpoint listens (127.0.0.1:3978)",
    }],
};

fn env(name: &str) -> Result<String, BoxError> {
    CREDENTIALS.var(name)
}

/// `TEAMS_REVIEWERS="<aad object id>=sam@example.com:security,<aad object id>=alex@example.com:security+sre"`
fn reviewers(tenant: &str, spec: &str) -> Result<StaticIdentityResolver, BoxError> {
    let mut ids = StaticIdentityResolver::new();
    for (aad, principal) in rotation::reviewers("TEAMS_REVIEWERS", spec)? {
        let external = external_id(tenant, aad)
            .ok_or_else(|| format!("TEAMS_REVIEWERS entry for {aad:?} has an invalid id"))?;
        ids = ids.map("teams", external, principal);
    }
    Ok(ids)
}

#[tokio::main]
async fn main() -> ExitCode {
    CREDENTIALS.main(live(), offline()).await
}

async fn live() -> Result<(), BoxError> {
    let app_id = env("TEAMS_APP_ID")?;
    let tenant = env("TEAMS_TENANT_ID")?;
    let tokens = TokenProvider::new(TokenConfig::new(
        app_id.clone(),
        ClientSecret::new(env("TEAMS_APP_SECRET")?),
    ))?;
    let approver = TeamsApprover::new(
        ConnectorClient::new(tokens)?,
        env("TEAMS_SERVICE_URL")?,
        env("TEAMS_CONVERSATION_ID")?,
    );
    let gate = rotation::gate(approver.clone())?;
    let handler =
        TeamsInteractions::builder(gate.clone(), reviewers(&tenant, &env("TEAMS_REVIEWERS")?)?)
            .authenticator(BotAuthenticator::new(AuthConfig::new(app_id))?)
            .allow_tenant(tenant)
            .approver(approver)
            .build()?;
    let listen = std::env::var("TEAMS_LISTEN").unwrap_or_else(|_| "127.0.0.1:3978".into());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("bot: messaging endpoint at http://{listen}{DEFAULT_PATH}");
    let app = handler.router(DEFAULT_PATH);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("bot: server stopped: {e}");
        }
    });
    rotation::run_agent(&gate).await;
    Ok(())
}

const APP_ID: &str = "00000000-0000-4000-8000-0000000000b0";
const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CONVERSATION: &str = "19:approvals@thread.tacv2";
const SAM_AAD: &str = "5a3e2c10-0000-4000-8000-00000000005a";
const DANA_AAD: &str = "d4a1b2c3-0000-4000-8000-0000000000da";

async fn offline() -> Result<(), BoxError> {
    println!(
        "Running offline against loopback fakes of Microsoft's services, with simulated reviewers.\n{}\n",
        CREDENTIALS.summary()
    );
    let idp = FakeOpenId::start().await?;
    let bot = FakeConnector::start().await?;
    let token_endpoint = FakeTokenEndpoint::start(APP_ID, "demo-secret").await?;
    let tokens = TokenProvider::new(
        TokenConfig::new(APP_ID, ClientSecret::new("demo-secret"))
            .with_token_url(token_endpoint.token_url()),
    )?;
    let approver = TeamsApprover::new(
        ConnectorClient::new(tokens)?,
        bot.service_url(),
        CONVERSATION,
    );
    let gate = rotation::gate(approver.clone())?;
    let ids = reviewers(
        TENANT,
        &format!("{SAM_AAD}=sam@example.com:security,{DANA_AAD}=dana@example.com:security"),
    )?;
    let handler = TeamsInteractions::builder(gate.clone(), ids)
        .authenticator(BotAuthenticator::new(
            AuthConfig::new(APP_ID).with_openid_metadata_url(idp.metadata_url()),
        )?)
        .allow_tenant(TENANT)
        .approver(approver)
        .build()?;

    let agent_gate = gate.clone();
    let agent = tokio::spawn(async move { rotation::run_agent(&agent_gate).await });

    // Wait for the card to be posted.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let card = loop {
        if let Some(call) = bot.posted().first() {
            break call.body["attachments"][0]["content"].clone();
        }
        if tokio::time::Instant::now() >= deadline {
            return Err("the card never reached the fake Bot Connector within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!("teams: card posted to {CONVERSATION}:");
    for line in card_lines(&card) {
        println!("    {line}");
    }
    let data = card["actions"][0]["data"].clone();

    for (who, aad, reason) in [
        (
            "dana (the human the agent acts for)",
            DANA_AAD,
            "looks fine to me",
        ),
        (
            "sam (security)",
            SAM_AAD,
            "key age confirmed in the inventory",
        ),
    ] {
        let mut data = data.clone();
        data["reason"] = json!(reason);
        let body = json!({
            "type": "invoke", "name": "adaptiveCard/action", "id": "f:1", "channelId": "msteams",
            "serviceUrl": bot.service_url(),
            "from": {"id": "29:user", "aadObjectId": aad},
            "conversation": {"id": format!("{CONVERSATION};messageid=activity-1"), "tenantId": TENANT},
            "replyToId": "activity-1",
            "value": {"action": {"type": "Action.Execute", "verb": "approve", "data": data}, "trigger": "manual"}
        });
        let token = idp.mint(&TokenSpec::valid(APP_ID, &bot.service_url()));
        let request = http::Request::builder()
            .method(http::Method::POST)
            .uri(DEFAULT_PATH)
            .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Bytes::from(body.to_string()))?;
        let response = handler.handle(request).await;
        let answer: Value = serde_json::from_slice(response.body())?;
        let notice = answer["value"]["body"][0]["items"][0]["inlines"][0]["text"].clone();
        println!(
            "teams: {who} clicks Approve -> HTTP {}: {notice}",
            response.status()
        );
    }

    agent.await?;
    for _ in 0..100 {
        if !bot.updated().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "teams: the card was replaced {} time(s) to show the outcome to everyone",
        bot.updated().len()
    );
    Ok(())
}

/// The visible lines of a card, roughly as Teams shows them.
fn card_lines(card: &Value) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => match map.get("type").and_then(Value::as_str) {
                Some("TextBlock") => out.push(map["text"].as_str().unwrap_or_default().to_owned()),
                Some("RichTextBlock") => out.push(
                    map["inlines"]
                        .as_array()
                        .map(|runs| {
                            runs.iter()
                                .filter_map(|r| r["text"].as_str())
                                .collect::<String>()
                        })
                        .unwrap_or_default(),
                ),
                Some("FactSet") => {
                    for fact in map["facts"].as_array().into_iter().flatten() {
                        out.push(format!(
                            "{}: {}",
                            fact["title"].as_str().unwrap_or_default(),
                            fact["value"].as_str().unwrap_or_default()
                        ));
                    }
                }
                _ => map.values().for_each(|v| walk(v, out)),
            },
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&card["body"], &mut out);
    out
}
