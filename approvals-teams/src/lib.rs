//! Microsoft Teams channel for approvals: Bot Framework and Adaptive Card Action.Execute.
//!
//! Working Approve and Deny buttons in Teams:
//!
//! - [`TeamsApprover`] (an [`Approver`](approvals_core::Approver)) posts each pending request
//!   as an Adaptive Card to a conversation and replaces the card when the request changes.
//! - [`TeamsInteractions`] is the bot's messaging endpoint: it authenticates every activity,
//!   turns `adaptiveCard/action` clicks into reviews on the [`Gate`](approvals_core::Gate),
//!   and answers with the updated card. Framework-agnostic ([`TeamsInteractions::handle`]),
//!   a `tower::Service`, and an axum `Router` with the `axum` feature.
//! - [`card`] renders the card; [`edit`] its "Edit and approve" form (edit on approve) and
//!   reads the form back; [`text`] makes untrusted text inert for Adaptive Cards.
//!
//! Underneath is the Bot Framework protocol layer, independent of the approvals engine:
//!
//! - [`auth`]: validates the JWT the Bot Connector sends with every inbound activity
//!   ([`auth::BotAuthenticator`]).
//! - [`token`]: the bot's outbound client-credentials token ([`token::TokenProvider`]).
//! - [`connector`]: posts and updates activities through the Bot Connector REST API
//!   ([`connector::ConnectorClient`]).
//! - [`graph`]: reads the conversation's messages through Microsoft Graph
//!   ([`graph::ConversationHistory`]), so a redelivery finds a card posted before a crash.
//! - [`inbound`]: `http::Request<Bytes>` in, authenticated activity (or the status to answer)
//!   out ([`inbound::authenticate_request`]).
//! - [`activity`]: the `adaptiveCard/action` invoke activity, its invoke response and
//!   outgoing card messages.
//! - [`transport`]: the shared HTTP client (rustls with the `ring` provider).
//! - `fake` (feature `fake`): loopback fakes of the identity endpoint, the OpenID metadata and
//!   JWKS endpoints and the Bot Connector, for tests.
//!
//! A Teams invoke handler authenticates first, then reads the click and answers with an
//! invoke response:
//!
//! ```no_run
//! # async fn handle(auth: &approvals_teams::BotAuthenticator, request: http::Request<bytes::Bytes>)
//! #     -> http::Response<bytes::Bytes> {
//! use approvals_teams::{AdaptiveCardInvokeResponse, inbound::authenticate_request};
//!
//! let inbound = match authenticate_request(auth, &request).await {
//!     Ok(inbound) => inbound,
//!     Err(e) => {
//!         let mut refused = http::Response::new(bytes::Bytes::new());
//!         *refused.status_mut() = e.status(); // 401 / 400 / 405
//!         return refused;
//!     }
//! };
//! match inbound.activity.card_action() {
//!     Ok(click) => AdaptiveCardInvokeResponse::message(format!("received {}", click.verb)),
//!     Err(e) => AdaptiveCardInvokeResponse::error(400, "BadRequest", e.to_string()),
//! }
//! .to_http_response()
//! # }
//! ```

#![warn(missing_docs)]

pub mod activity;
pub mod approver;
pub mod auth;
pub mod card;
pub mod connector;
pub mod edit;
#[cfg(feature = "fake")]
pub mod fake;
pub mod graph;
pub mod inbound;
pub mod interactions;
pub mod text;
pub mod token;
pub mod transport;

pub use activity::{Activity, AdaptiveCardInvokeResponse, CardAction, OutgoingActivity};
pub use approver::{CHANNEL, CardRef, TeamsApprover};
pub use auth::{AuthConfig, AuthError, BotAuthenticator, Claims};
pub use card::{CardData, CardOptions, Notice, request_card};
pub use connector::{ConnectorClient, ConnectorError, ResourceResponse, RetryPolicy};
pub use edit::{EditForm, EditFormError, VERB_APPROVE_EDITED};
pub use graph::{ConversationHistory, GraphConversation, HistoryError};
pub use inbound::{AuthenticatedActivity, InboundError, authenticate_request};
pub use interactions::{
    DEFAULT_PATH, InteractionsConfigError, TEAMS_CHANNEL_ID, TeamsInteractions,
    TeamsInteractionsBuilder, external_id,
};
pub use token::{AccessToken, ClientSecret, TokenConfig, TokenError, TokenProvider};
