//! `approvals mcp-proxy`: the MCP approval gateway as an `approvals` subcommand. The official
//! MCP Python SDK is the client (approvals-mcp/tests/python/client.py) and the unmodified
//! `@modelcontextprotocol/server-filesystem` from npm the upstream server; the gateway's
//! behaviour in full is tested in approvals-mcp (tests/gateway.rs, remote.rs,
//! http_upstream.rs) through the same code (`approvals_mcp::cli::run`).
//!
//! Needs `python3 -m pip install -r .ci/requirements.txt` and `cd .ci/node && npm ci`. Without
//! them the end-to-end test says so and is skipped, except in CI (`CI=true`), where it fails.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use approvals_core::{AuditEvent, EventDetail};
use approvals_http::TokenHash;
use approvals_store_sql::{SqlAuditSink, SqlStore};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const APPROVALS: &str = env!("CARGO_BIN_EXE_approvals");

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn filesystem_server() -> PathBuf {
    workspace().join(".ci/node/node_modules/.bin/mcp-server-filesystem")
}

/// Whether the MCP Python SDK and the filesystem server are installed; in CI they must be.
fn prerequisites() -> bool {
    let sdk = std::process::Command::new("python3")
        .args(["-c", "import mcp.client.stdio"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let ready = sdk && filesystem_server().exists();
    assert!(
        ready || std::env::var("CI").as_deref() != Ok("true"),
        "approvals mcp-proxy cannot be tested: install .ci/requirements.txt and run npm ci in .ci/node"
    );
    if !ready {
        eprintln!("SKIPPED: the MCP Python SDK or the filesystem server is missing");
    }
    ready
}

async fn approvals(args: &[&str]) -> std::process::Output {
    tokio::time::timeout(
        Duration::from_secs(60),
        Command::new(APPROVALS).args(args).output(),
    )
    .await
    .expect("approvals exits")
    .expect("approvals runs")
}

#[tokio::test]
async fn mcp_proxy_has_its_own_flags_and_comes_first() {
    let help = approvals(&["mcp-proxy", "--help"]).await;
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("Usage: approvals mcp-proxy"), "{text}");
    assert!(text.contains("--upstream-url"), "{text}");

    let listed = approvals(&["--help"]).await;
    assert!(String::from_utf8_lossy(&listed.stdout).contains("mcp-proxy"));

    for (args, expected) in [
        (
            &[
                "--store",
                "sqlite://x.db",
                "mcp-proxy",
                "--server-name",
                "fs",
                "--",
                "true",
            ][..],
            "put mcp-proxy first",
        ),
        (
            &["mcp-proxy", "--server-name", "fs"][..],
            "give the upstream server",
        ),
        (
            &[
                "mcp-proxy",
                "--server-name",
                "fs",
                "--upstream-url",
                "http://127.0.0.1:9/mcp",
                "--",
                "true",
            ][..],
            "not both",
        ),
        (
            &[
                "mcp-proxy",
                "--server-name",
                "fs",
                "--upstream-url",
                "file:///etc/passwd",
            ][..],
            "must be http:// or https://",
        ),
    ] {
        let out = approvals(args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_proxy_guards_tool_calls_end_to_end() {
    if !prerequisites() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("files");
    std::fs::create_dir_all(root.join("protected")).expect("mkdir");
    let root = root.canonicalize().expect("canonical root");
    std::fs::write(root.join("hello.txt"), "hello\n").expect("write");
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            r#"version = 1
default = "deny"

[[rules]]
name = "protected-files"
kind = "mcp.fs.*"
resource = "{root}/protected/*"
effect = "deny"
reason = "files under protected/ are read-only for agents"

[[rules]]
name = "reads-are-free"
kind = "mcp.fs.list_*"
effect = "allow"
"#,
            root = root.display()
        ),
    )
    .expect("policy");
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        format!(
            "[[token]]\nsha256 = \"{}\"\nprincipal = {{ kind = \"human\", id = \"sam@example.com\", groups = [\"maintainers\"] }}\n",
            TokenHash::of("reviewer-token-not-a-secret-0123456789").to_hex()
        ),
    )
    .expect("tokens");
    let db = format!("sqlite://{}", dir.path().join("approvals.db").display());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let protected = root.join("protected/keys.txt").display().to_string();
    let steps = json!([
        {"op": "call", "tool": "list_directory", "args": {"path": root.display().to_string()}},
        {"op": "call", "tool": "write_file", "args": {"path": protected, "content": "x"}},
    ]);

    let mut client = Command::new("python3")
        .arg(workspace().join("approvals-mcp/tests/python/client.py"))
        .arg(steps.to_string())
        .arg("--")
        .arg(APPROVALS)
        .arg("mcp-proxy")
        .args(["--server-name", "fs", "--resource-arg", "path"])
        .arg("--policy")
        .arg(&policy)
        .arg("--tokens")
        .arg(&tokens)
        .args(["--db", &db, "--listen", &format!("127.0.0.1:{port}")])
        .args([
            "--agent",
            "claude-code",
            "--on-behalf-of",
            "dana@example.com",
        ])
        .arg("--")
        .arg(filesystem_server())
        .arg(&root)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 starts");
    let stdout = client.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut results = Vec::new();
    while let Some(line) = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("the client answered in time")
        .expect("read the client")
    {
        results.push(serde_json::from_str::<Value>(&line).expect("a JSON line"));
    }
    let status = client.wait().await.expect("client status");
    assert!(status.success(), "the client failed: {status}");
    assert_eq!(results.len(), 3, "{results:?}");
    assert_eq!(results[0]["server"], "approvals-mcp");
    assert_eq!(results[1]["is_error"], false, "{}", results[1]);
    assert!(
        results[1]["text"]
            .as_str()
            .is_some_and(|t| t.contains("hello.txt")),
        "{}",
        results[1]
    );
    assert_eq!(results[2]["is_error"], true, "{}", results[2]);
    let refusal = results[2]["text"].as_str().unwrap_or_default();
    assert!(refusal.contains("protected-files"), "{refusal}");
    assert!(!Path::new(&protected).exists(), "a refused write happened");

    // Both calls are in the store's audit log; the listing ran, made by the configured agent.
    let store = SqlStore::connect(&db).await.expect("open the store");
    let rows = SqlAuditSink::new(store)
        .rows(0, 1000)
        .await
        .expect("audit rows");
    let events: Vec<AuditEvent> = rows
        .into_iter()
        .filter(|row| row.seq.is_some())
        .map(|row| {
            let line: Value = serde_json::from_str(&row.line).expect("audit line");
            serde_json::from_value(line["event"].clone()).expect("audit event")
        })
        .collect();
    let seen: Vec<(&str, &str)> = events.iter().map(|e| (&*e.kind, e.name())).collect();
    assert!(
        seen.contains(&("mcp.fs.list_directory", "executed")),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|(kind, _)| *kind == "mcp.fs.write_file"),
        "{seen:?}"
    );
    assert!(
        !seen.contains(&("mcp.fs.write_file", "executed")),
        "{seen:?}"
    );
    let requested = events
        .iter()
        .find_map(|e| match &e.detail {
            EventDetail::Requested { request } if &*e.kind == "mcp.fs.list_directory" => {
                Some(request)
            }
            _ => None,
        })
        .expect("the listing's requested event");
    let initiator = requested.initiator.as_ref().expect("an initiator");
    assert_eq!(initiator.principal.id, "claude-code");
}
