//! Step-up on approve through Slack: a rule with `step_up` needs a passkey proof with every
//! approval, which only the review console takes. Its message offers nothing that approves
//! (no Approve, no "Edit and approve"), only a link button to the request's console page, and
//! Deny; a forged or stale Approve click is refused by the gate, audited, and opens no dialog;
//! a deny still works in Slack.

mod common;

use approvals_core::{GuardError, RejectCause, RequestState, Requirement, StaticPolicy, StepUp};
use approvals_slack::blocks::{
    ACTION_APPROVE, ACTION_DENY, ACTION_EDIT, ACTION_STEP_UP, REASON_CALLBACK_ID,
};
use approvals_slack::fake::Clicker;
use common::*;
use serde_json::Value;

const CONSOLE: &str = "https://approvals.example.com/";

/// One approval from `security`, each with a passkey proof.
fn step_up(reason_required: bool) -> Requirement {
    Requirement {
        step_up: Some(StepUp::Passkey),
        ..Requirement::groups(["security"]).reason_required(reason_required)
    }
}

async fn env(requirement: Requirement, console: bool) -> Env {
    let console = console.then(|| url::Url::parse(CONSOLE).expect("url"));
    Env::with_console(StaticPolicy::require(requirement), console, |b| b).await
}

/// The elements of the message's actions block.
fn buttons(message: &Value) -> Vec<Value> {
    message["blocks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["type"] == "actions")
        .flat_map(|b| b["elements"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// The text of the message's context blocks.
fn context(message: &Value) -> String {
    message["blocks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["type"] == "context")
        .map(|b| b["elements"][0]["text"].as_str().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn a_step_up_request_offers_no_approval_in_slack_only_a_link_to_its_console_page() {
    let env = env(step_up(false), true).await;
    let (id, ts) = env.submit_export().await;
    let message = env.message(&ts);
    approvals_slack::fake::validate_blocks(&message["blocks"]).expect("valid blocks");

    let buttons = buttons(&message);
    let ids: Vec<&str> = buttons
        .iter()
        .map(|b| b["action_id"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(ids, [ACTION_STEP_UP, ACTION_DENY], "{message}");
    let text = message["blocks"].to_string();
    for approving in [ACTION_APPROVE, ACTION_EDIT] {
        assert!(!text.contains(&format!("\"{approving}\"")), "{text}");
    }
    // The approval is a link to the request's console page, carrying nothing to click back.
    let link = &buttons[0];
    assert_eq!(link["text"]["text"], "Approve with passkey");
    assert_eq!(
        link["url"],
        format!("https://approvals.example.com/console/requests/{id}")
    );
    assert!(link.get("value").is_none(), "{link}");
    assert!(link.get("confirm").is_none(), "{link}");
    // Deny is the usual button, bound to the request and digest.
    let record = env.record(id).await;
    assert_eq!(
        env.button_value(&ts, ACTION_DENY),
        format!("{id} {}", record.digest)
    );
    let note = context(&message);
    assert!(
        note.contains("needs a passkey confirmation") && note.contains("Deny works here"),
        "{note}"
    );

    // The same rule without step-up offers the in-chat approval: the difference is the rule.
    let plain = self::env(Requirement::groups(["security"]), true).await;
    let (_, ts) = plain.submit_export().await;
    let plain_message = plain.message(&ts);
    let ids: Vec<String> = self::buttons(&plain_message)
        .iter()
        .map(|b| b["action_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(ids, [ACTION_APPROVE, ACTION_DENY]);
    assert!(!context(&plain_message).contains("passkey"));
}

#[tokio::test]
async fn without_a_console_url_a_step_up_request_offers_deny_only_and_says_where_to_approve() {
    let env = env(step_up(false), false).await;
    let (id, ts) = env.submit_export().await;
    let message = env.message(&ts);
    approvals_slack::fake::validate_blocks(&message["blocks"]).expect("valid blocks");
    let ids: Vec<String> = buttons(&message)
        .iter()
        .map(|b| b["action_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(ids, [ACTION_DENY], "{message}");
    assert!(!message.to_string().contains("\"url\""), "{message}");
    let note = context(&message);
    assert!(
        note.contains("passkey confirmation in the review console")
            && note.contains(&id.to_string()),
        "{note}"
    );
}

#[tokio::test]
async fn a_forged_approve_click_is_refused_audited_and_leaves_the_request_pending() {
    let env = env(step_up(false), true).await;
    let (id, ts) = env.submit_export().await;
    let record = env.record(id).await;
    // What an old message or an attacker sends: the Approve button's value, signed as Slack
    // signs it.
    let value = format!("{id} {}", record.digest);
    let url = env.fake.response_url("forged-approve");
    let response = env.click(&Clicker::new(SAM), ACTION_APPROVE, &value, &ts, &url);
    assert_eq!(response.status(), 200);

    let replies = env.replies(&url, 1).await;
    assert!(
        replies[0].starts_with("Not applied: This request needs a passkey confirmation"),
        "{replies:?}"
    );
    assert!(
        replies[0].contains(&format!(
            "https://approvals.example.com/console/requests/{id}"
        )),
        "the reply links the console page: {replies:?}"
    );
    let rejections = env.rejections(id);
    assert_eq!(rejections.len(), 1, "{rejections:?}");
    assert_eq!(rejections[0].0, RejectCause::StepUpRequired);
    settle().await;
    assert!(env.fake.calls_to("views.open").is_empty(), "no dialog");
    let now = env.record(id).await;
    assert_eq!(now.state, RequestState::Pending);
    assert!(now.reviews.is_empty());
}

#[tokio::test]
async fn a_forged_approve_click_needing_a_reason_is_refused_before_any_dialog_opens() {
    let env = env(step_up(true), true).await;
    let (id, ts) = env.submit_export().await;
    let record = env.record(id).await;
    let value = format!("{id} {}", record.digest);

    let url = env.fake.response_url("forged-approve");
    let response = env.click(&Clicker::new(SAM), ACTION_APPROVE, &value, &ts, &url);
    assert_eq!(response.status(), 200);
    let replies = env.replies(&url, 1).await;
    assert!(
        replies[0].starts_with("Not applied: This request needs a passkey confirmation"),
        "{replies:?}"
    );
    // "Edit and approve" is refused too: core's rule allows no edit under step-up.
    let url = env.fake.response_url("forged-edit");
    let response = env.click(&Clicker::new(SAM), ACTION_EDIT, &value, &ts, &url);
    assert_eq!(response.status(), 200);
    let replies = env.replies(&url, 1).await;
    assert!(replies[0].starts_with("Not applied:"), "{replies:?}");
    // A click on the link button is reported by Slack too; it decides nothing.
    let url = env.fake.response_url("link");
    let response = env.click(&Clicker::new(SAM), ACTION_STEP_UP, &value, &ts, &url);
    assert_eq!(response.status(), 200);
    settle().await;
    assert!(env.fake.responses_to(&url).is_empty());

    assert!(env.fake.calls_to("views.open").is_empty(), "no dialog");
    let causes: Vec<RejectCause> = env.rejections(id).into_iter().map(|(c, _)| c).collect();
    assert_eq!(causes, [RejectCause::StepUpRequired], "{causes:?}");
    let now = env.record(id).await;
    assert_eq!(now.state, RequestState::Pending);
    assert!(now.reviews.is_empty());
}

#[tokio::test]
async fn deny_still_works_in_slack_and_the_message_then_offers_nothing() {
    let env = env(step_up(false), true).await;
    let (id, ts) = env.submit_export().await;
    let url = env.fake.response_url("deny");
    let open = env
        .open_modal(&Clicker::new(ALEX), ACTION_DENY, &ts, &url)
        .await;
    let view = &open["view"];
    assert_eq!(view["submit"]["text"], "Deny");
    let meta = view["private_metadata"].as_str().expect("metadata");
    let submission =
        Clicker::new(ALEX).view_submission(REASON_CALLBACK_ID, meta, Some("Not this quarter"));
    assert_eq!(env.post(&submission).status(), 200);

    match env.gate.wait(id).await {
        Err(GuardError::Denied { by, reason, .. }) => {
            assert_eq!(by, "Alex Lead");
            assert_eq!(reason.as_deref(), Some("Not this quarter"));
        }
        other => panic!("expected a denial, got {other:?}"),
    }
    let replies = env.replies(&url, 1).await;
    assert!(replies[0].contains("You denied"), "{replies:?}");
    assert!(env.rejections(id).is_empty());
    eventually(
        || header(&env.message(&ts)).contains("Denied"),
        "message updated",
    )
    .await;
    let message = env.message(&ts);
    assert!(buttons(&message).is_empty(), "{message}");
    assert!(!context(&message).contains("passkey"), "{message}");
}
