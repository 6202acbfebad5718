//! Action-level approvals: a human decision in front of every privileged action.
#![warn(missing_docs)]

pub mod request;

pub use request::{Action, ActionRequest, Digest, Initiator, Link, Principal, PrincipalKind, RequestContext, Risk};
