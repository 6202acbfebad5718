//! Invariant 12: evidence is complete or says it is not. A log file is compared with its
//! witness (the latest checkpoint kept outside it) by default, and every way of cutting or
//! replacing its end is caught: here on files, through the library (the CLI and a witness URL
//! are tested in approvals-cli/tests/audit_witness_cli.rs). The database log has the same
//! tests in approvals-store-sql.

mod common;

use std::path::{Path, PathBuf};

use approvals_audit::log::{
    Completeness, LogVerifier, LogWriter, ProblemKind, VerifyReport, WitnessFile,
};
use approvals_audit::note::Signer;
use approvals_audit::witness::witness_path;
use common::*;
use ed25519_dalek::SigningKey;
use serde_json::Value;

/// 25 entries: lines 1-10 entries 0-9, 11 checkpoint 10, 12-21 entries 10-19, 22 checkpoint
/// 20, 23-27 entries 20-24, 28 checkpoint 25. The witness beside it holds checkpoint 25.
fn log25(dir: &Path) -> PathBuf {
    let path = write_log(dir, 25);
    assert_eq!(read_lines(&path).len(), 28);
    path
}

fn verify(path: &Path) -> VerifyReport {
    LogVerifier::new([signer(1).verifier()])
        .verify_file(path)
        .unwrap()
}

fn codes(report: &VerifyReport) -> Vec<&'static str> {
    report.problems.iter().map(|p| p.kind.code()).collect()
}

/// The checkpoint note of the checkpoint line of this size.
fn note_at(lines: &[String], size: u64) -> String {
    let v: Value = serde_json::from_str(&lines[checkpoint_index(lines, size)]).unwrap();
    v["checkpoint"].as_str().unwrap().to_owned()
}

#[test]
fn an_intact_log_is_complete_against_its_witness() {
    let dir = tempfile::tempdir().unwrap();
    let path = log25(dir.path());
    let witness = std::fs::read_to_string(witness_path(&path)).unwrap();
    assert_eq!(
        witness,
        note_at(&read_lines(&path), 25),
        "the last checkpoint"
    );
    let report = verify(&path);
    assert!(report.is_ok(), "{report}");
    assert_eq!(
        report.completeness,
        Completeness::Proven {
            witness: format!("file {}", witness_path(&path).display()),
            size: 25
        }
    );
}

#[test]
fn a_tail_cut_in_the_middle_of_a_batch_is_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let path = log25(dir.path());
    let lines = read_lines(&path);
    // Entries 20-22 stay after checkpoint 20; entries 23, 24 and checkpoint 25 are gone.
    write_lines(&path, &lines[..entry_index(&lines, 22) + 1]);
    let report = verify(&path);
    assert_eq!(codes(&report), ["truncated"], "{report}");
    assert!(matches!(
        report.problems[0].kind,
        ProblemKind::Truncated {
            size: 25,
            entries: 23,
            ..
        }
    ));
    assert_eq!(report.completeness, Completeness::Failed);
}

#[test]
fn a_cut_exactly_at_a_checkpoint_is_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let path = log25(dir.path());
    let lines = read_lines(&path);
    // A clean, fully signed log of 20 entries: nothing in it shows the cut.
    write_lines(&path, &lines[..checkpoint_index(&lines, 20) + 1]);
    let alone = LogVerifier::new([signer(1).verifier()])
        .without_witness()
        .verify_file(&path)
        .unwrap();
    assert!(alone.is_ok() && alone.warnings.is_empty(), "{alone}");
    let report = verify(&path);
    assert_eq!(codes(&report), ["truncated"], "{report}");
    assert!(matches!(
        report.problems[0].kind,
        ProblemKind::Truncated {
            size: 25,
            entries: 20,
            ..
        }
    ));
}

#[test]
fn a_log_cut_to_zero_events_is_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let path = log25(dir.path());
    std::fs::write(&path, b"").unwrap();
    let report = verify(&path);
    assert_eq!(codes(&report), ["truncated"], "{report}");
    assert!(matches!(
        report.problems[0].kind,
        ProblemKind::Truncated {
            size: 25,
            entries: 0,
            ..
        }
    ));
    // Removing the file and starting a new log at its path is refused too.
    std::fs::remove_file(&path).unwrap();
    let err = LogWriter::create(&path, config(), signer(1)).unwrap_err();
    assert!(err.to_string().contains("25 entries"), "{err}");
    assert!(!path.exists(), "the refused log is not left behind");
}

#[test]
fn a_removed_last_checkpoint_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = log25(dir.path());
    let mut lines = read_lines(&path);
    lines.pop();
    write_lines(&path, &lines);
    let report = verify(&path);
    assert_eq!(codes(&report), ["known_checkpoint_absent"], "{report}");
    assert_eq!(report.completeness, Completeness::Failed);
}

#[test]
fn a_witness_older_than_the_log_is_fine() {
    let dir = tempfile::tempdir().unwrap();
    let path = log25(dir.path());
    let lines = read_lines(&path);
    std::fs::write(witness_path(&path), note_at(&lines, 20)).unwrap();
    let report = verify(&path);
    assert!(report.is_ok(), "{report}");
    assert!(
        matches!(report.completeness, Completeness::Proven { size: 20, .. }),
        "{report}"
    );
}

#[test]
fn a_witness_newer_than_the_log_is_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let path = log25(dir.path());
    // A copy of the log handed over before its last 5 entries were written.
    let lines = read_lines(&path);
    let copy = dir.path().join("copy.jsonl");
    write_lines(&copy, &lines[..checkpoint_index(&lines, 20) + 1]);
    let report = LogVerifier::new([signer(1).verifier()])
        .witness_file(witness_path(&path))
        .unwrap()
        .verify_file(&copy)
        .unwrap();
    assert_eq!(codes(&report), ["truncated"], "{report}");
    // A copy handed over without any witness fails as well.
    let report = verify(&copy);
    assert_eq!(codes(&report), ["witness_missing"], "{report}");
    assert!(report.to_string().contains("--no-witness"), "{report}");
}

#[test]
fn a_witness_of_another_log_or_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = log25(dir.path());
    // Another log (another origin) signed with the same key.
    let other_key = Signer::new("other.example/log", SigningKey::from_bytes(&[1; 32])).unwrap();
    let other_dir = dir.path().join("other");
    std::fs::create_dir(&other_dir).unwrap();
    let other = other_dir.join("audit.jsonl");
    let mut log = LogWriter::create(
        &other,
        approvals_audit::LogConfig::new("other.example/log"),
        other_key.clone(),
    )
    .unwrap();
    for i in 0..30 {
        log.append(&event(i)).unwrap();
    }
    log.close().unwrap();
    let report = LogVerifier::new([signer(1).verifier(), other_key.verifier()])
        .witness_file(witness_path(&other))
        .unwrap()
        .verify_file(&path)
        .unwrap();
    assert_eq!(codes(&report), ["witness_rejected"], "{report}");
    assert!(report.to_string().contains("other.example/log"), "{report}");

    // The same log's checkpoint signed by an untrusted key.
    let stranger = Signer::new(ORIGIN, SigningKey::from_bytes(&[9; 32])).unwrap();
    let forged = approvals_audit::Checkpoint::new(ORIGIN, 25, [7; 32])
        .sign(&[&stranger])
        .unwrap();
    std::fs::write(witness_path(&path), forged).unwrap();
    let report = verify(&path);
    assert_eq!(codes(&report), ["witness_rejected"], "{report}");
    assert_eq!(report.completeness, Completeness::Failed);
    // And a witness that is no checkpoint at all.
    std::fs::write(witness_path(&path), "not a note").unwrap();
    assert_eq!(codes(&verify(&path)), ["witness_rejected"]);
}

#[test]
fn a_forked_history_of_the_same_size_disagrees_with_the_witness() {
    let dir = tempfile::tempdir().unwrap();
    let path = log25(dir.path());
    let witness = std::fs::read(witness_path(&path)).unwrap();
    // The key holder rewrites entries 15-24 (still 25 entries) and re-signs; the witness
    // beside the log is out of reach (restored here from a copy kept elsewhere).
    let lines = read_lines(&path);
    write_lines(&path, &lines[..entry_index(&lines, 14) + 1]);
    std::fs::remove_file(witness_path(&path)).unwrap();
    let mut log = LogWriter::open(&path, config(), signer(1)).unwrap();
    for i in 15..25 {
        let mut e = event(i);
        e["reviewer"]["id"] = "mallory".into();
        log.append(&e).unwrap();
    }
    log.close().unwrap();
    assert!(verify(&path).is_ok(), "consistent with its own new witness");
    std::fs::write(witness_path(&path), witness).unwrap();
    let report = verify(&path);
    assert_eq!(codes(&report), ["known_checkpoint_mismatch"], "{report}");
    assert!(report.to_string().contains("forked history"), "{report}");
    assert_eq!(report.completeness, Completeness::Failed);
}

#[test]
fn the_writer_refuses_a_log_cut_below_its_witness_and_the_witness_only_moves_forward() {
    let dir = tempfile::tempdir().unwrap();
    let path = log25(dir.path());
    let lines = read_lines(&path);
    write_lines(&path, &lines[..checkpoint_index(&lines, 20) + 1]);
    let err = LogWriter::open(&path, config(), signer(1)).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");

    // A witness ahead of the writer (another writer on a copy, or a restored old log) is
    // never moved back: the checkpoint fails, and so does every append until it is resolved.
    write_lines(&path, &lines);
    let mut log = LogWriter::open(&path, config(), signer(1)).unwrap();
    let ahead = dir.path().join("ahead");
    std::fs::create_dir(&ahead).unwrap();
    let longer = write_log(&ahead, 40);
    let ahead_note = std::fs::read_to_string(witness_path(&longer)).unwrap();
    std::fs::write(witness_path(&path), &ahead_note).unwrap();
    let err = log.checkpoint().unwrap_err();
    assert!(err.to_string().contains("already holds"), "{err}");
    assert!(
        log.append(&event(25)).is_err(),
        "appends fail while pending"
    );
    assert_eq!(
        std::fs::read_to_string(witness_path(&path)).unwrap(),
        ahead_note,
        "left as it was"
    );
}

#[test]
fn a_new_log_has_a_witness_from_the_start_and_an_old_log_gets_one_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = LogWriter::create(&path, config(), signer(1)).unwrap();
    let report = verify(&path);
    assert!(
        matches!(report.completeness, Completeness::Proven { size: 0, .. }),
        "{report}"
    );
    drop(log);

    // A log written before witness files: reopening starts the witness from its last
    // checkpoint.
    let old = dir.path().join("old");
    std::fs::create_dir(&old).unwrap();
    let path = write_log(&old, 12);
    std::fs::remove_file(witness_path(&path)).unwrap();
    assert_eq!(codes(&verify(&path)), ["witness_missing"]);
    LogWriter::open(&path, config(), signer(1))
        .unwrap()
        .close()
        .unwrap();
    let report = verify(&path);
    assert!(
        matches!(report.completeness, Completeness::Proven { size: 12, .. }),
        "{report}"
    );

    // A writer keeping no witness file leaves verifiers to name one or go without.
    let none = dir.path().join("none.jsonl");
    LogWriter::create(
        &none,
        config().witness_file(WitnessFile::Disabled),
        signer(1),
    )
    .unwrap()
    .close()
    .unwrap();
    assert!(!witness_path(&none).exists());
}
