//! `#[requires_approval]` versus the same guard written by hand: both build the same request
//! (kind, resource from two arguments, three parameters), `guard()` it on a gate whose policy
//! allows it, and `execute()` the body. The difference is the macro's overhead.
//!
//! Criterion measures each function alone. On a busy machine the load changes between the
//! two measurements, so `paired` also times them in alternating rounds and prints the medians
//! and their ratio.
//!
//! `cargo bench -p approvals-benches --bench macro_overhead`

use std::hint::black_box;
use std::time::Instant;

use approvals_core::audit::AuditError;
use approvals_core::{
    ActionRequest, AuditEvent, AuditSink, Gate, GuardError, Initiator, StaticPolicy,
    requires_approval,
};
use async_trait::async_trait;
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

/// Discards events, so the bench measures the gate and not a growing buffer.
struct NullSink;

#[async_trait]
impl AuditSink for NullSink {
    async fn record(&self, event: &AuditEvent) -> Result<(), AuditError> {
        black_box(event);
        Ok(())
    }
}

#[requires_approval(kind = "warehouse.read", resource = "db://{db}/{table}", gate = gate)]
async fn annotated(gate: &Gate, db: &str, table: &str, rows: u32) -> Result<u32, GuardError> {
    Ok(rows)
}

async fn hand_written(gate: &Gate, db: &str, table: &str, rows: u32) -> Result<u32, GuardError> {
    let request = ActionRequest::new("warehouse.read", format!("db://{db}/{table}"))
        .params(json!({"db": db, "table": table, "rows": rows}));
    let grant = gate.guard(&request).await?;
    gate.execute(grant, &request, || async move { Ok(rows) })
        .await
}

fn setup() -> (tokio::runtime::Runtime, Gate) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let gate = Gate::builder()
        .policy(StaticPolicy::allow_all())
        .audit(NullSink)
        .initiator(Initiator::agent("report-bot"))
        .build()
        .expect("gate");
    (rt, gate)
}

fn overhead(c: &mut Criterion) {
    let (rt, gate) = setup();

    // Same request, same digest: the two paths do the same work.
    rt.block_on(async {
        assert_eq!(
            annotated(&gate, "analytics", "events", 500).await.ok(),
            Some(500)
        );
        assert_eq!(
            hand_written(&gate, "analytics", "events", 500).await.ok(),
            Some(500)
        );
    });

    let mut group = c.benchmark_group("macro_overhead");
    group.bench_function("annotated", |b| {
        b.to_async(&rt).iter(|| {
            annotated(
                black_box(&gate),
                black_box("analytics"),
                black_box("events"),
                black_box(500),
            )
        })
    });
    group.bench_function("hand_written", |b| {
        b.to_async(&rt).iter(|| {
            hand_written(
                black_box(&gate),
                black_box("analytics"),
                black_box("events"),
                black_box(500),
            )
        })
    });
    group.finish();
}

/// Alternating rounds of each path; prints the median ns per call of each and the ratio.
fn paired(_: &mut Criterion) {
    const ROUNDS: usize = 40;
    const CALLS: u32 = 2_000;
    let (rt, gate) = setup();
    let mut annotated_ns = Vec::with_capacity(ROUNDS);
    let mut hand_ns = Vec::with_capacity(ROUNDS);
    rt.block_on(async {
        for round in 0..ROUNDS {
            for annotated_turn in [round % 2 == 0, round % 2 != 0] {
                let start = Instant::now();
                for _ in 0..CALLS {
                    let out = if annotated_turn {
                        annotated(black_box(&gate), "analytics", "events", black_box(500)).await
                    } else {
                        hand_written(black_box(&gate), "analytics", "events", black_box(500)).await
                    };
                    black_box(out.ok());
                }
                let ns = start.elapsed().as_nanos() as f64 / f64::from(CALLS);
                if annotated_turn {
                    annotated_ns.push(ns);
                } else {
                    hand_ns.push(ns);
                }
            }
        }
    });
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (a, h) = (median(&mut annotated_ns), median(&mut hand_ns));
    println!(
        "macro_overhead/paired: annotated {a:.0} ns, hand_written {h:.0} ns, ratio {:.3} \
         (medians of {ROUNDS} alternating rounds of {CALLS} calls)",
        a / h
    );
}

criterion_group!(benches, overhead, paired);
criterion_main!(benches);
