//! `SignedLogSink` behind a real `Gate`: the lifecycle lands in a log that verifies, the
//! approval can be proven, a broken sink refuses the action, keys rotate mid-log.

mod common;

use std::sync::Arc;
use std::time::Duration;

use approvals_audit::SignedLogSink;
use approvals_audit::log::{
    LogConfig, LogVerifier, LogWriter, prove_inclusion, read_verified, verify_file,
};
use approvals_core::{ActionRequest, Gate, Initiator, RulePolicy};
use common::*;
use serde_json::{Value, json};

fn events(path: &std::path::Path, keys: &[approvals_audit::note::Verifier]) -> Vec<(u64, Value)> {
    let (report, entries) = read_verified(path, &LogVerifier::new(keys.to_vec())).unwrap();
    assert!(report.is_ok(), "{report}");
    entries
        .into_iter()
        .map(|e| (e.seq, e.event_value().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_lifecycle_is_logged_verified_and_the_approval_is_provable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let sink = scenario::run(&path, signer(1)).await;
    sink.close().await.unwrap();

    let report = verify_file(&path, &[signer(1).verifier()]).unwrap();
    assert!(report.is_ok() && report.warnings.is_empty(), "{report}");
    let all = events(&path, &[signer(1).verifier()]);
    assert_eq!(all.len() as u64, report.entries);

    // The first approval: who, for which digest, and provable on its own.
    let (seq, approved) = all
        .iter()
        .find(|(_, e)| e["event"] == "approved")
        .expect("an approved event");
    assert_eq!(approved["kind"], "iam.role.grant");
    assert_eq!(approved["approvers"][0]["id"], "sam@example.com");
    assert_eq!(approved["schema"], 1);
    let proof = prove_inclusion(&path, *seq, None).unwrap();
    proof.verify(&[signer(1).verifier()]).unwrap();
    assert_eq!(proof.event_value().unwrap(), *approved);

    // The lifecycle of that request, in order, before anything ran.
    let id = approved["request_id"].as_str().unwrap();
    let names: Vec<&str> = all
        .iter()
        .filter(|(_, e)| e["request_id"] == id)
        .map(|(_, e)| e["event"].as_str().unwrap())
        .collect();
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
    let names: Vec<&str> = all
        .iter()
        .map(|(_, e)| e["event"].as_str().unwrap())
        .collect();
    for expected in ["denied", "review_rejected", "expired", "cancelled"] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
}

#[tokio::test]
async fn a_closed_or_failed_sink_makes_the_gate_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let sink = Arc::new(SignedLogSink::open(&path, scenario::sink_config(), signer(1)).unwrap());
    let gate = Gate::builder()
        .policy(RulePolicy::from_toml(scenario::POLICY).unwrap())
        .audit_shared(sink.clone())
        .initiator(Initiator::agent("bot"))
        .build()
        .unwrap();
    let read = ActionRequest::new("config.read", "cfg://x");
    gate.run(&read, || async { Ok::<_, scenario::Boom>(()) })
        .await
        .unwrap();
    sink.close().await.unwrap();

    let ran = std::sync::atomic::AtomicBool::new(false);
    let result = gate
        .run(&read, || async {
            ran.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok::<_, scenario::Boom>(())
        })
        .await;
    let err = result.expect_err("the gate must refuse when the audit log cannot be written");
    assert!(err.0.contains("audit"), "{err}");
    assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
    assert!(sink.checkpoint().await.is_err());
    // What was written before still verifies.
    let report = verify_file(&path, &[signer(1).verifier()]).unwrap();
    assert!(report.is_ok() && report.warnings.is_empty(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_events_are_group_committed_in_one_valid_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let config = LogConfig::new(ORIGIN)
        .checkpoint_every(16)
        .checkpoint_interval(None);
    let sink = Arc::new(SignedLogSink::open(&path, config, signer(1)).unwrap());
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let sink = sink.clone();
            tokio::spawn(async move { sink.append(json!({"event": "x", "i": i})).await })
        })
        .collect();
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap().unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (0..64).collect::<Vec<u64>>());
    sink.close().await.unwrap();
    assert_eq!(events(&path, &[signer(1).verifier()]).len(), 64);
}

#[tokio::test]
async fn the_timer_checkpoints_an_idle_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let config = LogConfig::new(ORIGIN)
        .checkpoint_every(0)
        .checkpoint_interval(Some(Duration::from_millis(20)));
    let writer = LogWriter::create(&path, config, signer(1)).unwrap();
    let sink = SignedLogSink::with_timer(writer, Some(Duration::from_millis(20))).unwrap();
    sink.append(json!({"event": "requested"})).await.unwrap();
    // Poll (no timing assertion): the timer, not an append or close, writes the checkpoint.
    let mut covered = false;
    // Up to 30 s for a loaded CI machine.
    for _ in 0..3000 {
        let report = verify_file(&path, &[signer(1).verifier()]).unwrap();
        if report.verified_size() == 1 {
            covered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(covered, "no timer checkpoint was written");
    drop(sink);
}

#[tokio::test]
async fn keys_rotated_mid_log_verify_with_both_keys_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let sink = SignedLogSink::open(&path, scenario::sink_config(), signer(1)).unwrap();
    for i in 0..10 {
        sink.append(json!({"event": "before", "i": i}))
            .await
            .unwrap();
    }
    sink.rotate_key(signer(2)).await.unwrap();
    assert_eq!(
        sink.verifier(),
        Some(&signer(1).verifier()),
        "the sink reports its first key"
    );
    for i in 0..10 {
        sink.append(json!({"event": "after", "i": i}))
            .await
            .unwrap();
    }
    sink.close().await.unwrap();

    let both = [signer(1).verifier(), signer(2).verifier()];
    let report = verify_file(&path, &both).unwrap();
    assert!(report.is_ok() && report.warnings.is_empty(), "{report}");
    assert_eq!(events(&path, &both).len(), 20);
    // Either key alone leaves checkpoints unverified.
    assert!(!verify_file(&path, &[signer(1).verifier()]).unwrap().is_ok());
    assert!(!verify_file(&path, &[signer(2).verifier()]).unwrap().is_ok());
}
