//! Untrusted text on Slack: every hostile character of the cross-surface table is shown as a
//! visible marker in every block, modal and fallback text; a link whose address hides a
//! character is inert text; and no number of long hostile names pushes a field past its Block
//! Kit limit, end to end through the fake (which refuses what Slack refuses).

mod common;

use approvals_core::{Principal, RequestState, Requirement, StaticIdentityResolver, Verdict};
use approvals_slack::blocks::{ACTION_APPROVE, reason_modal, request_message};
use approvals_slack::fake::{self, Clicker};
use approvals_slack::limits;
use approvals_testkit::hostile;
use common::*;
use serde_json::{Value, json};

/// What a reviewer sees of a message and its modals: every string of the blocks, the fallback
/// text and both reason modals; each is also checked against Slack's limits.
fn rendered(record: &approvals_core::RequestRecord) -> String {
    let message = request_message(record);
    let blocks = json!(message.blocks);
    fake::validate_blocks(&blocks).expect("within Block Kit limits");
    let mut out = hostile::json_strings(&blocks);
    out.push_str(&message.text);
    for verdict in [Verdict::Approve, Verdict::Deny] {
        let modal = reason_modal(record, verdict, false, "meta");
        fake::validate_view(&modal).expect("a valid modal");
        out.push_str(&hostile::json_strings(&modal));
    }
    out
}

#[test]
fn every_hostile_character_is_shown_as_a_visible_marker() {
    for &(c, what) in hostile::CHARS {
        for state in [
            RequestState::Pending,
            RequestState::Denied,
            RequestState::Failed,
        ] {
            let mut record = hostile::record(&format!("x{c}y"), state);
            // The Approve button's confirmation dialog shows kind and resource too.
            std::sync::Arc::make_mut(&mut record.requirement).reason_required = false;
            hostile::assert_shown(&rendered(&record), c, &format!("{what} ({state})"));
        }
    }
    for s in hostile::STRINGS {
        hostile::assert_clean(&rendered(&hostile::record(s, RequestState::Pending)), s);
    }
}

fn link_urls(blocks: &[Value]) -> Vec<String> {
    let mut urls = Vec::new();
    for b in blocks.iter().filter(|b| b["type"] == "rich_text") {
        for section in b["elements"].as_array().into_iter().flatten() {
            for e in section["elements"].as_array().into_iter().flatten() {
                if e["type"] == "link" {
                    urls.push(e["url"].as_str().unwrap_or_default().to_owned());
                }
            }
        }
    }
    urls
}

#[test]
fn a_link_whose_address_hides_a_character_is_inert_text() {
    let spoof = "https://good.example/\u{202E}gpj.exe";
    let mut record = hostile::record("", RequestState::Pending);
    let ctx = std::sync::Arc::make_mut(&mut record.request.context);
    ctx.links = vec![
        approvals_core::Link {
            label: "download".into(),
            url: spoof.into(),
        },
        approvals_core::Link {
            label: "runbook".into(),
            url: "https://good.example/x".into(),
        },
    ];
    let message = request_message(&record);
    let urls = link_urls(&message.blocks);
    assert_eq!(
        urls,
        ["https://good.example/x"],
        "only the plain address is a link"
    );
    let shown = hostile::json_strings(&json!(message.blocks));
    assert!(
        shown.contains("https://good.example/‹U+202E›gpj.exe"),
        "the hidden character is shown: {shown}"
    );
    hostile::assert_clean(&shown, "links");
}

const REVIEWERS: usize = 16;

fn reviewer_id(i: usize) -> String {
    format!("U0REV{i:05}")
}

/// Sixteen security reviewers whose names are 90 characters of `<&>` (390 once escaped).
fn hostile_reviewers() -> StaticIdentityResolver {
    (0..REVIEWERS).fold(StaticIdentityResolver::new(), |resolver, i| {
        resolver.map(
            "slack",
            reviewer_id(i),
            Principal::human(format!("reviewer{i}@example.com"))
                .with_name(format!("{}{i}", "<&>".repeat(30)))
                .with_groups(["security"]),
        )
    })
}

/// The attack suite's case: a status line past 3,000 characters made Slack answer
/// `invalid_blocks`, and the message kept its stale buttons. Every update must be accepted,
/// the last one without buttons.
#[tokio::test]
async fn sixteen_approvers_with_long_hostile_names_fit_every_update() {
    let env = Env::with(
        Requirement::groups(["security"]).quorum(REVIEWERS as u32),
        |b| b.identities(hostile_reviewers()),
    )
    .await;
    let (id, ts) = env.submit_export().await;
    let value = env.button_value(&ts, ACTION_APPROVE);
    for i in 0..REVIEWERS {
        let url = env.fake.response_url(&format!("approve-{i}"));
        let clicker = Clicker::new(&reviewer_id(i));
        assert_eq!(
            env.click(&clicker, ACTION_APPROVE, &value, &ts, &url)
                .status(),
            200
        );
        env.replies(&url, 1).await;
    }
    let grant = env.gate.wait(id).await.expect("approved");
    assert_eq!(grant.approvers().len(), REVIEWERS);
    eventually(
        || status(&env.message(&ts)).starts_with("*Approved*"),
        "the approval shown on the message",
    )
    .await;
    let message = env.message(&ts);
    let status = status(&message);
    assert!(
        status.chars().count() <= limits::MAX_SECTION_TEXT_CHARS,
        "{} characters",
        status.chars().count()
    );
    assert!(
        status.contains(&format!("({REVIEWERS} of {REVIEWERS})")),
        "{status}"
    );
    assert!(
        status.contains(" more "),
        "names past the budget are counted: {status}"
    );
    assert!(
        find_button(&message["blocks"], ACTION_APPROVE).is_none(),
        "no stale buttons"
    );
    fake::validate_blocks(&message["blocks"]).expect("within Block Kit limits");
    // No update was refused on the way.
    let refused: Vec<_> = env
        .fake
        .calls_to("chat.update")
        .into_iter()
        .filter(|c| fake::validate_blocks(&c.body["blocks"]).is_err())
        .collect();
    assert!(refused.is_empty(), "{} updates refused", refused.len());
}
