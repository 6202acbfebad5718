//! Shared fixtures: a gate on a memory store, a token for every kind of caller, and helpers
//! to call a `ReviewServer` in-process or over loopback.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use approvals_core::{
    ActionRequest, Gate, Initiator, MemorySink, MemoryStore, Principal, RequestId, Requirement,
    StaticPolicy, Submission,
};
use approvals_http::{ReviewServer, Tokens};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, header};

pub mod console;

pub const SAM: &str = "tok-sam-reviewer-security";
pub const DANA: &str = "tok-dana-requester";
pub const EVE: &str = "tok-eve-no-groups";
pub const BOT: &str = "tok-billing-agent";
pub const OTHER_BOT: &str = "tok-other-agent";
pub const SVC: &str = "tok-deploy-service";
pub const ADMIN: &str = "tok-admin";

pub struct Fixture {
    pub gate: Gate,
    pub audit: Arc<MemorySink>,
    pub store: Arc<MemoryStore>,
    pub server: ReviewServer,
}

pub fn tokens() -> Tokens {
    Tokens::new()
        .with_token(
            SAM,
            Principal::human("sam@example.com")
                .with_name("Sam Reviewer")
                .with_groups(["security"]),
        )
        // Dana is in the reviewing group too, but the bot acts on her behalf.
        .with_token(
            DANA,
            Principal::human("dana@example.com").with_groups(["security"]),
        )
        .with_token(EVE, Principal::human("eve@example.com"))
        // Agents carrying the reviewing group still may not review.
        .with_token(
            BOT,
            Principal::agent("billing-agent").with_groups(["security"]),
        )
        .with_token(OTHER_BOT, Principal::agent("other-agent"))
        .with_token(
            SVC,
            Principal::service("deploy-pipeline").with_groups(["security"]),
        )
        .with_token(
            ADMIN,
            Principal::human("root@example.com").with_groups(["approvals-admins"]),
        )
}

pub fn fixture() -> Fixture {
    fixture_with(Requirement::groups(["security"]))
}

pub fn fixture_with(requirement: Requirement) -> Fixture {
    let store = Arc::new(MemoryStore::new());
    let audit = Arc::new(MemorySink::new());
    let gate = Gate::builder()
        .policy(StaticPolicy::require(requirement))
        .store_shared(store.clone())
        .audit_shared(audit.clone())
        .initiator(
            Initiator::agent("billing-agent")
                .on_behalf_of(Principal::human("dana@example.com"))
                .model("test-model"),
        )
        .poll_interval(Duration::from_millis(50))
        .build()
        .expect("gate");
    let server = ReviewServer::builder(gate.clone())
        .tokens(tokens())
        .admin_groups(["approvals-admins"])
        .build();
    Fixture {
        gate,
        audit,
        store,
        server,
    }
}

pub fn export() -> ActionRequest {
    ActionRequest::new("data.export", "db://prod/customers")
        .params(serde_json::json!({"rows": 5000, "format": "csv"}))
        .environment("production")
        .justification("quarterly report")
}

pub async fn submit(gate: &Gate, action: &ActionRequest) -> RequestId {
    match gate.submit(action).await.expect("submit") {
        Submission::Pending(id) => id,
        Submission::Allowed(_) => panic!("the fixture policy requires approval"),
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    /// Asserts a problem document with this status and code.
    pub fn problem(&self, status: u16, code: &str) -> serde_json::Value {
        assert_eq!(self.status.as_u16(), status, "{}", self.text());
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{}",
            self.text()
        );
        let p = self.json();
        assert_eq!(p["code"], code, "{p}");
        assert_eq!(p["status"], status, "{p}");
        assert_eq!(p["type"], format!("urn:approvals:problem:{code}"));
        assert!(p["title"].is_string() && p["detail"].is_string());
        p
    }
}

pub async fn call(
    server: &ReviewServer,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> Reply {
    let mut b = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if body.is_some() {
        b = b.header(header::CONTENT_TYPE, "application/json");
    }
    let req = b
        .body(body.map(|v| Bytes::from(v.to_string())).unwrap_or_default())
        .expect("request");
    let resp = server.handle(req).await;
    let (parts, body) = resp.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// Serves on a loopback port; returns the base URL.
pub async fn spawn(server: ReviewServer) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(approvals_http::serve(
        listener,
        server,
        std::future::pending(),
    ));
    format!("http://{addr}")
}

/// Asserts `body` has only the fields the OpenAPI `schema` documents, and all it requires.
pub fn conforms(doc: &serde_json::Value, schema: &str, body: &serde_json::Value) {
    let schema = &doc["components"]["schemas"][schema];
    let properties = schema["properties"].as_object().expect("properties");
    let fields = body.as_object().expect("an object");
    for key in fields.keys() {
        assert!(
            properties.contains_key(key),
            "{key} is not documented in {schema}"
        );
    }
    for required in schema["required"].as_array().into_iter().flatten() {
        let name = required.as_str().expect("name");
        assert!(fields.contains_key(name), "{name} missing from {body}");
    }
}

/// Debian's Chromium for the console's browser tests (`apt-get install chromium`; `.ci/run`
/// installs it; `APPROVALS_CHROMIUM` overrides the path). Without it a test fails when
/// `CI=true` and is skipped, loudly, otherwise.
pub fn chromium() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("APPROVALS_CHROMIUM")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from("/usr/bin/chromium"));
    if path.exists() {
        return Some(path);
    }
    let message = format!(
        "headless Chromium not found at {}: install it with `apt-get update && apt-get install -y chromium` (or set APPROVALS_CHROMIUM)",
        path.display()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message}");
    }
    eprintln!("\n*** SKIPPED a console browser test: {message} ***\n");
    None
}
