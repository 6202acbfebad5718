//! The audit log table on SQLite files and the real PostgreSQL server: the same events as the
//! core sinks, signed checkpoints, every kind of tampering done with SQL detected and located
//! by the file verifier, forks against another database's checkpoint, concurrent writers on
//! several pools, key rotation, and a database from before the signed log.

mod common;

use std::sync::Arc;

use approvals_audit::LogConfig;
use approvals_audit::log::{Completeness, LogVerifier, ProblemKind, VerifyReport};
use approvals_audit::note::{Signer, Verifier};
use approvals_core::request::canonical_json;
use approvals_core::{
    AuditEvent, AuditSink, FanoutSink, GuardError, JsonLinesSink, MemorySink, Review, Submission,
};
use approvals_store_sql::{SqlAuditSink, SqlStore};
use approvals_testkit::fixtures::{self, export_request, reviewer};

const ORIGIN: &str = "audit.example/test";

/// Raw access to the same database, to play the attacker.
enum Raw {
    Sqlite(sqlx::SqlitePool),
    Pg(sqlx::PgPool),
}

impl Raw {
    async fn exec(&self, sql: &str) -> Result<u64, sqlx::Error> {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match self {
            Raw::Sqlite(p) => sqlx::query(sql).execute(p).await.map(|r| r.rows_affected()),
            Raw::Pg(p) => sqlx::query(sql).execute(p).await.map(|r| r.rows_affected()),
        }
    }

    async fn line(&self, line_no: i64) -> String {
        let sql = "SELECT line FROM approval_audit_log WHERE line_no = ";
        let q = format!("{sql}{line_no}");
        match self {
            Raw::Sqlite(p) => {
                sqlx::query_scalar(sqlx::AssertSqlSafe(q))
                    .fetch_one(p)
                    .await
            }
            Raw::Pg(p) => {
                sqlx::query_scalar(sqlx::AssertSqlSafe(q))
                    .fetch_one(p)
                    .await
            }
        }
        .expect("read a line")
    }

    async fn allow_tampering(&self) {
        let drops: &[&str] = match self {
            Raw::Sqlite(_) => &[
                "DROP TRIGGER approval_audit_log_no_update",
                "DROP TRIGGER approval_audit_log_no_delete",
            ],
            Raw::Pg(_) => &[
                "DROP TRIGGER approval_audit_log_no_change ON approval_audit_log",
                "DROP TRIGGER approval_audit_log_no_truncate ON approval_audit_log",
            ],
        };
        for sql in drops {
            self.exec(sql).await.expect("drop trigger");
        }
    }
}

type Reopen = Box<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = SqlStore>>>>;

struct Db {
    store: SqlStore,
    raw: Raw,
    reopen: Reopen,
    /// `--db` and `--schema` for the CLI.
    cli: Vec<String>,
    cleanup: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

async fn sqlite_db() -> Db {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("audit.db").display());
    let store = SqlStore::connect(&url).await.expect("sqlite");
    let raw = Raw::Sqlite(sqlx::SqlitePool::connect(&url).await.expect("raw"));
    let u = url.clone();
    Db {
        store,
        raw,
        reopen: Box::new(move || {
            let u = u.clone();
            Box::pin(async move { SqlStore::connect(&u).await.expect("reopen") })
        }),
        cli: vec!["--db".into(), url],
        cleanup: None,
        _dir: Some(dir),
    }
}

async fn pg_db(url: &str) -> Db {
    let schema = common::unique_schema("alog");
    let store = common::pg_store(url, &schema).await;
    let options: sqlx::postgres::PgConnectOptions = url.parse().expect("pg url");
    let raw = Raw::Pg(
        sqlx::PgPool::connect_with(options.options([("search_path", schema.as_str())]))
            .await
            .expect("raw"),
    );
    let (u, s) = (url.to_owned(), schema.clone());
    Db {
        store,
        raw,
        reopen: Box::new(move || {
            let (u, s) = (u.clone(), s.clone());
            Box::pin(async move { common::pg_store(&u, &s).await })
        }),
        cli: vec![
            "--db".into(),
            url.to_owned(),
            "--schema".into(),
            schema.clone(),
        ],
        cleanup: Some((url.to_owned(), schema)),
        _dir: None,
    }
}

/// A fresh SQLite database, and a fresh PostgreSQL schema when the server is configured.
async fn databases(test: &str) -> Vec<Db> {
    let mut out = vec![sqlite_db().await];
    if let Some(url) = common::postgres_url(test) {
        out.push(pg_db(&url).await);
    }
    out
}

async fn finish(db: Db) {
    if let Some((url, schema)) = db.cleanup {
        db.store.close().await;
        common::drop_schema(&url, &schema).await;
    }
}

fn signer() -> Signer {
    Signer::generate(ORIGIN).expect("key")
}

/// A signed sink checkpointing every `every` entries (no timer: tests decide when).
fn signed(store: &SqlStore, signer: &Signer, every: u64) -> SqlAuditSink {
    let config = LogConfig::new(ORIGIN)
        .checkpoint_every(every)
        .checkpoint_interval(None);
    store.signed_audit_sink(config, signer.clone())
}

fn verifier(keys: &[&Signer]) -> LogVerifier {
    LogVerifier::new(keys.iter().map(|k| k.verifier()).collect::<Vec<Verifier>>())
}

/// Runs a full lifecycle (request, approve, execute) with `sink` next to the core's memory
/// and JSON-lines sinks; returns the events and the JSON lines.
async fn lifecycle(store: &SqlStore, sink: SqlAuditSink) -> (Vec<AuditEvent>, Vec<u8>) {
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
        .with(sink)
        .with_shared(memory.clone())
        .with(JsonLinesSink::writer(Shared(lines.clone())));
    let gate = approvals_core::Gate::builder()
        .policy(approvals_core::StaticPolicy::require(
            approvals_core::Requirement::groups(["data-owners"]),
        ))
        .store(store.clone())
        .audit(fanout)
        .clock(fixtures::clock())
        .initiator(approvals_testkit::fixtures::billing_agent())
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

/// The signed note in a checkpoint line.
fn note_of(line: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(line).expect("checkpoint line");
    v["checkpoint"]
        .as_str()
        .expect("a checkpoint line")
        .to_owned()
}

fn first_problem(report: &VerifyReport) -> (Option<u64>, Option<u64>, ProblemKind) {
    let p = report
        .problems
        .first()
        .unwrap_or_else(|| panic!("no problem in {report}"));
    (p.line, p.seq, p.kind.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_sink_records_the_same_events_as_the_core_sinks_in_a_signed_log() {
    for db in databases("sql_sink_records_the_same_events_as_the_core_sinks_in_a_signed_log").await
    {
        let key = signer();
        let sink = signed(&db.store, &key, 3);
        let (events, lines) = lifecycle(&db.store, sink.clone()).await;
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
        sink.checkpoint().await.expect("final checkpoint");
        // 7 entries; checkpoints after 3 and 6 entries and the final one.
        let rows = sink.rows(0, 1000).await.expect("rows");
        assert_eq!(rows.len(), 10);
        let entries: Vec<_> = rows.iter().filter(|r| r.seq.is_some()).collect();
        let lines: Vec<&[u8]> = lines
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        for (i, ((row, event), line)) in entries.iter().zip(&events).zip(lines).enumerate() {
            assert_eq!(row.seq, Some(i as i64));
            assert_eq!(row.event.as_deref(), Some(event.name()));
            assert_eq!(row.request_id, Some(event.request_id.to_string()));
            // The entry holds the JSON-lines sink's event, canonically encoded.
            let value: serde_json::Value = serde_json::from_slice(line).expect("json line");
            let canonical = String::from_utf8(canonical_json(&value)).expect("utf-8");
            assert!(
                row.line.ends_with(&format!(",\"event\":{canonical}}}")),
                "{}",
                row.line
            );
        }
        assert!(
            rows[3]
                .line
                .starts_with("{\"checkpoint\":\"audit.example/test\\n3\\n")
        );
        let id = events[0].request_id;
        assert_eq!(sink.events_for(id).await.expect("events_for"), events);

        let report = sink.verify(&verifier(&[&key])).await.expect("verify");
        assert!(report.is_ok() && report.warnings.is_empty(), "{report}");
        assert_eq!(
            (report.entries, report.checkpoints, report.verified_size()),
            (7, 3, 7)
        );
        // A stranger's key verifies nothing.
        let report = sink.verify(&verifier(&[&signer()])).await.expect("verify");
        assert!(!report.is_ok());
        assert!(matches!(
            first_problem(&report).2,
            ProblemKind::CheckpointSignature(_)
        ));

        // Inclusion proof of the `reviewed` event, checked without the database.
        let proof = sink.prove_inclusion(2, None).await.expect("proof");
        assert_eq!(
            proof
                .verify(&[key.verifier()])
                .expect("valid")
                .checkpoint
                .size,
            7
        );
        assert!(proof.event.contains("\"reviewed\""));
        finish(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tables_refuse_updates_deletes_and_the_old_table_new_rows() {
    for db in databases("the_tables_refuse_updates_deletes_and_the_old_table_new_rows").await {
        let key = signer();
        lifecycle(&db.store, signed(&db.store, &key, 2)).await;
        for sql in [
            "UPDATE approval_audit_log SET event = 'denied' WHERE line_no = 2",
            "DELETE FROM approval_audit_log WHERE line_no = 7",
        ] {
            let err = db.raw.exec(sql).await.expect_err("append-only");
            assert!(err.to_string().contains("append-only"), "{err}");
        }
        if let Raw::Pg(_) = db.raw {
            assert!(db.raw.exec("TRUNCATE approval_audit_log").await.is_err());
        }
        let err = db
            .raw
            .exec(
                "INSERT INTO approval_audit (seq, at, request_id, event, prev_hash, hash, event_json)
                 VALUES (1, '2026-01-01T00:00:00Z', '00000000-0000-0000-0000-000000000000', 'x', 'a', 'b', '{}')",
            )
            .await
            .expect_err("the old table is closed");
        assert!(err.to_string().contains("closed"), "{err}");
        let report = db
            .store
            .audit_sink()
            .verify(&verifier(&[&key]))
            .await
            .expect("verify");
        assert!(report.is_ok(), "{report}");
        finish(db).await;
    }
}

/// The tampering cases, each done with SQL on a fresh database.
#[derive(Debug, Clone, Copy)]
enum Tamper {
    EditEntry,
    EditColumn,
    DeleteEntry,
    InsertEntry,
    SwapEntries,
    DeleteTail,
}

/// 14 entries with a checkpoint every 4 and a final one: lines 1-4 entries 0-3, 5 checkpoint,
/// 6-9 entries 4-7, 10 checkpoint, 11-14 entries 8-11, 15 checkpoint, 16-17 entries 12-13,
/// 18 checkpoint.
async fn fill(db: &Db, key: &Signer) {
    let sink = signed(&db.store, key, 4);
    lifecycle(&db.store, sink.clone()).await;
    lifecycle(&db.store, sink.clone()).await;
    sink.checkpoint().await.expect("final checkpoint");
    let rows = sink.rows(0, 100).await.expect("rows");
    assert_eq!(rows.len(), 18);
    assert!(rows[4].seq.is_none() && rows[17].seq.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_tampering_is_detected_and_located() {
    use Tamper::*;
    for case in [
        EditEntry,
        EditColumn,
        DeleteEntry,
        InsertEntry,
        SwapEntries,
        DeleteTail,
    ] {
        for db in databases("every_kind_of_tampering_is_detected_and_located").await {
            let key = signer();
            fill(&db, &key).await;
            let trusted = verifier(&[&key]);
            let last_checkpoint = note_of(&db.raw.line(18).await);
            db.raw.allow_tampering().await;
            let sql: Vec<String> = match case {
                // The `reviewed` event's reason, edited in place.
                EditEntry => vec![
                    "UPDATE approval_audit_log SET line = replace(line, '\"ok\"', '\"fine\"') WHERE line_no = 3"
                        .into(),
                ],
                // A query column changed: "every event about this request" would lie.
                EditColumn => {
                    vec!["UPDATE approval_audit_log SET event = 'denied' WHERE line_no = 4".into()]
                }
                DeleteEntry => vec!["DELETE FROM approval_audit_log WHERE line_no = 7".into()],
                // Make room at line 7 and put a copy of line 3 there.
                InsertEntry => vec![
                    "UPDATE approval_audit_log SET line_no = line_no + 1000 WHERE line_no >= 7".into(),
                    "UPDATE approval_audit_log SET line_no = line_no - 999 WHERE line_no > 1000".into(),
                    "INSERT INTO approval_audit_log (line_no, seq, at, request_id, event, line)
                     SELECT 7, NULL, at, request_id, event, line FROM approval_audit_log WHERE line_no = 3"
                        .into(),
                ],
                SwapEntries => vec![
                    "UPDATE approval_audit_log SET line_no = 1000 WHERE line_no = 6".into(),
                    "UPDATE approval_audit_log SET line_no = 6 WHERE line_no = 7".into(),
                    "UPDATE approval_audit_log SET line_no = 7 WHERE line_no = 1000".into(),
                ],
                DeleteTail => vec!["DELETE FROM approval_audit_log WHERE line_no > 10".into()],
            };
            for s in &sql {
                db.raw.exec(s).await.expect("tamper");
            }
            let sink = db.store.audit_sink();
            let report = sink.verify(&trusted).await.expect("verify");
            let found = match case {
                DeleteTail => {
                    // What is left is a valid, shorter log: only a checkpoint kept outside the
                    // log table shows the cut. The witness table does, by default.
                    let mut alone = trusted.clone();
                    alone.without_witness();
                    let unproven = sink.verify(&alone).await.expect("verify");
                    assert!(unproven.is_ok(), "{unproven}");
                    assert_eq!(unproven.verified_size(), 8);
                    assert_eq!(unproven.completeness, Completeness::Unproven);
                    assert_eq!(report.completeness, Completeness::Failed, "{report}");
                    let mut with_known = alone.clone();
                    with_known
                        .known_checkpoint(&last_checkpoint, "the witness copy")
                        .expect("known checkpoint");
                    let known = sink.verify(&with_known).await.expect("verify");
                    assert!(
                        matches!(
                            first_problem(&known).2,
                            ProblemKind::Truncated { size: 14, .. }
                        ),
                        "{known}"
                    );
                    first_problem(&report)
                }
                _ => first_problem(&report),
            };
            let ok = match case {
                EditEntry => matches!(found, (Some(3), Some(2), ProblemKind::EventHashMismatch)),
                EditColumn => matches!(
                    &found,
                    (Some(4), Some(3), ProblemKind::MalformedLine(why)) if why.contains("column event")
                ),
                DeleteEntry => matches!(
                    found,
                    (Some(8), Some(6), ProblemKind::SeqMismatch { expected: 5 })
                ),
                InsertEntry => matches!(
                    found,
                    (Some(7), Some(2), ProblemKind::SeqMismatch { expected: 5 })
                ),
                SwapEntries => matches!(
                    found,
                    (Some(6), Some(5), ProblemKind::SeqMismatch { expected: 4 })
                ),
                DeleteTail => matches!(
                    found,
                    (
                        None,
                        None,
                        ProblemKind::Truncated {
                            size: 14,
                            entries: 8,
                            ..
                        }
                    )
                ),
            };
            assert!(ok, "{case:?}: unexpected first problem {found:?}");

            // The CLI says the same and exits 1.
            let mut args: Vec<String> = vec!["verify".into()];
            args.extend(db.cli.iter().cloned());
            let vkeys = tempfile::NamedTempFile::new().expect("temp file");
            std::fs::write(vkeys.path(), key.verifier().to_string()).expect("write vkeys");
            args.extend(["--trust".into(), vkeys.path().display().to_string()]);
            let known = tempfile::NamedTempFile::new().expect("temp file");
            if let DeleteTail = case {
                std::fs::write(known.path(), &last_checkpoint).expect("write checkpoint");
                args.extend(["--known".into(), known.path().display().to_string()]);
            }
            let code = tokio::task::spawn_blocking(move || approvals_cli::audit::run(args))
                .await
                .expect("cli");
            assert_eq!(
                format!("{code:?}"),
                format!("{:?}", std::process::ExitCode::from(1)),
                "{case:?}"
            );

            // The writer that saw the cut rows refuses to append after them (fail closed).
            if let DeleteTail = case {
                let err = signed(&db.store, &key, 4)
                    .append(&lifecycle_event(&db.store).await)
                    .await
                    .expect_err("refused");
                assert!(err.to_string().contains("deleted from the end"), "{err}");
            }
            // A writer starting on the tampered table refuses to append (fail closed), except
            // after an edit of a query column, which it cannot see; a clean cut of the tail it
            // sees against the witness table.
            if matches!(
                case,
                EditEntry | DeleteEntry | InsertEntry | SwapEntries | DeleteTail
            ) {
                let fresh = (db.reopen)().await;
                let err = signed(&fresh, &key, 4)
                    .append(&lifecycle_event(&db.store).await)
                    .await
                    .expect_err("refused");
                assert!(err.to_string().contains("audit log line"), "{err}");
                if let DeleteTail = case {
                    assert!(err.to_string().contains("witness"), "{err}");
                }
                fresh.close().await;
            }
            finish(db).await;
        }
    }
}

/// One event from the log, to append again.
async fn lifecycle_event(store: &SqlStore) -> AuditEvent {
    let rows = store.audit_sink().rows(0, 1).await.expect("rows");
    let v: serde_json::Value = serde_json::from_str(&rows[0].line).expect("line");
    serde_json::from_value(v["event"].clone()).expect("event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_is_found_against_the_other_databases_checkpoint() {
    // Two databases share 7 entries and a checkpoint, then diverge; each is verified against
    // the other's latest checkpoint. Runs SQLite against SQLite, and SQLite against
    // PostgreSQL when the server is configured.
    let mut pairs = vec![(sqlite_db().await, sqlite_db().await)];
    if let Some(url) =
        common::postgres_url("a_fork_is_found_against_the_other_databases_checkpoint")
    {
        pairs.push((sqlite_db().await, pg_db(&url).await));
    }
    for (a, b) in pairs {
        let key = signer();
        let (events, _) = lifecycle(&a.store, signed(&a.store, &key, 0)).await;
        let (sink_a, sink_b) = (signed(&a.store, &key, 0), signed(&b.store, &key, 0));
        for e in &events {
            sink_b.append(e).await.expect("same prefix");
        }
        let prefix_a = sink_a.checkpoint().await.expect("checkpoint");
        let prefix_b = sink_b.checkpoint().await.expect("checkpoint");
        assert_eq!(
            prefix_a.line, prefix_b.line,
            "a common, identically signed prefix"
        );
        // A gets the events again; B gets them in reverse order: same size, other history.
        for e in &events {
            sink_a.append(e).await.expect("append");
        }
        for e in events.iter().rev() {
            sink_b.append(e).await.expect("append");
        }
        let head_a = note_of(&sink_a.checkpoint().await.expect("checkpoint").line);
        let head_b = note_of(&sink_b.checkpoint().await.expect("checkpoint").line);
        for (sink, other) in [(&sink_b, &head_a), (&sink_a, &head_b)] {
            let mut against = verifier(&[&key]);
            assert!(sink.verify(&against).await.expect("verify").is_ok());
            against
                .known_checkpoint(other, "the other database")
                .expect("known");
            let report = sink.verify(&against).await.expect("verify");
            assert!(
                matches!(
                    first_problem(&report),
                    (
                        _,
                        Some(13),
                        ProblemKind::KnownCheckpointMismatch { size: 14, .. }
                    )
                ),
                "{report}"
            );
            assert!(report.to_string().contains("forked history"), "{report}");
        }
        finish(a).await;
        finish(b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_on_several_pools_keep_one_verifiable_log() {
    for db in databases("concurrent_writers_on_several_pools_keep_one_verifiable_log").await {
        let key = signer();
        let (events, _) = lifecycle(&db.store, signed(&db.store, &key, 7)).await;
        let mut stores = vec![db.store.clone()];
        for _ in 0..2 {
            stores.push((db.reopen)().await);
        }
        let sinks: Vec<SqlAuditSink> = stores.iter().map(|s| signed(s, &key, 7)).collect();
        let mut tasks = Vec::new();
        for i in 0..90 {
            let sink = sinks[i % sinks.len()].clone();
            let event = events[i % events.len()].clone();
            tasks.push(tokio::spawn(async move { sink.record(&event).await }));
        }
        for t in tasks {
            t.await.expect("task").expect("append");
        }
        sinks[1].checkpoint().await.expect("final checkpoint");
        let report = sinks[2].verify(&verifier(&[&key])).await.expect("verify");
        assert!(report.is_ok() && report.warnings.is_empty(), "{report}");
        assert_eq!((report.entries, report.verified_size()), (97, 97));
        assert!(report.checkpoints >= 97 / 7, "{report}");
        // Through the CLI as well (PostgreSQL with --schema).
        let vkeys = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(vkeys.path(), key.verifier().to_string()).expect("write vkeys");
        let mut args: Vec<String> = vec!["verify".into()];
        args.extend(db.cli.iter().cloned());
        args.extend(["--trust".into(), vkeys.path().display().to_string()]);
        let code = tokio::task::spawn_blocking(move || approvals_cli::audit::run(args))
            .await
            .expect("cli");
        assert_eq!(
            format!("{code:?}"),
            format!("{:?}", std::process::ExitCode::SUCCESS)
        );
        for s in &stores[1..] {
            s.close().await;
        }
        finish(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_mid_log_verifies_with_both_keys() {
    for db in databases("a_key_rotation_mid_log_verifies_with_both_keys").await {
        let (old, new) = (signer(), signer());
        let sink = signed(&db.store, &old, 5);
        let (events, _) = lifecycle(&db.store, sink.clone()).await;
        let handover = sink.rotate_key(new.clone()).await.expect("rotate");
        assert_eq!(sink.verifier(), Some(new.verifier()));
        for e in &events {
            sink.append(e).await.expect("append");
        }
        // Another replica restarted with the new key only.
        let replica = (db.reopen)().await;
        let other = signed(&replica, &new, 5);
        for e in &events {
            other.append(e).await.expect("append");
        }
        other.checkpoint().await.expect("final checkpoint");

        let both = sink.verify(&verifier(&[&old, &new])).await.expect("verify");
        assert!(both.is_ok() && both.warnings.is_empty(), "{both}");
        assert_eq!(both.verified_size(), 21);
        let handover_line = u64::try_from(handover.line_no).expect("line");
        // Trusting the old key alone: every checkpoint after the handover is refused, and so
        // is the witness (signed by the new key).
        let old_only = sink.verify(&verifier(&[&old])).await.expect("verify");
        assert_eq!(
            old_only.problems.last().map(|p| p.kind.code()),
            Some("witness_rejected"),
            "{old_only}"
        );
        let old_only = sink
            .verify(verifier(&[&old]).without_witness())
            .await
            .expect("verify");
        assert!(!old_only.is_ok());
        assert!(
            old_only.problems.iter().all(|p| {
                matches!(p.kind, ProblemKind::CheckpointSignature(_))
                    && p.line.is_some_and(|l| l > handover_line)
            }),
            "{old_only}"
        );
        // Trusting the new key alone: the checkpoints before the handover are refused.
        let new_only = sink.verify(&verifier(&[&new])).await.expect("verify");
        assert!(!new_only.is_ok());
        assert!(
            new_only.problems.iter().all(|p| {
                matches!(p.kind, ProblemKind::CheckpointSignature(_))
                    && p.line.is_some_and(|l| l < handover_line)
            }),
            "{new_only}"
        );
        replica.close().await;
        finish(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_log_is_checkpointed_by_the_timer() {
    for db in databases("an_idle_log_is_checkpointed_by_the_timer").await {
        let key = signer();
        let config = LogConfig::new(ORIGIN)
            .checkpoint_every(0)
            .checkpoint_interval(Some(std::time::Duration::from_millis(100)));
        let sink = SqlAuditSink::signed(db.store.clone(), config, key.clone());
        lifecycle(&db.store, sink.clone()).await;
        // No more events: the timer alone must sign the tail (generous bound for a loaded
        // machine; usually a fraction of a second).
        let mut report = None;
        for _ in 0..300 {
            let r = sink.verify(&verifier(&[&key])).await.expect("verify");
            if r.verified_size() == 7 {
                report = Some(r);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let report = report.expect("the timer checkpointed the idle log within 30 s");
        assert!(report.is_ok() && report.warnings.is_empty(), "{report}");
        finish(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_from_before_the_signed_log_keeps_its_old_chain_and_anchors_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display());
    // The database as the previous version left it: migration 1 only, and three chained rows.
    let pool = sqlx::SqlitePool::connect(&url).await.expect("open");
    common::migrations_up_to("sqlite", 1)
        .run(&pool)
        .await
        .expect("migration 1");
    let scratch = SqlStore::connect("sqlite::memory:").await.expect("scratch");
    let (events, _) = lifecycle(&scratch, scratch.audit_sink()).await;
    let mut prev = approvals_store_sql::legacy::GENESIS_HASH.to_owned();
    for (seq, event) in (1..=3).zip(&events) {
        let json = approvals_store_sql::legacy::event_json(event).expect("json");
        let hash = approvals_store_sql::legacy::chain_hash(&prev, json.as_bytes()).expect("hash");
        sqlx::query(
            "INSERT INTO approval_audit (seq, at, request_id, event, prev_hash, hash, event_json)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .bind(seq)
        .bind(
            event
                .at
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        )
        .bind(event.request_id.to_string())
        .bind(event.name())
        .bind(&prev)
        .bind(&hash)
        .bind(&json)
        .execute(&pool)
        .await
        .expect("old row");
        prev = hash;
    }
    pool.close().await;

    // This version migrates it and starts the signed log.
    let store = SqlStore::connect(&url).await.expect("migrate");
    let key = signer();
    lifecycle(&store, signed(&store, &key, 0)).await;
    let sink = signed(&store, &key, 0);
    sink.checkpoint().await.expect("checkpoint");
    let report = sink.verify(&verifier(&[&key])).await.expect("verify");
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.verified_size(), 8, "the anchor and 7 events");
    let first = sink.rows(0, 1).await.expect("rows").remove(0);
    assert_eq!(first.event.as_deref(), Some("legacy_audit_chain"));
    let line: serde_json::Value = serde_json::from_str(&first.line).expect("line");
    assert_eq!(line["event"]["rows"], 3);
    assert_eq!(line["event"]["head_hash"], prev.as_str());
    // The old rows are intact and end at the head the signed log recorded.
    let head = approvals_store_sql::legacy::ChainHead { seq: 3, hash: prev };
    let old_report = approvals_store_sql::legacy::verify_against(&store, &head)
        .await
        .expect("old chain intact");
    assert_eq!(old_report.rows, 3);
    store.close().await;
}
