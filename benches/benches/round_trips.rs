//! Review round trips, median and p99: from a reviewer's `decide()` call until the agent's
//! waiting `guard()` returns, on the memory, SQLite and PostgreSQL stores, and across two
//! PostgreSQL replicas.
//!
//! `APPROVALS_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test cargo bench -p approvals-benches --bench round_trips`
//! (without the variable the PostgreSQL measurements are skipped with a notice).
//!
//! Every iteration is timed on its own (a fixed count after a warm-up; see
//! `support/latency.rs`), so the figures are medians and p99s of single round trips, not
//! criterion's per-batch means. One iteration: an agent task calls `guard()` on a new export
//! that needs approval; the bench learns the request id from the gate's channel (dispatched,
//! so stored); once the agent waits, the reviewer calls `decide()` with an approval; the time
//! runs from that call until `guard()` returns the grant in the agent's task. The grant is
//! then executed (untimed) so every request ends its lifecycle.
//!
//! - `memory`: `MemoryStore`, audit events to an in-memory sink, current-thread runtime (the
//!   agent parks before the reviewer runs), as `core.rs`'s `decide_to_guard_return_memory`
//!   but through `guard()` and a channel.
//! - `sqlite`: `SqlStore` on a file (WAL, `synchronous=FULL`), audit rows in the same
//!   database through `SqlAuditSink`, multi-thread runtime. Timed: the approval and its
//!   audit rows committed, `audit_pending` cleared, the waiter woken in process, the
//!   `grant_issued` row committed.
//! - `postgres`: the same on PostgreSQL (one replica).
//! - `postgres_cross_replica_deny` / `_approve`: two `SqlStore`s with their own pools and
//!   listeners (two replicas). The agent waits on replica A (polling once a minute, so only
//!   a notification wakes it); the reviewer decides on replica B. Deny: until A's `guard()`
//!   returns the refusal. Approve: until A's `guard()` returns the grant (A is woken by the
//!   approval, sees it still being audited, and is woken again when B clears
//!   `audit_pending`).

#[path = "support/gates.rs"]
mod gates;
#[path = "support/latency.rs"]
mod latency;

use std::time::{Duration, Instant};

use approvals_core::{Gate, GuardError, MemoryStore, RequestId, Review};
use approvals_testkit::pg;
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

/// Longest a step may take before the bench gives up (a hang is a bug, not a figure).
const LIMIT: Duration = Duration::from_secs(60);
/// How long the reviewer waits after the dispatch before deciding on the SQL stores, so the
/// agent has read the pending record and parked (not timed).
const SETTLE: Duration = Duration::from_millis(5);

#[path = "support/recent_events.rs"]
mod recent_events;
use recent_events::RecentEvents;

async fn next_id(ids: &mut UnboundedReceiver<RequestId>) -> RequestId {
    match tokio::time::timeout(LIMIT, ids.recv()).await {
        Ok(Some(id)) => id,
        Ok(None) => panic!("the gate's channel closed"),
        Err(_) => panic!("no request dispatched within {LIMIT:?}"),
    }
}

/// One round trip: the agent waits on `agent`, the reviewer decides on `reviewer_gate`.
/// Returns the time from the `decide()` call until the agent's `guard()` returned.
async fn round_trip(
    agent: &Gate,
    ids: &mut UnboundedReceiver<RequestId>,
    reviewer_gate: &Gate,
    approve: bool,
    settle: Option<Duration>,
) -> Duration {
    let action = gates::action();
    let waiter = {
        let (agent, action) = (agent.clone(), action.clone());
        tokio::spawn(async move {
            let outcome = agent.guard(&action).await;
            (Instant::now(), outcome)
        })
    };
    let id = next_id(ids).await;
    match settle {
        Some(settle) => tokio::time::sleep(settle).await,
        None => tokio::task::yield_now().await,
    }
    let review = if approve {
        Review::approve(gates::reviewer())
    } else {
        Review::deny(gates::reviewer())
    };
    let start = Instant::now();
    reviewer_gate.decide(id, review).await.expect("decide");
    let (returned, outcome) = match tokio::time::timeout(LIMIT, waiter).await {
        Ok(joined) => joined.expect("agent task"),
        Err(_) => panic!("guard() did not return within {LIMIT:?} of the decision"),
    };
    match outcome {
        Ok(grant) if approve => agent
            .execute(grant, &action, || async { Ok::<_, GuardError>(()) })
            .await
            .expect("execute"),
        Err(GuardError::Denied { .. }) if !approve => {}
        other => panic!("unexpected outcome of guard(): {other:?}"),
    }
    returned.saturating_duration_since(start)
}

/// `warmup` untimed then `n` timed round trips.
async fn measure(
    agent: &Gate,
    ids: &mut UnboundedReceiver<RequestId>,
    reviewer_gate: &Gate,
    approve: bool,
    settle: Option<Duration>,
    n: usize,
) -> Value {
    for _ in 0..(n / 10).max(5) {
        round_trip(agent, ids, reviewer_gate, approve, settle).await;
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        samples.push(round_trip(agent, ids, reviewer_gate, approve, settle).await);
    }
    latency::summary(&samples)
}

fn memory() -> Value {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (channel, mut ids) = gates::id_channel();
    let gate = gates::gate(
        MemoryStore::new(),
        RecentEvents::default(),
        channel,
        Duration::from_secs(60),
    );
    rt.block_on(measure(
        &gate,
        &mut ids,
        &gate,
        true,
        None,
        latency::iterations(20_000),
    ))
}

fn sqlite(rt: &tokio::runtime::Runtime) -> Value {
    let dir = tempfile::tempdir().expect("temp dir");
    rt.block_on(async {
        let store = gates::sqlite_store(dir.path()).await;
        let (channel, mut ids) = gates::id_channel();
        let gate = gates::gate(
            store.clone(),
            store.audit_sink(),
            channel,
            Duration::from_secs(60),
        );
        let n = latency::iterations(500);
        let summary = measure(&gate, &mut ids, &gate, true, Some(SETTLE), n).await;
        store.close().await;
        summary
    })
}

fn postgres(rt: &tokio::runtime::Runtime, url: &str) -> Vec<(String, Value)> {
    let schema = pg::unique_schema("bench_rt");
    let results = rt.block_on(async {
        let a = gates::postgres_store(url, &schema).await;
        let b = gates::postgres_store(url, &schema).await;
        let (channel_a, mut ids_a) = gates::id_channel();
        let (channel_b, _ids_b) = gates::id_channel();
        let poll = Duration::from_secs(60);
        let gate_a = gates::gate(a.clone(), a.audit_sink(), channel_a, poll);
        let gate_b = gates::gate(b.clone(), b.audit_sink(), channel_b, poll);
        let n = latency::iterations(500);
        let one = measure(&gate_a, &mut ids_a, &gate_a, true, Some(SETTLE), n).await;
        let n = latency::iterations(300);
        let deny = measure(&gate_a, &mut ids_a, &gate_b, false, Some(SETTLE), n).await;
        let approve = measure(&gate_a, &mut ids_a, &gate_b, true, Some(SETTLE), n).await;
        a.close().await;
        b.close().await;
        vec![
            ("postgres".to_owned(), one),
            ("postgres_cross_replica_deny".to_owned(), deny),
            ("postgres_cross_replica_approve".to_owned(), approve),
        ]
    });
    rt.block_on(pg::drop_schema(url, &schema));
    results
}

fn main() {
    let mut results = vec![("memory".to_owned(), memory())];
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    results.push(("sqlite".to_owned(), sqlite(&rt)));
    if let Some(url) = pg::postgres_url("round_trips postgres") {
        results.extend(postgres(&rt, &url));
    }
    latency::report(
        "round_trips",
        &results,
        json!({
            "timed": "from decide() until the waiting guard() returns",
            "runtimes": {"memory": "current-thread", "sql": "multi-thread, 2 workers"},
        }),
    );
}
