//! `LogChain`: the log format without a file (for SQL and other sinks) is byte-identical to
//! the file writer's, resumes from stored rows, and verifies with the same verifier.

mod common;

use approvals_audit::log::{LogChain, LogConfig, LogWriter, ProblemKind, verify_reader};
use common::*;

fn text(rows: &[String]) -> String {
    rows.iter().map(|l| format!("{l}\n")).collect()
}

#[test]
fn rows_match_the_file_format_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let config = LogConfig::new(ORIGIN)
        .checkpoint_every(0)
        .checkpoint_interval(None);
    let mut writer = LogWriter::create(&path, config, signer(1)).unwrap();
    let mut chain = LogChain::new(ORIGIN).unwrap();
    let mut rows = Vec::new();
    for i in 0..25 {
        writer.append(&event(i)).unwrap();
        let entry = chain.append(&event(i)).unwrap();
        assert_eq!(entry.seq, i);
        rows.push(entry.line);
    }
    writer.close().unwrap();
    rows.push(chain.checkpoint(&[&signer(1)]).unwrap().1);
    assert_eq!(
        chain.root(),
        verify_reader(text(&rows).as_bytes(), &[signer(1).verifier()])
            .unwrap()
            .root
    );
    // Same entries, same bytes (Ed25519 signatures are deterministic too).
    assert_eq!(text(&rows), std::fs::read_to_string(&path).unwrap());

    // Resuming from the stored rows continues the same chain.
    let mut resumed = LogChain::resume(ORIGIN, rows.iter().map(String::as_str)).unwrap();
    assert_eq!(
        (resumed.size(), resumed.root()),
        (chain.size(), chain.root())
    );
    rows.push(resumed.append(&event(25)).unwrap().line);
    rows.push(resumed.checkpoint(&[&signer(1)]).unwrap().1);
    let report = verify_reader(text(&rows).as_bytes(), &[signer(1).verifier()]).unwrap();
    assert!(report.is_ok() && report.warnings.is_empty(), "{report}");
    assert_eq!(report.verified_size(), 26);

    // Rows of another log are refused.
    assert!(LogChain::resume("other.example/log", rows.iter().map(String::as_str)).is_err());

    // An edited row is found by the verifier and refused on resume.
    rows[3] = rows[3].replace("alice", "mallory");
    let report = verify_reader(text(&rows).as_bytes(), &[signer(1).verifier()]).unwrap();
    assert_eq!(report.problems[0].kind, ProblemKind::EventHashMismatch);
    assert_eq!(report.problems[0].seq, Some(3));
    assert!(LogChain::resume(ORIGIN, rows.iter().map(String::as_str)).is_err());
    assert!(LogChain::new("two\nlines").is_err());
}

/// An event encoded beforehand (on the caller's thread, as the SQL sinks do) makes the same
/// entry as one encoded by the chain, interleaved in any order, and the size limit holds
/// either way.
#[test]
fn encoded_events_make_the_same_entries_as_values() {
    use approvals_audit::log::{EncodedEvent, MAX_EVENT_BYTES};
    let mut by_value = LogChain::new(ORIGIN).unwrap();
    let mut mixed = LogChain::new(ORIGIN).unwrap();
    for i in 0..12 {
        let expected = by_value.append(&event(i)).unwrap();
        let encoded = EncodedEvent::new(&event(i));
        let entry = if i % 3 == 0 {
            mixed.append(&event(i)).unwrap()
        } else {
            mixed.append_encoded(&encoded).unwrap()
        };
        assert_eq!(entry, expected);
        assert_eq!(
            encoded.json(),
            approvals_core::request::canonical_json(&event(i)).as_slice()
        );
    }
    assert_eq!(
        (mixed.size(), mixed.root()),
        (by_value.size(), by_value.root())
    );

    let huge = serde_json::json!({"blob": "x".repeat(MAX_EVENT_BYTES)});
    assert!(mixed.append_encoded(&EncodedEvent::new(&huge)).is_err());
    assert!(mixed.append(&huge).is_err());
    // A refused event leaves the chain as it was.
    assert_eq!(mixed.size(), 12);
    assert_eq!(mixed.root(), by_value.root());
}
