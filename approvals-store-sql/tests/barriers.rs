//! Durability barriers on SQLite (`Durability::AtBarriers`, the default): commits are not
//! synced one by one, so every moment something leaves the process (a channel is told, an
//! action runs, a reviewer or a door gets an answer) must come after a sync that covers what
//! it depends on. Each check below looks at the store's own count of unsynced commits at that
//! moment. The flush timer is set to an hour, so only the gate's barriers can sync: a missing
//! barrier shows as an unsynced commit.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use approvals_core::credential::{
    BrokerError, Credential, CredentialBroker, CredentialLease, IssueRequest,
};
use approvals_core::{
    ActionRequest, Approver, ApproverError, Decisions, Delivery, DispatchReason, Gate, GuardError,
    Initiator, Principal, RequestRecord, RequestState, Requirement, Review, StaticPolicy, Store,
    Submission,
};
use approvals_store_sql::{Durability, SqlStore, SqlStoreOptions, SyncStats};
use async_trait::async_trait;
use tokio::sync::mpsc;

/// A channel that notes, each time the gate tells it something, whether the store had
/// commits not yet on disk.
struct Witness {
    store: SqlStore,
    seen: Arc<Mutex<Vec<(String, bool)>>>,
    ids: mpsc::UnboundedSender<approvals_core::RequestId>,
}

impl Witness {
    fn note(&self, what: String) {
        let unsynced = self.store.sync_stats().unsynced;
        self.seen.lock().expect("lock").push((what, unsynced));
    }
}

#[async_trait]
impl Approver for Witness {
    fn name(&self) -> &str {
        "witness"
    }

    async fn dispatch(
        &self,
        request: &RequestRecord,
        _reason: DispatchReason,
        _decisions: Arc<dyn Decisions>,
    ) -> Result<Option<Delivery>, ApproverError> {
        self.note("dispatch".into());
        let _ = self.ids.send(request.id);
        Ok(None)
    }

    async fn resolved(&self, request: &RequestRecord) -> Result<(), ApproverError> {
        self.note(format!("resolved {:?}", request.state));
        Ok(())
    }
}

struct Rig {
    store: SqlStore,
    gate: Gate,
    seen: Arc<Mutex<Vec<(String, bool)>>>,
    ids: mpsc::UnboundedReceiver<approvals_core::RequestId>,
    _dir: tempfile::TempDir,
}

async fn rig(durability: Durability, with_channel: bool) -> Rig {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("approvals.db").display());
    let store = SqlStore::connect_with(
        SqlStoreOptions::new(&url)
            .durability(durability)
            .flush_after(Duration::from_secs(3600)),
    )
    .await
    .expect("store");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (tx, ids) = mpsc::unbounded_channel();
    let mut builder = Gate::builder()
        .policy(StaticPolicy::require(Requirement::groups(["data-owners"])))
        .store(store.clone())
        .audit(store.audit_sink())
        .initiator(Initiator::agent("export-bot"))
        .poll_interval(Duration::from_millis(20));
    if with_channel {
        builder = builder.approver(Witness {
            store: store.clone(),
            seen: seen.clone(),
            ids: tx,
        });
    }
    Rig {
        store,
        gate: builder.build().expect("gate"),
        seen,
        ids,
        _dir: dir,
    }
}

fn export() -> ActionRequest {
    ActionRequest::new("data.export", "db://prod/invoices")
        .params(serde_json::json!({"table": "invoices"}))
}

fn sam() -> Principal {
    Principal::human("sam@example.com").with_groups(["data-owners"])
}

/// Waits until the channel was told of `n` changes; returns everything it noted.
async fn resolved_notes(rig: &Rig, n: usize) -> Vec<(String, bool)> {
    for _ in 0..500 {
        let seen = rig.seen.lock().expect("lock").clone();
        if seen
            .iter()
            .filter(|(w, _)| w.starts_with("resolved"))
            .count()
            >= n
        {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the channel was not told of every change");
}

/// Nothing else writes while each check looks, so "unsynced" at that moment can only be a
/// commit the step being checked made.
#[tokio::test]
async fn nothing_leaves_the_process_before_it_is_on_disk() {
    let mut rig = rig(Durability::AtBarriers, true).await;
    let before = rig.store.sync_stats();
    let Submission::Pending(id) = rig.gate.submit(&export()).await.expect("submit") else {
        panic!("needs approval");
    };
    assert_eq!(rig.ids.try_recv().ok(), Some(id), "dispatched");
    rig.gate
        .decide(id, Review::approve(sam()))
        .await
        .expect("approved");
    assert!(
        !rig.store.sync_stats().unsynced,
        "decide() answered before its decision was on disk"
    );
    resolved_notes(&rig, 1).await;
    let grant = rig.gate.wait(id).await.expect("grant");
    let store = rig.store.clone();
    let action_saw = rig
        .gate
        .execute(grant, &export(), || async move {
            Ok::<_, GuardError>(store.sync_stats().unsynced)
        })
        .await
        .expect("ran");
    assert!(
        !action_saw,
        "the action ran before its consumed grant was on disk"
    );
    // The channel hears of the approval and of the outcome, each only once it is on disk.
    let seen = resolved_notes(&rig, 2).await;
    let told: Vec<&str> = seen.iter().map(|(what, _)| what.as_str()).collect();
    assert_eq!(told, ["dispatch", "resolved Approved", "resolved Executed"]);
    for (what, unsynced) in &seen {
        assert!(
            !unsynced,
            "the channel was told ({what}) before it was on disk: {seen:?}"
        );
    }
    let after = rig.store.sync_stats();
    let syncs = after.syncs - before.syncs;
    let commits = after.commits - before.commits;
    assert!(
        commits >= 2 * syncs,
        "commits ({commits}) are not synced one by one ({syncs} syncs)"
    );
    rig.store.close().await;
}

/// The embedded path (`guard()` in the agent's task, `execute()` around the action): a
/// barrier before the channel hears of the request, before the reviewer's answer, before the
/// action, and before the channel hears of the outcome.
#[tokio::test]
async fn a_guarded_lifecycle_syncs_at_its_barriers_only() {
    let mut rig = rig(Durability::AtBarriers, true).await;
    let before = rig.store.sync_stats();
    let gate = rig.gate.clone();
    let agent = tokio::spawn(async move { gate.guard(&export()).await });
    let id = tokio::time::timeout(Duration::from_secs(10), rig.ids.recv())
        .await
        .expect("dispatched in time")
        .expect("an id");
    rig.gate
        .decide(id, Review::approve(sam()))
        .await
        .expect("approved");
    let grant = agent.await.expect("agent").expect("grant");
    let store = rig.store.clone();
    let action_saw = rig
        .gate
        .execute(grant, &export(), || async move {
            Ok::<_, GuardError>(store.sync_stats().unsynced)
        })
        .await
        .expect("ran");
    assert!(
        !action_saw,
        "the action ran before its consumed grant was on disk"
    );
    resolved_notes(&rig, 2).await;
    let after = rig.store.sync_stats();
    let syncs = after.syncs - before.syncs;
    let commits = after.commits - before.commits;
    // Four barriers; a commit of the agent's task landing between the store's and the
    // sink's half of one may add a sync.
    assert!(
        (4..=5).contains(&syncs),
        "{syncs} syncs for {commits} commits"
    );
    assert!(commits >= 2 * syncs, "{syncs} syncs for {commits} commits");
    rig.store.close().await;
}

#[tokio::test]
async fn every_door_answers_only_with_what_is_on_disk() {
    let mut rig = rig(Durability::AtBarriers, false).await;
    let agent = Initiator::agent("export-bot");
    let Submission::Pending(id) = rig.gate.submit_as(&agent, &export()).await.expect("submit")
    else {
        panic!("needs approval");
    };
    assert!(!rig.store.sync_stats().unsynced, "submit answered first");
    rig.gate
        .decide(id, Review::approve(sam()))
        .await
        .expect("approve");
    assert!(!rig.store.sync_stats().unsynced, "decide answered first");
    let grant = rig.gate.wait(id).await.expect("grant");
    assert!(
        !rig.store.sync_stats().unsynced,
        "wait handed out the grant before grant_issued was on disk"
    );
    rig.gate
        .start_execution(id, grant.digest(), &agent)
        .await
        .expect("started");
    assert!(
        !rig.store.sync_stats().unsynced,
        "start_execution answered first"
    );
    let done = rig
        .gate
        .finish_execution(id, &agent, None)
        .await
        .expect("finished");
    assert_eq!(done.state, RequestState::Executed);
    assert!(
        !rig.store.sync_stats().unsynced,
        "finish_execution answered first"
    );
    // Nothing was left to the channel-less lifecycle's own end.
    assert!(rig.ids.try_recv().is_err());
    rig.store.close().await;
}

#[tokio::test]
async fn a_commit_no_barrier_asks_for_is_synced_by_the_timer_and_on_close() {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("approvals.db").display());
    let store =
        SqlStore::connect_with(SqlStoreOptions::new(&url).flush_after(Duration::from_millis(30)))
            .await
            .expect("store");
    let gate = Gate::builder()
        .policy(StaticPolicy::require(Requirement::groups(["data-owners"])))
        .store(store.clone())
        .audit(store.audit_sink())
        .initiator(Initiator::agent("export-bot"))
        .build()
        .expect("gate");
    let before = store.sync_stats();
    // A direct store write: no gate, no barrier.
    let record = approvals_testkit::fixtures::pending_record(
        ActionRequest::new("data.export", "db://prod/x"),
        chrono::Utc::now(),
    );
    store.insert(&record).await.expect("insert");
    let mut synced = false;
    for _ in 0..300 {
        if !store.sync_stats().unsynced {
            synced = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(synced, "the flush timer did not sync the commit");
    assert!(store.sync_stats().syncs > before.syncs);

    // And a commit left unsynced at close is synced by close().
    let slow =
        SqlStore::connect_with(SqlStoreOptions::new(&url).flush_after(Duration::from_secs(3600)))
            .await
            .expect("second store");
    let record = approvals_testkit::fixtures::pending_record(
        ActionRequest::new("data.export", "db://prod/y"),
        chrono::Utc::now(),
    );
    slow.insert(&record).await.expect("insert");
    assert!(slow.sync_stats().unsynced);
    let syncs = slow.sync_stats().syncs;
    slow.close().await;
    assert_eq!(slow.sync_stats().syncs, syncs + 1, "close() synced");
    drop(gate);
    store.close().await;
}

#[tokio::test]
async fn with_every_commit_durable_barriers_cost_nothing() {
    let rig = rig(Durability::EveryCommit, true).await;
    let Submission::Pending(id) = rig.gate.submit(&export()).await.expect("submit") else {
        panic!("needs approval");
    };
    rig.gate
        .decide(id, Review::approve(sam()))
        .await
        .expect("approved");
    let grant = rig.gate.wait(id).await.expect("grant");
    rig.gate
        .execute(grant, &export(), || async { Ok::<_, GuardError>(()) })
        .await
        .expect("ran");
    resolved_notes(&rig, 2).await;
    let stats: SyncStats = rig.store.sync_stats();
    assert_eq!(stats.syncs, 0, "SQLite synced every commit itself");
    assert!(!stats.unsynced);
    assert!(stats.commits > 0);
    assert!(
        rig.seen
            .lock()
            .expect("lock")
            .iter()
            .all(|(_, unsynced)| !unsynced)
    );
    rig.store.close().await;
}

/// Hands out a token per action; nothing to revoke beyond forgetting it.
struct Tokens;

#[async_trait]
impl CredentialBroker for Tokens {
    fn name(&self) -> &str {
        "tokens"
    }

    async fn issue(&self, req: IssueRequest<'_>) -> Result<Credential, BrokerError> {
        let lease = CredentialLease {
            id: req.id.to_owned(),
            scope: format!("{} on {}", req.action.kind, req.action.resource),
            expires_at: req.not_after,
        };
        Ok(Credential::new(lease, "secret"))
    }

    async fn revoke(&self, _lease: &CredentialLease) -> Result<(), BrokerError> {
        Ok(())
    }
}

/// A credential is evidence too: `credential_issued` is on disk before the action holds it,
/// for an approved action (its record) and for one the policy allows outright (no record).
#[tokio::test]
async fn a_credential_reaches_the_action_only_once_its_issue_is_on_disk() {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("approvals.db").display());
    let store =
        SqlStore::connect_with(SqlStoreOptions::new(&url).flush_after(Duration::from_secs(3600)))
            .await
            .expect("store");
    for policy in [
        StaticPolicy::allow_all(),
        StaticPolicy::require(Requirement::groups(["data-owners"])),
    ] {
        let gate = Gate::builder()
            .policy(policy)
            .store(store.clone())
            .audit(store.audit_sink())
            .initiator(Initiator::agent("export-bot"))
            .credential_broker(Tokens)
            .build()
            .expect("gate");
        let grant = match gate.submit(&export()).await.expect("submit") {
            Submission::Allowed(grant) => grant,
            Submission::Pending(id) => {
                gate.decide(id, Review::approve(sam()))
                    .await
                    .expect("approve");
                gate.wait(id).await.expect("grant")
            }
        };
        let probe = store.clone();
        let unsynced = gate
            .execute_with_credential(grant, &export(), |credential| async move {
                assert!(credential.id().starts_with("apr_"));
                Ok::<_, GuardError>(probe.sync_stats().unsynced)
            })
            .await
            .expect("ran");
        assert!(
            !unsynced,
            "the action held a credential whose issue was not on disk"
        );
    }
    store.close().await;
}
