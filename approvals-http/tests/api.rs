//! The JSON API: authentication, authorization at both layers, errors as problem documents,
//! and that nothing changes when a call is refused.

mod common;

use approvals_core::{GuardError, Principal, RequestState, Requirement, Review, ReviewError};
use common::*;
use http::Method;
use serde_json::json;

#[tokio::test]
async fn served_openapi_document_equals_the_file_in_the_repo() {
    let f = fixture();
    let r = call(&f.server, Method::GET, "/openapi.json", None, None).await;
    assert_eq!(r.status, 200);
    let on_disk = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json"))
        .expect("openapi.json in the crate");
    assert_eq!(r.text(), on_disk);
    let doc = r.json();
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/v1/requests",
        "/v1/requests/{id}",
        "/v1/requests/{id}/approve",
        "/v1/requests/{id}/deny",
        "/v1/requests/{id}/cancel",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} documented");
    }
}

#[tokio::test]
async fn no_token_malformed_header_or_unknown_token_is_401_and_changes_nothing() {
    let f = fixture();
    let id = submit(&f.gate, &export()).await;
    let path = format!("/v1/requests/{id}/approve");

    let r = call(&f.server, Method::POST, &path, None, Some(json!({}))).await;
    r.problem(401, "unauthenticated");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"approvals\"")
    );

    let r = call(&f.server, Method::POST, &path, Some("not-a-token"), None).await;
    r.problem(401, "unauthenticated");

    let req = http::Request::builder()
        .method(Method::POST)
        .uri(&path)
        .header("authorization", format!("Basic {SAM}"))
        .body(bytes::Bytes::new())
        .expect("request");
    let resp = f.server.handle(req).await;
    assert_eq!(resp.status(), 401, "only Bearer is accepted");

    for read in ["/v1/requests", "/v1/me"] {
        call(&f.server, Method::GET, read, None, None)
            .await
            .problem(401, "unauthenticated");
        call(&f.server, Method::GET, read, Some("nope"), None)
            .await
            .problem(401, "unauthenticated");
    }

    let record = f.gate.get(id).await.expect("store").expect("record");
    assert_eq!(record.state, RequestState::Pending);
    assert!(record.reviews.is_empty());
    let forged = f
        .audit
        .for_request(id)
        .into_iter()
        .filter(|e| serde_json::to_value(e).expect("event")["cause"] == "forged")
        .count();
    assert_eq!(
        forged, 3,
        "each unauthenticated decision attempt is audited"
    );
}

#[tokio::test]
async fn agents_services_requesters_and_outsiders_cannot_decide() {
    let f = fixture();
    let id = submit(&f.gate, &export()).await;
    let waiter = {
        let gate = f.gate.clone();
        tokio::spawn(async move { gate.wait(id).await })
    };
    for (token, code) in [
        (BOT, "not_human"),       // the requesting agent, even with the reviewing group
        (OTHER_BOT, "not_human"), // another agent
        (SVC, "not_human"),       // a service, even with the reviewing group
        (DANA, "self_approval"),  // the human the agent acts for, in the reviewing group
        (EVE, "not_authorized"),  // a human outside the allowed group
    ] {
        for verb in ["approve", "deny"] {
            let r = call(
                &f.server,
                Method::POST,
                &format!("/v1/requests/{id}/{verb}"),
                Some(token),
                Some(json!({"reason": "let me"})),
            )
            .await;
            r.problem(403, code);
        }
    }
    let record = f.gate.get(id).await.expect("store").expect("record");
    assert_eq!(record.state, RequestState::Pending, "nothing changed");
    assert!(record.reviews.is_empty());
    assert!(!waiter.is_finished(), "the agent is still waiting");
    let rejected: Vec<String> = f
        .audit
        .for_request(id)
        .iter()
        .filter(|e| e.name() == "review_rejected")
        .map(|e| {
            serde_json::to_value(e).expect("event")["cause"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert_eq!(rejected.len(), 10, "{rejected:?}");
    assert!(rejected.contains(&"not_human".to_owned()));
    assert!(rejected.contains(&"self_approval".to_owned()));
    assert!(rejected.contains(&"not_authorized".to_owned()));

    // Sam may.
    let r = call(
        &f.server,
        Method::POST,
        &format!("/v1/requests/{id}/approve"),
        Some(SAM),
        Some(json!({"reason": "ticket checked"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["state"], "approved");
    let grant = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
        .await
        .expect("waiter woke")
        .expect("task")
        .expect("grant");
    assert_eq!(grant.approvers()[0].id, "sam@example.com");
    let stored = f.gate.get(id).await.expect("store").expect("record").digest;
    assert_eq!(grant.digest(), stored);
}

#[tokio::test]
async fn the_gate_itself_refuses_non_humans_whatever_the_channel_says() {
    let f = fixture();
    let id = submit(&f.gate, &export()).await;
    for reviewer in [
        Principal::agent("billing-agent").with_groups(["security"]),
        Principal::agent("helper-agent").with_groups(["security"]),
        Principal::service("deploy-pipeline").with_groups(["security"]),
    ] {
        let err = f
            .gate
            .decide(id, Review::approve(reviewer).via("http"))
            .await
            .expect_err("non-humans never review");
        assert!(matches!(err, ReviewError::NotHuman { .. }), "{err}");
    }
    let err = f
        .gate
        .decide(
            id,
            Review::approve(Principal::human("DANA@example.com ").with_groups(["security"])),
        )
        .await
        .expect_err("requester alias");
    assert!(matches!(err, ReviewError::SelfApproval { .. }), "{err}");
    assert_eq!(
        f.gate.get(id).await.expect("store").expect("record").state,
        RequestState::Pending
    );
}

#[tokio::test]
async fn approval_is_bound_to_the_digest_and_late_clicks_get_already_decided() {
    let f = fixture();
    let id = submit(&f.gate, &export()).await;
    let shown = call(
        &f.server,
        Method::GET,
        &format!("/v1/requests/{id}"),
        Some(SAM),
        None,
    )
    .await;
    assert_eq!(shown.status, 200);
    let view = shown.json();
    let digest = view["digest"].as_str().expect("digest").to_owned();
    assert_eq!(view["params"], json!({"rows": 5000, "format": "csv"}));
    assert_eq!(view["initiator"]["on_behalf_of"]["id"], "dana@example.com");
    assert_eq!(view["context"]["environment"], "production");
    assert_eq!(view["justification"], "quarterly report");
    assert_eq!(view["requirement"]["groups"], json!(["security"]));

    let other = format!("sha256:{}", "0".repeat(64));
    call(
        &f.server,
        Method::POST,
        &format!("/v1/requests/{id}/approve"),
        Some(SAM),
        Some(json!({"digest": other})),
    )
    .await
    .problem(409, "digest_mismatch");

    let r = call(
        &f.server,
        Method::POST,
        &format!("/v1/requests/{id}/deny"),
        Some(SAM),
        Some(json!({"digest": digest, "reason": "not this quarter"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["state"], "denied");
    assert_eq!(r.json()["reviews"][0]["channel"], "http");

    let late = call(
        &f.server,
        Method::POST,
        &format!("/v1/requests/{id}/approve"),
        Some(ADMIN),
        None,
    )
    .await;
    let p = late.problem(409, "already_decided");
    assert_eq!(p["state"], "denied");
    assert_eq!(p["decided_by"], "Sam Reviewer");

    match f.gate.wait(id).await {
        Err(GuardError::Denied { by, reason, .. }) => {
            assert_eq!(by, "Sam Reviewer");
            assert_eq!(reason.as_deref(), Some("not this quarter"));
        }
        other => panic!("expected a denial, got {other:?}"),
    }
}

#[tokio::test]
async fn a_required_reason_is_enforced() {
    let f = fixture_with(Requirement::groups(["security"]).reason_required(true));
    let id = submit(&f.gate, &export()).await;
    for body in [None, Some(json!({"reason": "   "}))] {
        call(
            &f.server,
            Method::POST,
            &format!("/v1/requests/{id}/approve"),
            Some(SAM),
            body,
        )
        .await
        .problem(422, "reason_required");
    }
    let r = call(
        &f.server,
        Method::POST,
        &format!("/v1/requests/{id}/approve"),
        Some(SAM),
        Some(json!({"reason": "ok"})),
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn agents_see_and_cancel_only_their_own_requests() {
    let f = fixture();
    let id = submit(&f.gate, &export()).await;
    let list = |token| {
        let server = f.server.clone();
        async move {
            let r = call(&server, Method::GET, "/v1/requests", Some(token), None).await;
            assert_eq!(r.status, 200, "{}", r.text());
            r.json()["requests"].as_array().expect("array").len()
        }
    };
    assert_eq!(list(SAM).await, 1);
    assert_eq!(list(BOT).await, 1);
    assert_eq!(list(OTHER_BOT).await, 0);
    assert_eq!(list(SVC).await, 0);
    call(
        &f.server,
        Method::GET,
        &format!("/v1/requests/{id}"),
        Some(OTHER_BOT),
        None,
    )
    .await
    .problem(404, "not_found");
    assert_eq!(
        call(
            &f.server,
            Method::GET,
            &format!("/v1/requests/{id}"),
            Some(BOT),
            None
        )
        .await
        .status,
        200
    );
    call(
        &f.server,
        Method::POST,
        &format!("/v1/requests/{id}/cancel"),
        Some(OTHER_BOT),
        None,
    )
    .await
    .problem(404, "not_found");
    call(
        &f.server,
        Method::POST,
        &format!("/v1/requests/{id}/cancel"),
        Some(EVE),
        None,
    )
    .await
    .problem(403, "not_allowed");
    call(
        &f.server,
        Method::POST,
        &format!("/v1/requests/{id}/cancel"),
        Some(SAM),
        None,
    )
    .await
    .problem(403, "not_allowed");
    let r = call(
        &f.server,
        Method::POST,
        &format!("/v1/requests/{id}/cancel"),
        Some(BOT),
        Some(json!({"reason": "no longer needed"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["state"], "cancelled");
    assert_eq!(r.json()["resolution"]["by"]["id"], "billing-agent");
    call(
        &f.server,
        Method::POST,
        &format!("/v1/requests/{id}/cancel"),
        Some(BOT),
        None,
    )
    .await
    .problem(409, "already_decided");

    // The human the agent acts for, and an administrator, may cancel too.
    for token in [DANA, ADMIN] {
        let id = submit(&f.gate, &export().idempotency_key(token)).await;
        let r = call(
            &f.server,
            Method::POST,
            &format!("/v1/requests/{id}/cancel"),
            Some(token),
            None,
        )
        .await;
        assert_eq!(r.status, 200, "{token}: {}", r.text());
    }
}

#[tokio::test]
async fn list_filters_by_kind_environment_initiator_and_state() {
    let f = fixture();
    submit(&f.gate, &export()).await;
    submit(
        &f.gate,
        &approvals_core::ActionRequest::new("secrets.rotate", "kms://staging/k")
            .environment("staging"),
    )
    .await;
    let count = |q: &str| {
        let server = f.server.clone();
        let q = q.to_owned();
        async move {
            let r = call(
                &server,
                Method::GET,
                &format!("/v1/requests?{q}"),
                Some(SAM),
                None,
            )
            .await;
            assert_eq!(r.status, 200, "{q}: {}", r.text());
            r.json()["requests"].as_array().expect("array").len()
        }
    };
    assert_eq!(count("").await, 2);
    assert_eq!(count("kind=data.export").await, 1);
    assert_eq!(count("environment=staging").await, 1);
    assert_eq!(count("initiator=billing-agent").await, 2);
    assert_eq!(count("initiator=someone-else").await, 0);
    assert_eq!(count("state=approved,denied").await, 0);
    assert_eq!(count("state=all&limit=1").await, 1);
    for bad in [
        "state=bogus",
        "limit=0",
        "limit=1001",
        "limit=x",
        "colour=red",
        "kind=a&kind=b",
    ] {
        call(
            &f.server,
            Method::GET,
            &format!("/v1/requests?{bad}"),
            Some(SAM),
            None,
        )
        .await
        .problem(400, "bad_request");
    }
}

/// Pages: following `next_cursor` lists every pending request once, newest first, for a
/// reviewer and for an agent (who sees only its own); a cursor that is not one is refused.
#[tokio::test]
async fn pages_follow_next_cursor_to_every_request_once() {
    let f = fixture();
    let mut submitted = Vec::new();
    for i in 0..7 {
        submitted.push(submit(&f.gate, &export().idempotency_key(format!("page-{i}"))).await);
    }
    let walk = |token: &'static str, limit: usize| {
        let server = f.server.clone();
        async move {
            let mut ids: Vec<String> = Vec::new();
            let mut cursor: Option<String> = None;
            let mut pages = 0;
            loop {
                let q = match &cursor {
                    Some(c) => format!("limit={limit}&cursor={c}"),
                    None => format!("limit={limit}"),
                };
                let r = call(
                    &server,
                    Method::GET,
                    &format!("/v1/requests?{q}"),
                    Some(token),
                    None,
                )
                .await;
                assert_eq!(r.status, 200, "{q}: {}", r.text());
                let body = r.json();
                let page = body["requests"].as_array().expect("array");
                assert!(page.len() <= limit);
                ids.extend(
                    page.iter()
                        .map(|v| v["id"].as_str().expect("id").to_owned()),
                );
                pages += 1;
                match body["next_cursor"].as_str() {
                    Some(next) => cursor = Some(next.to_owned()),
                    None => break,
                }
                assert!(pages <= 10, "the pages never end");
            }
            (ids, pages)
        }
    };
    let newest_first: Vec<String> = submitted.iter().rev().map(ToString::to_string).collect();
    for limit in [1, 3, 7, 100] {
        for token in [SAM, BOT] {
            let (ids, pages) = walk(token, limit).await;
            assert_eq!(ids, newest_first, "{token} in pages of {limit}");
            assert_eq!(
                pages,
                7usize.div_ceil(limit).max(1),
                "{token} in pages of {limit}"
            );
        }
    }
    for bad in ["nonsense", "12.not-a-uuid", "1.2", ".", ""] {
        call(
            &f.server,
            Method::GET,
            &format!("/v1/requests?cursor={bad}"),
            Some(SAM),
            None,
        )
        .await
        .problem(400, "bad_request");
    }
}

#[tokio::test]
async fn malformed_calls_get_clear_problems_and_change_nothing() {
    let f = fixture();
    let id = submit(&f.gate, &export()).await;
    let approve = format!("/v1/requests/{id}/approve");

    call(
        &f.server,
        Method::GET,
        "/v1/requests/not-a-uuid",
        Some(SAM),
        None,
    )
    .await
    .problem(400, "bad_request");
    call(
        &f.server,
        Method::POST,
        "/v1/requests/not-a-uuid/approve",
        Some(SAM),
        None,
    )
    .await
    .problem(400, "bad_request");
    call(
        &f.server,
        Method::GET,
        &format!("/v1/requests/{}", approvals_core::RequestId::new()),
        Some(SAM),
        None,
    )
    .await
    .problem(404, "not_found");
    call(
        &f.server,
        Method::POST,
        &approve,
        Some(SAM),
        Some(json!({"verdict": "approve"})),
    )
    .await
    .problem(400, "bad_request");
    call(
        &f.server,
        Method::POST,
        &approve,
        Some(SAM),
        Some(json!({"digest": "md5:abc"})),
    )
    .await
    .problem(400, "bad_request");
    call(
        &f.server,
        Method::POST,
        &approve,
        Some(SAM),
        Some(json!({"reason": "x".repeat(2001)})),
    )
    .await
    .problem(400, "bad_request");
    call(
        &f.server,
        Method::POST,
        &approve,
        Some(SAM),
        Some(json!([1, 2])),
    )
    .await
    .problem(400, "bad_request");

    let req = http::Request::builder()
        .method(Method::POST)
        .uri(&approve)
        .header("authorization", format!("Bearer {SAM}"))
        .header("content-type", "text/plain")
        .body(bytes::Bytes::from_static(b"approve please"))
        .expect("request");
    assert_eq!(f.server.handle(req).await.status(), 415);

    let r = call(
        &f.server,
        Method::DELETE,
        &format!("/v1/requests/{id}"),
        Some(SAM),
        None,
    )
    .await;
    r.problem(405, "method_not_allowed");
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    call(&f.server, Method::GET, &approve, Some(SAM), None)
        .await
        .problem(405, "method_not_allowed");
    call(&f.server, Method::GET, "/v2/anything", Some(SAM), None)
        .await
        .problem(404, "not_found");

    let record = f.gate.get(id).await.expect("store").expect("record");
    assert_eq!(record.state, RequestState::Pending);
    assert!(record.reviews.is_empty());
}

#[tokio::test]
async fn responses_carry_security_headers_and_never_echo_the_token() {
    let f = fixture();
    let r = call(&f.server, Method::GET, "/v1/me", Some(SAM), None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["principal"]["id"], "sam@example.com");
    assert_eq!(r.json()["can_review"], true);
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert!(!r.text().contains(SAM));
    let bot = call(&f.server, Method::GET, "/v1/me", Some(BOT), None).await;
    assert_eq!(bot.json()["can_review"], false);
    let bad = call(
        &f.server,
        Method::GET,
        "/v1/me",
        Some("secret-guess-123"),
        None,
    )
    .await;
    assert!(
        !bad.text().contains("secret-guess-123"),
        "tokens are never echoed"
    );
}

#[tokio::test]
async fn over_loopback_large_bodies_get_413_and_health_is_open() {
    let f = fixture();
    let id = submit(&f.gate, &export()).await;
    let base = spawn(f.server.clone()).await;
    let client =
        approvals_http::client::http_client(std::time::Duration::from_secs(10)).expect("client");
    let health = client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), 200);
    let big = format!("{{\"reason\": \"{}\"}}", "x".repeat(70 * 1024));
    let r = client
        .post(format!("{base}/v1/requests/{id}/approve"))
        .bearer_auth(SAM)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 413);
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    let ok = client
        .post(format!("{base}/v1/requests/{id}/approve"))
        .bearer_auth(SAM)
        .send()
        .await
        .expect("send");
    assert_eq!(ok.status(), 200);
}

#[cfg(feature = "axum")]
#[tokio::test]
async fn the_axum_router_serves_the_same_api() {
    use tower::Service as _;
    let f = fixture();
    let mut router = f.server.router();
    let mut call = async |path: &str, token: Option<&str>| {
        let mut b = http::Request::builder().uri(path);
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        let req = b.body(axum::body::Body::empty()).expect("request");
        std::future::poll_fn(|cx| {
            tower::Service::<http::Request<axum::body::Body>>::poll_ready(&mut router, cx)
        })
        .await
        .expect("ready");
        router.call(req).await.expect("infallible").status()
    };
    assert_eq!(call("/healthz", None).await, 200);
    assert_eq!(call("/v1/me", None).await, 401);
    assert_eq!(call("/v1/me", Some(SAM)).await, 200);
    assert_eq!(call("/console/", None).await, 303);
}

/// A rule that requires a passkey for each approval: the API (and so the CLI) cannot approve
/// it; the refusal names the console page where the passkey is used, changes nothing and is
/// audited; a deny still works; the request view says what the rule requires, as documented.
#[tokio::test]
async fn an_api_approval_of_a_step_up_rule_is_refused_and_points_to_the_console() {
    let f =
        fixture_with(Requirement::groups(["security"]).step_up(approvals_core::StepUp::Passkey));
    let id = submit(&f.gate, &export()).await;
    let digest = f.gate.get(id).await.expect("store").expect("record").digest;
    for body in [
        json!({}),
        json!({"digest": digest.to_string(), "reason": "ok"}),
    ] {
        let r = call(
            &f.server,
            Method::POST,
            &format!("/v1/requests/{id}/approve"),
            Some(SAM),
            Some(body),
        )
        .await;
        let p = r.problem(403, "step_up_required");
        assert!(
            p["detail"]
                .as_str()
                .is_some_and(|d| d.contains(&id.console_path())),
            "{p}"
        );
    }
    let record = f.gate.get(id).await.expect("store").expect("record");
    assert_eq!(record.state, RequestState::Pending);
    assert!(record.reviews.is_empty());
    let rejected = f
        .audit
        .events()
        .into_iter()
        .filter(|e| {
            matches!(
                e.detail,
                approvals_core::audit::EventDetail::ReviewRejected {
                    cause: approvals_core::RejectCause::StepUpRequired,
                    ..
                }
            )
        })
        .count();
    assert_eq!(rejected, 2);

    let view = call(
        &f.server,
        Method::GET,
        &format!("/v1/requests/{id}"),
        Some(SAM),
        None,
    )
    .await;
    assert_eq!(view.status, 200);
    let doc: serde_json::Value =
        serde_json::from_str(approvals_http::OPENAPI_JSON).expect("openapi");
    conforms(&doc, "Request", &view.json());
    assert_eq!(view.json()["requirement"]["step_up"], "passkey");

    let denied = call(
        &f.server,
        Method::POST,
        &format!("/v1/requests/{id}/deny"),
        Some(SAM),
        Some(json!({"reason": "not now"})),
    )
    .await;
    assert_eq!(denied.status, 200, "{}", denied.text());
}
