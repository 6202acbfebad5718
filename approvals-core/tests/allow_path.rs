//! What one `guard()` call that the policy allows costs in heap allocations: the allow path
//! runs before every privileged action an agent takes, so work that can be done once (when
//! the gate or the policy is built) must not be done per call. The count is exact and does
//! not depend on machine load; `benches/benches/core.rs` measures the time.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use approvals_core::audit::AuditError;
use approvals_core::{ActionRequest, AuditEvent, AuditSink, Gate, Initiator, RulePolicy};
use async_trait::async_trait;
use serde_json::json;

/// A sink that keeps nothing, so the count is the gate's own. It counts the events.
#[derive(Default)]
struct Counted(AtomicUsize);

#[async_trait]
impl AuditSink for Counted {
    async fn record(&self, _event: &AuditEvent) -> Result<(), AuditError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    async fn record_all(&self, events: &[AuditEvent]) -> Result<(), AuditError> {
        self.0.fetch_add(events.len(), Ordering::Relaxed);
        Ok(())
    }
}

/// The bench's policy: 99 rules that do not match, then the one that allows.
fn hundred_rules() -> String {
    let mut policy = String::from("version = 1\ndefault = \"deny\"\n");
    for i in 0..99 {
        policy.push_str(&format!(
            "\n[[rules]]\nname = \"rule-{i}\"\nkind = \"svc{i}.*\"\nresource = \"db://prod/table{i}/*\"\nwhen = [{{ param = \"rows\", gt = {i} }}]\neffect = \"require_approval\"\napprovers = {{ groups = [\"g{i}\"] }}\n"
        ));
    }
    policy.push_str("\n[[rules]]\nname = \"reads\"\nkind = \"warehouse.read\"\nresource = \"db://analytics/*\"\neffect = \"allow\"\n");
    policy
}

#[test]
fn the_allow_path_allocates_only_what_the_call_returns_and_records() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let sink = Arc::new(Counted::default());
    let gate = Gate::builder()
        .policy(RulePolicy::from_toml(&hundred_rules()).expect("policy"))
        .audit(sink.clone())
        .initiator(Initiator::agent("report-bot").model("gpt-5"))
        .build()
        .expect("gate");
    let read = ActionRequest::new("warehouse.read", "db://analytics/events")
        .params(json!({"rows": 500, "columns": ["day", "count"], "filter": "country = 'NL'"}));
    // The first call fills what is made once per thread (the digest's buffer).
    let grant = runtime.block_on(gate.guard(&read)).expect("allowed");
    assert_eq!(grant.policy_rule(), Some("reads"));

    const CALLS: usize = 100;
    // allocation_counter counts this thread's allocations (the runtime's only thread).
    let measured = allocation_counter::measure(|| {
        for _ in 0..CALLS {
            let grant = runtime.block_on(gate.guard(&read)).expect("allowed");
            std::hint::black_box(grant);
        }
    });
    assert_eq!(
        sink.0.load(Ordering::Relaxed),
        2 * (CALLS + 1),
        "two events per call"
    );
    let per_call = measured.count_total as f64 / CALLS as f64;
    let bytes = measured.bytes_total as f64 / CALLS as f64;
    eprintln!("allow path: {per_call} allocations ({bytes} bytes) per guard() call");
    // 4 since the request's text is `ArcStr`s, shared by its copy and by the events (8
    // before: the copy's kind and resource, and the events' kind and resource, were each
    // allocated; 9 before a decision shared the rule's name with the policy; 10 before the
    // request counter's key was static). Among what is left: the boxed submit future and
    // the sink's boxed future. Fewer is better; more is a regression to find.
    assert!(per_call <= 4.0, "{per_call} allocations per call");
}
