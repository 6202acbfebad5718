//! The hash-chained audit table: same events as the core sinks, verification, tampering,
//! append-only triggers and concurrent appenders.

mod common;

use std::sync::Arc;

use approvals_core::request::canonical_json;
use approvals_core::{
    AuditEvent, AuditSink, FanoutSink, GuardError, JsonLinesSink, MemorySink, Review, Submission,
};
use approvals_store_sql::{ChainError, SqlAuditSink, SqlStore};
use approvals_testkit::fixtures::{self, export_request, reviewer};

/// Raw access to the same database, to play the attacker.
enum Raw {
    Sqlite(sqlx::SqlitePool),
    Pg(sqlx::PgPool),
}

impl Raw {
    async fn exec(&self, sql: &'static str) -> Result<u64, sqlx::Error> {
        match self {
            Raw::Sqlite(p) => sqlx::query(sql).execute(p).await.map(|r| r.rows_affected()),
            Raw::Pg(p) => sqlx::query(sql).execute(p).await.map(|r| r.rows_affected()),
        }
    }

    async fn allow_tampering(&self) {
        let drops: &[&'static str] = match self {
            Raw::Sqlite(_) => &[
                "DROP TRIGGER approval_audit_no_update",
                "DROP TRIGGER approval_audit_no_delete",
            ],
            Raw::Pg(_) => &[
                "DROP TRIGGER approval_audit_no_change ON approval_audit",
                "DROP TRIGGER approval_audit_no_truncate ON approval_audit",
            ],
        };
        for sql in drops {
            self.exec(sql).await.expect("drop trigger");
        }
    }
}

struct Db {
    store: SqlStore,
    raw: Raw,
    reopen: Box<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = SqlStore>>>>,
    cleanup: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

async fn databases(test: &str) -> Vec<Db> {
    let mut out = Vec::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("audit.db").display());
    let store = SqlStore::connect(&url).await.expect("sqlite");
    let raw = Raw::Sqlite(sqlx::SqlitePool::connect(&url).await.expect("raw"));
    let u = url.clone();
    out.push(Db {
        store,
        raw,
        reopen: Box::new(move || {
            let u = u.clone();
            Box::pin(async move { SqlStore::connect(&u).await.expect("reopen") })
        }),
        cleanup: None,
        _dir: Some(dir),
    });
    if let Some(url) = common::postgres_url(test) {
        let schema = common::unique_schema("audit");
        let store = common::pg_store(&url, &schema).await;
        let options: sqlx::postgres::PgConnectOptions = url.parse().expect("pg url");
        let raw = Raw::Pg(
            sqlx::PgPool::connect_with(options.options([("search_path", schema.as_str())]))
                .await
                .expect("raw"),
        );
        let (u, s) = (url.clone(), schema.clone());
        out.push(Db {
            store,
            raw,
            reopen: Box::new(move || {
                let (u, s) = (u.clone(), s.clone());
                Box::pin(async move { common::pg_store(&u, &s).await })
            }),
            cleanup: Some((url, schema)),
            _dir: None,
        });
    }
    out
}

async fn finish(db: Db) {
    if let Some((url, schema)) = db.cleanup {
        db.store.close().await;
        common::drop_schema(&url, &schema).await;
    }
}

/// Runs a full lifecycle (request, approve, execute) with the SQL sink next to the core's
/// memory and JSON-lines sinks.
async fn lifecycle(store: &SqlStore) -> (Vec<AuditEvent>, Vec<u8>) {
    let memory = Arc::new(MemorySink::new());
    let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
    struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let fanout = FanoutSink::new()
        .with(store.audit_sink())
        .with_shared(memory.clone())
        .with(JsonLinesSink::writer(Shared(lines.clone())));
    let gate = approvals_core::Gate::builder()
        .policy(approvals_core::StaticPolicy::require(
            approvals_core::Requirement::groups(["data-owners"]),
        ))
        .store(store.clone())
        .audit(fanout)
        .clock(fixtures::clock())
        .initiator(approvals_core::Initiator::agent("billing-agent"))
        .build()
        .expect("gate");
    let action = export_request();
    let Submission::Pending(id) = gate.submit(&action).await.expect("submit") else {
        panic!("approval required");
    };
    gate.decide(
        id,
        Review::approve(reviewer("sam@example.com")).reason("ok"),
    )
    .await
    .expect("approve");
    let grant = gate.wait(id).await.expect("grant");
    gate.execute(grant, &action, || async { Ok::<_, GuardError>(()) })
        .await
        .expect("execute");
    let bytes = lines.lock().expect("lock").clone();
    (memory.events(), bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_sink_records_the_same_events_as_the_core_sinks() {
    for db in databases("sql_sink_records_the_same_events_as_the_core_sinks").await {
        let (events, lines) = lifecycle(&db.store).await;
        let sink = db.store.audit_sink();
        let rows = sink.rows(0, 1000).await.expect("rows");
        assert_eq!(rows.len(), events.len());
        let names: Vec<&str> = events.iter().map(AuditEvent::name).collect();
        assert_eq!(
            names,
            [
                "requested",
                "policy_decided",
                "reviewed",
                "approved",
                "grant_issued",
                "grant_consumed",
                "executed"
            ]
        );
        let lines: Vec<&[u8]> = lines
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        for ((row, event), line) in rows.iter().zip(&events).zip(lines) {
            assert_eq!(&row.event().expect("parse"), event, "row {}", row.seq);
            // Same schema as the JSON-lines sink: the same JSON, canonically encoded.
            let value: serde_json::Value = serde_json::from_slice(line).expect("json line");
            assert_eq!(row.event_json.as_bytes(), canonical_json(&value).as_slice());
        }
        let id = events[0].request_id;
        assert_eq!(sink.events_for(id).await.expect("events_for"), events);
        let report = sink.verify_chain().await.expect("intact");
        assert_eq!(report.rows, 7);
        let head = report.head.expect("head");
        assert_eq!((head.seq, head.hash.len()), (7, 64));
        finish(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_refuses_updates_and_deletes() {
    for db in databases("the_table_refuses_updates_and_deletes").await {
        lifecycle(&db.store).await;
        for sql in [
            "UPDATE approval_audit SET event = 'denied' WHERE seq = 2",
            "DELETE FROM approval_audit WHERE seq = 7",
        ] {
            let err = db.raw.exec(sql).await.expect_err("append-only");
            assert!(err.to_string().contains("append-only"), "{err}");
        }
        if let Raw::Pg(_) = db.raw {
            assert!(db.raw.exec("TRUNCATE approval_audit").await.is_err());
        }
        db.store
            .audit_sink()
            .verify_chain()
            .await
            .expect("unchanged");
        finish(db).await;
    }
}

async fn tampered(db: &Db, sql: &'static str) -> ChainError {
    db.raw.exec(sql).await.expect("tamper");
    db.store
        .audit_sink()
        .verify_chain()
        .await
        .expect_err("tampering must be detected")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_detects_edits_deletions_reordering_and_truncation() {
    for make in 0..5 {
        for db in databases("verification_detects_edits_deletions_reordering_and_truncation").await
        {
            lifecycle(&db.store).await;
            let head = db
                .store
                .audit_sink()
                .verify_chain()
                .await
                .expect("intact")
                .head
                .expect("head");
            db.raw.allow_tampering().await;
            let err = match make {
                // Edit the approver's reason in place.
                0 => {
                    tampered(
                        &db,
                        "UPDATE approval_audit SET event_json = replace(event_json, '\"ok\"', '\"fine\"') WHERE seq = 3",
                    )
                    .await
                }
                // Edit the content and recompute nothing else: the link still holds, the hash does not.
                1 => {
                    tampered(
                        &db,
                        "UPDATE approval_audit SET event = 'denied' WHERE seq = 4",
                    )
                    .await
                }
                // Delete a row from the middle.
                2 => tampered(&db, "DELETE FROM approval_audit WHERE seq = 3").await,
                // Swap two rows' positions.
                3 => {
                    db.raw
                        .exec("UPDATE approval_audit SET seq = 100 WHERE seq = 2")
                        .await
                        .expect("tamper");
                    db.raw
                        .exec("UPDATE approval_audit SET seq = 2 WHERE seq = 3")
                        .await
                        .expect("tamper");
                    tampered(&db, "UPDATE approval_audit SET seq = 3 WHERE seq = 100").await
                }
                // Truncate the newest rows: only a recorded head shows it.
                _ => {
                    db.raw
                        .exec("DELETE FROM approval_audit WHERE seq >= 6")
                        .await
                        .expect("tamper");
                    db.store
                        .audit_sink()
                        .verify_chain()
                        .await
                        .expect("a truncated chain is still internally consistent");
                    db.store
                        .audit_sink()
                        .verify_chain_against(&head)
                        .await
                        .expect_err("truncation must be detected against the head")
                }
            };
            let ok = match make {
                0 => matches!(err, ChainError::Edited { seq: 3 }),
                1 => matches!(err, ChainError::Malformed { seq: 4, .. }),
                2 => matches!(
                    err,
                    ChainError::Gap {
                        previous: 2,
                        found: 4
                    }
                ),
                3 => matches!(err, ChainError::BrokenLink { seq: 2 }),
                _ => matches!(
                    err,
                    ChainError::Truncated {
                        expected_seq: 7,
                        ..
                    }
                ),
            };
            assert!(ok, "case {make}: unexpected {err:?}");
            assert!(!err.to_string().is_empty());
            finish(db).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appenders_on_separate_connections_keep_one_chain() {
    for db in databases("concurrent_appenders_on_separate_connections_keep_one_chain").await {
        let (events, _) = lifecycle(&db.store).await;
        let mut sinks: Vec<SqlAuditSink> = vec![db.store.audit_sink()];
        for _ in 0..2 {
            sinks.push((db.reopen)().await.audit_sink());
        }
        let mut tasks = Vec::new();
        for i in 0..60 {
            let sink = sinks[i % sinks.len()].clone();
            let event = events[i % events.len()].clone();
            tasks.push(tokio::spawn(async move { sink.record(&event).await }));
        }
        for t in tasks {
            t.await.expect("task").expect("append");
        }
        let report = db
            .store
            .audit_sink()
            .verify_chain()
            .await
            .expect("one intact chain");
        assert_eq!(report.rows, 7 + 60);
        finish(db).await;
    }
}
