//! No asking again after a denial (`cooldown_after_denial`): the same action, under any
//! rewording, any alias of who asks and any interleaving, is refused at once with the earlier
//! reviewer's reason and pages nobody; another action, a request that ended any other way, or
//! a rule without a cool-down asks as before; and a store that cannot answer refuses.

mod common;

use std::sync::Arc;
use std::time::Duration;

use approvals_core::{
    ActionRequest, Gate, GuardError, Initiator, Inserted, ListFilter, ManualClock, MemorySink,
    MemoryStore, Principal, RequestId, RequestRecord, Requirement, Review, RulePolicy, Store,
    StoreError, Submission,
};
use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;

use common::Pager;

const POLICY: &str = r#"
version = 1
default = "deny"

[[rules]]
name = "exports"
kind = "data.export"
effect = "require_approval"
approvers = { groups = ["data-owners"] }
timeout = "30m"
cooldown_after_denial = "1h"

[[rules]]
name = "roles"
kind = "iam.role.grant"
effect = "require_approval"
approvers = { groups = ["security"] }
timeout = "30m"
"#;

fn t0() -> DateTime<Utc> {
    "2026-11-21T12:00:00Z".parse().expect("time")
}

fn sam() -> Principal {
    Principal::human("sam@example.com").with_groups(["data-owners", "security"])
}

fn kim() -> Principal {
    Principal::human("kim@example.com").with_groups(["data-owners", "security"])
}

fn agent() -> Initiator {
    Initiator::agent("billing-agent").on_behalf_of(Principal::human("dana@example.com"))
}

fn export() -> ActionRequest {
    ActionRequest::new("data.export", "db://prod/customers")
        .params(json!({"rows": 5000, "format": "csv", "filter": {"plan": "pro", "region": "eu"}}))
        .environment("production")
        .justification("quarterly churn report")
}

fn with_ticket(mut action: ActionRequest, ticket: &str) -> ActionRequest {
    Arc::make_mut(&mut action.context).ticket = Some(ticket.into());
    action
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
        Self::on(Arc::new(MemoryStore::new()))
    }

    fn on(store: Arc<dyn Store>) -> Self {
        let audit = Arc::new(MemorySink::new());
        let clock = Arc::new(ManualClock::new(t0()));
        let pager = Arc::new(Pager::default());
        let gate = Gate::builder()
            .policy(RulePolicy::from_toml(POLICY).expect("policy"))
            .store_shared(store.clone())
            .audit_shared(audit.clone())
            .clock(clock.clone())
            .approver_shared(pager.clone())
            .initiator(agent())
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

    async fn pending(&self, action: &ActionRequest) -> RequestId {
        match self.gate.submit(action).await.expect("submitted") {
            Submission::Pending(id) => id,
            Submission::Allowed(_) => panic!("expected a pending request"),
        }
    }

    /// Submits `action`, has sam deny it ten minutes later, and returns its id.
    async fn denied(&self, action: &ActionRequest) -> RequestId {
        let id = self.pending(action).await;
        self.clock.advance(TimeDelta::minutes(10));
        self.gate
            .decide(id, Review::deny(sam()).reason("not this quarter"))
            .await
            .expect("deny");
        id
    }

    fn paged(&self) -> usize {
        self.pager.paged()
    }

    async fn stored(&self) -> usize {
        self.store
            .list(&ListFilter::default())
            .await
            .expect("list")
            .len()
    }

    fn count(&self, name: &str) -> usize {
        self.audit.names().iter().filter(|n| **n == name).count()
    }
}

fn assert_refused_by(result: Result<Submission, GuardError>, earlier: RequestId, what: &str) {
    match result {
        Err(GuardError::DeniedRecently { id, by, reason, .. }) => {
            assert_eq!(id, earlier, "{what}: names the denied request");
            assert_eq!(by, "sam@example.com", "{what}: names the reviewer");
            assert_eq!(
                reason.as_deref(),
                Some("not this quarter"),
                "{what}: carries the reason"
            );
        }
        other => panic!("{what}: must be refused as denied recently, got {other:?}"),
    }
}

/// Every way of asking again for the same action: reworded, re-summarised, other context or
/// environment label, a
/// new idempotency key, a session or prompt reference added, parameters written in another
/// key order, and through a door under another spelling of the agent or of the human it acts
/// for (case, width, surrounding space; an id with invisible characters is refused at the door
/// before anything else).
#[tokio::test]
async fn the_same_action_is_refused_under_every_rewording_and_alias() {
    let f = Fixture::new();
    let first = f.denied(&export()).await;
    let paged = f.paged();

    let mut same: Vec<(&str, ActionRequest)> = vec![
        ("unchanged", export()),
        (
            "reworded justification",
            export().justification("URGENT: the board meeting is in an hour"),
        ),
        ("a summary", export().summary("Export customers (retry)")),
        ("a ticket", with_ticket(export(), "CHG-1234")),
        // The environment is a label its caller chooses, not part of what runs (the resource
        // names the database).
        ("another environment label", export().environment("Production ")),
        ("a new idempotency key", export().idempotency_key("retry-1")),
        (
            "parameters in another order",
            ActionRequest::new("data.export", "db://prod/customers")
                .params(json!({"filter": {"region": "eu", "plan": "pro"}, "format": "csv", "rows": 5000}))
                .environment("production"),
        ),
    ];
    let mut with_session = export();
    with_session.initiator = Some(Arc::new(agent().session("run-42")));
    same.push(("a new session", with_session));
    for (what, action) in &same {
        assert_refused_by(f.gate.submit(action).await, first, what);
    }
    for (what, caller) in [
        (
            "the agent's id in capitals",
            Initiator::agent("BILLING-AGENT").on_behalf_of(Principal::human("dana@example.com")),
        ),
        (
            "the agent's id in full width",
            Initiator::agent("ｂｉｌｌｉｎｇ-agent")
                .on_behalf_of(Principal::human("dana@example.com")),
        ),
        (
            "the human's id respelled",
            Initiator::agent("billing-agent").on_behalf_of(Principal::human(" Dana@EXAMPLE.com")),
        ),
        (
            "the human's id in full width",
            Initiator::agent("billing-agent")
                .on_behalf_of(Principal::human("ｄａｎａ@example.com")),
        ),
    ] {
        assert_refused_by(f.gate.submit_as(&caller, &export()).await, first, what);
    }
    let attempts = same.len() + 4;
    assert_eq!(f.paged(), paged, "nobody is paged again");
    assert_eq!(f.stored().await, 1, "no request is stored for a refusal");
    assert_eq!(f.count("resubmission_refused"), attempts);
    // Each refusal is recorded after the request and the policy's decision, under its own id.
    let events = f.audit.events();
    for refused in events
        .iter()
        .filter(|e| e.detail.name() == "resubmission_refused")
    {
        let names: Vec<_> = events
            .iter()
            .filter(|e| e.request_id == refused.request_id)
            .map(|e| e.detail.name())
            .collect();
        assert_eq!(
            names,
            ["requested", "policy_decided", "resubmission_refused"]
        );
        assert_ne!(refused.request_id, first);
    }
}

/// A different action is a new question: other parameters (changed, added), another resource,
/// another agent, another human it acts for.
#[tokio::test]
async fn another_action_is_asked_for() {
    let f = Fixture::new();
    f.denied(&export()).await;
    let paged = f.paged();
    let others = [
        (
            "fewer rows",
            export().params(json!({"rows": 50, "format": "csv", "filter": {"plan": "pro", "region": "eu"}})),
        ),
        (
            "an added parameter",
            export().params(json!({"rows": 5000, "format": "csv", "filter": {"plan": "pro", "region": "eu"}, "columns": ["email"]})),
        ),
        (
            "another resource",
            ActionRequest::new("data.export", "db://prod/invoices")
                .params(json!({"rows": 5000, "format": "csv", "filter": {"plan": "pro", "region": "eu"}}))
                .environment("production"),
        ),
    ];
    for (what, action) in &others {
        assert!(
            matches!(f.gate.submit(action).await, Ok(Submission::Pending(_))),
            "{what}: must be asked for"
        );
    }
    for (what, caller) in [
        (
            "another agent",
            Initiator::agent("reporting-agent").on_behalf_of(Principal::human("dana@example.com")),
        ),
        (
            "another human",
            Initiator::agent("billing-agent").on_behalf_of(Principal::human("lee@example.com")),
        ),
        ("no human", Initiator::agent("billing-agent")),
    ] {
        assert!(
            matches!(
                f.gate.submit_as(&caller, &export()).await,
                Ok(Submission::Pending(_))
            ),
            "{what}: must be asked for"
        );
    }
    assert_eq!(f.paged(), paged + others.len() + 3);
    assert_eq!(f.count("resubmission_refused"), 0);
}

/// Only a reviewer's denial refuses: a request that expired, was cancelled or was approved and
/// ran does not.
#[tokio::test]
async fn only_a_reviewers_denial_refuses() {
    let f = Fixture::new();
    let expired = f.pending(&export()).await;
    f.clock.advance(TimeDelta::minutes(31));
    f.gate.sweep().await.expect("sweep");
    assert_eq!(
        f.store
            .get(expired)
            .await
            .expect("get")
            .expect("record")
            .state
            .as_str(),
        "expired"
    );
    let cancelled = f.pending(&export()).await;
    f.gate
        .cancel(cancelled, None, Some("changed my mind".into()))
        .await
        .expect("cancel");
    let approved = f.pending(&export()).await;
    f.gate
        .decide(approved, Review::approve(sam()))
        .await
        .expect("approve");
    let grant = f.gate.wait(approved).await.expect("grant");
    f.gate
        .execute(grant, &export(), || async { Ok::<_, GuardError>(()) })
        .await
        .expect("ran");
    assert!(matches!(
        f.gate.submit(&export()).await,
        Ok(Submission::Pending(_))
    ));
    assert_eq!(f.count("resubmission_refused"), 0);
}

/// A denial after approval, before the grant was used (deny wins), refuses like any other.
#[tokio::test]
async fn a_revoking_denial_refuses() {
    let f = Fixture::new();
    let id = f.pending(&export()).await;
    f.gate
        .decide(id, Review::approve(kim()))
        .await
        .expect("approve");
    f.gate
        .decide(id, Review::deny(sam()).reason("not this quarter"))
        .await
        .expect("revoking deny");
    assert_refused_by(f.gate.submit(&export()).await, id, "after a revoking deny");
}

/// The cool-down runs from the denial, not from the request, and ends exactly at `until`.
#[tokio::test]
async fn the_cooldown_runs_from_the_denial_and_ends() {
    let f = Fixture::new();
    let first = f.denied(&export()).await; // denied at t0 + 10 min
    f.clock.advance(TimeDelta::minutes(59)); // t0 + 69 min: an hour after the request
    match f.gate.submit(&export()).await {
        Err(GuardError::DeniedRecently { id, until, .. }) => {
            assert_eq!(id, first);
            assert_eq!(until, t0() + TimeDelta::minutes(70));
        }
        other => panic!("still within the cool-down, got {other:?}"),
    }
    f.clock.advance(TimeDelta::minutes(1)); // exactly until
    assert!(matches!(
        f.gate.submit(&export()).await,
        Ok(Submission::Pending(_))
    ));
}

/// A rule without a cool-down asks again after a denial, as before.
#[tokio::test]
async fn without_a_cooldown_a_denied_action_is_asked_for_again() {
    let f = Fixture::new();
    let role = ActionRequest::new("iam.role.grant", "iam://prod/roles/admin")
        .params(json!({"user": "bob"}));
    let id = f.pending(&role).await;
    f.gate
        .decide(id, Review::deny(sam()).reason("no"))
        .await
        .expect("deny");
    assert!(matches!(
        f.gate.submit(&role).await,
        Ok(Submission::Pending(_))
    ));
}

/// Many resubmissions at once after a denial: every one refused, nobody paged, nothing stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_resubmissions_are_all_refused() {
    let f = Fixture::new();
    let first = f.denied(&export()).await;
    let paged = f.paged();
    let attempts = (0..32).map(|i| {
        let gate = f.gate.clone();
        tokio::spawn(async move {
            gate.submit(&export().justification(format!("attempt {i}")))
                .await
        })
    });
    for result in futures_join(attempts).await {
        assert_refused_by(result, first, "a concurrent resubmission");
    }
    assert_eq!(f.paged(), paged);
    assert_eq!(f.stored().await, 1);
}

async fn futures_join(
    tasks: impl Iterator<Item = tokio::task::JoinHandle<Result<Submission, GuardError>>>,
) -> Vec<Result<Submission, GuardError>> {
    let mut out = Vec::new();
    for task in tasks.collect::<Vec<_>>() {
        out.push(task.await.expect("task"));
    }
    out
}

/// A store that cannot list the denials refuses the action (fail closed): nothing is stored
/// and nobody is paged.
#[tokio::test]
async fn a_store_that_cannot_list_refuses() {
    let store = Arc::new(NoListing(MemoryStore::new()));
    let f = Fixture::on(store);
    let result = f.gate.submit(&export()).await;
    assert!(
        matches!(result, Err(GuardError::Unavailable { .. })),
        "{result:?}"
    );
    assert_eq!(f.paged(), 0);
    assert_eq!(f.count("resubmission_refused"), 0);
}

/// A memory store whose listing fails.
struct NoListing(MemoryStore);

#[async_trait]
impl Store for NoListing {
    async fn insert(&self, record: &RequestRecord) -> Result<Inserted, StoreError> {
        self.0.insert(record).await
    }
    async fn get(&self, id: RequestId) -> Result<Option<RequestRecord>, StoreError> {
        self.0.get(id).await
    }
    async fn get_by_idempotency_key(&self, key: &str) -> Result<Option<RequestRecord>, StoreError> {
        self.0.get_by_idempotency_key(key).await
    }
    async fn compare_and_set(
        &self,
        expected_version: u64,
        record: &RequestRecord,
    ) -> Result<bool, StoreError> {
        self.0.compare_and_set(expected_version, record).await
    }
    async fn list(&self, _filter: &ListFilter) -> Result<Vec<RequestRecord>, StoreError> {
        Err(StoreError::Unavailable("the listing is down".into()))
    }
}

/// The policy file: only an approval rule may set a cool-down, of more than zero and at most
/// 30 days; the loaded requirement carries it, and so does the stored record's copy.
#[test]
fn the_policy_file_checks_the_cooldown() {
    let rule = |extra: &str| {
        format!(
            "version = 1\ndefault = \"deny\"\n[[rules]]\nname = \"x\"\nkind = \"data.export\"\n{extra}\n"
        )
    };
    for (extra, expected) in [
        (
            "effect = \"allow\"\ncooldown_after_denial = \"1h\"",
            "only apply to effect = \"require_approval\"",
        ),
        (
            "effect = \"require_approval\"\napprovers = { groups = [\"g\"] }\ncooldown_after_denial = \"0s\"",
            "cooldown_after_denial must be longer than zero",
        ),
        (
            "effect = \"require_approval\"\napprovers = { groups = [\"g\"] }\ncooldown_after_denial = \"31d\"",
            "at most 30 days",
        ),
        (
            "effect = \"require_approval\"\napprovers = { groups = [\"g\"] }\ncooldown_after_denial = \"soon\"",
            "cooldown_after_denial",
        ),
    ] {
        let e = RulePolicy::from_toml(&rule(extra)).expect_err(extra);
        assert!(e.to_string().contains(expected), "{extra}: {e}");
    }
    let policy = RulePolicy::from_toml(&rule(
        "effect = \"require_approval\"\napprovers = { groups = [\"g\"] }\ncooldown_after_denial = \"30d\"",
    ))
    .expect("valid");
    let decision = approvals_core::Policy::evaluate(
        &policy,
        &ActionRequest::new("data.export", "db://x").initiator(agent()),
    )
    .expect("decision");
    let approvals_core::Decision::RequireApproval { requirement, .. } = decision else {
        panic!("requires approval");
    };
    assert_eq!(
        requirement.cooldown_after_denial,
        Some(Duration::from_secs(30 * 24 * 3600))
    );
    let stored = serde_json::to_string(&*requirement).expect("serialize");
    let back: Requirement = serde_json::from_str(&stored).expect("deserialize");
    assert_eq!(
        back.cooldown_after_denial,
        requirement.cooldown_after_denial
    );
    let without: Requirement =
        serde_json::from_str(&serde_json::to_string(&Requirement::groups(["g"])).expect("json"))
            .expect("a requirement stored before cool-downs");
    assert_eq!(without.cooldown_after_denial, None);
}

/// The refusal says who denied the action, why, and until when; it names the earlier request.
#[test]
fn the_refusal_explains_itself() {
    let id = RequestId::new();
    let e = GuardError::DeniedRecently {
        id,
        by: "sam@example.com".into(),
        reason: Some("not this quarter".into()),
        until: t0(),
    };
    let text = e.to_string();
    for part in [
        "sam@example.com",
        "not this quarter",
        &id.to_string(),
        "2026-11-21",
    ] {
        assert!(text.contains(part), "{text} lacks {part}");
    }
    assert_eq!(e.request_id(), Some(id));
    assert!(!e.is_retryable());
}
