//! `WebhookApprover` against a loopback receiver: signed deliveries the receiver verifies,
//! retries with backoff on 5xx, no retry on 4xx, a resolution delivery after the receiver
//! decides through the API.

mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use approvals_core::{
    Gate, GuardError, Initiator, MemorySink, MemoryStore, Principal, RequestState, Requirement,
    StaticPolicy,
};
use approvals_http::webhook::{
    ReplayGuard, WEBHOOK_ID, WebhookApprover, WebhookError, WebhookPayload, WebhookSecret,
    verify_webhook,
};
use approvals_http::{ApiClient, ReviewServer};
use bytes::Bytes;
use common::*;
use http::HeaderMap;
use http_body_util::{BodyExt as _, Full};

#[derive(Default)]
struct Receiver {
    seen: Mutex<Vec<(HeaderMap, Bytes)>>,
    /// Statuses to answer, in order; 200 once exhausted.
    script: Mutex<VecDeque<u16>>,
}

impl Receiver {
    fn seen(&self) -> Vec<(HeaderMap, Bytes)> {
        self.seen.lock().expect("lock").clone()
    }
}

async fn receiver(script: &[u16]) -> (Arc<Receiver>, String) {
    let state = Arc::new(Receiver {
        seen: Mutex::new(Vec::new()),
        script: Mutex::new(script.iter().copied().collect()),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://{}/hooks/approvals",
        listener.local_addr().expect("addr")
    );
    let shared = state.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let state = shared.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let state = state.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            state.seen.lock().expect("lock").push((parts.headers, body));
                            let status = state
                                .script
                                .lock()
                                .expect("lock")
                                .pop_front()
                                .unwrap_or(200);
                            let mut resp = http::Response::new(Full::new(Bytes::new()));
                            *resp.status_mut() =
                                http::StatusCode::from_u16(status).expect("status");
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (state, url)
}

fn secret() -> WebhookSecret {
    WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret")
}

fn gate_with(hook: WebhookApprover) -> Gate {
    Gate::builder()
        .policy(StaticPolicy::require(Requirement::groups(["security"])))
        .store(MemoryStore::new())
        .audit(MemorySink::new())
        .approver(hook)
        .initiator(
            Initiator::agent("billing-agent").on_behalf_of(Principal::human("dana@example.com")),
        )
        .poll_interval(Duration::from_millis(50))
        .build()
        .expect("gate")
}

#[tokio::test]
async fn deliveries_are_signed_retried_and_the_receiver_decides_through_the_api() {
    // Two failures, then success.
    let (rx, url) = receiver(&[500, 503]).await;
    let hook = WebhookApprover::new(&url, secret())
        .expect("hook")
        .backoff(Duration::from_millis(10), Duration::from_millis(40))
        .public_url("http://approvals.test/".parse().expect("url"));
    let gate = gate_with(hook);
    let server = ReviewServer::builder(gate.clone()).tokens(tokens()).build();
    let base = spawn(server).await;

    let id = submit(&gate, &export()).await;
    let seen = rx.seen();
    assert_eq!(seen.len(), 3, "two retries after two server errors");
    let now = chrono::Utc::now();
    let first_id = seen[0].0.get(WEBHOOK_ID).cloned();
    for (headers, body) in &seen {
        verify_webhook(&secret(), headers, body, now).expect("genuine delivery verifies");
        assert_eq!(
            headers.get(WEBHOOK_ID).cloned(),
            first_id,
            "one id across retries"
        );
        assert_eq!(
            headers.get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/json")
        );
    }
    // A receiver deduplicating by id accepts the delivery once.
    let guard = ReplayGuard::new();
    let (headers, body) = &seen[2];
    guard.verify(&secret(), headers, body, now).expect("first");
    assert!(matches!(
        guard.verify(&secret(), headers, body, now),
        Err(WebhookError::Replayed(_))
    ));
    // Forged and stale copies are refused.
    let mut forged = body.to_vec();
    forged.extend_from_slice(b" ");
    assert_eq!(
        verify_webhook(&secret(), headers, &forged, now),
        Err(WebhookError::BadSignature)
    );
    assert!(matches!(
        verify_webhook(
            &secret(),
            headers,
            body,
            now + chrono::TimeDelta::minutes(6)
        ),
        Err(WebhookError::Stale { .. })
    ));

    let payload: WebhookPayload = serde_json::from_slice(body).expect("payload");
    assert_eq!(payload.event_type, "approval.requested");
    assert_eq!(payload.request.id, id);
    assert_eq!(payload.request.state, RequestState::Pending);
    let links = payload.links.expect("links");
    assert_eq!(links.api, format!("http://approvals.test/v1/requests/{id}"));
    assert_eq!(
        links.console,
        format!("http://approvals.test/console/requests/{id}")
    );

    // The receiver (say, a ticketing integration acting for Sam) decides through the API.
    let api = ApiClient::http(format!("{base}/").parse().expect("url"), Some(SAM.into()))
        .expect("client");
    let waiter = {
        let gate = gate.clone();
        tokio::spawn(async move { gate.wait(id).await })
    };
    let view = api
        .decide(
            id,
            true,
            Some("approved in CHG-7"),
            Some(payload.request.digest),
        )
        .await
        .expect("decision");
    assert_eq!(view.state, RequestState::Approved);
    let grant = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("woke")
        .expect("task")
        .expect("grant");
    assert_eq!(grant.request_id(), id);

    // The resolution is delivered too (in the background).
    let resolved = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some((h, b)) = rx.seen().into_iter().nth(3) {
                return (h, b);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("resolution delivered");
    verify_webhook(&secret(), &resolved.0, &resolved.1, chrono::Utc::now()).expect("signed");
    let payload: WebhookPayload = serde_json::from_slice(&resolved.1).expect("payload");
    assert_eq!(payload.event_type, "approval.resolved");
    assert_eq!(payload.request.state, RequestState::Approved);
    assert_eq!(payload.request.reviews[0].reviewer.id, "sam@example.com");
}

#[tokio::test]
async fn a_client_error_is_not_retried_and_an_undeliverable_request_fails_closed() {
    let (rx, url) = receiver(&[401]).await;
    let hook = WebhookApprover::new(&url, secret())
        .expect("hook")
        .backoff(Duration::from_millis(10), Duration::from_millis(10));
    let gate = gate_with(hook);
    match gate.submit(&export()).await {
        Err(GuardError::DeliveryFailed { id, errors }) => {
            assert!(errors.contains("401"), "{errors}");
            assert_eq!(
                gate.get(id).await.expect("store").expect("record").state,
                RequestState::Cancelled
            );
        }
        other => panic!("expected DeliveryFailed, got {other:?}"),
    }
    assert_eq!(rx.seen().len(), 1, "4xx is not retried");
}

#[tokio::test]
async fn an_unreachable_receiver_is_retried_then_refused() {
    // A socket bound but never listening: the port refuses connections, and no other test's
    // listener can take it while this one runs (a port bound and dropped could be reused).
    let reserved = tokio::net::TcpSocket::new_v4().expect("socket");
    reserved
        .bind("127.0.0.1:0".parse().expect("address"))
        .expect("bind");
    let port = reserved.local_addr().expect("addr").port();
    let hook = WebhookApprover::new(&format!("http://127.0.0.1:{port}/x"), secret())
        .expect("hook")
        .attempts(3)
        .backoff(Duration::from_millis(5), Duration::from_millis(10));
    let gate = gate_with(hook);
    let err = gate
        .submit(&export())
        .await
        .expect_err("nobody could be asked");
    assert!(
        matches!(&err, GuardError::DeliveryFailed { errors, .. } if errors.contains("3 attempts")),
        "{err}"
    );
}

/// A reminder point of the timeout passes: the receiver gets a signed `approval.reminder`
/// delivery of the still pending request, with how many reminders were sent.
#[tokio::test]
async fn a_reminder_is_a_signed_approval_reminder_delivery() {
    let (rx, url) = receiver(&[]).await;
    let hook = WebhookApprover::new(&url, secret()).expect("hook");
    let clock = Arc::new(approvals_core::ManualClock::new(chrono::Utc::now()));
    let gate = Gate::builder()
        .policy(StaticPolicy::require(
            Requirement::groups(["security"])
                .timeout(Duration::from_secs(1800))
                .reminders([50, 90]),
        ))
        .store(MemoryStore::new())
        .audit(MemorySink::new())
        .approver(hook)
        .clock(clock.clone())
        .initiator(Initiator::agent("billing-agent"))
        .build()
        .expect("gate");
    let id = submit(&gate, &export()).await;
    clock.advance(chrono::TimeDelta::minutes(15));
    assert_eq!(gate.sweep().await.expect("sweep").reminded, 1);
    let seen = rx.seen();
    assert_eq!(seen.len(), 2, "the request, then the reminder");
    let (headers, body) = &seen[1];
    verify_webhook(&secret(), headers, body, chrono::Utc::now()).expect("signed");
    let payload: WebhookPayload = serde_json::from_slice(body).expect("payload");
    assert_eq!(payload.event_type, "approval.reminder");
    assert_eq!(payload.request.id, id);
    assert_eq!(payload.request.state, RequestState::Pending);
    assert_eq!(payload.request.reminded, 1);
}

/// A reviewer's edit that does not reach the quorum: the receiver gets a signed
/// `approval.edited` delivery of the still pending request, with the edited digest, its own
/// event id per edit.
#[tokio::test]
async fn an_edit_short_of_the_quorum_is_a_signed_approval_edited_delivery() {
    let (rx, url) = receiver(&[]).await;
    let hook = WebhookApprover::new(&url, secret()).expect("hook");
    let gate = Gate::builder()
        .policy(StaticPolicy::require(
            Requirement::groups(["security"])
                .quorum(2)
                .editable(["/rows"]),
        ))
        .store(MemoryStore::new())
        .audit(MemorySink::new())
        .approver(hook)
        .initiator(Initiator::agent("billing-agent"))
        .build()
        .expect("gate");
    let id = submit(&gate, &export()).await;
    let asked = gate.get(id).await.expect("store").expect("record");
    let mut params = (*asked.request.params).clone();
    params["rows"] = serde_json::json!(10);
    gate.decide(
        id,
        approvals_core::Review::approve(
            Principal::human("sam@example.com").with_groups(["security"]),
        )
        .for_digest(asked.digest)
        .edit(params),
    )
    .await
    .expect("edited");
    let edited = gate.get(id).await.expect("store").expect("record");
    let mut seen = rx.seen();
    for _ in 0..100 {
        if seen.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        seen = rx.seen();
    }
    assert_eq!(seen.len(), 2, "the request, then the edit");
    let (headers, body) = &seen[1];
    verify_webhook(&secret(), headers, body, chrono::Utc::now()).expect("signed");
    let payload: WebhookPayload = serde_json::from_slice(body).expect("payload");
    assert_eq!(payload.event_type, "approval.edited");
    assert_eq!(payload.request.state, RequestState::Pending);
    assert_eq!(payload.request.digest, edited.digest);
    assert_eq!(payload.request.asked_digest, Some(asked.digest));
    assert_eq!(
        headers.get(WEBHOOK_ID).and_then(|v| v.to_str().ok()),
        Some(format!("{id}:edited-1").as_str())
    );
}
