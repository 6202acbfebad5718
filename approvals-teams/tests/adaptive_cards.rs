//! Our Teams cards checked with Microsoft's own Adaptive Cards library (npm `adaptivecards`),
//! not only with our fake: every state, hostile text of every class, long values that make
//! the card shrink its budgets, previews cut and whole, notices, the refresh and the console
//! link, the "Edit and approve" form (reason optional and required, hostile values offered
//! and left out), the note on a card whose action was edited, and the "Approve with passkey"
//! link of a step-up rule. The library parses each card with no event, validates its properties, and gives
//! back what we sent (tests/node/check_cards.js).
//!
//! Needs `cd .ci/node && npm ci` (and Node). Without it the test says so and is skipped,
//! except in CI (`CI=true`), where it fails.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use std::sync::Arc;

use approvals_core::lifecycle::needs_step_up;
use approvals_core::{
    ActionRequest, Gate, Initiator, MemorySink, MemoryStore, Principal, RequestRecord, Requirement,
    Review, StaticPolicy, Submission,
};
use approvals_teams::card::STEP_UP_ACTION_ID;
use approvals_teams::{CardOptions, Notice, request_card};
use approvals_testkit::hostile;
use serde_json::{Value, json};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/node/check_cards.js");

fn library() -> Option<PathBuf> {
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../.ci/node/node_modules/adaptivecards/dist/adaptivecards.js"
    ));
    let node = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if path.exists() && node {
        return Some(path);
    }
    let why = "Node and the adaptivecards package are needed: run `cd .ci/node && npm ci`";
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
    eprintln!("SKIPPED: {why}");
    None
}

#[test]
fn microsofts_own_library_accepts_every_card_as_sent() {
    let Some(library) = library() else {
        return;
    };
    let mut linked = CardOptions::default();
    linked.refresh_user_ids = vec!["29:1abc".into(), "29:2def".into()];
    linked.console_url = Some(url::Url::parse("https://approvals.example.com/").expect("url"));
    let mut cards: Vec<Value> = Vec::new();
    let mut step_up_links = 0;
    for record in hostile::rendering_cases() {
        if needs_step_up(&record).is_some() {
            // Nothing approves on the card of a step-up rule; pending, it links the console.
            for options in [&CardOptions::default(), &linked] {
                let card = request_card(&record, options, None).to_string();
                assert!(!card.contains("\"approve\"") && !card.contains("Action.ShowCard"));
                step_up_links += usize::from(card.contains(STEP_UP_ACTION_ID));
            }
        }
        cards.push(request_card(&record, &CardOptions::default(), None));
        cards.push(request_card(
            &record,
            &linked,
            Some(&Notice::refused("Already decided")),
        ));
        cards.push(request_card(
            &record,
            &linked,
            Some(&Notice::applied("Approved")),
        ));
    }
    for record in edit_cases() {
        cards.push(request_card(&record, &CardOptions::default(), None));
        cards.push(request_card(
            &record,
            &linked,
            Some(&Notice::applied("You changed and approved this action")),
        ));
    }
    assert!(
        cards
            .iter()
            .any(|c| c.to_string().contains("Action.ShowCard")),
        "an edit form is checked"
    );
    assert!(
        step_up_links >= 2,
        "pending step-up requests link the console: {step_up_links}"
    );
    let mut child = Command::new("node")
        .arg(SCRIPT)
        .arg(&library)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(json!(cards).to_string().as_bytes())
        .expect("cards written");
    let out = child.wait_with_output().expect("the check ends");
    let report = String::from_utf8_lossy(&out.stdout);
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the Adaptive Cards library refused what we send:\n{report}\n{summary}"
    );
    assert!(
        summary.contains(&format!("checked {} cards", cards.len())),
        "{summary}"
    );
}

/// Records of an editable action through a real gate: as asked (form offered, reason optional
/// and required, with hostile values, one of which is offered and one left out), edited short
/// of the quorum (form and edit note), and edited to approval (note only).
fn edit_cases() -> Vec<RequestRecord> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut out = Vec::new();
        for (quorum, reason_required) in [(1, false), (2, true)] {
            let store = Arc::new(MemoryStore::new());
            let requirement = Requirement::groups(["security"])
                .quorum(quorum)
                .reason_required(reason_required)
                .editable(["/rows", "/note", "/hidden", "/tags"]);
            let gate = Gate::builder()
                .policy(StaticPolicy::require(requirement))
                .store_shared(store)
                .audit(MemorySink::new())
                .initiator(Initiator::agent("export-bot"))
                .build()
                .expect("gate");
            let action = ActionRequest::new("data.export", "db://prod/customers").params(json!({
                "rows": 5000,
                "note": "**bold** [x](https://e.vil) {{DATE(2026-01-01T00:00:00Z)}}\nline two",
                "hidden": "a\u{202E}b",
                "tags": ["a", "b"],
            }));
            let Ok(Submission::Pending(id)) = gate.submit(&action).await else {
                panic!("pending");
            };
            let asked = gate.get(id).await.expect("get").expect("stored");
            out.push(asked.clone());
            let editor = Principal::human("ann@example.com")
                .with_name("**Ann** [x](https://e.vil) {{DATE(2026-01-01T00:00:00Z)}}")
                .with_groups(["security"]);
            let mut edited = (*asked.request.params).clone();
            edited["rows"] = json!(200);
            edited["note"] = json!("*changed*\n- list {{TIME(2026-01-01T00:00:00Z)}}");
            gate.decide(
                id,
                Review::approve(editor)
                    .for_digest(asked.digest)
                    .edit(edited)
                    .reason("fewer rows"),
            )
            .await
            .expect("edited");
            out.push(gate.get(id).await.expect("get").expect("stored"));
        }
        out
    })
}
