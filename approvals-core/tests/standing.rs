//! Standing grants: a human proposes "let this agent run this kind on this resource pattern,
//! for up to T and N uses"; the rule's own reviewers and quorum approve it; matching actions
//! then run without asking, each audited as a use of it. These tests try to break it: an agent
//! minting or widening one (every door, every spelling of the reserved kind, every alias of the
//! initiator), use after revoke, after expiry and past its uses, a changed rule, and racing
//! uses.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use approvals_core::standing::{STANDING_KIND, StandingStatus};
use approvals_core::{
    ActionRequest, Gate, GuardError, Initiator, ListFilter, ManualClock, MemorySink, MemoryStore,
    Principal, RequestId, RequestRecord, RequestState, Review, ReviewError, RulePolicy,
    StandingProposal, Store, Submission,
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
standing_grant_max = "8h"
standing_grant_max_uses = 20

[[rules]]
name = "paired-exports"
kind = "data.export"
effect = "require_approval"
approvers = { groups = ["data-owners"] }
quorum = 2
standing_grant_max = "1h"

[[rules]]
name = "prod-migrations"
kind = "db.migrate"
environment = "production"
effect = "require_approval"
approvers = { groups = ["sre"] }
standing_grant_max = "2h"

[[rules]]
name = "roles"
kind = "iam.role.grant"
effect = "require_approval"
approvers = { groups = ["sre"] }

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

    fn proposal(&self, resource: &str, hours: u64, uses: u32) -> StandingProposal {
        StandingProposal {
            kind: "deploy.restart".into(),
            resource: resource.into(),
            initiator: agent(),
            duration: Duration::from_secs(hours * 3600),
            uses,
            justification: "rolling restarts during the incident".into(),
            environment: None,
        }
    }

    /// A standing grant for the agent's restarts of `svc://prod/*`, proposed by kim and
    /// approved by sam.
    async fn approved(&self, uses: u32) -> RequestId {
        self.approved_for("svc://prod/*", uses).await
    }

    async fn approved_for(&self, pattern: &str, uses: u32) -> RequestId {
        let id = self
            .gate
            .propose_standing(self.proposal(pattern, 2, uses), kim())
            .await
            .expect("proposed");
        self.gate
            .decide(id, Review::approve(sam()))
            .await
            .expect("approved");
        id
    }

    /// Asks for `action` as `caller` and returns the stored request: approved at once when a
    /// standing grant covered it, pending otherwise.
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

    async fn uses(&self, id: RequestId) -> u32 {
        self.record(id).await.standing_uses
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

fn assert_covered(record: &RequestRecord, grant: RequestId, what: &str) {
    assert_eq!(
        record.state,
        RequestState::Approved,
        "{what}: approved by the standing grant"
    );
    assert!(
        record
            .reviews
            .iter()
            .all(|r| r.channel == format!("standing grant {grant}")),
        "{what}: its approvals name the standing grant"
    );
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
async fn an_approved_standing_grant_runs_matching_actions_without_asking_and_audits_each_use() {
    let f = Fixture::new();
    let grant = f.approved(3).await;
    let paged = f.paged();
    assert_eq!(paged, 1, "the proposal was delivered to the reviewers");

    let ran = AtomicUsize::new(0);
    for service in ["api", "worker"] {
        f.gate
            .run(&restart(service), || async {
                ran.fetch_add(1, Ordering::SeqCst);
                Ok::<_, GuardError>(())
            })
            .await
            .expect("ran under the standing grant");
    }
    assert_eq!(ran.load(Ordering::SeqCst), 2);
    assert_eq!(f.paged(), paged, "nobody was asked again");
    assert_eq!(f.uses(grant).await, 2);
    assert_eq!(f.count("standing_grant_used"), 2);
    assert_eq!(f.count("approved_by_standing_grant"), 2);
    assert_eq!(f.count("executed"), 2);

    // Each use is on the grant's own trail, naming the action it approved; each action's trail
    // names the grant and who approved it.
    let events = f.audit.events();
    let uses: Vec<_> = events
        .iter()
        .filter(|e| e.name() == "standing_grant_used")
        .collect();
    assert!(uses.iter().all(|e| e.request_id == grant));
    let actions: Vec<_> = events
        .iter()
        .filter(|e| e.name() == "approved_by_standing_grant")
        .collect();
    for (used, action) in uses.iter().zip(&actions) {
        let used = serde_json::to_value(&used.detail).expect("json");
        let action_json = serde_json::to_value(&action.detail).expect("json");
        assert_eq!(used["request"], json!(action.request_id.to_string()));
        assert_eq!(used["action_digest"], json!(action.digest.to_string()));
        assert_eq!(action_json["standing"], json!(grant.to_string()));
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
                "approved_by_standing_grant",
                "grant_issued",
                "grant_consumed",
                "executed"
            ]
        );
    }

    let status = StandingStatus::of(&f.record(grant).await).expect("a standing grant");
    assert_eq!((status.used, status.uses_left), (2, 1));
    assert_eq!(status.expires_at, Some(t0() + TimeDelta::hours(2)));
    assert_eq!(status.terms.proposed_by.id, "kim@example.com");
    assert_eq!(f.gate.standing_grants().await.expect("list").len(), 1);
}

#[tokio::test]
async fn the_grant_needs_the_rules_own_quorum_and_reviewers() {
    let f = Fixture::new();
    let id = f
        .gate
        .propose_standing(
            StandingProposal {
                kind: "data.export".into(),
                resource: "db://prod/*".into(),
                initiator: agent(),
                duration: Duration::from_secs(1800),
                uses: 5,
                justification: "month end".into(),
                environment: None,
            },
            kim(),
        )
        .await
        .expect("proposed");
    let record = f.record(id).await;
    assert_eq!(record.requirement.quorum, 2, "the rule's quorum");
    assert_eq!(record.policy_rule.as_deref(), Some("paired-exports"));

    f.gate
        .decide(id, Review::approve(sam()))
        .await
        .expect("one approval");
    let export = ActionRequest::new("data.export", "db://prod/customers");
    assert_asked(&f.ask(&export).await, "one of two approvals");

    // Someone outside the rule's reviewers, the human the agent acts for, and the agent itself
    // cannot make up the quorum.
    let outsider = Principal::human("lee@example.com").with_groups(["sales"]);
    assert!(matches!(
        f.gate.decide(id, Review::approve(outsider)).await,
        Err(ReviewError::NotAuthorized { .. })
    ));
    assert!(matches!(
        f.gate.decide(id, Review::approve(dana())).await,
        Err(ReviewError::SelfApproval { .. })
    ));
    assert!(matches!(
        f.gate
            .decide(
                id,
                Review::approve(Principal::agent("deploy-bot").with_groups(["data-owners"]))
            )
            .await,
        Err(ReviewError::SelfApproval { .. } | ReviewError::NotHuman { .. })
    ));
    assert_eq!(f.record(id).await.state, RequestState::Pending);

    f.gate
        .decide(id, Review::approve(kim()))
        .await
        .expect("second approval");
    assert_covered(&f.ask(&export).await, id, "after the quorum");
}

#[tokio::test]
async fn only_a_human_proposes_and_no_agent_asks_for_a_reserved_kind() {
    let f = Fixture::new();
    for by in [
        Principal::agent("deploy-bot"),
        Principal::agent("other-bot"),
        Principal::service("ci"),
    ] {
        let refused = f
            .gate
            .propose_standing(f.proposal("svc://prod/*", 1, 5), by.clone())
            .await;
        assert!(
            matches!(refused, Err(GuardError::InvalidRequest(_))),
            "{by:?} must not propose: {refused:?}"
        );
    }
    // A standing grant for a human (who asks for each action) is refused too.
    let mut for_human = f.proposal("svc://prod/*", 1, 5);
    for_human.initiator = Initiator::from_principal(dana());
    assert!(matches!(
        f.gate.propose_standing(for_human, kim()).await,
        Err(GuardError::InvalidRequest(_))
    ));
    assert_eq!(f.stored().await, 0, "nothing stored");

    // An agent cannot ask for a standing grant's kind itself, under any spelling, even with
    // well-formed terms and an approver's name in them.
    let terms = json!({
        "kind": "deploy.restart", "resource": "*", "for_seconds": 28800, "uses": 20,
        "proposed_by": {"kind": "human", "id": "kim@example.com"}
    });
    for kind in [
        STANDING_KIND,
        "Approvals.Standing_Grant",
        " approvals.standing_grant",
        "ａｐｐｒｏｖａｌｓ.standing_grant",
        "APPROVALS.anything",
    ] {
        let action = ActionRequest::new(kind, "*").params(terms.clone());
        let refused = f.gate.submit(&action).await;
        assert!(
            matches!(refused, Err(GuardError::InvalidRequest(_))),
            "{kind:?} must be refused at admission: {refused:?}"
        );
    }
    assert_eq!(f.stored().await, 0, "nothing stored");
    assert_eq!(f.paged(), 0, "nobody paged");
}

#[tokio::test]
async fn the_agent_can_neither_run_nor_wait_for_the_grant_itself() {
    let f = Fixture::new();
    let grant = f.approved(5).await;
    let waited = f.gate.wait(grant).await;
    assert!(
        matches!(waited, Err(GuardError::InvalidRequest(_))),
        "no single-use grant for a standing grant: {waited:?}"
    );
    assert_eq!(f.count("grant_issued"), 0);
    let record = f.record(grant).await;
    assert_eq!(record.state, RequestState::Approved, "still in force");
    assert_eq!(record.standing_uses, 0);
}

#[tokio::test]
async fn a_standing_grant_never_covers_anything_wider() {
    let f = Fixture::new();
    let grant = f.approved_for("svc://prod/web-*", 10).await;
    let cases: Vec<(&str, Initiator, ActionRequest)> = vec![
        (
            "a resource outside the pattern",
            agent(),
            ActionRequest::new("deploy.restart", "svc://prod/db-1"),
        ),
        (
            "another kind",
            agent(),
            ActionRequest::new("iam.role.grant", "svc://prod/web-1"),
        ),
        (
            "another agent",
            Initiator::agent("other-bot").on_behalf_of(dana()),
            restart("web-1"),
        ),
        (
            "a look-alike of the agent (Cyrillic a)",
            Initiator::agent("deploy-bоt").on_behalf_of(dana()),
            restart("web-1"),
        ),
        (
            "the agent for nobody",
            Initiator::agent("deploy-bot"),
            restart("web-1"),
        ),
        (
            "the agent for another human",
            Initiator::agent("deploy-bot").on_behalf_of(Principal::human("eve@example.com")),
            restart("web-1"),
        ),
        (
            "a service of the same name",
            Initiator::from_principal(Principal::service("deploy-bot")).on_behalf_of(dana()),
            restart("web-1"),
        ),
    ];
    for (what, caller, action) in &cases {
        match f.gate.submit_as(caller, action).await {
            Ok(Submission::Pending(id)) => assert_asked(&f.record(id).await, what),
            Err(GuardError::InvalidRequest(_)) => {} // refused at the door (a look-alike id)
            other => panic!("{what}: {other:?}"),
        }
    }
    assert_eq!(f.uses(grant).await, 0, "no use was taken");

    // Another spelling of the same agent and human is the same initiator.
    let same = Initiator::agent("Deploy-Bot").on_behalf_of(Principal::human("DANA@example.com"));
    assert_covered(
        &f.ask_as(&same, &restart("web-1")).await,
        grant,
        "a case variant",
    );
}

#[tokio::test]
async fn proposals_beyond_the_rule_are_refused() {
    let f = Fixture::new();
    let refused = |what: &str, result: Result<RequestId, GuardError>| match result {
        Err(GuardError::InvalidRequest(why)) => why,
        other => panic!("{what}: must be refused, got {other:?}"),
    };
    let why = refused(
        "longer than standing_grant_max",
        f.gate
            .propose_standing(f.proposal("svc://prod/*", 9, 5), kim())
            .await,
    );
    assert!(why.contains("at most 8h"), "{why}");
    refused(
        "more uses than standing_grant_max_uses",
        f.gate
            .propose_standing(f.proposal("svc://prod/*", 1, 21), kim())
            .await,
    );
    refused(
        "no uses",
        f.gate
            .propose_standing(f.proposal("svc://prod/*", 1, 0), kim())
            .await,
    );
    // A pattern wider than the rule's resource is decided by another rule (here the default).
    refused(
        "a pattern wider than the rule",
        f.gate.propose_standing(f.proposal("*", 1, 5), kim()).await,
    );
    for (kind, resource, what) in [
        (
            "iam.role.grant",
            "role://admin",
            "a rule without standing grants",
        ),
        (
            "db.read",
            "db://prod/x",
            "an action the policy allows anyway",
        ),
        ("db.drop", "db://prod/x", "an action the policy denies"),
        (STANDING_KIND, "*", "a standing grant's own kind"),
    ] {
        let mut proposal = f.proposal(resource, 1, 1);
        proposal.kind = kind.into();
        refused(what, f.gate.propose_standing(proposal, kim()).await);
    }
    assert_eq!(f.stored().await, 0, "nothing stored");
}

#[tokio::test]
async fn uses_run_out_and_time_runs_out() {
    let f = Fixture::new();
    let grant = f.approved(2).await;
    assert_covered(&f.ask(&restart("a")).await, grant, "first use");
    assert_covered(&f.ask(&restart("b")).await, grant, "second use");
    assert_asked(&f.ask(&restart("c")).await, "after the last use");
    assert_eq!(f.uses(grant).await, 2);

    let f = Fixture::new();
    let grant = f.approved(5).await;
    // A covered action's single-use grant never outlives the standing grant.
    f.clock.advance(TimeDelta::minutes(115));
    let late = f.ask(&restart("a")).await;
    assert_covered(&late, grant, "five minutes before the end");
    assert_eq!(late.grant_expires_at, Some(t0() + TimeDelta::hours(2)));
    f.clock.advance(TimeDelta::minutes(5));
    assert_asked(&f.ask(&restart("b")).await, "at the end");
    f.gate.sweep().await.expect("sweep");
    assert_eq!(f.record(grant).await.state, RequestState::Lapsed);
    assert!(f.gate.standing_grants().await.expect("list").is_empty());
}

#[tokio::test]
async fn a_revoked_grant_covers_nothing() {
    let f = Fixture::new();
    let grant = f.approved(5).await;
    assert_covered(&f.ask(&restart("a")).await, grant, "before the revocation");

    // The human the agent acts for cannot revoke (nor approve) it; another request is not a
    // standing grant.
    assert!(matches!(
        f.gate.revoke_standing(grant, Review::deny(dana())).await,
        Err(ReviewError::SelfApproval { .. })
    ));
    let other = f
        .ask(&ActionRequest::new("iam.role.grant", "role://x"))
        .await;
    assert!(matches!(
        f.gate.revoke_standing(other.id, Review::deny(sam())).await,
        Err(ReviewError::NotStanding(_))
    ));

    f.gate
        .revoke_standing(grant, Review::deny(kim()).reason("incident over"))
        .await
        .expect("revoked");
    let record = f.record(grant).await;
    assert_eq!(record.state, RequestState::Denied);
    assert_asked(&f.ask(&restart("b")).await, "after the revocation");
    assert_eq!(f.uses(grant).await, 1);
    assert!(f.gate.standing_grants().await.expect("list").is_empty());
}

#[tokio::test]
async fn a_changed_rule_asks_again() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let f = Fixture::with_policy(store.clone(), POLICY);
    let grant = f.approved(5).await;
    // The same rule with other approvers: the grant was not approved by them.
    let changed = POLICY.replace(
        "approvers = { groups = [\"sre\"] }\ntimeout = \"30m\"",
        "approvers = { groups = [\"sre-leads\"] }\ntimeout = \"30m\"",
    );
    assert_ne!(changed, POLICY);
    let g = Fixture::with_policy(store, &changed);
    assert_asked(&g.ask(&restart("api")).await, "under changed approvers");
    assert_eq!(g.uses(grant).await, 0);
}

#[tokio::test]
async fn racing_actions_never_take_more_uses_than_it_has() {
    let f = Arc::new(Fixture::new());
    let grant = f.approved(5).await;
    let mut tasks = Vec::new();
    for i in 0..24 {
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            f.ask(&restart(&format!("svc-{i}"))).await.state
        }));
    }
    let mut approved = 0;
    for task in tasks {
        if task.await.expect("task") == RequestState::Approved {
            approved += 1;
        }
    }
    assert_eq!(approved, 5, "exactly the grant's uses");
    assert_eq!(f.uses(grant).await, 5);
    assert_eq!(f.count("standing_grant_used"), 5);
}

#[test]
fn the_policy_file_bounds_standing_grants() {
    let rule = |extra: &str, effect: &str| {
        format!(
            "version = 1\ndefault = \"deny\"\n[[rules]]\nname = \"r\"\nkind = \"k\"\neffect = \"{effect}\"\n{approvers}{extra}\n",
            approvers = if effect == "require_approval" {
                "approvers = { groups = [\"g\"] }\n"
            } else {
                ""
            },
        )
    };
    let loaded = RulePolicy::from_toml(&rule("standing_grant_max = \"8h\"", "require_approval"))
        .expect("a standing grant limit loads");
    let decision = approvals_core::Policy::evaluate(&loaded, &ActionRequest::new("k", "x"))
        .expect("evaluates");
    let approvals_core::Decision::RequireApproval { requirement, .. } = decision else {
        panic!("requires approval");
    };
    let limit = requirement.standing.expect("standing grants allowed");
    assert_eq!(limit.max_for, Duration::from_secs(8 * 3600));
    assert_eq!(limit.max_uses, 100, "the default number of uses");

    for (extra, effect, names) in [
        ("standing_grant_max = \"1h\"", "allow", "standing_grant_max"),
        (
            "standing_grant_max = \"0s\"",
            "require_approval",
            "longer than zero",
        ),
        (
            "standing_grant_max = \"31d\"",
            "require_approval",
            "at most 30 days",
        ),
        (
            "standing_grant_max = \"soon\"",
            "require_approval",
            "standing_grant_max",
        ),
        (
            "standing_grant_max = \"1h\"\nstanding_grant_max_uses = 0",
            "require_approval",
            "from 1 to 10000",
        ),
        (
            "standing_grant_max = \"1h\"\nstanding_grant_max_uses = 10001",
            "require_approval",
            "from 1 to 10000",
        ),
        (
            "standing_grant_max_uses = 5",
            "require_approval",
            "needs standing_grant_max",
        ),
    ] {
        let error = RulePolicy::from_toml(&rule(extra, effect))
            .expect_err(extra)
            .to_string();
        assert!(error.contains(names), "{extra}: {error}");
        assert!(error.contains("rule"), "{extra}: names the rule: {error}");
    }
}

#[tokio::test]
async fn a_rule_that_names_an_environment_is_asked_in_that_environment() {
    let f = Fixture::new();
    let mut proposal = f.proposal("db://prod/*", 1, 5);
    proposal.kind = "db.migrate".into();
    let refused = f.gate.propose_standing(proposal.clone(), kim()).await;
    assert!(
        matches!(refused, Err(GuardError::InvalidRequest(_))),
        "without the environment the default rule decides: {refused:?}"
    );
    proposal.environment = Some("production".into());
    let grant = f
        .gate
        .propose_standing(proposal, kim())
        .await
        .expect("proposed in production");
    assert_eq!(
        f.record(grant).await.policy_rule.as_deref(),
        Some("prod-migrations")
    );
    f.gate
        .decide(grant, Review::approve(sam()))
        .await
        .expect("approved");
    let migrate = ActionRequest::new("db.migrate", "db://prod/main").environment("production");
    assert_covered(&f.ask(&migrate).await, grant, "in production");
    // Another environment is decided by another rule (here the default deny): not covered.
    let staging = ActionRequest::new("db.migrate", "db://prod/main").environment("staging");
    assert!(matches!(
        f.gate.submit(&staging).await,
        Err(GuardError::PolicyDenied { .. })
    ));
    assert_eq!(f.uses(grant).await, 1);
}
