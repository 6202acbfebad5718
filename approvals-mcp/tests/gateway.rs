//! The gateway end to end, with real components only: the official MCP Python SDK as the
//! client (tests/python/client.py), the `approvals-mcp` binary in embedded mode, and the
//! unmodified `@modelcontextprotocol/server-filesystem` from npm as the upstream server.
//! Reviewers decide through the review server's HTTP API with a reviewer token; the audit
//! trail is read back from the SQLite store's audit log.
//!
//! Needs `python3 -m pip install -r .ci/requirements.txt` and `cd .ci/node && npm ci`. Without
//! them each test says so and is skipped, except in CI (`CI=true`), where it fails.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use approvals_core::{AuditEvent, Digest, EventDetail, RequestId, RequestState, Store};
use approvals_http::{ApiClient, RequestView, TokenHash};
use approvals_store_sql::{SqlAuditSink, SqlStore};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const REVIEWER_TOKEN: &str = "test-reviewer-token-not-a-secret-0123456789";
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn filesystem_server() -> PathBuf {
    workspace().join(".ci/node/node_modules/.bin/mcp-server-filesystem")
}

/// `None` when the tools are there; otherwise why not. Fails the test in CI.
fn missing_prerequisite() -> Option<String> {
    let mut missing = Vec::new();
    if !filesystem_server().exists() {
        missing.push(format!(
            "{} is missing: run `cd .ci/node && npm ci` (needs node and npm)",
            filesystem_server().display()
        ));
    }
    let python = std::process::Command::new("python3")
        .args(["-c", "import mcp.client.stdio"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !matches!(python, Ok(s) if s.success()) {
        missing.push(
            "python3 with the MCP Python SDK is missing: run `python3 -m pip install -r .ci/requirements.txt`"
                .to_owned(),
        );
    }
    if missing.is_empty() {
        return None;
    }
    let why = missing.join("; ");
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "the MCP gateway tests cannot run: {why}"
    );
    eprintln!("SKIPPED: the MCP gateway tests cannot run: {why}");
    Some(why)
}

/// One gateway setup: a temp directory served by the filesystem server, a policy, a reviewer
/// token file, an SQLite store and a free port for the review server.
struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    db: String,
    policy: PathBuf,
    tokens: PathBuf,
    pidfile: PathBuf,
    port: u16,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("files");
        std::fs::create_dir_all(root.join("protected")).expect("mkdir");
        // The filesystem server resolves symlinks (/tmp may be one); use the real path.
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
reason = "files under protected/ are read-only for agents; ask the maintainers"

[[rules]]
name = "reads-are-free"
kind = ["mcp.fs.list_*", "mcp.fs.read_*", "mcp.fs.get_file_info"]
effect = "allow"

[[rules]]
name = "writes-need-a-maintainer"
kind = "mcp.fs.write_file"
effect = "require_approval"
approvers = {{ groups = ["maintainers"] }}
timeout = "5m"
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
                TokenHash::of(REVIEWER_TOKEN).to_hex()
            ),
        )
        .expect("tokens");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        Fixture {
            db: format!("sqlite://{}", dir.path().join("approvals.db").display()),
            pidfile: dir.path().join("upstream.pid"),
            _dir: dir,
            root,
            policy,
            tokens,
            port,
        }
    }

    fn path(&self, name: &str) -> String {
        self.root.join(name).display().to_string()
    }

    /// Starts the Python client, which starts the gateway, which starts the filesystem
    /// server (through `sh`, which records its pid for the crash test and then becomes it).
    fn start(&self, steps: Value) -> Client {
        let mut command = Command::new("python3");
        command
            .arg(workspace().join("approvals-mcp/tests/python/client.py"))
            .arg(steps.to_string())
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_approvals-mcp"))
            .args(["--server-name", "fs", "--resource-arg", "path"])
            .arg("--policy")
            .arg(&self.policy)
            .arg("--tokens")
            .arg(&self.tokens)
            .args(["--db", &self.db])
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--agent", "claude-code", "--model", "claude-test"])
            .args(["--on-behalf-of", "dana@example.com"])
            .args(["--progress-every", "1", "--"])
            .args(["sh", "-c", r#"echo $$ > "$0"; exec "$1" "$2""#])
            .arg(&self.pidfile)
            .arg(filesystem_server())
            .arg(&self.root)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("python3 starts");
        let stdout = child.stdout.take().expect("stdout");
        Client {
            child,
            lines: BufReader::new(stdout).lines(),
        }
    }

    fn api(&self) -> ApiClient {
        let base = format!("http://127.0.0.1:{}/", self.port)
            .parse()
            .expect("url");
        ApiClient::http(base, Some(REVIEWER_TOKEN.to_owned())).expect("api client")
    }

    /// The next request in `state` (other than `seen`), waiting for it to appear.
    async fn next_request(&self, state: &str, seen: &[RequestId]) -> RequestView {
        let api = self.api();
        for _ in 0..600 {
            if let Ok(list) = api.list(&format!("state={state}")).await
                && let Some(view) = list.requests.into_iter().find(|r| !seen.contains(&r.id))
            {
                return view;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no {state} request appeared");
    }

    /// The request's state as the store holds it (readable after the gateway exited).
    async fn state_of(&self, id: RequestId) -> RequestState {
        let store = SqlStore::connect(&self.db).await.expect("open the store");
        store
            .get(id)
            .await
            .expect("read the store")
            .unwrap_or_else(|| panic!("no request {id} in the store"))
            .state
    }

    /// Every audit event in the store's log, oldest first.
    async fn audit(&self) -> Vec<AuditEvent> {
        let store = SqlStore::connect(&self.db).await.expect("open the store");
        let rows = SqlAuditSink::new(store)
            .rows(0, 100_000)
            .await
            .expect("audit rows");
        rows.into_iter()
            .filter(|row| row.seq.is_some())
            .map(|row| {
                let line: Value = serde_json::from_str(&row.line).expect("audit line");
                serde_json::from_value(line["event"].clone()).expect("audit event")
            })
            .collect()
    }
}

struct Client {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Client {
    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(STEP_TIMEOUT, self.lines.next_line())
            .await
            .expect("the client answered in time")
            .expect("read the client's output")
            .expect("the client ended early");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("client line {line:?}: {e}"))
    }

    async fn finish(mut self) {
        let status = tokio::time::timeout(STEP_TIMEOUT, self.child.wait())
            .await
            .expect("the client exits")
            .expect("client status");
        assert!(status.success(), "the client failed: {status}");
    }
}

fn names(events: &[AuditEvent], id: RequestId) -> Vec<&'static str> {
    events
        .iter()
        .filter(|e| e.request_id == id)
        .map(AuditEvent::name)
        .collect()
}

fn request_of<'a>(events: &'a [AuditEvent], kind: &str, resource: &str) -> &'a AuditEvent {
    events
        .iter()
        .find(|e| &*e.kind == kind && &*e.resource == resource && e.name() == "requested")
        .unwrap_or_else(|| panic!("no requested event for {kind} on {resource}"))
}

fn assert_initiator(event: &AuditEvent) {
    let EventDetail::Requested { request } = &event.detail else {
        panic!("not a requested event: {}", event.name());
    };
    let initiator = request.initiator.as_ref().expect("an initiator");
    assert_eq!(initiator.principal.id, "claude-code");
    assert_eq!(initiator.model.as_deref(), Some("claude-test"));
    assert_eq!(
        initiator.on_behalf_of.as_ref().map(|p| p.id.as_str()),
        Some("dana@example.com")
    );
}

fn executed_ok(events: &[AuditEvent], id: RequestId) -> Vec<bool> {
    events
        .iter()
        .filter(|e| e.request_id == id)
        .filter_map(|e| match &e.detail {
            EventDetail::Executed { ok, .. } => Some(*ok),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_calls_pass_and_refused_calls_name_the_rule() {
    if missing_prerequisite().is_some() {
        return;
    }
    let fx = Fixture::new();
    let protected = fx.path("protected/keys.txt");
    let mut client = fx.start(json!([
        {"op": "list_tools"},
        {"op": "call", "tool": "list_directory", "args": {"path": fx.path("")}},
        {"op": "call", "tool": "write_file", "args": {"path": protected, "content": "x"}},
    ]));
    let init = client.next().await;
    assert_eq!(init["server"], "approvals-mcp");

    let tools = client.next().await;
    let tools: Vec<&str> = tools["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(tools.contains(&"write_file") && tools.contains(&"list_directory"));

    let listed = client.next().await;
    assert_eq!(listed["is_error"], false, "{listed}");
    assert!(
        listed["text"]
            .as_str()
            .is_some_and(|t| t.contains("hello.txt")),
        "{listed}"
    );

    let refused = client.next().await;
    assert_eq!(refused["is_error"], true, "{refused}");
    let text = refused["text"].as_str().unwrap_or_default();
    assert!(text.contains("protected-files"), "{text}");
    assert!(text.contains("read-only for agents"), "{text}");
    client.finish().await;
    assert!(!Path::new(&protected).exists(), "a refused write happened");

    let events = fx.audit().await;
    let list = request_of(&events, "mcp.fs.list_directory", &fx.path(""));
    assert_initiator(list);
    assert_eq!(
        names(&events, list.request_id),
        ["requested", "policy_decided", "grant_consumed", "executed"]
    );
    assert_eq!(executed_ok(&events, list.request_id), [true]);

    let write = request_of(&events, "mcp.fs.write_file", &protected);
    assert_initiator(write);
    assert_eq!(
        names(&events, write.request_id),
        ["requested", "policy_decided"]
    );
    let decided = events
        .iter()
        .find(|e| e.request_id == write.request_id && e.name() == "policy_decided")
        .expect("policy_decided");
    let EventDetail::PolicyDecided { decision, .. } = &decided.detail else {
        panic!("not a decision");
    };
    assert_eq!(decision.rule(), Some("protected-files"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_call_runs_once_and_changed_arguments_need_a_new_approval() {
    if missing_prerequisite().is_some() {
        return;
    }
    let fx = Fixture::new();
    let notes = fx.path("notes.txt");
    let mut client = fx.start(json!([
        {"op": "call", "tool": "write_file", "args": {"path": notes, "content": "v1"}, "progress": true},
        {"op": "call", "tool": "write_file", "args": {"path": notes, "content": "v2"}, "progress": true},
    ]));
    client.next().await; // initialize

    let first = fx.next_request("pending", &[]).await;
    assert_eq!(first.kind, "mcp.fs.write_file");
    assert_eq!(first.resource, notes);
    assert_eq!(first.params, json!({"path": notes, "content": "v1"}));
    let initiator = first.initiator.as_ref().expect("initiator");
    assert_eq!(initiator.principal.id, "claude-code");
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
    let link = format!("console/requests/{}", first.id);
    assert!(
        done["logs"]
            .as_array()
            .is_some_and(|logs| logs.iter().any(|l| l["data"]["review"]
                .as_str()
                .is_some_and(|r| r.ends_with(&link)))),
        "no log message with the review link: {done}"
    );
    assert!(
        done["progress"].as_array().is_some_and(|p| !p.is_empty()),
        "no progress notification: {done}"
    );

    // The same tool and path with other content is another action: a new request, a new
    // digest, and the first approval does not cover it.
    let second = fx.next_request("pending", &[first.id]).await;
    assert_ne!(second.id, first.id);
    assert_ne!(second.digest, first.digest);
    assert_eq!(second.params["content"], "v2");
    fx.api()
        .decide(second.id, false, Some("v2 drops the changelog"), None)
        .await
        .expect("deny");
    let denied = client.next().await;
    assert_eq!(denied["is_error"], true, "{denied}");
    assert!(
        denied["text"]
            .as_str()
            .is_some_and(|t| t.contains("v2 drops the changelog")),
        "{denied}"
    );
    client.finish().await;
    assert_eq!(std::fs::read_to_string(&notes).expect("file"), "v1");

    assert_eq!(fx.state_of(first.id).await, RequestState::Executed);
    assert_eq!(fx.state_of(second.id).await, RequestState::Denied);
    let events = fx.audit().await;
    let trail = names(&events, first.id);
    for name in [
        "requested",
        "policy_decided",
        "dispatched",
        "reviewed",
        "approved",
    ] {
        assert!(trail.contains(&name), "{name} missing from {trail:?}");
    }
    assert_eq!(
        trail.iter().filter(|n| **n == "grant_consumed").count(),
        1,
        "{trail:?}"
    );
    assert_eq!(executed_ok(&events, first.id), [true]);
    assert!(events.iter().any(|e| e.request_id == first.id
        && matches!(&e.detail, EventDetail::Reviewed { reviewer, .. } if reviewer.id == "sam@example.com")));
    let trail = names(&events, second.id);
    assert!(trail.contains(&"denied"), "{trail:?}");
    assert!(
        !trail.contains(&"grant_consumed") && !trail.contains(&"executed"),
        "{trail:?}"
    );
    let digests: Vec<Digest> = events
        .iter()
        .filter(|e| e.request_id == second.id)
        .map(|e| e.digest)
        .collect();
    assert!(digests.iter().all(|d| *d == second.digest));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cancel_withdraws_the_request() {
    if missing_prerequisite().is_some() {
        return;
    }
    let fx = Fixture::new();
    let draft = fx.path("draft.txt");
    // The SDK gives up after 3 seconds and sends notifications/cancelled for the call.
    let mut client = fx.start(json!([
        {"op": "call", "tool": "write_file", "args": {"path": draft, "content": "d"}, "timeout": 3},
        {"op": "sleep", "seconds": 1},
        {"op": "call", "tool": "list_directory", "args": {"path": fx.path("")}},
    ]));
    client.next().await; // initialize
    let pending = fx.next_request("pending", &[]).await;
    let gave_up = client.next().await;
    assert!(gave_up["exception"].is_string(), "{gave_up}");
    client.next().await; // sleep
    let listed = client.next().await;
    assert_eq!(
        listed["is_error"], false,
        "the gateway still serves: {listed}"
    );
    // Approving it now is refused: there is nothing left to approve.
    let late = fx
        .api()
        .decide(pending.id, true, Some("too late"), Some(pending.digest))
        .await;
    assert!(late.is_err(), "{late:?}");
    client.finish().await;

    assert_eq!(fx.state_of(pending.id).await, RequestState::Cancelled);
    assert!(!Path::new(&draft).exists());
    let events = fx.audit().await;
    let cancelled = events
        .iter()
        .find(|e| e.request_id == pending.id && e.name() == "cancelled")
        .expect("a cancelled event");
    let text = serde_json::to_string(cancelled).expect("json");
    assert!(
        text.contains("the MCP client cancelled the tool call"),
        "{text}"
    );
    assert!(executed_ok(&events, pending.id).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_crash_fails_closed() {
    if missing_prerequisite().is_some() {
        return;
    }
    let fx = Fixture::new();
    let report = fx.path("report.txt");
    let mut client = fx.start(json!([
        {"op": "call", "tool": "write_file", "args": {"path": report, "content": "r"}},
        {"op": "call", "tool": "list_directory", "args": {"path": fx.path("")}},
    ]));
    client.next().await; // initialize
    let pending = fx.next_request("pending", &[]).await;

    let pid = std::fs::read_to_string(&fx.pidfile).expect("the upstream's pid");
    let killed = std::process::Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .expect("kill");
    assert!(killed.success());

    let failed = client.next().await;
    assert_eq!(failed["is_error"], true, "{failed}");
    assert!(
        failed["text"]
            .as_str()
            .is_some_and(|t| t.contains("upstream MCP server stopped")),
        "{failed}"
    );
    let after = client.next().await;
    assert_eq!(after["is_error"], true, "{after}");
    assert!(
        after["text"]
            .as_str()
            .is_some_and(|t| t.contains("upstream MCP server stopped")),
        "{after}"
    );
    client.finish().await;

    assert_eq!(fx.state_of(pending.id).await, RequestState::Cancelled);
    assert!(!Path::new(&report).exists());
    let events = fx.audit().await;
    let cancelled = events
        .iter()
        .find(|e| e.request_id == pending.id && e.name() == "cancelled")
        .expect("a cancelled event");
    let text = serde_json::to_string(cancelled).expect("json");
    assert!(text.contains("upstream MCP server stopped"), "{text}");
    assert!(
        !events.iter().any(|e| e.name() == "executed"),
        "something was reported executed after the crash"
    );
}
