//! What the evidence report says about why things were approved and how to check it: the
//! reviewers' reasons and groups at decision time (HTML-escaped, and in the CSV), every
//! signing key across a rotation, refused actions, and a reproducible audit sample.

mod common;

use std::path::{Path, PathBuf};

use approvals_audit::log::{LogVerifier, LogWriter};
use approvals_audit::note::Signer;
use approvals_audit::report::{EvidenceReport, Outcome, ReportOptions, esc, sample, sample_rank};
use common::*;
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn verifier() -> LogVerifier {
    LogVerifier::new([signer(1).verifier()])
}

async fn scenario_log(dir: &Path) -> PathBuf {
    let path = dir.join("audit.jsonl");
    let sink = scenario::run(&path, signer(1)).await;
    sink.close().await.unwrap();
    path
}

/// The CSV as rows of cells (RFC 4180: quoted cells, doubled quotes, CRLF rows).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = vec![];
    let mut row = vec![];
    let mut cell = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => cell.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut cell)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut cell));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => cell.push(c),
        }
    }
    rows
}

fn column<'a>(rows: &'a [Vec<String>], name: &str) -> Vec<&'a str> {
    let i = rows[0].iter().position(|h| h == name).unwrap();
    rows[1..].iter().map(|r| r[i].as_str()).collect()
}

#[tokio::test]
async fn reviewers_reasons_and_groups_are_in_the_html_and_the_csv() {
    let dir = tempfile::tempdir().unwrap();
    let path = scenario_log(dir.path()).await;
    let report = EvidenceReport::build(&path, &verifier(), &ReportOptions::default()).unwrap();
    assert!(report.verified(), "{}", report.verification);
    let hostile = report
        .requests
        .iter()
        .find(|r| r.kind == "deploy.run" && !r.reviews.is_empty())
        .unwrap();
    assert_eq!(
        hostile.reviews[0].reason.as_deref(),
        Some(scenario::HOSTILE)
    );
    assert_eq!(hostile.reviews[0].groups, ["sre"]);

    let html = report.to_html();
    // The reason, escaped (the hostile text has <script>, quotes and a CRLF).
    assert!(
        html.contains(&format!("<q class=\"why\">{}</q>", esc(scenario::HOSTILE))),
        "the reason is shown, escaped"
    );
    assert!(!html.contains("<script>alert(1)</script>"));
    assert!(html.contains("<span class=\"k\">groups</span> sre"));
    // The denial's reason is still the outcome detail.
    assert!(html.contains("not during the freeze"));

    let rows = parse_csv(&report.to_csv());
    let reasons = column(&rows, "review_reasons");
    let groups = column(&rows, "reviewer_groups");
    let i = rows[1..]
        .iter()
        .position(|r| r[0] == hostile.request_id)
        .unwrap();
    assert_eq!(
        reasons[i],
        format!("eve|=\\x@example.com: {}", scenario::HOSTILE)
    );
    assert_eq!(groups[i], "eve|=\\x@example.com: sre");
    let iam = rows[1..]
        .iter()
        .position(|r| r[1] == "iam.role.grant")
        .unwrap();
    assert_eq!(groups[iam], "sam@example.com: sre");
    assert_eq!(reasons[iam], "", "approved without a reason");
    let secrets = rows[1..]
        .iter()
        .position(|r| r[1] == "secrets.rotate")
        .unwrap();
    assert_eq!(reasons[secrets], "sam@example.com: not during the freeze");
}

/// A log whose key changes after 10 events (handover checkpoint signed by both).
fn rotated_log(dir: &Path) -> (PathBuf, Signer, Signer) {
    let path = dir.join("audit.jsonl");
    let old = signer(1);
    let new = Signer::new(ORIGIN, SigningKey::from_bytes(&[2; 32])).unwrap();
    let mut log = LogWriter::create(&path, config().checkpoint_every(4), old.clone()).unwrap();
    for i in 0..10 {
        log.append(&event(i)).unwrap();
    }
    log.rotate_key(new.clone()).unwrap();
    for i in 10..19 {
        log.append(&event(i)).unwrap();
    }
    log.close().unwrap();
    (path, old, new)
}

#[test]
fn every_signing_key_of_a_rotation_is_listed_with_what_it_signed() {
    let dir = tempfile::tempdir().unwrap();
    let (path, old, new) = rotated_log(dir.path());
    let verifier = LogVerifier::new([old.verifier(), new.verifier()]);
    let report = EvidenceReport::build(&path, &verifier, &ReportOptions::default()).unwrap();
    assert!(report.verified(), "{}", report.verification);
    let keys = &report.verification.signing_keys;
    let name = |s: &Signer| format!("{ORIGIN}+{:08x}", s.key_id());
    // Old: checkpoints 4, 8 and the handover at 10; new: 10 (handover), 14, 18, 19.
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_eq!(keys[0].key, name(&old));
    assert_eq!((keys[0].checkpoints, keys[0].sizes), (3, (4, 10)));
    assert_eq!(keys[0].entries, (0, 10));
    assert_eq!(keys[1].key, name(&new));
    assert_eq!((keys[1].checkpoints, keys[1].sizes), (4, (10, 19)));
    assert_eq!(keys[1].entries, (8, 19));
    let html = report.to_html();
    assert!(html.contains("Signing keys (2)"));
    assert!(html.contains(&name(&old)) && html.contains(&name(&new)));
    assert!(
        html.contains("0 \u{2013} 9"),
        "entries first signed by the old key"
    );
    assert!(
        html.contains("8 \u{2013} 18"),
        "entries first signed by the new key"
    );
}

/// `n` requests, one `requested` event each.
fn population_log(dir: &Path, n: usize) -> (PathBuf, Vec<String>) {
    let path = dir.join("audit.jsonl");
    let mut log = LogWriter::create(&path, config(), signer(1)).unwrap();
    let mut ids = Vec::new();
    for i in 0..n {
        let id = format!("0193a2b4-0000-7000-8000-{i:012}");
        log.append(&json!({
            "schema": 1, "at": "2026-11-02T09:00:00Z", "event": "requested",
            "request_id": id, "kind": "data.export", "resource": "db://x",
            "digest": "sha256:00",
            "request": {"kind": "data.export", "resource": "db://x",
                        "initiator": {"principal": {"kind": "agent", "id": "bot"}}}
        }))
        .unwrap();
        ids.push(id);
    }
    log.close().unwrap();
    (path, ids)
}

fn sampled(path: &Path, n: usize, seed: &str) -> Vec<String> {
    let options = ReportOptions::default().sample(n, seed);
    let report = EvidenceReport::build(path, &verifier(), &options).unwrap();
    let sample = report.sample.unwrap();
    assert_eq!((sample.seed.as_str(), sample.requested), (seed, n));
    sample.selected.into_iter().map(|(id, _)| id).collect()
}

#[test]
fn the_sample_is_reproducible_from_the_seed_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (path, ids) = population_log(dir.path(), 40);
    let first = sampled(&path, 5, "2026-Q4 audit");
    assert_eq!(first.len(), 5);
    assert_eq!(
        first,
        sampled(&path, 5, "2026-Q4 audit"),
        "same seed, same sample"
    );
    assert_ne!(
        first,
        sampled(&path, 5, "another seed"),
        "another seed, another sample"
    );

    // Recomputed here without the tool: SHA-256 of the seed followed by the id, lowest first.
    let mut ranked: Vec<(String, String)> = ids
        .iter()
        .map(|id| {
            let digest = Sha256::digest(format!("2026-Q4 audit{id}").as_bytes());
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            (hex, id.clone())
        })
        .collect();
    ranked.sort();
    let expected: Vec<String> = ranked.iter().take(5).map(|(_, id)| id.clone()).collect();
    assert_eq!(first, expected);
    assert_eq!(sample_rank("2026-Q4 audit", &ids[0]), {
        let d = Sha256::digest(format!("2026-Q4 audit{}", ids[0]).as_bytes());
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    });

    // N larger than the population: all of it.
    let all = sampled(&path, 100, "x");
    assert_eq!(all.len(), 40);
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(sorted, ids);
    assert!(sample(ids.iter().map(String::as_str), 0, "x").is_empty());

    // The report says what was sampled, from what population, with which seed and method.
    let options = ReportOptions::default().sample(5, "2026-Q4 audit");
    let report = EvidenceReport::build(&path, &verifier(), &options).unwrap();
    let html = report.to_html();
    assert!(html.contains("Audit sample (5 of 40 requests)"));
    assert!(html.contains("Seed <code>2026-Q4 audit</code>, sample size N = 5, population = 40"));
    assert!(html.contains("SHA-256(seed || request_id)"));
    assert!(html.contains("sha256sum"), "the shell method");
    let rows = parse_csv(&report.to_csv());
    let positions = column(&rows, "sample_position");
    for (k, id) in first.iter().enumerate() {
        let i = rows[1..].iter().position(|r| r[0] == *id).unwrap();
        assert_eq!(positions[i], (k + 1).to_string());
    }
    assert_eq!(positions.iter().filter(|p| p.is_empty()).count(), 35);
}

#[test]
fn the_sample_can_be_redone_with_a_shell_one_liner() {
    let Ok(out) = std::process::Command::new("sh")
        .arg("-c")
        .arg("command -v sha256sum")
        .output()
    else {
        return;
    };
    if !out.status.success() {
        eprintln!("SKIPPED: no sha256sum");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = population_log(dir.path(), 12);
    let options = ReportOptions::default().sample(4, "it's 2026");
    let report = EvidenceReport::build(&path, &verifier(), &options).unwrap();
    let csv = dir.path().join("evidence.csv");
    std::fs::write(&csv, report.to_csv()).unwrap();
    // The command printed in the report, with the report's own quoting of the seed.
    let html = report.to_html();
    let start = html.find("<pre>SEED=").unwrap() + "<pre>".len();
    let end = start + html[start..].find("</pre>").unwrap();
    let script = html[start..end]
        .replace("&#39;", "'")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shell: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let tool: Vec<String> = report
        .sample
        .unwrap()
        .selected
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(shell, tool);
}

#[test]
fn refused_actions_are_listed_with_their_initiator() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut log = LogWriter::create(&path, config(), signer(1)).unwrap();
    let refused: Value = json!({
        "schema": 1, "at": "2026-11-02T09:00:00Z", "event": "request_refused",
        "request_id": "0193a2b4-0000-7000-8000-000000000001", "kind": "iam.role.grant",
        "resource": "iam://prod", "digest": "sha256:00", "cause": "initiator_mismatch",
        "detail": "claimed <b>other-bot</b>", "size": 321,
        "initiator": {"principal": {"kind": "agent", "id": "deploy-bot"},
                      "on_behalf_of": {"kind": "human", "id": "dana@example.com"}}
    });
    log.append(&refused).unwrap();
    log.close().unwrap();
    let report = EvidenceReport::build(&path, &verifier(), &ReportOptions::default()).unwrap();
    assert!(report.requests.is_empty(), "a refused action is no request");
    assert_eq!(report.refused.len(), 1);
    let r = &report.refused[0];
    assert_eq!(
        (r.event.as_str(), r.cause.as_str(), r.who.as_deref()),
        ("request_refused", "initiator_mismatch", Some("deploy-bot"))
    );
    assert!(r.detail.contains("321 bytes"));
    let html = report.to_html();
    assert!(html.contains("claimed &lt;b&gt;other-bot&lt;/b&gt;"));
}

/// Actions run as items of an approved plan count as approved, by the plan's approvers, and
/// name the plan and the item (1-based, "of M" when the plan's use says how many items).
#[test]
fn an_action_approved_by_a_plan_is_approved_and_names_the_plan_and_item() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut log = LogWriter::create(&path, config(), signer(1)).unwrap();
    let plan = "0193a2b4-0000-7000-8000-00000000000a";
    let (counted, uncounted) = (
        "0193a2b4-0000-7000-8000-00000000000b",
        "0193a2b4-0000-7000-8000-00000000000c",
    );
    let requested = |id: &str, kind: &str| {
        json!({
            "schema": 1, "at": "2026-11-02T09:00:00Z", "event": "requested",
            "request_id": id, "kind": kind, "resource": "svc://prod/api",
            "digest": "sha256:00",
            "request": {"kind": kind, "resource": "svc://prod/api",
                        "initiator": {"principal": {"kind": "agent", "id": "deploy-bot"}}}
        })
    };
    let approved_by_plan = |id: &str, item: u32, approvers: Value| {
        json!({
            "schema": 1, "at": "2026-11-02T09:05:00Z", "event": "approved_by_plan",
            "request_id": id, "kind": "deploy.restart", "resource": "svc://prod/api",
            "digest": "sha256:00", "plan": plan, "item": item, "approvers": approvers
        })
    };
    let sam = json!({"kind": "human", "id": "sam@example.com"});
    let kim = json!({"kind": "human", "id": "kim@example.com"});
    for event in [
        requested(plan, "approvals.plan"),
        requested(counted, "deploy.restart"),
        json!({
            "schema": 1, "at": "2026-11-02T09:05:00Z", "event": "plan_item_used",
            "request_id": plan, "kind": "approvals.plan", "resource": "svc://prod/api",
            "digest": "sha256:01", "request": counted, "action_digest": "sha256:02",
            "item": 1, "items": 3
        }),
        approved_by_plan(counted, 1, json!([sam, kim])),
        // No `plan_item_used` in the log for this one: the plan's size is unknown.
        requested(uncounted, "deploy.restart"),
        approved_by_plan(uncounted, 0, json!([sam])),
    ] {
        log.append(&event).unwrap();
    }
    log.close().unwrap();
    let report = EvidenceReport::build(&path, &verifier(), &ReportOptions::default()).unwrap();
    assert!(report.verified(), "{}", report.verification);
    let by_id = |id: &str| report.requests.iter().find(|r| r.request_id == id).unwrap();

    let r = by_id(counted);
    assert_eq!(r.outcome, Outcome::Approved);
    assert_eq!(r.approvers, ["sam@example.com", "kim@example.com"]);
    assert_eq!(r.decision_seq, Some(3));
    assert!(r.decided_at.is_some());
    assert_eq!(
        r.detail.as_deref(),
        Some("approved by plan 0193a2b4-0000-7000-8000-00000000000a, item 2 of 3")
    );
    let r = by_id(uncounted);
    assert_eq!(r.outcome, Outcome::Approved);
    assert_eq!(r.approvers, ["sam@example.com"]);
    assert_eq!(
        r.detail.as_deref(),
        Some("approved by plan 0193a2b4-0000-7000-8000-00000000000a, item 1")
    );
    assert_eq!(
        by_id(plan).outcome,
        Outcome::Pending,
        "the plan's own use is no decision on the plan"
    );

    let rows = parse_csv(&report.to_csv());
    let i = rows[1..].iter().position(|r| r[0] == counted).unwrap();
    assert_eq!(column(&rows, "outcome")[i], Outcome::Approved.label());
    assert_eq!(
        column(&rows, "approvers")[i],
        "sam@example.com; kim@example.com"
    );
}

/// A request a reviewer edited before approving, run through a real gate into the signed log:
/// the report gives the approved (edited) digest, the rule that decided the edited action,
/// who edited it and what changed, and the digest it was asked with; the log verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_request_is_reported_with_the_approved_digest_and_what_changed() {
    use approvals_core::{
        ActionRequest, Gate, GuardError, Initiator, Principal, Review, RulePolicy, Submission,
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let sink = std::sync::Arc::new(
        approvals_audit::SignedLogSink::open(&path, scenario::sink_config(), signer(1)).unwrap(),
    );
    let gate = Gate::builder()
        .policy(
            RulePolicy::from_toml(
                r#"
version = 1
default = "deny"
[[rules]]
name = "exports"
kind = "data.export"
effect = "require_approval"
approvers = { groups = ["data-owners"] }
editable = ["rows"]
"#,
            )
            .unwrap(),
        )
        .audit_shared(sink.clone())
        .initiator(Initiator::agent("export-bot"))
        .build()
        .unwrap();
    let asked = ActionRequest::new("data.export", "db://prod/customers")
        .params(json!({"rows": 800, "table": "customers"}));
    let Submission::Pending(id) = gate.submit(&asked).await.unwrap() else {
        panic!("needs approval");
    };
    let asked_digest = gate.get(id).await.unwrap().unwrap().digest;
    gate.decide(
        id,
        Review::approve(Principal::human("kim@example.com").with_groups(["data-owners"]))
            .for_digest(asked_digest)
            .edit(json!({"rows": 200, "table": "customers"})),
    )
    .await
    .unwrap();
    let grant = gate.wait(id).await.unwrap();
    let edited = grant.edited_action().expect("the edited action").clone();
    let approved = grant.digest();
    gate.execute(grant, &edited, || async { Ok::<_, GuardError>(()) })
        .await
        .unwrap();
    sink.close().await.unwrap();

    let report = EvidenceReport::build(&path, &verifier(), &ReportOptions::default()).unwrap();
    assert!(report.verified(), "{}", report.verification);
    let r = report
        .requests
        .iter()
        .find(|r| r.request_id == id.to_string())
        .unwrap();
    assert_eq!(r.outcome, Outcome::Executed);
    assert_eq!(r.digest, approved.to_string(), "the approved digest");
    assert_ne!(r.digest, asked_digest.to_string());
    assert_eq!(r.approvers, ["kim@example.com"]);
    let detail = r.detail.as_deref().unwrap_or_default();
    assert!(
        detail.contains("edited by kim@example.com")
            && detail.contains("/rows: 800 → 200")
            && detail.contains(&asked_digest.to_string()),
        "{detail}"
    );
    assert!(report.to_html().contains("/rows: 800 → 200"));
}

/// A request approved with a passkey step-up, run through a real gate into the signed log:
/// the report names the step-up of each approval (HTML and CSV), the event says it in words,
/// and the proof in the log is the one the reviewer gave, checkable against the request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_up_approval_is_reported_with_its_proof() {
    use approvals_core::step_up::{StepUp, StepUpProof, challenge};
    use approvals_core::{
        ActionRequest, Gate, Initiator, Principal, Review, RulePolicy, Submission,
    };
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let sink = std::sync::Arc::new(
        approvals_audit::SignedLogSink::open(&path, scenario::sink_config(), signer(1)).unwrap(),
    );
    let gate = Gate::builder()
        .policy(
            RulePolicy::from_toml(
                "version = 1\ndefault = \"deny\"\n[[rules]]\nname = \"iam\"\nkind = \"iam.*\"\neffect = \"require_approval\"\napprovers = { groups = [\"security\"] }\nstep_up = \"passkey\"\n",
            )
            .unwrap(),
        )
        .audit_shared(sink.clone())
        .initiator(Initiator::agent("iam-bot"))
        .build()
        .unwrap();
    let Submission::Pending(id) = gate
        .submit(&ActionRequest::new(
            "iam.role.grant",
            "aws://iam/role/admin",
        ))
        .await
        .unwrap()
    else {
        panic!("needs approval");
    };
    let digest = gate.get(id).await.unwrap().unwrap().digest;
    let nonce = [5u8; 32];
    let client =
        json!({"type": "webauthn.get", "challenge": B64.encode(challenge(id, &digest, &nonce))})
            .to_string();
    let mut data = Sha256::digest(b"console.example.com").to_vec();
    data.push(0x05);
    data.extend_from_slice(&0u32.to_be_bytes());
    let proof = StepUpProof {
        method: StepUp::Passkey,
        rp_id: "console.example.com".into(),
        credential_id: B64.encode(b"credential-of-kim-0001"),
        nonce: B64.encode(nonce),
        client_data_json: B64.encode(client.as_bytes()),
        authenticator_data: B64.encode(&data),
        signature: B64.encode(b"signature"),
        public_key: r#"{"kty":"EC","crv":"SECP256R1","x":"AA","y":"AA","alg":"ES256"}"#.into(),
        user_present: true,
        user_verified: true,
        sign_count: 0,
    };
    gate.decide(
        id,
        Review::approve(Principal::human("kim@example.com").with_groups(["security"]))
            .step_up(proof.clone()),
    )
    .await
    .unwrap();
    sink.close().await.unwrap();

    // Sampled, so the HTML's sample table lists the request with its reviews.
    let mut options = ReportOptions::default();
    options.sample = Some((1, "seed".into()));
    let report = EvidenceReport::build(&path, &verifier(), &options).unwrap();
    assert!(report.verified(), "{}", report.verification);
    let r = report
        .requests
        .iter()
        .find(|r| r.request_id == id.to_string())
        .unwrap();
    let said = r.reviews[0]
        .step_up
        .as_deref()
        .expect("the step-up is reported");
    assert!(said.starts_with("passkey (credential "), "{said}");
    assert!(said.ends_with("user verified)"), "{said}");
    let html = report.to_html();
    assert!(html.contains("step-up: passkey"), "the HTML names it");
    let rows = parse_csv(&report.to_csv());
    let cells = column(&rows, "review_step_ups");
    assert!(
        cells
            .iter()
            .any(|c| c.starts_with("kim@example.com: passkey")),
        "{cells:?}"
    );

    // The log holds the proof itself, which is of this request and digest.
    let text = std::fs::read_to_string(&path).unwrap();
    let event: Value = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|l| l.get("event").cloned().unwrap_or(l))
        .find(|e| e["event"] == "reviewed")
        .expect("the reviewed event");
    let logged: StepUpProof = serde_json::from_value(event["step_up"].clone()).unwrap();
    assert_eq!(logged, proof);
    logged.check_binding(id, &digest).unwrap();
}
