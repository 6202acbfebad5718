//! The writer: key rotation, reopening, crash recovery, sync policies, other processes.

mod common;

use std::process::Command;
use std::time::Duration;

use approvals_audit::log::{
    LogConfig, LogError, LogVerifier, LogWriter, ProblemKind, SyncPolicy, Warning, verify_file,
};
use approvals_audit::note::{NoteError, Signer, Verifier};
use common::*;
use ed25519_dalek::SigningKey;

fn trusted() -> Vec<Verifier> {
    vec![signer(1).verifier()]
}

#[test]
fn rotated_keys_mid_log_verify_when_both_are_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let old = signer(1);
    let new = Signer::new("audit.example/test-2026", SigningKey::from_bytes(&[2; 32])).unwrap();
    let mut log = LogWriter::create(&path, config().checkpoint_every(7), old.clone()).unwrap();
    for i in 0..10 {
        log.append(&event(i)).unwrap();
    }
    let handover = log.rotate_key(new.clone()).unwrap();
    assert_eq!(handover.size, 10);
    assert_eq!(log.verifier(), Some(new.verifier()));
    for i in 10..20 {
        log.append(&event(i)).unwrap();
    }
    log.close().unwrap();
    // Checkpoints: 7 (old), 10 (old + new), 17 (new), 20 (new).

    let both = verify_file(&path, &[old.verifier(), new.verifier()]).unwrap();
    assert!(both.is_ok() && both.warnings.is_empty(), "{both}");
    assert_eq!(both.verified_size(), 20);
    let last = both.last_verified.unwrap();
    assert_eq!(
        last.signed_by,
        vec![format!("audit.example/test-2026+{:08x}", new.key_id())]
    );

    // Trusting only the old key: everything after the rotation is unsigned for it, and so is
    // the witness.
    let only_old = verify_file(&path, &[old.verifier()]).unwrap();
    assert_eq!(
        only_old.problems.last().map(|p| p.kind.code()),
        Some("witness_rejected"),
        "{only_old}"
    );
    let only_old = LogVerifier::new([old.verifier()])
        .without_witness()
        .verify_file(&path)
        .unwrap();
    assert_eq!(only_old.verified_size(), 10, "{only_old}");
    assert_eq!(only_old.problems.len(), 2, "{only_old}");
    assert!(only_old.problems.iter().all(|p| matches!(
        p.kind,
        ProblemKind::CheckpointSignature(NoteError::NoTrustedSignature { .. })
    )));

    // Trusting only the new key: the first checkpoint is not vouched for, the rest are.
    let only_new = verify_file(&path, &[new.verifier()]).unwrap();
    assert_eq!(only_new.problems.len(), 1, "{only_new}");
    assert_eq!(only_new.problems[0].line, Some(8));
    assert_eq!(only_new.verified_size(), 20);
}

#[test]
fn reopened_log_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 15);
    let mut log = LogWriter::open(&path, config(), signer(1)).unwrap();
    assert_eq!(log.size(), 15);
    assert_eq!(log.last_checkpoint().map(|c| c.size), Some(15));
    for i in 15..23 {
        assert_eq!(log.append(&event(i)).unwrap(), i);
    }
    let root = log.root();
    log.close().unwrap();
    let report = verify_file(&path, &trusted()).unwrap();
    assert!(report.is_ok() && report.warnings.is_empty(), "{report}");
    assert_eq!((report.entries, report.root), (23, root));
}

#[test]
fn reopening_cuts_an_interrupted_last_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 12);
    let mut text = std::fs::read(&path).unwrap();
    text.extend_from_slice(b"{\"seq\":12,\"prev\":\"00");
    std::fs::write(&path, &text).unwrap();

    let mut log = LogWriter::open(&path, config(), signer(1)).unwrap();
    log.append(&event(12)).unwrap();
    log.close().unwrap();
    let report = verify_file(&path, &trusted()).unwrap();
    assert!(report.is_ok() && report.warnings.is_empty(), "{report}");
    assert_eq!(report.entries, 13);
}

#[test]
fn reopening_refuses_a_tampered_log_or_another_origin() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 12);
    assert!(matches!(
        LogWriter::open(&path, LogConfig::new("other.example/log"), signer(1)),
        Err(LogError::OriginMismatch { .. })
    ));
    assert!(matches!(
        LogWriter::create(&path, config(), signer(1)),
        Err(LogError::Io { .. })
    ));

    let mut lines = read_lines(&path);
    let i = entry_index(&lines, 3);
    lines[i] = lines[i].replace("alice", "mallory");
    write_lines(&path, &lines);
    let err = LogWriter::open(&path, config(), signer(1)).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, LogError::Corrupt { .. }), "{message}");
    assert!(message.contains("line 4 (seq 3)"), "{message}");
}

#[test]
fn sync_policies_decide_when_entries_reach_the_file() {
    let dir = tempfile::tempdir().unwrap();
    for (policy, visible_before_close) in [
        (SyncPolicy::Always, 5),
        (SyncPolicy::Write, 5),
        (SyncPolicy::Batch(2), 4),
        (SyncPolicy::Batch(3), 3),
        (SyncPolicy::Buffered, 0),
    ] {
        let path = dir.path().join(format!("{policy:?}.jsonl"));
        let config = config().checkpoint_every(0).sync(policy);
        let mut log = LogWriter::create(&path, config, signer(1)).unwrap();
        for i in 0..5 {
            log.append(&event(i)).unwrap();
        }
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert_eq!(lines, visible_before_close, "{policy:?}");
        log.sync().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 5);
        log.close().unwrap();
        let report = verify_file(&path, &trusted()).unwrap();
        assert!(
            report.is_ok() && report.warnings.is_empty(),
            "{policy:?}: {report}"
        );
    }
}

#[test]
fn checkpoints_follow_the_interval_and_the_latest_file_tracks_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let latest = dir.path().join("latest");
    let config = config()
        .checkpoint_every(0)
        .checkpoint_interval(Some(Duration::ZERO))
        .latest_checkpoint_file(&latest);
    let mut log = LogWriter::create(&path, config, signer(1)).unwrap();
    for i in 0..4 {
        log.append(&event(i)).unwrap();
    }
    log.close().unwrap();
    let report = verify_file(&path, &trusted()).unwrap();
    assert_eq!(report.checkpoints, 4, "{report}");
    let note = std::fs::read_to_string(&latest).unwrap();
    assert_eq!(note, report.last_verified.unwrap().note);
}

#[test]
fn timer_checkpoints_only_cover_new_entries() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let config = config()
        .checkpoint_every(100)
        .checkpoint_interval(Some(Duration::from_secs(3600)));
    let mut log = LogWriter::create(&path, config, signer(1)).unwrap();
    log.append(&event(0)).unwrap();
    assert_eq!(
        log.checkpoint_if_due().unwrap(),
        None,
        "interval not reached"
    );
    log.checkpoint().unwrap();
    assert_eq!(
        log.checkpoint_if_due().unwrap(),
        None,
        "nothing new to cover"
    );
    log.close().unwrap();
    assert_eq!(verify_file(&path, &trusted()).unwrap().checkpoints, 1);
}

#[test]
fn oversized_events_are_refused_without_breaking_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut log = LogWriter::create(&path, config(), signer(1)).unwrap();
    let huge = serde_json::json!({"blob": "x".repeat(approvals_audit::log::MAX_EVENT_BYTES)});
    assert!(matches!(log.append(&huge), Err(LogError::Invalid(_))));
    assert_eq!(
        log.append(&event(0)).unwrap(),
        0,
        "the writer is still usable"
    );
    log.close().unwrap();
    assert!(verify_file(&path, &trusted()).unwrap().is_ok());
}

#[test]
fn dropping_the_writer_still_writes_the_final_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut log = LogWriter::create(&path, config(), signer(1)).unwrap();
    for i in 0..3 {
        log.append(&event(i)).unwrap();
    }
    drop(log);
    let report = verify_file(&path, &trusted()).unwrap();
    assert!(report.is_ok() && report.warnings.is_empty(), "{report}");
    assert_eq!(report.verified_size(), 3);
}

#[test]
fn empty_log_closes_with_a_checkpoint_of_size_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let cp = LogWriter::create(&path, config(), signer(1))
        .unwrap()
        .close()
        .unwrap();
    assert_eq!(cp.size, 0);
    let report = verify_file(&path, &trusted()).unwrap();
    assert!(report.is_ok() && report.warnings.is_empty(), "{report}");
}

const CHILD_LOG: &str = "APPROVALS_AUDIT_TEST_CHILD_LOG";
const CHILD_KEY: &str = "APPROVALS_AUDIT_TEST_CHILD_KEY";
const CHILD_CRASH: &str = "APPROVALS_AUDIT_TEST_CHILD_CRASH";

/// Not a test on its own: the body runs only when this binary is spawned by
/// `log_written_by_another_process_verifies`, with the log path and key in the environment.
#[test]
fn child_process_writer() {
    let Ok(path) = std::env::var(CHILD_LOG) else {
        return;
    };
    let signer = Signer::from_env(CHILD_KEY).unwrap();
    let mut log = LogWriter::open(&path, config(), signer).unwrap();
    let start = log.size();
    for i in start..start + 15 {
        log.append(&event(i)).unwrap();
    }
    if std::env::var_os(CHILD_CRASH).is_some() {
        // Die without closing: no final checkpoint, destructors skipped.
        std::process::exit(0);
    }
    log.close().unwrap();
}

fn run_child(path: &std::path::Path, crash: bool) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child_process_writer", "--test-threads=1"])
        .env(CHILD_LOG, path)
        .env(CHILD_KEY, signer(7).to_skey());
    if crash {
        cmd.env(CHILD_CRASH, "1");
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "child failed: {out:?}");
}

#[test]
fn log_written_by_another_process_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let vkeys = dir.path().join("trusted.vkeys");
    std::fs::write(&vkeys, format!("# audit keys\n{}\n", signer(7).verifier())).unwrap();
    let trusted = Verifier::from_file(&vkeys).unwrap();

    // A process that crashes mid-log leaves a hash-chained but unsigned tail.
    run_child(&path, true);
    let report = verify_file(&path, &trusted).unwrap();
    assert!(report.is_ok(), "{report}");
    assert_eq!(
        report.warnings,
        vec![Warning::UnverifiedTail {
            first_line: 12,
            first_seq: 10,
            entries: 5
        }]
    );

    // The next process picks the log up and closes it properly.
    run_child(&path, false);
    let report = verify_file(&path, &trusted).unwrap();
    assert!(report.is_ok() && report.warnings.is_empty(), "{report}");
    assert_eq!(report.entries, 30);

    // And a verifier trusting another key rejects it.
    let report = verify_file(&path, &[signer(1).verifier()]).unwrap();
    assert!(!report.is_ok());
}
