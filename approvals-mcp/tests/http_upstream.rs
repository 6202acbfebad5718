//! The gateway in front of a streamable-HTTP upstream server, with real components only: the
//! unmodified `@modelcontextprotocol/server-everything` from npm serving MCP over HTTP on
//! loopback, the official MCP Python SDK as the client (tests/python/client.py), and the
//! `approvals-mcp` binary in embedded mode with `--upstream-url`. Reviewers decide through
//! the review server's HTTP API; the audit trail is read back from the SQLite store.
//!
//! Needs `python3 -m pip install -r .ci/requirements.txt` and `cd .ci/node && npm ci`. Without
//! them each test says so and is skipped, except in CI (`CI=true`), where it fails.

mod common;

use std::process::Stdio;
use std::time::Duration;

use approvals_core::RequestState;
use common::{
    Fixture, assert_initiator, everything_server, executed_ok, missing_prerequisite, names,
    request_of, start_client, tool_text,
};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

const POLICY: &str = r#"version = 1
default = "deny"

[[rules]]
name = "echo-is-free"
kind = "mcp.everything.echo"
effect = "allow"

[[rules]]
name = "no-environment"
kind = "mcp.everything.get-env"
effect = "deny"
reason = "the server's environment holds its credentials"

[[rules]]
name = "sums-need-a-maintainer"
kind = "mcp.everything.get-sum"
effect = "require_approval"
approvers = { groups = ["maintainers"] }
timeout = "5m"
"#;

/// `server-everything streamableHttp` on a free loopback port.
struct Everything {
    child: Child,
    port: u16,
}

impl Everything {
    async fn start() -> Everything {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let child = Command::new(everything_server())
            .arg("streamableHttp")
            .env("PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("server-everything starts");
        for _ in 0..300 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Everything { child, port };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("server-everything did not listen on port {port}");
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }
}

/// The gateway in embedded mode in front of `upstream`.
fn start(fx: &Fixture, upstream: &Everything, steps: Value) -> common::Client {
    std::fs::write(&fx.policy, POLICY).expect("policy");
    let args = [
        "--server-name",
        "everything",
        "--policy",
        &fx.policy.display().to_string(),
        "--tokens",
        &fx.tokens.display().to_string(),
        "--db",
        &fx.db,
        "--listen",
        &format!("127.0.0.1:{}", fx.port),
        "--agent",
        "claude-code",
        "--model",
        "claude-test",
        "--on-behalf-of",
        "dana@example.com",
        "--progress-every",
        "1",
        "--upstream-url",
        &upstream.url(),
    ]
    .map(str::to_owned);
    start_client(steps, env!("CARGO_BIN_EXE_approvals-mcp"), &args, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_refused_approved_and_denied_calls_over_http() {
    if missing_prerequisite().is_some() {
        return;
    }
    let fx = Fixture::new();
    let upstream = Everything::start().await;
    let mut client = start(
        &fx,
        &upstream,
        json!([
            {"op": "list_tools"},
            {"op": "call", "tool": "echo", "args": {"message": "hello over http"}},
            {"op": "call", "tool": "get-env", "args": {}},
            {"op": "call", "tool": "get-sum", "args": {"a": 2, "b": 3}, "progress": true},
            {"op": "call", "tool": "get-sum", "args": {"a": 2, "b": 40}},
        ]),
    );
    assert_eq!(client.next().await["server"], "approvals-mcp");
    let tools = client.next().await;
    let tools: Vec<&str> = tools["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        tools.contains(&"echo") && tools.contains(&"get-sum"),
        "{tools:?}"
    );

    let text = tool_text(&client.next().await, false).to_owned();
    assert!(text.contains("hello over http"), "{text}");
    let refused = client.next().await;
    let text = tool_text(&refused, true);
    assert!(text.contains("no-environment"), "{text}");
    assert!(text.contains("holds its credentials"), "{text}");
    assert!(!text.contains("PATH"), "the environment leaked: {text}");

    let first = fx.next_request("pending", &[]).await;
    assert_eq!(first.kind, "mcp.everything.get-sum");
    assert_eq!(first.resource, "everything");
    assert_eq!(first.params, json!({"a": 2, "b": 3}));
    fx.api()
        .decide(first.id, true, Some("fine"), Some(first.digest))
        .await
        .expect("approve");
    let done = client.next().await;
    let text = tool_text(&done, false);
    assert!(text.contains('5'), "{text}");

    // Other arguments are another action: a new request, denied with a reason.
    let second = fx.next_request("pending", &[first.id]).await;
    assert_ne!(second.digest, first.digest);
    fx.api()
        .decide(
            second.id,
            false,
            Some("40 is out of range"),
            Some(second.digest),
        )
        .await
        .expect("deny");
    let denied = client.next().await;
    let text = tool_text(&denied, true);
    assert!(text.contains("40 is out of range"), "{text}");
    client.finish().await;

    let events = fx.audit().await;
    let echo = request_of(&events, "mcp.everything.echo", "everything");
    assert_initiator(echo, "claude-code", "claude-test", "dana@example.com");
    assert_eq!(
        names(&events, echo.request_id),
        ["requested", "policy_decided", "grant_consumed", "executed"]
    );
    let env = request_of(&events, "mcp.everything.get-env", "everything");
    assert!(executed_ok(&events, env.request_id).is_empty());
    assert!(!names(&events, env.request_id).contains(&"grant_consumed"));
    assert_eq!(executed_ok(&events, first.id), [true]);
    assert_eq!(fx.state_of(first.id).await, RequestState::Executed);
    assert_eq!(fx.state_of(second.id).await, RequestState::Denied);
    assert!(executed_ok(&events, second.id).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_goes_away_fails_closed() {
    if missing_prerequisite().is_some() {
        return;
    }
    let fx = Fixture::new();
    let mut upstream = Everything::start().await;
    let mut client = start(
        &fx,
        &upstream,
        json!([
            {"op": "call", "tool": "get-sum", "args": {"a": 1, "b": 1}},
            {"op": "call", "tool": "echo", "args": {"message": "still there?"}},
        ]),
    );
    client.next().await; // initialize
    let pending = fx.next_request("pending", &[]).await;
    upstream.child.kill().await.expect("kill server-everything");
    // Approving after the server went away: either the gateway noticed and withdrew the
    // request (the approval is refused), or the approved call fails at the server's door.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = fx
        .api()
        .decide(pending.id, true, Some("fine"), Some(pending.digest))
        .await;
    let failed = client.next().await;
    let text = tool_text(&failed, true);
    assert!(text.contains("upstream MCP server"), "{text}");
    let after = client.next().await;
    let text = tool_text(&after, true);
    assert!(text.contains("upstream MCP server"), "{text}");
    client.finish().await;

    let events = fx.audit().await;
    assert!(
        !executed_ok(&events, pending.id).contains(&true),
        "reported as run after the server went away"
    );
    let echo = request_of(&events, "mcp.everything.echo", "everything");
    assert!(!executed_ok(&events, echo.request_id).contains(&true));
}
