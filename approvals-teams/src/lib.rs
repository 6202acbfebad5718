//! Microsoft Teams channel for approvals: Bot Framework and Adaptive Card Action.Execute.
//!
//! This crate holds the Bot Framework protocol layer, independent of the approvals engine:
//!
//! - [`auth`]: validates the JWT the Bot Connector sends with every inbound activity
//!   ([`auth::BotAuthenticator`]).
//! - [`token`]: the bot's outbound client-credentials token ([`token::TokenProvider`]).
//! - [`connector`]: posts and updates activities through the Bot Connector REST API
//!   ([`connector::ConnectorClient`]).
//! - [`activity`]: the `adaptiveCard/action` invoke activity, its invoke response and
//!   outgoing card messages.
//! - [`transport`]: the shared HTTP client (rustls with the `ring` provider).
//! - `fake` (feature `fake`): loopback fakes of the identity endpoint, the OpenID metadata and
//!   JWKS endpoints and the Bot Connector, for tests.
//!
//! A Teams invoke handler authenticates first, then parses:
//!
//! ```no_run
//! # async fn handle(auth: &approvals_teams::auth::BotAuthenticator, authorization: &str, body: &[u8])
//! #     -> Result<(), Box<dyn std::error::Error>> {
//! use approvals_teams::activity::Activity;
//!
//! let activity = Activity::from_json(body)?;
//! let service_url = activity.service_url.as_deref().unwrap_or_default();
//! let channel_id = activity.channel_id.as_deref().unwrap_or_default();
//! auth.validate_for_channel(authorization, service_url, channel_id).await?; // 401 on error
//! let click = activity.card_action()?;
//! # let _ = click; Ok(()) }
//! ```

pub mod activity;
pub mod auth;
pub mod connector;
#[cfg(feature = "fake")]
pub mod fake;
pub mod token;
pub mod transport;

pub use activity::{Activity, AdaptiveCardInvokeResponse, CardAction, OutgoingActivity};
pub use auth::{AuthConfig, AuthError, BotAuthenticator, Claims};
pub use connector::{ConnectorClient, ConnectorError, ResourceResponse, RetryPolicy};
pub use token::{AccessToken, ClientSecret, TokenConfig, TokenError, TokenProvider};
