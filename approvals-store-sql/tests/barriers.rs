//! Durability barriers (`Durability::AtBarriers`, the default): commits are not synced one by
//! one, so every moment something leaves the process (a channel is told, an action runs, a
//! reviewer or a door gets an answer) must come after a sync that covers what it depends on.
//! On SQLite each check below looks at the store's own count of unsynced commits at that
//! moment. The flush timer is set to an hour, so only the gate's barriers can sync: a missing
//! barrier shows as an unsynced commit. On PostgreSQL (at the end) the checks read the
//! server's WAL positions and flush counts.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use approvals_core::credential::{
    BrokerError, Credential, CredentialBroker, CredentialLease, IssueRequest,
};
use approvals_core::{
    ActionRequest, Approver, ApproverError, Decisions, Delivery, DispatchReason, Gate, Grant,
    GuardError, Initiator, Principal, RequestRecord, RequestState, Requirement, Review,
    StaticPolicy, Store, Submission,
};
use approvals_store_sql::{Durability, SqlStore, SqlStoreOptions, SyncStats};
use async_trait::async_trait;
use tokio::sync::mpsc;

mod common;

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

/// How many changes the channel was told of so far.
fn resolved_count(rig: &Rig) -> usize {
    rig.seen
        .lock()
        .expect("lock")
        .iter()
        .filter(|(w, _)| w.starts_with("resolved"))
        .count()
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

/// Runs the export with `grant`; the action itself checks that its consumed grant is on disk.
async fn execute_checked(rig: &Rig, grant: Grant) {
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
    execute_checked(&rig, grant).await;
    // The outcome waits for the store's next sync rather than causing one: with the flush
    // timer at an hour, nothing syncs until somebody raises a barrier.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        resolved_count(&rig),
        1,
        "the outcome was told before any sync"
    );
    rig.store.sync().await.expect("the next barrier");
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
    // Each transition is one commit with its events (recorded writes), and a barrier syncs
    // only what came before it: fewer syncs than commits.
    assert!(
        commits > syncs,
        "commits ({commits}) are not synced one by one ({syncs} syncs)"
    );
    rig.store.close().await;
}

/// The embedded path (`guard()` in the agent's task, `execute()` around the action): a
/// barrier before the channel hears of the request, before the reviewer's answer, and before
/// the action. The channel hears of the outcome at the next sync, which the next lifecycle's
/// first barrier makes: three syncs per lifecycle in a stream of them.
#[tokio::test]
async fn a_guarded_lifecycle_syncs_at_its_barriers_only() {
    let mut rig = rig(Durability::AtBarriers, true).await;
    let before = rig.store.sync_stats();
    for round in 0..3 {
        let gate = rig.gate.clone();
        let agent = tokio::spawn(async move { gate.guard(&export()).await });
        let id = tokio::time::timeout(Duration::from_secs(10), rig.ids.recv())
            .await
            .expect("dispatched in time")
            .expect("an id");
        // The previous lifecycle's outcome rode on this one's first barrier.
        resolved_notes(&rig, 2 * round).await;
        rig.gate
            .decide(id, Review::approve(sam()))
            .await
            .expect("approved");
        let grant = agent.await.expect("agent").expect("grant");
        execute_checked(&rig, grant).await;
    }
    let after = rig.store.sync_stats();
    let syncs = after.syncs - before.syncs;
    let commits = after.commits - before.commits;
    // Three barriers each (the store and its SQL sink share one sync domain); a commit of the
    // agent's task landing while one syncs may add a sync.
    assert!(
        (9..=11).contains(&syncs),
        "{syncs} syncs for {commits} commits in three lifecycles"
    );
    // About six commits per lifecycle, fewer when writes of the agent's task and of the
    // reviewer land in one batch and share its commit (17 seen in CI, 18 usually): what
    // matters is that commits are not synced one by one.
    assert!(commits > syncs + 3, "{syncs} syncs for {commits} commits");
    // (Whether each change was on disk when told is checked by the sequential test above:
    // here the agent's task commits alongside, so the store's flag cannot tell whose commit
    // is unsynced.)
    rig.store.sync().await.expect("the last outcome's sync");
    resolved_notes(&rig, 6).await;
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

/// A stream of commits without a barrier, each sooner after the last than `flush_after`,
/// cannot put the timer's sync off: the oldest unsynced commit is synced `flush_after` after
/// it was made.
#[tokio::test]
async fn a_stream_of_commits_cannot_put_off_the_timers_sync() {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("approvals.db").display());
    let store =
        SqlStore::connect_with(SqlStoreOptions::new(&url).flush_after(Duration::from_millis(200)))
            .await
            .expect("store");
    let before = store.sync_stats().syncs;
    // 40 commits 25 ms apart: one second, eight times the gap, never a barrier.
    for i in 0..40 {
        let record = approvals_testkit::fixtures::pending_record(
            ActionRequest::new("data.export", format!("db://prod/t{i}")),
            chrono::Utc::now(),
        );
        store.insert(&record).await.expect("insert");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let syncs = store.sync_stats().syncs - before;
    assert!(
        syncs >= 3,
        "{syncs} syncs in one second of commits with a 200 ms flush timer"
    );
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

// --- PostgreSQL ------------------------------------------------------------------------------
//
// With `Durability::AtBarriers` the pool's sessions commit with `synchronous_commit = off`, and
// a barrier commits a transaction at the server's level that flushes the WAL past every commit
// before it. The tests read WAL positions and flush counts from the server itself. They take
// `PG` so no other PostgreSQL test of this file runs beside them and moves the counts.

static PG: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn pg_rig(url: &str, schema: &str, app: &str, durability: Durability) -> SqlStore {
    // The application name lets a test find the store's own sessions on the server.
    SqlStore::connect_with(
        SqlStoreOptions::new(format!("{url}?application_name={app}"))
            .schema(schema)
            .durability(durability)
            .acquire_timeout(Duration::from_secs(10)),
    )
    .await
    .unwrap_or_else(|e| panic!("connecting to the test PostgreSQL server at {url}: {e}"))
}

async fn pg_conn(url: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    sqlx::PgConnection::connect(url).await.expect("connect")
}

/// Where WAL is written up to now, and whether the flush lags behind it.
async fn wal_written(conn: &mut sqlx::PgConnection) -> (String, bool) {
    sqlx::query_as(
        "SELECT w::text, pg_current_wal_flush_lsn() < w FROM pg_current_wal_insert_lsn() AS w",
    )
    .fetch_one(conn)
    .await
    .expect("wal positions")
}

async fn flushed_past(conn: &mut sqlx::PgConnection, lsn: &str) -> bool {
    sqlx::query_scalar("SELECT pg_current_wal_flush_lsn() >= $1::pg_lsn")
        .bind(lsn)
        .fetch_one(conn)
        .await
        .expect("compare lsn")
}

fn pg_record() -> RequestRecord {
    approvals_testkit::fixtures::pending_record(
        approvals_testkit::fixtures::export_request(),
        chrono::Utc::now(),
    )
}

/// A barrier on one replica flushes what another replica committed before it, every time:
/// commits there are asynchronous, so without the barrier's flush the WAL would lag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_barrier_flushes_every_earlier_commit_of_any_replica() {
    let Some(url) =
        common::postgres_url("a_postgres_barrier_flushes_every_earlier_commit_of_any_replica")
    else {
        return;
    };
    let _serial = PG.lock().await;
    let schema = common::unique_schema("barrier_flush");
    let a = pg_rig(&url, &schema, "barrier_a", Durability::AtBarriers).await;
    let b = pg_rig(&url, &schema, "barrier_b", Durability::AtBarriers).await;
    let mut conn = pg_conn(&url).await;
    let mut lagged = 0;
    for round in 0..20 {
        b.insert(&pg_record()).await.expect("insert on b");
        let (written, lagging) = wal_written(&mut conn).await;
        lagged += usize::from(lagging);
        a.sync().await.expect("barrier on a");
        assert!(
            flushed_past(&mut conn, &written).await,
            "round {round}: the WAL is not flushed past {written} after a's barrier"
        );
        // At most one flush per barrier (none when the server's WAL writer was first).
        assert!(a.sync_stats().syncs <= round + 1);
    }
    // The commits themselves did not flush.
    assert!(
        lagged > 0,
        "every commit on b was flushed by itself: the sessions do not commit asynchronously"
    );
    assert_eq!(b.sync_stats().syncs, 0);
    a.close().await;
    b.close().await;
    common::drop_schema(&url, &schema).await;
}

/// Barriers that arrive together share a flush: sixteen raised at once make one or two.
#[tokio::test]
async fn concurrent_postgres_barriers_share_one_flush() {
    let Some(url) = common::postgres_url("concurrent_postgres_barriers_share_one_flush") else {
        return;
    };
    let _serial = PG.lock().await;
    let schema = common::unique_schema("barrier_share");
    let store = pg_rig(&url, &schema, "barrier_share", Durability::AtBarriers).await;
    let mut conn = pg_conn(&url).await;
    store.insert(&pg_record()).await.expect("insert");
    let (written, _) = wal_written(&mut conn).await;
    let barriers = (0..16).map(|_| store.sync());
    for result in futures::future::join_all(barriers).await {
        result.expect("barrier");
    }
    // One flush, and at most one more if WAL was written while it ran (the insert's
    // notification commits in the background).
    assert!(
        (1..=2).contains(&store.sync_stats().syncs),
        "{:?}",
        store.sync_stats()
    );
    assert!(flushed_past(&mut conn, &written).await);
    store.close().await;
    common::drop_schema(&url, &schema).await;
}

/// The gate raises the store's and the SQL audit sink's barriers together; on one database
/// they are one flush.
#[tokio::test]
async fn a_gates_barrier_on_postgres_is_one_flush_for_store_and_log() {
    let Some(url) =
        common::postgres_url("a_gates_barrier_on_postgres_is_one_flush_for_store_and_log")
    else {
        return;
    };
    let _serial = PG.lock().await;
    let schema = common::unique_schema("barrier_gate");
    let store = pg_rig(&url, &schema, "barrier_gate", Durability::AtBarriers).await;
    let gate = Gate::builder()
        .policy(StaticPolicy::require(Requirement::groups(["data-owners"])))
        .store(store.clone())
        .audit(store.audit_sink())
        .initiator(Initiator::agent("export-bot"))
        .build()
        .expect("gate");
    for _ in 0..3 {
        // submit(): one barrier (no channel to tell), joining the store's and the sink's.
        let Submission::Pending(_) = gate.submit(&export()).await.expect("submit") else {
            panic!("needs approval");
        };
    }
    // Three (the store and its SQL sink share one sync domain, so one flush per submit), or
    // four when a notification's background commit lands after a barrier's WAL check.
    let syncs = store.sync_stats().syncs;
    assert!(
        (3..=4).contains(&syncs),
        "{syncs} flushes for three barriers"
    );
    store.close().await;
    common::drop_schema(&url, &schema).await;
}

/// WAL flushes the server counted, once `store` (whose sessions are `app`'s) is closed.
async fn wal_flushes_after_closing(
    conn: &mut sqlx::PgConnection,
    store: &SqlStore,
    app: &str,
) -> i64 {
    store.close().await;
    approvals_testkit::pg::wal_flushes_once_ended(conn, app).await
}

/// Thirty sequential writes cost about thirty WAL flushes when every commit is synchronous,
/// and only the WAL writer's few (it flushes every 200 ms) plus one per barrier at barriers.
#[tokio::test]
async fn postgres_commits_flush_only_at_barriers() {
    let Some(url) = common::postgres_url("postgres_commits_flush_only_at_barriers") else {
        return;
    };
    let _serial = PG.lock().await;
    let schema = common::unique_schema("barrier_count");
    let mut conn = pg_conn(&url).await;
    // The schema and its tables, made before anything is counted.
    let setup = pg_rig(&url, &schema, "barrier_setup", Durability::AtBarriers).await;
    let mut before = wal_flushes_after_closing(&mut conn, &setup, "barrier_setup").await;
    let mut flushes = Vec::new();
    for (durability, app) in [
        (Durability::EveryCommit, "barrier_every"),
        (Durability::AtBarriers, "barrier_at"),
    ] {
        let store = pg_rig(&url, &schema, app, durability).await;
        for _ in 0..30 {
            store.insert(&pg_record()).await.expect("insert");
        }
        store.sync().await.expect("barrier");
        let after = wal_flushes_after_closing(&mut conn, &store, app).await;
        flushes.push(after - before);
        before = after;
    }
    assert!(
        flushes[0] >= 30,
        "every commit synchronous: {flushes:?} flushes"
    );
    assert!(flushes[1] <= 10, "at barriers: {flushes:?} flushes");
    common::drop_schema(&url, &schema).await;
}
