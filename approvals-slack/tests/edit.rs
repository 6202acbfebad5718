//! Edit on approve through Slack, end to end through signed interactivity payloads and the
//! fake Slack: the "Edit and approve" button, the edit modal opened with `views.open`, its
//! `view_submission` decided by a real gate, the message re-rendered with the change; and the
//! attacks: altered metadata, a parameter that is not editable, a wrong type, self-approval,
//! and an edit injected on a request whose rule allows none.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use approvals_core::{
    IdentityError, IdentityResolver, Principal, RejectCause, RequestState, Requirement, RulePolicy,
};
use approvals_slack::blocks::{
    ACTION_APPROVE, ACTION_EDIT, EDIT_CALLBACK_ID, REASON_BLOCK_ID, REASON_CALLBACK_ID,
};
use approvals_slack::fake::{self, Clicker};
use approvals_slack::{SocketMode, Token};
use bytes::Bytes;
use common::*;
use serde_json::{Value, json};

const ROWS: &str = "approvals.edit:/rows";

fn editable() -> Requirement {
    Requirement::groups(["security"]).editable(["/rows"])
}

/// A signed `view_submission` of the edit modal by `who`, with `values` typed per block id
/// (the reason left empty), through the waiting handler.
async fn submit_edit(
    env: &Env,
    who: &Clicker,
    meta: &str,
    values: &[(&str, &str)],
) -> http::Response<Bytes> {
    let mut payload = who.view_submission(EDIT_CALLBACK_ID, meta, None);
    for (block, value) in values {
        payload["view"]["state"]["values"][*block] =
            json!({"value": {"type": "plain_text_input", "value": value}});
    }
    let request = fake::signed_request(&env.secret, fake::now(), fake::form_body(&payload));
    env.interactions.handle_async(request).await
}

fn body(response: &http::Response<Bytes>) -> Value {
    serde_json::from_slice(response.body()).unwrap_or(Value::Null)
}

fn inputs(view: &Value) -> Vec<Value> {
    view["blocks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["type"] == "input")
        .cloned()
        .collect()
}

#[tokio::test]
async fn edit_and_approve_opens_a_modal_and_approves_the_edited_action() {
    let env = Env::new(editable().quorum(2)).await;
    let (id, ts) = env.submit_export().await;
    let asked = env.record(id).await;

    // The button sits beside Approve and Deny, bound to the same id and digest.
    let value = env.button_value(&ts, ACTION_EDIT);
    assert_eq!(value, env.button_value(&ts, ACTION_APPROVE));
    assert_eq!(value, format!("{id} {}", asked.digest));

    // The modal: one input per editable parameter the action has, holding its value.
    let url = env.fake.response_url("edit-1");
    let open = env
        .open_modal(&Clicker::new(SAM), ACTION_EDIT, &ts, &url)
        .await;
    let view = &open["view"];
    assert_eq!(view["callback_id"], EDIT_CALLBACK_ID);
    fake::validate_view(view).expect("a valid modal");
    let fields = inputs(view);
    assert_eq!(fields.len(), 2, "rows, then the reason: {view}");
    assert_eq!(fields[0]["block_id"], ROWS);
    assert_eq!(fields[0]["label"]["text"], "/rows");
    assert_eq!(fields[0]["element"]["initial_value"], "5000");
    assert_eq!(fields[1]["block_id"], REASON_BLOCK_ID);
    assert_eq!(fields[1]["optional"], true);
    assert!(view.to_string().contains(&asked.digest.to_string()));
    assert_eq!(env.record(id).await.state, RequestState::Pending);

    let meta = view["private_metadata"].as_str().expect("metadata");
    let response = submit_edit(&env, &Clicker::new(SAM), meta, &[(ROWS, " 200 ")]).await;
    assert_eq!(response.status(), 200);
    assert!(
        response.body().is_empty(),
        "an empty 200 closes the modal: {:?}",
        response.body()
    );

    // The edit is the first of two approvals of the edited action.
    let record = env.record(id).await;
    assert_eq!(record.state, RequestState::Pending);
    assert_eq!(record.request.params["rows"], 200);
    assert_eq!(record.request.params["format"], "csv");
    assert_ne!(record.digest, asked.digest);
    assert_eq!(record.asked_digest(), asked.digest);
    let replies = env.replies(&url, 1).await;
    assert!(replies[0].contains("1 of 2 approvals"), "{replies:?}");

    // The message shows who edited it and the change, and its buttons name the new digest.
    eventually(
        || {
            env.message(&ts)
                .to_string()
                .contains("Edited* by Sam Reviewer")
        },
        "message shows the edit",
    )
    .await;
    let message = env.message(&ts);
    let text = message.to_string();
    assert!(text.contains("/rows: 5000 → 200"), "{text}");
    assert!(text.contains(&record.digest.to_string()), "{text}");
    assert!(text.contains(&asked.digest.short()), "{text}");
    let value = env.button_value(&ts, ACTION_APPROVE);
    assert_eq!(value, format!("{id} {}", record.digest));

    // A second reviewer approves what they now see; the grant carries the edited action.
    let url = env.fake.response_url("approve-2");
    env.click(&Clicker::new(ALEX), ACTION_APPROVE, &value, &ts, &url);
    let grant = env.gate.wait(id).await.expect("approved");
    assert_eq!(grant.digest(), record.digest);
    let action = grant.edited_action().expect("the edited action");
    assert_eq!(action.params["rows"], 200);
    assert_eq!(grant.approvers().len(), 2);
}

#[tokio::test]
async fn altered_metadata_is_refused_in_the_modal_and_audited() {
    let env = Env::new(editable()).await;
    let (id, ts) = env.submit_export().await;
    let (other, _) = env
        .submit(export().params(json!({"rows": 7000, "format": "csv"})))
        .await;
    let asked = env.record(id).await;
    let url = env.fake.response_url("edit-1");
    let open = env
        .open_modal(&Clicker::new(SAM), ACTION_EDIT, &ts, &url)
        .await;
    let meta = open["view"]["private_metadata"]
        .as_str()
        .expect("metadata")
        .to_owned();
    let digest = asked.digest.to_string();
    assert!(meta.contains(digest.trim_start_matches("sha256:")) || meta.contains(&digest));
    let other_digest = env.record(other).await.digest.to_string();
    for forged in [
        meta.replacen(&id.to_string(), &other.to_string(), 1),
        meta.replacen(&digest, &other_digest, 1),
    ] {
        assert_ne!(forged, meta);
        let response = submit_edit(&env, &Clicker::new(SAM), &forged, &[(ROWS, "10")]).await;
        let answer = body(&response);
        assert_eq!(answer["response_action"], "errors", "{answer}");
        assert!(
            answer["errors"][REASON_BLOCK_ID]
                .as_str()
                .is_some_and(|e| e.contains("not valid any more")),
            "{answer}"
        );
    }
    // The edit modal's metadata is no good in the reason modal either.
    let reason = Clicker::new(SAM).view_submission(REASON_CALLBACK_ID, &meta, Some("ok"));
    assert_eq!(body(&env.post(&reason))["response_action"], "errors");
    settle().await;
    for (id, rows) in [(id, 5000), (other, 7000)] {
        let record = env.record(id).await;
        assert_eq!(record.state, RequestState::Pending);
        assert_eq!(record.request.params["rows"], rows);
        assert!(record.reviews.is_empty());
    }
    assert!(
        env.rejections(id)
            .iter()
            .chain(env.rejections(other).iter())
            .any(|(cause, _)| *cause == RejectCause::Forged),
        "forged metadata is audited"
    );
}

#[tokio::test]
async fn a_parameter_that_is_not_editable_or_of_the_wrong_type_is_refused_in_the_modal() {
    let env = Env::new(editable()).await;
    let (id, ts) = env.submit_export().await;
    let asked = env.record(id).await;
    let url = env.fake.response_url("edit-1");
    let open = env
        .open_modal(&Clicker::new(SAM), ACTION_EDIT, &ts, &url)
        .await;
    let meta = open["view"]["private_metadata"]
        .as_str()
        .expect("metadata")
        .to_owned();
    let sam = Clicker::new(SAM);

    // A value for a parameter the rule does not let reviewers edit.
    let injected = "approvals.edit:/format";
    let response = submit_edit(&env, &sam, &meta, &[(ROWS, "5000"), (injected, "json")]).await;
    let answer = body(&response);
    assert_eq!(answer["response_action"], "errors", "{answer}");
    let error = answer["errors"][injected].as_str().unwrap_or_default();
    assert!(error.contains("may not be changed"), "{answer}");

    // A word where a number belongs: shown under the input, nothing changes.
    let response = submit_edit(&env, &sam, &meta, &[(ROWS, "many")]).await;
    let answer = body(&response);
    let error = answer["errors"][ROWS].as_str().unwrap_or_default();
    assert!(error.contains("must be a number"), "{answer}");
    // Unchanged: refused by the gate's bounds, shown in the modal too.
    let response = submit_edit(&env, &sam, &meta, &[(ROWS, "5000")]).await;
    let answer = body(&response);
    assert!(
        answer["errors"][ROWS]
            .as_str()
            .is_some_and(|e| e.contains("changes nothing")),
        "{answer}"
    );

    let record = env.record(id).await;
    assert_eq!(record.state, RequestState::Pending);
    assert_eq!(record.digest, asked.digest);
    assert_eq!(record.request.params, asked.request.params);
    assert!(record.reviews.is_empty());
    assert!(
        env.rejections(id)
            .iter()
            .filter(|(cause, _)| *cause == RejectCause::EditRefused)
            .count()
            >= 3,
        "{:?}",
        env.rejections(id)
    );

    // Without waiting (`handle`), a refused edit is told in an ephemeral reply instead.
    let mut payload = sam.view_submission(EDIT_CALLBACK_ID, &meta, None);
    payload["view"]["state"]["values"][ROWS] =
        json!({"value": {"type": "plain_text_input", "value": "\"ten\""}});
    let response = env.post(&payload);
    assert_eq!(response.status(), 200);
    let replies = env.replies(&url, 1).await;
    assert!(
        replies[0].starts_with("Not applied: Your edit was refused"),
        "{replies:?}"
    );

    // Fixed in the same modal: approved as edited.
    let response = submit_edit(&env, &sam, &meta, &[(ROWS, "10")]).await;
    assert!(response.body().is_empty(), "{:?}", response.body());
    let grant = env.gate.wait(id).await.expect("approved");
    assert_eq!(
        grant.edited_action().map(|a| a.params["rows"].clone()),
        Some(json!(10))
    );
}

#[tokio::test]
async fn self_approval_through_the_edit_modal_is_refused() {
    let env = Env::new(editable()).await;
    let (id, ts) = env.submit_export().await;

    // Dana is the human the agent acts for: no modal opens.
    let url = env.fake.response_url("dana");
    let value = env.button_value(&ts, ACTION_EDIT);
    env.click(&Clicker::new(DANA), ACTION_EDIT, &value, &ts, &url);
    let replies = env.replies(&url, 1).await;
    assert!(replies[0].contains("your own request"), "{replies:?}");
    assert!(env.fake.calls_to("views.open").is_empty());
    assert!(
        env.rejections(id)
            .iter()
            .any(|(cause, _)| *cause == RejectCause::SelfApproval)
    );

    // Nor can she submit a modal opened by someone else.
    let open = env
        .open_modal(
            &Clicker::new(SAM),
            ACTION_EDIT,
            &ts,
            &env.fake.response_url("sam"),
        )
        .await;
    let meta = open["view"]["private_metadata"].as_str().expect("metadata");
    let response = submit_edit(&env, &Clicker::new(DANA), meta, &[(ROWS, "10")]).await;
    let answer = body(&response);
    assert!(
        answer["errors"][REASON_BLOCK_ID]
            .as_str()
            .is_some_and(|e| e.contains("opened by someone else")),
        "{answer}"
    );
    settle().await;
    let record = env.record(id).await;
    assert_eq!(record.state, RequestState::Pending);
    assert_eq!(record.request.params["rows"], 5000);
}

/// Maps every Slack user to Sam, until `dana` is set: then to Dana, the human the agent acts
/// for (an identity mapping changed while the modal was open).
struct Remapped {
    dana: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl IdentityResolver for Remapped {
    async fn resolve(&self, _channel: &str, _id: &str) -> Result<Principal, IdentityError> {
        let id = if self.dana.load(Ordering::SeqCst) {
            "dana@example.com"
        } else {
            "sam@example.com"
        };
        Ok(Principal::human(id).with_groups(["security"]))
    }
}

#[tokio::test]
async fn the_submission_is_checked_again_against_who_the_reviewer_is_now() {
    let dana = Arc::new(AtomicBool::new(false));
    let resolver = Remapped { dana: dana.clone() };
    let env = Env::with(editable(), |b| b.identities(resolver)).await;
    let (id, ts) = env.submit_export().await;
    let url = env.fake.response_url("edit");
    let open = env
        .open_modal(&Clicker::new(SAM), ACTION_EDIT, &ts, &url)
        .await;
    let meta = open["view"]["private_metadata"].as_str().expect("metadata");
    dana.store(true, Ordering::SeqCst);
    let response = submit_edit(&env, &Clicker::new(SAM), meta, &[(ROWS, "10")]).await;
    assert!(
        response.body().is_empty(),
        "no input can fix it: the modal closes"
    );
    let replies = env.replies(&url, 1).await;
    assert!(replies[0].contains("your own request"), "{replies:?}");
    let record = env.record(id).await;
    assert_eq!(record.state, RequestState::Pending);
    assert_eq!(record.request.params["rows"], 5000);
    assert!(
        env.rejections(id)
            .iter()
            .any(|(cause, _)| *cause == RejectCause::SelfApproval)
    );
}

#[tokio::test]
async fn a_rule_without_editable_parameters_shows_no_button_and_refuses_an_injected_edit() {
    let env = Env::new(Requirement::groups(["security"])).await;
    let (id, ts) = env.submit_export().await;
    let message = env.message(&ts);
    assert!(
        find_button(&message["blocks"], ACTION_EDIT).is_none(),
        "{message}"
    );
    assert!(find_button(&message["blocks"], ACTION_APPROVE).is_some());

    let url = env.fake.response_url("inject");
    let value = env.button_value(&ts, ACTION_APPROVE);
    let response = env.click(&Clicker::new(SAM), ACTION_EDIT, &value, &ts, &url);
    assert_eq!(response.status(), 200);
    let replies = env.replies(&url, 1).await;
    assert!(
        replies[0].starts_with("Not applied: the policy rule does not let reviewers edit"),
        "{replies:?}"
    );
    assert!(env.fake.calls_to("views.open").is_empty());
    let record = env.record(id).await;
    assert_eq!(record.state, RequestState::Pending);
    assert!(record.reviews.is_empty());
}

const POLICY: &str = r#"
version = 1
default = "deny"

[[rules]]
name = "huge-exports"
kind = "data.export"
when = [{ param = "rows", gt = 10000 }]
effect = "deny"
reason = "exports over 10,000 rows go through the data team"

[[rules]]
name = "exports"
kind = "data.export"
effect = "require_approval"
approvers = { groups = ["security"] }
editable = ["rows"]
"#;

#[tokio::test]
async fn an_edit_the_policy_refuses_is_shown_in_the_modal_and_changes_nothing() {
    let policy = RulePolicy::from_toml(POLICY).expect("policy");
    let env = Env::with_policy(policy, |b| b).await;
    let (id, ts) = env.submit_export().await;
    let asked = env.record(id).await;
    let url = env.fake.response_url("edit");
    let open = env
        .open_modal(&Clicker::new(SAM), ACTION_EDIT, &ts, &url)
        .await;
    let meta = open["view"]["private_metadata"].as_str().expect("metadata");
    let response = submit_edit(&env, &Clicker::new(SAM), meta, &[(ROWS, "20000")]).await;
    let answer = body(&response);
    let error = answer["errors"][ROWS].as_str().unwrap_or_default();
    assert!(
        error.contains("policy refuses") && error.contains("huge-exports"),
        "{answer}"
    );
    let record = env.record(id).await;
    assert_eq!(record.state, RequestState::Pending);
    assert_eq!(record.digest, asked.digest);
    assert!(record.reviews.is_empty());
    assert!(
        env.rejections(id)
            .iter()
            .any(|(cause, _)| *cause == RejectCause::EditRefused)
    );
}

#[tokio::test]
async fn over_socket_mode_a_refused_edit_is_answered_in_the_acknowledgement() {
    let env = Env::new(editable()).await;
    let socket = SocketMode::new(
        env.fake.client(),
        Token::new(fake::APP_TOKEN),
        env.interactions.clone(),
    )
    .spawn()
    .expect("socket mode");
    socket.wait_for_connections(1).await;
    let (id, ts) = env.submit_export().await;
    let value = env.button_value(&ts, ACTION_EDIT);
    let url = env.fake.response_url("sm-edit");
    env.fake.socket_send_interactive(
        "env-1",
        Clicker::new(SAM).block_actions(ACTION_EDIT, &value, &ts, &url),
    );
    eventually(|| !env.fake.calls_to("views.open").is_empty(), "modal").await;
    let meta = env.fake.calls_to("views.open")[0].body["view"]["private_metadata"]
        .as_str()
        .expect("meta")
        .to_owned();
    let submission = |rows: &str| {
        let mut payload = Clicker::new(SAM).view_submission(EDIT_CALLBACK_ID, &meta, None);
        payload["view"]["state"]["values"][ROWS] =
            json!({"value": {"type": "plain_text_input", "value": rows}});
        payload
    };
    let ack = |envelope: &'static str| {
        let env = &env;
        async move {
            eventually(
                || {
                    env.fake
                        .socket_received()
                        .iter()
                        .any(|m| m["envelope_id"] == envelope)
                },
                "ack",
            )
            .await;
            env.fake
                .socket_received()
                .into_iter()
                .find(|m| m["envelope_id"] == envelope)
                .unwrap_or_default()
        }
    };
    env.fake
        .socket_send_interactive("env-2", submission("lots"));
    let answer = ack("env-2").await;
    assert_eq!(answer["payload"]["response_action"], "errors", "{answer}");
    assert!(
        answer["payload"]["errors"][ROWS]
            .as_str()
            .is_some_and(|e| e.contains("must be a number")),
        "{answer}"
    );
    assert_eq!(env.record(id).await.state, RequestState::Pending);
    env.fake.socket_send_interactive("env-3", submission("50"));
    let answer = ack("env-3").await;
    assert!(answer.get("payload").is_none(), "{answer}");
    let grant = env.gate.wait(id).await.expect("approved over Socket Mode");
    assert_eq!(
        grant.edited_action().map(|a| a.params["rows"].clone()),
        Some(json!(50))
    );
    socket.shutdown().await.expect("clean shutdown");
}
