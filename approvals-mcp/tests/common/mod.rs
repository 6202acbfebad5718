//! Helpers shared by the gateway's end-to-end tests (embedded and remote mode): the
//! prerequisites, a fixture (a directory served by the filesystem server, a policy, a
//! reviewer token file, an SQLite store, a port), the Python MCP client driver, and readers
//! of the audit trail.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use approvals_core::{AuditEvent, EventDetail, RequestId, RequestState, Store};
use approvals_http::{ApiClient, RequestView, TokenHash};
use approvals_store_sql::{SqlAuditSink, SqlStore};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

pub const REVIEWER_TOKEN: &str = "test-reviewer-token-not-a-secret-0123456789";
pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

pub fn filesystem_server() -> PathBuf {
    workspace().join(".ci/node/node_modules/.bin/mcp-server-filesystem")
}

/// `@modelcontextprotocol/server-everything`, which serves MCP over streamable HTTP.
pub fn everything_server() -> PathBuf {
    workspace().join(".ci/node/node_modules/.bin/mcp-server-everything")
}

/// `None` when the tools are there; otherwise why not. Fails the test in CI.
pub fn missing_prerequisite() -> Option<String> {
    let mut missing = Vec::new();
    for server in [filesystem_server(), everything_server()] {
        if !server.exists() {
            missing.push(format!(
                "{} is missing: run `cd .ci/node && npm ci` (needs node and npm)",
                server.display()
            ));
        }
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
pub struct Fixture {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub db: String,
    pub policy: PathBuf,
    pub tokens: PathBuf,
    pub pidfile: PathBuf,
    pub port: u16,
}

impl Fixture {
    pub fn new() -> Fixture {
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
standing_grant_max = "1h"
standing_grant_max_uses = 5
editable = ["content"]

[[rules]]
name = "directories-reviewers-forget"
kind = "mcp.fs.create_directory"
effect = "require_approval"
approvers = {{ groups = ["maintainers"] }}
timeout = "20s"
remind_at = ["5%"]

[[rules]]
name = "moves-asked-once"
kind = "mcp.fs.move_file"
effect = "require_approval"
approvers = {{ groups = ["maintainers"] }}
timeout = "5m"
cooldown_after_denial = "1h"
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

    pub fn path(&self, name: &str) -> String {
        self.root.join(name).display().to_string()
    }

    /// Starts the Python client, which starts the gateway (the `approvals-mcp` binary with
    /// `gateway_args` and `env`), which starts the filesystem server (through `sh`, which
    /// records its pid for the crash test and then becomes it).
    pub fn start_with(
        &self,
        steps: Value,
        gateway_args: &[String],
        env: &[(&str, &str)],
    ) -> Client {
        let mut args: Vec<String> = ["--server-name", "fs", "--resource-arg", "path"]
            .map(str::to_owned)
            .to_vec();
        args.extend_from_slice(gateway_args);
        args.extend(["--progress-every", "1", "--", "sh", "-c"].map(str::to_owned));
        args.push(r#"echo $$ > "$0"; exec "$1" "$2""#.to_owned());
        args.push(self.pidfile.display().to_string());
        args.push(filesystem_server().display().to_string());
        args.push(self.root.display().to_string());
        start_client(steps, env!("CARGO_BIN_EXE_approvals-mcp"), &args, env)
    }

    pub fn api(&self) -> ApiClient {
        let base = format!("http://127.0.0.1:{}/", self.port)
            .parse()
            .expect("url");
        ApiClient::http(base, Some(REVIEWER_TOKEN.to_owned())).expect("api client")
    }

    /// The next request in `state` (other than `seen`), waiting for it to appear.
    pub async fn next_request(&self, state: &str, seen: &[RequestId]) -> RequestView {
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
    pub async fn state_of(&self, id: RequestId) -> RequestState {
        let store = SqlStore::connect(&self.db).await.expect("open the store");
        store
            .get(id)
            .await
            .expect("read the store")
            .unwrap_or_else(|| panic!("no request {id} in the store"))
            .state
    }

    /// Every audit event in the store's log, oldest first.
    pub async fn audit(&self) -> Vec<AuditEvent> {
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

/// Starts the Python client (tests/python/client.py) running `steps` against the gateway
/// `program` started with `args` and `env`.
pub fn start_client(steps: Value, program: &str, args: &[String], env: &[(&str, &str)]) -> Client {
    let mut command = Command::new("python3");
    command
        .arg(workspace().join("approvals-mcp/tests/python/client.py"))
        .arg(steps.to_string())
        .arg("--")
        .arg(program)
        .args(args)
        .envs(env.iter().copied())
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

pub struct Client {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Client {
    pub async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(STEP_TIMEOUT, self.lines.next_line())
            .await
            .expect("the client answered in time")
            .expect("read the client's output")
            .expect("the client ended early");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("client line {line:?}: {e}"))
    }

    pub async fn finish(mut self) {
        let status = tokio::time::timeout(STEP_TIMEOUT, self.child.wait())
            .await
            .expect("the client exits")
            .expect("client status");
        assert!(status.success(), "the client failed: {status}");
    }
}

/// The text of a tool result as the Python client reported it, after checking whether the
/// gateway marked it as an error (`isError`).
pub fn tool_text(result: &Value, is_error: bool) -> &str {
    assert_eq!(result["is_error"], is_error, "{result}");
    result["text"].as_str().unwrap_or_default()
}

/// Who cancelled request `id` and why, from its `cancelled` event (the reason empty when
/// none was given).
pub fn cancellation(events: &[AuditEvent], id: RequestId) -> (Option<&str>, &str) {
    let cancelled = events
        .iter()
        .find(|e| e.request_id == id && e.name() == "cancelled")
        .expect("a cancelled event");
    let EventDetail::Cancelled { by, reason } = &cancelled.detail else {
        panic!("not a cancel: {}", cancelled.name());
    };
    (
        by.as_ref().map(|p| p.id.as_str()),
        reason.as_deref().unwrap_or_default(),
    )
}

pub fn names(events: &[AuditEvent], id: RequestId) -> Vec<&'static str> {
    events
        .iter()
        .filter(|e| e.request_id == id)
        .map(AuditEvent::name)
        .collect()
}

pub fn request_of<'a>(events: &'a [AuditEvent], kind: &str, resource: &str) -> &'a AuditEvent {
    events
        .iter()
        .find(|e| &*e.kind == kind && &*e.resource == resource && e.name() == "requested")
        .unwrap_or_else(|| panic!("no requested event for {kind} on {resource}"))
}

/// Asserts that `event` (a `requested` event) names this initiator.
pub fn assert_initiator(event: &AuditEvent, agent: &str, model: &str, on_behalf_of: &str) {
    let EventDetail::Requested { request } = &event.detail else {
        panic!("not a requested event: {}", event.name());
    };
    let initiator = request.initiator.as_ref().expect("an initiator");
    assert_eq!(initiator.principal.id, agent);
    assert_eq!(initiator.model.as_deref(), Some(model));
    assert_eq!(
        initiator.on_behalf_of.as_ref().map(|p| p.id.as_str()),
        Some(on_behalf_of)
    );
}

pub fn executed_ok(events: &[AuditEvent], id: RequestId) -> Vec<bool> {
    events
        .iter()
        .filter(|e| e.request_id == id)
        .filter_map(|e| match &e.detail {
            EventDetail::Executed { ok, .. } => Some(*ok),
            _ => None,
        })
        .collect()
}
