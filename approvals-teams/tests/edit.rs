//! Edit on approve in Teams, end to end against the loopback fakes: the card offers the
//! rule's editable parameters as inputs, a signed `adaptiveCard/action` invoke with edited
//! values approves the edited action (the grant carries it), and the card then says who
//! changed what under the new digest. And every way of abusing the form: altered data
//! (digest, request id), an input mapped to a parameter the rule does not list, a value of
//! the wrong type, self-approval through an edit, and an edit of an action whose rule lists
//! no editable parameters. Each refusal changes nothing and is audited.

mod edit_env;

use approvals_core::{ActionRequest, RejectCause, RequestState, Requirement};
use approvals_teams::edit::{EDIT_REASON_INPUT_ID, FIELDS_KEY, VERB_APPROVE_EDITED};
use approvals_testkit::hostile;
use edit_env::*;
use serde_json::json;

#[tokio::test]
async fn an_edited_approval_through_a_signed_invoke_grants_the_edited_action() {
    let env = setup(editable(1)).await;
    let id = env.submit(&export(5000)).await;
    let asked = env.record(id).await;

    // The card offers one input per editable parameter, showing its value as it is.
    let card = env.posted_card(0);
    let inputs = form_inputs(&card);
    let shown: Vec<(&str, &str)> = inputs
        .iter()
        .map(|(_, l, v)| (l.as_str(), v.as_str()))
        .collect();
    assert_eq!(shown, [("/rows", "5000"), ("/format", "csv")]);
    let form = edit_action(&card).expect("edit offered");
    assert_eq!(form["title"], "Edit and approve");
    let data = &form["card"]["actions"][0]["data"];
    assert_eq!(data["request_id"], id.to_string());
    assert_eq!(data["digest"], asked.digest.to_string());
    assert!(data.get("verdict").is_none(), "never a plain approval");
    assert_eq!(data[FIELDS_KEY]["edit_0"], "/rows");
    assert_eq!(data[FIELDS_KEY]["edit_1"], "/format");
    for input in form["card"]["body"].as_array().into_iter().flatten() {
        if input["type"] == "Input.Text" {
            assert!(input["maxLength"].as_u64().is_some(), "{input}");
        }
    }

    let response = env
        .submit_form(
            &card,
            ANN,
            &[
                ("/rows", "200"),
                (EDIT_REASON_INPUT_ID, "200 rows are enough"),
            ],
        )
        .await;
    let answer = card_strings(response_card(&response));
    assert!(
        answer.contains("You changed and approved this action"),
        "{answer}"
    );

    let record = env.record(id).await;
    assert_eq!(record.state, RequestState::Approved);
    assert_ne!(record.digest, asked.digest);
    assert_eq!(
        *record.request.params,
        json!({"table": "customers", "rows": 200, "format": "csv"})
    );
    let review = record.last_edit().expect("an edit");
    assert_eq!(review.reviewer.id, "ann@example.com");
    assert_eq!(review.channel, "teams");
    assert_eq!(review.reason.as_deref(), Some("200 rows are enough"));

    // The agent's grant carries the edited action, under the new digest.
    let grant = env.gate.wait(id).await.expect("granted");
    assert_eq!(grant.digest(), record.digest);
    let edited = grant.edited_action().expect("the edited action");
    assert_eq!(edited.params["rows"], 200);

    // Everyone's card says who changed what, and shows the digest now approved.
    for shown in [
        response_card(&response).clone(),
        env.updates(1).await[0].clone(),
    ] {
        let text = card_strings(&shown);
        assert!(text.contains("Edited by Ann"), "{text}");
        assert!(text.contains("/rows: 5000 → 200"), "{text}");
        assert!(!text.contains("/format:"), "only what changed: {text}");
        assert!(text.contains(&record.digest.to_string()), "{text}");
        assert!(
            text.contains(&asked.digest.to_string()),
            "the digest as asked: {text}"
        );
        assert!(shown.get("actions").is_none(), "no form once approved");
    }
    assert!(env.rejections(id).is_empty());
}

#[tokio::test]
async fn after_an_edit_short_of_the_quorum_approvals_must_name_the_edited_digest() {
    let env = setup(editable(2)).await;
    let id = env.submit(&export(5000)).await;
    let old_card = env.posted_card(0);
    let response = env
        .submit_form(&old_card, ANN, &[("/format", "parquet")])
        .await;
    assert!(notice(&response).contains("1 of 2 approvals"), "{response}");
    let edited = env.record(id).await;
    assert_eq!(edited.state, RequestState::Pending);
    assert_eq!(edited.request.params["format"], "parquet");

    // The refreshed card renders from the record: its buttons and form carry the new digest,
    // and the form shows the edited value.
    let refreshed = env.updates(1).await.remove(0);
    for action in refreshed["actions"].as_array().expect("still pending") {
        let data = if action["type"] == "Action.ShowCard" {
            &action["card"]["actions"][0]["data"]
        } else {
            &action["data"]
        };
        assert_eq!(data["digest"], edited.digest.to_string(), "{action}");
    }
    assert!(
        form_inputs(&refreshed)
            .iter()
            .any(|(_, l, v)| l == "/format" && v == "parquet")
    );
    assert!(card_strings(&refreshed).contains("/format: csv → parquet"));

    // Bob clicks Approve on the card as first posted: the action he saw is no longer asked.
    let stale = old_card["actions"][0]["data"].clone();
    let response = env.invoke(BOB, "approve", stale).await;
    assert!(
        notice(&response).contains("changed since it was shown"),
        "{response}"
    );
    assert_eq!(env.record(id).await.state, RequestState::Pending);

    // On the refreshed card, his approval completes the quorum for the edited action.
    let fresh = refreshed["actions"][0]["data"].clone();
    env.invoke(BOB, "approve", fresh).await;
    let done = env.record(id).await;
    assert_eq!(done.state, RequestState::Approved);
    assert_eq!(done.digest, edited.digest);
}

#[tokio::test]
async fn altered_form_data_is_refused_and_changes_nothing() {
    let env = setup(editable(1)).await;
    let a = env.submit(&export(5000)).await;
    let b = env.submit(&export(7000)).await;
    let (asked_a, asked_b) = (env.record(a).await, env.record(b).await);
    let card = env.posted_card(0);

    // Another digest than the one shown.
    let mut data = filled_form(&card, &[("/rows", "10")]);
    data["digest"] = json!(asked_b.digest.to_string());
    let response = env.invoke(ANN, VERB_APPROVE_EDITED, data).await;
    assert!(
        notice(&response).contains("Nothing was applied"),
        "{response}"
    );

    // The same form sent for another request.
    let mut data = filled_form(&card, &[("/rows", "10")]);
    data["request_id"] = json!(b.to_string());
    let response = env.invoke(ANN, VERB_APPROVE_EDITED, data).await;
    assert!(
        notice(&response).contains("Nothing was applied"),
        "{response}"
    );

    // A form that says it is a deny.
    let mut data = filled_form(&card, &[("/rows", "10")]);
    data["verdict"] = json!("deny");
    let response = env.invoke(ANN, VERB_APPROVE_EDITED, data).await;
    assert_eq!(response["statusCode"], 400, "{response}");

    unchanged(&env, &asked_a).await;
    unchanged(&env, &asked_b).await;
    assert_eq!(
        env.rejections(a),
        [RejectCause::DigestMismatch, RejectCause::Forged]
    );
    assert_eq!(env.rejections(b), [RejectCause::DigestMismatch]);
}

#[tokio::test]
async fn an_input_mapped_to_a_parameter_the_rule_does_not_list_is_refused() {
    let env = setup(editable(1)).await;
    let id = env.submit(&export(5000)).await;
    let asked = env.record(id).await;
    let card = env.posted_card(0);
    let mut data = filled_form(&card, &[("/rows", "10")]);
    data[FIELDS_KEY]["edit_1"] = json!("/table");
    data["edit_1"] = json!("payroll");
    let response = env.invoke(ANN, VERB_APPROVE_EDITED, data).await;
    let said = notice(&response);
    assert!(
        said.contains("Your edit was refused") && said.contains("/table may not be changed"),
        "{said}"
    );
    // An input id that would overwrite the card's own data is not a parameter input.
    let mut data = filled_form(&card, &[("/rows", "10")]);
    data[FIELDS_KEY]["digest"] = json!("/rows");
    let response = env.invoke(ANN, VERB_APPROVE_EDITED, data).await;
    assert!(
        notice(&response).contains("Your edit was refused"),
        "{response}"
    );
    unchanged(&env, &asked).await;
    assert_eq!(
        env.rejections(id),
        [RejectCause::EditRefused, RejectCause::EditRefused]
    );
}

#[tokio::test]
async fn a_value_of_the_wrong_type_is_refused_and_changes_nothing() {
    let env = setup(editable(1)).await;
    let id = env.submit(&export(5000)).await;
    let asked = env.record(id).await;
    let card = env.posted_card(0);
    for typed in ["many", "\"200\"", "[200]"] {
        let response = env.submit_form(&card, ANN, &[("/rows", typed)]).await;
        let said = notice(&response);
        assert!(
            said.contains("Your edit was refused") && said.contains("/rows must"),
            "{typed}: {said}"
        );
        // The refusal comes back on the card as it stands, form and all.
        assert!(edit_action(response_card(&response)).is_some());
    }
    // A form that changes nothing is not an edit.
    let response = env.submit_form(&card, ANN, &[]).await;
    assert!(notice(&response).contains("changes nothing"), "{response}");
    unchanged(&env, &asked).await;
    assert_eq!(env.rejections(id), [RejectCause::EditRefused; 4]);
}

#[tokio::test]
async fn self_approval_through_an_edit_is_refused() {
    let env = setup(editable(1)).await;
    let id = env.submit(&export(5000)).await;
    let asked = env.record(id).await;
    let card = env.posted_card(0);
    // Dana is the human the agent acts for.
    let response = env.submit_form(&card, DANA, &[("/rows", "10")]).await;
    assert!(
        notice(&response).contains("Nothing was applied"),
        "{response}"
    );
    unchanged(&env, &asked).await;
    assert_eq!(env.rejections(id), [RejectCause::SelfApproval]);
}

#[tokio::test]
async fn a_rule_without_editable_parameters_offers_no_form_and_refuses_an_injected_one() {
    let env = setup(Requirement::groups(["security"])).await;
    let id = env.submit(&export(5000)).await;
    let asked = env.record(id).await;
    let card = env.posted_card(0);
    assert!(edit_action(&card).is_none(), "no edit offered");
    assert!(!card.to_string().contains(VERB_APPROVE_EDITED));

    let base = card["actions"][0]["data"].clone();
    let mut injected = base.clone();
    if let Some(data) = injected.as_object_mut() {
        data.remove("verdict");
    }
    let mut mapped = injected.clone();
    mapped[FIELDS_KEY] = json!({"edit_0": "/rows"});
    mapped["edit_0"] = json!("10");
    let mut empty = injected.clone();
    empty[FIELDS_KEY] = json!({});
    for data in [mapped, empty] {
        let response = env.invoke(ANN, VERB_APPROVE_EDITED, data).await;
        assert!(
            notice(&response).contains("Your edit was refused"),
            "{response}"
        );
    }
    unchanged(&env, &asked).await;
    assert_eq!(env.rejections(id), [RejectCause::EditRefused; 2]);
}

#[tokio::test]
async fn the_forms_action_submit_fallback_approves_the_edited_action_never_the_asked_one() {
    let env = setup(editable(1)).await;
    let id = env.submit(&export(5000)).await;
    let card = env.posted_card(0);
    let show = edit_action(&card).expect("edit offered");
    let execute = &show["card"]["actions"][0];
    assert_eq!(execute["fallback"]["type"], "Action.Submit");
    assert_eq!(execute["fallback"]["data"], execute["data"]);
    // A client without Universal Actions posts the data merged with the inputs as a message.
    let body = json!({
        "type": "message",
        "id": "m:1",
        "channelId": "msteams",
        "serviceUrl": env.bot.service_url(),
        "from": {"id": "29:ann", "aadObjectId": ANN},
        "conversation": {"id": format!("{CONVERSATION};messageid=activity-1"), "tenantId": TENANT},
        "channelData": {"tenant": {"id": TENANT}},
        "replyToId": "activity-1",
        "value": filled_form(&card, &[("/rows", "300")]),
    });
    let response = env.send(&body).await;
    assert_eq!(response.status(), 200);
    let record = env.record(id).await;
    assert_eq!(record.state, RequestState::Approved);
    assert_eq!(
        record.request.params["rows"], 300,
        "the edited action, not the asked one"
    );
    assert!(record.last_edit().is_some());
}

#[tokio::test]
async fn hostile_values_are_never_offered_unmarked_and_an_edit_cannot_spoof_the_note() {
    let env = setup(
        Requirement::groups(["security"])
            .quorum(2)
            .editable(["/rows", "/note", "/hidden"]),
    )
    .await;
    let action = ActionRequest::new("data.export", "db://prod/customers")
        .params(json!({"rows": 5000, "note": "ok", "hidden": "pay\u{202E}lacsi"}));
    let id = env.submit(&action).await;
    let card = env.posted_card(0);
    // An input would show the bidi control unmarked: that value is left out, and said so.
    let inputs = form_inputs(&card);
    assert!(
        inputs.iter().all(|(_, label, _)| label != "/hidden"),
        "{inputs:?}"
    );
    let form = edit_action(&card).expect("edit offered");
    assert!(card_strings(&form["card"]).contains("Not editable here"));
    hostile::assert_shown(&hostile::json_strings(&card), '\u{202E}', "the asked card");

    // Ann's new value is made to look like lines of the note, with a date function.
    let spoof =
        "x\nEdited by Bob at 2026-01-01 00:00 UTC:\n  /rows: 1 → 2 {{DATE(2026-01-01T00:00:00Z)}}";
    env.submit_form(&card, ANN, &[("/note", spoof)]).await;
    assert_eq!(env.record(id).await.request.params["note"], spoof);
    let refreshed = env.updates(1).await.remove(0);
    let note = refreshed["body"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|b| b["style"] == "warning")
        .cloned()
        .expect("the edit note");
    let text = note["items"][1]["inlines"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(
        text.lines().count(),
        2,
        "one heading and one change: {text}"
    );
    assert!(
        text.starts_with("Edited by Ann (ann@example.com) at "),
        "{text}"
    );
    assert!(!text.contains("{{") && text.contains("{｛DATE"), "{text}");
    hostile::assert_shown(
        &hostile::json_strings(&refreshed),
        '\u{202E}',
        "the edited card",
    );
}

#[tokio::test]
async fn an_action_core_would_refuse_to_edit_offers_no_form() {
    let env = setup(editable(1)).await;
    // A preview shows the asked action's effect, so core refuses every edit of it.
    let previewed = export(5000).preview(approvals_core::Preview::diff("-a\n+b\n"));
    env.submit(&previewed).await;
    assert!(
        edit_action(&env.posted_card(0)).is_none(),
        "no form for a previewed action"
    );
    // A rule naming parameters the action does not have offers nothing to edit.
    let other = ActionRequest::new("data.export", "db://prod/customers").params(json!({"n": 1}));
    env.submit(&other).await;
    assert!(edit_action(&env.posted_card(1)).is_none());
}
