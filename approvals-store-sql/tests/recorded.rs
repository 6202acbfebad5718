//! One commit per transition: when the gate's audit sink is the store's own SQL log, a
//! transition (the compare-and-set) and its audit events commit in one transaction
//! (`Store::recorded_writes`), on SQLite in the writer's batch and on PostgreSQL in the audit
//! writer's, under the log's lock. Checked on both backends: the offer is made only for the
//! store's own log; a decision is one commit and leaves no audit flag behind; a
//! compare-and-set that loses, or is not a lifecycle step, records nothing; a change whose
//! events cannot be written is not made (and no waiter gets a grant); and concurrent
//! lifecycles leave one verifiable log with every request's events once, in lifecycle order.

mod common;

use std::sync::Arc;
use std::time::Duration;

use approvals_core::{
    ActionRequest, Approver, ApproverError, AuditEvent, AuditSink, Decisions, Delivery,
    DispatchReason, EventDetail, Gate, GuardError, Initiator, MemorySink, Principal, RequestRecord,
    RequestState, Requirement, Review, ReviewError, StaticPolicy, Store, Submission,
};
use approvals_store_sql::audit::{LogConfig, LogVerifier, Signer};
use approvals_store_sql::{SqlAuditSink, SqlStore};

const ORIGIN: &str = "audit.example/recorded";

/// What every lifecycle below records, in order.
const LIFECYCLE: [&str; 7] = [
    "requested",
    "policy_decided",
    "reviewed",
    "approved",
    "grant_issued",
    "grant_consumed",
    "executed",
];

struct Db {
    store: SqlStore,
    /// Runs a statement on the database outside the store (to damage the log).
    raw: Raw,
    cleanup: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

enum Raw {
    Sqlite(String),
    Postgres(String, String),
}

impl Raw {
    /// Deletes the log's last row, as an attacker with the database's owner rights would
    /// (dropping the append-only trigger first).
    async fn cut_log_end(&self) {
        let drop_trigger = match self {
            Raw::Sqlite(_) => "DROP TRIGGER approval_audit_log_no_delete;",
            Raw::Postgres(..) => "DROP TRIGGER approval_audit_log_no_change ON approval_audit_log;",
        };
        self.execute(&format!(
            "{drop_trigger} DELETE FROM approval_audit_log
              WHERE line_no = (SELECT MAX(line_no) FROM approval_audit_log)"
        ))
        .await;
    }

    async fn execute(&self, sql: &str) {
        use sqlx::Connection;
        match self {
            Raw::Sqlite(url) => {
                let mut conn = sqlx::SqliteConnection::connect(url).await.expect("sqlite");
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                    .execute(&mut conn)
                    .await
                    .expect("statement");
            }
            Raw::Postgres(url, schema) => {
                let mut conn = sqlx::PgConnection::connect(url).await.expect("postgres");
                let sql = format!("SET search_path TO {schema}; {sql}");
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
                    .expect("statement");
            }
        }
    }
}

async fn sqlite() -> Db {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("approvals.db").display());
    let store = SqlStore::connect(&url).await.expect("store");
    Db {
        store,
        raw: Raw::Sqlite(url),
        cleanup: None,
        _dir: Some(dir),
    }
}

async fn postgres(test: &str) -> Option<Db> {
    let url = common::postgres_url(test)?;
    let schema = common::unique_schema("recorded");
    let store = common::pg_store(&url, &schema).await;
    Some(Db {
        store,
        raw: Raw::Postgres(url.clone(), schema.clone()),
        cleanup: Some((url, schema)),
        _dir: None,
    })
}

/// The SQLite database, then the PostgreSQL one when the test server is configured.
async fn databases(test: &str) -> Vec<(&'static str, Db)> {
    let mut dbs = vec![("sqlite", sqlite().await)];
    if let Some(db) = postgres(test).await {
        dbs.push(("postgres", db));
    }
    dbs
}

async fn finish(db: Db) {
    db.store.close().await;
    if let Some((url, schema)) = db.cleanup {
        common::drop_schema(&url, &schema).await;
    }
}

fn signer() -> Signer {
    Signer::generate(ORIGIN).expect("key")
}

fn signed(store: &SqlStore, signer: &Signer) -> SqlAuditSink {
    let config = LogConfig::new(ORIGIN)
        .checkpoint_every(16)
        .checkpoint_interval(None);
    store.signed_audit_sink(config, signer.clone())
}

fn gate(store: &SqlStore, sink: SqlAuditSink, quorum: u32) -> Gate {
    Gate::builder()
        .policy(StaticPolicy::require(
            Requirement::groups(["data-owners"]).quorum(quorum),
        ))
        .store(store.clone())
        .audit(sink)
        .initiator(Initiator::agent("export-bot"))
        .poll_interval(Duration::from_millis(20))
        .build()
        .expect("gate")
}

fn export(n: usize) -> ActionRequest {
    ActionRequest::new("data.export", format!("db://prod/table{n}"))
        .params(serde_json::json!({"table": n}))
}

fn reviewer(name: &str) -> Principal {
    Principal::human(format!("{name}@example.com")).with_groups(["data-owners"])
}

async fn names(sink: &SqlAuditSink, id: approvals_core::RequestId) -> Vec<&'static str> {
    sink.events_for(id)
        .await
        .expect("events")
        .iter()
        .map(AuditEvent::name)
        .collect()
}

/// Checks that `sink`'s log verifies with `key` and holds exactly `entries` entries.
async fn assert_log_verifies(sink: &SqlAuditSink, key: &Signer, entries: usize, backend: &str) {
    let report = sink
        .verify(&LogVerifier::new(vec![key.verifier()]))
        .await
        .expect("verify");
    assert!(report.is_ok(), "{backend}: {report}");
    assert_eq!(report.entries, entries as u64, "{backend}");
}

/// Submits export `n`, which needs approval. Returns the request id.
async fn pending(gate: &Gate, n: usize) -> approvals_core::RequestId {
    let Submission::Pending(id) = gate.submit(&export(n)).await.expect("submit") else {
        panic!("needs approval");
    };
    id
}

/// Waits for the grant of request `id` and runs export `n` with it.
async fn run_granted(gate: &Gate, id: approvals_core::RequestId, n: usize) {
    let grant = gate.wait(id).await.expect("grant");
    gate.execute(grant, &export(n), || async { Ok::<_, GuardError>(()) })
        .await
        .expect("ran");
}

/// A lifecycle through the gate: submit, approve, wait, execute. Returns the request id.
async fn lifecycle(gate: &Gate, n: usize) -> approvals_core::RequestId {
    let id = pending(gate, n).await;
    gate.decide(id, Review::approve(reviewer("sam")))
        .await
        .expect("approved");
    run_granted(gate, id, n).await;
    id
}

#[tokio::test]
async fn the_store_offers_recorded_writes_for_its_own_log_only() {
    let db = sqlite().await;
    let other = sqlite().await;
    let store = &db.store;
    assert!(store.recorded_writes(&store.audit_sink()).is_some());
    assert!(store.recorded_writes(&signed(store, &signer())).is_some());
    // Through the Arc wrappers a gate builder makes.
    let shared: Arc<dyn Store> = Arc::new(store.clone());
    let sink: Arc<dyn AuditSink> = Arc::new(store.audit_sink());
    assert!(shared.recorded_writes(&sink).is_some());
    // Another database's log, or another kind of sink: the gate writes the two apart.
    assert!(store.recorded_writes(&other.store.audit_sink()).is_none());
    assert!(store.recorded_writes(&MemorySink::new()).is_none());
    // A fan-out of the log alone is the log; with another sink beside it, every event must
    // reach both through the sink, so the gate writes the two apart.
    let alone = approvals_core::FanoutSink::new().with(store.audit_sink());
    assert!(store.recorded_writes(&alone).is_some());
    let beside = approvals_core::FanoutSink::new()
        .with(store.audit_sink())
        .with(MemorySink::new());
    assert!(store.recorded_writes(&beside).is_none());
    finish(other).await;
    finish(db).await;
}

#[tokio::test]
async fn a_decision_is_one_commit_with_its_events_and_leaves_no_audit_flag() {
    for (backend, db) in databases("a_decision_is_one_commit_with_its_events").await {
        let key = signer();
        let sink = signed(&db.store, &key);
        let gate = gate(&db.store, sink.clone(), 1);
        let submitting = db.store.sync_stats();
        let id = pending(&gate, 1).await;
        let before = db.store.sync_stats();
        if backend == "sqlite" {
            // `requested` and `policy_decided` in one append (AuditSink::record_all), then
            // the request.
            assert_eq!(before.commits - submitting.commits, 2, "{backend}");
        }
        gate.decide(id, Review::approve(reviewer("sam")))
            .await
            .expect("approved");
        let after = db.store.sync_stats();
        if backend == "sqlite" {
            // The read before it is not a commit; the change, its two events and the cleared
            // audit flag are one.
            assert_eq!(after.commits - before.commits, 1, "{backend}");
        }
        let record = db.store.get(id).await.expect("get").expect("stored");
        assert_eq!(record.state, RequestState::Approved, "{backend}");
        assert!(
            !record.audit_pending && record.unaudited.is_empty(),
            "{backend}: the approval was stored as unaudited although its events committed with it"
        );
        assert_eq!(
            names(&sink, id).await,
            ["requested", "policy_decided", "reviewed", "approved"],
            "{backend}"
        );
        let grant = gate.wait(id).await.expect("grant");
        gate.execute(grant, &export(1), || async { Ok::<_, GuardError>(()) })
            .await
            .expect("ran");
        assert_eq!(names(&sink, id).await, LIFECYCLE, "{backend}");
        let record = db.store.get(id).await.expect("get").expect("stored");
        assert_eq!(record.state, RequestState::Executed, "{backend}");
        assert_log_verifies(&sink, &key, LIFECYCLE.len(), backend).await;
        finish(db).await;
    }
}

#[tokio::test]
async fn a_compare_and_set_that_does_not_apply_records_nothing() {
    for (backend, db) in databases("a_compare_and_set_that_does_not_apply_records_nothing").await {
        let sink = db.store.audit_sink();
        let writes = db.store.recorded_writes(&sink).expect("recorded writes");
        let gate = gate(&db.store, sink.clone(), 1);
        let id = pending(&gate, 2).await;
        let record = db.store.get(id).await.expect("get").expect("stored");
        let event = |detail: EventDetail| AuditEvent {
            schema: approvals_core::audit::AUDIT_SCHEMA_VERSION,
            at: chrono::Utc::now(),
            request_id: id,
            kind: record.request.kind.as_str().into(),
            resource: record.request.resource.as_str().into(),
            digest: record.digest,
            detail,
        };
        let mut cancelled = record.clone();
        cancelled.state = RequestState::Cancelled;
        let cancel = [event(EventDetail::Cancelled {
            by: None,
            reason: Some("test".into()),
        })];
        // A stale version loses, and its event is not written.
        assert!(
            !writes
                .compare_and_set(record.version + 1, &cancelled, &cancel)
                .await
                .expect("stale"),
            "{backend}"
        );
        assert_eq!(names(&sink, id).await, ["requested", "policy_decided"]);
        // The current version wins, with its event.
        assert!(
            writes
                .compare_and_set(record.version, &cancelled, &cancel)
                .await
                .expect("cancel"),
            "{backend}"
        );
        assert_eq!(
            names(&sink, id).await,
            ["requested", "policy_decided", "cancelled"],
            "{backend}"
        );
        // Not a lifecycle step (a terminal state never changes): refused, nothing written.
        let mut reopened = cancelled.clone();
        reopened.state = RequestState::Pending;
        let refused = writes
            .compare_and_set(
                record.version + 1,
                &reopened,
                &[event(EventDetail::Expired {})],
            )
            .await;
        assert!(refused.is_err(), "{backend}: {refused:?}");
        assert_eq!(
            names(&sink, id).await,
            ["requested", "policy_decided", "cancelled"],
            "{backend}"
        );
        let stored = db.store.get(id).await.expect("get").expect("stored");
        assert_eq!(
            (stored.state, stored.version),
            (RequestState::Cancelled, record.version + 1),
            "{backend}"
        );
        finish(db).await;
    }
}

#[tokio::test]
async fn a_decision_whose_events_cannot_be_written_is_not_made() {
    for (backend, db) in databases("a_decision_whose_events_cannot_be_written_is_not_made").await {
        let sink = db.store.audit_sink();
        let gate = gate(&db.store, sink.clone(), 1);
        let id = pending(&gate, 3).await;
        let before = db.store.get(id).await.expect("get").expect("stored");
        // Someone cuts the end of the log: the writer refuses to append to it (fail closed).
        db.raw.cut_log_end().await;
        let decided = gate.decide(id, Review::approve(reviewer("sam"))).await;
        assert!(
            matches!(decided, Err(ReviewError::Unavailable { .. })),
            "{backend}: {decided:?}"
        );
        let after = db.store.get(id).await.expect("get").expect("stored");
        assert_eq!(
            (after.state, after.version, after.reviews.len()),
            (RequestState::Pending, before.version, 0),
            "{backend}: the approval was stored without its events"
        );
        // Nobody waiting gets a grant for it.
        let waited = tokio::time::timeout(Duration::from_millis(300), gate.wait(id)).await;
        assert!(
            !matches!(waited, Ok(Ok(_))),
            "{backend}: a grant was issued"
        );
        finish(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_lifecycles_leave_one_log_with_each_requests_events_in_order() {
    for (backend, db) in databases("concurrent_lifecycles_leave_one_log").await {
        let key = signer();
        let sink = signed(&db.store, &key);
        // Quorum 2: two reviewers decide each request at once.
        let gate = gate(&db.store, sink.clone(), 2);
        let mut tasks = Vec::new();
        for n in 0..24 {
            let gate = gate.clone();
            tasks.push(tokio::spawn(async move {
                let id = pending(&gate, n).await;
                let (a, b) = tokio::join!(
                    gate.decide(id, Review::approve(reviewer("sam"))),
                    gate.decide(id, Review::approve(reviewer("kim"))),
                );
                a.expect("first approval");
                b.expect("second approval");
                run_granted(&gate, id, n).await;
                id
            }));
        }
        let mut ids = Vec::new();
        for task in tasks {
            ids.push(task.await.expect("lifecycle"));
        }
        let expected = [
            "requested",
            "policy_decided",
            "reviewed",
            "reviewed",
            "approved",
            "grant_issued",
            "grant_consumed",
            "executed",
        ];
        for id in &ids {
            assert_eq!(names(&sink, *id).await, expected, "{backend} {id}");
            let record: RequestRecord = db.store.get(*id).await.expect("get").expect("stored");
            assert_eq!(record.state, RequestState::Executed, "{backend}");
            assert!(!record.audit_pending, "{backend}");
        }
        assert_log_verifies(&sink, &key, ids.len() * expected.len(), backend).await;
        finish(db).await;
    }
}

/// A plain lifecycle still records everything once when the sink is another database's log
/// (the gate then compare-and-sets and records as two steps).
#[tokio::test]
async fn with_another_databases_log_the_lifecycle_is_recorded_as_before() {
    let db = sqlite().await;
    let log = sqlite().await;
    let sink = log.store.audit_sink();
    let gate = gate(&db.store, sink.clone(), 1);
    let id = lifecycle(&gate, 4).await;
    assert_eq!(names(&sink, id).await, LIFECYCLE);
    finish(log).await;
    finish(db).await;
}

/// A channel that delivers after `delay`, recording where it posted.
struct Channel {
    name: &'static str,
    delay: Duration,
}

#[async_trait::async_trait]
impl Approver for Channel {
    fn name(&self) -> &str {
        self.name
    }

    async fn dispatch(
        &self,
        _request: &RequestRecord,
        _reason: DispatchReason,
        _decisions: Arc<dyn Decisions>,
    ) -> Result<Option<Delivery>, ApproverError> {
        tokio::time::sleep(self.delay).await;
        Ok(Some(Delivery {
            channel: self.name.into(),
            reference: serde_json::json!({"posted": self.name}),
        }))
    }
}

/// The channels' `dispatched` events commit with the deliveries they recorded, each timed
/// when its channel answered (not when the last one did).
#[tokio::test]
async fn deliveries_commit_with_their_events_each_timed_as_its_channel_answered() {
    for (backend, db) in databases("deliveries_commit_with_their_events").await {
        let sink = db.store.audit_sink();
        let gate = Gate::builder()
            .policy(StaticPolicy::require(Requirement::groups(["data-owners"])))
            .store(db.store.clone())
            .audit(sink.clone())
            .initiator(Initiator::agent("export-bot"))
            .approver(Channel {
                name: "fast",
                delay: Duration::ZERO,
            })
            .approver(Channel {
                name: "slow",
                delay: Duration::from_millis(300),
            })
            .build()
            .expect("gate");
        let id = pending(&gate, 5).await;
        let record = db.store.get(id).await.expect("get").expect("stored");
        let posted: Vec<&str> = record
            .deliveries
            .iter()
            .map(|d| d.channel.as_str())
            .collect();
        assert_eq!(posted, ["fast", "slow"], "{backend}");
        let events = sink.events_for(id).await.expect("events");
        let dispatched: Vec<&AuditEvent> =
            events.iter().filter(|e| e.name() == "dispatched").collect();
        assert_eq!(dispatched.len(), 2, "{backend}: {events:?}");
        let gap = dispatched[1].at - dispatched[0].at;
        assert!(
            gap >= chrono::TimeDelta::milliseconds(250),
            "{backend}: the fast channel's event is timed {gap} before the slow one's"
        );
        finish(db).await;
    }
}

/// Two stores on one database (two replicas, each with its own writer and its own view of
/// the log) commit transitions with their events at once: decisions made on one replica for
/// requests waiting on the other leave one log that verifies, with each request's events once
/// and in lifecycle order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_recording_at_once_keep_one_log() {
    let mut pairs = Vec::new();
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("shared.db").display());
    let a = SqlStore::connect(&url).await.expect("replica a");
    let b = SqlStore::connect(&url).await.expect("replica b");
    pairs.push(("sqlite", a, b, None));
    if let Some(url) = common::postgres_url("two_replicas_recording_at_once_keep_one_log") {
        let schema = common::unique_schema("recorded_replicas");
        let a = common::pg_store(&url, &schema).await;
        let b = common::pg_store(&url, &schema).await;
        pairs.push(("postgres", a, b, Some((url, schema))));
    }
    for (backend, a, b, cleanup) in pairs {
        let key = signer();
        let (sink_a, sink_b) = (signed(&a, &key), signed(&b, &key));
        let (gate_a, gate_b) = (gate(&a, sink_a.clone(), 1), gate(&b, sink_b, 1));
        let mut tasks = Vec::new();
        for n in 0..20 {
            // Even requests wait on A and are decided on B; odd ones the other way round.
            let (home, other) = if n % 2 == 0 {
                (gate_a.clone(), gate_b.clone())
            } else {
                (gate_b.clone(), gate_a.clone())
            };
            tasks.push(tokio::spawn(async move {
                let id = pending(&home, n).await;
                other
                    .decide(id, Review::approve(reviewer("sam")))
                    .await
                    .expect("approved on the other replica");
                run_granted(&home, id, n).await;
                id
            }));
        }
        let mut ids = Vec::new();
        for task in tasks {
            ids.push(task.await.expect("lifecycle"));
        }
        for id in &ids {
            assert_eq!(names(&sink_a, *id).await, LIFECYCLE, "{backend} {id}");
        }
        assert_log_verifies(&sink_a, &key, ids.len() * LIFECYCLE.len(), backend).await;
        a.close().await;
        b.close().await;
        if let Some((url, schema)) = cleanup {
            common::drop_schema(&url, &schema).await;
        }
    }
}

/// The doors' two steps (`start_execution`, `finish_execution`: the HTTP agent API,
/// `approvals exec`, the MCP gateway) on recorded writes: the grant is consumed with
/// `grant_consumed` and the outcome stored with `executed`, each once; a second start is
/// refused and audited as `grant_rejected`, a second report is refused.
#[tokio::test]
async fn a_doors_start_and_report_each_commit_once_with_their_events() {
    for (backend, db) in databases("a_doors_start_and_report_each_commit_once").await {
        let sink = db.store.audit_sink();
        let gate = gate(&db.store, sink.clone(), 1);
        let id = pending(&gate, 6).await;
        gate.decide(id, Review::approve(reviewer("sam")))
            .await
            .expect("approved");
        let digest = db.store.get(id).await.expect("get").expect("stored").digest;
        let caller = Initiator::agent("export-bot");
        let started = gate
            .start_execution(id, digest, &caller)
            .await
            .expect("started");
        let stored = db.store.get(id).await.expect("get").expect("stored");
        assert_eq!(
            (started.state, started.version),
            (stored.state, stored.version),
            "{backend}: the door was given another record than the one stored"
        );
        assert_eq!(stored.state, RequestState::Executing, "{backend}");
        let again = gate.start_execution(id, digest, &caller).await;
        assert!(again.is_err(), "{backend}: a grant was consumed twice");
        let finished = gate
            .finish_execution(id, &caller, None)
            .await
            .expect("finished");
        assert_eq!(finished.state, RequestState::Executed, "{backend}");
        let twice = gate.finish_execution(id, &caller, None).await;
        assert!(
            matches!(twice, Err(GuardError::GrantUsed { .. })),
            "{backend}: {twice:?}"
        );
        assert_eq!(
            names(&sink, id).await,
            [
                "requested",
                "policy_decided",
                "reviewed",
                "approved",
                "grant_consumed",
                "grant_rejected",
                "executed"
            ],
            "{backend}"
        );
        finish(db).await;
    }
}

/// A SQLite store whose writes give up on another process's write lock after 200 ms, with its
/// URL and the directory that holds it.
async fn sqlite_with_short_busy_timeout() -> (SqlStore, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("approvals.db").display());
    let store = SqlStore::connect_with(
        approvals_store_sql::SqlStoreOptions::new(&url).busy_timeout(Duration::from_millis(200)),
    )
    .await
    .expect("store");
    (store, url, dir)
}

/// Takes the database's write lock from a connection of another "process", until released.
async fn hold_write_lock(url: &str) -> sqlx::SqliteConnection {
    use sqlx::Connection as _;
    let mut other = sqlx::SqliteConnection::connect(url).await.expect("other");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .expect("lock");
    other
}

async fn release_write_lock(mut other: sqlx::SqliteConnection) {
    sqlx::query("ROLLBACK")
        .execute(&mut other)
        .await
        .expect("unlock");
}

/// Another process holds SQLite's write lock past the busy timeout: the decision and its
/// events commit together or not at all, so the refused decision leaves the request pending,
/// its log without the decision's events and without an audit flag, and the same decision
/// made once the lock is gone completes the lifecycle with a log that verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_refused_by_a_held_write_lock_changes_and_records_nothing() {
    let (store, url, _dir) = sqlite_with_short_busy_timeout().await;
    let key = signer();
    let sink = signed(&store, &key);
    let gate = gate(&store, sink.clone(), 1);
    let id = pending(&gate, 1).await;

    let other = hold_write_lock(&url).await;
    let refused = gate.decide(id, Review::approve(reviewer("sam"))).await;
    assert!(
        matches!(refused, Err(ReviewError::Unavailable { .. })),
        "{refused:?}"
    );
    release_write_lock(other).await;

    let record = store.get(id).await.expect("get").expect("stored");
    assert_eq!((record.state, record.version), (RequestState::Pending, 1));
    assert!(!record.audit_pending && record.unaudited.is_empty());
    assert_eq!(names(&sink, id).await, ["requested", "policy_decided"]);

    gate.decide(id, Review::approve(reviewer("sam")))
        .await
        .expect("approved once the lock is gone");
    run_granted(&gate, id, 1).await;
    assert_eq!(names(&sink, id).await, LIFECYCLE);
    assert_log_verifies(&sink, &key, LIFECYCLE.len(), "sqlite").await;
    store.close().await;
}

/// Many recorded compare-and-sets of the same requests at once, so that several of one
/// request share a writer's batch and its transaction: for each request
/// exactly one applies and only its event is written; every other legal one is told it lost
/// (`Ok(false)`), never an error; one that is not a lifecycle step never applies. On both
/// backends, and the log verifies after.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_recorded_compare_and_sets_of_one_request_apply_once() {
    for (backend, db) in databases("racing_recorded_compare_and_sets_of_one_request").await {
        let key = signer();
        let sink = signed(&db.store, &key);
        let writes = db.store.recorded_writes(&sink).expect("recorded writes");
        let gate = gate(&db.store, sink.clone(), 1);
        let mut records = Vec::new();
        for n in 0..8 {
            let id = pending(&gate, n).await;
            records.push(db.store.get(id).await.expect("get").expect("stored"));
        }
        let mut tasks = Vec::new();
        for record in &records {
            let event = |detail: EventDetail| AuditEvent {
                schema: approvals_core::audit::AUDIT_SCHEMA_VERSION,
                at: chrono::Utc::now(),
                request_id: record.id,
                kind: record.request.kind.as_str().into(),
                resource: record.request.resource.as_str().into(),
                digest: record.digest,
                detail,
            };
            // Five legal ends (cancel, each with its own reason, or expire) and one that is
            // not a lifecycle step (a pending request cannot become executed).
            for contender in 0..6 {
                let mut next = record.clone();
                let detail = match contender {
                    0..=3 => {
                        next.state = RequestState::Cancelled;
                        EventDetail::Cancelled {
                            by: None,
                            reason: Some(format!("contender {contender}")),
                        }
                    }
                    4 => {
                        next.state = RequestState::Expired;
                        EventDetail::Expired {}
                    }
                    _ => {
                        next.state = RequestState::Executed;
                        EventDetail::Expired {}
                    }
                };
                let events = [event(detail)];
                let writes = writes.clone();
                let expected = record.version;
                tasks.push(tokio::spawn(async move {
                    let result = writes.compare_and_set(expected, &next, &events).await;
                    (next.id, contender, next.state, result)
                }));
            }
        }
        let mut winners = std::collections::HashMap::new();
        for task in futures::future::join_all(tasks).await {
            let (id, contender, state, result) = task.expect("task");
            match (contender, result) {
                (5, Ok(true)) => panic!("{backend}: an illegal step applied"),
                (5, _) => {}
                (_, Ok(true)) => {
                    let before = winners.insert(id, (contender, state));
                    assert!(before.is_none(), "{backend}: two applied for {id}");
                }
                (_, Ok(false)) => {}
                (_, Err(e)) => panic!("{backend}: a legal contender failed: {e}"),
            }
        }
        for record in &records {
            let (contender, state) = winners
                .get(&record.id)
                .copied()
                .unwrap_or_else(|| panic!("{backend}: none applied for {}", record.id));
            let stored = db.store.get(record.id).await.expect("get").expect("stored");
            assert_eq!(
                (stored.state, stored.version),
                (state, record.version + 1),
                "{backend}"
            );
            let ended = if contender == 4 {
                "expired"
            } else {
                "cancelled"
            };
            assert_eq!(
                names(&sink, record.id).await,
                ["requested", "policy_decided", ended],
                "{backend}"
            );
            if contender < 4 {
                let events = sink.events_for(record.id).await.expect("events");
                let reason = match &events[2].detail {
                    EventDetail::Cancelled { reason, .. } => reason.clone(),
                    other => panic!("{backend}: {other:?}"),
                };
                assert_eq!(reason, Some(format!("contender {contender}")), "{backend}");
            }
        }
        assert_log_verifies(&sink, &key, records.len() * 3, backend).await;
        finish(db).await;
    }
}

/// The rest of the class of the test above: a submission and a grant's consumption refused
/// by a held write lock. The submission stores no request and records nothing; the refused
/// consumption runs nothing (fail closed: the action runs only once its consumed grant is
/// committed) and leaves the request approved and unconsumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_or_a_consumption_refused_by_a_held_write_lock_runs_and_records_nothing() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let (store, url, _dir) = sqlite_with_short_busy_timeout().await;
    let key = signer();
    let sink = signed(&store, &key);
    let gate = gate(&store, sink.clone(), 1);
    let id = pending(&gate, 1).await;
    gate.decide(id, Review::approve(reviewer("sam")))
        .await
        .expect("approved");
    let grant = gate.wait(id).await.expect("grant");

    let other = hold_write_lock(&url).await;
    let submitted = gate.submit(&export(2)).await;
    assert!(
        matches!(submitted, Err(GuardError::Unavailable { .. })),
        "{submitted:?}"
    );
    let ran = AtomicBool::new(false);
    let executed = gate
        .execute(grant, &export(1), || async {
            ran.store(true, Ordering::SeqCst);
            Ok::<_, GuardError>(())
        })
        .await;
    assert!(
        matches!(executed, Err(GuardError::Unavailable { .. })),
        "{executed:?}"
    );
    assert!(
        !ran.load(Ordering::SeqCst),
        "the action ran without a consumed grant"
    );
    release_write_lock(other).await;

    let stored = store
        .list(&approvals_core::ListFilter::default())
        .await
        .expect("list");
    assert_eq!(stored.len(), 1, "the refused submission stored a request");
    assert_eq!(stored[0].state, RequestState::Approved);
    let names = names(&sink, id).await;
    assert!(
        !names.contains(&"grant_consumed") && !names.contains(&"executed"),
        "{names:?}"
    );
    // Nothing of the refused submission either: the log holds this request's events only.
    assert_log_verifies(&sink, &key, names.len(), "sqlite").await;
    store.close().await;
}
