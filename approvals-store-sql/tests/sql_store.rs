//! Behaviour specific to the SQL store: durability across reopen, the lifecycle guard,
//! corrupt rows, bad input, migrations, and racing deciders on separate connections.

mod common;

use std::sync::Arc;

use approvals_core::{
    GuardError, ListFilter, MemorySink, RequestState, Review, ReviewError, Store, StoreError,
    Submission,
};
use approvals_store_sql::{Backend, SqlError, SqlStore, SqlStoreOptions};
use approvals_testkit::fixtures::{self, epoch, export_request, full_record, pending_record};

async fn join_all<T: Send + 'static>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(handles.len());
    for h in futures::future::join_all(handles).await {
        out.push(h.expect("task panicked"));
    }
    out
}

async fn each_backend(test: &str, body: impl AsyncFn(SqlStore, Reopen)) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let store = SqlStore::connect(&url).await.expect("sqlite");
    body(store, Reopen::Url(url)).await;
    if let Some(url) = common::postgres_url(test) {
        let schema = common::unique_schema("store");
        let store = common::pg_store(&url, &schema).await;
        body(store, Reopen::Pg(url.clone(), schema.clone())).await;
        common::drop_schema(&url, &schema).await;
    }
}

/// How to open another, independent store (own pool, own connections) on the same database.
#[derive(Clone)]
enum Reopen {
    Url(String),
    Pg(String, String),
}

impl Reopen {
    async fn open(&self) -> SqlStore {
        match self {
            Reopen::Url(url) => SqlStore::connect(url).await.expect("reopen"),
            Reopen::Pg(url, schema) => common::pg_store(url, schema).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_survive_closing_and_reopening() {
    each_backend(
        "records_survive_closing_and_reopening",
        async |store, reopen| {
            let record = full_record();
            store.insert(&record).await.expect("insert");
            store.close().await;
            let again = reopen.open().await;
            let mut expected = record.clone();
            expected.version = 1;
            assert_eq!(again.get(record.id).await.expect("get"), Some(expected));
            // Migrations are idempotent: connecting applied them again without harm.
            again.migrate().await.expect("migrate twice");
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn terminal_states_never_change_even_when_a_caller_asks() {
    each_backend(
        "terminal_states_never_change_even_when_a_caller_asks",
        async |store, _| {
            let mut record = pending_record(export_request(), epoch());
            store.insert(&record).await.expect("insert");
            record.state = RequestState::Denied;
            assert!(store.compare_and_set(1, &record).await.expect("deny"));
            for next in [
                RequestState::Pending,
                RequestState::Approved,
                RequestState::Executing,
            ] {
                let mut revived = record.clone();
                revived.state = next;
                let err = store
                    .compare_and_set(2, &revived)
                    .await
                    .expect_err("a terminal state must not change");
                assert!(
                    err.to_string().contains("not a lifecycle step"),
                    "clear error: {err}"
                );
            }
            // Skipping a step is refused too: pending cannot jump to executed.
            let mut other = pending_record(export_request(), epoch());
            store.insert(&other).await.expect("insert");
            other.state = RequestState::Executed;
            assert!(store.compare_and_set(1, &other).await.is_err());
            let stored = store.get(record.id).await.expect("get").expect("exists");
            assert_eq!((stored.state, stored.version), (RequestState::Denied, 2));
            let stored = store.get(other.id).await.expect("get").expect("exists");
            assert_eq!((stored.state, stored.version), (RequestState::Pending, 1));
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deciders_on_separate_connections_give_one_outcome() {
    each_backend(
        "deciders_on_separate_connections_give_one_outcome",
        async |store, reopen| {
            // Four independent stores (separate pools, as in separate processes) on one database.
            let mut gates = Vec::new();
            let clock = fixtures::clock();
            let audit = Arc::new(MemorySink::new());
            gates.push(fixtures::gate(
                Arc::new(store.clone()),
                clock.clone(),
                audit.clone(),
            ));
            for _ in 0..3 {
                let other: Arc<dyn Store> = Arc::new(reopen.open().await);
                gates.push(fixtures::gate(other, clock.clone(), audit.clone()));
            }
            for round in 0..5 {
                let action = export_request().params(serde_json::json!({"round": round}));
                let Submission::Pending(id) = gates[0].submit(&action).await.expect("submit")
                else {
                    panic!("approval required");
                };
                let mut handles = Vec::new();
                for i in 0..40 {
                    let gate = gates[i % gates.len()].clone();
                    let review = if i % 2 == 0 {
                        Review::approve(fixtures::reviewer(&format!("a{i}@example.com")))
                    } else {
                        Review::deny(fixtures::reviewer(&format!("d{i}@example.com")))
                    };
                    handles.push(tokio::spawn(async move { gate.decide(id, review).await }));
                }
                let results = join_all(handles).await;
                let stored = store.get(id).await.expect("get").expect("exists");
                assert!(
                    matches!(stored.state, RequestState::Approved | RequestState::Denied),
                    "decided: {:?}",
                    stored.state
                );
                // Deny wins over an unused approval, so an approval may be followed by one deny;
                // nothing else may be accepted, and the stored reviews are exactly the accepted ones.
                let accepted: Vec<_> = results.iter().filter(|r| r.is_ok()).collect();
                assert!(!accepted.is_empty() && accepted.len() <= 2, "{accepted:?}");
                assert_eq!(stored.reviews.len(), accepted.len());
                assert!(
                    results
                        .iter()
                        .all(|r| matches!(r, Ok(_) | Err(ReviewError::AlreadyDecided { .. })))
                );
                // Exactly one final outcome event.
                let finals = audit
                    .for_request(id)
                    .iter()
                    .filter(|e| matches!(e.name(), "approved" | "denied"))
                    .count();
                assert!(
                    finals == accepted.len(),
                    "one approved/denied event per accepted review"
                );
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_row_is_a_clear_error_not_a_pass() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let store = SqlStore::connect(&url).await.expect("sqlite");
    let clock = fixtures::clock();
    let gate = fixtures::gate(Arc::new(store.clone()), clock, Arc::new(MemorySink::new()));
    let Submission::Pending(id) = gate.submit(&export_request()).await.expect("submit") else {
        panic!("approval required");
    };
    // Someone edits the stored JSON by hand.
    let pool = sqlx::SqlitePool::connect(&url).await.expect("raw pool");
    sqlx::query("UPDATE approval_requests SET record = '{\"state\": \"approved\"' WHERE id = ?1")
        .bind(id.to_string())
        .execute(&pool)
        .await
        .expect("tamper");
    let err = store.get(id).await.expect_err("corrupt row");
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
    assert!(
        err.to_string().contains(&id.to_string()),
        "names the request: {err}"
    );
    // The gate refuses (fails closed) rather than granting.
    let wait = gate.wait(id).await;
    assert!(
        matches!(wait, Err(GuardError::Unavailable { .. })),
        "{wait:?}"
    );
}

#[tokio::test]
async fn bad_urls_and_options_are_clear_errors() {
    let err = SqlStore::connect("mysql://localhost/db")
        .await
        .expect_err("unsupported");
    assert!(matches!(err, SqlError::UnsupportedUrl { .. }), "{err}");
    assert!(
        err.to_string().contains("sqlite://"),
        "says what works: {err}"
    );
    assert_eq!(
        Backend::from_url("postgresql://x/y").ok(),
        Some(Backend::Postgres)
    );
    assert_eq!(
        Backend::from_url("SQLITE::memory:").ok(),
        Some(Backend::Sqlite)
    );
    let err = SqlStore::connect_with(
        SqlStoreOptions::new("postgres://127.0.0.1:1/x").schema("bad; DROP TABLE x"),
    )
    .await
    .expect_err("bad schema");
    assert!(matches!(err, SqlError::InvalidOption(_)), "{err}");
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = format!("sqlite://{}", dir.path().join("no/such/dir/x.db").display());
    let err = SqlStore::connect(&missing).await.expect_err("unopenable");
    assert!(err.to_string().contains("x.db"), "names the file: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_filter_values_are_data_not_sql() {
    each_backend(
        "hostile_filter_values_are_data_not_sql",
        async |store, _| {
            let record = pending_record(export_request().idempotency_key("k' OR 1=1 --"), epoch());
            store.insert(&record).await.expect("insert");
            for hostile in ["' OR '1'='1", "%", "_", "pending|approved", "|pending|"] {
                let filter = ListFilter {
                    kind: Some(hostile.into()),
                    ..Default::default()
                };
                assert!(
                    store.list(&filter).await.expect("list").is_empty(),
                    "{hostile}"
                );
                assert!(
                    store
                        .get_by_idempotency_key(hostile)
                        .await
                        .expect("get")
                        .is_none()
                );
            }
            assert!(
                store
                    .get_by_idempotency_key("k' OR 1=1 --")
                    .await
                    .expect("get")
                    .is_some()
            );
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_announce_every_committed_update() {
    each_backend(
        "changes_announce_every_committed_update",
        async |store, reopen| {
            // Another store on the same database: on PostgreSQL the notice crosses connections.
            let other = reopen.open().await;
            let mut rx = match store.backend() {
                Backend::Postgres => other.changes().expect("changes"),
                _ => store.changes().expect("changes"),
            };
            let mut record = pending_record(export_request(), epoch());
            store.insert(&record).await.expect("insert");
            record.escalated = true;
            assert!(!store.compare_and_set(5, &record).await.expect("stale cas"));
            assert!(store.compare_and_set(1, &record).await.expect("cas"));
            let got = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
                .await
                .expect("a notice arrives")
                .expect("channel open");
            assert_eq!(got, record.id);
            assert!(rx.try_recv().is_err(), "a failed CAS announces nothing");
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sweeps_on_every_replica_expire_each_request_once() {
    each_backend(
        "sweeps_on_every_replica_expire_each_request_once",
        async |store, reopen| {
            let clock = fixtures::clock();
            let audit = Arc::new(MemorySink::new());
            let mut gates = vec![fixtures::gate(
                Arc::new(store.clone()),
                clock.clone(),
                audit.clone(),
            )];
            for _ in 0..2 {
                let replica: Arc<dyn Store> = Arc::new(reopen.open().await);
                gates.push(fixtures::gate(replica, clock.clone(), audit.clone()));
            }
            let mut ids = Vec::new();
            for i in 0..20 {
                let action = export_request().params(serde_json::json!({"sweep": i}));
                let Submission::Pending(id) = gates[i % 3].submit(&action).await.expect("submit")
                else {
                    panic!("approval required");
                };
                ids.push(id);
            }
            clock.advance(chrono::TimeDelta::hours(2));
            let handles: Vec<_> = gates
                .iter()
                .map(|g| {
                    let g = g.clone();
                    tokio::spawn(async move { g.sweep().await })
                })
                .collect();
            let expired: usize = join_all(handles)
                .await
                .into_iter()
                .map(|r| r.expect("sweep").expired)
                .sum();
            assert_eq!(
                expired,
                ids.len(),
                "every request expired exactly once across replicas"
            );
            for id in ids {
                let events = audit.for_request(id);
                assert_eq!(events.iter().filter(|e| e.name() == "expired").count(), 1);
                let stored = store.get(id).await.expect("get").expect("exists");
                assert_eq!(stored.state, RequestState::Expired);
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_byte_is_kept_or_refused_clearly_never_half_stored() {
    each_backend(
        "a_nul_byte_is_kept_or_refused_clearly_never_half_stored",
        async |store, _| {
            let mut request = export_request().idempotency_key("nul-key");
            request.kind = "data.export\0evil".into();
            let record = pending_record(request, epoch());
            match store.insert(&record).await {
                // SQLite stores the text as is.
                Ok(_) => {
                    assert_eq!(store.backend(), Backend::Sqlite);
                    let stored = store.get(record.id).await.expect("get").expect("stored");
                    assert_eq!(stored.request.kind, "data.export\0evil");
                }
                // PostgreSQL text cannot hold NUL: a clear error, and nothing stored.
                Err(e) => {
                    assert_eq!(store.backend(), Backend::Postgres);
                    assert!(e.to_string().contains(&record.id.to_string()), "{e}");
                    assert!(store.get(record.id).await.expect("get").is_none());
                    assert!(
                        store
                            .get_by_idempotency_key("nul-key")
                            .await
                            .expect("get")
                            .is_none()
                    );
                }
            }
        },
    )
    .await;
}

/// Two records as the previous version stored them: a denial still waiting for its audit
/// events, and an audited one.
fn records_before_migration_3() -> (approvals_core::RequestRecord, approvals_core::RequestRecord) {
    let mut unaudited = pending_record(export_request(), epoch());
    unaudited.state = RequestState::Denied;
    unaudited.audit_pending = true;
    let mut audited = pending_record(export_request(), epoch());
    audited.state = RequestState::Denied;
    (unaudited, audited)
}

async fn assert_migration_3_flags(store: &SqlStore, unaudited: approvals_core::RequestId) {
    let filter = ListFilter {
        states: vec![RequestState::Denied],
        audit_pending: Some(true),
        ..Default::default()
    };
    let found: Vec<_> = store
        .list(&filter)
        .await
        .expect("list")
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(
        found,
        vec![unaudited],
        "the column is filled from the stored records"
    );
    let all = store.list(&ListFilter::default()).await.expect("list");
    assert_eq!(all.len(), 2, "no record lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_3_fills_the_audit_pending_column_from_records_stored_before_it() {
    // SQLite file.
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.expect("open");
    common::migrations_up_to("sqlite", 2)
        .run(&pool)
        .await
        .expect("migrations 1 and 2");
    let (unaudited, audited) = records_before_migration_3();
    for record in [&unaudited, &audited] {
        sqlx::query(
            "INSERT INTO approval_requests
                 (id, version, state, kind, created_at, expires_at, record)
             VALUES (?1, 1, 'denied', 'data.export', 0, 0, ?2)",
        )
        .bind(record.id.to_string())
        .bind(serde_json::to_string(record).expect("json"))
        .execute(&pool)
        .await
        .expect("old row");
    }
    pool.close().await;
    let store = SqlStore::connect(&url).await.expect("migrate");
    assert_migration_3_flags(&store, unaudited.id).await;
    store.close().await;

    // PostgreSQL schema.
    let test = "migration_3_fills_the_audit_pending_column_from_records_stored_before_it";
    let Some(url) = common::postgres_url(test) else {
        return;
    };
    let schema = common::unique_schema("mig3");
    let options = url
        .parse::<sqlx::postgres::PgConnectOptions>()
        .expect("url")
        .options([("search_path", schema.as_str())]);
    let pool = sqlx::PgPool::connect_with(options).await.expect("connect");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
        .execute(&pool)
        .await
        .expect("schema");
    common::migrations_up_to("postgres", 2)
        .run(&pool)
        .await
        .expect("migrations 1 and 2");
    for record in [&unaudited, &audited] {
        sqlx::query(
            "INSERT INTO approval_requests
                 (id, version, state, kind, created_at, expires_at, record)
             VALUES ($1, 1, 'denied', 'data.export', $2, $2, $3)",
        )
        .bind(record.id.0)
        .bind(record.created_at)
        .bind(serde_json::to_string(record).expect("json"))
        .execute(&pool)
        .await
        .expect("old row");
    }
    pool.close().await;
    let store = common::pg_store(&url, &schema).await;
    assert_migration_3_flags(&store, unaudited.id).await;
    store.close().await;
    common::drop_schema(&url, &schema).await;
}

/// The SQLite writer is a thread of its own: `close()` stops it after syncing, so a closed
/// store refuses writes, barriers and reads as unavailable (retryable, nothing half done),
/// and what was committed before is there when the file is opened again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_sqlite_store_refuses_everything_as_unavailable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let store = SqlStore::connect(&url).await.expect("sqlite");
    let kept = pending_record(export_request(), epoch());
    store.insert(&kept).await.expect("insert");
    store.close().await;

    let refused = pending_record(export_request(), epoch());
    let unavailable = |what: &str, e: StoreError| {
        assert!(
            matches!(e, StoreError::Unavailable(_)),
            "{what} on a closed store: {e:?}"
        );
    };
    unavailable("insert", store.insert(&refused).await.expect_err("insert"));
    unavailable("sync", store.sync().await.expect_err("sync"));
    let mut decided = kept.clone();
    decided.state = RequestState::Cancelled;
    unavailable(
        "compare-and-set",
        store.compare_and_set(1, &decided).await.expect_err("cas"),
    );
    unavailable("read", store.get(kept.id).await.expect_err("get"));
    unavailable(
        "read by idempotency key",
        store
            .get_by_idempotency_key("any")
            .await
            .expect_err("by key"),
    );
    unavailable(
        "listing",
        store.list(&ListFilter::default()).await.expect_err("list"),
    );
    let event = cancelled_event(&kept);
    approvals_core::AuditSink::record(&store.audit_sink(), &event)
        .await
        .expect_err("an audit append on a closed store");

    let again = SqlStore::connect(&url).await.expect("reopen");
    let stored = again.get(kept.id).await.expect("get").expect("kept");
    assert_eq!((stored.state, stored.version), (RequestState::Pending, 1));
    assert_eq!(again.get(refused.id).await.expect("get"), None);
    assert_no_audit_events(&again, &kept).await;
}

/// Checks that `store`'s audit log holds no event of `record` (a refused append wrote none).
async fn assert_no_audit_events(store: &SqlStore, record: &approvals_core::RequestRecord) {
    let events = store
        .audit_sink()
        .events_for(record.id)
        .await
        .expect("events");
    assert!(
        events.is_empty(),
        "the refused append wrote nothing: {events:?}"
    );
}

/// A `cancelled` audit event of `record`, to try appending where nothing may be appended.
fn cancelled_event(record: &approvals_core::RequestRecord) -> approvals_core::AuditEvent {
    approvals_core::AuditEvent {
        schema: approvals_core::audit::AUDIT_SCHEMA_VERSION,
        at: epoch(),
        request_id: record.id,
        kind: record.request.kind.as_str().into(),
        resource: record.request.resource.as_str().into(),
        digest: record.digest,
        detail: approvals_core::EventDetail::Cancelled {
            by: None,
            reason: None,
        },
    }
}

/// Writers racing with `close()`: every write is answered (stored, or refused as
/// unavailable), none is left waiting, and what was answered as stored is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_racing_with_close_are_each_answered() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let store = Arc::new(SqlStore::connect(&url).await.expect("sqlite"));
    let writers: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut stored = Vec::new();
                loop {
                    let record = pending_record(export_request(), epoch());
                    match store.insert(&record).await {
                        Ok(_) => stored.push(record.id),
                        Err(StoreError::Unavailable(_)) => return stored,
                        Err(e) => panic!("a write racing with close: {e:?}"),
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    store.close().await;
    let stored = tokio::time::timeout(std::time::Duration::from_secs(20), join_all(writers))
        .await
        .expect("every write racing with close is answered");
    let again = SqlStore::connect(&url).await.expect("reopen");
    for id in stored.into_iter().flatten() {
        assert!(
            again.get(id).await.expect("get").is_some(),
            "{id} was answered as stored"
        );
    }
}

/// Another process holding SQLite's write lock past the busy timeout: the write is refused
/// as unavailable (retryable) and nothing of it is stored; once the lock is released the
/// same store writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_lock_held_past_the_busy_timeout_is_retryable_and_stores_nothing() {
    use sqlx::Connection as _;
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let store = SqlStore::connect_with(
        SqlStoreOptions::new(&url).busy_timeout(std::time::Duration::from_millis(200)),
    )
    .await
    .expect("sqlite");
    let mut other = sqlx::SqliteConnection::connect(&url).await.expect("other");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .expect("lock");

    let record = pending_record(export_request(), epoch());
    let refused = store.insert(&record).await.expect_err("locked out");
    assert!(
        matches!(&refused, StoreError::Unavailable(m) if m.contains("lock")),
        "{refused:?}"
    );
    sqlx::query("ROLLBACK")
        .execute(&mut other)
        .await
        .expect("unlock");
    assert_eq!(store.get(record.id).await.expect("get"), None);

    store.insert(&record).await.expect("insert after the lock");
    assert_eq!(
        store.get(record.id).await.expect("get").map(|r| r.version),
        Some(1)
    );
}

/// Reads of one request run on connections of their own, beside the writer thread: they
/// never wait for a writer, in this process or another, and as many run at once as callers
/// ask for (more than the connections kept idle), each seeing every committed write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_one_request_never_wait_for_a_writer_and_see_every_commit() {
    use sqlx::Connection as _;
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let store = std::sync::Arc::new(
        SqlStore::connect_with(
            SqlStoreOptions::new(&url).busy_timeout(std::time::Duration::from_secs(30)),
        )
        .await
        .expect("sqlite"),
    );
    let mut records = Vec::new();
    for i in 0..40 {
        let mut request = export_request();
        request.idempotency_key = Some(format!("read-{i}").into());
        let record = pending_record(request, epoch());
        store.insert(&record).await.expect("insert");
        records.push(record);
    }

    // Another process holds the write lock: reads of one request answer at once (well
    // inside the busy timeout of 30 s, which a read that waited would run into).
    let mut other = sqlx::SqliteConnection::connect(&url).await.expect("other");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .expect("lock");
    let reads = records.iter().map(|record| {
        let (store, id) = (store.clone(), record.id);
        let key = record.request.idempotency_key.clone().expect("key");
        tokio::spawn(async move {
            let by_id = store.get(id).await.expect("get");
            let by_key = store.get_by_idempotency_key(&key).await.expect("by key");
            (by_id.map(|r| (r.id, r.version)), by_key.map(|r| r.id))
        })
    });
    let answered = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        futures::future::join_all(reads),
    )
    .await
    .expect("reads answered while another process holds the write lock");
    for (record, answer) in records.iter().zip(answered) {
        assert_eq!(
            answer.expect("read task"),
            (Some((record.id, 1)), Some(record.id))
        );
    }
    sqlx::query("ROLLBACK")
        .execute(&mut other)
        .await
        .expect("unlock");

    // Each read sees the write committed just before it, on whichever connection it runs.
    for record in &records {
        let mut next = record.clone();
        next.state = RequestState::Cancelled;
        assert!(store.compare_and_set(1, &next).await.expect("cas"));
        let read = store.get(record.id).await.expect("get").expect("stored");
        assert_eq!((read.version, read.state), (2, RequestState::Cancelled));
    }
}

/// Each `sqlite::memory:` store is its own database, as before it was a scratch file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stores_are_separate_databases() {
    let one = SqlStore::connect("sqlite::memory:").await.expect("one");
    let two = SqlStore::connect("sqlite::memory:").await.expect("two");
    let record = pending_record(export_request(), epoch());
    one.insert(&record).await.expect("insert");
    assert!(one.get(record.id).await.expect("get").is_some());
    assert_eq!(two.get(record.id).await.expect("get"), None);
    two.insert(&record)
        .await
        .expect("the same id in the other store");
}

/// A store opened read-only (`?mode=ro`) reads what is there and refuses every write, as
/// SQLite refuses it: the writer thread opens the file read-only too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_sqlite_store_refuses_writes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store.db");
    let url = format!("sqlite://{}", path.display());
    let writable = SqlStore::connect(&url).await.expect("sqlite");
    let kept = pending_record(export_request(), epoch());
    writable.insert(&kept).await.expect("insert");
    writable.close().await;

    let read_only = SqlStore::connect(&format!("{url}?mode=ro"))
        .await
        .expect("a migrated file opens read-only");
    assert!(read_only.get(kept.id).await.expect("get").is_some());
    let refused = pending_record(export_request(), epoch());
    let e = read_only
        .insert(&refused)
        .await
        .expect_err("a read-only store writes nothing");
    assert!(e.to_string().contains("readonly"), "{e:?}");
    let mut cancelled = kept.clone();
    cancelled.state = RequestState::Cancelled;
    read_only
        .compare_and_set(1, &cancelled)
        .await
        .expect_err("a read-only store changes nothing");
    let event = cancelled_event(&kept);
    approvals_core::AuditSink::record(&read_only.audit_sink(), &event)
        .await
        .expect_err("a read-only store appends nothing to its audit log");
    let again = SqlStore::connect(&url).await.expect("reopen");
    assert_no_audit_events(&again, &kept).await;
    assert_eq!(again.get(refused.id).await.expect("get"), None);
    assert_eq!(
        again.get(kept.id).await.expect("get").map(|r| r.state),
        Some(RequestState::Pending)
    );
}
