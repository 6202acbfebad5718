//! Inbound interactivity: Approve and Deny clicks (`block_actions`) and reason modals
//! (`view_submission`), received over HTTP (signed) or Socket Mode.
//!
//! [`SlackInteractions::handle`] is framework-agnostic (`http::Request<Bytes>` in,
//! `http::Response<Bytes>` out); [`SlackInteractions`] is also a [`tower::Service`], and with
//! the `axum` feature [`SlackInteractions::router`] mounts it in an axum application.
//!
//! Every HTTP request is checked before anything else: Slack's `v0` signature over the raw
//! body (constant-time, five-minute window both ways), then replay, then the workspace (team)
//! and app ids. The handler answers at once (Slack allows 3 seconds) and does the work in a
//! background task: it maps the clicker to a principal through the identity resolver, applies
//! the review with [`Gate::decide`] (bound to the digest on the button), and tells the clicker
//! what happened with an ephemeral reply through the interaction's `response_url`.
//!
//! A request whose rule has `step_up` is approved only in the review console (its message
//! links there); an Approve click on it anyway, from an old message or forged, is refused by
//! the gate's rules (`step_up_required`) before any modal opens, and the reply links the
//! console page.
//!
//! Edit on approve (the "Edit and approve" button, its modal and submission) is in the `edit`
//! submodule; the modal's sealed metadata and the answers to Slack in `modal`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use approvals_core::lifecycle;
use approvals_core::{
    Gate, IdentityError, IdentityResolver, Principal, RejectCause, RequestId, RequestRecord,
    RequestState, Review, ReviewError, ReviewOutcome, Verdict,
};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::SlackClient;
use crate::approver::{CHANNEL, SlackApprover};
use crate::blocks::{
    ACTION_APPROVE, ACTION_DENY, ACTION_EDIT, ButtonValue, EDIT_CALLBACK_ID, MAX_REASON_CHARS,
    REASON_ACTION_ID, REASON_BLOCK_ID, REASON_CALLBACK_ID, reason_modal,
};
use crate::signature::{
    ConfigError, DEFAULT_REPLAY_CAPACITY, ReplayError, ReplayGuard, SIGNATURE_HEADER,
    SigningSecret, TIMESTAMP_HEADER, unix_now,
};
use crate::text::{mrkdwn_bounded, truncate};

/// Longest wait for the identity resolver on a click; past it the click is refused.
const RESOLVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Default largest accepted request body, in bytes. Slack's `block_actions` payloads carry
/// the whole message, form-encoded.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

mod edit;
mod modal;

use modal::{Ack, Answer, ModalMetadata, ack_response};

// ----------------------------------------------------------------------------------------
// Payloads, as Slack documents them (only the fields used here).

#[derive(Debug, Deserialize)]
struct Interaction {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    team: Option<IdField>,
    #[serde(default)]
    user: Option<UserField>,
    #[serde(default)]
    api_app_id: Option<String>,
    #[serde(default)]
    trigger_id: Option<String>,
    #[serde(default)]
    response_url: Option<String>,
    #[serde(default)]
    actions: Vec<ActionField>,
    #[serde(default)]
    view: Option<ViewField>,
    #[serde(default)]
    container: Option<ContainerField>,
}

#[derive(Debug, Deserialize)]
struct ContainerField {
    #[serde(default)]
    message_ts: Option<String>,
    #[serde(default)]
    channel_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct IdField {
    #[serde(default)]
    id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct UserField {
    id: String,
    #[serde(default)]
    team_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ActionField {
    action_id: String,
    #[serde(default)]
    value: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ViewField {
    #[serde(default)]
    callback_id: String,
    #[serde(default)]
    private_metadata: String,
    #[serde(default)]
    state: ViewState,
    #[serde(default)]
    app_id: Option<String>,
    #[serde(default)]
    team_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ViewState {
    #[serde(default)]
    values: std::collections::HashMap<String, std::collections::HashMap<String, InputValue>>,
}

#[derive(Debug, Default, Deserialize)]
struct InputValue {
    #[serde(default)]
    value: Option<String>,
}

impl Interaction {
    fn user_id(&self) -> &str {
        self.user.as_ref().map_or("", |u| u.id.as_str())
    }

    /// The request this interaction names, without trusting anything (for audit only).
    fn claimed_request(&self) -> Option<RequestId> {
        if let Some(value) = self.actions.first().and_then(|a| a.value.as_deref()) {
            return ButtonValue::parse(value).map(|b| b.request_id);
        }
        let meta = self.view.as_ref()?.private_metadata.as_str();
        let (json_part, _) = meta.rsplit_once('.')?;
        serde_json::from_str::<ModalMetadata>(json_part)
            .ok()
            .map(|m| m.request_id)
    }
}

// ----------------------------------------------------------------------------------------
// Configuration.

/// Builds [`SlackInteractions`].
#[must_use]
pub struct SlackInteractionsBuilder {
    gate: Gate,
    client: SlackClient,
    secret: SigningSecret,
    teams: Vec<String>,
    app_id: Option<String>,
    identities: Option<Arc<dyn IdentityResolver>>,
    approver: Option<SlackApprover>,
    replay_capacity: usize,
    max_body: usize,
}

impl SlackInteractionsBuilder {
    /// Accepts clicks from this workspace (`T...`; required, may be repeated). Users from
    /// other workspaces (for example in a Slack Connect channel) are refused.
    pub fn team_id(mut self, team: impl Into<String>) -> Self {
        self.teams.push(team.into());
        self
    }

    /// The app id (`A...`; required). Payloads for another app are refused.
    pub fn app_id(mut self, app: impl Into<String>) -> Self {
        self.app_id = Some(app.into());
        self
    }

    /// Maps Slack user ids to principals (required), for example a
    /// [`StaticIdentityResolver`](approvals_core::StaticIdentityResolver) with entries under
    /// the channel `"slack"`, or a [`SlackEmailResolver`](crate::SlackEmailResolver).
    pub fn identities(mut self, resolver: impl IdentityResolver) -> Self {
        self.identities = Some(Arc::new(resolver));
        self
    }

    /// A shared identity resolver.
    pub fn identities_shared(mut self, resolver: Arc<dyn IdentityResolver>) -> Self {
        self.identities = Some(resolver);
        self
    }

    /// The approver whose messages are refreshed after each approval towards a quorum
    /// (resolutions are refreshed by the gate itself).
    pub fn approver(mut self, approver: SlackApprover) -> Self {
        self.approver = Some(approver);
        self
    }

    /// How many signed requests are remembered for replay detection (default 100 000).
    pub fn replay_capacity(mut self, capacity: usize) -> Self {
        self.replay_capacity = capacity;
        self
    }

    /// Largest accepted body in bytes (default 1 MiB).
    pub fn max_body_bytes(mut self, max: usize) -> Self {
        self.max_body = max;
        self
    }

    /// Builds the handler.
    pub fn build(self) -> Result<SlackInteractions, ConfigError> {
        if self.teams.is_empty() || self.teams.iter().any(|t| t.trim().is_empty()) {
            return Err(ConfigError::Invalid(
                "name the Slack workspace with .team_id(\"T...\") (SLACK_TEAM_ID)".into(),
            ));
        }
        let app_id = self
            .app_id
            .filter(|a| !a.trim().is_empty())
            .ok_or_else(|| {
                ConfigError::Invalid(
                    "name the Slack app with .app_id(\"A...\") (SLACK_APP_ID)".into(),
                )
            })?;
        let identities = self.identities.ok_or_else(|| {
            ConfigError::Invalid(
                "map Slack users to principals with .identities(StaticIdentityResolver::new().map(\"slack\", \"U...\", principal))".into(),
            )
        })?;
        Ok(SlackInteractions {
            inner: Arc::new(Inner {
                gate: self.gate,
                client: self.client,
                secret: self.secret,
                teams: self.teams,
                app_id,
                identities,
                approver: self.approver,
                replay: ReplayGuard::new(self.replay_capacity),
                max_body: self.max_body,
            }),
        })
    }
}

struct Inner {
    gate: Gate,
    client: SlackClient,
    secret: SigningSecret,
    teams: Vec<String>,
    app_id: String,
    identities: Arc<dyn IdentityResolver>,
    approver: Option<SlackApprover>,
    replay: ReplayGuard,
    max_body: usize,
}

/// The Slack interactivity endpoint and Socket Mode payload processor. Cheap to clone.
///
/// ```no_run
/// # async fn demo(gate: approvals_core::Gate) -> Result<(), Box<dyn std::error::Error>> {
/// use approvals_core::{Principal, StaticIdentityResolver};
/// use approvals_slack::{SigningSecret, SlackClient, SlackInteractions, Token};
///
/// let client = SlackClient::new(Token::new(std::env::var("SLACK_BOT_TOKEN")?))?;
/// let interactions = SlackInteractions::builder(
///     gate,
///     client,
///     SigningSecret::new(std::env::var("SLACK_SIGNING_SECRET")?)?,
/// )
/// .team_id("T0123456789")
/// .app_id("A0123456789")
/// .identities(StaticIdentityResolver::new().map(
///     "slack",
///     "U024BE7LH",
///     Principal::human("sam@example.com").with_groups(["security"]),
/// ))
/// .build()?;
///
/// // In any HTTP server: hand it the request with the raw body bytes.
/// let request = http::Request::post("/slack/interactivity").body(bytes::Bytes::new())?;
/// let response = interactions.handle(request);
/// assert_eq!(response.status(), 401); // unsigned
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SlackInteractions {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SlackInteractions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackInteractions")
            .field("teams", &self.inner.teams)
            .field("app_id", &self.inner.app_id)
            .finish_non_exhaustive()
    }
}

fn text_response(status: http::StatusCode, message: &str) -> http::Response<Bytes> {
    let mut response = http::Response::new(Bytes::from(message.to_owned()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn header<'a>(request: &'a http::Request<Bytes>, name: &str) -> Option<&'a str> {
    request.headers().get(name).and_then(|v| v.to_str().ok())
}

fn payload_from_form(body: &[u8]) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| v.into_owned())
}

impl SlackInteractions {
    /// Starts building the handler for `gate`, replying through `client`, verifying with
    /// `secret`.
    pub fn builder(
        gate: Gate,
        client: SlackClient,
        secret: SigningSecret,
    ) -> SlackInteractionsBuilder {
        SlackInteractionsBuilder {
            gate,
            client,
            secret,
            teams: Vec::new(),
            app_id: None,
            identities: None,
            approver: None,
            replay_capacity: DEFAULT_REPLAY_CAPACITY,
            max_body: DEFAULT_MAX_BODY_BYTES,
        }
    }

    /// Handles one HTTP request from Slack's interactivity Request URL. Returns at once:
    /// `200` for an accepted interaction (the work continues in a background task on the
    /// current tokio runtime), `401` for a missing, stale, future, forged or replayed
    /// signature, `413` for an oversized body, `400` for a malformed payload, `405` for a
    /// method other than POST. Refusals change nothing.
    ///
    /// An edit submitted in the edit modal is decided after this answer, so a refused edit
    /// is told in an ephemeral reply; [`handle_async`](Self::handle_async) (used by the
    /// [`tower::Service`], the axum router and Socket Mode) waits for the decision and shows a
    /// refused edit in the modal, where the reviewer can fix it.
    pub fn handle(&self, request: http::Request<Bytes>) -> http::Response<Bytes> {
        match self.answer(request) {
            Ok(answer) => ack_response(answer.now()),
            Err(response) => response,
        }
    }

    /// [`handle`](Self::handle), waiting (at most 2.5 seconds, within Slack's 3) for the
    /// decision on an edit submitted in the edit modal, so a refused edit is shown in the
    /// modal next to the input to fix.
    pub async fn handle_async(&self, request: http::Request<Bytes>) -> http::Response<Bytes> {
        match self.answer(request) {
            Ok(answer) => ack_response(answer.wait().await),
            Err(response) => response,
        }
    }

    /// Authenticates `request` and starts the work; `Err` is a refusal to answer as it is.
    // The refusal is the response itself, built once per refused request: no need to box it.
    #[allow(clippy::result_large_err)]
    fn answer(&self, request: http::Request<Bytes>) -> Result<Answer, http::Response<Bytes>> {
        use http::StatusCode as S;
        if request.method() != http::Method::POST {
            return Err(text_response(
                S::METHOD_NOT_ALLOWED,
                "Slack interactivity requests are POSTs",
            ));
        }
        let inner = &self.inner;
        let body = request.body();
        if body.len() > inner.max_body {
            return Err(text_response(
                S::PAYLOAD_TOO_LARGE,
                "request body too large",
            ));
        }
        let now = unix_now();
        let verified = match inner.secret.verify_at(
            header(&request, TIMESTAMP_HEADER),
            header(&request, SIGNATURE_HEADER),
            body,
            now,
        ) {
            Ok(v) => v,
            Err(e) => {
                self.audit_refused(body, &e.to_string());
                return Err(text_response(S::UNAUTHORIZED, &e.to_string()));
            }
        };
        if let Err(e) = inner.replay.check(&verified, now) {
            self.audit_refused(body, &e.to_string());
            let status = match e {
                ReplayError::Replayed => S::UNAUTHORIZED,
                _ => S::SERVICE_UNAVAILABLE,
            };
            return Err(text_response(status, &e.to_string()));
        }
        let Some(payload) = payload_from_form(body) else {
            return Err(text_response(
                S::BAD_REQUEST,
                "expected a form-encoded `payload` field",
            ));
        };
        let interaction: Interaction = match serde_json::from_str(&payload) {
            Ok(i) => i,
            Err(e) => {
                return Err(text_response(
                    S::BAD_REQUEST,
                    &format!("the payload is not an interaction: {e}"),
                ));
            }
        };
        self.accept(interaction)
            .map_err(|message| text_response(S::INTERNAL_SERVER_ERROR, message))
    }

    /// Processes an interaction payload received over Socket Mode (already authenticated by
    /// the connection). Returns the acknowledgement payload, if any.
    pub(crate) async fn accept_socket_payload(&self, payload: Value) -> Option<Value> {
        match serde_json::from_value::<Interaction>(payload) {
            Ok(interaction) => match self.accept(interaction) {
                Ok(answer) => match answer.wait().await {
                    Ack::Json(v) => Some(v),
                    Ack::Empty => None,
                },
                Err(_) => None,
            },
            Err(e) => {
                tracing::warn!(error = %e, "Socket Mode payload is not an interaction");
                None
            }
        }
    }

    /// Records a refused callback in the audit trail when its (unverified) body names a
    /// request that exists.
    fn audit_refused(&self, body: &[u8], why: &str) {
        let Some(interaction) =
            payload_from_form(body).and_then(|p| serde_json::from_str::<Interaction>(&p).ok())
        else {
            return;
        };
        let Some(id) = interaction.claimed_request() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let gate = self.inner.gate.clone();
        let detail = format!(
            "{why} (claimed Slack user {:?})",
            truncate(interaction.user_id(), 40, "…")
        );
        runtime.spawn(async move {
            gate.record_rejected_callback(id, None, CHANNEL, RejectCause::Forged, &detail)
                .await;
        });
    }

    /// Checks the workspace and app, decides what to answer now, and starts the work.
    fn accept(&self, interaction: Interaction) -> Result<Answer, &'static str> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "the Slack handler must run inside a tokio runtime")?;
        let inner = &self.inner;
        let team = interaction.team.as_ref().and_then(|t| t.id.as_deref());
        let user_team = interaction.user.as_ref().and_then(|u| u.team_id.as_deref());
        let app = interaction
            .api_app_id
            .as_deref()
            .or(interaction.view.as_ref().and_then(|v| v.app_id.as_deref()));
        let allowed = |t: Option<&str>| t.is_some_and(|t| inner.teams.iter().any(|a| a == t));
        let foreign = if app != Some(inner.app_id.as_str()) {
            Some(format!(
                "the interaction is for app {:?}, not this app",
                app.unwrap_or("")
            ))
        } else if !allowed(team) || user_team.is_some_and(|t| !allowed(Some(t))) {
            Some(format!(
                "Slack workspace {:?} is not allowed to review these requests",
                user_team.or(team).unwrap_or("")
            ))
        } else {
            None
        };
        if let Some(why) = foreign {
            let this = self.clone();
            runtime.spawn(async move { this.refuse_foreign(interaction, why).await });
            return Ok(Answer::Now(Ack::Empty));
        }
        match interaction.kind.as_str() {
            "block_actions" => {
                let this = self.clone();
                runtime.spawn(async move { this.on_click(interaction).await });
                Ok(Answer::Now(Ack::Empty))
            }
            "view_submission" => Ok(self.on_submission(interaction, &runtime)),
            _ => Ok(Answer::Now(Ack::Empty)),
        }
    }

    async fn refuse_foreign(&self, interaction: Interaction, why: String) {
        if let Some(id) = interaction.claimed_request() {
            let detail = format!(
                "{why} (Slack user {:?})",
                truncate(interaction.user_id(), 40, "…")
            );
            self.inner
                .gate
                .record_rejected_callback(id, None, CHANNEL, RejectCause::NotAuthorized, &detail)
                .await;
        }
        self.reply(
            interaction.response_url.as_deref(),
            &format!("Not applied: {why}."),
        )
        .await;
    }

    /// Sends an ephemeral message to the clicker. Best effort: the decision (or refusal) is
    /// already recorded.
    async fn reply(&self, response_url: Option<&str>, text: &str) {
        let Some(url) = response_url else {
            return;
        };
        let body = reply_body(text);
        if let Err(e) = self.inner.client.respond(url, &body).await {
            tracing::warn!(error = %e, "could not reply to the Slack user");
        }
    }

    async fn resolve(&self, user: &str, request: Option<RequestId>) -> Result<Principal, String> {
        // A resolver that panics or hangs is "unavailable": the click is refused.
        let resolved = approvals_core::resolve_reviewer(
            &self.inner.identities,
            CHANNEL,
            user,
            RESOLVE_TIMEOUT,
        )
        .await;
        match resolved {
            Ok(p) => Ok(p),
            Err(e) => {
                if let Some(id) = request
                    && !matches!(e, IdentityError::Unavailable(_))
                {
                    self.inner
                        .gate
                        .record_rejected_callback(
                            id,
                            None,
                            CHANNEL,
                            RejectCause::UnknownReviewer,
                            &e.to_string(),
                        )
                        .await;
                }
                Err(e.to_string())
            }
        }
    }

    async fn on_click(&self, interaction: Interaction) {
        let response_url = interaction.response_url.as_deref();
        let Some(action) = interaction.actions.first() else {
            return;
        };
        let (verdict, edit) = match action.action_id.as_str() {
            ACTION_APPROVE => (Verdict::Approve, false),
            ACTION_DENY => (Verdict::Deny, false),
            ACTION_EDIT => (Verdict::Approve, true),
            _ => return, // Not one of ours.
        };
        let Some(button) = action.value.as_deref().and_then(ButtonValue::parse) else {
            self.reply(
                response_url,
                "Not applied: this button does not name a request.",
            )
            .await;
            return;
        };
        let principal = match self
            .resolve(interaction.user_id(), Some(button.request_id))
            .await
        {
            Ok(p) => p,
            Err(e) => {
                self.reply(response_url, &format!("Not applied: {e}."))
                    .await;
                return;
            }
        };
        let record = match self.inner.gate.get(button.request_id).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                self.reply(
                    response_url,
                    &format!("Not applied: no approval request {}.", button.request_id),
                )
                .await;
                return;
            }
            Err(e) => {
                self.reply(response_url, &format!("Not applied, try again: {e}."))
                    .await;
                return;
            }
        };
        if edit {
            self.ask_edit(&interaction, &record, button, principal)
                .await;
            self.heal_clicked_message(&interaction, record.id).await;
            return;
        }
        if verdict == Verdict::Deny || record.requirement.reason_required {
            self.ask_reason(&interaction, &record, button, verdict, principal)
                .await;
            self.heal_clicked_message(&interaction, record.id).await;
            return;
        }
        let review = Review::approve(principal)
            .via(CHANNEL)
            .for_digest(button.digest);
        let result = self.inner.gate.decide(button.request_id, review).await;
        self.report(response_url, &record, verdict, result).await;
        self.heal_clicked_message(&interaction, record.id).await;
    }

    /// A click on a message the request does not record (posted twice after a lost answer,
    /// or clicked before the delivery was stored) brings that message up to date, so it does
    /// not stay clickable after the request is decided.
    async fn heal_clicked_message(&self, interaction: &Interaction, id: RequestId) {
        let (Some(approver), Some(container)) = (&self.inner.approver, &interaction.container)
        else {
            return;
        };
        let (Some(channel), Some(ts)) = (&container.channel_id, &container.message_ts) else {
            return;
        };
        let Ok(Some(record)) = self.inner.gate.get(id).await else {
            return;
        };
        let clicked = crate::api::MessageRef {
            channel: channel.clone(),
            ts: ts.clone(),
        };
        if SlackApprover::messages(&record).contains(&clicked) {
            return;
        }
        let message = approver.message(&record);
        if let Err(e) = approver
            .client()
            .update_message(&clicked, &message.text, &message.blocks)
            .await
        {
            tracing::warn!(request = %id, error = %e, "could not update the clicked Slack message");
        }
    }

    /// Checks what can be checked before asking for a reason, so nobody types a reason for a
    /// review that cannot count; then opens the modal.
    async fn ask_reason(
        &self,
        interaction: &Interaction,
        record: &RequestRecord,
        button: ButtonValue,
        verdict: Verdict,
        principal: Principal,
    ) {
        let response_url = interaction.response_url.as_deref();
        // The gate's own rules, run dry (a missing reason is not a refusal yet: the dialog
        // asks for it); the gate checks again when the review arrives.
        let dry_run = Review::new(principal.clone(), verdict)
            .via(CHANNEL)
            .for_digest(button.digest);
        if let Err(refused) =
            lifecycle::check_review_before_reason(record, &dry_run, self.inner.gate.now())
        {
            self.refuse_dry_run(record.id, principal, &refused, response_url)
                .await;
            return;
        }
        let Some(trigger) = interaction.trigger_id.as_deref() else {
            self.reply(
                response_url,
                "Not applied: Slack sent no trigger to open the reason dialog.",
            )
            .await;
            return;
        };
        let required = verdict == Verdict::Deny || record.requirement.reason_required;
        let metadata = ModalMetadata {
            request_id: record.id,
            digest: button.digest,
            verdict,
            user: interaction.user_id().to_owned(),
            reason_required: required,
            response_url: interaction.response_url.clone(),
            edit: false,
        }
        .seal(&self.inner.secret);
        let view = reason_modal(record, verdict, required, &metadata);
        if let Err(e) = self.inner.client.open_view(trigger, &view).await {
            self.reply(
                response_url,
                &format!("Not applied: the reason dialog could not be opened ({e}). Click again."),
            )
            .await;
        }
    }

    /// Tells the reviewer why the dry run refused their review before any dialog opened, and
    /// records it when it is a refusal worth auditing.
    async fn refuse_dry_run(
        &self,
        id: RequestId,
        principal: Principal,
        refused: &ReviewError,
        response_url: Option<&str>,
    ) {
        if let Some(cause) = refused.cause() {
            self.inner
                .gate
                .record_rejected_callback(id, Some(principal), CHANNEL, cause, &refused.to_string())
                .await;
        }
        self.reply(response_url, &self.not_applied(refused)).await;
    }

    /// What the reviewer is told of a refused review: the gate's sentence, and for an
    /// approval that needs a step-up proof, the request's console page to make it in.
    fn not_applied(&self, refused: &ReviewError) -> String {
        let mut text = format!("Not applied: {}", refused.reviewer_message());
        if let ReviewError::StepUpRequired { id, .. } = refused
            && let Some(page) = self
                .inner
                .approver
                .as_ref()
                .and_then(|a| a.console_page(*id))
        {
            text = format!("{text} Open it: {page}");
        }
        text
    }

    fn on_submission(&self, interaction: Interaction, runtime: &tokio::runtime::Handle) -> Answer {
        let edit = match interaction.view.as_ref().map(|v| v.callback_id.as_str()) {
            Some(REASON_CALLBACK_ID) => false,
            Some(EDIT_CALLBACK_ID) => true,
            _ => return Answer::Now(Ack::Empty), // Not ours.
        };
        let (meta, reason) = match self.open_submission(&interaction, runtime, edit) {
            Ok(opened) => opened,
            Err(ack) => return Answer::Now(ack),
        };
        if edit {
            return self.on_edit_submission(interaction, meta, reason, runtime);
        }
        let this = self.clone();
        runtime.spawn(async move { this.on_reason(interaction, meta, reason).await });
        Answer::Now(Ack::Empty)
    }

    /// What every modal submission must pass: the workspace, the sealed metadata (a broken
    /// seal is audited as forged), of the kind of modal submitted, opened by the submitter;
    /// and the reason typed, within its bound and present when required. Returns the metadata
    /// and the reason, or the errors to show in the modal.
    fn open_submission(
        &self,
        interaction: &Interaction,
        runtime: &tokio::runtime::Handle,
        edit: bool,
    ) -> Result<(ModalMetadata, String), Ack> {
        let Some(view) = interaction.view.as_ref() else {
            return Err(Ack::Empty);
        };
        let invalid = |message: &str| Ack::errors(REASON_BLOCK_ID, message);
        if view
            .team_id
            .as_deref()
            .is_some_and(|t| !self.inner.teams.iter().any(|a| a == t))
        {
            return Err(invalid("This dialog belongs to another workspace."));
        }
        let Some(meta) = ModalMetadata::open(&view.private_metadata, &self.inner.secret) else {
            let this = self.clone();
            let claimed = interaction.claimed_request();
            let user = interaction.user_id().to_owned();
            runtime.spawn(async move {
                if let Some(id) = claimed {
                    let detail = format!(
                        "modal metadata failed its integrity check (Slack user {:?})",
                        truncate(&user, 40, "…")
                    );
                    this.inner
                        .gate
                        .record_rejected_callback(id, None, CHANNEL, RejectCause::Forged, &detail)
                        .await;
                }
            });
            return Err(invalid(
                "This dialog is not valid any more. Close it and click the button again.",
            ));
        };
        if meta.edit != edit {
            return Err(invalid(
                "This dialog is not valid any more. Close it and click the button again.",
            ));
        }
        if meta.user != interaction.user_id() {
            return Err(invalid("This dialog was opened by someone else."));
        }
        let reason = view
            .state
            .values
            .get(REASON_BLOCK_ID)
            .and_then(|b| b.get(REASON_ACTION_ID))
            .and_then(|v| v.value.as_deref())
            .map(str::trim)
            .unwrap_or("")
            .to_owned();
        if reason.chars().count() > MAX_REASON_CHARS {
            return Err(invalid("The reason is too long (at most 2000 characters)."));
        }
        if meta.reason_required && reason.is_empty() {
            return Err(invalid("A reason is required."));
        }
        Ok((meta, reason))
    }

    async fn on_reason(&self, interaction: Interaction, meta: ModalMetadata, reason: String) {
        let response_url = meta.response_url.as_deref();
        let principal = match self
            .resolve(interaction.user_id(), Some(meta.request_id))
            .await
        {
            Ok(p) => p,
            Err(e) => {
                self.reply(response_url, &format!("Not applied: {e}."))
                    .await;
                return;
            }
        };
        let mut review = match meta.verdict {
            Verdict::Approve => Review::approve(principal),
            Verdict::Deny => Review::deny(principal),
        }
        .via(CHANNEL)
        .for_digest(meta.digest);
        if !reason.is_empty() {
            review = review.reason(reason);
        }
        let record = match self.inner.gate.get(meta.request_id).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                self.reply(
                    response_url,
                    &format!("Not applied: no approval request {}.", meta.request_id),
                )
                .await;
                return;
            }
            Err(e) => {
                self.reply(response_url, &format!("Not applied, try again: {e}."))
                    .await;
                return;
            }
        };
        let result = self.inner.gate.decide(meta.request_id, review).await;
        self.report(response_url, &record, meta.verdict, result)
            .await;
    }

    async fn report(
        &self,
        response_url: Option<&str>,
        record: &RequestRecord,
        verdict: Verdict,
        result: Result<ReviewOutcome, ReviewError>,
    ) {
        let what = format!(
            "{} on {}",
            truncate(&record.request.kind, 100, "…"),
            truncate(&record.request.resource, 150, "…")
        );
        let text = match result {
            Ok(outcome) if outcome.state == RequestState::Pending => {
                if let Some(approver) = &self.inner.approver
                    && let Ok(Some(now)) = self.inner.gate.get(record.id).await
                {
                    let _ = approver.refresh(&now).await;
                }
                format!(
                    "Your approval of {what} is recorded: {} of {} approvals.",
                    outcome.approvals, outcome.quorum
                )
            }
            Ok(outcome) if outcome.state == RequestState::Approved => {
                format!("You approved {what}. It may run now.")
            }
            Ok(_) if verdict == Verdict::Deny => format!("You denied {what}. It will not run."),
            Ok(outcome) => format!(
                "Your review of {what} was recorded; the request is {}.",
                outcome.state
            ),
            Err(e) => self.not_applied(&e),
        };
        self.reply(response_url, &text).await;
    }

    /// An axum `Router` serving the handler at `path` (POST).
    #[cfg(feature = "axum")]
    pub fn router(&self, path: &str) -> axum::Router {
        let this = self.clone();
        axum::Router::new().route(
            path,
            axum::routing::post(move |request: axum::extract::Request| {
                let this = this.clone();
                async move {
                    let (parts, body) = request.into_parts();
                    let response = match axum::body::to_bytes(body, this.inner.max_body).await {
                        Ok(bytes) => {
                            this.handle_async(http::Request::from_parts(parts, bytes))
                                .await
                        }
                        Err(_) => text_response(
                            http::StatusCode::PAYLOAD_TOO_LARGE,
                            "request body too large or unreadable",
                        ),
                    };
                    response.map(axum::body::Body::from)
                }
            }),
        )
    }
}

impl tower::Service<http::Request<Bytes>> for SlackInteractions {
    type Response = http::Response<Bytes>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Bytes>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.handle_async(request).await) })
    }
}

/// The longest ephemeral reply sent, in characters: a reply quotes errors and reasons, and
/// Slack truncates a message's `text` past 40,000 characters and advises at most 4,000.
const MAX_REPLY_CHARS: usize = 3000;

/// An ephemeral reply's body: `text` escaped for mrkdwn and bounded.
fn reply_body(text: &str) -> serde_json::Value {
    json!({
        "response_type": "ephemeral",
        "replace_original": false,
        "text": mrkdwn_bounded(text, MAX_REPLY_CHARS),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_escaped_and_bounded() {
        let body = reply_body(&format!("Not applied: <!channel> {}", "x".repeat(10_000)));
        let text = body["text"].as_str().expect("text");
        assert!(text.chars().count() <= MAX_REPLY_CHARS, "{}", text.len());
        assert!(!text.contains("<!channel>"), "{text}");
        assert_eq!(body["response_type"], "ephemeral");
    }
}
