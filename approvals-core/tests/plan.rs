//! Plan approval: an agent submits a plan of actions as one request; the rule's own reviewers
//! and quorum approve or deny the whole plan; each action then runs once, bound to its own
//! digest. These tests try to break it: an item run with anything changed (parameters,
//! resource, words, environment, another initiator under every alias), an item run twice or
//! raced, an action not in the plan, a plan denied, revoked or lapsed, a changed rule, plans
//! the rules refuse, and an agent hiding a reserved kind in a plan.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use approvals_core::plan::{MAX_PLAN_ITEMS, PLAN_KIND, PlanStatus};
use approvals_core::{
    ActionRequest, Gate, GuardError, Initiator, ListFilter, ManualClock, MemorySink, MemoryStore,
    Principal, RequestId, RequestRecord, RequestState, Review, ReviewError, RulePolicy, Store,
    Submission,
};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;

use common::Pager;

const POLICY: &str = r#"
version = 1
default = "deny"

[[rules]]
name = "restarts"
kind = "deploy.restart"
resource = "svc://prod/*"
effect = "require_approval"
approvers = { groups = ["sre"] }
timeout = "30m"

[[rules]]
name = "paired-exports"
kind = "data.export"
effect = "require_approval"
approvers = { groups = ["data-owners"] }
quorum = 2

[[rules]]
name = "migrations"
kind = "db.migrate"
effect = "require_approval"
approvers = { groups = ["sre"] }

[[rules]]
name = "deletes"
kind = "data.delete"
effect = "require_approval"
approvers = { groups = ["data-owners"] }
cooldown_after_denial = "1h"

[[rules]]
name = "reads"
kind = "*.read"
effect = "allow"

[[rules]]
name = "no-drops"
kind = "db.drop"
effect = "deny"
reason = "never"
"#;

fn t0() -> DateTime<Utc> {
    "2026-12-04T09:00:00Z".parse().expect("time")
}

fn sam() -> Principal {
    Principal::human("sam@example.com").with_groups(["sre", "data-owners"])
}

fn kim() -> Principal {
    Principal::human("kim@example.com").with_groups(["sre", "data-owners"])
}

fn dana() -> Principal {
    Principal::human("dana@example.com").with_groups(["sre", "data-owners"])
}

fn agent() -> Initiator {
    Initiator::agent("deploy-bot").on_behalf_of(dana())
}

fn restart(service: &str) -> ActionRequest {
    ActionRequest::new("deploy.restart", format!("svc://prod/{service}"))
        .params(json!({"reason": "memory leak"}))
        .justification("rolling restart")
}

struct Fixture {
    gate: Gate,
    store: Arc<dyn Store>,
    audit: Arc<MemorySink>,
    clock: Arc<ManualClock>,
    pager: Arc<Pager>,
}

impl Fixture {
    fn new() -> Self {
        Self::with_policy(Arc::new(MemoryStore::new()), POLICY)
    }

    fn with_policy(store: Arc<dyn Store>, policy: &str) -> Self {
        let audit = Arc::new(MemorySink::new());
        let clock = Arc::new(ManualClock::new(t0()));
        let pager = Arc::new(Pager::default());
        let gate = Gate::builder()
            .policy(RulePolicy::from_toml(policy).expect("policy"))
            .store_shared(store.clone())
            .audit_shared(audit.clone())
            .clock(clock.clone())
            .approver_shared(pager.clone())
            .initiator(agent())
            .grant_ttl(Duration::from_secs(3600))
            .build()
            .expect("gate");
        Fixture {
            gate,
            store,
            audit,
            clock,
            pager,
        }
    }

    /// A plan of restarts of `services`, approved by sam.
    async fn approved(&self, services: &[&str]) -> RequestId {
        let items: Vec<ActionRequest> = services.iter().map(|s| restart(s)).collect();
        let id = self
            .gate
            .submit_plan(&items, Some("roll the fleet".into()))
            .await
            .expect("submitted");
        self.gate
            .decide(id, Review::approve(sam()))
            .await
            .expect("approved");
        self.gate.wait_plan(id).await.expect("approved plan");
        id
    }

    /// Asks for `action` as `caller` and returns the stored request: approved at once when it
    /// ran as a plan item, pending otherwise.
    async fn ask_as(&self, caller: &Initiator, action: &ActionRequest) -> RequestRecord {
        let id = match self
            .gate
            .submit_as(caller, action)
            .await
            .expect("submitted")
        {
            Submission::Pending(id) => id,
            Submission::Allowed(_) => panic!("expected a stored request"),
        };
        self.record(id).await
    }

    async fn ask(&self, action: &ActionRequest) -> RequestRecord {
        self.ask_as(&agent(), action).await
    }

    async fn record(&self, id: RequestId) -> RequestRecord {
        self.store.get(id).await.expect("get").expect("stored")
    }

    async fn used(&self, plan: RequestId) -> Vec<u32> {
        PlanStatus::of(&self.record(plan).await)
            .expect("a plan")
            .used
    }

    fn paged(&self) -> usize {
        self.pager.paged()
    }

    fn count(&self, name: &str) -> usize {
        self.audit.names().iter().filter(|n| **n == name).count()
    }

    async fn stored(&self) -> usize {
        self.store
            .list(&ListFilter::default())
            .await
            .expect("list")
            .len()
    }
}

fn assert_ran_as_item(record: &RequestRecord, plan: RequestId, item: u32, what: &str) {
    assert_eq!(
        record.state,
        RequestState::Approved,
        "{what}: approved by the plan"
    );
    assert!(
        !record.reviews.is_empty()
            && record
                .reviews
                .iter()
                .all(|r| r.channel == format!("plan {plan} item {}", item + 1)),
        "{what}: its approvals name the plan and the item: {:?}",
        record.reviews
    );
    assert_eq!(record.request.plan, None, "what is stored is the action");
}

fn assert_asked(record: &RequestRecord, what: &str) {
    assert_eq!(
        record.state,
        RequestState::Pending,
        "{what}: must be asked for on its own"
    );
    assert!(record.reviews.is_empty(), "{what}: nobody approved it yet");
}

#[tokio::test]
async fn an_approved_plan_runs_each_item_once_with_its_own_grant_and_audits_each() {
    let f = Fixture::new();
    let plan = f.approved(&["api", "worker", "cron"]).await;
    assert_eq!(f.paged(), 1, "the plan was delivered once, as one request");
    let record = f.record(plan).await;
    assert_eq!(record.request.kind, PLAN_KIND);
    let status = PlanStatus::of(&record).expect("a plan");
    assert_eq!(status.items.len(), 3);
    for (item, service) in status.items.iter().zip(["api", "worker", "cron"]) {
        assert_eq!(item.action.resource, format!("svc://prod/{service}"));
    }

    let ran = AtomicUsize::new(0);
    for service in ["worker", "api", "cron"] {
        f.gate
            .run(&restart(service).in_plan(plan), || async {
                ran.fetch_add(1, Ordering::SeqCst);
                Ok::<_, GuardError>(())
            })
            .await
            .expect("ran as a plan item");
    }
    assert_eq!(ran.load(Ordering::SeqCst), 3);
    assert_eq!(f.paged(), 1, "nobody was asked again");
    assert_eq!(f.used(plan).await, vec![1, 0, 2]);
    assert_eq!(f.count("plan_item_used"), 3);
    assert_eq!(f.count("approved_by_plan"), 3);
    assert_eq!(f.count("executed"), 3);

    let events = f.audit.events();
    let uses: Vec<_> = events
        .iter()
        .filter(|e| e.name() == "plan_item_used")
        .collect();
    assert!(uses.iter().all(|e| e.request_id == plan));
    let actions: Vec<_> = events
        .iter()
        .filter(|e| e.name() == "approved_by_plan")
        .collect();
    for (used, action) in uses.iter().zip(&actions) {
        let used = serde_json::to_value(&used.detail).expect("json");
        let action_json = serde_json::to_value(&action.detail).expect("json");
        assert_eq!(used["request"], json!(action.request_id.to_string()));
        assert_eq!(used["action_digest"], json!(action.digest.to_string()));
        assert_eq!(used["items"], json!(3));
        assert_eq!(used["item"], action_json["item"]);
        let item = action_json["item"].as_u64().expect("item") as usize;
        assert_eq!(
            status.items[item].digest, action.digest,
            "the item showed the digest its action has"
        );
        assert_eq!(action_json["plan"], json!(plan.to_string()));
        assert_eq!(action_json["approvers"][0]["id"], json!("sam@example.com"));
        let order: Vec<&str> = events
            .iter()
            .filter(|e| e.request_id == action.request_id)
            .map(|e| e.name())
            .collect();
        assert_eq!(
            order,
            [
                "requested",
                "policy_decided",
                "approved_by_plan",
                "grant_issued",
                "grant_consumed",
                "executed"
            ]
        );
    }

    // Each item ran once: asking for it again is asking anew.
    assert_asked(&f.ask(&restart("api").in_plan(plan)).await, "an item again");
    assert_eq!(f.paged(), 2);
}

#[tokio::test]
async fn an_item_with_anything_changed_or_from_anyone_else_is_asked_for() {
    let f = Fixture::new();
    let plan = f.approved(&["api"]).await;
    let changed: Vec<(&str, ActionRequest)> = vec![
        (
            "other parameters",
            restart("api").params(json!({"reason": "memory leak", "force": true})),
        ),
        ("another resource", restart("api2")),
        (
            "other words for the reviewers",
            restart("api").justification("something else"),
        ),
        ("a summary added", restart("api").summary("restart it")),
        ("another environment", restart("api").environment("staging")),
        ("not naming the plan", restart("api")),
    ];
    for (what, action) in &changed {
        let action = if *what == "not naming the plan" {
            action.clone()
        } else {
            action.clone().in_plan(plan)
        };
        assert_asked(&f.ask(&action).await, what);
    }
    let others: Vec<(&str, Initiator)> = vec![
        (
            "another agent",
            Initiator::agent("other-bot").on_behalf_of(dana()),
        ),
        ("the agent for nobody", Initiator::agent("deploy-bot")),
        (
            "the agent for another human",
            Initiator::agent("deploy-bot").on_behalf_of(Principal::human("eve@example.com")),
        ),
        (
            "a service of the same name",
            Initiator::service("deploy-bot").on_behalf_of(dana()),
        ),
    ];
    for (what, caller) in &others {
        assert_asked(&f.ask_as(caller, &restart("api").in_plan(plan)).await, what);
    }
    // A look-alike of the agent (a Cyrillic e) is refused where it enters.
    let lookalike = Initiator::agent("d\u{0435}ploy-bot").on_behalf_of(dana());
    let refused = f
        .gate
        .submit_as(&lookalike, &restart("api").in_plan(plan))
        .await;
    assert!(
        matches!(refused, Err(GuardError::InvalidRequest(_))),
        "{refused:?}"
    );
    // Another plan's id, an ordinary request's id, and an unknown id cover nothing either.
    let ordinary = f.ask(&restart("x")).await.id;
    for (what, named) in [
        ("an ordinary request named as the plan", ordinary),
        ("an unknown plan", RequestId::new()),
    ] {
        assert_asked(&f.ask(&restart("api").in_plan(named)).await, what);
    }
    assert!(f.used(plan).await.is_empty(), "no attempt used the item");
    // The item itself, unchanged, still runs once.
    assert_ran_as_item(
        &f.ask(&restart("api").in_plan(plan)).await,
        plan,
        0,
        "the item as planned",
    );
}

#[tokio::test]
async fn a_plan_needs_the_rules_own_quorum_and_reviewers() {
    let f = Fixture::new();
    let export = |table: &str| {
        ActionRequest::new("data.export", format!("db://prod/{table}")).params(json!({"rows": 10}))
    };
    let plan = f
        .gate
        .submit_plan(&[export("a"), export("b")], None)
        .await
        .expect("submitted");
    let record = f.record(plan).await;
    assert_eq!(record.policy_rule.as_deref(), Some("paired-exports"));
    assert_eq!(record.requirement.quorum, 2);
    // The agent's own human, and anyone outside the group, may not approve.
    let refused = f.gate.decide(plan, Review::approve(dana())).await;
    assert!(
        matches!(refused, Err(ReviewError::SelfApproval { .. })),
        "{refused:?}"
    );
    let outsider = Principal::human("eve@example.com").with_groups(["sre"]);
    assert!(
        f.gate
            .decide(plan, Review::approve(outsider))
            .await
            .is_err()
    );
    f.gate
        .decide(plan, Review::approve(sam()))
        .await
        .expect("first approval");
    assert_asked(
        &f.ask(&export("a").in_plan(plan)).await,
        "with one approval of two",
    );
    f.gate
        .decide(plan, Review::approve(kim()))
        .await
        .expect("second approval");
    f.gate.wait_plan(plan).await.expect("approved");
    let ran = f.ask(&export("b").in_plan(plan)).await;
    assert_ran_as_item(&ran, plan, 1, "after the quorum");
    assert_eq!(ran.reviews.len(), 2, "both approvals carried over");
}

#[tokio::test]
async fn a_denied_revoked_or_lapsed_plan_runs_nothing() {
    let f = Fixture::new();
    // Denied.
    let denied = f
        .gate
        .submit_plan(&[restart("a")], None)
        .await
        .expect("submitted");
    f.gate
        .decide(denied, Review::deny(sam()).reason("not during the freeze"))
        .await
        .expect("denied");
    let waited = f.gate.wait_plan(denied).await;
    assert!(
        matches!(&waited, Err(GuardError::Denied { reason, .. }) if reason.as_deref() == Some("not during the freeze")),
        "{waited:?}"
    );
    assert_asked(&f.ask(&restart("a").in_plan(denied)).await, "denied plan");

    // Revoked after approval (deny wins), with one item already run.
    let revoked = f.approved(&["a", "b"]).await;
    assert_ran_as_item(
        &f.ask(&restart("a").in_plan(revoked)).await,
        revoked,
        0,
        "before the revocation",
    );
    f.gate
        .decide(revoked, Review::deny(kim()).reason("incident over"))
        .await
        .expect("revoked");
    assert_eq!(f.record(revoked).await.state, RequestState::Denied);
    assert_asked(
        &f.ask(&restart("b").in_plan(revoked)).await,
        "after the revocation",
    );

    // Lapsed: the approval lasts the gate's grant time, and no covered grant outlives it.
    let lapsing = f.approved(&["a", "b"]).await;
    let early = f.ask(&restart("a").in_plan(lapsing)).await;
    assert_eq!(
        early.grant_expires_at,
        f.record(lapsing).await.grant_expires_at,
        "an item's grant never outlives the plan"
    );
    f.clock.advance(TimeDelta::minutes(61));
    f.gate.sweep().await.expect("sweep");
    assert_eq!(f.record(lapsing).await.state, RequestState::Lapsed);
    assert_asked(
        &f.ask(&restart("b").in_plan(lapsing)).await,
        "after it lapsed",
    );
}

#[tokio::test]
async fn plans_the_rules_refuse_store_nothing_and_page_nobody() {
    let f = Fixture::new();
    let refused = |r: Result<RequestId, GuardError>| match r {
        Err(GuardError::InvalidRequest(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let too_many: Vec<ActionRequest> = (0..=MAX_PLAN_ITEMS)
        .map(|i| restart(&format!("s{i}")))
        .collect();
    let cases: Vec<(&str, Vec<ActionRequest>, &str)> = vec![
        ("empty", vec![], "at least one"),
        ("too many", too_many, "at most"),
        (
            "items under different rules",
            vec![restart("a"), ActionRequest::new("db.migrate", "db://prod")],
            "one plan per rule",
        ),
        (
            "nothing needing approval",
            vec![ActionRequest::new("logs.read", "svc://prod/api")],
            "nothing in this plan needs approval",
        ),
    ];
    for (what, items, says) in cases {
        let why = refused(f.gate.submit_plan(&items, None).await);
        assert!(why.contains(says), "{what}: {why}");
    }
    // A plan holding a reserved kind, under any spelling: a plan in a plan, a standing grant.
    for kind in [
        PLAN_KIND,
        "approvals.standing_grant",
        " Approvals.plan",
        "ＡＰＰＲＯＶＡＬＳ.plan",
        "\u{1}approvals.plan",
    ] {
        let why = refused(
            f.gate
                .submit_plan(&[restart("a"), ActionRequest::new(kind, "x")], None)
                .await,
        );
        assert!(why.contains("reserved"), "{kind:?}: {why}");
    }
    // An item that claims another initiator.
    let claimed = restart("a").initiator(Initiator::agent("other-bot"));
    let mismatch = f.gate.submit_plan(&[claimed], None).await;
    assert!(
        matches!(mismatch, Err(GuardError::InitiatorMismatch { .. })),
        "{mismatch:?}"
    );
    // An item the policy denies denies the plan, naming the item.
    let denied = f
        .gate
        .submit_plan(
            &[
                restart("a"),
                ActionRequest::new("db.drop", "db://prod/users"),
            ],
            None,
        )
        .await;
    match denied {
        Err(GuardError::PolicyDenied { rule, reason, .. }) => {
            assert_eq!(rule, "no-drops");
            assert!(
                reason.contains("item 2 of the plan (db.drop on db://prod/users)"),
                "{reason}"
            );
        }
        other => panic!("expected a policy denial, got {other:?}"),
    }
    assert_eq!(f.stored().await, 0, "nothing stored");
    assert_eq!(f.paged(), 0, "nobody paged");
    // An agent cannot ask for a plan's kind as an action either.
    let asked = f
        .gate
        .submit(&ActionRequest::new(PLAN_KIND, "plan of 1 action(s)"))
        .await;
    assert!(
        matches!(asked, Err(GuardError::InvalidRequest(_))),
        "{asked:?}"
    );
}

#[tokio::test]
async fn the_plan_itself_is_never_run_and_is_waited_for_as_a_plan() {
    let f = Fixture::new();
    let plan = f.approved(&["a"]).await;
    let waited = f.gate.wait(plan).await;
    assert!(
        matches!(&waited, Err(GuardError::InvalidRequest(why)) if why.contains("is a plan")),
        "{waited:?}"
    );
    assert_eq!(f.count("grant_issued"), 0, "no grant for the plan");
    let ordinary = f.ask(&restart("x")).await.id;
    let not_plan = f.gate.wait_plan(ordinary).await;
    assert!(
        matches!(&not_plan, Err(GuardError::InvalidRequest(why)) if why.contains("not a plan")),
        "{not_plan:?}"
    );
}

#[tokio::test]
async fn racing_askers_run_an_item_once_and_a_repeated_item_twice() {
    let f = Arc::new(Fixture::new());
    let plan = f.approved(&["api", "api", "worker"]).await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            f.ask(&restart("api").in_plan(plan)).await.state
        }));
    }
    let mut approved = 0;
    for task in tasks {
        if task.await.expect("task") == RequestState::Approved {
            approved += 1;
        }
    }
    assert_eq!(
        approved, 2,
        "the item is in the plan twice, so it runs twice"
    );
    let mut used = f.used(plan).await;
    used.sort_unstable();
    assert_eq!(used, vec![0, 1]);
    assert_eq!(f.count("plan_item_used"), 2);
}

#[tokio::test]
async fn a_changed_rule_asks_again() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let f = Fixture::with_policy(store.clone(), POLICY);
    let plan = f.approved(&["api"]).await;
    let changed = POLICY.replace(
        "approvers = { groups = [\"sre\"] }\ntimeout = \"30m\"",
        "approvers = { groups = [\"sre-leads\"] }\ntimeout = \"30m\"",
    );
    assert_ne!(changed, POLICY);
    let g = Fixture::with_policy(store, &changed);
    assert_asked(
        &g.ask(&restart("api").in_plan(plan)).await,
        "under changed approvers",
    );
    assert!(g.used(plan).await.is_empty());
}

#[tokio::test]
async fn a_denied_plan_or_a_denied_action_is_not_asked_again_in_a_plan() {
    let f = Fixture::new();
    let delete = |table: &str| ActionRequest::new("data.delete", format!("db://prod/{table}"));
    // An action denied on its own does not come back to reviewers inside a plan.
    let alone = f.ask(&delete("x")).await.id;
    f.gate
        .decide(alone, Review::deny(sam()).reason("keep x"))
        .await
        .expect("denied");
    let (stored, paged) = (f.stored().await, f.paged());
    let refused = f.gate.submit_plan(&[delete("y"), delete("x")], None).await;
    match refused {
        Err(GuardError::DeniedRecently { id, by, reason, .. }) => {
            assert_eq!(id, alone);
            assert_eq!(by, "sam@example.com");
            assert_eq!(reason.as_deref(), Some("keep x"));
        }
        other => panic!("expected the earlier denial, got {other:?}"),
    }
    assert_eq!(
        (f.stored().await, f.paged()),
        (stored, paged),
        "nothing stored, nobody paged"
    );
    assert_eq!(f.count("resubmission_refused"), 1);

    // A denied plan is not asked for again; another plan is.
    let plan = f
        .gate
        .submit_plan(&[delete("y"), delete("z")], None)
        .await
        .expect("submitted");
    f.gate
        .decide(plan, Review::deny(kim()).reason("not both"))
        .await
        .expect("denied");
    let again = f.gate.submit_plan(&[delete("y"), delete("z")], None).await;
    assert!(
        matches!(&again, Err(GuardError::DeniedRecently { id, .. }) if *id == plan),
        "{again:?}"
    );
    f.gate
        .submit_plan(&[delete("z")], None)
        .await
        .expect("another plan is asked for");
    // Once the cool-down is over, the same plan may be asked for again.
    f.clock.advance(TimeDelta::minutes(61));
    f.gate
        .submit_plan(&[delete("y"), delete("z")], None)
        .await
        .expect("after the cool-down");
}
