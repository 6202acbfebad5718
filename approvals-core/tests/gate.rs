//! The gate's rules, each tested by trying to break it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use approvals_core::audit::AuditError;
use approvals_core::{
    ActionRequest, Approver, ApproverError, AuditEvent, AuditSink, Component, Decision, Decisions,
    Delivery, DispatchReason, Escalation, Gate, GuardError, Initiator, ListFilter, ManualClock,
    MemorySink, MemoryStore, Policy, PolicyError, Principal, RequestId, RequestRecord,
    RequestState, Requirement, Review, ReviewError, RulePolicy, StaticPolicy, Store, StoreError,
    Submission,
};
use async_trait::async_trait;
use chrono::TimeDelta;
use serde_json::json;

const POLICY: &str = r#"
version = 1
default = "deny"

[[rules]]
name = "reads"
kind = "*.read"
effect = "allow"

[[rules]]
name = "drops"
kind = "db.drop"
effect = "deny"
reason = "Dropping databases is never automated; open a change ticket."

[[rules]]
name = "exports"
kind = "data.export"
effect = "require_approval"
approvers = { groups = ["data-owners"] }
timeout = "30m"

[[rules]]
name = "roles"
kind = "iam.role.grant"
effect = "require_approval"
approvers = { groups = ["security", "admins"] }
quorum = 2
reason_required = true
timeout = "1h"
escalate = { after = "20m", groups = ["security-oncall"] }
"#;

fn dana() -> Principal {
    Principal::human("dana@example.com").with_groups(["data-owners", "security", "admins"])
}
fn sam() -> Principal {
    Principal::human("sam@example.com").with_groups(["data-owners", "security"])
}
fn kim() -> Principal {
    Principal::human("kim@example.com").with_groups(["security"])
}
fn oncall() -> Principal {
    Principal::human("oli@example.com").with_groups(["security-oncall"])
}
fn outsider() -> Principal {
    Principal::human("eve@example.com").with_groups(["marketing"])
}

fn agent() -> Initiator {
    Initiator::agent("billing-agent")
        .on_behalf_of(dana())
        .model("gpt-5")
}

fn export(rows: u64) -> ActionRequest {
    ActionRequest::new("data.export", "db://prod/customers")
        .params(json!({"rows": rows, "format": "csv"}))
        .environment("production")
        .justification("quarterly churn report")
}

fn role_grant() -> ActionRequest {
    ActionRequest::new("iam.role.grant", "iam://prod/roles/admin")
        .params(json!({"user": "bob", "role": "admin"}))
}

struct Fixture {
    gate: Gate,
    audit: Arc<MemorySink>,
    clock: Arc<ManualClock>,
    store: Arc<MemoryStore>,
    channel: Arc<RecordingApprover>,
}

impl Fixture {
    fn new() -> Self {
        Self::with_policy(RulePolicy::from_toml(POLICY).expect("valid policy"))
    }

    fn with_policy(policy: impl Policy) -> Self {
        let audit = Arc::new(MemorySink::new());
        let clock = Arc::new(ManualClock::new(
            "2026-11-21T12:00:00Z".parse().expect("time"),
        ));
        let store = Arc::new(MemoryStore::new());
        let channel = Arc::new(RecordingApprover::default());
        let gate = Gate::builder()
            .policy(policy)
            .audit_shared(audit.clone())
            .store_shared(store.clone())
            .clock(clock.clone())
            .approver_shared(channel.clone())
            .initiator(agent())
            .grant_ttl(Duration::from_secs(300))
            .build()
            .expect("gate");
        Fixture {
            gate,
            audit,
            clock,
            store,
            channel,
        }
    }

    async fn pending(&self, action: &ActionRequest) -> RequestId {
        match self.gate.submit(action).await.expect("submitted") {
            Submission::Pending(id) => id,
            Submission::Allowed(_) => panic!("expected a pending request"),
        }
    }

    async fn state(&self, id: RequestId) -> RequestState {
        self.gate
            .get(id)
            .await
            .expect("store")
            .expect("record")
            .state
    }

    fn count(&self, name: &str) -> usize {
        self.audit.names().iter().filter(|n| **n == name).count()
    }
}

/// Counts deliveries and resolution updates.
#[derive(Default)]
struct RecordingApprover {
    dispatched: AtomicUsize,
    redeliveries: AtomicUsize,
    escalations: AtomicUsize,
    resolved: std::sync::Mutex<Vec<RequestState>>,
    fail: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl Approver for RecordingApprover {
    fn name(&self) -> &str {
        "recording"
    }

    async fn dispatch(
        &self,
        request: &RequestRecord,
        reason: DispatchReason,
        _decisions: Arc<dyn Decisions>,
    ) -> Result<Option<Delivery>, ApproverError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(ApproverError::new("recording", "chat API returned 500"));
        }
        match reason {
            DispatchReason::Escalation => {
                self.escalations.fetch_add(1, Ordering::SeqCst);
            }
            DispatchReason::Redelivery => {
                self.redeliveries.fetch_add(1, Ordering::SeqCst);
                self.dispatched.fetch_add(1, Ordering::SeqCst);
            }
            _ => {
                self.dispatched.fetch_add(1, Ordering::SeqCst);
            }
        }
        Ok(Some(Delivery {
            channel: "recording".into(),
            reference: json!({ "message": request.id.to_string() }),
        }))
    }

    async fn resolved(&self, request: &RequestRecord) -> Result<(), ApproverError> {
        self.resolved.lock().expect("lock").push(request.state);
        Ok(())
    }
}

type Ran = Arc<AtomicUsize>;

async fn run_counted(gate: &Gate, action: &ActionRequest, ran: &Ran) -> Result<(), GuardError> {
    gate.run(action, || async {
        ran.fetch_add(1, Ordering::SeqCst);
        Ok::<_, GuardError>(())
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Policy outcomes.

#[tokio::test]
async fn allowed_action_runs_once_and_is_audited() {
    let f = Fixture::new();
    let ran = Ran::default();
    run_counted(
        &f.gate,
        &ActionRequest::new("db.read", "db://analytics/events"),
        &ran,
    )
    .await
    .expect("allowed");
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    assert_eq!(
        f.audit.names(),
        ["requested", "policy_decided", "grant_consumed", "executed"]
    );
    assert!(
        f.store.is_empty(),
        "allowed actions are not stored as requests"
    );
}

#[tokio::test]
async fn policy_deny_refuses_with_the_rule_and_reason() {
    let f = Fixture::new();
    let ran = Ran::default();
    let err = run_counted(&f.gate, &ActionRequest::new("db.drop", "db://prod"), &ran)
        .await
        .expect_err("denied");
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    match &err {
        GuardError::PolicyDenied { rule, reason, .. } => {
            assert_eq!(rule, "drops");
            assert!(reason.contains("change ticket"));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        err.to_string().contains("denied by policy rule \"drops\""),
        "{err}"
    );
    let events = f.audit.events();
    let decided = events
        .iter()
        .find(|e| e.name() == "policy_decided")
        .expect("decision audited");
    let json = serde_json::to_value(decided).expect("json");
    assert_eq!(json["decision"]["outcome"], "deny");
    assert_eq!(json["policy_version"], f.gate.policy_version());
}

#[tokio::test]
async fn unmatched_action_falls_to_the_explicit_default() {
    let f = Fixture::new();
    let err = f
        .gate
        .guard(&ActionRequest::new("k8s.delete", "x"))
        .await
        .expect_err("default deny");
    assert!(
        matches!(err, GuardError::PolicyDenied { ref rule, .. } if rule == "default"),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Approval flow.

#[tokio::test]
async fn approved_action_runs_once_with_the_full_audit_trail() {
    let f = Fixture::new();
    let ran = Ran::default();
    let gate = f.gate.clone();
    let ran2 = ran.clone();
    let agent_task = tokio::spawn(async move { run_counted(&gate, &export(5000), &ran2).await });
    let id = loop {
        if let Some(r) = f.gate.pending().await.expect("list").first() {
            break r.id;
        }
        tokio::task::yield_now().await;
    };
    assert_eq!(
        ran.load(Ordering::SeqCst),
        0,
        "nothing runs before approval"
    );
    let outcome = f
        .gate
        .decide(id, Review::approve(sam()).via("test"))
        .await
        .expect("approve");
    assert_eq!(outcome.state, RequestState::Approved);
    agent_task.await.expect("join").expect("granted and ran");
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    assert_eq!(f.state(id).await, RequestState::Executed);
    assert_eq!(
        f.audit.names(),
        [
            "requested",
            "policy_decided",
            "dispatched",
            "reviewed",
            "approved",
            "grant_issued",
            "grant_consumed",
            "executed"
        ]
    );
    assert_eq!(f.channel.dispatched.load(Ordering::SeqCst), 1);
    // The channel is told about approval and execution (in the background).
    for _ in 0..100 {
        if f.channel.resolved.lock().expect("lock").len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        *f.channel.resolved.lock().expect("lock"),
        [RequestState::Approved, RequestState::Executed]
    );
}

#[tokio::test]
async fn deny_refuses_with_who_and_why_and_late_clicks_are_told() {
    let f = Fixture::new();
    let id = f.pending(&export(10)).await;
    f.gate
        .decide(id, Review::deny(sam()).reason("wrong customer segment"))
        .await
        .expect("deny");
    let err = f.gate.wait(id).await.expect_err("denied");
    assert!(
        matches!(&err, GuardError::Denied { by, reason: Some(r), .. } if by == "sam@example.com" && r == "wrong customer segment"),
        "{err:?}"
    );
    let late = f
        .gate
        .decide(id, Review::approve(kim().with_groups(["data-owners"])))
        .await
        .expect_err("late");
    assert!(matches!(
        late,
        ReviewError::AlreadyDecided {
            state: RequestState::Denied,
            ..
        }
    ));
    assert!(
        late.to_string()
            .contains("already denied by sam@example.com"),
        "{late}"
    );
    assert_eq!(f.count("review_rejected"), 1);
}

#[tokio::test]
async fn quorum_needs_distinct_humans_and_one_person_counts_once() {
    let f = Fixture::new();
    let id = f.pending(&role_grant()).await;
    let first = f
        .gate
        .decide(id, Review::approve(sam()).reason("ticket SEC-1"))
        .await
        .expect("first");
    assert_eq!(
        (first.state, first.approvals, first.quorum),
        (RequestState::Pending, 1, 2)
    );
    // The same person again, under a differently cased id: still one person.
    let again = Principal::human("SAM@example.com ").with_groups(["security"]);
    let err = f
        .gate
        .decide(id, Review::approve(again).reason("again"))
        .await
        .expect_err("duplicate");
    assert!(
        matches!(err, ReviewError::AlreadyReviewed { .. }),
        "{err:?}"
    );
    assert_eq!(f.state(id).await, RequestState::Pending);
    let second = f
        .gate
        .decide(id, Review::approve(kim()).reason("ok"))
        .await
        .expect("second");
    assert_eq!(
        (second.state, second.approvals),
        (RequestState::Approved, 2)
    );
    let grant = f.gate.wait(id).await.expect("grant");
    let names: Vec<&str> = grant.approvers().iter().map(|p| p.id.as_str()).collect();
    assert_eq!(names, ["sam@example.com", "kim@example.com"]);
}

#[tokio::test]
async fn reason_is_enforced_when_the_policy_requires_it() {
    let f = Fixture::new();
    let id = f.pending(&role_grant()).await;
    let err = f
        .gate
        .decide(id, Review::approve(sam()))
        .await
        .expect_err("no reason");
    assert!(matches!(err, ReviewError::ReasonRequired { .. }));
    let err = f
        .gate
        .decide(id, Review::approve(sam()).reason("   "))
        .await
        .expect_err("blank reason");
    assert!(matches!(err, ReviewError::ReasonRequired { .. }));
    assert_eq!(
        f.gate
            .get(id)
            .await
            .expect("store")
            .expect("record")
            .reviews
            .len(),
        0
    );
}

// ---------------------------------------------------------------------------------------------
// Who may review.

#[tokio::test]
async fn agents_and_services_can_never_review() {
    let f = Fixture::new();
    let id = f.pending(&export(1)).await;
    for bot in [
        Principal::agent("reviewer-bot").with_groups(["data-owners"]),
        Principal::service("ci").with_groups(["data-owners"]),
    ] {
        let err = f
            .gate
            .decide(id, Review::approve(bot))
            .await
            .expect_err("not human");
        assert!(matches!(err, ReviewError::NotHuman { .. }), "{err:?}");
    }
    assert_eq!(f.state(id).await, RequestState::Pending);
    assert_eq!(f.count("review_rejected"), 2);
}

#[tokio::test]
async fn the_human_behind_the_agent_cannot_approve_even_as_admin() {
    let f = Fixture::new();
    let id = f.pending(&role_grant()).await;
    // Dana is in every allowed group, including admins: no exemption.
    let err = f
        .gate
        .decide(id, Review::approve(dana()).reason("mine"))
        .await
        .expect_err("self");
    assert!(matches!(err, ReviewError::SelfApproval { .. }), "{err:?}");
    // Dana under another spelling of her canonical id.
    let alias = Principal::human(" Dana@Example.COM").with_groups(["admins"]);
    let err = f
        .gate
        .decide(id, Review::approve(alias).reason("mine"))
        .await
        .expect_err("self");
    assert!(matches!(err, ReviewError::SelfApproval { .. }));
    // A human whose id equals the agent's id.
    let err = f
        .gate
        .decide(
            id,
            Review::approve(Principal::human("billing-agent").with_groups(["security"]))
                .reason("x"),
        )
        .await
        .expect_err("self");
    assert!(matches!(err, ReviewError::SelfApproval { .. }));
    // She cannot deny her own request either (a deny is a review too).
    let err = f
        .gate
        .decide(id, Review::deny(dana()).reason("x"))
        .await
        .expect_err("self deny");
    assert!(matches!(err, ReviewError::SelfApproval { .. }));
    let events = f.audit.events();
    let rejected: Vec<&AuditEvent> = events
        .iter()
        .filter(|e| e.name() == "review_rejected")
        .collect();
    assert_eq!(rejected.len(), 4);
    assert_eq!(
        serde_json::to_value(rejected[0]).expect("json")["cause"],
        "self_approval"
    );
}

#[tokio::test]
async fn authorization_uses_the_groups_at_decision_time() {
    let f = Fixture::new();
    let id = f.pending(&export(1)).await;
    let err = f
        .gate
        .decide(id, Review::approve(outsider()))
        .await
        .expect_err("outsider");
    assert!(matches!(err, ReviewError::NotAuthorized { .. }));
    // Sam left data-owners after the request was sent: the resolver now returns fewer groups.
    let sam_now = Principal::human("sam@example.com").with_groups(["security"]);
    let err = f
        .gate
        .decide(id, Review::approve(sam_now))
        .await
        .expect_err("removed from group");
    assert!(matches!(err, ReviewError::NotAuthorized { .. }));
    f.gate
        .decide(id, Review::approve(sam()))
        .await
        .expect("member now");
}

#[tokio::test]
async fn a_review_for_another_digest_is_refused() {
    let f = Fixture::new();
    let id = f.pending(&export(1)).await;
    let other = export(2).digest();
    let err = f
        .gate
        .decide(id, Review::approve(sam()).for_digest(other))
        .await
        .expect_err("mismatch");
    assert!(matches!(err, ReviewError::DigestMismatch { .. }));
    let record = f.gate.get(id).await.expect("store").expect("record");
    f.gate
        .decide(id, Review::approve(sam()).for_digest(record.digest))
        .await
        .expect("matching digest");
}

// ---------------------------------------------------------------------------------------------
// Concurrency: exactly one outcome.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_decisions_give_exactly_one_outcome() {
    let f = Fixture::new();
    let id = f.pending(&export(1)).await;
    let mut tasks = Vec::new();
    for i in 0..100 {
        let gate = f.gate.clone();
        let reviewer =
            Principal::human(format!("reviewer{i}@example.com")).with_groups(["data-owners"]);
        let review = if i % 2 == 0 {
            Review::approve(reviewer)
        } else {
            Review::deny(reviewer).reason("no")
        };
        tasks.push(tokio::spawn(async move { gate.decide(id, review).await }));
    }
    let mut accepted = Vec::new();
    for t in tasks {
        if let Ok(outcome) = t.await.expect("join") {
            accepted.push(outcome.state);
        }
    }
    let final_state = f.state(id).await;
    assert!(matches!(
        final_state,
        RequestState::Approved | RequestState::Denied
    ));
    // Every accepted review is recorded, and the audit trail holds exactly one end.
    let record = f.gate.get(id).await.expect("store").expect("record");
    assert_eq!(record.reviews.len(), accepted.len());
    let ends = f.count("approved") + f.count("denied");
    // An approval may be revoked by a later deny (deny wins), so at most one approval and
    // the final state decides.
    assert!(f.count("approved") <= 1);
    assert_eq!(
        f.count("denied"),
        usize::from(final_state == RequestState::Denied)
    );
    assert!(ends >= 1);
    assert_eq!(f.count("reviewed"), accepted.len());
    assert_eq!(f.count("review_rejected"), 100 - accepted.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_approve_and_deny_always_end_denied() {
    for _ in 0..50 {
        let f = Fixture::new();
        let id = f.pending(&export(1)).await;
        let (g1, g2) = (f.gate.clone(), f.gate.clone());
        let a = tokio::spawn(async move { g1.decide(id, Review::approve(sam())).await });
        let d = tokio::spawn(async move {
            g2.decide(
                id,
                Review::deny(kim().with_groups(["data-owners"])).reason("stop"),
            )
            .await
        });
        let _ = a.await.expect("join");
        d.await
            .expect("join")
            .expect("an authorized deny is always accepted before use");
        assert_eq!(f.state(id).await, RequestState::Denied);
        assert!(matches!(
            f.gate.wait(id).await,
            Err(GuardError::Denied { .. })
        ));
    }
}

#[tokio::test]
async fn a_deny_after_approval_revokes_an_unused_grant() {
    let f = Fixture::new();
    let id = f.pending(&export(1)).await;
    f.gate
        .decide(id, Review::approve(sam()))
        .await
        .expect("approve");
    let grant = f.gate.wait(id).await.expect("grant issued");
    f.gate
        .decide(
            id,
            Review::deny(kim().with_groups(["data-owners"])).reason("wrong table"),
        )
        .await
        .expect("revoke");
    let ran = Ran::default();
    let err = f
        .gate
        .execute(grant, &export(1), || async {
            ran.fetch_add(1, Ordering::SeqCst);
            Ok::<_, GuardError>(())
        })
        .await
        .expect_err("revoked");
    assert!(matches!(err, GuardError::Denied { .. }), "{err:?}");
    assert_eq!(ran.load(Ordering::SeqCst), 0);
}

// ---------------------------------------------------------------------------------------------
// Grants: bound to the digest, single use, expiring.

#[tokio::test]
async fn a_grant_cannot_be_used_for_a_changed_parameter() {
    let f = Fixture::new();
    let id = f.pending(&export(100)).await;
    f.gate
        .decide(id, Review::approve(sam()))
        .await
        .expect("approve");
    let grant = f.gate.wait(id).await.expect("grant");
    let ran = Ran::default();
    let swapped = export(1_000_000);
    let err = f
        .gate
        .execute(grant, &swapped, || async {
            ran.fetch_add(1, Ordering::SeqCst);
            Ok::<_, GuardError>(())
        })
        .await
        .expect_err("digest mismatch");
    assert!(matches!(err, GuardError::DigestMismatch { .. }), "{err:?}");
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    assert_eq!(f.count("grant_rejected"), 1);
    // The approved action itself can still run, once.
    let grant = f.gate.wait(id).await.expect("grant again");
    f.gate
        .execute(grant, &export(100), || async { Ok::<_, GuardError>(()) })
        .await
        .expect("runs");
}

#[tokio::test]
async fn a_grant_cannot_be_used_twice() {
    let f = Fixture::new();
    let id = f.pending(&export(1)).await;
    f.gate
        .decide(id, Review::approve(sam()))
        .await
        .expect("approve");
    // Two grants obtained for the same approval (for example two retries of wait()).
    let first = f.gate.wait(id).await.expect("grant");
    let second = f.gate.wait(id).await.expect("grant");
    let ran = Ran::default();
    let body = || async {
        ran.fetch_add(1, Ordering::SeqCst);
        Ok::<_, GuardError>(())
    };
    f.gate
        .execute(first, &export(1), body)
        .await
        .expect("first use");
    let err = f
        .gate
        .execute(second, &export(1), body)
        .await
        .expect_err("second use");
    assert!(matches!(err, GuardError::GrantUsed { .. }), "{err:?}");
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    // And no new grant comes out of an executed request.
    assert!(matches!(
        f.gate.wait(id).await,
        Err(GuardError::GrantUsed { .. })
    ));
}

#[tokio::test]
async fn an_unused_grant_lapses() {
    let f = Fixture::new();
    let id = f.pending(&export(1)).await;
    f.gate
        .decide(id, Review::approve(sam()))
        .await
        .expect("approve");
    let grant = f.gate.wait(id).await.expect("grant");
    f.clock.advance(TimeDelta::seconds(301));
    let err = f
        .gate
        .execute(grant, &export(1), || async { Ok::<_, GuardError>(()) })
        .await
        .expect_err("lapsed");
    assert!(matches!(err, GuardError::GrantLapsed { .. }), "{err:?}");
    assert_eq!(f.state(id).await, RequestState::Lapsed);
}

#[tokio::test]
async fn a_failing_action_is_recorded_as_failed() {
    let f = Fixture::new();
    let id = f.pending(&export(1)).await;
    f.gate
        .decide(id, Review::approve(sam()))
        .await
        .expect("approve");
    let grant = f.gate.wait(id).await.expect("grant");
    let err = f
        .gate
        .execute(grant, &export(1), || async {
            Err::<(), GuardError>(GuardError::InvalidRequest("warehouse timeout".into()))
        })
        .await
        .expect_err("action failed");
    assert!(err.to_string().contains("warehouse timeout"));
    let record = f.gate.get(id).await.expect("store").expect("record");
    assert_eq!(record.state, RequestState::Failed);
    assert!(
        record
            .execution
            .and_then(|e| e.error)
            .is_some_and(|e| e.contains("warehouse timeout"))
    );
    let executed = f
        .audit
        .events()
        .into_iter()
        .find(|e| e.name() == "executed")
        .expect("audited");
    let json = serde_json::to_value(executed).expect("json");
    assert_eq!(json["ok"], false);
}

// ---------------------------------------------------------------------------------------------
// Time: expiry and escalation.

#[tokio::test]
async fn approval_one_millisecond_after_expiry_is_refused() {
    let f = Fixture::new();
    let id = f.pending(&export(1)).await;
    f.clock
        .advance(TimeDelta::minutes(30) + TimeDelta::milliseconds(1));
    let err = f
        .gate
        .decide(id, Review::approve(sam()))
        .await
        .expect_err("expired");
    assert!(matches!(err, ReviewError::Expired { .. }), "{err:?}");
    assert_eq!(f.state(id).await, RequestState::Expired);
    assert!(matches!(
        f.gate.wait(id).await,
        Err(GuardError::Expired {
            approvals: 0,
            quorum: 1,
            ..
        })
    ));
}

#[tokio::test]
async fn approval_one_millisecond_before_expiry_counts() {
    let f = Fixture::new();
    let id = f.pending(&export(1)).await;
    f.clock
        .advance(TimeDelta::minutes(30) - TimeDelta::milliseconds(1));
    f.gate
        .decide(id, Review::approve(sam()))
        .await
        .expect("in time");
    f.gate.wait(id).await.expect("grant");
}

#[tokio::test]
async fn a_waiting_guard_expires_and_fails_closed() {
    let f = Fixture::new();
    let gate = f.gate.clone();
    let ran = Ran::default();
    let ran2 = ran.clone();
    let waiter = tokio::spawn(async move { run_counted(&gate, &export(1), &ran2).await });
    while f.gate.pending().await.expect("list").is_empty() {
        tokio::task::yield_now().await;
    }
    f.clock.advance(TimeDelta::minutes(31));
    let err = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("returns promptly")
        .expect("join")
        .expect_err("expired");
    assert!(matches!(err, GuardError::Expired { .. }), "{err:?}");
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    assert_eq!(f.count("expired"), 1);
}

#[tokio::test]
async fn escalation_widens_the_reviewers_after_its_delay() {
    let f = Fixture::new();
    let id = f.pending(&role_grant()).await;
    let err = f
        .gate
        .decide(id, Review::approve(oncall()).reason("x"))
        .await
        .expect_err("too early");
    assert!(matches!(err, ReviewError::NotAuthorized { .. }));
    f.clock.advance(TimeDelta::minutes(21));
    let report = f.gate.sweep().await.expect("sweep");
    assert_eq!(report.escalated, 1);
    assert_eq!(f.channel.escalations.load(Ordering::SeqCst), 1);
    f.gate
        .decide(id, Review::approve(oncall()).reason("on call"))
        .await
        .expect("now allowed");
    // A second sweep does not escalate again.
    assert_eq!(f.gate.sweep().await.expect("sweep").escalated, 0);
    assert_eq!(f.count("escalated"), 1);
}

#[tokio::test]
async fn sweep_expires_requests_nobody_waits_for() {
    let f = Fixture::new();
    let a = f.pending(&export(1)).await;
    let b = f.pending(&export(2)).await;
    f.clock.advance(TimeDelta::hours(2));
    let report = f.gate.sweep().await.expect("sweep");
    assert_eq!(report.expired, 2);
    assert_eq!(f.state(a).await, RequestState::Expired);
    assert_eq!(f.state(b).await, RequestState::Expired);
    assert_eq!(f.gate.sweep().await.expect("sweep").expired, 0);
}

/// A sweep reads what is due a page at a time (500 records); more than two pages' worth all
/// expire in one sweep, each once.
#[tokio::test]
async fn a_sweep_reaches_every_due_request_past_its_first_page() {
    let f = Fixture::new();
    let mut ids = Vec::new();
    for n in 0..1_234 {
        ids.push(f.pending(&export(n)).await);
    }
    f.clock.advance(TimeDelta::hours(2));
    let report = f.gate.sweep().await.expect("sweep");
    assert_eq!(report.expired, ids.len());
    for id in ids {
        assert_eq!(f.state(id).await, RequestState::Expired);
    }
    assert_eq!(f.count("expired"), 1_234);
    assert_eq!(f.gate.sweep().await.expect("sweep").expired, 0);
}

// ---------------------------------------------------------------------------------------------
// Idempotency, cancel, delivery.

#[tokio::test]
async fn retries_with_an_idempotency_key_reattach_without_spamming_reviewers() {
    let f = Fixture::new();
    let a = f.pending(&export(1).idempotency_key("job-42")).await;
    let b = f.pending(&export(1).idempotency_key("job-42")).await;
    assert_eq!(a, b);
    assert_eq!(f.channel.dispatched.load(Ordering::SeqCst), 1);
    assert_eq!(f.store.len(), 1);
    let err = f
        .gate
        .submit(&export(2).idempotency_key("job-42"))
        .await
        .expect_err("different action");
    assert!(
        matches!(err, GuardError::IdempotencyConflict { .. }),
        "{err:?}"
    );
}

/// Clears a stored request's deliveries, as if its process died after storing it and before
/// recording any channel's answer.
async fn forget_deliveries(store: &MemoryStore, id: RequestId) {
    let mut record = store.get(id).await.expect("store").expect("record");
    record.deliveries.clear();
    assert!(
        store
            .compare_and_set(record.version, &record)
            .await
            .expect("store")
    );
}

#[tokio::test]
async fn a_reattached_request_with_no_recorded_delivery_is_delivered_again_as_a_redelivery() {
    let f = Fixture::new();
    let id = f.pending(&export(1).idempotency_key("job-7")).await;
    forget_deliveries(&f.store, id).await;

    let again = f.pending(&export(1).idempotency_key("job-7")).await;
    assert_eq!(again, id, "the same request");
    assert_eq!(f.channel.dispatched.load(Ordering::SeqCst), 2);
    assert_eq!(
        f.channel.redeliveries.load(Ordering::SeqCst),
        1,
        "the channel is told it is a redelivery, so it can look for its earlier message"
    );
    let record = f.gate.get(id).await.expect("store").expect("record");
    assert_eq!(record.deliveries.len(), 1, "the redelivery is recorded");

    // Recorded now: a further re-attach delivers nothing.
    f.pending(&export(1).idempotency_key("job-7")).await;
    assert_eq!(f.channel.dispatched.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_redelivery_no_channel_takes_cancels_the_request_and_refuses_the_agent() {
    let f = Fixture::new();
    let id = f.pending(&export(1).idempotency_key("job-8")).await;
    forget_deliveries(&f.store, id).await;
    f.channel.fail.store(true, Ordering::SeqCst);

    let err = f
        .gate
        .submit(&export(1).idempotency_key("job-8"))
        .await
        .expect_err("no reviewer can see the request");
    assert!(matches!(err, GuardError::DeliveryFailed { .. }), "{err:?}");
    assert_eq!(f.state(id).await, RequestState::Cancelled);
    assert!(
        f.gate.decide(id, Review::approve(sam())).await.is_err(),
        "a cancelled request cannot be approved"
    );
}

#[tokio::test]
async fn cancel_ends_the_wait() {
    let f = Fixture::new();
    let id = f.pending(&export(1)).await;
    let state = f
        .gate
        .cancel(id, Some(dana()), Some("no longer needed".into()))
        .await
        .expect("cancel");
    assert_eq!(state, RequestState::Cancelled);
    let err = f.gate.wait(id).await.expect_err("cancelled");
    assert!(err.to_string().contains("no longer needed"), "{err}");
    assert!(
        f.gate.cancel(id, None, None).await.is_err(),
        "terminal states never change"
    );
}

#[tokio::test]
async fn undeliverable_requests_are_cancelled_never_approved() {
    let f = Fixture::new();
    f.channel.fail.store(true, Ordering::SeqCst);
    let ran = Ran::default();
    let err = run_counted(&f.gate, &export(1), &ran)
        .await
        .expect_err("undeliverable");
    assert!(matches!(err, GuardError::DeliveryFailed { .. }), "{err:?}");
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    assert_eq!(f.count("dispatch_failed"), 1);
    let records = f.store.list(&ListFilter::default()).await.expect("list");
    assert_eq!(records[0].state, RequestState::Cancelled);
}

#[tokio::test]
async fn oversized_or_nameless_requests_are_refused() {
    let f = Fixture::new();
    let huge = export(1).params(json!({ "blob": "x".repeat(300 * 1024) }));
    assert!(matches!(
        f.gate.submit(&huge).await,
        Err(GuardError::TooLarge { .. })
    ));
    assert!(matches!(
        f.gate.submit(&ActionRequest::new("", "x")).await,
        Err(GuardError::InvalidRequest(_))
    ));
    let no_initiator = Gate::builder()
        .policy(StaticPolicy::allow_all())
        .audit(MemorySink::new())
        .build()
        .expect("gate");
    let err = no_initiator
        .guard(&ActionRequest::new("a.read", "x"))
        .await
        .expect_err("no initiator");
    assert!(err.to_string().contains("initiator"), "{err}");
}

/// Size limits apply before anything is recorded, on every path the policy could take (allow,
/// deny, approval) and for every field an agent fills: the refusal event holds the size and
/// digest, never the body.
#[tokio::test]
async fn oversized_actions_are_refused_before_anything_is_recorded_on_every_path() {
    let big = "x".repeat(10 * 1024 * 1024);
    type Shape = Box<dyn Fn(ActionRequest) -> ActionRequest>;
    let shapes: Vec<(&str, Shape)> = vec![
        (
            "params",
            Box::new(|a| a.params(json!({ "blob": "x".repeat(300 * 1024) }))),
        ),
        (
            "justification",
            Box::new({
                let big = big.clone();
                move |a| a.justification(big.clone())
            }),
        ),
        ("summary", Box::new(|a| a.summary("s".repeat(300 * 1024)))),
        (
            "context",
            Box::new(|a| {
                a.context(approvals_core::RequestContext {
                    impact: Some("i".repeat(300 * 1024)),
                    ..Default::default()
                })
            }),
        ),
        (
            "idempotency key",
            Box::new(|a| a.idempotency_key("k".repeat(2000))),
        ),
        (
            "kind",
            Box::new(|_| ActionRequest::new("k".repeat(100_000), "x")),
        ),
        (
            "resource",
            Box::new(|a| ActionRequest::new(a.kind.clone(), "r".repeat(100_000))),
        ),
    ];
    for base in [
        ActionRequest::new("db.read", "db://analytics"), // allowed
        ActionRequest::new("db.drop", "db://prod"),      // denied
        export(1),                                       // needs approval
    ] {
        for (what, shape) in &shapes {
            let f = Fixture::new();
            let action = shape(base.clone());
            let err = f.gate.guard(&action).await.expect_err(what);
            assert!(
                matches!(
                    err,
                    GuardError::TooLarge { .. } | GuardError::InvalidRequest(_)
                ),
                "{what} on {}: {err:?}",
                base.kind
            );
            assert_eq!(
                f.audit.names(),
                vec!["request_refused"],
                "{what} on {}",
                base.kind
            );
            let event = &f.audit.events()[0];
            let line = serde_json::to_string(event).expect("json");
            assert!(
                line.len() < 4096,
                "{what}: a {}-byte refusal event",
                line.len()
            );
            // The digest of the action as it would have been reviewed: bound to the gate's
            // initiator.
            assert_eq!(
                event.digest,
                action.clone().initiator(agent()).digest(),
                "{what}"
            );
            if let approvals_core::EventDetail::RequestRefused { size, .. } = &event.detail {
                assert!(*size as usize > 2000, "{what}: size {size}");
            } else {
                panic!("{what}: {event:?}");
            }
            assert!(
                f.store
                    .list(&ListFilter::default())
                    .await
                    .expect("list")
                    .is_empty()
            );
            assert_eq!(f.channel.dispatched.load(Ordering::SeqCst), 0);
        }
    }
    // Exactly at the limit still passes; the limit counts the canonical encoding.
    let f = Fixture::new();
    // The gate's own initiator, claimed as it is, so the size measured here is the gate's.
    let mut action = ActionRequest::new("db.read", "db://analytics").initiator(agent());
    let overhead = action.digest_and_size().1;
    action = action.justification("j".repeat(
        approvals_core::gate::MAX_REQUEST_BYTES - overhead - r#","justification":"""#.len(),
    ));
    assert_eq!(
        action.digest_and_size().1,
        approvals_core::gate::MAX_REQUEST_BYTES
    );
    f.gate.guard(&action).await.expect("at the limit");
    let one_over = action.clone().justification(format!(
        "{}j",
        action.justification.clone().unwrap_or_default()
    ));
    assert!(matches!(
        f.gate.guard(&one_over).await,
        Err(GuardError::TooLarge { size, limit }) if size == limit + 1
    ));
}

// ---------------------------------------------------------------------------------------------
// Fail closed.

struct BrokenStore {
    hang: bool,
}

#[async_trait]
impl Store for BrokenStore {
    async fn insert(&self, _: &RequestRecord) -> Result<approvals_core::Inserted, StoreError> {
        self.fail().await
    }
    async fn get(&self, _: RequestId) -> Result<Option<RequestRecord>, StoreError> {
        self.fail().await
    }
    async fn get_by_idempotency_key(&self, _: &str) -> Result<Option<RequestRecord>, StoreError> {
        self.fail().await
    }
    async fn compare_and_set(&self, _: u64, _: &RequestRecord) -> Result<bool, StoreError> {
        self.fail().await
    }
    async fn list(&self, _: &ListFilter) -> Result<Vec<RequestRecord>, StoreError> {
        self.fail().await
    }
}

impl BrokenStore {
    async fn fail<T>(&self) -> Result<T, StoreError> {
        if self.hang {
            std::future::pending::<()>().await;
        }
        Err(StoreError::Unavailable("connection refused".into()))
    }
}

#[tokio::test]
async fn an_unreachable_or_hanging_store_refuses_the_action() {
    for hang in [false, true] {
        let gate = Gate::builder()
            .policy(RulePolicy::from_toml(POLICY).expect("policy"))
            .audit(MemorySink::new())
            .store(BrokenStore { hang })
            .initiator(agent())
            .store_timeout(Duration::from_millis(50))
            .build()
            .expect("gate");
        let ran = Ran::default();
        let err = run_counted(&gate, &export(1), &ran)
            .await
            .expect_err("refused");
        assert!(
            matches!(
                err,
                GuardError::Unavailable {
                    component: Component::Store,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.is_retryable());
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    }
}

/// Fails on the named event.
struct FailingAudit {
    on: &'static str,
    inner: MemorySink,
}

#[async_trait]
impl AuditSink for FailingAudit {
    async fn record(&self, event: &AuditEvent) -> Result<(), AuditError> {
        if event.name() == self.on {
            return Err(AuditError::new("disk full"));
        }
        self.inner.record(event).await
    }
}

#[tokio::test]
async fn an_audit_failure_at_any_step_before_running_refuses_the_action() {
    for on in [
        "requested",
        "policy_decided",
        "grant_issued",
        "grant_consumed",
    ] {
        let gate = Gate::builder()
            .policy(StaticPolicy::require(Requirement::users([
                "sam@example.com",
            ])))
            .audit(FailingAudit {
                on,
                inner: MemorySink::new(),
            })
            .initiator(agent())
            .build()
            .expect("gate");
        let ran = Ran::default();
        let action = export(1);
        let result = match gate.submit(&action).await {
            Err(e) => Err(e),
            Ok(Submission::Allowed(_)) => panic!("policy requires approval"),
            Ok(Submission::Pending(id)) => {
                gate.decide(id, Review::approve(sam()))
                    .await
                    .expect("approve");
                match gate.wait(id).await {
                    Err(e) => Err(e),
                    Ok(grant) => {
                        gate.execute(grant, &action, || async {
                            ran.fetch_add(1, Ordering::SeqCst);
                            Ok::<_, GuardError>(())
                        })
                        .await
                    }
                }
            }
        };
        let err = result.expect_err("audit failure refuses");
        assert!(
            matches!(
                err,
                GuardError::Unavailable {
                    component: Component::Audit,
                    ..
                }
            ),
            "{on}: {err:?}"
        );
        assert_eq!(
            ran.load(Ordering::SeqCst),
            0,
            "{on}: the action must not run"
        );
    }
}

struct BrokenPolicy;
impl Policy for BrokenPolicy {
    fn evaluate(&self, _: &ActionRequest) -> Result<Decision, PolicyError> {
        Err(PolicyError::new("rule engine crashed"))
    }
    fn version(&self) -> &str {
        "broken"
    }
}

#[tokio::test]
async fn a_policy_error_refuses_the_action() {
    let f = Fixture::with_policy(BrokenPolicy);
    let ran = Ran::default();
    let err = run_counted(&f.gate, &ActionRequest::new("db.read", "x"), &ran)
        .await
        .expect_err("refused");
    assert!(matches!(
        err,
        GuardError::Unavailable {
            component: Component::Policy,
            ..
        }
    ));
    assert_eq!(ran.load(Ordering::SeqCst), 0);
}

/// A policy reloaded in place: its version changes between calls.
struct ReloadingPolicy {
    reloaded: std::sync::atomic::AtomicBool,
}

impl Policy for ReloadingPolicy {
    fn evaluate(&self, _: &ActionRequest) -> Result<Decision, PolicyError> {
        Ok(Decision::Allow {
            rule: Some("everything".into()),
        })
    }
    fn version(&self) -> &str {
        if self.reloaded.load(Ordering::SeqCst) {
            "v2"
        } else {
            "v1"
        }
    }
}

#[tokio::test]
async fn decisions_and_grants_record_the_policy_version_current_at_the_time() {
    let policy = Arc::new(ReloadingPolicy {
        reloaded: std::sync::atomic::AtomicBool::new(false),
    });
    struct Shared(Arc<ReloadingPolicy>);
    impl Policy for Shared {
        fn evaluate(&self, r: &ActionRequest) -> Result<Decision, PolicyError> {
            self.0.evaluate(r)
        }
        fn version(&self) -> &str {
            self.0.version()
        }
    }
    let f = Fixture::with_policy(Shared(policy.clone()));
    let read = ActionRequest::new("db.read", "x");
    let first = f.gate.guard(&read).await.expect("allowed");
    policy.reloaded.store(true, Ordering::SeqCst);
    let second = f.gate.guard(&read).await.expect("allowed");
    assert_eq!(first.policy_version(), "v1");
    assert_eq!(second.policy_version(), "v2");
    assert_eq!(second.policy_rule(), Some("everything"));
    let versions: Vec<String> = f
        .audit
        .events()
        .iter()
        .filter(|e| e.name() == "policy_decided")
        .map(|e| serde_json::to_value(e).expect("json")["policy_version"].to_string())
        .collect();
    assert_eq!(versions, ["\"v1\"", "\"v2\""]);
}

#[tokio::test]
async fn escalation_rules_come_from_the_requirement() {
    // A custom requirement built in code behaves like the policy file's.
    let requirement = Requirement::groups(["security"])
        .quorum(1)
        .timeout(Duration::from_secs(600))
        .escalation(Escalation {
            after: Duration::from_secs(60),
            users: vec!["oli@example.com".into()],
            groups: vec![],
        });
    let f = Fixture::with_policy(StaticPolicy::require(requirement));
    let id = f.pending(&role_grant()).await;
    let oli = Principal::human("oli@example.com");
    assert!(
        f.gate
            .decide(id, Review::approve(oli.clone()))
            .await
            .is_err()
    );
    f.clock.advance(TimeDelta::seconds(61));
    f.gate.sweep().await.expect("sweep");
    f.gate
        .decide(id, Review::approve(oli))
        .await
        .expect("escalated user");
}

#[tokio::test]
async fn reviews_and_reads_on_a_hanging_store_fail_within_the_timeout() {
    let gate = Gate::builder()
        .policy(RulePolicy::from_toml(POLICY).expect("policy"))
        .audit(MemorySink::new())
        .store(BrokenStore { hang: true })
        .initiator(agent())
        .store_timeout(Duration::from_millis(50))
        .build()
        .expect("gate");
    let id = RequestId::new();
    let err = tokio::time::timeout(
        Duration::from_secs(5),
        gate.decide(id, Review::approve(sam())),
    )
    .await
    .expect("bounded")
    .expect_err("unavailable");
    assert!(matches!(err, ReviewError::Unavailable { .. }), "{err:?}");
    assert!(
        tokio::time::timeout(Duration::from_secs(5), gate.get(id))
            .await
            .expect("bounded")
            .is_err()
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(5), gate.pending())
            .await
            .expect("bounded")
            .is_err()
    );
    let recorded = tokio::time::timeout(
        Duration::from_secs(5),
        gate.record_rejected_callback(
            id,
            None,
            "slack",
            approvals_core::RejectCause::Forged,
            "bad signature",
        ),
    )
    .await
    .expect("bounded");
    assert!(!recorded);
}

/// A refused grant token or callback is recorded with its detail bounded, whatever length the
/// door or channel passed on from outside; an unknown request records nothing.
#[tokio::test]
async fn refusals_from_outside_are_recorded_bounded() {
    use approvals_core::{EventDetail, RejectCause};
    let fx = Fixture::new();
    let id = fx.pending(&export(10)).await;
    let long = "x".repeat(100_000);
    assert!(
        fx.gate
            .record_rejected_callback(id, None, "slack", RejectCause::Forged, &long)
            .await
    );
    assert!(
        fx.gate
            .record_rejected_grant(id, RejectCause::Forged, &long)
            .await
    );
    assert!(
        !fx.gate
            .record_rejected_grant(RequestId::new(), RejectCause::Forged, "x")
            .await
    );
    let details: Vec<usize> = fx
        .audit
        .events()
        .iter()
        .filter_map(|e| match &e.detail {
            EventDetail::ReviewRejected { detail, .. }
            | EventDetail::GrantRejected { detail, .. } => Some(detail.chars().count()),
            _ => None,
        })
        .collect();
    assert_eq!(details, [1024, 1024]);
}

/// Holds the `approved` event until released, or fails it a given number of times.
struct GatedAudit {
    inner: MemorySink,
    release: tokio::sync::Semaphore,
    fail_approved: AtomicUsize,
}

#[async_trait]
impl AuditSink for GatedAudit {
    async fn record(&self, event: &AuditEvent) -> Result<(), AuditError> {
        if event.name() == "approved" {
            if self
                .fail_approved
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(AuditError::new("disk full"));
            }
            let _permit = self
                .release
                .acquire()
                .await
                .map_err(|_| AuditError::new("closed"))?;
        }
        self.inner.record(event).await
    }
}

fn gated_gate(audit: Arc<GatedAudit>, clock: Arc<ManualClock>) -> Gate {
    Gate::builder()
        .policy(StaticPolicy::require(Requirement::users([
            "sam@example.com",
        ])))
        .audit_shared(audit)
        .clock(clock)
        .initiator(agent())
        .poll_interval(Duration::from_millis(5))
        .build()
        .expect("gate")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_grant_is_issued_before_the_approval_is_audited() {
    let audit = Arc::new(GatedAudit {
        inner: MemorySink::new(),
        release: tokio::sync::Semaphore::new(0),
        fail_approved: AtomicUsize::new(0),
    });
    let clock = Arc::new(ManualClock::new(
        "2026-11-21T12:00:00Z".parse().expect("time"),
    ));
    let gate = gated_gate(audit.clone(), clock);
    let Submission::Pending(id) = gate.submit(&export(1)).await.expect("submit") else {
        panic!("pending expected");
    };
    let waiter = {
        let gate = gate.clone();
        tokio::spawn(async move { gate.wait(id).await })
    };
    let decider = {
        let gate = gate.clone();
        tokio::spawn(async move { gate.decide(id, Review::approve(sam())).await })
    };
    // The approval is persisted, but its audit event is held: no grant may come out, however
    // often the waiter polls (every 5 ms here).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        gate.get(id).await.expect("store").expect("record").state,
        RequestState::Approved
    );
    assert!(
        !waiter.is_finished(),
        "a grant was issued before the approval was audited"
    );
    audit.release.add_permits(1);
    decider.await.expect("join").expect("decided");
    waiter.await.expect("join").expect("grant");
    let names = audit.inner.names();
    let approved = names
        .iter()
        .position(|n| *n == "approved")
        .expect("approved audited");
    let issued = names
        .iter()
        .position(|n| *n == "grant_issued")
        .expect("grant issued");
    assert!(approved < issued, "{names:?}");
}

#[tokio::test]
async fn an_approval_whose_audit_failed_is_recorded_later_never_skipped() {
    let audit = Arc::new(GatedAudit {
        inner: MemorySink::new(),
        release: tokio::sync::Semaphore::new(100),
        fail_approved: AtomicUsize::new(1),
    });
    let clock = Arc::new(ManualClock::new(
        "2026-11-21T12:00:00Z".parse().expect("time"),
    ));
    let gate = gated_gate(audit.clone(), clock.clone());
    let Submission::Pending(id) = gate.submit(&export(1)).await.expect("submit") else {
        panic!("pending expected");
    };
    let err = gate
        .decide(id, Review::approve(sam()))
        .await
        .expect_err("audit failed");
    assert!(
        matches!(
            err,
            ReviewError::Unavailable {
                component: Component::Audit,
                ..
            }
        ),
        "{err:?}"
    );
    // The approval is stored but not usable yet.
    assert!(
        gate.get(id)
            .await
            .expect("store")
            .expect("record")
            .audit_pending
    );
    assert_eq!(
        gate.sweep().await.expect("sweep").recovered,
        0,
        "too early to recover"
    );
    clock.advance(TimeDelta::seconds(31));
    assert_eq!(gate.sweep().await.expect("sweep").recovered, 1);
    let grant = gate.wait(id).await.expect("grant after recovery");
    assert_eq!(grant.approvers().len(), 1);
    let names = audit.inner.names();
    let approved = names
        .iter()
        .position(|n| *n == "approved")
        .expect("approved audited");
    let issued = names
        .iter()
        .position(|n| *n == "grant_issued")
        .expect("grant issued");
    assert!(approved < issued, "{names:?}");
}

/// Fails the first `failures` events with the given name; records everything else.
struct FailNamed {
    inner: MemorySink,
    name: &'static str,
    failures: AtomicUsize,
}

#[async_trait]
impl AuditSink for FailNamed {
    async fn record(&self, event: &AuditEvent) -> Result<(), AuditError> {
        if event.name() == self.name
            && self
                .failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            return Err(AuditError::new("disk full"));
        }
        self.inner.record(event).await
    }
}

/// A gate (sam approves exports) whose audit sink fails the first `denied` event.
fn gate_whose_first_denial_audit_fails() -> (Gate, Arc<FailNamed>, Arc<ManualClock>) {
    let audit = Arc::new(FailNamed {
        inner: MemorySink::new(),
        name: "denied",
        failures: AtomicUsize::new(1),
    });
    let clock = Arc::new(ManualClock::new(
        "2026-11-21T12:00:00Z".parse().expect("time"),
    ));
    let gate = Gate::builder()
        .policy(StaticPolicy::require(Requirement::users([
            "sam@example.com",
        ])))
        .audit_shared(audit.clone())
        .clock(clock.clone())
        .initiator(agent())
        .poll_interval(Duration::from_millis(5))
        .build()
        .expect("gate");
    (gate, audit, clock)
}

#[tokio::test]
async fn a_denial_whose_audit_failed_is_recorded_before_the_agent_hears_of_it() {
    let (gate, audit, clock) = gate_whose_first_denial_audit_fails();
    let Submission::Pending(id) = gate.submit(&export(1)).await.expect("submit") else {
        panic!("pending expected");
    };
    let err = gate
        .decide(id, Review::deny(sam()).reason("not this quarter"))
        .await
        .expect_err("audit failed");
    assert!(
        matches!(
            err,
            ReviewError::Unavailable {
                component: Component::Audit,
                ..
            }
        ),
        "{err:?}"
    );
    let record = gate.get(id).await.expect("store").expect("record");
    assert_eq!(record.state, RequestState::Denied);
    assert!(record.audit_pending, "the unaudited denial is flagged");

    // The agent is not told of the denial while it is missing from the trail...
    let waiter = {
        let gate = gate.clone();
        tokio::spawn(async move { gate.wait(id).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !waiter.is_finished(),
        "refusal returned before the denial was audited"
    );
    assert!(!audit.inner.names().contains(&"denied"));

    // ...and after the recovery delay the waiter records it itself, then gets the refusal.
    clock.advance(TimeDelta::seconds(31));
    let err = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("waiter returned")
        .expect("join")
        .expect_err("denied");
    assert!(matches!(err, GuardError::Denied { .. }), "{err:?}");
    let names = audit.inner.names();
    assert!(names.contains(&"denied"), "{names:?}");
    let denied = audit
        .inner
        .events()
        .into_iter()
        .find(|e| e.name() == "denied")
        .expect("denied event");
    let json = serde_json::to_value(&denied).expect("json");
    assert_eq!(json["by"]["id"], "sam@example.com");
    assert_eq!(json["reason"], "not this quarter");
    assert!(
        !gate
            .get(id)
            .await
            .expect("store")
            .expect("record")
            .audit_pending,
        "flag cleared once recorded"
    );
}

/// A channel whose delivery never completes (a chat API that accepts the connection and
/// never answers).
struct HangingApprover;

#[async_trait]
impl Approver for HangingApprover {
    fn name(&self) -> &str {
        "hanging"
    }

    async fn dispatch(
        &self,
        _request: &RequestRecord,
        _reason: DispatchReason,
        _decisions: Arc<dyn Decisions>,
    ) -> Result<Option<Delivery>, ApproverError> {
        std::future::pending().await
    }

    async fn resolved(&self, _request: &RequestRecord) -> Result<(), ApproverError> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_hanging_channel_refuses_within_the_approver_timeout() {
    let audit = Arc::new(MemorySink::new());
    let store = Arc::new(MemoryStore::new());
    let gate = Gate::builder()
        .policy(StaticPolicy::require(Requirement::users([
            "sam@example.com",
        ])))
        .audit_shared(audit.clone())
        .store_shared(store.clone())
        .approver(HangingApprover)
        .initiator(agent())
        .approver_timeout(Duration::from_secs(2))
        .build()
        .expect("gate");
    let ran = Ran::default();
    let started = tokio::time::Instant::now();
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        run_counted(&gate, &export(1), &ran),
    )
    .await
    .expect("guard() returned instead of hanging")
    .expect_err("undeliverable");
    assert!(matches!(err, GuardError::DeliveryFailed { .. }), "{err:?}");
    assert!(err.to_string().contains("approver_timeout"), "{err}");
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    assert!(audit.names().contains(&"dispatch_failed"));
    let records = store.list(&ListFilter::default()).await.expect("list");
    assert_eq!(records[0].state, RequestState::Cancelled);
}

#[tokio::test]
async fn a_sweep_records_a_denial_whose_audit_failed_when_no_agent_waits() {
    let (gate, audit, clock) = gate_whose_first_denial_audit_fails();
    let Submission::Pending(id) = gate.submit(&export(1)).await.expect("submit") else {
        panic!("pending expected");
    };
    // Another denied request whose audit went through: the sweep leaves it alone.
    let Submission::Pending(audited) = gate.submit(&export(2)).await.expect("submit") else {
        panic!("pending expected");
    };
    gate.decide(id, Review::deny(sam()).reason("not this quarter"))
        .await
        .expect_err("audit failed");
    gate.decide(audited, Review::deny(sam()))
        .await
        .expect("denied and audited");
    assert_eq!(
        audit
            .inner
            .names()
            .iter()
            .filter(|n| **n == "denied")
            .count(),
        1
    );

    // The agent that submitted it is gone; only the sweep can complete the trail.
    assert_eq!(
        gate.sweep().await.expect("sweep").recovered,
        0,
        "too early: the reviewer's decide() may still be auditing"
    );
    clock.advance(TimeDelta::seconds(31));
    assert_eq!(gate.sweep().await.expect("sweep").recovered, 1);
    let denied: Vec<_> = audit
        .inner
        .events()
        .into_iter()
        .filter(|e| e.name() == "denied")
        .collect();
    assert_eq!(denied.len(), 2, "each denial audited");
    let json = serde_json::to_value(&denied[1]).expect("json");
    assert_eq!(json["request_id"], id.to_string());
    assert_eq!(json["by"]["id"], "sam@example.com");
    assert_eq!(json["reason"], "not this quarter");
    let record = gate.get(id).await.expect("store").expect("record");
    assert_eq!(record.state, RequestState::Denied, "still denied");
    assert!(!record.audit_pending, "flag cleared once recorded");
    assert_eq!(
        gate.sweep().await.expect("sweep").recovered,
        0,
        "recorded once"
    );
}

/// `pending_page` walks the pending requests newest first, a page at a time, each once; the
/// last page has no `next`.
#[tokio::test]
async fn pending_pages_list_each_pending_request_once() {
    let f = Fixture::new();
    let mut ids = Vec::new();
    for rows in 0..5 {
        ids.push(f.pending(&export(rows)).await);
        f.clock.advance(TimeDelta::milliseconds(1));
    }
    ids.reverse();
    let mut walked = Vec::new();
    let mut after = None;
    loop {
        let page = f.gate.pending_page(2, after).await.expect("page");
        assert!(page.requests.len() <= 2);
        walked.extend(page.requests.iter().map(|r| r.id));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(walked, ids);
    let all = f.gate.pending_page(5, None).await.expect("page");
    assert_eq!(all.requests.len(), 5);
    assert!(all.next.is_none(), "exactly one page: no next");
}

/// A store and a sink that count their barriers, optionally in one sync domain.
struct Synced<T> {
    inner: T,
    syncs: Arc<AtomicUsize>,
    domain: Option<approvals_core::SyncDomain>,
}

#[async_trait]
impl Store for Synced<MemoryStore> {
    async fn insert(&self, r: &RequestRecord) -> Result<approvals_core::Inserted, StoreError> {
        self.inner.insert(r).await
    }
    async fn get(&self, id: RequestId) -> Result<Option<RequestRecord>, StoreError> {
        self.inner.get(id).await
    }
    async fn get_by_idempotency_key(&self, k: &str) -> Result<Option<RequestRecord>, StoreError> {
        self.inner.get_by_idempotency_key(k).await
    }
    async fn compare_and_set(&self, v: u64, r: &RequestRecord) -> Result<bool, StoreError> {
        self.inner.compare_and_set(v, r).await
    }
    async fn list(&self, f: &ListFilter) -> Result<Vec<RequestRecord>, StoreError> {
        self.inner.list(f).await
    }
    async fn sync(&self) -> Result<(), StoreError> {
        self.syncs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn sync_domain(&self) -> Option<approvals_core::SyncDomain> {
        self.domain
    }
}

#[async_trait]
impl AuditSink for Synced<MemorySink> {
    async fn record(&self, event: &AuditEvent) -> Result<(), AuditError> {
        self.inner.record(event).await
    }
    async fn sync(&self) -> Result<(), AuditError> {
        self.syncs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn sync_domain(&self) -> Option<approvals_core::SyncDomain> {
        self.domain
    }
}

/// Barriers per `submit()` (one) for a store and a sink in `domains`: (store syncs, sink syncs).
async fn barrier_syncs(
    domains: (
        Option<approvals_core::SyncDomain>,
        Option<approvals_core::SyncDomain>,
    ),
) -> (usize, usize) {
    let (store_syncs, sink_syncs) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let gate = Gate::builder()
        .policy(RulePolicy::from_toml(POLICY).expect("policy"))
        .store(Synced {
            inner: MemoryStore::new(),
            syncs: store_syncs.clone(),
            domain: domains.0,
        })
        .audit(Synced {
            inner: MemorySink::new(),
            syncs: sink_syncs.clone(),
            domain: domains.1,
        })
        .initiator(agent())
        .build()
        .expect("gate");
    gate.submit(&export(10)).await.expect("submit");
    (
        store_syncs.load(Ordering::SeqCst),
        sink_syncs.load(Ordering::SeqCst),
    )
}

/// A sink that keeps its events where the store keeps its records (one sync domain) is
/// synced with the store; any other sink is synced by itself.
#[tokio::test]
async fn a_sink_in_the_stores_sync_domain_is_synced_once_with_it() {
    let shared = approvals_core::SyncDomain::new();
    assert_eq!(barrier_syncs((Some(shared), Some(shared))).await, (1, 0));
    assert_eq!(
        barrier_syncs((Some(shared), Some(approvals_core::SyncDomain::new()))).await,
        (1, 1)
    );
    assert_eq!(barrier_syncs((None, None)).await, (1, 1));
    assert_eq!(barrier_syncs((Some(shared), None)).await, (1, 1));
}
