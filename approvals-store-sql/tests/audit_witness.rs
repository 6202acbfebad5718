//! Invariant 12 for the database log: the writer keeps its latest checkpoint in the witness
//! table `approval_audit_witness`, apart from the log table, and verification compares the
//! log with it by default. Every way of cutting the end of the log is caught, on an SQLite
//! file and on the real PostgreSQL server, through the library and the CLI.

mod common;

use std::process::ExitCode;

use approvals_audit::LogConfig;
use approvals_audit::log::{Completeness, LogVerifier, ProblemKind, VerifyReport};
use approvals_audit::note::Signer;
use approvals_core::{ActionRequest, AuditEvent, EventDetail, RequestId};
use approvals_store_sql::{SqlAuditSink, SqlStore};

const ORIGIN: &str = "audit.example/witness";

/// A database to cut: the store, raw SQL on it, and the CLI's `--db` arguments.
struct Db {
    store: SqlStore,
    url: String,
    schema: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl Db {
    async fn sqlite() -> Db {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("audit.db").display());
        let store = SqlStore::connect(&url).await.expect("sqlite");
        Db {
            store,
            url,
            schema: None,
            _dir: Some(dir),
        }
    }

    async fn postgres(url: &str) -> Db {
        let schema = common::unique_schema("wit");
        let store = common::pg_store(url, &schema).await;
        Db {
            store,
            url: url.to_owned(),
            schema: Some(schema),
            _dir: None,
        }
    }

    /// A fresh SQLite file, and a fresh PostgreSQL schema when the server is configured.
    async fn all(test: &str) -> Vec<Db> {
        let mut out = vec![Db::sqlite().await];
        if let Some(url) = common::postgres_url(test) {
            out.push(Db::postgres(&url).await);
        }
        out
    }

    async fn reopen(&self) -> SqlStore {
        match &self.schema {
            Some(schema) => common::pg_store(&self.url, schema).await,
            None => SqlStore::connect(&self.url).await.expect("reopen"),
        }
    }

    async fn exec(&self, sql: &str) -> Result<u64, sqlx::Error> {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match &self.schema {
            None => {
                let pool = sqlx::SqlitePool::connect(&self.url).await?;
                let r = sqlx::query(sql)
                    .execute(&pool)
                    .await
                    .map(|r| r.rows_affected());
                pool.close().await;
                r
            }
            Some(schema) => {
                let options: sqlx::postgres::PgConnectOptions = self.url.parse().expect("pg url");
                let pool =
                    sqlx::PgPool::connect_with(options.options([("search_path", schema.as_str())]))
                        .await?;
                let r = sqlx::query(sql)
                    .execute(&pool)
                    .await
                    .map(|r| r.rows_affected());
                pool.close().await;
                r
            }
        }
    }

    /// Drops the log table's append-only triggers, as someone with the database's owner
    /// rights can.
    async fn allow_cutting(&self) {
        let drops: &[&str] = match self.schema {
            None => &["DROP TRIGGER approval_audit_log_no_delete"],
            Some(_) => &[
                "DROP TRIGGER approval_audit_log_no_change ON approval_audit_log",
                "DROP TRIGGER approval_audit_log_no_truncate ON approval_audit_log",
            ],
        };
        for sql in drops {
            self.exec(sql).await.expect("drop trigger");
        }
    }

    fn cli_args(&self) -> Vec<String> {
        let mut out = vec!["--db".to_owned(), self.url.clone()];
        if let Some(schema) = &self.schema {
            out.extend(["--schema".to_owned(), schema.clone()]);
        }
        out
    }

    async fn finish(self) {
        self.store.close().await;
        if let Some(schema) = &self.schema {
            common::drop_schema(&self.url, schema).await;
        }
    }
}

fn key() -> Signer {
    Signer::generate(ORIGIN).expect("key")
}

fn sink(store: &SqlStore, signer: &Signer) -> SqlAuditSink {
    let config = LogConfig::new(ORIGIN)
        .checkpoint_every(4)
        .checkpoint_interval(None);
    store.signed_audit_sink(config, signer.clone())
}

fn events(n: usize) -> Vec<AuditEvent> {
    let action = ActionRequest::new("data.export", "db://prod/customers");
    (0..n)
        .map(|i| AuditEvent {
            schema: 1,
            at: chrono::DateTime::from_timestamp(1_800_000_000 + i as i64, 0).expect("time"),
            request_id: RequestId::new(),
            kind: action.kind.clone(),
            resource: action.resource.clone(),
            digest: action.digest(),
            detail: EventDetail::Expired {},
        })
        .collect()
}

/// 14 entries, a checkpoint every 4 and a final one: lines 1-4 entries 0-3, 5 checkpoint 4,
/// 6-9 entries 4-7, 10 checkpoint 8, 11-14 entries 8-11, 15 checkpoint 12, 16-17 entries
/// 12-13, 18 checkpoint 14. The witness table holds checkpoint 14.
async fn fill(db: &Db, signer: &Signer, events: &[AuditEvent]) {
    let sink = sink(&db.store, signer);
    for e in events {
        sink.append(e).await.expect("append");
    }
    sink.checkpoint().await.expect("final checkpoint");
    assert_eq!(sink.rows(0, 100).await.expect("rows").len(), 18);
}

async fn verify(db: &Db, verifier: &LogVerifier) -> VerifyReport {
    db.store
        .audit_sink()
        .verify(verifier)
        .await
        .expect("verify")
}

fn trusting(signer: &Signer) -> LogVerifier {
    LogVerifier::new([signer.verifier()])
}

fn codes(report: &VerifyReport) -> Vec<&'static str> {
    report.problems.iter().map(|p| p.kind.code()).collect()
}

fn note_of(line: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(line).expect("checkpoint line");
    v["checkpoint"].as_str().expect("a checkpoint").to_owned()
}

async fn line(db: &Db, line_no: i64) -> String {
    let rows = db
        .store
        .audit_sink()
        .rows(line_no - 1, 1)
        .await
        .expect("rows");
    rows[0].line.clone()
}

fn cli(args: Vec<String>) -> String {
    format!("{:?}", approvals_cli::audit::run(args))
}

fn code(c: u8) -> String {
    format!("{:?}", ExitCode::from(c))
}

async fn cli_verify(db: &Db, signer: &Signer, extra: &[&str]) -> String {
    let vkeys = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(vkeys.path(), signer.verifier().to_string()).expect("vkeys");
    let mut args = vec!["verify".to_owned()];
    args.extend(db.cli_args());
    args.extend(["--trust".to_owned(), vkeys.path().display().to_string()]);
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    tokio::task::spawn_blocking(move || cli(args))
        .await
        .expect("cli")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cut_of_the_end_of_a_database_log_is_found_against_its_witness_table() {
    // (rows deleted, expected problem, entries left)
    let cases: [(&str, &str, u64); 4] = [
        ("line_no > 16", "truncated", 13), // mid-batch: entry 12 stays after checkpoint 12
        ("line_no > 15", "truncated", 12), // exactly at checkpoint 12
        ("line_no > 0", "truncated", 0),   // every row
        ("line_no = 18", "known_checkpoint_absent", 14), // the last checkpoint only
    ];
    for (cut, expected, left) in cases {
        for db in Db::all("every_cut_of_the_end_of_a_database_log_is_found").await {
            let signer = key();
            fill(&db, &signer, &events(14)).await;
            let intact = verify(&db, &trusting(&signer)).await;
            assert!(intact.is_ok(), "{intact}");
            assert_eq!(
                intact.completeness,
                Completeness::Proven {
                    witness: "table approval_audit_witness".into(),
                    size: 14
                }
            );

            db.allow_cutting().await;
            db.exec(&format!("DELETE FROM approval_audit_log WHERE {cut}"))
                .await
                .expect("cut");
            let report = verify(&db, &trusting(&signer)).await;
            assert_eq!(codes(&report), [expected], "{cut}: {report}");
            assert_eq!(report.entries, left, "{cut}");
            assert_eq!(report.completeness, Completeness::Failed, "{cut}");
            if expected == "truncated" {
                assert!(
                    matches!(
                        report.problems[0].kind,
                        ProblemKind::Truncated { size: 14, .. }
                    ),
                    "{report}"
                );
            }
            // Without the witness the cut log verifies: only an explicit waiver, which says so.
            let mut alone = trusting(&signer);
            alone.without_witness();
            let waived = verify(&db, &alone).await;
            if expected == "truncated" {
                assert!(waived.is_ok(), "{cut}: {waived}");
            }
            assert_eq!(waived.completeness, Completeness::Unproven);

            // The CLI: exit 1 by default, 0 with --no-witness and a loud warning.
            assert_eq!(cli_verify(&db, &signer, &[]).await, code(1), "{cut}");
            if expected == "truncated" {
                assert_eq!(
                    cli_verify(&db, &signer, &["--no-witness"]).await,
                    code(0),
                    "{cut}"
                );
            }

            // A writer starting on the cut table refuses to append (fail closed).
            if expected == "truncated" {
                let fresh = db.reopen().await;
                let err = sink(&fresh, &signer)
                    .append(&events(1)[0])
                    .await
                    .expect_err("refused");
                assert!(err.to_string().contains("witness"), "{cut}: {err}");
                fresh.close().await;
            }
            db.finish().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_witness_table_only_moves_forward_and_cannot_be_deleted() {
    for db in Db::all("the_witness_table_only_moves_forward_and_cannot_be_deleted").await {
        let signer = key();
        fill(&db, &signer, &events(14)).await;
        let err = db
            .exec("UPDATE approval_audit_witness SET size = 3")
            .await
            .expect_err("backwards");
        assert!(err.to_string().contains("only moves forward"), "{err}");
        assert!(
            db.exec("DELETE FROM approval_audit_witness").await.is_err(),
            "the witness cannot be deleted"
        );
        db.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_newer_foreign_and_forked_witnesses() {
    for db in Db::all("older_newer_foreign_and_forked_witnesses").await {
        let signer = key();
        let events = events(14);
        fill(&db, &signer, &events).await;

        // Older than the log: fine, complete up to what it signed.
        let mut older = trusting(&signer);
        older.witness("checkpoint 12", Some(note_of(&line(&db, 15).await)));
        let report = verify(&db, &older).await;
        assert!(report.is_ok(), "{report}");
        assert!(
            matches!(report.completeness, Completeness::Proven { size: 12, .. }),
            "{report}"
        );

        // Another database holding the same history in another order: same size, other
        // root (a fork), and a longer one (this log is then truncated against it).
        let other = Db::sqlite().await;
        let reversed: Vec<AuditEvent> = events.iter().rev().cloned().collect();
        fill(&other, &signer, &reversed).await;
        let forked = note_of(&line(&other, 18).await);
        let mut against = trusting(&signer);
        against.witness("the other database", Some(forked));
        let report = verify(&db, &against).await;
        assert_eq!(codes(&report), ["known_checkpoint_mismatch"], "{report}");
        let longer = sink(&other.store, &signer);
        for e in &events {
            longer.append(e).await.expect("append");
        }
        longer.checkpoint().await.expect("checkpoint");
        let newer_note = {
            let rows = other.store.audit_sink().rows(0, 100).await.expect("rows");
            note_of(&rows.last().expect("rows").line)
        };
        let mut newer = trusting(&signer);
        newer.witness("a later witness", Some(newer_note));
        let report = verify(&db, &newer).await;
        assert!(
            matches!(
                report.problems.first().map(|p| &p.kind),
                Some(ProblemKind::Truncated {
                    size: 28,
                    entries: 14,
                    ..
                })
            ),
            "{report}"
        );

        // A witness signed by another key, or for another log, is refused.
        let stranger = key();
        let foreign = approvals_audit::Checkpoint::new(ORIGIN, 14, [0; 32])
            .sign(&[&stranger])
            .expect("sign");
        let mut with_foreign = trusting(&signer);
        with_foreign.witness("a stranger's", Some(foreign));
        assert_eq!(
            codes(&verify(&db, &with_foreign).await),
            ["witness_rejected"]
        );
        let other_log = Signer::generate("other.example/log").expect("key");
        let elsewhere = approvals_audit::Checkpoint::new("other.example/log", 3, [0; 32])
            .sign(&[&other_log])
            .expect("sign");
        let mut with_other_log = LogVerifier::new([signer.verifier(), other_log.verifier()]);
        with_other_log.witness("another log's", Some(elsewhere));
        assert_eq!(
            codes(&verify(&db, &with_other_log).await),
            ["witness_rejected"]
        );
        other.finish().await;
        db.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsigned_log_has_no_witness_and_a_migrated_one_gets_its_last_checkpoint() {
    for db in Db::all("an_unsigned_log_has_no_witness").await {
        // Entries without checkpoints prove nothing about completeness.
        let unsigned = db.store.audit_sink();
        for e in events(3) {
            unsigned.append(&e).await.expect("append");
        }
        let report = verify(&db, &trusting(&key())).await;
        assert_eq!(codes(&report), ["witness_missing"], "{report}");
        // The first signed append gives the log a witness (the empty tree at first).
        let signer = key();
        let config = LogConfig::new(ORIGIN)
            .checkpoint_every(0)
            .checkpoint_interval(None);
        db.store
            .signed_audit_sink(config, signer.clone())
            .append(&events(1)[0])
            .await
            .expect("append");
        let report = verify(&db, &trusting(&signer)).await;
        assert!(report.is_ok(), "{report}");
        assert!(
            matches!(report.completeness, Completeness::Proven { size: 0, .. }),
            "{report}"
        );
        db.finish().await;
    }

    // A database whose log was written before migration 4: the migration makes its last
    // checkpoint the witness.
    let db = Db::sqlite().await;
    let signer = key();
    fill(&db, &signer, &events(14)).await;
    db.store.close().await;
    db.exec("DROP TABLE approval_audit_witness")
        .await
        .expect("drop");
    db.exec("DELETE FROM approvals_schema_migrations WHERE version = 4")
        .await
        .expect("forget migration 4");
    let store = SqlStore::connect(&db.url).await.expect("migrate");
    let report = store
        .audit_sink()
        .verify(&trusting(&signer))
        .await
        .expect("verify");
    assert!(
        matches!(report.completeness, Completeness::Proven { size: 14, .. }),
        "{report}"
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_db_keeps_the_witness_and_report_names_the_database() {
    let db = Db::sqlite().await;
    let signer = key();
    fill(&db, &signer, &events(14)).await;
    let dir = tempfile::tempdir().expect("dir");
    let path = |n: &str| dir.path().join(n).display().to_string();
    let vkeys = path("audit.vkeys");
    std::fs::write(&vkeys, signer.verifier().to_string()).expect("vkeys");
    let (out, html) = (path("copy.jsonl"), path("report.html"));
    let url = db.url.clone();
    let (exported, verified, reported) = {
        let (out, html, vkeys) = (out.clone(), html.clone(), vkeys.clone());
        tokio::task::spawn_blocking(move || {
            (
                cli(vec![
                    "export-db".into(),
                    "--db".into(),
                    url.clone(),
                    "--out".into(),
                    out.clone(),
                ]),
                cli(vec!["verify".into(), out, "--trust".into(), vkeys.clone()]),
                cli(vec![
                    "report".into(),
                    "--db".into(),
                    url,
                    "--trust".into(),
                    vkeys,
                    "--out".into(),
                    html,
                ]),
            )
        })
        .await
        .expect("cli")
    };
    assert_eq!(exported, code(0));
    assert!(std::path::Path::new(&format!("{out}.witness")).exists());
    assert_eq!(verified, code(0), "the copy verifies against its witness");
    assert_eq!(reported, code(0));
    let html = std::fs::read_to_string(&html).expect("html");
    assert!(
        html.contains("table approval_audit_witness"),
        "the witness used"
    );
    assert!(html.contains("approvals-audit verify --db sqlite://"));
    db.finish().await;
}
