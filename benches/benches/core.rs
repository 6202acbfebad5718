//! Core engine: the `guard()` allow path and the `decide()` -> waiting `guard()` round trip.
//!
//! `cargo bench -p approvals-benches --bench core`

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use approvals_core::{
    ActionRequest, Gate, GuardError, Initiator, Principal, Requirement, Review, RulePolicy,
    StaticPolicy, Submission,
};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

#[path = "support/recent_events.rs"]
mod recent_events;
use recent_events::RecentEvents;

/// 99 rules that do not match the benchmarked action, then the one that allows it: the
/// worst case for first-match evaluation.
fn hundred_rules() -> String {
    let mut policy = String::from("version = 1\ndefault = \"deny\"\n");
    for i in 0..99 {
        let _ = write!(
            policy,
            "\n[[rules]]\nname = \"rule-{i}\"\nkind = \"svc{i}.*\"\nresource = \"db://prod/table{i}/*\"\nwhen = [{{ param = \"rows\", gt = {i} }}]\neffect = \"require_approval\"\napprovers = {{ groups = [\"g{i}\"] }}\n"
        );
    }
    policy.push_str("\n[[rules]]\nname = \"reads\"\nkind = \"warehouse.read\"\nresource = \"db://analytics/*\"\neffect = \"allow\"\n");
    policy
}

fn allow_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let policy = RulePolicy::from_toml(&hundred_rules()).expect("policy");
    assert_eq!(policy.len(), 100);
    let gate = Gate::builder()
        .policy(policy)
        .audit(RecentEvents::default())
        .initiator(Initiator::agent("report-bot").model("gpt-5"))
        .build()
        .expect("gate");
    let read = ActionRequest::new("warehouse.read", "db://analytics/events")
        .params(json!({"rows": 500, "columns": ["day", "count"], "filter": "country = 'NL'"}));
    c.bench_function("guard_allow_100_rules", |b| {
        b.to_async(&rt).iter(|| async {
            let grant = gate.guard(&read).await.expect("allowed");
            std::hint::black_box(grant);
        })
    });
}

fn round_trip(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let gate = Gate::builder()
        .policy(StaticPolicy::require(Requirement::users([
            "sam@example.com",
        ])))
        .audit(RecentEvents::default())
        .initiator(Initiator::agent("billing-agent"))
        .build()
        .expect("gate");
    let sam = Principal::human("sam@example.com");
    let mut n = 0u64;
    c.bench_function("decide_to_guard_return_memory", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    n += 1;
                    let export = ActionRequest::new("data.export", "db://prod/customers")
                        .params(json!({"n": n}));
                    let Ok(Submission::Pending(id)) = gate.submit(&export).await else {
                        panic!("expected pending");
                    };
                    let waiter = {
                        let gate = gate.clone();
                        tokio::spawn(async move { gate.wait(id).await })
                    };
                    // Let the waiter run until it parks on its notification.
                    tokio::task::yield_now().await;
                    let start = Instant::now();
                    gate.decide(id, Review::approve(sam.clone()))
                        .await
                        .expect("approve");
                    let grant = waiter.await.expect("join").expect("grant");
                    total += start.elapsed();
                    let done: Result<(), GuardError> = gate
                        .execute(grant, &export, || async { Ok::<_, GuardError>(()) })
                        .await;
                    done.expect("executed");
                }
                total
            })
        })
    });
}

criterion_group!(benches, allow_path, round_trip);

fn parts(c: &mut Criterion) {
    use approvals_core::Policy;
    let policy = RulePolicy::from_toml(&hundred_rules()).expect("policy");
    let read = ActionRequest::new("warehouse.read", "db://analytics/events")
        .params(json!({"rows": 500, "columns": ["day", "count"], "filter": "country = 'NL'"}))
        .initiator(Initiator::agent("report-bot").model("gpt-5"));
    c.bench_function("part_digest", |b| {
        b.iter(|| std::hint::black_box(read.digest()))
    });
    c.bench_function("part_policy_100", |b| {
        b.iter(|| std::hint::black_box(policy.evaluate(&read)))
    });
    // 10,000 rules sharing one kind, each for its own table: the resource index tries the one
    // rule whose prefix the request's resource starts with (issue 19: at most 2 µs).
    let mut shared = String::from("version = 1\ndefault = \"deny\"\n");
    for i in 0..10_000 {
        let _ = write!(
            shared,
            "\n[[rules]]\nname = \"export-{i}\"\nkind = \"data.export\"\nresource = \"db://prod/table{i}/*\"\nwhen = [{{ param = \"rows\", gt = 100 }}]\neffect = \"require_approval\"\napprovers = {{ groups = [\"owners-{i}\"] }}\n"
        );
    }
    let shared = RulePolicy::from_toml(&shared).expect("policy");
    let export = ActionRequest::new("data.export", "db://prod/table9999/rows")
        .params(json!({"rows": 500}))
        .initiator(Initiator::agent("report-bot"));
    assert_eq!(
        shared.evaluate(&export).expect("evaluates").rule(),
        Some("export-9999")
    );
    c.bench_function("part_policy_10k_rules_one_kind", |b| {
        b.iter(|| std::hint::black_box(shared.evaluate(&export)))
    });
    c.bench_function("part_uuid", |b| {
        b.iter(|| std::hint::black_box(approvals_core::RequestId::new()))
    });
    c.bench_function("part_clone_request", |b| {
        b.iter(|| std::hint::black_box(read.clone()))
    });
}
criterion_group!(parts_group, parts);
criterion_main!(benches, parts_group);
