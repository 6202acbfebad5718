//! HTTP review channel for action-level approvals: a JSON REST API and a review web console
//! over a [`Gate`](approvals_core::Gate) and an outbound [`WebhookApprover`]. The
//! `approvals` command-line tool is in the approvals-cli crate.
//!
//! - [`ReviewServer`] serves `/v1/...` (reviewers: list, show, approve, deny, cancel;
//!   agents: submit, wait for a signed grant token, executions — see [`agent`]; bearer
//!   tokens; errors as RFC 9457 problem documents), `/openapi.json` and the console under
//!   `/console/`. It is a plain `http::Request<Bytes> -> http::Response<Bytes>` handler
//!   ([`ReviewServer::handle`]), a `tower::Service` ([`ReviewServer::service`]), an
//!   `axum::Router` with the `axum` feature, and runs on its own with [`serve`].
//! - [`Tokens`] maps the SHA-256 of each API token to a principal.
//! - [`OidcClient`] signs console reviewers in with an OpenID Connect provider
//!   ([`ReviewServerBuilder::oidc`]; see `docs/oidc.md`).
//! - [`WebhookApprover`] posts each pending request and each resolution to a URL, signed with
//!   HMAC-SHA256; receivers check deliveries with [`verify_webhook`] and decide through the
//!   API.
//! - [`ConsoleLinkApprover`] announces each pending request with its console URL.
//! - [`ApiClient`] calls the API over HTTP or in-process.
//! - [`downstream`]: approved calls to other HTTP services, with a grant token bound to one
//!   call as the credential ([`HttpCall`], [`GrantTokenBroker`]) and a guard for the service
//!   ([`GrantGuardLayer`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use approvals_core::{Gate, JsonLinesSink, Principal, RulePolicy};
//! use approvals_http::{ReviewServer, Tokens};
//!
//! let gate = Gate::builder()
//!     .policy(RulePolicy::from_file("policy.toml")?)
//!     .audit(JsonLinesSink::file("audit.jsonl", true)?)
//!     .build()?;
//! let server = ReviewServer::builder(gate.clone())
//!     .tokens(Tokens::from_file("tokens.toml")?)
//!     .build();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8480").await?;
//! tokio::spawn(approvals_http::serve(listener, server, std::future::pending()));
//! // ... gate.guard(action).await? now waits for a reviewer at http://127.0.0.1:8480/console/
//! # Ok(()) }
//! ```
//!
//! Modules: [`server`] (routing, tower service, hyper loop; it sits on top), [`api`] (the
//! reviewers' JSON API), [`agent`] (the agents' JSON API), [`console`] (HTML pages, sign-in with tokens or OpenID Connect, CSRF), [`auth`] (tokens), [`problem`] (errors),
//! [`view`] (JSON shapes), [`downstream`] (approved calls to other services), [`webhook`] (outbound webhooks and their verification),
//! [`client`] (API client), [`link`] (console links), [`html`] (escaping); inside the crate,
//! `shared` (the state and response helpers the API and the console share), `requests`
//! (visibility, the list query and the reason bound both apply) and `session` (console
//! sessions). The `approvals` command-line tool is in the approvals-cli crate.
#![warn(missing_docs)]
// Errors here are problem documents and responses built once per HTTP request, on the way
// out; boxing them would buy nothing measurable and cost readability.
#![allow(clippy::result_large_err)]

pub mod agent;
mod allowed;
pub mod api;
pub mod auth;
pub mod client;
pub mod console;
pub mod downstream;
pub mod html;
pub mod link;
pub mod problem;
mod requests;
pub mod server;
mod session;
mod shared;
pub mod standing;
pub mod view;
pub mod webhook;

pub use auth::{TokenHash, Tokens, generate_token};
pub use client::{ApiClient, ClientError};
pub use console::oidc::{OidcClient, OidcConfig, OidcError};
#[cfg(feature = "axum")]
pub use downstream::ApprovedCall;
pub use downstream::{GrantGuardLayer, GrantTokenBroker, HttpCall};
pub use link::ConsoleLinkApprover;
pub use problem::Problem;
pub use server::{
    MetricsRenderer, OPENAPI_JSON, ReviewServer, ReviewServerBuilder, ReviewService, serve,
};
pub use view::{
    ExecutionView, PlanBody, RequestList, RequestView, SubmitBody, SubmitStatus, Submitted,
    WaitResult,
};
pub use webhook::{ReplayGuard, WebhookApprover, WebhookError, WebhookSecret, verify_webhook};
