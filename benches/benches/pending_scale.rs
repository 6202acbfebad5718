//! What sweeps and listings cost as history grows: 1,000 pending requests (none due) among
//! 1,000 / 10,000 / 100,000 finished ones, on SQLite (synchronous FULL) and PostgreSQL. A
//! sweep reads only what is due (the `due_at` index) and the first page of pending requests
//! is served by the `(state, created_at)` index, so both should stay flat along the curve.
//!
//! `cargo bench -p approvals-benches --bench pending_scale`
//! (set `APPROVALS_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test` for the
//! PostgreSQL figures; without it they are skipped with a notice). Filling 100,000 rows takes
//! a while before the first figure.
//!
//! With `APPROVALS_BENCH_MILLION=1` the bench also fills each backend with 1,000,000 pending
//! requests (none due) and measures a sweep, the first page of pending requests, and a whole
//! review round trip through the gate (submit, approve, wait) among them; filling takes
//! minutes, and the fill rate is printed.

use std::sync::Arc;
use std::time::Duration;

use approvals_core::{
    Gate, Initiator, ListFilter, Principal, RequestState, Requirement, Review, StaticPolicy, Store,
    Submission,
};
use approvals_store_sql::{SqlStore, SqlStoreOptions};
use approvals_testkit::fixtures::{export_request, pending_record};
use approvals_testkit::pg::{drop_schema, postgres_url, unique_schema};
use chrono::Utc;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use futures::future::join_all;

const PENDING: usize = 1_000;
const HISTORY: [usize; 3] = [1_000, 10_000, 100_000];

fn gate(store: &SqlStore) -> Gate {
    Gate::builder()
        .policy(StaticPolicy::require(Requirement::groups(["data-owners"])))
        .store(store.clone())
        .audit(store.audit_sink())
        .initiator(
            Initiator::agent("billing-agent").on_behalf_of(Principal::human("dana@example.com")),
        )
        .build()
        .expect("gate")
}

/// Adds `n` requests in `state` (pending ones expire in an hour: nothing is due).
async fn fill(store: &Arc<SqlStore>, n: usize, state: RequestState) {
    let mut left = n;
    while left > 0 {
        let chunk: Vec<_> = (0..left.min(512))
            .map(|_| {
                let mut record = pending_record(export_request(), Utc::now());
                record.state = state;
                record
            })
            .collect();
        left -= chunk.len();
        let results = join_all(chunk.iter().map(|r| store.insert(r))).await;
        for result in results {
            result.expect("insert");
        }
    }
    store.sync().await.expect("sync");
}

/// 1,000,000 pending requests: a sweep with nothing due, the first page, and a review round
/// trip through the gate.
fn million(c: &mut Criterion, backend: &str, store: SqlStore, analyze: Option<(&str, &str)>) {
    const MILLION: usize = 1_000_000;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let store = Arc::new(store);
    let started = std::time::Instant::now();
    rt.block_on(fill(&store, MILLION, RequestState::Pending));
    let took = started.elapsed();
    println!(
        "pending_million_{backend}: filled {MILLION} pending requests in {:.0} s ({:.0} inserts/s)",
        took.as_secs_f64(),
        MILLION as f64 / took.as_secs_f64()
    );
    if let Some((url, schema)) = analyze {
        // What the server's autovacuum does within a minute of such a burst of inserts
        // (more than a tenth of the table changed): gather statistics. Without them the
        // planner takes a third of the table to be due.
        rt.block_on(async {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "ANALYZE \"{schema}\".approval_requests"
            )))
            .execute(&mut conn)
            .await
            .expect("analyze");
        });
    }
    let gate = gate(&store);
    let first_page = ListFilter {
        states: vec![RequestState::Pending],
        limit: Some(50),
        ..Default::default()
    };
    let sam = Principal::human("sam@example.com").with_groups(["data-owners"]);
    let mut group = c.benchmark_group(format!("pending_million_{backend}"));
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(5));
    group.bench_function("sweep_nothing_due", |b| {
        b.to_async(&rt).iter(|| async {
            let report = gate.sweep().await.expect("sweep");
            assert_eq!(report.expired, 0);
        })
    });
    group.bench_function("pending_first_page_50", |b| {
        b.to_async(&rt).iter(|| async {
            let page = store.list(&first_page).await.expect("list");
            assert_eq!(page.len(), 50);
        })
    });
    group.bench_function("submit_approve_wait", |b| {
        b.to_async(&rt).iter(|| async {
            let Submission::Pending(id) = gate.submit(&export_request()).await.expect("submit")
            else {
                panic!("approval required");
            };
            gate.decide(id, Review::approve(sam.clone()))
                .await
                .expect("approve");
            gate.wait(id).await.expect("grant");
        })
    });
    group.finish();
    rt.block_on(store.close());
}

fn million_wanted() -> bool {
    std::env::var("APPROVALS_BENCH_MILLION").is_ok_and(|v| v == "1")
}

fn curve(c: &mut Criterion, backend: &str, connect: &dyn Fn(&str) -> SqlStore) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut group = c.benchmark_group(format!("pending_scale_{backend}"));
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(5));
    let first_page = ListFilter {
        states: vec![RequestState::Pending],
        limit: Some(50),
        ..Default::default()
    };
    for (i, history) in HISTORY.into_iter().enumerate() {
        let store = Arc::new(connect(&format!("{i}")));
        rt.block_on(fill(&store, PENDING, RequestState::Pending));
        rt.block_on(fill(&store, history, RequestState::Executed));
        let gate = gate(&store);
        group.bench_with_input(
            BenchmarkId::new("sweep_nothing_due", history),
            &history,
            |b, _| {
                b.to_async(&rt).iter(|| async {
                    let report = gate.sweep().await.expect("sweep");
                    assert_eq!(report.expired, 0);
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("pending_first_page_50", history),
            &history,
            |b, _| {
                b.to_async(&rt).iter(|| async {
                    let page = store.list(&first_page).await.expect("list");
                    assert_eq!(page.len(), 50);
                })
            },
        );
        rt.block_on(store.close());
    }
    group.finish();
}

fn sqlite(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let connect = |name: &str| {
        let url = format!(
            "sqlite://{}",
            dir.path().join(format!("{name}.db")).display()
        );
        rt.block_on(SqlStore::connect(&url)).expect("sqlite")
    };
    curve(c, "sqlite", &connect);
    if million_wanted() {
        million(c, "sqlite", connect("million"), None);
    }
}

fn postgres(c: &mut Criterion) {
    let Some(url) = postgres_url("pending_scale_postgres") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let schemas = std::sync::Mutex::new(Vec::new());
    let connect = |_: &str| {
        let schema = unique_schema("scale");
        schemas.lock().expect("schemas").push(schema.clone());
        rt.block_on(SqlStore::connect_with(
            SqlStoreOptions::new(&url)
                .schema(&schema)
                .max_connections(16),
        ))
        .expect("postgres")
    };
    curve(c, "postgres", &connect);
    if million_wanted() {
        million(c, "postgres", connect("million"), None);
        let store = connect("million_analyzed");
        let schema = schemas
            .lock()
            .expect("schemas")
            .last()
            .cloned()
            .unwrap_or_default();
        million(c, "postgres_analyzed", store, Some((&url, &schema)));
    }
    for schema in schemas.lock().expect("schemas").iter() {
        rt.block_on(drop_schema(&url, schema));
    }
}

criterion_group!(benches, sqlite, postgres);
criterion_main!(benches);
