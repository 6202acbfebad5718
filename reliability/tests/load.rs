//! Load, scaled down for CI: 10,000 pending requests in one process stay within the memory
//! budget (at most 2 KiB of live heap per pending request beyond its parameters, whether
//! submitted to be waited for later or with a waiting agent task each) and all resolve as
//! planned; four replicas with their own pools on one PostgreSQL schema resolve 250 requests
//! each, every decision made on another replica than its waiter.
//!
//! Memory is counted in bytes by this binary's global allocator, so the figure does not depend
//! on machine load. The full-size runs and their figures: `benches/benches/load.rs`,
//! BENCHMARKS.md "Load".

use std::time::Instant;

use approvals_reliability::load::{self, ReplicaOptions};
use approvals_testkit::pg;

#[global_allocator]
static ALLOCATOR: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

fn live_bytes() -> usize {
    ALLOCATOR.allocated()
}

/// The budget from issue 9: live heap per pending request beyond its parameters.
const BUDGET_BYTES: f64 = 2048.0;

/// Tests in this binary run on parallel threads and share the allocator's count: the memory
/// measurement must not overlap another test's allocations.
static MEASURING: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn ten_thousand_waiting_agents_fit_the_memory_budget_and_resolve_as_planned() {
    let _alone = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let report = load::memory_run(10_000, true, live_bytes).expect("memory run");
    println!("{report}");
    report
        .check()
        .expect("every request resolved once, as planned");
    assert!(
        report.params_bytes > 100.0,
        "the parameters were measured: {report}"
    );
    assert!(
        report.overhead_bytes() <= BUDGET_BYTES,
        "{:.0} bytes per pending request beyond its parameters, budget {BUDGET_BYTES}:\n{report}",
        report.overhead_bytes()
    );
    // 424 bytes at the time of writing (the agent's run() future with its references);
    // about 850 when the submission was kept across the wait and the poll had a timer of its own.
    assert!(
        report.run_future_bytes <= 512,
        "a waiting run() holds {} bytes of state",
        report.run_future_bytes
    );
}

#[test]
fn ten_thousand_submitted_requests_fit_the_memory_budget_and_resolve_as_planned() {
    let _alone = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let report = load::memory_run(10_000, false, live_bytes).expect("memory run");
    println!("{report}");
    report
        .check()
        .expect("every request resolved once, as planned");
    assert!(
        report.overhead_bytes() <= BUDGET_BYTES,
        "{:.0} bytes per pending request beyond its parameters, budget {BUDGET_BYTES}:\n{report}",
        report.overhead_bytes()
    );
}

#[test]
fn four_postgres_replicas_resolve_each_others_requests_exactly_once() {
    let Some(url) = pg::postgres_url("four_postgres_replicas_resolve_each_others_requests") else {
        return;
    };
    let _alone = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let schema = pg::unique_schema("load");
    let summary = rt.block_on(async {
        load::pg_prepare(&url, &schema).await?;
        let start = Instant::now();
        let replicas = (0..4).map(|replica| {
            tokio::spawn(load::pg_replica(ReplicaOptions {
                url: url.clone(),
                schema: schema.clone(),
                replica,
                replicas: 4,
                requests: 250,
                expiring_timeout_secs: 3,
                deadline_secs: 240,
            }))
        });
        let mut reports = Vec::new();
        for r in replicas.collect::<Vec<_>>() {
            reports.push(r.await.map_err(|e| format!("replica panicked: {e}"))??);
        }
        let secs = start.elapsed().as_secs_f64();
        load::pg_summarize(&url, &schema, reports, secs).await
    });
    rt.block_on(pg::drop_schema(&url, &schema));
    let summary = summary.expect("replica run");
    println!("{summary}");
    summary
        .check()
        .expect("every request resolved once, as planned");
    let decided: usize = summary.replicas.iter().map(|r| r.decided).sum();
    assert_eq!(
        summary.wake_ms().len(),
        decided,
        "a latency for every request decided on another replica"
    );
}
