//! Edit on approve: a reviewer approves a changed version of an action, within the
//! parameters the rule lets reviewers edit. These tests try to break it: edits outside the
//! bounds (every way of changing something else), edits the rule does not allow, edits the
//! policy refuses once asked again, the original run after an edit, approvals of the old
//! digest counted toward the new one, approvals that do not say which version they saw, an
//! editor who may not approve the edited action, self-approval and agents through an edit, and
//! an edit whose events were never recorded.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use approvals_core::audit::EventDetail;
use approvals_core::{
    ActionRequest, Decision, Digest, Gate, GuardError, Initiator, ManualClock, MemorySink,
    MemoryStore, Principal, RejectCause, RequestId, RequestRecord, RequestState, Review,
    ReviewError, RulePolicy, Store, Submission,
};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

const POLICY: &str = r#"
version = 1
default = "deny"

[[rules]]
name = "huge-exports"
kind = "data.export"
when = [{ param = "rows", gt = 100000 }]
effect = "deny"
reason = "exports over 100,000 rows go through the data team"

[[rules]]
name = "large-exports"
kind = "data.export"
when = [{ param = "rows", gt = 1000 }]
effect = "require_approval"
approvers = { groups = ["data-owners"] }
quorum = 2
editable = ["rows", "filter.region"]

[[rules]]
name = "exports"
kind = "data.export"
effect = "require_approval"
approvers = { groups = ["data-owners"] }
editable = ["rows", "filter.region"]

[[rules]]
name = "restarts"
kind = "deploy.restart"
effect = "require_approval"
approvers = { groups = ["data-owners"] }
"#;

fn t0() -> DateTime<Utc> {
    "2026-12-05T09:00:00Z".parse().expect("time")
}

fn sam() -> Principal {
    Principal::human("sam@example.com").with_groups(["data-owners"])
}

fn kim() -> Principal {
    Principal::human("kim@example.com").with_groups(["data-owners"])
}

fn dana() -> Principal {
    Principal::human("dana@example.com").with_groups(["data-owners"])
}

fn agent() -> Initiator {
    Initiator::agent("export-bot").on_behalf_of(dana())
}

fn export(rows: u64) -> ActionRequest {
    ActionRequest::new("data.export", "db://prod/customers")
        .params(json!({"rows": rows, "table": "customers", "filter": {"region": "eu"}}))
        .summary(format!("Export {rows} customers"))
}

fn params(rows: u64, region: &str) -> Value {
    json!({"rows": rows, "table": "customers", "filter": {"region": region}})
}

struct Fixture {
    gate: Gate,
    store: Arc<dyn Store>,
    audit: Arc<MemorySink>,
}

impl Fixture {
    fn new() -> Self {
        Self::on(Arc::new(MemoryStore::new()))
    }

    fn on(store: Arc<dyn Store>) -> Self {
        let audit = Arc::new(MemorySink::new());
        let gate = Gate::builder()
            .policy(RulePolicy::from_toml(POLICY).expect("policy"))
            .store_shared(store.clone())
            .audit_shared(audit.clone())
            .clock(Arc::new(ManualClock::new(t0())))
            .initiator(agent())
            .grant_ttl(Duration::from_secs(3600))
            .build()
            .expect("gate");
        Fixture { gate, store, audit }
    }

    async fn ask(&self, action: &ActionRequest) -> RequestRecord {
        match self.gate.submit(action).await.expect("submitted") {
            Submission::Pending(id) => self.record(id).await,
            Submission::Allowed(_) => panic!("expected a pending request"),
        }
    }

    async fn record(&self, id: RequestId) -> RequestRecord {
        self.store.get(id).await.expect("get").expect("stored")
    }

    /// `reviewer` approves `record` with `params`, bound to the digest they saw.
    async fn edit(
        &self,
        record: &RequestRecord,
        reviewer: Principal,
        params: Value,
    ) -> Result<approvals_core::ReviewOutcome, ReviewError> {
        self.gate
            .decide(
                record.id,
                Review::approve(reviewer)
                    .for_digest(record.digest)
                    .edit(params),
            )
            .await
    }

    fn rejections(&self) -> Vec<RejectCause> {
        self.audit
            .events()
            .into_iter()
            .filter_map(|e| match e.detail {
                EventDetail::ReviewRejected { cause, .. } => Some(cause),
                _ => None,
            })
            .collect()
    }
}

#[tokio::test]
async fn an_edited_approval_runs_only_the_edited_action() {
    let f = Fixture::new();
    let asked = f.ask(&export(800)).await;
    let outcome = f
        .edit(&asked, sam(), params(200, "eu"))
        .await
        .expect("edit within bounds");
    assert_eq!(outcome.state, RequestState::Approved);

    let record = f.record(asked.id).await;
    assert_ne!(
        record.digest, asked.digest,
        "the edited action has its own digest"
    );
    assert_eq!(record.asked_digest(), asked.digest);
    assert_eq!(*record.request.params, params(200, "eu"));
    assert!(record.unaudited_decisions().is_empty(), "all recorded");

    // The agent is told what was approved, and the action as asked no longer runs.
    let grant = f.gate.wait(asked.id).await.expect("granted");
    assert_eq!(grant.digest(), record.digest);
    let edited = grant.edited_action().expect("the edited action").clone();
    assert_eq!(*edited.params, params(200, "eu"));
    let ran = AtomicUsize::new(0);
    let refused = f
        .gate
        .execute(grant, &export(800), || async {
            ran.fetch_add(1, Ordering::SeqCst);
            Ok::<_, GuardError>(())
        })
        .await
        .expect_err("the original is refused");
    match refused {
        GuardError::Edited {
            approved, action, ..
        } => {
            assert_eq!(approved, record.digest);
            assert_eq!(*action.params, params(200, "eu"));
        }
        other => panic!("expected Edited, got {other:?}"),
    }
    assert_eq!(ran.load(Ordering::SeqCst), 0, "the original never ran");

    // The audit trail: the edit with both digests and the policy's decision on the edited
    // action, the editor's review counted toward the edited digest, the approval.
    let events = f.audit.events();
    let edited_event = events
        .iter()
        .find(|e| e.name() == "edited")
        .expect("an edited event");
    assert_eq!(edited_event.digest, record.digest);
    match &edited_event.detail {
        EventDetail::Edited {
            by,
            from_digest,
            changes,
            decision,
            ..
        } => {
            assert_eq!(by.id, "sam@example.com");
            assert_eq!(*from_digest, asked.digest);
            assert_eq!(changes.len(), 1);
            assert_eq!(changes[0].field, "/rows");
            assert_eq!(
                (changes[0].before.clone(), changes[0].after.clone()),
                (json!(800), json!(200))
            );
            assert_eq!(decision.rule(), Some("exports"));
        }
        other => panic!("{other:?}"),
    }
    let names: Vec<&str> = events.iter().map(|e| e.name()).collect();
    let at = names.iter().position(|n| *n == "edited").expect("edited");
    assert_eq!(&names[at..at + 3], ["edited", "reviewed", "approved"]);
}

#[tokio::test]
async fn run_approved_performs_the_edited_action() {
    let f = Fixture::new();
    let gate = f.gate.clone();
    let action = export(900);
    let running = tokio::spawn(async move {
        gate.run_approved(&action, |approved| async move {
            Ok::<_, GuardError>(approved.params["rows"].clone())
        })
        .await
    });
    let id = loop {
        if let Some(r) = f.gate.pending().await.expect("pending").first() {
            break r.id;
        }
        tokio::task::yield_now().await;
    };
    let asked = f.record(id).await;
    f.edit(&asked, kim(), params(90, "eu"))
        .await
        .expect("edited");
    let rows = running.await.expect("joined").expect("ran");
    assert_eq!(rows, json!(90));
    assert_eq!(f.record(id).await.state, RequestState::Executed);
}

#[tokio::test]
async fn every_edit_outside_the_editable_parameters_is_refused_and_changes_nothing() {
    let f = Fixture::new();
    let asked = f.ask(&export(800)).await;
    let cases = [
        json!({"rows": 200, "table": "orders", "filter": {"region": "eu"}}),
        json!({"rows": 200, "table": "customers", "filter": {"region": "eu", "pii": true}}),
        json!({"rows": 200, "table": "customers", "filter": {"region": "eu"}, "to": "s3://x"}),
        json!({"rows": 200, "filter": {"region": "eu"}}),
        json!({"rows": "200", "table": "customers", "filter": {"region": "eu"}}),
        json!({"rows": 200.5, "table": "customers", "filter": "eu"}),
        json!({"table": "customers", "filter": {"region": "eu"}}),
        json!(null),
        json!([200]),
        params(800, "eu"),
    ];
    for proposed in cases {
        let refused = f
            .edit(&asked, sam(), proposed.clone())
            .await
            .expect_err("out of bounds");
        assert!(
            matches!(refused, ReviewError::EditRefused { .. }),
            "{proposed}: {refused:?}"
        );
    }
    let after = f.record(asked.id).await;
    assert_eq!(after.version, asked.version, "nothing changed");
    assert_eq!(after.digest, asked.digest);
    assert!(after.reviews.is_empty());
    assert!(
        f.rejections()
            .iter()
            .all(|c| *c == RejectCause::EditRefused)
    );
    assert_eq!(f.rejections().len(), 10, "every refusal is audited");
}

#[tokio::test]
async fn a_rule_without_editable_parameters_refuses_every_edit() {
    let f = Fixture::new();
    let asked = f
        .ask(&ActionRequest::new("deploy.restart", "svc://prod/api").params(json!({"n": 1})))
        .await;
    let refused = f
        .edit(&asked, sam(), json!({"n": 2}))
        .await
        .expect_err("not editable");
    assert!(
        matches!(refused, ReviewError::EditRefused { ref why, .. } if why.contains("does not let reviewers edit")),
        "{refused:?}"
    );
    assert_eq!(f.record(asked.id).await.version, asked.version);
}

#[tokio::test]
async fn the_policy_is_asked_again_and_its_deny_refuses_the_edit() {
    let f = Fixture::new();
    let asked = f.ask(&export(800)).await;
    let refused = f
        .edit(&asked, sam(), params(500_000, "eu"))
        .await
        .expect_err("the policy denies it");
    match &refused {
        ReviewError::EditRefused { why, .. } => {
            assert!(
                why.contains("huge-exports") && why.contains("data team"),
                "{why}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(f.record(asked.id).await.version, asked.version);
}

#[tokio::test]
async fn an_edit_into_a_stricter_rule_takes_its_quorum_and_old_approvals_do_not_count() {
    let f = Fixture::new();
    let asked = f.ask(&export(800)).await; // "exports": quorum 1.
    // Kim edits to 5,000 rows: the policy now asks for "large-exports", quorum 2.
    let outcome = f
        .edit(&asked, kim(), params(5000, "eu"))
        .await
        .expect("edited");
    assert_eq!(
        (outcome.state, outcome.approvals, outcome.quorum),
        (RequestState::Pending, 1, 2)
    );
    let edited = f.record(asked.id).await;
    assert_eq!(edited.policy_rule.as_deref(), Some("large-exports"));
    assert!(edited.unaudited_decisions().is_empty());

    // An approval that does not say which version it saw, or names the old one, is refused.
    let blind = f
        .gate
        .decide(asked.id, Review::approve(sam()))
        .await
        .expect_err("which version?");
    assert!(
        matches!(blind, ReviewError::DigestRequired { .. }),
        "{blind:?}"
    );
    let stale = f
        .gate
        .decide(asked.id, Review::approve(sam()).for_digest(asked.digest))
        .await
        .expect_err("the old version");
    assert!(
        matches!(stale, ReviewError::DigestMismatch { .. }),
        "{stale:?}"
    );
    // Kim counts once, under any spelling.
    let again = f
        .gate
        .decide(
            asked.id,
            Review::approve(Principal::human("KIM@example.com").with_groups(["data-owners"]))
                .for_digest(edited.digest),
        )
        .await
        .expect_err("counted once");
    assert!(
        matches!(again, ReviewError::AlreadyReviewed { .. }),
        "{again:?}"
    );

    let done = f
        .gate
        .decide(asked.id, Review::approve(sam()).for_digest(edited.digest))
        .await
        .expect("second approval of the edited digest");
    assert_eq!(done.state, RequestState::Approved);
    let grant = f.gate.wait(asked.id).await.expect("granted");
    assert_eq!(grant.approvers().len(), 2);
    assert_eq!(grant.digest(), edited.digest);
}

#[tokio::test]
async fn approvals_of_the_asked_digest_do_not_count_toward_the_edited_one() {
    let f = Fixture::new();
    let asked = f.ask(&export(5000)).await; // quorum 2.
    f.gate
        .decide(asked.id, Review::approve(sam()).for_digest(asked.digest))
        .await
        .expect("first approval");
    let once = f.record(asked.id).await;
    // Kim edits: Sam's approval was of 5,000 rows; it no longer counts.
    let outcome = f
        .edit(&once, kim(), params(4000, "us"))
        .await
        .expect("edited");
    assert_eq!(
        (outcome.state, outcome.approvals),
        (RequestState::Pending, 1)
    );
    let edited = f.record(asked.id).await;
    assert_eq!(edited.approvers().len(), 1);
    // Sam may approve again, now of the edited version.
    let done = f
        .gate
        .decide(asked.id, Review::approve(sam()).for_digest(edited.digest))
        .await
        .expect("sam approves the edit");
    assert_eq!(done.state, RequestState::Approved);
    // A second edit restarts the count again.
}

#[tokio::test]
async fn nobody_edits_their_own_request_and_agents_never_edit() {
    let f = Fixture::new();
    let asked = f.ask(&export(800)).await;
    for (reviewer, expected) in [
        (
            Principal::human("Dana@Example.com").with_groups(["data-owners"]),
            "self",
        ),
        (
            Principal::human("ｄａｎａ@example.com").with_groups(["data-owners"]),
            "self",
        ),
        (
            Principal::agent("export-bot").with_groups(["data-owners"]),
            "human",
        ),
        (
            Principal::human("eve@example.com").with_groups(["marketing"]),
            "auth",
        ),
    ] {
        let refused = f
            .edit(&asked, reviewer.clone(), params(10, "eu"))
            .await
            .expect_err("refused");
        let ok = match expected {
            "self" => matches!(refused, ReviewError::SelfApproval { .. }),
            "human" => matches!(refused, ReviewError::NotHuman { .. }),
            _ => matches!(refused, ReviewError::NotAuthorized { .. }),
        };
        assert!(ok, "{}: {refused:?}", reviewer.id);
    }
    assert_eq!(f.record(asked.id).await.version, asked.version);
}

#[tokio::test]
async fn an_edit_is_an_approval_only_and_deny_still_wins_after_it() {
    let f = Fixture::new();
    let asked = f.ask(&export(5000)).await;
    // A deny carrying parameters is not an edit.
    let denied_edit = f
        .gate
        .decide(
            asked.id,
            Review::deny(sam())
                .for_digest(asked.digest)
                .edit(params(10, "eu")),
        )
        .await
        .expect_err("deny carries no edit");
    assert!(
        matches!(denied_edit, ReviewError::EditRefused { .. }),
        "{denied_edit:?}"
    );
    f.edit(&asked, kim(), params(4000, "eu"))
        .await
        .expect("edited");
    let edited = f.record(asked.id).await;
    f.gate
        .decide(
            asked.id,
            Review::deny(sam()).reason("no").for_digest(edited.digest),
        )
        .await
        .expect("deny wins");
    let refused = f.gate.wait(asked.id).await.expect_err("denied");
    assert!(matches!(refused, GuardError::Denied { .. }), "{refused:?}");
}

#[tokio::test]
async fn an_edit_whose_events_were_not_recorded_is_recovered_before_any_grant() {
    let f = Fixture::new();
    let asked = f.ask(&export(800)).await;
    f.edit(&asked, sam(), params(300, "eu"))
        .await
        .expect("edited");
    let done = f.record(asked.id).await;
    // As if the reviewer's process died after storing the edit: flags set again.
    let mut crashed = done.clone();
    crashed.mark_edit_unaudited();
    crashed.mark_unaudited(approvals_core::Verdict::Approve);
    let (step, _) = approvals_core::lifecycle::recover(&crashed)
        .expect("recoverable")
        .expect("something to recover");
    let names: Vec<&str> = step.events.iter().map(|e| e.name()).collect();
    assert_eq!(names, ["edited", "reviewed", "approved"]);
    assert!(step.next.unaudited_decisions().is_empty());
    match &step.events[0] {
        EventDetail::Edited {
            from_digest,
            decision,
            ..
        } => {
            assert_eq!(*from_digest, asked.digest);
            assert!(matches!(decision, Decision::RequireApproval { .. }));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_agents_summary_of_the_old_action_is_not_shown_for_the_edited_one() {
    let f = Fixture::new();
    let asked = f.ask(&export(800)).await;
    assert_eq!(
        asked.request.summary.as_deref(),
        Some("Export 800 customers")
    );
    f.edit(&asked, sam(), params(10, "us"))
        .await
        .expect("edited");
    let edited = f.record(asked.id).await;
    assert_eq!(edited.request.summary, None);
    assert_eq!(edited.request.kind, asked.request.kind);
    assert_eq!(edited.request.resource, asked.request.resource);
    assert_eq!(edited.request.initiator, asked.request.initiator);
    assert_eq!(edited.request.justification, asked.request.justification);
}

#[tokio::test]
async fn a_retry_with_the_same_idempotency_key_reattaches_to_the_edited_request() {
    let f = Fixture::new();
    let action = export(800).idempotency_key("nightly-2026-12-05");
    let asked = f.ask(&action).await;
    f.edit(&asked, sam(), params(100, "eu"))
        .await
        .expect("edited");
    // The agent restarts and asks again, as it asked the first time.
    let again = f.gate.submit(&action).await.expect("re-attached");
    assert!(
        matches!(again, Submission::Pending(id) if id == asked.id),
        "{again:?}"
    );
    let grant = f.gate.wait(asked.id).await.expect("granted");
    assert_eq!(
        grant.edited_action().map(|a| a.params["rows"].clone()),
        Some(json!(100))
    );
    // Another action under the same key is still a conflict.
    let other = export(801).idempotency_key("nightly-2026-12-05");
    let conflict = f.gate.submit(&other).await.expect_err("conflict");
    assert!(
        matches!(conflict, GuardError::IdempotencyConflict { .. }),
        "{conflict:?}"
    );
}

#[tokio::test]
async fn after_an_edited_request_is_denied_the_agent_cannot_ask_again_for_its_own_version() {
    let f = Fixture::new();
    // A rule with a cool-down, on a gate of its own.
    let policy = POLICY.replace(
        "name = \"exports\"\nkind = \"data.export\"\neffect = \"require_approval\"",
        "name = \"exports\"\nkind = \"data.export\"\neffect = \"require_approval\"\ncooldown_after_denial = \"1h\"",
    );
    assert_ne!(policy, POLICY, "the cool-down was added");
    let gate = Gate::builder()
        .policy(RulePolicy::from_toml(&policy).expect("policy"))
        .store_shared(f.store.clone())
        .audit_shared(f.audit.clone())
        .clock(Arc::new(ManualClock::new(t0())))
        .initiator(agent())
        .build()
        .expect("gate");
    let Submission::Pending(id) = gate.submit(&export(800)).await.expect("submitted") else {
        panic!("pending");
    };
    let asked = f.record(id).await;
    gate.decide(
        id,
        Review::approve(kim())
            .for_digest(asked.digest)
            .edit(params(5000, "eu")),
    )
    .await
    .expect("edited, now needing two approvals");
    let edited = f.record(id).await;
    gate.decide(
        id,
        Review::deny(sam())
            .reason("no export this week")
            .for_digest(edited.digest),
    )
    .await
    .expect("denied");
    // The agent asks again for the action as it asked it: refused at once, nobody asked.
    let again = gate.submit(&export(800)).await.expect_err("refused");
    match again {
        GuardError::DeniedRecently { by, reason, .. } => {
            assert_eq!(by, "sam@example.com");
            assert_eq!(reason.as_deref(), Some("no export this week"));
        }
        other => panic!("expected DeniedRecently, got {other:?}"),
    }
}

#[tokio::test]
async fn a_forms_fields_are_read_by_the_gate_after_the_digest_and_refusals_are_audited() {
    let f = Fixture::new();
    let asked = f.ask(&export(800)).await;
    let form = |fields: &[(&str, &str)], digest| {
        Review::approve(sam())
            .for_digest(digest)
            .edit_fields(fields.iter().copied())
    };
    // Each field is read as its parameter's own type; a wrong one is refused and audited.
    for fields in [
        &[("/rows", "lots")][..],
        &[("/table", "orders")][..],
        &[("/missing", "1")][..],
    ] {
        let refused = f
            .gate
            .decide(asked.id, form(fields, asked.digest))
            .await
            .expect_err("refused");
        assert!(
            matches!(refused, ReviewError::EditRefused { .. }),
            "{fields:?}: {refused:?}"
        );
    }
    assert_eq!(f.rejections(), [RejectCause::EditRefused; 3]);
    // A form for another version is refused for that, before its fields are read.
    let stale = f
        .gate
        .decide(asked.id, form(&[("/rows", "lots")], Digest([9; 32])))
        .await
        .expect_err("stale");
    assert!(
        matches!(stale, ReviewError::DigestMismatch { .. }),
        "{stale:?}"
    );
    assert_eq!(
        f.record(asked.id).await.version,
        asked.version,
        "nothing changed"
    );

    f.gate
        .decide(
            asked.id,
            form(&[("/rows", " 20 "), ("/filter/region", "us")], asked.digest),
        )
        .await
        .expect("read and approved");
    assert_eq!(*f.record(asked.id).await.request.params, params(20, "us"));
}

#[tokio::test]
async fn a_deny_of_any_earlier_version_denies_the_request_and_a_deny_for_another_action_does_not() {
    // Pending after an edit (quorum 2), and approved by an edit (quorum 1).
    for (rows, edited_rows) in [(5000, 4000), (800, 200)] {
        let f = Fixture::new();
        let asked = f.ask(&export(rows)).await;
        f.edit(&asked, kim(), params(edited_rows, "eu"))
            .await
            .expect("edited");
        // Sam reviewed the version first shown to him, and denies it: deny wins.
        f.gate
            .decide(
                asked.id,
                Review::deny(sam()).reason("no").for_digest(asked.digest),
            )
            .await
            .expect("a deny of the asked version denies");
        assert_eq!(f.record(asked.id).await.state, RequestState::Denied);
        assert!(matches!(
            f.gate.wait(asked.id).await,
            Err(GuardError::Denied { .. })
        ));
    }
    // A digest this request never had is still refused, for a deny too.
    let f = Fixture::new();
    let asked = f.ask(&export(800)).await;
    let other = f
        .gate
        .decide(asked.id, Review::deny(sam()).for_digest(Digest([3; 32])))
        .await
        .expect_err("another action");
    assert!(
        matches!(other, ReviewError::DigestMismatch { .. }),
        "{other:?}"
    );
}
