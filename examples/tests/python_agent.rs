//! Runs `examples/python/agent.py` (standard library only) against a review server on a real
//! store, with an agent token, and decides its request through the API with a reviewer's
//! token: approved, it runs once and the audit trail shows one execution; denied, it prints
//! the reviewer's reason and exits non-zero. The same flow also runs through `ApiClient` on
//! PostgreSQL.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use approvals_core::{
    Gate, Initiator, MemorySink, Principal, RequestId, RequestState, RulePolicy, Store,
};
use approvals_http::{ApiClient, ReviewServer, SubmitStatus, Tokens};
use approvals_store_sql::{SqlStore, SqlStoreOptions};
use tokio::io::{AsyncBufReadExt, BufReader};

const AGENT: &str = "apr_test-agent-token";
const REVIEWER: &str = "apr_test-reviewer-token";

const POLICY: &str = r#"
version = 1
default = "deny"

[[rules]]
name = "customer-exports"
kind = "data.export"
effect = "require_approval"
approvers = { groups = ["data-owners"] }
timeout = "15m"
"#;

struct Server {
    gate: Gate,
    audit: Arc<MemorySink>,
    base: url::Url,
}

async fn server(store: SqlStore) -> Server {
    let audit = Arc::new(MemorySink::new());
    let gate = Gate::builder()
        .policy(RulePolicy::from_toml(POLICY).expect("policy"))
        .store(store)
        .audit_shared(audit.clone())
        .poll_interval(Duration::from_millis(100))
        .build()
        .expect("gate");
    let tokens = Tokens::new()
        .with_initiator(
            AGENT,
            Initiator::agent("churn-agent")
                .on_behalf_of(Principal::human("dana@example.com"))
                .model("claude-opus-4"),
        )
        .with_token(
            REVIEWER,
            Principal::human("sam@example.com").with_groups(["data-owners"]),
        );
    let server = ReviewServer::builder(gate.clone()).tokens(tokens).build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}/", listener.local_addr().expect("addr"))
        .parse()
        .expect("url");
    tokio::spawn(approvals_http::serve(
        listener,
        server,
        std::future::pending(),
    ));
    Server { gate, audit, base }
}

async fn sqlite() -> SqlStore {
    let path = std::env::temp_dir().join(format!(
        "approvals-python-agent-{}-{}.db",
        std::process::id(),
        RequestId::new()
    ));
    SqlStore::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("sqlite store")
}

struct Ran {
    code: Option<i32>,
    output: String,
    id: RequestId,
}

/// Runs the agent; when it prints its review link, `decide` approves or denies the request
/// through the API as the reviewer.
async fn run_agent(server: &Server, approve: bool, reason: &str) -> Ran {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/agent.py");
    let mut child = tokio::process::Command::new("python3")
        .arg(script)
        .env("APPROVALS_URL", server.base.as_str())
        .env("APPROVALS_TOKEN", AGENT)
        .env("PYTHONUNBUFFERED", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs (install Python 3)");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut output = String::new();
    let reviewer = ApiClient::http(server.base.clone(), Some(REVIEWER.into())).expect("client");
    let mut id = None;
    let read = async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            output.push_str(&line);
            output.push('\n');
            if let Some(link) = line.strip_prefix("review: ") {
                let raw = link.rsplit('/').next().unwrap_or_default();
                let request = RequestId::parse(raw).expect("the review link names the request");
                assert!(
                    link.starts_with(server.base.as_str()),
                    "{link} is on the server"
                );
                reviewer
                    .decide(request, approve, Some(reason), None)
                    .await
                    .expect("the reviewer decides");
                id = Some(request);
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("the agent finishes within a minute");
    let done = child.wait_with_output().await.expect("exit");
    output.push_str(&String::from_utf8_lossy(&done.stderr));
    Ran {
        code: done.status.code(),
        id: id.unwrap_or_else(|| panic!("the agent printed no review link:\n{output}")),
        output,
    }
}

fn count(audit: &MemorySink, id: RequestId, name: &str) -> usize {
    audit
        .for_request(id)
        .iter()
        .filter(|e| e.detail.name() == name)
        .count()
}

#[tokio::test]
async fn the_python_agent_runs_once_when_approved() {
    let server = server(sqlite().await).await;
    let ran = run_agent(&server, true, "fine for Q3").await;
    assert_eq!(ran.code, Some(0), "{}", ran.output);
    assert!(
        ran.output.contains("approved by sam@example.com"),
        "{}",
        ran.output
    );
    assert!(ran.output.contains("exporting 5000 rows"), "{}", ran.output);
    assert!(
        ran.output.trim_end().ends_with("executed"),
        "{}",
        ran.output
    );
    let record = server
        .gate
        .get(ran.id)
        .await
        .expect("store")
        .expect("record");
    assert_eq!(record.state, RequestState::Executed);
    assert_eq!(
        record.request.context.preview,
        Some(approvals_core::Preview::rows(
            vec!["id".into(), "plan".into(), "mrr".into()],
            vec![
                vec!["1001".into(), "pro".into(), "49".into()],
                vec!["1002".into(), "team".into(), "199".into()],
            ],
            Some(5000),
        )),
        "the agent's preview is what reviewers were shown"
    );
    let initiator = record.request.initiator.as_deref().expect("initiator");
    assert_eq!(initiator.principal.id, "churn-agent");
    assert_eq!(
        initiator.on_behalf_of.as_ref().map(|h| h.id.as_str()),
        Some("dana@example.com")
    );
    assert_eq!(count(&server.audit, ran.id, "grant_consumed"), 1);
    assert_eq!(count(&server.audit, ran.id, "executed"), 1);
}

#[tokio::test]
async fn the_python_agent_prints_the_reason_and_fails_when_denied() {
    let server = server(sqlite().await).await;
    let ran = run_agent(&server, false, "use the anonymised view").await;
    assert_eq!(ran.code, Some(2), "{}", ran.output);
    assert!(
        ran.output
            .contains("denied by sam@example.com: use the anonymised view"),
        "{}",
        ran.output
    );
    assert!(!ran.output.contains("exporting"), "{}", ran.output);
    let record = server
        .gate
        .get(ran.id)
        .await
        .expect("store")
        .expect("record");
    assert_eq!(record.state, RequestState::Denied);
    assert_eq!(count(&server.audit, ran.id, "grant_consumed"), 0);
    assert_eq!(count(&server.audit, ran.id, "executed"), 0);
}

/// The agent API's flow on PostgreSQL: submit, wait, execute once, replay refused.
#[tokio::test]
async fn the_agent_api_runs_once_on_postgres() {
    let Some(url) = approvals_testkit::pg::postgres_url("the_agent_api_runs_once_on_postgres")
    else {
        return;
    };
    let schema = approvals_testkit::pg::unique_schema("agent_api");
    let store = SqlStore::connect_with(SqlStoreOptions::new(&url).schema(&schema))
        .await
        .expect("postgres store");
    let server = server(store.clone()).await;
    let agent = ApiClient::http(server.base.clone(), Some(AGENT.into())).expect("client");
    let reviewer = ApiClient::http(server.base.clone(), Some(REVIEWER.into())).expect("client");
    let action = approvals_core::ActionRequest::new("data.export", "db://prod/customers")
        .params(serde_json::json!({"rows": 5000}))
        .idempotency_key("pg-1");
    let submitted = agent.submit(&action).await.expect("submit");
    assert_eq!(submitted.status, SubmitStatus::Pending);
    let again = agent.submit(&action).await.expect("resubmit");
    assert_eq!(again.id, submitted.id, "the key re-attaches");
    let id = submitted.id;
    let waiter = {
        let agent = agent.clone();
        tokio::spawn(async move { agent.wait(id, Duration::from_secs(30)).await })
    };
    reviewer
        .decide(id, true, None, None)
        .await
        .expect("approve");
    let waited = waiter.await.expect("join").expect("wait");
    assert_eq!(waited.state, RequestState::Approved);
    let token = waited.grant_token.expect("token");
    agent.start_execution(id, &token).await.expect("start");
    let replay = agent.start_execution(id, &token).await.expect_err("replay");
    assert_eq!(replay.status().map(|s| s.as_u16()), Some(409));
    let done = agent.finish_execution(id, Ok(())).await.expect("finish");
    assert_eq!(done.state, RequestState::Executed);
    let stored = store.get(id).await.expect("store").expect("record");
    assert_eq!(stored.state, RequestState::Executed);
    assert_eq!(count(&server.audit, id, "grant_consumed"), 1);
    assert_eq!(count(&server.audit, id, "executed"), 1);
    approvals_testkit::pg::drop_schema(&url, &schema).await;
}
