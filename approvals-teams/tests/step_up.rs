//! Step-up on approve through Teams: a rule with `step_up` needs a passkey proof with every
//! approval, which only the review console takes. Its card offers nothing that approves (no
//! Approve `Action.Execute` or `Action.Submit`, no "Edit and approve" form), only an
//! `Action.OpenUrl` to the request's console page, and Deny; a forged Approve invoke, signed
//! as the Bot Connector signs it, is refused by the gate and audited; a deny still works.

mod edit_env;

use approvals_core::{RejectCause, RequestState, Requirement, StepUp};
use approvals_teams::card::{STEP_UP_ACTION_ID, VERB_APPROVE, VERB_DENY};
use approvals_teams::edit::{FIELDS_KEY, VERB_APPROVE_EDITED};
use edit_env::*;
use serde_json::{Value, json};

const CONSOLE: &str = "https://approvals.example.com/";

/// One approval from `security`, each with a passkey proof.
fn step_up() -> Requirement {
    Requirement {
        step_up: Some(StepUp::Passkey),
        ..Requirement::groups(["security"])
    }
}

async fn env(requirement: Requirement, console: bool) -> Env {
    setup_linked(
        requirement,
        console.then(|| url::Url::parse(CONSOLE).expect("url")),
    )
    .await
}

fn actions(card: &Value) -> Vec<Value> {
    card["actions"].as_array().cloned().unwrap_or_default()
}

/// The card data a Deny (or a forged Approve) carries: the request, the digest and the verb.
fn data(id: approvals_core::RequestId, digest: approvals_core::Digest, verb: &str) -> Value {
    json!({"request_id": id.to_string(), "digest": digest.to_string(), "verdict": verb})
}

#[tokio::test]
async fn a_step_up_card_offers_no_approval_only_a_link_to_the_console_page_and_deny() {
    let env = env(step_up(), true).await;
    let id = env.submit(&export(5000)).await;
    let card = env.posted_card(0);
    let actions = actions(&card);
    assert_eq!(actions.len(), 2, "{card}");

    let link = &actions[0];
    assert_eq!(link["type"], "Action.OpenUrl");
    assert_eq!(link["id"], STEP_UP_ACTION_ID);
    assert_eq!(link["title"], "Approve with passkey");
    assert_eq!(
        link["url"],
        format!("https://approvals.example.com/console/requests/{id}")
    );
    assert!(link.get("data").is_none() && link.get("verb").is_none());

    let deny = &actions[1];
    assert_eq!(deny["type"], "Action.Execute");
    assert_eq!(deny["verb"], VERB_DENY);
    assert_eq!(deny["fallback"]["type"], "Action.Submit");
    // Nowhere on the card, fallbacks and forms included, is there anything that approves.
    let text = card.to_string();
    for approving in [VERB_APPROVE, VERB_APPROVE_EDITED] {
        assert!(!text.contains(&format!("\"{approving}\"")), "{text}");
    }
    assert!(!text.contains("Action.ShowCard"), "{text}");
    let strings = card_strings(&card);
    assert!(
        strings.contains("needs a passkey confirmation") && strings.contains("Deny works here"),
        "{strings}"
    );

    // The same rule without step-up offers the in-card approval: the difference is the rule.
    let plain = self::env(Requirement::groups(["security"]), true).await;
    plain.submit(&export(5000)).await;
    let card = plain.posted_card(0);
    let verbs: Vec<Value> = self::actions(&card)
        .iter()
        .map(|a| a["verb"].clone())
        .collect();
    assert_eq!(verbs, [json!(VERB_APPROVE), json!(VERB_DENY)]);
    assert!(!card_strings(&card).contains("passkey"));
}

#[tokio::test]
async fn without_a_console_url_a_step_up_card_offers_deny_only_and_says_where_to_approve() {
    let env = env(step_up(), false).await;
    env.submit(&export(5000)).await;
    let card = env.posted_card(0);
    let actions = actions(&card);
    assert_eq!(actions.len(), 1, "{card}");
    assert_eq!(actions[0]["verb"], VERB_DENY);
    assert!(!card.to_string().contains("Action.OpenUrl"), "{card}");
    let strings = card_strings(&card);
    assert!(
        strings.contains("passkey confirmation in the review console"),
        "{strings}"
    );
}

#[tokio::test]
async fn a_forged_approve_invoke_is_refused_audited_and_leaves_the_request_pending() {
    let env = env(step_up(), true).await;
    let id = env.submit(&export(5000)).await;
    let asked = env.record(id).await;

    // What an old card or an attacker sends: an Approve of the request at its digest.
    let response = env
        .invoke(ANN, VERB_APPROVE, data(id, asked.digest, VERB_APPROVE))
        .await;
    let said = notice(&response);
    assert!(
        said.contains("needs a passkey confirmation for each approval")
            && said.contains("review console"),
        "{said}"
    );
    // The card sent back is the current one: still no approval, the link to the console.
    let card = response_card(&response);
    assert!(!card.to_string().contains(&format!("\"{VERB_APPROVE}\"")));
    assert!(card.to_string().contains(STEP_UP_ACTION_ID), "{card}");
    // An edited approval is refused as well (core's rule allows no edit under step-up).
    let form = json!({
        "request_id": id.to_string(),
        "digest": asked.digest.to_string(),
        FIELDS_KEY: {"edit_0": "/rows"},
        "edit_0": "10",
    });
    let response = env.invoke(ANN, VERB_APPROVE_EDITED, form).await;
    assert!(
        notice(&response).contains("Nothing was applied"),
        "{response}"
    );

    assert_eq!(
        env.rejections(id),
        [RejectCause::StepUpRequired, RejectCause::EditRefused]
    );
    unchanged(&env, &asked).await;
}

#[tokio::test]
async fn deny_still_works_in_teams() {
    let env = env(step_up(), true).await;
    let id = env.submit(&export(5000)).await;
    let asked = env.record(id).await;
    let mut deny = data(id, asked.digest, VERB_DENY);
    deny["reason"] = json!("Not this quarter");
    let response = env.invoke(BOB, VERB_DENY, deny).await;
    assert!(
        notice(&response).contains("You denied this request"),
        "{response}"
    );
    let now = env.record(id).await;
    assert_eq!(now.state, RequestState::Denied);
    assert!(env.rejections(id).is_empty());
    // The card no longer offers anything, the link to approve included.
    let card = response_card(&response);
    assert!(card.get("actions").is_none(), "{card}");
    assert!(!card.to_string().contains(STEP_UP_ACTION_ID), "{card}");
}
