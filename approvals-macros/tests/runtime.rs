//! `#[requires_approval]` at run time: a real gate, a reviewer deciding from another task.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use approvals_core::{
    EventDetail, Gate, GuardError, Initiator, MemorySink, Principal, RequestContext, RequestState,
    Requirement, Review, StaticPolicy, requires_approval,
};
use serde_json::json;

const SECRET: &str = "hunter2-do-not-show";

#[derive(Debug)]
enum ToolError {
    Refused(GuardError),
    Failed(String),
}

impl From<GuardError> for ToolError {
    fn from(e: GuardError) -> Self {
        ToolError::Refused(e)
    }
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ToolError::Refused(e) => write!(f, "refused: {e}"),
            ToolError::Failed(e) => write!(f, "failed: {e}"),
        }
    }
}

fn gate(sink: &Arc<MemorySink>) -> Gate {
    Gate::builder()
        .policy(StaticPolicy::require(Requirement::users(["sam"])))
        .audit_shared(sink.clone())
        .initiator(Initiator::agent("db-agent"))
        .build()
        .expect("gate")
}

/// Decides the next pending request as `sam`, after checking that the body has not run yet.
fn reviewer(gate: &Gate, approve: bool, runs: Arc<AtomicUsize>) -> tokio::task::JoinHandle<()> {
    let gate = gate.clone();
    tokio::spawn(async move {
        let record = loop {
            if let Some(record) = gate.pending().await.expect("pending").into_iter().next() {
                break record;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        assert_eq!(
            runs.load(Ordering::SeqCst),
            0,
            "the body ran before a decision"
        );
        let sam = Principal::human("sam");
        let review = if approve {
            Review::approve(sam)
        } else {
            Review::deny(sam).reason("not during the freeze")
        };
        gate.decide(record.id, review).await.expect("decide");
    })
}

struct Tools {
    gate: Gate,
    runs: Arc<AtomicUsize>,
    dropped: Vec<String>,
}

impl Tools {
    fn new(sink: &Arc<MemorySink>) -> Self {
        Tools {
            gate: gate(sink),
            runs: Arc::new(AtomicUsize::new(0)),
            dropped: Vec::new(),
        }
    }

    #[requires_approval(
        kind = "db.drop_table",
        resource = "db://{db}/{table}",
        skip(password),
        gate = self.gate,
        justification = why,
        context = RequestContext::environment("production"),
    )]
    async fn drop_table(
        &self,
        db: &str,
        table: String,
        password: String,
        why: Option<String>,
    ) -> Result<u64, ToolError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        assert_eq!(password, SECRET);
        if table == "missing" {
            return Err(ToolError::Failed(format!("no table {table} in {db}")));
        }
        let rows: u64 = "42"
            .parse()
            .map_err(|_| ToolError::Failed("parse".into()))?;
        Ok(rows)
    }

    #[requires_approval(kind = "db.forget", gate = self.gate.clone())]
    async fn forget(&mut self, table: String) -> Result<usize, GuardError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        self.dropped.push(table);
        Ok(self.dropped.len())
    }
}

fn executed(sink: &MemorySink) -> Vec<(bool, Option<String>)> {
    sink.events()
        .into_iter()
        .filter_map(|e| match e.detail {
            EventDetail::Executed { ok, error, .. } => Some((ok, error)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn approval_runs_the_body_once_with_the_arguments_as_parameters() {
    let sink = Arc::new(MemorySink::new());
    let tools = Tools::new(&sink);
    let review = reviewer(&tools.gate, true, tools.runs.clone());

    let rows = tools
        .drop_table(
            "analytics",
            "events".into(),
            SECRET.into(),
            Some("retention".into()),
        )
        .await
        .expect("approved");
    review.await.expect("reviewer");

    assert_eq!(rows, 42);
    assert_eq!(tools.runs.load(Ordering::SeqCst), 1);
    let records = tools
        .gate
        .store()
        .list(&Default::default())
        .await
        .expect("list");
    let [record] = records.as_slice() else {
        panic!("one request expected, got {records:?}")
    };
    assert_eq!(record.state, RequestState::Executed);
    let request = &record.request;
    assert_eq!(request.kind, "db.drop_table");
    assert_eq!(request.resource, "db://analytics/events");
    assert_eq!(
        *request.params,
        json!({"db": "analytics", "table": "events"})
    );
    assert_eq!(request.justification.as_deref(), Some("retention"));
    assert_eq!(request.context.environment.as_deref(), Some("production"));
    assert_eq!(executed(&sink), vec![(true, None)]);
    let names = sink.names();
    let consumed = names.iter().position(|n| *n == "grant_consumed");
    let ran = names.iter().position(|n| *n == "executed");
    assert!(consumed.is_some() && consumed < ran, "{names:?}");
}

#[tokio::test]
async fn denial_returns_the_error_and_never_runs_the_body() {
    let sink = Arc::new(MemorySink::new());
    let tools = Tools::new(&sink);
    let review = reviewer(&tools.gate, false, tools.runs.clone());

    let err = tools
        .drop_table("analytics", "events".into(), SECRET.into(), None)
        .await
        .expect_err("denied");
    review.await.expect("reviewer");

    match err {
        ToolError::Refused(GuardError::Denied { by, reason, .. }) => {
            assert_eq!(by, "sam");
            assert_eq!(reason.as_deref(), Some("not during the freeze"));
        }
        other => panic!("expected a denial, got {other:?}"),
    }
    assert_eq!(tools.runs.load(Ordering::SeqCst), 0);
    assert!(executed(&sink).is_empty());
    assert!(!sink.names().contains(&"grant_consumed"));
}

#[tokio::test]
async fn skipped_arguments_never_reach_the_request_or_the_audit_log() {
    let sink = Arc::new(MemorySink::new());
    let tools = Tools::new(&sink);
    let review = reviewer(&tools.gate, true, tools.runs.clone());
    tools
        .drop_table("analytics", "events".into(), SECRET.into(), None)
        .await
        .expect("approved");
    review.await.expect("reviewer");

    let audit = serde_json::to_string(&sink.events()).expect("json");
    assert!(audit.contains("analytics"), "the audit log has the request");
    assert!(
        !audit.contains(SECRET),
        "a skipped argument leaked: {audit}"
    );
    assert!(!audit.contains("password"), "{audit}");
    let records = tools
        .gate
        .store()
        .list(&Default::default())
        .await
        .expect("list");
    let stored = serde_json::to_string(&records[0]).expect("json");
    assert!(!stored.contains(SECRET) && !stored.contains("password"));
}

#[tokio::test]
async fn return_and_question_mark_end_the_body_and_failures_are_audited() {
    let sink = Arc::new(MemorySink::new());
    let tools = Tools::new(&sink);
    let review = reviewer(&tools.gate, true, tools.runs.clone());
    let err = tools
        .drop_table("analytics", "missing".into(), SECRET.into(), None)
        .await
        .expect_err("the body fails");
    review.await.expect("reviewer");

    assert!(matches!(&err, ToolError::Failed(m) if m == "no table missing in analytics"));
    assert_eq!(tools.runs.load(Ordering::SeqCst), 1);
    assert_eq!(
        executed(&sink),
        vec![(
            false,
            Some("failed: no table missing in analytics".to_owned())
        )]
    );
    let records = tools
        .gate
        .store()
        .list(&Default::default())
        .await
        .expect("list");
    assert_eq!(records[0].state, RequestState::Failed);
}

#[tokio::test]
async fn mut_self_methods_run_after_approval() {
    let sink = Arc::new(MemorySink::new());
    let mut tools = Tools::new(&sink);
    let review = reviewer(&tools.gate, true, tools.runs.clone());
    let n = tools.forget("events".into()).await.expect("approved");
    review.await.expect("reviewer");
    assert_eq!(n, 1);
    assert_eq!(tools.dropped, ["events"]);
    assert_eq!(&*sink.events()[0].kind, "db.forget");
}

#[requires_approval(kind = "kv.put", resource = "kv://{key}", skip(gate), gate = gate)]
async fn put<V>(gate: &Gate, key: &str, value: V) -> Result<String, GuardError>
where
    V: serde::Serialize + fmt::Display + Send + Sync,
{
    Ok(format!("{key}={value}"))
}

#[requires_approval(kind = "deploy.release", gate = gate, context = ctx, justification = why)]
async fn release(
    gate: Gate,
    version: &str,
    ctx: RequestContext,
    why: &str,
) -> Result<String, GuardError> {
    Ok(format!("released {version}"))
}

#[tokio::test]
async fn arguments_used_as_gate_context_or_justification_are_not_parameters() {
    let sink = Arc::new(MemorySink::new());
    let gate = gate(&sink);
    let review = reviewer(&gate, true, Arc::new(AtomicUsize::new(0)));
    let mut ctx = RequestContext::environment("staging");
    ctx.ticket = Some("CHG-42".into());
    let out = release(gate.clone(), "1.2.3", ctx.clone(), "hotfix")
        .await
        .expect("approved");
    review.await.expect("reviewer");
    assert_eq!(out, "released 1.2.3");
    let records = gate.store().list(&Default::default()).await.expect("list");
    let request = &records[0].request;
    assert_eq!(*request.params, json!({"version": "1.2.3"}));
    assert_eq!(*request.context, ctx);
    assert_eq!(request.justification.as_deref(), Some("hotfix"));
}

#[tokio::test]
async fn generic_functions_send_their_generic_arguments() {
    let sink = Arc::new(MemorySink::new());
    let gate = gate(&sink);
    let review = reviewer(&gate, true, Arc::new(AtomicUsize::new(0)));
    let out = put(&gate, "limit", 7u32).await.expect("approved");
    review.await.expect("reviewer");
    assert_eq!(out, "limit=7");
    let records = gate.store().list(&Default::default()).await.expect("list");
    assert_eq!(
        *records[0].request.params,
        json!({"key": "limit", "value": 7})
    );
    assert_eq!(records[0].request.resource, "kv://limit");
}

#[async_trait::async_trait]
trait Tool: Send + Sync {
    async fn call(&self, input: String) -> Result<String, GuardError>;
}

struct Echo {
    gate: Gate,
    runs: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl Tool for Echo {
    #[requires_approval(kind = "tool.echo", resource = "echo://{input}", gate = self.gate)]
    async fn call(&self, input: String) -> Result<String, GuardError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        Ok(input.to_uppercase())
    }
}

#[tokio::test]
async fn async_trait_methods_are_guarded() {
    let sink = Arc::new(MemorySink::new());
    let echo = Echo {
        gate: gate(&sink),
        runs: Arc::new(AtomicUsize::new(0)),
    };
    let review = reviewer(&echo.gate, true, echo.runs.clone());
    let tool: &dyn Tool = &echo;
    assert_eq!(tool.call("hi".into()).await.expect("approved"), "HI");
    review.await.expect("reviewer");
    assert_eq!(echo.runs.load(Ordering::SeqCst), 1);

    let review = reviewer(&echo.gate, false, Arc::new(AtomicUsize::new(0)));
    let err = tool.call("again".into()).await.expect_err("denied");
    review.await.expect("reviewer");
    assert!(matches!(err, GuardError::Denied { .. }), "{err}");
    assert_eq!(echo.runs.load(Ordering::SeqCst), 1);
    let records = echo
        .gate
        .store()
        .list(&Default::default())
        .await
        .expect("list");
    assert!(records.iter().all(|r| r.request.kind == "tool.echo"));
    assert!(
        records
            .iter()
            .any(|r| *r.request.params == json!({"input": "again"}))
    );
}

#[requires_approval(kind = "map.load", skip(runs), gate = gate)]
async fn load(
    gate: &Gate,
    runs: &AtomicUsize,
    map: HashMap<(u8, u8), u8>,
) -> Result<usize, GuardError> {
    runs.fetch_add(1, Ordering::SeqCst);
    Ok(map.len())
}

#[tokio::test]
async fn an_argument_that_fails_to_serialize_refuses_the_action() {
    let sink = Arc::new(MemorySink::new());
    let gate = gate(&sink);
    let runs = AtomicUsize::new(0);
    let err = load(&gate, &runs, HashMap::from([((1, 2), 3)]))
        .await
        .expect_err("cannot serialize");
    assert!(
        matches!(&err, GuardError::InvalidRequest(m) if m.contains("argument `map`")),
        "{err}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    assert!(sink.events().is_empty(), "nothing was requested");
}

#[tokio::test]
async fn the_future_is_send_and_can_be_spawned() {
    let sink = Arc::new(MemorySink::new());
    let tools = Arc::new(Tools::new(&sink));
    let review = reviewer(&tools.gate, true, tools.runs.clone());
    let task = {
        let tools = tools.clone();
        tokio::spawn(async move {
            tools
                .drop_table("a", "b".into(), SECRET.into(), None)
                .await
                .map_err(|e| e.to_string())
        })
    };
    assert_eq!(task.await.expect("join"), Ok(42));
    review.await.expect("reviewer");
}
