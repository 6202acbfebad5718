//! Our Block Kit payloads checked with Slack's own Python SDK (`slack_sdk.models`), not only
//! with our fake: every message state, hostile text of every class, long values that hit each
//! budget, previews cut and whole, and both reason modals. The SDK parses each block and view,
//! validates its limits, and must give back exactly what we sent (tests/python/check_blocks.py).
//!
//! Needs `python3 -m pip install -r .ci/requirements.txt`. Without it the test says so and is
//! skipped, except in CI (`CI=true`), where it fails.

use std::io::Write as _;
use std::process::{Command, Stdio};

use approvals_core::Verdict;
use approvals_slack::blocks::{reason_modal, request_message, request_message_linked};
use approvals_testkit::hostile;
use serde_json::json;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/check_blocks.py");

fn sdk_missing() -> bool {
    let found = Command::new("python3")
        .args(["-c", "import slack_sdk.models.blocks"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return false;
    }
    let why =
        "python3 with slack_sdk is missing: run `python3 -m pip install -r .ci/requirements.txt`";
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
    eprintln!("SKIPPED: {why}");
    true
}

#[test]
fn slacks_own_sdk_accepts_every_message_and_modal_as_sent() {
    if sdk_missing() {
        return;
    }
    let console = url::Url::parse("https://approvals.example.com/").expect("url");
    let mut messages = Vec::new();
    let mut views = Vec::new();
    for record in hostile::rendering_cases() {
        messages.push(json!(request_message(&record).blocks));
        messages.push(json!(
            request_message_linked(&record, Some(&console)).blocks
        ));
        for verdict in [Verdict::Approve, Verdict::Deny] {
            views.push(reason_modal(&record, verdict, true, "meta"));
        }
    }
    let payload = json!({"messages": messages, "views": views});
    let mut child = Command::new("python3")
        .arg(SCRIPT)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(payload.to_string().as_bytes())
        .expect("payloads written");
    let out = child.wait_with_output().expect("the check ends");
    let report = String::from_utf8_lossy(&out.stdout);
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "slack_sdk refused what we send:\n{report}\n{summary}"
    );
    let blocks: usize = messages
        .iter()
        .map(|m| m.as_array().map_or(0, Vec::len))
        .sum();
    assert!(
        summary.contains(&format!(
            "checked {blocks} blocks and {} views",
            views.len()
        )),
        "{summary}"
    );
}
