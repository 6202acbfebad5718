//! Framework-agnostic inbound entry point: turns an `http::Request<Bytes>` from the Bot
//! Connector into an authenticated [`Activity`], or says which HTTP status to answer.
//!
//! ```no_run
//! # async fn demo(auth: approvals_teams::auth::BotAuthenticator, request: http::Request<bytes::Bytes>) {
//! use approvals_teams::inbound::authenticate_request;
//!
//! match authenticate_request(&auth, &request).await {
//!     Ok(inbound) => { let _click = inbound.activity.card_action(); /* hand to the engine */ }
//!     Err(e) => { let _status = e.status(); /* answer with it, log `e` */ }
//! }
//! # }
//! ```

use bytes::Bytes;

use crate::activity::{Activity, ActivityError};
use crate::auth::{AuthError, BotAuthenticator, Claims};

/// An activity whose request carried a valid Bot Framework token for its `serviceUrl` (and,
/// when it names one, whose signing key is endorsed for its `channelId`).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AuthenticatedActivity {
    /// The activity.
    pub activity: Activity,
    /// The token's validated claims.
    pub claims: Claims,
}

/// Why an inbound request is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InboundError {
    /// The Bot Connector only POSTs activities.
    #[error("method {0} not allowed; the Bot Connector POSTs activities")]
    MethodNotAllowed(http::Method),
    /// The token is missing or invalid: answer 401.
    #[error("unauthenticated request: {0}")]
    Unauthenticated(#[from] AuthError),
    /// The body is not a usable activity: answer 400.
    #[error("bad activity: {0}")]
    BadRequest(#[from] ActivityError),
}

impl InboundError {
    /// The HTTP status to answer with.
    pub fn status(&self) -> http::StatusCode {
        match self {
            InboundError::MethodNotAllowed(_) => http::StatusCode::METHOD_NOT_ALLOWED,
            InboundError::Unauthenticated(_) => http::StatusCode::UNAUTHORIZED,
            InboundError::BadRequest(_) => http::StatusCode::BAD_REQUEST,
        }
    }

    /// Whether the sender may succeed by retrying (signing keys temporarily unavailable).
    pub fn is_retryable(&self) -> bool {
        matches!(self, InboundError::Unauthenticated(e) if e.is_retryable())
    }
}

/// Authenticates a Bot Connector request: requires `POST` and an `Authorization` header
/// (checked before the body is read), parses the activity (size-capped), then validates the
/// token against the activity's `serviceUrl` and, if it has one, `channelId` endorsement.
pub async fn authenticate_request(
    auth: &BotAuthenticator,
    request: &http::Request<Bytes>,
) -> Result<AuthenticatedActivity, InboundError> {
    if request.method() != http::Method::POST {
        return Err(InboundError::MethodNotAllowed(request.method().clone()));
    }
    let authorization = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty())
        .ok_or(AuthError::MissingToken)?;
    let activity = Activity::from_json(request.body())?;
    let service_url = activity.service_url.as_deref().unwrap_or_default();
    let claims = match activity.channel_id.as_deref().filter(|c| !c.is_empty()) {
        Some(channel_id) => {
            auth.validate_for_channel(authorization, service_url, channel_id)
                .await?
        }
        None => auth.validate(authorization, service_url).await?,
    };
    Ok(AuthenticatedActivity { activity, claims })
}
