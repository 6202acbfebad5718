//! Crash and restart with real processes (issue 9), on SQLite and on PostgreSQL.
//!
//! An agent process runs a `Gate` on `SqlStore` (an SQLite file, or a fresh PostgreSQL schema)
//! with the store's hash-chained audit table, posts its requests to Slack (the loopback fake
//! that the parent runs and counts), and, once approved, runs an action whose side effect is
//! one line appended (O_APPEND) to a file the parent reads. The agent dies:
//!
//! - at a named point (`reliability::crash::CrashPoint`): before and after the insert, before
//!   and after the Slack post, inside the action body after the grant was consumed, and, in a
//!   reviewer process, after the approval was stored (before and after its audit) but before
//!   Slack was updated; the process aborts itself there;
//! - at random moments: the parent SIGKILLs it after a seeded random delay, once or twice,
//!   while a reviewer decides at a seeded random moment (approve by a signed Slack click, or
//!   deny through the gate).
//!
//! Then the parent restarts the agent, which re-attaches by idempotency key, and checks that
//! the side effect happened at most once per request, and exactly once when the request was
//! approved and the agent finished; that an acknowledged approval is never lost; that a request
//! killed during execution stays visibly `Executing` and never runs again; that the audit
//! chain verifies after every kill; and how many Slack messages were posted per request.
//!
//! Chat posts: exactly one per request. When the agent dies after Slack accepted the post but
//! before the store recorded it, Slack's `chat.postMessage` has no idempotency key; the
//! restarted agent's redelivery finds the earlier message by the request id in its metadata
//! (`conversations.history`) and records it instead of posting again.
//!
//! Child processes are this test binary re-run with `APPROVALS_CRASH_ROLE` set (`agent` or
//! `reviewer`); `child_process` below then plays that role instead of testing.
//!
//! Knobs: `APPROVALS_CRASH_SEEDS` sets how many seeds the random-kill tests run per backend
//! (default 5; for example `APPROVALS_CRASH_SEEDS=50` for a long local run), and
//! `APPROVALS_CRASH_SEED` the first seed (default 1), to replay a failing one. PostgreSQL runs
//! when `APPROVALS_TEST_POSTGRES_URL` is set (loud skip without it, failure with `CI=true`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use approvals_core::{
    Gate, GuardError, Initiator, Principal, RequestId, RequestRecord, RequestState, Requirement,
    Review, StaticIdentityResolver, StaticPolicy, Submission,
};
use approvals_reliability::crash::{
    ChildProcess, CrashPoint, CrashingApprover, CrashingStore, SeededRng, crash,
};
use approvals_slack::fake::{self, Clicker, FakeSlack};
use approvals_slack::{SigningSecret, SlackApprover, SlackClient, SlackInteractions, Token};
use approvals_store_sql::{SqlStore, SqlStoreOptions};
use approvals_testkit::fixtures::{export_request, reviewer};
use approvals_testkit::pg;
use serde_json::Value;

const ROLE: &str = "APPROVALS_CRASH_ROLE";
const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
/// The Slack user who reviews, mapped to a `data-owners` member.
const SAM: &str = "U0SAM00001";
/// How long a restarted waiter lets an approval stay unaudited before recording it itself.
const RECOVERY: Duration = Duration::from_secs(1);

fn policy() -> StaticPolicy {
    StaticPolicy::require(Requirement::groups(["data-owners"]))
}

fn initiator() -> Initiator {
    Initiator::agent("billing-agent").on_behalf_of(Principal::human("dana@example.com"))
}

fn sam() -> Principal {
    reviewer("sam@example.com")
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}

async fn open_store(url: &str, schema: Option<&str>) -> SqlStore {
    let mut options = SqlStoreOptions::new(url).acquire_timeout(Duration::from_secs(20));
    if let Some(schema) = schema {
        options = options.schema(schema);
    }
    SqlStore::connect_with(options)
        .await
        .unwrap_or_else(|e| panic!("open the store at {url}: {e}"))
}

fn slack_approver(api_base: &str) -> SlackApprover {
    let client = SlackClient::new(Token::new(fake::BOT_TOKEN))
        .and_then(|c| c.with_base_url(api_base))
        .unwrap_or_else(|e| panic!("Slack client for {api_base}: {e}"));
    SlackApprover::new(client, fake::CONVERSATION)
}

// ----------------------------------------------------------------------------------------
// The child processes.

/// Entry point of the child processes; a no-op in a normal test run.
#[test]
fn child_process() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        match role.as_str() {
            "agent" => agent().await,
            "reviewer" => reviewer_process().await,
            other => println!("ERROR unknown role {other:?}"),
        }
        // Linger until the parent closes stdin: background chat updates still get sent.
        let _ = tokio::io::copy(&mut tokio::io::stdin(), &mut tokio::io::sink()).await;
    });
}

/// The agent's gate, with the crash point of this process (if any) on its store and channel.
async fn child_gate(point: Option<CrashPoint>) -> Gate {
    let schema = env("CRASH_SCHEMA");
    let store = open_store(
        &env("CRASH_DB"),
        (!schema.is_empty()).then_some(schema.as_str()),
    )
    .await;
    Gate::builder()
        .policy(policy())
        .audit(store.audit_sink())
        .store(CrashingStore::new(store, point))
        .approver(CrashingApprover::new(
            slack_approver(&env("CRASH_SLACK")),
            point,
        ))
        .initiator(initiator())
        .poll_interval(Duration::from_millis(100))
        .audit_recovery_after(RECOVERY)
        .store_timeout(Duration::from_secs(20))
        .build()
        .expect("gate")
}

/// Submits (or re-attaches to) the export with key `CRASH_KEY`, waits for the decision and
/// runs the action. Prints `PENDING <id>`, then `RAN`, `DENIED`, `REFUSED <state>` or
/// `ERROR ...`.
async fn agent() {
    let point = CrashPoint::from_env();
    let gate = child_gate(point).await;
    let action = export_request().idempotency_key(env("CRASH_KEY"));
    let id = match gate.submit(&action).await {
        Ok(Submission::Pending(id)) => id,
        other => {
            println!("ERROR submit: {other:?}");
            return;
        }
    };
    println!("PENDING {id}");
    let effects = PathBuf::from(env("CRASH_EFFECTS"));
    let outcome = match gate.wait(id).await {
        Ok(grant) => {
            let ran = gate
                .execute(grant, &action, || side_effect(id, &effects, point))
                .await;
            match ran {
                Ok(()) => "RAN".to_owned(),
                Err(e) => format!("ERROR execute: {e}"),
            }
        }
        Err(GuardError::Denied { .. }) => "DENIED".to_owned(),
        Err(GuardError::GrantUsed { state, .. }) => format!("REFUSED {state}"),
        Err(e) => format!("ERROR wait: {e}"),
    };
    println!("{outcome}");
}

/// The action: some work, one line `<request id> <pid>` appended to the effects file and
/// synced, more work. Dies after the line at `DuringExecution`.
async fn side_effect(
    id: RequestId,
    effects: &Path,
    point: Option<CrashPoint>,
) -> Result<(), ActionError> {
    use std::io::Write;
    tokio::time::sleep(Duration::from_millis(40)).await;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(effects)?;
    file.write_all(format!("{id} {}\n", std::process::id()).as_bytes())?;
    file.sync_data()?;
    if point == Some(CrashPoint::DuringExecution) {
        crash(CrashPoint::DuringExecution);
    }
    tokio::time::sleep(Duration::from_millis(40)).await;
    Ok(())
}

/// Why the action failed.
#[derive(Debug)]
enum ActionError {
    Gate(GuardError),
    Io(std::io::Error),
}

impl From<GuardError> for ActionError {
    fn from(e: GuardError) -> Self {
        ActionError::Gate(e)
    }
}

impl From<std::io::Error> for ActionError {
    fn from(e: std::io::Error) -> Self {
        ActionError::Io(e)
    }
}

impl std::fmt::Display for ActionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ActionError::Gate(e) => write!(f, "{e}"),
            ActionError::Io(e) => write!(f, "could not write the side effect: {e}"),
        }
    }
}

/// A reviewer's process: approves `CRASH_REQUEST` through its own gate (with the Slack
/// channel, so it would update the message), dying at its crash point.
async fn reviewer_process() {
    let gate = child_gate(CrashPoint::from_env()).await;
    let Ok(id) = RequestId::parse(&env("CRASH_REQUEST")) else {
        println!("ERROR CRASH_REQUEST is not a request id");
        return;
    };
    match gate.decide(id, Review::approve(sam()).via("slack")).await {
        Ok(outcome) => println!("DECIDED {}", outcome.state),
        Err(e) => println!("ERROR decide: {e}"),
    }
}

// ----------------------------------------------------------------------------------------
// The parent: one database, one fake Slack, the reviewers' gate and Slack handler.

struct Rig {
    /// `sqlite` or `postgres`, for messages.
    backend: &'static str,
    url: String,
    schema: Option<String>,
    dir: tempfile::TempDir,
    store: SqlStore,
    fake: FakeSlack,
    gate: Gate,
    interactions: SlackInteractions,
    secret: SigningSecret,
}

impl Rig {
    async fn sqlite() -> Rig {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("approvals.db").display());
        Rig::start("sqlite", url, None, dir).await
    }

    async fn postgres(url: &str) -> Rig {
        let dir = tempfile::tempdir().expect("temp dir");
        Rig::start(
            "postgres",
            url.to_owned(),
            Some(pg::unique_schema("crash")),
            dir,
        )
        .await
    }

    async fn start(
        backend: &'static str,
        url: String,
        schema: Option<String>,
        dir: tempfile::TempDir,
    ) -> Rig {
        let store = open_store(&url, schema.as_deref()).await;
        let fake = FakeSlack::start().await.expect("fake Slack");
        let approver = SlackApprover::new(fake.client(), fake::CONVERSATION);
        let gate = Gate::builder()
            .policy(policy())
            .store(store.clone())
            .audit(store.audit_sink())
            .approver(approver.clone())
            .initiator(initiator())
            .store_timeout(Duration::from_secs(20))
            .build()
            .expect("gate");
        let secret = SigningSecret::new(SIGNING_SECRET).expect("signing secret");
        let interactions = SlackInteractions::builder(gate.clone(), fake.client(), secret.clone())
            .team_id(fake::TEAM_ID)
            .app_id(fake::APP_ID)
            .identities(StaticIdentityResolver::new().map("slack", SAM, sam()))
            .approver(approver)
            .build()
            .expect("Slack interactions");
        Rig {
            backend,
            url,
            schema,
            dir,
            store,
            fake,
            gate,
            interactions,
            secret,
        }
    }

    fn effects_path(&self) -> PathBuf {
        self.dir.path().join("effects.log")
    }

    fn vars(&self, point: Option<CrashPoint>) -> Vec<(String, String)> {
        let mut vars = vec![
            ("CRASH_DB".to_owned(), self.url.clone()),
            ("CRASH_SLACK".to_owned(), self.fake.api_base()),
            (
                "CRASH_EFFECTS".to_owned(),
                self.effects_path().display().to_string(),
            ),
            (
                approvals_reliability::crash::CRASH_AT_ENV.to_owned(),
                point.map_or("", CrashPoint::name).to_owned(),
            ),
        ];
        if let Some(schema) = &self.schema {
            vars.push(("CRASH_SCHEMA".to_owned(), schema.clone()));
        }
        vars
    }

    fn agent(&self, key: &str, point: Option<CrashPoint>) -> ChildProcess {
        let mut vars = self.vars(point);
        vars.push(("CRASH_KEY".to_owned(), key.to_owned()));
        ChildProcess::spawn("child_process", ROLE, "agent", &vars)
    }

    fn reviewer(&self, id: RequestId, point: Option<CrashPoint>) -> ChildProcess {
        let mut vars = self.vars(point);
        vars.push(("CRASH_REQUEST".to_owned(), id.to_string()));
        ChildProcess::spawn("child_process", ROLE, "reviewer", &vars)
    }

    async fn record(&self, id: RequestId) -> RequestRecord {
        self.gate
            .get(id)
            .await
            .expect("read the store")
            .unwrap_or_else(|| panic!("request {id} is not stored"))
    }

    async fn by_key(&self, key: &str) -> Option<RequestRecord> {
        approvals_core::Store::get_by_idempotency_key(&self.store, key)
            .await
            .expect("read the store")
    }

    /// Times the side effect of `id` happened.
    fn effects(&self, id: RequestId) -> usize {
        std::fs::read_to_string(self.effects_path())
            .map(|s| s.lines().filter(|l| l.starts_with(&id.to_string())).count())
            .unwrap_or(0)
    }

    /// Slack messages posted for `id` (`chat.postMessage` calls, not updates).
    fn posts(&self, id: RequestId) -> usize {
        let id = id.to_string();
        self.fake
            .calls_to("chat.postMessage")
            .iter()
            .filter(|c| c.body.to_string().contains(&id))
            .count()
    }

    /// The current content of the Slack messages about `id`, oldest first.
    fn messages(&self, id: RequestId) -> Vec<Value> {
        let id = id.to_string();
        self.fake
            .messages()
            .into_iter()
            .filter(|m| m.to_string().contains(&id))
            .collect()
    }

    /// Sam clicks Approve on the newest Slack message of `id` (a signed interaction, as Slack
    /// sends it), and the parent waits until the store shows the request decided.
    async fn approve_in_slack(&self, id: RequestId) {
        let message = self
            .messages(id)
            .pop()
            .unwrap_or_else(|| panic!("no Slack message for {id} to click"));
        let ts = message["ts"].as_str().unwrap_or_default().to_owned();
        let value = approve_button(&message)
            .unwrap_or_else(|| panic!("no Approve button on the message for {id}: {message}"));
        let payload = Clicker::new(SAM).block_actions(
            approvals_slack::blocks::ACTION_APPROVE,
            &value,
            &ts,
            &self.fake.response_url(&format!("click-{id}")),
        );
        let response = self.interactions.handle(fake::signed_request(
            &self.secret,
            fake::now(),
            fake::form_body(&payload),
        ));
        assert_eq!(response.status(), 200, "Slack click refused");
        self.until(id, "the click is applied", |r| {
            r.state != RequestState::Pending
        })
        .await;
    }

    /// Polls the store until `cond` holds for `id` (bounded by 60 s).
    async fn until(
        &self,
        id: RequestId,
        what: &str,
        cond: impl Fn(&RequestRecord) -> bool,
    ) -> RequestRecord {
        for _ in 0..3000 {
            let record = self.record(id).await;
            if cond(&record) {
                return record;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("timed out waiting until {what} for {id}");
    }

    /// Polls the fake until every Slack message of `id` satisfies `cond` (bounded by 60 s).
    async fn until_messages(&self, id: RequestId, what: &str, cond: impl Fn(&Value) -> bool) {
        for _ in 0..3000 {
            let messages = self.messages(id);
            if !messages.is_empty() && messages.iter().all(&cond) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "timed out waiting until {what}; Slack shows {:?}",
            self.messages(id)
        );
    }

    /// The audit chain verifies, and names `id`'s approval and execution.
    async fn audit_intact(&self, id: RequestId) -> Vec<String> {
        let sink = self.store.audit_sink();
        sink.check_unsigned()
            .await
            .unwrap_or_else(|e| panic!("audit chain broken after the crashes: {e}"));
        sink.events_for(id)
            .await
            .expect("read audit events")
            .iter()
            .filter_map(|e| {
                serde_json::to_value(e).ok()?["event"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect()
    }

    async fn finish(self) {
        self.store.close().await;
        if let Some(schema) = &self.schema {
            pg::drop_schema(&self.url, schema).await;
        }
    }
}

fn approve_button(message: &Value) -> Option<String> {
    message["blocks"].as_array()?.iter().find_map(|b| {
        b["elements"].as_array()?.iter().find_map(|e| {
            (e["action_id"] == approvals_slack::blocks::ACTION_APPROVE)
                .then(|| e["value"].as_str().unwrap_or_default().to_owned())
        })
    })
}

fn pending_id(line: &str) -> RequestId {
    RequestId::parse(line.trim_start_matches("PENDING ").trim())
        .unwrap_or_else(|e| panic!("bad PENDING line {line:?}: {e}"))
}

// ----------------------------------------------------------------------------------------
// Named crash points.

/// The agent dies at `point` while submitting; a restarted agent re-attaches (or submits anew
/// when nothing was stored), Sam approves in Slack, and the action runs once.
async fn agent_dies_while_submitting(rig: &Rig, point: CrashPoint) {
    let key = format!("submit-{}", point.name());
    let first = {
        let mut agent = rig.agent(&key, Some(point));
        agent.expect(&["CRASH "]).await;
        assert_eq!(agent.exit().await, None, "{point:?}: the agent aborted");
        rig.by_key(&key).await
    };
    match point {
        CrashPoint::BeforePersist => assert!(first.is_none(), "nothing stored before persist"),
        _ => assert_eq!(
            first.as_ref().map(|r| r.state),
            Some(RequestState::Pending),
            "{point:?}: the request outlived its process"
        ),
    }

    let mut agent = rig.agent(&key, None);
    let id = pending_id(&agent.expect(&["PENDING "]).await);
    if let Some(first) = &first {
        assert_eq!(id, first.id, "{point:?}: the restart re-attached by key");
    }
    // The restarted agent's delivery is recorded before it reports the request pending.
    let record = rig.record(id).await;
    let recorded = SlackApprover::messages(&record);
    assert_eq!(
        recorded.len(),
        1,
        "{point:?}: one Slack message recorded: {record:?}"
    );
    assert_eq!(
        rig.posts(id),
        1,
        "{point:?}: one Slack message posted, however the agent died"
    );

    rig.approve_in_slack(id).await;
    assert_eq!(agent.expect(&["RAN", "ERROR"]).await, "RAN", "{point:?}");
    let done = rig
        .until(id, "the execution is recorded", |r| {
            r.state == RequestState::Executed
        })
        .await;
    assert_eq!(rig.effects(id), 1, "{point:?}: the action ran exactly once");
    assert_eq!(done.reviews.len(), 1);
    agent.close_stdin();
    assert_eq!(agent.exit().await, Some(0));
    assert_eq!(rig.posts(id), 1, "{point:?}: no later posts");
    let events = rig.audit_intact(id).await;
    for event in ["requested", "approved", "grant_consumed", "executed"] {
        assert!(
            events.iter().any(|e| e == event),
            "{point:?}: {event} audited: {events:?}"
        );
    }
}

/// The agent dies inside the action body after the grant was consumed: the request stays
/// `Executing`, and a restarted agent is refused instead of running it again.
async fn agent_dies_during_execution(rig: &Rig) {
    let point = CrashPoint::DuringExecution;
    let key = "execution";
    let mut agent = rig.agent(key, Some(point));
    let id = pending_id(&agent.expect(&["PENDING "]).await);
    rig.approve_in_slack(id).await;
    agent.expect(&["CRASH "]).await;
    assert_eq!(agent.exit().await, None, "the agent aborted in the body");
    assert_eq!(rig.effects(id), 1);
    assert_eq!(rig.record(id).await.state, RequestState::Executing);

    let mut again = rig.agent(key, None);
    assert_eq!(pending_id(&again.expect(&["PENDING "]).await), id);
    assert_eq!(
        again.expect(&["RAN", "REFUSED", "DENIED", "ERROR"]).await,
        "REFUSED executing",
        "a consumed grant is never used again"
    );
    again.close_stdin();
    assert_eq!(again.exit().await, Some(0));
    let record = rig.record(id).await;
    assert_eq!(record.state, RequestState::Executing, "visibly interrupted");
    assert!(record.execution.is_some_and(|e| e.finished_at.is_none()));
    assert_eq!(rig.effects(id), 1, "never ran again");
    assert_eq!(rig.posts(id), 1);
    let events = rig.audit_intact(id).await;
    // The audit trail shows the one consumption and no outcome: the run was interrupted.
    let count = |name: &str| events.iter().filter(|e| *e == name).count();
    assert_eq!(count("grant_consumed"), 1, "{events:?}");
    assert_eq!(count("executed"), 0, "{events:?}");
}

/// A reviewer's process dies inside `decide` at `point`; the waiting agent still gets the
/// approval (recording its audit event itself when the reviewer died before doing so), runs
/// the action once, and brings the Slack message up to date.
async fn reviewer_dies_while_deciding(rig: &Rig, point: CrashPoint) {
    let key = format!("decide-{}", point.name());
    let mut agent = rig.agent(&key, None);
    let id = pending_id(&agent.expect(&["PENDING "]).await);
    let mut reviewer = rig.reviewer(id, Some(point));
    reviewer.expect(&["CRASH "]).await;
    assert_eq!(
        reviewer.exit().await,
        None,
        "{point:?}: the reviewer aborted"
    );
    let stored = rig.record(id).await;
    assert!(
        matches!(
            stored.state,
            RequestState::Approved | RequestState::Executing | RequestState::Executed
        ),
        "{point:?}: the approval was stored: {stored:?}"
    );

    assert_eq!(agent.expect(&["RAN", "ERROR"]).await, "RAN", "{point:?}");
    rig.until(id, "the execution is recorded", |r| {
        r.state == RequestState::Executed
    })
    .await;
    rig.until_messages(id, "Slack shows the outcome", |m| {
        m.to_string().contains("executed* successfully")
    })
    .await;
    agent.close_stdin();
    assert_eq!(agent.exit().await, Some(0));
    assert_eq!(rig.effects(id), 1, "{point:?}: ran exactly once");
    assert_eq!(rig.posts(id), 1, "{point:?}: one Slack message");
    let events = rig.audit_intact(id).await;
    let approved = events.iter().filter(|e| *e == "approved").count();
    assert!(
        approved >= 1,
        "{point:?}: the approval is in the audit trail: {events:?}"
    );
}

async fn every_crash_point(rig: &Rig) {
    for point in [
        CrashPoint::BeforePersist,
        CrashPoint::AfterPersist,
        CrashPoint::BeforeDispatch,
        CrashPoint::AfterDispatch,
    ] {
        agent_dies_while_submitting(rig, point).await;
    }
    agent_dies_during_execution(rig).await;
    for point in [CrashPoint::AfterApprovalPersisted, CrashPoint::AfterDecide] {
        reviewer_dies_while_deciding(rig, point).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_agents_and_reviewers_killed_at_every_crash_point() {
    let rig = Rig::sqlite().await;
    every_crash_point(&rig).await;
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_agents_and_reviewers_killed_at_every_crash_point() {
    let Some(url) = pg::postgres_url("postgres_agents_and_reviewers_killed_at_every_crash_point")
    else {
        return;
    };
    let rig = Rig::postgres(&url).await;
    every_crash_point(&rig).await;
    rig.finish().await;
}

// ----------------------------------------------------------------------------------------
// Random SIGKILLs.

/// What the reviewer did in a random run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decided {
    /// Approved in Slack, and the store showed it.
    ApprovedInSlack,
    /// Approved through the gate (no Slack message existed yet), acknowledged.
    ApprovedByApi,
    /// Denied through the gate, acknowledged.
    Denied,
}

/// Waits until the request with `key` is pending, then, after a random delay, approves it
/// (a Slack click when a message exists, else through the gate) or denies it.
async fn decide_when_pending(rig: &Rig, key: &str, delay: Duration, approve: bool) -> Decided {
    let record = loop {
        if let Some(record) = rig.by_key(key).await {
            break record;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::sleep(delay).await;
    let id = record.id;
    if !approve {
        let outcome = rig
            .gate
            .decide(id, Review::deny(sam()).reason("not during the freeze"))
            .await
            .expect("deny");
        assert_eq!(outcome.state, RequestState::Denied);
        return Decided::Denied;
    }
    if rig.messages(id).is_empty() {
        let outcome = rig
            .gate
            .decide(id, Review::approve(sam()))
            .await
            .expect("approve");
        assert_eq!(outcome.state, RequestState::Approved);
        Decided::ApprovedByApi
    } else {
        rig.approve_in_slack(id).await;
        Decided::ApprovedInSlack
    }
}

/// Kills land this long after an agent starts, at most: an agent takes about 0.1 to 0.3 s
/// from start to the end of its action on an idle machine, longer when loaded, so kills fall
/// before, during and after each step.
const KILL_WINDOW: Duration = Duration::from_millis(500);

/// One seeded run: the agent is SIGKILLed once or twice at random moments and restarted,
/// while the reviewer decides at a random moment; a last agent runs undisturbed.
async fn random_kills(rig: &Rig, seed: u64) {
    let mut rng = SeededRng::new(seed);
    let key = format!("random-{seed}");
    let kills = 1 + rng.below(2);
    let approve = rng.chance(75);
    let decide_delay = rng.millis(Duration::from_millis(150));
    let kill_delays: Vec<Duration> = (0..kills).map(|_| rng.millis(KILL_WINDOW)).collect();

    let agents = async {
        for delay in &kill_delays {
            let agent = rig.agent(&key, None);
            tokio::time::sleep(*delay).await;
            agent.kill().await;
        }
        let mut last = rig.agent(&key, None);
        let id = pending_id(&last.expect(&["PENDING "]).await);
        let outcome = last.expect(&["RAN", "REFUSED", "DENIED", "ERROR"]).await;
        (id, outcome, last)
    };
    let (decided, (id, outcome, last)) = tokio::join!(
        decide_when_pending(rig, &key, decide_delay, approve),
        agents
    );
    let context = format!(
        "{} seed {seed} (kills after {kill_delays:?}, decided {decided:?} after {decide_delay:?}): agent said {outcome:?}",
        rig.backend
    );
    let record = if outcome == "RAN" {
        rig.until(id, "the execution is recorded", |r| {
            r.state == RequestState::Executed
        })
        .await
    } else {
        rig.record(id).await
    };
    let effects = rig.effects(id);
    assert!(effects <= 1, "{context}: ran {effects} times");
    match record.state {
        RequestState::Executed => {
            assert_eq!(effects, 1, "{context}: executed exactly once");
            assert!(
                outcome == "RAN" || outcome == "REFUSED executed",
                "{context}"
            );
        }
        RequestState::Executing => {
            // Killed inside the action: never run again.
            assert_eq!(outcome, "REFUSED executing", "{context}");
        }
        RequestState::Denied => {
            assert_eq!(effects, 0, "{context}");
            assert_eq!(outcome, "DENIED", "{context}");
        }
        other => panic!("{context}: ended {other}"),
    }
    match decided {
        Decided::Denied => assert_eq!(record.state, RequestState::Denied, "{context}"),
        // An acknowledged approval is never lost.
        _ => assert!(
            matches!(
                record.state,
                RequestState::Executed | RequestState::Executing
            ),
            "{context}"
        ),
    }
    // At most one Slack message per request, however often the agent was killed (a
    // redelivery finds a message posted just before a kill). A request decided before any
    // message went out may have none.
    let posts = rig.posts(id);
    let recorded = SlackApprover::messages(&record).len();
    assert!(recorded <= 1, "{context}: {recorded} messages recorded");
    assert!(
        posts >= recorded && posts <= 1,
        "{context}: {posts} Slack posts, {recorded} recorded"
    );
    if decided == Decided::ApprovedInSlack {
        assert!(posts >= 1, "{context}");
    }
    println!(
        "{context}: ended {}, side effect x{effects}, {posts} Slack post(s)",
        record.state
    );
    rig.audit_intact(id).await;
    drop(last);
}

fn seeds() -> Vec<u64> {
    let count: u64 = env("APPROVALS_CRASH_SEEDS").parse().unwrap_or(5);
    let first: u64 = env("APPROVALS_CRASH_SEED").parse().unwrap_or(1);
    (first..first + count).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_agents_sigkilled_at_random_moments() {
    let rig = Rig::sqlite().await;
    for seed in seeds() {
        random_kills(&rig, seed).await;
    }
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_agents_sigkilled_at_random_moments() {
    let Some(url) = pg::postgres_url("postgres_agents_sigkilled_at_random_moments") else {
        return;
    };
    let rig = Rig::postgres(&url).await;
    for seed in seeds() {
        random_kills(&rig, seed).await;
    }
    rig.finish().await;
}
