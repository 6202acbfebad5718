//! Policy evaluation against peers: our `RulePolicy` and the full `guard()` allow path next to
//! Cedar (`cedar-policy`) and Rego (`regorus`) evaluating the same 100 rules on the same
//! requests. The rule set, the translations and the equivalence check live in
//! `support/policy_peers.rs`; the check runs first and the bench panics if any engine
//! disagrees with `RulePolicy` on any request of the check set.
//!
//! `cargo bench -p approvals-benches --bench peers_policy`
//!
//! Groups, one per request (`match_last`, `match_middle`, `no_match`), each with:
//!
//! - `rulepolicy_evaluate`: `RulePolicy::evaluate(&ActionRequest)`.
//! - `cedar_is_authorized`: `Authorizer::is_authorized` on a `Request` and `Entities` built
//!   beforehand (evaluation only: the figure compared with ours, since ours also starts from
//!   a request that already exists).
//! - `cedar_build_inputs`: building that `Request` (context from the request's JSON) and the
//!   `Entities` (the initiating agent) from the `ActionRequest`: what an integration pays on
//!   top of evaluation.
//! - `regorus_eval`: `set_input` with an input `Value` built beforehand and `eval_rule`.
//! - `regorus_build_input`: building that input `Value` from the `ActionRequest`.
//!
//! and, for `match_last` (the allow), `guard_allow`: the whole `guard()` allow path (digest,
//! policy, two audit events to an in-memory sink, grant), as `core.rs`'s
//! `guard_allow_100_rules`.

#[path = "support/policy_peers.rs"]
mod policy_peers;

use std::hint::black_box;

use approvals_core::{Gate, Policy as _};
use cedar_policy::Authorizer;
use criterion::{Criterion, criterion_group, criterion_main};

#[path = "support/recent_events.rs"]
mod recent_events;
use recent_events::RecentEvents;

fn peers_policy(c: &mut Criterion) {
    match policy_peers::check_equivalence() {
        Ok(n) => println!(
            "peers_policy: RulePolicy, Cedar and Rego agree on all {n} requests of the check set"
        ),
        Err(disagreements) => {
            panic!("peers_policy: the engines disagree, not measuring:\n{disagreements}")
        }
    }

    let policy = policy_peers::rule_policy();
    let cedar_set = policy_peers::cedar_policy_set();
    let authorizer = Authorizer::new();
    let mut engine = policy_peers::rego_engine();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let gate = Gate::builder()
        .policy(policy_peers::rule_policy())
        .audit(RecentEvents::default())
        .initiator(policy_peers::initiator())
        .build()
        .expect("gate");

    for (name, request) in policy_peers::bench_requests() {
        let (cedar_request, entities) = policy_peers::cedar_inputs(&request);
        let input = policy_peers::rego_input(&request);
        let mut group = c.benchmark_group(format!("peers_policy/{name}"));
        group.bench_function("rulepolicy_evaluate", |b| {
            b.iter(|| black_box(policy.evaluate(black_box(&request))))
        });
        group.bench_function("cedar_is_authorized", |b| {
            b.iter(|| {
                black_box(authorizer.is_authorized(
                    black_box(&cedar_request),
                    &cedar_set,
                    &entities,
                ))
            })
        });
        group.bench_function("cedar_build_inputs", |b| {
            b.iter(|| black_box(policy_peers::cedar_inputs(black_box(&request))))
        });
        group.bench_function("regorus_eval", |b| {
            b.iter(|| {
                engine.set_input(black_box(input.clone()));
                black_box(engine.eval_rule(policy_peers::REGO_RULE.into()))
            })
        });
        group.bench_function("regorus_build_input", |b| {
            b.iter(|| black_box(policy_peers::rego_input(black_box(&request))))
        });
        if name == "match_last" {
            group.bench_function("guard_allow", |b| {
                b.to_async(&rt).iter(|| async {
                    let grant = gate.guard(&request).await.expect("allowed");
                    black_box(grant);
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, peers_policy);
criterion_main!(benches);
