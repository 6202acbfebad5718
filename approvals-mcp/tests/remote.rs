//! The gateway in remote mode, end to end with real components only: an in-process
//! `approvals_http::ReviewServer` (the approval service: policy, SQLite store, signed audit
//! log, an agent token with `on_behalf_of` and a reviewer token), the `approvals-mcp` binary
//! with `--server` and the agent token in `--token-file`, the official MCP Python SDK as
//! the client and the unmodified `@modelcontextprotocol/server-filesystem` as upstream.
//!
//! The server runs on a runtime of its own, so stopping it drops every connection at once,
//! as a crashed or unreachable server would.
//!
//! Same prerequisites as tests/gateway.rs.

mod common;

use std::path::Path;
use std::time::Duration;

use approvals_core::{
    AuditEvent, EventDetail, Gate, Initiator, Principal, RequestId, RequestState, RulePolicy,
};
use approvals_http::{ConsoleLinkApprover, ReviewServer, Tokens};
use approvals_store_sql::SqlStore;
use approvals_store_sql::audit::{LogConfig, Signer};
use common::{
    Fixture, assert_initiator, cancellation, executed_ok, missing_prerequisite, names, request_of,
    tool_text,
};
use serde_json::{Value, json};

const AGENT_TOKEN: &str = "test-agent-token-not-a-secret-0123456789";
const AGENT: &str = "team-gateway";
const MODEL: &str = "claude-remote";
const HUMAN: &str = "dana@example.com";

/// The approval service: a review server on the fixture's port, policy and store, on its own
/// runtime.
struct Server {
    runtime: Option<tokio::runtime::Runtime>,
    url: String,
}

impl Server {
    async fn start(fx: &Fixture) -> Server {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("the server's runtime");
        let url = format!("http://127.0.0.1:{}/", fx.port);
        let (ready, started) = tokio::sync::oneshot::channel();
        let (policy, tokens, db, base) = (
            fx.policy.clone(),
            fx.tokens.clone(),
            fx.db.clone(),
            url.clone(),
        );
        runtime.spawn(async move {
            let setup = async {
                let base: url::Url = base.parse().map_err(|e| format!("url: {e}"))?;
                let store = SqlStore::connect(&db)
                    .await
                    .map_err(|e| format!("store: {e}"))?;
                let signer =
                    Signer::generate("remote-test/audit").map_err(|e| format!("signer: {e}"))?;
                let audit = store.signed_audit_sink(LogConfig::new(signer.name()), signer);
                let gate = Gate::builder()
                    .policy(RulePolicy::from_file(&policy).map_err(|e| format!("policy: {e}"))?)
                    .store(store)
                    .audit(audit)
                    .approver(ConsoleLinkApprover::new(base.clone()))
                    .poll_interval(Duration::from_millis(100))
                    .build()
                    .map_err(|e| format!("gate: {e}"))?;
                let tokens = Tokens::from_file(&tokens)
                    .map_err(|e| format!("tokens: {}", e.0))?
                    .with_initiator(
                        AGENT_TOKEN,
                        Initiator::agent(AGENT)
                            .model(MODEL)
                            .on_behalf_of(Principal::human(HUMAN)),
                    );
                let server = ReviewServer::builder(gate)
                    .tokens(tokens)
                    .public_url(base.clone())
                    .build();
                let listener =
                    tokio::net::TcpListener::bind(("127.0.0.1", base.port().unwrap_or(0)))
                        .await
                        .map_err(|e| format!("listen: {e}"))?;
                Ok::<_, String>((server, listener))
            };
            match setup.await {
                Ok((server, listener)) => {
                    let _ = ready.send(Ok(()));
                    let _ = approvals_http::serve(listener, server, std::future::pending()).await;
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                }
            }
        });
        started
            .await
            .expect("the server task reports")
            .expect("the server starts");
        Server {
            runtime: Some(runtime),
            url,
        }
    }

    /// Stops the server and drops every open connection.
    fn stop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }

    /// Starts the client and the gateway in remote mode against this server, with the agent
    /// token in a file (the Python SDK starts its server with a minimal environment, so
    /// `APPROVALS_TOKEN` is covered by `remote_mode_refuses_flags_that_do_not_apply`).
    fn gateway(&self, fx: &Fixture, steps: Value) -> common::Client {
        let token_file = fx.pidfile.with_file_name("agent.token");
        std::fs::write(&token_file, format!("{AGENT_TOKEN}\n")).expect("token file");
        fx.start_with(
            steps,
            &[
                "--server".to_owned(),
                self.url.clone(),
                "--token-file".to_owned(),
                token_file.display().to_string(),
            ],
            &[],
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn assert_token_initiator(event: &AuditEvent) {
    assert_initiator(event, AGENT, MODEL, HUMAN);
}

/// Asserts that each `executed` event of `id` names the token's agent and human.
fn assert_executed_by_token(events: &[AuditEvent], id: RequestId) {
    let executed: Vec<_> = events
        .iter()
        .filter(|e| e.request_id == id)
        .filter_map(|e| match &e.detail {
            EventDetail::Executed { initiator, .. } => Some(initiator.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(executed.len(), 1, "one executed event");
    for initiator in executed {
        let initiator = initiator.expect("executed names its initiator");
        assert_eq!(initiator.principal.id, AGENT);
        assert_eq!(
            initiator.on_behalf_of.as_ref().map(|p| p.id.as_str()),
            Some(HUMAN)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_calls_pass_and_refused_calls_name_the_rule() {
    if missing_prerequisite().is_some() {
        return;
    }
    let fx = Fixture::new();
    let server = Server::start(&fx).await;
    let protected = fx.path("protected/keys.txt");
    let mut client = server.gateway(
        &fx,
        json!([
            {"op": "call", "tool": "list_directory", "args": {"path": fx.path("")}},
            {"op": "call", "tool": "write_file", "args": {"path": protected, "content": "x"}},
        ]),
    );
    assert_eq!(client.next().await["server"], "approvals-mcp");

    let listed = client.next().await;
    let text = tool_text(&listed, false);
    assert!(text.contains("hello.txt"), "{text}");
    let refused = client.next().await;
    let text = tool_text(&refused, true);
    assert!(text.contains("protected-files"), "{text}");
    assert!(text.contains("read-only for agents"), "{text}");
    client.finish().await;
    assert!(!Path::new(&protected).exists(), "a refused write happened");

    let events = fx.audit().await;
    let list = request_of(&events, "mcp.fs.list_directory", &fx.path(""));
    assert_token_initiator(list);
    let trail = names(&events, list.request_id);
    assert_eq!(
        trail.iter().filter(|n| **n == "grant_consumed").count(),
        1,
        "{trail:?}"
    );
    assert_eq!(executed_ok(&events, list.request_id), [true]);
    assert_executed_by_token(&events, list.request_id);

    let write = request_of(&events, "mcp.fs.write_file", &protected);
    assert_token_initiator(write);
    let trail = names(&events, write.request_id);
    assert!(
        !trail.contains(&"grant_consumed") && !trail.contains(&"executed"),
        "{trail:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_call_runs_once_and_changed_arguments_need_a_new_approval() {
    if missing_prerequisite().is_some() {
        return;
    }
    let fx = Fixture::new();
    let server = Server::start(&fx).await;
    let notes = fx.path("notes.txt");
    let mut client = server.gateway(
        &fx,
        json!([
            {"op": "call", "tool": "write_file", "args": {"path": notes, "content": "v1"}, "progress": true},
            {"op": "call", "tool": "write_file", "args": {"path": notes, "content": "v2"}, "progress": true},
        ]),
    );
    client.next().await; // initialize

    let first = fx.next_request("pending", &[]).await;
    assert_eq!(first.kind, "mcp.fs.write_file");
    assert_eq!(first.params, json!({"path": notes, "content": "v1"}));
    let initiator = first.initiator.as_ref().expect("initiator");
    assert_eq!(initiator.principal.id, AGENT);
    assert!(!Path::new(&notes).exists(), "written before approval");
    // Let at least one progress notification go out while it waits.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    fx.api()
        .decide(first.id, true, Some("fine"), Some(first.digest))
        .await
        .expect("approve");

    let done = client.next().await;
    assert_eq!(done["is_error"], false, "{done}");
    assert_eq!(std::fs::read_to_string(&notes).expect("written"), "v1");
    let link = format!("{}console/requests/{}", server.url, first.id);
    assert!(
        done["logs"]
            .as_array()
            .is_some_and(|logs| logs.iter().any(|l| l["data"]["review"] == link.as_str())),
        "no log message with the review link {link}: {done}"
    );
    assert!(
        done["progress"].as_array().is_some_and(|p| !p.is_empty()),
        "no progress notification: {done}"
    );

    let second = fx.next_request("pending", &[first.id]).await;
    assert_ne!(second.digest, first.digest);
    assert_eq!(second.params["content"], "v2");
    fx.api()
        .decide(second.id, false, Some("v2 drops the changelog"), None)
        .await
        .expect("deny");
    let denied = client.next().await;
    let text = tool_text(&denied, true);
    assert!(text.contains("v2 drops the changelog"), "{text}");
    assert!(text.contains("sam@example.com"), "{text}");
    client.finish().await;
    assert_eq!(std::fs::read_to_string(&notes).expect("file"), "v1");

    assert_eq!(fx.state_of(first.id).await, RequestState::Executed);
    assert_eq!(fx.state_of(second.id).await, RequestState::Denied);
    let events = fx.audit().await;
    assert_token_initiator(request_of(&events, "mcp.fs.write_file", &notes));
    let trail = names(&events, first.id);
    for name in ["requested", "policy_decided", "reviewed", "approved"] {
        assert!(trail.contains(&name), "{name} missing from {trail:?}");
    }
    assert_eq!(
        trail.iter().filter(|n| **n == "grant_consumed").count(),
        1,
        "{trail:?}"
    );
    assert_eq!(executed_ok(&events, first.id), [true]);
    assert_executed_by_token(&events, first.id);
    let trail = names(&events, second.id);
    assert!(trail.contains(&"denied"), "{trail:?}");
    assert!(
        !trail.contains(&"grant_consumed") && !trail.contains(&"executed"),
        "{trail:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cancel_cancels_the_remote_request() {
    if missing_prerequisite().is_some() {
        return;
    }
    let fx = Fixture::new();
    let server = Server::start(&fx).await;
    let draft = fx.path("draft.txt");
    // The SDK gives up after 3 seconds and sends notifications/cancelled for the call.
    let mut client = server.gateway(
        &fx,
        json!([
            {"op": "call", "tool": "write_file", "args": {"path": draft, "content": "d"}, "timeout": 3},
            {"op": "sleep", "seconds": 1},
            {"op": "call", "tool": "list_directory", "args": {"path": fx.path("")}},
        ]),
    );
    client.next().await; // initialize
    let pending = fx.next_request("pending", &[]).await;
    let gave_up = client.next().await;
    assert!(gave_up["exception"].is_string(), "{gave_up}");
    client.next().await; // sleep
    let listed = client.next().await;
    assert_eq!(listed["is_error"], false, "still serving: {listed}");
    let late = fx
        .api()
        .decide(pending.id, true, Some("too late"), Some(pending.digest))
        .await;
    assert!(late.is_err(), "{late:?}");
    client.finish().await;

    assert_eq!(fx.state_of(pending.id).await, RequestState::Cancelled);
    assert!(!Path::new(&draft).exists());
    let events = fx.audit().await;
    let (by, reason) = cancellation(&events, pending.id);
    assert_eq!(by, Some(AGENT));
    assert!(
        reason.contains("the MCP client cancelled the tool call"),
        "{reason}"
    );
    assert!(executed_ok(&events, pending.id).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_fails_closed() {
    if missing_prerequisite().is_some() {
        return;
    }
    let fx = Fixture::new();
    let mut server = Server::start(&fx).await;
    let first = fx.path("first.txt");
    let second = fx.path("second.txt");
    let mut client = server.gateway(
        &fx,
        json!([
            {"op": "call", "tool": "write_file", "args": {"path": first, "content": "1"}},
            {"op": "call", "tool": "write_file", "args": {"path": second, "content": "2"}},
            {"op": "call", "tool": "list_directory", "args": {"path": fx.path("")}},
        ]),
    );
    client.next().await; // initialize
    let pending = fx.next_request("pending", &[]).await;
    // The server goes away while the call waits for approval.
    server.stop();

    for path in [&first, &second] {
        let failed = client.next().await;
        let text = tool_text(&failed, true);
        // The server is stopped mid-flight: a call either finds it gone, or is answered by
        // a server whose store work was cancelled under it. Both refuse the call.
        let refused = text.contains("approvals server is unreachable")
            || text.contains("approval store unavailable");
        assert!(text.contains("Not run") && refused, "{text}");
        assert!(!Path::new(path).exists(), "{path} was written");
    }
    // Even a call the policy allows is not run without the server's word.
    let listed = client.next().await;
    assert_eq!(listed["is_error"], true, "{listed}");
    client.finish().await;

    assert_eq!(fx.state_of(pending.id).await, RequestState::Pending);
    let events = fx.audit().await;
    assert!(
        !events
            .iter()
            .any(|e| matches!(e.name(), "grant_consumed" | "executed")),
        "something ran without the server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_crash_cancels_the_remote_request() {
    if missing_prerequisite().is_some() {
        return;
    }
    let fx = Fixture::new();
    let server = Server::start(&fx).await;
    let report = fx.path("report.txt");
    let mut client = server.gateway(
        &fx,
        json!([
            {"op": "call", "tool": "write_file", "args": {"path": report, "content": "r"}},
            {"op": "call", "tool": "list_directory", "args": {"path": fx.path("")}},
        ]),
    );
    client.next().await; // initialize
    let pending = fx.next_request("pending", &[]).await;
    let pid = std::fs::read_to_string(&fx.pidfile).expect("the upstream's pid");
    let killed = std::process::Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .expect("kill");
    assert!(killed.success());

    for _ in 0..2 {
        let failed = client.next().await;
        let text = tool_text(&failed, true);
        assert!(text.contains("upstream MCP server stopped"), "{text}");
    }
    client.finish().await;

    assert_eq!(fx.state_of(pending.id).await, RequestState::Cancelled);
    assert!(!Path::new(&report).exists());
    let events = fx.audit().await;
    let (by, reason) = cancellation(&events, pending.id);
    assert_eq!(by, Some(AGENT));
    assert!(reason.contains("upstream MCP server stopped"), "{reason}");
    assert!(
        !events.iter().any(|e| e.name() == "executed"),
        "something was reported executed after the crash"
    );
}

/// Remote mode's flags: the initiator and the embedded settings belong to the server, and the
/// token never comes from the command line.
#[test]
fn remote_mode_refuses_flags_that_do_not_apply() {
    let run = |args: &[&str], token: Option<&str>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_approvals-mcp"));
        command
            .args(["--server", "http://127.0.0.1:9/", "--server-name", "fs"])
            .args(args)
            .args(["--", "true"])
            .env_remove("APPROVALS_TOKEN")
            .env_remove("APPROVALS_POLICY")
            .env_remove("APPROVALS_DB")
            .env_remove("APPROVALS_TOKENS")
            .env_remove("APPROVALS_MCP_AGENT")
            .env_remove("APPROVALS_MCP_ON_BEHALF_OF");
        if let Some(token) = token {
            command.env("APPROVALS_TOKEN", token);
        }
        let out = command.output().expect("the gateway runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(
        &["--agent", "me", "--on-behalf-of", "x@example.com"],
        Some(AGENT_TOKEN),
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("token's principal") && err.contains("--agent, --on-behalf-of"),
        "{err}"
    );

    let (code, err) = run(
        &["--policy", "p.toml", "--db", "sqlite://x.db"],
        Some(AGENT_TOKEN),
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--policy, --db") && err.contains("embedded mode"),
        "{err}"
    );

    let (code, err) = run(&[], None);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("APPROVALS_TOKEN"), "{err}");

    // A server that cannot be reached is refused at start, before anything is served.
    let (code, err) = run(&[], Some(AGENT_TOKEN));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("cannot use the approvals server"), "{err}");
}

/// Edit on approve in remote mode: the agent API's wait answers with the edited arguments,
/// and the gateway calls the upstream server with those only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reviewers_edit_reaches_the_remote_gateway_and_is_the_call_that_runs() {
    if missing_prerequisite().is_some() {
        return;
    }
    let fx = Fixture::new();
    let server = Server::start(&fx).await;
    let notes = fx.path("notes.txt");
    let mut client = server.gateway(
        &fx,
        json!([
            {"op": "call", "tool": "write_file", "args": {"path": notes, "content": "draft"}},
        ]),
    );
    client.next().await; // initialize
    let asked = fx.next_request("pending", &[]).await;
    fx.api()
        .approve_edited(
            asked.id,
            asked.digest,
            json!({"path": notes, "content": "reviewed"}),
            None,
        )
        .await
        .expect("approved as edited");
    let done = client.next().await;
    let text = tool_text(&done, false);
    assert!(
        text.contains("a reviewer changed this call's arguments"),
        "{text}"
    );
    client.finish().await;
    assert_eq!(
        std::fs::read_to_string(&notes).expect("written"),
        "reviewed"
    );
    assert_eq!(fx.state_of(asked.id).await, RequestState::Executed);
    let events = fx.audit().await;
    let trail = names(&events, asked.id);
    for name in ["edited", "approved", "grant_consumed", "executed"] {
        assert!(trail.contains(&name), "{name} missing from {trail:?}");
    }
}
