//! Every kind of tampering with a log file is found and located, by the log's own hashes and
//! signed checkpoints (verified here without the witness, to show what the log alone proves;
//! `tests/witness.rs` covers what only the witness can: a log cut at its end).

mod common;

use approvals_audit::log::{
    Completeness, LogVerifier, LogWriter, Problem, ProblemKind, Warning, verify_file,
};
use approvals_audit::merkle::leaf_hash;
use approvals_audit::note::{NoteError, Signer, Verifier};
use approvals_core::request::canonical_json;
use common::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

fn hex(h: &[u8]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> [u8; 32] {
    std::array::from_fn(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
}

fn trusted() -> Vec<Verifier> {
    vec![signer(1).verifier()]
}

/// What the log alone proves: verification without its witness.
fn verify_alone(path: &std::path::Path) -> approvals_audit::log::VerifyReport {
    LogVerifier::new(trusted())
        .without_witness()
        .verify_file(path)
        .unwrap()
}

/// Rewrites entry lines from `from` (0-based line index) on with correct leaf hashes and
/// chain, as an attacker without the signing key can.
fn rehash_from(lines: &mut [String], from: usize) {
    let mut prev = [0u8; 32];
    for (i, line) in lines.iter_mut().enumerate() {
        let v: Value = serde_json::from_str(line).unwrap();
        if v.get("seq").is_none() {
            continue;
        }
        if i >= from {
            let event = canonical_json(&v["event"]);
            let leaf = leaf_hash(&event);
            *line = format!(
                "{{\"seq\":{},\"prev\":\"{}\",\"leaf\":\"{}\",\"event\":{}}}",
                v["seq"],
                hex(&prev),
                hex(&leaf),
                String::from_utf8(event).unwrap()
            );
        }
        let v: Value = serde_json::from_str(line).unwrap();
        let mut h = Sha256::new();
        h.update([0x02]);
        h.update(unhex(v["prev"].as_str().unwrap()));
        h.update(unhex(v["leaf"].as_str().unwrap()));
        prev = h.finalize().into();
    }
}

fn p(line: u64, seq: Option<u64>, kind: ProblemKind) -> Problem {
    Problem {
        line: Some(line),
        seq,
        kind,
    }
}

// A 25-entry log: lines 1-10 entries 0-9, line 11 checkpoint 10, lines 12-21 entries
// 10-19, line 22 checkpoint 20, lines 23-27 entries 20-24, line 28 checkpoint 25.

#[test]
fn untouched_log_verifies_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 25);
    assert_eq!(read_lines(&path).len(), 28);
    let report = verify_alone(&path);
    assert!(report.is_ok(), "{report}");
    assert!(report.warnings.is_empty(), "{report}");
    assert_eq!((report.entries, report.checkpoints), (25, 3));
    assert_eq!(report.verified_size(), 25);
    let verified = report.last_verified.unwrap();
    assert_eq!(verified.line, 28);
    assert_eq!(
        verified.signed_by,
        vec![format!("{ORIGIN}+{:08x}", signer(1).key_id())]
    );
}

#[test]
fn edited_event_field_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 25);
    let mut lines = read_lines(&path);
    let i = entry_index(&lines, 5);
    lines[i] = lines[i].replace("\"n\":5", "\"n\":6");
    write_lines(&path, &lines);

    let report = verify_alone(&path);
    assert_eq!(
        report.problems,
        vec![
            p(6, Some(5), ProblemKind::EventHashMismatch),
            p(11, None, ProblemKind::CheckpointRootMismatch { size: 10 }),
            p(22, None, ProblemKind::CheckpointRootMismatch { size: 20 }),
            p(28, None, ProblemKind::CheckpointRootMismatch { size: 25 }),
        ],
        "{report}"
    );
    assert_eq!(report.verified_size(), 0);
}

#[test]
fn edited_event_with_recomputed_leaf_breaks_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 25);
    let mut lines = read_lines(&path);
    let i = entry_index(&lines, 5);
    let mut v: Value = serde_json::from_str(&lines[i]).unwrap();
    v["event"]["reviewer"]["id"] = "mallory".into();
    let event = canonical_json(&v["event"]);
    lines[i] = format!(
        "{{\"seq\":5,\"prev\":{},\"leaf\":\"{}\",\"event\":{}}}",
        v["prev"],
        hex(&leaf_hash(&event)),
        String::from_utf8(event).unwrap()
    );
    write_lines(&path, &lines);

    let report = verify_alone(&path);
    assert_eq!(
        report.problems[0],
        p(7, Some(6), ProblemKind::ChainBroken),
        "{report}"
    );
    assert_eq!(
        report.problems[1],
        p(11, None, ProblemKind::CheckpointRootMismatch { size: 10 })
    );
}

#[test]
fn fully_rehashed_edit_is_caught_by_the_signed_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 25);
    let mut lines = read_lines(&path);
    let i = entry_index(&lines, 13);
    lines[i] = lines[i].replace("alice", "mallory");
    rehash_from(&mut lines, i);
    write_lines(&path, &lines);

    let report = verify_alone(&path);
    assert_eq!(
        report.problems,
        vec![
            p(22, None, ProblemKind::CheckpointRootMismatch { size: 20 }),
            p(28, None, ProblemKind::CheckpointRootMismatch { size: 25 }),
        ],
        "{report}"
    );
    assert_eq!(
        report.verified_size(),
        10,
        "entries up to the edit still verify"
    );
}

#[test]
fn deleted_line_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 25);
    let mut lines = read_lines(&path);
    lines.remove(entry_index(&lines, 5));
    write_lines(&path, &lines);

    let report = verify_alone(&path);
    let misplaced = |line, size| {
        p(
            line,
            None,
            ProblemKind::CheckpointMisplaced {
                size,
                entries_before: size - 1,
            },
        )
    };
    assert_eq!(
        report.problems,
        vec![
            p(6, Some(6), ProblemKind::SeqMismatch { expected: 5 }),
            p(6, Some(6), ProblemKind::ChainBroken),
            misplaced(10, 10),
            misplaced(21, 20),
            misplaced(27, 25),
        ],
        "{report}"
    );
}

#[test]
fn deleted_line_with_rehashed_chain_is_still_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 25);
    let mut lines = read_lines(&path);
    // The attacker deletes entry 23 and renumbers and rehashes the entry after it.
    let i = entry_index(&lines, 23);
    lines.remove(i);
    lines[i] = lines[i].replace("{\"seq\":24,", "{\"seq\":23,");
    rehash_from(&mut lines, i);
    write_lines(&path, &lines);

    let report = verify_alone(&path);
    assert_eq!(
        report.problems,
        vec![p(
            27,
            None,
            ProblemKind::CheckpointMisplaced {
                size: 25,
                entries_before: 24
            }
        )],
        "{report}"
    );
}

#[test]
fn inserted_line_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 25);
    let mut lines = read_lines(&path);
    // A forged entry that chains correctly onto entry 5.
    let i = entry_index(&lines, 6);
    let mut forged: Value = serde_json::from_str(&lines[i]).unwrap();
    forged["event"]["type"] = "approved".into();
    let event = canonical_json(&forged["event"]);
    lines.insert(
        i,
        format!(
            "{{\"seq\":6,\"prev\":{},\"leaf\":\"{}\",\"event\":{}}}",
            forged["prev"],
            hex(&leaf_hash(&event)),
            String::from_utf8(event).unwrap()
        ),
    );
    write_lines(&path, &lines);

    let report = verify_alone(&path);
    assert_eq!(
        &report.problems[..3],
        &[
            p(8, Some(6), ProblemKind::SeqMismatch { expected: 7 }),
            p(8, Some(6), ProblemKind::ChainBroken),
            p(
                12,
                None,
                ProblemKind::CheckpointMisplaced {
                    size: 10,
                    entries_before: 11
                }
            ),
        ],
        "{report}"
    );
}

#[test]
fn swapped_lines_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 25);
    let mut lines = read_lines(&path);
    let (a, b) = (entry_index(&lines, 5), entry_index(&lines, 6));
    lines.swap(a, b);
    write_lines(&path, &lines);

    let report = verify_alone(&path);
    assert_eq!(
        &report.problems[..6],
        &[
            p(6, Some(6), ProblemKind::SeqMismatch { expected: 5 }),
            p(6, Some(6), ProblemKind::ChainBroken),
            p(7, Some(5), ProblemKind::SeqMismatch { expected: 7 }),
            p(7, Some(5), ProblemKind::ChainBroken),
            p(8, Some(7), ProblemKind::SeqMismatch { expected: 6 }),
            p(8, Some(7), ProblemKind::ChainBroken),
        ],
        "{report}"
    );
    assert_eq!(
        report.problems[6],
        p(11, None, ProblemKind::CheckpointRootMismatch { size: 10 })
    );
}

#[test]
fn swapped_and_rehashed_lines_are_caught_by_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 25);
    let mut lines = read_lines(&path);
    let (a, b) = (entry_index(&lines, 5), entry_index(&lines, 6));
    lines.swap(a, b);
    lines[a] = lines[a].replace("{\"seq\":6,", "{\"seq\":5,");
    lines[b] = lines[b].replace("{\"seq\":5,", "{\"seq\":6,");
    rehash_from(&mut lines, a);
    write_lines(&path, &lines);

    let report = verify_alone(&path);
    assert_eq!(
        report.problems[0],
        p(11, None, ProblemKind::CheckpointRootMismatch { size: 10 }),
        "{report}"
    );
}

#[test]
fn truncated_tail_is_an_error_against_the_witness_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let latest = dir.path().join("latest.checkpoint");
    let mut log =
        LogWriter::create(&path, config().latest_checkpoint_file(&latest), signer(1)).unwrap();
    for i in 0..25 {
        log.append(&event(i)).unwrap();
    }
    log.close().unwrap();

    // Cut the last checkpoint and three entries: entries 20 and 21 remain after checkpoint 20.
    let mut lines = read_lines(&path);
    lines.truncate(24);
    write_lines(&path, &lines);

    // By default the log is compared with its witness (`<log>.witness`): the cut is an error.
    let report = verify_file(&path, &trusted()).unwrap();
    assert_eq!(report.problems.len(), 1, "{report}");
    assert!(matches!(
        &report.problems[0].kind,
        ProblemKind::Truncated {
            size: 25,
            entries: 22,
            ..
        }
    ));
    assert_eq!(report.completeness, Completeness::Failed);

    // The same with a checkpoint kept elsewhere (here the writer's latest-checkpoint file).
    let mut verifier = LogVerifier::new(trusted());
    verifier.known_checkpoint_file(&latest).unwrap();
    let report = verifier.verify_file(&path).unwrap();
    assert!(
        report
            .problems
            .iter()
            .all(|p| matches!(p.kind, ProblemKind::Truncated { size: 25, .. })),
        "{report}"
    );

    // Only when told to verify without a witness does the log pass, with its unsigned tail
    // as a warning, and completeness unproven.
    let report = verify_alone(&path);
    assert!(report.is_ok(), "{report}");
    assert_eq!(
        report.warnings,
        vec![Warning::UnverifiedTail {
            first_line: 23,
            first_seq: 20,
            entries: 2
        }]
    );
    assert_eq!(report.completeness, Completeness::Unproven);
    assert!(
        report.to_string().contains("COMPLETENESS UNPROVEN"),
        "{report}"
    );

    // A cut in the middle of a line is an interrupted write: warned about, not counted.
    let text = std::fs::read(&path).unwrap();
    std::fs::write(&path, &text[..text.len() - 10]).unwrap();
    let report = verify_alone(&path);
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.entries, 21);
    assert!(
        report
            .warnings
            .contains(&Warning::IncompleteLastLine { line: 24 })
    );
}

#[test]
fn tampered_or_untrusted_checkpoints_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 25);
    let lines = read_lines(&path);

    // Changing the signed text breaks the signature.
    let mut edited = lines.clone();
    let i = checkpoint_index(&edited, 20);
    edited[i] = edited[i].replace(&format!("{ORIGIN}\\n20\\n"), &format!("{ORIGIN}\\n21\\n"));
    write_lines(&path, &edited);
    let report = verify_alone(&path);
    assert_eq!(report.problems.len(), 1, "{report}");
    assert_eq!(report.problems[0].line, Some(22));
    assert!(matches!(
        report.problems[0].kind,
        ProblemKind::CheckpointSignature(NoteError::BadSignature { .. })
    ));

    // A checkpoint signed by a key the verifier does not trust proves nothing.
    write_lines(&path, &lines);
    let stranger = vec![Signer::generate(ORIGIN).unwrap().verifier()];
    let report = LogVerifier::new(stranger)
        .without_witness()
        .verify_file(&path)
        .unwrap();
    assert_eq!(report.problems.len(), 3, "{report}");
    assert!(report.problems.iter().all(|p| matches!(
        p.kind,
        ProblemKind::CheckpointSignature(NoteError::NoTrustedSignature { .. })
    )));
    assert_eq!(report.verified_size(), 0);

    // A verifier pinned to another origin rejects every checkpoint.
    let report = LogVerifier::new(trusted())
        .origin("other.example/log")
        .without_witness()
        .verify_file(&path)
        .unwrap();
    assert_eq!(report.problems.len(), 3, "{report}");
    assert!(matches!(
        report.problems[0].kind,
        ProblemKind::CheckpointOrigin { .. }
    ));
}

#[test]
fn malformed_lines_are_reported_with_their_line_number() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 5);
    let mut lines = read_lines(&path);
    lines.insert(2, "not json".into());
    lines.insert(3, String::new());
    write_lines(&path, &lines);
    let report = verify_alone(&path);
    let lines_with_problems: Vec<_> = report.problems.iter().map(|p| p.line).collect();
    assert_eq!(lines_with_problems, vec![Some(3), Some(4)], "{report}");
    assert!(matches!(
        report.problems[0].kind,
        ProblemKind::MalformedLine(_)
    ));
}

/// The signing key holder rewrites history after entry 14 and re-signs it.
fn forge_tail(dir: &std::path::Path) -> (std::path::PathBuf, String, Vec<String>) {
    let path = dir.join("audit.jsonl");
    let latest = dir.join("latest.checkpoint");
    let mut log =
        LogWriter::create(&path, config().latest_checkpoint_file(&latest), signer(1)).unwrap();
    for i in 0..20 {
        log.append(&event(i)).unwrap();
    }
    log.close().unwrap();
    let witnessed = std::fs::read_to_string(&latest).unwrap();
    let original = read_lines(&path);

    // Keep entries 0-14 (and checkpoint 10), then append a different history with the key,
    // after deleting the witness beside the log (the writer refuses a log cut below it).
    write_lines(&path, &original[..entry_index(&original, 14) + 1]);
    assert!(LogWriter::open(&path, config(), signer(1)).is_err());
    std::fs::remove_file(approvals_audit::witness::witness_path(&path)).unwrap();
    let mut log = LogWriter::open(&path, config(), signer(1)).unwrap();
    for i in 15..25 {
        let mut e = event(i);
        e["reviewer"]["id"] = "mallory".into();
        log.append(&e).unwrap();
    }
    log.close().unwrap();
    (path, witnessed, original)
}

#[test]
fn forked_history_is_found_with_a_checkpoint_kept_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let (path, witnessed, _) = forge_tail(dir.path());

    // On its own, a consistently re-signed rewrite cannot be told apart from the truth.
    assert!(verify_alone(&path).is_ok());

    let mut verifier = LogVerifier::new(trusted());
    verifier.known_checkpoint(&witnessed, "witness").unwrap();
    let report = verifier.verify_file(&path).unwrap();
    assert_eq!(report.problems.len(), 1, "{report}");
    assert_eq!(
        report.problems[0].kind,
        ProblemKind::KnownCheckpointMismatch {
            size: 20,
            label: "witness".into()
        }
    );
    assert_eq!(report.problems[0].seq, Some(19));

    // A checkpoint of another log is refused up front instead of reported as a fork.
    let other = Signer::new(
        "other.example/log",
        ed25519_dalek::SigningKey::from_bytes(&[1; 32]),
    )
    .unwrap();
    let foreign = approvals_audit::note::Checkpoint::new("other.example/log", 3, [0; 32])
        .sign(&[&other])
        .unwrap();
    let mut verifier = LogVerifier::new(vec![signer(1).verifier(), other.verifier()]);
    verifier.origin(ORIGIN);
    assert!(matches!(
        verifier.known_checkpoint(&foreign, "foreign"),
        Err(NoteError::Checkpoint(_))
    ));
}

#[test]
fn forked_history_is_found_between_two_checkpoints_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _, original) = forge_tail(dir.path());

    // The old checkpoint 20 is left in place after the new entry 19.
    let old_checkpoint = original[checkpoint_index(&original, 20)].clone();
    let mut lines = read_lines(&path);
    let at = entry_index(&lines, 19) + 1;
    lines.insert(at, old_checkpoint);
    write_lines(&path, &lines);

    let report = verify_alone(&path);
    let old_line = at as u64 + 1;
    // The forger's own checkpoint 20 follows right after the old one.
    let new_line = old_line + 1;
    assert_eq!(
        report.problems,
        vec![
            p(
                old_line,
                None,
                ProblemKind::CheckpointRootMismatch { size: 20 }
            ),
            p(
                old_line,
                None,
                ProblemKind::Fork {
                    size: 20,
                    other_line: new_line,
                    other_size: 20
                }
            ),
        ],
        "{report}"
    );

    // Without the forger's own checkpoint 20, the next matching checkpoint (25) exposes it.
    lines.remove(at + 1);
    write_lines(&path, &lines);
    let report = verify_alone(&path);
    let new_line = checkpoint_index(&lines, 25) as u64 + 1;
    assert_eq!(
        report.problems[1],
        p(
            old_line,
            None,
            ProblemKind::Fork {
                size: 20,
                other_line: new_line,
                other_size: 25
            }
        ),
        "{report}"
    );
}

#[test]
fn two_signed_checkpoints_of_one_size_with_different_roots_are_a_fork() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 10);
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let forked = write_log(&other, 12);
    // A validly signed checkpoint of size 10 over a different history, appended to the log.
    let mut lines = read_lines(&path);
    let mut fake = read_lines(&forked);
    let i = entry_index(&fake, 3);
    fake[i] = fake[i].replace("alice", "mallory");
    rehash_from(&mut fake, i);
    write_lines(&forked, &fake[..entry_index(&fake, 9) + 1]);
    std::fs::remove_file(approvals_audit::witness::witness_path(&forked)).unwrap();
    let log = LogWriter::open(&forked, config(), signer(1)).unwrap();
    log.close().unwrap();
    let fake = read_lines(&forked);
    lines.push(fake[checkpoint_index(&fake, 10)].clone());
    write_lines(&path, &lines);

    let report = verify_alone(&path);
    assert_eq!(
        report.problems,
        vec![
            p(12, None, ProblemKind::CheckpointRootMismatch { size: 10 }),
            p(
                12,
                None,
                ProblemKind::Fork {
                    size: 10,
                    other_line: 11,
                    other_size: 10
                }
            ),
        ],
        "{report}"
    );
}

/// A log that is checked byte for byte below: 12 entries, checkpoints at 5, 10 and 12.
fn small_log(dir: &std::path::Path) -> (std::path::PathBuf, Vec<u8>) {
    let path = dir.join("audit.jsonl");
    let mut log = LogWriter::create(&path, config().checkpoint_every(5), signer(1)).unwrap();
    for i in 0..12 {
        log.append(&event(i)).unwrap();
    }
    log.close().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    (path, bytes)
}

#[test]
fn deleting_any_entry_line_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = small_log(dir.path());
    let lines = read_lines(&path);
    for seq in 0..12 {
        let mut cut = lines.clone();
        cut.remove(entry_index(&lines, seq));
        write_lines(&path, &cut);
        let report = verify_alone(&path);
        assert!(
            !report.is_ok(),
            "deleting seq {seq} went unnoticed: {report}"
        );
    }
}

fn small_log_bytes() -> &'static [u8] {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES.get_or_init(|| small_log(tempfile::tempdir().unwrap().path()).1)
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

    /// Invariant 9: flipping any single bit anywhere in the file is noticed. Only a flip of
    /// the very last newline can pass as an interrupted write, and that leaves the end of the
    /// log unsigned, which the report says.
    #[test]
    fn any_flipped_bit_is_detected(position in 0.0f64..1.0, bit in 0u8..8) {
        let mut bytes = small_log_bytes().to_vec();
        let at = ((bytes.len() as f64 * position) as usize).min(bytes.len() - 1);
        bytes[at] ^= 1 << bit;
        let report = approvals_audit::log::verify_reader(&bytes[..], &trusted()).unwrap();
        if at == bytes.len() - 1 {
            proptest::prop_assert!(!report.warnings.is_empty(), "{}", report);
        } else {
            proptest::prop_assert!(!report.is_ok(), "flip at byte {} bit {} unnoticed", at, bit);
        }
    }
}
