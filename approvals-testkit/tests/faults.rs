//! The fault-injection wrappers do what they say: the planned call fails, hangs, answers
//! late or loses its answer after the write, and every other call passes through.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use approvals_core::{
    Approver, ApproverError, AuditSink, Decisions, Delivery, DispatchReason, Gate, GuardError,
    Inserted, ListFilter, MemorySink, MemoryStore, RequestRecord, RequestState, Store, StoreError,
    Submission,
};
use approvals_testkit::faults::{
    Fault, FaultPlan, FaultyApprover, FaultyAudit, FaultyStore, Op, Trigger,
};
use approvals_testkit::fixtures::{clock, epoch, export_request, gate, pending_record};
use async_trait::async_trait;

fn memory() -> Arc<MemoryStore> {
    Arc::new(MemoryStore::new())
}

#[test]
fn a_plan_prints_readably_and_picks_the_first_matching_entry() {
    let plan = FaultPlan::new()
        .on(Op::CompareAndSet, 2, Fault::FailAfterCommit)
        .on_call(5, Fault::Hang)
        .on(
            Op::Dispatch,
            1,
            Fault::RateLimited {
                retry_after_secs: 30,
            },
        )
        .on(Op::Record, 3, Fault::Slow(Duration::from_millis(80)))
        .with(Trigger::Call(5), Fault::Fail);
    assert_eq!(
        plan.to_string(),
        "compare_and_set#2 fail-after-commit, call#5 hang, dispatch#1 429 retry-after 30s, \
         record#3 slow 80ms, call#5 fail"
    );
    assert_eq!(format!("{plan:?}"), format!("FaultPlan({plan})"));
    assert_eq!(FaultPlan::new().to_string(), "no faults");
    assert!(FaultPlan::new().on_call(1, Fault::Pass).is_empty());
    assert!(!plan.is_empty());

    assert_eq!(
        plan.fault_for(Op::CompareAndSet, 9, 2),
        Fault::FailAfterCommit
    );
    assert_eq!(plan.fault_for(Op::CompareAndSet, 9, 3), Fault::Pass);
    // call#5 matches twice: the first entry added wins.
    assert_eq!(plan.fault_for(Op::Get, 5, 1), Fault::Hang);
    assert_eq!(plan.fault_for(Op::Get, 4, 1), Fault::Pass);
}

#[test]
fn a_random_plan_depends_only_on_its_seed() {
    let faults = [Fault::Fail, Fault::Hang, Fault::FailAfterCommit];
    let a = FaultPlan::random(7, &Op::STORE, 20, 4, &faults);
    let b = FaultPlan::random(7, &Op::STORE, 20, 4, &faults);
    assert_eq!(a, b);
    assert_eq!(a.entries().len(), 4);
    for (trigger, fault) in a.entries() {
        let Trigger::OpCall(op, n) = *trigger else {
            panic!("random plans target methods: {a}");
        };
        assert!(Op::STORE.contains(&op) && (1..=20).contains(&n), "{a}");
        assert!(faults.contains(fault), "{a}");
    }
    let others: Vec<FaultPlan> = (8..16)
        .map(|seed| FaultPlan::random(seed, &Op::STORE, 20, 4, &faults))
        .collect();
    assert!(
        others.iter().any(|p| *p != a),
        "different seeds should give different plans"
    );
    assert!(FaultPlan::random(1, &[], 20, 4, &faults).is_empty());
}

#[tokio::test]
async fn store_fail_refuses_only_the_planned_call_and_writes_nothing() {
    let inner = memory();
    let store = FaultyStore::new(
        inner.clone(),
        FaultPlan::new().on(Op::Insert, 2, Fault::Fail),
    );
    let first = pending_record(export_request(), epoch());
    let second = pending_record(export_request(), epoch());
    let third = pending_record(export_request(), epoch());

    assert!(matches!(store.insert(&first).await, Ok(Inserted::Created)));
    let err = store
        .insert(&second)
        .await
        .expect_err("the 2nd insert fails");
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("insert#2"), "{err}");
    assert!(matches!(store.insert(&third).await, Ok(Inserted::Created)));

    assert!(inner.get(second.id).await.expect("get").is_none());
    assert!(inner.get(third.id).await.expect("get").is_some());
    assert_eq!(store.calls(Some(Op::Insert)), 3);
    assert_eq!(store.calls(None), 3);
    let injected = store.injected();
    assert_eq!(injected.len(), 1);
    assert_eq!(injected[0].to_string(), "insert#2 (call#2) fail");
}

#[tokio::test]
async fn store_fail_after_commit_writes_but_reports_an_error() {
    let inner = memory();
    let plan = FaultPlan::new()
        .on(Op::Insert, 1, Fault::FailAfterCommit)
        .on(Op::CompareAndSet, 1, Fault::FailAfterCommit);
    let store = FaultyStore::new(inner.clone(), plan);
    let record = pending_record(export_request(), epoch());

    let err = store.insert(&record).await.expect_err("the answer is lost");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert_eq!(
        inner.get(record.id).await.expect("get").as_ref(),
        Some(&record)
    );

    let mut next = record.clone();
    next.state = RequestState::Cancelled;
    assert!(store.compare_and_set(1, &next).await.is_err());
    let stored = inner.get(record.id).await.expect("get").expect("stored");
    assert_eq!((stored.state, stored.version), (RequestState::Cancelled, 2));
    // The next call passes: the CAS on the stale version now reports the conflict.
    assert_eq!(store.compare_and_set(1, &next).await.ok(), Some(false));
}

#[tokio::test(start_paused = true)]
async fn store_hang_never_answers_and_writes_nothing() {
    let inner = memory();
    let store = FaultyStore::new(inner.clone(), FaultPlan::new().on_call(1, Fault::Hang));
    let record = pending_record(export_request(), epoch());

    let waited = tokio::time::timeout(Duration::from_secs(3600), store.insert(&record)).await;
    assert!(waited.is_err(), "a hang must not answer");
    assert!(inner.get(record.id).await.expect("get").is_none());
    // Call #2 (any method) passes.
    assert!(matches!(store.insert(&record).await, Ok(Inserted::Created)));
    assert_eq!(
        store
            .list(&ListFilter::pending())
            .await
            .map(|l| l.len())
            .ok(),
        Some(1)
    );
}

#[tokio::test(start_paused = true)]
async fn store_slow_answers_after_the_delay() {
    let inner = memory();
    let delay = Duration::from_millis(250);
    let store = FaultyStore::new(
        inner.clone(),
        FaultPlan::new().on(Op::Get, 1, Fault::Slow(delay)),
    );
    let record = pending_record(export_request(), epoch());
    inner.insert(&record).await.expect("insert");

    let started = tokio::time::Instant::now();
    let early = tokio::time::timeout(delay / 2, store.get(record.id)).await;
    assert!(early.is_err(), "the slow call answered before its delay");
    let started_again = tokio::time::Instant::now();
    // That call was dropped; the next get (call #2 of get) passes at once.
    let got = store.get(record.id).await.expect("get");
    assert_eq!(got.map(|r| r.id), Some(record.id));
    assert_eq!(started_again.elapsed(), Duration::ZERO);
    assert!(started.elapsed() >= delay / 2);

    let slow = FaultyStore::new(
        inner.clone(),
        FaultPlan::new().on(Op::Get, 1, Fault::Slow(delay)),
    );
    let started = tokio::time::Instant::now();
    assert!(slow.get(record.id).await.expect("get").is_some());
    assert!(started.elapsed() >= delay);
}

#[tokio::test(start_paused = true)]
async fn audit_faults_decide_what_reaches_the_sink_beneath() {
    let reliable = Arc::new(MemorySink::new());
    let plan = FaultPlan::new()
        .on_call(1, Fault::Fail)
        .on_call(2, Fault::FailAfterCommit)
        .on_call(3, Fault::Hang)
        .on_call(4, Fault::Slow(Duration::from_millis(10)));
    let sink = FaultyAudit::new(reliable.clone(), plan);
    let event = |n: u32| approvals_core::AuditEvent {
        schema: 1,
        at: epoch(),
        request_id: approvals_core::RequestId::new(),
        kind: format!("kind.{n}").into(),
        resource: "r".into(),
        digest: export_request().digest(),
        detail: approvals_core::EventDetail::Expired {},
    };

    assert!(sink.record(&event(1)).await.is_err());
    assert!(sink.record(&event(2)).await.is_err());
    let hung = tokio::time::timeout(Duration::from_secs(60), sink.record(&event(3))).await;
    assert!(hung.is_err(), "a hang must not answer");
    assert!(sink.record(&event(4)).await.is_ok());
    assert!(sink.record(&event(5)).await.is_ok());

    let kinds: Vec<String> = reliable
        .events()
        .into_iter()
        .map(|e| e.kind.to_string())
        .collect();
    assert_eq!(kinds, ["kind.2", "kind.4", "kind.5"]);
    assert_eq!(sink.calls(), 5);
    assert_eq!(sink.injected().len(), 4);
}

/// An approver that counts deliveries.
#[derive(Default)]
struct Counting {
    dispatched: AtomicU32,
    resolved: AtomicU32,
}

#[async_trait]
impl Approver for Counting {
    fn name(&self) -> &str {
        "chat"
    }
    async fn dispatch(
        &self,
        request: &RequestRecord,
        _: DispatchReason,
        _: Arc<dyn Decisions>,
    ) -> Result<Option<Delivery>, ApproverError> {
        self.dispatched.fetch_add(1, Ordering::SeqCst);
        Ok(Some(Delivery {
            channel: "chat".into(),
            reference: serde_json::json!({ "id": request.id.to_string() }),
        }))
    }
    async fn resolved(&self, _: &RequestRecord) -> Result<(), ApproverError> {
        self.resolved.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test]
async fn approver_faults_model_http_429_and_5xx() {
    let counting = Arc::new(Counting::default());
    let plan = FaultPlan::new()
        .on(
            Op::Dispatch,
            1,
            Fault::RateLimited {
                retry_after_secs: 30,
            },
        )
        .on(Op::Dispatch, 2, Fault::ServerError { status: 503 })
        .on(Op::Dispatch, 3, Fault::Fail)
        .on(Op::Dispatch, 4, Fault::FailAfterCommit)
        .on(Op::Resolved, 1, Fault::ServerError { status: 500 });
    let approver = FaultyApprover::new(counting.clone(), plan);
    assert_eq!(approver.name(), "chat");
    let g = gate(memory(), clock(), Arc::new(MemorySink::new()));
    let record = pending_record(export_request(), epoch());
    let dispatch = || approver.dispatch(&record, DispatchReason::New, Arc::new(g.clone()));

    let e = dispatch().await.expect_err("429");
    assert!(
        e.retryable && e.message.contains("HTTP 429") && e.message.contains("Retry-After: 30"),
        "{e}"
    );
    let e = dispatch().await.expect_err("503");
    assert!(e.retryable && e.message.contains("HTTP 503"), "{e}");
    let e = dispatch().await.expect_err("refused");
    assert!(!e.retryable, "{e}");
    assert_eq!(counting.dispatched.load(Ordering::SeqCst), 0);
    let e = dispatch().await.expect_err("lost reply");
    assert!(e.message.contains("502"), "{e}");
    assert_eq!(
        counting.dispatched.load(Ordering::SeqCst),
        1,
        "the message was posted"
    );
    assert!(dispatch().await.expect("5th passes").is_some());
    assert_eq!(counting.dispatched.load(Ordering::SeqCst), 2);

    assert!(approver.resolved(&record).await.is_err());
    assert!(approver.resolved(&record).await.is_ok());
    assert_eq!(counting.resolved.load(Ordering::SeqCst), 1);
    assert_eq!(approver.calls(Some(Op::Dispatch)), 5);
    assert_eq!(approver.calls(None), 7);
}

#[tokio::test(start_paused = true)]
async fn a_gate_over_the_wrappers_fails_closed() {
    // A hung store read is bounded by the gate's store timeout.
    let inner = memory();
    let store = Arc::new(FaultyStore::new(
        inner.clone(),
        FaultPlan::new().on(Op::Get, 1, Fault::Hang),
    ));
    let g = Gate::builder()
        .policy(approvals_core::StaticPolicy::require(
            approvals_core::Requirement::groups(["data-owners"]),
        ))
        .store_shared(store.clone())
        .audit(MemorySink::new())
        .initiator(approvals_testkit::fixtures::billing_agent())
        .store_timeout(Duration::from_millis(50))
        .build()
        .expect("gate");
    let Submission::Pending(id) = g.submit(&export_request()).await.expect("submit") else {
        panic!("approval required");
    };
    let err = g.get(id).await.expect_err("the hung read times out");
    assert!(err.is_retryable(), "{err}");
    assert!(g.get(id).await.expect("the next read passes").is_some());

    // A channel answering 429 to the only dispatch leaves nobody to approve: cancelled.
    let counting = Arc::new(Counting::default());
    let approver = FaultyApprover::new(
        counting.clone(),
        FaultPlan::new().on(
            Op::Dispatch,
            1,
            Fault::RateLimited {
                retry_after_secs: 5,
            },
        ),
    );
    let sink = Arc::new(MemorySink::new());
    let g = Gate::builder()
        .policy(approvals_core::StaticPolicy::require(
            approvals_core::Requirement::groups(["data-owners"]),
        ))
        .store_shared(inner.clone())
        .audit_shared(sink.clone())
        .approver(approver)
        .initiator(approvals_testkit::fixtures::billing_agent())
        .build()
        .expect("gate");
    let err = g
        .submit(&export_request())
        .await
        .expect_err("undeliverable");
    let GuardError::DeliveryFailed { id, errors } = err else {
        panic!("expected DeliveryFailed, got {err}");
    };
    assert!(errors.contains("429"), "{errors}");
    let stored = inner.get(id).await.expect("get").expect("stored");
    assert_eq!(stored.state, RequestState::Cancelled);
    assert!(sink.names().contains(&"dispatch_failed"));
}
