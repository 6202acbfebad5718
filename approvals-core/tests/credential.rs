//! Credentials minted per action (`Gate::execute_with_credential`), tried against every way
//! they could outlive their action: a failing or lying broker, a failing revocation, a run
//! that dies mid-action, a gate without a broker; and the lifecycle rules behind them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use approvals_core::credential::{
    BrokerError, Credential, CredentialBroker, CredentialLease, IssueRequest, RevokeReason,
    credential_id,
};
use approvals_core::lifecycle::{self, CredentialRefused, Due};
use approvals_core::{
    ActionRequest, Component, CredentialState, EventDetail, Execution, Gate, GuardError, Initiator,
    ManualClock, MemorySink, MemoryStore, Principal, RequestId, RequestRecord, RequestState,
    Requirement, Review, RulePolicy, Store, Submission,
};
use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
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
timeout = "30m"
"#;

const SECRET_PREFIX: &str = "s3cr3t-";

/// A broker over an in-memory table of live credentials, with switches for each way a real
/// one fails.
#[derive(Default)]
struct Vault {
    live: Mutex<HashMap<String, CredentialLease>>,
    issued: AtomicUsize,
    revocations: Mutex<Vec<String>>,
    /// `issue` creates the credential, then reports a failure (a half-done mint).
    fail_issue: AtomicBool,
    /// How many of the next `revoke` calls fail.
    fail_revokes: AtomicUsize,
    /// `issue` names the credential differently from the id asked for.
    rename: AtomicBool,
    /// `issue` returns a credential living an hour beyond the grant.
    outlive: AtomicBool,
}

impl Vault {
    fn live(&self) -> Vec<String> {
        self.live.lock().expect("lock").keys().cloned().collect()
    }
}

#[async_trait]
impl CredentialBroker for Vault {
    fn name(&self) -> &str {
        "vault"
    }

    async fn issue(&self, req: IssueRequest<'_>) -> Result<Credential, BrokerError> {
        self.issued.fetch_add(1, Ordering::SeqCst);
        let id = if self.rename.load(Ordering::SeqCst) {
            format!("{}_other", req.id)
        } else {
            req.id.to_owned()
        };
        let expires_at = if self.outlive.load(Ordering::SeqCst) {
            req.not_after + TimeDelta::hours(1)
        } else {
            req.not_after
        };
        let lease = CredentialLease {
            id: id.clone(),
            scope: format!("{} on {}", req.action.kind, req.action.resource),
            expires_at,
        };
        self.live
            .lock()
            .expect("lock")
            .insert(id.clone(), lease.clone());
        if self.fail_issue.load(Ordering::SeqCst) {
            return Err(BrokerError::Unavailable("the vault is sealed".into()));
        }
        Ok(Credential::new(lease, format!("{SECRET_PREFIX}{id}")))
    }

    async fn revoke(&self, lease: &CredentialLease) -> Result<(), BrokerError> {
        let failing = self
            .fail_revokes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(BrokerError::Unavailable("the vault is unreachable".into()));
        }
        self.live.lock().expect("lock").remove(&lease.id);
        self.revocations
            .lock()
            .expect("lock")
            .push(lease.id.clone());
        Ok(())
    }

    async fn revoke_expired(&self, now: DateTime<Utc>) -> Result<Vec<String>, BrokerError> {
        let mut live = self.live.lock().expect("lock");
        let expired: Vec<String> = live
            .values()
            .filter(|lease| lease.expires_at < now)
            .map(|lease| lease.id.clone())
            .collect();
        for id in &expired {
            live.remove(id);
        }
        Ok(expired)
    }
}

fn sam() -> Principal {
    Principal::human("sam@example.com").with_groups(["data-owners"])
}

fn export() -> ActionRequest {
    ActionRequest::new("data.export", "db://prod/invoices").params(json!({"table": "invoices"}))
}

struct Fixture {
    gate: Gate,
    vault: Arc<Vault>,
    audit: Arc<MemorySink>,
    clock: Arc<ManualClock>,
    store: Arc<MemoryStore>,
}

impl Fixture {
    fn new() -> Self {
        Self::build(true)
    }

    fn build(with_broker: bool) -> Self {
        let vault = Arc::new(Vault::default());
        let audit = Arc::new(MemorySink::new());
        let clock = Arc::new(ManualClock::new(
            "2026-12-04T12:00:00Z".parse().expect("time"),
        ));
        let store = Arc::new(MemoryStore::new());
        let mut builder = Gate::builder()
            .policy(RulePolicy::from_toml(POLICY).expect("policy"))
            .audit_shared(audit.clone())
            .store_shared(store.clone())
            .clock(clock.clone())
            .initiator(Initiator::agent("export-bot"))
            .grant_ttl(Duration::from_secs(300));
        if with_broker {
            builder = builder.credential_broker_shared(vault.clone());
        }
        Fixture {
            gate: builder.build().expect("gate"),
            vault,
            audit,
            clock,
            store,
        }
    }

    /// An approved export and its grant.
    async fn approved(&self) -> (RequestId, approvals_core::Grant) {
        let Submission::Pending(id) = self.gate.submit(&export()).await.expect("submit") else {
            panic!("an export needs approval");
        };
        self.gate
            .decide(id, Review::approve(sam()))
            .await
            .expect("approve");
        (id, self.gate.wait(id).await.expect("grant"))
    }

    async fn record(&self, id: RequestId) -> RequestRecord {
        self.store.get(id).await.expect("get").expect("record")
    }

    fn events(&self, id: RequestId) -> Vec<EventDetail> {
        self.audit
            .events()
            .into_iter()
            .filter(|e| e.request_id == id)
            .map(|e| e.detail)
            .collect()
    }

    fn names(&self, id: RequestId) -> Vec<&'static str> {
        self.audit
            .events()
            .iter()
            .filter(|e| e.request_id == id)
            .map(|e| e.name())
            .collect()
    }

    fn no_secret_in_audit(&self) {
        for event in self.audit.events() {
            let text = serde_json::to_string(&event).expect("json");
            assert!(
                !text.contains(SECRET_PREFIX),
                "a credential's secret reached the audit trail: {text}"
            );
        }
    }
}

fn credential_of(record: &RequestRecord) -> CredentialState {
    record
        .execution
        .as_ref()
        .and_then(|e| e.credential.clone())
        .expect("the run has a credential")
}

fn revoke_reasons(events: &[EventDetail]) -> Vec<RevokeReason> {
    events
        .iter()
        .filter_map(|e| match e {
            EventDetail::CredentialRevoked { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_credential_is_minted_for_the_approved_action_and_revoked_after_it() {
    let f = Fixture::new();
    let (id, grant) = f.approved().await;
    let vault = f.vault.clone();
    let seen = f
        .gate
        .execute_with_credential(grant, &export(), |credential| async move {
            assert_eq!(credential.id(), credential_id(id));
            assert_eq!(
                vault.live(),
                vec![credential.id().to_owned()],
                "live while it runs"
            );
            Ok::<_, GuardError>(credential)
        })
        .await
        .expect("ran");
    assert_eq!(seen.scope(), "data.export on db://prod/invoices");
    assert!(
        f.vault.live().is_empty(),
        "revoked once the action returned"
    );

    let record = f.record(id).await;
    assert_eq!(record.state, RequestState::Executed);
    let credential = credential_of(&record);
    assert!(credential.issued && credential.revoked_at.is_some());
    assert_eq!(credential.lease, *seen.lease());
    // The grant's lifetime bounds the credential's.
    assert_eq!(Some(seen.expires_at()), record.grant_expires_at);

    let names = f.names(id);
    assert_eq!(
        &names[names.len() - 4..],
        [
            "grant_consumed",
            "credential_issued",
            "executed",
            "credential_revoked"
        ]
    );
    assert_eq!(revoke_reasons(&f.events(id)), [RevokeReason::Finished]);
    f.no_secret_in_audit();
}

#[tokio::test]
async fn a_failed_action_still_has_its_credential_revoked() {
    let f = Fixture::new();
    let (id, grant) = f.approved().await;
    let result = f
        .gate
        .execute_with_credential(grant, &export(), |_credential| async move {
            Err::<(), GuardError>(GuardError::InvalidRequest("disk full".into()))
        })
        .await;
    assert!(
        matches!(result, Err(GuardError::InvalidRequest(_))),
        "{result:?}"
    );
    assert!(f.vault.live().is_empty());
    let record = f.record(id).await;
    assert_eq!(record.state, RequestState::Failed);
    assert!(credential_of(&record).revoked_at.is_some());
    assert_eq!(revoke_reasons(&f.events(id)), [RevokeReason::Finished]);
}

#[tokio::test]
async fn an_action_the_policy_allows_gets_a_credential_and_loses_it() {
    let f = Fixture::new();
    let read = ActionRequest::new("db.read", "db://prod/invoices");
    let id = f
        .gate
        .run_with_credential(&read, |credential| async move {
            Ok::<_, GuardError>(credential.id().to_owned())
        })
        .await
        .expect("ran");
    assert!(id.starts_with("apr_"));
    assert!(
        f.vault.live().is_empty(),
        "revoked after the allowed action"
    );
    let names = f.audit.names();
    let issued = names.iter().position(|n| *n == "credential_issued");
    let executed = names.iter().position(|n| *n == "executed");
    let revoked = names.iter().position(|n| *n == "credential_revoked");
    assert!(
        issued < executed && executed < revoked && issued.is_some(),
        "{names:?}"
    );
    f.no_secret_in_audit();
}

#[tokio::test]
async fn without_a_broker_nothing_runs_and_the_grant_is_not_used() {
    let f = Fixture::build(false);
    let (id, grant) = f.approved().await;
    let ran = Arc::new(AtomicBool::new(false));
    let ran2 = ran.clone();
    let result = f
        .gate
        .execute_with_credential(grant, &export(), |_c| async move {
            ran2.store(true, Ordering::SeqCst);
            Ok::<_, GuardError>(())
        })
        .await;
    assert!(
        matches!(
            result,
            Err(GuardError::Unavailable {
                component: Component::CredentialBroker,
                ..
            })
        ),
        "{result:?}"
    );
    assert!(!ran.load(Ordering::SeqCst));
    assert_eq!(f.record(id).await.state, RequestState::Approved);
    // The approval still runs the action the plain way.
    let grant = f.gate.wait(id).await.expect("still approved");
    f.gate
        .execute(grant, &export(), || async { Ok::<_, GuardError>(()) })
        .await
        .expect("plain execute");
}

/// Every way a broker can hand back something unusable: the action does not run, the grant
/// is used up ("not run"), and whatever the broker created is revoked.
#[tokio::test]
async fn an_unusable_credential_refuses_the_action_and_is_revoked() {
    for (case, set) in [
        ("the broker fails after minting", 0),
        ("the broker names it otherwise", 1),
        ("the credential outlives the grant", 2),
    ] {
        let f = Fixture::new();
        match set {
            0 => f.vault.fail_issue.store(true, Ordering::SeqCst),
            1 => f.vault.rename.store(true, Ordering::SeqCst),
            _ => f.vault.outlive.store(true, Ordering::SeqCst),
        }
        let (id, grant) = f.approved().await;
        let ran = Arc::new(AtomicBool::new(false));
        let ran2 = ran.clone();
        let result = f
            .gate
            .execute_with_credential(grant, &export(), |_c| async move {
                ran2.store(true, Ordering::SeqCst);
                Ok::<_, GuardError>(())
            })
            .await;
        assert!(
            matches!(
                result,
                Err(GuardError::Unavailable {
                    component: Component::CredentialBroker,
                    ..
                })
            ),
            "{case}: {result:?}"
        );
        assert!(!ran.load(Ordering::SeqCst), "{case}: the action ran");
        assert!(
            f.vault.live().is_empty(),
            "{case}: left {:?}",
            f.vault.live()
        );
        let record = f.record(id).await;
        assert_eq!(record.state, RequestState::Failed, "{case}");
        let error = record.execution.as_ref().and_then(|e| e.error.clone());
        assert!(
            error.as_deref().is_some_and(|e| e.starts_with("not run")),
            "{case}: {error:?}"
        );
        assert!(credential_of(&record).revoked_at.is_some(), "{case}");
        assert!(!credential_of(&record).issued, "{case}");
        let names = f.names(id);
        assert!(!names.contains(&"credential_issued"), "{case}: {names:?}");
        assert_eq!(
            revoke_reasons(&f.events(id)),
            [RevokeReason::NotRun],
            "{case}"
        );
        // A second use of the grant is refused like any used grant.
        assert_eq!(f.vault.issued.load(Ordering::SeqCst), 1, "{case}");
    }
}

/// A credential exists only between consuming a grant and the end of the run, so a grant that
/// lapsed or that a deny revoked never has one: nothing is minted, nothing to revoke.
#[tokio::test]
async fn a_lapsed_or_revoked_grant_never_mints_a_credential() {
    for case in ["lapsed", "denied after approval"] {
        let f = Fixture::new();
        let (id, grant) = f.approved().await;
        if case == "lapsed" {
            f.clock.advance(TimeDelta::seconds(301));
        } else {
            f.gate
                .decide(id, Review::deny(sam()).reason("wrong table"))
                .await
                .expect("a deny revokes the unused grant");
        }
        let result = f
            .gate
            .execute_with_credential(grant, &export(), |_c| async { Ok::<_, GuardError>(()) })
            .await;
        assert!(
            matches!(
                result,
                Err(GuardError::GrantLapsed { .. } | GuardError::Denied { .. })
            ),
            "{case}: {result:?}"
        );
        assert_eq!(f.vault.issued.load(Ordering::SeqCst), 0, "{case}: minted");
        let record = f.record(id).await;
        assert!(record.execution.is_none(), "{case}: {record:?}");
        assert!(!f.names(id).contains(&"credential_issued"), "{case}");
    }
}

#[tokio::test]
async fn a_sweep_revokes_what_a_failed_revocation_left() {
    let f = Fixture::new();
    f.vault.fail_revokes.store(1, Ordering::SeqCst);
    let (id, grant) = f.approved().await;
    let out = f
        .gate
        .execute_with_credential(grant, &export(), |_c| async { Ok::<_, GuardError>(7) })
        .await;
    assert_eq!(out.expect("the action's own result"), 7);
    assert_eq!(f.vault.live().len(), 1, "the revocation failed");
    let record = f.record(id).await;
    assert_eq!(record.state, RequestState::Executed);
    assert!(lifecycle::outstanding(&record).is_some());
    assert_eq!(
        lifecycle::due(
            &record,
            approvals_core::Clock::now(&*f.clock),
            TimeDelta::seconds(30)
        ),
        Due::Revoke,
        "due at once: the run is over"
    );

    let report = f.gate.sweep().await.expect("sweep");
    assert_eq!(report.revoked, 1);
    assert!(f.vault.live().is_empty());
    assert!(lifecycle::outstanding(&f.record(id).await).is_none());
    assert_eq!(revoke_reasons(&f.events(id)), [RevokeReason::Swept]);
    assert_eq!(f.gate.sweep().await.expect("sweep").revoked, 0, "once");
}

/// The run's task dies mid-action (what a crashed process leaves): the credential stays
/// until it expires, because the action may still be running elsewhere until then; then a
/// sweep revokes it, and the request never runs again.
#[tokio::test]
async fn a_sweep_revokes_a_dead_runs_credential_once_it_expires() {
    let f = Fixture::new();
    let (id, grant) = f.approved().await;
    let gate = f.gate.clone();
    let task = tokio::spawn(async move {
        gate.execute_with_credential(grant, &export(), |_c| {
            std::future::pending::<Result<(), GuardError>>()
        })
        .await
    });
    while f.vault.live().is_empty() {
        tokio::task::yield_now().await;
    }
    while !credential_of(&f.record(id).await).issued {
        tokio::task::yield_now().await;
    }
    task.abort();
    let _ = task.await;

    assert_eq!(f.gate.sweep().await.expect("sweep").revoked, 0, "not yet");
    assert_eq!(f.vault.live().len(), 1);
    f.clock.advance(TimeDelta::seconds(301));
    let report = f.gate.sweep().await.expect("sweep");
    assert_eq!(report.revoked, 1);
    assert_eq!(
        report.credentials_expired, 0,
        "revoked through its record, with its request, before the broker's own sweep"
    );
    assert!(f.vault.live().is_empty());
    let record = f.record(id).await;
    assert_eq!(
        record.state,
        RequestState::Executing,
        "visibly never finished"
    );
    assert_eq!(revoke_reasons(&f.events(id)), [RevokeReason::Swept]);
}

#[tokio::test]
async fn a_sweep_revokes_an_allowed_actions_credential_that_no_record_names() {
    let f = Fixture::new();
    let read = ActionRequest::new("db.read", "db://prod/invoices");
    let gate = f.gate.clone();
    // The process dies while the allowed action runs: no record names its credential.
    let task = tokio::spawn(async move {
        gate.run_with_credential(&read, |_c| std::future::pending::<Result<(), GuardError>>())
            .await
    });
    while f.vault.live().is_empty() || !f.audit.names().contains(&"credential_issued") {
        tokio::task::yield_now().await;
    }
    task.abort();
    let _ = task.await;

    let report = f.gate.sweep().await.expect("sweep");
    assert_eq!(
        (report.revoked, report.credentials_expired),
        (0, 0),
        "still valid: not yet"
    );
    assert_eq!(f.vault.live().len(), 1);
    f.clock.advance(TimeDelta::seconds(301));
    let report = f.gate.sweep().await.expect("sweep");
    assert_eq!((report.revoked, report.credentials_expired), (0, 1));
    assert!(f.vault.live().is_empty(), "nothing standing survives");
    let report = f.gate.sweep().await.expect("sweep");
    assert_eq!(report.credentials_expired, 0, "once");
    f.no_secret_in_audit();
}

#[tokio::test]
async fn a_sweep_without_a_broker_leaves_the_credential_for_one_that_has_one() {
    let f = Fixture::new();
    f.vault.fail_revokes.store(1, Ordering::SeqCst);
    let (id, grant) = f.approved().await;
    f.gate
        .execute_with_credential(grant, &export(), |_c| async { Ok::<_, GuardError>(()) })
        .await
        .expect("ran");
    let bare = Gate::builder()
        .policy(RulePolicy::from_toml(POLICY).expect("policy"))
        .audit_shared(f.audit.clone())
        .store_shared(f.store.clone())
        .clock(f.clock.clone())
        .build()
        .expect("gate");
    assert_eq!(bare.sweep().await.expect("sweep").revoked, 0);
    assert!(lifecycle::outstanding(&f.record(id).await).is_some());
    assert_eq!(f.gate.sweep().await.expect("sweep").revoked, 1);
    assert!(f.vault.live().is_empty());
}

// ----------------------------------------------------------------------------------------
// The rules.

fn t(s: i64) -> DateTime<Utc> {
    DateTime::UNIX_EPOCH + TimeDelta::days(20_000) + TimeDelta::seconds(s)
}

fn executing(credential: Option<CredentialState>) -> RequestRecord {
    let mut record = lifecycle::open(
        RequestId::new(),
        export(),
        export().digest(),
        None,
        Arc::new(Requirement::users(["sam@example.com"])),
        "v1".into(),
        t(0),
    )
    .expect("open");
    record.state = RequestState::Executing;
    record.grant_expires_at = Some(t(300));
    record.execution = Some(Box::new(Execution {
        started_at: t(10),
        finished_at: None,
        error: None,
        credential,
    }));
    record
}

fn lease(id: &str, scope: &str, expires_at: DateTime<Utc>) -> CredentialLease {
    CredentialLease {
        id: id.into(),
        scope: scope.into(),
        expires_at,
    }
}

fn planned(id: &str) -> CredentialState {
    CredentialState {
        lease: lease(id, "", t(300)),
        issued: false,
        revoked_at: None,
    }
}

#[test]
fn consuming_with_a_credential_plans_it_in_the_same_write() {
    let mut approved = executing(None);
    approved.state = RequestState::Approved;
    approved.execution = None;
    let step =
        lifecycle::consume_with_credential(&approved, approved.digest, t(20), "apr_x".into())
            .expect("consume");
    assert_eq!(step.next.state, RequestState::Executing);
    let credential = credential_of(&step.next);
    assert_eq!(
        credential,
        planned("apr_x"),
        "planned until the grant's expiry"
    );
    // And a grant already used is refused like any other.
    assert!(
        lifecycle::consume_with_credential(&step.next, approved.digest, t(21), "apr_y".into())
            .is_err()
    );
}

#[test]
fn an_issued_credential_must_be_the_planned_one_within_the_grant() {
    let now = t(20);
    let record = executing(Some(planned("apr_x")));
    let good = lease("apr_x", "SELECT on public.invoices", t(300));
    let step = lifecycle::credential_issued(&record, &good, now).expect("issued");
    assert!(credential_of(&step.next).issued);
    assert!(matches!(
        step.events.as_slice(),
        [EventDetail::CredentialIssued { credential }] if *credential == good
    ));

    let refusals: Vec<(RequestRecord, CredentialLease, CredentialRefused)> = vec![
        (
            record.clone(),
            lease("apr_y", "SELECT", t(300)),
            CredentialRefused::OtherId {
                planned: "apr_x".into(),
                issued: "apr_y".into(),
            },
        ),
        (
            record.clone(),
            lease("apr_x", "SELECT", t(301)),
            CredentialRefused::OutlivesGrant {
                expires_at: t(301),
                not_after: t(300),
            },
        ),
        (
            record.clone(),
            lease("apr_x", "SELECT", t(20)),
            CredentialRefused::Expired(t(20)),
        ),
        (
            record.clone(),
            lease("apr_x", "  ", t(300)),
            CredentialRefused::BadScope,
        ),
        (
            record.clone(),
            lease("apr_x", &"x".repeat(lifecycle::MAX_SCOPE_CHARS + 1), t(300)),
            CredentialRefused::BadScope,
        ),
        (
            step.next.clone(),
            good.clone(),
            CredentialRefused::AlreadyIssued,
        ),
        (executing(None), good.clone(), CredentialRefused::NotPlanned),
        (
            {
                let mut r = record.clone();
                r.state = RequestState::Executed;
                r
            },
            good.clone(),
            CredentialRefused::WrongState(RequestState::Executed),
        ),
    ];
    for (record, lease, expected) in refusals {
        assert_eq!(
            lifecycle::credential_issued(&record, &lease, now).map(|_| ()),
            Err(expected)
        );
    }
}

#[test]
fn a_credential_is_revoked_once_and_due_when_its_run_is_over_or_its_time_is() {
    let recovery = TimeDelta::seconds(30);
    let mut issued = planned("apr_x");
    issued.issued = true;
    let running = executing(Some(issued));
    assert_eq!(lifecycle::next_due(&running), Some(t(300)));
    assert_eq!(
        lifecycle::due(&running, t(299), recovery),
        Due::Nothing(Some(t(300)))
    );
    assert_eq!(lifecycle::due(&running, t(300), recovery), Due::Revoke);

    let mut ended = running.clone();
    ended.state = RequestState::Failed;
    assert_eq!(lifecycle::due(&ended, t(11), recovery), Due::Revoke);
    assert_eq!(lifecycle::next_due(&ended), Some(DateTime::UNIX_EPOCH));

    let step = lifecycle::credential_revoked(&ended, RevokeReason::Swept, t(12)).expect("revoke");
    assert!(matches!(
        step.events.as_slice(),
        [EventDetail::CredentialRevoked { reason: RevokeReason::Swept, credential }] if credential.id == "apr_x"
    ));
    assert_eq!(step.next.state, RequestState::Failed, "the outcome stays");
    assert_eq!(
        lifecycle::due(&step.next, t(400), recovery),
        Due::Nothing(None)
    );
    assert_eq!(lifecycle::next_due(&step.next), None);
    assert!(lifecycle::credential_revoked(&step.next, RevokeReason::Swept, t(13)).is_err());
    assert!(lifecycle::credential_revoked(&executing(None), RevokeReason::Swept, t(13)).is_err());
    // A terminal record may take the revocation: same state, a bookkeeping change.
    assert!(lifecycle::may_replace(&ended, &step.next).is_ok());
}
