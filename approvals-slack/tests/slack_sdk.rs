//! Our Block Kit payloads checked with Slack's own Python SDK (`slack_sdk.models`), not only
//! with our fake: every message state, hostile text of every class, long values that hit each
//! budget, previews cut and whole, both reason modals, edit on approve (the "Edit and
//! approve" button, the edit modal with hostile and long values, the "edited" block), and
//! step-up rules (the "Approve with passkey" link button). The SDK parses each block and view,
//! validates its limits, and must give back exactly what we sent (tests/python/check_blocks.py).
//!
//! Needs `python3 -m pip install -r .ci/requirements.txt`. Without it the test says so and is
//! skipped, except in CI (`CI=true`), where it fails.

use std::io::Write as _;
use std::process::{Command, Stdio};

use std::sync::Arc;

use approvals_core::edit::{EditRecord, FieldChange};
use approvals_core::lifecycle::needs_step_up;
use approvals_core::{Decision, Principal, RequestRecord, ReviewRecord, Verdict};
use approvals_slack::blocks::{
    ACTION_APPROVE, ACTION_EDIT, ACTION_STEP_UP, edit_modal, editable_fields, reason_modal,
    request_message, request_message_linked,
};
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
    let mut cases = Vec::new();
    for record in hostile::rendering_cases() {
        cases.extend(editable_and_edited(&record));
        cases.push(record);
    }
    let mut edit_buttons = 0;
    let mut step_up_links = 0;
    for record in cases {
        if let Ok(fields) = editable_fields(&record) {
            views.push(edit_modal(&record, &fields, true, "meta"));
            views.push(edit_modal(&record, &fields, false, "meta"));
        }
        let message = json!(request_message(&record).blocks);
        edit_buttons += usize::from(message.to_string().contains(ACTION_EDIT));
        let linked = json!(request_message_linked(&record, Some(&console)).blocks);
        if needs_step_up(&record).is_some() {
            // Nothing approves in the message of a step-up rule; pending, it links the console.
            for shown in [&message, &linked] {
                let text = shown.to_string();
                assert!(
                    !text.contains(ACTION_APPROVE) && !text.contains(ACTION_EDIT),
                    "{text}"
                );
            }
            step_up_links += usize::from(linked.to_string().contains(ACTION_STEP_UP));
        }
        messages.push(message);
        messages.push(linked);
        for verdict in [Verdict::Approve, Verdict::Deny] {
            views.push(reason_modal(&record, verdict, true, "meta"));
        }
    }
    assert!(edit_buttons > 0, "some messages offer Edit and approve");
    assert!(
        step_up_links >= 2,
        "pending step-up requests link the console: {step_up_links}"
    );
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

/// `record` with every top-level parameter editable (and no preview, which forbids edits),
/// and the same once a reviewer edited each of them to hostile text.
fn editable_and_edited(record: &RequestRecord) -> Vec<RequestRecord> {
    let mut editable = record.clone();
    Arc::make_mut(&mut editable.request.context).preview = None;
    let keys: Vec<String> = editable
        .request
        .params
        .as_object()
        .map(|o| {
            o.keys()
                .map(|k| format!("/{}", k.replace('~', "~0").replace('/', "~1")))
                .collect()
        })
        .unwrap_or_default();
    Arc::make_mut(&mut editable.requirement).editable = keys.clone();
    let mut edited = editable.clone();
    let changes = keys
        .iter()
        .filter_map(|k| {
            Some(FieldChange {
                field: k.clone(),
                before: editable.request.params.pointer(k)?.clone(),
                after: json!(format!("<!channel> *{}* {}", k, "\u{202E}x".repeat(300))),
            })
        })
        .collect();
    edited.reviews.push(ReviewRecord {
        reviewer: Principal::human("sam@example.com").with_name("Sam <!here> *Reviewer*"),
        verdict: Verdict::Approve,
        reason: None,
        channel: "slack".into(),
        at: approvals_testkit::fixtures::epoch(),
        edit: Some(Box::new(EditRecord {
            from: approvals_core::Digest([9; 32]),
            to: edited.digest,
            changes,
            decision: Decision::Allow { rule: None },
        })),
        step_up: None,
    });
    vec![editable, edited]
}
