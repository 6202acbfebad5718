//! A panic in any user-supplied part (policy, store, audit sink, channel, identity resolver)
//! is contained: the caller gets a typed refusal, the action does not run, and the gate goes
//! on working (DESIGN.md invariant 1, fail closed).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use approvals_core::audit::AuditError;
use approvals_core::{
    ActionRequest, Approver, ApproverError, AuditEvent, AuditSink, Component, Decisions, Delivery,
    DispatchReason, Gate, GuardError, IdentityError, IdentityResolver, Initiator, Inserted,
    ListFilter, MemorySink, MemoryStore, Policy, PolicyError, Principal, RequestId, RequestRecord,
    RequestState, Review, ReviewError, RulePolicy, Store, StoreError, Submission, resolve_reviewer,
};
use async_trait::async_trait;
use serde_json::json;

const POLICY: &str = r#"
version = 1
default = "deny"

[[rules]]
name = "reads"
kind = "*.read"
effect = "allow"

[[rules]]
name = "exports"
kind = "data.export"
effect = "require_approval"
approvers = { groups = ["data-owners"] }
"#;

fn policy() -> RulePolicy {
    RulePolicy::from_toml(POLICY).expect("policy")
}

fn sam() -> Principal {
    Principal::human("sam@example.com").with_groups(["data-owners"])
}

fn read() -> ActionRequest {
    ActionRequest::new("db.read", "db://analytics")
}

fn export() -> ActionRequest {
    ActionRequest::new("data.export", "db://prod/customers").params(json!({"rows": 1}))
}

fn builder() -> approvals_core::GateBuilder {
    Gate::builder()
        .initiator(Initiator::agent("bot").on_behalf_of(Principal::human("dana@example.com")))
        .store_timeout(Duration::from_secs(2))
}

/// Runs the action through `gate`, counting whether it ran.
async fn run(gate: &Gate, action: &ActionRequest) -> (Result<(), GuardError>, usize) {
    let ran = AtomicUsize::new(0);
    let result = gate
        .run(action, || async {
            ran.fetch_add(1, Ordering::SeqCst);
            Ok::<_, GuardError>(())
        })
        .await;
    (result, ran.load(Ordering::SeqCst))
}

fn unavailable(err: &GuardError, component: Component) -> bool {
    matches!(err, GuardError::Unavailable { component: c, message } if *c == component && message.contains("panicked"))
}

struct PanickingPolicy;

impl Policy for PanickingPolicy {
    fn evaluate(&self, _: &ActionRequest) -> Result<approvals_core::Decision, PolicyError> {
        panic!("policy bug: index out of bounds")
    }
    fn version(&self) -> &str {
        "panicking"
    }
}

#[tokio::test]
async fn a_panicking_policy_refuses_with_a_typed_error() {
    let audit = Arc::new(MemorySink::new());
    let gate = builder()
        .policy(PanickingPolicy)
        .audit_shared(audit.clone())
        .build()
        .expect("gate");
    for action in [read(), export()] {
        let (result, ran) = run(&gate, &action).await;
        let err = result.expect_err("refused");
        assert!(unavailable(&err, Component::Policy), "{err:?}");
        assert!(err.to_string().contains("index out of bounds"), "{err}");
        assert_eq!(ran, 0);
    }
    // Each refused action is on record as requested, with no policy decision.
    assert_eq!(audit.names(), ["requested", "requested"]);
}

/// Proposing a standing grant asks the same policy: its panic is a refusal too, and nothing is
/// stored.
#[tokio::test]
async fn a_panicking_policy_refuses_a_standing_grant_proposal() {
    let store = Arc::new(MemoryStore::new());
    let gate = builder()
        .policy(PanickingPolicy)
        .store_shared(store.clone())
        .audit(MemorySink::new())
        .build()
        .expect("gate");
    let proposal = approvals_core::StandingProposal {
        kind: "data.export".into(),
        resource: "db://prod/*".into(),
        initiator: Initiator::agent("bot"),
        duration: Duration::from_secs(600),
        uses: 1,
        justification: "month end".into(),
        environment: None,
    };
    let err = gate
        .propose_standing(proposal, Principal::human("kim@example.com"))
        .await
        .expect_err("refused");
    assert!(unavailable(&err, Component::Policy), "{err:?}");
    assert!(err.to_string().contains("index out of bounds"), "{err}");
    assert!(
        store
            .list(&Default::default())
            .await
            .expect("list")
            .is_empty()
    );
}

/// A store whose calls panic while `armed`.
struct PanickingStore {
    inner: MemoryStore,
    armed: AtomicBool,
}

impl PanickingStore {
    fn check(&self) {
        if self.armed.load(Ordering::SeqCst) {
            panic!("store bug");
        }
    }
}

#[async_trait]
impl Store for PanickingStore {
    async fn insert(&self, record: &RequestRecord) -> Result<Inserted, StoreError> {
        self.check();
        self.inner.insert(record).await
    }
    async fn get(&self, id: RequestId) -> Result<Option<RequestRecord>, StoreError> {
        // Panics after a first wait too, not only on the first poll.
        tokio::task::yield_now().await;
        self.check();
        self.inner.get(id).await
    }
    async fn get_by_idempotency_key(&self, key: &str) -> Result<Option<RequestRecord>, StoreError> {
        self.check();
        self.inner.get_by_idempotency_key(key).await
    }
    async fn compare_and_set(&self, v: u64, next: &RequestRecord) -> Result<bool, StoreError> {
        self.check();
        self.inner.compare_and_set(v, next).await
    }
    async fn list(&self, filter: &ListFilter) -> Result<Vec<RequestRecord>, StoreError> {
        self.check();
        self.inner.list(filter).await
    }
}

#[tokio::test]
async fn a_panicking_store_refuses_submits_reviews_and_sweeps() {
    let store = Arc::new(PanickingStore {
        inner: MemoryStore::new(),
        armed: AtomicBool::new(false),
    });
    let gate = builder()
        .policy(policy())
        .audit(MemorySink::new())
        .store_shared(store.clone())
        .build()
        .expect("gate");
    let Submission::Pending(id) = gate.submit(&export()).await.expect("submit") else {
        panic!("pending")
    };
    store.armed.store(true, Ordering::SeqCst);
    let (result, ran) = run(&gate, &export()).await;
    assert!(unavailable(&result.expect_err("refused"), Component::Store));
    assert_eq!(ran, 0);
    let err = gate
        .decide(id, Review::approve(sam()))
        .await
        .expect_err("refused");
    assert!(
        matches!(&err, ReviewError::Unavailable { component: Component::Store, message } if message.contains("panicked")),
        "{err:?}"
    );
    assert!(unavailable(
        &gate.sweep().await.expect_err("refused"),
        Component::Store
    ));
    assert!(unavailable(
        &gate.wait(id).await.expect_err("refused"),
        Component::Store
    ));
    // Disarmed, the same gate works: nothing was poisoned.
    store.armed.store(false, Ordering::SeqCst);
    gate.decide(id, Review::approve(sam()))
        .await
        .expect("approve");
    gate.wait(id).await.expect("grant");
}

/// A sink that panics on the events named in `on`.
struct PanickingSink {
    inner: MemorySink,
    on: &'static [&'static str],
}

#[async_trait]
impl AuditSink for PanickingSink {
    async fn record(&self, event: &AuditEvent) -> Result<(), AuditError> {
        if self.on.contains(&event.name()) {
            panic!("sink bug on {}", event.name());
        }
        self.inner.record(event).await
    }
}

#[tokio::test]
async fn a_panicking_audit_sink_refuses_at_every_step_before_the_action_runs() {
    for step in ["requested", "policy_decided", "grant_consumed"] {
        let gate = builder()
            .policy(policy())
            .audit(PanickingSink {
                inner: MemorySink::new(),
                on: Box::leak(Box::new([step])),
            })
            .build()
            .expect("gate");
        let (result, ran) = run(&gate, &read()).await;
        let err = result.expect_err("refused");
        assert!(unavailable(&err, Component::Audit), "{step}: {err:?}");
        assert_eq!(ran, 0, "{step}");
    }
    // A panic while recording the approval: no grant until it is recorded.
    let sink = Arc::new(PanickingSink {
        inner: MemorySink::new(),
        on: &["approved"],
    });
    let gate = builder()
        .policy(policy())
        .audit_shared(sink.clone())
        .build()
        .expect("gate");
    let Submission::Pending(id) = gate.submit(&export()).await.expect("submit") else {
        panic!("pending")
    };
    let err = gate
        .decide(id, Review::approve(sam()))
        .await
        .expect_err("refused");
    assert!(
        matches!(
            &err,
            ReviewError::Unavailable {
                component: Component::Audit,
                ..
            }
        ),
        "{err:?}"
    );
    let record = gate.get(id).await.expect("get").expect("record");
    assert!(
        record.audit_pending,
        "the approval waits for its audit events"
    );
}

/// A channel that panics on delivery or on update.
struct PanickingApprover {
    on_dispatch: bool,
}

#[async_trait]
impl Approver for PanickingApprover {
    fn name(&self) -> &str {
        "panicking"
    }
    async fn dispatch(
        &self,
        _: &RequestRecord,
        _: DispatchReason,
        _: Arc<dyn Decisions>,
    ) -> Result<Option<Delivery>, ApproverError> {
        if self.on_dispatch {
            panic!("channel bug on dispatch");
        }
        Ok(None)
    }
    async fn resolved(&self, _: &RequestRecord) -> Result<(), ApproverError> {
        panic!("channel bug on update")
    }
}

#[tokio::test]
async fn a_channel_that_panics_on_delivery_cancels_the_request_with_delivery_failed() {
    let audit = Arc::new(MemorySink::new());
    let gate = builder()
        .policy(policy())
        .audit_shared(audit.clone())
        .approver(PanickingApprover { on_dispatch: true })
        .build()
        .expect("gate");
    let (result, ran) = run(&gate, &export()).await;
    let err = result.expect_err("refused");
    match &err {
        GuardError::DeliveryFailed { id, errors } => {
            assert!(errors.contains("panicked"), "{errors}");
            let record = gate.get(*id).await.expect("get").expect("record");
            assert_eq!(record.state, RequestState::Cancelled);
        }
        other => panic!("expected DeliveryFailed, got {other:?}"),
    }
    assert_eq!(ran, 0);
    assert!(audit.names().contains(&"dispatch_failed"));
}

#[tokio::test]
async fn a_channel_that_panics_on_update_is_audited_and_the_decision_stands() {
    let audit = Arc::new(MemorySink::new());
    let gate = builder()
        .policy(policy())
        .audit_shared(audit.clone())
        .approver(PanickingApprover { on_dispatch: false })
        .build()
        .expect("gate");
    let Submission::Pending(id) = gate.submit(&export()).await.expect("submit") else {
        panic!("pending")
    };
    gate.decide(id, Review::approve(sam()))
        .await
        .expect("approve");
    gate.wait(id).await.expect("grant");
    // The update runs in the background; its failure is audited.
    for _ in 0..200 {
        if audit.events().iter().any(|e| {
            e.name() == "dispatch_failed"
                && serde_json::to_value(e).expect("json")["error"]
                    .as_str()
                    .is_some_and(|m| m.contains("panicked"))
        }) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!(
        "no dispatch_failed event for the panicking update: {:?}",
        audit.names()
    );
}

struct PanickingResolver;

#[async_trait]
impl IdentityResolver for PanickingResolver {
    async fn resolve(&self, _: &str, _: &str) -> Result<Principal, IdentityError> {
        panic!("directory bug")
    }
}

struct HangingResolver;

#[async_trait]
impl IdentityResolver for HangingResolver {
    async fn resolve(&self, _: &str, _: &str) -> Result<Principal, IdentityError> {
        std::future::pending().await
    }
}

#[tokio::test]
async fn a_panicking_or_hanging_identity_resolver_is_unavailable() {
    let limit = Duration::from_millis(50);
    let err = resolve_reviewer(&PanickingResolver, "slack", "U1", limit)
        .await
        .expect_err("refused");
    assert!(
        matches!(&err, IdentityError::Unavailable(m) if m.contains("directory bug")),
        "{err:?}"
    );
    let err = resolve_reviewer(&HangingResolver, "slack", "U1", limit)
        .await
        .expect_err("refused");
    assert!(matches!(err, IdentityError::Unavailable(_)), "{err:?}");
    let shared: Arc<dyn IdentityResolver> = Arc::new(PanickingResolver);
    assert!(
        resolve_reviewer(&shared, "teams", "x", limit)
            .await
            .is_err()
    );
}
