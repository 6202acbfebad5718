//! Approved calls to HTTP services: the agent's side ([`HttpCall`], [`GrantTokenBroker`]) and
//! the service's ([`GrantGuard`], [`GrantGuardLayer`], [`ApprovedCall`]), tied together by a
//! grant token bound to one call.
//!
//! An agent that changes things through a service's HTTP API holds no standing credential for
//! it. It describes the call as an action ([`HttpCall`]: the method, path and query and JSON
//! body are the parameters reviewers see), and runs it through the gate with
//! [`Gate::run_with_credential`](approvals_core::Gate::run_with_credential). Once the call is
//! approved, the gate's [`GrantTokenBroker`] mints its credential: a signed grant token
//! ([`approvals_audit::grant`]) addressed to that service (`aud`: its origin), bound to exactly
//! that call (`bind`: [`call_binding`], a SHA-256 of the method, path and query and canonical
//! body), and expiring with the grant. The agent sends it as `Authorization: Bearer <token>`.
//!
//! The service puts a [`GrantGuardLayer`] in front of its routes. The guard admits a request
//! only if its token verifies (trusted key, not expired, this service as audience, the
//! expected issuer), is bound to this very call, and was not used before ([`ReplayCache`]);
//! the handler reads the approval with [`ApprovedCall`] (or the [`GrantClaims`] request
//! extension). Refusals are problem documents: 401 (no token, or one that is malformed,
//! forged, expired, for another service or not bound to a call), 403 (`call_mismatch`: another
//! method, path, query or body than approved), 409 (`token_used`), 413 (body over the limit),
//! 415 (a body that is not JSON: only empty and JSON bodies can be bound), 503 (the replay
//! cache failed).
//!
//! A token is single-use at the service only as far as its replay cache reaches: replicas of
//! a service must share one ([`ReplayCache`]). The broker cannot recall a token it handed out
//! ([`GrantTokenBroker`]'s `revoke` does nothing); the guard's single use, its binding and
//! its expiry are what limit it.
//!
//! [`GrantClaims`]: approvals_audit::grant::GrantClaims

mod broker;
mod call;
mod guard;

pub use broker::GrantTokenBroker;
pub use call::{BINDING_DOMAIN, CallError, HttpCall, call_binding, value_binding};
#[cfg(feature = "axum")]
pub use guard::ApprovedCall;
pub use guard::{
    DEFAULT_BODY_LIMIT, GrantGuard, GrantGuardLayer, GrantGuardService, MemoryReplayCache, Refusal,
    ReplayCache, ReplayCacheError, check_call, check_token,
};
