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
//! Durability: LangGraph's `SqliteSaver` sets WAL and keeps Python sqlite3's default
//! `synchronous=FULL` (its JSON output reports both pragmas), committing after every write;
//! the graph runs with `durability="sync"`, so every checkpoint is on disk before `invoke()`
//! returns. Ours is measured twice in one run: with the store's default
//! (`Durability::AtBarriers`: WAL mode, commits not synced one by one, the WAL synced at each
//! barrier the gate raises before anything leaves the process, so the pause ends with the
//! request on disk and the action runs only once its consumed grant is) and with
//! `Durability::EveryCommit` (`synchronous=FULL`, every commit synced, as LangGraph). What
//! each side writes differs: ours keeps the request record and a hash-chained audit row per
//! event in the same database; the JSON below counts both sides' rows per iteration, and our
//! commits and syncs per iteration.

#[path = "support/gates.rs"]
mod gates;
#[path = "support/latency.rs"]
mod latency;

use std::time::{Duration, Instant};

use approvals_core::{Gate, GuardError, RequestId, Review};
use approvals_store_sql::{Durability, SyncStats};
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

/// What one run of `n` iterations (after warm-up) measured on a store syncing as `durability`.
struct Run {
    results: Vec<(String, serde_json::Value)>,
    iterations: usize,
    journal: String,
    requests: i64,
    audit: i64,
    stats: SyncStats,
}

async fn measure(durability: Durability, suffix: &str) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let store = gates::sqlite_store_with(dir.path(), durability).await;
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
    let start = store.sync_stats();
    let (mut pauses, mut resumes, mut totals) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        let (pause, resume) = pause_resume(&gate, &mut ids).await;
        pauses.push(pause);
        resumes.push(resume);
        totals.push(pause + resume);
    }
    let end = store.sync_stats();
    let mut conn = sqlx::sqlite::SqliteConnection::connect(&url)
        .await
        .expect("SQLite connection for the pragmas");
    let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .expect("journal_mode");
    drop(conn);
    store.close().await;
    let (requests, audit) = (
        rows(&url, "approval_requests").await,
        rows(&url, "approval_audit_log").await,
    );
    Run {
        results: vec![
            (format!("total{suffix}"), latency::summary(&totals)),
            (format!("pause{suffix}"), latency::summary(&pauses)),
            (format!("resume{suffix}"), latency::summary(&resumes)),
        ],
        iterations: n + warmup,
        journal,
        requests,
        audit,
        stats: SyncStats {
            commits: end.commits - start.commits,
            syncs: end.syncs - start.syncs,
            unsynced: end.unsynced,
        },
    }
}

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // The default first: WAL synced at the gate's barriers. Then every commit synced by
    // SQLite itself (`synchronous=FULL`), as LangGraph's saver does.
    // `APPROVALS_BENCH_DURABILITY=barriers` measures only the default (for `strace -c`).
    let only_barriers = std::env::var("APPROVALS_BENCH_DURABILITY").as_deref() == Ok("barriers");
    let barriers = rt.block_on(measure(Durability::AtBarriers, ""));
    let every_commit =
        (!only_barriers).then(|| rt.block_on(measure(Durability::EveryCommit, "_every_commit")));
    let n = latency::iterations(1000) as f64;
    let per = |rows: i64, run: &Run| rows as f64 / run.iterations as f64;
    let request_rows = per(barriers.requests, &barriers);
    let audit_rows = per(barriers.audit, &barriers);
    let mut results = barriers.results;
    if let Some(every_commit) = every_commit {
        results.extend(every_commit.results);
    }
    latency::report(
        "peers_pause_resume",
        &results,
        json!({
            "store": "SqlStore on SQLite, audit rows in the same file (SqlAuditSink)",
            "sqlite_journal_mode": barriers.journal,
            "sqlite_synchronous": "NORMAL, with the WAL synced (fdatasync) at each barrier",
            "every_commit_synchronous": "FULL",
            "commits_per_iteration": barriers.stats.commits as f64 / n,
            "syncs_per_iteration": barriers.stats.syncs as f64 / n,
            "request_rows_per_iteration": request_rows,
            "audit_rows_per_iteration": audit_rows,
        }),
    );
}
