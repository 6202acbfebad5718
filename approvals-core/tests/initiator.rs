//! The initiator is an authenticated identity, never action data (DESIGN.md invariant 11):
//! every way an action can claim an initiator, through every entry point, is either the
//! authenticated initiator (possibly with a session or prompt reference added) or refused with
//! a typed error and a `request_refused` event, and nothing else is recorded.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use approvals_core::{
    Action, ActionRequest, AuditEvent, EventDetail, Gate, GuardError, Initiator, ListFilter,
    MemorySink, MemoryStore, Principal, RefusalCause, RequestState, Review, ReviewError,
    RulePolicy, Store, Submission,
};
use serde_json::{Value, json};

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

fn dana() -> Principal {
    Principal::human("dana@example.com").with_groups(["data-owners"])
}

fn sam() -> Principal {
    Principal::human("sam@example.com").with_groups(["data-owners"])
}

/// The gate's authenticated identity: billing-agent on behalf of dana, running gpt-5.
fn billing_agent() -> Initiator {
    Initiator::agent("billing-agent")
        .on_behalf_of(Principal::human("dana@example.com"))
        .model("gpt-5")
}

struct Fixture {
    gate: Gate,
    audit: Arc<MemorySink>,
    store: Arc<MemoryStore>,
}

fn fixture(initiator: Option<Initiator>) -> Fixture {
    let audit = Arc::new(MemorySink::new());
    let store = Arc::new(MemoryStore::new());
    let mut builder = Gate::builder()
        .policy(RulePolicy::from_toml(POLICY).expect("policy"))
        .audit_shared(audit.clone())
        .store_shared(store.clone());
    if let Some(initiator) = initiator {
        builder = builder.initiator(initiator);
    }
    Fixture {
        gate: builder.build().expect("gate"),
        audit,
        store,
    }
}

impl Fixture {
    async fn stored(&self) -> usize {
        self.store
            .list(&ListFilter::default())
            .await
            .expect("list")
            .len()
    }

    /// Asserts the last call was refused before anything else was recorded: one
    /// `request_refused` event with this cause, no `requested` event, nothing stored.
    async fn assert_refused_unrecorded(&self, cause: RefusalCause) -> AuditEvent {
        let events = self.audit.events();
        assert_eq!(
            self.audit.names(),
            vec!["request_refused"],
            "only the refusal is recorded"
        );
        assert_eq!(self.stored().await, 0, "nothing is stored");
        let event = events[0].clone();
        match &event.detail {
            EventDetail::RequestRefused {
                cause: recorded, ..
            } => assert_eq!(*recorded, cause),
            other => panic!("expected request_refused, got {other:?}"),
        }
        event
    }
}

/// Every claim that is not the authenticated initiator: the agent shedding its human, another
/// agent, the same id as another kind of principal, another human, a human added where there
/// is none, another model.
fn forged_claims() -> Vec<(&'static str, Initiator)> {
    vec![
        ("sheds on_behalf_of", Initiator::agent("billing-agent")),
        (
            "sheds on_behalf_of, same model",
            Initiator::agent("billing-agent").model("gpt-5"),
        ),
        (
            "another agent",
            Initiator::agent("payroll-agent")
                .on_behalf_of(Principal::human("dana@example.com"))
                .model("gpt-5"),
        ),
        (
            "a service with the agent's id",
            Initiator::service("billing-agent")
                .on_behalf_of(Principal::human("dana@example.com"))
                .model("gpt-5"),
        ),
        (
            "a human with the agent's id",
            Initiator::from_principal(Principal::human("billing-agent"))
                .on_behalf_of(Principal::human("dana@example.com")),
        ),
        (
            "another human behind it",
            Initiator::agent("billing-agent")
                .on_behalf_of(Principal::human("sam@example.com"))
                .model("gpt-5"),
        ),
        (
            "an agent as the human behind it",
            Initiator::agent("billing-agent")
                .on_behalf_of(Principal::agent("dana@example.com"))
                .model("gpt-5"),
        ),
        (
            "another model",
            Initiator::agent("billing-agent")
                .on_behalf_of(Principal::human("dana@example.com"))
                .model("gpt-4o-mini"),
        ),
    ]
}

fn export() -> ActionRequest {
    ActionRequest::new("data.export", "db://prod/customers").params(json!({"rows": 5000}))
}

#[tokio::test]
async fn an_action_cannot_shed_its_human_and_then_be_approved_by_her() {
    // The attack as found: dana's agent drops `on_behalf_of`, hoping dana can approve.
    let f = fixture(Some(billing_agent()));
    let shed = export().initiator(Initiator::agent("billing-agent"));
    let err = f.gate.submit(&shed).await.expect_err("refused");
    assert!(
        matches!(err, GuardError::InitiatorMismatch { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("cannot choose its initiator"),
        "{err}"
    );
    let event = f
        .assert_refused_unrecorded(RefusalCause::InitiatorMismatch)
        .await;
    assert_eq!(
        event.digest,
        shed.digest(),
        "the digest of what was presented"
    );
    let EventDetail::RequestRefused { initiator, .. } = &event.detail else {
        unreachable!()
    };
    assert_eq!(initiator.as_deref(), Some(&billing_agent()));

    // The honest request is recorded under dana, and she cannot approve it.
    let Submission::Pending(id) = f.gate.submit(&export()).await.expect("submit") else {
        panic!("pending")
    };
    let err = f
        .gate
        .decide(id, Review::approve(dana()))
        .await
        .expect_err("self-approval");
    assert!(matches!(err, ReviewError::SelfApproval { .. }), "{err:?}");
    let record = f.gate.get(id).await.expect("get").expect("record");
    assert_eq!(record.state, RequestState::Pending);
    assert_eq!(
        record.request.initiator.as_deref(),
        Some(&billing_agent()),
        "stored under the authenticated initiator"
    );
}

#[tokio::test]
async fn every_forged_claim_is_refused_on_every_path_of_the_gate() {
    for (what, claim) in forged_claims() {
        for (kind, resource) in [("data.export", "db://prod/x"), ("db.read", "db://x")] {
            let action = ActionRequest::new(kind, resource).initiator(claim.clone());
            // submit
            let f = fixture(Some(billing_agent()));
            let err = f.gate.submit(&action).await.expect_err(what);
            assert!(
                matches!(err, GuardError::InitiatorMismatch { .. }),
                "{what}: {err:?}"
            );
            f.assert_refused_unrecorded(RefusalCause::InitiatorMismatch)
                .await;
            // guard
            let f = fixture(Some(billing_agent()));
            let err = f.gate.guard(&action).await.expect_err(what);
            assert!(
                matches!(err, GuardError::InitiatorMismatch { .. }),
                "{what}: {err:?}"
            );
            f.assert_refused_unrecorded(RefusalCause::InitiatorMismatch)
                .await;
            // run: the action never runs, even where the policy allows it outright
            let f = fixture(Some(billing_agent()));
            let ran = AtomicUsize::new(0);
            let err = f
                .gate
                .run(&action, || async {
                    ran.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, GuardError>(())
                })
                .await
                .expect_err(what);
            assert!(
                matches!(err, GuardError::InitiatorMismatch { .. }),
                "{what}: {err:?}"
            );
            assert_eq!(ran.load(Ordering::SeqCst), 0, "{what}: never ran");
            f.assert_refused_unrecorded(RefusalCause::InitiatorMismatch)
                .await;
            // submit_as, the doors' entry: bound to the caller's credential the same way
            let f = fixture(None);
            let err = f
                .gate
                .submit_as(&billing_agent(), &action)
                .await
                .expect_err(what);
            assert!(
                matches!(err, GuardError::InitiatorMismatch { .. }),
                "{what}: {err:?}"
            );
            f.assert_refused_unrecorded(RefusalCause::InitiatorMismatch)
                .await;
        }
    }
}

/// A custom `Action` whose `initiator()` claims someone else.
struct Impostor(Initiator);

impl Action for Impostor {
    fn kind(&self) -> Cow<'_, str> {
        "db.read".into()
    }
    fn resource(&self) -> Cow<'_, str> {
        "db://analytics".into()
    }
    fn params(&self) -> Value {
        json!({})
    }
    fn initiator(&self) -> Option<Initiator> {
        Some(self.0.clone())
    }
}

#[tokio::test]
async fn a_custom_action_cannot_claim_another_initiator() {
    for (what, claim) in forged_claims() {
        let f = fixture(Some(billing_agent()));
        let err = f.gate.guard(&Impostor(claim)).await.expect_err(what);
        assert!(
            matches!(err, GuardError::InitiatorMismatch { .. }),
            "{what}: {err:?}"
        );
        f.assert_refused_unrecorded(RefusalCause::InitiatorMismatch)
            .await;
    }
}

#[tokio::test]
async fn the_same_initiator_may_add_a_session_and_prompt_reference_only() {
    let f = fixture(Some(billing_agent()));
    // The same identities under other spellings, with a session and prompt reference added.
    let claim = Initiator::agent(" Billing-Agent ")
        .on_behalf_of(Principal::human("DANA@example.com").with_groups(["admins"]))
        .session("run-42")
        .prompt_ref("turn-7");
    let Submission::Pending(id) = f
        .gate
        .submit(&export().initiator(claim))
        .await
        .expect("accepted")
    else {
        panic!("pending")
    };
    let record = f.gate.get(id).await.expect("get").expect("record");
    let stored = record.request.initiator.expect("initiator");
    // The authenticated principals, not the claimed spellings or groups.
    assert_eq!(stored.principal, billing_agent().principal);
    assert_eq!(stored.on_behalf_of, billing_agent().on_behalf_of);
    assert_eq!(stored.model.as_deref(), Some("gpt-5"));
    assert_eq!(stored.session.as_deref(), Some("run-42"));
    assert_eq!(stored.prompt_ref.as_deref(), Some("turn-7"));
    // Dana is still the human behind it.
    let err = f
        .gate
        .decide(id, Review::approve(dana()))
        .await
        .expect_err("self");
    assert!(matches!(err, ReviewError::SelfApproval { .. }));
    f.gate
        .decide(id, Review::approve(sam()))
        .await
        .expect("sam approves");
    assert_eq!(f.gate.wait(id).await.expect("grant").initiator(), &*stored);
}

#[tokio::test]
async fn a_gate_without_an_initiator_refuses_whatever_the_action_claims() {
    let f = fixture(None);
    for action in [
        ActionRequest::new("db.read", "x"),
        ActionRequest::new("db.read", "x").initiator(billing_agent()),
    ] {
        let err = f.gate.guard(&action).await.expect_err("no initiator");
        assert!(matches!(err, GuardError::NoInitiator), "{err:?}");
    }
    assert!(f.audit.names().is_empty());
    assert_eq!(f.stored().await, 0);
}

#[tokio::test]
async fn a_grant_binds_its_initiator_at_execution() {
    // A door submits for its authenticated caller; the grant carries that caller, and an
    // execution that presents the action under another initiator is refused unrun.
    let f = fixture(None);
    let caller = billing_agent();
    let Submission::Pending(id) = f.gate.submit_as(&caller, &export()).await.expect("submit")
    else {
        panic!("pending")
    };
    f.gate
        .decide(id, Review::approve(sam()))
        .await
        .expect("approve");
    let grant = f.gate.wait(id).await.expect("grant");
    assert_eq!(grant.initiator(), &caller);
    let ran = AtomicUsize::new(0);
    let forged = export().initiator(Initiator::agent("billing-agent"));
    let err = f
        .gate
        .execute(grant, &forged, || async {
            ran.fetch_add(1, Ordering::SeqCst);
            Ok::<_, GuardError>(())
        })
        .await
        .expect_err("refused");
    assert!(
        matches!(err, GuardError::InitiatorMismatch { .. }),
        "{err:?}"
    );
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    assert_eq!(f.audit.names().last(), Some(&"request_refused"));
    // The honest execution of another grant for the same caller runs.
    let Submission::Pending(id) = f.gate.submit_as(&caller, &export()).await.expect("submit")
    else {
        panic!("pending")
    };
    f.gate
        .decide(id, Review::approve(sam()))
        .await
        .expect("approve");
    let grant = f.gate.wait(id).await.expect("grant");
    f.gate
        .execute(grant, &export(), || async { Ok::<_, GuardError>(()) })
        .await
        .expect("runs");
}

#[approvals_core::requires_approval(kind = "data.export", resource = "db://prod/{table}", gate = gate)]
async fn export_table(gate: &Gate, table: &str) -> Result<u32, GuardError> {
    Ok(table.len() as u32)
}

#[tokio::test]
async fn the_free_functions_and_the_macro_use_the_authenticated_initiator() {
    // The process-wide default gate is set once here (the only test in this file using it).
    let f = fixture(Some(billing_agent()));
    approvals_core::set_default_gate(f.gate.clone());
    for (what, claim) in forged_claims() {
        let action = ActionRequest::new("db.read", "x").initiator(claim);
        let err = approvals_core::guard(&action).await.expect_err(what);
        assert!(
            matches!(err, GuardError::InitiatorMismatch { .. }),
            "{what}"
        );
        let err = approvals_core::run(&action, || async { Ok::<_, GuardError>(()) })
            .await
            .expect_err(what);
        assert!(
            matches!(err, GuardError::InitiatorMismatch { .. }),
            "{what}"
        );
    }
    approvals_core::guard(&ActionRequest::new("db.read", "x"))
        .await
        .expect("the honest read is allowed");

    // #[requires_approval]: the request is stored under the gate's initiator.
    let gate = f.gate.clone();
    let call = tokio::spawn(async move { export_table(&gate, "customers").await });
    let id = loop {
        let pending = f.gate.pending().await.expect("pending");
        if let Some(record) = pending.first() {
            assert_eq!(record.request.initiator.as_deref(), Some(&billing_agent()));
            break record.id;
        }
        tokio::task::yield_now().await;
    };
    f.gate
        .decide(id, Review::approve(sam()))
        .await
        .expect("approve");
    assert_eq!(call.await.expect("task").expect("ran"), 9);
    // And with no initiator on its gate, the macro refuses.
    let bare = fixture(None);
    let err = export_table(&bare.gate, "customers")
        .await
        .expect_err("no initiator");
    assert!(matches!(err, GuardError::NoInitiator), "{err:?}");
}
