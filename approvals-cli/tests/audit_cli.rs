//! The `approvals-audit` command, run as a separate process over logs written here.

// The audit crate's own test helpers (log writing, keys, the scenario), shared rather than copied.
#[path = "../../approvals-audit/tests/common/mod.rs"]
mod common;

use std::process::{Command, Output};

use approvals_audit::log::LogWriter;
use approvals_audit::note::Signer;
use common::*;

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_approvals-audit"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn keygen_verify_prove_and_check_from_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let (skey, vkeys, log, proof) = (
        p("log.skey"),
        p("log.vkeys"),
        p("audit.jsonl"),
        p("proof.json"),
    );

    let out = cli(&["keygen", ORIGIN, &skey]);
    assert!(out.status.success(), "{out:?}");
    std::fs::write(&vkeys, stdout(&out)).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&skey).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert_eq!(
        cli(&["keygen", ORIGIN, &skey]).status.code(),
        Some(2),
        "never overwrites"
    );

    let signer = Signer::from_file(&skey).unwrap();
    let mut writer = LogWriter::create(&log, config(), signer).unwrap();
    for i in 0..12 {
        writer.append(&event(i)).unwrap();
    }
    writer.close().unwrap();

    let out = cli(&["verify", &log, "--trust", &vkeys]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout(&out).starts_with("OK: 12 entries"),
        "{}",
        stdout(&out)
    );

    let out = cli(&["prove", &log, "4", "--size", "10"]);
    assert!(out.status.success(), "{out:?}");
    std::fs::write(&proof, stdout(&out)).unwrap();
    let out = cli(&["check-proof", &proof, "--trust", &vkeys]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout(&out).contains("entry 4 is in log"),
        "{}",
        stdout(&out)
    );

    let out = cli(&["consistency", &log, "10", "12"]);
    assert!(out.status.success(), "{out:?}");

    // Tampering shows up as exit status 1 and a located problem.
    let mut lines = read_lines(std::path::Path::new(&log));
    let i = entry_index(&lines, 2);
    lines[i] = lines[i].replace("alice", "mallory");
    write_lines(std::path::Path::new(&log), &lines);
    let out = cli(&["verify", &log, "--trust", &vkeys]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stdout(&out).contains("line 3 (seq 2): the event does not match"),
        "{}",
        stdout(&out)
    );

    let out = cli(&["verify", &log, "--trust", &vkeys, "--format", "json"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["problems"][0]["code"], "event_hash_mismatch");
    assert_eq!(report["problems"][0]["line"], 3);
    assert_eq!(report["problems"][0]["seq"], 2);

    let edited = std::fs::read_to_string(&proof)
        .unwrap()
        .replace("req-4", "req-5");
    std::fs::write(&proof, edited).unwrap();
    assert_eq!(
        cli(&["check-proof", &proof, "--trust", &vkeys])
            .status
            .code(),
        Some(1)
    );
}

#[test]
fn usage_errors_exit_with_status_2() {
    assert_eq!(cli(&[]).status.code(), Some(2));
    assert_eq!(cli(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(
        cli(&["verify", "/nonexistent"]).status.code(),
        Some(2),
        "no trusted key"
    );
    assert_eq!(cli(&["prove", "/nonexistent", "x"]).status.code(), Some(2));
    assert!(cli(&["help"]).status.success());
}

fn write_vkeys(dir: &std::path::Path) -> String {
    let vkeys = dir.join("log.vkeys");
    std::fs::write(&vkeys, format!("{}\n", signer(1).verifier())).unwrap();
    vkeys.to_str().unwrap().to_owned()
}

#[tokio::test]
async fn report_and_export_commands_verify_first() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    scenario::run(&log, signer(1)).await.close().await.unwrap();
    let log = log.to_str().unwrap().to_owned();
    let vkeys = write_vkeys(dir.path());
    let html = dir.path().join("r.html").to_str().unwrap().to_owned();
    let csv = dir.path().join("r.csv").to_str().unwrap().to_owned();

    let out = cli(&[
        "report",
        &log,
        "--trust",
        &vkeys,
        "--from",
        "2026-11-02",
        "--to",
        "2026-11-02",
        "--out",
        &html,
        "--csv",
        &csv,
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains("8 requests"), "{}", stdout(&out));
    assert!(
        std::fs::read_to_string(&html)
            .unwrap()
            .contains("Log integrity verified")
    );
    let csv_text = std::fs::read_to_string(&csv).unwrap();
    assert!(csv_text.starts_with("request_id,kind,resource,digest,requester,"));
    assert!(csv_text.contains("\"iam.role.grant\""));
    let out = cli(&[
        "report",
        &log,
        "--trust",
        &vkeys,
        "--from",
        "2026-11-03",
        "--out",
        &html,
    ]);
    assert!(stdout(&out).contains(" 0 requests"), "{}", stdout(&out));
    assert_eq!(
        cli(&["report", &log, "--trust", &vkeys]).status.code(),
        Some(2),
        "no --out"
    );
    assert_eq!(
        cli(&[
            "report", &log, "--trust", &vkeys, "--from", "soon", "--out", &html
        ])
        .status
        .code(),
        Some(2)
    );

    for (format, first) in [
        ("jsonl", "{\"action\""),
        ("ocsf", "{\"activity_id\""),
        ("cef", "CEF:0|"),
    ] {
        let out = cli(&["export", &log, "--trust", &vkeys, "--format", format]);
        assert!(out.status.success(), "{out:?}");
        let text = stdout(&out);
        assert_eq!(text.lines().count(), 38, "{format}");
        assert!(text.starts_with(first), "{format}: {text}");
    }
    assert_eq!(
        cli(&["export", &log, "--trust", &vkeys, "--format", "xml"])
            .status
            .code(),
        Some(2)
    );

    // Tampering: report exits 1 with a red report; export writes nothing.
    let mut lines = read_lines(std::path::Path::new(&log));
    let i = lines
        .iter()
        .position(|l| l.contains("\"event\":\"approved\""))
        .unwrap();
    lines[i] = lines[i].replace("sam@example.com", "mallory@example.com");
    write_lines(std::path::Path::new(&log), &lines);
    let out = cli(&["report", &log, "--trust", &vkeys, "--out", &html]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        std::fs::read_to_string(&html)
            .unwrap()
            .contains("Log integrity FAILED")
    );
    let out = cli(&["export", &log, "--trust", &vkeys, "--format", "cef"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("event_hash_mismatch")
            || String::from_utf8_lossy(&out.stderr).contains("event does not match")
    );
}

#[test]
fn export_follow_streams_from_another_process() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let vkeys = write_vkeys(dir.path());
    let mut writer = LogWriter::create(&log, config(), signer(1)).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_approvals-audit"))
        .args([
            "export",
            log.to_str().unwrap(),
            "--trust",
            &vkeys,
            "--format",
            "ocsf",
        ])
        .args(["--follow", "--poll-ms", "10"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    for i in 0..10 {
        writer.append(&event(i)).unwrap(); // the 10th append writes a checkpoint
    }
    let mut got = Vec::new();
    while got.len() < 10 {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the follower printed nothing");
        got.push(serde_json::from_str::<serde_json::Value>(&line).unwrap());
    }
    assert_eq!(got[9]["metadata"]["sequence"], 9);
    assert_eq!(got[0]["class_uid"], 6003);
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn grant_verify_checks_a_token_with_the_public_key() {
    use approvals_audit::grant::{GrantClaims, sign_claims};
    let dir = tempfile::tempdir().unwrap();
    let vkeys = write_vkeys(dir.path());
    let digest = approvals_core::ActionRequest::new("db.migrate", "pg://prod").digest();
    let now = chrono::Utc::now();
    let claims = GrantClaims::builder(
        approvals_core::RequestId::new(),
        digest,
        now,
        now + chrono::TimeDelta::minutes(5),
    )
    .approvers(["sam@example.com"])
    .audience("deployer");
    let token = sign_claims(claims, &signer(1)).unwrap();
    let d = digest.to_string();

    let out = cli(&[
        "grant",
        "verify",
        &token,
        "--trust",
        &vkeys,
        "--digest",
        &d,
        "--audience",
        "deployer",
    ]);
    assert!(out.status.success(), "{out:?}");
    let claims: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(claims["approvers"][0], "sam@example.com");

    let mut child = Command::new(env!("CARGO_BIN_EXE_approvals-audit"))
        .args(["grant", "verify", "-", "--trust", &vkeys, "--digest", &d])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        format!("{token}\n").as_bytes(),
    )
    .unwrap();
    assert!(child.wait_with_output().unwrap().status.success());

    let other = approvals_core::ActionRequest::new("db.migrate", "pg://staging")
        .digest()
        .to_string();
    let out = cli(&[
        "grant", "verify", &token, "--trust", &vkeys, "--digest", &other,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("grant token refused"));
    let later = (now + chrono::TimeDelta::hours(1)).to_rfc3339();
    let out = cli(&[
        "grant", "verify", &token, "--trust", &vkeys, "--digest", &d, "--now", &later,
    ]);
    assert_eq!(out.status.code(), Some(1), "expired");
    let out = cli(&[
        "grant",
        "verify",
        &token,
        "--trust",
        &vkeys,
        "--digest",
        &d,
        "--audience",
        "billing",
    ]);
    assert_eq!(out.status.code(), Some(1), "wrong audience");
    assert_eq!(
        cli(&["grant", "verify", &token, "--trust", &vkeys])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(cli(&["grant", "sign"]).status.code(), Some(2));
}

#[test]
fn the_cli_runs_as_a_library_function() {
    use approvals_cli::audit::run_named;
    use std::process::ExitCode;
    let code = |args: &[&str]| {
        format!(
            "{:?}",
            run_named(
                "approvals audit",
                args.iter().map(|s| s.to_string()).collect()
            )
        )
    };
    assert_eq!(code(&["help"]), format!("{:?}", ExitCode::SUCCESS));
    assert_eq!(code(&["frobnicate"]), format!("{:?}", ExitCode::from(2)));
    let dir = tempfile::tempdir().unwrap();
    let log = write_log(dir.path(), 12);
    let vkeys = write_vkeys(dir.path());
    assert_eq!(
        code(&["verify", log.to_str().unwrap(), "--trust", &vkeys]),
        format!("{:?}", ExitCode::SUCCESS)
    );
}
