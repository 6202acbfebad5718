//! Inbound card actions: Approve and Deny clicks on the approval card, received from the Bot
//! Connector as `invoke` activities named `adaptiveCard/action` (or, from clients without
//! Universal Actions, as the `message` activity of the `Action.Submit` fallback).
//!
//! [`TeamsInteractions::handle`] is framework-agnostic (`http::Request<Bytes>` in,
//! `http::Response<Bytes>` out); [`TeamsInteractions`] is also a [`tower::Service`], and with
//! the `axum` feature [`TeamsInteractions::router`] mounts it in an axum application.
//!
//! Every request is checked in this order, and the first failure ends it:
//!
//! 1. The Bot Framework JWT ([`authenticate_request`]): RS256 signature by a published key,
//!    issuer, audience (the bot's app id), lifetime, the `serviceurl` claim equal to the
//!    activity's `serviceUrl`, and the key's endorsement for the activity's channel. Failure:
//!    401, and a `review_rejected` event with cause `forged` if the (unverified) body names a
//!    request that exists.
//! 2. The channel: `channelId` must be `msteams` (a key endorsed for another Bot Framework
//!    channel is not Teams). Failure: 403.
//! 3. The tenant: it must be one of the allowed tenants. Failure: 403, `not_authorized`.
//! 4. The card data: request id, digest and verdict, consistent with the verb. Failure: 400.
//! 5. The conversation: the request must have been posted to the conversation the click comes
//!    from. Failure: refused, `not_authorized`.
//! 6. The trigger: only a `manual` trigger is a click. An `automatic` trigger (card refresh),
//!    a missing or unknown one, or the `refresh` verb only returns the current card; nothing
//!    is recorded.
//! 7. The clicker: `aadObjectId` and tenant are mapped to a [`Principal`] through the
//!    [`IdentityResolver`] with channel [`CHANNEL`] and external id [`external_id`]. A click
//!    without them, or one that maps to zero or several principals, is refused
//!    (`unknown_reviewer`).
//! 8. An "Edit and approve" click (verb [`VERB_APPROVE_EDITED`]): its inputs are read against
//!    the stored request by the gate ([`EditForm`] only parses the form); a form that cannot be read, or that changes a
//!    parameter the rule does not list or to a value of another type, is refused
//!    (`edit_refused`).
//! 9. The review, through [`Gate::decide`], bound to the digest on the card (with the edited
//!    parameters, if any): self-approval, authorization, expiry, double clicks, the edit's
//!    bounds and the policy asked again, an approval of a `step_up` rule without its proof
//!    (which only the review console takes; the card links there), and everything else the
//!    gate checks.
//!
//! The invoke response always carries a card showing the request's current state, with a
//! notice for the clicker at the top ("You approved this request (1 of 2)", or why nothing
//! was applied). Refusals go back to the clicker only; they never become decisions.

use std::collections::HashSet;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use approvals_core::{
    Gate, IdentityError, IdentityResolver, Principal, RejectCause, RequestId, RequestRecord,
    RequestState, Review, ReviewError, ReviewOutcome, Verdict,
};
use bytes::Bytes;
use serde_json::Value;

use crate::activity::{
    Activity, AdaptiveCardInvokeResponse, INVOKE_ACTIVITY_TYPE, InvokeTrigger, OutgoingActivity,
};
use crate::approver::{CHANNEL, TeamsApprover};
use crate::auth::BotAuthenticator;
use crate::card::{
    CardData, CardDataError, CardOptions, MAX_REASON_CHARS, Notice, VERB_APPROVE, VERB_DENY,
    VERB_REFRESH, request_card,
};
use crate::edit::{EditForm, FIELDS_KEY, VERB_APPROVE_EDITED};
use crate::inbound::{InboundError, authenticate_request};
use crate::text::truncate;

/// The Bot Framework `channelId` of Microsoft Teams; activities from other channels are
/// refused.
pub const TEAMS_CHANNEL_ID: &str = "msteams";
/// Where the Bot Connector posts activities, by convention (the bot's messaging endpoint).
pub const DEFAULT_PATH: &str = "/api/messages";
/// Default longest wait for the store and identity directory while answering a click. Teams
/// expects an invoke response within a few seconds.
pub const DEFAULT_DECISION_TIMEOUT: Duration = Duration::from_secs(4);

/// The external id passed to the [`IdentityResolver`] for a Teams user:
/// `"{tenant id}/{AAD object id}"`, both trimmed and ASCII-lowercased (they are GUIDs), so the
/// same object id in two tenants never maps to the same person. `None` when either part is
/// empty or contains `/`, whitespace or control characters.
///
/// ```
/// use approvals_teams::interactions::external_id;
/// assert_eq!(
///     external_id("72F988BF-86F1-41AF-91AB-2D7CD011DB47", "6d4c8b1a-0000-4000-8000-00000000a11e").as_deref(),
///     Some("72f988bf-86f1-41af-91ab-2d7cd011db47/6d4c8b1a-0000-4000-8000-00000000a11e"),
/// );
/// assert_eq!(external_id("t/1", "a"), None);
/// ```
pub fn external_id(tenant_id: &str, aad_object_id: &str) -> Option<String> {
    let clean = |s: &str| {
        let s = s.trim();
        (!s.is_empty()
            && s.len() <= 128
            && !s
                .chars()
                .any(|c| c == '/' || c.is_whitespace() || c.is_control()))
        .then(|| s.to_ascii_lowercase())
    };
    Some(format!("{}/{}", clean(tenant_id)?, clean(aad_object_id)?))
}

/// The handler could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InteractionsConfigError {
    /// No authenticator was given.
    #[error(
        "the Teams handler needs a BotAuthenticator: call .authenticator(BotAuthenticator::new(AuthConfig::new(app_id))?)"
    )]
    MissingAuthenticator,
    /// The authenticator has no app id, so no token could name us as its audience.
    #[error("the BotAuthenticator has an empty app id; set it to the bot's Microsoft App ID")]
    EmptyAppId,
    /// No tenant is allowed.
    #[error(
        "the Teams handler needs at least one allowed tenant id: call .allow_tenant(\"<your Entra tenant id>\")"
    )]
    NoTenants,
    /// A tenant id is empty or not a plain id.
    #[error("allowed tenant id {0:?} is empty or contains whitespace or '/'")]
    InvalidTenant(String),
}

/// Builds a [`TeamsInteractions`].
#[must_use]
pub struct TeamsInteractionsBuilder {
    gate: Gate,
    resolver: Arc<dyn IdentityResolver>,
    auth: Option<BotAuthenticator>,
    tenants: Vec<String>,
    approver: Option<TeamsApprover>,
    timeout: Duration,
}

impl TeamsInteractionsBuilder {
    /// The JWT validator (required; its app id is the audience every token must name).
    pub fn authenticator(mut self, auth: BotAuthenticator) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Allows clicks from one Microsoft Entra tenant (at least one is required).
    pub fn allow_tenant(mut self, tenant_id: impl Into<String>) -> Self {
        self.tenants.push(tenant_id.into());
        self
    }

    /// Allows clicks from these tenants.
    pub fn allow_tenants<I, S>(mut self, tenant_ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tenants.extend(tenant_ids.into_iter().map(Into::into));
        self
    }

    /// The approver that posted the cards: used to replace the card for everyone after an
    /// approval that does not yet reach the quorum, to render cards with its options, and to
    /// answer `Action.Submit` fallback clicks in the conversation.
    pub fn approver(mut self, approver: TeamsApprover) -> Self {
        self.approver = Some(approver);
        self
    }

    /// Longest wait for the store, identity directory and decision while answering a click
    /// (default [`DEFAULT_DECISION_TIMEOUT`]). When it passes, the clicker is told the
    /// decision is still being recorded; it is not abandoned.
    pub fn decision_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Builds the handler.
    pub fn build(self) -> Result<TeamsInteractions, InteractionsConfigError> {
        let auth = self
            .auth
            .ok_or(InteractionsConfigError::MissingAuthenticator)?;
        if auth.config().app_id.trim().is_empty() {
            return Err(InteractionsConfigError::EmptyAppId);
        }
        if self.tenants.is_empty() {
            return Err(InteractionsConfigError::NoTenants);
        }
        let mut tenants = HashSet::new();
        for t in self.tenants {
            let clean = t.trim();
            if clean.is_empty() || clean.chars().any(|c| c == '/' || c.is_whitespace()) {
                return Err(InteractionsConfigError::InvalidTenant(t));
            }
            tenants.insert(clean.to_ascii_lowercase());
        }
        Ok(TeamsInteractions {
            inner: Arc::new(Inner {
                gate: self.gate,
                resolver: self.resolver,
                auth,
                tenants,
                approver: self.approver,
                timeout: self.timeout,
            }),
        })
    }
}

struct Inner {
    gate: Gate,
    resolver: Arc<dyn IdentityResolver>,
    auth: BotAuthenticator,
    tenants: HashSet<String>,
    approver: Option<TeamsApprover>,
    timeout: Duration,
}

/// The Teams messaging endpoint: authenticates every activity and turns Approve and Deny
/// clicks into reviews on the [`Gate`]. See the [module docs](self) for the checks. Cheap to
/// clone.
///
/// ```no_run
/// # fn demo(gate: approvals_core::Gate) -> Result<(), Box<dyn std::error::Error>> {
/// use approvals_core::{Principal, StaticIdentityResolver};
/// use approvals_teams::{AuthConfig, BotAuthenticator, TeamsInteractions};
///
/// let ids = StaticIdentityResolver::new().map(
///     "teams",
///     "72f988bf-86f1-41af-91ab-2d7cd011db47/6d4c8b1a-0000-4000-8000-00000000a11e",
///     Principal::human("ann@example.com").with_groups(["security"]),
/// );
/// let handler = TeamsInteractions::builder(gate, ids)
///     .authenticator(BotAuthenticator::new(AuthConfig::new(std::env::var("TEAMS_APP_ID")?))?)
///     .allow_tenant("72f988bf-86f1-41af-91ab-2d7cd011db47")
///     .build()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TeamsInteractions {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TeamsInteractions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TeamsInteractions")
            .field("app_id", &self.inner.auth.config().app_id)
            .field("tenants", &self.inner.tenants)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

/// What became of a click, before it is shaped into an HTTP answer.
enum Outcome {
    /// Show the request's current card, with an optional notice for the clicker.
    Card(Box<RequestRecord>, Option<Notice>),
    /// Refuse without showing the card.
    Refused {
        status: u16,
        code: &'static str,
        message: String,
    },
    /// A text answer (no card to show).
    Message(String),
}

/// The facts of a click, from an invoke or a fallback submit.
struct Click {
    verb: Option<Verdict>,
    /// The action data of an "Edit and approve" click, read once the clicker is known.
    edit: Option<Value>,
    refresh_only: bool,
    manual: bool,
    data: Result<CardData, CardDataError>,
    tenant_id: Option<String>,
    aad_object_id: Option<String>,
    from_id: String,
    conversation_id: String,
}

impl TeamsInteractions {
    /// Starts building a handler that applies reviews to `gate` and maps clickers to
    /// principals with `resolver`.
    pub fn builder(gate: Gate, resolver: impl IdentityResolver) -> TeamsInteractionsBuilder {
        TeamsInteractionsBuilder {
            gate,
            resolver: Arc::new(resolver),
            auth: None,
            tenants: Vec::new(),
            approver: None,
            timeout: DEFAULT_DECISION_TIMEOUT,
        }
    }

    /// Handles one request from the Bot Connector.
    ///
    /// - `adaptiveCard/action` invokes: 200 with an Adaptive Card invoke response (or 4xx with
    ///   an error invoke response for clicks that are not ours to show a card for).
    /// - `message` activities carrying approval card data (the `Action.Submit` fallback):
    ///   applied the same way; 200 with an empty body, the outcome is replied in the
    ///   conversation when an approver is configured.
    /// - Other activities (installation, conversation updates, messages): 200, logged.
    /// - Unauthenticated requests: 401 (503 while the signing keys cannot be fetched), 400 for
    ///   a body that is not an activity, 405 for methods other than POST.
    pub async fn handle(&self, request: http::Request<Bytes>) -> http::Response<Bytes> {
        let inbound = match authenticate_request(&self.inner.auth, &request).await {
            Ok(inbound) => inbound,
            Err(e) => return self.unauthenticated(request.body(), e).await,
        };
        let activity = inbound.activity;
        let from_teams = activity.channel_id.as_deref() == Some(TEAMS_CHANNEL_ID);
        if !from_teams && (activity.is_card_action() || activity.kind == "message") {
            // A key endorsed for another Bot Framework channel (Web Chat, ...) is not Teams.
            return AdaptiveCardInvokeResponse::error(
                403,
                "Forbidden",
                "this bot only accepts approvals from Microsoft Teams",
            )
            .to_http_response();
        }
        if activity.is_card_action() {
            return self.on_invoke(&activity).await.to_http_response();
        }
        if activity.kind == "message"
            && activity
                .value
                .as_ref()
                .is_some_and(|v| v.get("request_id").is_some())
        {
            return self.on_submit(&activity).await;
        }
        if activity.kind == INVOKE_ACTIVITY_TYPE {
            return AdaptiveCardInvokeResponse::error(
                501,
                "NotImplemented",
                "this bot only handles adaptiveCard/action invokes",
            )
            .to_http_response();
        }
        // Installation and conversation updates carry the ids needed to configure the
        // approver; log them for the operator.
        tracing::info!(
            kind = %truncate(&activity.kind, 40, "…"),
            conversation = %activity.conversation.as_ref().map(|c| truncate(&c.id, 200, "…")).unwrap_or_default(),
            service_url = %activity.service_url.as_deref().map(|s| truncate(s, 200, "…")).unwrap_or_default(),
            tenant = %activity.tenant_id().ok().flatten().map(|t| truncate(t, 64, "…")).unwrap_or_default(),
            "Teams activity received"
        );
        empty(http::StatusCode::OK)
    }

    /// An axum `Router` serving the handler at `path` (POST), for example [`DEFAULT_PATH`].
    #[cfg(feature = "axum")]
    pub fn router(&self, path: &str) -> axum::Router {
        let this = self.clone();
        axum::Router::new().route(
            path,
            axum::routing::post(move |request: axum::extract::Request| {
                let this = this.clone();
                async move {
                    let (parts, body) = request.into_parts();
                    let limit = crate::activity::MAX_ACTIVITY_LEN;
                    match axum::body::to_bytes(body, limit).await {
                        Ok(bytes) => this
                            .handle(http::Request::from_parts(parts, bytes))
                            .await
                            .map(axum::body::Body::from),
                        Err(_) => {
                            let mut response = http::Response::new(axum::body::Body::from(
                                "activity body too large",
                            ));
                            *response.status_mut() = http::StatusCode::PAYLOAD_TOO_LARGE;
                            response
                        }
                    }
                }
            }),
        )
    }

    async fn unauthenticated(&self, body: &Bytes, e: InboundError) -> http::Response<Bytes> {
        let status = if e.is_retryable() {
            http::StatusCode::SERVICE_UNAVAILABLE
        } else {
            e.status()
        };
        tracing::warn!(error = %e, %status, "Teams request refused");
        // A genuine click during a key-fetch outage is not a forgery: only definite refusals
        // are audited.
        if matches!(e, InboundError::Unauthenticated(_))
            && !e.is_retryable()
            && let Some(id) = claimed_request(body)
        {
            let detail = format!("Bot Framework token refused: {e}");
            self.audit(id, None, RejectCause::Forged, &detail).await;
        }
        let mut response = AdaptiveCardInvokeResponse::error(
            status.as_u16(),
            status
                .canonical_reason()
                .unwrap_or("Error")
                .replace(' ', ""),
            match status {
                http::StatusCode::SERVICE_UNAVAILABLE => {
                    "the signing keys cannot be fetched; retry later"
                }
                http::StatusCode::METHOD_NOT_ALLOWED => "POST activities to this endpoint",
                http::StatusCode::BAD_REQUEST => "the body is not a Bot Framework activity",
                _ => "the request is not authenticated",
            },
        )
        .to_http_response();
        *response.status_mut() = status;
        if status == http::StatusCode::METHOD_NOT_ALLOWED {
            response
                .headers_mut()
                .insert(http::header::ALLOW, http::HeaderValue::from_static("POST"));
        }
        response
    }

    async fn on_invoke(&self, activity: &Activity) -> AdaptiveCardInvokeResponse {
        let action = match activity.card_action() {
            Ok(action) => action,
            Err(e) => return AdaptiveCardInvokeResponse::error(400, "BadRequest", e.to_string()),
        };
        let (verb, refresh_only) = match action.verb.as_str() {
            VERB_APPROVE | VERB_APPROVE_EDITED => (Some(Verdict::Approve), false),
            VERB_DENY => (Some(Verdict::Deny), false),
            VERB_REFRESH => (None, true),
            _ => (None, false),
        };
        let edit = (action.verb == VERB_APPROVE_EDITED).then(|| action.data.clone());
        if verb.is_none() && !refresh_only {
            return AdaptiveCardInvokeResponse::error(
                400,
                "BadRequest",
                format!(
                    "unknown verb {:?}; approval cards use approve, approve_edited, deny and refresh",
                    truncate(&action.verb, 40, "…")
                ),
            );
        }
        let click = Click {
            verb,
            edit,
            refresh_only,
            manual: action.trigger == Some(InvokeTrigger::Manual),
            data: CardData::from_json(&action.data),
            tenant_id: action.tenant_id,
            aad_object_id: action.from_aad_object_id,
            from_id: action.from_id,
            conversation_id: action.conversation_id,
        };
        match self.process(click).await {
            Outcome::Card(record, notice) => AdaptiveCardInvokeResponse::card(request_card(
                &record,
                self.options(),
                notice.as_ref(),
            )),
            Outcome::Refused {
                status,
                code,
                message,
            } => AdaptiveCardInvokeResponse::error(status, code, message),
            Outcome::Message(text) => AdaptiveCardInvokeResponse::message(text),
        }
    }

    /// The `Action.Submit` fallback: a `message` activity whose `value` is the card data
    /// merged with the inputs. Always a user's click.
    async fn on_submit(&self, activity: &Activity) -> http::Response<Bytes> {
        let value = activity.value.clone().unwrap_or(Value::Null);
        let data = CardData::from_json(&value);
        let from = activity.from.as_ref();
        let conversation_id = activity
            .conversation
            .as_ref()
            .map(|c| c.id.clone())
            .unwrap_or_default();
        let tenant_id = match activity.tenant_id() {
            Ok(t) => t.map(str::to_owned),
            Err(_) => return empty(http::StatusCode::BAD_REQUEST),
        };
        if conversation_id.is_empty() || from.is_none_or(|f| f.id.is_empty()) {
            return empty(http::StatusCode::BAD_REQUEST);
        }
        // The edit form's fallback carries no verdict: its inputs make it an edited approval,
        // never a plain one.
        let edit = value.get(FIELDS_KEY).is_some().then(|| value.clone());
        let verb = match &edit {
            Some(_) => Some(Verdict::Approve),
            None => data.as_ref().ok().and_then(|d| d.verdict),
        };
        let click = Click {
            verb,
            edit,
            refresh_only: verb.is_none(),
            manual: true,
            data,
            tenant_id,
            aad_object_id: from
                .and_then(|f| f.aad_object_id.clone())
                .filter(|s| !s.is_empty()),
            from_id: from.map(|f| f.id.clone()).unwrap_or_default(),
            conversation_id: conversation_id.clone(),
        };
        let reply = match self.process(click).await {
            Outcome::Card(_, Some(notice)) => Some(notice.text().to_owned()),
            Outcome::Card(_, None) => None,
            Outcome::Refused { status: 403, .. } => None,
            Outcome::Refused { message, .. } | Outcome::Message(message) => Some(message),
        };
        if let (Some(text), Some(approver), Some(service_url)) = (
            reply,
            self.inner.approver.clone(),
            activity.service_url.clone(),
        ) {
            // The serviceUrl was checked against the token's claim.
            tokio::spawn(async move {
                let message = OutgoingActivity::text(text);
                if let Err(e) = approver
                    .connector()
                    .send_to_conversation(&service_url, &conversation_id, &message)
                    .await
                {
                    tracing::warn!(error = %e, "could not reply to a Teams fallback click");
                }
            });
        }
        empty(http::StatusCode::OK)
    }

    fn options(&self) -> &CardOptions {
        static DEFAULT: std::sync::OnceLock<CardOptions> = std::sync::OnceLock::new();
        match &self.inner.approver {
            Some(approver) => approver.card_options(),
            None => DEFAULT.get_or_init(CardOptions::default),
        }
    }

    async fn process(&self, click: Click) -> Outcome {
        let claimed = click.data.as_ref().ok().map(|d| d.request_id);
        let who = format!("Teams user {:?}", truncate(&click.from_id, 60, "…"));

        // The tenant comes first: nothing, not even a card, goes to other organizations.
        let tenant = click
            .tenant_id
            .as_deref()
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| self.inner.tenants.contains(t));
        let Some(tenant) = tenant else {
            if let Some(id) = claimed {
                let detail = format!(
                    "tenant {:?} is not allowed ({who})",
                    click.tenant_id.as_deref().map(|t| truncate(t, 64, "…"))
                );
                self.audit(id, None, RejectCause::NotAuthorized, &detail)
                    .await;
            }
            return Outcome::Refused {
                status: 403,
                code: "Forbidden",
                message: "This approvals bot does not accept actions from your organization."
                    .into(),
            };
        };

        let data = match click.data {
            Ok(data) => data,
            Err(e) => {
                return Outcome::Refused {
                    status: 400,
                    code: "BadRequest",
                    message: format!("This is not an approval card action: {e}."),
                };
            }
        };
        if let (Some(verb), Some(on_card)) = (click.verb, data.verdict)
            && verb != on_card
        {
            let detail =
                format!("the action verb {verb} contradicts the card data {on_card} ({who})");
            self.audit(data.request_id, None, RejectCause::Forged, &detail)
                .await;
            return Outcome::Refused {
                status: 400,
                code: "BadRequest",
                message: "The action does not match the card. Nothing was applied.".into(),
            };
        }

        let record = match self.load(data.request_id).await {
            Ok(Some(record)) => record,
            Ok(None) => return Outcome::Message("This approval request no longer exists.".into()),
            Err(()) => {
                return Outcome::Message(
                    "The approval service is unavailable; nothing was applied. Try again in a moment."
                        .into(),
                );
            }
        };
        if !posted_to(&record, &click.conversation_id) {
            let detail = format!("the request was not posted to this conversation ({who})");
            self.audit(record.id, None, RejectCause::NotAuthorized, &detail)
                .await;
            return Outcome::Refused {
                status: 403,
                code: "Forbidden",
                message: "This request was not posted to this conversation.".into(),
            };
        }

        // Only a person's click decides; a refresh just shows the current card.
        let Some(verdict) = click.verb.filter(|_| click.manual && !click.refresh_only) else {
            return Outcome::Card(Box::new(record), None);
        };

        let Some(external) = click
            .aad_object_id
            .as_deref()
            .and_then(|aad| external_id(&tenant, aad))
        else {
            let detail = format!("the click carries no usable aadObjectId ({who})");
            self.audit(record.id, None, RejectCause::UnknownReviewer, &detail)
                .await;
            return Outcome::Card(
                Box::new(record),
                Some(Notice::refused(
                    "Nothing was applied: Teams did not say which Microsoft Entra account you use, so the bot cannot tell who you are.",
                )),
            );
        };
        let resolved = tokio::time::timeout(
            self.inner.timeout,
            // Contains a panicking resolver as "unavailable" (refused), like a failing one.
            approvals_core::resolve_reviewer(
                &self.inner.resolver,
                CHANNEL,
                &external,
                self.inner.timeout,
            ),
        )
        .await;
        let principal = match resolved {
            Ok(Ok(principal)) => principal,
            Ok(Err(e @ (IdentityError::Unknown { .. } | IdentityError::Ambiguous { .. }))) => {
                self.audit(
                    record.id,
                    None,
                    RejectCause::UnknownReviewer,
                    &e.to_string(),
                )
                .await;
                return Outcome::Card(
                    Box::new(record),
                    Some(Notice::refused(
                        "Nothing was applied: your Teams account is not mapped to exactly one reviewer. Ask the administrator of the approvals service to map it.",
                    )),
                );
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "identity directory unavailable");
                return Outcome::Card(
                    Box::new(record),
                    Some(Notice::refused(
                        "Nothing was applied: the identity directory is unavailable. Try again in a moment.",
                    )),
                );
            }
            Err(_) => {
                return Outcome::Card(
                    Box::new(record),
                    Some(Notice::refused(
                        "Nothing was applied: the identity directory did not answer in time. Try again in a moment.",
                    )),
                );
            }
        };

        // A malformed form is refused here; its fields are read by the gate, against the
        // request as stored, after it checks the review like any other (bound to the digest
        // on the card).
        let edit = match click
            .edit
            .as_ref()
            .map(|form| EditForm::from_data(form, MAX_REASON_CHARS))
        {
            None => None,
            Some(Ok(edit)) => Some(edit),
            Some(Err(e)) => {
                let refused = ReviewError::EditRefused {
                    id: record.id,
                    why: e.to_string(),
                };
                let detail = format!("{refused} ({who})");
                self.audit(
                    record.id,
                    Some(principal),
                    RejectCause::EditRefused,
                    &detail,
                )
                .await;
                return Outcome::Card(Box::new(record), Some(Notice::refused(explain(&refused))));
            }
        };
        let edited = edit.is_some();
        let mut review = match verdict {
            Verdict::Approve => Review::approve(principal),
            Verdict::Deny => Review::deny(principal),
        }
        .via(CHANNEL)
        .for_digest(data.digest);
        let mut reason = data.reason;
        if let Some(form) = edit {
            review = review.edit_fields(form.fields);
            reason = form.reason.or(reason);
        }
        if let Some(reason) = reason {
            review = review.reason(reason);
        }
        // The decision runs in its own task: if the store is slow, the clicker hears "still
        // processing" while the decision (and its audit event) completes.
        let gate = self.inner.gate.clone();
        let id = record.id;
        let task = tokio::spawn(async move { gate.decide(id, review).await });
        let decided = match tokio::time::timeout(self.inner.timeout, task).await {
            Ok(Ok(decided)) => decided,
            Ok(Err(join)) => {
                tracing::error!(error = %join, "the decision task failed");
                return Outcome::Message(
                    "Your decision could not be processed; nothing was applied. Try again.".into(),
                );
            }
            Err(_) => {
                return Outcome::Message(
                    "Your decision is still being recorded; the card will update when it is."
                        .into(),
                );
            }
        };
        let current = match self.load(id).await {
            Ok(Some(current)) => current,
            _ => record,
        };
        match decided {
            Ok(outcome) => {
                // After an edit the gate updates the card itself.
                if outcome.state == RequestState::Pending
                    && !edited
                    && let Some(approver) = self.inner.approver.clone()
                {
                    // The state did not change, so the gate will not update the card; show
                    // everyone the progress.
                    let progressed = current.clone();
                    tokio::spawn(async move {
                        let _ = approver.refresh(&progressed).await;
                    });
                }
                let notice = Notice::applied(if edited {
                    applied_edit(&outcome)
                } else {
                    applied(verdict, &outcome)
                });
                Outcome::Card(Box::new(current), Some(notice))
            }
            Err(e) => Outcome::Card(Box::new(current), Some(Notice::refused(explain(&e)))),
        }
    }

    async fn load(&self, id: RequestId) -> Result<Option<RequestRecord>, ()> {
        match tokio::time::timeout(self.inner.timeout, self.inner.gate.get(id)).await {
            Ok(Ok(record)) => Ok(record),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "approval store unavailable");
                Err(())
            }
            Err(_) => {
                tracing::warn!("approval store did not answer in time");
                Err(())
            }
        }
    }

    async fn audit(
        &self,
        id: RequestId,
        reviewer: Option<Principal>,
        cause: RejectCause,
        detail: &str,
    ) {
        let write = self
            .inner
            .gate
            .record_rejected_callback(id, reviewer, CHANNEL, cause, detail);
        if tokio::time::timeout(self.inner.timeout, write)
            .await
            .is_err()
        {
            tracing::warn!(request = %id, "could not audit a refused Teams click in time");
        }
    }
}

impl tower::Service<http::Request<Bytes>> for TeamsInteractions {
    type Response = http::Response<Bytes>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Bytes>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.handle(request).await) })
    }
}

fn empty(status: http::StatusCode) -> http::Response<Bytes> {
    let mut response = http::Response::new(Bytes::new());
    *response.status_mut() = status;
    response
}

/// The request id an (unverified) body claims, for auditing refused callbacks.
fn claimed_request(body: &Bytes) -> Option<RequestId> {
    let activity = Activity::from_json(body).ok()?;
    let value = activity.value.as_ref()?;
    let data = value
        .get("action")
        .and_then(|a| a.get("data"))
        .unwrap_or(value);
    let id = data.get("request_id")?.as_str()?;
    RequestId::parse(id).ok()
}

/// Whether `record` has a Teams card in `conversation_id`. Clicks in a channel thread name the
/// thread (`19:...@thread.tacv2;messageid=...`); the channel part is compared.
fn posted_to(record: &RequestRecord, conversation_id: &str) -> bool {
    let base = |id: &str| id.split(';').next().unwrap_or_default().trim().to_owned();
    let clicked = base(conversation_id);
    !clicked.is_empty()
        && TeamsApprover::cards(record)
            .iter()
            .any(|c| base(&c.conversation_id) == clicked)
}

fn applied(verdict: Verdict, outcome: &ReviewOutcome) -> String {
    match (verdict, outcome.state) {
        (Verdict::Deny, _) => "You denied this request. Nothing will run.".into(),
        (Verdict::Approve, RequestState::Pending) => format!(
            "You approved this request ({} of {} approvals).",
            outcome.approvals, outcome.quorum
        ),
        (Verdict::Approve, _) => format!(
            "You approved this request. It is approved ({} of {}).",
            outcome.approvals, outcome.quorum
        ),
    }
}

/// What the clicker is told after an accepted edit.
fn applied_edit(outcome: &ReviewOutcome) -> String {
    match outcome.state {
        RequestState::Pending => format!(
            "You changed and approved this action ({} of {} approvals). Other reviewers now approve it as changed.",
            outcome.approvals, outcome.quorum
        ),
        _ => format!(
            "You changed and approved this action. It is approved as changed ({} of {}).",
            outcome.approvals, outcome.quorum
        ),
    }
}

/// Why nothing was applied, for the clicker: the gate's one sentence (the card escapes it).
fn explain(e: &ReviewError) -> String {
    format!("Nothing was applied. {}", e.reviewer_message())
}
