//! Slack channel for approvals: Block Kit messages, interactivity handler, Socket Mode.
//!
//! - [`SlackApprover`] posts each pending request to a conversation with `chat.postMessage`
//!   (who asks and for whom, the action, resource, parameters, justification, links,
//!   environment, impact, expiry, request id and digest, Approve and Deny buttons) and
//!   rewrites it with `chat.update` on every change, so nobody clicks on a stale request.
//! - [`SlackInteractions`] receives the clicks: a framework-agnostic handler
//!   ([`SlackInteractions::handle`]), a [`tower::Service`], and an axum `Router` with the
//!   `axum` feature. It verifies Slack's signature on the raw bytes, refuses replays, foreign
//!   workspaces and apps, answers at once, and then applies the review through
//!   [`approvals_core::Gate::decide`] bound to the digest the reviewer saw. Deny, and Approve
//!   when the policy requires a reason, ask for the reason in a modal (`views.open`). When the
//!   policy rule lists `editable` parameters, "Edit and approve" opens a modal in which the
//!   reviewer changes them and approves the edited action ([`blocks::edit`]).
//! - [`SocketMode`] receives the same interactions over a WebSocket, for agents without a
//!   public URL.
//! - Identities: any [`approvals_core::IdentityResolver`] keyed by Slack user id (channel
//!   `"slack"`), or [`SlackEmailResolver`] to look users up by verified email.
//!
//! Modules: [`api`] (Web API client), [`approver`] (outbound messages), [`blocks`] (Block Kit
//! rendering), [`limits`] (Slack's documented Block Kit limits), [`interaction`] (inbound
//! handler), [`socket`] (Socket Mode), [`signature`] (request signing and replay),
//! [`identity`] (email lookup), [`text`] (escaping and bounding untrusted text), and `fake`
//! (loopback fakes for tests, feature `fake`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use approvals_core::{Gate, MemorySink, Principal, Requirement, StaticIdentityResolver, StaticPolicy};
//! use approvals_slack::{SigningSecret, SlackApprover, SlackClient, SlackInteractions, Token};
//!
//! let client = SlackClient::new(Token::new(std::env::var("SLACK_BOT_TOKEN")?))?;
//! let approver = SlackApprover::new(client.clone(), std::env::var("SLACK_CHANNEL_ID")?);
//! let gate = Gate::builder()
//!     .policy(StaticPolicy::require(Requirement::groups(["security"])))
//!     .audit(MemorySink::new())
//!     .approver(approver.clone())
//!     .build()?;
//! let interactions = SlackInteractions::builder(gate, client, SigningSecret::new(std::env::var("SLACK_SIGNING_SECRET")?)?)
//!     .team_id(std::env::var("SLACK_TEAM_ID")?)
//!     .app_id(std::env::var("SLACK_APP_ID")?)
//!     .identities(StaticIdentityResolver::new()
//!         .map("slack", "U024BE7LH", Principal::human("sam@example.com").with_groups(["security"])))
//!     .approver(approver)
//!     .build()?;
//! // Serve `interactions` (handle / tower::Service / router) at the app's Request URL,
//! // or run `SocketMode` with it.
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod api;
pub mod approver;
pub mod blocks;
#[cfg(feature = "fake")]
pub mod fake;
pub mod identity;
pub mod interaction;
pub mod limits;
pub mod signature;
pub mod socket;
pub mod text;

pub use api::{MessageRef, RetryPolicy, SlackClient, SlackError, SlackUser, Token};
pub use approver::{CHANNEL, SlackApprover};
pub use blocks::{ButtonValue, Message};
pub use identity::SlackEmailResolver;
pub use interaction::{SlackInteractions, SlackInteractionsBuilder};
pub use signature::{ConfigError, ReplayGuard, SignatureError, SigningSecret, Verified};
pub use socket::{SocketMode, SocketModeError, SocketModeHandle};
