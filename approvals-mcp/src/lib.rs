//! MCP approval gateway: an MCP server to the client, an MCP client to the upstream server,
//! and the gate in between.
//!
//! The gateway ([`Gateway`], an [rmcp](https://docs.rs/rmcp) `ServerHandler`) passes
//! `tools/list` through and turns each `tools/call` into an
//! [`ActionRequest`](approvals_core::ActionRequest): kind `mcp.<server>.<tool>`, resource from a
//! configured argument (or the server's name), params = the arguments exactly as sent. The
//! gate's policy decides:
//!
//! - allowed: the call goes to the upstream server;
//! - refused by a rule: a tool result with `isError: true` naming the rule and its reason;
//! - needs approval: the call waits. The client gets a log message (`notifications/message`)
//!   with the review link and, when it sent a progress token, progress notifications. A
//!   `notifications/cancelled` from the client withdraws the request. Once approved, exactly
//!   that call runs once, through the single-use grant, and its outcome is audited; a
//!   denial returns the reviewer's reason.
//!
//! Where the approvals are decided is an [`Approvals`] implementation: [`InProcess`] asks a
//! gate in this process (embedded mode); `remote::Remote` (feature `remote`) asks an
//! `approvals serve` through its agent API with an agent token, so one approval service
//! serves many gateways. The agent the calls are made for is the gate's configured initiator,
//! or in remote mode the token's principal (with its `on_behalf_of`), never anything in a
//! tool call. When the upstream server stops, waiting calls are withdrawn, approved ones are
//! not run, and every later call fails: the gateway fails closed. Every message read from
//! either side is bounded ([`DEFAULT_MAX_MESSAGE_BYTES`]).
//!
//! With the `embedded` feature, [`embedded::run`] assembles the whole thing (SQLite store,
//! signed audit log, review server); with `remote`, `remote::run` connects to a server; with
//! `http-upstream`, the upstream server may be a streamable-HTTP endpoint
//! ([`UpstreamTarget`]); the `cli` feature builds the command line (`cli::run`, the
//! `approvals-mcp` binary, and `approvals mcp-proxy` in approvals-cli) with all of them.

pub mod action;
pub mod approvals;
#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "embedded")]
pub mod embedded;
pub mod gateway;
#[cfg(feature = "remote")]
pub mod remote;
pub mod upstream;

pub use action::{MappingError, ToolMapping, refusal_text};
pub use approvals::{Approvals, Asked, CallFailed, InProcess};
pub use gateway::{Gateway, GatewayOptions, serve_stdio};
pub use upstream::{DEFAULT_MAX_MESSAGE_BYTES, Upstream, UpstreamError, UpstreamTarget};
