//! A custom review channel: a platform team's own pager, reached through the signed webhook.
//!
//! Many teams already page their on-call engineers (PagerDuty, Opsgenie, an in-house pager).
//! This example routes approval requests there, with no code in the agent beyond
//! configuration:
//!
//! 1. The agent's gate has a `WebhookApprover` pointing at the pager service. Each new pending
//!    request is POSTed to it as `approval.requested`, an escalation as `approval.escalated`,
//!    and each later change (approved, executed, denied, expired, ...) as `approval.resolved`,
//!    signed with HMAC-SHA256 (Standard Webhooks headers).
//! 2. The pager verifies every delivery before it believes a word of it (signature over the
//!    raw body, timestamp window, replayed ids), then pages the on-call engineer of the
//!    request's reviewer group. When nobody answers, the policy's escalation fires: the gate
//!    sends `approval.escalated` and the pager pages the escalation group's on-call.
//! 3. The engineer acknowledges the page and approves. A webhook carries no authority, so the
//!    approval goes through the approvals HTTP API with the engineer's own token, bound to the
//!    digest shown on the page; the gate checks it like any review (a human, not the
//!    requester, in an allowed group at decision time).
//! 4. The agent gets its grant and runs the action once; the `approval.resolved` deliveries
//!    update the page (approved by whom, then executed) and close the incident.
//!
//! Everything runs in this process on loopback ports; no account is needed. The pager service
//! is a **stand-in written for this example** (it is not PagerDuty's API), and the on-call
//! engineers are simulated: Priya (database on-call) does not answer, Sam (SRE on-call, the
//! escalation group) approves. An attacker's forged and replayed deliveries are refused.
//!
//! To use a real pager, give the `WebhookApprover` its https URL and a shared secret
//! (`whsec_...`), and make its receiving side do what [`Pager::receive`] does; see
//! approvals-http/README.md ("Webhooks") for the wire format and a receiver in Python. For a
//! channel that lives inside the agent's process instead (a chat bot with a Rust client),
//! implement `approvals_core::Approver`: `dispatch` is called for each new request and each
//! escalation, `resolved` for each later change, and decisions come back through
//! `Gate::decide`.
//!
//! Run: `cargo run -p approvals-examples --bin pager`

use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use approvals_core::{
    ActionRequest, AuditEvent, EventDetail, Gate, GuardError, Initiator, MemorySink, Principal,
    RequestContext, RequestId, RequestState, RulePolicy,
};
use approvals_http::webhook::{WebhookError, WebhookPayload};
use approvals_http::{
    ApiClient, ReplayGuard, RequestView, ReviewServer, Tokens, WebhookApprover, WebhookSecret,
    generate_token,
};
use axum::extract::State;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde_json::json;
use tokio::sync::mpsc;
use url::Url;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const POLICY: &str = include_str!("../../policies/pager.toml");

/// How long the demo waits for each step before it gives up and says so.
const STEP_DEADLINE: Duration = Duration::from_secs(60);

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pager example failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), BoxError> {
    // --- The approvals side: the agent's gate and the approvals HTTP API. ---------------
    let api_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let api_base: Url = format!("http://{}/", api_listener.local_addr()?).parse()?;
    let pager_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook_url = format!("http://{}/hooks/approvals", pager_listener.local_addr()?);
    // The shared webhook secret, configured on both sides (in production: from a vault).
    let secret = WebhookSecret::generate();

    let priya = Principal::human("priya@example.com")
        .with_name("Priya (database on-call)")
        .with_groups(["db-oncall"]);
    let sam = Principal::human("sam@example.com")
        .with_name("Sam (SRE on-call)")
        .with_groups(["sre-oncall"]);
    // Each engineer's personal approvals API token; their phone's pager app holds it.
    let (priya_token, sam_token) = (generate_token(), generate_token());

    let audit = Arc::new(MemorySink::new());
    let gate = Gate::builder()
        .policy(RulePolicy::from_toml(POLICY)?)
        .audit_shared(audit.clone())
        .approver(WebhookApprover::new(&hook_url, secret.clone())?.public_url(api_base.clone()))
        .initiator(
            Initiator::agent("db-remediation-agent")
                .model("claude-opus-4")
                .session("run-77"),
        )
        .build()?;
    let server = ReviewServer::builder(gate.clone())
        .tokens(
            Tokens::new()
                .with_token(&priya_token, priya)
                .with_token(&sam_token, sam),
        )
        .public_url(api_base.clone())
        .build();
    let (stop_api, api_stopped) = tokio::sync::oneshot::channel::<()>();
    let api = tokio::spawn(approvals_http::serve(api_listener, server, async {
        let _ = api_stopped.await;
    }));
    println!("[approvals] API at {api_base}; webhooks go to {hook_url}");

    // --- The pager service (a stand-in) and the on-call engineers' phones. --------------
    let (priya_phone, priya_pages) = mpsc::unbounded_channel();
    let (sam_phone, sam_pages) = mpsc::unbounded_channel();
    let pager = Arc::new(Pager::new(
        secret,
        vec![
            OnCall::new("db-oncall", "Priya", priya_phone),
            OnCall::new("sre-oncall", "Sam", sam_phone),
        ],
    ));
    let router = axum::Router::new()
        .route("/hooks/approvals", axum::routing::post(receive))
        .with_state(pager.clone());
    let (stop_pager, pager_stopped) = tokio::sync::oneshot::channel::<()>();
    let pager_server = tokio::spawn(async move {
        axum::serve(pager_listener, router)
            .with_graceful_shutdown(async {
                let _ = pager_stopped.await;
            })
            .await
    });
    println!("[pager] (stand-in pager service) on call: Priya for db-oncall, Sam for sre-oncall");
    // Each answer an engineer gives is reported here, so the demo ends only after it.
    let (answered, mut answers) = mpsc::unbounded_channel::<()>();
    tokio::spawn(engineer("Priya", priya_pages, pager.clone(), None));
    let sam_app = ApiClient::http(api_base.clone(), Some(sam_token))?;
    tokio::spawn(engineer(
        "Sam",
        sam_pages,
        pager.clone(),
        Some((sam_app, answered)),
    ));

    // --- The agent. ---------------------------------------------------------------------
    let failover = ActionRequest::new("database.failover", "postgres://prod/orders")
        .params(json!({"promote": "orders-replica-2", "demote": "orders-primary-1", "max_lag_bytes": 0}))
        .summary("Promote orders-replica-2 to primary")
        .justification("orders-primary-1 has failed health checks for 4 minutes")
        .context(RequestContext {
            ticket: Some("INC-4821".into()),
            impact: Some("about 20 s without writes on orders".into()),
            ..RequestContext::environment("production")
        });
    println!("[agent] asking to fail over postgres://prod/orders ...");
    let agent = {
        let gate = gate.clone();
        tokio::spawn(async move {
            gate.run(&failover, || async {
                println!("[agent] approved: promoting orders-replica-2 to primary");
                Ok::<_, GuardError>("orders-replica-2 is the primary")
            })
            .await
        })
    };

    // --- Someone on the network path tries to feed the pager false news. ---------------
    let captured = wait_for(|| pager.captured(), "the pager's first delivery").await?;
    attack(&hook_url, captured).await?;

    match agent.await? {
        Ok(result) => println!("[agent] done: {result}"),
        Err(e) => println!("[agent] not run: {e}"),
    }

    // The page follows the request to its end: wait for the `executed` update (and for Sam's
    // phone to show the API's answer).
    tokio::time::timeout(STEP_DEADLINE, answers.recv())
        .await
        .map_err(|_| "Sam's pager app never got the API's answer")?;
    let closed = wait_for(|| pager.closed_incident(), "the page to be closed").await?;
    println!("\n[pager] incident #{} timeline:", closed.number);
    for line in &closed.timeline {
        println!("  {line}");
    }
    println!("\nAudit trail ({} events):", audit.events().len());
    for event in audit.events() {
        println!("  {}", describe(&event));
    }

    let _ = stop_pager.send(());
    let _ = stop_api.send(());
    let _ = pager_server.await;
    let _ = api.await;
    Ok(())
}

/// An attacker without the secret posts a forged "approved" update, then replays a genuine
/// delivery it captured. The pager refuses the forgery before reading it, and acknowledges
/// the replay without acting on it a second time.
async fn attack(hook_url: &str, (headers, body): (HeaderMap, Bytes)) -> Result<(), BoxError> {
    let client = approvals_http::client::http_client(Duration::from_secs(10))?;
    let forged_body = br#"{"type":"approval.resolved","request":{"state":"approved"}}"#;
    let id = "msg_forged";
    let now = chrono::Utc::now().timestamp();
    let forged = client
        .post(hook_url)
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", now.to_string())
        .header(
            "webhook-signature",
            WebhookSecret::generate().sign(id, now, forged_body),
        )
        .body(forged_body.to_vec())
        .send()
        .await?;
    println!(
        "[attacker] forged 'approved' delivery -> HTTP {}",
        forged.status().as_u16()
    );
    let mut replay = client.post(hook_url).body(body.to_vec());
    for (name, value) in &headers {
        replay = replay.header(name.as_str(), value.as_bytes());
    }
    let replayed = replay.send().await?;
    println!(
        "[attacker] replayed a captured delivery -> HTTP {}",
        replayed.status().as_u16()
    );
    Ok(())
}

/// Polls `check` until it returns something, for at most [`STEP_DEADLINE`].
async fn wait_for<T>(mut check: impl FnMut() -> Option<T>, what: &str) -> Result<T, BoxError> {
    let deadline = tokio::time::Instant::now() + STEP_DEADLINE;
    loop {
        if let Some(found) = check() {
            return Ok(found);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("gave up waiting for {what} after {STEP_DEADLINE:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ----------------------------------------------------------------------------------------
// The stand-in pager service.

/// A page on an on-call engineer's phone.
#[derive(Debug, Clone)]
struct Page {
    incident: usize,
    request: RequestView,
    console: Option<String>,
}

/// One incident, opened for one approval request.
#[derive(Debug, Clone)]
struct Incident {
    number: usize,
    request: RequestId,
    closed: bool,
    timeline: Vec<String>,
}

/// Who carries the pager for a reviewer group.
struct OnCall {
    group: &'static str,
    engineer: &'static str,
    phone: mpsc::UnboundedSender<Page>,
}

impl OnCall {
    fn new(
        group: &'static str,
        engineer: &'static str,
        phone: mpsc::UnboundedSender<Page>,
    ) -> Self {
        OnCall {
            group,
            engineer,
            phone,
        }
    }
}

/// The pager: receives approval webhooks, opens incidents, pages whoever is on call.
struct Pager {
    secret: WebhookSecret,
    replays: ReplayGuard,
    roster: Vec<OnCall>,
    incidents: Mutex<Vec<Incident>>,
    /// The first delivery exactly as received, kept only so the demo's attacker can replay it.
    first_delivery: Mutex<Option<(HeaderMap, Bytes)>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn now() -> String {
    chrono::Utc::now().format("%H:%M:%S%.3f").to_string()
}

/// The pager's webhook endpoint.
async fn receive(State(pager): State<Arc<Pager>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    match pager.receive(&headers, &body) {
        Ok(()) => StatusCode::NO_CONTENT,
        Err((status, why)) => {
            println!(
                "[pager] refused a delivery (HTTP {}): {why}",
                status.as_u16()
            );
            status
        }
    }
}

impl Pager {
    fn new(secret: WebhookSecret, roster: Vec<OnCall>) -> Self {
        Pager {
            secret,
            replays: ReplayGuard::new(),
            roster,
            incidents: Mutex::new(Vec::new()),
            first_delivery: Mutex::new(None),
        }
    }

    /// Handles one delivery. Authenticates the raw bytes first (signature, timestamp window,
    /// replayed id), as every receiver must, and only then parses them.
    fn receive(&self, headers: &HeaderMap, body: &Bytes) -> Result<(), (StatusCode, String)> {
        match self
            .replays
            .verify(&self.secret, headers, body, chrono::Utc::now())
        {
            Ok(_) => {}
            // A retry, a redelivery after a restart, or a captured copy: it was handled once,
            // so acknowledge it (a 4xx would make a genuine sender give up) and do nothing.
            Err(WebhookError::Replayed(id)) => {
                println!(
                    "[pager] delivery {id} was already handled; acknowledged, not acted on again"
                );
                return Ok(());
            }
            Err(e) => return Err((StatusCode::UNAUTHORIZED, e.to_string())),
        }
        let payload: WebhookPayload = serde_json::from_slice(body)
            .map_err(|e| (StatusCode::BAD_REQUEST, format!("not a webhook body: {e}")))?;
        lock(&self.first_delivery).get_or_insert_with(|| (headers.clone(), body.clone()));
        let console = payload.links.map(|l| l.console);
        let request = payload.request;
        match payload.event_type.as_str() {
            "approval.requested" => {
                let number = self.incident(&request, || {
                    format!(
                        "triggered: approve {} on {}? (request {})",
                        request.kind, request.resource, request.id
                    )
                });
                self.page(number, &request, &request.requirement.groups, console);
            }
            "approval.escalated" => {
                let groups = &request.requirement.escalation_groups;
                let number = self.incident(&request, String::new);
                self.note(
                    number,
                    format!(
                        "escalated: no decision from {}; paging {}",
                        request.requirement.groups.join(", "),
                        groups.join(", ")
                    ),
                );
                self.page(number, &request, groups, console);
            }
            "approval.resolved" => {
                let number = self.incident(&request, String::new);
                self.resolve(number, &request);
            }
            // Newer event types: acknowledge, so the sender does not retry, and ignore.
            other => println!("[pager] ignoring a delivery of type {other:?}"),
        }
        Ok(())
    }

    /// The incident for `request`, opened (with `opening` as its first line) if new.
    fn incident(&self, request: &RequestView, opening: impl FnOnce() -> String) -> usize {
        let mut incidents = lock(&self.incidents);
        if let Some(found) = incidents.iter().find(|i| i.request == request.id) {
            return found.number;
        }
        let number = incidents.len() + 1;
        let first = opening();
        println!("[pager] incident #{number} {first}");
        incidents.push(Incident {
            number,
            request: request.id,
            closed: false,
            timeline: vec![format!("{} {first}", now())],
        });
        number
    }

    fn note(&self, number: usize, line: String) {
        println!("[pager] incident #{number} {line}");
        if let Some(incident) = lock(&self.incidents).get_mut(number - 1) {
            incident.timeline.push(format!("{} {line}", now()));
        }
    }

    /// Pages the on-call engineer of each of `groups`.
    fn page(
        &self,
        number: usize,
        request: &RequestView,
        groups: &[String],
        console: Option<String>,
    ) {
        let mut paged = false;
        for on_call in self
            .roster
            .iter()
            .filter(|o| groups.iter().any(|g| g == o.group))
        {
            let page = Page {
                incident: number,
                request: request.clone(),
                console: console.clone(),
            };
            self.note(
                number,
                format!("paged {} ({})", on_call.engineer, on_call.group),
            );
            if on_call.phone.send(page).is_ok() {
                paged = true;
            } else {
                self.note(
                    number,
                    format!("{}'s phone is unreachable", on_call.engineer),
                );
            }
        }
        if !paged {
            self.note(
                number,
                format!("nobody is on call for {}", groups.join(", ")),
            );
        }
    }

    /// An on-call engineer acknowledged the page (they are looking at it).
    fn acknowledge(&self, number: usize, engineer: &str) {
        self.note(number, format!("acknowledged by {engineer}"));
    }

    /// Updates the incident from an `approval.resolved` delivery. Each change is delivered
    /// on its own, so they can arrive out of order: a closed incident stays closed.
    fn resolve(&self, number: usize, request: &RequestView) {
        let closed = lock(&self.incidents)
            .get(number - 1)
            .is_some_and(|i| i.closed);
        if closed && !request.state.is_terminal() {
            self.note(
                number,
                format!(
                    "(a late update, '{}', arrived after the close; the incident stays closed)",
                    request.state
                ),
            );
            return;
        }
        let by = request.decided_by().unwrap_or_else(|| "nobody".into());
        let line = match request.state {
            RequestState::Approved => format!("approved by {by}; the agent may run it now"),
            RequestState::Executing => "the action is running".to_owned(),
            RequestState::Executed => format!("resolved: the action ran (approved by {by})"),
            RequestState::Failed => "resolved: the action ran and failed".to_owned(),
            RequestState::Denied => format!("resolved: denied by {by}"),
            RequestState::Expired => "resolved: nobody decided in time".to_owned(),
            RequestState::Cancelled => "resolved: the request was withdrawn".to_owned(),
            RequestState::Lapsed => "resolved: approved, but never run in time".to_owned(),
            other => format!("now {other}"),
        };
        self.note(number, line);
        if request.state.is_terminal()
            && let Some(incident) = lock(&self.incidents).get_mut(number - 1)
        {
            incident.closed = true;
        }
    }

    fn captured(&self) -> Option<(HeaderMap, Bytes)> {
        lock(&self.first_delivery).clone()
    }

    fn closed_incident(&self) -> Option<Incident> {
        lock(&self.incidents).iter().find(|i| i.closed).cloned()
    }
}

/// An on-call engineer's phone. With `app` (their pager app, signed in with their own
/// approvals token, and where to report each answer) they answer: acknowledge, read,
/// approve. Without, they never answer.
async fn engineer(
    name: &'static str,
    mut pages: mpsc::UnboundedReceiver<Page>,
    pager: Arc<Pager>,
    app: Option<(ApiClient, mpsc::UnboundedSender<()>)>,
) {
    let phone = format!("[{}'s phone]", name.to_lowercase());
    while let Some(page) = pages.recv().await {
        let r = &page.request;
        println!(
            "{phone} BZZZ incident #{}: approve {} on {}?",
            page.incident, r.kind, r.resource
        );
        let Some((approvals, answered)) = &app else {
            println!("{phone} ({name} is on a flight; nobody answers)");
            continue;
        };
        pager.acknowledge(page.incident, name);
        println!(
            "{phone} {}\n{phone}   params {}\n{phone}   requested by {} because {:?}\n{phone}   digest {}\n{phone}   console {}",
            r.summary.as_deref().unwrap_or("(no summary)"),
            r.params,
            r.initiator.as_ref().map_or("?", |i| i.principal.label()),
            r.justification.as_deref().unwrap_or(""),
            r.digest,
            page.console.as_deref().unwrap_or("-"),
        );
        // Approve exactly what the page showed: the API refuses if the digest changed.
        match approvals
            .decide(
                r.id,
                true,
                Some("replica lag is 0 and the primary is down; go (INC-4821)"),
                Some(r.digest),
            )
            .await
        {
            Ok(view) => println!(
                "[{}] approved through the approvals API; the request is now {}",
                name.to_lowercase(),
                view.state
            ),
            Err(e) => println!("[{}] the approvals API refused: {e}", name.to_lowercase()),
        }
        let _ = answered.send(());
    }
}

fn describe(event: &AuditEvent) -> String {
    let detail = match &event.detail {
        EventDetail::Dispatched { channel } => format!("to {channel}"),
        EventDetail::Escalated { groups, .. } => format!("to {}", groups.join(", ")),
        EventDetail::Reminded { reminder, of, .. } => format!("{reminder} of {of}"),
        EventDetail::Reviewed {
            reviewer,
            verdict,
            channel,
            ..
        } => format!("{verdict} by {} via {channel}", reviewer.id),
        EventDetail::Executed { ok, error, .. } => match (ok, error) {
            (true, _) => "ok".to_owned(),
            (false, e) => format!("failed: {}", e.as_deref().unwrap_or("")),
        },
        _ => String::new(),
    };
    format!(
        "{} {:<16} {}",
        event.at.format("%H:%M:%S%.3f"),
        event.name(),
        detail
    )
}
