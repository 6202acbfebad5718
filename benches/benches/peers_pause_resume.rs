//! Pause and resume for a human, against LangGraph: our `guard()` / `decide()` on the SQLite
//! store, the peer of LangGraph's `interrupt()` / `Command(resume=...)` with `SqliteSaver`
//! (`benches/peers/langgraph/pause_resume.py`, run by `benches/compare` in the same run).
//!
//! `cargo bench -p approvals-benches --bench peers_pause_resume`
//!
//! One iteration, timed on its own (see `support/latency.rs`), on a new export that needs
//! approval:
//!
//! 1. pause: an agent task calls `guard()`; the policy asks for approval, the request and
//!    its audit rows are committed and the request is dispatched to the gate's channel. The
//!    pause ends when the bench receives the id from the channel: the request is pending and
//!    durable (LangGraph: `invoke()` returns with `__interrupt__`, the checkpoint committed).
//! 2. resume: the reviewer calls `decide()` with an approval (the approval, its audit rows
//!    and the cleared `audit_pending` committed), the agent's `guard()` returns its grant
//!    (`grant_issued` committed) and `execute()` consumes it, runs the action and records
//!    the outcome (LangGraph: `invoke(Command(resume=...))` loads the checkpoint, finishes
//!    the interrupted node and runs the action node, committing checkpoints).
//!
//! Durability is the same on both sides: our SQLite store runs in WAL mode with
//! `synchronous=FULL` (the store does not offer another setting), and LangGraph's
//! `SqliteSaver` sets WAL and keeps Python sqlite3's default `synchronous=FULL` (its JSON
//! output reports both pragmas), committing after every write; the graph runs with
//! `durability="sync"`. Both sync the WAL on every commit. What each side writes differs:
//! ours keeps the request record and a hash-chained audit row per event in the same
//! database; the JSON below counts both sides' rows per iteration.

#[path = "support/gates.rs"]
mod gates;
#[path = "support/latency.rs"]
mod latency;

use std::time::{Duration, Instant};

use approvals_core::{Gate, GuardError, RequestId, Review};
use serde_json::json;
use sqlx::Connection as _;
use tokio::sync::mpsc::UnboundedReceiver;

const LIMIT: Duration = Duration::from_secs(60);

/// One pause and resume; returns (pause, resume).
async fn pause_resume(gate: &Gate, ids: &mut UnboundedReceiver<RequestId>) -> (Duration, Duration) {
    let action = gates::action();
    let start = Instant::now();
    let waiter = {
        let (gate, action) = (gate.clone(), action.clone());
        tokio::spawn(async move { gate.guard(&action).await })
    };
    let id = match tokio::time::timeout(LIMIT, ids.recv()).await {
        Ok(Some(id)) => id,
        _ => panic!("the request was not dispatched within {LIMIT:?}"),
    };
    let paused = Instant::now();
    gate.decide(id, Review::approve(gates::reviewer()))
        .await
        .expect("approve");
    let grant = match tokio::time::timeout(LIMIT, waiter).await {
        Ok(joined) => joined.expect("agent task").expect("grant"),
        Err(_) => panic!("guard() did not return within {LIMIT:?} of the approval"),
    };
    gate.execute(grant, &action, || async { Ok::<_, GuardError>(()) })
        .await
        .expect("execute");
    let done = Instant::now();
    (paused - start, done - paused)
}

/// Rows in a table of the SQLite file.
async fn rows(url: &str, table: &str) -> i64 {
    let mut conn = sqlx::sqlite::SqliteConnection::connect(url)
        .await
        .expect("SQLite connection for counting");
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
        .fetch_one(&mut conn)
        .await
        .expect("count")
}

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let (results, iterations, journal, synchronous) = rt.block_on(async {
        let store = gates::sqlite_store(dir.path()).await;
        let (channel, mut ids) = gates::id_channel();
        let gate = gates::gate(
            store.clone(),
            store.audit_sink(),
            channel,
            Duration::from_secs(60),
        );
        let n = latency::iterations(1000);
        let warmup = (n / 10).max(5);
        for _ in 0..warmup {
            pause_resume(&gate, &mut ids).await;
        }
        let (mut pauses, mut resumes, mut totals) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..n {
            let (pause, resume) = pause_resume(&gate, &mut ids).await;
            pauses.push(pause);
            resumes.push(resume);
            totals.push(pause + resume);
        }
        let mut conn = sqlx::sqlite::SqliteConnection::connect(&url)
            .await
            .expect("SQLite connection for the pragmas");
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut conn)
            .await
            .expect("journal_mode");
        drop(conn);
        store.close().await;
        (
            vec![
                ("total".to_owned(), latency::summary(&totals)),
                ("pause".to_owned(), latency::summary(&pauses)),
                ("resume".to_owned(), latency::summary(&resumes)),
            ],
            n + warmup,
            journal,
            // Set by the store on every connection (a per-connection pragma).
            "FULL",
        )
    });
    let per = |rows: i64| rows as f64 / iterations as f64;
    let (requests, audit) = rt.block_on(async {
        (
            rows(&url, "approval_requests").await,
            rows(&url, "approval_audit_log").await,
        )
    });
    latency::report(
        "peers_pause_resume",
        &results,
        json!({
            "store": "SqlStore on SQLite, audit rows in the same file (SqlAuditSink)",
            "sqlite_journal_mode": journal,
            "sqlite_synchronous": synchronous,
            "request_rows_per_iteration": per(requests),
            "audit_rows_per_iteration": per(audit),
        }),
    );
}
