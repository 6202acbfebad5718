//! Audit log: appending events with signed checkpoints to a file or to the SQL store's log
//! table, and verifying a log.
//!
//! `cargo bench -p approvals-benches --bench audit_log` (the PostgreSQL variant of the SQL
//! bench runs when `APPROVALS_TEST_POSTGRES_URL` is set, in a schema of its own)

use std::sync::Arc;
use std::time::{Duration, Instant};

use approvals_audit::SignedLogSink;
use approvals_audit::log::{LogConfig, LogWriter, SyncPolicy, verify_file};
use approvals_audit::note::Signer;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};

const ORIGIN: &str = "audit.example/bench";
/// Entries per checkpoint in every append bench.
const CHECKPOINT_EVERY: u64 = 1000;
/// Entries in the log the verify bench reads.
const VERIFY_ENTRIES: u64 = 1_000_000;

/// A thousand distinct `reviewed` events shaped like the gate's (about 430 bytes each).
fn events() -> Vec<Value> {
    (0..1000)
        .map(|i| {
            json!({
                "schema": 1,
                "at": "2026-11-21T12:00:00.123456Z",
                "event": "reviewed",
                "request_id": format!("0192f5b6-7c1e-7d2a-9f0e-{i:012}"),
                "kind": "iam.role.grant",
                "resource": "iam://prod/roles/admin",
                "digest": format!("sha256:{}", "ab".repeat(32)),
                "reviewer": {"kind": "human", "id": "sam@example.com", "groups": ["sre", "dba"]},
                "verdict": "approve",
                "reason": "CHG-1234 reviewed with the on-call DBA",
                "channel": "slack",
                "approvals": 1,
                "quorum": 1
            })
        })
        .collect()
}

fn signer() -> Signer {
    static KEY: std::sync::OnceLock<Signer> = std::sync::OnceLock::new();
    KEY.get_or_init(|| Signer::generate(ORIGIN).expect("key"))
        .clone()
}

/// A scratch directory removed on drop.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("approvals-bench-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config(sync: SyncPolicy) -> LogConfig {
    LogConfig::new(ORIGIN)
        .checkpoint_every(CHECKPOINT_EVERY)
        .checkpoint_interval(None)
        .sync(sync)
}

/// Which clock a bench reads.
#[derive(Clone, Copy)]
enum Clock {
    /// Elapsed real time: what a caller waits, including time the shared machine gives to
    /// other processes.
    Wall,
    /// Time this thread spent running on a CPU (Linux `/proc/thread-self/schedstat`),
    /// excluding run-queue waits and blocking I/O: what the work costs on an idle machine,
    /// an upper bound on its rate.
    OnCpu,
}

fn on_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map(Duration::from_nanos)
        .unwrap_or_default()
}

/// Measures `f` with `clock`.
fn measure(clock: Clock, f: impl FnOnce()) -> Duration {
    let (wall, cpu) = (Instant::now(), on_cpu());
    f();
    match clock {
        Clock::Wall => wall.elapsed(),
        Clock::OnCpu => on_cpu().saturating_sub(cpu),
    }
}

/// Appends `n` events to a new log and closes it (final checkpoint); returns the time taken.
fn append_run(
    dir: &std::path::Path,
    events: &[Value],
    sync: SyncPolicy,
    n: u64,
    clock: Clock,
) -> Duration {
    let path = dir.join("append.jsonl");
    let _ = std::fs::remove_file(&path);
    measure(clock, || {
        let mut log = LogWriter::create(&path, config(sync), signer()).expect("create");
        for i in 0..n {
            log.append(&events[(i % 1000) as usize]).expect("append");
        }
        log.close().expect("close");
    })
}

fn append(c: &mut Criterion) {
    let dir = Scratch::new("append");
    let events = events();
    let mut group = c.benchmark_group("audit_log");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements(1));
    for (name, sync, clock) in [
        ("append_buffered", SyncPolicy::Buffered, Clock::Wall),
        ("append_batch_1000", SyncPolicy::Batch(1000), Clock::Wall),
        ("append_buffered_on_cpu", SyncPolicy::Buffered, Clock::OnCpu),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| append_run(dir.path(), &events, sync, iters, clock))
        });
    }
    group.finish();
}

/// The gate's path: `SignedLogSink::append` from 64 concurrent tasks, each waiting for its
/// entry to be written (SyncPolicy::Write, group commit on the writer thread).
fn sink(c: &mut Criterion) {
    let dir = Scratch::new("sink");
    let events = Arc::new(events());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("audit_log");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements(1));
    group.bench_function("sink_append_64_tasks_write", |b| {
        b.iter_custom(|iters| {
            let path = dir.path().join("sink.jsonl");
            let _ = std::fs::remove_file(&path);
            let sink = Arc::new(
                SignedLogSink::open(&path, config(SyncPolicy::Write), signer()).expect("open"),
            );
            let start = Instant::now();
            rt.block_on(async {
                let tasks: Vec<_> = (0..64u64)
                    .map(|t| {
                        let (sink, events) = (sink.clone(), events.clone());
                        tokio::spawn(async move {
                            let mut i = t;
                            while i < iters {
                                sink.append(events[(i % 1000) as usize].clone())
                                    .await
                                    .expect("append");
                                i += 64;
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.expect("task");
                }
                sink.close().await.expect("close");
            });
            start.elapsed()
        })
    });
    group.finish();
}

fn verify(c: &mut Criterion) {
    let dir = Scratch::new("verify");
    let events = events();
    append_run(
        dir.path(),
        &events,
        SyncPolicy::Buffered,
        VERIFY_ENTRIES,
        Clock::Wall,
    );
    let path = dir.path().join("append.jsonl");
    let trusted = [signer().verifier()];
    let mut group = c.benchmark_group("audit_log");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements(VERIFY_ENTRIES));
    // Wall clock only: event hashes are computed on every core, which the calling thread's
    // on-CPU time would not count.
    group.bench_function("verify_1m", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    measure(Clock::Wall, || {
                        let report = verify_file(&path, &trusted).expect("verify");
                        assert!(report.is_ok() && report.entries == VERIFY_ENTRIES);
                    })
                })
                .sum()
        })
    });
    group.finish();
}

/// The SQL store's path: `SqlAuditSink::append` (signed, a checkpoint every 1000 entries) from
/// 64 concurrent tasks, each waiting for its entry's commit (group commit on SQLite's writer
/// task or PostgreSQL's audit writer), on an SQLite file and, if configured, PostgreSQL.
fn sql_sink(c: &mut Criterion) {
    use approvals_store_sql::{SqlStore, SqlStoreOptions};
    let events: Arc<Vec<approvals_core::AuditEvent>> = Arc::new(
        events()
            .into_iter()
            .map(|v| serde_json::from_value(v).expect("a gate event"))
            .collect(),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = Scratch::new("sql-sink");
    let mut backends = vec![(
        "sql_sink_append_64_tasks_sqlite",
        format!("sqlite://{}", dir.path().join("audit.db").display()),
        None,
    )];
    if let Ok(url) = std::env::var("APPROVALS_TEST_POSTGRES_URL") {
        let schema = format!("bench_audit_{}", std::process::id());
        backends.push(("sql_sink_append_64_tasks_postgres", url, Some(schema)));
    }
    let mut group = c.benchmark_group("audit_log");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements(1));
    for (name, url, schema) in &backends {
        let mut options = SqlStoreOptions::new(url);
        if let Some(schema) = schema {
            options = options.schema(schema);
        }
        let store = rt
            .block_on(SqlStore::connect_with(options))
            .expect("open the store");
        let sink = store.signed_audit_sink(config(SyncPolicy::Always), signer());
        group.bench_function(*name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                rt.block_on(async {
                    let tasks: Vec<_> = (0..64u64)
                        .map(|t| {
                            let (sink, events) = (sink.clone(), events.clone());
                            tokio::spawn(async move {
                                let mut i = t;
                                while i < iters {
                                    sink.append(&events[(i % 1000) as usize])
                                        .await
                                        .expect("append");
                                    i += 64;
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.expect("task");
                    }
                });
                start.elapsed()
            })
        });
        rt.block_on(store.close());
        if let Some(schema) = schema {
            rt.block_on(async {
                if let Ok(pool) = sqlx::PgPool::connect(url).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
                    )))
                    .execute(&pool)
                    .await;
                }
            });
        }
    }
    group.finish();
}

criterion_group!(benches, append, sink, sql_sink, verify);
criterion_main!(benches);
