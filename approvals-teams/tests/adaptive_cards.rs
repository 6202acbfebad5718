//! Our Teams cards checked with Microsoft's own Adaptive Cards library (npm `adaptivecards`),
//! not only with our fake: every state, hostile text of every class, long values that make
//! the card shrink its budgets, previews cut and whole, notices, the refresh and the console
//! link. The library parses each card with no event, validates its properties, and gives
//! back what we sent (tests/node/check_cards.js).
//!
//! Needs `cd .ci/node && npm ci` (and Node). Without it the test says so and is skipped,
//! except in CI (`CI=true`), where it fails.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

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
    for record in hostile::rendering_cases() {
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
