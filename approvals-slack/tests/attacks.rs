//! Every way to abuse the Slack channel: each refusal is clear and changes nothing.

mod common;

use approvals_core::{ActionRequest, Link, RejectCause, RequestContext, RequestState, Requirement};
use approvals_slack::blocks::{ACTION_APPROVE, ACTION_DENY, REASON_CALLBACK_ID};
use approvals_slack::fake::{self, Clicker};
use approvals_slack::{SigningSecret, signature};
use chrono::TimeDelta;
use common::*;
use serde_json::{Value, json};

fn assert_untouched(record: &approvals_core::RequestRecord) {
    assert_eq!(record.state, RequestState::Pending);
    assert!(record.reviews.is_empty(), "{:?}", record.reviews);
}

#[tokio::test]
async fn forged_signatures_are_refused_and_audited() {
    let env = Env::new(Requirement::groups(["security"])).await;
    let (id, ts) = env.submit_export().await;
    let value = env.button_value(&ts, ACTION_APPROVE);
    let url = env.fake.response_url("forged");
    let body = fake::form_body(&Clicker::new(SAM).block_actions(ACTION_APPROVE, &value, &ts, &url));

    // Signed with another secret.
    let other = SigningSecret::new("not-the-app-secret").expect("secret");
    let response = env
        .interactions
        .handle(fake::signed_request(&other, fake::now(), body.clone()));
    assert_eq!(response.status(), 401);
    assert!(String::from_utf8_lossy(response.body()).contains("does not match"));

    // No signature at all.
    let mut unsigned = fake::signed_request(&env.secret, fake::now(), body.clone());
    unsigned.headers_mut().remove(signature::SIGNATURE_HEADER);
    assert_eq!(env.interactions.handle(unsigned).status(), 401);

    // A garbage signature.
    let mut garbage = fake::signed_request(&env.secret, fake::now(), body);
    garbage.headers_mut().insert(
        signature::SIGNATURE_HEADER,
        http::HeaderValue::from_static("v0=deadbeef"),
    );
    assert_eq!(env.interactions.handle(garbage).status(), 401);

    settle().await;
    assert_untouched(&env.record(id).await);
    assert!(env.fake.responses().is_empty(), "no reply to a forger");
    let rejections = env.rejections(id);
    assert!(rejections.len() >= 3, "{rejections:?}");
    assert!(rejections.iter().all(|(c, _)| *c == RejectCause::Forged));
    assert!(
        rejections[0].1.contains(SAM),
        "the claimed user is recorded: {rejections:?}"
    );
}

#[tokio::test]
async fn a_tampered_body_is_refused() {
    let env = Env::new(Requirement::groups(["security"])).await;
    let (id, ts) = env.submit_export().await;
    let value = env.button_value(&ts, ACTION_APPROVE);
    let url = env.fake.response_url("tampered");
    // Eve's click, signed by Slack; then someone swaps the user for Sam.
    let eve = fake::form_body(&Clicker::new(EVE).block_actions(ACTION_APPROVE, &value, &ts, &url));
    let signed = fake::signed_request(&env.secret, fake::now(), eve.clone());
    let (parts, _) = signed.into_parts();
    let sam = String::from_utf8_lossy(&eve).replace(EVE, SAM);
    let tampered = http::Request::from_parts(parts, bytes::Bytes::from(sam));
    assert_eq!(env.interactions.handle(tampered).status(), 401);
    // One byte appended.
    let signed = fake::signed_request(&env.secret, fake::now(), eve.clone());
    let (parts, body) = signed.into_parts();
    let mut longer = body.to_vec();
    longer.push(b'&');
    assert_eq!(
        env.interactions
            .handle(http::Request::from_parts(parts, longer.into()))
            .status(),
        401
    );
    settle().await;
    assert_untouched(&env.record(id).await);
}

#[tokio::test]
async fn stale_and_future_timestamps_are_refused() {
    let env = Env::new(Requirement::groups(["security"])).await;
    let (id, ts) = env.submit_export().await;
    let value = env.button_value(&ts, ACTION_APPROVE);
    let url = env.fake.response_url("time");
    let body = fake::form_body(&Clicker::new(SAM).block_actions(ACTION_APPROVE, &value, &ts, &url));
    for offset in [-301, -3600, 301, 86_400] {
        let response = env.interactions.handle(fake::signed_request(
            &env.secret,
            fake::now() + offset,
            body.clone(),
        ));
        assert_eq!(response.status(), 401, "offset {offset}");
        let text = String::from_utf8_lossy(response.body()).into_owned();
        assert!(
            text.contains(if offset < 0 { "old" } else { "future" }),
            "{text}"
        );
    }
    settle().await;
    assert_untouched(&env.record(id).await);
}

#[tokio::test]
async fn a_replayed_request_is_refused() {
    let env = Env::new(Requirement::groups(["security"]).quorum(2)).await;
    let (id, ts) = env.submit_export().await;
    let value = env.button_value(&ts, ACTION_APPROVE);
    let url = env.fake.response_url("replay");
    let body = fake::form_body(&Clicker::new(SAM).block_actions(ACTION_APPROVE, &value, &ts, &url));
    let request = fake::signed_request(&env.secret, fake::now(), body);
    let copy = {
        let mut b = http::Request::builder()
            .method(request.method())
            .uri(request.uri());
        for (k, v) in request.headers() {
            b = b.header(k, v);
        }
        b.body(request.body().clone()).expect("copy")
    };
    assert_eq!(env.interactions.handle(request).status(), 200);
    let replayed = env.interactions.handle(copy);
    assert_eq!(replayed.status(), 401);
    assert!(String::from_utf8_lossy(replayed.body()).contains("already accepted"));
    env.replies(&url, 1).await;
    settle().await;
    let record = env.record(id).await;
    assert_eq!(record.reviews.len(), 1, "the replay added nothing");
    assert!(
        env.rejections(id)
            .iter()
            .any(|(c, d)| *c == RejectCause::Forged && d.contains("already accepted"))
    );
}

#[tokio::test]
async fn foreign_workspaces_and_apps_are_refused_with_a_reason() {
    let env = Env::new(Requirement::groups(["security"])).await;
    let (id, ts) = env.submit_export().await;
    let value = env.button_value(&ts, ACTION_APPROVE);

    let mut foreign_team = Clicker::new(SAM);
    foreign_team.team_id = "T0EVIL0001".into();
    foreign_team.user_team_id = "T0EVIL0001".into();
    // Slack Connect: the channel's workspace is ours, the user's is not.
    let mut connect_user = Clicker::new(SAM);
    connect_user.user_team_id = "T0EVIL0002".into();
    let mut other_app = Clicker::new(SAM);
    other_app.app_id = "A0OTHER001".into();

    for (i, who) in [foreign_team, connect_user, other_app].iter().enumerate() {
        let url = env.fake.response_url(&format!("foreign-{i}"));
        assert_eq!(
            env.click(who, ACTION_APPROVE, &value, &ts, &url).status(),
            200
        );
        let replies = env.replies(&url, 1).await;
        assert!(replies[0].starts_with("Not applied"), "{replies:?}");
        assert!(
            replies[0].contains("not allowed") || replies[0].contains("not this app"),
            "{replies:?}"
        );
    }
    settle().await;
    assert_untouched(&env.record(id).await);
    let rejections = env.rejections(id);
    assert_eq!(rejections.len(), 3, "{rejections:?}");
    assert!(
        rejections
            .iter()
            .all(|(c, _)| *c == RejectCause::NotAuthorized)
    );
}

#[tokio::test]
async fn unknown_ambiguous_and_unauthorized_users_are_told_why() {
    let env = Env::new(Requirement::groups(["security"])).await;
    let (id, ts) = env.submit_export().await;
    let value = env.button_value(&ts, ACTION_APPROVE);
    let cases = [
        (NOBODY, RejectCause::UnknownReviewer, "unknown reviewer"),
        (TWIN, RejectCause::UnknownReviewer, "matches 2 principals"),
        (
            EVE,
            RejectCause::NotAuthorized,
            "not one of the reviewers this request needs",
        ),
    ];
    for (user, cause, words) in cases {
        let url = env.fake.response_url(user);
        assert_eq!(
            env.click(&Clicker::new(user), ACTION_APPROVE, &value, &ts, &url)
                .status(),
            200
        );
        let replies = env.replies(&url, 1).await;
        assert!(replies[0].contains(words), "{user}: {replies:?}");
        assert!(
            env.rejections(id).iter().any(|(c, _)| *c == cause),
            "{user}"
        );
    }
    // Deny by an unauthorized user is refused before any modal opens.
    let url = env.fake.response_url("eve-deny");
    assert_eq!(
        env.click(&Clicker::new(EVE), ACTION_DENY, &value, &ts, &url)
            .status(),
        200
    );
    let replies = env.replies(&url, 1).await;
    assert!(
        replies[0].contains("not one of the reviewers this request needs"),
        "{replies:?}"
    );
    assert!(env.fake.calls_to("views.open").is_empty());
    assert_untouched(&env.record(id).await);
}

#[tokio::test]
async fn self_approval_through_slack_is_refused() {
    let env = Env::new(Requirement::groups(["security"])).await;
    let (id, ts) = env.submit_export().await;
    let value = env.button_value(&ts, ACTION_APPROVE);
    let url = env.fake.response_url("dana");
    // Dana is in the security group, but the agent acts on her behalf.
    assert_eq!(
        env.click(&Clicker::new(DANA), ACTION_APPROVE, &value, &ts, &url)
            .status(),
        200
    );
    let replies = env.replies(&url, 1).await;
    assert!(
        replies[0].contains("You cannot review your own request"),
        "{replies:?}"
    );
    assert_untouched(&env.record(id).await);
    assert!(
        env.rejections(id)
            .iter()
            .any(|(c, _)| *c == RejectCause::SelfApproval)
    );
}

#[tokio::test]
async fn double_clicks_count_once() {
    let env = Env::new(Requirement::groups(["security"]).quorum(2)).await;
    let (id, ts) = env.submit_export().await;
    let value = env.button_value(&ts, ACTION_APPROVE);
    let url1 = env.fake.response_url("dbl-1");
    let url2 = env.fake.response_url("dbl-2");
    assert_eq!(
        env.click(&Clicker::new(SAM), ACTION_APPROVE, &value, &ts, &url1)
            .status(),
        200
    );
    env.replies(&url1, 1).await;
    // A second, distinct click (new signature) by the same person.
    assert_eq!(
        env.click(&Clicker::new(SAM), ACTION_APPROVE, &value, &ts, &url2)
            .status(),
        200
    );
    let replies = env.replies(&url2, 1).await;
    assert!(replies[0].contains("already approved"), "{replies:?}");
    let record = env.record(id).await;
    assert_eq!(record.state, RequestState::Pending);
    assert_eq!(record.approvers().len(), 1);

    // With a quorum reached, a late click hears who decided.
    let url3 = env.fake.response_url("dbl-3");
    env.click(&Clicker::new(ALEX), ACTION_APPROVE, &value, &ts, &url3);
    env.gate.wait(id).await.expect("approved");
    let url4 = env.fake.response_url("dbl-4");
    env.click(&Clicker::new(ALEX), ACTION_APPROVE, &value, &ts, &url4);
    let replies = env.replies(&url4, 1).await;
    assert!(
        replies[0].contains("already approved by Sam Reviewer, Alex Lead"),
        "{replies:?}"
    );
}

#[tokio::test]
async fn a_click_after_expiry_is_refused_and_the_message_says_expired() {
    let env =
        Env::new(Requirement::groups(["security"]).timeout(std::time::Duration::from_secs(600)))
            .await;
    let (id, ts) = env.submit_export().await;
    let value = env.button_value(&ts, ACTION_APPROVE);
    env.clock.advance(TimeDelta::minutes(11));
    let url = env.fake.response_url("late");
    assert_eq!(
        env.click(&Clicker::new(SAM), ACTION_APPROVE, &value, &ts, &url)
            .status(),
        200
    );
    let replies = env.replies(&url, 1).await;
    assert!(replies[0].contains("expired"), "{replies:?}");
    assert_eq!(env.record(id).await.state, RequestState::Expired);
    eventually(
        || header(&env.message(&ts)).contains("Expired"),
        "expired shown",
    )
    .await;
    assert!(find_button(&env.message(&ts)["blocks"], ACTION_APPROVE).is_none());
    // A deny after expiry opens no modal.
    let url = env.fake.response_url("late-deny");
    env.click(&Clicker::new(SAM), ACTION_DENY, &value, &ts, &url);
    let replies = env.replies(&url, 1).await;
    assert!(replies[0].contains("already expired"), "{replies:?}");
    assert!(env.fake.calls_to("views.open").is_empty());
}

#[tokio::test]
async fn a_button_for_another_digest_or_a_malformed_button_changes_nothing() {
    let env = Env::new(Requirement::groups(["security"])).await;
    let (id, ts) = env.submit_export().await;
    let other = approvals_core::Digest([9; 32]);
    let url = env.fake.response_url("digest");
    env.click(
        &Clicker::new(SAM),
        ACTION_APPROVE,
        &format!("{id} {other}"),
        &ts,
        &url,
    );
    let replies = env.replies(&url, 1).await;
    assert!(
        replies[0].contains("The action changed since it was shown to you"),
        "{replies:?}"
    );
    for (i, bad) in [
        "",
        "not-a-request",
        &format!("{id}"),
        &format!("{id} sha256:zz"),
    ]
    .iter()
    .enumerate()
    {
        let url = env.fake.response_url(&format!("bad-{i}"));
        env.click(&Clicker::new(SAM), ACTION_APPROVE, bad, &ts, &url);
        let replies = env.replies(&url, 1).await;
        assert!(
            replies[0].contains("does not name a request"),
            "{replies:?}"
        );
    }
    assert_untouched(&env.record(id).await);
    assert!(
        env.rejections(id)
            .iter()
            .any(|(c, _)| *c == RejectCause::DigestMismatch)
    );
}

#[tokio::test]
async fn modal_metadata_cannot_be_forged_or_used_by_someone_else() {
    let env = Env::new(Requirement::groups(["security"])).await;
    let (id, ts) = env.submit_export().await;
    let url = env.fake.response_url("modal");
    let open = env
        .open_modal(&Clicker::new(SAM), ACTION_DENY, &ts, &url)
        .await;
    let meta = open["view"]["private_metadata"]
        .as_str()
        .expect("metadata")
        .to_owned();

    // Alex submits Sam's dialog.
    let response =
        env.post(&Clicker::new(ALEX).view_submission(REASON_CALLBACK_ID, &meta, Some("no")));
    let body: Value = serde_json::from_slice(response.body()).expect("json");
    assert!(
        body["errors"]["approvals.reason"]
            .as_str()
            .is_some_and(|e| e.contains("someone else")),
        "{body}"
    );
    // The metadata altered to point at approve.
    let forged = meta.replacen("\"deny\"", "\"approve\"", 1);
    assert_ne!(forged, meta);
    let response =
        env.post(&Clicker::new(SAM).view_submission(REASON_CALLBACK_ID, &forged, Some("ok")));
    let body: Value = serde_json::from_slice(response.body()).expect("json");
    assert_eq!(body["response_action"], "errors", "{body}");
    // An oversized reason.
    let long = "x".repeat(2001);
    let response =
        env.post(&Clicker::new(SAM).view_submission(REASON_CALLBACK_ID, &meta, Some(&long)));
    let body: Value = serde_json::from_slice(response.body()).expect("json");
    assert_eq!(body["response_action"], "errors", "{body}");
    settle().await;
    assert_untouched(&env.record(id).await);
    assert!(
        env.rejections(id)
            .iter()
            .any(|(c, d)| *c == RejectCause::Forged && d.contains("integrity"))
    );
}

#[tokio::test]
async fn hostile_parameters_render_as_inert_text() {
    let env = Env::new(Requirement::groups(["security"])).await;
    let long = "A".repeat(10_000);
    let hostile = [
        "<!channel>",
        "<!here>",
        "<https://evil.example|safe>",
        "*Approved by security*",
        "<@U0SAM00001>",
        "```\n*bold*\n```",
    ];
    let request = ActionRequest::new(
        "data.export <!channel>",
        "db://prod/<https://evil.example|customers>",
    )
    .params(json!({"note": hostile, "blob": long, "`": "_x_ ~y~"}))
    .summary("*Approved by security*")
    .justification("<!channel> *Approved by security* <https://evil.example|safe>")
    .context(RequestContext {
        environment: Some("*production*".into()),
        ticket: Some("<https://evil.example|CHG-1>".into()),
        impact: Some("_none_ <!everyone>".into()),
        links: vec![
            Link {
                label: "runbook".into(),
                url: "https://wiki.example.com/runbook".into(),
            },
            Link {
                label: "*safe*".into(),
                url: "javascript:alert(1)".into(),
            },
        ],
        ..Default::default()
    });
    let (id, ts) = env.submit(request).await;
    let record = env.record(id).await;
    let message = env.message(&ts);
    fake::validate_blocks(&message["blocks"]).expect("within Block Kit limits");

    // Every mrkdwn string: no control sequences or formatting other than our own.
    let mut mrkdwn = Vec::new();
    let mut literal = Vec::new();
    collect_text(&message["blocks"], &mut mrkdwn, &mut literal);
    mrkdwn.push(message["text"].as_str().unwrap_or("").to_owned());
    for text in &mrkdwn {
        let without_dates = strip_dates(text);
        assert!(
            !without_dates.contains('<') && !without_dates.contains('>'),
            "control sequence in {text:?}"
        );
        for h in hostile
            .iter()
            .chain(["_none_", "*production*", "_x_"].iter())
        {
            assert!(!text.contains(h), "{h:?} raw in mrkdwn {text:?}");
        }
    }
    // Untrusted text appears only literally (rich_text / plain_text), never as a link label.
    let all_literal = literal.join("\n");
    assert!(all_literal.contains("<!channel> *Approved by security* <https://evil.example|safe>"));
    assert!(
        all_literal.contains("<https://evil.example|CHG-1>"),
        "ticket shown as text"
    );
    let links = collect_links(&message["blocks"]);
    assert_eq!(
        links,
        vec![json!({"type": "link", "url": "https://wiki.example.com/runbook"})],
        "only real web links, with no custom label"
    );
    // The long value is cut, and the cut says which digest the approval covers.
    let text = message.to_string();
    assert!(!text.contains(&"A".repeat(3000)));
    assert!(text.contains(&format!("digest {}", record.digest)));
    assert!(text.len() < 40_000);
}

fn strip_dates(text: &str) -> String {
    // Our own `<!date^...|...>` tokens are the only control sequences allowed.
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("<!date^") {
        out.push_str(&rest[..start]);
        match rest[start..].find('>') {
            Some(end) => rest = &rest[start + end + 1..],
            None => return text.to_owned(),
        }
    }
    out.push_str(rest);
    out
}

fn collect_text(v: &Value, mrkdwn: &mut Vec<String>, literal: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            match (
                map.get("type").and_then(Value::as_str),
                map.get("text").and_then(Value::as_str),
            ) {
                (Some("mrkdwn"), Some(t)) => mrkdwn.push(t.to_owned()),
                (Some("plain_text" | "text"), Some(t)) => {
                    if map.get("type").and_then(Value::as_str) == Some("plain_text") {
                        assert_eq!(
                            map.get("emoji"),
                            Some(&Value::Bool(false)),
                            "plain text with emoji parsing: {t:?}"
                        );
                    }
                    literal.push(t.to_owned());
                }
                _ => {}
            }
            for value in map.values() {
                collect_text(value, mrkdwn, literal);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_text(i, mrkdwn, literal)),
        _ => {}
    }
}

fn collect_links(v: &Value) -> Vec<Value> {
    match v {
        Value::Object(map) if map.get("type").and_then(Value::as_str) == Some("link") => {
            vec![v.clone()]
        }
        Value::Object(map) => map.values().flat_map(collect_links).collect(),
        Value::Array(items) => items.iter().flat_map(collect_links).collect(),
        _ => Vec::new(),
    }
}
