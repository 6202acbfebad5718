//! `approvals serve --config FILE` as a real process: the whole service against loopback
//! fakes of Slack and Teams and a webhook receiver; misconfiguration refused at start with
//! file, line and field; policy reload; `/healthz`; secrets never shown.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use approvals_core::{ActionRequest, EventDetail, Policy as _, RequestState, RulePolicy};
use approvals_http::auth::TokenHash;
use approvals_http::{ApiClient, SubmitStatus};
use approvals_slack::blocks::ACTION_APPROVE;
use approvals_slack::fake::{self as slack_fake, Clicker, FakeSlack};
use approvals_slack::signature::SigningSecret;
use approvals_teams::fake::{FakeConnector, FakeOpenId, FakeTokenEndpoint};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_approvals");

const AGENT_TOKEN: &str = "tok-serve-agent-0123456789";
const SAM_TOKEN: &str = "tok-serve-sam-0123456789";
const SLACK_BOT_TOKEN: &str = "xoxb-fake-bot-token";
const SLACK_SIGNING_SECRET: &str = "slack-signing-secret-do-not-print-1f2e";
const TEAMS_SECRET: &str = "teams-app-secret-do-not-print-9a8b";
const WEBHOOK_SECRET: &str = "webhook-secret-do-not-print-7c6d5e";
const TEAMS_APP_ID: &str = "00000000-0000-4000-8000-0000000000b0";
const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CONVERSATION: &str = "19:approvals@thread.tacv2";
const SAM_AAD: &str = "5a3e2c10-0000-4000-8000-00000000005a";

const REQUIRE: &str = r#"version = 1
default = "deny"

[[rules]]
name = "exports-need-security"
kind = "data.export"
effect = "require_approval"
approvers = { groups = ["security"] }
timeout = "1h"
"#;

const ALLOW: &str = r#"version = 1
default = "deny"

[[rules]]
name = "exports-run"
kind = "data.export"
effect = "allow"
"#;

/// Everything the server wrote, read by threads as it arrives.
#[derive(Clone, Default)]
struct Output(Arc<Mutex<String>>);

impl Output {
    fn text(&self) -> String {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn capture(&self, stream: impl std::io::Read + Send + 'static) {
        let out = self.0.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if let Ok(mut text) = out.lock() {
                    text.push_str(&line);
                    text.push('\n');
                }
            }
        });
    }
}

/// A running `approvals serve --config`.
struct Served {
    child: Child,
    output: Output,
    base: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 25 ms until it gives a value, for at most 30 s.
async fn until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn serve(dir: &Path, config: &Path, env: &[(&str, &str)]) -> Served {
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--config"])
        .arg(config)
        .current_dir(dir)
        .env_remove("APPROVALS_TOKEN")
        .env_remove("APPROVALS_STORE")
        .env_remove("APPROVALS_TOKENS")
        .env_remove("APPROVALS_AUDIT")
        .env_remove("APPROVALS_AUDIT_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("approvals serve starts");
    let output = Output::default();
    output.capture(child.stdout.take().expect("stdout"));
    output.capture(child.stderr.take().expect("stderr"));
    Served {
        child,
        output,
        base: String::new(),
    }
}

async fn started(mut served: Served) -> Served {
    let output = served.output.clone();
    let child = &mut served.child;
    let base = until("the server's URL", || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("serve exited with {status}:\n{}", output.text());
        }
        output.text().lines().find_map(|l| {
            l.strip_prefix("Approvals review console: ")
                .map(|u| u.trim_end_matches("console/").to_owned())
        })
    })
    .await;
    served.base = base;
    served
}

/// Common files: policy, tokens, audit key. Returns the config's first lines.
fn common(dir: &Path, policy: &str) -> String {
    std::fs::write(dir.join("policy.toml"), policy).expect("policy");
    std::fs::write(
        dir.join("tokens.toml"),
        format!(
            r#"[[token]]
sha256 = "{}"
principal = {{ kind = "agent", id = "billing-agent" }}
on_behalf_of = {{ kind = "human", id = "dana@example.com" }}
model = "claude-opus-4"

[[token]]
sha256 = "{}"
principal = {{ kind = "human", id = "sam@example.com", groups = ["security"] }}
"#,
            TokenHash::of(AGENT_TOKEN).to_hex(),
            TokenHash::of(SAM_TOKEN).to_hex()
        ),
    )
    .expect("tokens");
    let signer = approvals_audit::note::Signer::generate("approvals.test").expect("key");
    std::fs::write(dir.join("audit.key"), signer.to_skey()).expect("key file");
    std::fs::write(dir.join("audit.vkey"), signer.verifier().to_string()).expect("vkey");
    format!(
        "listen = \"127.0.0.1:0\"\npolicy = \"policy.toml\"\npolicy_reload_interval = \"200ms\"\nstore = \"sqlite://{}\"\naudit_key = \"audit.key\"\ntokens = \"tokens.toml\"\n",
        dir.join("approvals.db").display()
    )
}

/// A webhook receiver on loopback: records each delivery's signature header and body.
async fn webhook_receiver() -> (String, Arc<Mutex<Vec<(String, Value)>>>) {
    let received: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://{}/hooks/approvals",
        listener.local_addr().expect("addr")
    );
    let store = received.clone();
    let app = axum::Router::new().route(
        "/hooks/approvals",
        axum::routing::post(move |headers: http::HeaderMap, body: String| {
            let store = store.clone();
            async move {
                let signature = headers
                    .get("webhook-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let body = serde_json::from_str(&body).unwrap_or(Value::Null);
                if let Ok(mut r) = store.lock() {
                    r.push((signature, body));
                }
                http::StatusCode::NO_CONTENT
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

fn http() -> reqwest::Client {
    approvals_http::client::http_client(Duration::from_secs(30)).expect("http client")
}

async fn healthz(base: &str) -> (u16, String) {
    let response = http()
        .get(format!("{base}healthz"))
        .send()
        .await
        .expect("healthz answers");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

fn export() -> ActionRequest {
    ActionRequest::new("data.export", "db://prod/customers")
        .params(serde_json::json!({"rows": 5000, "format": "csv"}))
        .justification("quarterly report")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_the_whole_service_with_slack_teams_and_webhook_channels() {
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    let slack = FakeSlack::start().await.expect("fake slack");
    let idp = FakeOpenId::start().await.expect("fake openid");
    let bot = FakeConnector::start().await.expect("fake connector");
    let token_endpoint = FakeTokenEndpoint::start(TEAMS_APP_ID, TEAMS_SECRET)
        .await
        .expect("fake token endpoint");
    let (hook_url, hooks) = webhook_receiver().await;
    std::fs::write(d.join("slack-signing-secret"), SLACK_SIGNING_SECRET).expect("secret");
    std::fs::write(d.join("teams-secret"), format!("{TEAMS_SECRET}\n")).expect("secret");
    let config = format!(
        r#"{common}
[channels.slack]
bot_token_env = "TEST_SLACK_BOT_TOKEN"
signing_secret_file = "slack-signing-secret"
app_id = "{app_id}"
team_id = "{team_id}"
channel = "{channel}"
api_base_url = "{api_base}"
response_url_prefix = "{response_prefix}"

[channels.slack.reviewers]
U0SAM00001 = {{ id = "sam@example.com", name = "Sam", groups = ["security"] }}
U0DANA0001 = {{ id = "dana@example.com", groups = ["security"] }}

[channels.teams]
app_id = "{TEAMS_APP_ID}"
app_secret_file = "teams-secret"
tenant_id = "{TENANT}"
service_url = "{service_url}"
conversation_id = "{CONVERSATION}"
token_url = "{token_url}"
openid_metadata_url = "{metadata_url}"

[channels.teams.reviewers]
"{SAM_AAD}" = {{ id = "sam@example.com", groups = ["security"] }}

[channels.webhook]
url = "{hook_url}"
secret_env = "TEST_WEBHOOK_SECRET"
"#,
        common = common(d, REQUIRE),
        app_id = slack_fake::APP_ID,
        team_id = slack_fake::TEAM_ID,
        channel = slack_fake::CONVERSATION,
        api_base = slack.api_base(),
        response_prefix = slack.response_url_prefix(),
        service_url = bot.service_url(),
        token_url = token_endpoint.token_url(),
        metadata_url = idp.metadata_url(),
    );
    let path = d.join("approvals.toml");
    std::fs::write(&path, config).expect("config");
    let server = started(serve(
        d,
        &path,
        &[
            ("TEST_SLACK_BOT_TOKEN", SLACK_BOT_TOKEN),
            ("TEST_WEBHOOK_SECRET", WEBHOOK_SECRET),
        ],
    ))
    .await;
    let base = server.base.clone();
    // The banner's lines arrive one by one after the console's URL: wait for the Slack one.
    until("the Slack Request URL in the banner", || {
        server
            .output
            .text()
            .contains("slack/interactivity")
            .then_some(())
    })
    .await;

    // The agent submits with its own token: the request goes to every channel.
    let agent =
        ApiClient::http(base.parse().expect("url"), Some(AGENT_TOKEN.into())).expect("client");
    let submitted = agent.submit(&export()).await.expect("submitted");
    assert_eq!(submitted.status, SubmitStatus::Pending);
    let id = submitted.id;
    let message = until("the Slack message", || slack.messages().into_iter().next()).await;
    until("the Teams card", || bot.posted().into_iter().next()).await;
    let (signature, delivery) = until("the webhook delivery", || {
        hooks.lock().ok().and_then(|h| h.first().cloned())
    })
    .await;
    assert!(
        signature.starts_with("v1,"),
        "signed delivery: {signature:?}"
    );
    assert_eq!(delivery["type"], "approval.requested", "{delivery}");

    // Sam approves in Slack: a signed click to the served interactivity endpoint.
    let ts = message["ts"].as_str().expect("ts").to_owned();
    let value = message["blocks"]
        .as_array()
        .and_then(|blocks| blocks.iter().find(|b| b["type"] == "actions"))
        .and_then(|b| b["elements"][0]["value"].as_str())
        .expect("approve button")
        .to_owned();
    let click = Clicker::new("U0SAM00001").block_actions(
        ACTION_APPROVE,
        &value,
        &ts,
        &slack.response_url("sam"),
    );
    let secret = SigningSecret::new(SLACK_SIGNING_SECRET).expect("secret");
    let signed =
        slack_fake::signed_request(&secret, slack_fake::now(), slack_fake::form_body(&click));
    let (parts, body) = signed.into_parts();
    let http = http();
    let mut post = http
        .post(format!("{base}slack/interactivity"))
        .body(body.to_vec());
    for (name, value) in &parts.headers {
        post = post.header(name.as_str(), value.as_bytes());
    }
    let answer = post.send().await.expect("slack click delivered");
    assert_eq!(answer.status().as_u16(), 200);
    // A forged click (another signing secret) is refused.
    let forged = slack_fake::signed_request(
        &SigningSecret::new("not-the-secret-at-all").expect("secret"),
        slack_fake::now(),
        slack_fake::form_body(&click),
    );
    let (parts, body) = forged.into_parts();
    let mut post = http
        .post(format!("{base}slack/interactivity"))
        .body(body.to_vec());
    for (name, value) in &parts.headers {
        post = post.header(name.as_str(), value.as_bytes());
    }
    assert_eq!(post.send().await.expect("sent").status().as_u16(), 401);

    // The agent's wait gets the signed grant token; the token verifies with the audit key.
    let mut waited = agent.wait(id, Duration::from_secs(10)).await.expect("wait");
    for _ in 0..5 {
        if waited.state != RequestState::Pending {
            break;
        }
        waited = agent.wait(id, Duration::from_secs(10)).await.expect("wait");
    }
    assert_eq!(waited.state, RequestState::Approved, "{waited:?}");
    let grant = waited.grant_token.clone().expect("grant token");
    let verify = Command::new(BIN)
        .args(["audit", "grant", "verify", &grant, "--trust"])
        .arg(d.join("audit.vkey"))
        .args(["--digest", &submitted.digest.to_string()])
        .output()
        .expect("grant verify runs");
    assert!(
        verify.status.success(),
        "grant verifies with the audit key: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    agent.start_execution(id, &grant).await.expect("consumed");
    let done = agent.finish_execution(id, Ok(())).await.expect("recorded");
    assert_eq!(done.state, RequestState::Executed);

    // Every channel sees the outcome.
    until("the Slack message updated", || {
        (!slack.calls_to("chat.update").is_empty()).then_some(())
    })
    .await;
    until("the Teams card updated", || {
        (!bot.updated().is_empty()).then_some(())
    })
    .await;
    until("the webhook resolution", || {
        hooks
            .lock()
            .ok()
            .filter(|h| h.iter().any(|(_, b)| b["type"] == "approval.resolved"))
            .map(|_| ())
    })
    .await;

    // Health: every component reported, all well.
    let (status, body) = healthz(&base).await;
    assert_eq!(status, 200, "{body}");
    let health: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(health["store"]["status"], "ok", "{body}");
    assert_eq!(health["audit"]["status"], "ok", "{body}");
    for channel in ["slack", "teams", "webhook"] {
        assert_eq!(health["channels"][channel]["status"], "ok", "{body}");
        assert_eq!(health["channels"][channel]["configured"], true, "{body}");
    }

    // Secrets appear nowhere: not in the output, not in /healthz.
    let output = server.output.text();
    for secret in [
        SLACK_BOT_TOKEN,
        SLACK_SIGNING_SECRET,
        TEAMS_SECRET,
        WEBHOOK_SECRET,
        AGENT_TOKEN,
    ] {
        assert!(!output.contains(secret), "secret printed:\n{output}");
        assert!(!body.contains(secret), "secret in /healthz: {body}");
    }
}

/// Runs `serve --config` on `config`, expecting a refusal at start; returns its stderr.
fn refused(dir: &Path, config: &str, env: &[(&str, &str)]) -> String {
    let path = dir.join("approvals.toml");
    std::fs::write(&path, config).expect("config");
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--config"])
        .arg(&path)
        .current_dir(dir)
        .stdin(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(2),
        "refused as a usage error: {stderr}"
    );
    assert!(
        !stdout.contains("review console"),
        "nothing is served: {stdout}"
    );
    stderr
}

#[test]
fn misconfiguration_is_refused_at_start_with_file_line_and_field() {
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    let head = common(d, REQUIRE);
    let lines = head.lines().count();

    // An unknown field.
    let e = refused(
        d,
        &format!("{head}[channels.slack]\nchanel = \"C1\"\n"),
        &[],
    );
    assert!(
        e.contains(&format!(
            "approvals.toml:{}:1: channels.slack.chanel: unknown field `chanel`",
            lines + 2
        )),
        "{e}"
    );

    // A secret file that does not exist.
    let slack = |secret_line: &str| {
        format!(
            "{head}[channels.slack]\nbot_token_env = \"TEST_BOT\"\n{secret_line}\napp_id = \"A1\"\nteam_id = \"T1\"\nchannel = \"C1\"\n[channels.slack.reviewers]\nU1 = {{ id = \"sam@example.com\", groups = [\"security\"] }}\n"
        )
    };
    let e = refused(
        d,
        &slack("signing_secret_file = \"/run/secrets/does-not-exist\""),
        &[("TEST_BOT", "xoxb-not-printed")],
    );
    assert!(
        e.contains(&format!(
            "approvals.toml:{}:23: channels.slack.signing_secret_file: cannot read /run/secrets/does-not-exist",
            lines + 3
        )),
        "{e}"
    );

    // A secret written inline.
    let e = refused(
        d,
        &slack("signing_secret = \"inline-secret-value\""),
        &[("TEST_BOT", "xoxb-not-printed")],
    );
    assert!(
        e.contains(&format!("approvals.toml:{}:18: channels.slack.signing_secret: secrets are not written in the configuration file", lines + 3)),
        "{e}"
    );
    assert!(!e.contains("inline-secret-value"), "{e}");

    // A secret variable that is not set.
    let e = refused(d, &slack("signing_secret_env = \"TEST_UNSET_SECRET\""), &[]);
    assert!(
        e.contains("channels.slack.bot_token_env: the environment variable TEST_BOT is not set"),
        "{e}"
    );

    // A bad policy file.
    std::fs::write(d.join("policy.toml"), "version = 1\ndefault = \"maybe\"\n").expect("policy");
    let e = refused(d, &head, &[]);
    assert!(
        e.contains("approvals.toml:2:10: policy: invalid policy"),
        "{e}"
    );
    std::fs::write(d.join("policy.toml"), REQUIRE).expect("policy");

    // An environment variable overrides the file, and is named when it is wrong.
    let e = refused(
        d,
        &head,
        &[("APPROVALS_POLICY", "/nonexistent/policy.toml")],
    );
    assert!(
        e.contains("environment APPROVALS_POLICY: policy: cannot read /nonexistent/policy.toml"),
        "{e}"
    );

    // A required field missing.
    let e = refused(d, "listen = \"127.0.0.1:0\"\n", &[]);
    assert!(
        e.contains(
            "approvals.toml:1:1: policy: missing; set it in the file or with APPROVALS_POLICY"
        ),
        "{e}"
    );
}

async fn policy_version_of(db: &Path, id: approvals_core::RequestId) -> Option<String> {
    let store = approvals_store_sql::SqlStore::connect(&format!("sqlite://{}", db.display()))
        .await
        .ok()?;
    let events = store.audit_sink().events_for(id).await.ok()?;
    events.into_iter().find_map(|e| match e.detail {
        EventDetail::PolicyDecided { policy_version, .. } => Some(policy_version.to_string()),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_policy_file_is_reloaded_and_a_broken_edit_keeps_the_old_one() {
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    let path = d.join("approvals.toml");
    std::fs::write(&path, common(d, REQUIRE)).expect("config");
    let server = started(serve(d, &path, &[])).await;
    let agent = ApiClient::http(server.base.parse().expect("url"), Some(AGENT_TOKEN.into()))
        .expect("client");
    let v1 = RulePolicy::from_toml(REQUIRE)
        .expect("policy")
        .version()
        .to_owned();
    let v2 = RulePolicy::from_toml(ALLOW)
        .expect("policy")
        .version()
        .to_owned();

    let first = agent.submit(&export()).await.expect("submitted");
    assert_eq!(first.status, SubmitStatus::Pending);
    assert_eq!(
        policy_version_of(&d.join("approvals.db"), first.id).await,
        Some(v1.clone())
    );

    std::fs::write(d.join("policy.toml"), ALLOW).expect("edit");
    let output = server.output.clone();
    until("the reload", || {
        output
            .text()
            .contains(&format!("reloaded: version {v2}"))
            .then_some(())
    })
    .await;
    let second = agent
        .submit(&export().idempotency_key("after-reload"))
        .await
        .expect("submitted");
    assert_eq!(
        second.status,
        SubmitStatus::Allowed,
        "decided by the new policy"
    );
    assert_eq!(
        policy_version_of(&d.join("approvals.db"), second.id).await,
        Some(v2.clone())
    );

    std::fs::write(d.join("policy.toml"), "version = 1\n[[rules]\n").expect("broken edit");
    until("the refusal", || {
        output.text().contains("policy edit refused").then_some(())
    })
    .await;
    let third = agent
        .submit(&export().idempotency_key("after-broken-edit"))
        .await
        .expect("submitted");
    assert_eq!(third.status, SubmitStatus::Allowed, "the old policy stays");
    assert_eq!(
        policy_version_of(&d.join("approvals.db"), third.id).await,
        Some(v2.clone())
    );
    let (status, body) = healthz(&server.base).await;
    assert_eq!(status, 200, "{body}");
    let health: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(health["policy"]["version"], v2.as_str(), "{body}");
    assert_eq!(health["policy"]["status"], "edit_refused", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_is_503_when_a_channel_fails() {
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    let slack = FakeSlack::start().await.expect("fake slack");
    std::fs::write(d.join("slack-signing-secret"), SLACK_SIGNING_SECRET).expect("secret");
    let config = format!(
        "{}[channels.slack]\nbot_token_env = \"TEST_SLACK_BOT_TOKEN\"\nsigning_secret_file = \"slack-signing-secret\"\napp_id = \"{}\"\nteam_id = \"{}\"\nchannel = \"{}\"\napi_base_url = \"{}\"\n[channels.slack.reviewers]\nU0SAM00001 = {{ id = \"sam@example.com\", groups = [\"security\"] }}\n",
        common(d, REQUIRE),
        slack_fake::APP_ID,
        slack_fake::TEAM_ID,
        slack_fake::CONVERSATION,
        slack.api_base()
    );
    let path = d.join("approvals.toml");
    std::fs::write(&path, config).expect("config");
    let server = started(serve(
        d,
        &path,
        &[("TEST_SLACK_BOT_TOKEN", SLACK_BOT_TOKEN)],
    ))
    .await;
    let (status, body) = healthz(&server.base).await;
    assert_eq!(status, 200, "{body}");

    for _ in 0..8 {
        slack.fail_next(
            "chat.postMessage",
            approvals_slack::fake::Failure::Api("channel_not_found".into()),
        );
    }
    let agent = ApiClient::http(server.base.parse().expect("url"), Some(AGENT_TOKEN.into()))
        .expect("client");
    let _ = agent.submit(&export()).await;
    let base = server.base.clone();
    let body = {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = healthz(&base).await;
            if status == 503 {
                break body;
            }
            assert!(tokio::time::Instant::now() < deadline, "never 503: {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let health: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(health["status"], "unavailable", "{body}");
    assert_eq!(health["channels"]["slack"]["status"], "failing", "{body}");
    assert!(
        health["channels"]["slack"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("channel_not_found")),
        "{body}"
    );
    assert_eq!(health["store"]["status"], "ok", "{body}");
    assert!(!body.contains(SLACK_SIGNING_SECRET) && !body.contains(SLACK_BOT_TOKEN));
}

/// An OpenID Connect provider that only serves its discovery document and an empty key set:
/// enough for the console's sign-in page (the flow itself is tested in approvals-http).
async fn discovery_only_provider() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let issuer = format!("http://{}", listener.local_addr().expect("addr"));
    let discovery = serde_json::json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/auth"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    })
    .to_string();
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || {
                let d = discovery.clone();
                async move { ([(http::header::CONTENT_TYPE, "application/json")], d) }
            }),
        )
        .route(
            "/jwks",
            axum::routing::get(|| async {
                (
                    [(http::header::CONTENT_TYPE, "application/json")],
                    r#"{"keys":[]}"#,
                )
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    issuer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oidc_section_signs_console_reviewers_in_with_the_provider_only() {
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    let issuer = discovery_only_provider().await;
    // A free port, so public_url can name the address the server listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let config = format!(
        "{}public_url = \"http://127.0.0.1:{port}/\"\n[oidc]\nissuer = \"{issuer}\"\nclient_id = \"approvals-console\"\nclient_secret_env = \"TEST_OIDC_SECRET\"\ngroups_claim = \"groups\"\ndisplay_name = \"Example SSO\"\ntoken_sign_in = false\n",
        common(d, REQUIRE).replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
    );
    let path = d.join("approvals.toml");
    std::fs::write(&path, config).expect("config");
    let server = started(serve(
        d,
        &path,
        &[("TEST_OIDC_SECRET", "oidc-secret-do-not-print-4d3c")],
    ))
    .await;
    let login = http()
        .get(format!("{}console/login", server.base))
        .send()
        .await
        .expect("login page");
    let html = login.text().await.expect("body");
    assert!(html.contains("Sign in with Example SSO"), "{html}");
    assert!(!html.contains(r#"name="token""#), "{html}");
    let post = http()
        .post(format!("{}console/login", server.base))
        .header("origin", format!("http://127.0.0.1:{port}"))
        .form(&[("token", SAM_TOKEN)])
        .send()
        .await
        .expect("answer");
    assert_eq!(post.status(), 403, "token sign-in is off");
    // The start sends the browser to the provider, back to the public URL's callback.
    let start = http()
        .get(format!("{}console/oidc/start", server.base))
        .send()
        .await
        .expect("start");
    assert_eq!(start.status(), 303);
    let location = start
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("location")
        .to_owned();
    assert!(
        location.starts_with(&format!("{issuer}/auth?")),
        "{location}"
    );
    assert!(
        location.contains(&format!(
            "redirect_uri=http%3A%2F%2F127.0.0.1%3A{port}%2Fconsole%2Foidc%2Fcallback"
        )),
        "{location}"
    );
    // The API still takes the reviewer's token.
    let sam =
        ApiClient::http(server.base.parse().expect("url"), Some(SAM_TOKEN.into())).expect("client");
    sam.list("state=pending").await.expect("the API answers");
    assert!(!server.output.text().contains("oidc-secret-do-not-print"));
}

#[test]
fn an_unreachable_oidc_provider_stops_the_start() {
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    let config = format!(
        "{}public_url = \"https://approvals.example.com/\"\n[oidc]\nissuer = \"http://127.0.0.1:9\"\nclient_id = \"approvals-console\"\n",
        common(d, REQUIRE)
    );
    let path = d.join("approvals.toml");
    std::fs::write(&path, config).expect("config");
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .current_dir(d)
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "unavailable: {stderr}");
    assert!(
        stderr.contains(
            "oidc: cannot read the OpenID Connect discovery document of http://127.0.0.1:9"
        ),
        "{stderr}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("review console"));
}
