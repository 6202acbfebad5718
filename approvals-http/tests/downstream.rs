//! Approved calls to a downstream service: a real axum service on a loopback port behind
//! `GrantGuardLayer`, called over HTTP with grant tokens bound to one call; every refusal
//! leaves the handler unrun.
#![cfg(feature = "axum")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use approvals_audit::grant::{GrantClaims, GrantTokenVerifier, sign_claims};
use approvals_audit::note::Signer;
use approvals_core::{
    Action, ActionRequest, Gate, GuardError, Initiator, MemorySink, Principal, RequestId,
    StaticPolicy,
};
use approvals_http::downstream::{
    ApprovedCall, GrantGuard, GrantGuardLayer, GrantTokenBroker, HttpCall,
};
use axum::Router;
use axum::extract::State;
use bytes::Bytes;
use chrono::{TimeDelta, Utc};
use http::{StatusCode, header};
use serde_json::{Value, json};

const ISSUER: &str = "approvals.test";

/// The gate's grant key (the services trust its verifier key).
fn signer() -> Signer {
    static SIGNER: LazyLock<Signer> =
        LazyLock::new(|| Signer::generate("grants.test").expect("valid key name"));
    SIGNER.clone()
}

fn client() -> reqwest::Client {
    approvals_http::client::http_client(Duration::from_secs(10)).expect("client")
}

/// A service on a loopback port that counts the calls its handler runs.
struct Service {
    origin: String,
    calls: Arc<AtomicUsize>,
}

impl Service {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn refund(&self, body: Value) -> HttpCall {
        HttpCall::new(
            "billing.refund",
            self.origin.as_str(),
            "POST",
            "/v1/refunds?notify=1",
            Some(body),
        )
    }
}

/// Every path and method reaches the counting handler, so only the guard stands between a
/// request and a call.
async fn handler(
    State(calls): State<Arc<AtomicUsize>>,
    ApprovedCall(grant): ApprovedCall,
    body: Bytes,
) -> String {
    calls.fetch_add(1, Ordering::SeqCst);
    format!("{} {}", grant.request_id, body.len())
}

async fn service_with(guard: impl FnOnce(GrantTokenVerifier) -> GrantGuardLayer) -> Service {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let origin = format!("http://{}", listener.local_addr().expect("local addr"));
    let verifier = GrantTokenVerifier::new(&[signer().verifier()])
        .audience(origin.as_str())
        .issuer(ISSUER);
    let calls = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .fallback(handler)
        .with_state(calls.clone())
        .layer(guard(verifier));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Service { origin, calls }
}

async fn service() -> Service {
    service_with(GrantGuardLayer::new).await
}

/// A token as the broker mints it for `call`, addressed to `audience`, expiring at `exp`.
fn token_for(call: &HttpCall, audience: &str, exp: chrono::DateTime<Utc>) -> String {
    let now = Utc::now();
    let claims = GrantClaims::builder(RequestId::new(), call.to_request().digest(), now, exp)
        .approvers(["sam@example.com"])
        .policy_version("v1")
        .issuer(ISSUER)
        .audience(audience)
        .bind(call.binding());
    sign_claims(claims, &signer()).expect("claims sign")
}

fn mint(call: &HttpCall) -> String {
    token_for(call, call.origin(), Utc::now() + TimeDelta::minutes(5))
}

/// Sends `body` (raw JSON text) to `url` with `method` and `token`.
async fn send(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<String>,
) -> reqwest::Response {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = client().request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request
            .header(header::CONTENT_TYPE, "application/json")
            .body(body);
    }
    request.send().await.expect("the service answers")
}

/// Asserts a problem document with `status` and `code`; returns it.
async fn refused(response: reqwest::Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status.as_u16());
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let challenge = response
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let problem: Value = response.json().await.expect("a problem document");
    assert_eq!(content_type.as_deref(), Some("application/problem+json"));
    assert_eq!(problem["code"], code, "{problem}");
    assert_eq!(problem["status"], status.as_u16());
    if status == StatusCode::UNAUTHORIZED {
        let challenge = challenge.expect("a 401 carries WWW-Authenticate");
        assert!(challenge.starts_with("Bearer"), "{challenge}");
        if code == "invalid_token" {
            assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
        }
    }
    problem
}

fn refund_body() -> Value {
    json!({"charge": "ch_1", "amount": 500, "reason": "duplicate"})
}

#[tokio::test]
async fn an_approved_call_is_accepted_once() {
    let service = service().await;
    let call = service.refund(refund_body());
    let token = mint(&call);
    let body = refund_body().to_string();
    let response = send("POST", &call.url(), Some(&token), Some(body.clone())).await;
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let answer = response.text().await.expect("text");
    // The handler saw the claims the guard verified and the body as sent.
    let claims = GrantTokenVerifier::new(&[signer().verifier()])
        .open(&token)
        .expect("token opens");
    assert_eq!(answer, format!("{} {}", claims.request_id, body.len()));
    assert_eq!(service.calls(), 1);
}

#[tokio::test]
async fn a_replayed_token_is_refused() {
    let service = service().await;
    let call = service.refund(refund_body());
    let token = mint(&call);
    let body = refund_body().to_string();
    let first = send("POST", &call.url(), Some(&token), Some(body.clone())).await;
    assert_eq!(first.status(), reqwest::StatusCode::OK);
    let again = send("POST", &call.url(), Some(&token), Some(body)).await;
    refused(again, StatusCode::CONFLICT, "token_used").await;
    assert_eq!(service.calls(), 1, "the handler ran once");
}

#[tokio::test]
async fn a_changed_body_value_is_refused() {
    let service = service().await;
    let call = service.refund(refund_body());
    let token = mint(&call);
    let changed = json!({"charge": "ch_1", "amount": 50_000, "reason": "duplicate"});
    let response = send("POST", &call.url(), Some(&token), Some(changed.to_string())).await;
    refused(response, StatusCode::FORBIDDEN, "call_mismatch").await;
    // The same token with the approved body still works: the refusal used nothing up.
    let response = send(
        "POST",
        &call.url(),
        Some(&token),
        Some(refund_body().to_string()),
    )
    .await;
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    assert_eq!(service.calls(), 1);
}

#[tokio::test]
async fn reordered_keys_and_whitespace_are_the_same_call() {
    let service = service().await;
    let call = service.refund(refund_body());
    let token = mint(&call);
    let reordered = "{\n  \"reason\" : \"duplicate\",\n  \"amount\": 500,\t\"charge\":\"ch_1\" }\n";
    let response = send(
        "POST",
        &call.url(),
        Some(&token),
        Some(reordered.to_owned()),
    )
    .await;
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    assert_eq!(service.calls(), 1);
}

#[tokio::test]
async fn a_changed_path_query_or_method_is_refused() {
    let service = service().await;
    let body = refund_body().to_string();
    for (method, path) in [
        ("POST", "/v1/refunds/all?notify=1"),
        ("POST", "/v1/refunds?notify=0"),
        ("POST", "/v1/refunds"),
        ("PUT", "/v1/refunds?notify=1"),
    ] {
        let call = service.refund(refund_body());
        let token = mint(&call);
        let url = format!("{}{path}", service.origin);
        let response = send(method, &url, Some(&token), Some(body.clone())).await;
        refused(response, StatusCode::FORBIDDEN, "call_mismatch").await;
    }
    assert_eq!(service.calls(), 0);
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let service = service().await;
    let call = service.refund(refund_body());
    let token = token_for(&call, call.origin(), Utc::now() - TimeDelta::minutes(2));
    let response = send(
        "POST",
        &call.url(),
        Some(&token),
        Some(refund_body().to_string()),
    )
    .await;
    let problem = refused(response, StatusCode::UNAUTHORIZED, "invalid_token").await;
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("expired")),
        "{problem}"
    );
    assert_eq!(service.calls(), 0);
}

#[tokio::test]
async fn a_token_for_another_service_is_refused() {
    let service = service().await;
    let call = service.refund(refund_body());
    // The same call, approved for another service (its own origin as the audience).
    let elsewhere = HttpCall::new(
        "billing.refund",
        "https://billing.internal",
        "POST",
        "/v1/refunds?notify=1",
        Some(refund_body()),
    );
    assert_eq!(elsewhere.binding(), call.binding());
    let token = mint(&elsewhere);
    let response = send(
        "POST",
        &call.url(),
        Some(&token),
        Some(refund_body().to_string()),
    )
    .await;
    let problem = refused(response, StatusCode::UNAUTHORIZED, "invalid_token").await;
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("aud")),
        "{problem}"
    );
    assert_eq!(service.calls(), 0);
}

#[tokio::test]
async fn forged_tampered_unbound_and_missing_tokens_are_refused() {
    let service = service().await;
    let call = service.refund(refund_body());
    let body = refund_body().to_string();
    let url = call.url();

    let missing = send("POST", &url, None, Some(body.clone())).await;
    refused(missing, StatusCode::UNAUTHORIZED, "unauthenticated").await;

    // Signed by another key under the trusted key's name.
    let impostor = Signer::generate("grants.test").expect("valid key name");
    let claims = GrantClaims::builder(
        RequestId::new(),
        call.to_request().digest(),
        Utc::now(),
        Utc::now() + TimeDelta::minutes(5),
    )
    .issuer(ISSUER)
    .audience(call.origin())
    .bind(call.binding());
    let forged = sign_claims(claims, &impostor).expect("claims sign");

    // A genuine token for a small refund, its claims edited to a large one.
    let genuine = mint(&call);
    let (payload, signature) = genuine
        .strip_prefix("apg1.")
        .and_then(|rest| rest.split_once('.'))
        .expect("token shape");
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: Value =
        serde_json::from_slice(&b64.decode(payload).expect("base64")).expect("claims json");
    let bigger = service.refund(json!({"charge": "ch_1", "amount": 50_000, "reason": "duplicate"}));
    claims["bind"] = Value::String(bigger.binding());
    let tampered = format!(
        "apg1.{}.{signature}",
        b64.encode(serde_json::to_vec(&claims).expect("json"))
    );

    // A genuine token that is not bound to a call.
    let unbound = sign_claims(
        GrantClaims::builder(
            RequestId::new(),
            call.to_request().digest(),
            Utc::now(),
            Utc::now() + TimeDelta::minutes(5),
        )
        .issuer(ISSUER)
        .audience(call.origin()),
        &signer(),
    )
    .expect("claims sign");

    for token in [
        forged.as_str(),
        &tampered,
        &unbound,
        "apg1.garbage",
        "not-a-token",
    ] {
        let response = send("POST", &url, Some(token), Some(body.clone())).await;
        refused(response, StatusCode::UNAUTHORIZED, "invalid_token").await;
    }
    let bigger_body = json!({"charge": "ch_1", "amount": 50_000, "reason": "duplicate"});
    let response = send("POST", &url, Some(&tampered), Some(bigger_body.to_string())).await;
    refused(response, StatusCode::UNAUTHORIZED, "invalid_token").await;
    assert_eq!(service.calls(), 0);
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused() {
    let service = service().await;
    // A token valid for exactly this 1 MiB + 1 body: only the size refuses it.
    let padding = "x".repeat(1024 * 1024);
    let call = service.refund(json!({"pad": padding}));
    let token = mint(&call);
    let body = json!({"pad": padding}).to_string();
    assert!(body.len() > approvals_http::downstream::DEFAULT_BODY_LIMIT);
    let response = send("POST", &call.url(), Some(&token), Some(body)).await;
    refused(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    assert_eq!(service.calls(), 0);

    // Under a guard with a larger limit the same call goes through.
    let roomy = service_with(|v| GrantGuard::new(v).body_limit(2 * 1024 * 1024).into_layer()).await;
    let call = roomy.refund(json!({"pad": padding}));
    let token = mint(&call);
    let response = send(
        "POST",
        &call.url(),
        Some(&token),
        Some(json!({"pad": padding}).to_string()),
    )
    .await;
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    assert_eq!(roomy.calls(), 1);
}

#[tokio::test]
async fn a_body_that_is_not_json_is_refused() {
    let service = service().await;
    let call = service.refund(refund_body());
    let token = mint(&call);
    let response = send(
        "POST",
        &call.url(),
        Some(&token),
        Some("charge=ch_1&amount=500".into()),
    )
    .await;
    refused(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_body",
    )
    .await;
    assert_eq!(service.calls(), 0);
}

fn gate(audit: Arc<MemorySink>) -> Gate {
    Gate::builder()
        .policy(StaticPolicy::allow_all())
        .audit_shared(audit)
        .initiator(
            Initiator::agent("billing-agent").on_behalf_of(Principal::human("dana@example.com")),
        )
        .credential_broker(GrantTokenBroker::new(signer(), ISSUER))
        .build()
        .expect("gate")
}

#[tokio::test]
async fn a_call_through_the_gate_is_accepted_and_its_token_never_audited() {
    let service = service().await;
    let audit = Arc::new(MemorySink::new());
    let gate = gate(audit.clone());
    let call = service.refund(refund_body());
    let (url, body) = (call.url(), refund_body());
    let seen = Arc::new(Mutex::new(None::<(String, String, String)>));
    let kept = seen.clone();
    let status = gate
        .run_with_credential(&call, |credential| async move {
            if let Ok(mut seen) = kept.lock() {
                *seen = Some((
                    credential.secret().to_owned(),
                    credential.id().to_owned(),
                    credential.scope().to_owned(),
                ));
            }
            let response = client()
                .post(url)
                .bearer_auth(credential.secret())
                .json(&body)
                .send()
                .await
                .map_err(|e| GuardError::InvalidRequest(e.to_string()))?;
            Ok::<_, GuardError>(response.status())
        })
        .await
        .expect("the call runs");
    assert_eq!(status, reqwest::StatusCode::OK);
    assert_eq!(service.calls(), 1);

    let (token, id, scope) = seen.lock().expect("lock").clone().expect("the closure ran");
    assert!(id.starts_with("apr_"), "{id}");
    assert_eq!(
        scope,
        format!("POST /v1/refunds?notify=1 on {}", service.origin)
    );
    let names = audit.names();
    assert!(names.contains(&"credential_issued"), "{names:?}");
    assert!(names.contains(&"credential_revoked"), "{names:?}");
    let (_, signature) = token.rsplit_once('.').expect("token shape");
    for event in audit.events() {
        let text = serde_json::to_string(&event).expect("event json");
        assert!(!text.contains(&token), "the token is in {text}");
        assert!(
            !text.contains(signature),
            "the token's signature is in {text}"
        );
    }
    // The same token cannot be used again.
    let again = send(
        "POST",
        &call.url(),
        Some(&token),
        Some(refund_body().to_string()),
    )
    .await;
    refused(again, StatusCode::CONFLICT, "token_used").await;
    assert_eq!(service.calls(), 1);
}

#[tokio::test]
async fn the_broker_refuses_an_action_that_is_not_an_http_call() {
    let audit = Arc::new(MemorySink::new());
    let gate = gate(audit.clone());
    let ran = Arc::new(AtomicUsize::new(0));
    for action in [
        ActionRequest::new("db.export", "postgres://prod/invoices"),
        ActionRequest::new("billing.refund", "https://billing.internal/v1/refunds")
            .params(json!({"method": "POST"})),
        ActionRequest::new("billing.refund", "https://billing.internal/v1/refunds")
            .params(json!({"method": "POST", "path": "/v1/other"})),
    ] {
        let ran = ran.clone();
        let result = gate
            .run_with_credential(&action, |_credential| async move {
                ran.fetch_add(1, Ordering::SeqCst);
                Ok::<_, GuardError>(())
            })
            .await;
        let error = result.expect_err("refused");
        assert!(error.to_string().contains("not an HTTP call"), "{error}");
    }
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    assert!(!audit.names().contains(&"credential_issued"));
}
