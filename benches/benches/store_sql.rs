//! SQL store: full lifecycles per second (request, approve, execute, with every audit event
//! in the hash-chained SQL audit table) on SQLite with durable commits and on PostgreSQL, and
//! the cross-replica wake latency on PostgreSQL.
//!
//! `cargo bench -p approvals-benches --bench store_sql`
//! (set `APPROVALS_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test` for the
//! PostgreSQL figures; without it they are skipped with a notice). PostgreSQL runs with the
//! store's default durability (WAL flushed at the gate's barriers);
//! `APPROVALS_BENCH_DURABILITY=every` makes every commit synchronous instead. After the
//! PostgreSQL lifecycles the bench prints the server's WAL flushes per lifecycle.
//!
//! The wake latency is measured between two stores with their own pools and listener
//! connections (as two replicas have): the time from starting a compare-and-set on replica B
//! until replica A's `changes()` receiver sees it, and from a deny on B until A's waiting
//! `gate.wait()` returns the refusal. p50/p99 are
//! printed after the criterion output.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use approvals_core::{
    ActionRequest, Gate, GateBuilder, GuardError, Initiator, Principal, Requirement, Review,
    StaticPolicy, Store, Submission,
};
use approvals_store_sql::{Durability, SqlStore, SqlStoreOptions};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;

use approvals_testkit::pg::{drop_schema, postgres_url, unique_schema};

#[path = "support/recent_events.rs"]
mod recent_events;
use recent_events::RecentEvents;

/// The bench's gate without its store: the policy and the initiator every lifecycle here uses.
fn builder() -> GateBuilder {
    Gate::builder()
        .policy(StaticPolicy::require(Requirement::groups(["data-owners"])))
        .initiator(
            Initiator::agent("billing-agent").on_behalf_of(Principal::human("dana@example.com")),
        )
}

fn gate(store: &SqlStore, poll: Duration) -> Gate {
    builder()
        .store(store.clone())
        .audit(store.audit_sink())
        .poll_interval(poll)
        .build()
        .expect("gate")
}

/// The same gate on the in-memory store and an in-memory sink: the engine's own share of a
/// lifecycle, with no database, as the reference for the SQL figures.
fn memory_gate() -> Gate {
    builder()
        .store(approvals_core::MemoryStore::new())
        .audit(RecentEvents::default())
        .build()
        .expect("gate")
}

fn sam() -> Principal {
    Principal::human("sam@example.com").with_groups(["data-owners"])
}

static SEQ: AtomicU64 = AtomicU64::new(0);

fn action() -> ActionRequest {
    ActionRequest::new("data.export", "db://prod/customers").params(
        json!({"rows": 5000, "columns": ["email", "plan"], "n": SEQ.fetch_add(1, Ordering::Relaxed)}),
    )
}

/// One full lifecycle: request, approve, wait, execute; 7 audit rows, 4 request writes.
async fn lifecycle(gate: &Gate) {
    let action = action();
    let Ok(Submission::Pending(id)) = gate.submit(&action).await else {
        panic!("approval required");
    };
    gate.decide(id, Review::approve(sam()))
        .await
        .expect("approve");
    let grant = gate.wait(id).await.expect("grant");
    gate.execute(grant, &action, || async { Ok::<_, GuardError>(()) })
        .await
        .expect("execute");
}

/// `n` lifecycles at once.
async fn lifecycles(gate: &Gate, n: usize) {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let gate = gate.clone();
            tokio::spawn(async move { lifecycle(&gate).await })
        })
        .collect();
    for t in tasks {
        t.await.expect("lifecycle");
    }
}

/// The lifecycle without a database: what the gate, the agents and the reviewer cost on their
/// own (the in-memory store keeps every record, so this group runs for a few seconds only).
fn memory_lifecycles(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let gate = memory_gate();
    let mut group = c.benchmark_group("store_memory");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(64));
    group.bench_function("lifecycle_concurrent_64", |b| {
        b.to_async(&rt).iter(|| lifecycles(&gate, 64));
    });
    group.finish();
    cpu_per_lifecycle("memory", &rt, &gate, 64 * 256, 64);
}

/// Runs `n` lifecycles, `at_once` at a time, and prints their rate and this process's CPU
/// time per lifecycle (gate, store, database, hashing): throughput depends on what else the
/// machine runs, the CPU cost shows what idle cores could do.
fn cpu_per_lifecycle(
    name: &str,
    rt: &tokio::runtime::Runtime,
    gate: &Gate,
    n: usize,
    at_once: usize,
) {
    let cpu_before = process_cpu();
    let start = Instant::now();
    rt.block_on(async {
        for _ in 0..n / at_once {
            lifecycles(gate, at_once).await;
        }
    });
    let wall = start.elapsed();
    let cpu = process_cpu().saturating_sub(cpu_before);
    println!(
        "{name}: {n} lifecycles, {at_once} at a time: {:.0} lifecycles/s wall clock; {:.3} ms CPU per lifecycle (about {:.0} lifecycles/s per idle core)",
        n as f64 / wall.as_secs_f64(),
        cpu.as_secs_f64() * 1e3 / n as f64,
        n as f64 / cpu.as_secs_f64().max(1e-9),
    );
}

fn sqlite_lifecycles(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let store = rt
        .block_on(SqlStore::connect_with(
            SqlStoreOptions::new(&url).acquire_timeout(Duration::from_secs(30)),
        ))
        .expect("sqlite");
    let gate = gate(&store, Duration::from_secs(1));
    let mut group = c.benchmark_group("store_sql_sqlite");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(1));
    group.bench_function("lifecycle_sequential", |b| {
        b.to_async(&rt).iter(|| lifecycle(&gate));
    });
    for n in [8, 64, 256] {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("lifecycle_concurrent_{n}"), |b| {
            b.to_async(&rt).iter(|| lifecycles(&gate, n));
        });
    }
    group.finish();

    cpu_per_lifecycle("sqlite", &rt, &gate, 4096, 256);
    rt.block_on(store.close());
}

/// User plus system CPU time of this process so far (Linux `/proc/self/stat`, in 1/100 s).
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// PostgreSQL's durability for the lifecycle figures: the store's default (asynchronous
/// commits, the WAL flushed at the gate's barriers), or every commit at the server's level with
/// `APPROVALS_BENCH_DURABILITY=every`.
fn postgres_durability() -> (Durability, &'static str) {
    if std::env::var("APPROVALS_BENCH_DURABILITY").as_deref() == Ok("every") {
        (Durability::EveryCommit, "store_sql_postgres_every_commit")
    } else {
        (Durability::AtBarriers, "store_sql_postgres")
    }
}

async fn postgres_store(url: &str, schema: &str, app: &str, durability: Durability) -> SqlStore {
    SqlStore::connect_with(
        SqlStoreOptions::new(format!("{url}?application_name={app}"))
            .schema(schema)
            .max_connections(16)
            .durability(durability),
    )
    .await
    .expect("postgres")
}

fn postgres_lifecycles(c: &mut Criterion) {
    let Some(url) = postgres_url("store_sql_postgres") else {
        return;
    };
    let (durability, name) = postgres_durability();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let schema = unique_schema("bench");
    let store = rt.block_on(postgres_store(&url, &schema, "bench", durability));
    let gate = gate(&store, Duration::from_secs(1));
    let mut group = c.benchmark_group(name);
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(1));
    group.bench_function("lifecycle_sequential", |b| {
        b.to_async(&rt).iter(|| lifecycle(&gate));
    });
    for n in [8, 64, 256] {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("lifecycle_concurrent_{n}"), |b| {
            b.to_async(&rt).iter(|| lifecycles(&gate, n));
        });
    }
    group.finish();
    rt.block_on(store.close());

    // WAL flushes per lifecycle, counted by the server (`pg_stat_wal`, which every session
    // reports when it ends, so the store is closed before reading): one agent, then 64.
    for at_once in [1, 64] {
        let n = 512;
        let flushes = rt.block_on(async {
            let app = format!("bench_flushes_{at_once}");
            let before = wal_syncs_once_closed(&url, &app).await;
            let store = postgres_store(&url, &schema, &app, durability).await;
            let gate = crate::gate(&store, Duration::from_secs(1));
            for _ in 0..n / at_once {
                lifecycles(&gate, at_once).await;
            }
            store.close().await;
            wal_syncs_once_closed(&url, &app).await - before
        });
        println!(
            "{name}: {n} lifecycles, {at_once} at a time: {:.2} WAL flushes per lifecycle (pg_stat_wal.wal_sync, whole server)",
            flushes as f64 / n as f64
        );
    }
    rt.block_on(drop_schema(&url, &schema));
}

/// The server's WAL flush count, once `app`'s sessions have ended and reported theirs.
async fn wal_syncs_once_closed(url: &str, app: &str) -> i64 {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
    approvals_testkit::pg::wal_flushes_once_ended(&mut conn, app).await
}

/// Replica A waits; replica B changes the record. Returns the time from B's call to A seeing
/// the notice on `changes()`.
async fn notify_once(a: &SqlStore, b: &SqlStore, gate_b: &Gate) -> Duration {
    let Ok(Submission::Pending(id)) = gate_b.submit(&action()).await else {
        panic!("approval required");
    };
    let mut rx = a.changes().expect("changes");
    let mut record = b.get(id).await.expect("get").expect("exists");
    record.escalated = true;
    let start = Instant::now();
    assert!(
        b.compare_and_set(record.version, &record)
            .await
            .expect("cas")
    );
    loop {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Ok(got)) if got == id => return start.elapsed(),
            Ok(_) => continue,
            Err(_) => panic!("no notification within 5 s"),
        }
    }
}

/// Replica A's `gate.wait()` is pending; replica B denies. Returns the time from B's
/// `decide()` call until A's `wait()` returns the refusal (polling is set to one minute, so
/// only the notification can wake it).
///
/// A deny rather than an approval: an approval is only granted after the reviewer's gate has
/// audited it and cleared `audit_pending` in a second write, and the core's waiter does not
/// listen for store notifications in that state (it polls), so an approval would measure the
/// poll interval instead of the wake-up.
async fn wake_once(gate_a: &Gate, gate_b: &Gate) -> Duration {
    let Ok(Submission::Pending(id)) = gate_a.submit(&action()).await else {
        panic!("approval required");
    };
    let waiter = {
        let gate_a = gate_a.clone();
        tokio::spawn(async move {
            let refused = gate_a.wait(id).await;
            (
                Instant::now(),
                matches!(refused, Err(GuardError::Denied { .. })),
            )
        })
    };
    // Let the waiter subscribe and read the pending record first.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let start = Instant::now();
    gate_b.decide(id, Review::deny(sam())).await.expect("deny");
    let (woke, denied) = waiter.await.expect("waiter");
    assert!(denied, "the waiter sees the deny");
    woke.saturating_duration_since(start)
}

fn percentiles(name: &str, mut samples: Vec<Duration>) {
    samples.sort_unstable();
    let at = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "{name}: n={} p50={:.3} ms p99={:.3} ms max={:.3} ms",
        samples.len(),
        at(0.50).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        at(1.0).as_secs_f64() * 1e3,
    );
}

fn postgres_wake(c: &mut Criterion) {
    let Some(url) = postgres_url("store_sql_postgres_wake") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let schema = unique_schema("bench");
    let open = || SqlStore::connect_with(SqlStoreOptions::new(&url).schema(&schema));
    let a = rt.block_on(open()).expect("replica a");
    let b = rt.block_on(open()).expect("replica b");
    let gate_a = gate(&a, Duration::from_secs(60));
    let gate_b = gate(&b, Duration::from_secs(60));
    let mut group = c.benchmark_group("store_sql_postgres_wake");
    group.sample_size(50);
    group.bench_function("cas_to_other_replica_notice", |bench| {
        bench.to_async(&rt).iter_custom(|iters| {
            let (a, b, gate_b) = (a.clone(), b.clone(), gate_b.clone());
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += notify_once(&a, &b, &gate_b).await;
                }
                total
            }
        });
    });
    group.bench_function("deny_to_other_replica_refusal", |bench| {
        bench.to_async(&rt).iter_custom(|iters| {
            let (gate_a, gate_b) = (gate_a.clone(), gate_b.clone());
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += wake_once(&gate_a, &gate_b).await;
                }
                total
            }
        });
    });
    group.finish();
    let notices = rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..1000 {
            v.push(notify_once(&a, &b, &gate_b).await);
        }
        v
    });
    percentiles("cross-replica notice (CAS on B -> changes() on A)", notices);
    let wakes = rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..300 {
            v.push(wake_once(&gate_a, &gate_b).await);
        }
        v
    });
    percentiles(
        "cross-replica wake (deny on B -> wait() returns on A)",
        wakes,
    );
    rt.block_on(a.close());
    rt.block_on(b.close());
    rt.block_on(drop_schema(&url, &schema));
}

criterion_group!(
    benches,
    memory_lifecycles,
    sqlite_lifecycles,
    postgres_lifecycles,
    postgres_wake
);
criterion_main!(benches);
