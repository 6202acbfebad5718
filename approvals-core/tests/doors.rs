//! Running in two steps, as doors do (`Gate::start_execution`, `Gate::finish_execution`):
//! only the initiator runs, once, and racing outcome reports record one outcome.

use std::sync::Arc;

use approvals_core::audit::AuditError;
use approvals_core::{
    ActionRequest, AuditEvent, AuditSink, Gate, GuardError, Initiator, MemorySink, Principal,
    RequestState, Requirement, Review, StaticPolicy, Submission,
};
use async_trait::async_trait;

/// A sink that takes a moment for each append, as a sink writing to disk does, so racing
/// tasks overlap.
struct Yielding(Arc<MemorySink>);

#[async_trait]
impl AuditSink for Yielding {
    async fn record(&self, event: &AuditEvent) -> Result<(), AuditError> {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        self.0.record(event).await
    }
}

fn agent() -> Initiator {
    Initiator::agent("billing-agent").on_behalf_of(Principal::human("dana@example.com"))
}

async fn executing(gate: &Gate, audit: &MemorySink) -> approvals_core::RequestId {
    let action = ActionRequest::new("data.export", "db://prod/customers");
    let Ok(Submission::Pending(id)) = gate.submit_as(&agent(), &action).await else {
        panic!("the action goes to review");
    };
    gate.decide(
        id,
        Review::approve(Principal::human("sam@example.com").with_groups(["security"])),
    )
    .await
    .expect("approve");
    let digest = gate.get(id).await.expect("store").expect("request").digest;
    gate.start_execution(id, digest, &agent())
        .await
        .expect("start");
    assert_eq!(
        audit.names().iter().filter(|n| **n == "executed").count(),
        0
    );
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_outcome_reports_record_one_outcome() {
    for round in 0..10 {
        let audit = Arc::new(MemorySink::new());
        let gate = Gate::builder()
            .policy(StaticPolicy::require(Requirement::groups(["security"])))
            .audit(Yielding(audit.clone()))
            .initiator(agent())
            .build()
            .expect("gate");
        let id = executing(&gate, &audit).await;
        let start = Arc::new(tokio::sync::Barrier::new(8));
        let reports: Vec<_> = (0..8)
            .map(|i| {
                let gate = gate.clone();
                let start = start.clone();
                tokio::spawn(async move {
                    let error = (i % 2 == 1).then(|| format!("report {i}"));
                    start.wait().await;
                    gate.finish_execution(id, &agent(), error).await
                })
            })
            .collect();
        let mut recorded = 0;
        for report in reports {
            match report.await.expect("join") {
                Ok(_) => recorded += 1,
                Err(GuardError::GrantUsed { .. }) => {}
                Err(other) => panic!("round {round}: unexpected {other:?}"),
            }
        }
        assert_eq!(recorded, 1, "round {round}: one report is recorded");
        let executed = audit.names().iter().filter(|n| **n == "executed").count();
        assert_eq!(executed, 1, "round {round}: one executed event");
        let state = gate.get(id).await.expect("store").expect("request").state;
        assert!(
            matches!(state, RequestState::Executed | RequestState::Failed),
            "{state}"
        );
    }
}

#[tokio::test]
async fn only_the_initiator_reports_the_outcome() {
    let audit = Arc::new(MemorySink::new());
    let gate = Gate::builder()
        .policy(StaticPolicy::require(Requirement::groups(["security"])))
        .audit_shared(audit.clone())
        .initiator(agent())
        .build()
        .expect("gate");
    let id = executing(&gate, &audit).await;
    let other =
        Initiator::agent("support-agent").on_behalf_of(Principal::human("dana@example.com"));
    assert!(gate.finish_execution(id, &other, None).await.is_err());
    assert_eq!(
        gate.get(id).await.expect("store").expect("request").state,
        RequestState::Executing
    );
    assert_eq!(
        audit.names().iter().filter(|n| **n == "executed").count(),
        0
    );
}
