//! Inclusion and consistency proofs exported from a log and checked without it.

mod common;

use approvals_audit::log::{InclusionProof, LogWriter, prove_consistency, prove_inclusion};
use approvals_audit::note::Signer;
use approvals_core::request::canonical_json;
use common::*;

#[test]
fn every_entry_is_provable_at_every_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 25);
    let trusted = [signer(1).verifier()];
    for size in [10, 20, 25] {
        for seq in 0..size {
            let proof = prove_inclusion(&path, seq, Some(size)).unwrap();
            let opened = proof.verify(&trusted).unwrap();
            assert_eq!(opened.checkpoint.size, size);
            assert_eq!(opened.checkpoint.origin, ORIGIN);
            assert_eq!(proof.event.as_bytes(), canonical_json(&event(seq)));
        }
    }
}

#[test]
fn inclusion_proof_round_trips_as_json_and_rejects_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 25);
    let trusted = [signer(1).verifier()];

    let proof = prove_inclusion(&path, 7, None).unwrap();
    let json = proof.to_json().unwrap();
    let parsed = InclusionProof::from_json(&json).unwrap();
    assert_eq!(parsed, proof);
    assert_eq!(parsed.verify(&trusted).unwrap().checkpoint.size, 25);
    assert_eq!(parsed.event_value().unwrap(), event(7));

    let mut edited = proof.clone();
    edited.event = edited.event.replace("alice", "mallory");
    assert!(edited.verify(&trusted).is_err());

    let mut wrong_seq = proof.clone();
    wrong_seq.seq = 8;
    assert!(wrong_seq.verify(&trusted).is_err());

    let mut bad_path = proof.clone();
    bad_path.path[1][0] ^= 1;
    assert!(bad_path.verify(&trusted).is_err());

    let mut short = proof.clone();
    short.path.pop();
    assert!(short.verify(&trusted).is_err());

    let stranger = [Signer::generate(ORIGIN).unwrap().verifier()];
    assert!(proof.verify(&stranger).is_err());

    // Reformatting the event inside the JSON changes its bytes, so the proof fails.
    let spaced = json.replace("\"n\":7", "\"n\": 7");
    assert!(
        InclusionProof::from_json(&spaced)
            .unwrap()
            .verify(&trusted)
            .is_err()
    );

    assert!(
        prove_inclusion(&path, 20, Some(20)).is_err(),
        "seq outside the checkpoint"
    );
    assert!(
        prove_inclusion(&path, 3, Some(13)).is_err(),
        "no checkpoint of that size"
    );
    assert!(InclusionProof::from_json("{\"seq\":1}").is_err());
}

#[test]
fn consistency_proofs_link_checkpoints_and_expose_forks() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 25);
    let trusted = [signer(1).verifier()];
    for (old, new) in [(10, 20), (10, 25), (20, 25), (25, 25)] {
        let proof = prove_consistency(&path, old, new).unwrap();
        let (o, n) = proof.verify(&trusted).unwrap();
        assert_eq!((o.size, n.size), (old, new));
    }

    let mut tampered = prove_consistency(&path, 10, 25).unwrap();
    tampered.proof[0] = "00".repeat(32);
    assert!(tampered.verify(&trusted).is_err());

    // A history rewritten after entry 14 and re-signed cannot be linked to the old checkpoint 20.
    let original = read_lines(&path);
    let old20 = prove_consistency(&path, 20, 20).unwrap().old_checkpoint;
    write_lines(&path, &original[..entry_index(&original, 14) + 1]);
    // The writer refuses a log cut below its witness; the forger, who holds the key, also
    // deletes the witness beside the log.
    assert!(LogWriter::open(&path, config(), signer(1)).is_err());
    std::fs::remove_file(approvals_audit::witness::witness_path(&path)).unwrap();
    let mut log = LogWriter::open(&path, config(), signer(1)).unwrap();
    for i in 15..25 {
        let mut e = event(i);
        e["n"] = 1000.into();
        log.append(&e).unwrap();
    }
    log.close().unwrap();
    let mut forked = prove_consistency(&path, 20, 25).unwrap();
    assert!(
        forked.verify(&trusted).is_ok(),
        "the fork is self-consistent"
    );
    forked.old_checkpoint = old20;
    assert!(forked.verify(&trusted).is_err());
}
