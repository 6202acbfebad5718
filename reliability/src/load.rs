//! Load drivers shared by `benches/benches/load.rs` and `tests/load.rs`: many pending requests
//! in one process (memory per pending request, everything resolved correctly), and several
//! replicas sharing one PostgreSQL schema (decisions on another replica than the waiter).
//!
//! Memory is measured by the caller's counting global allocator (a library cannot install
//! one), passed in as a function returning the live heap bytes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use approvals_core::clock::Sleep;
use approvals_core::{
    ActionRequest, AuditError, AuditEvent, AuditSink, Clock, Gate, GuardError, Initiator,
    ListFilter, MemoryStore, Principal, RequestId, RequestRecord, RequestState, Review, RulePolicy,
    Store, Submission,
};
use approvals_store_sql::{SqlStore, SqlStoreOptions};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};

/// The outcome each request gets, by its index: approved (and executed), denied, cancelled,
/// or left alone until it expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// Approved by a reviewer; the caller runs the action.
    Executed,
    /// Denied by a reviewer.
    Denied,
    /// Cancelled.
    Cancelled,
    /// Nobody decided before the deadline.
    Expired,
}

impl Outcome {
    /// The outcome planned for request number `index`: a quarter of each.
    pub fn planned(index: usize) -> Outcome {
        match index % 4 {
            0 => Outcome::Executed,
            1 => Outcome::Denied,
            2 => Outcome::Cancelled,
            _ => Outcome::Expired,
        }
    }

    /// The final stored state that goes with this outcome.
    pub fn state(self) -> RequestState {
        match self {
            Outcome::Executed => RequestState::Executed,
            Outcome::Denied => RequestState::Denied,
            Outcome::Cancelled => RequestState::Cancelled,
            Outcome::Expired => RequestState::Expired,
        }
    }

    /// What the caller's `guard()`/`run()` returned, or `None` for an unexpected result.
    fn of(result: &Result<(), GuardError>) -> Option<Outcome> {
        match result {
            Ok(()) => Some(Outcome::Executed),
            Err(GuardError::Denied { .. }) => Some(Outcome::Denied),
            Err(GuardError::Cancelled { .. }) => Some(Outcome::Cancelled),
            Err(GuardError::Expired { .. }) => Some(Outcome::Expired),
            Err(_) => None,
        }
    }
}

/// How many requests of `n` get each outcome.
fn planned_counts(n: usize) -> BTreeMap<Outcome, usize> {
    let mut counts = BTreeMap::new();
    for i in 0..n {
        *counts.entry(Outcome::planned(i)).or_default() += 1;
    }
    counts
}

/// The audit events a run of `n` requests must leave, by name: each lifecycle audited once.
fn expected_events(n: usize) -> BTreeMap<&'static str, usize> {
    let c = planned_counts(n);
    let get = |o| c.get(&o).copied().unwrap_or(0);
    let (exec, denied, cancelled, expired) = (
        get(Outcome::Executed),
        get(Outcome::Denied),
        get(Outcome::Cancelled),
        get(Outcome::Expired),
    );
    BTreeMap::from([
        ("requested", n),
        ("policy_decided", n),
        ("reviewed", exec + denied),
        ("approved", exec),
        ("grant_issued", exec),
        ("grant_consumed", exec),
        ("executed", exec),
        ("denied", denied),
        ("cancelled", cancelled),
        ("expired", expired),
    ])
}

/// The reviewer who decides every request (in the policy's `data-owners` group).
pub fn reviewer() -> Principal {
    Principal::human("sam@example.com").with_groups(["data-owners"])
}

/// Policy: exports need one data owner; those under `db://load/expiring/` time out after
/// `expiring_timeout_secs`, the rest after an hour.
fn policy(expiring_timeout_secs: u64) -> Result<RulePolicy, String> {
    RulePolicy::from_toml(&format!(
        r#"
        version = 1
        default = "deny"

        [[rules]]
        name = "expiring-exports"
        kind = "data.export"
        resource = "db://load/expiring/*"
        effect = "require_approval"
        approvers = {{ groups = ["data-owners"] }}
        timeout = "{expiring_timeout_secs}s"

        [[rules]]
        name = "exports"
        kind = "data.export"
        resource = "db://load/*"
        effect = "require_approval"
        approvers = {{ groups = ["data-owners"] }}
        timeout = "1h"
        "#
    ))
    .map_err(|e| format!("load policy: {e}"))
}

/// The parameters of request number `index`: a typical export (about 110 bytes of JSON).
pub fn params(index: usize) -> Value {
    json!({
        "table": "customers",
        "rows": 48_210 + index,
        "format": "csv",
        "columns": ["email", "plan", "country"],
        "n": index,
    })
}

/// Request number `index`; the expiring quarter goes to a resource with a short timeout.
pub fn action(index: usize) -> ActionRequest {
    let resource = if Outcome::planned(index) == Outcome::Expired {
        "db://load/expiring/customers"
    } else {
        "db://load/customers"
    };
    ActionRequest::new("data.export", resource)
        .params(params(index))
        .justification("monthly churn report for finance")
}

/// The request's index, from its parameters.
fn index_of(record: &RequestRecord) -> Option<usize> {
    record
        .request
        .params
        .get("n")
        .and_then(Value::as_u64)
        .and_then(|n| usize::try_from(n).ok())
}

/// System time plus an offset that the run moves forward to expire requests. Sleeps are
/// tokio timers, exactly as with `SystemClock`, so a waiter costs what it costs in production.
#[derive(Debug, Default)]
pub struct OffsetClock {
    offset_micros: AtomicI64,
}

impl OffsetClock {
    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let micros = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
        self.offset_micros.fetch_add(micros, Ordering::SeqCst);
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + TimeDelta::microseconds(self.offset_micros.load(Ordering::SeqCst))
    }

    fn sleep_until(&self, deadline: DateTime<Utc>) -> Sleep {
        let wait = (deadline - self.now()).to_std().unwrap_or_default();
        Box::pin(tokio::time::sleep(wait))
    }

    fn runtime_wait(&self, deadline: DateTime<Utc>) -> Option<Duration> {
        Some((deadline - self.now()).to_std().unwrap_or_default())
    }
}

/// Counts audit events by name and keeps nothing else, so it adds no memory per request.
#[derive(Debug, Default)]
pub struct CountingSink {
    counts: Mutex<BTreeMap<&'static str, usize>>,
}

impl CountingSink {
    /// Events recorded so far, by name.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[async_trait::async_trait]
impl AuditSink for CountingSink {
    async fn record(&self, event: &AuditEvent) -> Result<(), AuditError> {
        *self
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(event.name())
            .or_default() += 1;
        Ok(())
    }
}

/// Linux resident set size of this process in KiB (`VmRSS` in `/proc/self/status`), 0 when
/// unavailable.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// What one in-process memory run measured and checked.
#[derive(Debug, Clone)]
pub struct MemoryReport {
    /// Requests submitted.
    pub requests: usize,
    /// Whether each pending request had a waiting `run()` task (the agent case) or was only
    /// submitted (waited for later).
    pub waiters: bool,
    /// Live heap bytes of one request's parameters (a `serde_json::Value`), measured as `N`
    /// clones divided by `N`.
    pub params_bytes: f64,
    /// Live heap bytes per pending request: everything the process gained while the requests
    /// were submitted and pending (the agents' actions included), divided by `N`.
    pub pending_bytes: f64,
    /// Size of the future of one `gate.run(..)` call (the waiter task's state), in bytes.
    pub run_future_bytes: usize,
    /// Size of one stored `RequestRecord` struct (its heap parts not included).
    pub record_struct_bytes: usize,
    /// Resident set size before submitting and while all were pending, KiB.
    pub rss_kib: (u64, u64),
    /// Wall-clock seconds to submit all requests, and to resolve them all.
    pub secs: (f64, f64),
    /// Outcomes the callers got, by outcome; `wrong` counts callers that got another.
    pub outcomes: BTreeMap<Outcome, usize>,
    /// Callers whose result was not the planned one.
    pub wrong: usize,
    /// Final stored states, by state name.
    pub states: BTreeMap<String, usize>,
    /// Audit events, by name.
    pub events: BTreeMap<&'static str, usize>,
}

impl MemoryReport {
    /// Live heap bytes per pending request beyond its parameters: the budget figure.
    pub fn overhead_bytes(&self) -> f64 {
        self.pending_bytes - self.params_bytes
    }

    /// Checks that every request was resolved exactly once, as planned.
    pub fn check(&self) -> Result<(), String> {
        check_resolution(
            self.requests,
            self.wrong,
            &self.outcomes,
            &self.states,
            &self.events,
        )
    }
}

impl std::fmt::Display for MemoryReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = if self.waiters {
            "with a waiting run() task each"
        } else {
            "submitted, nobody waiting yet"
        };
        writeln!(f, "{} pending requests, {mode}:", self.requests)?;
        writeln!(
            f,
            "  live heap per pending request: {:.0} bytes = {:.0} parameters + {:.0} beyond the parameters (budget 2048)",
            self.pending_bytes,
            self.params_bytes,
            self.overhead_bytes()
        )?;
        writeln!(
            f,
            "  where: RequestRecord struct {} bytes, run() future {} bytes",
            self.record_struct_bytes, self.run_future_bytes
        )?;
        writeln!(
            f,
            "  RSS {} MiB before, {} MiB with all pending ({:.0} bytes per request)",
            self.rss_kib.0 / 1024,
            self.rss_kib.1 / 1024,
            self.rss_kib.1.saturating_sub(self.rss_kib.0) as f64 * 1024.0 / self.requests as f64
        )?;
        writeln!(
            f,
            "  submitted in {:.2} s ({:.0}/s); resolved in {:.2} s ({:.0}/s)",
            self.secs.0,
            self.requests as f64 / self.secs.0.max(1e-9),
            self.secs.1,
            self.requests as f64 / self.secs.1.max(1e-9)
        )?;
        writeln!(
            f,
            "  outcomes {:?}, wrong {}; states {:?}",
            self.outcomes, self.wrong, self.states
        )?;
        write!(f, "  audit events {:?}", self.events)
    }
}

fn check_resolution(
    n: usize,
    wrong: usize,
    outcomes: &BTreeMap<Outcome, usize>,
    states: &BTreeMap<String, usize>,
    events: &BTreeMap<&'static str, usize>,
) -> Result<(), String> {
    let planned = planned_counts(n);
    if wrong != 0 || *outcomes != planned {
        return Err(format!(
            "callers got {outcomes:?} with {wrong} wrong; planned {planned:?}"
        ));
    }
    let planned_states: BTreeMap<String, usize> = planned
        .iter()
        .map(|(o, c)| (o.state().to_string(), *c))
        .collect();
    if *states != planned_states {
        return Err(format!(
            "stored states {states:?}, planned {planned_states:?}"
        ));
    }
    let expected = expected_events(n);
    if *events != expected {
        return Err(format!(
            "audit events {events:?}, expected exactly {expected:?} (one too many means a transition happened twice)"
        ));
    }
    Ok(())
}

/// Submits `requests` requests to a `Gate` on a `MemoryStore` in a current-thread runtime,
/// measures the live heap while all are pending (with `live_bytes`, the caller's counting
/// allocator), then resolves them (a quarter each approved and executed, denied, cancelled,
/// expired by a sweep) and checks every caller's result, the stored states and the audit.
///
/// With `waiters`, each request is a spawned task in `gate.run(..)`, as an agent would wait;
/// without, requests are only submitted and `wait()`ed for after the decisions.
pub fn memory_run(
    requests: usize,
    waiters: bool,
    live_bytes: fn() -> usize,
) -> Result<MemoryReport, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    rt.block_on(memory_run_async(requests, waiters, live_bytes))
}

async fn memory_run_async(
    n: usize,
    waiters: bool,
    live_bytes: fn() -> usize,
) -> Result<MemoryReport, String> {
    // The parameters alone, as the agent builds them.
    let before = live_bytes();
    let alone: Vec<Value> = (0..n).map(params).collect();
    let params_bytes = live_bytes().saturating_sub(before) as f64 / n as f64;
    drop(alone);

    let store = Arc::new(MemoryStore::new());
    let sink = Arc::new(CountingSink::default());
    let clock = Arc::new(OffsetClock::default());
    let gate = Gate::builder()
        .policy(policy(3600)?)
        .store_shared(store.clone())
        .audit_shared(sink.clone())
        .clock(clock.clone())
        .initiator(
            Initiator::agent("billing-agent")
                .on_behalf_of(Principal::human("dana@example.com"))
                .model("claude-opus-4"),
        )
        // Waiters wake on decisions; a long poll keeps 100,000 idle waiters from re-reading
        // the store every second. The poll timer lives inside each waiter's future, so the
        // interval changes CPU, not memory.
        .poll_interval(Duration::from_secs(600))
        .build()
        .map_err(|e| e.to_string())?;
    let executed = Arc::new(AtomicUsize::new(0));
    let run_future_bytes = {
        let first = action(0);
        let fut = run_once(&gate, &first, &executed);
        std::mem::size_of_val(&fut)
    };

    // Room for the caller's bookkeeping, reserved before the baseline.
    let mut tasks = Vec::with_capacity(if waiters { n } else { 0 });
    let mut ids = Vec::with_capacity(if waiters { 0 } else { n });
    let rss_before = rss_kib();
    let baseline = live_bytes();
    let start = Instant::now();
    if waiters {
        // Each agent builds its action and keeps it while it waits.
        for i in 0..n {
            let (gate, executed) = (gate.clone(), executed.clone());
            tasks.push(tokio::spawn(async move {
                run_once(&gate, &action(i), &executed).await
            }));
        }
        // Current-thread runtime: each yield lets every spawned task run until it parks.
        while store.len() < n {
            tokio::task::yield_now().await;
        }
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
    } else {
        for i in 0..n {
            match gate.submit(&action(i)).await {
                Ok(Submission::Pending(id)) => ids.push(id),
                other => return Err(format!("submit: expected pending, got {other:?}")),
            }
        }
    }
    let submit_secs = start.elapsed().as_secs_f64();
    let pending_bytes = live_bytes().saturating_sub(baseline) as f64 / n as f64;
    let rss_pending = rss_kib();

    // Resolve: decide and cancel, then expire the rest by moving the clock past their
    // deadline and sweeping.
    let start = Instant::now();
    if waiters {
        let mut found = vec![None; n];
        for record in gate.pending().await.map_err(|e| e.to_string())? {
            let i = index_of(&record).ok_or("a pending request without its index")?;
            found[i] = Some(record.id);
        }
        ids = found
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or("a waiter's request is not pending")?;
    }
    for (i, id) in ids.iter().enumerate() {
        resolve(&gate, i, *id).await?;
    }
    let mut results: Vec<Option<Result<(), GuardError>>> = (0..n).map(|_| None).collect();
    if waiters {
        // Every decided caller returns before the clock moves (a moved clock would also
        // lapse unused grants).
        let mut tasks: Vec<_> = tasks.drain(..).map(Some).collect();
        for (i, task) in tasks.iter_mut().enumerate() {
            if Outcome::planned(i) != Outcome::Expired
                && let Some(t) = task.take()
            {
                results[i] = Some(t.await.map_err(|e| format!("waiter panicked: {e}"))?);
            }
        }
        expire_all(&gate, &clock).await?;
        for (i, task) in tasks.into_iter().enumerate() {
            if let Some(t) = task {
                results[i] = Some(t.await.map_err(|e| format!("waiter panicked: {e}"))?);
            }
        }
    } else {
        for (i, id) in ids.iter().enumerate() {
            if Outcome::planned(i) != Outcome::Expired {
                results[i] = Some(wait_and_run(&gate, *id, &action(i), &executed).await);
            }
        }
        expire_all(&gate, &clock).await?;
        for (i, id) in ids.iter().enumerate() {
            if Outcome::planned(i) == Outcome::Expired {
                results[i] = Some(wait_and_run(&gate, *id, &action(i), &executed).await);
            }
        }
    }
    let resolve_secs = start.elapsed().as_secs_f64();
    let mut outcomes = BTreeMap::new();
    let mut wrong = 0;
    for (i, result) in results.iter().enumerate() {
        match result.as_ref().and_then(Outcome::of) {
            Some(o) if o == Outcome::planned(i) => *outcomes.entry(o).or_insert(0) += 1,
            _ => wrong += 1,
        }
    }
    let ran = executed.load(Ordering::SeqCst);
    if ran
        != planned_counts(n)
            .get(&Outcome::Executed)
            .copied()
            .unwrap_or(0)
    {
        return Err(format!("the action ran {ran} times"));
    }

    let mut states = BTreeMap::new();
    for record in store
        .list(&ListFilter::default())
        .await
        .map_err(|e| e.to_string())?
    {
        *states.entry(record.state.to_string()).or_insert(0) += 1;
    }
    Ok(MemoryReport {
        requests: n,
        waiters,
        params_bytes,
        pending_bytes,
        run_future_bytes,
        record_struct_bytes: std::mem::size_of::<RequestRecord>(),
        rss_kib: (rss_before, rss_pending),
        secs: (submit_secs, resolve_secs),
        outcomes,
        wrong,
        states,
        events: sink.counts(),
    })
}

/// What an agent does: ask, wait, and run the action once granted.
async fn run_once(
    gate: &Gate,
    action: &ActionRequest,
    executed: &AtomicUsize,
) -> Result<(), GuardError> {
    gate.run(action, || async {
        executed.fetch_add(1, Ordering::SeqCst);
        Ok::<_, GuardError>(())
    })
    .await
}

/// Waits for a submitted request and runs it if granted.
async fn wait_and_run(
    gate: &Gate,
    id: RequestId,
    action: &ActionRequest,
    executed: &AtomicUsize,
) -> Result<(), GuardError> {
    let grant = gate.wait(id).await?;
    gate.execute(grant, action, || async {
        executed.fetch_add(1, Ordering::SeqCst);
        Ok::<_, GuardError>(())
    })
    .await
}

/// Applies request `index`'s planned decision (nothing for the expiring quarter).
async fn resolve(gate: &Gate, index: usize, id: RequestId) -> Result<(), String> {
    let result = match Outcome::planned(index) {
        Outcome::Executed => gate.decide(id, Review::approve(reviewer())).await.map(drop),
        Outcome::Denied => gate
            .decide(id, Review::deny(reviewer()).reason("not this month"))
            .await
            .map(drop),
        Outcome::Cancelled => gate
            .cancel(
                id,
                Some(Principal::human("dana@example.com")),
                Some("no longer needed".into()),
            )
            .await
            .map(drop),
        Outcome::Expired => Ok(()),
    };
    result.map_err(|e| format!("request {index} ({id}): {e}"))
}

/// Moves the clock past every deadline and sweeps.
async fn expire_all(gate: &Gate, clock: &OffsetClock) -> Result<(), String> {
    clock.advance(Duration::from_secs(2 * 3600));
    gate.sweep().await.map_err(|e| format!("sweep: {e}"))?;
    Ok(())
}

// ----------------------------------------------------------------------------------------
// Replicas on PostgreSQL.

/// Options for one replica of a PostgreSQL run.
#[derive(Debug, Clone)]
pub struct ReplicaOptions {
    /// PostgreSQL URL.
    pub url: String,
    /// The schema all replicas share.
    pub schema: String,
    /// This replica's number, from 0.
    pub replica: usize,
    /// How many replicas there are.
    pub replicas: usize,
    /// Requests this replica submits.
    pub requests: usize,
    /// Timeout of the expiring quarter, seconds.
    pub expiring_timeout_secs: u64,
    /// Longest time the replica may take before it gives up, seconds.
    pub deadline_secs: u64,
}

/// The initiator id of replica `r`'s agent; other replicas find its requests by it.
fn replica_agent(r: usize) -> String {
    format!("load-agent-{r}")
}

/// What one replica saw: its callers' outcomes and the decide-to-wake latencies.
#[derive(Debug, Clone, Default)]
pub struct ReplicaReport {
    /// This replica's number.
    pub replica: usize,
    /// Requests it submitted.
    pub requests: usize,
    /// Outcomes its callers got (name to count).
    pub outcomes: BTreeMap<String, usize>,
    /// Callers whose result was not the planned one.
    pub wrong: usize,
    /// Decisions (approve, deny, cancel) it made on another replica's requests.
    pub decided: usize,
    /// From the decision on another replica (the review or cancel time stored with the
    /// record) to this replica's caller returning, milliseconds, one per decided request.
    pub wake_ms: Vec<f64>,
    /// Seconds until all its requests were submitted, and until all its callers returned.
    pub secs: (f64, f64),
}

impl ReplicaReport {
    /// One JSON line, as a replica process prints it for the parent.
    pub fn to_json(&self) -> String {
        json!({
            "replica": self.replica,
            "requests": self.requests,
            "outcomes": self.outcomes,
            "wrong": self.wrong,
            "decided": self.decided,
            "wake_ms": self.wake_ms,
            "secs": [self.secs.0, self.secs.1],
        })
        .to_string()
    }

    /// Parses [`to_json`](Self::to_json)'s output.
    pub fn from_json(line: &str) -> Result<ReplicaReport, String> {
        let v: Value = serde_json::from_str(line).map_err(|e| format!("replica report: {e}"))?;
        let num = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0) as usize;
        let secs = |i: usize| {
            v.get("secs")
                .and_then(|s| s.get(i))
                .and_then(Value::as_f64)
                .unwrap_or(0.0)
        };
        Ok(ReplicaReport {
            replica: num("replica"),
            requests: num("requests"),
            outcomes: v
                .get("outcomes")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, c)| (k.clone(), c.as_u64().unwrap_or(0) as usize))
                        .collect()
                })
                .unwrap_or_default(),
            wrong: num("wrong"),
            decided: num("decided"),
            wake_ms: v
                .get("wake_ms")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_f64).collect())
                .unwrap_or_default(),
            secs: (secs(0), secs(1)),
        })
    }
}

/// Creates the tables in `schema` (so replicas do not race to migrate).
pub async fn pg_prepare(url: &str, schema: &str) -> Result<(), String> {
    let store = SqlStore::connect_with(SqlStoreOptions::new(url).schema(schema))
        .await
        .map_err(|e| format!("PostgreSQL at {url}: {e}"))?;
    store.close().await;
    Ok(())
}

fn pg_gate(store: &SqlStore, agent: String, expiring_timeout_secs: u64) -> Result<Gate, String> {
    Gate::builder()
        .policy(policy(expiring_timeout_secs)?)
        .store(store.clone())
        .audit(store.audit_sink())
        .initiator(Initiator::agent(agent).on_behalf_of(Principal::human("dana@example.com")))
        // Waiters wake on NOTIFY from the other replicas; polling is only the safety net.
        .poll_interval(Duration::from_secs(60))
        .store_timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| e.to_string())
}

/// One replica: its own pool and listener on the shared schema. Submits its requests, each
/// with a waiting `run()` task, while deciding the next replica's requests (approve, deny or
/// cancel a quarter each; the last quarter expires on its short timeout), until its own
/// callers have all returned and its share of decisions is made.
pub async fn pg_replica(opts: ReplicaOptions) -> Result<ReplicaReport, String> {
    let store = SqlStore::connect_with(
        SqlStoreOptions::new(&opts.url)
            .schema(&opts.schema)
            .migrate(false)
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(60)),
    )
    .await
    .map_err(|e| format!("replica {}: PostgreSQL: {e}", opts.replica))?;
    let gate = pg_gate(
        &store,
        replica_agent(opts.replica),
        opts.expiring_timeout_secs,
    )?;
    let deadline = Duration::from_secs(opts.deadline_secs);
    let start = Instant::now();
    let executed = Arc::new(AtomicUsize::new(0));
    let returned: Arc<Mutex<HashMap<usize, DateTime<Utc>>>> = Arc::default();
    let submitted = Arc::new(AtomicUsize::new(0));
    let all_submitted: Arc<std::sync::OnceLock<f64>> = Arc::default();
    let mut tasks = Vec::with_capacity(opts.requests);
    for i in 0..opts.requests {
        let (gate, executed, returned) = (gate.clone(), executed.clone(), returned.clone());
        let (submitted, all_submitted) = (submitted.clone(), all_submitted.clone());
        let total = opts.requests;
        tasks.push(tokio::spawn(async move {
            let action = action(i);
            let result = match gate.submit(&action).await {
                Ok(Submission::Pending(id)) => {
                    if submitted.fetch_add(1, Ordering::SeqCst) + 1 == total {
                        let _ = all_submitted.set(start.elapsed().as_secs_f64());
                    }
                    match gate.wait(id).await {
                        Ok(grant) => {
                            returned
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .insert(i, Utc::now());
                            gate.execute(grant, &action, || async {
                                executed.fetch_add(1, Ordering::SeqCst);
                                Ok::<_, GuardError>(())
                            })
                            .await
                        }
                        Err(e) => Err(e),
                    }
                }
                Ok(Submission::Allowed(_)) => Err(GuardError::InvalidRequest(
                    "the load policy allowed an export without approval".into(),
                )),
                Err(e) => Err(e),
            };
            if result.is_err() {
                returned
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(i, Utc::now());
            }
            result
        }));
    }

    let decider = {
        let gate = gate.clone();
        let target = replica_agent((opts.replica + 1) % opts.replicas.max(1));
        let to_decide = (0..opts.requests)
            .filter(|i| Outcome::planned(*i) != Outcome::Expired)
            .count();
        tokio::spawn(async move { decide_for(gate, target, to_decide, deadline).await })
    };

    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        let remaining = deadline.saturating_sub(start.elapsed());
        let result = tokio::time::timeout(remaining, task)
            .await
            .map_err(|_| {
                format!(
                    "replica {}: callers still waiting after {deadline:?} ({} of {} submitted)",
                    opts.replica,
                    submitted.load(Ordering::SeqCst),
                    opts.requests
                )
            })?
            .map_err(|e| format!("caller task panicked: {e}"))?;
        results.push(result);
    }
    let all_returned = start.elapsed().as_secs_f64();
    let decided = decider
        .await
        .map_err(|e| format!("decider panicked: {e}"))??;

    let mut report = ReplicaReport {
        replica: opts.replica,
        requests: opts.requests,
        decided,
        secs: (all_submitted.get().copied().unwrap_or(0.0), all_returned),
        ..Default::default()
    };
    for (i, result) in results.iter().enumerate() {
        match Outcome::of(result) {
            Some(o) if o == Outcome::planned(i) => {
                *report.outcomes.entry(format!("{o:?}")).or_insert(0) += 1
            }
            _ => report.wrong += 1,
        }
    }
    let ran = executed.load(Ordering::SeqCst);
    let planned_runs = (0..opts.requests)
        .filter(|i| Outcome::planned(*i) == Outcome::Executed)
        .count();
    if ran != planned_runs {
        return Err(format!(
            "replica {}: the action ran {ran} times, planned {planned_runs}",
            opts.replica
        ));
    }

    // Latency: the decision's time as stored by the deciding replica, to the caller here.
    let returned = returned.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mine = store
        .list(&ListFilter {
            initiator: Some(replica_agent(opts.replica)),
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    for record in &mine {
        let Some(i) = index_of(record) else { continue };
        let decided_at = match Outcome::planned(i) {
            Outcome::Executed | Outcome::Denied => record.reviews.last().map(|r| r.at),
            Outcome::Cancelled => record.resolution.as_ref().map(|r| r.at),
            Outcome::Expired => None,
        };
        if let (Some(at), Some(back)) = (decided_at, returned.get(&i)) {
            let ms = (*back - at).num_microseconds().unwrap_or(0) as f64 / 1000.0;
            report.wake_ms.push(ms);
        }
    }
    store.close().await;
    Ok(report)
}

/// Decides the target replica's requests (by its agent id) as planned until `to_decide` are
/// decided. Returns how many this replica decided.
async fn decide_for(
    gate: Gate,
    target: String,
    to_decide: usize,
    deadline: Duration,
) -> Result<usize, String> {
    let start = Instant::now();
    let mut done: HashSet<RequestId> = HashSet::new();
    let filter = ListFilter {
        states: vec![RequestState::Pending],
        initiator: Some(target.clone()),
        ..Default::default()
    };
    while done.len() < to_decide {
        if start.elapsed() > deadline {
            return Err(format!(
                "deciding {target}'s requests: {} of {to_decide} decided after {deadline:?}",
                done.len()
            ));
        }
        let pending = gate
            .store()
            .list(&filter)
            .await
            .map_err(|e| format!("listing {target}'s pending requests: {e}"))?;
        let todo: Vec<(usize, RequestId)> = pending
            .iter()
            .filter_map(|r| index_of(r).map(|i| (i, r.id)))
            .filter(|(i, id)| Outcome::planned(*i) != Outcome::Expired && !done.contains(id))
            .collect();
        if todo.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        // A few reviewers at a time, as people clicking in chat would be.
        for chunk in todo.chunks(16) {
            let mut set = tokio::task::JoinSet::new();
            for (i, id) in chunk.iter().copied() {
                let gate = gate.clone();
                set.spawn(async move { resolve(&gate, i, id).await });
            }
            while let Some(r) = set.join_next().await {
                r.map_err(|e| format!("decision task panicked: {e}"))??;
            }
            done.extend(chunk.iter().map(|(_, id)| *id));
        }
    }
    Ok(done.len())
}

/// The whole run's result: every replica's report plus what the shared schema holds.
#[derive(Debug, Clone)]
pub struct PgSummary {
    /// Each replica's report.
    pub replicas: Vec<ReplicaReport>,
    /// Final stored states over all replicas, by name.
    pub states: BTreeMap<String, usize>,
    /// Audit entries by event name.
    pub events: BTreeMap<String, usize>,
    /// Entries in the audit table, checked (hashes, chain, checkpoint roots).
    pub chain_rows: u64,
    /// Wall-clock seconds from start until every replica finished.
    pub secs: f64,
}

impl PgSummary {
    /// Requests over all replicas.
    pub fn requests(&self) -> usize {
        self.replicas.iter().map(|r| r.requests).sum()
    }

    /// Checks outcomes, states and audit rows: every request resolved exactly once, as
    /// planned, every decision made on another replica than its waiter.
    pub fn check(&self) -> Result<(), String> {
        let n = self.requests();
        let mut outcomes = BTreeMap::new();
        let mut wrong = 0;
        for r in &self.replicas {
            wrong += r.wrong;
            for (name, c) in &r.outcomes {
                let o = match name.as_str() {
                    "Executed" => Outcome::Executed,
                    "Denied" => Outcome::Denied,
                    "Cancelled" => Outcome::Cancelled,
                    _ => Outcome::Expired,
                };
                *outcomes.entry(o).or_insert(0) += c;
            }
        }
        // Each replica planned its own requests from index 0.
        let mut planned = BTreeMap::new();
        for r in &self.replicas {
            for (o, c) in planned_counts(r.requests) {
                *planned.entry(o).or_insert(0) += c;
            }
        }
        if wrong != 0 || outcomes != planned {
            return Err(format!(
                "callers got {outcomes:?} with {wrong} wrong; planned {planned:?}"
            ));
        }
        let planned_states: BTreeMap<String, usize> = planned
            .iter()
            .map(|(o, c)| (o.state().to_string(), *c))
            .collect();
        if self.states != planned_states {
            return Err(format!(
                "stored states {:?}, planned {planned_states:?}",
                self.states
            ));
        }
        let mut expected: BTreeMap<String, usize> = BTreeMap::new();
        for r in &self.replicas {
            for (k, v) in expected_events(r.requests) {
                *expected.entry(k.to_owned()).or_insert(0) += v;
            }
        }
        if self.events != expected {
            return Err(format!(
                "audit rows {:?}, expected exactly {expected:?}",
                self.events
            ));
        }
        let rows: usize = self.events.values().sum();
        if self.chain_rows != rows as u64 {
            return Err(format!(
                "the checked chain has {} entries, the event column {rows}",
                self.chain_rows
            ));
        }
        let decided: usize = self.replicas.iter().map(|r| r.decided).sum();
        let planned_decisions = n - planned.get(&Outcome::Expired).copied().unwrap_or(0);
        if decided != planned_decisions {
            return Err(format!(
                "replicas made {decided} decisions, planned {planned_decisions}"
            ));
        }
        Ok(())
    }

    /// Decide-to-wake latencies over all replicas, sorted, milliseconds.
    pub fn wake_ms(&self) -> Vec<f64> {
        let mut all: Vec<f64> = self
            .replicas
            .iter()
            .flat_map(|r| r.wake_ms.iter().copied())
            .collect();
        all.sort_by(f64::total_cmp);
        all
    }
}

/// The `p`-th percentile (0 to 1) of sorted samples, 0 when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len() - 1);
    sorted[i]
}

impl std::fmt::Display for PgSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.requests();
        let wake = self.wake_ms();
        writeln!(
            f,
            "{} replicas x {} requests on one PostgreSQL schema: {n} requests resolved in {:.1} s ({:.0} requests/s end to end)",
            self.replicas.len(),
            self.replicas.first().map_or(0, |r| r.requests),
            self.secs,
            n as f64 / self.secs.max(1e-9)
        )?;
        for r in &self.replicas {
            writeln!(
                f,
                "  replica {}: submitted in {:.1} s, all callers returned after {:.1} s, {} decisions for replica {}, outcomes {:?}, wrong {}",
                r.replica,
                r.secs.0,
                r.secs.1,
                r.decided,
                (r.replica + 1) % self.replicas.len().max(1),
                r.outcomes,
                r.wrong
            )?;
        }
        writeln!(
            f,
            "  decide (other replica) -> caller returns: n={} p50={:.1} ms p99={:.1} ms max={:.1} ms",
            wake.len(),
            percentile(&wake, 0.5),
            percentile(&wake, 0.99),
            percentile(&wake, 1.0)
        )?;
        writeln!(f, "  stored states {:?}", self.states)?;
        write!(
            f,
            "  audit entries {:?}; hash chain and checkpoint roots checked over {} entries",
            self.events, self.chain_rows
        )
    }
}

/// Reads the shared schema after a run: states, audit rows by name, and the chain check.
pub async fn pg_summarize(
    url: &str,
    schema: &str,
    replicas: Vec<ReplicaReport>,
    secs: f64,
) -> Result<PgSummary, String> {
    let store = SqlStore::connect_with(
        SqlStoreOptions::new(url)
            .schema(schema)
            .migrate(false)
            .acquire_timeout(Duration::from_secs(60)),
    )
    .await
    .map_err(|e| format!("PostgreSQL: {e}"))?;
    let mut states = BTreeMap::new();
    for record in store
        .list(&ListFilter::default())
        .await
        .map_err(|e| e.to_string())?
    {
        *states.entry(record.state.to_string()).or_insert(0) += 1;
    }
    let sink = store.audit_sink();
    let mut events: BTreeMap<String, usize> = BTreeMap::new();
    let mut after = 0;
    loop {
        let rows = sink
            .rows(after, 5000)
            .await
            .map_err(|e| format!("audit rows: {e}"))?;
        let Some(last) = rows.last() else { break };
        after = last.line_no;
        // Checkpoint lines carry no event.
        for name in rows.iter().filter_map(|r| r.event.clone()) {
            *events.entry(name).or_insert(0) += 1;
        }
    }
    let chain = sink
        .check_unsigned()
        .await
        .map_err(|e| format!("audit table: {e}"))?;
    if !chain.problems.is_empty() {
        return Err(format!("audit table problems: {:?}", chain.problems));
    }
    store.close().await;
    Ok(PgSummary {
        replicas,
        states,
        events,
        chain_rows: chain.entries,
        secs,
    })
}
