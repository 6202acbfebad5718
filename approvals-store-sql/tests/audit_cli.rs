//! A signed audit log written to an SQLite file by one process and checked by another with the
//! `approvals audit` command line: verify, prove, export to a log file, and a tampered row.
//!
//! The writer is this test binary re-run with `APPROVALS_AUDIT_CHILD` set: the `child_writer`
//! entry point then records one approval lifecycle with a key read from a file, and exits.

use std::process::ExitCode;
use std::time::Duration;

use approvals_core::{GuardError, Review, Submission};
use approvals_store_sql::SqlStore;
use approvals_store_sql::audit::{LogConfig, Signer};
use approvals_testkit::fixtures::{self, export_request, reviewer};

const CHILD: &str = "APPROVALS_AUDIT_CHILD";
const ORIGIN: &str = "audit.example/cli";

/// Entry point of the writer process; a no-op in a normal test run.
#[test]
fn child_writer() {
    let (Ok(url), Ok(key)) = (std::env::var(CHILD), std::env::var("CHILD_KEY_FILE")) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let store = SqlStore::connect(&url).await.expect("open");
        let signer = Signer::from_file(&key).expect("signer key file");
        let sink = store.signed_audit_sink(LogConfig::new(ORIGIN).checkpoint_every(3), signer);
        let gate = approvals_core::Gate::builder()
            .policy(approvals_core::StaticPolicy::require(
                approvals_core::Requirement::groups(["data-owners"]),
            ))
            .store(store.clone())
            .audit(sink.clone())
            .clock(fixtures::clock())
            .initiator(approvals_testkit::fixtures::billing_agent())
            .build()
            .expect("gate");
        let action = export_request();
        let Submission::Pending(id) = gate.submit(&action).await.expect("submit") else {
            panic!("approval required");
        };
        gate.decide(id, Review::approve(reviewer("sam@example.com")))
            .await
            .expect("approve");
        let grant = gate.wait(id).await.expect("grant");
        gate.execute(grant, &action, || async { Ok::<_, GuardError>(()) })
            .await
            .expect("execute");
        sink.checkpoint().await.expect("final checkpoint");
        store.close().await;
    });
    std::process::exit(0);
}

fn cli(args: &[&str]) -> String {
    let args = args.iter().map(|s| (*s).to_owned()).collect();
    format!("{:?}", approvals_cli::audit::run(args))
}

fn code(c: u8) -> String {
    format!("{:?}", ExitCode::from(c))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_written_by_one_process_is_verified_proven_and_exported_by_the_cli() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = |name: &str| dir.path().join(name).display().to_string();
    let (db, skey, vkeys, exported) = (
        format!("sqlite://{}", path("approvals.db")),
        path("audit.skey"),
        path("audit.vkeys"),
        path("exported.jsonl"),
    );
    let signer = Signer::generate(ORIGIN).expect("key");
    std::fs::write(&skey, signer.to_skey()).expect("write skey");
    std::fs::write(&vkeys, format!("{}\n", signer.verifier())).expect("write vkeys");

    let exe = std::env::current_exe().expect("test binary");
    let mut child = tokio::process::Command::new(exe)
        .args(["--exact", "child_writer", "--nocapture"])
        .env(CHILD, &db)
        .env("CHILD_KEY_FILE", &skey)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the writer");
    let status = tokio::time::timeout(Duration::from_secs(120), child.wait())
        .await
        .expect("the writer finishes")
        .expect("wait");
    assert!(status.success(), "writer failed: {status}");

    let db2 = db.clone();
    let (vkeys2, exported2) = (vkeys.clone(), exported.clone());
    let (verify, prove, export, verify_file, bad_key) = tokio::task::spawn_blocking(move || {
        (
            cli(&["verify", "--db", &db2, "--trust", &vkeys2]),
            cli(&["prove", "--db", &db2, "2"]),
            cli(&["export-db", "--db", &db2, "--out", &exported2]),
            cli(&["verify", &exported2, "--trust", &vkeys2]),
            cli(&[
                "verify",
                "--db",
                &db2,
                "--trust-env",
                "NO_SUCH_VARIABLE_FOR_KEYS",
            ]),
        )
    })
    .await
    .expect("cli");
    assert_eq!(verify, code(0), "verify --db");
    assert_eq!(prove, code(0), "prove --db");
    assert_eq!(export, code(0), "export-db");
    assert_eq!(
        verify_file,
        code(0),
        "the exported file verifies as a log file"
    );
    assert_eq!(bad_key, code(2), "a missing key is a usage error");

    // report and export read the database directly, with the same result as on the copy.
    let (report_html, jsonl_db, jsonl_file) = (
        path("report.html"),
        path("events-db.jsonl"),
        path("events-file.jsonl"),
    );
    let db2 = db.clone();
    let (vkeys2, exported2) = (vkeys.clone(), exported.clone());
    let (report_html2, jsonl_db2, jsonl_file2) =
        (report_html.clone(), jsonl_db.clone(), jsonl_file.clone());
    let (report, export_db, export_file, follow_db) = tokio::task::spawn_blocking(move || {
        (
            cli(&[
                "report",
                "--db",
                &db2,
                "--trust",
                &vkeys2,
                "--out",
                &report_html2,
            ]),
            cli(&[
                "export", "--db", &db2, "--trust", &vkeys2, "--format", "jsonl", "--out",
                &jsonl_db2,
            ]),
            cli(&[
                "export",
                &exported2,
                "--trust",
                &vkeys2,
                "--format",
                "jsonl",
                "--out",
                &jsonl_file2,
            ]),
            cli(&[
                "export", "--db", &db2, "--trust", &vkeys2, "--format", "jsonl", "--follow",
            ]),
        )
    })
    .await
    .expect("cli");
    assert_eq!(report, code(0), "report --db");
    assert_eq!(export_db, code(0), "export --db");
    assert_eq!(export_file, code(0), "export of the copied file");
    assert_eq!(follow_db, code(2), "--follow needs a file");
    let html = std::fs::read_to_string(&report_html).expect("report");
    assert!(
        html.contains("sam@example.com") && html.contains("approvals-audit verify --db sqlite://"),
        "the report covers the database's log and says how to verify it"
    );
    let from_db = std::fs::read_to_string(&jsonl_db).expect("export --db");
    assert_eq!(from_db.lines().count(), 7, "{from_db}");
    assert_eq!(
        from_db,
        std::fs::read_to_string(&jsonl_file).expect("export of the file"),
        "the database and its exported copy give the same SIEM lines"
    );

    let text = std::fs::read_to_string(&exported).expect("exported log");
    // 7 events, checkpoints after 3 and 6 and the final one.
    assert_eq!(text.lines().count(), 10, "{text}");

    // The same log read through the library gives the proof the CLI printed.
    let store = SqlStore::connect(&db).await.expect("open");
    let proof = store
        .audit_sink()
        .prove_inclusion(2, None)
        .await
        .expect("proof");
    assert_eq!(
        proof
            .verify(&[signer.verifier()])
            .expect("valid")
            .checkpoint
            .size,
        7
    );

    // An edited row fails verification (exit 1); other databases are unaffected.
    let raw = sqlx::SqlitePool::connect(&db).await.expect("raw");
    sqlx::query("DROP TRIGGER approval_audit_log_no_update")
        .execute(&raw)
        .await
        .expect("drop trigger");
    sqlx::query(
        "UPDATE approval_audit_log SET line = replace(line, 'sam@example.com', 'eve@example.com')
          WHERE event = 'reviewed'",
    )
    .execute(&raw)
    .await
    .expect("tamper");
    raw.close().await;
    store.close().await;
    let tampered_jsonl = path("tampered.jsonl");
    let tampered_out = tampered_jsonl.clone();
    let (tampered, tampered_report, tampered_export) = tokio::task::spawn_blocking(move || {
        (
            cli(&["verify", "--db", &db, "--trust", &vkeys, "--format", "json"]),
            cli(&[
                "report",
                "--db",
                &db,
                "--trust",
                &vkeys,
                "--out",
                &report_html,
            ]),
            cli(&[
                "export",
                "--db",
                &db,
                "--trust",
                &vkeys,
                "--format",
                "jsonl",
                "--out",
                &tampered_out,
            ]),
        )
    })
    .await
    .expect("cli");
    assert_eq!(tampered, code(1), "a tampered database fails verification");
    assert_eq!(tampered_report, code(1), "report --db says the log failed");
    assert_eq!(
        tampered_export,
        code(1),
        "export --db refuses a tampered log"
    );
    assert_eq!(
        std::fs::read_to_string(&tampered_jsonl).unwrap_or_default(),
        "",
        "nothing was exported from the tampered log"
    );
    let leftovers: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .expect("temp dir")
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("approvals-audit-{}-", std::process::id()))
        })
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary copies removed: {leftovers:?}"
    );
}
