//! The approver conformance suite (`approvals_testkit::approver_suite`) against the two
//! channels of this crate, each over real HTTP on loopback with its real wire format:
//!
//! - the webhook approver: the real `WebhookApprover` posts signed deliveries (Standard
//!   Webhooks headers) to a receiver in this file, which verifies each one, acts on each
//!   event id once (a retried or redelivered event is acknowledged, not shown again) and
//!   shows one message per request, updated with each later delivery. Reviewers decide as
//!   the webhook design says: through the API (`POST /v1/requests/{id}/approve` with their
//!   bearer token and the digest they were shown); a forged decision is a post with a token
//!   the server does not know.
//! - the console: a channel reviewers visit, so no approver. A reviewer signs in with their
//!   token (session cookie), opens the request's page and posts its decision form with the
//!   form token (CSRF) and the digest, as a browser does; a forged decision is a post with a
//!   wrong form token, or with no session. What reviewers see is the text of the page.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use approvals_core::{Approver, Gate, MemoryStore, RequestId, StaticPolicy, Verdict};
use approvals_http::webhook::{WEBHOOK_ID, WebhookApprover, WebhookSecret, verify_webhook};
use approvals_http::{ReviewServer, Tokens};
use approvals_testkit::approver_suite::{self, ChannelHarness, Person, Setup};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use serde_json::Value;

// ------------------------------------------------------------------------------------------
// Shared pieces.

/// Each person's API token.
fn token(who: Person) -> &'static str {
    match who {
        Person::Reviewer => "tok-suite-reviewer",
        Person::Requester => "tok-suite-requester",
        Person::Outsider => "tok-suite-outsider",
    }
}

fn tokens() -> Tokens {
    Person::ALL.into_iter().fold(Tokens::new(), |t, who| {
        t.with_token(token(who), who.principal())
    })
}

/// The suite's gate, with `approver` if the channel has one.
fn gate(setup: &Setup, approver: Option<Arc<dyn Approver>>) -> Gate {
    let mut builder = Gate::builder()
        .policy(StaticPolicy::require(setup.requirement.clone()))
        .store(MemoryStore::new())
        .audit_shared(setup.audit.clone())
        .clock(setup.clock.clone())
        .initiator(setup.initiator.clone())
        .poll_interval(Duration::from_millis(20));
    if let Some(approver) = approver {
        builder = builder.approver_shared(approver);
    }
    builder.build().expect("gate")
}

/// Serves the review server for `gate` on a loopback port; returns its base URL.
async fn serve(gate: &Gate) -> String {
    common::spawn(ReviewServer::builder(gate.clone()).tokens(tokens()).build()).await
}

/// The crate's own HTTP client (rustls, no redirects followed).
fn client() -> reqwest::Client {
    approvals_http::client::http_client(Duration::from_secs(10)).expect("client")
}

// ------------------------------------------------------------------------------------------
// The webhook approver.

/// One message the receiver shows: the request it is about and its latest delivery.
struct Message {
    request: String,
    sent_at: String,
    view: Value,
}

/// What a webhook consumer (a ticketing or chat integration) does with deliveries.
struct Receiver {
    secret: WebhookSecret,
    /// Event ids already acted on.
    processed: Mutex<HashSet<String>>,
    messages: Mutex<Vec<Message>>,
}

impl Receiver {
    /// Handles one delivery: verify, act once per event id, answer.
    fn receive(&self, headers: &http::HeaderMap, body: &[u8]) -> u16 {
        if verify_webhook(&self.secret, headers, body, chrono::Utc::now()).is_err() {
            return 401;
        }
        let Some(event_id) = headers.get(WEBHOOK_ID).and_then(|v| v.to_str().ok()) else {
            return 400;
        };
        if !self
            .processed
            .lock()
            .expect("lock")
            .insert(event_id.to_owned())
        {
            return 200; // A retry or redelivery of an event already acted on.
        }
        let Ok(payload) = serde_json::from_slice::<Value>(body) else {
            return 400;
        };
        let request = payload["request"]["id"].as_str().unwrap_or("").to_owned();
        let sent_at = payload["sent_at"].as_str().unwrap_or("").to_owned();
        let view = payload["request"].clone();
        let mut messages = self.messages.lock().expect("lock");
        match payload["type"].as_str() {
            // A new message.
            Some("approval.requested") => messages.push(Message {
                request,
                sent_at,
                view,
            }),
            // The request's messages show the latest delivery.
            Some("approval.escalated" | "approval.resolved") => {
                let mut updated = false;
                for m in messages.iter_mut().filter(|m| m.request == request) {
                    updated = true;
                    // RFC 3339 UTC times of one format compare as text.
                    if m.sent_at <= sent_at {
                        m.sent_at = sent_at.clone();
                        m.view = view.clone();
                    }
                }
                if !updated {
                    messages.push(Message {
                        request,
                        sent_at,
                        view,
                    });
                }
            }
            _ => return 400,
        }
        200
    }

    /// The text of each message about `id`.
    fn shown(&self, id: RequestId) -> Vec<String> {
        let id = id.to_string();
        self.messages
            .lock()
            .expect("lock")
            .iter()
            .filter(|m| m.request == id)
            .map(|m| render(&m.view))
            .collect()
    }

    /// The digest of the latest delivery about `id`.
    fn digest(&self, id: RequestId) -> Option<String> {
        let id = id.to_string();
        self.messages
            .lock()
            .expect("lock")
            .iter()
            .find(|m| m.request == id)
            .and_then(|m| m.view["digest"].as_str().map(str::to_owned))
    }
}

/// A message as the consumer renders a delivered request.
fn render(view: &Value) -> String {
    let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
    let mut out = format!(
        "{} on {}: {}\nparameters: {}\ndigest: {}\njustification: {}",
        text(&view["kind"]),
        text(&view["resource"]),
        text(&view["state"]),
        view["params"],
        text(&view["digest"]),
        text(&view["justification"]),
    );
    for review in view["reviews"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "\nreview: {} {} ({})",
            text(&review["reviewer"]["id"]),
            text(&review["verdict"]),
            text(&review["reason"]),
        ));
    }
    out
}

/// Serves `receiver` on a loopback port; returns the URL to deliver to.
async fn listen(receiver: Arc<Receiver>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://{}/hooks/approvals",
        listener.local_addr().expect("addr")
    );
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let receiver = receiver.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let receiver = receiver.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let status = receiver.receive(&parts.headers, &body);
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
    url
}

struct WebhookHarness {
    gate: Gate,
    approver: Arc<WebhookApprover>,
    receiver: Arc<Receiver>,
    api: String,
    client: reqwest::Client,
}

impl WebhookHarness {
    /// Posts a decision to the API as the receiver's integration does; returns the status
    /// and the body.
    async fn post_decision(
        &self,
        id: RequestId,
        bearer: Option<&str>,
        verdict: Verdict,
        body: Value,
    ) -> (u16, Value) {
        let action = match verdict {
            Verdict::Approve => "approve",
            Verdict::Deny => "deny",
        };
        let mut post = self
            .client
            .post(format!("{}/v1/requests/{id}/{action}", self.api))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        if let Some(token) = bearer {
            post = post.bearer_auth(token);
        }
        let response = post.send().await.expect("the API answers");
        let status = response.status().as_u16();
        let body = response.bytes().await.expect("body");
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// The digest the receiver was shown for `id` (waits, bounded, for the delivery).
    async fn delivered_digest(&self, id: RequestId) -> String {
        for _ in 0..500 {
            if let Some(digest) = self.receiver.digest(id) {
                return digest;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no delivery about {id} reached the receiver");
    }
}

impl ChannelHarness for WebhookHarness {
    async fn start(setup: Setup) -> Self {
        let receiver = Arc::new(Receiver {
            secret: WebhookSecret::generate(),
            processed: Mutex::new(HashSet::new()),
            messages: Mutex::new(Vec::new()),
        });
        let url = listen(receiver.clone()).await;
        let approver = Arc::new(
            WebhookApprover::new(&url, receiver.secret.clone())
                .expect("webhook approver")
                .backoff(Duration::from_millis(10), Duration::from_millis(40)),
        );
        let gate = gate(&setup, Some(approver.clone()));
        let api = serve(&gate).await;
        WebhookHarness {
            gate,
            approver,
            receiver,
            api,
            client: client(),
        }
    }

    fn gate(&self) -> &Gate {
        &self.gate
    }

    fn approver(&self) -> Option<Arc<dyn Approver>> {
        Some(self.approver.clone())
    }

    async fn decide(
        &self,
        id: RequestId,
        who: Person,
        verdict: Verdict,
        reason: Option<&str>,
    ) -> Option<String> {
        let mut body = serde_json::json!({ "digest": self.delivered_digest(id).await });
        if let Some(reason) = reason {
            body["reason"] = reason.into();
        }
        let (status, answer) = self
            .post_decision(id, Some(token(who)), verdict, body)
            .await;
        if (200..300).contains(&status) {
            return None;
        }
        Some(answer["detail"].as_str().unwrap_or_default().to_owned())
    }

    async fn forge(&self, id: RequestId, who: Person) {
        let body = serde_json::json!({ "digest": self.delivered_digest(id).await });
        // A token the server never issued, and no token at all.
        let forged = format!("forged-token-of-{}", who.principal().id);
        for bearer in [Some(forged.as_str()), None] {
            let (status, answer) = self
                .post_decision(id, bearer, Verdict::Approve, body.clone())
                .await;
            assert_eq!(status, 401, "a forged decision is refused: {answer}");
        }
    }

    async fn shown(&self, id: RequestId) -> Vec<String> {
        self.receiver.shown(id)
    }
}

// ------------------------------------------------------------------------------------------
// The console.

struct ConsoleHarness {
    gate: Gate,
    base: String,
    client: reqwest::Client,
    /// Session cookies by person, once signed in.
    sessions: Mutex<HashMap<Person, String>>,
}

/// What a browser sends with a form: its origin and the form encoding.
fn form_post(client: &reqwest::Client, base: &str, path: &str) -> reqwest::RequestBuilder {
    client
        .post(format!("{base}{path}"))
        .header(http::header::ORIGIN, base)
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
}

fn encode(fields: &[(&str, &str)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in fields {
        s.append_pair(k, v);
    }
    s.finish()
}

/// The value of the first `name="..."` form field in `html`.
fn field(html: &str, name: &str) -> Option<String> {
    let marker = format!(r#"name="{name}" value=""#);
    let start = html.find(&marker)? + marker.len();
    html[start..].split('"').next().map(unescape)
}

/// The text of the element with `marker` among its attributes (such as `role="alert"`).
fn element_text(html: &str, marker: &str) -> Option<String> {
    let at = html.find(marker)?;
    let open_end = at + html[at..].find('>')? + 1;
    let close = open_end + html[open_end..].find("</p>")?;
    Some(text_of(&html[open_end..close]))
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// `html` without its tags, entities decoded, whitespace collapsed.
fn text_of(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => {
                in_tag = true;
                out.push(' ');
            }
            '>' if in_tag => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    unescape(&out.split_whitespace().collect::<Vec<_>>().join(" "))
}

impl ConsoleHarness {
    /// Signs `who` in with their token (once); returns the session cookie.
    async fn session(&self, who: Person) -> String {
        if let Some(cookie) = self.sessions.lock().expect("lock").get(&who) {
            return cookie.clone();
        }
        let response = form_post(&self.client, &self.base, "/console/login")
            .body(encode(&[("token", token(who))]))
            .send()
            .await
            .expect("sign-in answers");
        assert_eq!(response.status().as_u16(), 303, "{who:?} signs in");
        let cookie = response
            .headers()
            .get(http::header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .expect("a session cookie")
            .to_owned();
        self.sessions
            .lock()
            .expect("lock")
            .insert(who, cookie.clone());
        cookie
    }

    /// The request's page as `who` sees it: status and HTML.
    async fn page(&self, id: RequestId, who: Person) -> (u16, String) {
        let response = self
            .client
            .get(format!("{}/console/requests/{id}", self.base))
            .header(http::header::COOKIE, self.session(who).await)
            .send()
            .await
            .expect("the console answers");
        let status = response.status().as_u16();
        (status, response.text().await.expect("page"))
    }

    /// Posts the decision form of `id`; returns the status and the page answered.
    async fn post_decision(
        &self,
        id: RequestId,
        cookie: Option<&str>,
        fields: &[(&str, &str)],
    ) -> (u16, String) {
        let mut post = form_post(
            &self.client,
            &self.base,
            &format!("/console/requests/{id}/decision"),
        )
        .body(encode(fields));
        if let Some(cookie) = cookie {
            post = post.header(http::header::COOKIE, cookie);
        }
        let response = post.send().await.expect("the console answers");
        let status = response.status().as_u16();
        (status, response.text().await.expect("page"))
    }
}

/// The form fields the page carries: the session's form token (on every page, in the
/// sign-out form as in the decision form) and the digest shown.
fn page_fields(html: &str) -> (String, String) {
    let csrf = field(html, "csrf").expect("the page carries the form token");
    let digest = field(html, "digest")
        .or_else(|| {
            let marker = r#"id="digest">"#;
            let start = html.find(marker)? + marker.len();
            html[start..].split('<').next().map(str::to_owned)
        })
        .expect("the page shows the digest");
    (csrf, digest)
}

impl ChannelHarness for ConsoleHarness {
    async fn start(setup: Setup) -> Self {
        let gate = gate(&setup, None);
        let base = serve(&gate).await;
        ConsoleHarness {
            gate,
            base,
            client: client(),
            sessions: Mutex::new(HashMap::new()),
        }
    }

    fn gate(&self) -> &Gate {
        &self.gate
    }

    fn approver(&self) -> Option<Arc<dyn Approver>> {
        None
    }

    /// Opens the request's page and posts its decision form. Where the page offers no
    /// button to this person (the console runs the gate's rules dry), the form is posted
    /// all the same, as from an older copy of the page or by hand: the console must refuse
    /// it itself.
    async fn decide(
        &self,
        id: RequestId,
        who: Person,
        verdict: Verdict,
        reason: Option<&str>,
    ) -> Option<String> {
        let (status, html) = self.page(id, who).await;
        assert_eq!(status, 200, "{who:?} opens the request: {}", text_of(&html));
        let (csrf, digest) = page_fields(&html);
        let verdict = match verdict {
            Verdict::Approve => "approve",
            Verdict::Deny => "deny",
        };
        let cookie = self.session(who).await;
        let (status, answer) = self
            .post_decision(
                id,
                Some(&cookie),
                &[
                    ("csrf", &csrf),
                    ("digest", &digest),
                    ("reason", reason.unwrap_or("")),
                    ("verdict", verdict),
                ],
            )
            .await;
        if status == 303 {
            return None;
        }
        Some(element_text(&answer, r#"role="alert""#).unwrap_or_else(|| text_of(&answer)))
    }

    async fn forge(&self, id: RequestId, who: Person) {
        let (_, html) = self.page(id, who).await;
        let (csrf, digest) = page_fields(&html);
        let cookie = self.session(who).await;
        // A wrong form token with a real session; the real form token with no session.
        let attempts = [
            (Some(cookie.as_str()), "forged-form-token".to_owned(), 403),
            (None, csrf, 401),
        ];
        for (cookie, token, expected) in attempts {
            let (status, answer) = self
                .post_decision(
                    id,
                    cookie,
                    &[
                        ("csrf", &token),
                        ("digest", &digest),
                        ("reason", "looks fine"),
                        ("verdict", "approve"),
                    ],
                )
                .await;
            assert_eq!(
                status,
                expected,
                "a forged decision is refused: {}",
                text_of(&answer)
            );
        }
    }

    async fn shown(&self, id: RequestId) -> Vec<String> {
        let (_, html) = self.page(id, Person::Reviewer).await;
        let main = html
            .split_once("<main>")
            .and_then(|(_, rest)| rest.split_once("</main>"))
            .map_or(html.as_str(), |(main, _)| main);
        vec![text_of(main)]
    }
}

// ------------------------------------------------------------------------------------------
// One test per behaviour and channel.

macro_rules! behaviours {
    ($($name:ident),* $(,)?) => {
        mod webhook {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    approver_suite::$name::<WebhookHarness>().await;
                }
            )*
        }

        mod console {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    approver_suite::$name::<ConsoleHarness>().await;
                }
            )*
        }
    };
}

behaviours!(
    delivers_the_exact_action,
    shows_every_resolution,
    refuses_self_approval,
    refuses_an_outsider,
    refuses_a_forged_decision,
    requires_a_reason_when_the_policy_does,
    redelivery_shows_no_second_message,
);
