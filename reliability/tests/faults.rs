//! Fault injection through a real `Gate`: a property test over failure schedules.
//!
//! Each case draws a scenario (quorum, reviewers and their verdicts, a cancel, a sweep) and a
//! fault plan for the store, the audit sink and the review channel (fail, 429/5xx, hang, slow,
//! fail-after-commit on chosen call numbers; see `approvals_testkit::faults`). The scenario
//! runs through one gate over the faulty components: the agent submits (retrying with its
//! idempotency key), reviewers `decide`, the agent `wait`s and `execute`s (retrying as an agent
//! would) unless its process is gone, and sweeps run. After every case:
//!
//! - an action body ran ⇒ the reliable audit record (a `MemorySink` beneath the faulty
//!   wrapper, holding only appends that succeeded) has an `approved` event naming at least
//!   quorum distinct authorized humans, before the request's `grant_consumed`;
//! - no body ran twice, and a body ran only for a request the store shows as consumed;
//! - every `decide()` or `cancel()` that returned `Ok` is visible through a fresh gate over
//!   the same store (for SQLite, the file reopened by a new `SqlStore`);
//! - after that fresh gate's fault-free sweep past the audit recovery delay, every denied or
//!   approved request in the store has its `denied` or `approved` event in the audit trail,
//!   and none is still flagged `audit_pending`;
//! - every gate call returned within a bound derived from the store timeout.
//!
//! The in-memory cases run on tokio's paused clock, so hangs cost no real time; the SQLite
//! cases run in real time with a short store timeout. Case counts: 48 in memory and 6 on
//! SQLite by default; `PROPTEST_CASES=N` runs N in memory and N/8 (at least 2) on SQLite, for
//! example `PROPTEST_CASES=2000 cargo test -p approvals-reliability --test faults --release`.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use approvals_core::{
    ActionRequest, Approver, ApproverError, Decisions, Delivery, DispatchReason, EventDetail, Gate,
    GuardError, Initiator, ManualClock, MemorySink, MemoryStore, Principal, PrincipalKind,
    RequestId, RequestRecord, RequestState, Requirement, Review, ReviewError, StaticPolicy, Store,
    Submission, Verdict,
};
use approvals_store_sql::SqlStore;
use approvals_testkit::faults::{Fault, FaultPlan, FaultyApprover, FaultyAudit, FaultyStore, Op};
use approvals_testkit::fixtures::epoch;
use async_trait::async_trait;
use chrono::TimeDelta;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

const GROUP: &str = "ops";

/// Who reviews: authorized people (one under a second spelling), and people the gate must
/// refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Alice,
    /// Alice again, spelled differently: must count once.
    AliceShouting,
    Bob,
    Carol,
    /// Not in the approving group.
    Mallory,
    /// The human the agent acts for (in the group, but never allowed).
    Dana,
    /// An agent.
    Bot,
}

impl Who {
    fn principal(self) -> Principal {
        match self {
            Who::Alice => Principal::human("alice@example.com").with_groups([GROUP]),
            Who::AliceShouting => Principal::human(" ALICE@Example.com").with_groups([GROUP]),
            Who::Bob => Principal::human("bob@example.com").with_groups([GROUP]),
            Who::Carol => Principal::human("carol@example.com").with_groups([GROUP]),
            Who::Mallory => Principal::human("mallory@example.com").with_groups(["sales"]),
            Who::Dana => Principal::human("dana@example.com").with_groups([GROUP]),
            Who::Bot => Principal::agent("helper-bot").with_groups([GROUP]),
        }
    }
}

fn initiator() -> Initiator {
    Initiator::agent("deploy-agent").on_behalf_of(Principal::human("dana@example.com"))
}

/// Whether `p` may count toward a quorum of the scenario's requests.
fn authorized(p: &Principal) -> bool {
    p.kind == PrincipalKind::Human && p.in_group(GROUP) && !initiator().is_self(p)
}

fn distinct_authorized(approvers: &[Principal]) -> usize {
    let mut seen: Vec<&Principal> = Vec::new();
    for p in approvers.iter().filter(|p| authorized(p)) {
        if !seen.iter().any(|s| s.same_identity(p)) {
            seen.push(p);
        }
    }
    seen.len()
}

/// One property-test case: the scenario and the faults.
#[derive(Clone)]
struct Case {
    quorum: u32,
    reviews: Vec<(Who, Verdict)>,
    cancel_before_reviews: bool,
    sweep_after_reviews: bool,
    /// The agent's process is gone after submitting: nobody waits, only sweeps run.
    agent_gone: bool,
    store: FaultPlan,
    audit: FaultPlan,
    approver: FaultPlan,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "quorum {}; reviews {:?}", self.quorum, self.reviews)?;
        writeln!(
            f,
            "cancel before reviews: {}; sweep after reviews: {}; agent gone: {}",
            self.cancel_before_reviews, self.sweep_after_reviews, self.agent_gone
        )?;
        writeln!(f, "store faults:    {}", self.store)?;
        writeln!(f, "audit faults:    {}", self.audit)?;
        write!(f, "approver faults: {}", self.approver)
    }
}

fn who() -> impl Strategy<Value = Who> {
    prop_oneof![
        4 => Just(Who::Alice),
        2 => Just(Who::AliceShouting),
        4 => Just(Who::Bob),
        3 => Just(Who::Carol),
        1 => Just(Who::Mallory),
        1 => Just(Who::Dana),
        1 => Just(Who::Bot),
    ]
}

fn verdict() -> impl Strategy<Value = Verdict> {
    prop_oneof![5 => Just(Verdict::Approve), 1 => Just(Verdict::Deny)]
}

/// Builds a plan from (op, call number, fault) triples.
fn plan(ops: &'static [Op], max_call: u64, faults: Vec<Fault>) -> impl Strategy<Value = FaultPlan> {
    prop::collection::vec(
        (
            prop::sample::select(ops),
            1..=max_call,
            prop::sample::select(faults),
        ),
        0..4,
    )
    .prop_map(|entries| {
        entries
            .into_iter()
            .fold(FaultPlan::new(), |plan, (op, n, fault)| {
                plan.on(op, n, fault)
            })
    })
}

fn case(store_timeout: Duration) -> impl Strategy<Value = Case> {
    let short = Duration::from_millis(5);
    let past_timeout = store_timeout * 2;
    let store_faults = vec![
        Fault::Fail,
        Fault::Hang,
        Fault::Slow(short),
        Fault::Slow(past_timeout),
        Fault::FailAfterCommit,
    ];
    let audit_faults = vec![
        Fault::Fail,
        Fault::Hang,
        Fault::FailAfterCommit,
        Fault::Slow(short),
    ];
    let approver_faults = vec![
        Fault::RateLimited {
            retry_after_secs: 30,
        },
        Fault::ServerError { status: 503 },
        Fault::ServerError { status: 500 },
        Fault::Fail,
        Fault::FailAfterCommit,
        Fault::Slow(short),
        Fault::Slow(past_timeout),
    ];
    (
        1u32..=2,
        prop::collection::vec((who(), verdict()), 0..6),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.3),
        prop::bool::weighted(0.2),
        plan(&Op::STORE, 8, store_faults),
        plan(&Op::AUDIT, 16, audit_faults),
        plan(&Op::APPROVER, 3, approver_faults),
    )
        .prop_map(
            |(
                quorum,
                reviews,
                cancel_before_reviews,
                sweep_after_reviews,
                agent_gone,
                store,
                audit,
                approver,
            )| {
                Case {
                    quorum,
                    reviews,
                    cancel_before_reviews,
                    sweep_after_reviews,
                    agent_gone,
                    store,
                    audit,
                    approver,
                }
            },
        )
}

/// A review channel that accepts every delivery (the faulty wrapper makes it fail).
struct Chat;

#[async_trait]
impl Approver for Chat {
    fn name(&self) -> &str {
        "chat"
    }
    async fn dispatch(
        &self,
        request: &RequestRecord,
        _: DispatchReason,
        _: Arc<dyn Decisions>,
    ) -> Result<Option<Delivery>, ApproverError> {
        Ok(Some(Delivery {
            channel: "chat".into(),
            reference: serde_json::json!({ "message": request.id.to_string() }),
        }))
    }
}

/// Where the case's requests live, and how to "restart" onto it.
enum Backend {
    Memory(Arc<MemoryStore>),
    Sqlite { url: String, store: SqlStore },
}

impl Backend {
    fn store(&self) -> Arc<dyn Store> {
        match self {
            Backend::Memory(store) => store.clone(),
            Backend::Sqlite { store, .. } => Arc::new(store.clone()),
        }
    }

    /// The store as a restarted process sees it.
    async fn restarted(&self) -> Result<Arc<dyn Store>, String> {
        match self {
            Backend::Memory(store) => Ok(store.clone()),
            Backend::Sqlite { url, store } => {
                store.close().await;
                let reopened = SqlStore::connect(url)
                    .await
                    .map_err(|e| format!("reopening {url}: {e}"))?;
                Ok(Arc::new(reopened))
            }
        }
    }
}

/// What the scenario observed, for the checks.
#[derive(Default)]
struct Observed {
    /// Request ids the agent learned.
    ids: Vec<RequestId>,
    /// Reviews `decide()` accepted.
    accepted: Vec<(RequestId, Principal, Verdict)>,
    /// Requests `cancel()` cancelled.
    cancelled: Vec<RequestId>,
    /// How often each body ran.
    runs: HashMap<RequestId, Arc<AtomicU32>>,
}

/// What the cases exercised, printed after the run so a reader can see the property is not
/// vacuous.
#[derive(Default)]
struct Stats {
    cases: AtomicU32,
    executed: AtomicU32,
    accepted_reviews: AtomicU32,
    faults_injected: AtomicU32,
}

impl Stats {
    fn print(&self, what: &str) -> u32 {
        let executed = self.executed.load(Ordering::SeqCst);
        eprintln!(
            "{what}: {} cases, {executed} actions executed, {} reviews accepted, {} faults injected",
            self.cases.load(Ordering::SeqCst),
            self.accepted_reviews.load(Ordering::SeqCst),
            self.faults_injected.load(Ordering::SeqCst),
        );
        executed
    }
}

/// Runs one gate call with the case's bound; an elapsed bound fails the case.
async fn bounded<T>(
    bound: Duration,
    what: &str,
    call: impl Future<Output = T>,
) -> Result<T, String> {
    tokio::time::timeout(bound, call)
        .await
        .map_err(|_| format!("{what} did not return within {bound:?}: a hang past the timeouts"))
}

fn export() -> ActionRequest {
    ActionRequest::new("db.migrate", "postgres://prod/orders")
        .params(serde_json::json!({ "migration": "0042_add_index" }))
        .justification("ticket OPS-7")
        .idempotency_key("migrate-0042")
}

async fn run_case(
    case: &Case,
    backend: Backend,
    store_timeout: Duration,
    stats: &Stats,
) -> Result<(), String> {
    // Every gate call makes a handful of store calls, each bounded by the store timeout; the
    // retry loops only repeat on a lost compare-and-set race, which a sequential scenario does
    // not have. Forty store calls plus a second of slack is far above any legitimate call.
    let bound = store_timeout * 40 + Duration::from_secs(1);
    let clock = Arc::new(ManualClock::new(epoch()));
    let reliable = Arc::new(MemorySink::new());
    let inner = backend.store();
    let store = Arc::new(FaultyStore::new(inner.clone(), case.store.clone()));
    let audit = Arc::new(FaultyAudit::new(reliable.clone(), case.audit.clone()));
    let approver = Arc::new(FaultyApprover::new(Arc::new(Chat), case.approver.clone()));
    let requirement = Requirement::groups([GROUP])
        .quorum(case.quorum)
        .timeout(Duration::from_secs(3600));
    let gate = Gate::builder()
        .policy(StaticPolicy::require(requirement))
        .store_shared(store.clone())
        .audit_shared(audit.clone())
        .approver_shared(approver.clone())
        .clock(clock.clone())
        .initiator(initiator())
        .store_timeout(store_timeout)
        .poll_interval(store_timeout / 2)
        .audit_recovery_after(Duration::from_secs(30))
        .grant_ttl(Duration::from_secs(600))
        .build()
        .map_err(|e| e.to_string())?;
    let mut seen = Observed::default();

    // The agent submits, and once more with the same idempotency key if that failed.
    let action = export();
    let mut id = None;
    for _ in 0..2 {
        match bounded(bound, "submit", gate.submit(&action)).await? {
            Ok(Submission::Pending(pending)) => {
                id = Some(pending);
                break;
            }
            Ok(Submission::Allowed(_)) => return Err("the policy requires approval".into()),
            Err(GuardError::DeliveryFailed { id: failed, .. }) => {
                id = Some(failed);
                break;
            }
            Err(_) => {}
        }
    }
    if let Some(id) = id {
        seen.ids.push(id);
        if case.cancel_before_reviews
            && bounded(
                bound,
                "cancel",
                gate.cancel(id, None, Some("not needed".into())),
            )
            .await?
            .is_ok()
        {
            seen.cancelled.push(id);
        }
        for (who, verdict) in &case.reviews {
            let review = match verdict {
                Verdict::Approve => Review::approve(who.principal()),
                Verdict::Deny => Review::deny(who.principal()),
            };
            if bounded(bound, "decide", gate.decide(id, review))
                .await?
                .is_ok()
            {
                seen.accepted.push((id, who.principal(), *verdict));
            }
        }
        if case.sweep_after_reviews {
            let _ = bounded(bound, "sweep", gate.sweep()).await?;
        }
        if !case.agent_gone {
            agent_runs(&gate, &clock, &inner, &action, id, bound, &mut seen).await?;
        }
    }
    // A sweep much later lapses or expires whatever is left.
    clock.advance(TimeDelta::hours(3));
    let _ = bounded(bound, "final sweep", gate.sweep()).await?;

    let injected = store.injected().len() + audit.injected().len() + approver.injected().len();
    stats.cases.fetch_add(1, Ordering::SeqCst);
    stats
        .faults_injected
        .fetch_add(injected as u32, Ordering::SeqCst);
    stats
        .accepted_reviews
        .fetch_add(seen.accepted.len() as u32, Ordering::SeqCst);
    let executed = seen
        .runs
        .values()
        .map(|r| r.load(Ordering::SeqCst))
        .sum::<u32>();
    stats.executed.fetch_add(executed, Ordering::SeqCst);
    check(case, &seen, &reliable, &backend, &inner)
        .await
        .map_err(|e| {
            let injected: Vec<String> = store
                .injected()
                .iter()
                .chain(audit.injected().iter())
                .chain(approver.injected().iter())
                .map(ToString::to_string)
                .collect();
            format!("{e}\ninjected: {}", injected.join(", "))
        })
}

/// The agent waits for its grant and runs the action, trying up to three times as an agent
/// retrying retryable errors would. The clock is moved on when nothing else can end the wait:
/// past the expiry of a still-pending request, or past the audit recovery delay of an
/// approval or denial whose `decide()` failed before auditing it.
async fn agent_runs(
    gate: &Gate,
    clock: &ManualClock,
    inner: &Arc<dyn Store>,
    action: &ActionRequest,
    id: RequestId,
    bound: Duration,
    seen: &mut Observed,
) -> Result<(), String> {
    let runs = seen.runs.entry(id).or_default().clone();
    for _ in 0..3 {
        match inner.get(id).await.map_err(|e| e.to_string())? {
            Some(r) if r.state == RequestState::Pending => clock.advance(TimeDelta::hours(2)),
            Some(r)
                if matches!(r.state, RequestState::Approved | RequestState::Denied)
                    && r.audit_pending =>
            {
                clock.advance(TimeDelta::seconds(31))
            }
            _ => {}
        }
        let grant = match bounded(bound, "wait", gate.wait(id)).await? {
            Ok(grant) => grant,
            Err(e) if e.is_retryable() => continue,
            Err(_) => return Ok(()),
        };
        let body = || {
            let runs = runs.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok::<_, GuardError>(())
            }
        };
        match bounded(bound, "execute", gate.execute(grant, action, body)).await? {
            Ok(()) => return Ok(()),
            Err(e) if e.is_retryable() => continue,
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

async fn check(
    case: &Case,
    seen: &Observed,
    reliable: &MemorySink,
    backend: &Backend,
    inner: &Arc<dyn Store>,
) -> Result<(), String> {
    let events = reliable.events();
    for (id, runs) in &seen.runs {
        let runs = runs.load(Ordering::SeqCst);
        if runs > 1 {
            return Err(format!("the body of {id} ran {runs} times"));
        }
        if runs == 0 {
            continue;
        }
        let mine: Vec<_> = events.iter().filter(|e| e.request_id == *id).collect();
        let consumed = mine
            .iter()
            .position(|e| matches!(e.detail, EventDetail::GrantConsumed {}))
            .ok_or_else(|| format!("the body of {id} ran without a grant_consumed event"))?;
        let approved_before = mine[..consumed].iter().any(|e| match &e.detail {
            EventDetail::Approved { approvers } => {
                distinct_authorized(approvers) >= case.quorum as usize
            }
            _ => false,
        });
        if !approved_before {
            return Err(format!(
                "the body of {id} ran without an audited approval by {} authorized humans; audit: {:?}",
                case.quorum,
                mine.iter().map(|e| e.name()).collect::<Vec<_>>()
            ));
        }
        let record = inner
            .get(*id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{id} ran but is not stored"))?;
        if !matches!(
            record.state,
            RequestState::Executing | RequestState::Executed | RequestState::Failed
        ) {
            return Err(format!("{id} ran but the store shows it {}", record.state));
        }
    }

    // Rejected reviewers are never counted, whatever failed.
    for id in &seen.ids {
        if let Some(record) = inner.get(*id).await.map_err(|e| e.to_string())? {
            if let Some(r) = record.reviews.iter().find(|r| !authorized(&r.reviewer)) {
                return Err(format!("{id} holds a review by {}", r.reviewer.id));
            }
            let approvals = record.approvers().len();
            let distinct =
                distinct_authorized(&record.approvers().into_iter().cloned().collect::<Vec<_>>());
            if approvals != distinct {
                return Err(format!(
                    "{id} counts one person twice: {:?}",
                    record.reviews
                ));
            }
        }
    }

    // Every accepted decision survives a restart.
    let restarted = backend.restarted().await?;
    let recovery = Arc::new(MemorySink::new());
    let fresh = Gate::builder()
        .policy(StaticPolicy::require(Requirement::groups([GROUP])))
        .store_shared(restarted)
        .audit_shared(recovery.clone())
        .initiator(initiator())
        .clock(Arc::new(ManualClock::new(epoch() + TimeDelta::days(1))))
        .build()
        .map_err(|e| e.to_string())?;
    for (id, reviewer, verdict) in &seen.accepted {
        let record = fresh
            .get(*id)
            .await
            .map_err(|e| format!("reading {id} after the restart: {e}"))?
            .ok_or_else(|| format!("{id} is gone after the restart"))?;
        if !record
            .reviews
            .iter()
            .any(|r| r.reviewer.id == reviewer.id && r.verdict == *verdict)
        {
            return Err(format!(
                "{reviewer:?}'s accepted {verdict} on {id} is not stored after the restart"
            ));
        }
        if *verdict == Verdict::Deny && record.state != RequestState::Denied {
            return Err(format!(
                "{id} was denied but is {} after the restart",
                record.state
            ));
        }
    }
    for id in &seen.cancelled {
        let state = fresh
            .get(*id)
            .await
            .map_err(|e| e.to_string())?
            .map(|r| r.state);
        if state != Some(RequestState::Cancelled) {
            return Err(format!(
                "{id} was cancelled but is {state:?} after the restart"
            ));
        }
    }

    // Once a fault-free sweep has run past the recovery delay, every decision the store
    // holds is in the audit trail, whether or not an agent was still waiting for it.
    fresh
        .sweep()
        .await
        .map_err(|e| format!("the fault-free sweep after the restart failed: {e}"))?;
    let audited: Vec<_> = events
        .iter()
        .chain(recovery.events().iter())
        .cloned()
        .collect();
    for id in &seen.ids {
        let Some(record) = fresh.get(*id).await.map_err(|e| e.to_string())? else {
            continue;
        };
        if record.audit_pending {
            return Err(format!(
                "{id} is still flagged audit_pending after the sweep"
            ));
        }
        let has = |wanted: fn(&EventDetail) -> bool| {
            audited
                .iter()
                .any(|e| e.request_id == *id && wanted(&e.detail))
        };
        if record.state == RequestState::Denied && !has(|d| matches!(d, EventDetail::Denied { .. }))
        {
            return Err(format!("{id} is denied but no denied event was audited"));
        }
        let was_approved = matches!(
            record.state,
            RequestState::Executing
                | RequestState::Executed
                | RequestState::Failed
                | RequestState::Lapsed
                | RequestState::Approved
        );
        if was_approved && !has(|d| matches!(d, EventDetail::Approved { .. })) {
            return Err(format!(
                "{id} is {} but no approved event was audited",
                record.state
            ));
        }
    }
    Ok(())
}

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

fn report(result: Result<(), proptest::test_runner::TestError<Case>>) {
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn any_failure_schedule_on_the_memory_store_keeps_the_promises() {
    let store_timeout = Duration::from_millis(50);
    let stats = Stats::default();
    let mut runner = runner(cases(48));
    report(runner.run(&case(store_timeout), |case| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        rt.block_on(run_case(
            &case,
            Backend::Memory(Arc::new(MemoryStore::new())),
            store_timeout,
            &stats,
        ))
        .map_err(TestCaseError::fail)
    }));
    assert!(
        stats.print("memory store") > 0,
        "no case ran an action: the scenario generator is broken"
    );
}

#[test]
fn any_failure_schedule_on_an_sqlite_file_keeps_the_promises() {
    let store_timeout = Duration::from_millis(250);
    let n = (cases(48) / 8).max(2);
    let dir = tempfile::tempdir().expect("temporary directory");
    let next = AtomicU32::new(0);
    let stats = Stats::default();
    let mut runner = runner(n);
    report(runner.run(&case(store_timeout), |case| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let path = dir
            .path()
            .join(format!("case-{}.db", next.fetch_add(1, Ordering::SeqCst)));
        let url = format!("sqlite://{}", path.display());
        rt.block_on(async {
            let store = SqlStore::connect(&url)
                .await
                .map_err(|e| format!("opening {url}: {e}"))?;
            run_case(&case, Backend::Sqlite { url, store }, store_timeout, &stats).await
        })
        .map_err(TestCaseError::fail)
    }));
    stats.print("SQLite file");
}

/// A hung audit sink is a refusal within the store timeout, not a hang: for the agent's
/// `submit`, for a reviewer's `decide`, and for `execute`.
#[tokio::test(start_paused = true)]
async fn a_hung_audit_sink_refuses_within_the_timeout() {
    let store_timeout = Duration::from_millis(50);
    let bound = Duration::from_secs(5);
    let inner: Arc<dyn Store> = Arc::new(MemoryStore::new());
    // Calls 1-2 are submit's `requested` and `policy_decided`; call 3 is the first
    // `reviewed`; call 6 is `grant_consumed` (after `approved` and `grant_issued`).
    for hung_call in [1, 3, 6] {
        let reliable = Arc::new(MemorySink::new());
        let audit = FaultyAudit::new(
            reliable.clone(),
            FaultPlan::new().on_call(hung_call, Fault::Hang),
        );
        let gate = Gate::builder()
            .policy(StaticPolicy::require(Requirement::groups([GROUP])))
            .store_shared(inner.clone())
            .audit(audit)
            .initiator(initiator())
            .store_timeout(store_timeout)
            .build()
            .expect("gate");
        let action = ActionRequest::new("db.migrate", format!("postgres://prod/{hung_call}"));
        let submitted = tokio::time::timeout(bound, gate.submit(&action))
            .await
            .unwrap_or_else(|_| panic!("submit hung on audit call {hung_call}"));
        let id = match submitted {
            Ok(Submission::Pending(id)) => id,
            Err(GuardError::Unavailable { component, .. }) if hung_call == 1 => {
                assert_eq!(component, approvals_core::Component::Audit);
                continue;
            }
            other => panic!("audit call {hung_call} hung: submit gave {other:?}"),
        };
        let decided = tokio::time::timeout(
            bound,
            gate.decide(id, Review::approve(Who::Bob.principal())),
        )
        .await
        .unwrap_or_else(|_| panic!("decide hung on audit call {hung_call}"));
        if hung_call == 3 {
            assert!(
                matches!(decided, Err(ReviewError::Unavailable { .. })),
                "{decided:?}"
            );
            continue;
        }
        decided.expect("approved");
        let grant = tokio::time::timeout(bound, gate.wait(id))
            .await
            .expect("wait hung")
            .expect("granted");
        let ran = tokio::time::timeout(
            bound,
            gate.execute(grant, &action, || async { Ok::<_, GuardError>(()) }),
        )
        .await
        .unwrap_or_else(|_| panic!("execute hung on audit call {hung_call}"));
        assert!(
            matches!(ran, Err(GuardError::Unavailable { .. })),
            "the action ran although grant_consumed was never recorded: {ran:?}"
        );
    }
}
