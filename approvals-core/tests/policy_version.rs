//! The policy version recorded with a decision is the version that made it, on every surface
//! that asks the policy: an allowed action's grant, a pending request, a standing grant and the
//! action it covers, a plan and its items. The policy here is reloaded in place after every
//! ask, so its `version()` never names the rules that decided: a gate that records
//! `version()` instead of what `evaluate_versioned` returned with the decision fails.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use approvals_core::{
    ActionRequest, Component, Decision, EventDetail, Gate, GuardError, Initiator, ListFilter,
    MemorySink, MemoryStore, Policy, PolicyError, Principal, RequestId, RequestRecord,
    RequestState, Review, RulePolicy, StandingProposal, Store, Submission,
};
use serde_json::json;

const POLICY: &str = r#"
version = 1
default = "deny"

[[rules]]
name = "restarts"
kind = "deploy.restart"
resource = "svc://prod/*"
effect = "require_approval"
approvers = { groups = ["sre"] }
standing_grant_max = "8h"
standing_grant_max_uses = 20

[[rules]]
name = "roles"
kind = "iam.role.grant"
effect = "require_approval"
approvers = { groups = ["sre"] }

[[rules]]
name = "reads"
kind = "*.read"
effect = "allow"
"#;

/// What `version()` answers: the rules reloaded since the last ask, which decided nothing.
const RELOADED: &str = "reloaded-since-the-last-ask";

/// Fixed rules under a version that moves on at every ask while `turning` (and stays on the
/// last one while not).
struct Reloading {
    rules: RulePolicy,
    asked: AtomicUsize,
    turning: AtomicBool,
    versions: Vec<String>,
}

impl Reloading {
    fn new() -> Self {
        Reloading {
            rules: RulePolicy::from_toml(POLICY).expect("policy"),
            asked: AtomicUsize::new(0),
            turning: AtomicBool::new(true),
            versions: (0..1000).map(|n| format!("v{n}")).collect(),
        }
    }
}

impl Policy for Reloading {
    fn evaluate(&self, request: &ActionRequest) -> Result<Decision, PolicyError> {
        self.evaluate_versioned(request).0
    }

    fn version(&self) -> &str {
        RELOADED
    }

    fn evaluate_versioned(&self, request: &ActionRequest) -> (Result<Decision, PolicyError>, &str) {
        let n = if self.turning.load(Ordering::SeqCst) {
            self.asked.fetch_add(1, Ordering::SeqCst) + 1
        } else {
            self.asked.load(Ordering::SeqCst)
        };
        (
            self.rules.evaluate(request),
            &self.versions[n % self.versions.len()],
        )
    }
}

fn sam() -> Principal {
    Principal::human("sam@example.com").with_groups(["sre"])
}

fn kim() -> Principal {
    Principal::human("kim@example.com").with_groups(["sre"])
}

fn agent() -> Initiator {
    Initiator::agent("deploy-bot")
}

fn restart(service: &str) -> ActionRequest {
    ActionRequest::new("deploy.restart", format!("svc://prod/{service}"))
        .params(json!({"reason": "memory leak"}))
}

struct Fixture {
    gate: Gate,
    /// Shared with the gate, so the test can stop and start its turning.
    policy: Arc<Reloading>,
    store: Arc<MemoryStore>,
    audit: Arc<MemorySink>,
}

impl Fixture {
    fn new() -> Self {
        let policy = Arc::new(Reloading::new());
        let store = Arc::new(MemoryStore::new());
        let audit = Arc::new(MemorySink::new());
        let gate = Gate::builder()
            .policy_shared(policy.clone())
            .store_shared(store.clone())
            .audit_shared(audit.clone())
            .initiator(agent())
            .build()
            .expect("gate");
        Fixture {
            gate,
            policy,
            store,
            audit,
        }
    }

    fn turning(&self, turning: bool) {
        self.policy.turning.store(turning, Ordering::SeqCst);
    }

    /// The version in each request's `policy_decided` event.
    fn decided_versions(&self) -> HashMap<RequestId, String> {
        let mut versions = HashMap::new();
        for event in self.audit.events() {
            if let EventDetail::PolicyDecided { policy_version, .. } = &event.detail {
                let earlier = versions.insert(event.request_id, policy_version.to_string());
                assert!(earlier.is_none(), "one decision per request");
            }
        }
        versions
    }

    async fn records(&self) -> Vec<RequestRecord> {
        self.store
            .list(&ListFilter::default())
            .await
            .expect("listed")
    }

    async fn pending(&self, action: &ActionRequest) -> RequestId {
        match self.gate.submit(action).await.expect("submitted") {
            Submission::Pending(id) => id,
            Submission::Allowed(_) => panic!("expected a stored request"),
        }
    }

    /// Every stored request carries its own decision's version, never `version()`'s.
    async fn assert_records_carry_their_deciding_version(&self) {
        let decided = self.decided_versions();
        let records = self.records().await;
        assert!(!records.is_empty());
        for record in records {
            let version = decided.get(&record.id).expect("the request's decision");
            assert_eq!(*record.policy_version, **version, "{}", record.request.kind);
            assert_ne!(&*record.policy_version, RELOADED);
        }
    }
}

#[tokio::test]
async fn every_surface_records_the_version_that_decided() {
    let f = Fixture::new();

    // An allowed action: its grant and its event.
    let grant = f
        .gate
        .guard(&ActionRequest::new("db.read", "db://orders"))
        .await
        .expect("allowed");
    let decided = f.decided_versions();
    assert_eq!(grant.policy_version(), decided[&grant.request_id()]);
    assert_ne!(grant.policy_version(), RELOADED);

    // A pending request.
    let role = f
        .pending(&ActionRequest::new("iam.role.grant", "role://admin"))
        .await;

    // A standing grant, and an action it covers (stored approved at once).
    let standing = f
        .gate
        .propose_standing(
            StandingProposal {
                kind: "deploy.restart".into(),
                resource: "svc://prod/*".into(),
                initiator: agent(),
                duration: Duration::from_secs(3600),
                uses: 5,
                justification: "rolling restarts".into(),
                environment: None,
            },
            kim(),
        )
        .await
        .expect("proposed");
    f.gate
        .decide(standing, Review::approve(sam()))
        .await
        .expect("approved");
    let covered = f.pending(&restart("api")).await;
    let covered = f.store.get(covered).await.expect("get").expect("stored");
    assert_eq!(
        covered.state,
        RequestState::Approved,
        "by the standing grant"
    );

    // A plan needs one version for all its items: while the rules change at every ask it is
    // refused, and nothing of it is recorded or stored.
    let (events, records) = (f.audit.events().len(), f.records().await.len());
    let refused = f
        .gate
        .submit_plan(&[restart("a"), restart("b")], None)
        .await;
    assert!(
        matches!(
            refused,
            Err(GuardError::Unavailable {
                component: Component::Policy,
                ..
            })
        ),
        "{refused:?}"
    );
    assert_eq!(f.audit.events().len(), events);
    assert_eq!(f.records().await.len(), records);

    // Steady rules: the plan is asked for and approved; then, turning again, an item runs
    // under it with its own decision's version.
    f.turning(false);
    let plan = f
        .gate
        .submit_plan(&[restart("a"), restart("b")], None)
        .await
        .expect("submitted");
    f.gate
        .decide(plan, Review::approve(sam()))
        .await
        .expect("approved");
    f.turning(true);
    let item = f.pending(&restart("a").in_plan(plan)).await;
    let item = f.store.get(item).await.expect("get").expect("stored");
    assert_eq!(item.state, RequestState::Approved, "as the plan's item");

    f.assert_records_carry_their_deciding_version().await;
    // Each ask while turning had its own version, so no record shares one by accident.
    let decided = f.decided_versions();
    for (a, b) in [(role, standing), (standing, covered.id), (plan, item.id)] {
        assert_ne!(decided[&a], decided[&b]);
    }
}
